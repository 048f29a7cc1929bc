//! The primary's end of each worker's IPC channel: a reader that turns lines into events (and
//! disconnects the channel, with the reason logged, on a bad frame), a writer fed by a queue,
//! and what the supervisor does with frames: readiness, messages to the log, routing to other
//! workers, and `herdsman send`.
//!
//! Both directions are bounded, so that a worker cannot grow the primary:
//! - to the worker, frames wait in its *inbox*, at most [`INBOX_BYTES`]. A message that does not
//!   fit is dropped, not queued: the first drop is logged, and the count of dropped messages is
//!   logged when the worker reads again (a message fits again). A worker that never reads keeps
//!   its channel, and gets what is sent once it reads. Node queues without a limit instead
//!   (`subprocess.send()` only returns `false`); a bound is what a primary shared by a whole
//!   cluster needs, and dropping whole messages keeps every frame intact.
//! - from the worker, at most [`UNHANDLED_FRAMES`] decoded frames wait for the supervisor; then
//!   the reader stops reading, so a worker sending faster than the primary handles its messages
//!   blocks in its own send, as on any pipe.

use std::io;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use super::process::Worker;
use super::supervisor::Supervisor;
use super::Event;
use crate::ipc::frame::{self, Decoder, FromWorker, Target};
use crate::ipc::IpcMode;

/// Bytes of messages the primary holds for one worker that has not read them yet.
pub const INBOX_BYTES: usize = 4 * 1024 * 1024;
/// What a queued frame costs in the inbox besides its bytes (its allocation, its queue slot),
/// so that a flood of tiny messages is bounded as well as one of large ones.
const FRAME_OVERHEAD: usize = 64;
/// Frames from one worker decoded but not yet handled by the supervisor.
pub const UNHANDLED_FRAMES: usize = 256;

/// The primary's end of one worker's channel.
#[derive(Debug)]
pub struct Channel {
    frames: mpsc::UnboundedSender<(Vec<u8>, OwnedSemaphorePermit)>,
    /// The inbox's free bytes; a queued frame holds its share until it is written.
    inbox: Arc<Semaphore>,
    /// Frames the reader may still hand the supervisor; one comes back per frame handled.
    unhandled: Arc<Semaphore>,
    node: bool,
    /// Messages (and their bytes) dropped since the inbox was last found with room.
    dropped: AtomicU64,
    dropped_bytes: AtomicU64,
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

impl Channel {
    /// Makes the socketpair: the primary's end starts serving; the worker's end is returned,
    /// to be passed to the worker and dropped here once it is spawned, with the reader's task,
    /// which ends once the worker's last frame is reported (its exit waits for that, so that a
    /// message sent just before the end comes before `exit`, as in Node).
    pub fn open(
        uid: u64,
        mode: IpcMode,
        events: mpsc::UnboundedSender<Event>,
    ) -> io::Result<(Channel, StdUnixStream, JoinHandle<()>)> {
        let (ours, theirs) = StdUnixStream::pair()?;
        ours.set_nonblocking(true)?;
        let (reader, writer) = UnixStream::from_std(ours)?.into_split();
        let node = mode == IpcMode::Node;
        let (frames, queue) = mpsc::unbounded_channel();
        let unhandled = Arc::new(Semaphore::new(UNHANDLED_FRAMES));
        let reading = tokio::spawn(read(reader, uid, node, events, unhandled.clone()));
        tokio::spawn(write(writer, queue));
        let channel = Channel {
            frames,
            inbox: Arc::new(Semaphore::new(INBOX_BYTES)),
            unhandled,
            node,
            dropped: AtomicU64::new(0),
            dropped_bytes: AtomicU64::new(0),
        };
        Ok((channel, theirs, reading))
    }

