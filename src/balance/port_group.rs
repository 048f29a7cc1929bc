//! Keeping the cluster's port to the cluster: the other sockets that listen on it.
//!
//! # Why herdsman must be alone in its `SO_REUSEPORT` group
//!
//! Every TCP socket of one user that listens with `SO_REUSEPORT` on the same address and port
//! joins the same kernel group, whoever opened it. The steering program (see `reuseport`) is
//! classic BPF (`SO_ATTACH_REUSEPORT_CBPF`, which needs no privilege), and classic BPF can only
//! name a socket by its place in the group's array. The kernel keeps that array like this
//! (`net/core/sock_reuseport.c`): a socket that starts listening is appended at the end
//! (`reuseport_add_sock`), and a socket that stops listening is replaced by the *last* one
//! (`__reuseport_detach_sock`: `socks[i] = socks[num_socks - 1]`). So:
//!
//! - herdsman's sockets have the places `0 .. 2×slots` only if they were the first to listen and
//!   none of them left; a foreign socket already in the group at start shifts every place, and
//!   its leaving later moves one of herdsman's sockets into its place. So a foreign socket at
//!   start-up is refused (exit 3, naming its process).
//! - a foreign socket that joins later lands *behind* herdsman's, where the program never sends
//!   a connection, and when it leaves only sockets behind it move: herdsman's places stay right,
//!   as long as herdsman adds no socket while the foreign one is there. Adding sockets (a scale
//!   up) is therefore refused while one is: behind it, a new socket would move when it leaves,
//!   and with several leaving between two looks the new order cannot be told.
//! - a foreign process may attach a program of its own to the group (a second herdsman would),
//!   which replaces herdsman's for everyone. So while a foreign socket is in the group, and once
//!   more when it has left, the primary attaches its program again.
//!
//! An `SO_ATTACH_REUSEPORT_EBPF` program with a socket map keyed by slot would not depend on
//! places, but loading one needs `CAP_BPF`, which a cluster manager run by a user does not have.
//!
//! A socket on a more specific address (`127.0.0.1:P` while the cluster listens on `0.0.0.0:P`)
//! is in another group, but the kernel prefers it for connections to its address; it is foreign
//! too. One on a wildcard while the cluster listens on a specific address takes nothing from it.
//!
//! # How the primary watches
//!
//! Every [`WATCH_INTERVAL`] it lists the sockets listening on the port (`sock_diag`), compares
//! their inodes with its own, and reports which foreign ones appeared or went; only then does it
//! look for the processes holding them (`/proc/*/fd`) and for the herdsman cluster whose primary
//! is one of them (its `NAME.lock` in the runtime directory holds the primary's pid).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use super::sock_diag::{self, Owner, PortListener, SockDiag};
use super::{bind_socket, Balance, BindError, Listeners};

/// How often the primary lists the sockets on its port.
pub const WATCH_INTERVAL: Duration = Duration::from_millis(250);

/// A socket on the cluster's port that is not the cluster's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Foreign {
    pub address: SocketAddr,
    pub inode: u64,
    /// In the cluster's own `SO_REUSEPORT` group (same address), rather than on a more specific
    /// address that the kernel prefers.
    pub in_group: bool,
    /// The processes holding it, parents first; empty when none of them can be seen.
    pub owners: Vec<Owner>,
    /// The herdsman cluster whose primary holds it.
    pub cluster: Option<String>,
}

impl Foreign {
    /// Describes `found` (not ours), looking up who holds each.
    pub fn identify(found: Vec<(PortListener, bool)>) -> Vec<Foreign> {
        let inodes: Vec<u64> = found.iter().map(|(listener, _)| listener.inode).collect();
        let mut owners = sock_diag::owners(&inodes);
        let clusters = herdsman_primaries();
        found
            .into_iter()
            .map(|(listener, in_group)| {
                let owners = owners.remove(&listener.inode).unwrap_or_default();
                let cluster = owners.iter().find_map(|owner| {
                    clusters
                        .iter()
                        .find(|(pid, _)| *pid == owner.pid)
                        .map(|(_, name)| name.clone())
                });
                Foreign {
                    address: listener.address,
                    inode: listener.inode,
                    in_group,
                    owners,
                    cluster,
                }
            })
            .collect()
    }

    /// The process that opened it, as far as can be told: the first holder whose parent does
    /// not hold it.
    pub fn owner(&self) -> Option<&Owner> {
        self.owners.first()
    }

