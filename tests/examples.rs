//! The example programs in examples/: each runs on its own (`herdsman::Cluster`), prints the
//! CLI's `listening on` line, and does what its documentation says (issues 4 and 5).

use std::collections::BTreeSet;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::support::{
    cluster, eventually, example_bin, http_get, http_request, load_loop, parse_worker_line,
    wait_all_gone, word_after, Cluster, Response, RuntimeDir, DEADLINE,
};

/// Starts examples/NAME as a program of its own with `workers` workers on 127.0.0.1, port 0,
/// and waits until they are all ready.
fn start_example(name: &str, workers: usize, env: &[(&str, &str)]) -> Cluster {
    let mut builder = cluster()
        .program(example_bin(name))
        .env("HERDSMAN_WORKERS", &workers.to_string());
    for (variable, value) in env {
        builder = builder.env(variable, value);
    }
    let cluster = builder.start();
    let port = cluster.address().port();
    // The first line, after the admin server's where there is one.
    let first = cluster
        .stderr
        .snapshot()
        .into_iter()
        .find(|line| !line.starts_with("herdsman: admin server on "));
    assert_eq!(
        first.as_deref(),
        Some(
            format!(
                "herdsman: listening on 127.0.0.1:{port} ({workers} workers, balance reuseport)"
            )
            .as_str()
        )
    );
    cluster.wait_ready(workers);
    // `--ready notify` is the CLI's to explain: a program's workers are ready by themselves.
    assert_eq!(
        cluster.stderr.count(|line| line.contains("--ready notify")),
        0,
        "{}",
        cluster.log()
    );
    cluster
}

/// Stops the cluster with SIGTERM; see [`stopped`].
fn stop(cluster: Cluster) -> Cluster {
    cluster.signal(Signal::SIGTERM);
    stopped(cluster)
}

/// Asserts that the stopping cluster exits 0 and leaves no worker behind.
fn stopped(mut cluster: Cluster) -> Cluster {
    let pids = cluster.pids_ready_so_far();
    assert_eq!(cluster.wait_exit().code(), Some(0), "{}", cluster.log());
    wait_all_gone(&pids);
    cluster
}

fn json(response: &Response) -> serde_json::Value {
    serde_json::from_str(&response.body).unwrap_or_else(|error| panic!("{error}: {response:?}"))
}

