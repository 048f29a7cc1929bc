//! The worker side of the library: what a process started by herdsman gets, as Rust values.
//!
//! ```no_run
//! # async fn serve() -> std::io::Result<()> {
//! let mut worker = herdsman::Worker::from_env();
//! let listener = worker.listener()?;          // the cluster's shared socket (or $PORT alone)
//! let mut state = worker.state().await.expect("shared state"); // Redis client, any URL
//! worker.ready()?;                            // start receiving connections now
//! herdsman::worker::shutdown().await;         // SIGTERM: stop accepting, settle, return
//! # Ok(()) }
//! ```
//!
//! [`shutdown`] is what to hand a server's graceful shutdown: it stops the [`Listener`] first
//! and waits until every connection it accepted has been read from, so the server's own
//! shutdown finishes them instead of closing them as idle (see `listener`).
//!
//! Everything here reads the environment herdsman gives every worker (see the README's "What
//! every worker gets"); run on its own, a program gets slot 1 of 1 and binds `$PORT`.

use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::Value;
use tokio::sync::mpsc;

use crate::ipc::channel::{Delivery, Handed, Received};
use crate::ipc::handoff::Kind;
use crate::ipc::{Dialect, FromWorker, Target, ToWorker, WorkerChannel};

mod listener;
mod report;

/// Set for a worker that gets its connections from the primary (`--balance round-robin` or
/// `least-conn` with `--ipc`): the cluster's address, which [`Listener::local_addr`] gives.
pub(crate) const HANDOFF_ENV: &str = "HERDSMAN_HANDOFF";

/// Set to `1` when the primary counts each worker's open connections (`least-conn`): then
/// every handed connection reports its close.
pub(crate) const HANDOFF_CLOSES_ENV: &str = "HERDSMAN_HANDOFF_CLOSES";

pub use listener::{shutdown, stop_accepting, Connection, Listener, FIRST_READ_WAIT};

/// This worker, as herdsman started it.
#[derive(Debug, Clone)]
pub struct Worker {
    id: usize,
    count: usize,
    generation: u64,
    name: String,
    state_url: Option<String>,
    /// The IPC channel, opened on first use (it needs the tokio runtime).
    ipc: Arc<OnceLock<Option<Channel>>>,
    /// Tell herdsman the worker is ready as soon as it takes the listener (the library's
    /// cluster does, unless `manual_ready`).
    ready_on_listen: bool,
}

/// A message from the primary (`from: None`) or from another worker's slot.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub data: Value,
    pub from: Option<usize>,
}

/// A connection the primary handed over: its `id` (for the answers) and its fd.
type HandedConnection = (u64, OwnedFd);

#[derive(Debug)]
struct Channel {
    ipc: Arc<WorkerChannel>,
    incoming: Mutex<Option<mpsc::UnboundedReceiver<Message>>>,
    /// The connections the primary handed over, for the first listener to take.
    handed: Mutex<Option<mpsc::UnboundedReceiver<HandedConnection>>>,
}

/// Why [`Worker::state`] has no client to give.
#[derive(Debug, thiserror::Error)]
pub enum SharedStateError {
    #[error(
        "this worker has no shared state (herdsman runs with --state off, or the program was \
         started without herdsman and REDIS_URL is unset)"
    )]
    NotConfigured,
    #[error("cannot connect to the shared state at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: redis::RedisError,
    },
}

fn env_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

impl Worker {
    /// Reads the worker's identity from the environment.
    pub fn from_env() -> Worker {
        Worker {
            id: env_number("HERDSMAN_WORKER_ID", 1),
            count: env_number("HERDSMAN_WORKER_COUNT", 1),
            generation: env_number("HERDSMAN_GENERATION", 1),
            name: std::env::var("HERDSMAN_NAME").unwrap_or_default(),
            state_url: std::env::var("HERDSMAN_STATE_URL")
                .or_else(|_| std::env::var("REDIS_URL"))
                .ok()
                .filter(|url| !url.is_empty()),
            ipc: Arc::new(OnceLock::new()),
            ready_on_listen: false,
        }
    }

