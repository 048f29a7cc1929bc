//! The shared-state store: a small in-memory database inside the primary that speaks the Redis
//! protocol (RESP2 and RESP3), so workers in any language share counters, sessions, caches, queues and
//! pub/sub through an ordinary Redis client. `--state redis://…` hands workers a real Redis
//! instead; the workers' code does not change.
//!
//! # Layout
//! - `mod.rs` (this file): `StateStore`, started by the primary, and its options.
//! - `event_loop`: the store's own thread and runtime: listeners, clients, the expiry timer.
//! - `connection`: one client: read, run, reply; deliver published messages.
//! - `request`: requests off the wire (RESP arrays and inline commands), with Redis's limits.
//! - `reply`: replies onto the wire (through redis-protocol's encoder).
//! - `commands`: the command table and each command, replying as Redis 7.0 does.
//! - `store`: the state the commands work on: sixteen databases, pub/sub, watched keys, each
//!   client's own state.
//! - `clients`: what `CLIENT LIST` shows of each connection; `stats`: INFO's counters.
//! - `db`: the keyspace: values, millisecond expiry, memory estimate, `SCAN`; `compact`: the
//!   24-byte string its keys, string values and sorted-set members are stored in.
//! - `zset`, `stream`: the sorted set's skip list and the stream's entries by ID.
//! - `append_only`: `--state-file`, the log of writes, replayed and compacted at start.
//! - `notify`: keyspace notifications (`notify-keyspace-events`).
//! - `glob`, `number`: Redis's patterns and Redis's number formats.
//! - `fuzzing`: requests through parser and commands without a socket, for `crate::fuzzing`.
//!
//! The store runs on its own thread, one command at a time, like Redis: every command and every
//! `MULTI`/`EXEC` is atomic without locks.

mod append_only;
mod blocking;
mod clients;
mod commands;
mod compact;
mod connection;
mod db;
mod event_loop;
pub(crate) mod fuzzing;
mod glob;
mod notify;
mod number;
mod reply;
mod request;
mod stats;
mod store;
mod stream;
mod zset;

use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;

use tokio::sync::oneshot;

pub use append_only::StateFileError;
pub use request::split_args;

/// Where workers' shared state lives.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StateMode {
    /// The store embedded in the primary (the default).
    #[default]
    Embedded,
    /// A Redis server elsewhere: workers get this URL, nothing is embedded.
    External(String),
    /// No store, and no URL for workers.
    Off,
}

impl std::fmt::Display for StateMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StateMode::Embedded => f.write_str("embedded"),
            StateMode::External(url) => f.write_str(url),
            StateMode::Off => f.write_str("off"),
        }
    }
}

/// How the embedded store runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct StoreOptions {
    /// A loopback TCP address to listen on besides the Unix socket.
    pub listen: Option<SocketAddr>,
    /// The append-only file; memory only without it.
    pub file: Option<PathBuf>,
    /// Past this many bytes (estimated), writes that grow memory are refused.
    pub max_memory: Option<u64>,
    /// Most clients at once (Redis's `maxclients`); [`DEFAULT_MAX_CLIENTS`] when not given.
    /// The primary lowers it to what its file-descriptor limit allows.
    pub max_clients: Option<usize>,
}

/// Redis's default `maxclients`.
pub(crate) const DEFAULT_MAX_CLIENTS: usize = 10_000;

/// Why the store could not start.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot listen on {what}: {source}")]
    Listen {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("state file: {0}")]
    File(#[from] append_only::StateFileError),
    #[error("cannot start the state store: {0}")]
    Thread(#[source] io::Error),
}

/// What the store found in its file at start.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Recovered {
    /// Keys after replay and compaction.
    pub keys: u64,
    /// Bytes of an incomplete last write cut off the end of the file.
    pub truncated: Option<u64>,
}

/// Figures for `herdsman status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreFigures {
    pub keys: u64,
    pub used_memory: u64,
    pub clients: u64,
    /// Commands run since the store started (Redis's `total_commands_processed`).
    pub commands: u64,
}

/// A handle on the running store's figures, for the supervisor's status.
#[derive(Debug, Clone)]
pub(crate) struct StoreMonitor(Arc<event_loop::LiveFigures>);

impl StoreMonitor {
    pub fn figures(&self) -> StoreFigures {
        StoreFigures {
            keys: self.0.keys.load(Ordering::Relaxed),
            used_memory: self.0.used_memory.load(Ordering::Relaxed),
            clients: self.0.clients.load(Ordering::Relaxed),
            commands: self.0.commands.load(Ordering::Relaxed),
        }
    }
}

