//! `herdsman::Cluster`: one Rust program that is both the primary and its workers, as Node's
//! cluster module makes one script both. In the primary, [`Cluster::run`] runs herdsman's
//! supervisor (the same one as `herdsman run`) with the current binary, re-executed, as the
//! worker command; in a worker it runs the closure given to it on a tokio runtime.
//!
//! ```no_run
//! use herdsman::{Cluster, ClusterEvent};
//!
//! fn main() -> std::process::ExitCode {
//!     Cluster::new()
//!         .workers(4)
//!         .on_event(|primary, event| {
//!             if let ClusterEvent::Message { slot, data, .. } = event {
//!                 primary.send(*slot, serde_json::json!({ "thanks": data }));
//!             }
//!         })
//!         .run(|mut worker| async move {
//!             let listener = worker.listener()?;   // shared port; ready from here on
//!             worker.send(serde_json::json!({ "hello": worker.id() }));
//!             # let _ = listener;
//!             herdsman::worker::shutdown().await;
//!             Ok(())
//!         })
//! }
//! ```

use std::ffi::OsString;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::{Balance, EnvError, Settings, Sticky, WorkerCount};
pub use crate::domain::ClusterEvent;
use crate::domain::{ClusterPhase, ClusterStatus, ScaleTarget};
use crate::ipc::frame::Target;
use crate::primary::{Intent, WorkerAction};
use crate::state::StateMode;
use crate::worker::Worker;

/// Which side of the cluster this process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Primary,
    Worker,
}

/// Whether this process is a worker started by herdsman (`HERDSMAN_WORKER_ID` is set) or the
/// primary; Node's `cluster.isPrimary`.
pub fn role() -> Role {
    if std::env::var_os("HERDSMAN_WORKER_ID").is_some() {
        Role::Worker
    } else {
        Role::Primary
    }
}

mod events;
mod settings;
pub use events::{ClusterEvents, UNREAD_MESSAGES, UNREAD_MESSAGE_BYTES};

/// The primary, as event handlers see it: its workers, messages, reload, scale, stop.
///
/// Every method only asks the supervisor, which acts on it next, in order with everything
/// else it does; none of them waits for the outcome (the events tell it).
#[derive(Debug, Clone)]
pub struct Primary {
    intents: mpsc::UnboundedSender<Intent>,
    phase: watch::Receiver<ClusterPhase>,
}

/// The primary's handle on one worker (Node's `Worker` object in the primary): send it a
/// message, disconnect it, kill it. The cluster keeps its worker count, so a slot whose worker
/// was disconnected or killed gets a new one; [`Primary::scale`] changes the count.
#[derive(Debug, Clone)]
pub struct WorkerHandle {
    primary: Primary,
    slot: usize,
    pid: Option<u32>,
}

fn to_json(data: impl serde::Serialize) -> Value {
    serde_json::to_value(data).unwrap_or(Value::Null)
}

impl WorkerHandle {
    pub fn slot(&self) -> usize {
        self.slot
    }

    /// The process this handle is pinned to; `None` for [`Primary::worker`], which acts on
    /// whichever worker serves the slot at the time.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    fn act(&self, action: WorkerAction) {
        let _ = self.primary.intents.send(Intent::Worker {
            slot: self.slot,
            pid: self.pid,
            action,
        });
    }

    /// Sends `data` to this worker (its [`crate::worker::Worker::messages`]).
    pub fn send(&self, data: impl serde::Serialize) {
        self.act(WorkerAction::Send(to_json(data)));
    }

    /// Stops this worker gracefully: no new connections, the stop signal, killed after the
    /// kill timeout; then a new worker takes the slot. [`Primary::restart`] starts the new
    /// worker first instead, so that the slot never goes without one.
    pub fn disconnect(&self) {
        self.act(WorkerAction::Disconnect);
    }

    /// Kills this worker (SIGKILL) now; a new worker takes the slot at once.
    pub fn kill(&self) {
        self.act(WorkerAction::Kill);
    }
}

impl Primary {
    fn send_to(&self, to: Target, data: Value) {
        let (reply, _) = oneshot::channel();
        let _ = self.intents.send(Intent::Send { to, data, reply });
    }

    /// The cluster's state, as `herdsman status` shows it: every slot with its worker's pid,
    /// generation, phase, uptime, restarts, CPU and memory; `None` once the primary has ended.
    pub async fn status(&self) -> Option<ClusterStatus> {
        let (reply, status) = oneshot::channel();
        self.intents.send(Intent::Status(reply)).ok()?;
        status.await.ok()
    }

