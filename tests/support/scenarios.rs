//! What many tests do to a running cluster: find its workers by requests, reload it under
//! load, pass over a busy worker, wait out a replacement; each bounded, each asserting.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::*;

/// Sends requests on new connections until `count` distinct pids answered (at most 2,000).
pub fn distinct_pids_by_requests(cluster: &Cluster, count: usize) -> BTreeSet<u32> {
    let mut pids = BTreeSet::new();
    for _ in 0..2000 {
        pids.insert(cluster.get("/").expect("GET /").pid());
        if pids.len() == count {
            return pids;
        }
    }
    panic!("2,000 requests reached only {pids:?}");
}

/// With one shared socket the busiest worker tends to win every accept, so one at a time, a
/// request that keeps its worker busy (`/burn`) is sent only once the previous one is burning:
/// a busy worker cannot accept, so each lands on a different worker. Returns their pids.
pub fn distinct_pids_by_burning(cluster: &Cluster, count: usize) -> BTreeSet<u32> {
    let burning_before = cluster.stdout.count(|line| line.contains("burn start"));
    let address = cluster.address();
    let requests: Vec<_> = (1..=count)
        .map(|index| {
            let request = std::thread::spawn(move || http_get(address, "/burn?ms=1500"));
            cluster
                .stdout
                .wait_for_count(burning_before + index, |line| line.contains("burn start"));
            request
        })
        .collect();
    requests
        .into_iter()
        .map(|request| request.join().unwrap().expect("GET /burn").pid())
        .collect()
}

/// Reloads cluster `name` three times under two client loops, one keep-alive and one of fresh
/// connections: each reload completes (generation 2, 3, 4) and neither loop fails a request.
pub fn three_reloads_under_load_fail_nothing(cluster: &Cluster, name: &str) {
    let keep_alive = load_loop(cluster.address(), true);
    let fresh = load_loop(cluster.address(), false);
    for reload in 1..=3 {
        let output = cluster.herdsman(&["reload", name]);
        assert_eq!(output.code, Some(0), "reload {reload}: {output:?}");
        assert!(
            output.stdout.contains(&format!(
                "reload complete: 2 workers on generation {}",
                reload + 1
            )),
            "{}",
            output.stdout
        );
    }
    for (client, report) in [("keep-alive", keep_alive), ("fresh", fresh)] {
        let report = report.finish(200);
        assert_eq!(
            report.failures,
            Vec::<String>::new(),
            "{client}: {} ok, {} retried; log:\n{}",
            report.ok,
            report.retries,
            cluster.log()
        );
    }
}

/// 50 quick requests, each on a fresh connection, while the worker `busy_pid` is stuck: none
/// reaches it, and the slowest finishes in under 100 ms.
pub fn quick_requests_pass_over(cluster: &Cluster, busy_pid: u32) {
    let mut slowest = Duration::ZERO;
    for request in 0..50 {
        let started = Instant::now();
        let response = http_get(cluster.address(), "/")
            .unwrap_or_else(|error| panic!("request {request}: {error}"));
        slowest = slowest.max(started.elapsed());
        assert_eq!(response.status, 200, "{response:?}");
        assert_ne!(
            response.pid(),
            busy_pid,
            "request {request} reached the busy worker"
        );
    }
    assert!(
        slowest < Duration::from_millis(100),
        "the slowest of 50 quick requests took {slowest:?}; log:\n{}",
        cluster.log()
    );
}

/// After worker `victim` of `cluster` was killed: GETs on fresh connections, one at a time,
/// until the slot's replacement (a ready pid not in `old`) answers, within [`DEADLINE`]. Each
/// 200 is checked by `check` (and must not come from the victim); returns how many succeeded,
/// every failure, and the replacement's pid.
pub fn fresh_requests_until_replaced(
    cluster: &Cluster,
    old: &[u32],
    victim: u32,
    mut check: impl FnMut(&Response, bool),
) -> (usize, Vec<String>, u32) {
    let killed = Instant::now();
    let (mut ok, mut failures) = (0usize, Vec::new());
    let mut replacement: Option<u32> = None;
    loop {
        assert!(
            killed.elapsed() < DEADLINE,
            "the replacement did not serve within {DEADLINE:?} ({ok} ok, {failures:?}); log:\n{}",
            cluster.log()
        );
        if replacement.is_none() {
            replacement = cluster
                .pids_ready_so_far()
                .into_iter()
                .find(|pid| !old.contains(pid));
        }
        match http_get(cluster.address(), "/") {
            Ok(response) if response.status == 200 => {
                ok += 1;
                assert_ne!(response.pid(), victim, "the killed worker answered");
                let replaced = Some(response.pid()) == replacement;
                check(&response, replaced);
                if replaced {
                    return (ok, failures, response.pid());
                }
            }
            Ok(response) => failures.push(format!("request {ok}: {response:?}")),
            Err(error) => failures.push(format!("request {ok}: {error}")),
        }
    }
}
