//! What the library tells herdsman by itself, on `$NOTIFY_SOCKET`, from the worker's tokio
//! runtime: its heartbeat (`WATCHDOG=1` every half of `$WATCHDOG_USEC`, with `--watchdog`), so
//! that a runtime that no longer runs its tasks counts as hung; and the connections its
//! listeners accepted (`REQUESTS=n`, with `--max-requests`: herdsman gives the worker its
//! limit as `$HERDSMAN_MAX_REQUESTS`), at most every 100 ms while it changes, and by the accept
//! that reaches the limit itself (one non-blocking `sendto`, so the count herdsman acts on is the
//! limit, not whatever the next report finds).

use std::ffi::OsString;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use tokio::net::UnixDatagram;

/// How often the count of accepted connections is sent while it changes.
const REQUESTS_EVERY: Duration = Duration::from_millis(100);

struct Reports {
    accepted: AtomicU64,
    /// `$HERDSMAN_MAX_REQUESTS`, when herdsman counts on the worker's reports.
    limit: Option<u64>,
    /// `$NOTIFY_SOCKET`: where the reports go (none when not under herdsman).
    path: Option<OsString>,
}

fn reports() -> &'static Reports {
    static REPORTS: OnceLock<Reports> = OnceLock::new();
    REPORTS.get_or_init(|| Reports {
        accepted: AtomicU64::new(0),
        limit: std::env::var("HERDSMAN_MAX_REQUESTS")
            .ok()
            .and_then(|limit| limit.parse().ok()),
        path: std::env::var_os("NOTIFY_SOCKET"),
    })
}

/// A listener accepted a connection; the one that reaches the limit says so at once.
pub(crate) fn accepted() {
    let reports = reports();
    let count = reports.accepted.fetch_add(1, Ordering::Relaxed) + 1;
    if reports.limit != Some(count) {
        return;
    }
    let Some(path) = &reports.path else { return };
    // Best effort: if the primary's socket is full, the next periodic report tells it.
    if let Ok(socket) = std::os::unix::net::UnixDatagram::unbound() {
        let _ = socket.set_nonblocking(true);
        let _ = socket.send_to(format!("REQUESTS={count}").as_bytes(), path);
    }
}

/// Starts the reports this worker owes herdsman (once; inside a tokio runtime). Without
/// `$NOTIFY_SOCKET` (not under herdsman) there is no one to tell.
pub(crate) fn start() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        let Some(path) = reports().path.clone() else {
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
                let mut ticks = tokio::time::interval(REQUESTS_EVERY);
                loop {
                    ticks.tick().await;
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
