//! The store's state: the sixteen databases, the pub/sub registry, the connected clients, the
//! watched keys, limits and counters, and each client's own state (name, transaction,
//! subscriptions). It lives on the store's one thread.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;
use indexmap::IndexSet;
use tokio::sync::Notify;

use super::append_only::AppendOnly;
use super::clients::{ClientInfo, Peer};
use super::commands::{Scripting, Table};
use super::db::{Db, Now};
use super::glob;

/// A client watching a key: its id and its "a watched key changed" flag.
type Watcher = (u64, Rc<Cell<bool>>);

/// Databases, as Redis's default `databases 16`.
pub const DATABASES: usize = 16;

/// Most bytes of published messages queued for one subscriber before it is disconnected (as
/// Redis's `client-output-buffer-limit pubsub 32mb`): a stalled subscriber must not grow the
/// primary without bound.
const MAILBOX_LIMIT: usize = 32 * 1024 * 1024;

/// Everything the commands work on.
#[derive(Debug)]
pub struct Store {
    /// The database the running command works on (`SELECT`ed by its client); its slot in
    /// `dbs` holds an empty placeholder meanwhile (see [`Store::select`]).
    pub db: Db,
    dbs: Vec<Db>,
    current: usize,
    /// The database the append-only log's last command ran in.
    log_db: usize,
    pub clients: BTreeMap<u64, Rc<ClientInfo>>,
    /// Who watches which key (database, key): the watching clients' "touched" flags.
    watchers: HashMap<(usize, Bytes), Vec<Watcher>>,
    pub stats: super::stats::Stats,
    /// What CONFIG SET was given (Redis's encoding knobs).
    pub settings: HashMap<String, String>,
    pub pubsub: PubSub,
    /// Clients blocked in BLPOP and the like.
    pub waiting: super::blocking::Waiting,
    pub table: Table,
    pub max_memory: Option<usize>,
    pub started: Instant,
    pub connected_clients: usize,
    pub commands_processed: u64,
    /// Writes to log to the append-only file, as RESP commands, when it is enabled.
    pub log: Option<Vec<u8>>,
    pub append_only: Option<AppendOnly>,
    /// Why the last append to the file failed; writes are refused until one succeeds.
    pub log_failed: Option<String>,
    /// Lua: the engine, the compiled scripts, the running script's state.
    pub scripting: Scripting,
    /// `notify-keyspace-events` (`notify`'s class bits); 0: no keyspace notifications.
    pub notify_flags: u32,
    /// Clients in `MONITOR` mode, by id.
    pub monitors: Vec<(u64, Rc<Mailbox>)>,
}

