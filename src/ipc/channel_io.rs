//! The channel's two tasks (`channel`): the reader, which decodes the peer's lines (taking the
//! fds that come with them at a worker's end) and hands each frame to the callback, and the
//! writer, which writes the queued lines in order, a handle's fd with its first bytes.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, MsgFlags};
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

use super::{End, Handed, Incoming, Queued, Received, HANDLE_RETRIES};
use crate::ipc::frame::Dialect;
use crate::ipc::line::Decoder;
use crate::ipc::node::HANDLE_NACK;

/// What the reader tells the writer: the answers to the handles it sent, and the
/// `NODE_HANDLE_NACK`s to write for the handles the peer sent.
pub(super) struct Peer {
    /// Set by the writer while it waits for an answer, so that a stray answer is passed over.
    pub(super) awaiting: Arc<AtomicBool>,
    pub(super) answers: mpsc::Sender<bool>,
    pub(super) nacks: mpsc::Sender<Cow<'static, [u8]>>,
}

/// The writer's side of [`Peer`].
pub(super) struct Answers {
    pub(super) awaiting: Arc<AtomicBool>,
    pub(super) answered: mpsc::Receiver<bool>,
    pub(super) stop: CancellationToken,
}

pub(super) async fn read<E: End>(
    reader: OwnedReadHalf,
    dialect: Dialect,
    unhandled: Option<Arc<Semaphore>>,
    peer: Peer,
    mut receive: impl FnMut(Received<E::Receives>),
) {
    let mut decoder = Decoder::default();
    let mut buffer = vec![0u8; 64 * 1024];
    let mut items = Vec::new();
    // The fds that came and wait for the frame they came with (`E::TAKES_FDS`).
    let mut fds = VecDeque::new();
    let reason = loop {
        let read = match read_some::<E>(&reader, &mut buffer, &mut fds).await {
            Ok(0) => break None,
            Ok(read) => read,
            Err(error) => break Some(error.to_string()),
        };
        let fed = decoder.feed_lines(&buffer[..read], |line| {
            let item = match E::quick(line, dialect) {
                Some(item) => item,
                None => E::receive(crate::ipc::line::parse(line)?, dialect)?,
            };
            items.push(item);
            Ok(())
        });
        for item in items.drain(..) {
            let received = match item {
                Incoming::Pass => continue,
                Incoming::HandleAck { received } => {
                    if peer.awaiting.swap(false, Ordering::SeqCst) {
                        let _ = peer.answers.try_send(received);
                    }
                    continue;
                }
                Incoming::Reply(line) => {
                    // Full only for a peer that does not read its answers: it goes without.
                    let _ = peer.nacks.try_send(Cow::Owned(line));
                    continue;
                }
                Incoming::Handoff { id } => Received::Connection {
                    id,
                    fd: fds.pop_front().map(Handed),
                },
                Incoming::Frame(frame) => Received::Frame(frame),
                Incoming::RefusedHandle(frame) => {
                    let _ = peer.nacks.try_send(Cow::Borrowed(HANDLE_NACK));
                    Received::Frame(frame)
                }
            };
            if let Some(unhandled) = &unhandled {
                // Closed when the channel is dropped: the peer is gone.
                let Ok(permit) = unhandled.acquire().await else {
                    return;
                };
                permit.forget();
            }
            receive(received);
        }
        if let Err(error) = fed {
            break Some(error.to_string());
        }
    };
    receive(Received::Closed(reason));
}