    /// Queues `data` for the worker if its inbox has room.
    pub fn send(&self, data: &Value, from: Option<usize>) -> Delivery {
        if self.frames.is_closed() {
            return Delivery::Closed;
        }
        let line = frame::to_worker(data, from, self.node);
        let cost = line.len() + FRAME_OVERHEAD;
        if cost > INBOX_BYTES {
            return Delivery::TooLarge { bytes: line.len() };
        }
        // `cost` fits in u32: it is at most INBOX_BYTES.
        let Ok(permit) = self.inbox.clone().try_acquire_many_owned(cost as u32) else {
            let before = self.dropped.fetch_add(1, Ordering::Relaxed);
            self.dropped_bytes
                .fetch_add(line.len() as u64, Ordering::Relaxed);
            return Delivery::Full { first: before == 0 };
        };
        if self.frames.send((line, permit)).is_err() {
            return Delivery::Closed;
        }
        Delivery::Queued {
            dropped: self.dropped.swap(0, Ordering::Relaxed),
            bytes: self.dropped_bytes.swap(0, Ordering::Relaxed),
        }
    }

    /// The supervisor has handled one frame from the worker: the reader may decode another.
    fn handled(&self) {
        self.unhandled.add_permits(1);
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        // A reader waiting for the supervisor to catch up ends with the channel.
        self.unhandled.close();
    }
}

async fn read(
    mut reader: tokio::net::unix::OwnedReadHalf,
    uid: u64,
    node: bool,
    events: mpsc::UnboundedSender<Event>,
    unhandled: Arc<Semaphore>,
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
            match frame::from_worker(value, node) {
                Ok(FromWorker::Ignored) => {}
                Ok(frame) => {
                    // Closed when the channel is dropped: the worker is gone.
                    let Ok(permit) = unhandled.acquire().await else {
                        return;
                    };
                    permit.forget();
                    let _ = events.send(Event::Ipc { uid, frame });
                }
                Err(error) => {
                    let _ = events.send(Event::IpcClosed {
                        uid,
                        reason: Some(error.to_string()),
                    });
                    return;
                }
            }
        }
        if let Err(error) = fed {
            break Some(error.to_string());
        }
    };
    let _ = events.send(Event::IpcClosed { uid, reason });
}

async fn write(
    mut writer: tokio::net::unix::OwnedWriteHalf,
    mut queue: mpsc::UnboundedReceiver<(Vec<u8>, OwnedSemaphorePermit)>,
) {
    // Each frame gives its share of the inbox back once written (`_room` dropped).
    while let Some((line, _room)) = queue.recv().await {
        if writer.write_all(&line).await.is_err() {
            break;
        }
    }
}

impl Supervisor {
    pub(super) async fn on_ipc(&mut self, uid: u64, frame: FromWorker) {
        let Some(worker) = self.worker_mut(uid) else {
            return;
        };
        if let Some(channel) = &worker.ipc {
            channel.handled();
        }
        let (slot, pid) = (worker.slot, worker.pid);
        match frame {
            FromWorker::Ready => self.on_ready_signal(uid).await,
            FromWorker::Message { data, to } => {
                // Messages are the log's under `herdsman run`; a program built on the library
                // gets them as events instead, and may send many (heartbeats, counters).
                let shown = self.observer.is_none().then(|| frame::shorten(&data));
                match to {
                    Target::Primary => {
                        if let Some(shown) = shown {
                            self.logger
                                .info(format!("worker {slot} (pid {pid}) message: {shown}"));
                        }
                        self.observe(crate::domain::ClusterEvent::Message { slot, pid, data });
                    }
                    target => {
                        let delivered = self.send_message(&target, &data, Some(slot), Some(uid));
                        if let Some(shown) = shown {
                            let dropped = match delivered.dropped {
                                0 => String::new(),
                                count => format!(", dropped for {count}"),
                            };
                            self.logger.info(format!(
                                "worker {slot} (pid {pid}) message to {}: {shown} (delivered to {}{dropped})",
                                describe(&target),
                                delivered.queued,
                            ));
                        }
                    }
                }
            }
            FromWorker::Ignored => {}
        }
    }

    pub(super) fn on_ipc_closed(&mut self, uid: u64, reason: Option<String>) {
        let Some(worker) = self.worker_mut(uid) else {
            return;
        };
        worker.ipc = None;
        if let Some(reason) = reason {
            let (slot, pid) = (worker.slot, worker.pid);
            self.logger.warn(format!(
                "worker {slot} (pid {pid}): IPC channel disconnected: {reason}"
            ));
        }
    }

