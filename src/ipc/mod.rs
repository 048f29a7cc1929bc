//! The IPC channel between the primary and one worker: a Unix socketpair whose worker end is
//! `HERDSMAN_IPC_FD` (and `NODE_CHANNEL_FD` in Node mode), carrying one JSON value per line.
//! The protocol, for any language, is in `docs/protocol.md`.
//!
//! - `line`: the line framing (bytes to JSON values) and why a channel is cut.
//! - `frame`: the typed frames of each direction ([`FromWorker`], [`ToWorker`]) with their one
//!   encoding and decoding, in both dialects.
//! - `channel`: one end of a channel, the same code at both ends ([`PrimaryChannel`],
//!   [`WorkerChannel`]): a writer fed by a queue, a reader that decodes frames, and the bounds
//!   of the primary's end (its inbox).
//!
//! # Where the fd handoff goes
//!
//! Balancing in the primary by fd handoff sends a worker an accepted connection over this
//! channel: a new [`ToWorker`] variant (its place is marked there) whose socket travels as
//! SCM_RIGHTS ancillary data with the frame's line, so the channel's writer and reader become
//! `sendmsg`/`recvmsg` (marked in `channel`). Nothing else changes: the frame types, the
//! dialects and the bounds stay where they are.

pub mod channel;
pub mod frame;
pub mod line;

pub use channel::{PrimaryChannel, WorkerChannel};
pub use frame::{Dialect, FromWorker, Target, ToWorker};

/// Whether workers get a channel (`--ipc`), and in which dialect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum IpcMode {
    /// No channel.
    #[default]
    Off,
    /// herdsman's frames at `HERDSMAN_IPC_FD`.
    On,
    /// Node's `process.send()` / `process.on('message')` at `NODE_CHANNEL_FD`.
    Node,
}

impl IpcMode {
    /// The frames the channel carries; `None` without a channel.
    pub fn dialect(self) -> Option<Dialect> {
        match self {
            IpcMode::Off => None,
            IpcMode::On => Some(Dialect::Herdsman),
            IpcMode::Node => Some(Dialect::Node),
        }
    }
}

/// The fd a worker finds its end of the channel at (after the listening socket, fd 3).
pub const WORKER_FD: i32 = 4;
