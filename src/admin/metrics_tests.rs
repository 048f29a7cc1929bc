//! The two texts of `/metrics` from one status: every family's type, the counters' names, the
//! build info in each format, and which format an `Accept` gets.

use std::net::SocketAddr;
use std::time::Duration;

use super::{render, Format};
use crate::config::{Balance, ProxyProtocol, Sticky};
use crate::domain::{
    ClusterPhase, ClusterStatus, Occupant, SlotStatus, StateStatus, WorkerPhase, WorkerStatus,
};
use crate::state::StoreFigures;

/// One ready worker (this test process, so that its CPU time can be read from /proc) with a
/// restart and a replacement, 3 reloads and 1 aborted, and an embedded store: every family
/// has a sample.
fn status() -> ClusterStatus {
    let address: SocketAddr = "127.0.0.1:8000".parse().unwrap();
    ClusterStatus {
        name: "api".into(),
        pid: 4100,
        address,
        balance: Balance::Reuseport,
        sticky: Sticky::Off,
        proxy_protocol: ProxyProtocol::Off,
        phase: ClusterPhase::Running,
        degraded: false,
        workers: 1,
        generation: 4,
        reloads: 3,
        reloads_aborted: 1,
        accept_queue: Some(0),
        uptime: Duration::from_secs(61),
        command: vec!["app".into()],
        slots: vec![SlotStatus {
            slot: 1,
            occupant: Occupant::Worker(WorkerStatus {
                pid: std::process::id(),
                generation: 4,
                phase: WorkerPhase::Ready,
                not_accepting: false,
                uptime: Duration::from_secs(9),
                cpu_percent: None,
                rss_bytes: Some(20_480_000),
                connections: Some(7),
                accept_queue: Some(2),
            }),
            restarts: 1,
            last_exit: None,
            last_replacement: None,
            replacements: vec![("watchdog", 2)],
            restart_reasons: vec![("killed", 1)],
        }],
        shared_state: Some(StateStatus {
            url: "redis+unix:///run/herdsman/state.sock".into(),
            tcp: None,
            embedded: Some(StoreFigures {
                keys: 12,
                used_memory: 4096,
                clients: 3,
                commands: 250,
            }),
        }),
        foreign_listeners: Vec::new(),
        also_serving: Vec::new(),
    }
}

fn type_lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|line| line.starts_with("# TYPE "))
        .collect()
}

/// The sample lines of `name` in `text`, sorted: a family keeps its samples unordered.
fn sample_lines<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    let mut lines: Vec<&str> = text
        .lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
        })
        .collect();
    lines.sort_unstable();
    lines
}

