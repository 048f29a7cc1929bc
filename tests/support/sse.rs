//! A server-sent events client for the admin server's `/api/events`: one GET, the chunked body
//! decoded as it comes, and each event read with a deadline.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Instant;

use super::DEADLINE;

/// One event: its name (`message` when it has none, as in a browser) and its `data:` as JSON.
#[derive(Clone, Debug)]
pub struct SseEvent {
    pub name: String,
    pub data: serde_json::Value,
}

pub struct SseStream {
    reader: BufReader<TcpStream>,
    /// Decoded body not yet split into events.
    pending: String,
}

impl SseStream {
    /// Opens `path` on `address` and reads the response head (200, `text/event-stream`).
    pub fn open(address: SocketAddr, path: &str) -> SseStream {
        let mut stream = TcpStream::connect(address).expect("connect to the admin server");
        write!(stream, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut reader = BufReader::new(stream);
        let mut head = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("read the response head");
            if line == "\r\n" || line.is_empty() {
                break;
            }
            head.push(line.trim_end().to_string());
        }
        assert!(head[0].starts_with("HTTP/1.1 200"), "{head:?}");
        assert!(
            head.iter()
                .any(|line| line.eq_ignore_ascii_case("content-type: text/event-stream")),
            "{head:?}"
        );
        assert!(
            head.iter()
                .any(|line| line.eq_ignore_ascii_case("transfer-encoding: chunked")),
            "{head:?}"
        );
        SseStream {
            reader,
            pending: String::new(),
        }
    }

    /// The next event (comments skipped), within `deadline`; panics naming `what` if none came.
    pub fn next(&mut self, what: &str, deadline: Instant) -> SseEvent {
        loop {
            if let Some(end) = self.pending.find("\n\n") {
                let block: String = self.pending.drain(..end + 2).collect();
                if let Some(event) = parse(&block) {
                    return event;
                }
                continue;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "{what}: no event in time");
            self.reader.get_ref().set_read_timeout(Some(left)).unwrap();
            self.read_chunk(what);
        }
    }

    /// Events until one satisfies `wanted` (at most 1,000, within `deadline`).
    pub fn until(
        &mut self,
        what: &str,
        deadline: Instant,
        wanted: impl Fn(&SseEvent) -> bool,
    ) -> SseEvent {
        for _ in 0..1000 {
            let event = self.next(what, deadline);
            if wanted(&event) {
                return event;
            }
        }
        panic!("{what}: not among 1,000 events");
    }

    fn read_chunk(&mut self, what: &str) {
        let mut size = String::new();
        self.reader
            .read_line(&mut size)
            .unwrap_or_else(|error| panic!("{what}: no event in time ({error})"));
        let size = usize::from_str_radix(size.trim(), 16)
            .unwrap_or_else(|_| panic!("{what}: bad chunk size {size:?}"));
        assert!(size > 0, "{what}: the stream ended");
        let mut chunk = vec![0; size + 2];
        self.reader
            .read_exact(&mut chunk)
            .unwrap_or_else(|error| panic!("{what}: {error}"));
        chunk.truncate(size);
        self.pending.push_str(&String::from_utf8(chunk).unwrap());
    }
}

fn parse(block: &str) -> Option<SseEvent> {
    let mut name = "message".to_string();
    let mut data = None;
    for line in block.lines() {
        if let Some(value) = line.strip_prefix("event: ") {
            name = value.to_string();
        } else if let Some(value) = line.strip_prefix("data: ") {
            let value = serde_json::from_str(value)
                .unwrap_or_else(|error| panic!("{error}: data {value:?}"));
            data = Some(value);
        }
    }
    data.map(|data| SseEvent { name, data })
}
