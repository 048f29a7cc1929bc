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

use std::io;
use std::marker::PhantomData;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use super::frame::{Dialect, EncodeError, FromWorker, ToWorker};
use super::line::{Decoder, FrameError};

/// Bytes of messages the primary holds for one worker that has not read them yet.
pub const INBOX_BYTES: usize = 4 * 1024 * 1024;
/// What a queued frame costs in the inbox besides its bytes (its allocation, its queue slot),
/// so that a flood of tiny messages is bounded as well as one of large ones.
const FRAME_OVERHEAD: usize = 64;
/// Frames from one worker decoded but not yet handled by the supervisor.
pub const UNHANDLED_FRAMES: usize = 256;

/// Which end of a channel: what it reads, and its bounds.
pub trait End: std::fmt::Debug + Send + 'static {
    /// The frames this end reads.
    type Receives: Send + 'static;
    /// Bytes of frames queued for the peer, at most (`None`: no bound).
    const INBOX_BYTES: Option<usize>;
    /// Frames decoded and not yet [`Channel::handled`], at most (`None`: no bound).
    const UNHANDLED_FRAMES: Option<usize>;
    /// The frame in `value`; `Ok(None)` for a line this end passes over; an error cuts the
    /// channel.
    fn receive(value: Value, dialect: Dialect) -> Result<Option<Self::Receives>, FrameError>;
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

    fn receive(value: Value, dialect: Dialect) -> Result<Option<FromWorker>, FrameError> {
        match FromWorker::decode(value, dialect)? {
            FromWorker::Ignored => Ok(None),
            frame => Ok(Some(frame)),
        }
    }
}

impl End for WorkerEnd {
    type Receives = ToWorker<'static>;
    const INBOX_BYTES: Option<usize> = None;
    const UNHANDLED_FRAMES: Option<usize> = None;

    /// A frame the worker does not know (a newer primary's) is passed over, not an error.
    fn receive(value: Value, dialect: Dialect) -> Result<Option<ToWorker<'static>>, FrameError> {
        Ok(ToWorker::decode(value, dialect).ok())
    }
}

pub type PrimaryChannel = Channel<PrimaryEnd>;
pub type WorkerChannel = Channel<WorkerEnd>;

/// What the reader hands its callback.
#[derive(Debug, PartialEq)]
pub enum Received<F> {
    Frame(F),
    /// The channel ended, the last report: `None` at end of file, else why it was cut.
    Closed(Option<String>),
}

/// A line queued for the writer, holding its share of the inbox until it is written.
type Queued = (Vec<u8>, Option<OwnedSemaphorePermit>);

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
    end: PhantomData<fn() -> E>,
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
        let reading = tokio::spawn(read::<E>(reader, dialect, unhandled.clone(), receive));
        tokio::spawn(write(writer, queue));
        let channel = Channel {
            frames,
            inbox: E::INBOX_BYTES.map(|bytes| Arc::new(Semaphore::new(bytes))),
            unhandled,
            dialect,
            dropped: AtomicU64::new(0),
            dropped_bytes: AtomicU64::new(0),
            end: PhantomData,
        };
        Ok((channel, reading))
    }

    /// Queues `line` for the peer if the inbox has room.
    fn queue(&self, line: Vec<u8>) -> Delivery {
        if self.frames.is_closed() {
            return Delivery::Closed;
        }
        let mut room = None;
        if let (Some(inbox), Some(limit)) = (&self.inbox, E::INBOX_BYTES) {
            let cost = line.len() + FRAME_OVERHEAD;
            let Some(cost) = u32::try_from(cost).ok().filter(|_| cost <= limit) else {
                return Delivery::TooLarge { bytes: line.len() };
            };
            let Ok(permit) = inbox.clone().try_acquire_many_owned(cost) else {
                let before = self.dropped.fetch_add(1, Ordering::Relaxed);
                self.dropped_bytes
                    .fetch_add(line.len() as u64, Ordering::Relaxed);
                return Delivery::Full { first: before == 0 };
            };
            room = Some(permit);
        }
        if self.frames.send((line, room)).is_err() {
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
        self.queue(frame.encode(self.dialect))
    }
}

