//! The cluster's domain types, below both of its faces: the supervisor (`primary`) produces
//! them, the library (`cluster`) and the control socket (`control`) hand them out. Nothing here
//! depends on those modules, so neither imports the other for a type.

mod phase;

pub use phase::{ClusterPhase, SlotState, WorkerPhase};
