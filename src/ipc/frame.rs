//! IPC frames: what the JSON values on a channel's lines (`line`) mean. Both ends use this
//! module: each direction has one type with one `encode` and one `decode`, for both dialects
//! ([`Dialect`]; Node's is `process.send()` with `serialization: 'json'`, its default):
//! - worker → primary, [`FromWorker`]: `{"type":"ready"}`; `{"data":V,"type":"message"}`,
//!   optionally with `"to": SLOT` or `"to": "all"` to reach other workers through the primary.
//! - primary → worker, [`ToWorker`]: `{"data":V,"from":"primary","type":"message"}` (or
//!   `"from": SLOT`, routed from that slot's worker).
//!
//! In Node's dialect (`--ipc node`) every line is a message as `process.send()` wrote it, the
//! string `"ready"` is PM2's readiness signal, and lines that are Node's own
//! (`{"cmd":"NODE_…"}`) are Node's cluster protocol (`node`): decoded there, from a worker, into
//! [`FromWorker::Cluster`] and the handle frames. Node's handle frames to a worker are written
//! by the channel (`PrimaryChannel::send_handle`); herdsman's own fd-handoff frame's place is
//! marked in [`ToWorker`].
//!
//! Lines are written by serde from one struct whose field order is the wire's (see `Line`);
//! they are read by hand from a `serde_json::Value` rather than derived, because the reader is
//! lenient where the protocol says so (`data` may be absent, unknown keys are ignored), strict
//! where serde is not (it would take `[1,2]` as a struct's fields), and says which key is wrong.

use std::borrow::Cow;

use serde_json::Value;

use super::line::FrameError;

/// Which frames a channel carries (`--ipc on` or `--ipc node`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// herdsman's frames: objects with a `type` (docs/protocol.md).
    Herdsman,
    /// Node's `process.send()`: every line is a message's value.
    Node,
}

/// Where a worker's message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Primary,
    Slot(usize),
    All,
}

/// A frame from a worker to the primary.
#[derive(Debug, Clone, PartialEq)]
pub enum FromWorker {
    /// The worker is ready for connections.
    Ready,
    /// A message, for the primary or (herdsman's dialect only) other workers through it.
    Message { data: Value, to: Target },
    /// Node's cluster messages (`{"cmd":"NODE_CLUSTER",…}`, Node's dialect only): what the
    /// worker's `net.Server.listen()` and `cluster.worker` ask of the primary. Never encoded
    /// (Node writes them).
    Cluster(super::node::NodeCluster),
    /// A handle the worker sent (`{"cmd":"NODE_HANDLE",…}`, `process.send(msg, handle)`): the
    /// primary takes none. Its fd never reaches the primary (the reader reads no ancillary
    /// data, so the kernel closes it), and the channel answers `NODE_HANDLE_NACK`, so the
    /// worker's queue goes on.
    UnsupportedHandle {
        handle_type: Option<String>,
        message: Value,
    },
    /// `{"cmd":"NODE_HANDLE_ACK"}` (`received`) or `_NACK`: the worker's answer to a handle
    /// the primary sent. Consumed by the channel (it releases the frames queued behind the
    /// handle), never reported.
    HandleAck { received: bool },
    /// Node's other bookkeeping (`{"cmd":"NODE_…"}`): decoded so that it can be passed over,
    /// never encoded.
    Ignored,
    /// herdsman's answer about a handed connection or a ping (`handoff`: `accepted`,
    /// `refused`, `closed`, `pong`), herdsman's dialect only.
    Handoff { kind: super::handoff::Kind, id: u64 },
}

/// A frame from the primary to a worker. `data` is borrowed when the primary sends one
/// message to many workers, owned when a worker decodes it.
#[derive(Debug, Clone, PartialEq)]
pub enum ToWorker<'a> {
    /// A message from the primary (`from: None`) or routed from the worker in slot `from`.
    Message {
        data: Cow<'a, Value>,
        from: Option<usize>,
    },
    // herdsman's handed connections (`{"id":N,"type":"connection"}` with the fd) and pings
    // are the channel's, not messages: `handoff` writes and reads them, and the worker's
    // reader pairs each with the fd that came with it (`channel`). In Node's dialect a
    // connection is Node's own frame, `send_internal_handle` with `{act:'newconn',key}`.
}

