//! HTTP against the clusters: one request per connection, a keep-alive client that behaves as
//! real ones do, and a client loop on its own thread.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::DEADLINE;

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

impl Response {
    /// The `pid` field of the test server's JSON answer.
    pub fn pid(&self) -> u32 {
        self.field("pid")
            .parse()
            .unwrap_or_else(|_| panic!("no pid in {:?}", self.body))
    }

    /// A field of the test server's flat JSON answer, as text.
    pub fn field(&self, name: &str) -> String {
        let value: serde_json::Value = serde_json::from_str(&self.body)
            .unwrap_or_else(|error| panic!("{error}: {:?}", self.body));
        match &value[name] {
            serde_json::Value::String(text) => text.clone(),
            other => other.to_string(),
        }
    }
}

/// One GET on a new connection (`Connection: close`).
pub fn http_get(address: SocketAddr, path: &str) -> std::io::Result<Response> {
    http_request(address, "GET", path, None)
}

/// One request on a new connection (`Connection: close`), with a JSON body if given.
pub fn http_request(
    address: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> std::io::Result<Response> {
    http_exchange(address, method, path, &[], body).map(|(response, _)| response)
}

/// One request on a new connection (`Connection: close`) with extra `headers` (a `Cookie`,
/// say) and a JSON body if given; the response and its headers (names in lower case).
pub fn http_exchange(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> std::io::Result<(Response, Vec<(String, String)>)> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(DEADLINE))?;
    let mut extra: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    if let Some(body) = body {
        extra.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n{extra}\r\n{}",
        body.unwrap_or("")
    )?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw)?;
    let response = parse_response(&raw)?;
    let head = raw.split_once("\r\n\r\n").map_or("", |(head, _)| head);
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    Ok((response, headers))
}

/// A new connection to `address` from `source` (a loopback address such as 127.0.0.5: the
/// client socket is bound to it before it connects).
pub fn connect_from(source: std::net::IpAddr, address: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(address),
        socket2::Type::STREAM,
        None,
    )?;
    socket.bind(&SocketAddr::new(source, 0).into())?;
    socket.connect_timeout(&address.into(), Duration::from_secs(5))?;
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(DEADLINE))?;
    Ok(stream)
}

/// One request on a new connection from `source` (`Connection: close`), with a body if given.
pub fn http_from(
    source: std::net::IpAddr,
    address: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> std::io::Result<Response> {
    let mut stream = connect_from(source, address)?;
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\
         Content-Type: text/plain;charset=UTF-8\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw)?;
    parse_response(&raw)
}

fn parse_response(raw: &str) -> std::io::Result<Response> {
    let bad = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("bad response {raw:?}"),
        )
    };
    let (head, body) = raw.split_once("\r\n\r\n").ok_or_else(bad)?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(bad)?;
    Ok(Response {
        status,
        body: body.to_string(),
    })
}

/// What a client loop saw.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub ok: usize,
    pub failures: Vec<String>,
    /// Keep-alive only: requests sent again because the server had closed the idle connection
    /// before reading them (see [`KeepAliveClient`]).
    pub retries: usize,
    pub pids: BTreeSet<u32>,
}

/// A client loop on its own thread: one request at a time, until stopped.
pub struct LoadLoop {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
    thread: std::thread::JoinHandle<LoadReport>,
}

pub fn load_loop(address: SocketAddr, keep_alive: bool) -> LoadLoop {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let (stop_flag, counter) = (stop.clone(), done.clone());
    let thread = std::thread::spawn(move || {
        let mut report = LoadReport::default();
        let mut client = KeepAliveClient::new(address);
        let mut index = 0usize;
        while !stop_flag.load(Ordering::Relaxed) {
            let result = if keep_alive {
                client.get("/")
            } else {
                http_get(address, "/").map_err(|error| error.to_string())
            };
            match result {
                Ok(response) if response.status == 200 => {
                    report.ok += 1;
                    report.pids.insert(response.pid());
                }
                Ok(response) => report
                    .failures
                    .push(format!("request {index}: {response:?}")),
                Err(error) => report.failures.push(format!("request {index}: {error}")),
            }
            index += 1;
            counter.fetch_add(1, Ordering::Relaxed);
        }
        report.retries = client.retries;
        report
    });
    LoadLoop { stop, done, thread }
}

