//! The IPC channel between the primary and one worker: a Unix socketpair whose worker end is
//! `HERDSMAN_IPC_FD` (and `NODE_CHANNEL_FD` in Node mode), carrying one JSON value per line.
//! The protocol, for any language, is in `docs/protocol.md`.
//!
//! - `frame`: the line framing, the frames herdsman understands, and what a worker receives.

pub mod frame;

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

/// The fd a worker finds its end of the channel at (after the listening socket, fd 3).
pub const WORKER_FD: i32 = 4;
