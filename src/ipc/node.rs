//! Node's own messages on a `--ipc node` channel (`{"cmd":"NODE_…"}`, which
//! `process.on('message')` never sees), as Node 20 writes them (`lib/internal/cluster/`,
//! `lib/internal/child_process.js`); docs/protocol.md, "Node's cluster messages", has the
//! wire. Two layers:
//! - cluster messages, `{"cmd":"NODE_CLUSTER","act":…,…,"seq":N}` (`sendHelper` in
//!   `cluster/utils.js`): what a worker's `net.Server.listen()` and `cluster.worker` say
//!   ([`NodeCluster`]), and the primary's replies ([`ClusterLine`]);
//! - the handle frame, `{"cmd":"NODE_HANDLE","type":T,"msg":M}` ([`HandleLine`]), whose fd
//!   rides as SCM_RIGHTS on the `sendmsg` of its line, and the receiver's
//!   `{"cmd":"NODE_HANDLE_ACK"}` (or `_NACK` when the fd did not come) before which the sender
//!   writes nothing more (Node's `_handleQueue`; the channel keeps that rule).
//!
//! Decoding never fails: a cluster message that is not as Node writes it is
//! [`NodeCluster::Unknown`] with the reason, for the primary to log and pass over, so a bad
//! worker never cuts its channel with its own bookkeeping.

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};

use super::frame::FromWorker;

/// What a worker's `net.Server` listens on (`addressType` in Node's messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressType {
    /// `4`: TCP over IPv4.
    Tcp4,
    /// `6`: TCP over IPv6.
    Tcp6,
    /// `-1`: a Unix socket path (`address`), or `listen({fd})` (`fd`).
    Pipe,
    /// `"udp4"`, `"udp6"`: a `dgram` socket's `bind()`.
    Udp4,
    Udp6,
}

/// A cluster message from a worker (`{"cmd":"NODE_CLUSTER",…}`). `seq` is the worker's
/// counter, which the primary's reply names as its `ack`; `raw` is the whole message, for what
/// is not typed here (a `listen()`'s other options: `ipv6Only`, `readableAll`, …).
#[derive(Debug, Clone, PartialEq)]
pub enum NodeCluster {
    /// `{act:'online'}`: the worker's cluster module is set up (sent once, at start).
    Online,
    /// `{act:'queryServer',…}`: a `net.Server.listen()` (or `dgram` `bind()`) asks for its
    /// socket. The primary answers `{ack: seq, key, errno, data, …}`, with the listening socket
    /// as a `net.Native` handle (shared) or without one (round-robin: `sockname`).
    QueryServer {
        seq: u64,
        /// How many servers in this worker asked for the same address before this one.
        index: u64,
        /// The host or path; `None` for `listen(port)` (every address).
        address: Option<String>,
        /// `None` for a Unix path or an fd (Node's `-1`).
        port: Option<u16>,
        address_type: AddressType,
        /// `listen({fd})`.
        fd: Option<i32>,
        /// The backlog asked for, if a number (Node writes `false` or leaves it out otherwise).
        backlog: Option<u32>,
        /// libuv's bind flags (`UV_TCP_IPV6ONLY` = 1); 0 when absent.
        flags: u32,
        /// Server data (a TLS server's ticket keys), handed back in the reply.
        data: Value,
        /// The handle's key as Node's primary makes it
        /// (`${address}:${port}:${addressType}:${fd}:${index}`, JavaScript's string of each:
        /// `null:8123:4:undefined:0`); the reply's `key` and a later `close` name it.
        key: String,
        raw: Value,
    },
    /// `{act:'listening',…}`: the server listens (on `port`, the real one after `listen(0)`).
    Listening {
        seq: u64,
        address: Option<String>,
        port: Option<u16>,
        address_type: AddressType,
        fd: Option<i32>,
        raw: Value,
    },
    /// `{act:'close', key}`: the worker closed the server it got for `key`.
    Close { seq: u64, key: String },
    /// `{act:'exitedAfterDisconnect'}`: the worker disconnects on purpose (`worker.disconnect()`
    /// or `destroy()`); it waits for `{ack: seq}` before it closes its channel.
    ExitedAfterDisconnect { seq: u64 },
    /// `{ack, accepted}`: the worker's answer to the primary's `newconn` whose seq was `ack`
    /// (round-robin); not accepted when the server is gone or at `maxConnections`.
    Accepted { ack: u64, accepted: bool, seq: u64 },
    /// Anything else, or one of the above not as Node writes it: `reason` says what is wrong.
    Unknown {
        act: Option<String>,
        reason: &'static str,
        raw: Value,
    },
}