    /// `herdsman cluster `api` (primary pid 4120)`, `pid 4242 (`python3 app.py`)`, or the
    /// socket's inode when no process holding it can be seen.
    pub fn who(&self) -> String {
        let others = match self.owners.len() {
            0 | 1 => String::new(),
            2 => " and 1 other process".into(),
            n => format!(" and {} other processes", n - 1),
        };
        match (self.owner(), &self.cluster) {
            (Some(owner), Some(name)) => {
                format!("herdsman cluster `{name}` (primary pid {})", owner.pid)
            }
            (Some(owner), None) => format!("pid {} (`{}`){others}", owner.pid, owner.command),
            (None, _) => format!(
                "a process this user cannot see (socket inode {})",
                self.inode
            ),
        }
    }

    /// Why it is in the way: what the kernel does with it.
    pub fn effect(&self) -> String {
        if self.in_group {
            format!(
                "listens on {} with SO_REUSEPORT too, in the cluster's port group",
                self.address
            )
        } else {
            format!(
                "listens on {}, which the kernel prefers for connections to {}",
                self.address,
                self.address.ip()
            )
        }
    }

    /// What to do about it.
    pub fn remedy(&self) -> String {
        match &self.cluster {
            Some(name) => format!("stop it (`herdsman stop {name}`) or pick another --port"),
            None => "stop it or pick another --port".into(),
        }
    }
}

/// The pid and name of every herdsman primary of this user that holds a cluster name: each
/// writes its pid into `NAME.lock` in the runtime directory.
fn herdsman_primaries() -> Vec<(u32, String)> {
    let Ok(entries) = std::fs::read_dir(crate::runtime_dir::base()) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let file_name = entry.file_name();
            let name = file_name.to_str()?.strip_suffix(".lock")?.to_string();
            let pid = std::fs::read_to_string(entry.path())
                .ok()?
                .trim()
                .parse()
                .ok()?;
            // A lock file outlives its primary; only a held lock names a running one.
            crate::control::socket::is_running(&name).then_some((pid, name))
        })
        .collect()
}

/// What changed on the port since the last look.
#[derive(Debug, Default)]
pub struct GroupChange {
    pub joined: Vec<Foreign>,
    pub left: Vec<Foreign>,
    /// The slots one of whose own sockets stopped listening: a process holding it called
    /// `shutdown()` on it, which stops it for all. The kernel then moved another socket into its
    /// place, which the steering program cannot follow.
    pub lost: Vec<usize>,
}

#[cfg(test)]
impl GroupChange {
    pub fn is_empty(&self) -> bool {
        self.joined.is_empty() && self.left.is_empty() && self.lost.is_empty()
    }
}

/// Splits the listeners on the port into the foreign ones that take connections of `ours`, with
/// whether each is in the same group; the cluster's own (`inodes`) and unrelated ones are left
/// out.
pub fn foreign_listeners(
    ours: SocketAddr,
    inodes: &[u64],
    listeners: Vec<PortListener>,
) -> Vec<(PortListener, bool)> {
    listeners
        .into_iter()
        .filter(|listener| !inodes.contains(&listener.inode))
        .filter(|listener| sock_diag::takes_connections_of(ours, listener.address))
        .map(|listener| {
            let in_group =
                listener.interface == 0 && sock_diag::takes_connections_of(listener.address, ours);
            (listener, in_group)
        })
        .collect()
}

impl BindError {
    /// `foreign` (not empty) would take some of the cluster's connections.
    fn shared_with(address: SocketAddr, foreign: &[Foreign]) -> Self {
        let first = &foreign[0];
        let more = match foreign.len() {
            1 => String::new(),
            2 => " (and 1 other socket)".into(),
            n => format!(" (and {} other sockets)", n - 1),
        };
        let reason = match &first.cluster {
            // Its other sockets are the same cluster's.
            Some(_) => format!(
                "{} already serves this port; {} (0 = any free port)",
                first.who(),
                first.remedy()
            ),
            None => format!(
                "{} {}{more}, so the kernel would give it a share of the cluster's connections; \
                 {} (0 = any free port)",
                first.who(),
                first.effect(),
                first.remedy()
            ),
        };
        BindError {
            address,
            source: io::Error::new(io::ErrorKind::AddrInUse, reason.clone()),
            reason,
        }
    }
}

/// Whoever listens on an address that overlaps `address` (for an "address in use" message).
/// The sockets listening on `address` (or overlapping it); `None` when the kernel could not be
/// asked.
pub(super) fn holders_of(address: SocketAddr) -> Option<Vec<Foreign>> {
    let Ok(listeners) = SockDiag::open().and_then(|mut diag| diag.listeners(address.port())) else {
        return None;
    };
    let overlapping = listeners
        .into_iter()
        .filter(|listener| {
            sock_diag::takes_connections_of(address, listener.address)
                || sock_diag::takes_connections_of(listener.address, address)
        })
        .map(|listener| (listener, false))
        .collect();
    Some(Foreign::identify(overlapping))
}