/// Why a frame has no line in a dialect.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("Node's `process.send()` has no addressing: a message to {to} cannot be written on a Node channel")]
    NodeHasNoAddressing { to: String },
    #[error("an ignored frame (Node's own bookkeeping) is never sent")]
    Ignored,
    #[error("Node's own messages are written by Node, not by herdsman's worker library")]
    NodeInternal,
    #[error("herdsman's handoff answers have no line in Node's dialect (Node answers `newconn`)")]
    NodeHasNoHandoff,
}

/// herdsman's frames as written: one struct for every frame of both directions, whose fields
/// are declared in the order the lines have them (alphabetical, as serde_json's map writes
/// them: the order the worker's `json!` frames had), absent fields left out. The tests pin the
/// bytes.
#[derive(serde::Serialize)]
struct Line<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<Address>,
    #[serde(skip_serializing_if = "Option::is_none")]
    to: Option<Address>,
    #[serde(rename = "type")]
    kind: &'static str,
}

/// A `from` or `to`: `"primary"`, `"all"`, or a slot number.
#[derive(serde::Serialize)]
#[serde(untagged)]
enum Address {
    Named(&'static str),
    Slot(usize),
}

/// `value` and its newline. Serializing a `Value`, or `Line`, cannot fail (every key is a
/// string); were it to, an empty line is one that the peer skips.
pub(super) fn line(value: &impl serde::Serialize) -> Vec<u8> {
    let mut line = serde_json::to_vec(value).unwrap_or_default();
    line.push(b'\n');
    line
}

/// Whether `value` is one of Node's own messages (`{"cmd":"NODE_…"}`), which
/// `process.on('message')` never sees (`isInternal` in Node's `child_process.js`).
fn is_node_internal(value: &Value) -> bool {
    value
        .get("cmd")
        .and_then(Value::as_str)
        .is_some_and(|cmd| cmd.len() > "NODE_".len() && cmd.starts_with("NODE_"))
}

impl FromWorker {
    /// The line a worker writes for this frame.
    pub fn encode(&self, dialect: Dialect) -> Result<Vec<u8>, EncodeError> {
        match (self, dialect) {
            (FromWorker::Ignored, _) => Err(EncodeError::Ignored),
            (
                FromWorker::Cluster(_)
                | FromWorker::UnsupportedHandle { .. }
                | FromWorker::HandleAck { .. },
                _,
            ) => Err(EncodeError::NodeInternal),
            (FromWorker::Handoff { kind, id }, Dialect::Herdsman) if kind.is_answer() => {
                Ok(super::handoff::line(*kind, *id))
            }
            (FromWorker::Handoff { .. }, _) => Err(EncodeError::NodeHasNoHandoff),
            (FromWorker::Ready, Dialect::Herdsman) => Ok(line(&Line {
                data: None,
                from: None,
                to: None,
                kind: "ready",
            })),
            (FromWorker::Message { data, to }, Dialect::Herdsman) => Ok(line(&Line {
                data: Some(data),
                from: None,
                to: match to {
                    Target::Primary => None,
                    Target::Slot(slot) => Some(Address::Slot(*slot)),
                    Target::All => Some(Address::Named("all")),
                },
                kind: "message",
            })),
            // PM2's readiness signal, `process.send('ready')`.
            (FromWorker::Ready, Dialect::Node) => Ok(line(&"ready")),
            (FromWorker::Message { data, to }, Dialect::Node) => match to {
                Target::Primary => Ok(line(data)),
                target => Err(EncodeError::NodeHasNoAddressing {
                    to: describe(target),
                }),
            },
        }
    }

