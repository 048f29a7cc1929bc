//! Helpers that start real clusters (the `herdsman` binary over `examples/testserver`) on
//! 127.0.0.1 with port 0, read their output as it comes, and talk HTTP to them.
//!
//! Every wait has a deadline and fails the test with what was seen so far.

#![allow(dead_code)]

mod http;
mod lines;
pub mod resp;
mod scenarios;
mod sse;

pub use http::*;
pub use lines::*;
pub use scenarios::*;
pub use sse::*;

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The longest any single wait in a test may take.
pub const DEADLINE: Duration = Duration::from_secs(20);

pub fn herdsman_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_herdsman"))
}

/// `target/<profile>/examples/testserver`.
pub fn testserver_bin() -> PathBuf {
    example_bin("testserver")
}

/// `target/<profile>/examples/NAME`; every example is built (or brought up to date) once per
/// test run.
///
/// `cargo test` compiles examples only as test harnesses, so the runnable binaries are built
/// here, with the same profile and target directory as the test binary.
pub fn example_bin(name: &str) -> PathBuf {
    static BUILD: Once = Once::new();
    let profile_dir = herdsman_bin().parent().unwrap().to_path_buf();
    BUILD.call_once(|| {
        let profile = match profile_dir.file_name().and_then(|name| name.to_str()) {
            Some("debug") | None => "dev".to_string(),
            Some(other) => other.to_string(),
        };
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "--examples", "--profile", &profile])
            .arg("--target-dir")
            .arg(profile_dir.parent().unwrap())
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo to build the examples");
        assert!(status.success(), "building the examples failed: {status}");
    });
    profile_dir.join("examples").join(name)
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

