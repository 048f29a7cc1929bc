//! The listening sockets, steering (plain and sticky), the queue readings and the port group's
//! watch, on real sockets of this process.

use super::*;
use std::net::IpAddr;

const A: Side = Side(0);
const B: Side = Side(1);

#[test]
fn reuseport_binds_two_sockets_per_slot_on_one_port() {
    let listeners = Listeners::bind("127.0.0.1:0".parse().unwrap(), Balance::Reuseport, 3).unwrap();
    let port = listeners.local_addr().port();
    assert_ne!(port, 0);
    let mut fds: Vec<_> = (1..=3)
        .flat_map(|slot| [listeners.fd_for(slot, A), listeners.fd_for(slot, B)])
        .collect();
    fds.dedup();
    assert_eq!(fds.len(), 6);
    assert_eq!(A.other(), B);
    for socket in &listeners.sockets {
        assert_eq!(
            socket.local_addr().unwrap().as_socket().unwrap().port(),
            port
        );
    }
}

/// Connects `count` times and counts, per socket, the connections waiting in it.
fn queued_per_slot(listeners: &Listeners, count: usize) -> Vec<usize> {
    let clients: Vec<_> = (0..count)
        .map(|_| std::net::TcpStream::connect(listeners.local_addr()).unwrap())
        .collect();
    let queued = take_queued_per_slot(listeners, count);
    drop(clients);
    queued
}

/// Accepts what waits (up to `count` each) and counts it, per socket.
fn take_queued_per_slot(listeners: &Listeners, count: usize) -> Vec<usize> {
    listeners
        .sockets
        .iter()
        .map(|socket| {
            socket.set_nonblocking(true).unwrap();
            std::iter::from_fn(|| socket.accept().ok())
                .take(count)
                .count()
        })
        .collect()
}

#[test]
fn reuseport_steers_new_connections_to_the_chosen_sockets() {
    let mut listeners =
        Listeners::bind("127.0.0.1:0".parse().unwrap(), Balance::Reuseport, 3).unwrap();
    listeners.steer(&[(2, B)]).unwrap();
    assert_eq!(queued_per_slot(&listeners, 30), [0, 0, 0, 30, 0, 0]);
    listeners.steer(&[(1, A), (3, A)]).unwrap();
    let queued = queued_per_slot(&listeners, 60);
    assert_eq!(queued[0] + queued[4], 60, "{queued:?}");
    assert!(
        queued[0] > 0 && queued[4] > 0,
        "both sockets get connections: {queued:?}"
    );
    listeners.steer(&[]).unwrap();
    let queued = queued_per_slot(&listeners, 120);
    assert_eq!(queued.iter().sum::<usize>(), 120);
    assert!(
        queued.iter().all(|&n| n > 0),
        "unsteered, the kernel hashes over all: {queued:?}"
    );
}

/// Connects from `source` (a loopback address) `count` times; the index of every socket
/// that got one of the connections.
fn sockets_reached_from(listeners: &Listeners, source: [u8; 4], count: usize) -> Vec<usize> {
    let target = listeners.relay_address();
    sockets_reached_at(listeners, IpAddr::from(source), target, count)
}

/// [`sockets_reached_from`] for any `source`, connecting to `target`.
fn sockets_reached_at(
    listeners: &Listeners,
    source: IpAddr,
    target: SocketAddr,
    count: usize,
) -> Vec<usize> {
    let clients: Vec<_> = (0..count)
        .map(|_| {
            let socket = Socket::new(Domain::for_address(target), Type::STREAM, None).unwrap();
            socket.bind(&SocketAddr::new(source, 0).into()).unwrap();
            socket.connect(&target.into()).unwrap();
            socket
        })
        .collect();
    let queued = take_queued_per_slot(listeners, count);
    drop(clients);
    (0..queued.len())
        .filter(|&index| queued[index] > 0)
        .collect()
}

