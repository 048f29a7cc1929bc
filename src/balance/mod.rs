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
//! open file description, and each worker's runtime sets the mode it wants. `round-robin` binds
//! one socket as `shared` does, but the primary accepts from it (non-blocking) and hands each
//! connection over (`primary::round_robin`).
//!
//! The port is the cluster's alone: a foreign socket that would take some of its connections is
//! refused at start-up, and one that appears later is reported (see `port_group`).

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use socket2::{Domain, Protocol, Socket, Type};

use crate::config::Balance;

mod port_group;
mod reuseport;
mod sock_diag;
pub mod sticky;

use port_group::{holders_of, refuse_foreign, refuse_foreign_in_group};
pub use port_group::{Foreign, WATCH_INTERVAL};
pub use sock_diag::parent_pid;

/// The listen backlog asked for; the kernel caps it at `net.core.somaxconn`.
const BACKLOG: i32 = 2048;

/// Which of a slot's two reuseport sockets a worker uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
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
    /// `Shared`, `RoundRobin`: one socket. `Reuseport`: two per slot, index `2 × (slot − 1) + side`, which is
    /// also their order in the kernel's group (the order in which they started listening).
    sockets: Vec<Socket>,
    /// The inode of each of `sockets`, as `sock_diag` and `/proc/PID/fd` name them.
    inodes: Vec<u64>,
    /// The sockets new connections go to (reuseport), as last given to [`Listeners::steer`].
    steered_to: Vec<(usize, Side)>,
    /// `--sticky ip`: steering sends each source address to one slot (see `sticky`).
    sticky: bool,
    /// The program must be attached again whatever the targets: a foreign socket in the group
    /// may have replaced it.
    reattach: bool,
    /// The netlink socket that lists the listeners on the port; opened on first use.
    diag: Option<sock_diag::SockDiag>,
    /// The foreign sockets on the port, as last reported by [`Listeners::check_group`].
    foreign: Vec<Foreign>,
    /// Looks at the port that failed in a row (reported once per run of failures).
    watch_failures: u32,
    /// The indexes of the cluster's own sockets that were found no longer listening.
    lost: Vec<usize>,
}

/// The listening address could not be bound, or is not the cluster's alone.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {address}: {reason}")]
pub struct BindError {
    pub address: SocketAddr,
    #[source]
    pub source: io::Error,
    /// What happened and what to do, for people.
    reason: String,
}

impl BindError {
    fn new(address: SocketAddr, source: io::Error) -> Self {
        let hint = Self::hint(address, &source);
        BindError {
            address,
            reason: format!("{source}{hint}"),
            source,
        }
    }

    /// For an address a worker's app asked for (`bind_extra`): who holds it, and what to do
    /// there, since `--port` does not choose it.
    fn for_app(address: SocketAddr, source: io::Error) -> Self {
        let mut error = Self::new(address, source);
        let hint = match error.source.kind() {
            io::ErrorKind::AddrInUse => match holders_of(address).as_deref() {
                Some([holder, ..]) => format!(
                    " — {} listens there; stop it, or have the app listen on another port",
                    holder.who()
                ),
                _ => " — another socket or a connection holds it; have the app listen on \
                       another port, or stop what holds it"
                    .into(),
            },
            io::ErrorKind::PermissionDenied => {
                " — ports below 1024 need root or CAP_NET_BIND_SERVICE".into()
            }
            io::ErrorKind::AddrNotAvailable => {
                " — no interface of this machine has that address".into()
            }
            _ => String::new(),
        };
        error.reason = format!("{}{hint}", error.source);
        error
    }

    /// What happened and what to do, for people (the message without its address).
    pub fn reason(&self) -> &str {
        &self.reason
    }

    fn hint(address: SocketAddr, source: &io::Error) -> String {
        match source.kind() {
            io::ErrorKind::AddrInUse => match holders_of(address).as_deref() {
                Some([]) => no_listener_holds(address.port()),
                Some([holder, ..]) => format!(
                    " — {} listens there; {} (0 = any free port)",
                    holder.who(),
                    holder.remedy()
                ),
                None => " — another process listens there; stop it or pick another --port (0 = \
                         any free port)"
                    .into(),
            },
            io::ErrorKind::PermissionDenied => {
                " — ports below 1024 need root or CAP_NET_BIND_SERVICE; pick a --port from 1024 up"
                    .into()
            }
            io::ErrorKind::AddrNotAvailable => {
                " — no interface of this machine has that address; check --host".into()
            }
            _ => String::new(),
        }
    }
}

