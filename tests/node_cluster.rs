//! Node apps run unmodified (issue 13): herdsman speaks Node's cluster protocol, so
//! `net.Server.listen()` in a worker asks the primary for its socket (`queryServer`) instead of
//! binding, `cluster.worker.id` is the slot, `process.send` and `herdsman send` carry messages,
//! and a reload drains a worker politely with `disconnect`. Real Node, real Express
//! (examples/node, installed by `npm ci`), real sockets on 127.0.0.1.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::support::*;

pub(crate) fn example(path: &str) -> String {
    format!("{}/examples/node/{path}", env!("CARGO_MANIFEST_DIR"))
}

/// `--workers 2 --name NAME -- COMMAND`, started, with both workers ready; returns their pids
/// by slot.
pub(crate) fn node_cluster(name: &str, command: &[&str]) -> (Cluster, BTreeMap<usize, u32>) {
    node_cluster_balanced(name, "reuseport", command)
}

/// [`node_cluster`] with `--balance BALANCE`.
fn node_cluster_balanced(
    name: &str,
    balance: &str,
    command: &[&str],
) -> (Cluster, BTreeMap<usize, u32>) {
    let cluster = cluster()
        .args(&["--workers", "2", "--name", name, "--balance", balance])
        .command(command)
        .start();
    let ready = cluster.wait_ready(2).into_iter().collect();
    (cluster, ready)
}

/// Sends `GET /` on new connections to `address` until 2 distinct pids answered (at most
/// 2,000); checks every answer's `cluster.worker.id` against its `HERDSMAN_WORKER_ID`; returns
/// pid → slot.
fn serving_workers(address: SocketAddr) -> BTreeMap<u32, String> {
    let mut seen = BTreeMap::new();
    for _ in 0..2000 {
        let response = http_get(address, "/").expect("GET /");
        assert_eq!(response.status, 200, "{response:?}");
        let slot = response.field("worker");
        assert_eq!(
            response.field("cluster_worker"),
            slot,
            "cluster.worker.id is the slot: {response:?}"
        );
        seen.insert(response.pid(), slot);
        if seen.len() == 2 {
            return seen;
        }
    }
    panic!("2,000 requests reached only {seen:?}");
}

/// Both workers serve, each as the slot herdsman started it in.
pub(crate) fn assert_served_by(address: SocketAddr, ready: &BTreeMap<usize, u32>) {
    let serving = serving_workers(address);
    let expected: BTreeMap<u32, String> = ready
        .iter()
        .map(|(&slot, &pid)| (pid, slot.to_string()))
        .collect();
    assert_eq!(serving, expected, "the 2 ready workers serve, by slot");
}

/// The pids of `pid`'s children (every thread's).
fn children(pid: u32) -> Vec<u32> {
    let mut children = Vec::new();
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("list the worker's tasks");
    for task in tasks {
        let path = task.unwrap().path().join("children");
        let text = std::fs::read_to_string(path).unwrap_or_default();
        children.extend(
            text.split_whitespace()
                .map(|pid| pid.parse::<u32>().unwrap()),
        );
    }
    children
}

/// A port that was free a moment ago, for an app that picks its own.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Stops the cluster with SIGTERM: exit 0, and every worker in `pids` exited by itself with
/// code 0 (drained through `disconnect`; an unmodified app has no SIGTERM handler and would
/// die of the signal).
fn stop_politely(cluster: &mut Cluster, pids: &[u32]) {
    cluster.signal(Signal::SIGTERM);
    assert_eq!(cluster.wait_exit().code(), Some(0), "{}", cluster.log());
    for pid in pids {
        assert!(
            cluster
                .log()
                .contains(&format!(" (pid {pid}) exited with code 0")),
            "worker {pid} exits by itself after `disconnect`; log:\n{}",
            cluster.log()
        );
    }
    wait_all_gone(pids);
}

