//! How connections spread over the workers, live: each worker counts the requests it serves
//! and reports its count to the primary; the primary prints the table once a second while it
//! changes and broadcasts it back, so that any worker can show it at `/stats`.
//!
//!   cargo run --example load_balancing         # a worker per CPU on port 8000
//!   wrk -c 32 -d 10s http://127.0.0.1:8000/    # or: for i in $(seq 1000); do curl -s localhost:8000/ >/dev/null; done
//!   curl localhost:8000/stats      → {"total":1000,"workers":{"1":497,"2":503}}
//!
//! The primary prints `requests: total 1000 | worker 1: 497 (49.7%) | worker 2: 503 (50.3%)`.
//! Counts are per slot and survive a worker's replacement (the primary adds them up).
//!
//! herdsman's own view of the same cluster, from the builder: with `ADMIN=127.0.0.1:9100`,
//! its admin server (`.admin()`: /metrics, the dashboard at /); with `LOG_DIR=logs`, its log
//! files (`.log_dir()`).

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use herdsman::{Cluster, ClusterEvent, ClusterEvents, Primary};
use serde_json::{json, Value};

/// How often workers report and the primary prints.
const REPORT_EVERY: Duration = Duration::from_millis(250);
const PRINT_EVERY: Duration = Duration::from_secs(1);

fn main() -> ExitCode {
    let mut cluster = Cluster::new().name("load_balancing").primary(tally);
    if let Ok(address) = std::env::var("ADMIN") {
        match address.parse() {
            Ok(address) => cluster = cluster.admin(address),
            Err(_) => {
                eprintln!("ADMIN={address} is not an address such as 127.0.0.1:9100");
                return ExitCode::from(2);
            }
        }
    }
    if let Some(dir) = std::env::var_os("LOG_DIR") {
        cluster = cluster.log_dir(dir);
    }
    cluster.run(|mut worker| async move {
        let listener = worker.listener()?;
        let app = App {
            id: worker.id(),
            served: Arc::new(AtomicU64::new(0)),
            table: Arc::new(Mutex::new(json!({ "total": 0, "workers": {} }))),
        };
        // Report this worker's count when it changed.
        let (reporter, served) = (worker.clone(), app.served.clone());
        tokio::spawn(async move {
            let mut reported = 0;
            let mut ticks = tokio::time::interval(REPORT_EVERY);
            loop {
                ticks.tick().await;
                let now = served.load(Ordering::Relaxed);
                if now != reported {
                    reporter.send(json!({ "served": now }));
                    reported = now;
                }
            }
        });
        // Keep the primary's latest table for /stats.
        let mut messages = worker.messages().ok_or("no IPC channel")?;
        let table = app.table.clone();
        tokio::spawn(async move {
            while let Some(message) = messages.recv().await {
                *table.lock().unwrap() = message.data;
            }
        });
        let app = Router::new()
            .route("/", get(hello))
            .route("/stats", get(stats))
            .with_state(app);
        axum::serve(listener, app)
            .with_graceful_shutdown(herdsman::worker::shutdown())
            .await?;
        Ok(())
    })
}

#[derive(Clone)]
struct App {
    id: usize,
    served: Arc<AtomicU64>,
    table: Arc<Mutex<Value>>,
}

async fn hello(State(app): State<App>) -> Json<Value> {
    let served = app.served.fetch_add(1, Ordering::Relaxed) + 1;
    Json(json!({ "worker": app.id, "pid": std::process::id(), "served": served }))
}

async fn stats(State(app): State<App>) -> Json<Value> {
    Json(app.table.lock().unwrap().clone())
}

/// The primary side: adds up the workers' reports per slot, prints and broadcasts the table.
async fn tally(primary: Primary, mut events: ClusterEvents) {
    // Per slot: requests served by its earlier workers, and the current worker's (pid, count).
    let mut earlier: BTreeMap<usize, u64> = BTreeMap::new();
    let mut current: BTreeMap<usize, (u32, u64)> = BTreeMap::new();
    let mut printed = None;
    let mut ticks = tokio::time::interval(PRINT_EVERY);
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(ClusterEvent::Message { slot, pid, data }) => {
                    if let Some(served) = data.get("served").and_then(Value::as_u64) {
                        current.insert(slot, (pid, served));
                    }
                }
                Some(ClusterEvent::Exit { slot, pid, .. }) => {
                    if current.get(&slot).is_some_and(|(current, _)| *current == pid) {
                        let (_, served) = current.remove(&slot).expect("checked above");
                        *earlier.entry(slot).or_default() += served;
                    }
                }
                Some(_) => {}
                None => return,
            },
            _ = ticks.tick() => {
                let mut per_slot = earlier.clone();
                for (slot, (_, served)) in &current {
                    *per_slot.entry(*slot).or_default() += served;
                }
                if printed.as_ref() == Some(&per_slot) {
                    continue;
                }
                let total: u64 = per_slot.values().sum();
                let mut line = format!("requests: total {total}");
                for (slot, served) in &per_slot {
                    let share = 100.0 * *served as f64 / total.max(1) as f64;
                    line += &format!(" | worker {slot}: {served} ({share:.1}%)");
                }
                println!("{line}");
                let workers: serde_json::Map<String, Value> = per_slot
                    .iter()
                    .map(|(slot, served)| (slot.to_string(), json!(served)))
                    .collect();
                primary.broadcast(json!({ "total": total, "workers": workers }));
                printed = Some(per_slot);
            }
        }
    }
}
