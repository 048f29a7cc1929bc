//! The balancer's unit tests (`round_robin`): plain state, a fake `Peers`.

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

#[test]
fn max_pending_bounds_what_a_worker_is_handed_unanswered() {
    let now = Instant::now();
    let mut balancer = RoundRobin::new(Policy::RoundRobin, 2, false);
    balancer.listening(A, HANDOFF_KEY.into(), now);
    let mut fake = Fake::default();
    assert_eq!(balancer.room(), 2, "one worker, two unanswered at most");
    for _ in 0..3 {
        balancer.arrived(connection());
    }
    balancer.dispatch(now, &mut fake);
    assert_eq!(
        fake.sent,
        [(A, true), (A, true)],
        "two handed, none answered"
    );
    assert_eq!((balancer.waiting(), balancer.room()), (1, 0));
    assert!(balancer.answered(A, 1, true, now));
    balancer.dispatch(now, &mut fake);
    assert_eq!(fake.sent[2], (A, true), "one answered: room for the third");
    assert_eq!(balancer.counters(A).unwrap().accepted, 1);
}

#[test]
fn a_worker_that_dies_holding_several_gives_them_all_back_in_order() {
    let now = Instant::now();
    let mut balancer = RoundRobin::new(Policy::RoundRobin, 3, false);
    balancer.listening(A, HANDOFF_KEY.into(), now);
    let mut fake = Fake::default();
    let connections: Vec<Connection> = (0..3).map(|_| connection()).collect();
    for connection in &connections {
        balancer.arrived(connection.clone());
    }
    balancer.dispatch(now, &mut fake);
    assert_eq!(balancer.waiting(), 0);
    balancer.gone(A);
    assert_eq!(balancer.waiting(), 3, "nothing lost");
    let back: Vec<*const OwnedFd> = balancer.waiting.iter().map(Arc::as_ptr).collect();
    let sent: Vec<*const OwnedFd> = connections.iter().map(Arc::as_ptr).collect();
    assert_eq!(back, sent, "first come, first handed again");
}

#[test]
fn least_connections_takes_the_worker_holding_fewest_and_ties_in_turn() {
    let now = Instant::now();
    let mut balancer = RoundRobin::new(Policy::LeastConnections, 1, false);
    balancer.listening(A, HANDOFF_KEY.into(), now);
    balancer.listening(B, HANDOFF_KEY.into(), now);
    let mut fake = Fake::default();
    // A takes two and keeps them open; B takes one and closes it.
    let hand = |balancer: &mut RoundRobin, fake: &mut Fake| {
        balancer.arrived(connection());
        balancer.dispatch(now, fake);
        let (worker, _) = *fake.sent.last().unwrap();
        assert!(balancer.answered(worker, fake.seq, true, now));
        worker
    };
    assert_eq!(hand(&mut balancer, &mut fake), A, "a tie: in turn");
    assert_eq!(hand(&mut balancer, &mut fake), B, "A holds one: B");
    assert!(balancer.connection_closed(B));
    assert_eq!(hand(&mut balancer, &mut fake), B, "A holds one, B none");
    assert_eq!(hand(&mut balancer, &mut fake), A, "a tie again: A's turn");
    assert_eq!(hand(&mut balancer, &mut fake), B, "A holds two, B one");
    assert_eq!(balancer.counters(A).unwrap().open, 2);
    assert_eq!(balancer.counters(B).unwrap().open, 2);
    assert!(balancer.connection_closed(A));
    assert!(balancer.connection_closed(A));
    assert_eq!(hand(&mut balancer, &mut fake), A);
    assert_eq!(hand(&mut balancer, &mut fake), A, "A holds one, B two");
}

/// An accepted connection from `source` (127.0.0.X), with its client end.
fn connection_from(last: u8) -> (Connection, std::net::TcpStream) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let client = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
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
    let mut balancer = RoundRobin::new(Policy::RoundRobin, 1, true);
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
