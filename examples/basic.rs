//! The primary and its workers in one program: roles, messages both ways, and the lifecycle
//! events Node's cluster module has (fork, online, listening, message, disconnect, exit).
//!
//!   cargo run --example basic                  # a worker per CPU on port 8000
//!   HERDSMAN_WORKERS=2 PORT=0 cargo run --example basic
//!   curl localhost:8000/          → {"worker":1,"pid":4121,"welcomed":true}
//!   curl localhost:8000/crash     → that worker exits 3; the primary starts another
//!
//! The primary prints each event as `event NAME slot=N pid=P …`; workers print what they get.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use herdsman::{Cluster, ClusterEvent};
use serde_json::{json, Value};

fn describe(event: &ClusterEvent) -> String {
    match event {
        ClusterEvent::Fork { slot, pid } => format!("event fork slot={slot} pid={pid}"),
        ClusterEvent::Online { slot, pid } => format!("event online slot={slot} pid={pid}"),
        ClusterEvent::Listening { slot, pid } => format!("event listening slot={slot} pid={pid}"),
        ClusterEvent::Message { slot, pid, data } => {
            format!("event message slot={slot} pid={pid} data={data}")
        }
        ClusterEvent::Disconnect { slot, pid } => format!("event disconnect slot={slot} pid={pid}"),
        ClusterEvent::Exit {
            slot,
            pid,
            code,
            signal,
        } => format!("event exit slot={slot} pid={pid} code={code:?} signal={signal:?}"),
    }
}

fn main() -> ExitCode {
    Cluster::new()
        .name("basic")
        .on_event(|primary, event| {
            println!("{}", describe(event));
            // Answer every worker's greeting: primary → worker.
            if let ClusterEvent::Message { slot, data, .. } = event {
                if data.get("hello").is_some() {
                    primary.send(*slot, json!({ "welcome": slot }));
                }
            }
        })
        .run(|mut worker| async move {
            let listener = worker.listener()?;
            let welcomed = Arc::new(AtomicBool::new(false));
            let mut messages = worker.messages().ok_or("no IPC channel")?;
            let id = worker.id();
            let flag = welcomed.clone();
            tokio::spawn(async move {
                while let Some(message) = messages.recv().await {
                    println!("worker {id} got {} from {:?}", message.data, message.from);
                    flag.store(true, Ordering::SeqCst);
                }
            });
            // Worker → primary.
            worker.send(json!({ "hello": id }));
            let app = Router::new()
                .route("/", get(hello))
                .route("/crash", get(crash))
                .with_state((id, welcomed));
            axum::serve(listener, app)
                .with_graceful_shutdown(herdsman::worker::shutdown())
                .await?;
            Ok(())
        })
}

async fn hello(State((worker, welcomed)): State<(usize, Arc<AtomicBool>)>) -> Json<Value> {
    Json(json!({
        "worker": worker,
        "pid": std::process::id(),
        "welcomed": welcomed.load(Ordering::SeqCst),
    }))
}

async fn crash() -> &'static str {
    std::process::exit(3)
}