/// Why a port no socket listens on is in use: a connection holds it as its own end (the kernel
/// lends ports of its ephemeral range to outgoing connections), or one closed a moment ago and
/// waits out TIME_WAIT.
fn no_listener_holds(port: u16) -> String {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok();
    let range = range.and_then(|text| {
        let mut bounds = text
            .split_whitespace()
            .map(|bound| bound.parse::<u16>().ok());
        Some((bounds.next()??, bounds.next()??))
    });
    match range {
        Some((low, high)) if (low..=high).contains(&port) => format!(
            " — no socket listens there, but a connection holds it as its own end: the kernel \
             lends ports {low}-{high} to outgoing connections (ip_local_port_range); pick a \
             --port below {low}, or try again once that connection has closed"
        ),
        _ => " — no socket listens there, but a connection still holds it (one closed a moment \
              ago waits out TIME_WAIT, up to 60 s); try again shortly or pick another --port"
            .into(),
    }
}

impl Listeners {
    /// Binds `address` for `slots` workers. With port 0 the kernel picks a free port, which every
    /// later socket of the cluster reuses. With `reuseport`, fails if a foreign socket would take
    /// some of the cluster's connections (see `port_group`): looked for before the first socket
    /// listens, so that a second cluster never joins the first's group, and again after the last.
    pub fn bind(address: SocketAddr, balance: Balance, slots: usize) -> Result<Self, BindError> {
        let mut diag = match balance {
            Balance::Reuseport => sock_diag::SockDiag::open().ok(),
            Balance::Shared
            | Balance::RoundRobin
            | Balance::LeastConn
            | Balance::Proxy
            | Balance::ProxyRr => None,
        };
        if let Some(diag) = diag.as_mut().filter(|_| address.port() != 0) {
            refuse_foreign(address, &[], diag)?;
        }
        let first = bind_one(address, balance)?;
        let bound = first
            .local_addr()
            .ok()
            .and_then(|address| address.as_socket())
            .ok_or_else(|| BindError::new(address, io::Error::other("no local address")))?;
        let mut listeners = Listeners {
            balance,
            address: bound,
            inodes: vec![inode(&first)],
            sockets: vec![first],
            steered_to: Vec::new(),
            sticky: false,
            reattach: true,
            diag: None,
            foreign: Vec::new(),
            watch_failures: 0,
            lost: Vec::new(),
        };
        listeners.ensure_slots(slots)?;
        if let Some(diag) = diag.as_mut() {
            refuse_foreign(bound, &listeners.inodes, diag)?;
        }
        listeners.diag = diag;
        Ok(listeners)
    }

    /// The address actually bound (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }

    /// Makes sure sockets exist for every slot up to `slots` (reuseport opens two per slot).
    /// Refused while a foreign socket is in the cluster's group: a socket added behind it would
    /// move when it leaves (see `port_group`).
    pub fn ensure_slots(&mut self, slots: usize) -> Result<(), BindError> {
        if self.balance != Balance::Reuseport {
            return Ok(());
        }
        while self.sockets.len() < 2 * slots {
            if let Some(diag) = self.diag.as_mut() {
                refuse_foreign_in_group(self.address, &self.inodes, diag)?;
            }
            let socket = bind_one(self.address, self.balance)?;
            self.inodes.push(inode(&socket));
            self.sockets.push(socket);
            if let Some(diag) = self.diag.as_mut() {
                // One that joined between the look and the listen is ahead of the new socket.
                if let Err(error) = refuse_foreign_in_group(self.address, &self.inodes, diag) {
                    self.sockets.pop();
                    self.inodes.pop();
                    return Err(error);
                }
            }
        }
        Ok(())
    }

    /// With `sticky`, steering sends every connection from one source address to the same
    /// slot while its worker serves (reuseport; see `sticky`). Takes effect at the next steer.
    pub fn set_sticky(&mut self, sticky: bool) {
        self.reattach |= self.sticky != sticky;
        self.sticky = sticky;
    }

    /// Whether every connection from one source address goes to one worker (`--sticky ip`).
    pub fn is_sticky(&self) -> bool {
        self.sticky
    }

    /// Whether each worker has a queue of its own that new connections can be steered away from
    /// (reuseport), rather than one queue shared by all.
    pub fn steerable(&self) -> bool {
        self.balance == Balance::Reuseport
    }

