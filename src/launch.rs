//! Starting a cluster and running it to the end: binds the address and claims the cluster's
//! name (the control socket) first, so that a taken port or name fails at once; starts the
//! shared-state store, the log writer and the control server; then hands everything to the
//! supervisor (`primary::supervise`) and, once it is done, stops them in order. Both
//! `herdsman run` and [`crate::Cluster::run`] come here; it sits above `primary` and `control`
//! so that neither imports the other's setup.

use std::io;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::admin::{AdminError, AdminServer};
use crate::balance::{BindError, Listeners};
use crate::config::Config;
use crate::control::socket::{ControlError, ControlSocket};
use crate::domain::{ClusterEvent, ClusterPhase};
use crate::exit;
use crate::primary::{
    self, forward_signals, start_logs, ConfigReader, FileSink, Intent, LogDirError, LogHub, Setup,
    SharedState, StartupFailed, SuperviseError,
};
use crate::runtime_dir::PrimaryDir;
use crate::state::{StateError, StateMode, StateStore};

/// Why the primary stopped other than on request.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error(transparent)]
    StartupFailed(#[from] StartupFailed),
    #[error("cannot set up the primary: {0}")]
    Setup(#[source] io::Error),
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] io::Error),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error(transparent)]
    LogDir(#[from] LogDirError),
}

impl RunError {
    /// The exit code this failure ends the primary with.
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::Bind(_) | RunError::Control(ControlError::NameTaken { .. }) => exit::BIND,
            RunError::Control(ControlError::Io { .. }) => exit::FAILED,
            RunError::StartupFailed(_) => exit::NO_WORKER_READY,
            RunError::Setup(_) | RunError::Runtime(_) => exit::FAILED,
            RunError::State(StateError::Listen { .. }) => exit::BIND,
            RunError::State(StateError::File(crate::state::StateFileError::InUse { .. })) => {
                exit::BIND
            }
            RunError::State(StateError::File(_)) => exit::USAGE,
            RunError::State(StateError::Thread(_)) => exit::FAILED,
            RunError::Admin(_) => exit::BIND,
            RunError::LogDir(_) => exit::USAGE,
        }
    }
}

impl exit::Failure for RunError {
    fn exit_code(&self) -> u8 {
        RunError::exit_code(self)
    }
}

/// File descriptors the primary keeps for supervision, whatever the store's clients take: its
/// own files, the control socket and its clients, the log pipes; and per worker its output pipes,
/// IPC channel, notify socket and listening sockets, twice over for the replacement that
/// overlaps it during a reload.
const RESERVED_FDS: u64 = 64;
const RESERVED_FDS_PER_WORKER: u64 = 16;

/// How many clients the embedded store takes at once: `--state-max-clients` (Redis's default,
/// 10000, when not given), lowered when the open-file limit left after the reserve for
/// supervision is smaller, as Redis lowers `maxclients` to fit `ulimit -n`.
struct StoreClientLimit {
    clients: usize,
    /// What was asked, when it was lowered, and the fd limit that lowered it.
    lowered: Option<(usize, u64)>,
}

impl StoreClientLimit {
    fn new(requested: Option<usize>, fd_limit: u64, workers: usize) -> StoreClientLimit {
        let requested = requested.unwrap_or(crate::state::DEFAULT_MAX_CLIENTS);
        let reserved = RESERVED_FDS + RESERVED_FDS_PER_WORKER * workers as u64;
        let room = usize::try_from(fd_limit.saturating_sub(reserved).max(1)).unwrap_or(usize::MAX);
        if requested <= room {
            StoreClientLimit {
                clients: requested,
                lowered: None,
            }
        } else {
            StoreClientLimit {
                clients: room,
                lowered: Some((requested, fd_limit)),
            }
        }
    }

    /// For the store's announcement: the limit, when it is lower than asked.
    fn note(&self) -> String {
        match self.lowered {
            Some((requested, fd_limit)) => format!(
                "; at most {} clients, not {requested}: the open-file limit is {fd_limit} and \
                 {RESERVED_FDS} + {RESERVED_FDS_PER_WORKER} per worker are kept for supervision \
                 (raise the hard limit, e.g. LimitNOFILE= or ulimit -Hn)",
                self.clients
            ),
            None => String::new(),
        }
    }
}

fn describe_store(store: &StateStore, file: Option<&std::path::Path>) -> String {
    let tcp = store
        .tcp_address()
        .map(|address| format!(" and redis://{address}"))
        .unwrap_or_default();
    let persistence = match file {
        Some(path) => {
            let recovered = store.recovered();
            let mut text = format!(
                "file {} ({} keys recovered)",
                path.display(),
                recovered.keys
            );
            if let Some(bytes) = recovered.truncated {
                text.push_str(&format!(
                    "; cut off an incomplete last write of {bytes} bytes"
                ));
            }
            text
        }
        None => "memory only".into(),
    };
    format!(
        "state store on {}{tcp} ({persistence}); workers get $REDIS_URL",
        store.url()
    )
}

/// Lifecycle events a slow `/api/events` follower may fall behind by before it misses some.
const LIFECYCLE_QUEUE: usize = 256;

/// How a program reaches its running primary: where intents go, and the cluster's phase as it
/// changes (the library's `Primary` holds one).
#[derive(Clone, Debug)]
pub struct Link {
    pub intents: mpsc::UnboundedSender<Intent>,
    pub phase: watch::Receiver<ClusterPhase>,
}

