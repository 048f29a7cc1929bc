//! `/metrics`: one status rendered as Prometheus text with `prometheus-client`. A fresh
//! registry per scrape: every figure is read from the status (and, for CPU seconds, from
//! /proc) at that moment, so nothing is kept between scrapes and the primary does no work
//! while nobody scrapes.
//!
//! Counts that only grow are counters even though they are read whole from the status: a
//! counter new at each scrape, incremented by the reading, shows exactly the reading, and its
//! type lets Prometheus's `rate()` and `increase()` treat a restart of the primary as a reset.
//!
//! Two texts, as Prometheus's own client libraries serve them ([`Format::negotiate`]):
//! OpenMetrics 1.0 to a scraper whose `Accept` asks for `application/openmetrics-text` (Prometheus
//! itself does), else the classic text format 0.0.4, which older scrapers and parsers read
//! (`prometheus_client.parser` in Python, for one): `prometheus-client` writes both from the one
//! registry, its `encoding::prometheus_text` turning the build info into a gauge
//! `herdsman_build_info` of 1 and ending without `# EOF`.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::{prometheus_text, text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Metric, Registry};

use crate::domain::{ClusterStatus, Occupant, SlotStatus, WorkerPhase};

type Labels = Vec<(&'static str, String)>;
type FloatGauge = Gauge<f64, AtomicU64>;
type FloatCounter = Counter<f64, AtomicU64>;

/// The text `/metrics` answers in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0: `# TYPE herdsman_reloads counter`, `herdsman_build_info` an info,
    /// `# EOF` at the end.
    OpenMetrics,
    /// The classic Prometheus text format 0.0.4: `# TYPE herdsman_reloads_total counter`,
    /// `herdsman_build_info` a gauge, no `# EOF`.
    Classic,
}

impl Format {
    /// The format for a request's `Accept` (its values joined by commas, empty for none):
    /// OpenMetrics when it
    /// takes `application/openmetrics-text` at least as gladly as `text/plain` (by `q`), else
    /// the classic text, which is also the answer to no `Accept`, `*/*` or `text/*`. Prometheus
    /// asks for OpenMetrics first and the classic text at `q=0.5`.
    pub fn negotiate(accept: &str) -> Format {
        let mut openmetrics = 0.0_f32;
        let mut plain = 0.0_f32;
        for range in accept.split(',') {
            let mut parts = range.split(';').map(str::trim);
            let media_type = parts.next().unwrap_or("").to_ascii_lowercase();
            // A `q` that does not parse makes the range unacceptable rather than preferred.
            let quality = parts
                .filter_map(|parameter| parameter.split_once('='))
                .find(|(name, _)| name.trim().eq_ignore_ascii_case("q"))
                .map_or(Some(1.0), |(_, q)| q.trim().parse::<f32>().ok())
                .unwrap_or(0.0);
            match media_type.as_str() {
                "application/openmetrics-text" => openmetrics = openmetrics.max(quality),
                "text/plain" => plain = plain.max(quality),
                _ => {}
            }
        }
        if openmetrics > 0.0 && openmetrics >= plain {
            Format::OpenMetrics
        } else {
            Format::Classic
        }
    }

    /// The reply's `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Classic => prometheus_text::CONTENT_TYPE,
        }
    }
}

/// The exposition of `status` in `format`.
pub fn render(status: &ClusterStatus, format: Format) -> String {
    let mut output = String::new();
    // Writing to a String cannot fail.
    let _ = match format {
        Format::OpenMetrics => text::encode(&mut output, &registry(status)),
        Format::Classic => prometheus_text::encode(&mut output, &registry(status)),
    };
    output
}

