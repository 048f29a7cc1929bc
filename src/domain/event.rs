//! What happens to workers, as the library's event handlers and stream see it.

use serde_json::Value;

/// What happens to workers, named as in Node's cluster module, in this order for each worker:
/// `Fork` → `Online` → `Listening` → (`Message`…) → `Disconnect` → `Exit`. A worker that dies
/// unasked goes from any point straight to `Exit`.
#[derive(Debug, Clone, PartialEq)]
pub enum ClusterEvent {
    /// The worker process was started.
    Fork { slot: usize, pid: u32 },
    /// The worker runs (it said it is ready).
    Online { slot: usize, pid: u32 },
    /// The worker serves the shared port and gets connections.
    Listening { slot: usize, pid: u32 },
    /// The worker sent the primary a message.
    Message { slot: usize, pid: u32, data: Value },
    /// The primary asked the worker to stop (shutdown, reload, scale down).
    Disconnect { slot: usize, pid: u32 },
    /// The worker exited: its exit code, or the signal that ended it.
    Exit {
        slot: usize,
        pid: u32,
        code: Option<i32>,
        signal: Option<i32>,
        /// Whether the primary had asked it to go (stop, reload, scale, disconnect, kill)
        /// rather than it dying on its own (Node's `worker.exitedAfterDisconnect`).
        exited_after_disconnect: bool,
    },
}

impl ClusterEvent {
    /// The slot of the worker the event is about.
    pub fn slot(&self) -> usize {
        match self {
            ClusterEvent::Fork { slot, .. }
            | ClusterEvent::Online { slot, .. }
            | ClusterEvent::Listening { slot, .. }
            | ClusterEvent::Message { slot, .. }
            | ClusterEvent::Disconnect { slot, .. }
            | ClusterEvent::Exit { slot, .. } => *slot,
        }
    }

    /// The pid of the worker the event is about.
    pub fn pid(&self) -> u32 {
        match self {
            ClusterEvent::Fork { pid, .. }
            | ClusterEvent::Online { pid, .. }
            | ClusterEvent::Listening { pid, .. }
            | ClusterEvent::Message { pid, .. }
            | ClusterEvent::Disconnect { pid, .. }
            | ClusterEvent::Exit { pid, .. } => *pid,
        }
    }

    /// Node's name for the event: `fork`, `online`, `listening`, `message`, `disconnect`, `exit`.
    pub fn name(&self) -> &'static str {
        match self {
            ClusterEvent::Fork { .. } => "fork",
            ClusterEvent::Online { .. } => "online",
            ClusterEvent::Listening { .. } => "listening",
            ClusterEvent::Message { .. } => "message",
            ClusterEvent::Disconnect { .. } => "disconnect",
            ClusterEvent::Exit { .. } => "exit",
        }
    }
}

/// A change in the cluster's life as the admin server streams it (`/api/events`): the workers'
/// starts, readiness and exits (with why), the reloads and restarts, and the scales.
#[derive(Debug, Clone, PartialEq)]
pub enum LifecycleEvent {
    Worker {
        slot: usize,
        pid: u32,
        generation: u64,
        change: WorkerChange,
    },
    /// A reload of the cluster, or a restart of one slot (`slot`).
    Reload {
        slot: Option<usize>,
        generation: u64,
        change: ReloadChange,
        /// What the log says of it (the reason of an abort).
        message: String,
    },
    /// The worker count changed.
    Scale { from: usize, to: usize },
}

/// What happened to a worker.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerChange {
    /// Its process was started.
    Spawned,
    /// It counts as ready: it gets connections.
    Ready,
    /// It exited: its code or the signal that ended it, and why it went.
    Exited {
        code: Option<i32>,
        signal: Option<i32>,
        /// Why it was asked to go (`replaced`, `shutdown`, …), or `died` when it was not.
        reason: &'static str,
        /// How it ended, for people: `was killed by SIGKILL`, `exited with code 1`.
        description: String,
    },
}

/// How far a reload or restart is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadChange {
    Started,
    Completed,
    Aborted,
}