#[test]
fn sticky_steering_sends_one_source_to_one_socket_and_a_departed_slots_own_elsewhere() {
    let mut listeners =
        Listeners::bind("127.0.0.1:0".parse().unwrap(), Balance::Reuseport, 3).unwrap();
    listeners.set_sticky(true);
    listeners.steer(&[(1, A), (2, A), (3, A)]).unwrap();
    let owners = listeners.sticky_owners(&[(1, A), (2, A), (3, A)]).unwrap();
    let mut reached = Vec::new();
    for last in 1..=9 {
        let sockets = sockets_reached_from(&listeners, [127, 0, 0, last], 20);
        assert_eq!(sockets.len(), 1, "127.0.0.{last}: {sockets:?}");
        // The program's bucket is the one worked out in Rust.
        let word = sticky::address_word(Ipv4Addr::new(127, 0, 0, last).into());
        assert_eq!(sockets[0], owners[sticky::bucket(word) as usize] as usize);
        reached.push(sockets[0]);
    }
    let mut distinct = reached.clone();
    distinct.sort();
    distinct.dedup();
    assert!(
        distinct.len() >= 2,
        "nine sources over three slots: {reached:?}"
    );
    // Slot 2 goes: only its sources move; its replacement on the other side gets them back.
    listeners.steer(&[(1, A), (3, A)]).unwrap();
    let without: Vec<usize> = (1..=9)
        .map(|last| sockets_reached_from(&listeners, [127, 0, 0, last], 5)[0])
        .collect();
    listeners.steer(&[(1, A), (2, B), (3, A)]).unwrap();
    let back: Vec<usize> = (1..=9)
        .map(|last| sockets_reached_from(&listeners, [127, 0, 0, last], 5)[0])
        .collect();
    for source in 0..9 {
        match reached[source] {
            2 => {
                assert_ne!(without[source], 2);
                assert_eq!(back[source], 3, "slot 2's other side");
            }
            other => {
                assert_eq!(without[source], other);
                assert_eq!(back[source], other);
            }
        }
    }
    // Off again: the plain program, connections from one source spread.
    listeners.set_sticky(false);
    listeners.steer(&[(1, A), (3, A)]).unwrap();
    assert_eq!(sockets_reached_from(&listeners, [127, 0, 0, 1], 60), [0, 4]);
}

/// On a dual-stack socket the program reads IPv6 sources (::1) and IPv4 ones (127.0.0.N, as
/// IPv4 packets), each into the bucket worked out in Rust.
#[test]
fn sticky_steering_reads_ipv6_and_ipv4_sources_of_a_dual_stack_socket() {
    let Ok(mut listeners) = Listeners::bind("[::]:0".parse().unwrap(), Balance::Reuseport, 4)
    else {
        eprintln!("no IPv6 here: skipped");
        return;
    };
    listeners.set_sticky(true);
    let targets = [(1, A), (2, A), (3, A), (4, A)];
    listeners.steer(&targets).unwrap();
    let owners = listeners.sticky_owners(&targets).unwrap();
    let port = listeners.local_addr().port();
    let v6 = IpAddr::from(Ipv6Addr::LOCALHOST);
    let reached = sockets_reached_at(&listeners, v6, SocketAddr::new(v6, port), 10);
    let bucket = sticky::bucket(sticky::address_word(v6));
    assert_eq!(reached, [owners[bucket as usize] as usize], "::1");
    for last in 1..=9 {
        let v4 = IpAddr::from([127, 0, 0, last]);
        let reached =
            sockets_reached_at(&listeners, v4, SocketAddr::from(([127, 0, 0, 1], port)), 5);
        let bucket = sticky::bucket(sticky::address_word(v4));
        assert_eq!(
            reached,
            [owners[bucket as usize] as usize],
            "127.0.0.{last}"
        );
    }
}

#[test]
fn reports_the_accept_queue_of_a_socket() {
    let mut listeners =
        Listeners::bind("127.0.0.1:0".parse().unwrap(), Balance::Reuseport, 2).unwrap();
    listeners.steer(&[(2, B)]).unwrap();
    assert_eq!(listeners.queued(2, B), Some(0));
    let clients: Vec<_> = (0..3)
        .map(|_| std::net::TcpStream::connect(listeners.local_addr()).unwrap())
        .collect();
    assert_eq!(listeners.queued(1, A), Some(0));
    assert_eq!(listeners.queued(2, B), Some(3));
    drop(clients);
    let shared = Listeners::bind("127.0.0.1:0".parse().unwrap(), Balance::Shared, 2).unwrap();
    assert_eq!(shared.queued(1, A), None);
}

