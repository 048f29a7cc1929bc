//! The same handler served by one process, then by a cluster, under the same load, with the
//! results printed side by side.
//!
//!   cargo run --release --example performance
//!   PERF_SECONDS=10 PERF_CONNECTIONS=64 HERDSMAN_WORKERS=4 cargo run --release --example performance
//!
//! ```text
//! performance: 32 connections, 5 s per run, GET /work (fib(20) and a JSON answer)
//!                           requests/s    p50 ms    p99 ms    errors
//! single process                  9512      3.31      5.02         0
//! cluster of 2 workers           16880      1.83      3.95         0
//! cluster / single               1.77×
//! ```
//!
//! The program starts itself twice as the server (`PERFORMANCE_SERVE=single`, then
//! `=cluster`, on `$PORT`, default 8000) and drives the load from its own keep-alive clients.
//! Each server process has a single-threaded runtime (`Cluster::worker_threads(1)`), the shape
//! of a Node, Python or Ruby server, so the comparison shows what clustering adds: the cores.
//! (A multi-threaded tokio runtime uses every core in one process too; clustering still buys
//! it crash isolation and zero-downtime reloads.) The load generator shares the machine, so on
//! few cores the ratio stays below the worker count; `bench/` has the wrk-based measurements.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::{Json, Router};
use herdsman::Cluster;
use herdsman::StateMode;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

fn main() -> ExitCode {
    match std::env::var("PERFORMANCE_SERVE").as_deref() {
        Ok("single") => serve_single(),
        Ok(_) => Cluster::new()
            .name("performance")
            .worker_threads(1)
            .state(StateMode::Off)
            .run(|mut worker| async move {
                serve(worker.listener()?).await?;
                Ok(())
            }),
        Err(_) => drive(),
    }
}

/// The handler both servers run: a little CPU work and a JSON answer.
async fn work() -> Json<Value> {
    Json(json!({ "fib": fibonacci(20), "pid": std::process::id() }))
}

fn fibonacci(n: u64) -> u64 {
    if n < 2 {
        n
    } else {
        fibonacci(n - 1) + fibonacci(n - 2)
    }
}

/// Serves `/work` on herdsman's listener (in a worker) or tokio's (on its own).
async fn serve<L>(listener: L) -> std::io::Result<()>
where
    L: axum::serve::Listener<Addr = std::net::SocketAddr>,
{
    let app = Router::new().route("/work", get(work));
    axum::serve(listener, app)
        .with_graceful_shutdown(herdsman::worker::shutdown())
        .await
}

/// One process, no herdsman: binds `$HOST:$PORT` itself.
fn serve_single() -> ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let result = runtime.block_on(async {
        let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".into());
        let port = std::env::var("PORT").unwrap_or_else(|_| "8000".into());
        let listener = tokio::net::TcpListener::bind(format!("{host}:{port}")).await?;
        eprintln!(
            "single process: listening on {} (pid {})",
            listener.local_addr()?,
            std::process::id()
        );
        serve(listener).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("single process: {error}");
            ExitCode::from(1)
        }
    }
}

struct Settings {
    seconds: u64,
    connections: usize,
}

fn setting(name: &str, default: u64) -> Result<u64, String> {
    match std::env::var(name) {
        Ok(text) => text
            .parse()
            .ok()
            .filter(|value| *value > 0)
            .ok_or_else(|| format!("${name} must be a positive whole number, not `{text}`")),
        Err(_) => Ok(default),
    }
}

fn drive() -> ExitCode {
    let settings = match (setting("PERF_SECONDS", 5), setting("PERF_CONNECTIONS", 32)) {
        (Ok(seconds), Ok(connections)) => Settings {
            seconds,
            connections: connections as usize,
        },
        (Err(error), _) | (_, Err(error)) => {
            eprintln!("performance: {error}");
            return ExitCode::from(2);
        }
    };
    println!(
        "performance: {} connections, {} s per run, GET /work (fib(20) and a JSON answer)",
        settings.connections, settings.seconds
    );
    let mut rows = Vec::new();
    for mode in ["single", "cluster"] {
        match measure(mode, &settings) {
            Ok(row) => rows.push(row),
            Err(error) => {
                eprintln!("performance: the {mode} run failed: {error}");
                return ExitCode::from(1);
            }
        }
    }
    println!(
        "{:<24}{:>12}{:>10}{:>10}{:>10}",
        "", "requests/s", "p50 ms", "p99 ms", "errors"
    );
    for row in &rows {
        println!(
            "{:<24}{:>12.0}{:>10.2}{:>10.2}{:>10}",
            row.label, row.rate, row.p50_ms, row.p99_ms, row.errors
        );
    }
    println!(
        "{:<24}{:>11.2}×",
        "cluster / single",
        rows[1].rate / rows[0].rate.max(f64::MIN_POSITIVE)
    );
    ExitCode::SUCCESS
}

struct Row {
    label: String,
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: usize,
}

