//! Real libraries on the embedded store, across 2 workers (issue 14): each test runs
//! `herdsman run --workers 2` over a small app of examples/node or examples/python that uses one
//! library as its documentation sets it up, checks the exact outcome that only a shared store
//! gives (a job run by the other worker, one limit for both, a login seen by the other, a lock
//! that one worker at a time holds), then stops the cluster and checks that nothing was logged
//! on the way: no worker wrote to stderr, no worker exited early. scripts/test.sh installs the
//! libraries (`npm ci` in examples/node; pip for the Python ones).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use nix::sys::signal::Signal;

use crate::support::resp::{state_socket, RespClient};
use crate::support::{cluster, http_exchange, http_get, Cluster, Response};

fn example(path: &str) -> String {
    format!("{}/examples/{path}", env!("CARGO_MANIFEST_DIR"))
}

/// `--workers 2 -- COMMAND`, with both workers ready. Each app says when it serves
/// (`process.send('ready')`, `READY=1`), and only that counts (`--ready notify`): on a busy
/// machine loading a library can take longer than any fixed delay.
fn library_cluster(command: &[&str]) -> Cluster {
    let cluster = cluster()
        .args(&[
            "--workers",
            "2",
            "--ready",
            "notify",
            "--ready-delay",
            "300ms",
        ])
        .command(command)
        .start();
    cluster.wait_ready(2);
    cluster
}

/// Stops the cluster (SIGTERM) and checks it went quietly: exit 0, no line on a worker's
/// stderr (`[slot:pid] …`), no worker that exited, was replaced or killed before the stop.
fn stop_quietly(mut cluster: Cluster) {
    cluster.signal(Signal::SIGTERM);
    let status = cluster.wait_exit();
    let log = cluster.log();
    assert!(status.success(), "herdsman exited {status}:\n{log}");
    let worker_lines: Vec<&str> = log.lines().filter(|line| line.starts_with('[')).collect();
    assert_eq!(worker_lines, Vec::<&str>::new(), "workers logged:\n{log}");
    for trouble in ["restarting", "not accepting", "killed", "error"] {
        assert!(!log.contains(trouble), "`{trouble}` in the log:\n{log}");
    }
}

