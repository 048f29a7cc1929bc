//! Talking RESP to a store (herdsman's embedded one, or a real redis-server started here), for
//! the shared-state tests. Replies are kept as the exact bytes that came back.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Cluster, RuntimeDir, DEADLINE};

trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// A client connection that sends commands and reads whole replies.
pub struct RespClient {
    stream: Box<dyn Stream>,
    buffer: Vec<u8>,
}

impl RespClient {
    pub fn unix(path: &Path) -> RespClient {
        let stream = UnixStream::connect(path)
            .unwrap_or_else(|error| panic!("connect {}: {error}", path.display()));
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        RespClient {
            stream: Box::new(stream),
            buffer: Vec::new(),
        }
    }

    pub fn tcp(address: SocketAddr) -> RespClient {
        let stream = std::net::TcpStream::connect(address)
            .unwrap_or_else(|error| panic!("connect {address}: {error}"));
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        RespClient {
            stream: Box::new(stream),
            buffer: Vec::new(),
        }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        // A server that closes a connection on bad input may do so before all of it was sent.
        let _ = self.stream.write_all(bytes);
    }

    /// Sends one command (without waiting for its reply).
    pub fn send(&mut self, args: &[&[u8]]) {
        self.send_raw(&encode(args));
    }

    /// Reads one whole reply, as raw bytes; `None` if the connection closed first.
    pub fn read_reply(&mut self) -> Option<Vec<u8>> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            // RESP2 first (RESP3's decoder refuses `$-1`), RESP3 for its own types.
            let whole = match redis_protocol::resp2::decode::decode_range(&self.buffer) {
                Ok(Some((_, len))) => Some(len),
                Ok(None) => None,
                Err(_) => redis_protocol::resp3::decode::complete::decode_range(&self.buffer)
                    .ok()
                    .flatten()
                    .map(|(_, len)| len),
            };
            if let Some(len) = whole {
                return Some(self.buffer.drain(..len).collect());
            }
            assert!(
                Instant::now() < deadline,
                "no whole reply within {DEADLINE:?}"
            );
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buffer.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Sends a command given as a line (`SET k "a b"`) and returns its raw reply.
    pub fn call(&mut self, line: &str) -> Vec<u8> {
        let args = herdsman::state::split_args(line.as_bytes()).expect("a well-quoted line");
        let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        self.send(&args);
        self.read_reply()
            .unwrap_or_else(|| panic!("connection closed after `{line}`"))
    }

    /// `call`, with the reply as readable text (for assertions).
    pub fn text(&mut self, line: &str) -> String {
        printable(&self.call(line))
    }

    /// Whether the server closed the connection (reading returns end of file).
    pub fn is_closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        match self.stream.read(&mut byte) {
            Ok(0) => true,
            Err(error) => error.kind() == std::io::ErrorKind::ConnectionReset,
            Ok(_) => false,
        }
    }
}

/// A RESP array of bulk strings.
pub fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Reply bytes with CR/LF and other controls escaped, for messages.
pub fn printable(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

/// The elements of an array or set reply, each re-encoded and sorted (for replies whose order
/// is unspecified), with the reply's type first.
pub fn sorted_elements(reply: &[u8]) -> Vec<Vec<u8>> {
    if let Ok(Some((redis_protocol::resp2::types::OwnedFrame::Array(items), _))) =
        redis_protocol::resp2::decode::decode(reply)
    {
        use redis_protocol::resp2::types::Resp2Frame;
        let mut items: Vec<Vec<u8>> = items
            .iter()
            .map(|item| item.as_bytes().unwrap_or_default().to_vec())
            .collect();
        items.sort();
        items.insert(0, b"array".to_vec());
        return items;
    }
    use redis_protocol::resp3::types::BytesFrame as OwnedFrame;
    let (frame, _) = redis_protocol::resp3::decode::complete::decode_bytes(
        &bytes::Bytes::copy_from_slice(reply),
    )
    .expect("a reply")
    .expect("a whole reply");
    let encode = |frame: &OwnedFrame| {
        let mut out = bytes::BytesMut::new();
        redis_protocol::resp3::encode::complete::extend_encode(&mut out, frame, false)
            .expect("encodes");
        out.to_vec()
    };
    let (kind, items): (&[u8], Vec<Vec<u8>>) = match &frame {
        OwnedFrame::Array { data, .. } => (b"array", data.iter().map(encode).collect()),
        OwnedFrame::Set { data, .. } => (b"set", data.iter().map(encode).collect()),
        _ => return vec![reply.to_vec()],
    };
    let mut items = items;
    items.sort();
    items.insert(0, kind.to_vec());
    items
}

/// The embedded store's Unix socket, from the primary's `state store on unix://…` line.
pub fn state_socket(cluster: &Cluster) -> PathBuf {
    let line = cluster.stderr.wait_for("state store on unix://");
    let path = line
        .split("unix://")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap();
    PathBuf::from(path)
}

/// A real redis-server on a Unix socket in `dir`, no persistence; killed on drop.
pub struct RedisServer {
    child: Child,
    pub socket: PathBuf,
}

impl RedisServer {
    pub fn start(dir: &RuntimeDir) -> RedisServer {
        let socket = dir.path().join("redis.sock");
        let child = Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--save",
                "",
                "--appendonly",
                "no",
                "--unixsocket",
            ])
            .arg(&socket)
            .args(["--unixsocketperm", "700", "--dir"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server (scripts/test.sh installs it)");
        let deadline = Instant::now() + DEADLINE;
        while UnixStream::connect(&socket).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        RedisServer { child, socket }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
