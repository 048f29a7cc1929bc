//! The worker's listening socket, and a graceful shutdown that serves every connection it
//! accepted.
//!
//! A server's graceful shutdown usually does two things at once when it is told to stop: it
//! stops accepting, and it closes every connection that is idle. A connection accepted a
//! moment earlier, whose request has not been read yet, counts as idle (hyper, and so axum,
//! cancel it), and its client sees a reset: about ten per reload under a stream of new
//! connections. herdsman's [`shutdown`] therefore does it in an order that loses none:
//!
//! 1. on SIGTERM (or SIGINT), every [`Listener`] stops accepting and closes its socket. With
//!    `--balance shared` the connections still queued go to the other workers, who keep the
//!    socket open; with `reuseport` the primary had steered new connections away already;
//! 2. it waits until every connection the listener handed out has had its first read return
//!    (the server has started on the request: the request is in progress, not idle), at most
//!    [`FIRST_READ_WAIT`] for clients that connected and sent nothing;
//! 3. only then does it resolve, and the server's graceful shutdown finishes the requests in
//!    progress and closes the rest.
//!
//! Under `--balance round-robin` or `least-conn` (`HERDSMAN_HANDOFF`) the listener has no
//! socket: it yields the connections the primary hands over the IPC channel, and answers each
//! (`accepted` when the server takes it from [`Listener::accept`]; `refused` for those that
//! arrive once it stopped, which the primary hands to another worker, so a stop loses none),
//! and, under `least-conn` (`HERDSMAN_HANDOFF_CLOSES=1`), each [`Connection`] reports its
//! close when dropped, which the primary counts.
//!
//! The socket and the connections are tokio's, wrapped: [`Connection`] derefs to
//! [`tokio::net::TcpStream`]. With the `axum` feature, [`Listener`] is an
//! `axum::serve::Listener`, so `axum::serve(worker.listener()?, app)` works as with tokio's.

use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

use crate::ipc::handoff::Kind;
use crate::ipc::WorkerChannel;

/// How long [`shutdown`] waits for accepted connections whose client has sent nothing yet.
pub const FIRST_READ_WAIT: Duration = Duration::from_secs(1);

/// What the worker's listeners and connections share with [`shutdown`] (one per process).
struct Drain {
    /// Set when the worker is asked to stop: listeners close.
    stopping: watch::Sender<bool>,
    /// Listeners that still hold their socket.
    open_listeners: watch::Sender<usize>,
    /// Connections handed out whose first read has not returned.
    unread: watch::Sender<usize>,
}

fn drain() -> &'static Drain {
    static DRAIN: OnceLock<Drain> = OnceLock::new();
    DRAIN.get_or_init(|| Drain {
        stopping: watch::Sender::new(false),
        open_listeners: watch::Sender::new(0),
        unread: watch::Sender::new(0),
    })
}

/// The worker's listening socket (from [`crate::Worker::listener`]): accepts until the worker
/// is asked to stop ([`shutdown`]), then closes and accepts nothing more.
#[derive(Debug)]
pub struct Listener {
    socket: Option<Source>,
    local_addr: SocketAddr,
    stopping: watch::Receiver<bool>,
}

/// Where a listener's connections come from.
#[derive(Debug)]
enum Source {
    Socket(tokio::net::TcpListener),
    /// Handed over by the primary, each with its id, and the channel the answers go on.
    Handed {
        connections: mpsc::UnboundedReceiver<(u64, OwnedFd)>,
        channel: Arc<WorkerChannel>,
        /// Whether each connection reports its close (`least-conn` counts them).
        report_closes: bool,
    },
}

impl Listener {
    pub(crate) fn new(socket: tokio::net::TcpListener) -> io::Result<Listener> {
        let local_addr = socket.local_addr()?;
        Ok(Listener::with(Source::Socket(socket), local_addr))
    }

