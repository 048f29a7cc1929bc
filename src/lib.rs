//! herdsman runs a network server as a cluster of worker processes on one machine: one primary
//! supervises N workers that share the server's listening socket, so the server uses every core,
//! survives crashes, and stops gracefully. It works for any server in any language; see the
//! README for the command line and `docs/` for operations.
//!
//! # Public API
//! A program that runs itself as a cluster needs [`Cluster`] (the builder, and [`Cluster::run`]),
//! [`Primary`] and [`WorkerHandle`] (the primary's view, from event handlers), [`ClusterEvent`]
//! and [`ClusterEvents`], the typed status ([`ClusterStatus`] and its rows), the phases, the
//! settings a builder takes ([`Balance`], [`StateMode`]), [`Worker`] and the [`worker`] module
//! (listener, graceful shutdown, shared state), the errors, and the exit codes ([`exit`]).
//! Everything else is private to the crate.
//!
//! # Layout (private modules)
//! - `cluster`: the library's [`Cluster`]: one Rust program as primary and workers, with
//!   lifecycle events and messages (Node's cluster module).
//! - `domain`: the types both faces share, below them: phases, [`ClusterEvent`], the typed
//!   status, scale targets and outcomes, how a reload goes.
//! - `config`: the settings of a cluster, defined once (flags, herdsman.toml, `HERDSMAN_*`,
//!   the [`Cluster`] builder and reload all come from one schema), and their validated `Config`.
//! - `launch`: starting a cluster and running it to the end, above `primary` and `control`.
//! - `primary`: the supervisor: the lifecycle machine and the executor that performs it.
//! - `balance`: the listening sockets and how workers share them (`shared`, `reuseport`).
//! - `proxy`: `--balance proxy`: the primary relays each connection to a worker's private
//!   loopback `$PORT`, on threads of its own, with one retry of an idempotent HTTP request.
//! - `ipc`: the channel between the primary and each worker: JSON lines over a socketpair,
//!   typed frames for both directions, and one channel implementation for both ends.
//! - `control`: the control socket: protocol, the primary's server, the CLI's client
//!   (feature `cli`).
//! - `state`: the shared-state store, a Redis-protocol database embedded in the primary.
//! - [`worker`]: the worker side of the library: [`Worker`] (slot, listener, readiness, shared
//!   state), its [`worker::Listener`], and a graceful shutdown that serves every connection it
//!   accepted.
//! - `shim`: the exec step between fork and the worker command (socket activation variables),
//!   and the worker's keeper, which makes sure nothing the worker starts outlives the primary.
//! - [`exit`]: the exit codes, and the one place a failure is printed and becomes one.
//! - `cli` (hidden, feature `cli`): the `herdsman` command line, which `src/main.rs` calls.
//! - `runtime_dir`: the per-user private directory for the primary's sockets.
//! - `sys`: the raw syscalls without a safe wrapper; its doc lists them and the one other
//!   place with `unsafe`.
//! - `fuzzing` (hidden): what the fuzz targets in `fuzz/` run, and its bounded proptest pass.
//!
//! # Features
//! - `cli` (default): what the `herdsman` binary needs besides the library: clap for its flags,
//!   toml for herdsman.toml, and the control client. A [`Cluster`] program can leave it out
//!   (`default-features = false`).
//! - `axum`: [`worker::Listener`] as an `axum::serve::Listener`.

#![deny(unsafe_code)]

pub(crate) mod admin;
pub(crate) mod balance;
#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod cli;
pub(crate) mod cluster;
pub(crate) mod config;
pub(crate) mod control;
pub(crate) mod domain;
pub mod exit;
#[doc(hidden)]
pub mod fuzzing;
pub(crate) mod ipc;
pub(crate) mod launch;
pub(crate) mod primary;
pub(crate) mod proxy;
mod runtime_dir;
pub(crate) mod shim;
/// Hidden: what the integration tests use of the store (its inline-command splitter), and the
/// [`StateMode`] re-exported at the root.
#[doc(hidden)]
pub mod state;
mod sys;
pub mod worker;

pub use balance::BindError;
pub use cluster::{
    role, Cluster, ClusterError, ClusterEvents, Primary, Role, WorkerHandle, UNREAD_MESSAGES,
    UNREAD_MESSAGE_BYTES,
};
pub use config::{Balance, ConfigError, EnvError, Sticky};
pub use control::socket::ControlError;
pub use domain::{
    ClusterEvent, ClusterPhase, ClusterStatus, ExitReason, ForeignListener, LastExit, Occupant,
    SlotState, SlotStatus, StateStatus, WorkerPhase, WorkerStatus,
};
pub use launch::RunError;
pub use primary::StartupFailed;
pub use state::{StateError, StateFileError, StateMode, StoreFigures};
pub use worker::Worker;
