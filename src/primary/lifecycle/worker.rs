//! A worker as the lifecycle sees it: its identity, what it runs, and where it is in its life.

use std::ffi::OsString;
use std::fmt;
use std::time::Instant;

use crate::balance::Side;
use crate::domain::WorkerPhase;

use super::accepting::Stall;

/// A worker, named for the primary's whole life (pids are reused, these never are).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkerId(pub u64);

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// What a worker runs: a reload moves every slot from one spec to the next.
#[derive(Debug, PartialEq, Eq)]
pub struct LaunchSpec {
    pub generation: u64,
    pub command: Vec<OsString>,
    /// Variables added to the worker's environment (`[env]` in herdsman.toml).
    pub env: Vec<(String, String)>,
}

/// Where a worker is in its life, with what that phase needs to know. The one place that says
/// whether a worker serves, is a replacement, or is on its way out, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Life {
    /// Started, not ready yet; `replaces` names the worker it will replace once ready (reload,
    /// restart), which keeps serving until then.
    Starting { replaces: Option<WorkerId> },
    /// Ready: new connections reach it.
    Ready,
    /// Steered away from since `since`, finishing what is queued on its socket; then asked to
    /// stop for `reason`.
    Retiring { since: Instant, reason: StopReason },
    /// Asked to stop (or killed) for `reason`; waiting for its exit.
    Draining { reason: StopReason },
}

/// Why the primary stopped a worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The cluster is shutting down.
    Shutdown,
    /// It did not become ready within the ready timeout.
    NotReady,
    /// Its replacement is ready (reload, restart).
    Replaced,
    /// It was a replacement, and the reload it belonged to was aborted.
    Aborted,
    /// Its slot was removed (scale down).
    ScaleDown,
    /// The program asked for it to go (`WorkerHandle::disconnect`); the slot is refilled.
    Disconnected,
    /// The program killed it (`WorkerHandle::kill`); the slot is refilled.
    Killed,
    /// It was ready but left connections unaccepted for `--accept-timeout`.
    NotAccepting,
}

impl StopReason {
    /// Whether the worker's exit was asked for, rather than a failure (Node's
    /// `worker.exitedAfterDisconnect`).
    pub fn was_requested(self) -> bool {
        !matches!(self, StopReason::NotReady | StopReason::NotAccepting)
    }

    /// Its name in the admin server's events (`/api/events`).
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Shutdown => "shutdown",
            StopReason::NotReady => "not ready",
            StopReason::Replaced => "replaced",
            StopReason::Aborted => "reload aborted",
            StopReason::ScaleDown => "scaled down",
            StopReason::Disconnected => "disconnected",
            StopReason::Killed => "killed",
            StopReason::NotAccepting => "not accepting",
        }
    }
}

/// One worker process, from the order to start it to its exit.
#[derive(Clone, Debug)]
pub struct WorkerRecord {
    pub id: WorkerId,
    pub slot: usize,
    /// Which of the slot's two sockets it accepts on (see `balance`).
    pub side: Side,
    /// Known once the process runs; 0 until then.
    pub pid: u32,
    pub generation: u64,
    pub life: Life,
    pub started_at: Instant,
    /// When it first said it was ready (`READY=1`, IPC `ready`): it is ready once it has stayed
    /// up `--ready-delay` more.
    pub ready_signal_at: Option<Instant>,
    /// A Node worker: when its server first listened (Node's `listening`).
    pub listening_at: Option<Instant>,
    /// With the proxy: when its private port first accepted the primary's probe. It is ready
    /// only after that, whatever else it says.
    pub accepting_at: Option<Instant>,
    /// When it became ready (the restart policy counts a failure by how long it served).
    pub ready_at: Option<Instant>,
    /// Since when its accept queue has held connections without shrinking (`accepting`).
    pub accept_stall: Stall,
    /// Why it is being replaced while it serves (`limits`), once a replacement started.
    pub replacing: Option<super::ReplaceReason>,
    /// A replacement for a limit failed: not tried again before then.
    pub retry_replace_at: Option<Instant>,
    /// It has sent `WATCHDOG=1` at least once.
    pub heartbeats: bool,
}

impl WorkerRecord {
    /// When it first said it is ready, in words or by listening (Node's `listening`): what a
    /// death soon after makes a start-up failure.
    pub fn signalled_at(&self) -> Option<Instant> {
        [self.ready_signal_at, self.listening_at]
            .into_iter()
            .flatten()
            .min()
    }

    pub fn phase(&self) -> WorkerPhase {
        match self.life {
            Life::Starting { .. } => WorkerPhase::Starting,
            Life::Ready => WorkerPhase::Ready,
            Life::Retiring { .. } => WorkerPhase::Retiring,
            Life::Draining { .. } => WorkerPhase::Draining,
        }
    }

    /// Whether new connections should reach it: ready, and not on its way out.
    pub fn is_serving(&self) -> bool {
        self.life == Life::Ready
    }

    pub fn is_starting(&self) -> bool {
        matches!(self.life, Life::Starting { .. })
    }

    pub fn is_draining(&self) -> bool {
        matches!(self.life, Life::Draining { .. })
    }

    /// While it is a replacement that is not ready yet: the worker it will replace.
    pub fn replaces(&self) -> Option<WorkerId> {
        match self.life {
            Life::Starting { replaces } => replaces,
            _ => None,
        }
    }

    /// Why the primary is stopping it, once it decided to.
    pub fn stop_reason(&self) -> Option<StopReason> {
        match self.life {
            Life::Retiring { reason, .. } | Life::Draining { reason } => Some(reason),
            _ => None,
        }
    }
}
