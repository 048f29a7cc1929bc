//! Enough HTTP/1.1 for the proxy to know where requests and responses end (RFC 9112 §6), which
//! requests may be sent twice (RFC 9110 §9.2.2), and when a connection becomes a tunnel:
//! plain functions over bytes, no I/O.
//!
//! The proxy reads heads with `httparse` and counts bodies with [`Body`]; it never changes a
//! byte of either.

/// At most this many bytes of a head are buffered; past it the connection is relayed as bytes.
pub const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 128;

/// What the proxy needs of a request's head.
#[derive(Debug, PartialEq, Eq)]
pub struct RequestHead {
    pub length: usize,
    pub idempotent: bool,
    pub is_head: bool,
    pub body: Body,
    /// `Upgrade` (a WebSocket handshake, h2c): after a `101` the connection is a tunnel.
    pub upgrade: bool,
    /// The client closes the connection after the response (`Connection: close`, HTTP/1.0).
    pub closes: bool,
}

/// What the proxy needs of a response's head.
#[derive(Debug, PartialEq, Eq)]
pub struct ResponseHead {
    pub length: usize,
    pub status: u16,
    pub body: Body,
    /// The response ends when the server closes the connection (no length, not chunked).
    pub until_close: bool,
    /// The server closes the connection after this response (`Connection: close`).
    pub closes: bool,
}

/// The start of a connection's bytes, as far as they tell.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<T> {
    Head(T),
    /// Not all of the head yet.
    Partial,
    /// Not HTTP/1.x, or a head too large to buffer.
    NotHttp,
}

/// Methods that may be sent twice with the effect of once (RFC 9110 §9.2.2).
fn is_idempotent(method: &str) -> bool {
    matches!(
        method,
        "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
    )
}

fn header<'a>(headers: &'a [httparse::Header<'a>], name: &str) -> impl Iterator<Item = &'a str> {
    let name = name.to_owned();
    headers
        .iter()
        .filter(move |header| header.name.eq_ignore_ascii_case(&name))
        .flat_map(|header| std::str::from_utf8(header.value).unwrap_or("").split(','))
        .map(str::trim)
}

fn has_token(headers: &[httparse::Header<'_>], name: &str, token: &str) -> bool {
    header(headers, name).any(|value| value.eq_ignore_ascii_case(token))
}

/// `None`: a length that is not a number, or two that disagree (RFC 9112 §6.3: unrecoverable).
fn content_length(headers: &[httparse::Header<'_>]) -> Option<Option<u64>> {
    let mut lengths = header(headers, "content-length").map(|value| value.parse::<u64>().ok());
    let Some(first) = lengths.next() else {
        return Some(None);
    };
    let first = first?;
    lengths
        .all(|other| other == Some(first))
        .then_some(Some(first))
}

pub fn parse_request(bytes: &[u8]) -> Parsed<RequestHead> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let length = match request.parse(bytes) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) if bytes.len() < MAX_HEAD => return Parsed::Partial,
        _ => return Parsed::NotHttp,
    };
    let method = request.method.unwrap_or("");
    let chunked = has_token(request.headers, "transfer-encoding", "chunked");
    let body = match (chunked, content_length(request.headers)) {
        (true, _) => Body::chunked(),
        (false, Some(Some(length))) => Body::Length(length),
        (false, Some(None)) => Body::Length(0),
        (false, None) => return Parsed::NotHttp,
    };
    Parsed::Head(RequestHead {
        length,
        idempotent: is_idempotent(method),
        is_head: method == "HEAD",
        body,
        upgrade: has_token(request.headers, "connection", "upgrade"),
        closes: has_token(request.headers, "connection", "close")
            || (request.version == Some(0)
                && !has_token(request.headers, "connection", "keep-alive")),
    })
}

/// The head of the response to a request (`HEAD` responses have no body).
pub fn parse_response(bytes: &[u8], to_head: bool) -> Parsed<ResponseHead> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let length = match response.parse(bytes) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) if bytes.len() < MAX_HEAD => return Parsed::Partial,
        _ => return Parsed::NotHttp,
    };
    let status = response.code.unwrap_or(0);
    let http10 = response.version == Some(0);
    let closes = has_token(response.headers, "connection", "close")
        || (http10 && !has_token(response.headers, "connection", "keep-alive"));
    let chunked = has_token(response.headers, "transfer-encoding", "chunked");
    let (body, until_close) =
        if to_head || (100..200).contains(&status) || matches!(status, 204 | 304) {
            (Body::Length(0), false)
        } else {
            match (chunked, content_length(response.headers)) {
                (true, _) => (Body::chunked(), false),
                (false, Some(Some(length))) => (Body::Length(length), false),
                (false, Some(None)) => (Body::Length(u64::MAX), true),
                (false, None) => return Parsed::NotHttp,
            }
        };
    Parsed::Head(ResponseHead {
        length,
        status,
        body,
        until_close,
        closes: closes || until_close,
    })
}

/// Where a message body ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// This many bytes are left (`u64::MAX`: until the connection closes).
    Length(u64),
    Chunked(Chunks),
}

/// Where a chunked body is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Chunks {
    /// At a chunk-size line; its bytes so far.
    Size(Vec<u8>),
    /// In a chunk's data, then its CRLF: this many bytes left.
    Data(u64),
    /// In the trailer section, after the last chunk; the current line's bytes so far.
    Trailer(Vec<u8>),
    Done,
}

impl Body {
    fn chunked() -> Body {
        Body::Chunked(Chunks::Size(Vec::new()))
    }

    pub fn is_done(&self) -> bool {
        matches!(self, Body::Length(0) | Body::Chunked(Chunks::Done))
    }

