//! The Rust library (issue 4): one program as primary and workers (`herdsman::Cluster`),
//! lifecycle events in Node's order, and messages both ways, exactly once.

use std::collections::BTreeMap;

use nix::sys::signal::Signal;

use crate::support::{cluster, example_bin, word_after, Cluster};

fn basic(workers: &str) -> Cluster {
    let cluster = cluster()
        .program(example_bin("basic"))
        .env("HERDSMAN_WORKERS", workers)
        .start();
    cluster.wait_ready(workers.parse().unwrap());
    cluster
}

/// The events the primary printed, per pid, in order: `fork`, `online`, ….
fn events_by_pid(cluster: &Cluster) -> BTreeMap<u32, Vec<String>> {
    let mut events: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for line in cluster.stdout.snapshot() {
        let Some(rest) = line.strip_prefix("event ") else {
            continue;
        };
        let name = rest.split(' ').next().unwrap().to_string();
        let pid: u32 = word_after(rest, "pid=").parse().unwrap();
        events.entry(pid).or_default().push(name);
    }
    events
}

#[test]
fn one_program_is_primary_and_workers_with_events_in_order_and_messages_once() {
    let mut cluster = basic("2");
    // Both ways: each worker greets the primary, the primary welcomes each worker, once.
    for slot in 1..=2 {
        cluster
            .stdout
            .wait_for(&format!("event message slot={slot} "));
        cluster.stdout.wait_for(&format!(
            "worker {slot} got {{\"welcome\":{slot}}} from None"
        ));
    }
    let response = cluster.get("/").unwrap();
    assert_eq!(response.field("welcomed"), "true");
    // The workers are this same program, re-executed: their pids are children serving the port.
    let pids: Vec<u32> = cluster.ready_pids(2);
    for pid in &pids {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
        assert_eq!(exe, example_bin("basic"));
    }
    cluster.signal(Signal::SIGTERM);
    assert_eq!(cluster.wait_exit().code(), Some(0), "{}", cluster.log());
    let events = events_by_pid(&cluster);
    for pid in &pids {
        assert_eq!(
            events[pid],
            [
                "fork",
                "online",
                "listening",
                "message",
                "disconnect",
                "exit"
            ],
            "pid {pid}"
        );
    }
    assert_eq!(
        cluster
            .stdout
            .count(|line| line.contains("got {\"welcome\"")),
        2,
        "each welcome arrived once"
    );
    assert_eq!(
        cluster
            .stdout
            .count(|line| line.starts_with("event message")),
        2
    );
}

#[test]
fn a_crashed_worker_goes_straight_to_exit_and_is_replaced() {
    let cluster = basic("1");
    let first = cluster.ready_pids(1)[0];
    // The greeting is written by the worker's IPC task; `exit(3)` would not wait for it.
    cluster
        .stdout
        .wait_for(&format!("event message slot=1 pid={first} "));
    let _ = cluster.get("/crash");
    cluster.stdout.wait_for(&format!(
        "event exit slot=1 pid={first} code=Some(3) signal=None"
    ));
    let line = cluster
        .stdout
        .wait_for_count(2, |line| line.starts_with("event listening slot=1"))
        .pop()
        .unwrap();
    let second: u32 = word_after(&line, "pid=").parse().unwrap();
    assert_ne!(second, first);
    let events = events_by_pid(&cluster);
    assert_eq!(
        events[&first],
        ["fork", "online", "listening", "message", "exit"]
    );
    assert_eq!(&events[&second][..3], ["fork", "online", "listening"]);
    assert_eq!(cluster.get("/").unwrap().pid(), second);
}

/// The answering worker's slot, from the example's JSON.
fn slot_of(response: &crate::support::Response) -> usize {
    response.field("worker").parse().unwrap()
}