impl LoadLoop {
    /// Waits until at least `requests` requests were made, then stops the loop.
    pub fn finish(self, requests: usize) -> LoadReport {
        let deadline = Instant::now() + DEADLINE;
        while self.done.load(Ordering::Relaxed) < requests {
            assert!(
                Instant::now() < deadline,
                "the client loop made fewer than {requests} requests"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("client loop")
    }
}

/// A keep-alive HTTP/1.1 client, as real ones behave: it reuses its connection, and sends a
/// request again (once, on a new connection) only when a *reused* connection was closed before
/// any byte of the answer arrived, which is how a server closing an idle connection looks
/// (RFC 9112 §9.3.1; curl, Go and browsers do the same). Every other error is a failure.
pub struct KeepAliveClient {
    address: SocketAddr,
    stream: Option<BufReader<TcpStream>>,
    pub retries: usize,
}

enum Attempt {
    Answered(Response, bool),
    /// Nothing came back at all: safe to send again on a new connection.
    NothingBack(String),
    Failed(String),
}

impl KeepAliveClient {
    pub fn new(address: SocketAddr) -> Self {
        KeepAliveClient {
            address,
            stream: None,
            retries: 0,
        }
    }

    pub fn get(&mut self, path: &str) -> Result<Response, String> {
        for first_try in [true, false] {
            let reused = self.stream.is_some();
            if self.stream.is_none() {
                let stream = TcpStream::connect_timeout(&self.address, Duration::from_secs(5))
                    .map_err(|error| format!("connect: {error}"))?;
                stream.set_read_timeout(Some(DEADLINE)).unwrap();
                self.stream = Some(BufReader::new(stream));
            }
            let stream = self.stream.as_mut().unwrap();
            match Self::attempt(stream, path) {
                Attempt::Answered(response, close) => {
                    if close {
                        self.stream = None;
                    }
                    return Ok(response);
                }
                Attempt::NothingBack(error) if reused && first_try => {
                    self.stream = None;
                    self.retries += 1;
                    let _ = error;
                }
                Attempt::NothingBack(error) | Attempt::Failed(error) => {
                    self.stream = None;
                    return Err(error);
                }
            }
        }
        unreachable!("the second try returns")
    }

    fn attempt(stream: &mut BufReader<TcpStream>, path: &str) -> Attempt {
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");
        if let Err(error) = stream.get_mut().write_all(request.as_bytes()) {
            return Attempt::NothingBack(format!("write: {error}"));
        }
        let mut status_line = String::new();
        match stream.read_line(&mut status_line) {
            Ok(0) => return Attempt::NothingBack("closed before answering".into()),
            Err(error) if status_line.is_empty() => {
                return Attempt::NothingBack(format!("read: {error}"))
            }
            Err(error) => return Attempt::Failed(format!("read: {error}")),
            Ok(_) => {}
        }
        let Some(status) = status_line
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
        else {
            return Attempt::Failed(format!("bad status line {status_line:?}"));
        };
        // An HTTP/1.0 answer closes the connection unless it says `keep-alive` (RFC 9112 §9.3).
        let http_1_0 = status_line.starts_with("HTTP/1.0");
        let (mut length, mut close, mut keep_alive) = (0usize, http_1_0, false);
        loop {
            let mut header = String::new();
            match stream.read_line(&mut header) {
                Ok(0) | Err(_) => return Attempt::Failed("connection lost in the headers".into()),
                Ok(_) if header == "\r\n" => break,
                Ok(_) => {
                    let lower = header.to_ascii_lowercase();
                    if let Some(value) = lower.strip_prefix("content-length:") {
                        length = value.trim().parse().unwrap_or(0);
                    }
                    if lower.starts_with("connection:") && lower.contains("close") {
                        close = true;
                    }
                    if lower.starts_with("connection:") && lower.contains("keep-alive") {
                        keep_alive = true;
                    }
                }
            }
        }
        if http_1_0 && keep_alive {
            close = false;
        }
        let mut body = vec![0u8; length];
        if let Err(error) = stream.read_exact(&mut body) {
            return Attempt::Failed(format!("connection lost in the body: {error}"));
        }
        let body = String::from_utf8_lossy(&body).into_owned();
        Attempt::Answered(Response { status, body }, close)
    }
}
