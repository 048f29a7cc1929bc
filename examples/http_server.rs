//! An HTTP server on one port shared by every worker, and what happens when a worker fails:
//! a crash (the process exits), a panic (one request fails, the worker lives on) and a hang
//! (the process stops responding; the primary's watchdog kills it). Either way a new worker
//! takes the slot and the other workers keep serving meanwhile.
//!
//!   cargo run --example http_server            # a worker per CPU on port 8000
//!   curl localhost:8000/          → {"worker":2,"pid":4122,"generation":1}
//!   curl localhost:8000/crash     → that worker exits 1 after answering; herdsman restarts it
//!   curl localhost:8000/panic     → the handler panics: that request fails, the worker stays
//!   curl localhost:8000/hang      → the worker freezes (SIGSTOP); killed after the heartbeat
//!                                   timeout (`HEARTBEAT_TIMEOUT_MS`, default 3000) and replaced
//!
//! Workers send the primary a heartbeat every `HEARTBEAT_TIMEOUT_MS / 4` over the IPC channel;
//! the primary side is an async task reading the cluster's events as a stream
//! ([`Cluster::primary`]), the alternative to an `on_event` callback.

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use herdsman::{Cluster, ClusterEvent, ClusterEvents, Primary, WorkerHandle};
use serde_json::{json, Value};
use tokio::time::Instant;

fn heartbeat_timeout() -> Duration {
    let millis = std::env::var("HEARTBEAT_TIMEOUT_MS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(3000);
    Duration::from_millis(millis)
}

fn main() -> ExitCode {
    Cluster::new()
        .name("http_server")
        .primary(watchdog)
        .run(|mut worker| async move {
            let listener = worker.listener()?;
            let heartbeat = worker.clone();
            tokio::spawn(async move {
                let mut ticks = tokio::time::interval(heartbeat_timeout() / 4);
                loop {
                    ticks.tick().await;
                    heartbeat.send(json!({ "heartbeat": true }));
                }
            });
            let app = Router::new()
                .route("/", get(hello))
                .route("/crash", get(crash))
                .route("/panic", get(panic))
                .route("/hang", get(hang))
                .with_state(worker);
            axum::serve(listener, app)
                .with_graceful_shutdown(herdsman::worker::shutdown())
                .await?;
            Ok(())
        })
}

/// The primary side: reports crashes, and kills a worker whose heartbeats stop.
async fn watchdog(primary: Primary, mut events: ClusterEvents) {
    let timeout = heartbeat_timeout();
    // The serving workers, by pid: a handle on each and when it was last heard from.
    let mut alive: HashMap<u32, (WorkerHandle, Instant)> = HashMap::new();
    let mut checks = tokio::time::interval(timeout / 4);
    loop {
        tokio::select! {
            event = events.recv() => {
                let Some(event) = event else { return };
                match &event {
                    ClusterEvent::Listening { pid, .. } | ClusterEvent::Message { pid, .. } => {
                        alive.insert(*pid, (primary.worker_of(&event), Instant::now()));
                    }
                    ClusterEvent::Disconnect { pid, .. } => {
                        alive.remove(pid);
                    }
                    ClusterEvent::Exit { slot, pid, code, signal, exited_after_disconnect } => {
                        alive.remove(pid);
                        if !exited_after_disconnect {
                            let how = match (code, signal) {
                                (Some(code), _) => format!("exit code {code}"),
                                (_, Some(signal)) => format!("signal {signal}"),
                                _ => "an unknown cause".to_string(),
                            };
                            println!("watchdog: worker {slot} (pid {pid}) died ({how}); it is replaced");
                        }
                    }
                    _ => {}
                }
            }
            _ = checks.tick() => {
                let hung: Vec<u32> = alive
                    .iter()
                    .filter(|(_, (_, heard))| heard.elapsed() > timeout)
                    .map(|(pid, _)| *pid)
                    .collect();
                for pid in hung {
                    let (worker, _) = alive.remove(&pid).expect("listed above");
                    println!(
                        "watchdog: worker {} (pid {pid}) sent no heartbeat for {timeout:?}; killing it",
                        worker.slot()
                    );
                    worker.kill();
                }
            }
        }
    }
}

async fn hello(State(worker): State<herdsman::Worker>) -> Json<Value> {
    Json(json!({
        "worker": worker.id(),
        "pid": std::process::id(),
        "generation": worker.generation(),
    }))
}

/// Answers, then exits as a crash would: the primary restarts the slot.
async fn crash(State(worker): State<herdsman::Worker>) -> String {
    tokio::spawn(async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        std::process::exit(1);
    });
    format!(
        "worker {} (pid {}) crashing\n",
        worker.id(),
        std::process::id()
    )
}

/// A bug in one handler: the connection is dropped without an answer, the worker serves on.
async fn panic() -> &'static str {
    panic!("a bug in one request handler")
}

/// Freezes the whole process, as a deadlock or an endless loop would.
async fn hang() -> &'static str {
    nix::sys::signal::raise(nix::sys::signal::Signal::SIGSTOP).expect("stop this process");
    "unreachable: the primary kills a stopped worker"
}