    /// Whether [`Worker::listener`] also calls [`Worker::ready`].
    pub fn ready_on_listen(self, ready_on_listen: bool) -> Worker {
        Worker {
            ready_on_listen,
            ..self
        }
    }

    fn channel(&self) -> Option<&Channel> {
        self.ipc.get_or_init(open_channel).as_ref()
    }

    /// Whether this worker has an IPC channel (`herdsman run --ipc`, or the library's cluster).
    pub fn has_channel(&self) -> bool {
        self.channel().is_some()
    }

    fn send_frame(&self, frame: FromWorker) -> bool {
        let Some(channel) = self.channel() else {
            return false;
        };
        matches!(channel.ipc.send(&frame), Ok(Delivery::Queued { .. }))
    }

    fn send_message(&self, data: impl serde::Serialize, to: Target) -> bool {
        let data = serde_json::to_value(data).unwrap_or(Value::Null);
        self.send_frame(FromWorker::Message { data, to })
    }

    /// Sends `data` to the primary; false without a channel. Must be called inside a tokio
    /// runtime.
    pub fn send(&self, data: impl serde::Serialize) -> bool {
        self.send_message(data, Target::Primary)
    }

    /// Sends `data` to the worker in `slot`, through the primary.
    pub fn send_to(&self, slot: usize, data: impl serde::Serialize) -> bool {
        self.send_message(data, Target::Slot(slot))
    }

    /// Sends `data` to every other worker, through the primary.
    pub fn broadcast(&self, data: impl serde::Serialize) -> bool {
        self.send_message(data, Target::All)
    }

    /// The messages sent to this worker, in order; `None` without a channel, or after the first
    /// call (there is one stream).
    pub fn messages(&self) -> Option<mpsc::UnboundedReceiver<Message>> {
        self.channel()?
            .incoming
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .take()
    }

    /// The worker's slot, 1 to N; a replacement keeps its slot.
    pub fn id(&self) -> usize {
        self.id
    }

    /// How many workers the cluster had when this one started.
    pub fn count(&self) -> usize {
        self.count
    }

    /// 1 at start, one more with every reload.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The cluster's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The shared state's URL (`HERDSMAN_STATE_URL`, else `REDIS_URL`).
    pub fn state_url(&self) -> Option<&str> {
        self.state_url.as_deref()
    }

