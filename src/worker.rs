//! The worker side of the library: what a process started by herdsman gets, as Rust values.
//!
//! ```no_run
//! # async fn serve() -> std::io::Result<()> {
//! let mut worker = herdsman::Worker::from_env();
//! let listener = worker.listener()?;          // the cluster's shared socket (or $PORT alone)
//! let mut state = worker.state().await.expect("shared state"); // Redis client, any URL
//! worker.ready()?;                            // start receiving connections now
//! herdsman::worker::shutdown().await;         // SIGTERM: drain and return
//! # Ok(()) }
//! ```
//!
//! Everything here reads the environment herdsman gives every worker (see the README's "What
//! every worker gets"); run on its own, a program gets slot 1 of 1 and binds `$PORT`.

use std::io;
use std::net::SocketAddr;

/// This worker, as herdsman started it.
#[derive(Debug, Clone)]
pub struct Worker {
    id: usize,
    count: usize,
    generation: u64,
    name: String,
    state_url: Option<String>,
}

/// Why [`Worker::state`] has no client to give.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
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
        }
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
    /// Must be called inside a tokio runtime.
    pub fn listener(&mut self) -> io::Result<tokio::net::TcpListener> {
        let listener = match crate::sys::take_inherited_listener()? {
            Some(listener) => listener,
            None => {
                let port = env_number("PORT", 8000u16);
                std::net::TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port)))?
            }
        };
        listener.set_nonblocking(true)?;
        tokio::net::TcpListener::from_std(listener)
    }

    /// Tells herdsman this worker is ready for connections (`READY=1` on `NOTIFY_SOCKET`); a
    /// no-op without herdsman. With `--ready delay` herdsman also counts it ready after the
    /// delay; with `--ready notify` only this counts.
    pub fn ready(&self) -> io::Result<()> {
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
    pub async fn state(&self) -> Result<redis::aio::ConnectionManager, StateError> {
        let url = self.state_url.clone().ok_or(StateError::NotConfigured)?;
        let connect = async {
            let client = redis::Client::open(url.as_str())?;
            client.get_connection_manager().await
        };
        connect
            .await
            .map_err(|source| StateError::Connect { url, source })
    }
}

/// Resolves when the worker is asked to stop: SIGTERM (herdsman's default `--stop-signal`) or
/// SIGINT. Hand it to the server's graceful shutdown (`axum::serve(…).with_graceful_shutdown`).
pub async fn shutdown() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut interrupt)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the default action (exit) applies; never resolve.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = interrupt.recv() => {}
    }
}