    /// A handle on every running worker, by slot, each pinned to its process.
    pub async fn workers(&self) -> Vec<WorkerHandle> {
        let Some(status) = self.status().await else {
            return Vec::new();
        };
        status
            .slots
            .iter()
            .filter_map(|row| {
                Some(WorkerHandle {
                    primary: self.clone(),
                    slot: row.slot,
                    pid: Some(row.worker()?.pid),
                })
            })
            .collect()
    }

    /// A handle on whichever worker serves `slot` when it is used.
    pub fn worker(&self, slot: usize) -> WorkerHandle {
        WorkerHandle {
            primary: self.clone(),
            slot,
            pid: None,
        }
    }

    /// A handle on the worker `event` is about (that process, not a later one in its slot).
    pub fn worker_of(&self, event: &ClusterEvent) -> WorkerHandle {
        WorkerHandle {
            primary: self.clone(),
            slot: event.slot(),
            pid: Some(event.pid()),
        }
    }

    /// Sends `data` to the worker serving `slot`.
    pub fn send(&self, slot: usize, data: impl serde::Serialize) {
        self.send_to(Target::Slot(slot), to_json(data));
    }

    /// Sends `data` to every worker.
    pub fn broadcast(&self, data: impl serde::Serialize) {
        self.send_to(Target::All, to_json(data));
    }

    /// Changes the number of workers to `count` (new slots start, the highest slots retire).
    pub fn scale(&self, count: usize) {
        let _ = self.intents.send(Intent::Scale {
            target: ScaleTarget::To(count),
            progress: None,
        });
    }

    /// Where the cluster is: starting, running, reloading or stopping.
    pub fn phase(&self) -> ClusterPhase {
        *self.phase.borrow()
    }

    /// Waits until the cluster is in `phase` (at once if it is); `false` if the primary ended
    /// first.
    pub async fn wait_for(&self, phase: ClusterPhase) -> bool {
        let mut watching = self.phase.clone();
        let reached = watching.wait_for(|now| *now == phase).await.is_ok();
        reached
    }

    /// Replaces `slot`'s worker gracefully, new before old, so that the slot never goes
    /// without a ready worker (as `herdsman restart NAME SLOT`).
    pub fn restart(&self, slot: usize) {
        let _ = self.intents.send(Intent::Restart {
            slot,
            progress: None,
        });
    }

    /// A rolling reload of every worker.
    pub fn reload(&self) {
        let _ = self.intents.send(Intent::Reload {
            parallel: 1,
            progress: None,
        });
    }

    /// Stops the cluster gracefully; [`Cluster::run`] then returns.
    pub fn stop(&self) {
        let _ = self.intents.send(Intent::Stop { fast: false });
    }
}

type EventHandler = Box<dyn FnMut(&Primary, &ClusterEvent) + Send>;
type PrimaryTask =
    Box<dyn FnOnce(Primary, ClusterEvents) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// How to run the cluster; see the module documentation.
pub struct Cluster {
    /// The builder's layer of `herdsman run`'s settings (`config::Settings`): what is not set
    /// here comes from the same defaults as the CLI's.
    settings: Settings,
    manual_ready: bool,
    worker_threads: Option<usize>,
    on_event: Option<EventHandler>,
    primary_task: Option<PrimaryTask>,
}

impl Default for Cluster {
    fn default() -> Self {
        Cluster::new()
    }
}

impl Cluster {
    /// A worker per CPU (or `$HERDSMAN_WORKERS`) on `$HOST:$PORT` (default `0.0.0.0:8000`).
    pub fn new() -> Cluster {
        Cluster {
            settings: Settings::default(),
            manual_ready: false,
            worker_threads: None,
            on_event: None,
            primary_task: None,
        }
    }

    /// Exactly `count` workers (`$HERDSMAN_WORKERS` still overrides, as for the CLI).
    pub fn workers(mut self, count: usize) -> Self {
        self.settings.workers = Some(WorkerCount::Exactly(count.max(1)));
        self
    }

