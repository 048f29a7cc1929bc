//! Writing RESP2 replies into a connection's output buffer, through redis-protocol's encoder.

use bytes::BytesMut;
use redis_protocol::resp2::encode::extend_encode_borrowed;
use redis_protocol::resp2::types::BorrowedFrame;

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

/// A connection's pending output.
#[derive(Debug, Default)]
pub struct Out {
    pub buf: BytesMut,
}

impl Out {
    fn frame(&mut self, frame: &BorrowedFrame) {
        // Encoding into a growable buffer cannot fail; the encoder sizes the buffer first.
        let _ = extend_encode_borrowed(&mut self.buf, frame, false);
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

    pub fn bulk(&mut self, value: &[u8]) {
        self.frame(&BorrowedFrame::BulkString(value));
    }

    pub fn null(&mut self) {
        self.frame(&BorrowedFrame::Null);
    }

    /// A bulk string, or null.
    pub fn maybe_bulk(&mut self, value: Option<&[u8]>) {
        match value {
            Some(value) => self.bulk(value),
            None => self.null(),
        }
    }

    /// An array of bulk strings (nulls for `None`).
    pub fn array<'a>(&mut self, items: impl IntoIterator<Item = Option<&'a [u8]>>) {
        let frames: Vec<BorrowedFrame> = items
            .into_iter()
            .map(|item| item.map_or(BorrowedFrame::Null, BorrowedFrame::BulkString))
            .collect();
        self.frame(&BorrowedFrame::Array(&frames));
    }

    /// An array of bulk strings that are all present.
    pub fn bulks<'a>(&mut self, items: impl IntoIterator<Item = &'a [u8]>) {
        self.array(items.into_iter().map(Some));
    }

    /// An array of mixed frames, for replies like `SCAN`'s and `HELLO`'s.
    pub fn frames(&mut self, frames: &[BorrowedFrame]) {
        self.frame(&BorrowedFrame::Array(frames));
    }

    /// `*-1`, the null array.
    pub fn null_array(&mut self) {
        self.buf.extend_from_slice(b"*-1\r\n");
    }

    /// An array header alone, for replies built from parts (`EXEC`).
    pub fn array_header(&mut self, len: usize) {
        self.buf.extend_from_slice(format!("*{len}\r\n").as_bytes());
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
}