/// Sends `request` from 4 threads until at least `at_least` answers came and both workers
/// answered (at most 2,000 requests); every answer, with the slot that gave it.
fn answers_from_both_workers(
    cluster: &Cluster,
    at_least: usize,
    request: fn(std::net::SocketAddr) -> Response,
) -> Vec<(String, Response)> {
    let address = cluster.address();
    let answers = Arc::new(Mutex::new(Vec::new()));
    let sent = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (answers, sent) = (answers.clone(), sent.clone());
            std::thread::spawn(move || loop {
                let enough = {
                    let answers = answers.lock().unwrap();
                    let workers: BTreeSet<&String> =
                        answers.iter().map(|(worker, _)| worker).collect();
                    answers.len() >= at_least && workers.len() == 2
                };
                if enough || sent.fetch_add(1, Ordering::SeqCst) >= 2000 {
                    return;
                }
                let response = request(address);
                let worker = response.field("worker");
                answers.lock().unwrap().push((worker, response));
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let answers = std::mem::take(&mut *answers.lock().unwrap());
    let workers: BTreeSet<&String> = answers.iter().map(|(worker, _)| worker).collect();
    assert_eq!(
        workers,
        BTreeSet::from([&"1".to_string(), &"2".to_string()]),
        "both workers answered within 2,000 requests: {answers:?}\n{}",
        cluster.log()
    );
    answers
}

/// rate-limiter-flexible (RateLimiterRedis on ioredis, a Lua script per attempt): a limit of
/// 10 shared by 2 workers allows exactly 10 attempts in all.
#[test]
fn rate_limiter_flexible_allows_exactly_the_limit_across_two_workers() {
    let cluster = library_cluster(&["node", &example("node/rate-limit-app.js")]);
    let answers = answers_from_both_workers(&cluster, 40, |address| {
        http_get(address, "/attempt").expect("GET /attempt")
    });
    let mut remaining = Vec::new();
    for (_, response) in &answers {
        match response.status {
            200 => remaining.push(response.field("remaining").parse::<u64>().unwrap()),
            429 => assert_eq!(response.field("allowed"), "false", "{response:?}"),
            _ => panic!("{response:?}"),
        }
    }
    remaining.sort_unstable();
    // Each point consumed once: the allowed attempts saw 9, 8, …, 0 points left.
    assert_eq!(remaining, (0..10).collect::<Vec<u64>>(), "{answers:?}");
    stop_quietly(cluster);
}

/// express-session with connect-redis on node-redis' default client (RESP3): logged in on one
/// worker, logged in on the other.
#[test]
fn connect_redis_sessions_on_node_redis_are_shared_by_two_workers() {
    let cluster = library_cluster(&["node", &example("node/session-app.js")]);
    let address = cluster.address();
    let (login, headers) =
        http_exchange(address, "POST", "/login?user=alice", &[], None).expect("POST /login");
    assert_eq!(login.status, 200, "{login:?}");
    assert_eq!(login.field("user"), "alice");
    let cookie = headers
        .iter()
        .find(|(name, _)| name == "set-cookie")
        .map(|(_, value)| value.split(';').next().unwrap().to_string())
        .unwrap_or_else(|| panic!("no session cookie in {headers:?}"));
    assert!(cookie.starts_with("connect.sid="), "{cookie}");
    let mut seen_by = BTreeMap::new();
    for _ in 0..2000 {
        let (me, _) =
            http_exchange(address, "GET", "/me", &[("Cookie", &cookie)], None).expect("GET /me");
        assert_eq!(me.status, 200, "{me:?}");
        assert_eq!(me.field("user"), "alice", "{me:?}");
        seen_by.insert(me.field("worker"), me.pid());
        if seen_by.len() == 2 {
            break;
        }
    }
    assert_eq!(
        seen_by.len(),
        2,
        "the session reached both workers: {seen_by:?}"
    );
    let stranger = http_get(address, "/me").expect("GET /me without the cookie");
    assert_eq!(stranger.field("user"), "null");
    let mut store = RespClient::unix(&state_socket(&cluster));
    assert_eq!(
        store.text("EVAL \"return #redis.call('KEYS', 'session:*')\" 0"),
        ":1\\r\\n",
        "one session stored"
    );
    stop_quietly(cluster);
}

/// redis-py 8 in its default protocol (RESP3) and its `lock()`: a read-modify-write inside the
/// lock, from both workers at once, loses no update, and nobody else gets the held lock.
#[test]
fn redis_py_lock_is_exclusive_across_two_workers() {
    let cluster = library_cluster(&["python3", &example("python/lock_app.py")]);
    let answers = answers_from_both_workers(&cluster, 40, |address| {
        http_get(address, "/critical").expect("GET /critical")
    });
    let mut totals = Vec::new();
    for (_, response) in &answers {
        assert_eq!(response.status, 200, "{response:?}");
        assert_eq!(response.field("resp"), "3", "redis-py 8's default protocol");
        assert_eq!(
            response.field("inside"),
            "1",
            "alone in the section: {response:?}"
        );
        assert_eq!(response.field("rival_acquired"), "false", "{response:?}");
        totals.push(response.field("total").parse::<usize>().unwrap());
    }
    totals.sort_unstable();
    assert_eq!(totals, (1..=answers.len()).collect::<Vec<usize>>());
    let mut store = RespClient::unix(&state_socket(&cluster));
    let total = answers.len().to_string();
    assert_eq!(
        store.text("GET total"),
        format!("${}\\r\\n{total}\\r\\n", total.len())
    );
    assert_eq!(
        store.text("EXISTS critical"),
        ":0\\r\\n",
        "the lock was released"
    );
    stop_quietly(cluster);
}

/// Jobs from both workers, each asked for on one worker (`added_by`, the slot that answered)
/// and run by the other (`processed_by`), with the right result, each job once.
fn assert_jobs_cross_workers(answers: &[(String, Response)]) {
    let mut jobs = BTreeSet::new();
    for (worker, response) in answers {
        assert_eq!(response.status, 200, "{response:?}");
        assert_eq!(response.field("product"), "42", "{response:?}");
        assert_eq!(&response.field("added_by"), worker, "{response:?}");
        let other = if worker == "1" { "2" } else { "1" };
        assert_eq!(response.field("processed_by"), other, "{response:?}");
        assert!(
            jobs.insert((worker.clone(), response.field("job"))),
            "one job answered twice: {response:?}"
        );
    }
}

/// BullMQ (Lua scripts, sorted sets, BZPOPMIN, its event stream read by XREAD BLOCK): a job
/// added on one worker is processed on the other.
#[test]
fn bullmq_job_added_on_one_worker_is_processed_on_the_other() {
    let cluster = library_cluster(&["node", &example("node/bullmq-app.js")]);
    let answers = answers_from_both_workers(&cluster, 8, |address| {
        http_get(address, "/job?a=6&b=7").expect("GET /job")
    });
    assert_jobs_cross_workers(&answers);
    stop_quietly(cluster);
}

/// rq 3 (BLMOVE, sorted-set registries, results in a stream read by XREAD BLOCK), through
/// redis-py's default protocol: a job queued on one worker is run by the other.
#[test]
fn rq_job_queued_on_one_worker_is_run_by_the_other() {
    let cluster = library_cluster(&["python3", &example("python/jobs_app.py")]);
    let answers = answers_from_both_workers(&cluster, 8, |address| {
        http_get(address, "/job?a=6&b=7").expect("GET /job")
    });
    assert_jobs_cross_workers(&answers);
    stop_quietly(cluster);
}
