//! Reading commands from a client: RESP arrays of bulk strings, and inline commands
//! (`PING\r\n`, as typed into telnet), with Redis's limits and Redis's error texts.
//!
//! A server must accept far less than the general RESP grammar: a request is a flat array of
//! bulk strings. The general decoders (redis-protocol's included) parse nested arrays
//! recursively, with no depth or size limit, so a few kilobytes of `*1\r\n*1\r\n…` would overflow
//! the primary's stack. This parser accepts only the request shape, keeps its place between
//! reads (each byte is looked at once, however a request is split), and bounds every length.

use bytes::{Buf, Bytes, BytesMut};

/// Longest inline command, or count line, without a newline (Redis's `PROTO_INLINE_MAX_SIZE`).
const MAX_LINE: usize = 64 * 1024;
/// Most arguments in one request (Redis accepts up to `INT_MAX`).
const MAX_ARGS: i64 = i32::MAX as i64;
/// Largest argument (Redis's default `proto-max-bulk-len`).
pub const MAX_BULK: usize = 512 * 1024 * 1024;

/// A request that breaks the protocol. The client gets `-ERR Protocol error: …` and is
/// disconnected, as Redis does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(pub String);

impl ProtocolError {
    fn new(reason: impl Into<String>) -> ProtocolError {
        ProtocolError(reason.into())
    }
}

/// The parser for one connection.
#[derive(Debug)]
pub struct RequestParser {
    max_bulk: usize,
    args: Vec<Bytes>,
    /// Arguments announced by the `*N` line of the request being read; 0 between requests.
    expected: usize,
    /// Length announced by the `$N` line of the argument being read.
    bulk_len: Option<usize>,
    /// `args` holds the request last returned; cleared before the next one is read (the
    /// vector is reused, so a request costs no allocation of its own).
    returned: bool,
}

impl RequestParser {
    /// `max_bulk` caps one argument (at most [`MAX_BULK`]).
    pub fn new(max_bulk: usize) -> RequestParser {
        RequestParser {
            max_bulk: max_bulk.min(MAX_BULK),
            args: Vec::new(),
            expected: 0,
            bulk_len: None,
            returned: false,
        }
    }

    /// Bytes of the request being read that were already taken out of the input buffer.
    pub fn pending_bytes(&self) -> usize {
        if self.returned {
            return 0;
        }
        self.args.iter().map(Bytes::len).sum()
    }

    /// Takes the next complete request out of `buf`, or `None` when more bytes are needed.
    /// Empty requests (`*0`, blank lines) are skipped, as Redis does.
    pub fn next(&mut self, buf: &mut BytesMut) -> Result<Option<&[Bytes]>, ProtocolError> {
        if std::mem::take(&mut self.returned) {
            self.args.clear();
        }
        loop {
            if self.expected == 0 {
                if buf.is_empty() {
                    return Ok(None);
                }
                if buf[0] != b'*' {
                    match inline(buf)? {
                        None => return Ok(None),
                        Some(args) if args.is_empty() => continue,
                        Some(args) => {
                            self.args = args;
                            self.returned = true;
                            return Ok(Some(&self.args));
                        }
                    }
                }
                let Some(count) = take_number_line(buf, "too big mbulk count string")? else {
                    return Ok(None);
                };
                match count {
                    Some(count) if count <= MAX_ARGS => {
                        if count <= 0 {
                            continue;
                        }
                        self.expected = count as usize;
                        self.args.reserve(self.expected.min(1024));
                    }
                    _ => return Err(ProtocolError::new("invalid multibulk length")),
                }
            }
            while self.args.len() < self.expected {
                match self.bulk_len {
                    None => {
                        if buf.is_empty() {
                            return Ok(None);
                        }
                        if buf[0] != b'$' {
                            return Err(ProtocolError::new(format!(
                                "expected '$', got '{}'",
                                buf[0] as char
                            )));
                        }
                        let Some(len) = take_number_line(buf, "too big bulk count string")? else {
                            return Ok(None);
                        };
                        match len {
                            Some(len) if len >= 0 && (len as u64) <= self.max_bulk as u64 => {
                                let len = len as usize;
                                if buf.len() < len + 2 {
                                    buf.reserve(len + 2 - buf.len());
                                }
                                self.bulk_len = Some(len);
                            }
                            _ => return Err(ProtocolError::new("invalid bulk length")),
                        }
                    }
                    Some(len) => {
                        if buf.len() < len + 2 {
                            return Ok(None);
                        }
                        self.args.push(buf.split_to(len).freeze());
                        buf.advance(2);
                        self.bulk_len = None;
                    }
                }
            }
            self.expected = 0;
            self.returned = true;
            return Ok(Some(&self.args));
        }
    }
}