    /// The listener of the connections the primary hands over, on the cluster's `address`.
    pub(crate) fn handed(
        connections: mpsc::UnboundedReceiver<(u64, OwnedFd)>,
        channel: Arc<WorkerChannel>,
        address: SocketAddr,
        report_closes: bool,
    ) -> Listener {
        let source = Source::Handed {
            connections,
            channel,
            report_closes,
        };
        Listener::with(source, address)
    }

    fn with(source: Source, local_addr: SocketAddr) -> Listener {
        let drain = drain();
        drain.open_listeners.send_modify(|open| *open += 1);
        Listener {
            socket: Some(source),
            local_addr,
            stopping: drain.stopping.subscribe(),
        }
    }

    /// The next connection. Once the worker is asked to stop, the socket is closed and this
    /// never returns: connections still queued go to other workers.
    pub async fn accept(&mut self) -> io::Result<(Connection, SocketAddr)> {
        loop {
            if *self.stopping.borrow() {
                self.close();
            }
            let next = match &mut self.socket {
                None => return std::future::pending().await,
                Some(Source::Socket(socket)) => tokio::select! {
                    // Checked first: after the stop, not one more connection is taken.
                    biased;
                    _ = self.stopping.wait_for(|stopping| *stopping) => continue,
                    accepted = socket.accept() => {
                        let (stream, peer) = accepted?;
                        super::report::accepted();
                        return Ok((Connection::new(stream, None), peer));
                    }
                },
                Some(Source::Handed {
                    connections,
                    channel,
                    report_closes,
                }) => tokio::select! {
                    biased;
                    _ = self.stopping.wait_for(|stopping| *stopping) => continue,
                    next = connections.recv() => {
                        next.map(|(id, fd)| (id, fd, channel.clone(), *report_closes))
                    }
                },
            };
            // The channel is gone (the primary is): nothing more comes.
            let Some((id, fd, channel, report_closes)) = next else {
                self.close();
                continue;
            };
            match adopt(fd) {
                Ok((stream, peer)) => {
                    channel.answer(Kind::Accepted, id);
                    super::report::accepted();
                    let report = report_closes.then_some(CloseReport { id, channel });
                    return Ok((Connection::new(stream, report), peer));
                }
                // Not a socket this process can serve: another worker may.
                Err(_) => {
                    channel.answer(Kind::Refused, id);
                }
            }
        }
    }

    /// The address the socket is bound to (also after it closed).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local_addr)
    }

    fn close(&mut self) {
        let Some(source) = self.socket.take() else {
            return;
        };
        if let Source::Handed {
            mut connections,
            channel,
            ..
        } = source
        {
            // Those handed already go back, and the channel refuses any that come after.
            connections.close();
            while let Ok((id, _fd)) = connections.try_recv() {
                channel.answer(Kind::Refused, id);
            }
        }
        drain().open_listeners.send_modify(|open| *open -= 1);
    }
}

/// A handed connection's fd as a tokio stream, and its peer.
fn adopt(fd: OwnedFd) -> io::Result<(TcpStream, SocketAddr)> {
    let stream = std::net::TcpStream::from(fd);
    stream.set_nonblocking(true)?;
    // A client that reset already has no address: the server reads the reset.
    let peer = stream
        .peer_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    Ok((TcpStream::from_std(stream)?, peer))
}

/// Tells the primary, when dropped, that handed connection `id` is closed.
#[derive(Debug)]
struct CloseReport {
    id: u64,
    channel: Arc<WorkerChannel>,
}

impl Drop for CloseReport {
    fn drop(&mut self) {
        self.channel.answer(Kind::Closed, self.id);
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(feature = "axum")]
impl axum::serve::Listener for Listener {
    type Io = Connection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Connection, SocketAddr) {
        loop {
            match Listener::accept(self).await {
                Ok(accepted) => return accepted,
                // The client gave up before the accept: nothing to wait for.
                Err(error)
                    if matches!(
                        error.kind(),
                        io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::ConnectionReset
                            | io::ErrorKind::ConnectionRefused
                            | io::ErrorKind::Interrupted
                    ) => {}
                // Out of fds, say: as axum does for tokio's listener, wait and try again.
                Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local_addr)
    }
}

/// An accepted connection: a [`TcpStream`] (it derefs to one) that tells [`shutdown`] when the
/// server has started reading it.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    unread: Option<Unread>,
    /// A handed connection reports its close to the primary.
    _closed: Option<CloseReport>,
}

