//! Connections queued on a socket that no worker will accept from, relayed to ready workers.
//!
//! With `reuseport`, each slot has two sockets (see `balance`), and the kernel cannot move a
//! connection from one listening socket's queue to another's. Steering keeps new connections
//! off the sockets of workers that are not ready, but it cannot help the connections that were
//! already queued on a socket when its worker died: killed while its replacement starts on the
//! other side, crashed into backoff, crash-looping (`errored`), or killed by an operator. Left
//! alone they wait until some later worker takes that socket, which may be never.
//!
//! The primary holds every listening socket, so it can serve them itself: a *sweep* reads the
//! accept queue (`TCP_INFO`) of every socket that no live worker holds, accepts what waits
//! there, and relays each connection to the cluster's own address, which the steering program
//! sends to a ready worker. The relay copies both ways until each side has closed its half
//! (`tokio::io::copy_bidirectional`, which passes a half-close on), so the client sees an
//! ordinary connection; the worker sees it come from the primary (loopback), not the client.
//!
//! Why this and not the alternatives:
//! - handing the replacement both sockets (`LISTEN_FDS=2`) works only for servers that listen
//!   on every fd they are given, and does nothing for a slot in backoff;
//! - starting the replacement on the side that holds the queue leaves the queue waiting for as
//!   long as the replacement takes to start, or for ever when it crash-loops;
//! - relaying needs nothing of the app and serves the queue within one sweep whenever any
//!   worker is ready. So a restarted worker takes the slot's other side while another worker is
//!   ready (the lifecycle's `side_for_new_worker`), and its predecessor's queue is relayed at
//!   once instead of waiting for it to start.
//!
//! Rules that keep it safe:
//! - only a socket no live worker holds is swept: then the primary is the only process that
//!   accepts on it, and it may make the socket non-blocking for the instant it takes (the mode
//!   belongs to the socket, shared with every process holding it) without surprising a worker;
//! - connections are relayed only while every socket the steering program points at has a
//!   serving worker, so a relayed connection never lands on another swept socket; until then
//!   they wait in their queue (nothing is reset: the primary keeps every socket open);
//! - the sweep runs every [`SWEEP_EVERY`] for [`WATCH_FOR`] after any change of workers or
//!   steering (a straggling handshake may complete on a socket after the steering changed), and
//!   for as long as something waits; an idle cluster is not woken.

use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

use super::executor::Executor;
use super::timers::Due;
use crate::balance::Side;
use crate::domain::ClusterPhase;

/// How often stranded queues are looked at while the rescue watches.
pub const SWEEP_EVERY: Duration = Duration::from_millis(100);
/// How long the rescue watches after workers or steering changed.
pub const WATCH_FOR: Duration = Duration::from_secs(10);
/// The most connections taken from one socket per sweep.
const BATCH: usize = 512;
/// How long a relay may take to reach a worker before the client's connection is closed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the rescue remembers between sweeps.
#[derive(Debug, Default)]
pub struct Rescue {
    /// Sweep until then, or for as long as something waits.
    watch_until: Option<Instant>,
    sweep_scheduled: bool,
    /// Connections relayed since the primary started.
    pub relayed: u64,
    /// Whether a failed accept was said once (said once, not on every sweep).
    accept_failed: bool,
}

impl Executor {
    /// Workers or steering changed: watch the sockets no worker holds for a while.
    pub fn watch_for_stranded(&mut self) {
        if !self.listeners.steerable() {
            return;
        }
        self.rescue.watch_until = Some(Instant::now() + WATCH_FOR);
        self.schedule_sweep();
    }

    fn schedule_sweep(&mut self) {
        if !self.rescue.sweep_scheduled {
            self.rescue.sweep_scheduled = true;
            self.timers.schedule(Due::RescueSweep, SWEEP_EVERY);
        }
    }

    /// Relays what waits on the sockets no worker holds, and sweeps again while needed.
    pub fn sweep_stranded(&mut self) {
        self.rescue.sweep_scheduled = false;
        if self.machine.phase() == ClusterPhase::Stopping || !self.listeners.steerable() {
            return;
        }
        let relay = self.machine.relay_possible();
        let mut waiting = false;
        for slot in 1..=self.listeners.slots() {
            for side in Side::BOTH {
                if self.machine.holds(slot, side)
                    || self.listeners.queued(slot, side).unwrap_or(0) == 0
                {
                    continue;
                }
                if !relay {
                    waiting = true;
                    continue;
                }
                match self.listeners.take_queued(slot, side, BATCH) {
                    Ok(connections) => {
                        waiting |= connections.len() == BATCH;
                        self.relay_all(slot, connections);
                    }
                    Err(error) => {
                        waiting = true;
                        if !self.rescue.accept_failed {
                            self.rescue.accept_failed = true;
                            self.logger.warn(format!(
                                "slot {slot}: cannot take the connections waiting on a socket no \
                                 worker serves ({error}); they wait for the slot's next worker"
                            ));
                        }
                    }
                }
            }
        }
        let watching = self
            .rescue
            .watch_until
            .is_some_and(|until| Instant::now() < until);
        if watching || waiting {
            self.schedule_sweep();
        }
    }

    fn relay_all(&mut self, slot: usize, connections: Vec<std::net::TcpStream>) {
        if connections.is_empty() {
            return;
        }
        let count = connections.len();
        self.rescue.relayed += count as u64;
        let plural = if count == 1 { "" } else { "s" };
        self.logger.info(format!(
            "slot {slot}: {count} connection{plural} left waiting on a socket no worker serves; \
             relayed to ready workers"
        ));
        let to = self.listeners.relay_address();
        for connection in connections {
            tokio::spawn(async move {
                // A failure closes the client's connection, as a worker dying would.
                let _ = relay(connection, to).await;
            });
        }
    }
}

/// Connects to the cluster's address and copies both ways until both sides are done.
async fn relay(
    connection: std::net::TcpStream,
    to: std::net::SocketAddr,
) -> std::io::Result<(u64, u64)> {
    connection.set_nonblocking(true)?;
    let mut client = TcpStream::from_std(connection)?;
    let mut upstream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(to))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    // Requests and answers pass through as they come; batching them would only add delay.
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await
}
