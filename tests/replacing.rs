//! Workers replaced for a reason while they serve (issue 16): hung (`--watchdog`: no
//! `WATCHDOG=1`), over `--max-memory`, done with `--max-requests`. Each is replaced new first,
//! and `status` (text and JSON), `herdsman logs` and `/metrics` say why.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::*;

/// A Python server on herdsman's socket (fd 3) that sends `READY=1`, then `WATCHDOG=1` every
/// half of `$WATCHDOG_USEC` until `GET /stop-heartbeat`; `GET /stop-accepting` stops its
/// accept loop (heartbeats go on). `GET /grow?mb=N` keeps N more MB
/// (touched, so resident). Every answer is `{"pid":…,"watchdog_usec":…,"watchdog_pid":…,
/// "rss_mb":…}` and closes its connection; SIGTERM stops it gracefully.
const SERVER: &str = r#"
import json, os, signal, socket, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

notify = os.environ["NOTIFY_SOCKET"]
def tell(text):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.sendto(text.encode(), notify)
    s.close()

stuck = threading.Event()
beating = threading.Event()
beating.set()
def heartbeat():
    every = int(os.environ["WATCHDOG_USEC"]) / 2e6
    while beating.is_set():
        tell("WATCHDOG=1")
        time.sleep(every)
if "WATCHDOG_USEC" in os.environ:
    threading.Thread(target=heartbeat, daemon=True).start()

kept = []
class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/stop-heartbeat":
            beating.clear()
        if self.path == "/stop-accepting":
            stuck.set()
            threading.Thread(target=server.shutdown).start()
        if self.path.startswith("/grow?mb="):
            block = bytearray(int(self.path.split("=")[1]) << 20)
            for i in range(0, len(block), 4096):
                block[i] = 1
            kept.append(block)
        rss = int(open("/proc/self/statm").read().split()[1]) * 4096 >> 20
        body = json.dumps({"pid": os.getpid(), "rss_mb": rss,
                           "watchdog_usec": os.environ.get("WATCHDOG_USEC"),
                           "watchdog_pid": os.environ.get("WATCHDOG_PID")}).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass

listener = socket.socket(fileno=3)
server = ThreadingHTTPServer(listener.getsockname()[:2], Handler, bind_and_activate=False)
server.socket = listener
server.daemon_threads = False
signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
tell("READY=1")
server.serve_forever()
while stuck.is_set():
    time.sleep(1)
server.server_close()
"#;

/// `workers` of [`SERVER`] under `--ready notify`, with `args`.
fn python_cluster(name: &str, workers: usize, args: &[&str]) -> Cluster {
    let dir = RuntimeDir::new();
    let script = write_file(&dir, "server.py", SERVER);
    let workers = workers.to_string();
    let mut all = vec!["--name", name, "--workers", &workers, "--ready", "notify"];
    all.extend_from_slice(&["--ready-delay", "200ms"]);
    all.extend_from_slice(args);
    cluster()
        .runtime_dir(&dir)
        .args(&all)
        .command(&["python3", script.to_str().unwrap()])
        .start()
}

/// The address the primary logged for its admin server (`--admin 127.0.0.1:0`).
fn admin_address(cluster: &Cluster) -> SocketAddr {
    let line = cluster.stderr.wait_for("admin server on http://");
    let rest = line.split("http://").nth(1).unwrap();
    rest.split('/').next().unwrap().parse().unwrap()
}

/// The slot's row of `status --json` whose `last_replacement` is set.
fn replacement_of(status: &serde_json::Value, slot: u64) -> serde_json::Value {
    let rows = status["slots"].as_array().unwrap();
    rows.iter()
        .find(|row| row["slot"] == slot && !row["last_replacement"].is_null())
        .map(|row| row["last_replacement"].clone())
        .unwrap_or(serde_json::Value::Null)
}

