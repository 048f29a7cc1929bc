//! Node's cluster protocol, the primary's side: a Node worker (`--ipc node`, and by default for
//! a `node` command) gets `NODE_UNIQUE_ID`, so Node's own `cluster` module runs its worker half:
//! `cluster.isWorker` is true, `cluster.worker.id` is the slot, and `net.Server.listen()` asks
//! the primary for its socket (`queryServer`) instead of binding. The primary answers as Node's
//! does with `SCHED_NONE` (a shared handle): with the socket itself, sent over the channel as
//! SCM_RIGHTS (`crate::ipc`). For the cluster's own port (or `listen(0)`, or the inherited fd
//! 3) that is the slot's socket, so steering and reloads work as for any worker; for another
//! address it is a socket bound once for all workers and held for the primary's life.
//!
//! `listening` counts as the worker's ready signal. A worker that listens on an address (a
//! plain Node app) is stopped as Node's primary stops one: with `disconnect`, not a signal: the worker closes its servers, lets their
//! connections finish, closes its channel and exits by itself (an app needs no SIGTERM
//! handler). The kill timeout still applies: one that does not exit is killed. A worker that
//! listens on the fd 3 it was given was written for herdsman, and keeps the stop signal and the
//! drain it has for it (README, "Running your server"). What Node
//! sends that herdsman does not serve (a unix socket path, a UDP bind, an unknown message) is
//! answered with an error the worker reports, or logged with the worker and ignored; never a
//! hang. The messages are in docs/protocol.md, "Node's cluster messages".

use std::ffi::{OsStr, OsString};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};

use super::executor::Executor;
use super::lifecycle::{Input, Intent, WorkerId, WorkerOrder};
use crate::balance::Side;
use crate::ipc::node::{AddressType, NodeCluster};

/// The polite drain (`node_drain.js`, see its header): how an http server of a Node worker
/// closes while the worker leaves at the primary's request. Loaded into every Node worker.
const DRAIN_JS: &str = include_str!("node_drain.js");
const DRAIN_FILE: &str = "node-drain.js";

/// Writes the polite drain into the primary's directory; `None` (logged: Node workers then
/// close as Node's own do) if it cannot.
pub(super) fn write_drain(dir: &std::path::Path, logger: &super::logs::Logger) -> Option<PathBuf> {
    let path = dir.join(DRAIN_FILE);
    match std::fs::write(&path, DRAIN_JS) {
        Ok(()) => Some(path),
        Err(error) => {
            logger.warn(format!(
                "cannot write {}: {error}; Node workers close their keep-alive connections as \
                 Node does when they leave (a request racing the close is lost)",
                path.display()
            ));
            None
        }
    }
}

/// `NODE_OPTIONS` for a Node worker: `--require` of the drain first, then the app's own.
pub(super) fn options_with_drain(drain: &std::path::Path, app: Option<&OsStr>) -> OsString {
    // Node reads NODE_OPTIONS split at spaces, with double quotes and backslash escapes.
    let quoted = drain
        .to_string_lossy()
        .replace('\\', "\\\\")
        .replace('"', "\\\"");
    let mut options = OsString::from(format!("--require \"{quoted}\""));
    if let Some(app) = app.filter(|app| !app.is_empty()) {
        options.push(" ");
        options.push(app);
    }
    options
}

/// `ENOTSUP`, as libuv numbers it: what a worker hears for a listen herdsman does not serve.
const UV_ENOTSUP: i32 = -95;

/// How a worker's `listen()` is served.
enum Served {
    /// With this socket (Node's `SCHED_NONE`).
    Socket(OwnedFd),
    /// By the primary's round-robin: no socket, connections come as `newconn`.
    RoundRobin,
}

/// What a worker's `listen()` fails with when the primary cannot give it a socket: libuv's
/// errno (the negated OS error; `EIO` if there is none) and what happened.
fn refusal(error: &io::Error) -> (i32, String) {
    (
        -error.raw_os_error().unwrap_or(libc::EIO),
        format!("the cluster's socket, which herdsman could not hand over: {error}"),
    )
}