impl RuntimeDir {
    /// `herdsman run --port 0 ARGS` is refused with exit code 2 and an error that says
    /// `message`.
    pub fn assert_run_refused(&self, args: &[&str], message: &str) {
        let mut all = vec!["run", "--port", "0"];
        all.extend_from_slice(args);
        let output = self.herdsman(&all);
        assert_eq!(output.code, Some(2), "{args:?}: {output:?}");
        assert!(
            output.stderr.contains(message),
            "{args:?}: {}",
            output.stderr
        );
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
    /// A program built on `herdsman::Cluster`, run directly instead of `herdsman run`.
    program: Option<PathBuf>,
    /// An address-space limit for the primary (and so its workers), in bytes.
    memory_limit: Option<u64>,
    /// An open-file limit for the primary (and so its workers): soft, hard.
    fd_limit: Option<(u64, u64)>,
    /// Leave the primary's stderr pipe unread until `Cluster::read_stderr`.
    hold_stderr: bool,
    /// The primary's working directory (default: the test's own).
    current_dir: Option<PathBuf>,
    /// Pass `--port` (the default); off for apps that pick their own port.
    with_port: bool,
}

pub fn cluster() -> ClusterBuilder {
    ClusterBuilder {
        runtime_dir: None,
        port: 0,
        args: Vec::new(),
        env: Vec::new(),
        command: vec![testserver_bin().display().to_string()],
        wait_listening: true,
        program: None,
        memory_limit: None,
        fd_limit: None,
        hold_stderr: false,
        current_dir: None,
        with_port: true,
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

    /// Runs `program` (built on `herdsman::Cluster`) itself as the primary, on `HOST` and
    /// `PORT`, instead of `herdsman run`.
    pub fn program(mut self, program: PathBuf) -> Self {
        self.program = Some(program);
        self
    }

    /// Runs the primary under `prlimit --as=BYTES` (its workers inherit the limit), so that a
    /// test of a memory bound stops at a ceiling instead of eating the machine when the bound
    /// regresses. The primary keeps the pid `Cluster::pid` gives (prlimit execs it).
    pub fn memory_limit(mut self, bytes: u64) -> Self {
        self.memory_limit = Some(bytes);
        self
    }

    /// Starts the primary with this open-file limit (`prlimit --nofile=SOFT:HARD`; its workers
    /// inherit it).
    pub fn fd_limit(mut self, soft: u64, hard: u64) -> Self {
        self.fd_limit = Some((soft, hard));
        self
    }

    /// Keeps the primary's stderr a pipe that nobody reads (full after 64 KiB) until
    /// [`Cluster::read_stderr`]; implies [`ClusterBuilder::no_wait`].
    pub fn hold_stderr(mut self) -> Self {
        self.hold_stderr = true;
        self.wait_listening = false;
        self
    }

    /// Runs the primary (and so its workers) in `dir`, as a user who typed the command there.
    pub fn current_dir(mut self, dir: &std::path::Path) -> Self {
        self.current_dir = Some(dir.to_path_buf());
        self
    }

    /// Gives `herdsman run` no `--port` (only `--host 127.0.0.1`): for a Node app that listens
    /// on a port of its own choosing. Use with [`ClusterBuilder::no_wait`].
    pub fn without_port(mut self) -> Self {
        self.with_port = false;
        self
    }

    /// Do not wait for the `listening on` line (for clusters expected to fail before it).
    pub fn no_wait(mut self) -> Self {
        self.wait_listening = false;
        self
    }

    pub fn start(self) -> Cluster {
        let runtime_dir = self.runtime_dir.unwrap_or_else(RuntimeDir::new);
        let port = self.port.to_string();
        let mut command = match &self.program {
            Some(program) => {
                let mut command = Command::new(program);
                command.env("HOST", "127.0.0.1").env("PORT", &port);
                command
            }
            None => {
                let mut command = match (self.memory_limit, self.fd_limit) {
                    (None, None) => Command::new(herdsman_bin()),
                    (memory, fds) => {
                        let mut prlimit = Command::new("prlimit");
                        if let Some(bytes) = memory {
                            prlimit.arg(format!("--as={bytes}"));
                        }
                        if let Some((soft, hard)) = fds {
                            prlimit.arg(format!("--nofile={soft}:{hard}"));
                        }
                        prlimit.arg(herdsman_bin());
                        prlimit
                    }
                };
                command.arg("run").args(["--host", "127.0.0.1"]);
                if self.with_port {
                    command.args(["--port", &port]);
                }
                command.args(&self.args);
                if !self.command.is_empty() {
                    command.arg("--").args(&self.command);
                }
                command
            }
        };
        // The test's own variables last, so that a test may set HERDSMAN_WORKERS.
        command
            .env_remove("HERDSMAN_WORKERS")
            .env("NO_COLOR", "1")
            .envs(self.env);
        command.env("XDG_RUNTIME_DIR", runtime_dir.path());
        if let Some(dir) = &self.current_dir {
            command.current_dir(dir);
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = command.spawn().expect("start herdsman");
        let stdout = Lines::read_from(child.stdout.take().unwrap());
        let (stderr, held_stderr) = match self.hold_stderr {
            true => (Lines::default(), child.stderr.take()),
            false => (Lines::read_from(child.stderr.take().unwrap()), None),
        };
        let mut cluster = Cluster {
            held_stderr,
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
            let address = word_after(&line, "listening on ");
            cluster.address = Some(address.parse().expect("listening address"));
        }
        cluster
    }
}

/// A running `herdsman run`; killed (SIGKILL) on drop if the test did not stop it.
pub struct Cluster {
    /// The stderr pipe, while a test holds it unread (`ClusterBuilder::hold_stderr`).
    held_stderr: Option<std::process::ChildStderr>,
    pub child: Child,
    pub started: Instant,
    pub stdout: Lines,
    pub stderr: Lines,
    address: Option<SocketAddr>,
    exit: Option<ExitStatus>,
    pub runtime_dir: RuntimeDir,
}

/// The word (up to a space) that follows the first `marker` in `line`; panics without one.
pub fn word_after<'a>(line: &'a str, marker: &str) -> &'a str {
    let rest = line
        .split_once(marker)
        .unwrap_or_else(|| panic!("no `{marker}` in {line:?}"))
        .1;
    rest.split(' ').next().unwrap()
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

    /// The pids of every worker that has reported ready so far.
    pub fn pids_ready_so_far(&self) -> Vec<u32> {
        self.stderr
            .snapshot()
            .iter()
            .filter(|line| line.starts_with("herdsman: worker ") && line.ends_with(" ready"))
            .map(|line| parse_worker_line(line).1)
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
                if self.held_stderr.is_none() {
                    self.stderr.wait_closed();
                }
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

    /// Starts reading the stderr pipe held unread so far (`ClusterBuilder::hold_stderr`).
    pub fn read_stderr(&mut self) {
        let pipe = self.held_stderr.take().expect("stderr held unread");
        self.stderr = Lines::read_from(pipe);
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

/// Calls `check` until it gives a value (every 20 ms, for at most [`DEADLINE`]); panics with
/// `what` when it never does.
pub fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {DEADLINE:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A figure of `/proc/PID/status` in bytes (`VmRSS`, `VmHWM`: the peak resident size).
pub fn proc_status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|error| panic!("read /proc/{pid}/status: {error}"));
    let line = status
        .lines()
        .find(|line| line.starts_with(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("bad line {line:?}"));
    kib * 1024
}
