//! herdsman runs a network server as a cluster of worker processes on one machine: one primary
//! supervises N workers that share the server's listening socket, so the server uses every core,
//! survives crashes, and stops gracefully. It works for any server in any language; see the
//! README for the command line and `docs/` for operations.
//!
//! # Layout
//! - [`cluster`]: the library's [`Cluster`]: one Rust program as primary and workers, with
//!   lifecycle events and messages (Node's cluster module).
//! - [`domain`]: the types both faces share, below them: phases, [`ClusterEvent`], the typed
//!   status, scale targets and outcomes, how a reload goes.
//! - [`config`]: the settings of a cluster, defined once (flags, herdsman.toml, `HERDSMAN_*`,
//!   the [`Cluster`] builder and reload all come from one schema), and their validated
//!   [`Config`].
//! - [`primary`]: the supervisor: slots, the worker lifecycle, restarts, shutdown, signals.
//! - [`balance`]: the listening sockets and how workers share them (`shared`, `reuseport`).
//! - [`ipc`]: the channel between the primary and each worker: JSON lines over a socketpair,
//!   typed frames for both directions, and one channel implementation for both ends.
//! - [`control`]: the control socket: protocol, the primary's server, the CLI's client
//!   (feature `cli`).
//! - [`state`]: the shared-state store, a Redis-protocol database embedded in the primary.
//! - [`worker`]: the worker side of the library: [`Worker`] (slot, listener, readiness, shared
//!   state), its [`worker::Listener`], and a graceful shutdown that serves every connection it
//!   accepted.
//! - [`shim`]: the exec step between fork and the worker command (socket activation variables),
//!   and the worker's keeper, which makes sure nothing the worker starts outlives the primary.
//! - [`exit`]: the exit codes, and the one place a failure is printed and becomes one.
//! - `runtime_dir`: the per-user private directory for the primary's sockets.
//! - `sys`: the few raw syscalls, the only place with `unsafe`.
//! - `fuzzing` (hidden): what the fuzz targets in `fuzz/` run, and its bounded proptest pass.
//!
//! # Features
//! - `cli` (default): what the `herdsman` binary needs besides the library: clap for its flags,
//!   toml for herdsman.toml, and the control client. A [`Cluster`] program can leave it out
//!   (`default-features = false`).
//! - `axum`: [`worker::Listener`] as an `axum::serve::Listener`.

#![deny(unsafe_code)]

pub mod balance;
pub mod cluster;
pub mod config;
pub mod control;
pub mod domain;
pub mod exit;
#[doc(hidden)]
pub mod fuzzing;
pub mod ipc;
pub mod launch;
pub mod primary;
mod runtime_dir;
pub mod shim;
pub mod state;
mod sys;
pub mod worker;

pub use cluster::{role, Cluster, ClusterEvent, ClusterEvents, Primary, Role, WorkerHandle};
pub use config::Config;
pub use worker::Worker;