impl Store {
    pub fn new(max_memory: Option<usize>) -> Store {
        Store {
            db: Db::default(),
            dbs: (0..DATABASES).map(|_| Db::default()).collect(),
            current: 0,
            log_db: 0,
            clients: BTreeMap::new(),
            watchers: HashMap::new(),
            stats: Default::default(),
            settings: HashMap::new(),
            pubsub: PubSub::default(),
            waiting: Default::default(),
            table: Table::new(),
            max_memory,
            started: Instant::now(),
            connected_clients: 0,
            commands_processed: 0,
            log: None,
            append_only: None,
            log_failed: None,
            scripting: Scripting::default(),
            notify_flags: 0,
            monitors: Vec::new(),
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

    /// A new client (not yet listed by `CLIENT LIST`; see [`Store::register`]).
    pub fn new_client(&mut self, peer: Peer) -> Client {
        Client::new(self.scripting.busy.new_client_id(), peer)
    }

    /// The client of a connection that the busy-script loop accepted and answered
    /// (`commands/script/busy.rs`): it keeps the id the loop gave it (a `HELLO` there told it),
    /// and what its commands there set (name, protocol, transaction).
    pub fn adopt_client(&mut self, peer: Peer, early: &ClientInfo) -> Client {
        let client = Client::new(early.id, peer);
        let info = &client.info;
        *info.name.borrow_mut() = early.name.take();
        info.resp.set(early.resp.get());
        client.mailbox.resp3.set(early.mailbox.resp3.get());
        info.multi.set(early.multi.get());
        info.busy_transaction.set(early.busy_transaction.get());
        *info.busy_queued.borrow_mut() = early.busy_queued.take();
        client
    }

    /// Lists `client` in `CLIENT LIST` until [`Store::unregister`].
    pub fn register(&mut self, client: &Client) {
        self.connected_clients += 1;
        self.clients.insert(client.id, client.info.clone());
        self.scripting
            .busy
            .sockets
            .borrow_mut()
            .insert(client.id, client.info.clone());
    }

    /// Forgets a client that went away: its listing, subscriptions and watched keys.
    pub fn unregister(&mut self, client: &mut Client) {
        self.unwatch(client);
        self.monitors.retain(|(id, _)| *id != client.id);
        self.connected_clients -= 1;
        self.clients.remove(&client.id);
        self.scripting.busy.sockets.borrow_mut().remove(&client.id);
    }

    pub fn over_memory(&self) -> bool {
        self.max_memory.is_some_and(|max| self.used_memory() > max)
    }

    /// Makes database `index` the current one, [`Store::db`]. Databases trade places with the
    /// placeholder in their slot, so the current one is a plain field for every command.
    pub fn select(&mut self, index: usize) {
        if index != self.current {
            std::mem::swap(&mut self.db, &mut self.dbs[self.current]);
            std::mem::swap(&mut self.db, &mut self.dbs[index]);
            self.current = index;
        }
    }

    pub fn current_db(&self) -> usize {
        self.current
    }

    /// Database `index`, current or not.
    pub fn db_at(&mut self, index: usize) -> &mut Db {
        if index == self.current {
            &mut self.db
        } else {
            &mut self.dbs[index]
        }
    }

    /// Every database with its index.
    pub fn databases(&self) -> impl Iterator<Item = (usize, &Db)> {
        (0..DATABASES).map(move |index| {
            let db = if index == self.current {
                &self.db
            } else {
                &self.dbs[index]
            };
            (index, db)
        })
    }

    /// Swaps the contents of two databases (`SWAPDB`).
    pub fn swap_databases(&mut self, a: usize, b: usize) {
        let current = self.current;
        std::mem::swap(&mut self.db, &mut self.dbs[current]);
        self.dbs.swap(a, b);
        std::mem::swap(&mut self.db, &mut self.dbs[current]);
        self.update_tracking();
    }

    pub fn total_keys(&self) -> usize {
        self.databases().map(|(_, db)| db.len()).sum()
    }

    pub fn used_memory(&self) -> usize {
        self.databases().map(|(_, db)| db.used_memory()).sum()
    }

    /// Appends `args` to the write log as one RESP command of the current database.
    pub fn log_command<A: AsRef<[u8]>>(&mut self, args: &[A]) {
        self.log_in(self.current, args);
    }

    /// Appends `args` to the write log as a command of database `db` (after a `SELECT` when
    /// the log's last command ran in another).
    pub fn log_in<A: AsRef<[u8]>>(&mut self, db: usize, args: &[A]) {
        if let Some(log) = &mut self.log {
            if self.log_db != db {
                encode_command(log, &[&b"SELECT"[..], db.to_string().as_bytes()]);
                self.log_db = db;
            }
            encode_command(log, args);
        }
    }

    /// The file was compacted: it now ends in database 0.
    pub fn log_compacted(&mut self) {
        self.log_db = 0;
    }

    /// Logs the keys that expired since the last call as `DEL`s.
    pub fn log_expired(&mut self) {
        for index in 0..DATABASES {
            if self.db_at(index).expired.is_empty() {
                continue;
            }
            let expired = std::mem::take(&mut self.db_at(index).expired);
            for key in expired {
                self.log_in(index, &[&b"DEL"[..], &key]);
            }
        }
    }

    /// Forgets expired keys without logging them (no file).
    pub fn forget_expired(&mut self) {
        for index in 0..DATABASES {
            self.db_at(index).expired.clear();
        }
    }

    /// `WATCH`: `client` is told (its `dirty` flag) when `key` of its database changes.
    pub fn watch(&mut self, client: &mut Client, key: &Bytes, now: Now) {
        let db = client.db;
        // A key past its deadline is gone before it is watched (Redis: a stale key watched
        // does not fail EXEC); settle that first, so its removal does not count as a change.
        self.db_at(db).get(key, now);
        self.process_touched();
        let slot = (db, key.clone());
        if client.watched.contains(&slot) {
            return;
        }
        self.watchers
            .entry(slot.clone())
            .or_default()
            .push((client.id, client.dirty.clone()));
        client.watched.push(slot);
        self.update_tracking();
    }

    /// `UNWATCH`: forgets every key `client` watches and clears its flag.
    pub fn unwatch(&mut self, client: &mut Client) {
        if client.watched.is_empty() {
            client.dirty.set(false);
            return;
        }
        for slot in client.watched.drain(..) {
            if let Some(watching) = self.watchers.get_mut(&slot) {
                watching.retain(|(id, _)| *id != client.id);
                if watching.is_empty() {
                    self.watchers.remove(&slot);
                }
            }
        }
        client.dirty.set(false);
        self.update_tracking();
    }

    /// Whether a key `client` watches is past its deadline now (it changed: it expired).
    pub fn watched_key_expired(&mut self, client: &Client, now: Now) -> bool {
        client
            .watched
            .iter()
            .any(|(db, key)| self.db_at(*db).is_stale(key, now))
    }

    fn update_tracking(&mut self) {
        let mut tracked = [false; DATABASES];
        for (db, _) in self.watchers.keys() {
            tracked[*db] = true;
        }
        for (index, tracking) in tracked.into_iter().enumerate() {
            let db = self.db_at(index);
            db.tracking = tracking;
            if !tracking {
                // Changes seen for watchers that are gone must not reach later ones.
                db.touched.clear();
            }
        }
    }

    /// Flags the watchers of the keys changed since the last call.
    pub fn process_touched(&mut self) {
        if self.watchers.is_empty() {
            return;
        }
        for index in 0..DATABASES {
            let touched = std::mem::take(&mut self.db_at(index).touched);
            for key in touched {
                self.touch(index, key);
            }
        }
    }

    fn touch(&self, db: usize, key: Bytes) {
        if let Some(watching) = self.watchers.get(&(db, key)) {
            for (_, dirty) in watching {
                dirty.set(true);
            }
        }
    }

    /// Flags the watchers of every watched key of database `db` that holds a live value, or
    /// that holds one in `other` (the one it is swapped with): `FLUSHDB`, `FLUSHALL`, `SWAPDB`.
    pub fn touch_all_watched(&mut self, db: usize, other: Option<usize>, now: Now) {
        let keys: Vec<Bytes> = self
            .watchers
            .keys()
            .filter(|(index, _)| *index == db)
            .map(|(_, key)| key.clone())
            .collect();
        for key in keys {
            let here = self.db_at(db).is_live(&key, now);
            let there = other.is_some_and(|other| self.db_at(other).is_live(&key, now));
            if here || there {
                self.touch(db, key);
            }
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

/// What `CLIENT REPLY` asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyMode {
    On,
    Off,
    /// `CLIENT REPLY SKIP` itself ran: the next command's reply is dropped.
    SkipNext,
    /// This command's reply is dropped.
    Skip,
}

/// One connection's state.
#[derive(Debug)]
pub struct Client {
    pub id: u64,
    /// What `CLIENT LIST` shows of this client (shared with the store's list).
    pub info: Rc<ClientInfo>,
    /// The `SELECT`ed database.
    pub db: usize,
    /// Keys under `WATCH`, and whether one of them changed since.
    pub watched: Vec<(usize, Bytes)>,
    pub dirty: Rc<Cell<bool>>,
    pub reply: ReplyMode,
    /// Commands queued since `MULTI`, and whether one of them was refused while queueing.
    pub transaction: Option<Vec<Vec<Bytes>>>,
    pub transaction_failed: bool,
    pub channels: IndexSet<Bytes>,
    pub patterns: IndexSet<Bytes>,
    pub mailbox: Rc<Mailbox>,
    /// Close the connection once the pending replies are written (`QUIT`, protocol errors).
    pub close_after_reply: bool,
    /// Running the commands of an `EXEC`: blocking commands do not block.
    pub in_exec: bool,
    /// Blocked in BLPOP or the like: what to run again when woken.
    pub blocked: Option<super::blocking::Blocked>,
    /// Running a blocked command again: a key now of another type keeps it blocked (as in
    /// Redis) instead of failing it.
    pub retrying: bool,
}

impl Client {
    fn new(id: u64, peer: Peer) -> Client {
        let mailbox = Rc::new(Mailbox::default());
        Client {
            id,
            info: Rc::new(ClientInfo::new(id, peer, mailbox.clone())),
            db: 0,
            watched: Vec::new(),
            dirty: Rc::new(Cell::new(false)),
            reply: ReplyMode::On,
            transaction: None,
            transaction_failed: false,
            channels: IndexSet::new(),
            patterns: IndexSet::new(),
            mailbox,
            close_after_reply: false,
            in_exec: false,
            blocked: None,
            retrying: false,
        }
    }

    pub fn subscriptions(&self) -> usize {
        self.channels.len() + self.patterns.len()
    }
}

/// Messages published to a subscriber, waiting for its connection task to write them.
#[derive(Debug, Default)]
pub struct Mailbox {
    /// The subscriber speaks RESP3: messages are pushes.
    pub resp3: Cell<bool>,
    /// `CLIENT KILL` asked its connection to close.
    pub killed: Cell<bool>,
    /// `CLIENT UNBLOCK` asked its blocked command to end: `Some(true)` with an error.
    pub unblock: Cell<Option<bool>>,
    queue: RefCell<VecDeque<Bytes>>,
    queued_bytes: Cell<usize>,
    overflowed: Cell<bool>,
    pub notify: Notify,
}

impl Mailbox {
    /// Queues `message`; `false` when it was not queued because the subscriber is past its
    /// limit (it is then disconnected, and gets nothing more).
    pub fn deliver(&self, message: Bytes) -> bool {
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

    /// Asks the connection to close (`CLIENT KILL`).
    pub fn kill(&self) {
        self.killed.set(true);
        self.notify.notify_one();
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
            let frames = message_frames(&[&b"message"[..], channel, message]);
            for (_, mailbox) in listeners {
                receivers +=
                    usize::from(mailbox.deliver(frames[usize::from(mailbox.resp3.get())].clone()));
            }
        }
        for (pattern, _, mailbox) in &self.patterns {
            if glob::matches(pattern, channel) {
                let frames = message_frames(&[&b"pmessage"[..], pattern, channel, message]);
                receivers +=
                    usize::from(mailbox.deliver(frames[usize::from(mailbox.resp3.get())].clone()));
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

    /// How many distinct patterns are subscribed to (as Redis's `PUBSUB NUMPAT`), not how many
    /// subscriptions.
    pub fn pattern_count(&self) -> usize {
        let mut patterns: Vec<&Bytes> = self.patterns.iter().map(|(p, _, _)| p).collect();
        patterns.sort();
        patterns.dedup();
        patterns.len()
    }
}

/// A published message as RESP2 (an array) and RESP3 (a push).
fn message_frames(parts: &[&[u8]]) -> [Bytes; 2] {
    let mut resp2 = Vec::new();
    encode_command(&mut resp2, parts);
    let mut resp3 = resp2.clone();
    resp3[0] = b'>';
    [Bytes::from(resp2), Bytes::from(resp3)]
}