impl Listeners {
    /// Looks at who else listens on the port (reuseport), and reports what changed since the
    /// last look. Once a foreign socket has left the group, the next [`Listeners::steer`]
    /// attaches the program again, in case it had replaced ours.
    pub fn check_group(&mut self) -> io::Result<GroupChange> {
        if self.balance != Balance::Reuseport || self.sockets.is_empty() {
            return Ok(GroupChange::default());
        }
        let port = self.address.port();
        let listed = match self.diag.as_mut() {
            Some(diag) => diag.listeners(port),
            None => SockDiag::open().and_then(|diag| self.diag.insert(diag).listeners(port)),
        };
        let listeners = match listed {
            Ok(listeners) => listeners,
            Err(error) => {
                // A socket that failed once may be broken: open a new one next time.
                self.diag = None;
                self.watch_failures += 1;
                if self.watch_failures == 1 {
                    return Err(error);
                }
                return Ok(GroupChange::default());
            }
        };
        self.watch_failures = 0;
        let missing: Vec<usize> = (0..self.inodes.len())
            .filter(|&index| {
                !listeners
                    .iter()
                    .any(|listener| listener.inode == self.inodes[index])
            })
            .collect();
        let lost = missing
            .iter()
            .filter(|index| !self.lost.contains(index))
            .map(|index| index / 2 + 1)
            .collect();
        self.lost = missing;
        let found = foreign_listeners(self.address, &self.inodes, listeners);
        let (known, new): (Vec<_>, Vec<_>) = found.into_iter().partition(|(listener, _)| {
            self.foreign
                .iter()
                .any(|foreign| foreign.inode == listener.inode)
        });
        let still: Vec<u64> = known.iter().map(|(listener, _)| listener.inode).collect();
        let (kept, left): (Vec<_>, Vec<_>) = std::mem::take(&mut self.foreign)
            .into_iter()
            .partition(|foreign| still.contains(&foreign.inode));
        let joined = Foreign::identify(new);
        self.foreign = kept;
        self.foreign.extend(joined.iter().cloned());
        if !left.is_empty() {
            self.reattach = true;
        }
        Ok(GroupChange { joined, left, lost })
    }

    /// The foreign sockets on the port, as of the last [`Listeners::check_group`].
    pub fn foreign(&self) -> &[Foreign] {
        &self.foreign
    }
}

/// Fails if a foreign socket would take some of the connections of `address`.
pub(super) fn refuse_foreign(
    address: SocketAddr,
    inodes: &[u64],
    diag: &mut SockDiag,
) -> Result<(), BindError> {
    // Not being able to look is no reason not to serve.
    let Ok(listeners) = diag.listeners(address.port()) else {
        return Ok(());
    };
    let found = foreign_listeners(address, inodes, listeners);
    if found.is_empty() {
        return Ok(());
    }
    if inodes.is_empty() {
        // Before the cluster's first socket: one that does not share the port (no
        // SO_REUSEPORT, another user's) is the plain "address in use". Binding without
        // listening joins no group.
        if let Err(error) = bind_socket(address, Balance::Reuseport) {
            return Err(BindError::new(address, error));
        }
    }
    Err(BindError::shared_with(address, &Foreign::identify(found)))
}

/// Fails if a foreign socket is in the group of `address` (one on a more specific address does
/// not move the cluster's sockets).
pub(super) fn refuse_foreign_in_group(
    address: SocketAddr,
    inodes: &[u64],
    diag: &mut SockDiag,
) -> Result<(), BindError> {
    let Ok(listeners) = diag.listeners(address.port()) else {
        return Ok(());
    };
    let found: Vec<_> = foreign_listeners(address, inodes, listeners)
        .into_iter()
        .filter(|(_, in_group)| *in_group)
        .collect();
    if found.is_empty() {
        return Ok(());
    }
    let foreign = Foreign::identify(found);
    let first = &foreign[0];
    let reason = format!(
        "no socket is added while {} {}: behind it in the kernel's group, a new socket would move \
         when it leaves, and steering could no longer tell the cluster's sockets apart; stop it \
         first",
        first.who(),
        first.effect()
    );
    Err(BindError {
        address,
        source: io::Error::new(io::ErrorKind::AddrInUse, reason.clone()),
        reason,
    })
}
