//! Helpers that start real clusters (the `herdsman` binary over `examples/testserver`) on
//! 127.0.0.1 with port 0, read their output as it comes, and talk HTTP to them.
//!
//! Every wait has a deadline and fails the test with what was seen so far.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, Once};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The longest any single wait in a test may take.
pub const DEADLINE: Duration = Duration::from_secs(20);

pub fn herdsman_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_herdsman"))
}

/// `target/<profile>/examples/testserver`, built (or brought up to date) once per test run.
///
/// `cargo test` compiles examples only as test harnesses, so the runnable binary is built here,
/// with the same profile and target directory as the test binary.
pub fn testserver_bin() -> PathBuf {
    static BUILD: Once = Once::new();
    let profile_dir = herdsman_bin().parent().unwrap().to_path_buf();
    BUILD.call_once(|| {
        let profile = match profile_dir.file_name().and_then(|name| name.to_str()) {
            Some("debug") | None => "dev".to_string(),
            Some(other) => other.to_string(),
        };
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "--example",
                "testserver",
                "--profile",
                &profile,
            ])
            .arg("--target-dir")
            .arg(profile_dir.parent().unwrap())
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo to build examples/testserver");
        assert!(
            status.success(),
            "building examples/testserver failed: {status}"
        );
    });
    profile_dir.join("examples").join("testserver")
}

/// Lines read from one of the primary's output streams, shared with the reading thread.
#[derive(Clone, Default)]
pub struct Lines(Arc<(Mutex<LinesState>, Condvar)>);

#[derive(Default)]
struct LinesState {
    lines: Vec<String>,
    closed: bool,
}

impl Lines {
    pub fn read_from(stream: impl Read + Send + 'static) -> Lines {
        let lines = Lines::default();
        let shared = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                let (state, changed) = &*shared.0;
                state.lock().unwrap().lines.push(line);
                changed.notify_all();
            }
            let (state, changed) = &*shared.0;
            state.lock().unwrap().closed = true;
            changed.notify_all();
        });
        lines
    }

    pub fn snapshot(&self) -> Vec<String> {
        self.0 .0.lock().unwrap().lines.clone()
    }

    /// Waits until `count` lines satisfy `matches`; returns them.
    pub fn wait_for_count(&self, count: usize, matches: impl Fn(&str) -> bool) -> Vec<String> {
        let deadline = Instant::now() + DEADLINE;
        let (state, changed) = &*self.0;
        let mut state = state.lock().unwrap();
        loop {
            let found: Vec<String> = state
                .lines
                .iter()
                .filter(|line| matches(line))
                .cloned()
                .collect();
            if found.len() >= count {
                return found;
            }
            let now = Instant::now();
            if now >= deadline || state.closed {
                panic!(
                    "waited for {count} matching lines, found {} ({}); output so far:\n{}",
                    found.len(),
                    if state.closed {
                        "stream closed"
                    } else {
                        "deadline passed"
                    },
                    state.lines.join("\n")
                );
            }
            state = changed.wait_timeout(state, deadline - now).unwrap().0;
        }
    }

    /// Waits for the first line containing `text`.
    pub fn wait_for(&self, text: &str) -> String {
        self.wait_for_count(1, |line| line.contains(text)).remove(0)
    }

    pub fn count(&self, matches: impl Fn(&str) -> bool) -> usize {
        self.0
             .0
            .lock()
            .unwrap()
            .lines
            .iter()
            .filter(|line| matches(line))
            .count()
    }

    /// Waits until the stream closes (the primary exited and nothing else holds it).
    pub fn wait_closed(&self) {
        let deadline = Instant::now() + DEADLINE;
        let (state, changed) = &*self.0;
        let mut state = state.lock().unwrap();
        while !state.closed {
            let now = Instant::now();
            assert!(now < deadline, "stream still open after {DEADLINE:?}");
            state = changed.wait_timeout(state, deadline - now).unwrap().0;
        }
    }
}

/// A private runtime directory (`XDG_RUNTIME_DIR`) for one test's clusters, removed on drop.
#[derive(Clone)]
pub struct RuntimeDir(Arc<PathBuf>);