/// OpenMetrics: a counter's TYPE line names the family without `_total`, its samples end in
/// `_total`; the build version is an info.
#[test]
fn openmetrics_types_every_count_a_counter() {
    let text = render(&status(), Format::OpenMetrics);
    assert_eq!(
        type_lines(&text),
        [
            "# TYPE herdsman_build info",
            "# TYPE herdsman_uptime_seconds gauge",
            "# TYPE herdsman_workers_desired gauge",
            "# TYPE herdsman_generation gauge",
            "# TYPE herdsman_workers gauge",
            "# TYPE herdsman_slot_restarts counter",
            "# TYPE herdsman_slot_replacements counter",
            "# TYPE herdsman_accept_queue gauge",
            "# TYPE herdsman_reloads counter",
            "# TYPE herdsman_worker_rss_bytes gauge",
            "# TYPE herdsman_worker_cpu_seconds counter",
            "# TYPE herdsman_worker_uptime_seconds gauge",
            "# TYPE herdsman_worker_ready gauge",
            "# TYPE herdsman_worker_accept_queue gauge",
            "# TYPE herdsman_worker_connections gauge",
            "# TYPE herdsman_store_keys gauge",
            "# TYPE herdsman_store_memory_bytes gauge",
            "# TYPE herdsman_store_clients gauge",
            "# TYPE herdsman_store_commands counter",
        ],
        "{text}"
    );
    assert_eq!(
        sample_lines(&text, "herdsman_reloads_total"),
        [
            r#"herdsman_reloads_total{result="aborted"} 1"#,
            r#"herdsman_reloads_total{result="completed"} 3"#,
        ],
        "{text}"
    );
    assert_eq!(
        sample_lines(&text, "herdsman_slot_restarts_total"),
        [r#"herdsman_slot_restarts_total{slot="1",reason="killed"} 1"#],
        "{text}"
    );
    assert_eq!(
        sample_lines(&text, "herdsman_slot_replacements_total"),
        [r#"herdsman_slot_replacements_total{slot="1",reason="watchdog"} 2"#],
        "{text}"
    );
    assert_eq!(
        sample_lines(&text, "herdsman_store_commands_total"),
        ["herdsman_store_commands_total 250"],
        "{text}"
    );
    let pid = std::process::id();
    let cpu = sample_lines(&text, "herdsman_worker_cpu_seconds_total");
    let prefix =
        format!(r#"herdsman_worker_cpu_seconds_total{{slot="1",pid="{pid}",generation="4"}} "#);
    assert!(cpu.len() == 1 && cpu[0].starts_with(&prefix), "{text}");
    assert_eq!(
        sample_lines(&text, "herdsman_build_info"),
        [format!(
            r#"herdsman_build_info{{version="{}"}} 1"#,
            env!("CARGO_PKG_VERSION")
        )],
        "{text}"
    );
    assert!(text.ends_with("\n# EOF\n"), "{text}");
}

/// The classic text 0.0.4: a counter's TYPE line names its samples, `_total` and all; the
/// build info is a gauge of 1; no `# EOF`. A parser of the classic text reads the counters as
/// counters.
#[test]
fn the_classic_text_types_counters_and_makes_the_build_info_a_gauge() {
    let text = render(&status(), Format::Classic);
    let counters: Vec<&str> = type_lines(&text)
        .into_iter()
        .filter(|line| line.ends_with(" counter"))
        .collect();
    assert_eq!(
        counters,
        [
            "# TYPE herdsman_slot_restarts_total counter",
            "# TYPE herdsman_slot_replacements_total counter",
            "# TYPE herdsman_reloads_total counter",
            "# TYPE herdsman_worker_cpu_seconds_total counter",
            "# TYPE herdsman_store_commands_total counter",
        ],
        "{text}"
    );
    assert_eq!(type_lines(&text).len(), 19, "{text}");
    assert_eq!(
        sample_lines(&text, "herdsman_build_info"),
        [format!(
            r#"herdsman_build_info{{version="{}"}} 1"#,
            env!("CARGO_PKG_VERSION")
        )],
        "{text}"
    );
    assert!(
        text.contains("# TYPE herdsman_build_info gauge\n"),
        "{text}"
    );
    assert!(!text.contains("# EOF"), "{text}");

    let lines = text.lines().map(|line| Ok(line.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("the classic text parses");
    let types: std::collections::BTreeSet<(String, String)> = scrape
        .samples
        .iter()
        .filter(|sample| sample.metric.ends_with("_total") || sample.metric.ends_with("_info"))
        .map(|sample| {
            let kind = match sample.value {
                prometheus_parse::Value::Counter(_) => "counter",
                prometheus_parse::Value::Gauge(_) => "gauge",
                _ => "other",
            };
            (sample.metric.clone(), kind.to_string())
        })
        .collect();
    let expected: std::collections::BTreeSet<(String, String)> = [
        ("herdsman_build_info", "gauge"),
        ("herdsman_slot_restarts_total", "counter"),
        ("herdsman_slot_replacements_total", "counter"),
        ("herdsman_reloads_total", "counter"),
        ("herdsman_worker_cpu_seconds_total", "counter"),
        ("herdsman_store_commands_total", "counter"),
    ]
    .iter()
    .map(|(name, kind)| (name.to_string(), kind.to_string()))
    .collect();
    assert_eq!(types, expected, "{text}");
}

#[test]
fn the_accept_header_picks_the_format() {
    let cases = [
        ("", Format::Classic),
        ("text/plain;version=0.0.4", Format::Classic),
        ("*/*", Format::Classic),
        ("text/*", Format::Classic),
        // What Prometheus sends.
        (
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
             version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
            Format::OpenMetrics,
        ),
        (
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::OpenMetrics,
        ),
        ("Application/OpenMetrics-Text", Format::OpenMetrics),
        (
            "text/plain, application/openmetrics-text",
            Format::OpenMetrics,
        ),
        (
            "text/plain, application/openmetrics-text;q=0.5",
            Format::Classic,
        ),
        (
            "text/plain;q=0.2, application/openmetrics-text;Q=0.5",
            Format::OpenMetrics,
        ),
        ("application/openmetrics-text;q=0", Format::Classic),
        ("application/openmetrics-text;q=high", Format::Classic),
    ];
    for (accept, format) in cases {
        assert_eq!(Format::negotiate(accept), format, "{accept:?}");
    }
}

#[test]
fn each_format_has_its_content_type() {
    assert_eq!(
        Format::OpenMetrics.content_type(),
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert_eq!(
        Format::Classic.content_type(),
        "text/plain; version=0.0.4; charset=utf-8"
    );
}