#[test]
fn a_worker_that_stops_its_heartbeat_is_replaced_new_first_and_aborted() {
    let name = "watchdog-hung";
    let cluster = python_cluster(name, 1, &["--watchdog", "1s", "--admin", "127.0.0.1:0"]);
    let old = cluster.ready_pids(1)[0];
    let answer = cluster.get("/").unwrap();
    assert_eq!(answer.field("watchdog_usec"), "1000000");
    assert_eq!(
        answer.field("watchdog_pid"),
        old.to_string(),
        "the worker's own pid"
    );
    // Heartbeats keep it well past the watchdog.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(cluster.pids_ready_so_far(), [old], "{}", cluster.log());
    assert_eq!(cluster.get("/stop-heartbeat").unwrap().pid(), old);
    let line = cluster.stderr.wait_for(&format!(
        "worker 1 (pid {old}) replaced: no heartbeat for 1s"
    ));
    assert!(line.contains("(new first, then SIGABRT)"), "{line}");
    let new = cluster.ready_pids(2)[1];
    assert_ne!(new, old);
    cluster
        .stderr
        .wait_for(&format!("worker 1 (pid {old}) was killed by SIGABRT"));
    assert_eq!(cluster.get("/").unwrap().pid(), new);

    let status = status_json(&cluster, name);
    let replaced = replacement_of(&status, 1);
    assert_eq!(replaced["pid"], old);
    assert_eq!(replaced["kind"], "watchdog");
    assert_eq!(replaced["reason"], "no heartbeat for 1s (--watchdog)");
    assert_eq!(status["slots"][0]["replacements"]["watchdog"], 1);
    let text = cluster.herdsman(&["status", name]);
    assert!(
        text.stdout.contains(&format!(
            "replaced: no heartbeat for 1s (--watchdog) (pid {old}"
        )),
        "{}",
        text.stdout
    );
    let logs = cluster.herdsman(&["logs", name]);
    assert!(
        logs.stdout.contains(&format!(
            "worker 1 (pid {old}) replaced: no heartbeat for 1s"
        )),
        "{}",
        logs.stdout
    );
    let metrics = http_get(admin_address(&cluster), "/metrics").unwrap().body;
    assert!(
        metrics.contains("herdsman_slot_replacements_total{slot=\"1\",reason=\"watchdog\"} 1"),
        "{metrics}"
    );
}

#[test]
fn a_worker_that_leaves_its_queue_unaccepted_for_the_watchdog_is_hung() {
    let name = "watchdog-queue";
    let cluster = python_cluster(name, 1, &["--watchdog", "1s", "--accept-timeout", "5s"]);
    let old = cluster.ready_pids(1)[0];
    assert_eq!(cluster.get("/stop-accepting").unwrap().pid(), old);
    // This connection waits in the stuck worker's queue; the hung worker's replacement gets it
    // (relayed once the old worker is gone).
    let address = cluster.address();
    let waiting = std::thread::spawn(move || http_get(address, "/"));
    let line = cluster.stderr.wait_for(&format!(
        "worker 1 (pid {old}) replaced: left 1 connection unaccepted"
    ));
    assert!(line.contains("for 1s (--watchdog)"), "{line}");
    let new = cluster.ready_pids(2)[1];
    cluster
        .stderr
        .wait_for(&format!("worker 1 (pid {old}) was killed by SIGABRT"));
    assert_eq!(waiting.join().unwrap().unwrap().pid(), new);
    assert!(
        !cluster.log().contains("not accepting"),
        "{}",
        cluster.log()
    );
    let status = status_json(&cluster, name);
    assert_eq!(replacement_of(&status, 1)["kind"], "watchdog");
}

#[test]
fn a_worker_past_max_memory_is_replaced_with_no_failed_request() {
    let name = "max-memory";
    let cluster = python_cluster(name, 2, &["--max-memory", "80mb"]);
    let ready = cluster.wait_ready(2);
    let pids: Vec<u32> = ready.iter().map(|(_, pid)| *pid).collect();
    let load = load_loop(cluster.address(), false);
    // Grow one worker past the limit while the client runs.
    let grown = eventually("a worker grows", || {
        let answer = cluster.get("/grow?mb=100").ok()?;
        (answer.field("rss_mb").parse::<u64>().ok()? > 80).then(|| answer.pid())
    });
    assert!(pids.contains(&grown));
    let line = cluster
        .stderr
        .wait_for(&format!("(pid {grown}) replaced: rss "));
    assert!(line.contains("over --max-memory 80 MiB"), "{line}");
    assert!(line.contains("(new first, gracefully)"), "{line}");
    let new = cluster.ready_pids(3)[2];
    cluster
        .stderr
        .wait_for(&format!("(pid {grown}) exited with code 0"));
    let report = load.finish(300);
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert!(report.pids.contains(&new), "the new worker served");
    let status = status_json(&cluster, name);
    let slot = ready.iter().find(|(_, pid)| *pid == grown).unwrap().0 as u64;
    let replaced = replacement_of(&status, slot);
    assert_eq!(replaced["kind"], "max-memory", "{status}");
    assert_eq!(replaced["pid"], grown);
}

#[test]
fn a_worker_is_replaced_after_max_requests_through_the_proxy() {
    let name = "max-requests";
    let cluster = cluster()
        .args(&[
            "--name",
            name,
            "--workers",
            "1",
            "--balance",
            "proxy",
            "--max-requests",
            "50",
        ])
        .start();
    let first = cluster.ready_pids(1)[0];
    // The proxy counts requests, not connections: 48 on one kept connection, one on its own.
    let mut client = KeepAliveClient::new(cluster.address());
    for request in 0..48 {
        let answer = client.get("/").unwrap();
        assert_eq!(answer.pid(), first, "request {request}");
    }
    assert_eq!(cluster.get("/").unwrap().pid(), first);
    // Nothing happens before the 50th.
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(cluster.pids_ready_so_far(), [first], "{}", cluster.log());
    assert_eq!(client.get("/").unwrap().pid(), first);
    cluster.stderr.wait_for(&format!(
        "worker 1 (pid {first}) replaced: served 50 requests (--max-requests, its limit 50)"
    ));
    let second = cluster.ready_pids(2)[1];
    eventually("the new worker serves", || {
        (cluster.get("/").ok()?.pid() == second).then_some(())
    });
    let status = status_json(&cluster, name);
    assert_eq!(replacement_of(&status, 1)["kind"], "max-requests");
}

