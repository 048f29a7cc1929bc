//! One end of an IPC channel, the same code at both ends: a writer task fed by a queue, and a
//! reader task that decodes the peer's frames (`frame`) and hands each to a callback, then
//! reports the end of the channel: end of file, or the reason it was cut (a read error, a bad
//! frame). An [`End`] says what each end reads and how it is bounded; [`PrimaryChannel`] and
//! [`WorkerChannel`] are the two, and each sends its own frames only.
//!
//! The primary's end is bounded both ways, so that a worker cannot grow the primary:
//! - to the worker, frames wait in its *inbox*, at most [`INBOX_BYTES`]. A message that does not
//!   fit is dropped, not queued: the first drop is logged, and the count of dropped messages is
//!   logged when the worker reads again (a message fits again). A worker that never reads keeps
//!   its channel, and gets what is sent once it reads. Node queues without a limit instead
//!   (`subprocess.send()` only returns `false`); a bound is what a primary shared by a whole
//!   cluster needs, and dropping whole messages keeps every frame intact.
//! - from the worker, at most [`UNHANDLED_FRAMES`] decoded frames wait for the supervisor
//!   ([`Channel::handled`]); then the reader stops reading, so a worker sending faster than the
//!   primary handles its messages blocks in its own send, as on any pipe.
//!
//! A worker's end is not bounded: what it queues is its own memory, and the messages it
//! receives wait in the stream [`crate::Worker::messages`] returns.
//!
//! # Handles (Node's dialect)
//!
//! The primary hands a Node worker a socket with [`PrimaryChannel::send_handle`] (or
//! [`PrimaryChannel::send_internal_handle`] for a cluster reply): Node's handle frame
//! (`node::HandleLine`), its fd attached as SCM_RIGHTS to the `sendmsg` that writes the line's
//! first bytes (the rest, if the socket takes only part, follows with plain writes: the
//! receiving Node pairs the fd with the `NODE_HANDLE` line that completes after it). As in
//! Node's `_handleQueue`, every later frame to that worker waits until the worker answers
//! `NODE_HANDLE_ACK`, which the reader consumes and hands the writer; `NODE_HANDLE_NACK` (the fd
//! did not come) makes the writer send the frame again, up to [`HANDLE_RETRIES`] times, then go
//! on. The primary's copy of the fd is held until then and closed after (or with the frame if it
//! is dropped: inbox full, channel closed), so no fd outlives its frame. A worker that never
//! answers gets nothing more; what is sent meanwhile fills its inbox, as for a worker that does
//! not read.
//!
//! The writer stays a task on tokio's reactor: `sendmsg` (nix) runs inside
//! [`UnixStream::try_io`] after [`UnixStream::writable`], on the same socket as the other
//! writes, so a handle costs no thread and keeps its place in the queue. The reader keeps plain
//! reads: a handle a worker sends (`process.send(msg, socket)`) is never received, so the
//! kernel closes its fd, and the channel answers `NODE_HANDLE_NACK` ahead of any queued frame
//! (the frame is reported as [`FromWorker::UnsupportedHandle`]).

use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use serde_json::{Map, Value};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::frame::{line, Dialect, EncodeError, FromWorker, ToWorker};
use super::handoff::{self, Kind};
use super::line::FrameError;
use super::node::{ClusterLine, HandleLine};

/// Bytes of messages the primary holds for one worker that has not read them yet.
pub const INBOX_BYTES: usize = 4 * 1024 * 1024;
/// What a queued frame costs in the inbox besides its bytes (its allocation, its queue slot),
/// so that a flood of tiny messages is bounded as well as one of large ones.
const FRAME_OVERHEAD: usize = 64;
/// Frames from one worker decoded but not yet handled by the supervisor.
pub const UNHANDLED_FRAMES: usize = 256;
/// How many times a handle the worker did not get (`NODE_HANDLE_NACK`) is sent again, as Node
/// does for a socket (`MAX_HANDLE_RETRANSMISSIONS`).
pub const HANDLE_RETRIES: u32 = 3;
/// `NODE_HANDLE_NACK`s waiting to be written, at most (a worker waits for each before it sends
/// its next handle, so more would be a worker that does not follow Node's protocol).
const NACKS_WAITING: usize = 16;