impl RuntimeDir {
    pub fn new() -> RuntimeDir {
        static NEXT: AtomicUsize = AtomicUsize::new(1);
        let index = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir()
            .join("herdsman-tests")
            .join(format!("{}-{index}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        RuntimeDir(Arc::new(path))
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }

    /// Runs `herdsman ARGS` (a control command) against this directory's clusters; fails the
    /// test if it has not finished within the deadline.
    pub fn herdsman(&self, args: &[&str]) -> CommandOutput {
        let mut child = Command::new(herdsman_bin())
            .args(args)
            .env("XDG_RUNTIME_DIR", self.path())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run herdsman");
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let read = |mut pipe: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut text = String::new();
                let _ = pipe.read_to_string(&mut text);
                text
            })
        };
        let (stdout, stderr) = (read(Box::new(stdout)), read(Box::new(stderr)));
        let deadline = Instant::now() + DEADLINE;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "`herdsman {}` did not finish within {DEADLINE:?}",
                    args.join(" ")
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        CommandOutput {
            code: status.code(),
            stdout: stdout.join().unwrap(),
            stderr: stderr.join().unwrap(),
        }
    }
}

impl Drop for RuntimeDir {
    fn drop(&mut self) {
        if Arc::strong_count(&self.0) == 1 {
            let _ = std::fs::remove_dir_all(&*self.0);
        }
    }
}

#[derive(Debug)]
pub struct CommandOutput {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// How to start a cluster; `ClusterBuilder::start` runs it.
pub struct ClusterBuilder {
    runtime_dir: Option<RuntimeDir>,
    port: u16,
    args: Vec<String>,
    env: Vec<(String, String)>,
    command: Vec<String>,
    wait_listening: bool,
}

pub fn cluster() -> ClusterBuilder {
    ClusterBuilder {
        runtime_dir: None,
        port: 0,
        args: Vec::new(),
        env: Vec::new(),
        command: vec![testserver_bin().display().to_string()],
        wait_listening: true,
    }
}

impl ClusterBuilder {
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|arg| arg.to_string()));
        self
    }

    /// Shares `dir` with other clusters of the test (default: a new one of its own).
    pub fn runtime_dir(mut self, dir: &RuntimeDir) -> Self {
        self.runtime_dir = Some(dir.clone());
        self
    }

    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// The worker command; empty to give none (herdsman.toml).
    pub fn command(mut self, command: &[&str]) -> Self {
        self.command = command.iter().map(|part| part.to_string()).collect();
        self
    }

    /// Do not wait for the `listening on` line (for clusters expected to fail before it).
    pub fn no_wait(mut self) -> Self {
        self.wait_listening = false;
        self
    }

    pub fn start(self) -> Cluster {
        let mut command = Command::new(herdsman_bin());
        let runtime_dir = self.runtime_dir.unwrap_or_else(RuntimeDir::new);
        let port = self.port.to_string();
        command
            .arg("run")
            .args(["--host", "127.0.0.1", "--port", &port]);
        command.args(&self.args);
        if !self.command.is_empty() {
            command.arg("--").args(&self.command);
        }
        command
            .envs(self.env)
            .env_remove("HERDSMAN_WORKERS")
            .env("NO_COLOR", "1");
        command.env("XDG_RUNTIME_DIR", runtime_dir.path());
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = command.spawn().expect("start herdsman");
        let stdout = Lines::read_from(child.stdout.take().unwrap());
        let stderr = Lines::read_from(child.stderr.take().unwrap());
        let mut cluster = Cluster {
            child,
            started,
            stdout,
            stderr,
            address: None,
            exit: None,
            runtime_dir,
        };
        if self.wait_listening {
            // Text (`herdsman: listening on A (…)`) or JSON (`"line":"listening on A (…)"`).
            let line = cluster.stderr.wait_for("listening on ");
            let address = line
                .split("listening on ")
                .nth(1)
                .unwrap()
                .split(' ')
                .next()
                .unwrap();
            cluster.address = Some(address.parse().expect("listening address"));
        }
        cluster
    }
}

/// A running `herdsman run`; killed (SIGKILL) on drop if the test did not stop it.
pub struct Cluster {
    pub child: Child,
    pub started: Instant,
    pub stdout: Lines,
    pub stderr: Lines,
    address: Option<SocketAddr>,
    exit: Option<ExitStatus>,
    pub runtime_dir: RuntimeDir,
}

/// `worker SLOT (pid PID) ready` → (slot, pid).
pub fn parse_worker_line(line: &str) -> (usize, u32) {
    let rest = line.split("worker ").nth(1).expect("worker line");
    let slot = rest.split(' ').next().unwrap().parse().unwrap();
    let pid = rest
        .split("(pid ")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    (slot, pid)
}

