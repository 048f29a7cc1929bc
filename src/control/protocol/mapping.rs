//! The one place where the cluster's typed values ([`crate::domain`]) become the control
//! protocol's JSON shapes: phases as their names, durations in milliseconds, times as RFC 3339
//! (UTC, milliseconds), an exit as its reason for people plus its code or signal name.

use std::time::{Duration, SystemTime};

use super::{
    ClusterStatus, ForeignListenerStatus, LastExitStatus, LogLine, ReplacementStatus, Reply,
    SlotStatus, StateStatus,
};
use crate::domain::{self, Occupant, Update, WorkerPhase};

/// RFC 3339, UTC, milliseconds: `2026-12-02T01:31:30.123Z`.
pub fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

fn millis(duration: Duration) -> u64 {
    duration.as_millis() as u64
}

impl From<&domain::ClusterStatus> for ClusterStatus {
    fn from(status: &domain::ClusterStatus) -> Self {
        ClusterStatus {
            name: status.name.clone(),
            pid: status.pid,
            address: status.address.to_string(),
            balance: status.balance.to_string(),
            sticky: status.sticky.to_string(),
            proxy_protocol: status.proxy_protocol.to_string(),
            state: status.phase.as_str().into(),
            degraded: status.degraded,
            workers: status.workers,
            generation: status.generation,
            reloads: status.reloads,
            reloads_aborted: status.reloads_aborted,
            accept_queue: status.accept_queue,
            uptime_ms: millis(status.uptime),
            command: status
                .command
                .iter()
                .map(|part| part.to_string_lossy().into_owned())
                .collect(),
            slots: status.slots.iter().map(SlotStatus::from).collect(),
            shared_state: status.shared_state.as_ref().map(StateStatus::from),
            foreign_listeners: status
                .foreign_listeners
                .iter()
                .map(ForeignListenerStatus::from)
                .collect(),
            also_serving: status
                .also_serving
                .iter()
                .map(|address| address.to_string())
                .collect(),
        }
    }
}

impl From<&domain::SlotStatus> for SlotStatus {
    fn from(row: &domain::SlotStatus) -> Self {
        let worker = row.worker();
        SlotStatus {
            slot: row.slot,
            pid: worker.map(|worker| worker.pid),
            generation: worker.map(|worker| worker.generation),
            state: row_state(&row.occupant).into(),
            uptime_ms: worker.map(|worker| millis(worker.uptime)),
            restarts: row.restarts,
            last_exit: row.last_exit.as_ref().map(LastExitStatus::from),
            cpu_percent: worker.and_then(|worker| worker.cpu_percent),
            rss_bytes: worker.and_then(|worker| worker.rss_bytes),
            last_replacement: row
                .last_replacement
                .as_ref()
                .map(|replaced| ReplacementStatus {
                    pid: replaced.pid,
                    kind: replaced.kind.into(),
                    reason: replaced.reason.clone(),
                    at: rfc3339(replaced.at),
                }),
            replacements: row
                .replacements
                .iter()
                .map(|&(kind, count)| (kind.to_string(), count))
                .collect(),
            restart_reasons: row
                .restart_reasons
                .iter()
                .map(|&(kind, count)| (kind.to_string(), count))
                .collect(),
            connections: worker.and_then(|worker| worker.connections),
            accept_queue: worker.and_then(|worker| worker.accept_queue),
        }
    }
}

/// `starting`, `ready`, `draining` (retiring or draining), `not accepting`, `backoff`, `errored`.
fn row_state(occupant: &Occupant) -> &'static str {
    match occupant {
        Occupant::Worker(worker) => match worker.phase {
            WorkerPhase::Starting => "starting",
            WorkerPhase::Ready => "ready",
            WorkerPhase::Retiring => "draining",
            WorkerPhase::Draining if worker.not_accepting => "not accepting",
            WorkerPhase::Draining => "draining",
        },
        Occupant::Backoff => "backoff",
        Occupant::Errored => "errored",
    }
}

impl From<&domain::LastExit> for LastExitStatus {
    fn from(exit: &domain::LastExit) -> Self {
        LastExitStatus {
            pid: exit.pid,
            reason: exit.reason.shown(exit.not_accepting),
            code: exit.reason.code(),
            signal: exit.reason.signal_name(),
            at: rfc3339(exit.at),
        }
    }
}

impl From<&domain::StateStatus> for StateStatus {
    fn from(state: &domain::StateStatus) -> Self {
        let figures = state.embedded;
        StateStatus {
            url: state.url.clone(),
            kind: match figures {
                Some(_) => "embedded",
                None => "external",
            }
            .into(),
            tcp: state.tcp.map(|address| address.to_string()),
            keys: figures.map(|figures| figures.keys),
            used_memory: figures.map(|figures| figures.used_memory),
            clients: figures.map(|figures| figures.clients),
            commands_processed: figures.map(|figures| figures.commands),
        }
    }
}

impl From<&domain::ForeignListener> for ForeignListenerStatus {
    fn from(foreign: &domain::ForeignListener) -> Self {
        ForeignListenerStatus {
            address: foreign.address.to_string(),
            pid: foreign.pid,
            command: foreign.command.clone(),
            cluster: foreign.cluster.clone(),
            slot: foreign.slot,
            in_group: foreign.in_group,
            description: foreign.description.clone(),
        }
    }
}

impl From<&domain::LogEntry> for LogLine {
    fn from(entry: &domain::LogEntry) -> Self {
        LogLine {
            time: rfc3339(entry.time),
            slot: entry.slot,
            pid: entry.pid,
            stream: entry.stream.to_string(),
            line: entry.line.clone(),
        }
    }
}

impl From<Update> for Reply {
    fn from(update: Update) -> Self {
        match update {
            Update::Progress { message } => Reply::Progress { message },
            Update::Done { ok, message } => Reply::Result { ok, message },
        }
    }
}

impl From<&domain::ClusterStatus> for Reply {
    fn from(status: &domain::ClusterStatus) -> Self {
        Reply::Status(Box::new(status.into()))
    }
}

#[cfg(test)]
#[path = "mapping_tests.rs"]
mod tests;
