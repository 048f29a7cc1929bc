//! A small HTTP server for herdsman's tests and benchmarks.
//!
//! It takes the socket herdsman hands it (fd 3, when `LISTEN_FDS=1` and `LISTEN_PID` is its own
//! pid, as libsystemd checks), or else binds `0.0.0.0:$PORT` itself. One thread, like a Node
//! process, so that a CPU-bound request really blocks this worker.
//!
//! Endpoints:
//! - `GET /`: `{"pid":…,"worker":…,"generation":…}`
//! - `GET /env`: the socket-activation and herdsman variables it was started with
//! - `GET /sleep?ms=N`: answers after N ms (prints `sleep start` first)
//! - `GET /burn?ms=N`: keeps the CPU busy for N ms, blocking this worker (prints `burn start`)
//! - `GET /crash`: exits with code 1 at once
//! - `GET /log?lines=N`: prints N numbered lines to stdout and one to stderr
//!
//! SIGTERM drains politely: for a short grace period every answer carries `Connection: close`,
//! so keep-alive clients reconnect elsewhere instead of racing a closed connection; then it stops
//! accepting, finishes in-flight requests and exits 0.
//!
//! Behaviour switches (environment): `TESTSERVER_REUSEPORT=1` binds `$PORT` with SO_REUSEPORT
//! (the no-herdsman baseline of the benchmark); `TESTSERVER_BIND_PORT=1` ignores the inherited
//! socket and binds `$PORT` (an app that does not know socket activation), on
//! `TESTSERVER_HOST` (default `0.0.0.0`);
//! `TESTSERVER_CRASH_SLOT=N` exits at once in worker N; `TESTSERVER_CRASH_IF=PATH` exits at once
//! while the file PATH exists (a test turns a slot's restarts into a crash loop mid-run);
//! `TESTSERVER_NOTIFY=1` sends `READY=1` to
//! `$NOTIFY_SOCKET` once serving, after `TESTSERVER_NOTIFY_DELAY_MS`; `TESTSERVER_IGNORE_TERM=1`
//! ignores SIGTERM.
//!
//! Under `--balance round-robin` or `least-conn` with `--ipc` (`HERDSMAN_HANDOFF` set) it
//! serves through `herdsman::Worker::listener()`, which yields the connections the primary
//! hands over: the same axum app on the library's listener.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::http::header::{HeaderValue, CONNECTION};
use axum::response::Response;

use axum::extract::Query;
use axum::routing::get;
use axum::Router;

/// Set on SIGTERM: answers tell keep-alive clients to close.
static DRAINING: AtomicBool = AtomicBool::new(false);
/// How long answers say `Connection: close` before the server stops.
const DRAIN_GRACE: Duration = Duration::from_millis(250);

fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|value| value == "1")
}

fn env_var(name: &str) -> String {
    std::env::var(name).unwrap_or_default()
}

fn main() {
    let worker = env_var("HERDSMAN_WORKER_ID");
    if !worker.is_empty() && env_var("TESTSERVER_CRASH_SLOT") == worker {
        eprintln!("testserver: worker {worker} crashing on purpose");
        std::process::exit(1);
    }
    let crash_if = env_var("TESTSERVER_CRASH_IF");
    if !crash_if.is_empty() && std::path::Path::new(&crash_if).exists() {
        eprintln!("testserver: {crash_if} exists; crashing on purpose");
        std::process::exit(1);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    if std::env::var_os("HERDSMAN_HANDOFF").is_some() {
        runtime.block_on(serve_handed());
        return;
    }
    let listener = match listener() {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("testserver: cannot listen: {error}");
            std::process::exit(1);
        }
    };
    runtime.block_on(serve(listener));
}

/// Serves the connections the primary hands over, through the library's listener.
async fn serve_handed() {
    let mut worker = herdsman::Worker::from_env().ready_on_listen(true);
    let listener = match worker.listener() {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("testserver: cannot listen: {error}");
            std::process::exit(1);
        }
    };
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
    println!(
        "testserver pid={} worker={} serving handed connections on {}",
        std::process::id(),
        env_var("HERDSMAN_WORKER_ID"),
        listener.local_addr().unwrap()
    );
    let shutdown = async {
        terminated(term).await;
        // Connections handed meanwhile go back to the primary, then the server drains.
        herdsman::worker::stop_accepting().await;
    };
    axum::serve(listener, app())
        .with_graceful_shutdown(shutdown)
        .await
        .unwrap();
    println!("testserver pid={} drained, exiting", std::process::id());
}

