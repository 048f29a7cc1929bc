//! The primary: binds the listening sockets, starts a worker per slot and supervises them.
//!
//! # Layout
//! - `mod.rs` (this file): [`run`], and what the primary reacts to: [`Event`]s from the tasks
//!   around each worker, [`Intent`]s from signals, the control socket and the library.
//! - `lifecycle`: the pure state machine of workers, slots and the cluster: every decision
//!   (start, ready, restart, reload, scale, stop) as `handle(now, input) -> effects`.
//! - `executor`: performs the lifecycle's effects and feeds it what happens; owns the sockets,
//!   the processes, the timers and the waiting clients.
//! - `timers`: the executor's keyed timers.
//! - `status`: the snapshot `herdsman status` shows.
//! - `ipc`: each worker's IPC channel: frames in, messages routed, `herdsman send`.
//! - `rescue`: connections queued on a socket no worker holds, relayed to ready workers.
//! - `handoff`: `--balance round-robin` and `least-conn`: accepting on the cluster's port and
//!   handing each connection to a worker over its IPC channel; `round_robin`, the balancer
//!   itself (plain state: whose turn, what is unanswered, who holds how many).
//! - `node`: Node's cluster protocol, the primary's side (`queryServer`, `newconn`, …).
//! - `proxied`: `--balance proxy`: private ports, readiness by them, who the proxy relays to.
//! - `port_watch`: foreign sockets on the cluster's port, reported while the cluster runs.
//! - `report`: how exits and failures are described to people.
//! - `process`: one worker process: start (through the exec shim), watch, signal.
//! - `restart`: when a crashed worker comes back (backoff), and how a worker ended.
//! - `notify`: sd_notify, from workers and to the primary's own service manager.
//! - `spawn`: the thread every worker's keeper is forked from, and the reaper of orphans.
//! - `logs`: the primary's messages and the workers' output, line by line.
//! - `log_files`: `--log-dir`, the lines also written to rotated files, on a thread of their own.
//! - `log_hub`: the ring of recent lines and the followers of new ones (`herdsman logs`).
//! - `signals`: operating-system signals mapped to intents.
//!
//! The lifecycle, as a state diagram, is in docs/architecture.md.

mod executor;
mod handoff;
mod ipc;
pub(crate) mod lifecycle;
mod limits;
mod log_files;
mod log_hub;
mod logs;
mod node;
mod notify;
mod port_watch;
mod process;
mod proxied;
mod report;
mod rescue;
mod restart;
mod round_robin;
mod signals;
mod spawn;
mod status;
mod timers;

use std::io;

use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::balance::Listeners;
use crate::config::Config;
use crate::domain::{
    ClusterEvent, ClusterPhase, ClusterStatus, LifecycleEvent, ScaleTarget, Update,
};
use crate::runtime_dir::PrimaryDir;
use executor::Executor;
use lifecycle::WorkerId;
pub use log_files::{FileSink, LogDirError};
pub use log_hub::LogHub;
pub use logs::{start as start_logs, Logger};
use notify::Notice;
use restart::ExitReason;
pub use signals::forward_signals;
#[cfg(feature = "cli")]
pub use spawn::adopt_orphans;
use spawn::Spawner;
pub use status::cpu_time;

/// Something that happened to a worker, reported to the executor by the tasks around it.
/// Workers are named by [`WorkerId`], unique for the primary's life, never by pid (pids are
/// reused).
#[derive(Debug)]
pub enum Event {
    Notified {
        worker: WorkerId,
        notice: Notice,
    },
    Exited {
        worker: WorkerId,
        reason: ExitReason,
        tail: Vec<String>,
    },
    /// A frame on a worker's IPC channel.
    Ipc {
        worker: WorkerId,
        frame: crate::ipc::frame::FromWorker,
    },
    /// A worker's IPC channel ended: closed by the worker, or cut for a bad frame (`reason`).
    IpcClosed {
        worker: WorkerId,
        reason: Option<String>,
    },
}

/// Where progress lines and the result of a long request go.
pub type Progress = mpsc::UnboundedSender<Update>;

