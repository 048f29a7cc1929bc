//! Handed connections for workers of herdsman's own IPC dialect (issue 15): with
//! `--balance round-robin` or `least-conn` and `--ipc`, the primary accepts and hands each
//! connection's fd to a worker, which serves it through `herdsman::Worker::listener()` (the
//! testserver example does, with axum, when `HERDSMAN_HANDOFF` is set). Real processes, real
//! sockets on 127.0.0.1.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::support::*;

/// `--workers N --balance BALANCE --ipc --name NAME` over the testserver, every worker ready;
/// returns pids by slot.
fn handoff_cluster(name: &str, balance: &str, workers: usize) -> (Cluster, BTreeMap<usize, u32>) {
    handoff_cluster_with(name, balance, workers, &[])
}

/// [`handoff_cluster`] with more flags.
fn handoff_cluster_with(
    name: &str,
    balance: &str,
    workers: usize,
    more: &[&str],
) -> (Cluster, BTreeMap<usize, u32>) {
    let count = workers.to_string();
    let cluster = cluster()
        .args(&[
            "--workers",
            &count,
            "--name",
            name,
            "--balance",
            balance,
            "--ipc",
        ])
        .args(more)
        .start();
    let ready = cluster.wait_ready(workers).into_iter().collect();
    cluster
        .stdout
        .wait_for("serving handed connections on 127.0.0.1:");
    (cluster, ready)
}

/// `requests` fresh connections, one at a time: how many each slot served.
fn served_by_slot(cluster: &Cluster, requests: usize) -> BTreeMap<String, usize> {
    let mut by_slot = BTreeMap::new();
    for request in 0..requests {
        let response = http_get(cluster.address(), "/")
            .unwrap_or_else(|error| panic!("request {request}: {error}"));
        assert_eq!(response.status, 200, "{response:?}");
        *by_slot.entry(response.field("worker")).or_default() += 1;
    }
    by_slot
}

fn exact(slots: usize, each: usize) -> BTreeMap<String, usize> {
    (1..=slots).map(|slot| (slot.to_string(), each)).collect()
}

#[test]
fn round_robin_hands_2000_fresh_connections_1000_to_each_of_2_library_workers() {
    let (cluster, _) = handoff_cluster("rr2", "round-robin", 2);
    assert_eq!(
        served_by_slot(&cluster, 2000),
        exact(2, 1000),
        "log:\n{}",
        cluster.log()
    );
    assert!(
        !cluster.log().contains("cannot accept"),
        "no accept errors; log:\n{}",
        cluster.log()
    );
}

#[test]
fn round_robin_hands_2000_fresh_connections_500_to_each_of_4_library_workers() {
    let (cluster, _) = handoff_cluster("rr4", "round-robin", 4);
    assert_eq!(
        served_by_slot(&cluster, 2000),
        exact(4, 500),
        "log:\n{}",
        cluster.log()
    );
}

/// While one worker burns the CPU for 3 s (the testserver has one thread, so its whole loop
/// is stuck), 50 quick requests on fresh connections all finish in under 100 ms and none
/// reaches it.
fn no_new_connection_reaches_a_worker_stuck_in_cpu_work(balance: &str) {
    let (cluster, ready) = handoff_cluster("busy", balance, 2);
    let address = cluster.address();
    let burn = std::thread::spawn(move || http_get(address, "/burn?ms=3000"));
    let line = cluster.stdout.wait_for("burn start");
    let busy_pid: u32 = word_after(&line, "pid=").parse().unwrap();
    assert!(ready.values().any(|&pid| pid == busy_pid), "{line}");
    // Idle workers are asked whether they are free every 100 ms and passed over 200 ms after
    // a question they leave unanswered (`round_robin::PULSE`, `PATIENCE`).
    std::thread::sleep(Duration::from_millis(400));
    quick_requests_pass_over(&cluster, busy_pid);
    let burnt = burn
        .join()
        .unwrap()
        .expect("the burning request is answered");
    assert_eq!(burnt.pid(), busy_pid);
}

#[test]
fn least_conn_sends_no_new_connection_to_a_worker_stuck_in_cpu_work() {
    no_new_connection_reaches_a_worker_stuck_in_cpu_work("least-conn");
}

