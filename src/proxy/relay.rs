//! Bytes both ways between two connections, for what is not HTTP/1.x or no longer is (after a
//! `101 Switching Protocols`): each direction's end of file is passed on as a `shutdown(Write)`
//! (half-close), each waits for its writes to be taken before it reads more (backpressure), and
//! the pair is closed after [`IDLE_TIMEOUT`] with no byte either way.
//!
//! A buffer exists only while bytes are on their way ([`read_some`]): a connection waiting for
//! its next bytes holds none, so a thousand quiet connections cost their sockets and tasks, not
//! two 64 KiB buffers each (128 MB).

use std::io;
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

/// A connection with no byte either way for this long is closed (nginx's `proxy_read_timeout`
/// is 60 s; long polls and quiet WebSockets get more).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
const BUFFER: usize = 64 * 1024;

/// Relays between `client` and `upstream` until both directions ended or the pair idled;
/// `early` (bytes the client sent already) goes to `upstream` first.
pub async fn relay(client: &TcpStream, upstream: &TcpStream, early: &[u8]) {
    let start = Instant::now();
    let activity = AtomicU64::new(0);
    if !early.is_empty() && write_all(upstream, early).await.is_err() {
        return;
    }
    let both = async {
        tokio::join!(
            copy(client, upstream, &activity, start),
            copy(upstream, client, &activity, start),
        )
    };
    tokio::select! {
        _ = both => {}
        _ = idle(&activity, start) => {}
    }
}

/// One direction: reads until end of file or an error, then shuts the other side's writing.
async fn copy(from: &TcpStream, to: &TcpStream, activity: &AtomicU64, start: Instant) {
    loop {
        let bytes = match read_some(from).await {
            Ok(Some(bytes)) if !bytes.is_empty() => bytes,
            Ok(None) => continue,
            Ok(Some(_)) | Err(_) => break,
        };
        activity.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
        if write_all(to, &bytes).await.is_err() {
            return;
        }
    }
    let _ = socket2::SockRef::from(to).shutdown(Shutdown::Write);
}

/// Waits until `stream` has bytes (or its end), then reads them into a buffer made for them:
/// `Some(empty)` is the end of file, `None` a wake-up with nothing to read after all. Cancel
/// safe (it waits only in `readable`).
pub async fn read_some(stream: &TcpStream) -> io::Result<Option<Vec<u8>>> {
    stream.readable().await?;
    let mut buffer = Vec::with_capacity(BUFFER);
    match read_into(stream, &mut buffer) {
        Ok(_) => Ok(Some(buffer)),
        Err(error) if error.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(error) => Err(error),
    }
}

/// Reads more of `stream` into `buffer` (at least 4 KiB of room), waiting for bytes; 0 at its
/// end. Cancel safe (it waits only in `readable`).
pub async fn read_more(stream: &TcpStream, buffer: &mut Vec<u8>) -> io::Result<usize> {
    loop {
        stream.readable().await?;
        buffer.reserve(4096);
        match read_into(stream, buffer) {
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
            read => return read,
        }
    }
}

/// One non-blocking read of `stream` into the spare capacity of `buffer`; `WouldBlock` if it
/// had nothing. A read that leaves room took all the socket had, so it also clears the
/// socket's readiness (`crate::sys::try_io_clearing`): the next wait is for new bytes, without
/// a read that finds none (one per request and per response otherwise), and a kept upstream
/// connection with nothing new is known alive without a system call (`connection::is_stale`).
fn read_into(stream: &TcpStream, buffer: &mut Vec<u8>) -> io::Result<usize> {
    let try_io = |io: &mut dyn FnMut() -> io::Result<usize>| {
        stream.try_io(tokio::io::Interest::READABLE, io)
    };
    crate::sys::try_io_clearing(try_io, || {
        let room = buffer.capacity() - buffer.len();
        let read = crate::sys::recv_appending(stream.as_raw_fd(), buffer)?;
        Ok((read, read > 0 && read < room))
    })
}

/// Writes all of `bytes`, waiting while the peer's window is full (backpressure).
pub async fn write_all(stream: &TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        stream.writable().await?;
        match stream.try_write(bytes) {
            Ok(written) => bytes = &bytes[written..],
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
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
