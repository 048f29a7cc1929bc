//! Round-robin (`--balance round-robin`), as Node's primary does it: the primary accepts each
//! connection on the cluster's socket and hands it to a free worker with Node's `newconn`
//! (the socket rides on the message as SCM_RIGHTS, `crate::ipc`), keeping its own copy until the
//! worker answers `accepted`. A worker has at most one connection unanswered; one it refuses (its
//! server is closing, or at `maxConnections`) goes to another worker, and so does one handed to a
//! worker that dies before answering: nothing is lost. Workers take turns in Node's order: the
//! one that has been free longest goes first. A worker gets connections once it listens (its
//! `queryServer` for the cluster's address) and while the lifecycle says it serves: not while it
//! starts, drains or is retired.
//!
//! One difference from Node, on purpose. Node counts a worker free as soon as it answered, so a
//! worker that went into CPU work just after its last answer still gets the next connection,
//! which then waits for the work to end. Here an answer proves a free event loop for [`FRESH`]
//! only: a worker idle for longer is first asked a question its loop answers at once if it runs
//! (a `newconn` for a server it does not have, which it refuses and closes; Node's
//! `cluster/child.js`), and a connection waits for the answer of the worker whose turn it is, for
//! [`PATIENCE`] at most; a worker that has not answered by then is passed over until it does.
//! Idle workers are asked every [`PULSE`] too, so a worker that went into CPU work is passed over
//! from at most `PULSE + PATIENCE` after, whether or not connections came meanwhile. Under load
//! every worker answers all the time, so no questions are asked; an idle cluster pays one round
//! trip to the worker, and ten questions a second per worker. The state here is the balancer's alone (no I/O): the executor
//! accepts, sends through [`Peers`] and hands the answers in (`primary::node`).
//!
//! Sticky (`--sticky ip`, [`RoundRobin::sticky`]): the connection first in line goes to the
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

/// An accepted connection. Shared with the channel that sends it (no `dup` per handoff): the
/// balancer keeps its share until the worker accepted, so that a connection a worker refuses
/// or dies holding goes to another.
pub type Connection = Arc<OwnedFd>;

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

#[derive(Debug)]
enum State {
    /// Free since its last answer, at `answered`.
    Idle { answered: Instant },
    /// Asked whether it is free (`seq`) at `since`.
    Asked { seq: u64, since: Instant },
    /// Handed `connection` (`seq`); out of turn until it answers.
    Handed { seq: u64, connection: Connection },
    /// Refused a connection; in turn again at `until`.
    HeldOut { until: Instant },
}

#[derive(Debug)]
struct Peer {
    /// The worker's servers on the cluster's address (Node's keys), first first.
    keys: Vec<String>,
    state: State,
    /// Connections it accepted (`--max-requests` counts them).
    served: u64,
}

/// The balancer: who listens, whose turn it is, and the connections waiting for a worker.
#[derive(Debug, Default)]
pub struct RoundRobin {
    peers: HashMap<WorkerId, Peer>,
    /// Workers not holding an unanswered connection, in turn order.
    turn: VecDeque<WorkerId>,
    /// Accepted connections no worker has yet, first come first.
    waiting: VecDeque<Connection>,
    /// `--sticky ip`: a connection goes to the worker its client address sticks to.
    sticky: bool,
}

