//! The IPC channel (issue 4): readiness and messages over `HERDSMAN_IPC_FD`, Node's
//! process.send / process.on('message') under `--ipc node`, `herdsman send`, and bad frames.

use crate::support::{cluster, Cluster};

fn node_ipc_cluster() -> Cluster {
    let script = format!("{}/examples/node/ipc.js", env!("CARGO_MANIFEST_DIR"));
    let cluster = cluster()
        .args(&[
            "--workers",
            "2",
            "--ready-delay",
            "300ms",
            "--ipc",
            "node",
            "--name",
            "ipc",
        ])
        .command(&["node", &script])
        .start();
    cluster.wait_ready(2);
    cluster
}

#[test]
fn node_process_send_reaches_the_primary_and_herdsman_send_reaches_process_on_message() {
    let cluster = node_ipc_cluster();
    for slot in 1..=2 {
        cluster
            .stderr
            .wait_for(&format!("message: {{\"online\":\"{slot}\"}}"));
    }
    let output = cluster.herdsman(&["send", "ipc", "all", r#"{"greeting":"hello"}"#]);
    assert_eq!(output.code, Some(0), "{output:?}");
    assert_eq!(output.stdout.trim(), "sent to 2 workers");
    let echoes = cluster
        .stderr
        .wait_for_count(2, |line| line.contains("\"echo\":{\"greeting\":\"hello\"}"));
    assert_eq!(echoes.len(), 2);
    let output = cluster.herdsman(&["send", "ipc", "2", r#"[1,2,3]"#]);
    assert_eq!(output.stdout.trim(), "sent to 1 worker", "{output:?}");
    let line = cluster.stderr.wait_for("\"echo\":[1,2,3]");
    assert!(
        line.contains("worker 2 (pid ") && line.contains(r#""worker":"2""#),
        "{line}"
    );
    // Exactly once each: two greetings, one list, nothing more.
    let count = |text: &str| cluster.stderr.count(|line| line.contains(text));
    assert_eq!(count("\"echo\":{\"greeting\":\"hello\"}"), 2);
    assert_eq!(count("\"echo\":[1,2,3]"), 1);
    // The messages show in `herdsman logs`.
    let logs = cluster.herdsman(&["logs", "ipc", "-n", "100"]);
    assert!(logs.stdout.contains("\"echo\":[1,2,3]"), "{}", logs.stdout);
    // Bad input to `send` is refused with the reason.
    let output = cluster.herdsman(&["send", "ipc", "all", "{oops"]);
    assert_eq!(output.code, Some(2));
    assert!(output.stderr.contains("is not JSON"), "{}", output.stderr);
    // A slot the cluster does not have is a usage error, as for `restart`.
    let output = cluster.herdsman(&["send", "ipc", "7", "1"]);
    assert_eq!(output.code, Some(2));
    assert!(
        output
            .stderr
            .contains("cluster `ipc` has no slot 7; slots are 1 to"),
        "{}",
        output.stderr
    );
}

/// A worker in Python speaking the documented protocol on HERDSMAN_IPC_FD: ready by frame,
/// a message to the primary, one to the other worker, then garbage.
const PYTHON_WORKER: &str = r#"
import json, os, socket, sys, time
channel = socket.socket(fileno=int(os.environ["HERDSMAN_IPC_FD"]))
me = int(os.environ["HERDSMAN_WORKER_ID"])
def send(frame): channel.sendall((json.dumps(frame) + "\n").encode())
send({"type": "ready"})
send({"type": "message", "data": {"from": me}})
if me == 1:
    time.sleep(0.5)
    send({"type": "message", "data": {"hello": "two"}, "to": 2})
    channel.settimeout(20)
else:
    line = channel.makefile().readline()
    send({"type": "message", "data": {"got": json.loads(line)}})
    time.sleep(0.2)
    channel.sendall(b"this is not json\n")
time.sleep(60)
"#;

#[test]
fn frames_make_workers_ready_route_messages_and_bad_frames_cut_only_that_channel() {
    let cluster = cluster()
        .args(&[
            "--workers",
            "2",
            "--ready",
            "notify",
            "--ipc",
            "--name",
            "py",
        ])
        .command(&["python3", "-c", PYTHON_WORKER])
        .start();
    // --ready notify: nothing but the `ready` frame can make these workers ready.
    cluster.wait_ready(2);
    cluster.stderr.wait_for("message: {\"from\":1}");
    cluster.stderr.wait_for("message: {\"from\":2}");
    let routed = cluster
        .stderr
        .wait_for("message to worker 2: {\"hello\":\"two\"}");
    assert!(routed.contains("(delivered to 1)"), "{routed}");
    let got = cluster.stderr.wait_for("message: {\"got\":");
    assert!(
        got.contains(r#"{"got":{"data":{"hello":"two"},"from":1,"type":"message"}}"#),
        "{got}"
    );
    let cut = cluster.stderr.wait_for("IPC channel disconnected");
    assert!(cut.starts_with("herdsman: worker 2 (pid "), "{cut}");
    assert!(
        cut.contains("frame is not JSON: expected ident at line 1 column 2"),
        "{cut}"
    );
    // The primary and both workers carry on.
    let status = crate::support::status_json(&cluster, "py");
    let states: Vec<&str> = status["slots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["ready", "ready"]);
    let output = cluster.herdsman(&["send", "py", "2", "1"]);
    assert!(
        output.stderr.contains("worker 2 has no IPC channel"),
        "{output:?}"
    );
    assert_eq!(
        cluster.herdsman(&["send", "py", "1", "1"]).stdout.trim(),
        "sent to 1 worker"
    );
}

/// A Node worker written for PM2's `wait_ready`: it says `process.send('ready')` once it
/// listens, and under `--ipc node --ready notify` nothing else can make it ready (issue 11).
const PM2_READY_WORKER: &str = r#"
const http = require('node:http');
const server = http.createServer((request, response) => {
  response.end(JSON.stringify({ pid: process.pid }));
});
server.listen({ fd: 3 }, () => process.send('ready'));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
"#;

#[test]
fn pm2_process_send_ready_counts_as_ready_under_ipc_node() {
    let mut cluster = cluster()
        .args(&[
            "--workers",
            "2",
            "--ready",
            "notify",
            "--ready-timeout",
            "10s",
            "--ipc",
            "node",
        ])
        .command(&["node", "-e", PM2_READY_WORKER])
        .start();
    let ready = cluster.ready_pids(2);
    cluster.stderr.wait_for("all 2 workers ready");
    assert!(
        cluster.started.elapsed() < std::time::Duration::from_secs(10),
        "ready by the message, not by a timeout"
    );
    assert_eq!(
        cluster
            .stderr
            .count(|line| line.contains("message: \"ready\"")),
        0,
        "a readiness signal, not a message: {}",
        cluster.log()
    );
    let pid = cluster.get("/").unwrap().pid();
    assert!(ready.contains(&pid), "{pid} in {ready:?}");
    cluster.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(cluster.wait_exit().code(), Some(0), "{}", cluster.log());
}