#[test]
fn round_robin_sends_no_new_connection_to_a_library_worker_stuck_in_cpu_work() {
    no_new_connection_reaches_a_worker_stuck_in_cpu_work("round-robin");
}

#[test]
fn least_conn_sends_fresh_connections_to_the_worker_holding_fewest_open() {
    // `--max-pending 2`: a worker's `accepted` may reach the primary after its answer reached
    // the client, whose next connection must still go to it (with 1 it would be passed over
    // while that answer is on its way, as Node's round-robin does).
    let (cluster, ready) = handoff_cluster_with("fewest", "least-conn", 2, &["--max-pending", "2"]);
    let address = cluster.address();
    // 10 keep-alive connections: least-connections spreads them 5 and 5.
    let mut held: Vec<(u32, KeepAliveClient)> = (0..10)
        .map(|index| {
            let mut client = KeepAliveClient::new(address);
            let response = client
                .get("/")
                .unwrap_or_else(|error| panic!("connection {index}: {error}"));
            (response.pid(), client)
        })
        .collect();
    let counts: BTreeMap<u32, usize> = held.iter().fold(BTreeMap::new(), |mut counts, (pid, _)| {
        *counts.entry(*pid).or_default() += 1;
        counts
    });
    let expected: BTreeMap<u32, usize> = ready.values().map(|&pid| (pid, 5)).collect();
    assert_eq!(counts, expected, "5 open on each worker");
    // The primary knows them: status (and /metrics) say 5 and 5.
    let open = |cluster: &Cluster| -> Vec<serde_json::Value> {
        let status = status_json(cluster, "fewest");
        let slots = status["slots"].as_array().unwrap().clone();
        slots
            .iter()
            .map(|slot| slot["connections"].clone())
            .collect()
    };
    eventually("5 connections open on each worker in status", || {
        (open(&cluster) == [5, 5]).then_some(())
    });
    // Slot 2's five close; slot 1's stay open.
    let (keeper, idle) = (ready[&1], ready[&2]);
    held.retain(|(pid, _)| *pid == keeper);
    // Once slot 2's closes have reached the primary, every fresh connection goes to it: it
    // holds at most the one being served, slot 1 holds 5.
    eventually("a fresh connection reaches slot 2", || {
        let response = http_get(address, "/").expect("GET /");
        (response.pid() == idle).then_some(())
    });
    eventually("slot 2's closes in status", || {
        (open(&cluster) == [5, 0]).then_some(())
    });
    let mut by_pid: BTreeMap<u32, usize> = BTreeMap::new();
    for request in 0..20 {
        let response =
            http_get(address, "/").unwrap_or_else(|error| panic!("request {request}: {error}"));
        *by_pid.entry(response.pid()).or_default() += 1;
    }
    assert_eq!(
        by_pid,
        BTreeMap::from([(idle, 20)]),
        "log:\n{}",
        cluster.log()
    );
    // The held connections still serve, on slot 1.
    for (pid, client) in &mut held {
        assert_eq!(client.get("/").unwrap().pid(), *pid);
    }
}

/// A worker killed with connections handed to it and not yet answered: they go to the other
/// worker. One client, one request per connection, the kill between two of them (a request
/// the worker had already taken dies with it, as with any server: not what this tests), then,
/// once the worker is gone, fresh connections until the replacement answers: none may fail.
#[test]
fn killed_worker_under_handoff_loses_no_new_connection() {
    let (cluster, ready) = handoff_cluster("kill9", "round-robin", 2);
    let address = cluster.address();
    let mut served = BTreeSet::new();
    while served.len() < 2 {
        served.insert(http_get(address, "/").expect("GET / before the kill").pid());
    }
    let victim = ready[&1];
    kill(Pid::from_raw(victim as i32), Signal::SIGKILL).unwrap();
    // Dead, not dying (a worker in its last microseconds may still take one), and perhaps not
    // yet seen dead by the primary, which may hand it the next connections: they must go on.
    wait_all_gone(&[victim]);
    let old: Vec<u32> = ready.values().copied().collect();
    let (ok, failures, _) = fresh_requests_until_replaced(&cluster, &old, victim, |_, _| {});
    assert_eq!(
        failures,
        Vec::<String>::new(),
        "{ok} ok; log:\n{}",
        cluster.log()
    );
    cluster
        .stderr
        .wait_for(&format!("worker 1 (pid {victim}) was killed by SIGKILL"));
}

