//! The primary's end of each worker's IPC channel (the channel itself is `crate::ipc`'s, with
//! its bounds): frames in as events, and what the executor does with them:
//! readiness, messages to the log, routing to other workers, and `herdsman send`.

use std::io;
use std::os::unix::net::UnixStream as StdUnixStream;

use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::executor::Executor;
use super::lifecycle::{Input, WorkerId, WorkerRecord};
use super::Event;
use crate::ipc::channel::{Delivered, Delivery, PrimaryChannel, Received, INBOX_BYTES};
use crate::ipc::frame::{self, describe, Dialect, FromWorker, Target};

/// Opens `worker`'s channel: its frames, then its end, arrive as events. Returned with it:
/// the worker's end, to be passed to the worker and dropped here once it is spawned, and the
/// reader's task, which ends once the worker's last frame is reported (its exit waits for that,
/// so that a message sent just before the end comes before `exit`, as in Node).
pub(super) fn open_channel(
    worker: WorkerId,
    dialect: Dialect,
    events: mpsc::UnboundedSender<Event>,
) -> io::Result<(PrimaryChannel, StdUnixStream, JoinHandle<()>)> {
    PrimaryChannel::pair(dialect, move |received| {
        let _ = events.send(match received {
            Received::Frame(frame) => Event::Ipc { worker, frame },
            Received::Closed(reason) => Event::IpcClosed { worker, reason },
            // Only a worker's end takes connections; the primary's reads no fds.
            Received::Connection { .. } => return,
        });
    })
}

impl Executor {
    pub(super) async fn on_ipc(&mut self, worker: WorkerId, frame: FromWorker) {
        let Some(process) = self.processes.get(&worker) else {
            return;
        };
        if let Some(channel) = &process.ipc {
            channel.handled();
        }
        let Some(record) = self.machine.worker(worker) else {
            return;
        };
        let (slot, pid) = (record.slot, record.pid);
        match frame {
            FromWorker::Ready => self.feed(Input::ReadySignal { worker }).await,
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
                        let delivered = self.send_message(&target, &data, Some(slot), Some(worker));
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
            FromWorker::Cluster(message) => self.on_node_cluster(worker, message).await,
            FromWorker::UnsupportedHandle { handle_type, .. } => {
                let handle_type = handle_type.as_deref().unwrap_or("unknown");
                self.logger.warn(format!(
                    "worker {slot} (pid {pid}) sent a handle ({handle_type}) to the primary, \
                     which takes none; refused (NODE_HANDLE_NACK)"
                ));
            }
            // The channel itself consumes the acks of the handles it sent.
            FromWorker::HandleAck { .. } | FromWorker::Ignored => {}
            FromWorker::Handoff { kind, id } => self.on_handoff_answer(worker, kind, id),
        }
    }

    pub(super) fn on_ipc_closed(&mut self, worker: WorkerId, reason: Option<String>) {
        let Some(process) = self.processes.get_mut(&worker) else {
            return;
        };
        process.ipc = None;
        let Some(reason) = reason else {
            return;
        };
        if let Some(record) = self.machine.worker(worker) {
            let (slot, pid) = (record.slot, record.pid);
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
        except: Option<WorkerId>,
    ) -> Delivered {
        let workers = self.machine.workers();
        let chosen: Vec<&WorkerRecord> = match target {
            Target::Primary => Vec::new(),
            Target::All => workers
                .iter()
                .filter(|worker| Some(worker.id) != except)
                .collect(),
            Target::Slot(slot) => {
                let mut in_slot = workers.iter().filter(|worker| worker.slot == *slot);
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

    /// The library's `WorkerHandle::send`: to the worker with `pid` in `slot`, or the slot's
    /// serving worker.
    pub(super) fn send_to_worker(&self, slot: usize, pid: Option<u32>, data: &Value) {
        let Some(worker) = self.machine.acting_on(slot, pid) else {
            let which = pid.map_or(String::new(), |pid| format!(" (pid {pid})"));
            self.logger.warn(format!(
                "worker {slot}{which} is not running; nothing to send"
            ));
            return;
        };
        if self.deliver(worker, data, None) == Delivery::Closed {
            let pid = worker.pid;
            self.logger
                .warn(format!("worker {slot} (pid {pid}) has no IPC channel"));
        }
    }

    /// Sends `data` to `worker`, logging a message dropped for a full inbox (the first of a
    /// run, and how many once the worker reads again) or one too large for any inbox.
    fn deliver(&self, worker: &WorkerRecord, data: &Value, from: Option<usize>) -> Delivery {
        let Some(channel) = self
            .processes
            .get(&worker.id)
            .and_then(|process| process.ipc.as_ref())
        else {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(4 * 1024 * 1024), "4.0 MiB");
        assert_eq!(bytes(3 * 1024 * 1024 * 1024 / 2), "1.5 GiB");
    }
}
