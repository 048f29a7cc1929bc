//! The executor's side of `--balance proxy`: the proxy's start, each worker's private port,
//! readiness as that port accepting, and the list of workers the proxy relays new connections
//! to, which follows the lifecycle's `is_serving` (starting, retiring and draining workers get
//! none) every time the lifecycle steers.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::time::Duration;

use super::executor::Executor;
use super::lifecycle::WorkerId;
use super::notify::Notice;
use super::{Event, StartupFailed};
use crate::config::{Balance, Sticky};
use crate::proxy::{local_header, Options, Policy, Proxy, Upstream};

/// How often a starting worker's private port is tried until it accepts.
const PROBE_INTERVAL: Duration = Duration::from_millis(20);

impl Executor {
    /// Starts the proxy on a copy of the cluster's socket, with `--balance proxy` or
    /// `proxy-rr`.
    pub fn start_proxy(&self) -> Result<Option<Proxy>, StartupFailed> {
        let config = self.machine.config();
        let policy = match config.balance {
            Balance::Proxy => Policy::LeastConnections,
            Balance::ProxyRr => Policy::RoundRobin,
            _ => return Ok(None),
        };
        let options = Options {
            policy,
            sticky: config.sticky == Sticky::Ip,
            header: config.proxy_protocol,
        };
        let cannot =
            |error: std::io::Error| StartupFailed(format!("cannot start the proxy: {error}"));
        let Some(listener) = self.listeners.proxy_socket().map_err(cannot)? else {
            return Ok(None);
        };
        Proxy::start(listener, options).map(Some).map_err(cannot)
    }

    /// A free loopback port for `worker` to listen on, which no other live worker has. The
    /// kernel picks it; it is free again when the worker binds it a moment later (another
    /// process could take it in between, and the worker would then fail as any app whose port
    /// is taken, and be restarted on a new one).
    pub fn private_port(&mut self, worker: WorkerId) -> std::io::Result<u16> {
        loop {
            let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
                .local_addr()?
                .port();
            if !self.private_ports.values().any(|taken| *taken == port) {
                self.private_ports.insert(worker, port);
                return Ok(port);
            }
        }
    }

    /// With the proxy, a worker is ready once its private port accepts, and not before: tries it
    /// until it does (`Notice::Accepting`, also a ready signal, as `READY=1` would be) or the
    /// ready timeout has passed. With `--proxy-protocol` the probe's connection says so with
    /// the spec's header for a connection of the proxy's own (v2 `LOCAL`, v1 `UNKNOWN`), so the
    /// app accepts it.
    pub fn probe_private_port(&self, worker: WorkerId) {
        let Some(&port) = self.private_ports.get(&worker) else {
            return;
        };
        let deadline = tokio::time::Instant::now() + self.machine.config().ready_timeout;
        let events = self.events();
        let header = local_header(self.machine.config().proxy_protocol);
        tokio::spawn(async move {
            let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            while tokio::time::Instant::now() < deadline && !events.is_closed() {
                if let Ok(mut probe) = tokio::net::TcpStream::connect(address).await {
                    use tokio::io::AsyncWriteExt;
                    let _ = probe.write_all(&header).await;
                    let _ = events.send(Event::Notified {
                        worker,
                        notice: Notice::Accepting,
                    });
                    return;
                }
                tokio::time::sleep(PROBE_INTERVAL).await;
            }
        });
    }

    /// Tells the proxy which workers get new connections: the serving ones.
    pub fn route_proxy(&self) {
        let Some(proxy) = &self.proxy else {
            return;
        };
        let upstreams: Vec<Upstream> = self
            .machine
            .workers()
            .iter()
            .filter(|worker| worker.is_serving())
            .filter_map(|worker| {
                let port = self.private_ports.get(&worker.id)?;
                Some(Upstream {
                    id: worker.id.0,
                    slot: worker.slot,
                    address: SocketAddr::from((Ipv4Addr::LOCALHOST, *port)),
                })
            })
            .collect();
        proxy.route(&upstreams);
    }
}
