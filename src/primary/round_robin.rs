//! The primary's balancer for handed connections (`--balance round-robin` and `least-conn`), as
//! Node's primary does round-robin: the primary accepts each connection on the cluster's socket
//! and hands it to a free worker over its IPC channel (the socket rides on the message as
//! SCM_RIGHTS, `crate::ipc`: Node's `newconn`, or herdsman's `connection` frame), keeping its own
//! copy until the worker answers `accepted`. A worker has at most `--max-pending` connections
//! unanswered (1, as Node); one it refuses (its server is closing, or at `maxConnections`) goes
//! to another worker, and so does one handed to a worker that dies before answering: nothing is
//! lost. The pick is one function ([`RoundRobin::candidates`]): round-robin offers the worker
//! handed a connection longest ago first; least-connections the one holding the fewest
//! connections now (handed and not yet reported closed: herdsman's `closed` frame, so not for
//! Node's protocol, which reports no close), ties in that same turn. A worker gets connections
//! once it listens (Node's `queryServer` for the cluster's address; a herdsman worker from its
//! start) and while the lifecycle says it serves: not while it starts, drains or is retired.
//!
//! One difference from Node, on purpose. Node counts a worker free as soon as it answered, so a
//! worker that went into CPU work just after its last answer still gets the next connection,
//! which then waits for the work to end. Here an answer proves a free event loop for [`FRESH`]
//! only: a worker idle for longer is first asked a question its loop answers at once if it runs
//! (a `newconn` for a server it does not have, which it refuses and closes; Node's
//! `cluster/child.js`; herdsman's `ping`, which the worker's channel answers), and a connection waits for the answer of the worker whose turn it is, for
//! [`PATIENCE`] at most; a worker that has not answered by then is passed over until it does.
//! Idle workers are asked every [`PULSE`] too, so a worker that went into CPU work is passed over
//! from at most `PULSE + PATIENCE` after, whether or not connections came meanwhile. Under load
//! every worker answers all the time, so no questions are asked; an idle cluster pays one round
//! trip to the worker, and ten questions a second per worker. The state here is the balancer's alone (no I/O): the executor
//! accepts, sends through [`Peers`] and hands the answers in (`primary::node`).
//!
//! Sticky (`--sticky ip`, [`RoundRobin::new`]'s `sticky`): the connection first in line goes to the
//! serving worker its client address sticks to ([`RoundRobin::pick`]: rendezvous over slots,
//! `balance::sticky`), when that worker's turn rules allow, and waits for it otherwise (the
//! connections behind it wait too: a sticky worker busy in CPU work holds up the line).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::lifecycle::WorkerId;
use crate::balance::sticky;

/// How long a worker's last answer counts as proof that its event loop is free.
pub const FRESH: Duration = Duration::from_millis(2);

/// How long a connection waits for the answer of the worker whose turn it is before it goes to
/// the next one. Long enough that a worker the machine merely ran late (a loaded CI box) keeps
/// its turn, so turns stay exact.
pub const PATIENCE: Duration = Duration::from_millis(200);

/// How often an idle worker is asked whether it is free, so that one stuck in CPU work is known
/// (and passed over) before connections come for it.
pub const PULSE: Duration = Duration::from_millis(100);

/// A worker that refused a connection gets none for this long (so that one at its
/// `maxConnections` is not asked again and again while others are free).
pub const HOLD_OUT: Duration = Duration::from_millis(10);

/// The key of the question: no server of the worker has it, so the worker refuses the socket.
pub const QUESTION_KEY: &str = "herdsman:are-you-free";

/// The key a herdsman worker (not Node) takes its turns under: it has one server.
pub const HANDOFF_KEY: &str = "herdsman";

/// An accepted connection. Shared with the channel that sends it (no `dup` per handoff): the
/// balancer keeps its share until the worker accepted, so that a connection a worker refuses
/// or dies holding goes to another.
pub type Connection = Arc<OwnedFd>;

/// Who gets the next connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Policy {
    /// The worker handed one longest ago (Node's order).
    #[default]
    RoundRobin,
    /// The worker holding the fewest connections; ties as round-robin.
    LeastConnections,
}

/// What the balancer sends a worker.
#[derive(Debug)]
pub enum Handoff<'a> {
    /// A connection, for the worker's server `key`.
    Connection {
        key: &'a str,
        connection: &'a Connection,
    },
    /// The question (see the module's doc).
    Question,
}