/// What the operator asks of the primary, by signal or on the control socket.
#[derive(Debug)]
pub enum Intent {
    /// Stop the cluster: `fast` kills workers at once instead of letting them drain.
    Stop {
        fast: bool,
    },
    /// Replace every worker, `parallel` slots at a time, new before old.
    Reload {
        parallel: usize,
        progress: Option<Progress>,
    },
    /// Replace one slot's worker, new before old.
    Restart {
        slot: usize,
        progress: Option<Progress>,
    },
    /// Change the worker count; the answer says what was done, then, in a result, whether the
    /// new count serves.
    Scale {
        target: ScaleTarget,
        progress: Option<Progress>,
    },
    Status(oneshot::Sender<ClusterStatus>),
    /// Send a message to workers over their IPC channels; the reply is how many got it, and
    /// how many had it dropped (their inbox full).
    Send {
        to: crate::ipc::frame::Target,
        data: serde_json::Value,
        reply: oneshot::Sender<crate::ipc::channel::Delivered>,
    },
    /// Act on one worker: the one with `pid` in `slot`, or the slot's serving worker (the
    /// library's `WorkerHandle`).
    Worker {
        slot: usize,
        pid: Option<u32>,
        action: WorkerAction,
    },
}

/// What the program asks of one worker.
#[derive(Debug)]
pub enum WorkerAction {
    /// A message over its IPC channel.
    Send(serde_json::Value),
    /// Stop it gracefully (steered away from, stop signal, killed after the kill timeout); the
    /// slot gets a new worker once it has exited.
    Disconnect,
    /// SIGKILL now; the slot gets a new worker at once.
    Kill,
}

impl std::fmt::Display for WorkerAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WorkerAction::Send(_) => "send",
            WorkerAction::Disconnect => "disconnect",
            WorkerAction::Kill => "kill",
        })
    }
}

/// Reads the configuration again for `reload` (herdsman.toml plus the original flags).
pub type ConfigReader = Box<dyn Fn() -> Result<Config, crate::config::ConfigError> + Send>;

/// Start-up failed: no worker became ready, or none stayed up; the report says which, why, and
/// what to do.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartupFailed(pub String);

/// Where workers find the shared state, as the supervisor hands it out and reports it.
#[derive(Debug, Clone, Default)]
pub struct SharedState {
    /// `HERDSMAN_STATE_URL` and `REDIS_URL` for workers; none with `--state off`.
    pub url: Option<String>,
    /// The embedded store's figures, when it is embedded.
    pub monitor: Option<crate::state::StoreMonitor>,
    pub tcp: Option<std::net::SocketAddr>,
    /// What the primary says about the store at start, after the listening line.
    pub announcement: Option<String>,
}

/// What the supervisor runs with, besides the configuration: made by `crate::launch`, which
/// binds the sockets and starts the store and the control socket first.
pub struct Setup {
    pub listeners: Listeners,
    pub dir: PrimaryDir,
    /// How `reload` reads the configuration again, when it came from herdsman.toml.
    pub reread: Option<ConfigReader>,
    pub shared_state: SharedState,
    /// Where lifecycle events go (the library's event handler).
    pub observer: Option<mpsc::UnboundedSender<ClusterEvent>>,
    /// Where lifecycle events go for the admin server's stream.
    pub lifecycle: broadcast::Sender<LifecycleEvent>,
    /// Where the cluster's phase is published.
    pub phase: watch::Sender<ClusterPhase>,
    pub logger: Logger,
}

/// Supervises the cluster until a stop intent arrives and every worker has exited, or until
/// start-up fails.
pub async fn supervise(
    config: Config,
    setup: Setup,
    intents: mpsc::UnboundedReceiver<Intent>,
) -> Result<(), SuperviseError> {
    let spawner = Spawner::start(tokio::runtime::Handle::current())?;
    let (executor, events) = Executor::new(
        config,
        executor::Parts {
            listeners: setup.listeners,
            logger: setup.logger,
            spawner,
            dir: setup.dir,
            reread: setup.reread,
            shared_state: setup.shared_state,
            observer: setup.observer,
            lifecycle: setup.lifecycle,
            phase: setup.phase,
        },
    );
    Ok(executor.run(events, intents).await?)
}

/// Why supervision ended other than on request.
#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    #[error(transparent)]
    StartupFailed(#[from] StartupFailed),
    #[error("cannot start the spawner: {0}")]
    Spawner(#[from] io::Error),
}
