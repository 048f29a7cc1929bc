//! The listening sockets the primary binds and hands to workers.
//!
//! `shared`: one socket, inherited by every worker. `reuseport`: two `SO_REUSEPORT` sockets per
//! slot, its two [`Side`]s, steered to the sockets of ready workers (see `reuseport`). A worker
//! that replaces another (reload, restart) takes the other side of the slot, so that new
//! connections can be steered to it while the old worker finishes the ones already in its own
//! queue, and the old worker is stopped only once that queue is empty. What waits on a socket
//! whose worker died anyway is taken by the primary and relayed ([`Listeners::take_queued`],
//! `primary::rescue`).
//!
//! The primary keeps every socket open until the cluster stops: a connection that waits in a
//! listening socket's queue is reset by the kernel when the last fd of that socket closes, so a
//! worker that crashes or restarts must never take the only copy with it. When the cluster
//! stops, the primary closes its copies ([`Listeners::close`]): once the draining workers let
//! go of theirs, new connections are refused at once, instead of waiting in a queue that no
//! one will serve until the primary exits.
//!
//! Sockets are left in blocking mode, as systemd hands them over: the mode belongs to the shared
//! open file description, and each worker's runtime sets the mode it wants.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};

use socket2::{Domain, Protocol, Socket, Type};

use crate::config::Balance;

mod reuseport;

/// The listen backlog asked for; the kernel caps it at `net.core.somaxconn`.
const BACKLOG: i32 = 2048;

/// Which of a slot's two reuseport sockets a worker uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Side(u8);

impl Side {
    /// Both sides of a slot.
    pub const BOTH: [Side; 2] = [Side(0), Side(1)];

    /// The side the other worker of the slot uses.
    pub fn other(self) -> Side {
        Side(1 - self.0)
    }
}

/// The cluster's listening sockets.
#[derive(Debug)]
pub struct Listeners {
    balance: Balance,
    address: SocketAddr,
    /// `Shared`: one socket. `Reuseport`: two per slot, index `2 × (slot − 1) + side`, which is
    /// also their order in the kernel's group (the order in which they started listening).
    sockets: Vec<Socket>,
    /// The sockets new connections go to (reuseport), as last given to [`Listeners::steer`].
    steered_to: Vec<(usize, Side)>,
}

/// The listening address could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {address}: {source}{hint}")]
pub struct BindError {
    pub address: SocketAddr,
    #[source]
    pub source: io::Error,
    hint: &'static str,
}

impl BindError {
    fn new(address: SocketAddr, source: io::Error) -> Self {
        let hint = match source.kind() {
            io::ErrorKind::AddrInUse => {
                " — another process listens there; stop it or pick another --port (0 = any free port)"
            }
            io::ErrorKind::PermissionDenied => {
                " — ports below 1024 need root or CAP_NET_BIND_SERVICE; pick a --port from 1024 up"
            }
            io::ErrorKind::AddrNotAvailable => {
                " — no interface of this machine has that address; check --host"
            }
            _ => "",
        };
        BindError {
            address,
            source,
            hint,
        }
    }
}

impl Listeners {
    /// Binds `address` for `slots` workers. With port 0 the kernel picks a free port, which every
    /// later socket of the cluster reuses.
    pub fn bind(address: SocketAddr, balance: Balance, slots: usize) -> Result<Self, BindError> {
        let first = bind_one(address, balance)?;
        let bound = first
            .local_addr()
            .ok()
            .and_then(|address| address.as_socket())
            .ok_or_else(|| BindError::new(address, io::Error::other("no local address")))?;
        let mut listeners = Listeners {
            balance,
            address: bound,
            sockets: vec![first],
            steered_to: Vec::new(),
        };
        listeners.ensure_slots(slots)?;
        Ok(listeners)
    }

    /// The address actually bound (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }

    /// Makes sure sockets exist for every slot up to `slots` (reuseport opens two per slot).
    pub fn ensure_slots(&mut self, slots: usize) -> Result<(), BindError> {
        if self.balance == Balance::Reuseport {
            while self.sockets.len() < 2 * slots {
                self.sockets.push(bind_one(self.address, self.balance)?);
            }
        }
        Ok(())
    }

    /// Whether each worker has a queue of its own that new connections can be steered away from
    /// (reuseport), rather than one queue shared by all.
    pub fn steerable(&self) -> bool {
        self.balance == Balance::Reuseport
    }

    fn index(&self, slot: usize, side: Side) -> usize {
        match self.balance {
            Balance::Shared => 0,
            Balance::Reuseport => 2 * (slot - 1) + side.0 as usize,
        }
    }

    /// Closes the primary's copies of the sockets, for good (the cluster is stopping); workers
    /// keep theirs until they let go.
    pub fn close(&mut self) {
        self.sockets.clear();
    }