    fn index(&self, slot: usize, side: Side) -> usize {
        match self.balance {
            Balance::Shared
            | Balance::RoundRobin
            | Balance::LeastConn
            | Balance::Proxy
            | Balance::ProxyRr => 0,
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
            || (!self.reattach && self.steered_to == targets)
            || self.sockets.is_empty()
        {
            return Ok(());
        }
        let indexes: Vec<u32> = targets
            .iter()
            .map(|&(slot, side)| self.index(slot, side) as u32)
            .collect();
        let fd = self.sockets[0].as_raw_fd();
        match self.sticky_owners(targets) {
            Some(owners) => reuseport::steer_sticky(fd, &owners)?,
            None => reuseport::steer(fd, &indexes)?,
        }
        // While a foreign socket is in the group it may attach a program of its own: attach ours
        // again on every look.
        self.reattach = self.foreign.iter().any(|foreign| foreign.in_group);
        self.steered_to = targets.to_vec();
        Ok(())
    }

    /// With `--sticky ip` and some target: the socket each bucket of source addresses goes to,
    /// by rendezvous over the targets' slots (a slot steered on both sides: its later side).
    fn sticky_owners(&self, targets: &[(usize, Side)]) -> Option<[u32; sticky::BUCKETS as usize]> {
        if !self.sticky || targets.is_empty() {
            return None;
        }
        let mut by_slot: Vec<(u64, u32)> = Vec::new();
        for &(slot, side) in targets {
            let index = self.index(slot, side) as u32;
            match by_slot.iter_mut().find(|(key, _)| *key == slot as u64) {
                Some(entry) => entry.1 = entry.1.max(index),
                None => by_slot.push((slot as u64, index)),
            }
        }
        let mut owners = [0; sticky::BUCKETS as usize];
        for (bucket, owner) in owners.iter_mut().enumerate() {
            let candidates = by_slot.iter().copied();
            *owner = sticky::choose(bucket as u64, candidates).unwrap_or(0);
        }
        Some(owners)
    }

    /// The sockets new connections go to (reuseport), as last steered; empty when unsteered.
    #[cfg(test)]
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

    /// With `--balance shared`: the length of the one socket's accept queue (`None` otherwise,
    /// or once closed).
    pub fn shared_queued(&self) -> Option<u32> {
        if self.balance != Balance::Shared {
            return None;
        }
        let fd = self.sockets.first()?.as_raw_fd();
        Some(crate::sys::listen_queue_length(fd).unwrap_or(0))
    }

    /// With `--balance round-robin`: the one socket, non-blocking, for the primary to accept
    /// from (`primary::round_robin`); workers never accept from it.
    pub fn round_robin_socket(&self) -> io::Result<Option<std::net::TcpListener>> {
        let Some(socket) = self.sockets.first().filter(|_| self.balance.is_handoff()) else {
            return Ok(None);
        };
        let copy = socket.try_clone()?;
        copy.set_nonblocking(true)?;
        Ok(Some(copy.into()))
    }

    /// With `--balance proxy`: a copy of the one socket, for the proxy to accept from
    /// (`proxy`); workers never get it.
    pub fn proxy_socket(&self) -> io::Result<Option<std::net::TcpListener>> {
        let Some(socket) = self.sockets.first().filter(|_| self.balance.is_proxy()) else {
            return Ok(None);
        };
        Ok(Some(socket.try_clone()?.into()))
    }

    /// How many slots have sockets (reuseport: also those of slots removed by a scale-down,
    /// whose sockets stay open); 1 with one shared socket.
    pub fn slots(&self) -> usize {
        match self.balance {
            Balance::Shared
            | Balance::RoundRobin
            | Balance::LeastConn
            | Balance::Proxy
            | Balance::ProxyRr => 1,
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

    /// A copy of the socket `slot`'s worker on `side` accepts on, to hand to a worker that asks
    /// for it over IPC (Node's `queryServer`); `None` once the sockets are closed.
    pub fn clone_socket(&self, slot: usize, side: Side) -> Option<io::Result<OwnedFd>> {
        let socket = self.sockets.get(self.index(slot, side))?;
        Some(socket.try_clone().map(OwnedFd::from))
    }
}

/// A listening socket on `address` besides the cluster's own, for an address a worker asks for
/// itself (a Node app's `listen(port)`): bound once, shared by every worker that asks, like
/// Node's own primary does.
pub fn bind_extra(address: SocketAddr) -> Result<Socket, BindError> {
    let socket = bind_socket(address, Balance::Shared)
        .map_err(|error| BindError::for_app(address, error))?;
    socket
        .listen(BACKLOG)
        .map_err(|error| BindError::for_app(address, error))?;
    Ok(socket)
}

/// The inode of `socket` (`socket:[INODE]`).
fn inode(socket: &Socket) -> u64 {
    nix::sys::stat::fstat(socket).map_or(0, |stat| stat.st_ino)
}

fn bind_one(address: SocketAddr, balance: Balance) -> Result<Socket, BindError> {
    let error = |source| BindError::new(address, source);
    let socket = bind_socket(address, balance).map_err(error)?;
    socket.listen(BACKLOG).map_err(error)?;
    Ok(socket)
}

/// A socket bound to `address`, not listening yet. With `TCP_NODELAY`, which every connection
/// accepted from it inherits: Node, Go and most HTTP servers set it on each connection, and one
/// that does not (uvicorn given `--fd 3`) would otherwise wait out Nagle's algorithm against
/// the client's delayed ACK, up to 40 ms on a response written in two pieces.
fn bind_socket(address: SocketAddr, balance: Balance) -> io::Result<Socket> {
    let socket = Socket::new(
        Domain::for_address(address),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_tcp_nodelay(true)?;
    socket.set_reuse_address(true)?;
    if balance == Balance::Reuseport {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&address.into())?;
    Ok(socket)
}

#[cfg(test)]
mod tests;