    /// The listening socket: the cluster's (fd 3) under herdsman, else a new one on
    /// `0.0.0.0:$PORT` (default 8000). Takes the inherited socket; a second call binds anew.
    /// With `--balance round-robin` or `least-conn` it yields the connections the primary
    /// hands over instead (answering each, and reporting each close), the same [`Listener`]
    /// to the server; then only the first call has them. It stops accepting when the worker is
    /// asked to stop ([`shutdown`]). Must be called inside a tokio runtime.
    pub fn listener(&mut self) -> io::Result<Listener> {
        if let Ok(address) = std::env::var(HANDOFF_ENV) {
            let listener = self.handoff_listener(&address)?;
            if self.ready_on_listen {
                self.ready()?;
            }
            return Ok(listener);
        }
        let listener = match crate::sys::take_inherited_listener()? {
            Some(listener) => listener,
            None => {
                let port = env_number("PORT", 8000u16);
                std::net::TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port)))?
            }
        };
        listener.set_nonblocking(true)?;
        let listener = Listener::new(tokio::net::TcpListener::from_std(listener)?)?;
        // Heartbeats (`--watchdog`) and accepted counts (`--max-requests`) for herdsman.
        report::start();
        // The socket is listening: connections wait in its queue until the server accepts.
        if self.ready_on_listen {
            self.ready()?;
        }
        Ok(listener)
    }

    /// The listener of handed connections, on the cluster's `address`.
    fn handoff_listener(&self, address: &str) -> io::Result<Listener> {
        let address: SocketAddr = address.parse().map_err(|_| {
            io::Error::other(format!("{HANDOFF_ENV}=`{address}` is not an address"))
        })?;
        let channel = self.channel().ok_or_else(|| {
            io::Error::other(format!(
                "{HANDOFF_ENV} is set, so the primary hands this worker its connections, but \
                 the worker has no IPC channel (HERDSMAN_IPC_FD)"
            ))
        })?;
        let handed = channel
            .handed
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .take()
            .ok_or_else(|| {
                io::Error::other(
                    "the primary's handed connections go to this worker's first listener; \
                     call Worker::listener() once",
                )
            })?;
        let report_closes = std::env::var(HANDOFF_CLOSES_ENV).is_ok_and(|value| value == "1");
        Ok(Listener::handed(
            handed,
            channel.ipc.clone(),
            address,
            report_closes,
        ))
    }

    /// Tells herdsman this worker is ready for connections (`READY=1` on `NOTIFY_SOCKET`); a
    /// no-op without herdsman. With `--ready delay` herdsman also counts it ready after the
    /// delay; with `--ready notify` only this counts.
    pub fn ready(&self) -> io::Result<()> {
        if self.send_frame(FromWorker::Ready) {
            return Ok(());
        }
        let Ok(path) = std::env::var("NOTIFY_SOCKET") else {
            return Ok(());
        };
        let socket = std::os::unix::net::UnixDatagram::unbound()?;
        socket.send_to(b"READY=1", path)?;
        Ok(())
    }

    /// A client for the shared state (herdsman's embedded store, or the Redis of `--state
    /// redis://…`), connected, reconnecting by itself if the connection drops. The code is the
    /// same whichever it is.
    pub async fn state(&self) -> Result<redis::aio::ConnectionManager, SharedStateError> {
        let url = self
            .state_url
            .clone()
            .ok_or(SharedStateError::NotConfigured)?;
        let connect = async {
            let client = redis::Client::open(url.as_str())?;
            client.get_connection_manager().await
        };
        connect
            .await
            .map_err(|source| SharedStateError::Connect { url, source })
    }
}

/// The channel at `HERDSMAN_IPC_FD` (herdsman's dialect: a worker under `--ipc node` is a Node
/// program, with Node's own channel). A frame the primary sends that this worker does not
/// know is passed over; a line that is not JSON, or too long, ends what the worker reads.
fn open_channel() -> Option<Channel> {
    let stream = crate::sys::take_ipc_channel().ok()??;
    let (deliver, incoming) = mpsc::unbounded_channel();
    let (hand, handed) = mpsc::unbounded_channel::<HandedConnection>();
    // The reader refuses what no listener will take, through the channel it reads for.
    let answerer: Arc<OnceLock<Arc<WorkerChannel>>> = Arc::new(OnceLock::new());
    let refuse = answerer.clone();
    let (ipc, _reading) =
        WorkerChannel::open(stream, Dialect::Herdsman, move |received| match received {
            Received::Frame(ToWorker::Message { data, from }) => {
                let _ = deliver.send(Message {
                    data: data.into_owned(),
                    from,
                });
            }
            Received::Connection { id, fd } => {
                // Without its fd, or with the listener gone (stopped), it is not served here:
                // the primary hands it to another worker.
                let taken = fd.is_some_and(|Handed(fd)| hand.send((id, fd)).is_ok());
                if let (false, Some(channel)) = (taken, refuse.get()) {
                    channel.answer(Kind::Refused, id);
                }
            }
            Received::Closed(_) => {}
        })
        .ok()?;
    let ipc = Arc::new(ipc);
    let _ = answerer.set(ipc.clone());
    Some(Channel {
        ipc,
        incoming: Mutex::new(Some(incoming)),
        handed: Mutex::new(Some(handed)),
    })
}
