//! What the library tells herdsman by itself, on `$NOTIFY_SOCKET`, from the worker's tokio
//! runtime: its heartbeat (`WATCHDOG=1` every half of `$WATCHDOG_USEC`, with `--watchdog`), so
//! that a runtime that no longer runs its tasks counts as hung; and the connections its
//! listeners accepted (`REQUESTS=n`, with `--max-requests`: herdsman gives the worker its
//! limit as `$HERDSMAN_MAX_REQUESTS`), at most every 100 ms and at once on reaching the limit.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use tokio::net::UnixDatagram;
use tokio::sync::Notify;

/// How often the count of accepted connections is sent while it changes.
const REQUESTS_EVERY: Duration = Duration::from_millis(100);

struct Reports {
    accepted: AtomicU64,
    /// `$HERDSMAN_MAX_REQUESTS`, when herdsman counts on the worker's reports.
    limit: Option<u64>,
    /// Wakes the reporter when the limit is reached.
    reached: Notify,
}

fn reports() -> &'static Reports {
    static REPORTS: OnceLock<Reports> = OnceLock::new();
    REPORTS.get_or_init(|| Reports {
        accepted: AtomicU64::new(0),
        limit: std::env::var("HERDSMAN_MAX_REQUESTS")
            .ok()
            .and_then(|limit| limit.parse().ok()),
        reached: Notify::new(),
    })
}

/// A listener accepted a connection.
pub(crate) fn accepted() {
    let reports = reports();
    let count = reports.accepted.fetch_add(1, Ordering::Relaxed) + 1;
    if reports.limit == Some(count) {
        reports.reached.notify_one();
    }
}

/// Starts the reports this worker owes herdsman (once; inside a tokio runtime). Without
/// `$NOTIFY_SOCKET` (not under herdsman) there is no one to tell.
pub(crate) fn start() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
            return;
        };
        if let Some(every) = watchdog_interval() {
            let path = path.clone();
            tokio::spawn(async move {
                let Ok(socket) = UnixDatagram::unbound() else {
                    return;
                };
                let mut ticks = tokio::time::interval(every);
                loop {
                    ticks.tick().await;
                    let _ = socket.send_to(b"WATCHDOG=1", &path).await;
                }
            });
        }
        if reports().limit.is_some() {
            tokio::spawn(async move {
                let Ok(socket) = UnixDatagram::unbound() else {
                    return;
                };
                let reports = reports();
                let mut sent = 0;
                loop {
                    let _ = tokio::time::timeout(REQUESTS_EVERY, reports.reached.notified()).await;
                    let count = reports.accepted.load(Ordering::Relaxed);
                    if count != sent {
                        let line = format!("REQUESTS={count}");
                        let _ = socket.send_to(line.as_bytes(), &path).await;
                        sent = count;
                    }
                }
            });
        }
    });
}

/// Half of `$WATCHDOG_USEC`, when it is meant for this process (`$WATCHDOG_PID` unset or ours,
/// as sd_watchdog_enabled(3) reads them).
fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    let ours = std::env::var("WATCHDOG_PID")
        .ok()
        .is_none_or(|pid| pid == std::process::id().to_string());
    (ours && usec > 0).then(|| Duration::from_micros(usec / 2))
}