/// What a worker's `listen()` of `what` fails with: herdsman does not serve it.
fn unserved(what: &str) -> (i32, String) {
    (UV_ENOTSUP, format!("{what}, which herdsman does not serve"))
}

/// A socket bound for a worker's `listen()` (`balance::bind_extra`), or what its `listen()` fails
/// with: the OS error's errno, `EADDRINUSE` for a refusal of herdsman's own (a foreign socket on
/// the port), which carries none.
fn bind_for_listen(address: SocketAddr) -> Result<socket2::Socket, (i32, String)> {
    crate::balance::bind_extra(address).map_err(|error| {
        let errno = error.source.raw_os_error().unwrap_or(libc::EADDRINUSE);
        (
            -errno,
            format!("{address}, which herdsman cannot bind: {}", error.reason()),
        )
    })
}

impl Executor {
    pub(super) async fn on_node_cluster(&mut self, worker: WorkerId, message: NodeCluster) {
        let Some(record) = self.machine.worker(worker) else {
            return;
        };
        let (slot, pid) = (record.slot, record.pid);
        match message {
            NodeCluster::Online => {}
            NodeCluster::QueryServer {
                seq,
                address,
                port,
                address_type,
                fd,
                key,
                data,
                ..
            } => {
                // An app that listens on an address (not the fd 3 it was given) is a plain Node
                // app: it stops as under Node's primary. One that takes fd 3 was written for
                // herdsman and keeps the stop signal, for its own drain.
                if fd.is_none() {
                    if let Some(process) = self.processes.get_mut(&worker) {
                        process.stops_by_disconnect = true;
                    }
                }
                let answer = self.node_socket(worker, address.as_deref(), port, address_type, fd);
                self.answer_query(worker, seq, key, data, answer);
            }
            NodeCluster::Listening { .. } => self.feed(Input::Listening { worker }).await,
            // Herdsman holds every socket for the cluster's life; a round-robin server takes
            // no more connections.
            NodeCluster::Close { key, .. } => {
                self.logger.info(format!(
                    "worker {slot} (pid {pid}) closed its server on {}",
                    server_address(&key)
                ));
                if let Some(port) = &mut self.round_robin {
                    port.balancer.closed(worker, &key);
                    self.hand_connections();
                }
            }
            NodeCluster::ExitedAfterDisconnect { seq } => {
                // The worker leaves by itself (`cluster.worker.disconnect()`): an asked-for
                // exit, and the slot gets a new worker.
                self.send_internal(worker, json!({ "ack": seq }));
                let order = WorkerOrder::Disconnect;
                let intent = Intent::Worker {
                    slot,
                    pid: Some(pid),
                    order,
                };
                self.feed(Input::Intent(intent)).await;
            }
            NodeCluster::Accepted { ack, accepted, .. } => match &mut self.round_robin {
                Some(port) => {
                    // An answer nothing waits for is a leaving worker's (it closed its server, and
                    // what it had was handed on): nothing to do.
                    if port
                        .balancer
                        .answered(worker, ack, accepted, Instant::now())
                    {
                        self.hand_connections();
                    }
                }
                None => self.logger.warn(format!(
                    "worker {slot} (pid {pid}): Node cluster answer to message {ack} ignored: \
                     without --balance round-robin no connection is handed over"
                )),
            },
            NodeCluster::Unknown { act, reason, raw } => {
                let act = act.unwrap_or_else(|| "(no act)".into());
                let shown = crate::ipc::frame::shorten(&raw);
                self.logger.warn(format!(
                    "worker {slot} (pid {pid}): Node cluster message `{act}` ignored: {reason} \
                     ({shown})"
                ));
            }
        }
    }

    /// The socket for a worker's `listen()`: the slot's own for the cluster's port, the worker's
    /// own for its private port (the proxy), a shared one for another TCP address; an errno for
    /// what is not served.
    /// The slot's socket on the cluster's port, for `worker`, which from now on counts as
    /// taking its connections (`Process::serves_cluster_port`).
    fn cluster_socket(
        &mut self,
        worker: WorkerId,
        slot: usize,
        side: Side,
    ) -> Option<io::Result<OwnedFd>> {
        if let Some(process) = self.processes.get_mut(&worker) {
            process.serves_cluster_port = true;
        }
        self.listeners.clone_socket(slot, side)
    }