/// Reads a `*N` or `$N` line: `Ok(None)` when incomplete, `Ok(Some(None))` when N is not a number.
fn take_number_line(
    buf: &mut BytesMut,
    too_long: &str,
) -> Result<Option<Option<i64>>, ProtocolError> {
    let Some(end) = find_before_nul(buf, b'\r') else {
        if buf.len() > MAX_LINE {
            return Err(ProtocolError::new(too_long));
        }
        return Ok(None);
    };
    if end > MAX_LINE {
        return Err(ProtocolError::new(too_long));
    }
    if buf.len() < end + 2 {
        return Ok(None);
    }
    let number = super::number::parse_i64(&buf[1..end]);
    buf.advance(end + 2);
    Ok(Some(number))
}

/// Where `wanted` first occurs in `buf`, searched as Redis searches its query buffer (`strchr`
/// on a C string): a NUL byte ends the search. A line holding a NUL is therefore never complete;
/// like Redis, the parser waits for more, until the line is longer than [`MAX_LINE`] and is
/// refused ("too big inline request"): the connection holds at most that much.
fn find_before_nul(buf: &[u8], wanted: u8) -> Option<usize> {
    buf.iter()
        .position(|&byte| byte == wanted || byte == 0)
        .filter(|&at| buf[at] == wanted)
}

/// An inline command: one line, arguments split like Redis's `sdssplitargs`.
fn inline(buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    let Some(newline) = find_before_nul(buf, b'\n') else {
        if buf.len() > MAX_LINE {
            return Err(ProtocolError::new("too big inline request"));
        }
        return Ok(None);
    };
    let line = buf.split_to(newline + 1);
    let mut line = &line[..newline];
    if line.last() == Some(&b'\r') {
        line = &line[..line.len() - 1];
    }
    split_args(line)
        .map(|args| Some(args.into_iter().map(Bytes::from).collect()))
        .ok_or_else(|| ProtocolError::new("unbalanced quotes in request"))
}

/// Splits a line into arguments as Redis's `sdssplitargs` does: blanks (C's `isspace`) separate,
/// "double quotes" take `\n \r \t \b \a` and `\xHH` escapes (any other escaped byte stands for
/// itself), 'single quotes' take `\'`. `None` for unbalanced quotes, or a closing quote not
/// followed by a blank. The line is a C string to Redis: it ends at its first NUL byte.
pub fn split_args(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    let line = &line[..line
        .iter()
        .position(|&byte| byte == 0)
        .unwrap_or(line.len())];
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while i < line.len() && is_blank(line[i]) {
            i += 1;
        }
        if i == line.len() {
            return Some(args);
        }
        let mut current = Vec::new();
        // The quote the current argument is inside, if any.
        let mut quote: Option<u8> = None;
        // Every turn consumes at least one byte, so the loop ends at the end of the line.
        loop {
            let Some(&byte) = line.get(i) else {
                if quote.is_some() {
                    return None;
                }
                break;
            };
            match quote {
                Some(open) if byte == open => {
                    // A closing quote must end the argument.
                    if line.get(i + 1).is_some_and(|&next| !is_blank(next)) {
                        return None;
                    }
                    i += 1;
                    break;
                }
                Some(b'"') if byte == b'\\' && i + 1 < line.len() => {
                    let escaped = (line[i + 1] == b'x' && i + 3 < line.len())
                        .then(|| hex(line[i + 2]).zip(hex(line[i + 3])))
                        .flatten();
                    match escaped {
                        Some((high, low)) => {
                            current.push(high * 16 + low);
                            i += 4;
                        }
                        None => {
                            current.push(match line[i + 1] {
                                b'n' => b'\n',
                                b'r' => b'\r',
                                b't' => b'\t',
                                b'b' => 8,
                                b'a' => 7,
                                other => other,
                            });
                            i += 2;
                        }
                    }
                    continue;
                }
                Some(b'\'') if byte == b'\\' && line.get(i + 1) == Some(&b'\'') => {
                    current.push(b'\'');
                    i += 2;
                    continue;
                }
                Some(_) => current.push(byte),
                None => match byte {
                    // Only these end an unquoted argument (a vertical tab or form feed is
                    // part of it, as in Redis); the separator is consumed with it.
                    b' ' | b'\n' | b'\r' | b'\t' => {
                        i += 1;
                        break;
                    }
                    b'"' | b'\'' => quote = Some(byte),
                    _ => current.push(byte),
                },
            }
            i += 1;
        }
        args.push(current);
    }
}

