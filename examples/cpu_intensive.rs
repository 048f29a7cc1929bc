//! CPU-bound requests: naive Fibonacci and a prime sieve. A slow computation occupies a CPU of
//! one worker; quick requests served by the other workers, on the other CPUs, are not held up.
//!
//!   cargo run --release --example cpu_intensive     # a worker per CPU on port 8000
//!   curl localhost:8000/fib/42        → {"n":42,"fib":267914296,"worker":1,"ms":1234}
//!   curl localhost:8000/primes/1000000 → {"limit":1000000,"count":78498,"largest":999983,…}
//!   curl localhost:8000/              → answered at once meanwhile, by another worker
//!
//! Each computation runs on tokio's blocking pool (`spawn_blocking`), so that it does not stall
//! the worker's async threads either; the cluster is what spreads them over every core. The
//! inputs are bounded (`n` ≤ 50, `limit` ≤ 10 000 000): an unbounded one would let one request
//! take a worker for ever. Out of range or not a number → 400 with a message.

use std::process::ExitCode;
use std::time::Instant;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use herdsman::{Cluster, Worker};
use serde_json::{json, Value};

const MAX_FIB: u64 = 50;
const MAX_PRIMES: usize = 10_000_000;

fn main() -> ExitCode {
    Cluster::new()
        .name("cpu_intensive")
        .run(|mut worker| async move {
            let listener = worker.listener()?;
            let app = Router::new()
                .route("/", get(quick))
                .route("/fib/{n}", get(fib))
                .route("/primes/{limit}", get(primes))
                .with_state(worker);
            axum::serve(listener, app)
                .with_graceful_shutdown(herdsman::worker::shutdown())
                .await?;
            Ok(())
        })
}

type Answer = Result<Json<Value>, (StatusCode, String)>;

fn bounded<T: std::str::FromStr + PartialOrd + std::fmt::Display>(
    name: &str,
    text: &str,
    max: T,
) -> Result<T, (StatusCode, String)> {
    match text.parse::<T>() {
        Ok(value) if value <= max => Ok(value),
        _ => Err((
            StatusCode::BAD_REQUEST,
            format!("{name} must be a whole number from 0 to {max}, not `{text}`\n"),
        )),
    }
}

async fn quick(State(worker): State<Worker>) -> Json<Value> {
    Json(json!({ "worker": worker.id(), "pid": std::process::id() }))
}

async fn fib(State(worker): State<Worker>, Path(n): Path<String>) -> Answer {
    let n = bounded("n", &n, MAX_FIB)?;
    let started = Instant::now();
    let value = tokio::task::spawn_blocking(move || fibonacci(n))
        .await
        .expect("the computation does not panic");
    Ok(Json(json!({
        "n": n,
        "fib": value,
        "worker": worker.id(),
        "pid": std::process::id(),
        "ms": started.elapsed().as_millis() as u64,
    })))
}

async fn primes(State(worker): State<Worker>, Path(limit): Path<String>) -> Answer {
    let limit = bounded("limit", &limit, MAX_PRIMES)?;
    let started = Instant::now();
    let (count, largest) = tokio::task::spawn_blocking(move || sieve(limit))
        .await
        .expect("the computation does not panic");
    Ok(Json(json!({
        "limit": limit,
        "count": count,
        "largest": largest,
        "worker": worker.id(),
        "pid": std::process::id(),
        "ms": started.elapsed().as_millis() as u64,
    })))
}

/// Fibonacci the slow way on purpose: about 1.6^n calls.
fn fibonacci(n: u64) -> u64 {
    if n < 2 {
        n
    } else {
        fibonacci(n - 1) + fibonacci(n - 2)
    }
}

/// How many primes are ≤ `limit`, and the largest (sieve of Eratosthenes).
fn sieve(limit: usize) -> (usize, Option<usize>) {
    if limit < 2 {
        return (0, None);
    }
    let mut composite = vec![false; limit + 1];
    let mut candidate = 2;
    while candidate * candidate <= limit {
        if !composite[candidate] {
            for multiple in (candidate * candidate..=limit).step_by(candidate) {
                composite[multiple] = true;
            }
        }
        candidate += 1;
    }
    let mut primes = (2..=limit).filter(|&number| !composite[number]);
    let count = primes.clone().count();
    (count, primes.next_back())
}