    /// One worker per CPU.
    pub fn per_core(mut self) -> Self {
        self.settings.workers = Some(WorkerCount::Max);
        self
    }

    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.settings.host = Some(host.into());
        self
    }

    /// The port (`$PORT` overrides; 0 picks a free one, printed on start).
    pub fn port(mut self, port: u16) -> Self {
        self.settings.port = Some(port);
        self
    }

    /// How workers share the port (`$HERDSMAN_BALANCE`, `shared`, `reuseport` or `round-robin`,
    /// overrides; `round-robin` needs Node workers).
    pub fn balance(mut self, balance: Balance) -> Self {
        self.settings.balance = Some(balance);
        self
    }

    /// Whether each client address's connections all reach the same worker while it lives
    /// (`Sticky::Ip`; not with `Balance::Shared`, where the kernel picks).
    pub fn sticky(mut self, sticky: Sticky) -> Self {
        self.settings.sticky = Some(sticky);
        self
    }

    /// How long a new worker may take to be ready.
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.settings.ready_timeout = Some(timeout);
        self
    }

    /// How long a stopping worker may take before it is killed.
    pub fn kill_timeout(mut self, timeout: Duration) -> Self {
        self.settings.kill_timeout = Some(timeout);
        self
    }

    /// A ready worker whose runtime sends no heartbeat for `timeout` is hung, and replaced new
    /// first (`--watchdog`; [`Worker::listener`] starts the heartbeat on the worker's runtime).
    pub fn watchdog(mut self, timeout: Duration) -> Self {
        self.settings.watchdog = Some(timeout);
        self
    }

    /// A worker whose process tree's resident memory is over `bytes` is replaced, new first
    /// (`--max-memory`).
    pub fn max_memory(mut self, bytes: u64) -> Self {
        self.settings.max_memory = Some(bytes.max(1));
        self
    }

    /// A worker that accepted `count` connections, plus a random 0 to `jitter` of its own, is
    /// replaced, new first (`--max-requests`, `--max-requests-jitter`).
    pub fn max_requests(mut self, count: u64, jitter: u64) -> Self {
        self.settings.max_requests = Some(count.max(1));
        self.settings.max_requests_jitter = Some(jitter);
        self
    }

    /// Serves herdsman's admin server on `address` (`--admin`): /metrics for Prometheus,
    /// /health, /ready and /live, the JSON API and the dashboard; port 0 picks a free port,
    /// logged. An address that is not loopback needs [`Cluster::admin_token`].
    pub fn admin(mut self, address: SocketAddr) -> Self {
        self.settings.admin = Some(address);
        self
    }

    /// The token the admin server asks for on all but the health checks (`--admin-token`;
    /// `$HERDSMAN_ADMIN_TOKEN` overrides).
    pub fn admin_token(mut self, token: impl Into<String>) -> Self {
        self.settings.admin_token = Some(token.into());
        self
    }

    /// Also writes each slot's stdout and stderr, and herdsman's own lines, to files in `dir`
    /// (`--log-dir`: `NAME-SLOT.out.log`, `NAME-SLOT.err.log`, `NAME.herdsman.log`, rotated
    /// past 10 MB, 5 kept).
    pub fn log_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.settings.log_dir = Some(dir.into());
        self
    }

    /// Names the cluster for `herdsman status NAME` and the other commands.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.settings.name = Some(name.into());
        self
    }

    /// Where shared state lives (default: the embedded store).
    pub fn state(mut self, state: StateMode) -> Self {
        self.settings.state = Some(state);
        self
    }

    /// Workers call [`Worker::ready`] themselves (after warming up) instead of being ready as
    /// soon as they take the listener.
    pub fn manual_ready(mut self) -> Self {
        self.manual_ready = true;
        self
    }

    /// The threads of each worker's tokio runtime (default: one per CPU). `1` gives each
    /// worker a single-threaded runtime, the shape of a Node, Python or Ruby worker: then the
    /// cluster is what spreads the work over the cores.
    pub fn worker_threads(mut self, threads: usize) -> Self {
        self.worker_threads = Some(threads.max(1));
        self
    }

    /// Called in the primary for every [`ClusterEvent`], with a [`Primary`] handle. It runs on
    /// the primary's single-threaded runtime, beside the supervisor: keep it quick, and
    /// `tokio::spawn` anything that waits (such as [`Primary::workers`]).
    pub fn on_event(
        mut self,
        handler: impl FnMut(&Primary, &ClusterEvent) + Send + 'static,
    ) -> Self {
        self.on_event = Some(Box::new(handler));
        self
    }

    /// Runs `task` in the primary, on the primary's runtime, with a [`Primary`] handle and the
    /// cluster's events as a stream: the async alternative to [`Cluster::on_event`] (both may
    /// be given; each sees every event). Events wait in the stream until read, so read them
    /// (or drop the stream): `message` events beyond [`UNREAD_MESSAGES`] unread (or
    /// [`UNREAD_MESSAGE_BYTES`]) are dropped and counted ([`ClusterEvents::dropped_messages`]);
    /// lifecycle events are always kept. The cluster keeps running when `task` returns; [`Primary::stop`]
    /// stops it.
    ///
    /// ```no_run
    /// # use herdsman::{Cluster, ClusterEvent};
    /// # fn main() -> std::process::ExitCode {
    /// Cluster::new()
    ///     .primary(|primary, mut events| async move {
    ///         while let Some(event) = events.recv().await {
    ///             if let ClusterEvent::Exit { exited_after_disconnect: false, slot, .. } = event {
    ///                 eprintln!("worker {slot} died; {} workers now", primary.workers().await.len());
    ///             }
    ///         }
    ///     })
    ///     .run(|mut worker| async move { Ok(()) })
    /// # }
    /// ```
    pub fn primary<F, Fut>(mut self, task: F) -> Self
    where
        F: FnOnce(Primary, ClusterEvents) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.primary_task = Some(Box::new(move |primary, events| {
            Box::pin(task(primary, events))
        }));
        self
    }

    /// Runs the cluster: in the primary until it is stopped (SIGTERM, Ctrl-C, `herdsman stop`),
    /// in a worker until `worker` returns. This is the library's one wrapper that prints and
    /// picks exit codes: the primary's failure ([`ClusterError`]) is printed as `herdsman:
    /// error: …` with the CLI's exit code ([`crate::exit`]; README, "Exit codes"); a worker whose
    /// closure fails exits 1 after printing the error.
    pub fn run<F, Fut>(self, worker: F) -> ExitCode
    where
        F: FnOnce(Worker) -> Fut,
        Fut: Future<Output = Result<(), Box<dyn std::error::Error + Send + Sync>>>,
    {
        // A worker starts as this program in the role of herdsman's exec shim, which becomes
        // the worker (this program again) with the sockets in place.
        if let Some(code) = crate::shim::exec_if_requested() {
            return ExitCode::from(code as u8);
        }
        match role() {
            Role::Worker => run_worker(self.manual_ready, self.worker_threads, worker),
            Role::Primary => crate::exit::exit_code(self.run_primary()),
        }
    }

    fn run_primary(mut self) -> Result<(), ClusterError> {
        let command: Vec<OsString> = std::iter::once(
            std::env::current_exe()
                .map_err(ClusterError::OwnPath)?
                .into_os_string(),
        )
        .chain(std::env::args_os().skip(1))
        .collect();
        let settings = self.settings(command, |name| std::env::var(name).ok())?;
        let config = match settings.resolve().validate() {
            // The library's workers are ready by its own signal (taking the listener, or
            // `worker.ready()`), not by `--ready notify`, which the CLI explains.
            Ok(config) => crate::config::Config {
                explain_ready_notify: false,
                ..config
            },
            Err(error) => return Err(ClusterError::Config(error)),
        };
        let (mut handler, task) = (self.on_event.take(), self.primary_task.take());
        crate::launch::run_blocking(config, None, |link| {
            if handler.is_none() && task.is_none() {
                return None;
            }
            let primary = Primary {
                intents: link.intents,
                phase: link.phase,
            };
            let (observer, mut events) = mpsc::unbounded_channel();
            let stream = task.map(|task| {
                let (sender, receiver) = events::stream();
                tokio::spawn(task(primary.clone(), receiver));
                sender
            });
            // One dispatcher, so that the callback and the stream see events in the same order.
            tokio::spawn(async move {
                while let Some(event) = events.recv().await {
                    if let Some(handler) = &mut handler {
                        handler(&primary, &event);
                    }
                    if let Some(stream) = &stream {
                        stream.send(event);
                    }
                }
            });
            Some(observer)
        })?;
        Ok(())
    }
}