/// What the reader does with a value read.
#[derive(Debug, PartialEq)]
pub enum Incoming<F> {
    /// Hand it over.
    Frame(F),
    /// Hand it over, and answer the handle it came with `NODE_HANDLE_NACK`.
    RefusedHandle(F),
    /// The peer's answer to the handle last sent: the writer may go on.
    HandleAck { received: bool },
    /// A handed connection (herdsman's `connection` frame): its fd came with the line.
    Handoff { id: u64 },
    /// Write this line back at once, ahead of queued frames (the answer to a ping).
    Reply(Vec<u8>),
    /// Pass it over.
    Pass,
}

/// Which end of a channel: what it reads, and its bounds.
pub trait End: std::fmt::Debug + Send + 'static {
    /// The frames this end reads.
    type Receives: Send + 'static;
    /// Bytes of frames queued for the peer, at most (`None`: no bound).
    const INBOX_BYTES: Option<usize>;
    /// Frames decoded and not yet [`Channel::handled`], at most (`None`: no bound).
    const UNHANDLED_FRAMES: Option<usize>;
    /// Whether this end takes the fds that come with frames (`recvmsg`); else the kernel
    /// closes them unread.
    const TAKES_FDS: bool = false;
    /// What `value` is for this end; an error cuts the channel.
    fn receive(value: Value, dialect: Dialect) -> Result<Incoming<Self::Receives>, FrameError>;
    /// What a line is, read without JSON, for the lines that come once per connection
    /// (`handoff`); `None` to decode it as JSON.
    fn quick(_line: &[u8], _dialect: Dialect) -> Option<Incoming<Self::Receives>> {
        None
    }
}

/// The primary's end: reads [`FromWorker`], sends [`ToWorker`], bounded both ways.
#[derive(Debug)]
pub enum PrimaryEnd {}

/// A worker's end: reads [`ToWorker`], sends [`FromWorker`].
#[derive(Debug)]
pub enum WorkerEnd {}

impl End for PrimaryEnd {
    type Receives = FromWorker;
    const INBOX_BYTES: Option<usize> = Some(INBOX_BYTES);
    const UNHANDLED_FRAMES: Option<usize> = Some(UNHANDLED_FRAMES);

    fn receive(value: Value, dialect: Dialect) -> Result<Incoming<FromWorker>, FrameError> {
        Ok(match FromWorker::decode(value, dialect)? {
            FromWorker::Ignored => Incoming::Pass,
            FromWorker::HandleAck { received } => Incoming::HandleAck { received },
            frame @ FromWorker::UnsupportedHandle { .. } => Incoming::RefusedHandle(frame),
            frame => Incoming::Frame(frame),
        })
    }

    fn quick(line: &[u8], dialect: Dialect) -> Option<Incoming<FromWorker>> {
        let (kind, id) = handoff::parse(line).filter(|(kind, _)| kind.is_answer())?;
        (dialect == Dialect::Herdsman).then_some(Incoming::Frame(FromWorker::Handoff { kind, id }))
    }
}

impl End for WorkerEnd {
    type Receives = ToWorker<'static>;
    const INBOX_BYTES: Option<usize> = None;
    const UNHANDLED_FRAMES: Option<usize> = None;

    const TAKES_FDS: bool = true;

    /// A frame the worker does not know (a newer primary's) is passed over, not an error.
    fn receive(value: Value, dialect: Dialect) -> Result<Incoming<ToWorker<'static>>, FrameError> {
        if let Some(handed) = handoff::from_value(&value).and_then(worker_handoff) {
            return Ok(handed);
        }
        Ok(ToWorker::decode(value, dialect).map_or(Incoming::Pass, Incoming::Frame))
    }

    fn quick(line: &[u8], _dialect: Dialect) -> Option<Incoming<ToWorker<'static>>> {
        handoff::parse(line).and_then(worker_handoff)
    }
}

