//! Bytes both ways between two connections, for what is not HTTP/1.x or no longer is (after a
//! `101 Switching Protocols`): each direction's end of file is passed on as a `shutdown(Write)`
//! (half-close), each waits for its writes to be taken before it reads more (backpressure, one
//! 64 KiB buffer per direction), and the pair is closed after [`IDLE_TIMEOUT`] with no byte
//! either way.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// A connection with no byte either way for this long is closed (nginx's `proxy_read_timeout`
/// is 60 s; long polls and quiet WebSockets get more).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
const BUFFER: usize = 64 * 1024;

/// Relays between `client` and `upstream` until both directions ended or the pair idled;
/// `early` (bytes the client sent already) goes to `upstream` first.
pub async fn relay(client: &mut TcpStream, upstream: &mut TcpStream, early: &[u8]) {
    let start = Instant::now();
    let activity = AtomicU64::new(0);
    let (client_read, client_write) = client.split();
    let (upstream_read, mut upstream_write) = upstream.split();
    if !early.is_empty() && upstream_write.write_all(early).await.is_err() {
        return;
    }
    let both = async {
        tokio::join!(
            copy(client_read, upstream_write, &activity, start),
            copy(upstream_read, client_write, &activity, start),
        )
    };
    tokio::select! {
        _ = both => {}
        _ = idle(&activity, start) => {}
    }
}

/// One direction: reads until end of file or an error, then shuts the other side's writing.
async fn copy(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    activity: &AtomicU64,
    start: Instant,
) {
    let mut buffer = vec![0; BUFFER];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        activity.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
    let _ = to.shutdown().await;
}

/// Returns once no byte went either way for [`IDLE_TIMEOUT`].
async fn idle(activity: &AtomicU64, start: Instant) {
    loop {
        let last = start + Duration::from_millis(activity.load(Ordering::Relaxed));
        let due = last + IDLE_TIMEOUT;
        if Instant::now() >= due {
            return;
        }
        tokio::time::sleep_until(due).await;
    }
}