/// One of Node's own frames from a worker (`cmd` starts with `NODE_`).
pub(super) fn from_worker(value: Value) -> FromWorker {
    match value.get("cmd").and_then(Value::as_str) {
        Some("NODE_CLUSTER") => FromWorker::Cluster(cluster(value)),
        Some("NODE_HANDLE_ACK") => FromWorker::HandleAck { received: true },
        Some("NODE_HANDLE_NACK") => FromWorker::HandleAck { received: false },
        Some("NODE_HANDLE") => FromWorker::UnsupportedHandle {
            handle_type: value.get("type").and_then(Value::as_str).map(str::to_owned),
            message: value.get("msg").cloned().unwrap_or(Value::Null),
        },
        // NODE_DEBUG_ENABLED and the like: Node's own, for nobody here.
        _ => FromWorker::Ignored,
    }
}

fn cluster(raw: Value) -> NodeCluster {
    let act = raw.get("act").and_then(Value::as_str).map(str::to_owned);
    match parse(&raw, act.as_deref()) {
        Ok(message) => message,
        Err(reason) => NodeCluster::Unknown { act, reason, raw },
    }
}

fn parse(raw: &Value, act: Option<&str>) -> Result<NodeCluster, &'static str> {
    let seq = || unsigned(raw.get("seq")).ok_or("`seq` must be a whole number");
    let string = |key| match raw.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(_) => Err("`address` must be a string or null"),
    };
    // `listen({fd})` sends `port: null` and `addressType: null` (Node 20).
    let port = || match raw.get("port").and_then(Value::as_i64) {
        None if matches!(raw.get("port"), None | Some(Value::Null)) => Ok(None),
        Some(-1) => Ok(None),
        Some(port) => u16::try_from(port)
            .map(Some)
            .map_err(|_| "`port` must be 0…65535 or -1"),
        None => Err("`port` must be a number"),
    };
    let fd = || match raw.get("fd") {
        None | Some(Value::Null) => Ok(None),
        Some(fd) => fd
            .as_i64()
            .and_then(|fd| i32::try_from(fd).ok())
            .map(|fd| (fd >= 0).then_some(fd))
            .ok_or("`fd` must be a number"),
    };
    let address_type = || match raw.get("addressType") {
        Some(Value::Number(n)) if n.as_i64() == Some(4) => Ok(AddressType::Tcp4),
        Some(Value::Number(n)) if n.as_i64() == Some(6) => Ok(AddressType::Tcp6),
        Some(Value::Number(n)) if n.as_i64() == Some(-1) => Ok(AddressType::Pipe),
        None | Some(Value::Null) => Ok(AddressType::Pipe),
        Some(Value::String(udp)) if udp == "udp4" => Ok(AddressType::Udp4),
        Some(Value::String(udp)) if udp == "udp6" => Ok(AddressType::Udp6),
        _ => Err("`addressType` must be 4, 6, -1, \"udp4\" or \"udp6\""),
    };
    match act {
        Some("online") => Ok(NodeCluster::Online),
        Some("queryServer") => {
            let index = unsigned(raw.get("index")).ok_or("`index` must be a whole number")?;
            let key = ["address", "port", "addressType", "fd", "index"]
                .map(|field| js_string(raw.get(field)))
                .join(":");
            Ok(NodeCluster::QueryServer {
                seq: seq()?,
                index,
                address: string("address")?,
                port: port()?,
                address_type: address_type()?,
                fd: fd()?,
                backlog: raw
                    .get("backlog")
                    .and_then(Value::as_u64)
                    .and_then(|backlog| u32::try_from(backlog).ok()),
                flags: match raw.get("flags") {
                    None | Some(Value::Null) => 0,
                    Some(flags) => flags
                        .as_u64()
                        .and_then(|flags| u32::try_from(flags).ok())
                        .ok_or("`flags` must be a whole number")?,
                },
                data: raw.get("data").cloned().unwrap_or(Value::Null),
                key,
                raw: raw.clone(),
            })
        }
        Some("listening") => Ok(NodeCluster::Listening {
            seq: seq()?,
            address: string("address")?,
            port: port()?,
            address_type: address_type()?,
            fd: fd()?,
            raw: raw.clone(),
        }),
        Some("close") => Ok(NodeCluster::Close {
            seq: seq()?,
            key: match raw.get("key") {
                Some(Value::String(key)) => key.clone(),
                _ => return Err("`key` must be a string"),
            },
        }),
        Some("exitedAfterDisconnect") => Ok(NodeCluster::ExitedAfterDisconnect { seq: seq()? }),
        Some(_) => Err("not an `act` Node's primary knows"),
        None => match raw.get("ack") {
            Some(ack) => Ok(NodeCluster::Accepted {
                ack: unsigned(Some(ack)).ok_or("`ack` must be a whole number")?,
                accepted: raw
                    .get("accepted")
                    .and_then(Value::as_bool)
                    .ok_or("`accepted` must be true or false")?,
                seq: seq()?,
            }),
            None => Err("neither an `act` nor an `ack`"),
        },
    }
}

