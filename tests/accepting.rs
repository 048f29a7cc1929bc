//! A worker that never accepts on the cluster's socket is not ready, whatever it said: an app that
//! listens on a port of its own (`python3 -m http.server`) is reported `not accepting` and
//! replaced once a connection has waited `--accept-timeout` in its queue (issue 11, §1).

use std::io::Write;
use std::net::TcpStream;

use crate::support::*;

/// `python3 -m http.server` on a port of its own: it never touches the inherited socket.
fn own_port_server() -> Vec<&'static str> {
    vec!["python3", "-m", "http.server", "0", "--bind", "127.0.0.1"]
}

fn queue_a_request(cluster: &Cluster) -> TcpStream {
    let mut stream = TcpStream::connect(cluster.address()).expect("connect");
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .unwrap();
    stream
}

#[test]
fn reuseport_worker_that_never_accepts_is_reported_and_replaced() {
    let cluster = cluster()
        .args(&["-w", "1", "--name", "own-port", "--accept-timeout", "1s"])
        .args(&["--ready-delay", "200ms"])
        .command(&own_port_server())
        .start();
    let (_, pid) = cluster.wait_ready(1)[0];
    let _waiting = queue_a_request(&cluster);
    let report = cluster
        .stderr
        .wait_for(&format!("worker 1 (pid {pid}) not accepting: "));
    assert!(
        report.ends_with(
            "not accepting: 1 connection waited in its queue for more than 1s \
             (--accept-timeout); replacing it"
        ),
        "{report}"
    );
    cluster.stderr.wait_for(
        "hint: a worker must accept on the socket it inherits (fd 3, LISTEN_FDS) for port ",
    );
    let exit = cluster.stderr.wait_for(&format!(
        "worker 1 (pid {pid}) was not accepting connections and was stopped"
    ));
    assert!(exit.ends_with("; restarting now"), "{exit}");
    // Its replacement serves the same queue, does not accept either, and is a failure in a row.
    let (_, second) = cluster.wait_ready(2)[1];
    let exit = cluster.stderr.wait_for(&format!(
        "worker 1 (pid {second}) was not accepting connections and was stopped"
    ));
    assert!(exit.ends_with("; restarting in 100ms"), "{exit}");
    let status = status_json(&cluster, "own-port");
    let last_exit = &status["slots"][0]["last_exit"];
    assert_eq!(last_exit["pid"], second, "{status}");
    assert!(
        last_exit["reason"]
            .as_str()
            .unwrap()
            .starts_with("not accepting; "),
        "{status}"
    );
    assert_eq!(status["slots"][0]["restarts"], 2, "{status}");
}

#[test]
fn shared_queue_that_no_ready_worker_takes_from_replaces_them() {
    let cluster = cluster()
        .args(&["-w", "2", "--name", "own-port", "--balance", "shared"])
        .args(&["--accept-timeout", "1s", "--ready-delay", "200ms"])
        .command(&own_port_server())
        .start();
    let mut ready = cluster.ready_pids(2);
    ready.sort_unstable();
    let _waiting = queue_a_request(&cluster);
    let mut reported: Vec<u32> = cluster
        .stderr
        .wait_for_count(2, |line| {
            line.contains(
                " not accepting: 1 connection waited in the shared queue (no ready worker takes \
                 from it) for more than 1s (--accept-timeout); replacing it",
            )
        })
        .iter()
        .map(|line| parse_worker_line(line).1)
        .collect();
    reported.sort_unstable();
    assert_eq!(reported, ready, "{}", cluster.log());
}
