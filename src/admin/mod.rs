//! The admin HTTP server (`--admin ADDRESS`): Prometheus metrics, health probes, the status
//! JSON, the primary's lifecycle (typed events and its log lines) as server-sent events, and a
//! live dashboard.
//!
//! It runs on the primary's one-threaded runtime beside the control server and asks the
//! supervisor for state the way the control socket does (an `Intent::Status`), so it costs
//! nothing while nobody asks and never touches the data path. Plain hyper 1 with one
//! connection task each; no router crate: the paths are few and fixed.
//!
//! - `metrics`: the Prometheus text, made with `prometheus-client` from one status.
//! - `http`: requests (routes, the token, the cross-origin check) and replies.
//! - `events`: `/api/events`, the log lines and the typed lifecycle events as SSE.
//! - `dashboard.html`, `dashboard.js`: the page, embedded with `include_str!`; it polls
//!   `/api/status`, follows `/api/events` and draws its charts itself, so it works offline.

mod events;
mod http;
mod metrics;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::domain::LifecycleEvent;
use crate::primary::{Intent, LogHub};

/// How many admin connections are served at once; more wait in the kernel's queue.
const MAX_CONNECTIONS: usize = 32;
/// A client must send a request's headers within this time, so that a silent connection does not
/// hold one of the [`MAX_CONNECTIONS`] places.
const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The admin server could not listen.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot serve the admin server on {address}: {source}; pick another --admin address \
     (port 0 picks a free one)"
)]
pub struct AdminError {
    pub address: SocketAddr,
    #[source]
    pub source: io::Error,
}

/// The bound admin socket.
pub struct AdminServer {
    listener: TcpListener,
    token: Option<String>,
}

/// What every request may read: where intents go, the log ring, the token, when it started.
struct Shared {
    intents: mpsc::UnboundedSender<Intent>,
    hub: Arc<LogHub>,
    /// What `/api/events` subscribes to for the lifecycle.
    lifecycle: broadcast::Sender<LifecycleEvent>,
    token: Option<String>,
}

impl AdminServer {
    /// Binds `address` (on the primary's runtime), so that a taken address fails at start-up.
    pub fn bind(address: SocketAddr, token: Option<String>) -> Result<AdminServer, AdminError> {
        let listener = std::net::TcpListener::bind(address)
            .and_then(|listener| {
                listener.set_nonblocking(true)?;
                TcpListener::from_std(listener)
            })
            .map_err(|source| AdminError { address, source })?;
        Ok(AdminServer { listener, token })
    }

    /// The address it listens on (the port chosen, for port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` is cancelled; open connections (an events stream) end with it.
    pub fn serve(
        self,
        intents: mpsc::UnboundedSender<Intent>,
        hub: Arc<LogHub>,
        lifecycle: broadcast::Sender<LifecycleEvent>,
        shutdown: CancellationToken,
    ) -> JoinHandle<()> {
        let shared = Arc::new(Shared {
            intents,
            hub,
            lifecycle,
            token: self.token,
        });
        let listener = self.listener;
        let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        tokio::spawn(async move {
            loop {
                let permit = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    permit = permits.clone().acquire_owned() => permit,
                };
                let Ok(permit) = permit else {
                    return;
                };
                let stream = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => stream,
                        Err(_) => {
                            // Out of fds, most likely: try again shortly.
                            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                };
                let shared = shared.clone();
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let shared = shared.clone();
                        let shutdown = shutdown.clone();
                        async move { http::handle(request, &shared, shutdown).await }
                    });
                    let connection = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(HEADER_TIMEOUT)
                        .serve_connection(TokioIo::new(stream), service);
                    let _ = connection.await;
                    drop(permit);
                });
            }
        })
    }
}
