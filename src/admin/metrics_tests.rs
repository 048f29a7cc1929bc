//! The text of `/metrics` from one status: every family's type and the counters' names.

use std::net::SocketAddr;
use std::time::Duration;

use super::render;
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
    let text = render(&status());
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
