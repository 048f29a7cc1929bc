//! `--balance proxy` and `proxy-rr` (issue 15): unmodified apps that bind `$PORT` themselves,
//! behind the primary's proxy, which relays every connection to a worker's private port.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::support::*;

/// A plain TCP server on `$HOST:$PORT`: echoes every byte until the client's end of file, then
/// closes its side (so half-close shows); a connection that starts with an HTTP `Upgrade`
/// request gets `101 Switching Protocols` and is echoed from then on, as a WebSocket would be.
const ECHO_SERVER: &str = r#"import os, socket, threading
server = socket.create_server((os.environ["HOST"], int(os.environ["PORT"])))
def serve(connection):
    first = connection.recv(65536)
    if first.startswith(b"GET ") and b"Upgrade: websocket" in first:
        while b"\r\n\r\n" not in first:
            first += connection.recv(65536)
        first = first.split(b"\r\n\r\n", 1)[1]
        connection.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                           b"Connection: Upgrade\r\n\r\n")
    data = first or connection.recv(65536)
    while data:
        connection.sendall(data)
        data = connection.recv(65536)
    connection.shutdown(socket.SHUT_WR)
    connection.close()
while True:
    connection, _ = server.accept()
    threading.Thread(target=serve, args=(connection,), daemon=True).start()
"#;

fn echo_cluster(dir: &RuntimeDir) -> Cluster {
    let script = write_file(dir, "echo.py", ECHO_SERVER);
    let script = script.display().to_string();
    let cluster = cluster()
        .runtime_dir(dir)
        .args(&["-w", "2", "--balance", "proxy"])
        .command(&["python3", &script])
        .start();
    cluster.wait_ready(2);
    cluster
}

fn connect(cluster: &Cluster) -> TcpStream {
    let stream = TcpStream::connect(cluster.address()).expect("connect to the proxy");
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream
}

/// Counts the answers by the worker (slot) that gave them, `count` GETs on fresh connections.
fn workers_of(cluster: &Cluster, count: usize) -> BTreeMap<String, usize> {
    let mut by_worker = BTreeMap::new();
    for index in 0..count {
        let response = cluster
            .get("/")
            .unwrap_or_else(|error| panic!("request {index}: {error}"));
        assert_eq!(response.status, 200, "{response:?}");
        *by_worker.entry(response.field("worker")).or_insert(0) += 1;
    }
    by_worker
}

fn expected(workers: usize, each: usize) -> BTreeMap<String, usize> {
    (1..=workers).map(|slot| (slot.to_string(), each)).collect()
}

#[test]
fn python_http_server_runs_unmodified_across_two_workers() {
    let cluster = cluster()
        .args(&["-w", "2", "--balance", "proxy-rr"])
        .command(&["sh", "-c", "exec python3 -m http.server $PORT --bind $HOST"])
        .start();
    cluster.wait_ready(2);
    for index in 0..20 {
        let response = cluster
            .get("/")
            .unwrap_or_else(|error| panic!("{index}: {error}"));
        assert_eq!(response.status, 200, "{response:?}");
        assert!(response.body.contains("Directory listing"), "{response:?}");
    }
    let served = |slot: usize| {
        let prefix = format!("[{slot}:");
        cluster.stderr.wait_for_count(10, |line| {
            line.starts_with(&prefix) && line.contains("\"GET / HTTP/1.1\" 200")
        });
        cluster
            .stderr
            .count(|line| line.starts_with(&prefix) && line.contains("\"GET / HTTP/1.1\" 200"))
    };
    assert_eq!((served(1), served(2)), (10, 10), "{}", cluster.log());
}

/// An app that ignores `$PORT` (it listens on a port of its own) never accepts on its private
/// port, so it is never ready: start-up fails with exit 4 and says why, instead of a "ready"
/// cluster whose every request waits for an upstream that is not there.
#[test]
fn an_app_listening_elsewhere_than_its_port_is_never_ready() {
    let elsewhere = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let mut cluster = cluster()
        .args(&["-w", "1", "--balance", "proxy", "--ready-timeout", "2s"])
        .command(&[
            "python3",
            "-m",
            "http.server",
            &elsewhere,
            "--bind",
            "127.0.0.1",
        ])
        .no_wait()
        .start();
    let status = cluster.wait_exit();
    let log = cluster.log();
    assert_eq!(status.code(), Some(4), "{log}");
    assert!(
        log.contains("not ready within 2s; its $PORT never accepted a connection"),
        "{log}"
    );
    assert!(!log.contains(") ready"), "{log}");
}

/// A keep-alive HTTP/1.1 server that dies at once on SIGTERM, as Flask's and Django's dev
/// servers do, and is slow in the middle of every answer: a stop signal while a request is in
/// flight cuts its response after the first bytes, which no retry can mend.
const ABRUPT_SERVER: &str = r#"import json, os, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = json.dumps({"pid": os.getpid()}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[:5])
        time.sleep(0.02)
        self.wfile.write(body[5:])
    def log_message(self, *args):
        pass