    /// Sends `data` to the workers `target` names (for a slot: its serving worker, else its
    /// newest), never back to `except`. Returns how many got it, and how many had it dropped.
    pub(super) fn send_message(
        &self,
        target: &Target,
        data: &Value,
        from: Option<usize>,
        except: Option<u64>,
    ) -> Delivered {
        let chosen: Vec<&Worker> = match target {
            Target::Primary => Vec::new(),
            Target::All => self
                .workers
                .iter()
                .filter(|worker| Some(worker.uid) != except)
                .collect(),
            Target::Slot(slot) => {
                let mut in_slot = self.workers.iter().filter(|worker| worker.slot == *slot);
                let serving = in_slot.clone().find(|worker| worker.is_serving());
                serving
                    .or_else(|| in_slot.next_back())
                    .into_iter()
                    .collect()
            }
        };
        let mut delivered = Delivered::default();
        for worker in chosen {
            match self.deliver(worker, data, from) {
                Delivery::Queued { .. } => delivered.queued += 1,
                Delivery::Full { .. } | Delivery::TooLarge { .. } => delivered.dropped += 1,
                Delivery::Closed => {}
            }
        }
        delivered
    }

    /// Sends `data` to `worker`, logging a message dropped for a full inbox (the first of a
    /// run, and how many once the worker reads again) or one too large for any inbox.
    pub(super) fn deliver(&self, worker: &Worker, data: &Value, from: Option<usize>) -> Delivery {
        let Some(channel) = &worker.ipc else {
            return Delivery::Closed;
        };
        let delivery = channel.send(data, from);
        let (slot, pid) = (worker.slot, worker.pid);
        match delivery {
            Delivery::Full { first: true } => self.logger.warn(format!(
                "worker {slot} (pid {pid}) does not read its IPC channel: its inbox is full \
                 ({} unread); dropping messages to it until it reads",
                bytes(INBOX_BYTES as u64)
            )),
            Delivery::Queued {
                dropped,
                bytes: size,
            } if dropped > 0 => {
                let messages = if dropped == 1 { "message" } else { "messages" };
                self.logger.warn(format!(
                    "worker {slot} (pid {pid}) reads its IPC channel again; {dropped} {messages} \
                     ({}) to it were dropped while its inbox was full",
                    bytes(size)
                ));
            }
            Delivery::TooLarge { bytes: size } => self.logger.warn(format!(
                "message to worker {slot} (pid {pid}) dropped: it is {}, larger than a worker's \
                 whole IPC inbox ({}); send it in smaller pieces",
                bytes(size as u64),
                bytes(INBOX_BYTES as u64)
            )),
            Delivery::Full { first: false } | Delivery::Queued { .. } | Delivery::Closed => {}
        }
        delivery
    }
}

/// `512 B`, `3.2 KiB`, `4.0 MiB`, `1.5 GiB`.
fn bytes(count: u64) -> String {
    const UNITS: [&str; 3] = ["KiB", "MiB", "GiB"];
    if count < 1024 {
        return format!("{count} B");
    }
    let mut value = count as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

fn describe(target: &Target) -> String {
    match target {
        Target::Primary => "the primary".into(),
        Target::Slot(slot) => format!("worker {slot}"),
        Target::All => "all workers".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(4 * 1024 * 1024), "4.0 MiB");
        assert_eq!(bytes(3 * 1024 * 1024 * 1024 / 2), "1.5 GiB");
    }

    #[tokio::test]
    async fn a_full_inbox_drops_whole_messages_and_counts_them() {
        let (events, _events) = mpsc::unbounded_channel();
        let (channel, worker_end, _reader) = Channel::open(1, IpcMode::On, events).unwrap();
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
        let mut reader = tokio::net::UnixStream::from_std({
            worker_end.set_nonblocking(true).unwrap();
            worker_end
        })
        .unwrap();
        let mut sink = vec![0u8; 1 << 20];
        for _ in 0..10_000 {
            if channel.inbox.available_permits() == INBOX_BYTES {
                break;
            }
            let _ =
                tokio::time::timeout(std::time::Duration::from_millis(20), reader.read(&mut sink))
                    .await;
        }
        let delivery = channel.send(&Value::from(1), None);
        let line = frame::to_worker(&message, None, false).len() as u64;
        assert_eq!(
            delivery,
            Delivery::Queued {
                dropped: 2,
                bytes: 2 * line
            }
        );
    }
}