/// A whole number ≥ 0 (JavaScript writes `3`, never `3.0`, but both are read).
fn unsigned(value: Option<&Value>) -> Option<u64> {
    let value = value?;
    value.as_u64().or_else(|| {
        value
            .as_f64()
            .filter(|n| n.fract() == 0.0 && *n >= 0.0 && *n < 9.0e15)
            .map(|n| n as u64)
    })
}

/// JavaScript's `${value}` of a value read from JSON (`undefined` when absent), for the keys
/// Node's primary makes from a message's fields.
fn js_string(value: Option<&Value>) -> String {
    match value {
        None => "undefined".into(),
        Some(Value::Null) => "null".into(),
        Some(Value::Bool(flag)) => flag.to_string(),
        Some(Value::Number(number)) => match (number.as_i64(), number.as_u64(), number.as_f64()) {
            (Some(n), _, _) => n.to_string(),
            (_, Some(n), _) => n.to_string(),
            // Integral floats print without `.0`, as JavaScript has one number type.
            (_, _, Some(n)) if n.fract() == 0.0 && n.abs() < 1e21 => format!("{n:.0}"),
            _ => number.to_string(),
        },
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::Null => String::new(),
                item => js_string(Some(item)),
            })
            .collect::<Vec<_>>()
            .join(","),
        Some(Value::Object(_)) => "[object Object]".into(),
    }
}

/// A cluster message as Node's primary writes it (`sendHelper`):
/// `{"cmd":"NODE_CLUSTER",…message,"seq":N}`, `message`'s fields in its order between (a
/// `cmd` or `seq` in it is left out: those two are the envelope's).
pub struct ClusterLine<'a> {
    pub message: &'a Map<String, Value>,
    pub seq: u64,
}

impl Serialize for ClusterLine<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let fields = self.message.keys().filter(|key| !is_envelope(key)).count();
        let mut map = serializer.serialize_map(Some(fields + 2))?;
        map.serialize_entry("cmd", "NODE_CLUSTER")?;
        for (key, value) in self.message {
            if !is_envelope(key) {
                map.serialize_entry(key, value)?;
            }
        }
        map.serialize_entry("seq", &self.seq)?;
        map.end()
    }
}

fn is_envelope(key: &str) -> bool {
    key == "cmd" || key == "seq"
}

/// The frame a handle rides with, as `target._send` in `child_process.js` builds it:
/// `{"cmd":"NODE_HANDLE","type":T,"msg":M}`. The receiving Node turns the fd into `T`
/// (`net.Native`: the raw handle, which the cluster module takes; `net.Server`: a listening
/// `net.Server`; `net.Socket`: a connected socket) and emits `M` with it.
#[derive(serde::Serialize)]
pub struct HandleLine<'a, M: Serialize> {
    pub cmd: &'static str,
    #[serde(rename = "type")]
    pub handle_type: &'a str,
    pub msg: M,
}

impl<'a, M: Serialize> HandleLine<'a, M> {
    pub fn new(handle_type: &'a str, msg: M) -> HandleLine<'a, M> {
        HandleLine {
            cmd: "NODE_HANDLE",
            handle_type,
            msg,
        }
    }
}

/// The `NODE_HANDLE_NACK` the primary answers a worker's handle with: it takes none, and Node's
/// sender, told so, goes on with its queue (after up to 3 retries of a `net.Socket`).
pub const HANDLE_NACK: &[u8] = b"{\"cmd\":\"NODE_HANDLE_NACK\"}\n";

#[cfg(test)]
#[path = "node_tests.rs"]
mod tests;