/// What the primary's handoff frame `(kind, id)` is for a worker's reader: a connection to
/// pair with its fd, or a ping it answers itself (so a worker whose runtime runs answers).
fn worker_handoff((kind, id): (Kind, u64)) -> Option<Incoming<ToWorker<'static>>> {
    match kind {
        Kind::Connection => Some(Incoming::Handoff { id }),
        Kind::Ping => Some(Incoming::Reply(handoff::line(Kind::Pong, id))),
        _ => None,
    }
}

pub type PrimaryChannel = Channel<PrimaryEnd>;
pub type WorkerChannel = Channel<WorkerEnd>;

/// What the reader hands its callback.
#[derive(Debug, PartialEq)]
pub enum Received<F> {
    Frame(F),
    /// A connection the primary handed over (a worker's end): its fd, or `None` if none came
    /// with the frame (then the worker refuses it).
    Connection {
        id: u64,
        fd: Option<Handed>,
    },
    /// The channel ended, the last report: `None` at end of file, else why it was cut.
    Closed(Option<String>),
}

/// A handed connection's fd, as a worker's reader received it.
#[derive(Debug)]
pub struct Handed(pub OwnedFd);

/// Two handed fds are the same if they are the same descriptor (for tests' `assert_eq!`).
impl PartialEq for Handed {
    fn eq(&self, other: &Handed) -> bool {
        self.0.as_raw_fd() == other.0.as_raw_fd()
    }
}

/// A line queued for the writer, with the fd it carries, holding its share of the inbox until
/// it is written (a Node handle's: until the peer acknowledged it).
struct Queued {
    line: Vec<u8>,
    fd: Option<Arc<OwnedFd>>,
    /// Whether later frames wait for the peer's `NODE_HANDLE_ACK` (Node's handles; herdsman's
    /// connections are answered by the balancer's own frames instead).
    awaits_ack: bool,
    _room: Option<OwnedSemaphorePermit>,
}

/// One end of a channel.
#[derive(Debug)]
pub struct Channel<E: End> {
    frames: mpsc::UnboundedSender<Queued>,
    /// The inbox's free bytes; a queued frame holds its share until it is written.
    inbox: Option<Arc<Semaphore>>,
    /// Frames the reader may still hand over; one comes back per frame handled.
    unhandled: Option<Arc<Semaphore>>,
    dialect: Dialect,
    /// Messages (and their bytes) dropped since the inbox was last found with room.
    dropped: AtomicU64,
    dropped_bytes: AtomicU64,
    /// The `seq` of the next cluster message (Node's primary counts from 0).
    seq: AtomicU64,
    /// Stops a writer that waits for the answer to a handle when the channel is dropped.
    _stop: DropGuard,
    end: PhantomData<fn() -> E>,
}

/// A cluster message queued (or not), and the `seq` it was written with: the worker's answer
/// to it (the `accepted` of a `newconn`) names it as its `ack`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sent {
    pub delivery: Delivery,
    pub seq: u64,
}

/// What became of one message to a worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// In the worker's inbox; `dropped` messages (`bytes`) before it were not, its inbox was full.
    Queued { dropped: u64, bytes: u64 },
    /// Dropped: the inbox is full. `first` for the first of a run of drops.
    Full { first: bool },
    /// Dropped: larger than the whole inbox.
    TooLarge { bytes: usize },
    /// The channel is gone.
    Closed,
}

/// How many workers got a message, and how many had it dropped (inbox full, or too large).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Delivered {
    pub queued: usize,
    pub dropped: usize,
}

