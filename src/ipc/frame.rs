//! IPC frames: one JSON value per line (`\n`-terminated, UTF-8), at most [`MAX_FRAME`] bytes.
//! The same framing as Node's `process.send()` with `serialization: 'json'` (its default).
//!
//! herdsman's own frames are objects with a `type`:
//! - worker → primary: `{"type":"ready"}`; `{"type":"message","data":V}`, optionally with
//!   `"to": SLOT` or `"to": "all"` to reach other workers through the primary.
//! - primary → worker: `{"type":"message","data":V,"from":"primary"}` (or `"from": SLOT`).
//!
//! In Node mode (`--ipc node`) every line is a message as `process.send()` wrote it, and lines
//! that are Node's own (`{"cmd":"NODE_…"}`) are ignored.

use serde_json::Value;

/// The longest frame accepted; a longer line disconnects the channel.
pub const MAX_FRAME: usize = 1024 * 1024;

/// Why a channel is disconnected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame longer than {limit} bytes")]
    TooLong { limit: usize },
    #[error("frame is not JSON: {reason}")]
    NotJson { reason: String },
    #[error("frame {frame} is not a herdsman frame: {reason}")]
    Unknown { frame: String, reason: &'static str },
}

/// Splits a byte stream into JSON values, keeping the partial last line between calls.
#[derive(Debug)]
pub struct Decoder {
    pending: Vec<u8>,
    max_frame: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new(MAX_FRAME)
    }
}

impl Decoder {
    pub fn new(max_frame: usize) -> Decoder {
        Decoder {
            pending: Vec::new(),
            max_frame,
        }
    }

    /// Feeds bytes in; every complete line's value is pushed to `values`. After an error the
    /// channel must be closed (what follows is not trusted).
    pub fn feed(&mut self, mut bytes: &[u8], values: &mut Vec<Value>) -> Result<(), FrameError> {
        while let Some(newline) = bytes.iter().position(|&byte| byte == b'\n') {
            if self.pending.len() + newline > self.max_frame {
                return Err(FrameError::TooLong {
                    limit: self.max_frame,
                });
            }
            self.pending.extend_from_slice(&bytes[..newline]);
            bytes = &bytes[newline + 1..];
            let line = std::mem::take(&mut self.pending);
            let line = line.strip_suffix(b"\r").unwrap_or(&line);
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let value = serde_json::from_slice(line).map_err(|error| FrameError::NotJson {
                reason: error.to_string(),
            })?;
            values.push(value);
        }
        if self.pending.len() + bytes.len() > self.max_frame {
            return Err(FrameError::TooLong {
                limit: self.max_frame,
            });
        }
        self.pending.extend_from_slice(bytes);
        Ok(())
    }
}

/// Where a worker's message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Primary,
    Slot(usize),
    All,
}

/// A frame from a worker, understood.
#[derive(Debug, Clone, PartialEq)]
pub enum FromWorker {
    Ready,
    Message {
        data: Value,
        to: Target,
    },
    /// Node's own bookkeeping (`{"cmd":"NODE_…"}`): nothing to do.
    Ignored,
}

/// Understands a value from a worker; `node` for Node's framing (every value is a message).
pub fn from_worker(value: Value, node: bool) -> Result<FromWorker, FrameError> {
    if node {
        // PM2's readiness (`process.send('ready')` with `wait_ready`): counted, as PM2 does.
        if value.as_str() == Some("ready") {
            return Ok(FromWorker::Ready);
        }
        let internal = value
            .get("cmd")
            .and_then(Value::as_str)
            .is_some_and(|cmd| cmd.starts_with("NODE_"));
        return Ok(if internal {
            FromWorker::Ignored
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
        Some(_) => Err(unknown("`type` must be \"ready\" or \"message\"")),
        None => Err(unknown("expected an object with a `type`")),
    }
}

/// The line a worker receives for `data` (from the primary, or from slot `from`).
pub fn to_worker(data: &Value, from: Option<usize>, node: bool) -> Vec<u8> {
    let mut line = if node {
        serde_json::to_vec(data)
    } else {
        let from = from.map_or(Value::from("primary"), Value::from);
        serde_json::to_vec(&serde_json::json!({ "type": "message", "data": data, "from": from }))
    }
    .unwrap_or_default();
    line.push(b'\n');
    line
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
    use proptest::prelude::*;

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            "\\PC{0,20}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::btree_map("\\PC{0,10}", inner, 0..8)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Values written one per line come back the same, however the bytes are cut.
        #[test]
        fn values_survive_any_split(values in prop::collection::vec(json_value(), 0..10), cuts in prop::collection::vec(0usize..4096, 0..10)) {
            let mut stream = Vec::new();
            for value in &values {
                stream.extend(serde_json::to_vec(value).unwrap());
                stream.push(b'\n');
            }
            let mut cuts: Vec<usize> = cuts.into_iter().map(|cut| cut % (stream.len() + 1)).collect();
            cuts.sort_unstable();
            let mut decoder = Decoder::default();
            let mut decoded = Vec::new();
            let mut start = 0;
            for cut in cuts.into_iter().chain([stream.len()]) {
                decoder.feed(&stream[start..cut], &mut decoded).unwrap();
                start = cut;
            }
            prop_assert_eq!(decoded, values);
        }

        /// Arbitrary bytes never panic the decoder; they give values or an error, and a line
        /// over the limit is always an error.
        #[test]
        fn arbitrary_bytes_are_values_or_an_error(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
            let mut decoder = Decoder::new(256);
            let mut values = Vec::new();
            let result = decoder.feed(&bytes, &mut values);
            let longest_line = bytes.split(|&byte| byte == b'\n').map(<[u8]>::len).max().unwrap_or(0);
            if longest_line > 256 {
                prop_assert!(result.is_err());
            }
            for value in values {
                let _ = from_worker(value, false);
            }
        }
    }

    #[test]
    fn frames_are_understood_or_refused_with_a_reason() {
        let parse = |text: &str| from_worker(serde_json::from_str(text).unwrap(), false);
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
            r#"frame {"type":"shout"} is not a herdsman frame: `type` must be "ready" or "message""#
        );
        assert!(parse(r#"{"type":"message","to":0}"#).is_err());
        assert!(parse("[1,2]").is_err());
        assert_eq!(
            from_worker(serde_json::json!({"cmd": "NODE_HANDLE_ACK"}), true),
            Ok(FromWorker::Ignored)
        );
        let mut decoder = Decoder::new(8);
        assert_eq!(
            decoder.feed(b"{\"a\":123456}\n", &mut Vec::new()),
            Err(FrameError::TooLong { limit: 8 })
        );
        let mut decoder = Decoder::default();
        assert!(matches!(
            decoder.feed(b"{nope}\n", &mut Vec::new()),
            Err(FrameError::NotJson { .. })
        ));
    }
}
