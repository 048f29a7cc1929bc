//! The TCP sockets listening on one port, as the kernel lists them (`sock_diag`, netlink), and
//! the processes that hold them (`/proc/*/fd`).
//!
//! `sock_diag` rather than `/proc/net/tcp*`: the primary asks every quarter of a second, and a
//! dump restricted to `LISTEN` sockets on one port walks only the kernel's listening hash,
//! whereas `/proc/net/tcp` formats every connection of the machine as text. The request and the
//! replies are the `netlink-packet-sock-diag` crate's; the socket is `netlink-sys`'s.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP};
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_sys::protocols::NETLINK_SOCK_DIAG;

/// One listening socket on the port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortListener {
    pub address: SocketAddr,
    /// The socket's inode (`socket:[INODE]` in `/proc/PID/fd`).
    pub inode: u64,
    /// The interface it is bound to (`SO_BINDTODEVICE`), 0 for none.
    pub interface: u32,
}

/// A netlink socket for `sock_diag` requests, kept open for the primary's life.
pub struct SockDiag {
    socket: netlink_sys::Socket,
    sequence: u32,
}

impl std::fmt::Debug for SockDiag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SockDiag").finish_non_exhaustive()
    }
}

impl SockDiag {
    pub fn open() -> io::Result<SockDiag> {
        let mut socket = netlink_sys::Socket::new(NETLINK_SOCK_DIAG)?;
        socket.bind_auto()?;
        socket.connect(&netlink_sys::SocketAddr::new(0, 0))?;
        // The kernel answers at once; a bound on the wait keeps a surprise from stalling the
        // supervisor.
        let timeout = nix::sys::time::TimeVal::new(1, 0);
        nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::ReceiveTimeout, &timeout)?;
        Ok(SockDiag {
            socket,
            sequence: 0,
        })
    }

    /// Every TCP socket (IPv4 and IPv6) listening on `port`, in this network namespace.
    pub fn listeners(&mut self, port: u16) -> io::Result<Vec<PortListener>> {
        let mut found = self.dump(AF_INET, port)?;
        found.extend(self.dump(AF_INET6, port)?);
        Ok(found)
    }

    fn dump(&mut self, family: u8, port: u16) -> io::Result<Vec<PortListener>> {
        self.sequence = self.sequence.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        header.sequence_number = self.sequence;
        let mut socket_id = if family == AF_INET {
            SocketId::new_v4()
        } else {
            SocketId::new_v6()
        };
        // The kernel skips listeners on other ports itself.
        socket_id.source_port = port;
        let mut request = NetlinkMessage::new(
            header,
            SockDiagMessage::InetRequest(InetRequest {
                family,
                protocol: IPPROTO_TCP,
                extensions: ExtensionFlags::empty(),
                states: StateFlags::LISTEN,
                socket_id,
            })
            .into(),
        );
        request.finalize();
        let mut bytes = vec![0; request.buffer_len()];
        request.serialize(&mut bytes);
        self.socket.send(&bytes, 0)?;

        let mut found = Vec::new();
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let size = self.socket.recv(&mut &mut buffer[..], 0)?;
            let mut offset = 0;
            while offset < size {
                let message = NetlinkMessage::<SockDiagMessage>::deserialize(&buffer[offset..size])
                    .map_err(|error| io::Error::other(format!("sock_diag reply: {error}")))?;
                let length = message.header.length as usize;
                if message.header.sequence_number == self.sequence {
                    match message.payload {
                        NetlinkPayload::Done(_) => return Ok(found),
                        NetlinkPayload::Error(error) => {
                            return Err(match error.code {
                                Some(code) => io::Error::from_raw_os_error(-code.get()),
                                None => io::Error::other("sock_diag: unexpected ack"),
                            });
                        }
                        NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(response)) => {
                            let header = &response.header;
                            if header.socket_id.source_port == port {
                                found.push(PortListener {
                                    address: SocketAddr::new(header.socket_id.source_address, port),
                                    inode: header.inode.into(),
                                    interface: header.socket_id.interface_id,
                                });
                            }
                        }
                        _ => {}
                    }
                }
                if length == 0 {
                    break;
                }
                offset += length;
            }
        }
    }
}

/// A process that holds a socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub pid: u32,
    /// Its command line, spaces between the arguments, cut to a readable length.
    pub command: String,
    pub parent: u32,
}