fn listener() -> std::io::Result<std::net::TcpListener> {
    let port: u16 = env_var("PORT").parse().unwrap_or(8000);
    let host = env_var("TESTSERVER_HOST")
        .parse()
        .unwrap_or([0, 0, 0, 0].into());
    let address = SocketAddr::new(host, port);
    let inherited = env_var("LISTEN_FDS") == "1"
        && env_var("LISTEN_PID") == std::process::id().to_string()
        && !env_flag("TESTSERVER_BIND_PORT");
    if inherited {
        // SAFETY: socket activation hands us fd 3, a listening socket that nothing else owns here.
        return Ok(unsafe { std::net::TcpListener::from_raw_fd(3) });
    }
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if env_flag("TESTSERVER_REUSEPORT") {
        socket.set_reuse_port(true)?;
    }
    socket
        .bind(&address.into())
        .map_err(|error| std::io::Error::new(error.kind(), format!("bind {address}: {error}")))?;
    socket.listen(1024)?;
    Ok(socket.into())
}

async fn serve(listener: std::net::TcpListener) {
    listener.set_nonblocking(true).unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let app = app();
    // Before the line below: a test that waits for it may signal at once, and a SIGTERM that
    // arrives before the handler is installed would end the process (default action).
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
    println!(
        "testserver pid={} worker={} listening on {}",
        std::process::id(),
        env_var("HERDSMAN_WORKER_ID"),
        listener.local_addr().unwrap()
    );
    if env_flag("TESTSERVER_NOTIFY") {
        tokio::spawn(notify_ready());
    }
    axum::serve(listener, app)
        .with_graceful_shutdown(terminated(term))
        .await
        .unwrap();
    println!("testserver pid={} drained, exiting", std::process::id());
}

fn app() -> Router {
    Router::new()
        .route("/", get(identity))
        .route("/env", get(environment))
        .route("/sleep", get(sleep))
        .route("/burn", get(burn))
        .route("/crash", get(crash))
        .route("/log", get(log))
        .layer(axum::middleware::map_response(close_while_draining))
}

async fn close_while_draining(mut response: Response) -> Response {
    if DRAINING.load(Ordering::Relaxed) {
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

async fn notify_ready() {
    let delay = env_var("TESTSERVER_NOTIFY_DELAY_MS").parse().unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(delay)).await;
    let path = env_var("NOTIFY_SOCKET");
    let socket = std::os::unix::net::UnixDatagram::unbound().unwrap();
    socket.send_to(b"STATUS=serving\nREADY=1\n", path).unwrap();
}

async fn terminated(mut term: tokio::signal::unix::Signal) {
    loop {
        term.recv().await;
        if env_flag("TESTSERVER_IGNORE_TERM") {
            println!("testserver pid={} ignoring SIGTERM", std::process::id());
            continue;
        }
        println!("testserver pid={} draining", std::process::id());
        DRAINING.store(true, Ordering::Relaxed);
        tokio::time::sleep(DRAIN_GRACE).await;
        return;
    }
}

fn identity_json() -> String {
    format!(
        "{{\"pid\":{},\"worker\":\"{}\",\"generation\":\"{}\"}}",
        std::process::id(),
        env_var("HERDSMAN_WORKER_ID"),
        env_var("HERDSMAN_GENERATION")
    )
}

async fn identity() -> String {
    identity_json()
}

async fn environment() -> String {
    let names = [
        "LISTEN_FDS",
        "LISTEN_PID",
        "LISTEN_FDNAMES",
        "PORT",
        "NOTIFY_SOCKET",
        "HERDSMAN_WORKER_ID",
        "HERDSMAN_WORKER_COUNT",
        "HERDSMAN_GENERATION",
        "HERDSMAN_NAME",
        "APP_VERSION",
        "HERDSMAN_STATE_URL",
        "REDIS_URL",
    ];
    let mut fields: Vec<String> = names
        .iter()
        .map(|name| format!("\"{name}\":\"{}\"", env_var(name)))
        .collect();
    fields.push(format!("\"pid\":\"{}\"", std::process::id()));
    format!("{{{}}}", fields.join(","))
}

fn millis(query: &HashMap<String, String>) -> u64 {
    query
        .get("ms")
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(100)
}

async fn sleep(Query(query): Query<HashMap<String, String>>) -> String {
    println!("testserver pid={} sleep start", std::process::id());
    tokio::time::sleep(Duration::from_millis(millis(&query))).await;
    identity_json()
}

async fn burn(Query(query): Query<HashMap<String, String>>) -> String {
    println!("testserver pid={} burn start", std::process::id());
    let until = Instant::now() + Duration::from_millis(millis(&query));
    let mut spins = 0u64;
    while Instant::now() < until {
        spins = std::hint::black_box(spins.wrapping_add(1));
    }
    identity_json()
}

async fn crash() -> String {
    std::process::exit(1);
}

async fn log(Query(query): Query<HashMap<String, String>>) -> String {
    let lines: usize = query.get("lines").and_then(|n| n.parse().ok()).unwrap_or(1);
    for index in 1..=lines {
        println!("log line {index} from pid {}", std::process::id());
    }
    eprintln!("log to stderr from pid {}", std::process::id());
    identity_json()
}
