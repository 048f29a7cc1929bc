//! The control protocol: one JSON request per connection, answered by JSON lines.
//!
//! A client connects to the cluster's control socket, writes one [`Request`] as a line, and reads
//! [`Reply`] lines until the connection closes: a single `result` for most requests; `progress`
//! lines then a `result` for `reload` and `restart`; `log` lines for `logs`. Documented for
//! scripts in `docs/control.md`.
//!
//! The status types here are the JSON's shape (strings, milliseconds); the typed values they are
//! made of live in [`crate::domain`], and `mapping` turns one into the other, in one place.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::domain::ScaleTarget;

mod mapping;

/// What a client asks of the primary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "lowercase", deny_unknown_fields)]
pub enum Request {
    /// Struct variants, even without fields: serde refuses unknown fields only in those.
    Status {},
    Reload {
        #[serde(default = "one")]
        parallel: usize,
    },
    Restart {
        slot: usize,
    },
    Scale {
        to: ScaleTarget,
    },
    Stop {},
    /// Send `data` to a slot's worker (`to`: `"3"`) or to every worker (`"all"`) over the IPC
    /// channel (`--ipc`).
    Send {
        to: String,
        data: serde_json::Value,
    },
    Logs {
        #[serde(default)]
        slot: Option<usize>,
        #[serde(default = "default_lines")]
        lines: usize,
        #[serde(default)]
        follow: bool,
    },
}

fn one() -> usize {
    1
}

fn default_lines() -> usize {
    200
}

/// One line of an answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Reply {
    /// How a long request goes, for people (`reload`, `restart`).
    Progress { message: String },
    /// A log line (`logs`).
    Log(LogLine),
    /// The cluster's state (`status`).
    Status(Box<ClusterStatus>),
    /// The end of the answer: `ok` and a message for people.
    Result { ok: bool, message: String },
}

/// A line of the primary's log ring.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
    /// The worker's slot; `None` for the primary's own messages.
    pub slot: Option<usize>,
    pub pid: u32,
    /// `stdout`, `stderr` or `herdsman`.
    pub stream: String,
    pub line: String,
}

/// `herdsman status`: the cluster line and one row per worker or empty slot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub name: String,
    pub pid: u32,
    pub address: String,
    pub balance: String,
    /// `off` or `ip` (`--sticky`).
    #[serde(default = "off")]
    pub sticky: String,
    /// `off`, `v1` or `v2` (`--proxy-protocol`).
    #[serde(default = "off")]
    pub proxy_protocol: String,
    /// `starting`, `running`, `reloading` or `stopping`.
    pub state: String,
    /// Running (or reloading) with fewer ready workers than slots: a slot is crash-looping,
    /// waiting to restart or not accepting.
    #[serde(default)]
    pub degraded: bool,
    /// The slots the cluster should have.
    pub workers: usize,
    /// The generation new workers get; increases with every reload.
    pub generation: u64,
    /// Completed reloads.
    pub reloads: u64,
    /// Aborted reloads (a replacement died or was not ready in time).
    #[serde(default)]
    pub reloads_aborted: u64,
    /// Connections waiting in the one socket's accept queue (`--balance shared`); absent in
    /// the other modes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accept_queue: Option<u64>,
    pub uptime_ms: u64,
    pub command: Vec<String>,
    pub slots: Vec<SlotStatus>,
    /// Shared state; absent with `--state off`.
    #[serde(default)]
    pub shared_state: Option<StateStatus>,
    /// Sockets of other processes on the cluster's port that take some of its connections.
    #[serde(default)]
    pub foreign_listeners: Vec<ForeignListenerStatus>,
    /// Addresses served besides `address`, because workers asked for them (a Node app's
    /// `listen(port)`); absent when there are none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also_serving: Vec<String>,
}

impl ClusterStatus {
    /// Why `slot` is not one of this cluster's, naming the ones it has ("cluster \`api\` has
    /// no slot 9; slots are 1 to 2"); `None` when it is. One wording for `herdsman logs
    /// --slot` and `restart` and for the admin server's `/api/logs`. Slots scaled away count
    /// while their rows are still there.
    pub fn missing_slot(&self, slot: usize) -> Option<String> {
        let highest = self
            .slots
            .iter()
            .map(|row| row.slot)
            .max()
            .unwrap_or(0)
            .max(self.workers);
        if (1..=highest).contains(&slot) {
            return None;
        }
        let slots = match highest {
            1 => "its only slot is 1".to_string(),
            _ => format!("slots are 1 to {highest}"),
        };
        Some(format!(
            "cluster `{}` has no slot {slot}; {slots}",
            self.name
        ))
    }
}