    /// Understands a value a worker wrote; an error disconnects the channel.
    pub fn decode(value: Value, dialect: Dialect) -> Result<FromWorker, FrameError> {
        if dialect == Dialect::Node {
            // PM2's readiness (`process.send('ready')` with `wait_ready`): counted, as PM2 does.
            if value.as_str() == Some("ready") {
                return Ok(FromWorker::Ready);
            }
            return Ok(if is_node_internal(&value) {
                super::node::from_worker(value)
            } else {
                FromWorker::Message {
                    data: value,
                    to: Target::Primary,
                }
            });
        }
        let unknown = |reason| FrameError::Unknown {
            frame: shorten(&value),
            reason,
        };
        if let Some((kind, id)) = super::handoff::from_value(&value) {
            if kind.is_answer() {
                return Ok(FromWorker::Handoff { kind, id });
            }
        }
        match value.get("type").and_then(Value::as_str) {
            Some("ready") => Ok(FromWorker::Ready),
            Some("message") => {
                let to = match value.get("to") {
                    None | Some(Value::Null) => Target::Primary,
                    Some(Value::String(all)) if all == "all" => Target::All,
                    Some(Value::Number(slot)) => match slot.as_u64() {
                        Some(slot) if slot >= 1 => Target::Slot(slot as usize),
                        _ => return Err(unknown("`to` must be a slot (1, 2, …) or \"all\"")),
                    },
                    Some(_) => return Err(unknown("`to` must be a slot (1, 2, …) or \"all\"")),
                };
                let data = value.get("data").cloned().unwrap_or(Value::Null);
                Ok(FromWorker::Message { data, to })
            }
            Some(_) => Err(unknown(
                "`type` must be \"ready\", \"message\", or a handoff answer (\"accepted\", \
                 \"refused\", \"closed\", \"pong\") with a numeric `id`",
            )),
            None => Err(unknown("expected an object with a `type`")),
        }
    }
}

impl ToWorker<'_> {
    /// The line the primary writes for this frame.
    pub fn encode(&self, dialect: Dialect) -> Vec<u8> {
        match (self, dialect) {
            (ToWorker::Message { data, from }, Dialect::Herdsman) => line(&Line {
                data: Some(data),
                from: Some(from.map_or(Address::Named("primary"), Address::Slot)),
                to: None,
                kind: "message",
            }),
            (ToWorker::Message { data, .. }, Dialect::Node) => line(data.as_ref()),
        }
    }

    /// Understands a value the primary wrote. A worker passes over what it refuses (a frame of
    /// a newer primary), as `process.on('message')` never sees Node's own messages.
    pub fn decode(value: Value, dialect: Dialect) -> Result<ToWorker<'static>, FrameError> {
        let unknown = |reason| FrameError::Unknown {
            frame: shorten(&value),
            reason,
        };
        if dialect == Dialect::Node {
            if is_node_internal(&value) {
                return Err(unknown("Node's own bookkeeping, not a message"));
            }
            return Ok(ToWorker::Message {
                data: Cow::Owned(value),
                from: None,
            });
        }
        match value.get("type").and_then(Value::as_str) {
            Some("message") => {
                let from = match value.get("from") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(primary)) if primary == "primary" => None,
                    Some(Value::Number(slot)) => match slot.as_u64() {
                        Some(slot) if slot >= 1 => Some(slot as usize),
                        _ => return Err(unknown("`from` must be a slot (1, 2, …) or \"primary\"")),
                    },
                    Some(_) => {
                        return Err(unknown("`from` must be a slot (1, 2, …) or \"primary\""))
                    }
                };
                let data = value.get("data").cloned().unwrap_or(Value::Null);
                Ok(ToWorker::Message {
                    data: Cow::Owned(data),
                    from,
                })
            }
            Some(_) => Err(unknown("`type` must be \"message\"")),
            None => Err(unknown("expected an object with a `type`")),
        }
    }
}

/// "the primary", "worker 3", "all workers".
pub fn describe(target: &Target) -> String {
    match target {
        Target::Primary => "the primary".into(),
        Target::Slot(slot) => format!("worker {slot}"),
        Target::All => "all workers".into(),
    }
}

