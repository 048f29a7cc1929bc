//! Shared state across workers: a visit counter and the last requests, kept in herdsman's
//! shared-state store (the workers do not share memory). Every worker sees the same figures,
//! whichever answers. The same code works with a real Redis (`--state redis://…`).
//!
//!   cargo run --example shared_state       # a worker per CPU on port 8000
//!   herdsman run --workers max --state redis://127.0.0.1:6379 -- target/debug/examples/shared_state
//!   curl localhost:8000/          → {"visits":1,"worker":2,"pid":4121}
//!   curl localhost:8000/history   → the last 20 requests, newest first, from every worker

use std::process::ExitCode;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use herdsman::{Cluster, Worker};
use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use serde_json::{json, Value};

/// How many requests the history keeps.
const HISTORY: isize = 100;

#[derive(Clone)]
struct App {
    worker: Worker,
    state: ConnectionManager,
}

type Reply = Result<Json<Value>, (StatusCode, String)>;

fn unavailable(error: redis::RedisError) -> (StatusCode, String) {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("shared state: {error}\n"),
    )
}

async fn visit(State(mut app): State<App>) -> Reply {
    let visits: u64 = app.state.incr("visits", 1).await.map_err(unavailable)?;
    let entry = json!({ "visit": visits, "worker": app.worker.id(), "pid": std::process::id() });
    // Newest first, trimmed to HISTORY entries, in one round trip and atomically.
    redis::pipe()
        .atomic()
        .lpush("history", entry.to_string())
        .ltrim("history", 0, HISTORY - 1)
        .query_async::<()>(&mut app.state)
        .await
        .map_err(unavailable)?;
    Ok(Json(
        json!({ "visits": visits, "worker": app.worker.id(), "pid": std::process::id() }),
    ))
}

async fn history(State(mut app): State<App>) -> Reply {
    let entries: Vec<String> = app
        .state
        .lrange("history", 0, 19)
        .await
        .map_err(unavailable)?;
    let entries: Vec<Value> = entries
        .iter()
        .filter_map(|entry| serde_json::from_str(entry).ok())
        .collect();
    Ok(Json(Value::Array(entries)))
}

fn main() -> ExitCode {
    Cluster::new()
        .name("shared_state")
        .run(|mut worker| async move {
            // Connected to the store before taking the listener, which makes the worker ready.
            let state = worker.state().await?;
            let listener = worker.listener()?;
            let app = Router::new()
                .route("/", get(visit))
                .route("/history", get(history))
                .with_state(App { worker, state });
            axum::serve(listener, app)
                .with_graceful_shutdown(herdsman::worker::shutdown())
                .await?;
            Ok(())
        })
}
