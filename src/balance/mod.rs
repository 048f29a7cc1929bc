//! The listening sockets the primary binds and hands to workers.
//!
//! `shared`: one socket, inherited by every worker. `reuseport`: one `SO_REUSEPORT` socket per
//! slot, steered to the ready slots (see `reuseport`).
//!
//! The primary keeps every socket open for its whole life: a connection that waits in a
//! listening socket's queue is reset by the kernel when the last fd of that socket closes, so a
//! worker that crashes or restarts must never take the only copy with it.
//!
//! Sockets are left in blocking mode, as systemd hands them over: the mode belongs to the shared
//! open file description, and each worker's runtime sets the mode it wants.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};

use socket2::{Domain, Protocol, Socket, Type};

use crate::config::Balance;

mod reuseport;

/// The listen backlog asked for; the kernel caps it at `net.core.somaxconn`.
const BACKLOG: i32 = 2048;

/// The cluster's listening sockets.
#[derive(Debug)]
pub struct Listeners {
    balance: Balance,
    address: SocketAddr,
    /// `Shared`: one socket. `Reuseport`: one per slot, index `slot - 1`.
    sockets: Vec<Socket>,
    /// The slots new connections go to (reuseport), as last given to [`Listeners::steer`].
    steered_to: Vec<usize>,
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

    /// Makes sure a socket exists for every slot up to `slots` (reuseport opens one per slot).
    pub fn ensure_slots(&mut self, slots: usize) -> Result<(), BindError> {
        if self.balance == Balance::Reuseport {
            while self.sockets.len() < slots {
                self.sockets.push(bind_one(self.address, self.balance)?);
            }
        }
        Ok(())
    }

    /// Sends new connections only to `ready_slots` (sorted; reuseport only: with one shared
    /// socket only ready workers accept anyway). Empty means every slot.
    pub fn steer(&mut self, ready_slots: &[usize]) -> io::Result<()> {
        if self.balance != Balance::Reuseport || self.steered_to == ready_slots {
            return Ok(());
        }
        let indexes: Vec<u32> = ready_slots.iter().map(|&slot| (slot - 1) as u32).collect();
        reuseport::steer(self.sockets[0].as_raw_fd(), &indexes)?;
        self.steered_to = ready_slots.to_vec();
        Ok(())
    }

    /// How many connections wait in slot `slot`'s own accept queue (reuseport); `None` with one
    /// shared socket, whose queue every worker serves.
    pub fn queued(&self, slot: usize) -> Option<u32> {
        if self.balance != Balance::Reuseport {
            return None;
        }
        // An error (which getsockopt on our own socket does not give) reads as "nothing queued".
        Some(crate::sys::listen_queue_length(self.sockets[slot - 1].as_raw_fd()).unwrap_or(0))
    }

    /// The socket that slot `slot` (1-based) inherits as fd 3.
    pub fn fd_for_slot(&self, slot: usize) -> RawFd {
        let index = match self.balance {
            Balance::Shared => 0,
            Balance::Reuseport => slot - 1,
        };
        self.sockets[index].as_raw_fd()
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

    #[test]
    fn reuseport_binds_one_socket_per_slot_on_one_port() {
        let listeners =
            Listeners::bind("127.0.0.1:0".parse().unwrap(), Balance::Reuseport, 3).unwrap();
        let port = listeners.local_addr().port();
        assert_ne!(port, 0);
        let fds: Vec<_> = (1..=3).map(|slot| listeners.fd_for_slot(slot)).collect();
        assert_eq!(fds.len(), 3);
        assert!(fds[0] != fds[1] && fds[1] != fds[2]);
        for socket in &listeners.sockets {
            assert_eq!(
                socket.local_addr().unwrap().as_socket().unwrap().port(),
                port
            );
        }
    }

    /// Connects `count` times and counts, per slot, the connections waiting in its socket.
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
    fn reuseport_steers_new_connections_to_the_ready_slots() {
        let mut listeners =
            Listeners::bind("127.0.0.1:0".parse().unwrap(), Balance::Reuseport, 3).unwrap();
        listeners.steer(&[2]).unwrap();
        assert_eq!(queued_per_slot(&listeners, 30), [0, 30, 0]);
        listeners.steer(&[1, 3]).unwrap();
        let queued = queued_per_slot(&listeners, 60);
        assert_eq!(queued[1], 0);
        assert_eq!(queued[0] + queued[2], 60);
        assert!(
            queued[0] > 0 && queued[2] > 0,
            "both ready slots get connections: {queued:?}"
        );
        listeners.steer(&[]).unwrap();
        let queued = queued_per_slot(&listeners, 60);
        assert_eq!(queued.iter().sum::<usize>(), 60);
        assert!(
            queued.iter().all(|&n| n > 0),
            "unsteered, the kernel hashes over all: {queued:?}"
        );
    }

    #[test]
    fn reports_the_accept_queue_of_a_slot() {
        let mut listeners =
            Listeners::bind("127.0.0.1:0".parse().unwrap(), Balance::Reuseport, 2).unwrap();
        listeners.steer(&[2]).unwrap();
        assert_eq!(listeners.queued(2), Some(0));
        let clients: Vec<_> = (0..3)
            .map(|_| std::net::TcpStream::connect(listeners.local_addr()).unwrap())
            .collect();
        assert_eq!(listeners.queued(1), Some(0));
        assert_eq!(listeners.queued(2), Some(3));
        drop(clients);
        let shared = Listeners::bind("127.0.0.1:0".parse().unwrap(), Balance::Shared, 2).unwrap();
        assert_eq!(shared.queued(1), None);
    }

    #[test]
    fn shared_hands_every_slot_the_same_socket() {
        let listeners =
            Listeners::bind("127.0.0.1:0".parse().unwrap(), Balance::Shared, 4).unwrap();
        assert_eq!(listeners.fd_for_slot(1), listeners.fd_for_slot(4));
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