/// The processes holding each of `inodes`, parents before children, found by reading every
/// `/proc/PID/fd` this user may read. Only called when something changed: it walks every
/// process of the machine.
pub fn owners(inodes: &[u64]) -> HashMap<u64, Vec<Owner>> {
    let mut owners: HashMap<u64, Vec<Owner>> = HashMap::new();
    if inodes.is_empty() {
        return owners;
    }
    let wanted: Vec<String> = inodes
        .iter()
        .map(|inode| format!("socket:[{inode}]"))
        .collect();
    let Ok(processes) = std::fs::read_dir("/proc") else {
        return owners;
    };
    for process in processes.flatten() {
        let Some(pid) = process
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(process.path().join("fd")) else {
            continue;
        };
        let mut held = Vec::new();
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            if let Some(index) = wanted.iter().position(|name| target.as_os_str() == &**name) {
                if !held.contains(&index) {
                    held.push(index);
                }
            }
        }
        for index in held {
            owners.entry(inodes[index]).or_default().push(Owner {
                pid,
                command: command_line(pid),
                parent: parent_pid(pid).unwrap_or(0),
            });
        }
    }
    for list in owners.values_mut() {
        // A process whose parent also holds the socket (a forked worker) after that parent.
        let pids: Vec<u32> = list.iter().map(|owner| owner.pid).collect();
        list.sort_by_key(|owner| (pids.contains(&owner.parent), owner.pid));
    }
    owners
}

/// `/proc/PID/cmdline` as one line, at most 120 characters.
pub fn command_line(pid: u32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let mut text = String::from_utf8_lossy(&raw)
        .split('\0')
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
        // One line, whatever the arguments hold (`python3 -c` with a script, say).
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    if text.chars().count() > 120 {
        text = text.chars().take(119).collect::<String>() + "…";
    }
    text
}

/// The parent of `pid`, from `/proc/PID/stat`.
pub fn parent_pid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Whether a socket listening on `theirs` takes some of the connections meant for `ours`: it
/// is in the same `SO_REUSEPORT` group (the same address), or it listens on a more specific
/// address that the kernel prefers for connections to it (`ours` is a wildcard).
pub fn takes_connections_of(ours: SocketAddr, theirs: SocketAddr) -> bool {
    if ours.port() != theirs.port() {
        return false;
    }
    let (ours, theirs) = (canonical(ours.ip()), canonical(theirs.ip()));
    if ours == theirs {
        return true;
    }
    match (ours, theirs) {
        (IpAddr::V4(ours), IpAddr::V4(_)) => ours.is_unspecified(),
        // A dual-stack `[::]` also takes IPv4 connections; another `0.0.0.0` wins those.
        (IpAddr::V6(ours), _) => ours.is_unspecified(),
        (IpAddr::V4(_), IpAddr::V6(_)) => false,
    }
}

/// IPv4-mapped IPv6 addresses as the IPv4 address they stand for.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;

    fn inode_of(socket: &impl AsRawFd) -> u64 {
        std::fs::metadata(format!("/proc/self/fd/{}", socket.as_raw_fd()))
            .unwrap()
            .ino()
    }

    #[test]
    fn lists_the_listeners_of_one_port_with_their_owner() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let mut diag = SockDiag::open().unwrap();
        let found = diag.listeners(port).unwrap();
        let inode = inode_of(&listener);
        assert_eq!(
            found,
            [PortListener {
                address: listener.local_addr().unwrap(),
                inode,
                interface: 0,
            }],
            "only the listener, not the connection nor the other port"
        );
        let owners = owners(&[inode, inode_of(&other) + 1_000_000_000]);
        let mine = &owners[&inode];
        assert_eq!(mine.len(), 1);
        assert_eq!(mine[0].pid, std::process::id());
        assert!(!mine[0].command.is_empty());
        assert_eq!(owners.len(), 1);
        drop(listener);
        assert_eq!(diag.listeners(port).unwrap(), []);
    }

    #[test]
    fn which_addresses_take_connections_of_ours() {
        let at = |text: &str| text.parse::<SocketAddr>().unwrap();
        assert!(takes_connections_of(at("127.0.0.1:80"), at("127.0.0.1:80")));
        assert!(takes_connections_of(at("0.0.0.0:80"), at("127.0.0.1:80")));
        assert!(takes_connections_of(at("[::]:80"), at("0.0.0.0:80")));
        assert!(takes_connections_of(
            at("127.0.0.1:80"),
            at("[::ffff:127.0.0.1]:80")
        ));
        assert!(!takes_connections_of(at("127.0.0.1:80"), at("0.0.0.0:80")));
        assert!(!takes_connections_of(
            at("127.0.0.1:80"),
            at("127.0.0.2:80")
        ));
        assert!(!takes_connections_of(
            at("127.0.0.1:80"),
            at("127.0.0.1:81")
        ));
        assert!(!takes_connections_of(at("0.0.0.0:80"), at("[::1]:80")));
    }
}