/// One read: plain, or `recvmsg` keeping the fds that come (`E::TAKES_FDS`).
///
/// A read that leaves room in the buffer took all the socket had, so it also clears the
/// socket's readiness (`crate::sys::try_io_clearing`): no read that finds nothing, one per frame
/// when frames come one at a time (a handed connection's answer, a handed connection). Not
/// after a frame that carried fds: the kernel ends a read there, whatever follows.
async fn read_some<E: End>(
    reader: &OwnedReadHalf,
    buffer: &mut [u8],
    fds: &mut VecDeque<OwnedFd>,
) -> io::Result<usize> {
    let stream: &UnixStream = reader.as_ref();
    let capacity = buffer.len();
    when_ready(stream, Interest::READABLE, || {
        let (read, stopped_at_fds) = if E::TAKES_FDS {
            let before = fds.len();
            let read = crate::sys::recv_with_fds(stream.as_raw_fd(), buffer, fds)?;
            (read, fds.len() != before)
        } else {
            let mut iov = [io::IoSliceMut::new(&mut *buffer)];
            let message =
                recvmsg::<()>(stream.as_raw_fd(), &mut iov, None, MsgFlags::MSG_DONTWAIT)?;
            // Fds this end does not take (the kernel closes them) set MSG_CTRUNC.
            (message.bytes, message.flags.contains(MsgFlags::MSG_CTRUNC))
        };
        Ok((read, read > 0 && read < capacity && !stopped_at_fds))
    })
    .await
}

/// Runs the non-blocking `io` on `stream` once it is ready for `interest`, again while it
/// would block or was interrupted. `io` says, with its result, whether the socket has nothing
/// more for now (`crate::sys::try_io_clearing`).
async fn when_ready<T>(
    stream: &UnixStream,
    interest: Interest,
    mut io: impl FnMut() -> io::Result<(T, bool)>,
) -> io::Result<T> {
    loop {
        stream.ready(interest).await?;
        match crate::sys::try_io_clearing(|io| stream.try_io(interest, io), &mut io) {
            Ok(done) => return Ok(done),
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(error) => return Err(error),
        }
    }
}

/// Writes the queued frames in order; after a handle, nothing but `NODE_HANDLE_NACK`s until the
/// peer answers it. Ends when the channel is dropped, a write fails, or the reader ends while
/// an answer is awaited.
pub(super) async fn write(
    mut writer: OwnedWriteHalf,
    mut queue: mpsc::UnboundedReceiver<Queued>,
    mut answers: Answers,
    mut nacks: mpsc::Receiver<Cow<'static, [u8]>>,
) -> io::Result<()> {
    loop {
        let queued = tokio::select! {
            biased;
            Some(nack) = nacks.recv() => {
                writer.write_all(&nack).await?;
                continue;
            }
            queued = queue.recv() => match queued {
                Some(queued) => queued,
                None => return Ok(()),
            },
        };
        let Some(fd) = &queued.fd else {
            // Its share of the inbox goes back once written (`queued` dropped).
            writer.write_all(&queued.line).await?;
            continue;
        };
        if !queued.awaits_ack {
            // herdsman's connection: the fd goes with the first bytes, and nothing waits.
            let sent = send_with_fd(&writer, &queued.line, fd).await?;
            writer.write_all(&queued.line[sent..]).await?;
            continue;
        }
        for _ in 0..=HANDLE_RETRIES {
            answers.awaiting.store(true, Ordering::SeqCst);
            let sent = send_with_fd(&writer, &queued.line, fd).await?;
            writer.write_all(&queued.line[sent..]).await?;
            let received = loop {
                tokio::select! {
                    biased;
                    Some(nack) = nacks.recv() => writer.write_all(&nack).await?,
                    answer = answers.answered.recv() => match answer {
                        Some(received) => break received,
                        // The reader is gone: nobody will answer.
                        None => return Ok(()),
                    },
                    () = answers.stop.cancelled() => return Ok(()),
                }
            };
            if received {
                break;
            }
        }
        // The fd is closed and the inbox's share given back (`queued` dropped).
    }
}

/// Writes the first bytes of `line` with `fd` attached (SCM_RIGHTS); returns how many.
async fn send_with_fd(writer: &OwnedWriteHalf, line: &[u8], fd: &OwnedFd) -> io::Result<usize> {
    let stream: &UnixStream = writer.as_ref();
    let fds = [fd.as_raw_fd()];
    when_ready(stream, Interest::WRITABLE, || {
        let sent = sendmsg::<()>(
            stream.as_raw_fd(),
            &[IoSlice::new(line)],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::MSG_NOSIGNAL,
            None,
        )?;
        Ok((sent, false))
    })
    .await
}