#[test]
fn broadcasts_worker_to_worker_messages_and_roll_calls_arrive_exactly_once() {
    let mut cluster = basic("2");
    for slot in 1..=2 {
        cluster.stdout.wait_for(&format!(
            "worker {slot} got {{\"welcome\":{slot}}} from None"
        ));
    }
    // Primary → every worker.
    cluster.get("/announce/hi").unwrap();
    for slot in 1..=2 {
        cluster.stdout.wait_for(&format!(
            "worker {slot} got {{\"announcement\":\"hi\"}} from None"
        ));
    }
    // Worker → every other worker.
    let shouter = slot_of(&cluster.get("/shout/yo").unwrap());
    let other = 3 - shouter;
    cluster.stdout.wait_for(&format!(
        "worker {other} got {{\"shout\":\"yo\"}} from Some({shouter})"
    ));
    // Worker → one worker: tell slot 1 from whichever worker answers, until slot 2 did.
    let note = (0..200)
        .find(|attempt| {
            let response = cluster.get(&format!("/tell/1/note{attempt}")).unwrap();
            slot_of(&response) == 2
        })
        .expect("a connection reached worker 2");
    cluster.stdout.wait_for(&format!(
        "worker 1 got {{\"note\":\"note{note}\"}} from Some(2)"
    ));
    // The primary's worker list: one handle per worker, each pinned to its process.
    cluster.get("/roll_call").unwrap();
    for slot in 1..=2 {
        cluster
            .stdout
            .wait_for(&format!("worker {slot} got {{\"roll_call\":2}} from None"));
    }

    cluster.signal(Signal::SIGTERM);
    assert_eq!(cluster.wait_exit().code(), Some(0), "{}", cluster.log());
    let count = |text: &str| cluster.stdout.count(|line| line.contains(text));
    assert_eq!(count("got {\"announcement\":\"hi\"} from None"), 2);
    assert_eq!(
        count("got {\"shout\":\"yo\"}"),
        1,
        "not back to the shouter"
    );
    assert_eq!(count(&format!("got {{\"note\":\"note{note}\"}}")), 1);
    assert_eq!(count("got {\"roll_call\":2}"), 2);
}

#[test]
fn a_disconnected_worker_drains_exits_asked_for_and_its_slot_is_refilled() {
    let cluster = basic("2");
    cluster.wait_ready(2);
    let response = cluster.get("/retire").unwrap();
    let (slot, pid) = (slot_of(&response), response.pid());
    cluster
        .stdout
        .wait_for(&format!("event disconnect slot={slot} pid={pid}"));
    cluster.stdout.wait_for(&format!(
        "event exit slot={slot} pid={pid} code=Some(0) signal=None exited_after_disconnect=true"
    ));
    cluster.stderr.wait_for(&format!(
        "worker {slot} (pid {pid}) disconnecting, as asked"
    ));
    let (new_slot, new_pid) = cluster.wait_ready(3)[2];
    assert_eq!(new_slot, slot);
    assert_ne!(new_pid, pid);
    let events = events_by_pid(&cluster);
    assert_eq!(
        events[&pid],
        [
            "fork",
            "online",
            "listening",
            "message",
            "message",
            "disconnect",
            "exit"
        ]
    );
    // Asked for, so not a failure: no restart is counted.
    assert!(
        !cluster.log().contains("restarting"),
        "a disconnect is not a crash:\n{}",
        cluster.log()
    );
}

#[test]
fn the_primary_scales_restarts_and_stops_when_its_program_asks() {
    let mut cluster = basic("2");
    let first: Vec<(usize, u32)> = cluster.wait_ready(2);
    cluster.get("/scale/3").unwrap();
    let (slot, _) = cluster.wait_ready(3)[2];
    assert_eq!(slot, 3);

    let slot_1 = first.iter().find(|(slot, _)| *slot == 1).unwrap().1;
    cluster.get("/restart/1").unwrap();
    let (slot, replacement) = cluster.wait_ready(4)[3];
    assert_eq!(slot, 1);
    // New before old: the old worker is asked to go only once its replacement is ready.
    cluster.stdout.wait_for(&format!(
        "event exit slot=1 pid={slot_1} code=Some(0) signal=None exited_after_disconnect=true"
    ));
    let events = cluster.stdout.snapshot();
    let position = |text: &str| {
        events
            .iter()
            .position(|line| line.starts_with(text))
            .unwrap()
    };
    assert!(
        position(&format!("event listening slot=1 pid={replacement}"))
            < position(&format!("event disconnect slot=1 pid={slot_1}"))
    );

    cluster.get("/stop").unwrap();
    assert_eq!(cluster.wait_exit().code(), Some(0), "{}", cluster.log());
    let events = events_by_pid(&cluster);
    assert_eq!(events.len(), 4, "{events:?}");
    for (pid, names) in &events {
        assert_eq!(names.last().unwrap(), "exit", "{pid}: {names:?}");
    }
}
