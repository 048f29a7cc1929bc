//! Writing replies into a connection's output buffer. Commands reply in protocol-neutral terms
//! (a map, a set, a null, a push); each connection's protocol (RESP2, or RESP3 after `HELLO 3`)
//! picks the wire form, as Redis 7.0 does: a map is `%` in RESP3 and a flat array in RESP2, a
//! null is `_` or `$-1`/`*-1`, and so on. Scalars go through redis-protocol's encoders; the
//! headers of aggregates are one line each and written here, so replies stream without
//! building a frame tree first.

use bytes::BytesMut;
use redis_protocol::resp2::encode::extend_encode_borrowed;
use redis_protocol::resp2::types::BorrowedFrame;
use redis_protocol::resp3::encode::complete::extend_encode_borrowed as extend_encode3;
use redis_protocol::resp3::types::BorrowedFrame as Frame3;

/// Redis's reply texts that more than one command uses.
pub mod text {
    pub const SYNTAX: &str = "ERR syntax error";
    pub const NOT_INTEGER: &str = "ERR value is not an integer or out of range";
    pub const NOT_FLOAT: &str = "ERR value is not a valid float";
    pub const WRONG_TYPE: &str =
        "WRONGTYPE Operation against a key holding the wrong kind of value";
    pub const OVERFLOW: &str = "ERR increment or decrement would overflow";
    pub const OOM: &str = "OOM command not allowed when used memory > 'maxmemory'.";
}

/// A connection's pending output, and the protocol it speaks.
#[derive(Debug, Default)]
pub struct Out {
    pub buf: BytesMut,
    /// RESP3 (after `HELLO 3`); RESP2 otherwise.
    pub resp3: bool,
}

impl Out {
    fn frame(&mut self, frame: &BorrowedFrame) {
        // Encoding into a growable buffer cannot fail; the encoder sizes the buffer first.
        let _ = extend_encode_borrowed(&mut self.buf, frame, false);
    }

    fn frame3(&mut self, frame: &Frame3) {
        let _ = extend_encode3(&mut self.buf, frame, false);
    }

    fn header(&mut self, kind: u8, len: usize) {
        use std::fmt::Write;
        self.buf.extend_from_slice(&[kind]);
        // Into the buffer itself (no allocation): a `BytesMut` grows as written to.
        let _ = write!(self.buf, "{len}\r\n");
    }

    pub fn ok(&mut self) {
        self.simple("OK");
    }

    pub fn simple(&mut self, text: &str) {
        self.frame(&BorrowedFrame::SimpleString(text.as_bytes()));
    }

    /// An error reply; `text` starts with its code (`ERR`, `WRONGTYPE`, …). Line breaks would
    /// end the reply early, so they become spaces, as in Redis.
    pub fn error(&mut self, text: &str) {
        if text.contains(['\r', '\n']) {
            let text = text.replace(['\r', '\n'], " ");
            self.frame(&BorrowedFrame::Error(&text));
        } else {
            self.frame(&BorrowedFrame::Error(text));
        }
    }

    pub fn int(&mut self, value: i64) {
        self.frame(&BorrowedFrame::Integer(value));
    }

    /// A bulk string (`$`, the same in RESP2 and RESP3), written here rather than by the
    /// encoder: replies of many items (LRANGE, HGETALL) are mostly these.
    pub fn bulk(&mut self, value: &[u8]) {
        self.buf.reserve(value.len() + 16);
        self.header(b'$', value.len());
        self.buf.extend_from_slice(value);
        self.buf.extend_from_slice(b"\r\n");
    }

    /// The null bulk string (`$-1`; `_` in RESP3).
    pub fn null(&mut self) {
        if self.resp3 {
            self.frame3(&Frame3::Null);
        } else {
            self.frame(&BorrowedFrame::Null);
        }
    }

    /// A bulk string, or null.
    pub fn maybe_bulk(&mut self, value: Option<&[u8]>) {
        match value {
            Some(value) => self.bulk(value),
            None => self.null(),
        }
    }

    /// An array of bulk strings (nulls for `None`).
    pub fn array<'a, I>(&mut self, items: I)
    where
        I: IntoIterator<Item = Option<&'a [u8]>>,
        I::IntoIter: ExactSizeIterator,
    {
        let items = items.into_iter();
        self.array_header(items.len());
        for item in items {
            self.maybe_bulk(item);
        }
    }