impl WorkerChannel {
    /// Queues `frame` for the primary.
    pub fn send(&self, frame: &FromWorker) -> Result<Delivery, EncodeError> {
        Ok(self.queue(frame.encode(self.dialect)?))
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

// With fd handoff (see the module doc of `ipc`), `read` becomes `recvmsg` and pairs each
// SCM_RIGHTS fd with the frame it came with, and `write` a `sendmsg` with the frame's fd.
async fn read<E: End>(
    mut reader: OwnedReadHalf,
    dialect: Dialect,
    unhandled: Option<Arc<Semaphore>>,
    mut receive: impl FnMut(Received<E::Receives>),
) {
    let mut decoder = Decoder::default();
    let mut buffer = vec![0u8; 64 * 1024];
    let mut values = Vec::new();
    let reason = loop {
        let read = match reader.read(&mut buffer).await {
            Ok(0) => break None,
            Ok(read) => read,
            Err(error) => break Some(error.to_string()),
        };
        let fed = decoder.feed(&buffer[..read], &mut values);
        for value in values.drain(..) {
            match E::receive(value, dialect) {
                Ok(None) => {}
                Ok(Some(frame)) => {
                    if let Some(unhandled) = &unhandled {
                        // Closed when the channel is dropped: the peer is gone.
                        let Ok(permit) = unhandled.acquire().await else {
                            return;
                        };
                        permit.forget();
                    }
                    receive(Received::Frame(frame));
                }
                Err(error) => {
                    receive(Received::Closed(Some(error.to_string())));
                    return;
                }
            }
        }
        if let Err(error) = fed {
            break Some(error.to_string());
        }
    };
    receive(Received::Closed(reason));
}

async fn write(mut writer: OwnedWriteHalf, mut queue: mpsc::UnboundedReceiver<Queued>) {
    // Each frame gives its share of the inbox back once written (`_room` dropped).
    while let Some((line, _room)) = queue.recv().await {
        if writer.write_all(&line).await.is_err() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::ipc::frame::Target;

    /// What a channel's reader reported, as a stream.
    fn collect<F: Send + 'static>() -> (
        impl FnMut(Received<F>) + Send + 'static,
        mpsc::UnboundedReceiver<Received<F>>,
    ) {
        let (sender, receiver) = mpsc::unbounded_channel();
        (
            move |received| {
                let _ = sender.send(received);
            },
            receiver,
        )
    }

    async fn next<F>(received: &mut mpsc::UnboundedReceiver<Received<F>>) -> Received<F> {
        tokio::time::timeout(Duration::from_secs(10), received.recv())
            .await
            .expect("a report within 10 s")
            .expect("the reader reports until the channel closes")
    }

    #[tokio::test]
    async fn both_ends_speak_through_one_channel_in_both_dialects() {
        for dialect in [Dialect::Herdsman, Dialect::Node] {
            let (at_primary, mut primary_got) = collect();
            let (primary, theirs, _reading) = PrimaryChannel::pair(dialect, at_primary).unwrap();
            let (at_worker, mut worker_got) = collect();
            let (worker, worker_reading) = WorkerChannel::open(theirs, dialect, at_worker).unwrap();

            let hello = FromWorker::Message {
                data: serde_json::json!({"jobs": 3}),
                to: Target::Primary,
            };
            assert!(matches!(
                worker.send(&FromWorker::Ready),
                Ok(Delivery::Queued { .. })
            ));
            assert!(matches!(worker.send(&hello), Ok(Delivery::Queued { .. })));
            assert_eq!(
                next(&mut primary_got).await,
                Received::Frame(FromWorker::Ready)
            );
            assert_eq!(next(&mut primary_got).await, Received::Frame(hello));
            primary.handled();
            primary.handled();

            let data = Value::from("flush");
            let from = (dialect == Dialect::Herdsman).then_some(2);
            assert!(matches!(primary.send(&data, from), Delivery::Queued { .. }));
            assert_eq!(
                next(&mut worker_got).await,
                Received::Frame(ToWorker::Message {
                    data: std::borrow::Cow::Owned(data),
                    from
                })
            );

            // The worker goes: the primary's reader reports end of file, and its sends fail.
            drop(worker);
            worker_reading.abort();
            assert_eq!(next(&mut primary_got).await, Received::Closed(None));
        }
    }

    #[tokio::test]
    async fn a_bad_frame_cuts_the_channel_with_its_reason() {
        let (at_primary, mut primary_got) = collect();
        let (_primary, theirs, _reading) =
            PrimaryChannel::pair(Dialect::Herdsman, at_primary).unwrap();
        let mut theirs = UnixStream::from_std({
            theirs.set_nonblocking(true).unwrap();
            theirs
        })
        .unwrap();
        theirs
            .write_all(b"{\"type\":\"ready\"}\n{\"type\":\"shout\"}\n{\"type\":\"ready\"}\n")
            .await
            .unwrap();
        assert_eq!(
            next(&mut primary_got).await,
            Received::Frame(FromWorker::Ready)
        );
        assert_eq!(
            next(&mut primary_got).await,
            Received::Closed(Some(
                r#"frame {"type":"shout"} is not a herdsman frame: `type` must be "ready" or "message""#
                    .into()
            ))
        );
        // Nothing after the bad frame, and the reader has ended.
        assert!(primary_got.recv().await.is_none());
    }

    /// A worker passes over frames it does not know (a newer primary's, such as a connection
    /// handed over) and Node's own messages, and reads on; the primary passes over Node's.
    #[tokio::test]
    async fn each_end_passes_over_what_is_not_for_it_and_reads_on() {
        let (ours, theirs) = StdUnixStream::pair().unwrap();
        let (at_worker, mut worker_got) = collect();
        let (_worker, _reading) =
            WorkerChannel::open(theirs, Dialect::Herdsman, at_worker).unwrap();
        let mut ours = UnixStream::from_std({
            ours.set_nonblocking(true).unwrap();
            ours
        })
        .unwrap();
        ours.write_all(
            b"{\"type\":\"connection\",\"fd\":0}\n{\"data\":1,\"from\":3,\"type\":\"message\"}\n",
        )
        .await
        .unwrap();
        assert_eq!(
            next(&mut worker_got).await,
            Received::Frame(ToWorker::Message {
                data: std::borrow::Cow::Owned(Value::from(1)),
                from: Some(3)
            })
        );

        let (at_primary, mut primary_got) = collect();
        let (_primary, theirs, _reading) = PrimaryChannel::pair(Dialect::Node, at_primary).unwrap();
        let mut theirs = UnixStream::from_std({
            theirs.set_nonblocking(true).unwrap();
            theirs
        })
        .unwrap();
        theirs
            .write_all(b"{\"cmd\":\"NODE_HANDLE_ACK\"}\n\"ready\"\n")
            .await
            .unwrap();
        assert_eq!(
            next(&mut primary_got).await,
            Received::Frame(FromWorker::Ready)
        );
    }

    #[tokio::test]
    async fn the_primary_reads_no_further_than_the_frames_it_has_not_handled() {
        let (at_primary, mut primary_got) = collect();
        let (primary, theirs, _reading) =
            PrimaryChannel::pair(Dialect::Herdsman, at_primary).unwrap();
        let mut theirs = UnixStream::from_std({
            theirs.set_nonblocking(true).unwrap();
            theirs
        })
        .unwrap();
        let frames = b"{\"type\":\"ready\"}\n".repeat(UNHANDLED_FRAMES + 1);
        theirs.write_all(&frames).await.unwrap();
        for _ in 0..UNHANDLED_FRAMES {
            assert_eq!(
                next(&mut primary_got).await,
                Received::Frame(FromWorker::Ready)
            );
        }
        // The last waits until one is handled.
        let waiting = tokio::time::timeout(Duration::from_millis(200), primary_got.recv()).await;
        assert!(waiting.is_err(), "read past the bound: {waiting:?}");
        primary.handled();
        assert_eq!(
            next(&mut primary_got).await,
            Received::Frame(FromWorker::Ready)
        );
    }

    #[tokio::test]
    async fn a_full_inbox_drops_whole_messages_and_counts_them() {
        let (channel, worker_end, _reader) =
            PrimaryChannel::pair(Dialect::Herdsman, |_| {}).unwrap();
        let message = Value::String("x".repeat(64 * 1024));
        // Nobody reads the worker's end: the kernel's buffer fills, then the inbox.
        let mut queued = 0;
        let first_drop = loop {
            match channel.send(&message, None) {
                Delivery::Queued { dropped: 0, .. } => queued += 1,
                other => break other,
            }
            tokio::task::yield_now().await;
            assert!(queued < 1000, "never full");
        };
        assert_eq!(first_drop, Delivery::Full { first: true });
        assert!(
            queued >= INBOX_BYTES / (64 * 1024 + FRAME_OVERHEAD + 64),
            "{queued}"
        );
        assert_eq!(
            channel.send(&message, None),
            Delivery::Full { first: false }
        );
        let huge = Value::String("x".repeat(INBOX_BYTES));
        assert!(matches!(
            channel.send(&huge, None),
            Delivery::TooLarge { .. }
        ));
        // The worker reads everything queued: the next message fits, and reports the drops.
        let mut reader = UnixStream::from_std({
            worker_end.set_nonblocking(true).unwrap();
            worker_end
        })
        .unwrap();
        let inbox = channel.inbox.clone().unwrap();
        let mut sink = vec![0u8; 1 << 20];
        for _ in 0..10_000 {
            if inbox.available_permits() == INBOX_BYTES {
                break;
            }
            let _ = tokio::time::timeout(Duration::from_millis(20), reader.read(&mut sink)).await;
        }
        let delivery = channel.send(&Value::from(1), None);
        let line = ToWorker::Message {
            data: std::borrow::Cow::Borrowed(&message),
            from: None,
        }
        .encode(Dialect::Herdsman)
        .len() as u64;
        assert_eq!(
            delivery,
            Delivery::Queued {
                dropped: 2,
                bytes: 2 * line
            }
        );
    }
}