    /// Sends new connections only to the sockets `targets` (sorted; reuseport only: with one
    /// shared socket only running workers accept anyway). Empty lets the kernel hash over all.
    pub fn steer(&mut self, targets: &[(usize, Side)]) -> io::Result<()> {
        if self.balance != Balance::Reuseport
            || self.steered_to == targets
            || self.sockets.is_empty()
        {
            return Ok(());
        }
        let indexes: Vec<u32> = targets
            .iter()
            .map(|&(slot, side)| self.index(slot, side) as u32)
            .collect();
        reuseport::steer(self.sockets[0].as_raw_fd(), &indexes)?;
        self.steered_to = targets.to_vec();
        Ok(())
    }

    /// The sockets new connections go to (reuseport), as last steered; empty when unsteered.
    pub fn steered_to(&self) -> &[(usize, Side)] {
        &self.steered_to
    }

    /// How many connections wait in the accept queue of one socket (reuseport); `None` with one
    /// shared socket, whose queue every worker serves.
    pub fn queued(&self, slot: usize, side: Side) -> Option<u32> {
        if self.balance != Balance::Reuseport {
            return None;
        }
        let fd = self.sockets.get(self.index(slot, side))?.as_raw_fd();
        // An error (which getsockopt on our own socket does not give) reads as "nothing queued".
        Some(crate::sys::listen_queue_length(fd).unwrap_or(0))
    }

    /// How many slots have sockets (reuseport: also those of slots removed by a scale-down,
    /// whose sockets stay open); 1 with one shared socket.
    pub fn slots(&self) -> usize {
        match self.balance {
            Balance::Shared => 1,
            Balance::Reuseport => self.sockets.len() / 2,
        }
    }

    /// Where the primary connects to reach a ready worker through the steering program: the
    /// bound address, or loopback when bound to every address.
    pub fn relay_address(&self) -> SocketAddr {
        let mut address = self.address;
        if address.ip().is_unspecified() {
            address.set_ip(match address {
                SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
            });
        }
        address
    }

    /// Accepts up to `limit` connections waiting in the queue of one socket (reuseport), for
    /// the primary to relay: only for a socket that no live worker holds, since the socket is
    /// made non-blocking for the moment it takes (the mode belongs to the socket, shared with
    /// every process that holds it), then given back its mode.
    pub fn take_queued(
        &self,
        slot: usize,
        side: Side,
        limit: usize,
    ) -> io::Result<Vec<std::net::TcpStream>> {
        let Some(socket) = self.sockets.get(self.index(slot, side)) else {
            return Ok(Vec::new());
        };
        if self.balance != Balance::Reuseport {
            return Ok(Vec::new());
        }
        let was_nonblocking = socket.nonblocking()?;
        socket.set_nonblocking(true)?;
        let mut taken = Vec::new();
        let result = loop {
            if taken.len() >= limit {
                break Ok(());
            }
            match socket.accept() {
                Ok((connection, _)) => taken.push(std::net::TcpStream::from(connection)),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break Ok(()),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                // The client gave up before the accept (a reset): nothing to relay.
                Err(error) if error.kind() == io::ErrorKind::ConnectionAborted => continue,
                // Out of fds, say: relay what was taken, leave the rest queued.
                Err(_) if !taken.is_empty() => break Ok(()),
                Err(error) => break Err(error),
            }
        };
        if !was_nonblocking {
            socket.set_nonblocking(false)?;
        }
        result.map(|()| taken)
    }

    /// The socket a worker of `slot` (1-based) on `side` inherits as fd 3; `None` once closed.
    pub fn fd_for(&self, slot: usize, side: Side) -> Option<RawFd> {
        Some(self.sockets.get(self.index(slot, side))?.as_raw_fd())
    }
}

fn bind_one(address: SocketAddr, balance: Balance) -> Result<Socket, BindError> {
    let error = |source| BindError::new(address, source);
    let socket = Socket::new(
        Domain::for_address(address),
        Type::STREAM,
        Some(Protocol::TCP),
    )
    .map_err(error)?;
    socket.set_reuse_address(true).map_err(error)?;
    if balance == Balance::Reuseport {
        socket.set_reuse_port(true).map_err(error)?;
    }
    socket.bind(&address.into()).map_err(error)?;
    socket.listen(BACKLOG).map_err(error)?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Side = Side(0);
    const B: Side = Side(1);

    #[test]
    fn reuseport_binds_two_sockets_per_slot_on_one_port() {
        let listeners =
            Listeners::bind("127.0.0.1:0".parse().unwrap(), Balance::Reuseport, 3).unwrap();
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
        let queued = listeners
            .sockets
            .iter()
            .map(|socket| {
                socket.set_nonblocking(true).unwrap();
                std::iter::from_fn(|| socket.accept().ok())
                    .take(count)
                    .count()
            })
            .collect();
        drop(clients);
        queued
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

    #[test]
    fn shared_hands_every_slot_the_same_socket() {
        let listeners =
            Listeners::bind("127.0.0.1:0".parse().unwrap(), Balance::Shared, 4).unwrap();
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
}
