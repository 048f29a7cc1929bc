//! The executor's side of handed connections (`--balance round-robin`, `least-conn`): the
//! socket the primary accepts from, the balancer (`round_robin`, plain state), and the sends
//! and answers between them, for both kinds of worker: Node's (`newconn` and `accepted`, in
//! `node`) and herdsman's (`connection`, `accepted`/`refused`/`closed`, `ping`/`pong`: the
//! frames of `ipc::handoff`).
//!
//! Cost per connection is the point here (issue 15: a few µs of the primary's CPU). The primary
//! accepts only as many connections as the workers have room for (each up to `--max-pending`
//! unanswered): the rest wait in the kernel's queue, which is the line, so no accept comes
//! back empty and none waits in user space for long; it wakes once for all that are there, and
//! the workers' answers are lines read without JSON.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Map;
use tokio::io::unix::AsyncFd;

use super::executor::Executor;
use super::lifecycle::{Machine, WorkerId};
use super::process::Process;
use super::round_robin::{
    Connection, Handoff, Peers, Policy, RoundRobin, HANDOFF_KEY, QUESTION_KEY,
};
use super::timers::Due;
use crate::balance::Listeners;
use crate::config::{Balance, Config};
use crate::ipc::channel::{Delivery, Sent};
use crate::ipc::handoff::Kind;
use crate::ipc::Dialect;
use std::collections::HashMap;

/// At most this many accepted connections wait in the primary for a worker; past it the rest
/// wait in the kernel's queue, as they would for a worker's accept.
const WAITING_MAX: usize = 1024;

/// How long the primary stops accepting after accepting failed (out of fds, say).
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// The socket the primary accepts from, the balancer, and the socket it sends Node workers as
/// its question (`round_robin`).
pub(super) struct RoundRobinPort {
    /// `None` once the cluster stops.
    listener: Option<AsyncFd<std::net::TcpListener>>,
    pub balancer: RoundRobin,
    question: Connection,
    /// Accepting failed a moment ago.
    paused: bool,
    /// When `Due::RoundRobin` is set to fall due, if it is: moved only to an earlier time, as
    /// the balancer asks for one on nearly every call (a timer moved per connection costs).
    due_at: Option<Instant>,
}

impl RoundRobinPort {
    /// The port for the cluster's listeners if the primary hands connections over.
    pub fn open(listeners: &Listeners, config: &Config) -> io::Result<Option<RoundRobinPort>> {
        let Some(socket) = listeners.round_robin_socket()? else {
            return Ok(None);
        };
        let policy = match config.balance {
            Balance::LeastConn => Policy::LeastConnections,
            _ => Policy::RoundRobin,
        };
        let question = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        Ok(Some(RoundRobinPort {
            listener: Some(crate::sys::watch_listener(socket)?),
            balancer: RoundRobin::new(policy, config.max_pending, listeners.is_sticky()),
            question: Arc::new(question.into()),
            paused: false,
            due_at: None,
        }))
    }

    /// Stops accepting (the cluster is stopping).
    pub fn close(&mut self) {
        self.listener = None;
    }
}

/// The connections waiting on the port, as many as the workers have room for (one wake-up and
/// no registration with the runtime per connection: the primary only passes them on); pending
/// while there is none, or no room.
pub(super) async fn accept(port: Option<&RoundRobinPort>) -> io::Result<Vec<OwnedFd>> {
    let room = port.map_or(0, |port| {
        port.balancer
            .room()
            .min(WAITING_MAX.saturating_sub(port.balancer.waiting()))
    });
    let listener = port
        .filter(|port| !port.paused && room > 0)
        .and_then(|port| port.listener.as_ref());
    let Some(listener) = listener else {
        return std::future::pending().await;
    };
    loop {
        let mut ready = listener.readable().await?;
        let mut accepted = Vec::new();
        while accepted.len() < room {
            match ready.get_inner().accept() {
                Ok((stream, _)) => accepted.push(stream.into()),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    ready.clear_ready();
                    break;
                }
                // The client gave up before it was accepted: nothing to hand over.
                Err(error) if error.kind() == io::ErrorKind::ConnectionAborted => {}
                Err(error) if accepted.is_empty() => return Err(error),
                Err(_) => break,
            }
        }
        if !accepted.is_empty() {
            return Ok(accepted);
        }
    }
}

/// The executor's side of the balancer: each worker's channel, and who serves.
struct Senders<'a> {
    processes: &'a HashMap<WorkerId, Process>,
    machine: &'a Machine,
    question: &'a Connection,
}