    fn node_socket(
        &mut self,
        worker: WorkerId,
        address: Option<&str>,
        port: Option<u16>,
        address_type: AddressType,
        fd: Option<i32>,
    ) -> Result<Served, (i32, String)> {
        let record = self
            .machine
            .worker(worker)
            .ok_or((UV_ENOTSUP, "gone".into()))?;
        let (slot, side) = (record.slot, record.side);
        let cluster = self.listeners.local_addr();
        let round_robin = self.round_robin.is_some();
        let own = |socket: Option<io::Result<OwnedFd>>| match socket {
            _ if round_robin => Ok(Served::RoundRobin),
            Some(socket) => socket.map(Served::Socket).map_err(|error| refusal(&error)),
            None => Err((UV_ENOTSUP, "the cluster's port, which is closing".into())),
        };
        if fd.is_some_and(|fd| fd >= 0) {
            // `listen({ fd: 3 })`: the socket it inherited, which is the slot's.
            return own(self.cluster_socket(worker, slot, side));
        }
        match address_type {
            AddressType::Tcp4 | AddressType::Tcp6 => {}
            AddressType::Pipe => return Err(unserved("a unix socket path")),
            AddressType::Udp4 | AddressType::Udp6 => return Err(unserved("a UDP socket (dgram)")),
        }
        let Some(port) = port else {
            return Err(unserved("a unix socket path"));
        };
        let ip = match address {
            None | Some("") => None,
            Some(text) => Some(
                text.parse::<IpAddr>()
                    .map_err(|_| unserved(&format!("the address `{text}`")))?,
            ),
        };
        // Every address, or the cluster's own: the cluster's socket. Another address on the
        // same port (`localhost` as ::1 beside a cluster on 127.0.0.1) is served as asked.
        let ours = ip.is_none_or(|ip| ip.is_unspecified() || ip == cluster.ip());
        if (port == 0 || port == cluster.port()) && ours {
            return own(self.cluster_socket(worker, slot, side));
        }
        let copy = |socket: &socket2::Socket| {
            socket
                .try_clone()
                .map(OwnedFd::from)
                .map_err(|error| refusal(&error))
        };
        // With the proxy, the worker's own `$PORT` is its private port: on loopback whatever
        // address it names (the proxy is the way in), for it alone, and closed with it.
        if self.private_ports.get(&worker) == Some(&port) {
            if let Some(socket) = self.private_sockets.get(&worker) {
                return copy(socket).map(Served::Socket);
            }
            let socket = bind_for_listen(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))?;
            let served = copy(&socket)?;
            self.private_sockets.insert(worker, socket);
            return Ok(Served::Socket(served));
        }
        let wanted = SocketAddr::new(ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)), port);
        if let Some((_, socket)) = self.node_sockets.iter().find(|(at, _)| *at == wanted) {
            return copy(socket).map(Served::Socket);
        }
        let socket = bind_for_listen(wanted)?;
        let copy = copy(&socket)?;
        self.logger.info(format!(
            "serving {wanted} too, as a worker's listen() asked (shared by every worker)"
        ));
        self.node_sockets.push((wanted, socket));
        Ok(Served::Socket(copy))
    }

    /// Answers a `queryServer`: the socket as Node's handle, no socket for round-robin (then
    /// the worker takes its turns), or the errno the worker's `listen()` fails with.
    fn answer_query(
        &mut self,
        worker: WorkerId,
        seq: u64,
        key: String,
        data: Value,
        answer: Result<Served, (i32, String)>,
    ) {
        let Some(channel) = self
            .processes
            .get(&worker)
            .and_then(|process| process.ipc.as_ref())
        else {
            return;
        };
        match answer {
            Ok(Served::Socket(fd)) => {
                let reply = json!({ "errno": 0, "key": key, "ack": seq, "data": data });
                if let Value::Object(reply) = reply {
                    channel.send_internal_handle(&reply, Arc::new(fd));
                }
            }
            Ok(Served::RoundRobin) => {
                let address = self.listeners.local_addr();
                let family = if address.is_ipv4() { "IPv4" } else { "IPv6" };
                let sockname =
                    json!({ "address": address.ip(), "family": family, "port": address.port() });
                let reply = json!({ "errno": 0, "key": key, "ack": seq, "data": data,
                                    "sockname": sockname });
                self.send_internal(worker, reply);
                if let Some(port) = &mut self.round_robin {
                    port.balancer.listening(worker, key, Instant::now());
                    self.hand_connections();
                }
            }
            Err((errno, why)) => {
                let reply = json!({ "errno": errno, "key": key, "ack": seq, "data": data });
                self.send_internal(worker, reply);
                if let Some(record) = self.machine.worker(worker) {
                    let (slot, pid) = (record.slot, record.pid);
                    let errno = nix::errno::Errno::from_raw(-errno);
                    self.logger.warn(format!(
                        "worker {slot} (pid {pid}) asked to listen on {why}; its listen() fails \
                         with {errno:?}"
                    ));
                }
            }
        }
    }

    /// Sends a Node cluster message (`{"cmd":"NODE_CLUSTER", …, "seq"}`) to `worker`.
    pub(super) fn send_internal(&mut self, worker: WorkerId, message: Value) {
        let channel = self
            .processes
            .get(&worker)
            .and_then(|process| process.ipc.as_ref());
        if let (Some(channel), Value::Object(message)) = (channel, message) {
            channel.send_internal(&message);
        }
    }

    /// Asks `worker` to stop: Node's `disconnect` for a plain Node app (it exits by itself once
    /// its servers' connections are done; killed at the kill timeout), the stop signal for any
    /// other.
    pub(super) fn stop_process(&mut self, worker: WorkerId) {
        let stop_signal = self.machine.config().stop_signal;
        let Some(process) = self.processes.get_mut(&worker) else {
            return;
        };
        if process.stops_by_disconnect && process.ipc.is_some() && !process.disconnecting {
            process.disconnecting = true;
            self.send_internal(worker, json!({ "act": "disconnect" }));
            return;
        }
        process.signal(stop_signal);
    }
}