/// Runs the primary to the end on a single-threaded runtime of its own, with the operating
/// system's signals mapped to intents. Both `herdsman run` and [`crate::Cluster::run`] end
/// here (and print the failure with [`crate::exit::exit_code`]). `observe`, given the [`Link`]
/// to the primary (inside the runtime), may return where lifecycle events should go.
pub fn run_blocking(
    config: Config,
    reread: Option<ConfigReader>,
    observe: impl FnOnce(Link) -> Option<mpsc::UnboundedSender<ClusterEvent>>,
) -> Result<(), RunError> {
    // One thread is plenty: the primary never touches the data path in these balance modes.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(RunError::Runtime)?;
    runtime.block_on(async {
        let (intents, intents_rx) = mpsc::unbounded_channel();
        let _signals = forward_signals(intents.clone()).map_err(RunError::Setup)?;
        let (phase, phase_rx) = watch::channel(ClusterPhase::Starting);
        let observer = observe(Link {
            intents: intents.clone(),
            phase: phase_rx,
        });
        let wiring = Wiring {
            intents_rx,
            intents,
            reread,
            observer,
            phase,
        };
        // The cluster runs as a task, not as `block_on`'s own future: a task that another task
        // wakes (a worker's channel handing over a frame, once per handed connection) runs in
        // the same turn of the scheduler, where waking `block_on`'s future first costs a poll of
        // the reactor (tokio's current-thread `park_yield`, an `epoll_wait` per wake-up;
        // bench/RESULTS.md, "the handoff's system calls").
        match tokio::spawn(run(config, wiring)).await {
            Ok(outcome) => outcome,
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(error) => Err(RunError::Runtime(io::Error::other(error))),
        }
    })
}

/// What connects the primary to the program around it.
struct Wiring {
    intents_rx: mpsc::UnboundedReceiver<Intent>,
    intents: mpsc::UnboundedSender<Intent>,
    /// How `reload` reads the configuration again, when it came from herdsman.toml.
    reread: Option<ConfigReader>,
    /// Where lifecycle events go (the library's event handler).
    observer: Option<mpsc::UnboundedSender<ClusterEvent>>,
    phase: watch::Sender<ClusterPhase>,
}

/// Runs the cluster described by `config` until a stop intent arrives and every worker has
/// exited, or until start-up fails. The address and the control socket are bound first, so a
/// taken port or name fails at once.
async fn run(config: Config, wiring: Wiring) -> Result<(), RunError> {
    let Wiring {
        intents_rx,
        intents,
        reread,
        observer,
        phase,
    } = wiring;
    let fd_limit = crate::sys::raise_fd_limit().map_err(RunError::Setup)?;
    let mut listeners = Listeners::bind(config.address, config.balance, config.workers)?;
    listeners.set_sticky(config.sticky == crate::config::Sticky::Ip);
    let (control, name) = ControlSocket::bind(&config.name, config.name_is_explicit)?;
    let admin = config
        .admin
        .map(|address| AdminServer::bind(address, config.admin_token.clone()))
        .transpose()?;
    let config = Config { name, ..config };
    let files = match &config.log_files.dir {
        Some(dir) => Some(FileSink::open(
            dir,
            &config.log_files,
            &config.name,
            config.log_format,
        )?),
        None => None,
    };
    let dir = PrimaryDir::create().map_err(RunError::Setup)?;
    let client_limit = StoreClientLimit::new(config.store.max_clients, fd_limit, config.workers);
    let store = match config.state {
        StateMode::Embedded => Some(StateStore::start(
            &dir.path().join("state.sock"),
            &crate::state::StoreOptions {
                max_clients: Some(client_limit.clients),
                ..config.store.clone()
            },
        )?),
        _ => None,
    };
    let shared_state = SharedState {
        url: match (&config.state, &store) {
            (StateMode::External(url), _) => Some(url.clone()),
            (_, Some(store)) => Some(store.url()),
            _ => None,
        },
        monitor: store.as_ref().map(StateStore::monitor),
        tcp: store.as_ref().and_then(StateStore::tcp_address),
        announcement: store.as_ref().map(|store| {
            describe_store(store, config.store.file.as_deref()) + &client_limit.note()
        }),
    };
    let hub = Arc::new(LogHub::new());
    let (logger, writer) = start_logs(config.log_format, hub.clone(), files);
    let shutdown = CancellationToken::new();
    // Lifecycle events for the admin server's followers (`/api/events`); none kept for later.
    let (lifecycle, _) = tokio::sync::broadcast::channel(LIFECYCLE_QUEUE);
    let admin_task = match admin {
        Some(admin) => {
            if let Ok(address) = admin.local_addr() {
                logger.info(format!(
                    "admin server on http://{address}/ (metrics at /metrics, dashboard at /)"
                ));
            }
            Some(admin.serve(
                intents.clone(),
                hub.clone(),
                lifecycle.clone(),
                shutdown.clone(),
            ))
        }
        None => None,
    };
    let control_task = control.serve(intents, hub, shutdown.clone());
    let setup = Setup {
        listeners,
        dir,
        reread,
        shared_state,
        observer,
        lifecycle,
        phase,
        logger: logger.clone(),
    };
    let result = primary::supervise(config, setup, intents_rx).await;
    // The workers are gone: nothing writes any more; flush and sync the state file.
    if let Some(store) = store {
        if let Err(error) = store.stop() {
            logger.error(format!("state store: stopping: {error}"));
        }
    }
    shutdown.cancel();
    let _ = control_task.await;
    if let Some(admin_task) = admin_task {
        let _ = admin_task.await;
    }
    // The writer finishes once every logger is gone.
    drop(logger);
    writer.finish().await;
    match result {
        Ok(()) => Ok(()),
        Err(SuperviseError::StartupFailed(failed)) => Err(failed.into()),
        Err(SuperviseError::Spawner(error)) => Err(RunError::Setup(error)),
    }
}