/// A value as text, cut to 200 characters, for error messages.
pub fn shorten(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() <= 200 {
        text
    } else {
        format!("{}…", text.chars().take(200).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipc::line::tests::json_value;
    use crate::ipc::line::Decoder;
    use proptest::prelude::*;

    proptest! {
        /// Any frame comes back from its line the same, in both directions and both dialects
        /// (but for Node's two values that are not messages).
        #[test]
        fn frames_survive_their_lines(data in json_value(), slot in 1usize..1000, pick in 0u8..3) {
            let to = [Target::Primary, Target::Slot(slot), Target::All][usize::from(pick)].clone();
            let from = (pick == 1).then_some(slot);
            let node_message = data.as_str() != Some("ready") && !is_node_internal(&data);
            for dialect in [Dialect::Herdsman, Dialect::Node] {
                let frame = FromWorker::Message { data: data.clone(), to: to.clone() };
                if dialect == Dialect::Herdsman || (node_message && to == Target::Primary) {
                    let line = frame.encode(dialect).unwrap();
                    prop_assert_eq!(FromWorker::decode(value_of(&line), dialect), Ok(frame));
                }
                let from = if dialect == Dialect::Node { None } else { from };
                let frame = ToWorker::Message { data: Cow::Borrowed(&data), from };
                if dialect == Dialect::Herdsman || !is_node_internal(&data) {
                    let line = frame.encode(dialect);
                    prop_assert_eq!(ToWorker::decode(value_of(&line), dialect), Ok(frame));
                }
            }
        }
    }

    #[test]
    fn frames_are_understood_or_refused_with_a_reason() {
        let parse =
            |text: &str| FromWorker::decode(serde_json::from_str(text).unwrap(), Dialect::Herdsman);
        assert_eq!(parse(r#"{"type":"ready"}"#), Ok(FromWorker::Ready));
        assert_eq!(
            parse(r#"{"type":"message","data":{"n":1},"to":2}"#),
            Ok(FromWorker::Message {
                data: serde_json::json!({"n": 1}),
                to: Target::Slot(2)
            })
        );
        assert_eq!(
            parse(r#"{"type":"message","data":1,"to":"all"}"#).unwrap(),
            FromWorker::Message {
                data: 1.into(),
                to: Target::All
            }
        );
        assert_eq!(
            parse(r#"{"type":"shout"}"#).unwrap_err().to_string(),
            r#"frame {"type":"shout"} is not a herdsman frame: `type` must be "ready", "message", or a handoff answer ("accepted", "refused", "closed", "pong") with a numeric `id`"#
        );
        assert!(parse(r#"{"type":"message","to":0}"#).is_err());
        assert!(parse("[1,2]").is_err());
        assert_eq!(
            FromWorker::decode(serde_json::json!({"cmd": "NODE_HANDLE_ACK"}), Dialect::Node),
            Ok(FromWorker::HandleAck { received: true })
        );
        assert_eq!(
            FromWorker::decode(
                serde_json::json!({"cmd": "NODE_DEBUG_ENABLED"}),
                Dialect::Node
            ),
            Ok(FromWorker::Ignored)
        );
    }

    /// The one value a stream of `bytes` holds.
    fn value_of(bytes: &[u8]) -> Value {
        let mut values = Vec::new();
        Decoder::default().feed(bytes, &mut values).unwrap();
        assert_eq!(values.len(), 1, "{}", bytes.escape_ascii());
        values.pop().unwrap()
    }

    /// A worker's frames, and the exact lines they are on the wire in each dialect (as the
    /// worker library's `json!` wrote them before these types, and as docs/protocol.md and
    /// Node's `process.send()` have them).
    fn from_worker_lines() -> Vec<(FromWorker, Dialect, &'static str)> {
        let data = serde_json::json!({"jobs": 3, "name": "a\nb", "list": [1.5, null, true]});
        let message = |to| FromWorker::Message {
            data: data.clone(),
            to,
        };
        vec![
            (FromWorker::Ready, Dialect::Herdsman, "{\"type\":\"ready\"}\n"),
            (
                message(Target::Primary),
                Dialect::Herdsman,
                "{\"data\":{\"jobs\":3,\"list\":[1.5,null,true],\"name\":\"a\\nb\"},\"type\":\"message\"}\n",
            ),
            (
                message(Target::Slot(3)),
                Dialect::Herdsman,
                "{\"data\":{\"jobs\":3,\"list\":[1.5,null,true],\"name\":\"a\\nb\"},\"to\":3,\"type\":\"message\"}\n",
            ),
            (
                message(Target::All),
                Dialect::Herdsman,
                "{\"data\":{\"jobs\":3,\"list\":[1.5,null,true],\"name\":\"a\\nb\"},\"to\":\"all\",\"type\":\"message\"}\n",
            ),
            (
                FromWorker::Message {
                    data: Value::Null,
                    to: Target::Primary,
                },
                Dialect::Herdsman,
                "{\"data\":null,\"type\":\"message\"}\n",
            ),
            (FromWorker::Ready, Dialect::Node, "\"ready\"\n"),
            (
                message(Target::Primary),
                Dialect::Node,
                "{\"jobs\":3,\"list\":[1.5,null,true],\"name\":\"a\\nb\"}\n",
            ),
            (
                FromWorker::Message {
                    data: "flush".into(),
                    to: Target::Primary,
                },
                Dialect::Node,
                "\"flush\"\n",
            ),
        ]
    }

    fn to_worker_lines() -> Vec<(ToWorker<'static>, Dialect, &'static str)> {
        let data = serde_json::json!({"reload-config": true, "at": [2, "x"]});
        let message = |from| ToWorker::Message {
            data: Cow::Owned(data.clone()),
            from,
        };
        vec![
            (
                message(None),
                Dialect::Herdsman,
                "{\"data\":{\"at\":[2,\"x\"],\"reload-config\":true},\"from\":\"primary\",\"type\":\"message\"}\n",
            ),
            (
                message(Some(2)),
                Dialect::Herdsman,
                "{\"data\":{\"at\":[2,\"x\"],\"reload-config\":true},\"from\":2,\"type\":\"message\"}\n",
            ),
            (
                ToWorker::Message {
                    data: Cow::Owned(Value::from(-0.25)),
                    from: Some(12),
                },
                Dialect::Herdsman,
                "{\"data\":-0.25,\"from\":12,\"type\":\"message\"}\n",
            ),
            (
                message(None),
                Dialect::Node,
                "{\"at\":[2,\"x\"],\"reload-config\":true}\n",
            ),
            (
                ToWorker::Message {
                    data: Cow::Owned("ready".into()),
                    from: None,
                },
                Dialect::Node,
                "\"ready\"\n",
            ),
        ]
    }

    #[test]
    fn frames_from_workers_are_todays_bytes_both_ways() {
        for (frame, dialect, wire) in from_worker_lines() {
            let encoded = frame.encode(dialect).unwrap();
            assert_eq!(
                String::from_utf8(encoded).unwrap(),
                wire,
                "{frame:?} in {dialect:?}"
            );
            assert_eq!(
                FromWorker::decode(value_of(wire.as_bytes()), dialect),
                Ok(frame)
            );
        }
    }

    #[test]
    fn frames_to_workers_are_todays_bytes_both_ways() {
        for (frame, dialect, wire) in to_worker_lines() {
            let encoded = frame.encode(dialect);
            assert_eq!(
                String::from_utf8(encoded).unwrap(),
                wire,
                "{frame:?} in {dialect:?}"
            );
            assert_eq!(
                ToWorker::decode(value_of(wire.as_bytes()), dialect),
                Ok(frame)
            );
        }
    }

    #[test]
    fn what_a_dialect_cannot_carry_is_refused_not_written() {
        let to_slot = FromWorker::Message {
            data: 1.into(),
            to: Target::Slot(2),
        };
        assert_eq!(
            to_slot.encode(Dialect::Node).unwrap_err().to_string(),
            "Node's `process.send()` has no addressing: a message to worker 2 cannot be \
             written on a Node channel"
        );
        assert_eq!(
            FromWorker::Ignored.encode(Dialect::Herdsman),
            Err(EncodeError::Ignored)
        );
        // What a worker passes over: Node's own messages, frames it does not know.
        assert!(
            ToWorker::decode(serde_json::json!({"cmd": "NODE_HANDLE"}), Dialect::Node).is_err()
        );
        assert_eq!(
            ToWorker::decode(serde_json::json!({"type": "connection"}), Dialect::Herdsman)
                .unwrap_err()
                .to_string(),
            r#"frame {"type":"connection"} is not a herdsman frame: `type` must be "message""#
        );
        assert!(ToWorker::decode(
            serde_json::json!({"type": "message", "from": 0}),
            Dialect::Herdsman
        )
        .is_err());
    }
}
