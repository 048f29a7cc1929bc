//! The primary and its workers in one program: roles, messages every way, and the lifecycle
//! events Node's cluster module has (fork, online, listening, message, disconnect, exit).
//!
//!   cargo run --example basic                  # a worker per CPU on port 8000
//!   HERDSMAN_WORKERS=2 PORT=0 cargo run --example basic
//!
//! | request | what happens |
//! |---|---|
//! | `GET /` | `{"worker":1,"pid":4121,"welcomed":true}` |
//! | `GET /announce/TEXT` | worker → primary, which broadcasts `{"announcement":TEXT}` to every worker |
//! | `GET /shout/TEXT` | worker → every other worker (`Worker::broadcast`) |
//! | `GET /tell/SLOT/TEXT` | worker → the worker in SLOT (`Worker::send_to`), routed by the primary |
//! | `GET /roll_call` | worker → primary, which sends `{"roll_call":N}` to each of its N workers |
//! | `GET /retire` | worker → primary, which disconnects it gracefully; a new worker takes the slot |
//! | `GET /scale/N`, `GET /restart/SLOT`, `GET /stop` | worker → primary, which scales to N workers, replaces SLOT's worker (new first), or stops the cluster |
//! | `GET /crash` | that worker exits 3; the primary starts another |
//!
//! The primary prints each event as `event NAME slot=N pid=P …`; workers print each message they
//! get as `worker N got DATA from SENDER`.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use herdsman::{Cluster, ClusterEvent, Worker};
use serde_json::{json, Value};

/// One line per event: its name, slot and pid, and what else it carries.
fn describe(event: &ClusterEvent) -> String {
    let mut line = format!(
        "event {} slot={} pid={}",
        event.name(),
        event.slot(),
        event.pid()
    );
    match event {
        ClusterEvent::Message { data, .. } => line += &format!(" data={data}"),
        ClusterEvent::Exit {
            code,
            signal,
            exited_after_disconnect,
            ..
        } => {
            line += &format!(
                " code={code:?} signal={signal:?} exited_after_disconnect={exited_after_disconnect}"
            )
        }
        _ => {}
    }
    line
}

fn main() -> ExitCode {
    Cluster::new()
        .name("basic")
        .on_event(|primary, event| {
            println!("{}", describe(event));
            let ClusterEvent::Message { slot, data, .. } = event else {
                return;
            };
            if data.get("hello").is_some() {
                // Primary → one worker.
                primary.send(*slot, json!({ "welcome": slot }));
            } else if let Some(text) = data.get("announce") {
                // Primary → every worker.
                primary.broadcast(json!({ "announcement": text }));
            } else if data.get("roll_call").is_some() {
                // The worker list is an answer from the supervisor: wait for it off this callback.
                let primary = primary.clone();
                tokio::spawn(async move {
                    let workers = primary.workers().await;
                    for worker in &workers {
                        worker.send(json!({ "roll_call": workers.len() }));
                    }
                });
            } else if data.get("retire").is_some() {
                primary.worker_of(event).disconnect();
            } else if let Some(count) = data.get("scale").and_then(Value::as_u64) {
                primary.scale(count as usize);
            } else if let Some(slot) = data.get("restart").and_then(Value::as_u64) {
                primary.restart(slot as usize);
            } else if data.get("stop").is_some() {
                primary.stop();
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
                    if message.data.get("welcome").is_some() {
                        flag.store(true, Ordering::SeqCst);
                    }
                }
            });
            // Worker → primary.
            worker.send(json!({ "hello": id }));
            let app = Router::new()
                .route("/", get(hello))
                .route("/announce/{text}", get(announce))
                .route("/shout/{text}", get(shout))
                .route("/tell/{slot}/{text}", get(tell))
                .route("/roll_call", get(roll_call))
                .route("/retire", get(retire))
                .route("/scale/{count}", get(scale))
                .route("/restart/{slot}", get(restart))
                .route("/stop", get(stop))
                .route("/crash", get(crash))
                .with_state(App { worker, welcomed });
            axum::serve(listener, app)
                .with_graceful_shutdown(herdsman::worker::shutdown())
                .await?;
            Ok(())
        })
}

#[derive(Clone)]
struct App {
    worker: Worker,
    welcomed: Arc<AtomicBool>,
}

impl App {
    fn answer(&self, sent: bool) -> Json<Value> {
        Json(json!({
            "worker": self.worker.id(),
            "pid": std::process::id(),
            "welcomed": self.welcomed.load(Ordering::SeqCst),
            "sent": sent,
        }))
    }
}

async fn hello(State(app): State<App>) -> Json<Value> {
    app.answer(false)
}

async fn announce(State(app): State<App>, Path(text): Path<String>) -> Json<Value> {
    app.answer(app.worker.send(json!({ "announce": text })))
}

async fn shout(State(app): State<App>, Path(text): Path<String>) -> Json<Value> {
    app.answer(app.worker.broadcast(json!({ "shout": text })))
}

async fn tell(State(app): State<App>, Path((slot, text)): Path<(usize, String)>) -> Json<Value> {
    app.answer(app.worker.send_to(slot, json!({ "note": text })))
}

async fn roll_call(State(app): State<App>) -> Json<Value> {
    app.answer(app.worker.send(json!({ "roll_call": true })))
}

async fn retire(State(app): State<App>) -> Json<Value> {
    app.answer(app.worker.send(json!({ "retire": true })))
}

async fn scale(State(app): State<App>, Path(count): Path<usize>) -> Json<Value> {
    app.answer(app.worker.send(json!({ "scale": count })))
}

async fn restart(State(app): State<App>, Path(slot): Path<usize>) -> Json<Value> {
    app.answer(app.worker.send(json!({ "restart": slot })))
}

async fn stop(State(app): State<App>) -> Json<Value> {
    app.answer(app.worker.send(json!({ "stop": true })))
}

async fn crash() -> &'static str {
    std::process::exit(3)
}