impl<E: End> Channel<E> {
    /// Serves `stream`, this end's socket: frames read go to `receive`, from the reader's task,
    /// which is returned and ends after `receive` has had [`Received::Closed`] (or once the
    /// channel is dropped while the reader waits for a frame to be handled).
    pub fn open(
        stream: StdUnixStream,
        dialect: Dialect,
        receive: impl FnMut(Received<E::Receives>) + Send + 'static,
    ) -> io::Result<(Channel<E>, JoinHandle<()>)> {
        stream.set_nonblocking(true)?;
        let (reader, writer) = UnixStream::from_std(stream)?.into_split();
        let (frames, queue) = mpsc::unbounded_channel();
        let unhandled = E::UNHANDLED_FRAMES.map(|frames| Arc::new(Semaphore::new(frames)));
        let (answers, answered) = mpsc::channel(1);
        let awaiting = Arc::new(AtomicBool::new(false));
        let (nacks, nacks_waiting) = mpsc::channel(NACKS_WAITING);
        let peer = Peer {
            awaiting: awaiting.clone(),
            answers,
            nacks,
        };
        let reading = tokio::spawn(read::<E>(reader, dialect, unhandled.clone(), peer, receive));
        let stop = CancellationToken::new();
        let answers = Answers {
            awaiting,
            answered,
            stop: stop.clone(),
        };
        tokio::spawn(write(writer, queue, answers, nacks_waiting));
        let channel = Channel {
            frames,
            inbox: E::INBOX_BYTES.map(|bytes| Arc::new(Semaphore::new(bytes))),
            unhandled,
            dialect,
            dropped: AtomicU64::new(0),
            dropped_bytes: AtomicU64::new(0),
            seq: AtomicU64::new(0),
            _stop: stop.drop_guard(),
            end: PhantomData,
        };
        Ok((channel, reading))
    }

    /// Queues `line` (with the fd it carries) for the peer if the inbox has room; else `fd`
    /// is closed here.
    fn queue(&self, line: Vec<u8>, fd: Option<Arc<OwnedFd>>) -> Delivery {
        let awaits_ack = fd.is_some();
        self.queue_line(line, fd, awaits_ack)
    }

    fn queue_line(&self, line: Vec<u8>, fd: Option<Arc<OwnedFd>>, awaits_ack: bool) -> Delivery {
        if self.frames.is_closed() {
            return Delivery::Closed;
        }
        let mut room = None;
        if let (Some(inbox), Some(limit)) = (&self.inbox, E::INBOX_BYTES) {
            let cost = line.len() + FRAME_OVERHEAD;
            let Some(cost) = u32::try_from(cost).ok().filter(|_| cost <= limit) else {
                return Delivery::TooLarge { bytes: line.len() };
            };
            // Once full, the inbox takes messages again only when half of it is free: room
            // that opens because the kernel's socket buffer took some bytes is not the worker
            // reading, and must not end the run of drops (nor be logged as "reads again").
            let dropping =
                self.dropped.load(Ordering::Relaxed) > 0 && inbox.available_permits() < limit / 2;
            let permit = match dropping {
                true => None,
                false => inbox.clone().try_acquire_many_owned(cost).ok(),
            };
            let Some(permit) = permit else {
                let before = self.dropped.fetch_add(1, Ordering::Relaxed);
                self.dropped_bytes
                    .fetch_add(line.len() as u64, Ordering::Relaxed);
                return Delivery::Full { first: before == 0 };
            };
            room = Some(permit);
        }
        let queued = Queued {
            line,
            fd,
            awaits_ack,
            _room: room,
        };
        if self.frames.send(queued).is_err() {
            return Delivery::Closed;
        }
        Delivery::Queued {
            dropped: self.dropped.swap(0, Ordering::Relaxed),
            bytes: self.dropped_bytes.swap(0, Ordering::Relaxed),
        }
    }

    /// One frame from the peer has been handled: the reader may decode another.
    pub fn handled(&self) {
        if let Some(unhandled) = &self.unhandled {
            unhandled.add_permits(1);
        }
    }
}

impl PrimaryChannel {
    /// Makes the socketpair and serves the primary's end (see [`Channel::open`]); the worker's
    /// end is returned, to be passed to the worker and dropped here once it is spawned.
    pub fn pair(
        dialect: Dialect,
        receive: impl FnMut(Received<FromWorker>) + Send + 'static,
    ) -> io::Result<(PrimaryChannel, StdUnixStream, JoinHandle<()>)> {
        let (ours, theirs) = StdUnixStream::pair()?;
        let (channel, reading) = Channel::open(ours, dialect, receive)?;
        Ok((channel, theirs, reading))
    }

    /// Queues `data` for the worker (from the primary, or routed from slot `from`) if its inbox
    /// has room.
    pub fn send(&self, data: &Value, from: Option<usize>) -> Delivery {
        let frame = ToWorker::Message {
            data: std::borrow::Cow::Borrowed(data),
            from,
        };
        self.queue(frame.encode(self.dialect), None)
    }