/// `herdsman run` over examples/limits (the Rust library's worker): its heartbeat comes from
/// the worker's runtime, its listener reports what it accepted.
fn library_cluster(name: &str, args: &[&str]) -> Cluster {
    let mut all = vec!["--name", name];
    all.extend_from_slice(args);
    cluster()
        .args(&all)
        .command(&[example_bin("limits").to_str().unwrap()])
        .start()
}

#[test]
fn the_librarys_heartbeat_stops_with_a_blocked_runtime() {
    let cluster = library_cluster("library-watchdog", &["--workers", "1", "--watchdog", "1s"]);
    let old = cluster.ready_pids(1)[0];
    // The library's heartbeat keeps it well past the watchdog.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(cluster.pids_ready_so_far(), [old], "{}", cluster.log());
    // A request that blocks the runtime for 5 s: no heartbeat either.
    let address = cluster.address();
    let blocked = std::thread::spawn(move || http_get(address, "/block?ms=5000"));
    cluster.stderr.wait_for(&format!(
        "worker 1 (pid {old}) replaced: no heartbeat for 1s"
    ));
    let new = cluster.ready_pids(2)[1];
    cluster
        .stderr
        .wait_for(&format!("worker 1 (pid {old}) was killed by SIGABRT"));
    assert_eq!(cluster.get("/").unwrap().pid(), new);
    // The hung worker died with the request it held.
    assert!(blocked.join().unwrap().is_err());
}

#[test]
fn the_librarys_listener_reports_its_connections_for_max_requests() {
    let name = "library-requests";
    let cluster = library_cluster(name, &["--workers", "1", "--max-requests", "20"]);
    let first = cluster.ready_pids(1)[0];
    for request in 0..19 {
        assert_eq!(cluster.get("/").unwrap().pid(), first, "request {request}");
    }
    assert_eq!(cluster.pids_ready_so_far(), [first]);
    let load = load_loop(cluster.address(), false);
    cluster.stderr.wait_for(&format!(
        "worker 1 (pid {first}) replaced: served 20 requests (--max-requests, its limit 20)"
    ));
    let second = cluster.ready_pids(2)[1];
    cluster
        .stderr
        .wait_for(&format!("worker 1 (pid {first}) exited with code 0"));
    let report = load.finish(50);
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert!(report.pids.contains(&second), "{:?}", report.pids);
    let status = status_json(&cluster, name);
    assert_eq!(replacement_of(&status, 1)["kind"], "max-requests");
}

#[test]
fn bad_limits_are_refused_with_what_to_do() {
    let dir = RuntimeDir::new();
    let cases = [
        (
            &["--max-requests-jitter", "5"][..],
            "--max-requests-jitter 5 raises each worker's --max-requests, but no --max-requests",
        ),
        (
            &["--max-requests", "0"],
            "--max-requests 0 would replace every worker",
        ),
        (
            &["--watchdog", "10ms"],
            "`10ms` is too short for a watchdog",
        ),
        (&["--max-memory", "lots"], "`lots` is not a size"),
    ];
    for (args, message) in cases {
        dir.assert_run_refused(&[args, &["--", "true"]].concat(), message);
    }
}

#[test]
fn round_robin_counts_the_connections_it_hands_a_node_worker() {
    let name = "max-requests-rr";
    let app = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/node/http-app.js");
    let cluster = cluster()
        .args(&[
            "--name",
            name,
            "--workers",
            "1",
            "--balance",
            "round-robin",
            "--max-requests",
            "15",
        ])
        .command(&["node", app.to_str().unwrap()])
        .start();
    let first = cluster.ready_pids(1)[0];
    for request in 0..15 {
        assert_eq!(cluster.get("/").unwrap().pid(), first, "request {request}");
    }
    cluster.stderr.wait_for(&format!(
        "worker 1 (pid {first}) replaced: served 15 requests (--max-requests, its limit 15)"
    ));
    let second = cluster.ready_pids(2)[1];
    eventually("the new worker serves", || {
        (cluster.get("/").ok()?.pid() == second).then_some(())
    });
    let status = status_json(&cluster, name);
    assert_eq!(replacement_of(&status, 1)["pid"], first);
}
