//! The line framing of IPC channels: bytes to JSON values, one per line (`\n`-terminated,
//! UTF-8, a `\r` before the `\n` ignored, blank lines skipped), at most [`MAX_FRAME`] bytes;
//! and why a channel is cut ([`FrameError`]). What the values mean is `frame`'s.

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
    pub fn feed(&mut self, bytes: &[u8], values: &mut Vec<Value>) -> Result<(), FrameError> {
        self.feed_lines(bytes, |line| {
            values.push(parse(line)?);
            Ok(())
        })
    }

    /// Feeds bytes in; every complete line that is not blank goes to `each` (without its
    /// newline or `\r`), which may read it without JSON ([`parse`] is the ordinary way).
    pub fn feed_lines(
        &mut self,
        mut bytes: &[u8],
        mut each: impl FnMut(&[u8]) -> Result<(), FrameError>,
    ) -> Result<(), FrameError> {
        while let Some(newline) = bytes.iter().position(|&byte| byte == b'\n') {
            if self.pending.len() + newline > self.max_frame {
                return Err(FrameError::TooLong {
                    limit: self.max_frame,
                });
            }
            let whole = &bytes[..newline];
            bytes = &bytes[newline + 1..];
            // Most lines come whole in one read: no copy.
            let joined;
            let line = if self.pending.is_empty() {
                whole
            } else {
                self.pending.extend_from_slice(whole);
                joined = std::mem::take(&mut self.pending);
                &joined[..]
            };
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            each(line)?;
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

/// A line's JSON value.
pub fn parse(line: &[u8]) -> Result<Value, FrameError> {
    serde_json::from_slice(line).map_err(|error| FrameError::NotJson {
        reason: error.to_string(),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Any JSON value, small.
    pub(crate) fn json_value() -> impl Strategy<Value = Value> {
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
            prop_assert!(values.len() <= bytes.len());
        }
    }

    #[test]
    fn long_lines_and_lines_not_json_are_refused() {
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
        let mut values = Vec::new();
        Decoder::default()
            .feed(b"1\r\n\n  \n\"a\"\n[", &mut values)
            .unwrap();
        assert_eq!(values, [Value::from(1), Value::from("a")]);
    }
}