    /// An array of bulk strings that are all present.
    pub fn bulks<'a, I>(&mut self, items: I)
    where
        I: IntoIterator<Item = &'a [u8]>,
        I::IntoIter: ExactSizeIterator,
    {
        self.array(items.into_iter().map(Some));
    }

    /// A set of bulk strings (`~` in RESP3, an array in RESP2).
    pub fn set_of<'a>(&mut self, items: impl IntoIterator<Item = &'a [u8]>) {
        let items: Vec<&[u8]> = items.into_iter().collect();
        self.set_header(items.len());
        for item in items {
            self.bulk(item);
        }
    }

    /// A map of bulk strings, from its keys and values in turn (`%` in RESP3, a flat array in
    /// RESP2).
    pub fn map_of<'a>(&mut self, items: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) {
        let items: Vec<(&[u8], &[u8])> = items.into_iter().collect();
        self.map_header(items.len());
        for (key, value) in items {
            self.bulk(key);
            self.bulk(value);
        }
    }

    /// The null array (`*-1`; `_` in RESP3).
    pub fn null_array(&mut self) {
        if self.resp3 {
            self.frame3(&Frame3::Null);
        } else {
            self.buf.extend_from_slice(b"*-1\r\n");
        }
    }

    /// An array header; its `len` items follow.
    pub fn array_header(&mut self, len: usize) {
        self.header(b'*', len);
    }

    /// A map header; `len` keys, each followed by its value, follow.
    pub fn map_header(&mut self, len: usize) {
        if self.resp3 {
            self.header(b'%', len);
        } else {
            self.header(b'*', len * 2);
        }
    }

    /// A set header; its `len` members follow.
    pub fn set_header(&mut self, len: usize) {
        self.header(if self.resp3 { b'~' } else { b'*' }, len);
    }

    /// A push header (pub/sub messages and confirmations); its `len` items follow.
    pub fn push_header(&mut self, len: usize) {
        self.header(if self.resp3 { b'>' } else { b'*' }, len);
    }

    /// Text meant for people (`INFO`, `CLIENT LIST`): a verbatim string `txt` in RESP3, a bulk
    /// string in RESP2.
    pub fn verbatim(&mut self, text: &[u8]) {
        if self.resp3 {
            self.frame3(&Frame3::VerbatimString {
                data: text,
                format: redis_protocol::resp3::types::VerbatimStringFormat::Text,
                attributes: None,
            });
        } else {
            self.bulk(text);
        }
    }

    /// A double as Redis's `addReplyDouble`: `,` in RESP3, a bulk string in RESP2, `%.17g`.
    pub fn double(&mut self, value: f64) {
        let text = super::number::format_double(value);
        if self.resp3 {
            self.buf.extend_from_slice(b",");
            self.buf.extend_from_slice(text.as_bytes());
            self.buf.extend_from_slice(b"\r\n");
        } else {
            self.bulk(text.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_resp2() {
        let mut out = Out::default();
        out.ok();
        out.int(-3);
        out.bulk(b"hi");
        out.null();
        out.array([Some(&b"a"[..]), None]);
        out.error("ERR bad\r\nline");
        assert_eq!(
            &out.buf[..],
            b"+OK\r\n:-3\r\n$2\r\nhi\r\n$-1\r\n*2\r\n$1\r\na\r\n$-1\r\n-ERR bad  line\r\n"
        );
    }

    #[test]
    fn the_same_replies_in_resp3_use_its_types() {
        for resp3 in [false, true] {
            let mut out = Out {
                resp3,
                ..Out::default()
            };
            out.null();
            out.map_of([(&b"a"[..], &b"1"[..])]);
            out.set_of([&b"m"[..]]);
            out.push_header(1);
            out.verbatim(b"x");
            out.double(1.5);
            let expected: &[u8] = if resp3 {
                b"_\r\n%1\r\n$1\r\na\r\n$1\r\n1\r\n~1\r\n$1\r\nm\r\n>1\r\n=5\r\ntxt:x\r\n,1.5\r\n"
            } else {
                b"$-1\r\n*2\r\n$1\r\na\r\n$1\r\n1\r\n*1\r\n$1\r\nm\r\n*1\r\n$1\r\nx\r\n$3\r\n1.5\r\n"
            };
            assert_eq!(&out.buf[..], expected, "resp3: {resp3}");
        }
    }
}
