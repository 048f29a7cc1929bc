//! Graceful shutdown: on Ctrl-C, SIGTERM or `herdsman stop graceful_shutdown`, every worker
//! stops accepting, finishes the requests it has in flight, closes its idle connections
//! cleanly and exits 0; then the primary exits 0. Nothing is cut off mid-answer.
//!
//!   cargo run --example graceful_shutdown      # a worker per CPU on port 8000
//!   curl 'localhost:8000/slow?ms=5000' &       # a request that takes 5 s…
//!   kill -TERM <primary pid>                   # …still gets its answer; then everything exits
//!
//! Workers print `worker N: request started` / `finished`, `stopping with K requests in
//! flight` and `all requests finished; exiting`. A worker gets up to `KILL_TIMEOUT_MS` (default
//! 30000) to drain before the primary kills it; `/slow` takes at most 20 s.

use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use herdsman::{Cluster, ClusterEvent};
use serde::Deserialize;
use serde_json::{json, Value};

const MAX_SLOW_MS: u64 = 20_000;

fn main() -> ExitCode {
    let kill_timeout = std::env::var("KILL_TIMEOUT_MS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(30_000);
    Cluster::new()
        .name("graceful_shutdown")
        .kill_timeout(Duration::from_millis(kill_timeout))
        .on_event(|_, event| match event {
            ClusterEvent::Disconnect { slot, pid } => {
                println!("primary: asked worker {slot} (pid {pid}) to stop")
            }
            ClusterEvent::Exit {
                slot,
                pid,
                code,
                signal,
                ..
            } => println!(
                "primary: worker {slot} (pid {pid}) exited: code {code:?}, signal {signal:?}"
            ),
            _ => {}
        })
        .run(|mut worker| async move {
            let listener = worker.listener()?;
            let app = App {
                id: worker.id(),
                in_flight: Arc::new(AtomicUsize::new(0)),
            };
            let (id, in_flight) = (app.id, app.in_flight.clone());
            let router = Router::new()
                .route("/", get(hello))
                .route("/slow", get(slow))
                .with_state(app);
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    herdsman::worker::shutdown().await;
                    let count = in_flight.load(Ordering::SeqCst);
                    println!("worker {id}: stopping with {count} requests in flight");
                })
                .await?;
            // Release what the worker holds here (flush, close connections to databases…).
            println!("worker {id}: all requests finished; exiting");
            Ok(())
        })
}

#[derive(Clone)]
struct App {
    id: usize,
    in_flight: Arc<AtomicUsize>,
}

/// Counts a request as in flight while it lives.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn new(count: &Arc<AtomicUsize>) -> InFlight {
        count.fetch_add(1, Ordering::SeqCst);
        InFlight(count.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn hello(State(app): State<App>) -> Json<Value> {
    Json(json!({ "worker": app.id, "pid": std::process::id() }))
}

#[derive(Deserialize)]
struct Slow {
    ms: Option<u64>,
}

async fn slow(
    State(app): State<App>,
    Query(slow): Query<Slow>,
) -> Result<Json<Value>, (StatusCode, String)> {
    let ms = slow.ms.unwrap_or(1000);
    if ms > MAX_SLOW_MS {
        return Err((
            StatusCode::BAD_REQUEST,
            format!("ms must be at most {MAX_SLOW_MS}\n"),
        ));
    }
    let _in_flight = InFlight::new(&app.in_flight);
    println!("worker {}: request started ({ms} ms)", app.id);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    println!("worker {}: request finished", app.id);
    Ok(Json(
        json!({ "worker": app.id, "pid": std::process::id(), "slept_ms": ms }),
    ))
}
