//! herdsman's handoff frames (`--balance round-robin` and `least-conn` with `--ipc`): the
//! primary hands a worker a connection it accepted, and the worker answers. docs/protocol.md,
//! "Handed connections", is the wire for any language:
//! - primary → worker: `{"id":N,"type":"connection"}` with the connection's fd as SCM_RIGHTS on
//!   the `sendmsg` of the line's first bytes; `{"id":N,"type":"ping"}`, asking whether the
//!   worker's loop runs (the channel's reader answers it at once).
//! - worker → primary: `{"id":N,"type":"accepted"}` (the server took connection N),
//!   `{"id":N,"type":"refused"}` (it will not serve it: no listener, or stopping; the primary
//!   hands it to another worker), `{"id":N,"type":"closed"}` (connection N is closed: what
//!   `least-conn` counts), `{"id":N,"type":"pong"}`.
//!
//! These lines come once or twice per connection, so each end writes them by hand and reads
//! the bytes its peer's library writes without building a `serde_json::Value`
//! ([`parse`]); a line written otherwise (keys in another order, spaces) is read through the
//! ordinary decoder ([`from_value`]), so another language's worker need not match the bytes.

use serde_json::Value;

/// What a handoff line says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Primary → worker: a connection, its fd with the line.
    Connection,
    /// Primary → worker: is your loop free?
    Ping,
    /// Worker → primary: connection `id` taken by the server.
    Accepted,
    /// Worker → primary: connection `id` not taken; its copy is closed.
    Refused,
    /// Worker → primary: connection `id` closed.
    Closed,
    /// Worker → primary: the answer to ping `id`.
    Pong,
}

impl Kind {
    const ALL: [Kind; 6] = [
        Kind::Connection,
        Kind::Ping,
        Kind::Accepted,
        Kind::Refused,
        Kind::Closed,
        Kind::Pong,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Connection => "connection",
            Kind::Ping => "ping",
            Kind::Accepted => "accepted",
            Kind::Refused => "refused",
            Kind::Closed => "closed",
            Kind::Pong => "pong",
        }
    }

    /// Whether the worker writes it (else the primary does).
    pub fn is_answer(self) -> bool {
        !matches!(self, Kind::Connection | Kind::Ping)
    }

    fn named(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|kind| kind.as_str() == name)
    }
}

/// `{"id":ID,"type":KIND}` and its newline, as both ends write it.
pub fn line(kind: Kind, id: u64) -> Vec<u8> {
    let mut line = Vec::with_capacity(48);
    line.extend_from_slice(b"{\"id\":");
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = id;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    line.extend_from_slice(&digits[at..]);
    line.extend_from_slice(b",\"type\":\"");
    line.extend_from_slice(kind.as_str().as_bytes());
    line.extend_from_slice(b"\"}\n");
    line
}

/// A line (without its newline) exactly as [`line`] writes it; `None` for any other line.
pub fn parse(line: &[u8]) -> Option<(Kind, u64)> {
    let rest = line.strip_prefix(b"{\"id\":")?;
    let digits = rest.iter().take_while(|byte| byte.is_ascii_digit()).count();
    if digits == 0 || (digits > 1 && rest[0] == b'0') {
        return None;
    }
    let id = rest[..digits].iter().try_fold(0u64, |id, digit| {
        id.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
    })?;
    let name = rest[digits..]
        .strip_prefix(b",\"type\":\"")?
        .strip_suffix(b"\"}")?;
    let kind = Kind::ALL
        .into_iter()
        .find(|kind| kind.as_str().as_bytes() == name)?;
    Some((kind, id))
}

/// A decoded value that is a handoff frame: its `type` names one and `id` is a number.
/// `None` for anything else (then it is an ordinary frame, or a bad one).
pub fn from_value(value: &Value) -> Option<(Kind, u64)> {
    let kind = Kind::named(value.get("type")?.as_str()?)?;
    let id = value.get("id")?.as_u64()?;
    Some((kind, id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn lines_are_pinned() {
        assert_eq!(
            line(Kind::Connection, 0),
            b"{\"id\":0,\"type\":\"connection\"}\n"
        );
        assert_eq!(
            line(Kind::Closed, 18446744073709551615),
            b"{\"id\":18446744073709551615,\"type\":\"closed\"}\n"
        );
    }

    #[test]
    fn other_lines_are_not_handoff_frames_by_bytes_but_may_be_by_value() {
        assert_eq!(parse(b"{\"id\":01,\"type\":\"pong\"}"), None);
        assert_eq!(parse(b"{\"id\":1,\"type\":\"shout\"}"), None);
        assert_eq!(parse(b"{\"type\":\"pong\",\"id\":1}"), None);
        assert_eq!(parse(b"{\"id\":1,\"type\":\"pong\"} "), None);
        assert_eq!(
            parse(b"{\"id\":99999999999999999999,\"type\":\"pong\"}"),
            None
        );
        let value = serde_json::json!({"type": "accepted", "id": 7, "extra": true});
        assert_eq!(from_value(&value), Some((Kind::Accepted, 7)));
        assert_eq!(from_value(&serde_json::json!({"type": "ready"})), None);
        assert_eq!(
            from_value(&serde_json::json!({"type": "closed", "id": -1})),
            None
        );
    }

    proptest! {
        #[test]
        fn every_line_reads_back_by_bytes_and_by_value(id in any::<u64>(), pick in 0usize..6) {
            let kind = Kind::ALL[pick];
            let written = line(kind, id);
            let bare = written.strip_suffix(b"\n").unwrap();
            prop_assert_eq!(parse(bare), Some((kind, id)));
            let value: Value = serde_json::from_slice(bare).unwrap();
            prop_assert_eq!(from_value(&value), Some((kind, id)));
        }
    }
}
