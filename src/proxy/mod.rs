//! The proxy (`--balance proxy`, `--balance proxy-rr`): any app, unmodified, behind the
//! primary. Each worker listens on a private loopback `$PORT`; the proxy accepts on the
//! cluster's port and relays every connection to a serving worker.
//!
//! # Why its own threads
//! The bytes of every connection pass through here, so the data path runs on a multi-threaded
//! tokio runtime of its own (threads `herdsman-proxy`), never on the primary's single-threaded
//! control loop: a busy proxy does not delay a reload, a status request or a worker's exit, and
//! the control plane's work does not delay a byte. The two share one thing, the list of
//! workers that may get new connections, which the executor sets ([`Proxy::route`]) whenever
//! the lifecycle steers (a worker became ready, started to retire, drain, or exited).
//!
//! # Why no splice(2)
//! Not measured yet, so not used. `splice` saves the copy of each chunk through user space (a
//! buffer of up to 64 KiB, made when bytes arrive and gone once they are written, so a waiting
//! connection holds none), at the price of a pipe per direction per connection (two more fds
//! each) and the same number of system calls (socket to pipe, pipe to socket, where a copy
//! makes one read and one write). It can only pay on long bodies and tunnels, and the proxy has
//! to read HTTP heads anyway (framing, retries). `bench/run` measures the proxy against the
//! app's own workers; the tunnelled path (`relay`) is where splice would go if the copy shows
//! up there.
//!
//! # Layout
//! - `balancer`: who gets the next connection (least-connections with ties in turn, or in
//!   turn; or by the client's address, `--sticky ip`), plain state.
//! - `header`: the PROXY protocol header that starts each upstream connection
//!   (`--proxy-protocol`), so that apps learn the client's address.
//! - `framing`: the HTTP/1.x that the proxy reads: heads, where bodies end, idempotent methods.
//! - `connection`: one client connection: HTTP request by request with one retry, or bytes.
//! - `relay`: bytes both ways with half-close, backpressure and the idle timeout.

mod balancer;
mod connection;
mod framing;
mod header;
mod relay;

use std::io;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use balancer::Balancer;
pub use balancer::{Policy, Upstream};
pub use header::local as local_header;

use crate::config::ProxyProtocol;

/// How the proxy picks workers and what it tells them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    pub policy: Policy,
    /// `--sticky ip`: a client's address picks its worker.
    pub sticky: bool,
    /// `--proxy-protocol`: the header each upstream connection starts with.
    pub header: ProxyProtocol,
}

/// The proxy's threads.
const THREADS: usize = 2;
/// After a failed `accept` (out of fds), the pause before the next.
const ACCEPT_PAUSE: Duration = Duration::from_millis(10);

/// What the connections share: the balancer, behind a lock held only to pick or release.
pub(crate) struct Shared {
    balancer: Mutex<Balancer>,
    /// The connections made to each worker so far, by its id.
    served: Mutex<std::collections::HashMap<u64, u64>>,
    header: ProxyProtocol,
    /// Bumped whenever the workers that get requests change: a connection waiting for its
    /// client's next request lets go of an upstream whose worker left the list.
    routes: tokio::sync::watch::Sender<u64>,
}

impl Shared {
    fn pick(&self, except: &[u64], client: Option<IpAddr>) -> Option<Upstream> {
        self.balancer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pick(except, client)
    }

    /// A connection to worker `id` was made (`--max-requests` counts them).
    fn count_served(&self, id: u64) {
        let mut served = self.served.lock().unwrap_or_else(|e| e.into_inner());
        *served.entry(id).or_default() += 1;
    }

    fn release(&self, id: u64) {
        self.balancer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .release(id);
    }

    /// Whether worker `id` still gets new requests (not retiring, draining or gone).
    fn is_routed(&self, id: u64) -> bool {
        self.balancer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_routed(id)
    }
}

/// A running proxy. Dropping it ends every connection through it.
pub struct Proxy {
    runtime: Option<tokio::runtime::Runtime>,
    shared: Arc<Shared>,
    accepting: CancellationToken,
}

impl Proxy {
    /// Accepts on `listener` (a copy of the cluster's socket) on the proxy's own threads.
    pub fn start(listener: std::net::TcpListener, options: Options) -> io::Result<Proxy> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(THREADS)
            .thread_name("herdsman-proxy")
            .enable_all()
            .build()?;
        listener.set_nonblocking(true)?;
        let listener = {
            let _entered = runtime.enter();
            tokio::net::TcpListener::from_std(listener)?
        };
        let shared = Arc::new(Shared {
            served: Mutex::default(),
            balancer: Mutex::new(Balancer::new(options.policy, options.sticky)),
            header: options.header,
            routes: tokio::sync::watch::Sender::new(0),
        });
        let accepting = CancellationToken::new();
        let (stop, connections) = (accepting.clone(), shared.clone());
        runtime.spawn(async move {
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    _ = stop.cancelled() => return,
                };
                match accepted {
                    Ok((client, _)) => {
                        tokio::spawn(connection::serve(client, connections.clone()));
                    }
                    Err(_) => tokio::time::sleep(ACCEPT_PAUSE).await,
                }
            }
        });
        Ok(Proxy {
            runtime: Some(runtime),
            shared,
            accepting,
        })
    }

    /// The workers that get new connections from now on. Connections already open to others
    /// go on until they end.
    pub fn route(&self, upstreams: &[Upstream]) {
        self.shared
            .balancer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set(upstreams);
        self.shared.routes.send_modify(|routes| *routes += 1);
    }

    /// The connections made to worker `id` so far (each request's, for HTTP/1 to a worker
    /// that closes kept connections).
    pub fn served(&self, id: u64) -> u64 {
        let served = self.shared.served.lock().unwrap_or_else(|e| e.into_inner());
        served.get(&id).copied().unwrap_or(0)
    }

    /// Worker `id` has exited: its count goes.
    pub fn forget(&self, id: u64) {
        let mut served = self.shared.served.lock().unwrap_or_else(|e| e.into_inner());
        served.remove(&id);
    }

    /// The connections open through the proxy to the worker of lifecycle id `id` now.
    pub fn open_connections(&self, id: u64) -> usize {
        self.shared
            .balancer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .open(id)
    }

    /// Stops accepting (the cluster is stopping); open connections go on.
    pub fn close(&self) {
        self.accepting.cancel();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
