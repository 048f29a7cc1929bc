//! The cluster's domain types, below both of its faces: the supervisor (`primary`) produces
//! them, the library (`cluster`) and the control socket (`control`) hand them out. Nothing here
//! depends on those modules, so neither imports the other for a type.
//!
//! - `phase`: where a worker, a slot and the cluster are in their lives.
//! - `event`: [`ClusterEvent`], what happens to workers, for the library's handlers;
//!   [`LifecycleEvent`], the same and the reloads and scales, for the admin server's stream.
//! - `exit`: [`ExitReason`], how a worker process ended.
//! - `status`: [`ClusterStatus`], the typed snapshot `status` shows.
//! - `scale`: [`ScaleTarget`], what a scale asks; [`Scaled`] and [`ScaleError`], its outcome.
//! - `log`: [`LogEntry`], a line of the primary's log.
//! - `progress`: [`Update`], how a reload or restart goes, for whoever asked.

mod event;
mod exit;
mod log;
mod phase;
mod progress;
mod scale;
mod status;

pub use event::{ClusterEvent, LifecycleEvent, ReloadChange, WorkerChange};
pub use exit::ExitReason;
pub use log::LogEntry;
pub use phase::{ClusterPhase, SlotState, WorkerPhase};
pub use progress::Update;
pub use scale::{ScaleError, ScaleTarget, Scaled};
pub use status::{
    ClusterStatus, ForeignListener, LastExit, LastReplacement, Occupant, SlotStatus, StateStatus,
    WorkerStatus,
};