#[test]
fn unmodified_express_app_serves_from_two_workers_whose_cluster_id_is_their_slot() {
    let (mut cluster, ready) = node_cluster("express", &["node", &example("express-app.js")]);
    assert_served_by(cluster.address(), &ready);
    for (slot, pid) in &ready {
        let line = cluster
            .stdout
            .wait_for(&format!("express {pid} listening on "));
        assert!(line.starts_with(&format!("[{slot}:{pid}] ")), "{line}");
    }
    // app.listen() got the cluster's socket: no EADDRINUSE, no worker exited or restarted.
    let status = status_json(&cluster, "express");
    assert_eq!(column(&status, "restarts"), [0, 0], "{status}");
    assert_eq!(
        cluster.stderr.count(|line| line.contains(" exited ")),
        0,
        "{}",
        cluster.log()
    );
    let pids: Vec<u32> = ready.values().copied().collect();
    stop_politely(&mut cluster, &pids);
}

#[test]
fn seed_style_cluster_program_goes_straight_to_its_worker_branch() {
    let (mut cluster, ready) = node_cluster("seed", &["node", &example("seed-cluster.js")]);
    assert_served_by(cluster.address(), &ready);
    for (slot, pid) in &ready {
        let line = cluster.stdout.wait_for(&format!("worker {pid} started"));
        assert!(line.starts_with(&format!("[{slot}:{pid}] ")), "{line}");
        assert_eq!(children(*pid), Vec::<u32>::new(), "worker {pid} forked");
    }
    assert_eq!(
        cluster.stdout.count(|line| line.contains("forking")),
        0,
        "the primary branch ran in a worker: {:?}",
        cluster.stdout.snapshot()
    );
    let pids: Vec<u32> = ready.values().copied().collect();
    stop_politely(&mut cluster, &pids);
}

#[test]
fn killed_express_worker_is_replaced_and_no_new_connection_fails() {
    killed_worker_is_replaced_and_no_new_connection_fails("reuseport");
}

#[test]
fn killed_worker_under_round_robin_is_replaced_and_no_new_connection_fails() {
    killed_worker_is_replaced_and_no_new_connection_fails("round-robin");
}

fn killed_worker_is_replaced_and_no_new_connection_fails(balance: &str) {
    let express = example("express-app.js");
    let (cluster, ready) = node_cluster_balanced("express", balance, &["node", &express]);
    assert_served_by(cluster.address(), &ready);
    let victim = ready[&1];
    // The client sends one request per connection, one at a time, and the kill falls between
    // two of them: every request after it is on a new connection, and none may fail.
    kill(Pid::from_raw(victim as i32), Signal::SIGKILL).unwrap();
    let old: Vec<u32> = ready.values().copied().collect();
    let (_, failures, replacement) =
        fresh_requests_until_replaced(&cluster, &old, victim, |response, replaced| {
            assert_eq!(response.field("cluster_worker"), response.field("worker"));
            if replaced {
                assert_eq!(response.field("worker"), "1", "{response:?}");
            }
        });
    assert_eq!(failures, Vec::<String>::new(), "log:\n{}", cluster.log());
    cluster
        .stderr
        .wait_for(&format!("worker 1 (pid {victim}) was killed by SIGKILL"));
    let status = status_json(&cluster, "express");
    assert_eq!(
        column(&status, "pid"),
        [replacement as u64, ready[&2] as u64],
        "{status}"
    );
}

#[test]
fn three_reloads_of_express_under_keep_alive_and_fresh_connections_fail_no_request() {
    three_reloads_under_keep_alive_and_fresh_connections_fail_no_request("reuseport");
}

#[test]
fn three_reloads_under_round_robin_fail_no_request() {
    three_reloads_under_keep_alive_and_fresh_connections_fail_no_request("round-robin");
}