    /// Queues one of Node's cluster messages for a Node worker, as Node's primary writes it:
    /// `{"cmd":"NODE_CLUSTER",…message,"seq":N}` (an ack with its `errno`, `{act:'disconnect'}`).
    pub fn send_internal(&self, message: &Map<String, Value>) -> Sent {
        let seq = self.next_seq();
        let delivery = self.queue(line(&ClusterLine { message, seq }), None);
        Sent { delivery, seq }
    }

    /// Queues a cluster message with a socket, as Node's primary sends a `queryServer` reply
    /// or a `newconn`: `{"cmd":"NODE_HANDLE","type":"net.Native","msg":{"cmd":"NODE_CLUSTER",
    /// …message,"seq":N}}` with `fd` (see [`PrimaryChannel::send_handle`]). The fd is shared,
    /// not duplicated: the channel drops its share once the worker acknowledged it, and the
    /// caller may keep another (the round-robin does, until the worker accepted the connection).
    pub fn send_internal_handle(&self, message: &Map<String, Value>, fd: Arc<OwnedFd>) -> Sent {
        let seq = self.next_seq();
        let frame = HandleLine::new("net.Native", ClusterLine { message, seq });
        let delivery = self.queue(line(&frame), Some(fd));
        Sent { delivery, seq }
    }

    /// Queues Node's handle frame `{"cmd":"NODE_HANDLE","type":handle_type,"msg":message}`
    /// with `fd` (as SCM_RIGHTS): the worker's `process.on('message', (message, handle))` gets
    /// `fd` as a `handle_type` (`net.Server`, `net.Socket`; `net.Native` is the raw handle the
    /// cluster module takes). Frames queued after it wait for the worker's
    /// `NODE_HANDLE_ACK`. `fd` is closed here once the worker acknowledged it, or when the frame
    /// is dropped (full inbox, channel gone): keep a duplicate (`try_clone`) to use it after.
    // Used by the tests with `net.Server` handles; the primary sends `net.Native` ones.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn send_handle(&self, message: &Value, handle_type: &str, fd: OwnedFd) -> Delivery {
        self.queue(
            line(&HandleLine::new(handle_type, message)),
            Some(Arc::new(fd)),
        )
    }

    /// Hands `connection` to a worker of herdsman's dialect: `{"id":N,"type":"connection"}`
    /// with the fd (`handoff`). Nothing waits for a handle ack: the worker's `accepted` or
    /// `refused` (naming `seq`) is the balancer's to read. The channel drops its share of the
    /// fd once written; the caller keeps its own until the worker accepted.
    pub fn send_connection(&self, connection: Arc<OwnedFd>) -> Sent {
        let seq = self.next_seq();
        let line = handoff::line(Kind::Connection, seq);
        let delivery = self.queue_line(line, Some(connection), false);
        Sent { delivery, seq }
    }

    /// Asks a worker of herdsman's dialect whether its loop runs: `{"id":N,"type":"ping"}`,
    /// which its channel answers with `pong`.
    pub fn send_ping(&self) -> Sent {
        let seq = self.next_seq();
        let delivery = self.queue_line(handoff::line(Kind::Ping, seq), None, false);
        Sent { delivery, seq }
    }

    /// The channel's dialect.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }
}

impl WorkerChannel {
    /// Queues `frame` for the primary.
    pub fn send(&self, frame: &FromWorker) -> Result<Delivery, EncodeError> {
        Ok(self.queue(frame.encode(self.dialect)?, None))
    }

    /// Tells the primary what became of handed connection `id` (`accepted`, `refused`,
    /// `closed`).
    pub fn answer(&self, kind: Kind, id: u64) -> Delivery {
        self.queue(handoff::line(kind, id), None)
    }
}

impl<E: End> Drop for Channel<E> {
    fn drop(&mut self) {
        // A reader waiting for its frames to be handled ends with the channel.
        if let Some(unhandled) = &self.unhandled {
            unhandled.close();
        }
    }
}

#[path = "channel_io.rs"]
mod tasks;
use tasks::{read, write, Answers, Peer};

#[cfg(test)]
#[path = "channel_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "handoff_tests.rs"]
mod handoff_tests;