/// The executor's side: sends, and says which workers serve.
pub trait Peers {
    /// Sends `handoff` to `worker`; the `seq` its answer will name, or `None` if the worker
    /// cannot be sent to any more.
    fn send(&mut self, worker: WorkerId, handoff: Handoff<'_>) -> Option<u64>;
    /// Whether `worker` may get new connections now.
    fn serving(&self, worker: WorkerId) -> bool;
    /// `worker`'s slot, what a sticky client sticks to.
    fn slot(&self, worker: WorkerId) -> Option<usize>;
}

/// Whether a worker's loop is known to run.
#[derive(Debug)]
enum Liveness {
    /// It answered last at `answered`.
    Idle { answered: Instant },
    /// Asked whether it is free (`seq`) at `since`.
    Asked { seq: u64, since: Instant },
    /// Refused a connection; in turn again at `until`.
    HeldOut { until: Instant },
}

/// A connection handed and not answered yet.
#[derive(Debug)]
struct Pending {
    seq: u64,
    connection: Connection,
    since: Instant,
}

/// One worker's counts (all of them here, so that another count is one more field).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    /// Connections it accepted and has not reported closed (least-connections counts these).
    pub open: usize,
    /// Connections it accepted, in all.
    pub accepted: u64,
}

#[derive(Debug)]
struct Peer {
    /// The worker's servers on the cluster's address (Node's keys), first first.
    keys: Vec<String>,
    liveness: Liveness,
    /// What it was handed and has not answered, oldest first.
    pending: Vec<Pending>,
    counters: Counters,
}

impl Peer {
    /// The connections it holds now: open, and handed but not yet answered.
    fn held(&self) -> usize {
        self.counters.open + self.pending.len()
    }
}

/// The balancer: who listens, whose turn it is, and the connections waiting for a worker.
#[derive(Debug, Default)]
pub struct RoundRobin {
    policy: Policy,
    /// Unanswered connections per worker, at most (`--max-pending`); 0 is taken as 1.
    max_pending: usize,
    peers: HashMap<WorkerId, Peer>,
    /// Every listening worker, the one handed a connection longest ago first.
    turn: VecDeque<WorkerId>,
    /// Accepted connections no worker has yet, first come first.
    waiting: VecDeque<Connection>,
    /// `--sticky ip`: a connection goes to the worker its client address sticks to.
    sticky: bool,
}

impl RoundRobin {
    pub fn new(policy: Policy, max_pending: usize, sticky: bool) -> RoundRobin {
        RoundRobin {
            policy,
            max_pending: max_pending.max(1),
            sticky,
            ..RoundRobin::default()
        }
    }

    /// The worker a connection from `client` must go to, whatever the turn: with `--sticky
    /// ip`, the serving worker the address sticks to; `None` when any may take it.
    pub fn pick(&self, client: Option<IpAddr>, peers: &impl Peers) -> Option<WorkerId> {
        let client = client.filter(|_| self.sticky)?;
        let candidates = self
            .peers
            .keys()
            .filter(|&&worker| peers.serving(worker))
            .filter_map(|&worker| Some((peers.slot(worker)? as u64, worker)));
        sticky::choose(sticky::address_hash(client), candidates)
    }

    fn max_pending(&self) -> usize {
        self.max_pending.max(1)
    }

    /// How many accepted connections wait for a worker.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// How many more connections the workers could be handed now (each up to its
    /// `--max-pending`), less those waiting already: what is worth accepting. The rest wait in
    /// the kernel's queue, which is the line.
    pub fn room(&self) -> usize {
        let max = self.max_pending();
        let free: usize = self
            .peers
            .values()
            .map(|peer| max.saturating_sub(peer.pending.len()))
            .sum();
        free.saturating_sub(self.waiting.len())
    }