/// A Node server's key (`address:port:addressType:fd:index`, as Node's cluster `child.js` makes
/// it) as people read an address: `*:8080` for every address, `127.0.0.1:8080`, `[::1]:8080`,
/// `fd 3`; the key itself when it is not one.
fn server_address(key: &str) -> String {
    let mut parts = key.rsplitn(5, ':');
    let (Some(_index), Some(fd), Some(_kind), Some(port), Some(address)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return key.to_string();
    };
    if fd.parse::<i32>().is_ok_and(|fd| fd >= 0) {
        return format!("fd {fd}");
    }
    match address {
        "null" | "undefined" | "" => format!("*:{port}"),
        address if address.contains(':') => format!("[{address}]:{port}"),
        address => format!("{address}:{port}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_servers_key_reads_as_its_address() {
        assert_eq!(server_address("null:47010:4:undefined:0"), "*:47010");
        assert_eq!(
            server_address("127.0.0.1:8080:4:undefined:0"),
            "127.0.0.1:8080"
        );
        assert_eq!(server_address("::1:8080:6:undefined:1"), "[::1]:8080");
        assert_eq!(server_address("null:null:-1:3:0"), "fd 3");
        assert_eq!(server_address("odd"), "odd");
    }

    #[test]
    fn the_drain_comes_first_quoted_and_the_apps_node_options_follow() {
        let drain = std::path::Path::new("/run/a dir/with \"quotes\"/node-drain.js");
        assert_eq!(
            options_with_drain(drain, None),
            r#"--require "/run/a dir/with \"quotes\"/node-drain.js""#
        );
        assert_eq!(
            options_with_drain(
                drain,
                Some(OsStr::new("--max-old-space-size=64 --trace-warnings"))
            ),
            r#"--require "/run/a dir/with \"quotes\"/node-drain.js" --max-old-space-size=64 --trace-warnings"#
        );
        assert_eq!(
            options_with_drain(
                std::path::Path::new("/d/node-drain.js"),
                Some(OsStr::new(""))
            ),
            r#"--require "/d/node-drain.js""#
        );
    }
}
