//! Zero-downtime reloads: every worker is replaced, one slot at a time, while clients keep
//! sending requests, and none of them fails.
//!
//!   cargo run --example zero_downtime          # a worker per CPU on port 8000
//!   curl localhost:8000/          → {"worker":1,"pid":4121,"generation":1}
//!   curl localhost:8000/reload    → asks the primary for a rolling reload (as do
//!                                   `herdsman reload zero_downtime` and `kill -HUP <primary>`)
//!
//! What makes it safe, step by step for each slot:
//! 1. the new worker starts and warms up (`WARM_UP_MS`, default 500) before it says it is
//!    ready (`Cluster::manual_ready` + `Worker::ready`): no connection reaches it cold;
//! 2. once it is ready, new connections go to it, and the old worker is asked to stop;
//! 3. the old worker drains: it stops accepting at once (`herdsman::worker::shutdown` resolves
//!    once every connection it accepted has been read from, so none is closed unanswered), and
//!    for `DRAIN_MS` (default 1000) it keeps answering its keep-alive clients, with
//!    `Connection: close` so that they move to a new connection; then it finishes its
//!    in-flight requests.
//!
//! The primary prints `worker N (pid P) serves generation G` as workers come up, and
//! `all N workers on generation G` when a reload is complete.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::header::{HeaderValue, CONNECTION};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use herdsman::WorkerPhase;
use herdsman::{Cluster, ClusterEvent, ClusterEvents, Primary, Worker};
use serde_json::{json, Value};

fn millis(name: &str, default: u64) -> Duration {
    let millis = std::env::var(name)
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(default);
    Duration::from_millis(millis)
}

fn main() -> ExitCode {
    Cluster::new()
        .name("zero_downtime")
        .manual_ready()
        .primary(announce_generations)
        .run(|mut worker| async move {
            let listener = worker.listener()?;
            // Connections queue on the listener meanwhile; they are not refused.
            tokio::time::sleep(millis("WARM_UP_MS", 500)).await;
            worker.ready()?;
            worker.send(json!({ "generation": worker.generation() }));

            let draining = Arc::new(AtomicBool::new(false));
            let app = Router::new()
                .route("/", get(hello))
                .route("/reload", get(reload))
                .with_state(worker)
                .layer(middleware::from_fn_with_state(
                    draining.clone(),
                    close_when_draining,
                ));
            let drain = async move {
                herdsman::worker::shutdown().await;
                draining.store(true, Ordering::SeqCst);
                tokio::time::sleep(millis("DRAIN_MS", 1000)).await;
            };
            axum::serve(listener, app)
                .with_graceful_shutdown(drain)
                .await?;
            Ok(())
        })
}

/// While the worker drains, every answer tells the client to open a new connection next time.
async fn close_when_draining(
    State(draining): State<Arc<AtomicBool>>,
    request: Request,
    next: Next,
) -> Response {
    let mut response = next.run(request).await;
    if draining.load(Ordering::SeqCst) {
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

async fn hello(State(worker): State<Worker>) -> Json<Value> {
    Json(json!({
        "worker": worker.id(),
        "pid": std::process::id(),
        "generation": worker.generation(),
    }))
}

async fn reload(State(worker): State<Worker>) -> Json<Value> {
    let asked = worker.send(json!({ "reload": true }));
    Json(json!({ "reload": asked }))
}

/// The primary side: starts reloads workers ask for, and tells when one is complete.
async fn announce_generations(primary: Primary, mut events: ClusterEvents) {
    let mut announced = 1;
    while let Some(event) = events.recv().await {
        match &event {
            ClusterEvent::Message { slot, pid, data } => {
                if data.get("reload").is_some() {
                    println!("worker {slot} asked for a reload");
                    primary.reload();
                }
                if let Some(generation) = data.get("generation") {
                    println!("worker {slot} (pid {pid}) serves generation {generation}");
                }
            }
            ClusterEvent::Exit { .. } => {}
            _ => continue,
        }
        // A reload is complete when every worker is ready and on the newest generation.
        let Some(status) = primary.status().await else {
            return;
        };
        let complete = status.slots.len() == status.workers
            && status.slots.iter().all(|row| {
                row.worker().is_some_and(|worker| {
                    worker.phase == WorkerPhase::Ready && worker.generation == status.generation
                })
            });
        if complete && status.generation > announced {
            announced = status.generation;
            println!(
                "all {} workers on generation {}",
                status.workers, status.generation
            );
        }
    }
}
