//! The cluster's state at one moment, typed: what [`crate::Primary::status`] returns and what the
//! control protocol's `status` reply is made of (`control::protocol` maps it to the JSON that
//! `herdsman status --json` prints and docs/control.md describes).

use std::ffi::OsString;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use super::{ClusterPhase, ExitReason, WorkerPhase};
use crate::config::{Balance, ProxyProtocol, Sticky};

/// The cluster line and one row per worker or empty slot.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterStatus {
    pub name: String,
    /// The primary's pid.
    pub pid: u32,
    pub address: SocketAddr,
    pub balance: Balance,
    /// `--sticky`.
    pub sticky: Sticky,
    /// `--proxy-protocol`.
    pub proxy_protocol: ProxyProtocol,
    pub phase: ClusterPhase,
    /// Running (or reloading) with fewer ready workers than slots: a slot is crash-looping,
    /// waiting to restart or not accepting.
    pub degraded: bool,
    /// The slots the cluster should have.
    pub workers: usize,
    /// The generation new workers get; increases with every reload.
    pub generation: u64,
    /// Completed reloads.
    pub reloads: u64,
    /// Aborted reloads.
    pub reloads_aborted: u64,
    /// Connections waiting in the one socket's accept queue (`--balance shared`).
    pub accept_queue: Option<u64>,
    pub uptime: Duration,
    /// The worker command.
    pub command: Vec<OsString>,
    /// By slot; a slot being replaced has a row per worker, and slots scaled away keep theirs
    /// until their workers have exited.
    pub slots: Vec<SlotStatus>,
    /// Shared state; `None` with `--state off`.
    pub shared_state: Option<StateStatus>,
    /// Sockets of other processes on the cluster's port that take some of its connections.
    pub foreign_listeners: Vec<ForeignListener>,
    /// Addresses served besides `address`, because workers asked for them (a Node app's
    /// `listen(port)`): bound once, shared by every worker.
    pub also_serving: Vec<SocketAddr>,
}

/// One worker, or a slot waiting for one.
#[derive(Clone, Debug, PartialEq)]
pub struct SlotStatus {
    pub slot: usize,
    pub occupant: Occupant,
    /// Restarts of this slot after failures.
    pub restarts: u32,
    pub last_exit: Option<LastExit>,
    /// The slot's last worker replaced for a reason (`--watchdog`, `--max-memory`,
    /// `--max-requests`), and how many were, by kind (`watchdog`, `max-memory`, …).
    pub last_replacement: Option<LastReplacement>,
    pub replacements: Vec<(&'static str, u32)>,
    /// Restarts by the kind of failure (`crashed`, `killed`, `ready-timeout`, …).
    pub restart_reasons: Vec<(&'static str, u32)>,
}

/// Why a slot's worker was last replaced while it served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastReplacement {
    pub pid: u32,
    /// `watchdog`, `max-memory` or `max-requests`.
    pub kind: &'static str,
    /// For people: `no heartbeat for 10s (--watchdog)`.
    pub reason: String,
    pub at: SystemTime,
}

/// What a slot's row shows: a worker, or the wait for one.
#[derive(Clone, Debug, PartialEq)]
pub enum Occupant {
    Worker(WorkerStatus),
    /// No worker: the slot's last one died; the next starts after the restart delay
    /// ([`super::SlotState::Backoff`]).
    Backoff,
    /// No worker, and the slot is crash-looping ([`super::SlotState::Errored`]): it keeps
    /// retrying, with backoff.
    Errored,
}

/// A worker process in a slot.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerStatus {
    pub pid: u32,
    pub generation: u64,
    pub phase: WorkerPhase,
    /// Stopped because it left connections in its accept queue (`accepting`).
    pub not_accepting: bool,
    pub uptime: Duration,
    /// CPU use since the previous status request (or since the worker started), in percent of
    /// one core, to a tenth.
    pub cpu_percent: Option<f64>,
    pub rss_bytes: Option<u64>,
    /// Connections open to it now, where the primary sees them (`--balance proxy`, `proxy-rr`,
    /// `least-conn`).
    pub connections: Option<u64>,
    /// Connections waiting in the accept queue of its own socket (`--balance reuseport`).
    pub accept_queue: Option<u64>,
}

/// How a slot's last worker ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastExit {
    pub pid: u32,
    pub reason: ExitReason,
    /// It was stopped because it left connections in its accept queue.
    pub not_accepting: bool,
    pub at: SystemTime,
}

/// Where workers' shared state lives, and the embedded store's figures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateStatus {
    /// The URL workers get (`HERDSMAN_STATE_URL`, `REDIS_URL`).
    pub url: String,
    /// The embedded store's loopback TCP address, with `--state-listen`.
    pub tcp: Option<SocketAddr>,
    /// The embedded store's figures; `None` for an external store.
    pub embedded: Option<crate::state::StoreFigures>,
}

/// A socket on the cluster's port that is not the cluster's (reuseport).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForeignListener {
    pub address: SocketAddr,
    /// The process that holds it, when it can be seen.
    pub pid: Option<u32>,
    pub command: Option<String>,
    /// The herdsman cluster whose primary holds it.
    pub cluster: Option<String>,
    /// The slot whose worker (or a process it started) holds it: an app binding `$PORT`.
    pub slot: Option<usize>,
    /// In the cluster's `SO_REUSEPORT` group (same address), rather than on a more specific one.
    pub in_group: bool,
    /// One line for people.
    pub description: String,
}

impl SlotStatus {
    /// The slot's worker, when it has one.
    pub fn worker(&self) -> Option<&WorkerStatus> {
        match &self.occupant {
            Occupant::Worker(worker) => Some(worker),
            Occupant::Backoff | Occupant::Errored => None,
        }
    }

    /// Whether a ready worker serves this row.
    pub fn is_ready(&self) -> bool {
        self.worker()
            .is_some_and(|worker| worker.phase == WorkerPhase::Ready)
    }
}