impl Peers for Senders<'_> {
    fn send(&mut self, worker: WorkerId, handoff: Handoff<'_>) -> Option<u64> {
        let channel = self.processes.get(&worker)?.ipc.as_ref()?;
        let sent: Sent = match (channel.dialect(), handoff) {
            (Dialect::Herdsman, Handoff::Connection { connection, .. }) => {
                channel.send_connection(Arc::clone(connection))
            }
            (Dialect::Herdsman, Handoff::Question) => channel.send_ping(),
            (Dialect::Node, handoff) => {
                let (key, socket) = match handoff {
                    Handoff::Connection { key, connection } => (key, connection),
                    Handoff::Question => (QUESTION_KEY, self.question),
                };
                let mut message = Map::new();
                message.insert("act".into(), "newconn".into());
                message.insert("key".into(), key.into());
                channel.send_internal_handle(&message, Arc::clone(socket))
            }
        };
        matches!(sent.delivery, Delivery::Queued { .. }).then_some(sent.seq)
    }

    fn serving(&self, worker: WorkerId) -> bool {
        let disconnecting = self
            .processes
            .get(&worker)
            .is_none_or(|process| process.disconnecting);
        !disconnecting && self.machine.worker(worker).is_some_and(|w| w.is_serving())
    }

    fn slot(&self, worker: WorkerId) -> Option<usize> {
        self.machine.worker(worker).map(|worker| worker.slot)
    }
}

impl Executor {
    /// A worker of herdsman's dialect was started: it takes its turns from now on (the
    /// lifecycle's `is_serving` says when it may have one).
    pub(super) fn handoff_spawned(&mut self, worker: WorkerId) {
        let herdsman = self
            .processes
            .get(&worker)
            .and_then(|process| process.ipc.as_ref())
            .is_some_and(|channel| channel.dialect() == Dialect::Herdsman);
        if let (true, Some(port)) = (herdsman, &mut self.round_robin) {
            port.balancer
                .listening(worker, HANDOFF_KEY.into(), Instant::now());
        }
    }

    /// A herdsman worker's answer about connection (or ping) `id`.
    pub(super) fn on_handoff_answer(&mut self, worker: WorkerId, kind: Kind, id: u64) {
        let Some(port) = &mut self.round_robin else {
            return;
        };
        let now = Instant::now();
        let changed = match kind {
            Kind::Accepted => port.balancer.answered(worker, id, true, now),
            Kind::Refused | Kind::Pong => port.balancer.answered(worker, id, false, now),
            Kind::Closed => port.balancer.connection_closed(worker),
            Kind::Connection | Kind::Ping => false,
        };
        if changed {
            self.hand_connections();
        }
    }

    /// Connections accepted on the port wait for a worker (or accepting failed, and stops a
    /// moment).
    pub(super) fn on_connections(&mut self, accepted: io::Result<Vec<OwnedFd>>) {
        let Some(port) = &mut self.round_robin else {
            return;
        };
        match accepted {
            Ok(connections) => {
                for connection in connections {
                    port.balancer.arrived(Arc::new(connection));
                }
                self.hand_connections();
            }
            Err(error) => {
                port.paused = true;
                self.timers.schedule(Due::RoundRobinAccept, ACCEPT_PAUSE);
                self.logger.warn(format!(
                    "cannot accept a connection: {error}; trying again in {ACCEPT_PAUSE:?}"
                ));
            }
        }
    }

    pub(super) fn resume_accepting(&mut self) {
        if let Some(port) = &mut self.round_robin {
            port.paused = false;
        }
    }

    /// Hands waiting connections to workers whose turn it is.
    pub(super) fn hand_connections(&mut self) {
        let Some(port) = &mut self.round_robin else {
            return;
        };
        let mut senders = Senders {
            processes: &self.processes,
            machine: &self.machine,
            question: &port.question,
        };
        let now = Instant::now();
        let Some(at) = port.balancer.dispatch(now, &mut senders) else {
            return;
        };
        // A timer due earlier than needed only makes the balancer look again, and set it anew.
        if port.due_at.is_none_or(|due| at < due || due <= now) {
            port.due_at = Some(at);
            self.timers
                .schedule(Due::RoundRobin, at.saturating_duration_since(now));
        }
    }

    /// `Due::RoundRobin` fell due.
    pub(super) fn round_robin_due(&mut self) {
        if let Some(port) = &mut self.round_robin {
            port.due_at = None;
        }
        self.hand_connections();
    }

    /// `worker` exited: what it had not answered for goes to another worker.
    /// The connections `worker` holds open now, with `--balance least-conn` (status, metrics).
    pub(super) fn handed_open(&self, worker: WorkerId) -> Option<u64> {
        self.round_robin.as_ref()?.balancer.open_connections(worker)
    }

    /// The connections `worker` accepted from the primary's handoff (`--max-requests`).
    pub(super) fn round_robin_served(&self, worker: WorkerId) -> u64 {
        self.round_robin
            .as_ref()
            .map_or(0, |port| port.balancer.served(worker))
    }

    pub(super) fn round_robin_gone(&mut self, worker: WorkerId) {
        if let Some(port) = &mut self.round_robin {
            port.balancer.gone(worker);
            self.hand_connections();
        }
    }
}
