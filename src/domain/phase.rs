//! Where a worker, a slot and the cluster are in their lives (the supervisor's lifecycle, see
//! `primary::lifecycle` and docs/architecture.md for the state diagram).

use std::fmt;

/// A worker process, from its start to its exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WorkerPhase {
    /// Started; not ready yet (its readiness signal, or the ready delay, is awaited).
    Starting,
    /// Ready: new connections reach it.
    Ready,
    /// Steered away from, finishing the connections already queued on its socket before it is
    /// asked to stop (replaced by a reload, its slot scaled away, disconnected).
    Retiring,
    /// Asked to stop (stop signal sent, killed after the kill timeout); waiting for its exit.
    Draining,
}

/// A slot: the place a worker holds, across the workers that hold it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SlotState {
    /// Its worker is starting or serving.
    Serving,
    /// A replacement (reload, restart) is starting beside the worker it will replace.
    Replacing,
    /// Its worker died; the next one starts after the restart delay.
    Backoff,
    /// Crash-looping: it failed too many times in a row; it keeps retrying, with backoff.
    Errored,
}

/// The cluster as a whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClusterPhase {
    /// Until every slot has had a ready worker or is crash-looping.
    Starting,
    Running,
    /// A reload or a single-slot restart is replacing workers.
    Reloading,
    /// Stopping: no worker starts any more; the primary ends once every worker has exited.
    Stopping,
}

impl WorkerPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerPhase::Starting => "starting",
            WorkerPhase::Ready => "ready",
            WorkerPhase::Retiring => "retiring",
            WorkerPhase::Draining => "draining",
        }
    }
}

impl SlotState {
    pub fn as_str(self) -> &'static str {
        match self {
            SlotState::Serving => "serving",
            SlotState::Replacing => "replacing",
            SlotState::Backoff => "backoff",
            SlotState::Errored => "errored",
        }
    }
}

impl ClusterPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            ClusterPhase::Starting => "starting",
            ClusterPhase::Running => "running",
            ClusterPhase::Reloading => "reloading",
            ClusterPhase::Stopping => "stopping",
        }
    }
}

macro_rules! display_as_str {
    ($($name:ty),*) => {$(
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    )*};
}

display_as_str!(WorkerPhase, SlotState, ClusterPhase);