fn three_reloads_under_keep_alive_and_fresh_connections_fail_no_request(balance: &str) {
    let express = example("express-app.js");
    let (cluster, ready) = node_cluster_balanced("express", balance, &["node", &express]);
    three_reloads_under_load_fail_nothing(&cluster, "express");
    let status = status_json(&cluster, "express");
    assert_eq!(status["generation"], 4, "{status}");
    let pids = column(&status, "pid");
    let now: BTreeMap<usize, u32> = pids
        .iter()
        .enumerate()
        .map(|(index, &pid)| (index + 1, pid as u32))
        .collect();
    assert_served_by(cluster.address(), &now);
    // The polite drain: every replaced worker (3 per slot) exited by itself after `disconnect`.
    let replaced: Vec<u32> = cluster
        .pids_ready_so_far()
        .into_iter()
        .filter(|pid| !now.values().any(|serving| serving == pid))
        .collect();
    assert_eq!(replaced.len(), 6, "{replaced:?}; log:\n{}", cluster.log());
    assert!(ready.values().all(|pid| replaced.contains(pid)));
    for pid in &replaced {
        cluster
            .stderr
            .wait_for(&format!(" (pid {pid}) exited with code 0"));
    }
}

/// An app that listens at once and warms up after (1.5 s), answering 503 meanwhile; warm, it
/// says so with `process.send('ready')`, PM2's `wait_ready` convention.
const WARMING_APP: &str = r#"
const http = require('node:http');
let warm = false;
http
  .createServer((request, response) => {
    response.statusCode = warm ? 200 : 503;
    response.end(JSON.stringify({ pid: process.pid, warm }));
  })
  .listen(process.env.PORT, () =>
    setTimeout(() => {
      warm = true;
      console.log('warm');
      process.send('ready');
    }, 1500),
  );
"#;

/// `process.send('ready')` counts, and `listening` does not stand in for it: under `--ready
/// notify` a worker is ready only once warm; under `--ready delay` start-up counts `listening`,
/// but once the command is seen to say `ready`, a reload's new workers wait for theirs, so the
/// clients of a reload never meet a warming worker.
#[test]
fn a_worker_that_says_ready_in_words_gets_no_client_before_it() {
    let dir = RuntimeDir::new();
    let script = dir.path().join("warming.js");
    std::fs::write(&script, WARMING_APP).unwrap();
    let script = script.to_str().unwrap();
    let notify = cluster()
        .runtime_dir(&dir)
        .args(&[
            "--workers",
            "2",
            "--name",
            "warm-notify",
            "--ready",
            "notify",
        ])
        .command(&["node", script])
        .start();
    notify.wait_ready(2);
    for request in 0..20 {
        let response = notify.get("/").unwrap();
        assert_eq!(response.status, 200, "request {request}: {response:?}");
    }
    drop(notify);

    let cluster = cluster()
        .runtime_dir(&dir)
        .args(&["--workers", "2", "--name", "warm-delay"])
        .command(&["node", script])
        .start();
    cluster.wait_ready(2);
    cluster
        .stdout
        .wait_for_count(2, |line| line.ends_with("] warm"));
    let keep_alive = load_loop(cluster.address(), true);
    let fresh = load_loop(cluster.address(), false);
    let output = cluster.herdsman(&["reload", "warm-delay"]);
    assert_eq!(output.code, Some(0), "{output:?}");
    assert_eq!(cluster.stdout.count(|line| line.ends_with("] warm")), 4);
    for (client, report) in [("keep-alive", keep_alive), ("fresh", fresh)] {
        let report = report.finish(100);
        assert_eq!(
            report.failures,
            Vec::<String>::new(),
            "{client}: {} ok; log:\n{}",
            report.ok,
            cluster.log()
        );
    }
}

/// A worker as Node's cluster docs write one: it tells the primary it listens, and prints what
/// the primary sends.
const MESSAGING_WORKER: &str = r#"
const http = require('node:http');
const id = process.env.HERDSMAN_WORKER_ID;
process.on('message', (message) => console.log(`worker ${id} got ${JSON.stringify(message)}`));
http
  .createServer((request, response) => response.end(JSON.stringify({ pid: process.pid })))
  .listen(process.env.PORT, () => process.send({ hello: 'primary', worker: id }));