impl RoundRobin {
    /// A balancer for `--sticky ip`.
    pub fn sticky() -> Self {
        RoundRobin {
            sticky: true,
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

    /// How many accepted connections wait for a worker.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// The connections `worker` has accepted.
    pub fn served(&self, worker: WorkerId) -> u64 {
        self.peers.get(&worker).map_or(0, |peer| peer.served)
    }

    /// `worker`'s server `key` listens on the cluster's address: it takes its turn.
    pub fn listening(&mut self, worker: WorkerId, key: String, now: Instant) {
        let peer = self.peers.entry(worker).or_insert_with(|| Peer {
            keys: Vec::new(),
            state: State::Idle { answered: now },
            served: 0,
        });
        if !peer.keys.contains(&key) {
            peer.keys.push(key);
        }
        if !self.turn.contains(&worker) && !matches!(peer.state, State::Handed { .. }) {
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

    /// `worker` is gone (exited, or closed its last server): a connection it had not answered
    /// for goes first to another. A worker that closed its server refuses whatever reaches it
    /// after, so the connection is never served twice.
    pub fn gone(&mut self, worker: WorkerId) {
        self.turn.retain(|&id| id != worker);
        if let Some(Peer {
            state: State::Handed { connection, .. },
            ..
        }) = self.peers.remove(&worker)
        {
            self.waiting.push_front(connection);
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
        match &peer.state {
            State::Asked { seq: asked, .. } if *asked == seq => {
                peer.state = State::Idle { answered: now };
            }
            State::Handed { seq: handed, .. } if *handed == seq => {
                let State::Handed { connection, .. } =
                    std::mem::replace(&mut peer.state, State::Idle { answered: now })
                else {
                    unreachable!("matched above");
                };
                if accepted {
                    peer.served += 1;
                } else {
                    self.waiting.push_front(connection);
                    peer.state = State::HeldOut {
                        until: now + HOLD_OUT,
                    };
                }
                self.turn.push_back(worker);
            }
            _ => return false,
        }
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
                Ok(index) => self.hand(index, peers),
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
            let State::Idle { answered } = peer.state else {
                continue;
            };
            if !peers.serving(worker) {
                continue;
            }
            if now.saturating_duration_since(answered) < PULSE {
                next = next.into_iter().chain([answered + PULSE]).min();
                continue;
            }
            match peers.send(worker, Handoff::Question) {
                Some(seq) => peer.state = State::Asked { seq, since: now },
                None => gone.push(worker),
            }
        }
        for worker in gone {
            self.gone(worker);
        }
        next
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
        for (index, &worker) in self.turn.iter().enumerate() {
            if !peers.serving(worker) || only.is_some_and(|only| only != worker) {
                continue;
            }
            let Some(peer) = self.peers.get_mut(&worker) else {
                continue;
            };
            match peer.state {
                State::HeldOut { until } if now < until => {
                    wait(until);
                    continue;
                }
                State::Idle { answered } if now.saturating_duration_since(answered) <= FRESH => {
                    if !blocked {
                        chosen = Some(index);
                        break;
                    }
                    continue;
                }
                State::Idle { .. } | State::HeldOut { .. } => {
                    let Some(seq) = peers.send(worker, Handoff::Question) else {
                        gone.push(worker);
                        continue;
                    };
                    peer.state = State::Asked { seq, since: now };
                }
                State::Asked { .. } | State::Handed { .. } => {}
            }
            if let State::Asked { since, .. } = peer.state {
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

    /// Hands the first waiting connection to the worker at `index` in turn.
    fn hand(&mut self, index: usize, peers: &mut impl Peers) {
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
            Some(seq) => peer.state = State::Handed { seq, connection },
            None => {
                self.waiting.push_front(connection);
                self.gone(worker);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// Records what was sent; every worker serves unless told otherwise.
    #[derive(Default)]
    struct Fake {
        sent: Vec<(WorkerId, bool)>,
        seq: u64,
        not_serving: HashSet<WorkerId>,
        closed: HashSet<WorkerId>,
    }

    impl Peers for Fake {
        fn send(&mut self, worker: WorkerId, handoff: Handoff<'_>) -> Option<u64> {
            if self.closed.contains(&worker) {
                return None;
            }
            self.sent
                .push((worker, matches!(handoff, Handoff::Connection { .. })));
            self.seq += 1;
            Some(self.seq)
        }

        fn serving(&self, worker: WorkerId) -> bool {
            !self.not_serving.contains(&worker)
        }

        fn slot(&self, worker: WorkerId) -> Option<usize> {
            Some(worker.0 as usize)
        }
    }

    fn connection() -> Connection {
        Arc::new(std::fs::File::open("/dev/null").unwrap().into())
    }

    const A: WorkerId = WorkerId(1);
    const B: WorkerId = WorkerId(2);

    fn two_workers(now: Instant) -> RoundRobin {
        let mut balancer = RoundRobin::default();
        balancer.listening(A, "k".into(), now);
        balancer.listening(B, "k".into(), now);
        balancer
    }

    #[test]
    fn fresh_workers_take_turns_one_unanswered_connection_each() {
        let now = Instant::now();
        let (mut balancer, mut fake) = (two_workers(now), Fake::default());
        for _ in 0..3 {
            balancer.arrived(connection());
        }
        assert_eq!(balancer.dispatch(now, &mut fake), None);
        assert_eq!(fake.sent, [(A, true), (B, true)]);
        assert_eq!(balancer.waiting(), 1, "each worker holds one unanswered");
        assert!(balancer.answered(B, 2, true, now));
        balancer.dispatch(now, &mut fake);
        assert_eq!(fake.sent[2], (B, true), "the first to answer is next");
        assert!(
            !balancer.answered(B, 1, true, now),
            "not the seq it was sent"
        );
    }

    #[test]
    fn a_worker_idle_too_long_is_asked_first_and_one_that_does_not_answer_is_passed_over() {
        let start = Instant::now();
        let (mut balancer, mut fake) = (two_workers(start), Fake::default());
        let later = start + FRESH * 2;
        balancer.arrived(connection());
        let again = balancer.dispatch(later, &mut fake);
        assert_eq!(
            fake.sent,
            [(A, false), (B, false)],
            "both asked, nothing handed"
        );
        assert_eq!(again, Some(later + PATIENCE));
        // B answers first, but it is A's turn: the connection waits for A's patience (and B
        // is asked again at its next pulse, which comes first).
        assert!(balancer.answered(B, 2, false, later));
        assert_eq!(balancer.dispatch(later, &mut fake), Some(later + PULSE));
        // A never answers: past the patience, B gets it.
        balancer.dispatch(later + PATIENCE, &mut fake);
        assert_eq!(
            fake.sent[2],
            (B, false),
            "B's answer is stale by then: asked again"
        );
        assert!(balancer.answered(B, 3, false, later + PATIENCE));
        balancer.dispatch(later + PATIENCE, &mut fake);
        assert_eq!(fake.sent[3], (B, true));
        assert_eq!(balancer.waiting(), 0);
    }

    #[test]
    fn idle_workers_are_asked_every_pulse_and_a_silent_one_is_passed_over_at_once() {
        let start = Instant::now();
        let (mut balancer, mut fake) = (two_workers(start), Fake::default());
        assert_eq!(balancer.dispatch(start, &mut fake), Some(start + PULSE));
        assert_eq!(fake.sent, []);
        let pulse = start + PULSE;
        assert_eq!(
            balancer.dispatch(pulse, &mut fake),
            None,
            "both asked: answers wake it"
        );
        assert_eq!(fake.sent, [(A, false), (B, false)]);
        assert!(balancer.answered(B, 2, false, pulse));
        // A stays silent (stuck in CPU work): past its patience a connection goes to B at once.
        let later = pulse + PATIENCE;
        balancer.arrived(connection());
        balancer.dispatch(later, &mut fake);
        assert_eq!(fake.sent[2], (B, false), "B's answer is stale: asked first");
        assert!(balancer.answered(B, 3, false, later));
        balancer.dispatch(later, &mut fake);
        assert_eq!(fake.sent[3], (B, true));
    }

    #[test]
    fn a_refused_or_orphaned_connection_goes_to_another_worker() {
        let now = Instant::now();
        let (mut balancer, mut fake) = (two_workers(now), Fake::default());
        balancer.arrived(connection());
        balancer.dispatch(now, &mut fake);
        assert!(balancer.answered(A, 1, false, now));
        balancer.dispatch(now, &mut fake);
        assert_eq!(fake.sent[1], (B, true), "refused by A, held out: B");
        balancer.gone(B);
        assert_eq!(
            balancer.waiting(),
            1,
            "B died before answering: back in line"
        );
        let again = balancer.dispatch(now, &mut fake);
        assert_eq!(again, Some(now + HOLD_OUT), "A is held out a while");
        balancer.dispatch(now + HOLD_OUT, &mut fake);
        assert_eq!(
            fake.sent[2],
            (A, false),
            "asked first: its last answer is stale"
        );
    }

    #[test]
    fn workers_that_do_not_serve_or_closed_their_server_get_nothing() {
        let now = Instant::now();
        let (mut balancer, mut fake) = (two_workers(now), Fake::default());
        fake.not_serving.insert(A);
        balancer.arrived(connection());
        balancer.arrived(connection());
        balancer.dispatch(now, &mut fake);
        assert_eq!(fake.sent, [(B, true)]);
        balancer.closed(B, "k");
        assert_eq!(
            balancer.waiting(),
            2,
            "B closed before answering: its connection waits"
        );
        fake.closed.insert(A);
        fake.not_serving.clear();
        assert_eq!(balancer.dispatch(now, &mut fake), None);
        assert_eq!(
            balancer.waiting(),
            2,
            "A's channel is closed: no one to hand to"
        );
    }

    /// An accepted connection from `source` (127.0.0.X), with its client end.
    fn connection_from(last: u8) -> (Connection, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        let source = std::net::SocketAddr::from(([127, 0, 0, last], 0));
        client.bind(&source.into()).unwrap();
        client
            .connect(&listener.local_addr().unwrap().into())
            .unwrap();
        let (accepted, _) = listener.accept().unwrap();
        (Arc::new(accepted.into()), client.into())
    }

    #[test]
    fn sticky_hands_a_client_address_to_its_worker_whatever_the_turn() {
        let now = Instant::now();
        let mut balancer = RoundRobin::sticky();
        balancer.listening(A, "k".into(), now);
        balancer.listening(B, "k".into(), now);
        let mut fake = Fake::default();
        let owner = balancer
            .pick(Some(IpAddr::from([127, 0, 0, 1])), &fake)
            .unwrap();
        let mut clients = Vec::new();
        for round in 0..4 {
            let (connection, client) = connection_from(1);
            clients.push(client);
            balancer.arrived(connection);
            balancer.dispatch(now, &mut fake);
            let (worker, handed) = *fake.sent.last().unwrap();
            assert_eq!((worker, handed), (owner, true), "round {round}");
            assert!(balancer.answered(owner, fake.seq, true, now));
        }
        // While its worker holds an unanswered connection, the next one from it waits.
        let (first, _a) = connection_from(1);
        let (second, _b) = connection_from(1);
        balancer.arrived(first);
        balancer.arrived(second);
        balancer.dispatch(now, &mut fake);
        assert_eq!(
            balancer.waiting(),
            1,
            "waits for {owner:?}, not the other worker"
        );
        assert!(balancer.answered(owner, fake.seq, true, now));
        balancer.dispatch(now, &mut fake);
        assert_eq!(*fake.sent.last().unwrap(), (owner, true));
        // Its worker goes: the address's next choice serves it.
        fake.not_serving.insert(owner);
        let other = balancer
            .pick(Some(IpAddr::from([127, 0, 0, 1])), &fake)
            .unwrap();
        assert_ne!(other, owner);
        // Not sticky: no one in particular.
        assert_eq!(
            two_workers(now).pick(Some(IpAddr::from([127, 0, 0, 1])), &fake),
            None
        );
    }
}
