//! A slot: the place a worker holds, and what it remembers across the workers that held it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::balance::Side;

use super::worker::{LaunchSpec, StopReason};
use super::ExitReason;

#[derive(Clone, Debug)]
pub struct Slot {
    /// What this slot's workers run; a reload moves slots to the new spec one by one.
    pub spec: Arc<LaunchSpec>,
    /// Failures in a row; reset by the death of a worker that was ready for the healthy uptime.
    /// At [`super::RestartPolicy::errored_after`] the slot is `errored` (crash-looping).
    pub failures: u32,
    pub restarts: u32,
    pub last_exit: Option<LastExit>,
    /// The socket side the slot's serving worker uses; a replacement takes the other one.
    pub side: Side,
    /// In backoff: the slot is empty and its next worker is due then.
    pub respawn_at: Option<Instant>,
    /// The last worker replaced for a reason (`limits`), and how many were, by kind.
    pub last_replacement: Option<super::Replacement>,
    pub replacements: BTreeMap<&'static str, u32>,
    /// Restarts after failures, by the kind of the exit ([`LastExit::kind`]).
    pub restart_reasons: BTreeMap<&'static str, u32>,
}

impl Slot {
    pub fn new(spec: Arc<LaunchSpec>) -> Self {
        Slot {
            spec,
            failures: 0,
            restarts: 0,
            last_exit: None,
            side: Side::default(),
            respawn_at: None,
            last_replacement: None,
            replacements: BTreeMap::new(),
            restart_reasons: BTreeMap::new(),
        }
    }
}

/// How a slot's last worker that failed ended.
#[derive(Clone, Debug)]
pub struct LastExit {
    pub pid: u32,
    pub reason: ExitReason,
    pub uptime: Duration,
    pub at: SystemTime,
    pub tail: Vec<String>,
    /// How long the worker had been ready when it ended; `None` if it never was.
    pub ready_for: Option<Duration>,
    /// A worker that said it was ready but ended before that counted: how long after saying it.
    pub said_ready_before: Option<Duration>,
    pub stop_reason: Option<StopReason>,
}

impl LastExit {
    /// What kind of failure it was, for counting restarts by reason: stopped by herdsman for
    /// `ready-timeout` or `not-accepting`, or ended by itself: `exited` (code 0), `crashed`
    /// (another code), `killed` (a signal), `unknown`.
    pub fn kind(&self) -> &'static str {
        match (self.stop_reason, self.reason) {
            (Some(StopReason::NotReady), _) => "ready-timeout",
            (Some(StopReason::NotAccepting), _) => "not-accepting",
            (_, ExitReason::Code(0)) => "exited",
            (_, ExitReason::Code(_)) => "crashed",
            (_, ExitReason::Signal(_)) => "killed",
            (_, ExitReason::Unknown) => "unknown",
        }
    }
}