#[test]
fn takes_what_waits_on_a_socket_and_gives_it_back_its_mode() {
    let mut listeners =
        Listeners::bind("0.0.0.0:0".parse().unwrap(), Balance::Reuseport, 2).unwrap();
    let relay = listeners.relay_address();
    assert_eq!(relay.ip(), Ipv4Addr::LOCALHOST);
    assert_eq!(relay.port(), listeners.local_addr().port());
    listeners.steer(&[(2, B)]).unwrap();
    let clients: Vec<_> = (0..3)
        .map(|_| std::net::TcpStream::connect(relay).unwrap())
        .collect();
    assert_eq!(listeners.queued(2, B), Some(3));
    assert_eq!(listeners.take_queued(2, B, 2).unwrap().len(), 2);
    assert_eq!(listeners.take_queued(2, B, 10).unwrap().len(), 1);
    assert_eq!(listeners.take_queued(2, B, 10).unwrap().len(), 0);
    assert_eq!(listeners.queued(2, B), Some(0));
    let socket = &listeners.sockets[listeners.index(2, B)];
    assert!(!socket.nonblocking().unwrap(), "blocking again");
    assert_eq!(listeners.slots(), 2);
    assert_eq!(listeners.steered_to(), [(2, B)]);
    drop(clients);
}

#[test]
fn once_closed_new_connections_are_refused() {
    let mut listeners =
        Listeners::bind("127.0.0.1:0".parse().unwrap(), Balance::Reuseport, 2).unwrap();
    let address = listeners.local_addr();
    std::net::TcpStream::connect(address).expect("listening");
    listeners.close();
    assert_eq!(listeners.fd_for(1, A), None);
    assert_eq!(listeners.queued(1, A), None);
    listeners.steer(&[(1, A)]).expect("nothing to steer");
    let refused = std::net::TcpStream::connect(address).unwrap_err();
    assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
}

/// A socket of this process on `port` with SO_REUSEPORT: foreign to the listeners.
fn foreign_listener(port: u16) -> Socket {
    bind_one(SocketAddr::from(([127, 0, 0, 1], port)), Balance::Reuseport).unwrap()
}

#[test]
fn a_foreign_reuseport_socket_is_refused_at_start_and_reported_later() {
    let foreign = foreign_listener(0);
    let address = foreign.local_addr().unwrap().as_socket().unwrap();
    let error = Listeners::bind(address, Balance::Reuseport, 2).unwrap_err();
    let message = error.to_string();
    let me = format!("pid {} (`", std::process::id());
    assert!(message.contains(&me), "{message}");
    assert!(
        message.contains("with SO_REUSEPORT too, in the cluster's port group"),
        "{message}"
    );
    drop(foreign);

    let mut listeners = Listeners::bind(address, Balance::Reuseport, 2).unwrap();
    assert!(listeners.check_group().unwrap().is_empty());
    let foreign = foreign_listener(address.port());
    let change = listeners.check_group().unwrap();
    assert_eq!(change.joined.len(), 1);
    assert!(change.joined[0].in_group);
    assert_eq!(change.joined[0].owner().unwrap().pid, std::process::id());
    assert_eq!(listeners.foreign().len(), 1);
    assert!(listeners.check_group().unwrap().is_empty(), "reported once");
    let refused = listeners.ensure_slots(3).unwrap_err().to_string();
    assert!(refused.contains("no socket is added while"), "{refused}");
    assert_eq!(listeners.sockets.len(), 4);
    // Behind the cluster's sockets, it gets no connection while steered.
    listeners.steer(&[(1, A)]).unwrap();
    assert_eq!(queued_per_slot(&listeners, 20), [20, 0, 0, 0]);
    drop(foreign);
    let change = listeners.check_group().unwrap();
    assert_eq!((change.joined.len(), change.left.len()), (0, 1));
    assert!(listeners.foreign().is_empty());
    listeners.ensure_slots(3).unwrap();
    assert_eq!(listeners.sockets.len(), 6);
    // shutdown() by any holder stops one of the cluster's own sockets.
    listeners.sockets[3]
        .shutdown(std::net::Shutdown::Read)
        .unwrap();
    let change = listeners.check_group().unwrap();
    assert_eq!(change.lost, [2]);
    assert!(listeners.check_group().unwrap().is_empty(), "reported once");
}

#[test]
fn shared_hands_every_slot_the_same_socket() {
    let listeners = Listeners::bind("127.0.0.1:0".parse().unwrap(), Balance::Shared, 4).unwrap();
    assert_eq!(
        listeners.fd_for(1, Side::default()),
        listeners.fd_for(4, Side::default().other())
    );
}

#[test]
fn address_in_use_says_what_to_do() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let error = Listeners::bind(taken.local_addr().unwrap(), Balance::Shared, 1).unwrap_err();
    let message = error.to_string();
    assert!(message.starts_with(&format!("cannot listen on {}", taken.local_addr().unwrap())));
    assert!(message.contains("pick another --port"), "{message}");
}
