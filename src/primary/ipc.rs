//! The primary's end of each worker's IPC channel: a reader that turns lines into events (and
//! disconnects the channel, with the reason logged, on a bad frame), a writer fed by a queue,
//! and what the supervisor does with frames: readiness, messages to the log, routing to other
//! workers, and `herdsman send`.

use std::io;
use std::os::unix::net::UnixStream as StdUnixStream;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use super::supervisor::Supervisor;
use super::Event;
use crate::ipc::frame::{self, Decoder, FromWorker, Target};
use crate::ipc::IpcMode;

/// The primary's end of one worker's channel.
#[derive(Debug)]
pub struct Channel {
    lines: mpsc::UnboundedSender<Vec<u8>>,
    node: bool,
}

impl Channel {
    /// Makes the socketpair: the primary's end starts serving; the worker's end is returned,
    /// to be passed to the worker and dropped here once it is spawned.
    pub fn open(
        uid: u64,
        mode: IpcMode,
        events: mpsc::UnboundedSender<Event>,
    ) -> io::Result<(Channel, StdUnixStream)> {
        let (ours, theirs) = StdUnixStream::pair()?;
        ours.set_nonblocking(true)?;
        let (reader, writer) = UnixStream::from_std(ours)?.into_split();
        let node = mode == IpcMode::Node;
        let (lines, queue) = mpsc::unbounded_channel();
        tokio::spawn(read(reader, uid, node, events));
        tokio::spawn(write(writer, queue));
        Ok((Channel { lines, node }, theirs))
    }

    /// Queues `data` for the worker; false if the channel is gone.
    pub fn send(&self, data: &Value, from: Option<usize>) -> bool {
        self.lines
            .send(frame::to_worker(data, from, self.node))
            .is_ok()
    }
}

async fn read(
    mut reader: tokio::net::unix::OwnedReadHalf,
    uid: u64,
    node: bool,
    events: mpsc::UnboundedSender<Event>,
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
    mut queue: mpsc::UnboundedReceiver<Vec<u8>>,
) {
    while let Some(line) = queue.recv().await {
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
                        self.observe(crate::cluster::ClusterEvent::Message { slot, pid, data });
                    }
                    target => {
                        let delivered = self.send_message(&target, &data, Some(slot), Some(uid));
                        if let Some(shown) = shown {
                            self.logger.info(format!(
                                "worker {slot} (pid {pid}) message to {}: {shown} (delivered to {delivered})",
                                describe(&target)
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
    /// newest), never back to `except`. Returns how many got it.
    pub(super) fn send_message(
        &self,
        target: &Target,
        data: &Value,
        from: Option<usize>,
        except: Option<u64>,
    ) -> usize {
        let chosen: Vec<&super::process::Worker> = match target {
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
        chosen
            .into_iter()
            .filter(|worker| {
                worker
                    .ipc
                    .as_ref()
                    .is_some_and(|channel| channel.send(data, from))
            })
            .count()
    }
}

fn describe(target: &Target) -> String {
    match target {
        Target::Primary => "the primary".into(),
        Target::Slot(slot) => format!("worker {slot}"),
        Target::All => "all workers".into(),
    }
}