    /// How many of `bytes` (which follow what came before) belong to the body; the rest
    /// belongs to the next message. `Err` for a malformed chunked body.
    pub fn consume(&mut self, bytes: &[u8]) -> Result<usize, ()> {
        let mut used = 0;
        while used < bytes.len() && !self.is_done() {
            let rest = &bytes[used..];
            match self {
                Body::Length(left) => {
                    let taken = (*left).min(rest.len() as u64);
                    if *left != u64::MAX {
                        *left -= taken;
                    }
                    used += taken as usize;
                }
                Body::Chunked(chunks) => used += chunks.consume(rest)?,
            }
        }
        Ok(used)
    }
}

impl Chunks {
    /// Takes what it can of `bytes`: at most one line, or one chunk's data.
    fn consume(&mut self, bytes: &[u8]) -> Result<usize, ()> {
        match self {
            Chunks::Data(left) => {
                let taken = (*left).min(bytes.len() as u64);
                *left -= taken;
                if *left == 0 {
                    *self = Chunks::Size(Vec::new());
                    // The chunk's own CRLF comes first on the next line: an empty line.
                    if let Chunks::Size(line) = self {
                        line.extend_from_slice(b"\0");
                    }
                }
                Ok(taken as usize)
            }
            Chunks::Size(line) | Chunks::Trailer(line) => {
                let end = bytes.iter().position(|&byte| byte == b'\n');
                let taken = end.map_or(bytes.len(), |end| end + 1);
                line.extend_from_slice(&bytes[..taken]);
                if line.len() > MAX_HEAD {
                    return Err(());
                }
                if end.is_some() {
                    self.line_done()?;
                }
                Ok(taken)
            }
            Chunks::Done => Ok(0),
        }
    }

    fn line_done(&mut self) -> Result<(), ()> {
        match self {
            // The CRLF that ends a chunk's data (marked with a NUL above).
            Chunks::Size(line) if line.first() == Some(&0) => {
                if &line[1..] != b"\r\n" {
                    return Err(());
                }
                line.clear();
            }
            Chunks::Size(line) => match httparse::parse_chunk_size(line) {
                Ok(httparse::Status::Complete((_, 0))) => *self = Chunks::Trailer(Vec::new()),
                Ok(httparse::Status::Complete((_, size))) => *self = Chunks::Data(size),
                _ => return Err(()),
            },
            Chunks::Trailer(line) if line.as_slice() == b"\r\n" || line.as_slice() == b"\n" => {
                *self = Chunks::Done;
            }
            Chunks::Trailer(line) => line.clear(),
            Chunks::Data(_) | Chunks::Done => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(text: &str) -> RequestHead {
        match parse_request(text.as_bytes()) {
            Parsed::Head(head) => head,
            other => panic!("{text:?}: {other:?}"),
        }
    }

    #[test]
    fn requests() {
        let get = request("GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b");
        assert_eq!(get.length, 28);
        assert!(get.idempotent && !get.upgrade && !get.closes && get.body.is_done());
        assert!(request("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").closes);
        assert!(request("GET / HTTP/1.0\r\n\r\n").closes);
        let post = request("POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n");
        assert!(!post.idempotent);
        assert_eq!(post.body, Body::Length(5));
        let put = request("PUT / HTTP/1.1\r\ntransfer-encoding: gzip, chunked\r\n\r\n");
        assert!(put.idempotent);
        assert_eq!(put.body, Body::chunked());
        let ws = request(
            "GET /ws HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n",
        );
        assert!(ws.upgrade);
        assert_eq!(parse_request(b"GET / HTTP/1.1\r\nHost"), Parsed::Partial);
        assert_eq!(parse_request(b"\x16\x03\x01\x02\x00"), Parsed::NotHttp);
        assert_eq!(parse_request(b"*1\r\n$4\r\nPING\r\n"), Parsed::NotHttp);
        let conflicting = "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n";
        assert_eq!(parse_request(conflicting.as_bytes()), Parsed::NotHttp);
    }

    #[test]
    fn responses() {
        let Parsed::Head(ok) =
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", false)
        else {
            panic!()
        };
        assert_eq!(
            (ok.status, ok.length, ok.body, ok.closes),
            (200, 38, Body::Length(3), false)
        );
        let Parsed::Head(head) =
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", true)
        else {
            panic!()
        };
        assert!(head.body.is_done());
        let Parsed::Head(old) =
            parse_response(b"HTTP/1.0 200 OK\r\nServer: SimpleHTTP\r\n\r\n", false)
        else {
            panic!()
        };
        assert!(old.until_close && old.closes);
        let Parsed::Head(switching) = parse_response(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
            false,
        ) else {
            panic!()
        };
        assert_eq!(switching.status, 101);
        assert!(switching.body.is_done());
    }

    #[test]
    fn bodies_end_where_their_framing_says() {
        let mut length = Body::Length(4);
        assert_eq!(length.consume(b"ab"), Ok(2));
        assert_eq!(length.consume(b"cdGET"), Ok(2));
        assert!(length.is_done());

        let chunked = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        let mut whole = Body::chunked();
        assert_eq!(whole.consume(chunked), Ok(chunked.len() - 4));
        assert!(whole.is_done());
        // Byte by byte, the same.
        let mut bytewise = Body::chunked();
        let used: usize = chunked
            .iter()
            .map(|byte| bytewise.consume(std::slice::from_ref(byte)).unwrap())
            .sum();
        assert_eq!(used, chunked.len() - 4);
        assert!(bytewise.is_done());

        assert_eq!(Body::chunked().consume(b"zz\r\n"), Err(()));
        assert_eq!(Body::chunked().consume(b"1\r\naXY\r\n"), Err(()));
    }
}