#[test]
fn api_server_users_are_the_same_whichever_worker_answers() {
    let cluster = start_example("api_server", 2, &[]);
    let address = cluster.address();
    let request = |method: &str, path: &str, body: Option<&str>| {
        let response = http_request(address, method, path, body).expect(path);
        let json = if response.body.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&response.body).unwrap_or_else(|e| panic!("{e}: {response:?}"))
        };
        (response.status, json)
    };
    assert_eq!(request("GET", "/users", None), (200, serde_json::json!([])));
    let (status, ada) = request(
        "POST",
        "/users",
        Some(r#"{"name":"Ada","email":"ada@example.com"}"#),
    );
    assert_eq!(status, 201);
    assert_eq!(
        ada,
        serde_json::json!({"id": 1, "name": "Ada", "email": "ada@example.com"})
    );
    // Created through one worker, found through every worker: new connections spread across
    // both (reuseport), and every one of 40 reads finds the user.
    let mut workers = BTreeSet::new();
    for _ in 0..40 {
        assert_eq!(request("GET", "/users/1", None), (200, ada.clone()));
        let (_, health) = request("GET", "/health", None);
        workers.insert(health["worker"].as_u64().unwrap());
    }
    assert_eq!(workers, BTreeSet::from([1, 2]), "both workers answered");
    let (status, grace) = request(
        "POST",
        "/users",
        Some(r#"{"name":"Grace","email":"grace@example.com"}"#),
    );
    assert_eq!((status, grace["id"].clone()), (201, serde_json::json!(2)));
    assert_eq!(
        request("PUT", "/users/1", Some(r#"{"name":"Ada Lovelace"}"#)),
        (
            200,
            serde_json::json!({"id": 1, "name": "Ada Lovelace", "email": "ada@example.com"})
        )
    );
    let (_, all) = request("GET", "/users", None);
    assert_eq!(all.as_array().unwrap().len(), 2);
    assert_eq!(all[0]["name"], "Ada Lovelace");
    assert_eq!(
        request("DELETE", "/users/2", None),
        (204, serde_json::Value::Null)
    );
    // The errors: what is wrong, with the right status.
    let cases: [(&str, &str, Option<&str>, u16, &str); 9] = [
        ("GET", "/users/2", None, 404, "no user 2"),
        ("DELETE", "/users/2", None, 404, "no user 2"),
        (
            "PUT",
            "/users/99",
            Some(r#"{"name":"X"}"#),
            404,
            "no user 99",
        ),
        (
            "GET",
            "/users/abc",
            None,
            400,
            "`abc` is not a user id (a positive integer)",
        ),
        (
            "POST",
            "/users",
            Some("{not json"),
            400,
            "invalid JSON: key must be a string at line 1 column 2",
        ),
        (
            "POST",
            "/users",
            Some(r#"{"name":"Ada"}"#),
            422,
            "`email` is required",
        ),
        (
            "POST",
            "/users",
            Some(r#"{"name":"","email":"a@b.c"}"#),
            422,
            "`name` must not be empty",
        ),
        (
            "POST",
            "/users",
            Some(r#"{"name":"A","email":"nope"}"#),
            422,
            "`email` must be an email address like ada@example.com",
        ),
        (
            "PUT",
            "/users/1",
            Some(r#"{"age":3}"#),
            422,
            "unknown field `age` (a user has `name` and `email`)",
        ),
    ];
    for (method, path, body, status, message) in cases {
        assert_eq!(
            request(method, path, body),
            (status, serde_json::json!({ "error": message })),
            "{method} {path} {body:?}"
        );
    }
    assert_eq!(
        request("GET", "/users", None).1.as_array().unwrap().len(),
        1
    );
}

#[test]
fn shared_state_counts_and_remembers_across_workers() {
    let cluster = start_example("shared_state", 2, &[]);
    let mut visits = Vec::new();
    let mut workers = BTreeSet::new();
    for _ in 0..30 {
        let answer = json(&cluster.get("/").unwrap());
        visits.push(answer["visits"].as_u64().unwrap());
        workers.insert(answer["worker"].as_u64().unwrap());
    }
    assert_eq!(visits, (1..=30).collect::<Vec<u64>>(), "one counter");
    assert_eq!(workers, BTreeSet::from([1, 2]), "both workers answered");
    let history = json(&cluster.get("/history").unwrap());
    let newest: Vec<u64> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["visit"].as_u64().unwrap())
        .collect();
    assert_eq!(newest, (11..=30).rev().collect::<Vec<u64>>());
    stop(cluster);
}

#[test]
fn http_server_keeps_serving_through_a_crash_a_panic_and_a_hang() {
    let cluster = start_example("http_server", 2, &[("HEARTBEAT_TIMEOUT_MS", "2000")]);

    // A crash: the worker answers, exits 1, and a new worker takes its slot.
    let crashed = cluster.get("/crash").unwrap();
    let (slot, pid) = parse_worker_line(&crashed.body);
    cluster.stdout.wait_for(&format!(
        "watchdog: worker {slot} (pid {pid}) died (exit code 1); it is replaced"
    ));
    let (new_slot, new_pid) = cluster.wait_ready(3)[2];
    assert_eq!(new_slot, slot);
    assert_ne!(new_pid, pid);

    // A panic: that one request gets no answer; the worker lives on and serves.
    assert!(cluster.get("/panic").is_err(), "a panicked request is cut");
    let line = cluster.stderr.wait_for("panicked at");
    // `[SLOT:PID] thread '…' panicked at …`
    let panicked: u32 = word_after(&line, ":")
        .trim_end_matches(']')
        .parse()
        .unwrap();
    eventually("the worker that panicked answers again", || {
        (cluster.get("/").unwrap().pid() == panicked).then_some(())
    });

    // A hang: the whole process freezes; no heartbeat, so the watchdog kills it.
    assert!(cluster.get("/hang").is_err(), "the hung worker is killed");
    let line = cluster
        .stdout
        .wait_for("sent no heartbeat for 2s; killing it");
    let (slot, pid) = parse_worker_line(&line);
    cluster
        .stderr
        .wait_for(&format!("worker {slot} (pid {pid}) was killed by SIGKILL"));
    let (new_slot, _) = cluster.wait_ready(4)[3];
    assert_eq!(new_slot, slot);
    assert_eq!(
        cluster.stdout.count(|line| line.contains("killing it")),
        1,
        "only the hung worker"
    );
    for _ in 0..20 {
        assert_eq!(cluster.get("/").unwrap().status, 200);
    }
    stop(cluster);
}

#[test]
fn load_balancing_shows_each_workers_share_live() {
    let cluster = start_example("load_balancing", 2, &[]);
    for _ in 0..200 {
        assert_eq!(cluster.get("/").unwrap().status, 200);
    }
    // `requests: total 200 | worker 1: N (x%) | worker 2: M (y%)`
    let line = cluster.stdout.wait_for("requests: total 200 |");
    let counts: Vec<u64> = line
        .split(" | ")
        .skip(1)
        .map(|part| word_after(part, ": ").parse().unwrap())
        .collect();
    assert_eq!(counts.len(), 2, "{line}");
    assert_eq!(counts.iter().sum::<u64>(), 200, "{line}");
    assert!(counts.iter().all(|&count| count > 0), "both served: {line}");
    // Every worker shows the same table, sent by the primary.
    let stats = eventually("/stats shows all 200 requests", || {
        let stats = json(&cluster.get("/stats").unwrap());
        (stats["total"] == 200).then_some(stats)
    });
    assert_eq!(
        stats["workers"],
        serde_json::json!({ "1": counts[0], "2": counts[1] })
    );
    stop(cluster);
}

/// The builder's `.admin()` and `.log_dir()` give a `Cluster` program what `--admin` and
/// `--log-dir` give `herdsman run`: its metrics, and its lines in files.
#[test]
fn a_cluster_program_serves_metrics_and_writes_log_files_set_by_its_builder() {
    let dir = RuntimeDir::new();
    let logs = dir.path().join("logs");
    let cluster = start_example(
        "load_balancing",
        2,
        &[
            ("ADMIN", "127.0.0.1:0"),
            ("LOG_DIR", logs.to_str().unwrap()),
        ],
    );
    let admin = super::admin::admin_address(&cluster);
    let metrics = http_get(admin, "/metrics").unwrap();
    assert_eq!(metrics.status, 200, "{metrics:?}");
    assert!(
        metrics.body.contains("herdsman_workers_desired 2"),
        "{}",
        metrics.body
    );
    let own = logs.join("load_balancing.herdsman.log");
    let ready: Vec<u32> = cluster.ready_pids(2);
    eventually("both workers' ready lines in the herdsman file", || {
        let text = std::fs::read_to_string(&own).ok()?;
        ready
            .iter()
            .all(|pid| text.contains(&format!("(pid {pid}) ready")))
            .then_some(())
    });
    stop(cluster);
}

#[test]
fn zero_downtime_reloads_every_worker_without_a_failed_request() {
    let cluster = start_example(
        "zero_downtime",
        2,
        &[("WARM_UP_MS", "300"), ("DRAIN_MS", "300")],
    );
    let old: Vec<u32> = cluster.ready_pids(2);
    let keep_alive = load_loop(cluster.address(), true);
    let per_request = load_loop(cluster.address(), false);
    assert_eq!(json(&cluster.get("/reload").unwrap())["reload"], true);
    cluster.stdout.wait_for("all 2 workers on generation 2");
    let reports = [keep_alive.finish(50), per_request.finish(50)];
    for report in &reports {
        assert!(report.failures.is_empty(), "{:?}", report.failures);
        assert!(report.ok >= 50);
    }
    wait_all_gone(&old);
    for _ in 0..10 {
        let answer = json(&cluster.get("/").unwrap());
        assert_eq!(answer["generation"], 2);
        assert!(!old.contains(&(answer["pid"].as_u64().unwrap() as u32)));
    }
    assert_eq!(
        cluster
            .stdout
            .count(|line| line.ends_with("serves generation 2")),
        2
    );
    stop(cluster);
}

#[test]
fn cpu_intensive_answers_right_and_a_slow_computation_does_not_hold_up_other_workers() {
    let cluster = start_example("cpu_intensive", 2, &[]);
    let fib = json(&cluster.get("/fib/30").unwrap());
    assert_eq!(
        (fib["n"].as_u64(), fib["fib"].as_u64()),
        (Some(30), Some(832040))
    );
    let primes = json(&cluster.get("/primes/100").unwrap());
    assert_eq!(
        (primes["count"].as_u64(), primes["largest"].as_u64()),
        (Some(25), Some(97))
    );
    for (path, message) in [
        (
            "/fib/51",
            "n must be a whole number from 0 to 50, not `51`\n",
        ),
        (
            "/primes/lots",
            "limit must be a whole number from 0 to 10000000, not `lots`\n",
        ),
    ] {
        let response = cluster.get(path).unwrap();
        assert_eq!((response.status, response.body.as_str()), (400, message));
    }

    // fib(40) keeps one worker busy for a while; quick requests keep being answered, by the
    // other worker too, before it is done.
    let address = cluster.address();
    let done = Arc::new(AtomicBool::new(false));
    let flag = done.clone();
    let slow = std::thread::spawn(move || {
        let response = http_get(address, "/fib/40");
        flag.store(true, Ordering::SeqCst);
        response
    });
    let mut quick_pids = Vec::new();
    for _ in 0..100_000 {
        if done.load(Ordering::SeqCst) {
            break;
        }
        let pid = cluster.get("/").unwrap().pid();
        if !done.load(Ordering::SeqCst) {
            quick_pids.push(pid);
        }
    }
    let slow = json(&slow.join().unwrap().unwrap());
    assert_eq!(slow["fib"], 102334155);
    let busy = slow["pid"].as_u64().unwrap() as u32;
    assert!(
        quick_pids.iter().any(|&pid| pid != busy),
        "no quick request answered by another worker while {busy} computed: {quick_pids:?}"
    );
    stop(cluster);
}

#[test]
fn performance_prints_single_process_and_cluster_side_by_side() {
    let mut run = cluster()
        .program(example_bin("performance"))
        .env("HERDSMAN_WORKERS", "2")
        .env("PERF_SECONDS", "1")
        .env("PERF_CONNECTIONS", "4")
        .no_wait()
        .start();
    assert_eq!(run.wait_exit().code(), Some(0), "{}", run.log());
    let output = run.stdout.snapshot();
    let row = |label: &str| -> Vec<f64> {
        let line = output
            .iter()
            .find(|line| line.starts_with(label))
            .unwrap_or_else(|| panic!("no `{label}` row in {output:?}"));
        line[label.len()..]
            .split_whitespace()
            .map(|field| field.trim_end_matches('×').parse().unwrap())
            .collect()
    };
    for label in ["single process", "cluster of 2 workers"] {
        let [rate, p50, p99, errors] = row(label)[..] else {
            panic!("{label}: {output:?}")
        };
        assert!(rate > 0.0 && p50 > 0.0 && p99 >= p50, "{label}: {output:?}");
        assert_eq!(errors, 0.0, "{label}: {output:?}");
    }
    assert_eq!(row("cluster / single").len(), 1);
    // Both servers said where they listened, and are gone.
    let log = run.log();
    assert!(
        log.contains("single process: listening on 127.0.0.1:"),
        "{log}"
    );
    assert!(log.contains("herdsman: listening on 127.0.0.1:"), "{log}");
    let workers = run.pids_ready_so_far();
    assert_eq!(workers.len(), 2);
    wait_all_gone(&workers);
}

/// Reads one answer with a Content-Length from a keep-alive connection.
fn read_answer(stream: &mut TcpStream) -> String {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).unwrap(), 1, "answer cut short");
        raw.push(byte[0]);
    }
    let head = String::from_utf8(raw).unwrap();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length: "))
        .expect("content-length")
        .parse()
        .unwrap();
    let mut body = vec![0; length];
    stream.read_exact(&mut body).unwrap();
    head + &String::from_utf8(body).unwrap()
}

#[test]
fn graceful_shutdown_finishes_in_flight_requests_and_refuses_new_connections() {
    let cluster = start_example("graceful_shutdown", 2, &[]);
    let address = cluster.address();
    // An idle keep-alive connection, open when the stop comes.
    let mut idle = TcpStream::connect(address).unwrap();
    idle.set_read_timeout(Some(DEADLINE)).unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
        .unwrap();
    assert!(read_answer(&mut idle).starts_with("HTTP/1.1 200"));
    // A request in flight when the stop comes.
    let slow = std::thread::spawn(move || http_get(address, "/slow?ms=3000"));
    cluster.stdout.wait_for("request started (3000 ms)");

    cluster.signal(Signal::SIGTERM);
    cluster
        .stdout
        .wait_for("stopping with 1 requests in flight");
    // No new connection is taken any more: refused at once, not left waiting.
    eventually(
        "new connections refused",
        || match TcpStream::connect_timeout(&address, Duration::from_secs(1)) {
            Err(error) if error.kind() == ErrorKind::ConnectionRefused => Some(()),
            _ => None,
        },
    );
    assert!(
        !slow.is_finished(),
        "refused while the slow request still runs"
    );
    // The idle connection is closed cleanly (end of stream, not a reset).
    let mut rest = Vec::new();
    assert_eq!(idle.read_to_end(&mut rest).unwrap(), 0);

    let answer = slow
        .join()
        .unwrap()
        .expect("the in-flight request is answered");
    assert_eq!(
        (answer.status, json(&answer)["slept_ms"].as_u64()),
        (200, Some(3000))
    );
    let cluster = stopped(cluster);
    assert_eq!(
        cluster
            .stdout
            .count(|line| line.ends_with("all requests finished; exiting")),
        2
    );
    assert_eq!(
        cluster
            .stdout
            .count(|line| line.starts_with("primary: worker")
                && line.ends_with("code Some(0), signal None")),
        2
    );
}