/// Every figure of `status`, in a registry of its own.
fn registry(status: &ClusterStatus) -> Registry {
    let mut registry = Registry::with_prefix("herdsman");
    registry.register(
        "build",
        "herdsman's version",
        Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
    );
    gauge(
        &mut registry,
        "uptime_seconds",
        "Seconds since the primary started",
    )
    .set(status.uptime.as_secs_f64());
    gauge(
        &mut registry,
        "workers_desired",
        "Slots the cluster should have",
    )
    .set(status.workers as f64);
    gauge(
        &mut registry,
        "generation",
        "The generation new workers get",
    )
    .set(status.generation as f64);

    let by_state = family::<FloatGauge>(
        &mut registry,
        "workers",
        "Workers and empty slots, by state",
    );
    for state in [
        "starting", "ready", "retiring", "draining", "backoff", "errored",
    ] {
        by_state
            .get_or_create(&vec![("state", state.to_string())])
            .set(0.0);
    }
    for row in &status.slots {
        let state = match &row.occupant {
            Occupant::Worker(worker) => worker.phase.as_str(),
            Occupant::Backoff => "backoff",
            Occupant::Errored => "errored",
        };
        by_state
            .get_or_create(&vec![("state", state.to_string())])
            .inc();
    }

    // Counters are registered without `_total`: the encoders add it.
    by_slot_and_reason(
        family(
            &mut registry,
            "slot_restarts",
            "Restarts of a slot after failures, by slot and the kind of failure (crashed, \
             killed, exited, ready-timeout, not-accepting, unknown)",
        ),
        status,
        |row| &row.restart_reasons,
    );
    by_slot_and_reason(
        family(
            &mut registry,
            "slot_replacements",
            "Workers of a slot replaced while serving, by slot and reason (watchdog, max-memory, \
             max-requests)",
        ),
        status,
        |row| &row.replacements,
    );
    if let Some(waiting) = status.accept_queue {
        gauge(
            &mut registry,
            "accept_queue",
            "Connections waiting in the one socket's accept queue (--balance shared)",
        )
        .set(waiting as f64);
    }
    let reloads = family::<Counter>(&mut registry, "reloads", "Reloads, by result");
    for (result, count) in [
        ("completed", status.reloads),
        ("aborted", status.reloads_aborted),
    ] {
        reloads
            .get_or_create(&vec![("result", result.to_string())])
            .inc_by(count);
    }

    let rss = family::<FloatGauge>(
        &mut registry,
        "worker_rss_bytes",
        "A worker's resident memory",
    );
    let cpu = family::<FloatCounter>(
        &mut registry,
        "worker_cpu_seconds",
        "CPU time a worker has used (user and system)",
    );
    let uptime = family::<FloatGauge>(
        &mut registry,
        "worker_uptime_seconds",
        "Seconds since a worker started",
    );
    let ready = family::<FloatGauge>(
        &mut registry,
        "worker_ready",
        "1 for a ready worker, else 0",
    );
    let accept_queue = family::<FloatGauge>(
        &mut registry,
        "worker_accept_queue",
        "Connections waiting in the accept queue of a worker's own socket (reuseport)",
    );
    let connections = family::<FloatGauge>(
        &mut registry,
        "worker_connections",
        "Connections open to a worker now, where the primary sees them (the proxy modes)",
    );
    for row in &status.slots {
        let Some(worker) = row.worker() else {
            continue;
        };
        let labels = vec![
            ("slot", row.slot.to_string()),
            ("pid", worker.pid.to_string()),
            ("generation", worker.generation.to_string()),
        ];
        if let Some(bytes) = worker.rss_bytes {
            rss.get_or_create(&labels).set(bytes as f64);
        }
        if let Some(time) = crate::primary::cpu_time(worker.pid) {
            cpu.get_or_create(&labels).inc_by(time.as_secs_f64());
        }
        uptime
            .get_or_create(&labels)
            .set(worker.uptime.as_secs_f64());
        ready
            .get_or_create(&labels)
            .set(f64::from(u8::from(worker.phase == WorkerPhase::Ready)));
        if let Some(waiting) = worker.accept_queue {
            accept_queue.get_or_create(&labels).set(waiting as f64);
        }
        if let Some(open) = worker.connections {
            connections.get_or_create(&labels).set(open as f64);
        }
    }

    if let Some(store) = status
        .shared_state
        .as_ref()
        .and_then(|state| state.embedded.as_ref())
    {
        gauge(&mut registry, "store_keys", "Keys in the embedded store").set(store.keys as f64);
        gauge(
            &mut registry,
            "store_memory_bytes",
            "Memory the embedded store's data takes",
        )
        .set(store.used_memory as f64);
        gauge(
            &mut registry,
            "store_clients",
            "Clients connected to the embedded store",
        )
        .set(store.clients as f64);
        let commands = Counter::<u64>::default();
        commands.inc_by(store.commands);
        registry.register(
            "store_commands",
            "Commands the embedded store has run since it started",
            commands,
        );
    }
    registry
}

fn gauge(registry: &mut Registry, name: &str, help: &str) -> FloatGauge {
    let gauge = FloatGauge::default();
    registry.register(name, help, gauge.clone());
    gauge
}

/// A slot's counts by reason (`counts` of its row), once per slot: a slot has two rows while
/// its worker is being replaced, with the same counts.
fn by_slot_and_reason(
    family: Family<Labels, Counter>,
    status: &ClusterStatus,
    counts: impl Fn(&SlotStatus) -> &Vec<(&'static str, u32)>,
) {
    let mut seen = std::collections::BTreeSet::new();
    for row in status.slots.iter().filter(|row| seen.insert(row.slot)) {
        for &(reason, count) in counts(row) {
            family
                .get_or_create(&vec![
                    ("slot", row.slot.to_string()),
                    ("reason", reason.to_string()),
                ])
                .inc_by(u64::from(count));
        }
    }
}

fn family<M>(registry: &mut Registry, name: &str, help: &str) -> Family<Labels, M>
where
    M: Default,
    Family<Labels, M>: Metric,
{
    let family = Family::<Labels, M>::default();
    registry.register(name, help, family.clone());
    family
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