/// Starts the server in `mode`, loads it, stops it.
fn measure(mode: &str, settings: &Settings) -> Result<Row, String> {
    let exe = std::env::current_exe().map_err(|error| error.to_string())?;
    let mut command = Command::new(exe);
    command
        .env("PERFORMANCE_SERVE", mode)
        .stdin(Stdio::null())
        .stderr(Stdio::piped());
    if std::env::var_os("HOST").is_none() {
        command.env("HOST", "127.0.0.1");
    }
    let mut server = Server(command.spawn().map_err(|error| error.to_string())?);
    let (address, label) = wait_until_serving(&mut server.0, mode)?;
    let load = Load::run(address, settings)?;
    server.stop()?;
    Ok(Row {
        label,
        rate: load.latencies.len() as f64 / settings.seconds as f64,
        p50_ms: load.percentile(0.50),
        p99_ms: load.percentile(0.99),
        errors: load.errors,
    })
}

/// Echoes the server's stderr, and returns its address and a label for its row once it serves:
/// for a cluster, once every worker is ready.
fn wait_until_serving(server: &mut Child, mode: &str) -> Result<(SocketAddr, String), String> {
    let stderr = server.stderr.take().expect("piped");
    let (lines, seen) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("{line}");
            let _ = lines.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut address = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = seen.recv_timeout(left).map_err(|error| match error {
            mpsc::RecvTimeoutError::Timeout => {
                format!("the {mode} server did not start within 30 s")
            }
            mpsc::RecvTimeoutError::Disconnected => {
                format!("the {mode} server exited before serving (its output is above)")
            }
        })?;
        if let Some(rest) = line.split("listening on ").nth(1) {
            let text = rest.split(' ').next().unwrap_or_default();
            address = Some(text.parse().map_err(|_| format!("bad address `{text}`"))?);
            if mode == "single" {
                return Ok((address.unwrap(), "single process".into()));
            }
        }
        if let (Some(address), Some(rest)) = (address, line.split("herdsman: all ").nth(1)) {
            let workers = rest.split(" ready").next().unwrap_or_default();
            return Ok((address, format!("cluster of {workers}")));
        }
    }
}

/// A server process, stopped (SIGTERM, then SIGKILL) when dropped.
struct Server(Child);

impl Server {
    fn stop(&mut self) -> Result<(), String> {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        for _ in 0..300 {
            if let Some(status) = self.0.try_wait().map_err(|error| error.to_string())? {
                return match status.success() {
                    true => Ok(()),
                    false => Err(format!("the server exited with {status}")),
                };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err("the server did not stop within 15 s".into())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// What the clients saw: each answered request's latency (µs), and failures.
struct Load {
    latencies: Vec<u64>,
    errors: usize,
}

impl Load {
    fn run(address: SocketAddr, settings: &Settings) -> Result<Load, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| error.to_string())?;
        let until = Instant::now() + Duration::from_secs(settings.seconds);
        Ok(runtime.block_on(async {
            let clients: Vec<_> = (0..settings.connections)
                .map(|_| tokio::spawn(client(address, until)))
                .collect();
            let mut load = Load {
                latencies: Vec::new(),
                errors: 0,
            };
            for client in clients {
                let (latencies, errors) = client.await.unwrap_or_default();
                load.latencies.extend(latencies);
                load.errors += errors;
            }
            load.latencies.sort_unstable();
            load
        }))
    }

    fn percentile(&self, fraction: f64) -> f64 {
        if self.latencies.is_empty() {
            return 0.0;
        }
        let index = ((self.latencies.len() - 1) as f64 * fraction).round() as usize;
        self.latencies[index] as f64 / 1000.0
    }
}

/// One keep-alive connection sending requests one after another until `until`; a failed
/// request counts as an error and the client reconnects.
async fn client(address: SocketAddr, until: Instant) -> (Vec<u64>, usize) {
    let (mut latencies, mut errors) = (Vec::new(), 0);
    let mut connection = None;
    while Instant::now() < until {
        let started = Instant::now();
        let stream = match connection.take() {
            Some(stream) => stream,
            None => match tokio::net::TcpStream::connect(address).await {
                Ok(stream) => tokio::io::BufReader::new(stream),
                Err(_) => {
                    errors += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        match request(stream).await {
            Ok(stream) => {
                latencies.push(started.elapsed().as_micros() as u64);
                connection = Some(stream);
            }
            Err(_) => errors += 1,
        }
    }
    (latencies, errors)
}

type Connection = tokio::io::BufReader<tokio::net::TcpStream>;

/// `GET /work` on `stream`; the stream back for the next request if the answer was a 200.
async fn request(mut stream: Connection) -> std::io::Result<Connection> {
    let failed = |what: &str| std::io::Error::other(what.to_string());
    stream
        .get_mut()
        .write_all(b"GET /work HTTP/1.1\r\nHost: performance\r\n\r\n")
        .await?;
    let mut line = String::new();
    stream.read_line(&mut line).await?;
    if !line.starts_with("HTTP/1.1 200") {
        return Err(failed("not a 200"));
    }
    let mut length = None;
    loop {
        line.clear();
        if stream.read_line(&mut line).await? == 0 {
            return Err(failed("closed in the headers"));
        }
        if line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok();
            }
        }
    }
    let mut body = vec![0; length.ok_or_else(|| failed("no Content-Length"))?];
    stream.read_exact(&mut body).await?;
    Ok(stream)
}