ThreadingHTTPServer((os.environ["HOST"], int(os.environ["PORT"])), Handler).serve_forever()
"#;

/// Reloads behind the proxy wait for the old worker's requests in flight: the proxy takes it
/// off its list, its keep-alive clients move to the new worker (at once while idle, else at
/// their next request), and only once it has no connection from the proxy left does it get the
/// stop signal. So a server that dies at once on SIGTERM fails no request either.
#[test]
fn reloads_of_a_server_that_dies_at_once_on_sigterm_fail_no_request() {
    let dir = RuntimeDir::new();
    let script = write_file(&dir, "abrupt.py", ABRUPT_SERVER);
    let cluster = cluster()
        .runtime_dir(&dir)
        .args(&["-w", "2", "--name", "abrupt", "--balance", "proxy"])
        .command(&["python3", script.to_str().unwrap()])
        .start();
    cluster.wait_ready(2);
    three_reloads_under_load_fail_nothing(&cluster, "abrupt");
}

#[test]
fn round_robin_is_exact_over_two_and_four_workers() {
    let two = cluster()
        .args(&["-w", "2", "--balance", "proxy-rr"])
        .start();
    two.wait_ready(2);
    assert_eq!(workers_of(&two, 2000), expected(2, 1000));
    let four = cluster()
        .args(&["-w", "4", "--balance", "proxy-rr"])
        .start();
    four.wait_ready(4);
    assert_eq!(workers_of(&four, 2000), expected(4, 500));
}

/// Least-connections passes over a worker busy in CPU work: it still holds the connection of
/// the request that keeps it busy.
#[test]
fn a_worker_busy_in_cpu_work_gets_no_new_connection_under_least_conn() {
    let cluster = cluster().args(&["-w", "2", "--balance", "proxy"]).start();
    cluster.wait_ready(2);
    let address = cluster.address();
    let burning = std::thread::spawn(move || http_get(address, "/burn?ms=3000"));
    let line = cluster.stdout.wait_for("burn start");
    let busy_pid: u32 = word_after(&line, "pid=").parse().unwrap();
    let started = Instant::now();
    for index in 0..50 {
        let sent = Instant::now();
        let response = cluster.get("/").unwrap();
        let took = sent.elapsed();
        assert!(
            took < Duration::from_millis(100),
            "request {index} took {took:?}"
        );
        assert_ne!(response.pid(), busy_pid, "request {index}");
    }
    assert!(
        started.elapsed() < Duration::from_millis(2900),
        "the burn was over before the end"
    );
    assert_eq!(burning.join().unwrap().unwrap().status, 200);
}

fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |hash, byte| {
        (hash ^ *byte as u64).wrapping_mul(0x100000001b3)
    })
}