/// Counts a connection as not read yet until dropped.
#[derive(Debug)]
struct Unread;

impl Unread {
    fn new() -> Unread {
        drain().unread.send_modify(|unread| *unread += 1);
        Unread
    }
}

impl Drop for Unread {
    fn drop(&mut self) {
        drain().unread.send_modify(|unread| *unread -= 1);
    }
}

impl Connection {
    fn new(stream: TcpStream, closed: Option<CloseReport>) -> Connection {
        Connection {
            stream,
            unread: Some(Unread::new()),
            _closed: closed,
        }
    }

    /// The stream itself (no longer watched by [`shutdown`]; a handed connection counts as
    /// closed for `least-conn` from here).
    pub fn into_inner(self) -> TcpStream {
        self.stream
    }
}

impl std::ops::Deref for Connection {
    type Target = TcpStream;

    fn deref(&self) -> &TcpStream {
        &self.stream
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.stream).poll_read(cx, buf);
        if result.is_ready() {
            self.unread = None;
        }
        result
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Resolves when the worker is asked to stop (SIGTERM, herdsman's default `--stop-signal`, or
/// SIGINT) *and* it is safe to start the server's graceful shutdown: its listeners have
/// stopped accepting, and every connection they handed out has been read from (see the module
/// documentation). Hand it to the server's graceful shutdown
/// (`axum::serve(…).with_graceful_shutdown(herdsman::worker::shutdown())`).
pub async fn shutdown() {
    stop_signal().await;
    stop_accepting().await;
}

/// Stops every [`Listener`] of this process, then waits (at most [`FIRST_READ_WAIT`]) until they
/// have closed and every connection they accepted has had its first read. [`shutdown`] calls it
/// on the stop signal; call it yourself when the worker stops for another reason.
pub async fn stop_accepting() {
    let drain = drain();
    drain.stopping.send_replace(true);
    let mut open = drain.open_listeners.subscribe();
    let mut unread = drain.unread.subscribe();
    let settled = async {
        // Closed first: a listener counts what it accepted before it lets go of its socket.
        let _ = open.wait_for(|open| *open == 0).await;
        let _ = unread.wait_for(|unread| *unread == 0).await;
    };
    let _ = tokio::time::timeout(FIRST_READ_WAIT, settled).await;
}

async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut interrupt)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the default action (exit) applies; never resolve.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = interrupt.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The only test of the process-wide drain state (tests run in one process).
    #[tokio::test]
    async fn stops_accepting_then_waits_for_accepted_connections_to_be_read() {
        let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut listener = Listener::new(socket).unwrap();
        let address = listener.local_addr().unwrap();
        let mut client = tokio::net::TcpStream::connect(address).await.unwrap();
        let (mut connection, _) = listener.accept().await.unwrap();
        // The server task: accepts on, and reads its connection only when the client writes.
        let server = tokio::spawn(async move {
            let next = tokio::time::timeout(Duration::from_millis(300), listener.accept()).await;
            assert!(next.is_err(), "nothing accepted after the stop");
            drop(listener);
            let mut request = [0u8; 5];
            connection.read_exact(&mut request).await.unwrap();
            connection.write_all(b"world").await.unwrap();
            request
        });
        let stop = tokio::spawn(stop_accepting());
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!stop.is_finished(), "waits while the connection is unread");
        // Closed: the only copy of the socket is gone, so new connections are refused.
        let refused = tokio::net::TcpStream::connect(address).await.unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
        client.write_all(b"hello").await.unwrap();
        tokio::time::timeout(FIRST_READ_WAIT / 2, stop)
            .await
            .expect("resolves once the connection was read")
            .unwrap();
        assert_eq!(&server.await.unwrap(), b"hello");
        let mut answer = [0u8; 5];
        client.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"world");
    }
}
