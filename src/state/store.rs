//! The store's state: the keyspace, the pub/sub registry, limits and counters, and each
//! client's own state (name, transaction, subscriptions). It lives on the store's one thread.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;
use indexmap::IndexSet;
use tokio::sync::Notify;

use super::append_only::AppendOnly;
use super::commands::Table;
use super::db::Db;
use super::glob;

/// Most bytes of published messages queued for one subscriber before it is disconnected (as
/// Redis's `client-output-buffer-limit pubsub 32mb`): a stalled subscriber must not grow the
/// primary without bound.
const MAILBOX_LIMIT: usize = 32 * 1024 * 1024;

/// Everything the commands work on.
#[derive(Debug)]
pub struct Store {
    pub db: Db,
    pub pubsub: PubSub,
    pub table: Table,
    pub max_memory: Option<usize>,
    pub started: Instant,
    pub next_client_id: u64,
    pub connected_clients: usize,
    pub commands_processed: u64,
    /// Writes to log to the append-only file, as RESP commands, when it is enabled.
    pub log: Option<Vec<u8>>,
    pub append_only: Option<AppendOnly>,
    /// Why the last append to the file failed; writes are refused until one succeeds.
    pub log_failed: Option<String>,
}

impl Store {
    pub fn new(max_memory: Option<usize>) -> Store {
        Store {
            db: Db::default(),
            pubsub: PubSub::default(),
            table: Table::new(),
            max_memory,
            started: Instant::now(),
            next_client_id: 1,
            connected_clients: 0,
            commands_processed: 0,
            log: None,
            append_only: None,
            log_failed: None,
        }
    }

    /// Appends the logged writes to the append-only file.
    pub fn flush_log(&mut self) {
        let (Some(log), Some(file)) = (&mut self.log, &mut self.append_only) else {
            return;
        };
        if log.is_empty() {
            return;
        }
        match file.append(log) {
            Ok(()) => self.log_failed = None,
            Err(error) => self.log_failed = Some(error.to_string()),
        }
        log.clear();
    }

    pub fn new_client(&mut self) -> Client {
        let id = self.next_client_id;
        self.next_client_id += 1;
        Client::new(id)
    }

    pub fn over_memory(&self) -> bool {
        self.max_memory
            .is_some_and(|max| self.db.used_memory() > max)
    }

    /// Appends `args` to the write log as one RESP command.
    pub fn log_command<A: AsRef<[u8]>>(&mut self, args: &[A]) {
        if let Some(log) = &mut self.log {
            encode_command(log, args);
        }
    }

    /// Logs the keys that expired since the last call as `DEL`s.
    pub fn log_expired(&mut self) {
        if self.db.expired.is_empty() {
            return;
        }
        let expired = std::mem::take(&mut self.db.expired);
        for key in expired {
            self.log_command(&[&b"DEL"[..], &key]);
        }
    }
}