/// The running embedded store. Stopping it (or dropping it) flushes its file.
#[derive(Debug)]
pub(crate) struct StateStore {
    socket: PathBuf,
    tcp: Option<SocketAddr>,
    recovered: Recovered,
    figures: Arc<event_loop::LiveFigures>,
    stop: Option<oneshot::Sender<()>>,
    /// Read by a running script's hook: the stop must not wait for a script to end.
    stopping: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<io::Result<()>>>,
}

impl StateStore {
    /// Listens on the Unix socket `socket` (mode 0600) and `options.listen`, replays the file,
    /// and serves on a thread of its own. Returns once it is serving, or why it cannot.
    pub fn start(socket: &Path, options: &StoreOptions) -> Result<StateStore, StateError> {
        let _ = std::fs::remove_file(socket);
        let unix = std::os::unix::net::UnixListener::bind(socket).map_err(|source| {
            StateError::Listen {
                what: socket.display().to_string(),
                source,
            }
        })?;
        std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
            .map_err(StateError::Thread)?;
        unix.set_nonblocking(true).map_err(StateError::Thread)?;
        let tcp = match options.listen {
            Some(address) => {
                let listener =
                    std::net::TcpListener::bind(address).map_err(|source| StateError::Listen {
                        what: address.to_string(),
                        source,
                    })?;
                listener.set_nonblocking(true).map_err(StateError::Thread)?;
                Some(listener)
            }
            None => None,
        };
        let tcp_address = tcp
            .as_ref()
            .map(|listener| listener.local_addr())
            .transpose()
            .map_err(StateError::Thread)?;
        let max_memory = options.max_memory.map(|max| max as usize);
        let limits = connection::Limits {
            max_bulk: max_memory.map_or(request::MAX_BULK, |max| max.max(1024 * 1024)),
            max_pending: max_memory.map_or(request::MAX_BULK, |max| {
                max.clamp(1024 * 1024, request::MAX_BULK)
            }),
            max_clients: options.max_clients.unwrap_or(DEFAULT_MAX_CLIENTS),
        };
        let figures = Arc::new(event_loop::LiveFigures::default());
        let (stop, stopped) = oneshot::channel();
        let (started, start_result) = mpsc::channel();
        let file = options.file.clone();
        let thread_figures = figures.clone();
        let stopping = Arc::new(AtomicBool::new(false));
        let thread_stopping = stopping.clone();
        let thread = thread::Builder::new()
            .name("herdsman-state".into())
            .spawn(move || {
                let mut store = store::Store::new(max_memory);
                store.scripting.abandon_when(thread_stopping);
                if let Some(path) = file {
                    match append_only::AppendOnly::open(&path, &mut store) {
                        Ok((file, loaded)) => {
                            store.append_only = Some(file);
                            store.log = Some(Vec::new());
                            let _ = started.send(Ok(Recovered {
                                keys: store.total_keys() as u64,
                                truncated: loaded.truncated,
                            }));
                        }
                        Err(reason) => {
                            let _ = started.send(Err(reason));
                            return Ok(());
                        }
                    }
                } else {
                    let _ = started.send(Ok(Recovered::default()));
                }
                let listening = event_loop::Listening { unix, tcp };
                event_loop::run(store, listening, limits, thread_figures, stopped)
            })
            .map_err(StateError::Thread)?;
        let recovered = match start_result.recv() {
            Ok(Ok(recovered)) => recovered,
            Ok(Err(reason)) => {
                let _ = thread.join();
                return Err(StateError::File(reason));
            }
            Err(_) => {
                let outcome = thread.join();
                return Err(StateError::Thread(io::Error::other(format!(
                    "the store thread ended at start: {outcome:?}"
                ))));
            }
        };
        Ok(StateStore {
            socket: socket.to_path_buf(),
            tcp: tcp_address,
            recovered,
            figures,
            stop: Some(stop),
            stopping,
            thread: Some(thread),
        })
    }

    /// The URL workers get: the Unix socket.
    pub fn url(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// The TCP address, when `--state-listen` asked for one (with the port chosen if it was 0).
    pub fn tcp_address(&self) -> Option<SocketAddr> {
        self.tcp
    }

    pub fn recovered(&self) -> Recovered {
        self.recovered
    }

    pub fn monitor(&self) -> StoreMonitor {
        StoreMonitor(self.figures.clone())
    }

    /// Stops serving, writes what is pending to the file and syncs it.
    pub fn stop(mut self) -> io::Result<()> {
        self.shut_down()
    }

    fn shut_down(&mut self) -> io::Result<()> {
        self.stopping.store(true, Ordering::Relaxed);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let result = match self.thread.take() {
            Some(thread) => thread
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the store thread panicked"))),
            None => Ok(()),
        };
        let _ = std::fs::remove_file(&self.socket);
        result
    }
}

impl Drop for StateStore {
    fn drop(&mut self) {
        let _ = self.shut_down();
    }
}