    /// `worker`'s counts, if it listens.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn counters(&self, worker: WorkerId) -> Option<Counters> {
        self.peers.get(&worker).map(|peer| peer.counters)
    }

    /// The connections `worker` holds open now, where the primary knows them: under
    /// least-connections, whose workers report each close (those handed and not yet answered
    /// count too); `None` under round-robin, whose workers report none.
    pub fn open_connections(&self, worker: WorkerId) -> Option<u64> {
        (self.policy == Policy::LeastConnections)
            .then(|| self.peers.get(&worker).map_or(0, |peer| peer.held() as u64))
    }

    /// The connections `worker` has accepted (`--max-requests` counts them).
    pub fn served(&self, worker: WorkerId) -> u64 {
        self.peers
            .get(&worker)
            .map_or(0, |peer| peer.counters.accepted)
    }

    /// `worker`'s server `key` listens on the cluster's address: it takes its turn.
    pub fn listening(&mut self, worker: WorkerId, key: String, now: Instant) {
        let peer = self.peers.entry(worker).or_insert_with(|| Peer {
            keys: Vec::new(),
            liveness: Liveness::Idle { answered: now },
            pending: Vec::new(),
            counters: Counters::default(),
        });
        if !peer.keys.contains(&key) {
            peer.keys.push(key);
        }
        if !self.turn.contains(&worker) {
            self.turn.push_back(worker);
        }
    }

    /// `worker` closed its server `key`; without one left it takes no more turns.
    pub fn closed(&mut self, worker: WorkerId, key: &str) {
        let Some(peer) = self.peers.get_mut(&worker) else {
            return;
        };
        peer.keys.retain(|held| held != key);
        if peer.keys.is_empty() {
            self.gone(worker);
        }
    }

    /// `worker` is gone (exited, or closed its last server): the connections it had not
    /// answered for go first to another. A worker that closed its server refuses whatever
    /// reaches it after, so a connection is never served twice.
    pub fn gone(&mut self, worker: WorkerId) {
        self.turn.retain(|&id| id != worker);
        if let Some(peer) = self.peers.remove(&worker) {
            for pending in peer.pending.into_iter().rev() {
                self.waiting.push_front(pending.connection);
            }
        }
    }

    /// A connection was accepted.
    pub fn arrived(&mut self, connection: Connection) {
        self.waiting.push_back(connection);
    }

    /// `worker` answered its message `seq`: `accepted` (or refused) a connection, or told it is
    /// free. False if nothing was waiting for that answer.
    pub fn answered(&mut self, worker: WorkerId, seq: u64, accepted: bool, now: Instant) -> bool {
        let Some(peer) = self.peers.get_mut(&worker) else {
            return false;
        };
        if let Liveness::Asked { seq: asked, .. } = peer.liveness {
            if asked == seq {
                peer.liveness = Liveness::Idle { answered: now };
                return true;
            }
        }
        let Some(index) = peer.pending.iter().position(|pending| pending.seq == seq) else {
            return false;
        };
        let pending = peer.pending.remove(index);
        if accepted {
            peer.counters.open += 1;
            peer.counters.accepted += 1;
            peer.liveness = Liveness::Idle { answered: now };
        } else {
            self.waiting.push_front(pending.connection);
            peer.liveness = Liveness::HeldOut {
                until: now + HOLD_OUT,
            };
        }
        true
    }

    /// `worker` closed a connection it had accepted (herdsman's `closed`). False if it does
    /// not listen.
    pub fn connection_closed(&mut self, worker: WorkerId) -> bool {
        let Some(peer) = self.peers.get_mut(&worker) else {
            return false;
        };
        peer.counters.open = peer.counters.open.saturating_sub(1);
        true
    }

    /// Hands waiting connections to workers whose turn it is, asking those idle too long
    /// whether they are free, and asks the idle ones whose last answer is a [`PULSE`] old.
    /// Returns when to look again: for connections left waiting for an answer or a held-out
    /// worker, or for the next pulse.
    pub fn dispatch(&mut self, now: Instant, peers: &mut impl Peers) -> Option<Instant> {
        let again = loop {
            if self.waiting.is_empty() {
                break None;
            }
            let client = self.waiting.front().filter(|_| self.sticky).and_then(|c| {
                let address = socket2::SockRef::from(&**c).peer_addr().ok()?;
                Some(address.as_socket()?.ip())
            });
            let only = self.pick(client, peers);
            match self.next_worker(now, peers, only) {
                Ok(index) => self.hand(index, now, peers),
                Err(again) => break again,
            }
        };
        let pulse = self.pulse(now, peers);
        again.into_iter().chain(pulse).min()
    }

    /// Asks each serving idle worker whose last answer is a [`PULSE`] old whether it is free;
    /// returns when the next one will be.
    fn pulse(&mut self, now: Instant, peers: &mut impl Peers) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut gone = Vec::new();
        for &worker in &self.turn {
            let Some(peer) = self.peers.get_mut(&worker) else {
                continue;
            };
            let Liveness::Idle { answered } = peer.liveness else {
                continue;
            };
            if !peer.pending.is_empty() || !peers.serving(worker) {
                continue;
            }
            if now.saturating_duration_since(answered) < PULSE {
                next = next.into_iter().chain([answered + PULSE]).min();
                continue;
            }
            match peers.send(worker, Handoff::Question) {
                Some(seq) => peer.liveness = Liveness::Asked { seq, since: now },
                None => gone.push(worker),
            }
        }
        for worker in gone {
            self.gone(worker);
        }
        next
    }

    /// The pick: positions in `turn` in the order the workers are offered the next connection.
    /// Round-robin: in turn. Least-connections: fewest held first, ties in turn.
    fn candidates(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.turn.len()).collect();
        if self.policy == Policy::LeastConnections {
            let held = |index: &usize| {
                self.peers
                    .get(&self.turn[*index])
                    .map_or(usize::MAX, Peer::held)
            };
            order.sort_by_key(held);
        }
        order
    }

    /// The position in `turn` of the worker that gets the next connection (`only` that one,
    /// when given); or, if none may yet, when to look again (after asking the idle ones whether
    /// they are free).
    fn next_worker(
        &mut self,
        now: Instant,
        peers: &mut impl Peers,
        only: Option<WorkerId>,
    ) -> Result<usize, Option<Instant>> {
        let mut again: Option<Instant> = None;
        let mut wait = |at: Instant| again = Some(again.map_or(at, |again| again.min(at)));
        let mut blocked = false;
        let mut gone = Vec::new();
        let mut chosen = None;
        let max_pending = self.max_pending();
        for index in self.candidates() {
            let worker = self.turn[index];
            if !peers.serving(worker) || only.is_some_and(|only| only != worker) {
                continue;
            }
            let Some(peer) = self.peers.get_mut(&worker) else {
                continue;
            };
            if peer.pending.len() >= max_pending {
                continue;
            }
            // Handed some and not yet answered (with --max-pending above 1): it takes more
            // while its oldest is recent; one it sits on is not a free loop.
            if let Some(oldest) = peer.pending.first() {
                if now.saturating_duration_since(oldest.since) < PATIENCE && !blocked {
                    chosen = Some(index);
                    break;
                }
                continue;
            }
            match peer.liveness {
                Liveness::HeldOut { until } if now < until => {
                    wait(until);
                    continue;
                }
                Liveness::Idle { answered } if now.saturating_duration_since(answered) <= FRESH => {
                    if !blocked {
                        chosen = Some(index);
                        break;
                    }
                    continue;
                }
                Liveness::Idle { .. } | Liveness::HeldOut { .. } => {
                    let Some(seq) = peers.send(worker, Handoff::Question) else {
                        gone.push(worker);
                        continue;
                    };
                    peer.liveness = Liveness::Asked { seq, since: now };
                }
                Liveness::Asked { .. } => {}
            }
            if let Liveness::Asked { since, .. } = peer.liveness {
                if now.saturating_duration_since(since) < PATIENCE {
                    blocked = true;
                    wait(since + PATIENCE);
                }
            }
        }
        for worker in gone {
            self.gone(worker);
        }
        chosen.ok_or(again)
    }

    /// Hands the first waiting connection to the worker at `index` in turn, which goes to the
    /// back of the turn.
    fn hand(&mut self, index: usize, now: Instant, peers: &mut impl Peers) {
        let (Some(worker), Some(connection)) = (self.turn.remove(index), self.waiting.pop_front())
        else {
            return;
        };
        let Some(peer) = self.peers.get_mut(&worker) else {
            self.waiting.push_front(connection);
            return;
        };
        let key = &peer.keys[0];
        let handoff = Handoff::Connection {
            key,
            connection: &connection,
        };
        match peers.send(worker, handoff) {
            Some(seq) => {
                peer.pending.push(Pending {
                    seq,
                    connection,
                    since: now,
                });
                self.turn.push_back(worker);
            }
            None => {
                self.waiting.push_front(connection);
                self.gone(worker);
            }
        }
    }
}

#[cfg(test)]
#[path = "round_robin_tests.rs"]
mod tests;
