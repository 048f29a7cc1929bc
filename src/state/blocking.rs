//! Clients blocked in BLPOP, BZPOPMIN and the like: who waits on which key, first come first
//! served. A write to a waited-on key wakes the first client waiting on it; its connection runs
//! the command again, and if that served it, the next one is woken while the key still holds
//! something (`commands::run` checks after every write).

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;

use super::store::Mailbox;

/// What a blocked client waits with: its command, run again when woken, its deadline, and
/// the reply then.
#[derive(Debug)]
pub struct Blocked {
    pub args: Vec<Bytes>,
    pub deadline: Option<Instant>,
    pub on_timeout: OnTimeout,
}

/// The reply at a blocked client's deadline, or to `CLIENT UNBLOCK … TIMEOUT`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OnTimeout {
    /// Every key-blocking command's, as in Redis 7.0.
    NullArray,
    /// `WAIT`'s: how many replicas acknowledged.
    Integer(i64),
}

/// A key of one database.
type Slot = (usize, Bytes);

#[derive(Debug, Default)]
pub struct Waiting {
    by_key: HashMap<Slot, VecDeque<u64>>,
    /// Each blocked client's mailbox (to wake it) and the keys it waits on.
    clients: HashMap<u64, (Rc<Mailbox>, Vec<Slot>)>,
}

impl Waiting {
    /// How many clients are blocked (`INFO`'s `blocked_clients`).
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    pub fn mailbox(&self, id: u64) -> Option<&Rc<Mailbox>> {
        self.clients.get(&id).map(|(mailbox, _)| mailbox)
    }

    /// Blocks client `id` on `keys` of database `db`; a client blocked already keeps its place.
    pub fn block(&mut self, id: u64, mailbox: &Rc<Mailbox>, db: usize, keys: &[Bytes]) {
        if self.clients.contains_key(&id) {
            return;
        }
        let mut waited = Vec::with_capacity(keys.len());
        for key in keys {
            let slot = (db, key.clone());
            if waited.contains(&slot) {
                continue;
            }
            self.by_key.entry(slot.clone()).or_default().push_back(id);
            waited.push(slot);
        }
        self.clients.insert(id, (mailbox.clone(), waited));
    }

    /// Client `id` is no longer blocked (served, timed out, unblocked, gone); the keys it waited
    /// on, so that the next waiter can be woken if one is ready.
    pub fn release(&mut self, id: u64) -> Vec<(usize, Bytes)> {
        let Some((_, keys)) = self.clients.remove(&id) else {
            return Vec::new();
        };
        for slot in &keys {
            if let Some(queue) = self.by_key.get_mut(slot) {
                queue.retain(|waiter| *waiter != id);
                if queue.is_empty() {
                    self.by_key.remove(slot);
                }
            }
        }
        keys
    }

    pub fn is_waited(&self, db: usize, key: &Bytes) -> bool {
        self.by_key.contains_key(&(db, key.clone()))
    }

    /// Wakes every client waiting on `key` (readers of a stream).
    pub fn wake_all(&self, db: usize, key: &Bytes) {
        let Some(queue) = self.by_key.get(&(db, key.clone())) else {
            return;
        };
        for (mailbox, _) in queue.iter().filter_map(|id| self.clients.get(id)) {
            mailbox.notify.notify_one();
        }
    }

    /// Wakes the first client waiting on `key`.
    pub fn wake(&self, db: usize, key: &Bytes) {
        let first = self
            .by_key
            .get(&(db, key.clone()))
            .and_then(|queue| queue.front());
        if let Some((mailbox, _)) = first.and_then(|id| self.clients.get(id)) {
            mailbox.notify.notify_one();
        }
    }
}
