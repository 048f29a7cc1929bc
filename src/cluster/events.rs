//! The stream of a cluster's events for [`super::Cluster::primary`], bounded for messages.
//!
//! Lifecycle events (`fork` … `exit`) always wait in the stream until read: a few per worker
//! started, at a rate the restart backoff and the program itself limit, and a program may rely
//! on seeing each. `message` events come from workers, as fast as they send: beyond
//! [`UNREAD_MESSAGES`] unread messages, or [`UNREAD_MESSAGE_BYTES`] of them, new ones are dropped
//! and counted ([`ClusterEvents::dropped_messages`]) instead of growing the primary.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::sync::mpsc;

use super::ClusterEvent;

/// Unread `message` events the stream holds at most…
pub const UNREAD_MESSAGES: usize = 1024;
/// …and the bytes of their data, estimated.
pub const UNREAD_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, Default)]
struct Shared {
    /// Unread messages and their estimated bytes.
    unread: Mutex<(usize, usize)>,
    dropped: AtomicU64,
}

impl Shared {
    fn unread(&self) -> std::sync::MutexGuard<'_, (usize, usize)> {
        self.unread
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The events of a cluster as a stream, for [`super::Cluster::primary`]: `recv` gives them in
/// order and `None` once the cluster has stopped.
#[derive(Debug)]
pub struct ClusterEvents {
    receiver: mpsc::UnboundedReceiver<(ClusterEvent, usize)>,
    shared: Arc<Shared>,
}

/// The primary's end of the stream.
#[derive(Debug)]
pub(super) struct EventSender {
    sender: mpsc::UnboundedSender<(ClusterEvent, usize)>,
    shared: Arc<Shared>,
}

pub(super) fn stream() -> (EventSender, ClusterEvents) {
    let (sender, receiver) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared::default());
    (
        EventSender {
            sender,
            shared: shared.clone(),
        },
        ClusterEvents { receiver, shared },
    )
}

impl EventSender {
    /// Queues `event`, unless it is a message and the stream already holds its fill of them.
    pub(super) fn send(&self, event: ClusterEvent) {
        let size = match &event {
            ClusterEvent::Message { data, .. } => {
                let size = estimate(data);
                let mut unread = self.shared.unread();
                if unread.0 >= UNREAD_MESSAGES || unread.1 + size > UNREAD_MESSAGE_BYTES {
                    self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                unread.0 += 1;
                unread.1 += size;
                size
            }
            _ => 0,
        };
        // The program dropped its stream: nothing to keep.
        let _ = self.sender.send((event, size));
    }
}

impl ClusterEvents {
    /// The next event; `None` after the last worker of a stopped cluster exited.
    pub async fn recv(&mut self) -> Option<ClusterEvent> {
        let (event, size) = self.receiver.recv().await?;
        if let ClusterEvent::Message { .. } = event {
            let mut unread = self.shared.unread();
            unread.0 -= 1;
            unread.1 -= size;
        }
        Some(event)
    }

    /// How many `message` events were dropped so far because the stream already held
    /// [`UNREAD_MESSAGES`] unread messages (or [`UNREAD_MESSAGE_BYTES`] of them).
    pub fn dropped_messages(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

/// About the bytes `value` takes in memory: its text, plus a word or so per node.
fn estimate(value: &Value) -> usize {
    const NODE: usize = 32;
    match value {
        Value::String(text) => NODE + text.len(),
        Value::Array(items) => NODE + items.iter().map(estimate).sum::<usize>(),
        Value::Object(fields) => {
            NODE + fields
                .iter()
                .map(|(key, value)| key.len() + estimate(value))
                .sum::<usize>()
        }
        _ => NODE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(data: Value) -> ClusterEvent {
        ClusterEvent::Message {
            slot: 1,
            pid: 7,
            data,
        }
    }

    #[tokio::test]
    async fn unread_messages_are_bounded_and_lifecycle_events_are_not() {
        let (sender, mut events) = stream();
        for index in 0..UNREAD_MESSAGES + 10 {
            sender.send(message(Value::from(index)));
        }
        sender.send(ClusterEvent::Fork { slot: 1, pid: 8 });
        assert_eq!(events.dropped_messages(), 10);
        for index in 0..UNREAD_MESSAGES {
            match events.recv().await {
                Some(ClusterEvent::Message { data, .. }) => assert_eq!(data, Value::from(index)),
                other => panic!("{other:?}"),
            }
        }
        assert!(matches!(
            events.recv().await,
            Some(ClusterEvent::Fork { .. })
        ));
        // Read, the stream has room again; large messages count by their size.
        let large = Value::String("x".repeat(UNREAD_MESSAGE_BYTES / 4));
        for _ in 0..4 {
            sender.send(message(large.clone()));
        }
        assert_eq!(events.dropped_messages(), 11);
        assert!(matches!(
            events.recv().await,
            Some(ClusterEvent::Message { .. })
        ));
        sender.send(message(Value::from("small")));
        assert_eq!(events.dropped_messages(), 11);
    }
}