/// A socket on the cluster's port that is not the cluster's (reuseport).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ForeignListenerStatus {
    pub address: String,
    /// The process that holds it, when it can be seen.
    pub pid: Option<u32>,
    pub command: Option<String>,
    /// The herdsman cluster whose primary holds it.
    pub cluster: Option<String>,
    /// The slot whose worker (or a process it started) holds it: an app binding `$PORT`.
    pub slot: Option<usize>,
    /// In the cluster's `SO_REUSEPORT` group (same address), rather than on a more specific one.
    pub in_group: bool,
    /// One line for people.
    pub description: String,
}

/// Where workers' shared state lives, and the embedded store's figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StateStatus {
    /// The URL workers get (`HERDSMAN_STATE_URL`, `REDIS_URL`).
    pub url: String,
    /// `embedded` or `external`.
    pub kind: String,
    /// The embedded store's loopback TCP address, with `--state-listen`.
    pub tcp: Option<String>,
    pub keys: Option<u64>,
    /// Estimated bytes held by the embedded store.
    pub used_memory: Option<u64>,
    pub clients: Option<u64>,
    /// Commands the embedded store has run since it started.
    #[serde(default)]
    pub commands_processed: Option<u64>,
}

/// One worker, or a slot waiting for one (`pid` is then `None`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SlotStatus {
    pub slot: usize,
    pub pid: Option<u32>,
    pub generation: Option<u64>,
    /// `starting`, `ready`, `draining`, `backoff` or `errored`.
    pub state: String,
    pub uptime_ms: Option<u64>,
    /// Restarts of this slot after failures.
    pub restarts: u32,
    /// Those restarts by the kind of failure (`crashed`, `killed`, `exited`, `ready-timeout`,
    /// `not-accepting`, `unknown`); absent before the first.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub restart_reasons: BTreeMap<String, u32>,
    pub last_exit: Option<LastExitStatus>,
    /// CPU use since the previous status request (or since the worker started).
    pub cpu_percent: Option<f64>,
    pub rss_bytes: Option<u64>,
    /// Connections open to the worker now, where the primary sees them (the proxy modes and
    /// least-conn); absent in the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<u64>,
    /// Connections waiting in the accept queue of the worker's own socket (reuseport); absent
    /// in the other modes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accept_queue: Option<u64>,
    /// The slot's last worker replaced for a reason, while it served; absent if none was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_replacement: Option<ReplacementStatus>,
    /// Workers of the slot replaced for a reason, by kind; absent if none was.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub replacements: BTreeMap<String, u32>,
}

/// A worker replaced while it served: hung (`watchdog`), `max-memory` or `max-requests`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplacementStatus {
    pub pid: u32,
    pub kind: String,
    /// `rss 312 MiB over --max-memory 256 MiB`.
    pub reason: String,
    /// RFC 3339, UTC, milliseconds.
    pub at: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastExitStatus {
    pub pid: u32,
    /// `exited with code 1`, `was killed by SIGKILL`.
    pub reason: String,
    pub code: Option<i32>,
    pub signal: Option<String>,
    /// RFC 3339, UTC, milliseconds.
    pub at: String,
}

/// The value of a setting that an older primary's status does not name.
fn off() -> String {
    "off".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_as_json() {
        let request = Request::Reload { parallel: 2 };
        let json = serde_json::to_string(&request).unwrap();
        assert_eq!(json, r#"{"command":"reload","parallel":2}"#);
        assert_eq!(serde_json::from_str::<Request>(&json).unwrap(), request);
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"command":"reload"}"#).unwrap(),
            Request::Reload { parallel: 1 }
        );
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"command":"scale","to":{"add":2}}"#).unwrap(),
            Request::Scale {
                to: ScaleTarget::Add(2)
            }
        );
        assert!(serde_json::from_str::<Request>(r#"{"command":"explode"}"#).is_err());
        assert_eq!(
            serde_json::to_string(&Request::Status {}).unwrap(),
            r#"{"command":"status"}"#
        );
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"command":"stop"}"#).unwrap(),
            Request::Stop {}
        );
        for (request, field) in [
            (r#"{"command":"status","verbose":true}"#, "verbose"),
            (r#"{"command":"stop","fast":true}"#, "fast"),
            (r#"{"command":"reload","paralel":2}"#, "paralel"),
        ] {
            let error = serde_json::from_str::<Request>(request).unwrap_err();
            assert!(
                error
                    .to_string()
                    .starts_with(&format!("unknown field `{field}`")),
                "{request}: {error}"
            );
        }
    }
}