/// 10 MB up and 10 MB down on one connection, at once, then half-close: the worker sees the
/// end of the client's bytes while the client still reads every byte echoed.
#[test]
fn ten_megabytes_both_ways_and_half_close() {
    let dir = RuntimeDir::new();
    let cluster = echo_cluster(&dir);
    let data: Vec<u8> = (0..10_000_000u32)
        .map(|index| (index * 7 % 251) as u8)
        .collect();
    let mut stream = connect(&cluster);
    let mut writer = stream.try_clone().unwrap();
    let sent = data.clone();
    let sending = std::thread::spawn(move || {
        writer.write_all(&sent).unwrap();
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let mut echoed = Vec::new();
    stream.read_to_end(&mut echoed).unwrap();
    sending.join().unwrap();
    assert_eq!(echoed.len(), data.len());
    assert_eq!(checksum(&echoed), checksum(&data));

    let mut small = connect(&cluster);
    small.write_all(b"half").unwrap();
    small.shutdown(Shutdown::Write).unwrap();
    let mut answer = String::new();
    small.read_to_string(&mut answer).unwrap();
    assert_eq!(answer, "half");
}

#[test]
fn a_websocket_upgrade_becomes_a_tunnel() {
    let dir = RuntimeDir::new();
    let cluster = echo_cluster(&dir);
    let mut stream = connect(&cluster);
    stream
        .write_all(b"GET /chat HTTP/1.1\r\nHost: test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        .unwrap();
    let head =
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
    let mut answer = vec![0; head.len()];
    stream.read_exact(&mut answer).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&answer),
        String::from_utf8_lossy(head)
    );
    // A masked text frame "hi", echoed byte for byte: no HTTP framing applies any more.
    let frame = [0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2];
    stream.write_all(&frame).unwrap();
    let mut echoed = [0; 8];
    stream.read_exact(&mut echoed).unwrap();
    assert_eq!(echoed, frame);
}

/// A client that sends half a request and stops, and one that does not read its answer, hold
/// up no other client.
#[test]
fn a_slow_client_does_not_hold_up_others() {
    let cluster = cluster().args(&["-w", "1", "--balance", "proxy"]).start();
    cluster.wait_ready(1);
    let mut stalled = connect(&cluster);
    stalled.write_all(b"GET / HTTP/1.1\r\nHo").unwrap();
    let mut not_reading = connect(&cluster);
    for _ in 0..200 {
        not_reading
            .write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
            .unwrap();
    }
    for index in 0..20 {
        let sent = Instant::now();
        assert_eq!(cluster.get("/").unwrap().status, 200);
        let took = sent.elapsed();
        assert!(
            took < Duration::from_millis(500),
            "request {index} took {took:?}"
        );
    }
    // The stalled one still completes its request.
    stalled
        .write_all(b"st: test\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stalled.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
}

/// SIGKILL of a worker while new connections keep coming: not one fails (a request in flight
/// on the killed worker had no answer byte yet, and is sent again to the other).
#[test]
fn kill_9_of_a_worker_fails_no_new_connection() {
    let cluster = cluster().args(&["-w", "2", "--balance", "proxy"]).start();
    let pids = cluster.ready_pids(2);
    let load = load_loop(cluster.address(), false);
    std::thread::sleep(Duration::from_millis(300));
    kill(Pid::from_raw(pids[0] as i32), Signal::SIGKILL).unwrap();
    cluster.wait_ready(3);
    let report = load.finish(500);
    assert_eq!(report.failures, Vec::<String>::new(), "{}", cluster.log());
    assert!(report.ok >= 500);
}

/// Stock uvicorn closes its idle keep-alive connections when it drains: behind the proxy the
/// client's connection stays open, and a request that meets a closing connection goes to the
/// new worker, so three reloads fail no request and the client never has to retry.
#[test]
fn three_reloads_of_stock_uvicorn_under_keep_alive_load_fail_no_request() {
    let dir = RuntimeDir::new();
    write_file(&dir, "app.py", crate::python_servers::ASGI_APP);
    let command = format!(
        "exec uvicorn app:app --app-dir {} --host $HOST --port $PORT",
        dir.path().display()
    );
    let cluster = cluster()
        .runtime_dir(&dir)
        .args(&["-w", "2", "--name", "uv", "--balance", "proxy"])
        .command(&["sh", "-c", &command])
        .start();
    cluster.wait_ready(2);
    let load = load_loop(cluster.address(), true);
    for reload in 1..=3 {
        let output = cluster.herdsman(&["reload", "uv"]);
        assert_eq!(output.code, Some(0), "reload {reload}: {output:?}");
    }
    let report = load.finish(300);
    assert_eq!(report.failures, Vec::<String>::new(), "{}", cluster.log());
    assert_eq!(report.retries, 0, "{}", cluster.log());
}

/// A Go net/http server that binds `$HOST:$PORT` itself, with no socket activation.
const GO_SERVER: &str = r#"package main

import (
	"fmt"
	"net/http"
	"os"
)

func main() {
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "{\"pid\":%d,\"worker\":\"%s\"}", os.Getpid(), os.Getenv("HERDSMAN_WORKER_ID"))
	})
	if err := http.ListenAndServe(os.Getenv("HOST")+":"+os.Getenv("PORT"), nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
"#;

#[test]
fn a_go_server_binding_its_port_runs_across_two_workers() {
    let dir = RuntimeDir::new();
    write_file(&dir, "main.go", GO_SERVER);
    let build = std::process::Command::new("go")
        .args(["build", "-o", "server", "main.go"])
        .current_dir(dir.path())
        .env("GOCACHE", dir.path().join("go-cache"))
        .env("GO111MODULE", "off")
        .output()
        .expect("run go (scripts/test.sh installs it)");
    assert!(build.status.success(), "go build: {build:?}");
    let server = dir.path().join("server").display().to_string();
    let cluster = cluster()
        .runtime_dir(&dir)
        .args(&["-w", "2", "--balance", "proxy-rr"])
        .command(&[&server])
        .start();
    cluster.wait_ready(2);
    assert_eq!(
        workers_of(&cluster, 100),
        expected(2, 50),
        "{}",
        cluster.log()
    );
}

/// SIGTERM: the proxy stops accepting, a request in flight is answered while its worker
/// drains, and the primary exits 0.
#[test]
fn a_stop_lets_a_request_in_flight_finish() {
    let mut cluster = cluster().args(&["-w", "2", "--balance", "proxy"]).start();
    cluster.wait_ready(2);
    let address = cluster.address();
    let slow = std::thread::spawn(move || http_get(address, "/sleep?ms=1000"));
    cluster.stdout.wait_for("sleep start");
    cluster.signal(Signal::SIGTERM);
    let response = slow
        .join()
        .unwrap()
        .expect("the request in flight is answered");
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(cluster.wait_exit().code(), Some(0), "{}", cluster.log());
    assert!(TcpStream::connect(address).is_err(), "the port is closed");
}