/// `args` as a RESP array of bulk strings.
pub fn encode_command<A: AsRef<[u8]>>(out: &mut Vec<u8>, args: &[A]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        let arg = arg.as_ref();
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// One connection's state.
#[derive(Debug)]
pub struct Client {
    pub id: u64,
    pub name: Option<Bytes>,
    /// Commands queued since `MULTI`, and whether one of them was refused while queueing.
    pub transaction: Option<Vec<Vec<Bytes>>>,
    pub transaction_failed: bool,
    pub channels: IndexSet<Bytes>,
    pub patterns: IndexSet<Bytes>,
    pub mailbox: Rc<Mailbox>,
    /// Close the connection once the pending replies are written (`QUIT`, protocol errors).
    pub close_after_reply: bool,
}

impl Client {
    fn new(id: u64) -> Client {
        Client {
            id,
            name: None,
            transaction: None,
            transaction_failed: false,
            channels: IndexSet::new(),
            patterns: IndexSet::new(),
            mailbox: Rc::new(Mailbox::default()),
            close_after_reply: false,
        }
    }

    pub fn subscriptions(&self) -> usize {
        self.channels.len() + self.patterns.len()
    }
}

/// Messages published to a subscriber, waiting for its connection task to write them.
#[derive(Debug, Default)]
pub struct Mailbox {
    queue: RefCell<VecDeque<Bytes>>,
    queued_bytes: Cell<usize>,
    overflowed: Cell<bool>,
    pub notify: Notify,
}

impl Mailbox {
    /// Queues `message`; `false` when it was not queued because the subscriber is past its
    /// limit (it is then disconnected, and gets nothing more).
    fn deliver(&self, message: Bytes) -> bool {
        if self.overflowed.get() {
            return false;
        }
        let queued = self.queued_bytes.get() + message.len();
        let delivered = queued <= MAILBOX_LIMIT;
        if delivered {
            self.queued_bytes.set(queued);
            self.queue.borrow_mut().push_back(message);
        } else {
            self.overflowed.set(true);
            self.queue.borrow_mut().clear();
        }
        self.notify.notify_one();
        delivered
    }

    /// Moves every queued message into `out`.
    pub fn drain_into(&self, out: &mut bytes::BytesMut) {
        for message in self.queue.borrow_mut().drain(..) {
            out.extend_from_slice(&message);
        }
        self.queued_bytes.set(0);
    }

    pub fn overflowed(&self) -> bool {
        self.overflowed.get()
    }
}

/// Who listens to what.
#[derive(Debug, Default)]
pub struct PubSub {
    channels: HashMap<Bytes, Vec<(u64, Rc<Mailbox>)>>,
    patterns: Vec<(Bytes, u64, Rc<Mailbox>)>,
}

impl PubSub {
    pub fn subscribe(&mut self, channel: &Bytes, client: &Client) {
        self.channels
            .entry(channel.clone())
            .or_default()
            .push((client.id, client.mailbox.clone()));
    }

    pub fn unsubscribe(&mut self, channel: &[u8], client_id: u64) {
        if let Some(listeners) = self.channels.get_mut(channel) {
            listeners.retain(|(id, _)| *id != client_id);
            if listeners.is_empty() {
                self.channels.remove(channel);
            }
        }
    }

    pub fn psubscribe(&mut self, pattern: &Bytes, client: &Client) {
        self.patterns
            .push((pattern.clone(), client.id, client.mailbox.clone()));
    }

    pub fn punsubscribe(&mut self, pattern: &[u8], client_id: u64) {
        self.patterns
            .retain(|(p, id, _)| !(*id == client_id && p.as_ref() == pattern));
    }

    /// Delivers `message` to `channel`'s subscribers and matching patterns; how many got it (a
    /// subscriber past its mailbox limit does not).
    pub fn publish(&self, channel: &[u8], message: &[u8]) -> usize {
        let mut receivers = 0;
        if let Some(listeners) = self.channels.get(channel) {
            let mut frame = Vec::new();
            encode_command(&mut frame, &[&b"message"[..], channel, message]);
            let frame = Bytes::from(frame);
            for (_, mailbox) in listeners {
                receivers += usize::from(mailbox.deliver(frame.clone()));
            }
        }
        for (pattern, _, mailbox) in &self.patterns {
            if glob::matches(pattern, channel) {
                let mut frame = Vec::new();
                encode_command(&mut frame, &[&b"pmessage"[..], pattern, channel, message]);
                receivers += usize::from(mailbox.deliver(Bytes::from(frame)));
            }
        }
        receivers
    }

    pub fn channels(&self) -> impl Iterator<Item = (&Bytes, usize)> {
        self.channels
            .iter()
            .map(|(name, listeners)| (name, listeners.len()))
    }

    pub fn subscribers(&self, channel: &[u8]) -> usize {
        self.channels.get(channel).map_or(0, Vec::len)
    }

    pub fn pattern_count(&self) -> usize {
        self.patterns.len()
    }
}
