//! Servers in other languages run under herdsman unchanged but for taking the inherited socket,
//! exactly as the README shows (issue 2: any server command).

use std::collections::BTreeSet;

use nix::sys::signal::Signal;

use crate::support::*;

fn example(path: &str) -> String {
    format!("{}/examples/{path}", env!("CARGO_MANIFEST_DIR"))
}

fn serves_and_stops_gracefully(command: &[&str], runtime: &str) {
    let mut cluster = cluster()
        .args(&["-w", "2", "--ready-delay", "300ms"])
        .command(command)
        .start();
    let ready: BTreeSet<u32> = cluster.ready_pids(2).into_iter().collect();
    let mut serving = BTreeSet::new();
    for _ in 0..2000 {
        let response = cluster.get("/").expect("GET /");
        assert_eq!(response.status, 200);
        assert_eq!(response.field("runtime"), runtime);
        serving.insert(response.pid());
        if serving.len() == 2 {
            break;
        }
    }
    assert_eq!(serving, ready, "both workers serve");
    cluster.signal(Signal::SIGTERM);
    assert_eq!(cluster.wait_exit().code(), Some(0), "{}", cluster.log());
    for pid in ready {
        assert!(
            cluster
                .log()
                .contains(&format!(" (pid {pid}) exited with code 0")),
            "{}",
            cluster.log()
        );
    }
}

#[test]
fn node_server_takes_the_inherited_socket() {
    serves_and_stops_gracefully(&["node", &example("node/server.js")], "node");
}

#[test]
fn python_server_takes_the_inherited_socket() {
    serves_and_stops_gracefully(&["python3", &example("python/server.py")], "python");
}

/// A server that answers with whether its accepted connection has `TCP_NODELAY`, which it
/// never sets itself.
const NODELAY_SERVER: &str = r#"
import socket
listener = socket.socket(fileno=3)
while True:
    connection, _ = listener.accept()
    connection.recv(65536)
    flag = connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    body = b'{"nodelay":"%d"}' % (1 if flag else 0)
    head = b'HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n' % len(body)
    connection.sendall(head + body)
    connection.close()
"#;

/// Connections accepted from the sockets herdsman hands out have `TCP_NODELAY` already (they
/// inherit it from the listening socket), so a server that does not set it (uvicorn given
/// `--fd 3`) does not wait out Nagle's algorithm on small writes.
#[test]
fn connections_from_the_inherited_socket_have_tcp_nodelay() {
    for balance in ["reuseport", "shared"] {
        let cluster = cluster()
            .args(&["--workers", "1", "--balance", balance])
            .command(&["python3", "-c", NODELAY_SERVER])
            .start();
        cluster.wait_ready(1);
        let response = cluster.get("/").unwrap();
        assert_eq!(response.field("nodelay"), "1", "{balance}: {response:?}");
    }
}
