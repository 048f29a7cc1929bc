//! Workers replaced for a reason while they serve: a worker whose runtime is stuck (the
//! watchdog), and one that has served its share (max requests), each replaced new first.
//!
//!   cargo run --example limits          # 2 workers on port 8000: watchdog 2s, 1000 requests (+0..50)
//!   curl localhost:8000/                → {"pid":4121,"worker":1}
//!   curl localhost:8000/block?ms=5000   → blocks that worker's runtime: its heartbeat stops too,
//!                                         and the primary replaces it (SIGABRT once the new one is ready)
//!
//! Each worker has a single-threaded runtime (`worker_threads(1)`), the shape of a Node or
//! Python worker, so a synchronous call in async code (the classic bug `/block` stands for)
//! stops everything the worker does, its heartbeat included: the library sends `WATCHDOG=1`
//! from a task on that runtime. The listener reports the connections it accepted
//! (`REQUESTS=n`) for the max-requests limit. Under `herdsman run` the flags decide instead:
//! `herdsman run --watchdog 1s --max-requests 50 -- target/debug/examples/limits`.

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::Duration;

use axum::extract::Query;
use axum::routing::get;
use axum::{Json, Router};
use herdsman::Cluster;
use serde_json::{json, Value};

/// The longest `/block` may hold a worker's runtime.
const MAX_BLOCK_MS: u64 = 60_000;

fn main() -> ExitCode {
    Cluster::new()
        .name("limits")
        .workers(2)
        .worker_threads(1)
        .watchdog(Duration::from_secs(2))
        .max_requests(1000, 50)
        .run(|mut worker| async move {
            let listener = worker.listener()?;
            let slot = worker.id();
            let app = Router::new()
                .route("/", get(move || identity(slot)))
                .route("/block", get(move |query| block(slot, query)));
            axum::serve(listener, app)
                .with_graceful_shutdown(herdsman::worker::shutdown())
                .await?;
            Ok(())
        })
}

async fn identity(slot: usize) -> Json<Value> {
    Json(json!({ "pid": std::process::id(), "worker": slot }))
}

/// Blocks the worker's only runtime thread for `ms` milliseconds (at most a minute).
async fn block(slot: usize, Query(query): Query<HashMap<String, String>>) -> Json<Value> {
    let ms = query
        .get("ms")
        .and_then(|ms| ms.parse::<u64>().ok())
        .unwrap_or(1000)
        .min(MAX_BLOCK_MS);
    println!("worker {slot} blocking its runtime for {ms} ms");
    std::thread::sleep(Duration::from_millis(ms));
    Json(json!({ "pid": std::process::id(), "worker": slot, "blocked_ms": ms }))
}