impl Cluster {
    pub fn address(&self) -> SocketAddr {
        self.address.expect("the cluster printed its address")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Runs `herdsman ARGS` (a control command) against this cluster's runtime directory.
    pub fn herdsman(&self, args: &[&str]) -> CommandOutput {
        self.runtime_dir.herdsman(args)
    }

    /// Waits until `count` workers have reported ready, in total; returns their pids.
    pub fn ready_pids(&self, count: usize) -> Vec<u32> {
        self.wait_ready(count)
            .into_iter()
            .map(|(_, pid)| pid)
            .collect()
    }

    /// Waits until `count` workers have reported ready, in total; returns (slot, pid) of each.
    pub fn wait_ready(&self, count: usize) -> Vec<(usize, u32)> {
        let lines = self.stderr.wait_for_count(count, |line| {
            line.starts_with("herdsman: worker ") && line.ends_with(" ready")
        });
        lines.iter().map(|line| parse_worker_line(line)).collect()
    }

    pub fn get(&self, path: &str) -> std::io::Result<Response> {
        http_get(self.address(), path)
    }

    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.pid() as i32), signal).expect("signal the primary");
    }

    /// Waits for the primary to exit; returns its status.
    pub fn wait_exit(&mut self) -> ExitStatus {
        if let Some(status) = self.exit {
            return status;
        }
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                self.exit = Some(status);
                self.stderr.wait_closed();
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "herdsman did not exit within {DEADLINE:?}; stderr:\n{}",
                self.stderr.snapshot().join("\n")
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The primary's stderr so far, for assertion messages.
    pub fn log(&self) -> String {
        self.stderr.snapshot().join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

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
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(DEADLINE))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
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

/// Whether `pid` is a live process (a zombie counts as gone).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        }
        Err(_) => false,
    }
}

/// Waits until none of `pids` is alive; panics naming the survivors.
pub fn wait_all_gone(pids: &[u32]) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let alive: Vec<u32> = pids.iter().copied().filter(|&pid| alive(pid)).collect();
        if alive.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still alive after {DEADLINE:?}: {alive:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sends requests on new connections until `count` distinct pids answered (at most 2,000).
pub fn distinct_pids_by_requests(cluster: &Cluster, count: usize) -> BTreeSet<u32> {
    let mut pids = BTreeSet::new();
    for _ in 0..2000 {
        pids.insert(cluster.get("/").expect("GET /").pid());
        if pids.len() == count {
            return pids;
        }
    }
    panic!("2,000 requests reached only {pids:?}");
}

/// With one shared socket the busiest worker tends to win every accept, so one at a time, a
/// request that keeps its worker busy (`/burn`) is sent only once the previous one is burning:
/// a busy worker cannot accept, so each lands on a different worker. Returns their pids.
pub fn distinct_pids_by_burning(cluster: &Cluster, count: usize) -> BTreeSet<u32> {
    let burning_before = cluster.stdout.count(|line| line.contains("burn start"));
    let address = cluster.address();
    let requests: Vec<_> = (1..=count)
        .map(|index| {
            let request = std::thread::spawn(move || http_get(address, "/burn?ms=1500"));
            cluster
                .stdout
                .wait_for_count(burning_before + index, |line| line.contains("burn start"));
            request
        })
        .collect();
    requests
        .into_iter()
        .map(|request| request.join().unwrap().expect("GET /burn").pid())
        .collect()
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
        let (mut length, mut close) = (0usize, false);
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
                }
            }
        }
        let mut body = vec![0u8; length];
        if let Err(error) = stream.read_exact(&mut body) {
            return Attempt::Failed(format!("connection lost in the body: {error}"));
        }
        let body = String::from_utf8_lossy(&body).into_owned();
        Attempt::Answered(Response { status, body }, close)
    }
}

/// Writes `text` to a new file in `dir` and returns its path.
pub fn write_file(dir: &RuntimeDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// `herdsman status NAME --json`, parsed.
pub fn status_json(cluster: &Cluster, name: &str) -> serde_json::Value {
    let output = cluster.herdsman(&["status", name, "--json"]);
    assert_eq!(output.code, Some(0), "{output:?}");
    serde_json::from_str(&output.stdout).unwrap_or_else(|error| panic!("{error}: {output:?}"))
}

/// One numeric field of every row of a status, in row order (`column(&status, "pid")`).
pub fn column(status: &serde_json::Value, field: &str) -> Vec<u64> {
    let rows = status["slots"].as_array().expect("status rows");
    rows.iter()
        .map(|row| {
            row[field]
                .as_u64()
                .unwrap_or_else(|| panic!("{field} in {row}"))
        })
        .collect()
}