/// C's `isspace` in the "C" locale, which `sdssplitargs` skips between arguments.
fn is_blank(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn hex(byte: u8) -> Option<u8> {
    (byte as char).to_digit(16).map(|digit| digit as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(input: &[u8], chunk: usize) -> Result<Vec<Vec<Bytes>>, ProtocolError> {
        let mut parser = RequestParser::new(MAX_BULK);
        let mut buf = BytesMut::new();
        let mut requests = Vec::new();
        for piece in input.chunks(chunk.max(1)) {
            buf.extend_from_slice(piece);
            while let Some(request) = parser.next(&mut buf)? {
                requests.push(request.to_vec());
            }
        }
        Ok(requests)
    }

    #[test]
    fn requests_split_anywhere_parse_the_same() {
        let input = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*0\r\nPING\r\n\r\nset a \"b c\\x41\"\r\n";
        let whole = parse_all(input, input.len()).unwrap();
        assert_eq!(
            whole,
            vec![
                vec![Bytes::from("GET"), Bytes::from("k")],
                vec![Bytes::from("PING")],
                vec![Bytes::from("set"), Bytes::from("a"), Bytes::from("b cA")],
            ]
        );
        for chunk in 1..input.len() {
            assert_eq!(parse_all(input, chunk).unwrap(), whole, "chunk {chunk}");
        }
    }

    #[test]
    fn quotes_split_like_redis_cli() {
        assert_eq!(
            split_args(br#"set 'it\'s' "a\"b\n" plain"#),
            Some(vec![
                b"set".to_vec(),
                b"it's".to_vec(),
                b"a\"b\n".to_vec(),
                b"plain".to_vec()
            ])
        );
        assert_eq!(split_args(br#"get "a"b"#), None);
        assert_eq!(split_args(b"get 'a"), None);
    }

    #[test]
    fn malformed_requests_get_redis_reasons() {
        let cases: [(&[u8], &str); 6] = [
            (b"*x\r\n", "invalid multibulk length"),
            (b"*3000000000\r\n", "invalid multibulk length"),
            (b"*1\r\n:1\r\n", "expected '$', got ':'"),
            (b"*1\r\n*1\r\n", "expected '$', got '*'"),
            (b"*1\r\n$-1\r\n", "invalid bulk length"),
            (b"set a \"b\r\n", "unbalanced quotes in request"),
        ];
        for (input, reason) in cases {
            assert_eq!(parse_all(input, 64), Err(ProtocolError(reason.into())));
        }
        let long = vec![b'a'; MAX_LINE + 2];
        assert_eq!(
            parse_all(&long, 4096),
            Err(ProtocolError("too big inline request".into()))
        );
    }

    #[test]
    fn blanks_and_quotes_split_as_redis_7_does() {
        type Case<'a> = (&'a [u8], Option<&'a [&'a [u8]]>);
        let cases: [Case; 9] = [
            (b"\x0bPING\x0c", Some(&[b"PING\x0c"])),
            (b"ECHO\x0bx", Some(&[b"ECHO\x0bx"])),
            (b"ECHO x\ry", Some(&[b"ECHO", b"x", b"y"])),
            (b"ECHO \"a\"\x0bb", Some(&[b"ECHO", b"a", b"b"])),
            (br#"ECHO "\x41\x4g\x4""#, Some(&[b"ECHO", b"Ax4gx4"])),
            (br#"ECHO a"b" '' """#, Some(&[b"ECHO", b"ab", b"", b""])),
            (br#"ECHO """""#, None),
            (br#"ECHO "\""#, None),
            (br"ECHO '\\'", None),
        ];
        for (line, expected) in cases {
            let expected = expected.map(|args| args.iter().map(|arg| arg.to_vec()).collect());
            assert_eq!(split_args(line), expected, "{}", line.escape_ascii());
        }
    }

    /// Issue 10: a NUL byte in an inline command looped forever, pushing empty arguments.
    #[test]
    fn a_nul_byte_ends_the_line_for_the_splitter_and_the_parser_waits_as_redis_does() {
        assert_eq!(split_args(b"\x00"), Some(vec![]));
        assert_eq!(
            split_args(b"GET a\x00b"),
            Some(vec![b"GET".to_vec(), b"a".to_vec()])
        );
        assert_eq!(split_args(b"ECHO \"a\x00b\""), None);
        for input in [
            &b"\x00\r\n"[..],
            b"GET a\x00b\r\n",
            b"\x00\n",
            b"*1\x00\r\n",
        ] {
            assert_eq!(parse_all(input, 1), Ok(vec![]), "{}", input.escape_ascii());
            let mut long = input.to_vec();
            long.resize(MAX_LINE + 1, b'x');
            let reason = if input[0] == b'*' {
                "too big mbulk count string"
            } else {
                "too big inline request"
            };
            assert_eq!(
                parse_all(&long, 4096),
                Err(ProtocolError(reason.into())),
                "{}",
                input.escape_ascii()
            );
        }
    }

    #[test]
    fn a_bulk_longer_than_the_limit_is_refused_before_it_is_read() {
        let mut parser = RequestParser::new(1024);
        let mut buf = BytesMut::from(&b"*2\r\n$3\r\nSET\r\n$1025\r\n"[..]);
        assert_eq!(
            parser.next(&mut buf),
            Err(ProtocolError("invalid bulk length".into()))
        );
    }
}