/// Why [`Cluster::run`] could not run the primary (printed there, with its exit code).
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot find this program's own path: {0}")]
    OwnPath(#[source] std::io::Error),
    /// A `HERDSMAN_*` variable that does not hold a value of its setting.
    #[error(transparent)]
    Env(#[from] EnvError),
    #[error("$PORT is not a port number")]
    Port,
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Run(#[from] crate::launch::RunError),
}

impl crate::exit::Failure for ClusterError {
    fn exit_code(&self) -> u8 {
        match self {
            ClusterError::OwnPath(_) => crate::exit::FAILED,
            ClusterError::Env(_) | ClusterError::Port | ClusterError::Config(_) => {
                crate::exit::USAGE
            }
            ClusterError::Run(error) => error.exit_code(),
        }
    }
}

fn run_worker<F, Fut>(manual_ready: bool, threads: Option<usize>, worker: F) -> ExitCode
where
    F: FnOnce(Worker) -> Fut,
    Fut: Future<Output = Result<(), Box<dyn std::error::Error + Send + Sync>>>,
{
    let mut builder = match threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(threads) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(threads);
            builder
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("worker: cannot start the async runtime: {error}");
            return ExitCode::from(1);
        }
    };
    let handle = Worker::from_env().ready_on_listen(!manual_ready);
    match runtime.block_on(worker(handle)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("worker: {error}");
            ExitCode::from(1)
        }
    }
}
