//! The IPC channel between the primary and one worker: a Unix socketpair whose worker end is
//! `HERDSMAN_IPC_FD` (and `NODE_CHANNEL_FD` in Node mode), carrying one JSON value per line.
//! The protocol, for any language, is in `docs/protocol.md`.
//!
//! - `line`: the line framing (bytes to JSON values) and why a channel is cut.
//! - `frame`: the typed frames of each direction ([`FromWorker`], [`ToWorker`]) with their one
//!   encoding and decoding, in both dialects.
//! - `node`: Node's own messages in Node's dialect (`{"cmd":"NODE_…"}`): the cluster messages
//!   a worker's `net.Server.listen()` sends ([`NodeCluster`]), the primary's replies, and the
//!   handle frame a socket rides with.
//! - `handoff`: herdsman's frames for handed connections (`connection`, `accepted`,
//!   `refused`, `closed`, ping and pong), written and read without a JSON tree.
//! - `channel`: one end of a channel, the same code at both ends ([`PrimaryChannel`],
//!   [`WorkerChannel`]): a writer fed by a queue, a reader that decodes frames, and the bounds
//!   of the primary's end (its inbox).
//!
//! # Handles
//!
//! In Node's dialect a socket goes to a worker over this channel as Node's handle frame, its fd
//! SCM_RIGHTS ancillary data on the `sendmsg` of the frame's line (`channel`'s module doc, and
//! `node` for the frames). In herdsman's dialect a handed connection is `handoff`'s frame, its fd
//! attached the same way; the worker's reader `recvmsg`s and pairs each fd with its frame.

pub mod channel;
pub mod frame;
pub mod handoff;
pub mod line;
pub mod node;

pub use channel::{PrimaryChannel, WorkerChannel};
pub use frame::{Dialect, FromWorker, Target, ToWorker};

/// Whether workers get a channel, and in which dialect (`--ipc`, resolved).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum IpcMode {
    /// No channel.
    #[default]
    Off,
    /// herdsman's frames at `HERDSMAN_IPC_FD`.
    On,
    /// Node's `process.send()` / `process.on('message')` at `NODE_CHANNEL_FD`.
    Node,
}

/// `--ipc` as given: a mode, or `auto`, the default: Node's dialect for a `node` command (so a
/// Node app speaks Node's cluster protocol, see `primary::node`), no channel for any other.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum IpcSetting {
    /// `node` for a Node command, `off` for any other.
    #[default]
    Auto,
    /// No channel.
    Off,
    /// herdsman's frames at `HERDSMAN_IPC_FD`.
    On,
    /// Node's `process.send()` / `process.on('message')` and cluster protocol at
    /// `NODE_CHANNEL_FD`.
    Node,
}

impl IpcSetting {
    /// The mode for a command that runs Node (`node`) or not.
    pub fn resolve(self, node: bool) -> IpcMode {
        match self {
            IpcSetting::Auto if node => IpcMode::Node,
            IpcSetting::Auto | IpcSetting::Off => IpcMode::Off,
            IpcSetting::On => IpcMode::On,
            IpcSetting::Node => IpcMode::Node,
        }
    }
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