#[test]
fn axum_through_the_library_listener_serves_and_drains_through_three_reloads_failing_nothing() {
    let (cluster, _) = handoff_cluster("reloads", "round-robin", 2);
    three_reloads_under_load_fail_nothing(&cluster, "reloads");
    let output = cluster.stdout.snapshot().join("\n");
    assert_eq!(
        output.matches("drained, exiting").count(),
        6,
        "every replaced worker drained; output:\n{output}"
    );
    assert_eq!(served_by_slot(&cluster, 10), exact(2, 5));
}

#[test]
fn max_pending_must_be_a_positive_number() {
    for bad in ["0", "two", "-1"] {
        let flag = format!("--max-pending={bad}");
        let output = RuntimeDir::new().herdsman(&[
            "run",
            "--balance",
            "round-robin",
            "--ipc",
            &flag,
            "--port",
            "0",
            "--",
            "true",
        ]);
        assert_eq!(output.code, Some(2), "--max-pending {bad}: {output:?}");
        assert!(
            output.stderr.contains(&format!(
                "`{bad}` is not a number of unanswered connections per worker (1 or more"
            )),
            "{}",
            output.stderr
        );
    }
}

#[test]
fn handoff_needs_an_ipc_channel_and_least_conn_a_worker_that_reports_closes() {
    let run = |args: &[&str]| {
        let mut all = vec!["run", "--port", "0"];
        all.extend_from_slice(args);
        RuntimeDir::new().herdsman(&all)
    };
    let output = run(&[
        "--balance",
        "least-conn",
        "--",
        "python3",
        "-m",
        "http.server",
    ]);
    assert_eq!(output.code, Some(2), "{output:?}");
    assert!(
        output.stderr.contains(
            "--balance least-conn hands each connection to a worker over its IPC channel, and \
             `python3` runs without one: give it --ipc"
        ),
        "{}",
        output.stderr
    );
    let output = run(&["--balance", "least-conn", "--", "node", "app.js"]);
    assert_eq!(output.code, Some(2), "{output:?}");
    assert!(
        output
            .stderr
            .contains("Node's cluster protocol reports none: use --balance round-robin"),
        "{}",
        output.stderr
    );
}

/// The Python worker in docs/protocol.md ("Handed connections"), as it is written there.
fn python_handoff_worker() -> String {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/protocol.md"))
        .expect("read docs/protocol.md");
    let start = "In Python, a worker that serves handed connections:\n\n```python\n";
    let after = &doc[doc.find(start).expect("the Python handoff worker") + start.len()..];
    after[..after.find("```").unwrap()].to_string()
}

#[test]
fn the_documented_python_worker_takes_handed_connections_in_turn() {
    let dir = RuntimeDir::new();
    let script = write_file(&dir, "handed.py", &python_handoff_worker());
    let cluster = cluster()
        .runtime_dir(&dir)
        .args(&[
            "--workers",
            "2",
            "--name",
            "py",
            "--balance",
            "round-robin",
            "--ipc",
        ])
        .command(&["python3", script.to_str().unwrap()])
        .start();
    let ready: BTreeSet<u32> = cluster.ready_pids(2).into_iter().collect();
    let mut by_pid: BTreeMap<u32, usize> = BTreeMap::new();
    for request in 0..100 {
        let response = http_get(cluster.address(), "/")
            .unwrap_or_else(|error| panic!("request {request}: {error}; log:\n{}", cluster.log()));
        assert_eq!(response.status, 200, "{response:?}");
        let pid: u32 = response.body.trim().parse().unwrap();
        *by_pid.entry(pid).or_default() += 1;
    }
    let expected: BTreeMap<u32, usize> = ready.iter().map(|&pid| (pid, 50)).collect();
    assert_eq!(by_pid, expected, "log:\n{}", cluster.log());
}