"#;

#[test]
fn process_send_reaches_herdsman_logs_and_herdsman_send_reaches_the_worker() {
    // A script file, as `cluster.fork()` runs one: Node sets a worker up only for a script
    // (`process.argv[1]`), never for `node -e`.
    let dir = RuntimeDir::new();
    let script = dir.path().join("messaging.js");
    std::fs::write(&script, MESSAGING_WORKER).unwrap();
    let cluster = cluster()
        .runtime_dir(&dir)
        .args(&["--workers", "2", "--name", "msgs"])
        .command(&["node", script.to_str().unwrap()])
        .start();
    let ready: BTreeMap<usize, u32> = cluster.wait_ready(2).into_iter().collect();
    // Sent from the listen callback: it may come before the worker counts as ready.
    for (slot, pid) in &ready {
        let text = format!(
            "worker {slot} (pid {pid}) message: {{\"hello\":\"primary\",\"worker\":\"{slot}\"}}"
        );
        cluster
            .stderr
            .wait_for_count(1, |line| line.contains(&text));
    }
    let logs = cluster.herdsman(&["logs", "msgs", "-n", "100"]);
    for slot in ready.keys() {
        let text = format!("message: {{\"hello\":\"primary\",\"worker\":\"{slot}\"}}");
        assert!(logs.stdout.contains(&text), "{text} in {}", logs.stdout);
    }
    let output = cluster.herdsman(&["send", "msgs", "1", r#"{"ping":42}"#]);
    assert_eq!(output.code, Some(0), "{output:?}");
    assert_eq!(output.stdout.trim(), "sent to 1 worker");
    let line = cluster.stdout.wait_for(r#"worker 1 got {"ping":42}"#);
    assert!(line.starts_with(&format!("[1:{}] ", ready[&1])), "{line}");
    let output = cluster.herdsman(&["send", "msgs", "all", r#"["to","all"]"#]);
    assert_eq!(output.stdout.trim(), "sent to 2 workers", "{output:?}");
    cluster.stdout.wait_for(r#"worker 2 got ["to","all"]"#);
    cluster.stdout.wait_for(r#"worker 1 got ["to","all"]"#);
    // Exactly once each.
    assert_eq!(cluster.stdout.count(|line| line.contains(" got ")), 3);
    let logs = cluster.herdsman(&["logs", "msgs", "-n", "100"]);
    let text = format!("[1:{}] worker 1 got {{\"ping\":42}}", ready[&1]);
    assert!(logs.stdout.contains(&text), "{text} in {}", logs.stdout);
}

/// Worker 1 sends the primary an internal message it does not know, a malformed one, then a
/// user message; worker 2 (once, the first of its slot) writes a line that is not JSON on the
/// channel itself.
const BAD_MESSAGES_WORKER: &str = r#"
const fs = require('node:fs');
const http = require('node:http');
const id = process.env.HERDSMAN_WORKER_ID;
process.on('message', (message) => {
  console.log(`worker ${id} got ${JSON.stringify(message)}`);
  if (message !== 'go') return;
  if (id === '1') {
    process.send({ cmd: 'NODE_CLUSTER', act: 'bogus', seq: 1000 });
    process.send({ cmd: 'NODE_CLUSTER', act: 'queryServer', seq: 'x' });
    process.send({ sent: 2 });
  } else if (!fs.existsSync(process.env.GARBAGE_SENT)) {
    fs.writeFileSync(process.env.GARBAGE_SENT, '');
    fs.writeSync(process.channel.fd, 'this is not json\n');
  }
});
http
  .createServer((request, response) => response.end(JSON.stringify({ pid: process.pid })))
  .listen(process.env.PORT);
"#;

#[test]
fn unknown_and_malformed_internal_messages_are_logged_with_the_worker_and_ignored() {
    let dir = RuntimeDir::new();
    let marker = dir.path().join("garbage-sent");
    let script = dir.path().join("bad-messages.js");
    std::fs::write(&script, BAD_MESSAGES_WORKER).unwrap();
    let cluster = cluster()
        .runtime_dir(&dir)
        .args(&["--workers", "2", "--name", "bad"])
        .env("GARBAGE_SENT", marker.to_str().unwrap())
        .command(&["node", script.to_str().unwrap()])
        .start();
    let ready: BTreeMap<usize, u32> = cluster.wait_ready(2).into_iter().collect();
    let (one, two) = (ready[&1], ready[&2]);
    // Once both serve: the bad messages come when the workers are told to send them.
    let output = cluster.herdsman(&["send", "bad", "all", r#""go""#]);
    assert_eq!(output.stdout.trim(), "sent to 2 workers", "{output:?}");
    let worker_one = format!("herdsman: worker 1 (pid {one})");
    let bogus = cluster.stderr.wait_for_count(1, |line| {
        line.starts_with(&worker_one) && line.contains("bogus")
    });
    let malformed = cluster.stderr.wait_for_count(1, |line| {
        line.starts_with(&worker_one) && line.contains("queryServer")
    });
    assert_ne!(bogus, malformed, "{}", cluster.log());
    // Ignored: worker 1's channel stays open both ways, and it keeps its slot.
    let sent = cluster
        .stderr
        .wait_for(&format!("worker 1 (pid {one}) message: {{\"sent\":2}}"));
    let log = cluster.stderr.snapshot();
    let at = |line: &str| log.iter().position(|seen| seen == line).unwrap();
    assert!(at(&sent) > at(&bogus[0]) && at(&sent) > at(&malformed[0]));
    let output = cluster.herdsman(&["send", "bad", "1", r#""still there?""#]);
    assert_eq!(output.stdout.trim(), "sent to 1 worker", "{output:?}");
    let line = cluster.stdout.wait_for(r#"worker 1 got "still there?""#);
    assert!(line.starts_with(&format!("[1:{one}] ")), "{line}");
    // The line that is not JSON is logged with worker 2.
    cluster.stderr.wait_for_count(1, |line| {
        line.starts_with(&format!("herdsman: worker 2 (pid {two})")) && line.contains("not JSON")
    });
    // The primary keeps serving, both slots ready, worker 1 never restarted.
    for _ in 0..50 {
        let response = cluster.get("/").expect("GET /");
        assert_eq!(response.status, 200, "{response:?}");
    }
    eventually("both slots ready again", || {
        let status = status_json(&cluster, "bad");
        let states: Vec<String> = status["slots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| row["state"].as_str().unwrap().to_string())
            .collect();
        (states == ["ready", "ready"]).then_some(())
    });
    let status = status_json(&cluster, "bad");
    assert_eq!(column(&status, "pid")[0], one as u64, "{status}");
    assert_eq!(column(&status, "restarts")[0], 0, "{status}");
    assert!(alive(cluster.pid()));
}

/// Fastify and Koa, unmodified, each serve from 2 workers whose `cluster.worker.id` is their
/// slot, and stop by `disconnect` (exit 0).
#[test]
fn unmodified_fastify_and_koa_apps_serve_from_both_workers() {
    for (name, script) in [("fastify", "fastify-app.js"), ("koa", "koa-app.js")] {
        let (mut cluster, ready) = node_cluster(name, &["node", &example(script)]);
        assert_served_by(cluster.address(), &ready);
        let pids: Vec<u32> = ready.values().copied().collect();
        stop_politely(&mut cluster, &pids);
    }
}

/// socket.io over websocket, unmodified: fresh clients reach both workers, each answered by
/// the worker that accepted it.
#[test]
fn unmodified_socket_io_server_answers_websocket_clients_from_both_workers() {
    let (mut cluster, ready) = node_cluster("sio", &["node", &example("socketio-app.js")]);
    let url = format!("http://{}", cluster.address());
    let mut seen = BTreeMap::new();
    for _ in 0..200 {
        let output = std::process::Command::new("node")
            .arg(example("socketio-client.js"))
            .arg(&url)
            .output()
            .expect("run the socket.io client");
        assert!(output.status.success(), "{output:?}");
        let answer: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        let pid = answer["pid"].as_u64().unwrap() as u32;
        seen.insert(pid, answer["worker"].as_str().unwrap().to_string());
        if seen.len() == 2 {
            break;
        }
    }
    let expected: BTreeMap<u32, String> = ready
        .iter()
        .map(|(&slot, &pid)| (pid, slot.to_string()))
        .collect();
    assert_eq!(seen, expected, "both workers answer over websocket");
    let pids: Vec<u32> = ready.values().copied().collect();
    stop_politely(&mut cluster, &pids);
}

#[test]
fn round_robin_hands_2000_fresh_connections_1000_to_each_of_2_workers() {
    let (mut cluster, ready) =
        node_cluster_balanced("rr", "round-robin", &["node", &example("busy-app.js")]);
    let mut by_slot: BTreeMap<String, usize> = BTreeMap::new();
    for request in 0..2000 {
        let response = http_get(cluster.address(), "/")
            .unwrap_or_else(|error| panic!("request {request}: {error}"));
        assert_eq!(response.status, 200, "{response:?}");
        assert_eq!(response.field("cluster_worker"), response.field("worker"));
        *by_slot.entry(response.field("worker")).or_default() += 1;
    }
    let expected = BTreeMap::from([("1".to_string(), 1000), ("2".to_string(), 1000)]);
    assert_eq!(by_slot, expected, "log:\n{}", cluster.log());
    let pids: Vec<u32> = ready.values().copied().collect();
    stop_politely(&mut cluster, &pids);
}

#[test]
fn round_robin_sends_no_new_connection_to_a_worker_stuck_in_cpu_work() {
    let (cluster, ready) =
        node_cluster_balanced("busy", "round-robin", &["node", &example("busy-app.js")]);
    let address = cluster.address();
    let spin = std::thread::spawn(move || http_get(address, "/spin?ms=3000"));
    let line = cluster.stdout.wait_for("spinning for 3000 ms");
    // `[SLOT:PID] worker SLOT spinning …`
    let prefix = line.trim_start_matches('[').split(']').next().unwrap();
    let (slot, pid) = prefix.split_once(':').unwrap();
    let busy_pid: u32 = pid.parse().unwrap();
    assert_eq!(ready[&slot.parse::<usize>().unwrap()], busy_pid, "{line}");
    // An idle worker is asked whether it is free every 100 ms and passed over 200 ms after a
    // question it leaves unanswered (`round_robin::PULSE`, `PATIENCE`): from then on, well
    // within the 3 s, the busy worker gets nothing.
    std::thread::sleep(std::time::Duration::from_millis(400));
    quick_requests_pass_over(&cluster, busy_pid);
    let spun = spin
        .join()
        .unwrap()
        .expect("the spinning request is answered");
    assert_eq!(spun.pid(), busy_pid);
}

#[test]
fn round_robin_needs_an_ipc_channel() {
    let output = RuntimeDir::new().herdsman(&[
        "run",
        "--balance",
        "round-robin",
        "--port",
        "0",
        "--",
        "python3",
        "-m",
        "http.server",
    ]);
    assert_eq!(output.code, Some(2), "{output:?}");
    assert!(
        output.stderr.contains(
            "--balance round-robin hands each connection to a worker over its IPC channel, and \
             `python3` runs without one: give it --ipc if it takes handed connections"
        ),
        "{}",
        output.stderr
    );
}
