//! The polite drain of unmodified Node servers (src/primary/node_drain.js): while a Node worker
//! leaves at the primary's request (reload, scale-down, stop: cluster `disconnect`), its http
//! server answers the requests of its open keep-alive connections with `Connection: close`
//! instead of closing the idle ones at once, which would lose a request racing the close.
//! Real Node, the plain `node:http` app of examples/node, real sockets on 127.0.0.1.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

use crate::support::*;

/// One `GET /` on `stream` (keep-alive); the response's head, lowercased, and its body.
fn get(stream: &mut BufReader<TcpStream>) -> (String, String) {
    stream
        .get_mut()
        .write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
        .unwrap();
    let mut head = String::new();
    loop {
        let mut line = String::new();
        let read = stream.read_line(&mut line).expect("the response's head");
        assert!(
            read > 0,
            "the connection closed before an answer; head so far: {head:?}"
        );
        if line == "\r\n" {
            break;
        }
        head.push_str(&line.to_ascii_lowercase());
    }
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length: "))
        .and_then(|length| length.trim().parse().ok())
        .unwrap_or_else(|| panic!("a content-length in {head:?}"));
    let mut body = vec![0; length];
    stream.read_exact(&mut body).unwrap();
    (head, String::from_utf8(body).unwrap())
}

fn pid_of(body: &str) -> u32 {
    let value: serde_json::Value = serde_json::from_str(body).unwrap();
    value["pid"].as_u64().unwrap() as u32
}

#[test]
fn a_leaving_node_worker_answers_its_idle_keep_alive_connection_then_closes_it() {
    let app = format!("{}/examples/node/http-app.js", env!("CARGO_MANIFEST_DIR"));
    let cluster = cluster()
        .args(&["--workers", "2", "--name", "drain"])
        .command(&["node", &app])
        .start();
    cluster.wait_ready(2);
    let stream = TcpStream::connect(cluster.address()).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut stream = BufReader::new(stream);
    let (head, body) = get(&mut stream);
    assert!(!head.contains("connection: close"), "{head}");
    let pid = pid_of(&body);

    // The reload asks each old worker to leave; the connection is idle when its worker does.
    std::thread::scope(|scope| {
        let reload = scope.spawn(|| cluster.herdsman(&["reload", "drain"]));
        cluster
            .stderr
            .wait_for(&format!("(pid {pid}) closed its server"));
        // Node's own close() has closed the idle connection by now. The drain answers on it,
        // once.
        let (head, body) = get(&mut stream);
        assert_eq!(pid_of(&body), pid, "answered by the leaving worker");
        assert!(head.contains("connection: close"), "{head}");
        let mut rest = Vec::new();
        stream
            .read_to_end(&mut rest)
            .expect("the worker closes the connection");
        assert!(rest.is_empty(), "{rest:?}");
        // Nothing holds the worker any more: it exits by itself, and the reload completes.
        cluster
            .stderr
            .wait_for(&format!("(pid {pid}) exited with code 0"));
        let output = reload.join().unwrap();
        assert_eq!(output.code, Some(0), "{output:?}");
        assert!(
            output
                .stdout
                .contains("reload complete: 2 workers on generation 2"),
            "{}",
            output.stdout
        );
    });
}
