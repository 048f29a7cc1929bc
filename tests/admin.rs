//! The admin HTTP server (`--admin`, issue 16): its metrics agree with `status --json` after
//! a kill, `/health` follows readiness, `/api/status` is the status JSON, actions need the
//! header a cross-origin page cannot send, and a non-loopback address needs a token. From a
//! user trial: `HEAD` is answered as `GET` without the body (HAProxy's `option httpchk HEAD`),
//! another method is 405, `/metrics` speaks the text format the scraper accepts with counters
//! typed as counters, and `/api/logs` of a slot the cluster lacks is 404.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::support::*;

/// The address the primary logged for its admin server (`--admin 127.0.0.1:0`).
pub(crate) fn admin_address(cluster: &Cluster) -> SocketAddr {
    let line = cluster.stderr.wait_for("admin server on http://");
    let address = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    address.parse().unwrap()
}

/// The samples of `/metrics` named `name`, with their labels.
fn samples(text: &str, name: &str) -> Vec<(std::collections::HashMap<String, String>, f64)> {
    let lines = text.lines().map(|line| Ok(line.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("/metrics parses");
    scrape
        .samples
        .into_iter()
        .filter(|sample| sample.metric == name)
        .map(|sample| {
            let value = match sample.value {
                prometheus_parse::Value::Gauge(value)
                | prometheus_parse::Value::Counter(value)
                | prometheus_parse::Value::Untyped(value) => value,
                other => panic!("{name}: unexpected {other:?}"),
            };
            let labels = sample
                .labels
                .iter()
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect();
            (labels, value)
        })
        .collect()
}

fn slot_value(text: &str, name: &str, slot: u64) -> Vec<(String, f64)> {
    samples(text, name)
        .into_iter()
        .filter(|(labels, _)| labels.get("slot") == Some(&slot.to_string()))
        .map(|(labels, value)| (labels.get("pid").cloned().unwrap_or_default(), value))
        .collect()
}

/// Slot 1's restarts by reason: (reason, count).
fn restarts_of_slot_1(text: &str) -> Vec<(String, f64)> {
    samples(text, "herdsman_slot_restarts_total")
        .into_iter()
        .filter(|(labels, _)| labels["slot"] == "1")
        .map(|(labels, value)| (labels["reason"].clone(), value))
        .collect()
}

#[test]
fn metrics_match_status_after_a_kill() {
    let cluster = cluster()
        .args(&[
            "-w",
            "2",
            "--name",
            "admin-metrics",
            "--admin",
            "127.0.0.1:0",
        ])
        .start();
    let admin = admin_address(&cluster);
    let pids = cluster.ready_pids(2);

    let before = status_json(&cluster, "admin-metrics");
    let metrics = http_get(admin, "/metrics").unwrap();
    assert_eq!(metrics.status, 200, "{metrics:?}");
    let ready = samples(&metrics.body, "herdsman_workers");
    let ready: Vec<f64> = ready
        .iter()
        .filter(|(labels, _)| labels["state"] == "ready")
        .map(|(_, value)| *value)
        .collect();
    assert_eq!(ready, vec![2.0], "{}", metrics.body);
    let slot1 = before["slots"][0]["pid"].as_u64().unwrap();
    assert_eq!(restarts_of_slot_1(&metrics.body), [], "{}", metrics.body);
    let rss = slot_value(&metrics.body, "herdsman_worker_rss_bytes", 1);
    assert_eq!(rss.len(), 1, "{}", metrics.body);
    assert_eq!(rss[0].0, slot1.to_string());
    assert!(rss[0].1 > 0.0);
    assert!(pids.contains(&(slot1 as u32)));

    kill(Pid::from_raw(slot1 as i32), Signal::SIGKILL).unwrap();
    cluster.wait_ready(3);
    let after = status_json(&cluster, "admin-metrics");
    let metrics = http_get(admin, "/metrics").unwrap();
    let new_pid = after["slots"][0]["pid"].as_u64().unwrap();
    assert_ne!(new_pid, slot1);
    assert_eq!(after["slots"][0]["restarts"], 1, "{after}");
    assert_eq!(
        after["slots"][0]["restart_reasons"],
        serde_json::json!({"killed": 1}),
        "{after}"
    );
    assert_eq!(
        restarts_of_slot_1(&metrics.body),
        [("killed".to_string(), 1.0)],
        "{}",
        metrics.body
    );
    let cpu = slot_value(&metrics.body, "herdsman_worker_cpu_seconds_total", 1);
    assert_eq!(cpu.len(), 1, "{}", metrics.body);
    assert_eq!(cpu[0].0, new_pid.to_string());
    let rss = slot_value(&metrics.body, "herdsman_worker_rss_bytes", 1);
    assert_eq!(rss[0].0, new_pid.to_string());
    let generation = samples(&metrics.body, "herdsman_generation");
    assert_eq!(generation[0].1, after["generation"].as_f64().unwrap());

    // /api/status is `status --json`'s document (figures that move aside).
    let api = http_get(admin, "/api/status").unwrap();
    assert_eq!(api.status, 200);
    let mut api: serde_json::Value = serde_json::from_str(&api.body).unwrap();
    let mut cli = status_json(&cluster, "admin-metrics");
    for status in [&mut api, &mut cli] {
        status["uptime_ms"] = 0.into();
        for row in status["slots"].as_array_mut().unwrap() {
            row["uptime_ms"] = 0.into();
            row["cpu_percent"] = 0.into();
            row["rss_bytes"] = 0.into();
        }
    }
    assert_eq!(api, cli);
}

/// `/api/events` streams the lifecycle as typed events (issue 16): a kill -9 is `exited`,
/// `spawned`, `ready`, in that order, within 5 s; a reload is `started` then `completed`; a
/// scale says from and to. The log lines still come as unnamed events.
#[test]
fn events_stream_the_lifecycle_typed() {
    let cluster = cluster()
        .args(&[
            "-w",
            "2",
            "--name",
            "admin-events",
            "--admin",
            "127.0.0.1:0",
        ])
        .args(&["--ready-delay", "100ms"])
        .start();
    let admin = admin_address(&cluster);
    cluster.wait_ready(2);
    let mut events = SseStream::open(admin, "/api/events");
    let old = status_json(&cluster, "admin-events")["slots"][0]["pid"]
        .as_u64()
        .unwrap();
    let killed = Instant::now();
    kill(Pid::from_raw(old as i32), Signal::SIGKILL).unwrap();
    let deadline = killed + Duration::from_secs(5);
    let worker = |event: &SseEvent| event.name == "worker";
    let exited = events.until("exited", deadline, worker).data;
    assert_eq!(
        (&exited["change"], &exited["slot"], &exited["pid"]),
        (&"exited".into(), &1.into(), &old.into()),
        "{exited}"
    );
    assert_eq!(exited["signal"], 9, "{exited}");
    assert_eq!(exited["code"], serde_json::Value::Null, "{exited}");
    assert_eq!(exited["reason"], "died", "{exited}");
    assert_eq!(exited["description"], "was killed by SIGKILL", "{exited}");
    let spawned = events.until("spawned", deadline, worker).data;
    assert_eq!(spawned["change"], "spawned", "{spawned}");
    assert_eq!(spawned["slot"], 1, "{spawned}");
    assert_eq!(spawned["generation"], 1, "{spawned}");
    let new = spawned["pid"].as_u64().unwrap();
    assert_ne!(new, old);
    let ready = events.until("ready", deadline, worker).data;
    assert_eq!(
        (&ready["change"], &ready["slot"], &ready["pid"]),
        (&"ready".into(), &1.into(), &new.into()),
        "{ready}"
    );
    assert!(humantime::parse_rfc3339(ready["time"].as_str().unwrap()).is_ok());
    assert_eq!(
        status_json(&cluster, "admin-events")["slots"][0]["pid"],
        new
    );

    let action = [("X-Herdsman-Action", "1")];
    let (reloaded, _) = http_exchange(admin, "POST", "/api/reload", &action, None).unwrap();
    assert_eq!(reloaded.status, 200, "{reloaded:?}");
    let deadline = Instant::now() + DEADLINE;
    let reload = |event: &SseEvent| event.name == "reload";
    let started = events.until("reload started", deadline, reload).data;
    assert_eq!(
        (&started["change"], &started["generation"], &started["slot"]),
        (&"started".into(), &2.into(), &serde_json::Value::Null),
        "{started}"
    );
    let completed = events.until("reload completed", deadline, reload).data;
    assert_eq!(completed["change"], "completed", "{completed}");
    assert_eq!(completed["generation"], 2, "{completed}");
    assert!(
        completed["message"]
            .as_str()
            .unwrap()
            .starts_with("reload complete: 2 workers on generation 2"),
        "{completed}"
    );

    let (scaled, _) = http_exchange(admin, "POST", "/api/scale?to=3", &action, None).unwrap();
    assert_eq!(scaled.status, 200, "{scaled:?}");
    let scale = events
        .until("scale", deadline, |event| event.name == "scale")
        .data;
    assert_eq!(
        (&scale["from"], &scale["to"]),
        (&2.into(), &3.into()),
        "{scale}"
    );
    // The primary's log lines still come, unnamed, as `herdsman logs --json` has them.
    let line = events
        .until("a log line", deadline, |event| event.name == "message")
        .data;
    assert_eq!(line["stream"], "herdsman", "{line}");
}

/// The metric of `name` without labels (or with only `result`), as one number.
fn single(text: &str, name: &str, result: Option<&str>) -> f64 {
    let found: Vec<f64> = samples(text, name)
        .into_iter()
        .filter(|(labels, _)| labels.get("result").map(String::as_str) == result)
        .map(|(_, value)| value)
        .collect();
    assert_eq!(found.len(), 1, "{name} {result:?} in:\n{text}");
    found[0]
}

/// The families `/metrics` gained (issue 16): reloads by result, aborted ones included, and
/// the store's commands, each the figure `status --json` shows.
#[test]
fn reloads_by_result_and_store_figures_match_status() {
    let runtime = RuntimeDir::new();
    let crash = runtime.path().join("crash-now");
    let cluster = cluster()
        .runtime_dir(&runtime)
        .args(&[
            "-w",
            "1",
            "--name",
            "admin-figures",
            "--admin",
            "127.0.0.1:0",
        ])
        .args(&["--ready-delay", "100ms", "--state-listen", "127.0.0.1:0"])
        .env("TESTSERVER_CRASH_IF", crash.to_str().unwrap())
        .start();
    let admin = admin_address(&cluster);
    cluster.wait_ready(1);
    let line = cluster.stderr.wait_for("state store on");
    let store: SocketAddr = word_after(&line, "redis://").parse().unwrap();

    // One reload completes; the next one's new worker crashes at once: aborted.
    assert_eq!(cluster.herdsman(&["reload", "admin-figures"]).code, Some(0));
    std::fs::write(&crash, "").unwrap();
    let aborted = cluster.herdsman(&["reload", "admin-figures"]);
    assert_eq!(aborted.code, Some(1), "{aborted:?}");
    std::fs::remove_file(&crash).unwrap();

    let mut client = crate::support::resp::RespClient::tcp(store);
    for index in 0..10 {
        assert_eq!(client.text(&format!("SET key{index} value")), "+OK\\r\\n");
    }
    // The store publishes its figures on its timer: wait until they show the 10 keys.
    let status = eventually("the store's figures", || {
        let status = status_json(&cluster, "admin-figures");
        (status["shared_state"]["keys"] == 10).then_some(status)
    });
    assert_eq!(
        (&status["reloads"], &status["reloads_aborted"]),
        (&1.into(), &1.into())
    );
    let commands = status["shared_state"]["commands_processed"]
        .as_f64()
        .unwrap();
    assert!(commands >= 10.0, "{status}");

    let metrics = http_get(admin, "/metrics").unwrap().body;
    assert_eq!(
        single(&metrics, "herdsman_reloads_total", Some("completed")),
        1.0
    );
    assert_eq!(
        single(&metrics, "herdsman_reloads_total", Some("aborted")),
        1.0
    );
    assert_eq!(single(&metrics, "herdsman_store_keys", None), 10.0);
    assert_eq!(
        single(&metrics, "herdsman_store_commands_total", None),
        commands
    );
    assert_eq!(
        single(&metrics, "herdsman_store_clients", None),
        status["shared_state"]["clients"].as_f64().unwrap()
    );
    let memory = status["shared_state"]["used_memory"].as_f64().unwrap();
    assert_eq!(
        single(&metrics, "herdsman_store_memory_bytes", None),
        memory
    );
    let version = samples(&metrics, "herdsman_build_info");
    assert_eq!(version.len(), 1, "{metrics}");
    assert_eq!(version[0].0["version"], env!("CARGO_PKG_VERSION"));
}

/// `--balance proxy`: the connections open to each worker, in `status --json` and in
/// `herdsman_worker_connections`, the same figures, up while clients hold them, 0 once closed.
#[test]
fn proxy_connections_are_in_status_and_metrics() {
    let cluster = cluster()
        .args(&["-w", "2", "--balance", "proxy", "--name", "admin-conns"])
        .args(&["--admin", "127.0.0.1:0", "--ready-delay", "100ms"])
        .start();
    let admin = admin_address(&cluster);
    cluster.wait_ready(2);
    let by_pid = |status: &serde_json::Value| -> std::collections::BTreeMap<String, f64> {
        let rows = status["slots"].as_array().unwrap().iter();
        rows.map(|row| (row["pid"].to_string(), row["connections"].as_f64().unwrap()))
            .collect()
    };
    let metric_by_pid = || -> std::collections::BTreeMap<String, f64> {
        let metrics = http_get(admin, "/metrics").unwrap().body;
        let samples = samples(&metrics, "herdsman_worker_connections").into_iter();
        samples
            .map(|(labels, value)| (labels["pid"].clone(), value))
            .collect()
    };
    let idle = by_pid(&status_json(&cluster, "admin-conns"));
    assert_eq!(idle.values().collect::<Vec<_>>(), [&0.0, &0.0]);
    assert_eq!(metric_by_pid(), idle);

    // Least connections: three held open go 2 and 1.
    let held: Vec<std::net::TcpStream> = (0..3)
        .map(|_| std::net::TcpStream::connect(cluster.address()).unwrap())
        .collect();
    let open = eventually("3 connections counted", || {
        let open = by_pid(&status_json(&cluster, "admin-conns"));
        (open.values().sum::<f64>() == 3.0).then_some(open)
    });
    let mut counts: Vec<f64> = open.values().copied().collect();
    counts.sort_by(f64::total_cmp);
    assert_eq!(counts, [1.0, 2.0]);
    assert_eq!(metric_by_pid(), open);

    drop(held);
    eventually("the connections closed", || {
        let open = by_pid(&status_json(&cluster, "admin-conns"));
        (open.values().all(|count| *count == 0.0)).then_some(())
    });
    assert!(metric_by_pid().values().all(|count| *count == 0.0));
    // Where the primary does not see connections, status has no such field.
    let plain = crate::support::cluster()
        .args(&["-w", "1", "--name", "admin-no-conns"])
        .start();
    plain.wait_ready(1);
    let status = status_json(&plain, "admin-no-conns");
    assert_eq!(status["slots"][0].get("connections"), None, "{status}");
}

/// `--balance reuseport`: connections waiting in a worker's own socket, in `status --json`'s
/// `accept_queue` and in `herdsman_worker_accept_queue`, exactly, while the worker is busy.
#[test]
fn accept_queues_are_in_status_and_metrics() {
    let cluster = cluster()
        .args(&["-w", "1", "--name", "admin-queue", "--admin", "127.0.0.1:0"])
        .args(&["--ready-delay", "100ms", "--accept-timeout", "30s"])
        .start();
    let admin = admin_address(&cluster);
    let pid = cluster.ready_pids(1)[0];
    let queued = || {
        let status = status_json(&cluster, "admin-queue");
        let metrics = http_get(admin, "/metrics").unwrap().body;
        let metric = slot_value(&metrics, "herdsman_worker_accept_queue", 1);
        (status["slots"][0]["accept_queue"].as_u64().unwrap(), metric)
    };
    assert_eq!(queued(), (0, vec![(pid.to_string(), 0.0)]));
    // The one-threaded worker burns: three connections wait in its socket's queue.
    let address = cluster.address();
    let burn = std::thread::spawn(move || http_get(address, "/burn?ms=2000"));
    cluster.stdout.wait_for("burn start");
    let held: Vec<std::net::TcpStream> = (0..3)
        .map(|_| std::net::TcpStream::connect(address).unwrap())
        .collect();
    let waiting = eventually("3 connections queued", || {
        let queued = queued();
        (queued.0 == 3).then_some(queued)
    });
    assert_eq!(waiting, (3, vec![(pid.to_string(), 3.0)]));
    burn.join().unwrap().unwrap();
    eventually("the queue emptied", || (queued().0 == 0).then_some(()));
    drop(held);
    // One shared socket: its queue is the cluster's, not a worker's.
    let shared = crate::support::cluster()
        .args(&["-w", "1", "--balance", "shared", "--name", "admin-shared"])
        .start();
    shared.wait_ready(1);
    let status = status_json(&shared, "admin-shared");
    assert_eq!(status["accept_queue"], 0, "{status}");
    assert_eq!(status["slots"][0].get("accept_queue"), None, "{status}");
}

#[test]
fn health_is_503_until_a_worker_is_ready() {
    let cluster = cluster()
        .args(&[
            "-w",
            "1",
            "--name",
            "admin-health",
            "--admin",
            "127.0.0.1:0",
            "--ready-delay",
            "1500ms",
        ])
        .no_wait()
        .start();
    let admin = admin_address(&cluster);
    assert_eq!(http_get(admin, "/live").unwrap().status, 200);
    let health = http_get(admin, "/health").unwrap();
    assert_eq!(health.status, 503, "{health:?}\n{}", cluster.log());
    assert_eq!(http_get(admin, "/ready").unwrap().status, 503);
    cluster.wait_ready(1);
    assert_eq!(http_get(admin, "/health").unwrap().status, 200);
    assert_eq!(http_get(admin, "/ready").unwrap().status, 200);
}

/// The headers of a reply without `date`, which moves between two requests.
fn without_date(headers: Vec<(String, String)>) -> Vec<(String, String)> {
    headers
        .into_iter()
        .filter(|(name, _)| name != "date")
        .collect()
}

/// `curl -I`, HAProxy's `option httpchk HEAD /health`: a HEAD gets the status and the headers
/// (Content-Length included) a GET gets, and no body (RFC 9110 §9.3.2).
#[test]
fn a_head_gets_the_status_and_headers_of_a_get_without_the_body() {
    let cluster = cluster()
        .args(&["-w", "1", "--name", "admin-head", "--admin", "127.0.0.1:0"])
        .start();
    let admin = admin_address(&cluster);
    cluster.ready_pids(1);
    for (path, status, body) in [
        ("/health", 200, "ok\n"),
        ("/ready", 200, "ready\n"),
        ("/live", 200, "live\n"),
    ] {
        let (get, get_headers) = http_exchange(admin, "GET", path, &[], None).unwrap();
        let (head, head_headers) = http_exchange(admin, "HEAD", path, &[], None).unwrap();
        assert_eq!(
            (get.status, get.body.as_str()),
            (status, body),
            "GET {path}"
        );
        assert_eq!(
            (head.status, head.body.as_str()),
            (status, ""),
            "HEAD {path}"
        );
        let expected = [
            (
                "content-type".to_string(),
                "text/plain; charset=utf-8".to_string(),
            ),
            ("connection".to_string(), "close".to_string()),
            ("content-length".to_string(), body.len().to_string()),
        ];
        assert_eq!(without_date(get_headers), expected, "GET {path}");
        assert_eq!(without_date(head_headers), expected, "HEAD {path}");
    }
    // /metrics and /api/status: the same headers, a length of a body that is there on GET.
    for path in ["/metrics", "/api/status"] {
        let (get, get_headers) = http_exchange(admin, "GET", path, &[], None).unwrap();
        let (head, head_headers) = http_exchange(admin, "HEAD", path, &[], None).unwrap();
        assert_eq!((get.status, head.status), (200, 200), "{path}");
        assert_eq!(head.body, "", "HEAD {path}");
        let names = |headers: &[(String, String)]| -> Vec<String> {
            headers.iter().map(|(name, _)| name.clone()).collect()
        };
        assert_eq!(names(&get_headers), names(&head_headers), "{path}");
        let value = |headers: &[(String, String)], wanted: &str| -> String {
            let found = headers.iter().find(|(name, _)| name == wanted);
            found.map(|(_, value)| value.clone()).unwrap_or_default()
        };
        assert_eq!(
            value(&head_headers, "content-type"),
            value(&get_headers, "content-type"),
            "{path}"
        );
        let length: usize = value(&head_headers, "content-length").parse().unwrap();
        assert!(length > 100, "HEAD {path}: content-length {length}");
        assert_eq!(
            value(&get_headers, "content-length"),
            get.body.len().to_string(),
            "GET {path}"
        );
    }
}

/// A known path asked with a method it does not take is 405 with `Allow`, not 404; a POST to a
/// page is 405 before the action's header is asked for.
#[test]
fn another_method_on_a_known_path_is_405_with_allow() {
    let cluster = cluster()
        .args(&["-w", "1", "--name", "admin-405", "--admin", "127.0.0.1:0"])
        .start();
    let admin = admin_address(&cluster);
    cluster.ready_pids(1);
    for (method, path, allow) in [
        ("DELETE", "/health", "GET, HEAD"),
        ("POST", "/ready", "GET, HEAD"),
        ("PUT", "/metrics", "GET, HEAD"),
        ("OPTIONS", "/api/logs", "GET, HEAD"),
        ("GET", "/api/reload", "POST"),
        ("HEAD", "/api/scale", "POST"),
    ] {
        let (reply, headers) = http_exchange(admin, method, path, &[], None).unwrap();
        assert_eq!(reply.status, 405, "{method} {path}: {reply:?}");
        let allowed: Vec<&str> = headers
            .iter()
            .filter(|(name, _)| name == "allow")
            .map(|(_, value)| value.as_str())
            .collect();
        assert_eq!(allowed, [allow], "{method} {path}");
    }
    let (missing, _) = http_exchange(admin, "DELETE", "/nowhere", &[], None).unwrap();
    assert_eq!(
        (missing.status, missing.body.as_str()),
        (404, "no such page\n")
    );
    assert_eq!(status_json(&cluster, "admin-405")["reloads"], 0);
}

/// What Prometheus sends: OpenMetrics first, the classic text at q=0.5.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,\
    application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// OpenMetrics to a scraper that asks for it, else the classic text 0.0.4 (older scrapers,
/// Python's `prometheus_client.parser`): counters typed as counters in both, the build info a
/// gauge of 1 in the classic text, `# EOF` in OpenMetrics only.
#[test]
fn metrics_come_in_the_text_format_the_scraper_accepts() {
    let cluster = cluster()
        .args(&[
            "-w",
            "1",
            "--name",
            "admin-format",
            "--admin",
            "127.0.0.1:0",
        ])
        .start();
    let admin = admin_address(&cluster);
    cluster.ready_pids(1);
    let scrape = |accept: Option<&str>| {
        let headers: Vec<(&str, &str)> = accept
            .map(|accept| ("Accept", accept))
            .into_iter()
            .collect();
        let (reply, headers) = http_exchange(admin, "GET", "/metrics", &headers, None).unwrap();
        assert_eq!(reply.status, 200, "{reply:?}");
        let header = |wanted: &str| {
            let found = headers.iter().find(|(name, _)| name == wanted);
            found.map(|(_, value)| value.clone()).unwrap_or_default()
        };
        (header("content-type"), header("vary"), reply.body)
    };
    let build_info = format!(
        "herdsman_build_info{{version=\"{}\"}} 1\n",
        env!("CARGO_PKG_VERSION")
    );
    for accept in [None, Some("text/plain;version=0.0.4"), Some("*/*")] {
        let (kind, vary, text) = scrape(accept);
        assert_eq!(
            kind, "text/plain; version=0.0.4; charset=utf-8",
            "{accept:?}"
        );
        assert_eq!(vary, "accept");
        assert!(
            text.contains("# TYPE herdsman_build_info gauge\n"),
            "{text}"
        );
        assert!(text.contains(&build_info), "{text}");
        assert!(
            text.contains("# TYPE herdsman_reloads_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE herdsman_worker_cpu_seconds_total counter\n"),
            "{text}"
        );
        assert!(!text.contains("# EOF"), "{text}");
        assert_eq!(
            single(&text, "herdsman_reloads_total", Some("completed")),
            0.0
        );
    }
    let (kind, vary, text) = scrape(Some(PROMETHEUS_ACCEPT));
    assert_eq!(
        kind,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert_eq!(vary, "accept");
    assert!(text.contains("# TYPE herdsman_build info\n"), "{text}");
    assert!(text.contains(&build_info), "{text}");
    assert!(text.contains("# TYPE herdsman_reloads counter\n"), "{text}");
    assert!(
        text.contains("herdsman_reloads_total{result=\"completed\"} 0\n"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE herdsman_worker_cpu_seconds counter\n"),
        "{text}"
    );
    assert!(text.ends_with("\n# EOF\n"), "{text}");
}

/// `/api/logs?slot=9` of a 2-slot cluster is 404 with the words of `herdsman logs --slot 9`,
/// not an empty list.
#[test]
fn logs_of_a_slot_the_cluster_does_not_have_are_404() {
    let cluster = cluster()
        .args(&["-w", "2", "--name", "admin-logs", "--admin", "127.0.0.1:0"])
        .start();
    let admin = admin_address(&cluster);
    cluster.ready_pids(2);
    for slot in [9, 0] {
        let (reply, headers) =
            http_exchange(admin, "GET", &format!("/api/logs?slot={slot}"), &[], None).unwrap();
        assert_eq!(reply.status, 404, "{reply:?}");
        let error: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(
            error,
            serde_json::json!({
                "error": format!("cluster `admin-logs` has no slot {slot}; slots are 1 to 2")
            })
        );
        assert!(
            headers.contains(&("content-type".into(), "application/json".into())),
            "{headers:?}"
        );
    }
    let (reply, _) = http_exchange(admin, "GET", "/api/logs?slot=abc", &[], None).unwrap();
    assert_eq!(reply.status, 400, "{reply:?}");
    assert_eq!(
        reply.body,
        r#"{"error":"slot= takes a slot number, e.g. slot=1"}"#
    );
    let lines = http_get(admin, "/api/logs?slot=2").unwrap();
    assert_eq!(lines.status, 200, "{lines:?}");
    let lines: serde_json::Value = serde_json::from_str(&lines.body).unwrap();
    let lines = lines.as_array().unwrap();
    assert!(
        !lines.is_empty() && lines.iter().all(|line| line["slot"] == 2),
        "{lines:?}"
    );
}

#[test]
fn actions_need_the_header_and_the_token() {
    let cluster = cluster()
        .args(&[
            "-w",
            "1",
            "--name",
            "admin-token",
            "--admin",
            "127.0.0.1:0",
            "--admin-token",
            "s3cret",
        ])
        .start();
    let admin = admin_address(&cluster);
    cluster.ready_pids(1);
    assert_eq!(http_get(admin, "/health").unwrap().status, 200);
    assert_eq!(http_get(admin, "/metrics").unwrap().status, 401);
    let bearer = [("Authorization", "Bearer s3cret")];
    let (metrics, _) = http_exchange(admin, "GET", "/metrics", &bearer, None).unwrap();
    assert_eq!(metrics.status, 200);
    let foreign = [
        ("Authorization", "Bearer s3cret"),
        ("Origin", "http://evil.example"),
    ];
    let (refused, _) = http_exchange(admin, "POST", "/api/reload", &foreign, None).unwrap();
    assert_eq!(refused.status, 403, "{refused:?}");
    // The test client sends `Host: test`: the page's own origin is http://test.
    let same = [
        ("Authorization", "Bearer s3cret"),
        ("Origin", "http://test"),
    ];
    let (bare, _) = http_exchange(admin, "POST", "/api/reload", &same[1..], None).unwrap();
    assert_eq!(bare.status, 401, "{bare:?}");
    let (reloaded, _) = http_exchange(admin, "POST", "/api/reload", &same, None).unwrap();
    assert_eq!(reloaded.status, 200, "{reloaded:?}");
    let status = status_json(&cluster, "admin-token");
    assert_eq!(status["reloads"], 1);
    assert_eq!(status["slots"][0]["generation"], 2, "{status}");
}

#[test]
fn a_non_loopback_admin_address_needs_a_token() {
    let dir = RuntimeDir::new();
    let started = Instant::now();
    let output = dir.herdsman(&["run", "--admin", "0.0.0.0:0", "--", "true"]);
    assert_eq!(output.code, Some(2), "{output:?}");
    assert!(
        output.stderr.contains(
            "--admin 0.0.0.0:0 is not a loopback address, and the admin server can reload"
        ),
        "{output:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// The dashboard in headless Chromium (tests/dashboard.js, playwright-core from
/// examples/node): a row per worker, a kill -9 shown within 2 s without reloading the page,
/// the Reload button reloads, and a screenshot lands in target/admin-dashboard.png.
#[test]
fn the_dashboard_follows_the_cluster() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};

    assert!(
        std::path::Path::new("/usr/bin/chromium").exists(),
        "this test needs Debian's chromium (scripts/test.sh installs it)"
    );
    let cluster = cluster()
        .args(&["-w", "2", "--name", "admin-page", "--admin", "127.0.0.1:0"])
        .start();
    let admin = admin_address(&cluster);
    cluster.ready_pids(2);
    let root = env!("CARGO_MANIFEST_DIR");
    let screenshot = format!("{root}/target/admin-dashboard.png");
    let _ = std::fs::remove_file(&screenshot);
    let mut driver = Command::new("node")
        .arg(format!("{root}/tests/dashboard.js"))
        .args([format!("http://{admin}/"), "2".into(), screenshot.clone()])
        .env("NODE_PATH", format!("{root}/examples/node/node_modules"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run node");
    let mut stdout = BufReader::new(driver.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let pid: i32 = line
        .strip_prefix("pid ")
        .and_then(|pid| pid.trim().parse().ok())
        .unwrap_or_else(|| panic!("the driver said {line:?}"));
    let status = status_json(&cluster, "admin-page");
    assert_eq!(status["slots"][0]["pid"], pid, "{status}");
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    writeln!(driver.stdin.as_mut().unwrap(), "killed").unwrap();
    line.clear();
    stdout.read_line(&mut line).unwrap();
    let exit = driver.wait().unwrap();
    assert!(exit.success() && line.starts_with("ok "), "{line:?} {exit}");
    let status = status_json(&cluster, "admin-page");
    assert_eq!(status["reloads"], 1, "{status}");
    assert!(std::fs::metadata(&screenshot).unwrap().len() > 0);
}
