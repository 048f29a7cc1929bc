//! The commands: the table of names, arities and flags, and [`dispatch`], which checks a request
//! in Redis's order (unknown command, arity, memory, pub/sub context, transaction queueing)
//! before running it. One file per family: `strings`, `ranges` (GETRANGE, SETRANGE, LCS, GETEX),
//! `bits` (bitmaps), `keys`, `keyspace` (RENAME, COPY, MOVE, SWAPDB, OBJECT, MEMORY), `hashes`,
//! `lists`, `list_moves` (LINSERT, LPOS, LMOVE, LMPOP…), `blocking` (BLPOP, BZPOPMIN, …), `sets`,
//! `set_algebra`, `zsets` (sorted sets), `zset_ranges` (ZRANGE and the range removals),
//! `zset_algebra` (ZUNION, ZINTER, ZDIFF), `streams` (XADD, XREAD…), `pubsub`, `monitor`
//! (MONITOR), `management` (PING, HELLO, SELECT, FLUSHDB: connection and server management),
//! `client`, `info` (INFO, CONFIG), `transaction` (MULTI, EXEC, WATCH), `script` (EVAL, SCRIPT,
//! FUNCTION: Lua).

mod bits;
mod blocking;
mod client;
mod hashes;
mod info;
mod keys;
mod keyspace;
mod list_moves;
mod lists;
mod management;
mod monitor;
mod pubsub;
mod ranges;
mod script;
mod set_algebra;
mod sets;
mod streams;
mod strings;
mod table;
mod transaction;
mod zset_algebra;
mod zset_ranges;
mod zsets;

pub use table::Table;

pub use pubsub::forget as pubsub_forget;
pub use script::{Adopted, Scripting};

use std::borrow::Cow;
use std::collections::VecDeque;

use bytes::Bytes;
use indexmap::{IndexMap, IndexSet};

use super::compact::CompactBytes;
use super::db::{Entry, Now, Value};
use super::reply::{text, Out};
use super::store::{Client, ReplyMode, Store};

/// Why a command failed: the error reply, code first (`ERR …`, `WRONGTYPE …`).
#[derive(Debug)]
pub struct Fail(pub Cow<'static, str>);

impl From<&'static str> for Fail {
    fn from(text: &'static str) -> Fail {
        Fail(Cow::Borrowed(text))
    }
}

impl From<String> for Fail {
    fn from(text: String) -> Fail {
        Fail(Cow::Owned(text))
    }
}

pub type Outcome = Result<(), Fail>;
type Handler = fn(&mut Ctx, &[Bytes]) -> Outcome;

/// May change data: logged to the append-only file when it did.
const WRITE: u8 = 1;
/// May grow memory: refused past `--state-max-memory`.
const DENY_OOM: u8 = 2;
/// Allowed while the client is subscribed (RESP2 pub/sub context).
const PUBSUB: u8 = 4;
/// Runs at once inside `MULTI` instead of being queued.
const NO_QUEUE: u8 = 8;
/// Refused inside `MULTI` (Redis's `no_multi`), which then aborts at `EXEC`.
const NO_MULTI: u8 = 16;

#[derive(Debug)]
pub struct Spec {
    pub name: &'static str,
    /// Redis's convention: N means exactly N arguments (name included), -N at least N.
    pub arity: i32,
    flags: u8,
    handler: Handler,
    /// Key positions `(first, last, step)` as `COMMAND` reports them; last -1 = to the end.
    pub keys: (i32, i32, i32),
}

impl Spec {
    pub fn flag_names(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.flags & WRITE != 0 {
            names.push("write");
        } else {
            names.push("readonly");
        }
        if self.flags & DENY_OOM != 0 {
            names.push("denyoom");
        }
        if self.flags & PUBSUB != 0 {
            names.push("pubsub");
        }
        if self.flags & NO_MULTI != 0 {
            names.push("no_multi");
        }
        names
    }
}

/// What a write command changed, for the append-only file.
#[derive(Debug, Default)]
enum Changed {
    #[default]
    Nothing,
    /// Log the command as it came.
    Verbatim,
    /// Log these commands instead (relative times made absolute, computed results).
    As(Vec<Vec<Bytes>>),
}

/// What a command runs with.
pub struct Ctx<'a> {
    pub store: &'a mut Store,
    pub client: &'a mut Client,
    pub out: &'a mut Out,
    pub now: Now,
    changed: Changed,
    /// The command's lookups of missing keys are `keymiss` events (see [`tells_misses`]).
    misses: bool,
}

impl Ctx<'_> {
    /// The command changed data; log it as it came.
    pub fn changed(&mut self) {
        if matches!(self.changed, Changed::Nothing) {
            self.changed = Changed::Verbatim;
        }
    }

    /// The command changed data; log `command` instead of it.
    pub fn changed_as(&mut self, command: Vec<Bytes>) {
        match &mut self.changed {
            Changed::As(commands) => commands.push(command),
            _ => self.changed = Changed::As(vec![command]),
        }
    }

    /// Publishes keyspace event `event` of `class` on `key` of the current database (see
    /// `notify`).
    pub fn notify(&mut self, class: u32, event: &str, key: &[u8]) {
        let db = self.store.current_db();
        self.notify_in(class, event, key, db);
    }

    /// [`Ctx::notify`] for database `db`. A RESP3 client subscribed to its own events gets the
    /// push here, wherever the command has got to in its reply, as Redis writes it (so each
    /// command notifies before, after or amid its reply as Redis's does); a script's commands
    /// write into a buffer of their own, so their pushes wait for the script's reply.
    pub fn notify_in(&mut self, class: u32, event: &str, key: &[u8], db: usize) {
        self.store.notify(class, event, key, db);
        let mailbox = &self.client.mailbox;
        if mailbox.resp3.get()
            && self.client.reply == ReplyMode::On
            && !self.store.scripting.busy.running()
        {
            mailbox.drain_into(&mut self.out.buf);
        }
    }

    /// Publishes `event` on `key`, then `del` if the command emptied the collection there
    /// (the key is gone: Redis never keeps an empty one).
    pub fn notify_emptied(&mut self, class: u32, event: &str, key: &[u8]) {
        self.notify(class, event, key);
        if !self.store.db.is_live(key, self.now) {
            self.notify(super::notify::GENERIC, "del", key);
        }
    }

    /// A read lookup of `key`: `keymiss` if it is missing and the command tells of misses.
    pub fn look_up(&mut self, key: &[u8]) {
        if self.misses && self.store.db.get(key, self.now).is_none() {
            self.notify(super::notify::KEY_MISS, "keymiss", key);
        }
    }

    pub fn entry(&mut self, key: &[u8]) -> Option<&Entry> {
        self.look_up(key);
        self.store.db.get(key, self.now)
    }

    pub fn string(&mut self, key: &[u8]) -> Result<Option<&CompactBytes>, Fail> {
        self.look_up(key);
        match self.store.db.get(key, self.now) {
            None => Ok(None),
            Some(Entry {
                value: Value::Str(text),
                ..
            }) => Ok(Some(text)),
            Some(_) => Err(text::WRONG_TYPE.into()),
        }
    }
}

/// Typed access to a collection: `NAME(key)` to read, `NAME_mut(key, create)` to change (an
/// empty one is created when `create`). A key of another type is `WRONGTYPE`.
macro_rules! collection_access {
    ($read:ident, $write:ident, $variant:ident, $ty:ty) => {
        impl Ctx<'_> {
            pub fn $read(&mut self, key: &[u8]) -> Result<Option<&$ty>, Fail> {
                self.look_up(key);
                match self.store.db.get(key, self.now) {
                    None => Ok(None),
                    Some(Entry {
                        value: Value::$variant(collection),
                        ..
                    }) => Ok(Some(collection)),
                    Some(_) => Err(text::WRONG_TYPE.into()),
                }
            }

            pub fn $write(&mut self, key: &[u8], create: bool) -> Result<Option<&mut $ty>, Fail> {
                let now = self.now;
                match self.store.db.get(key, now).map(|entry| &entry.value) {
                    Some(Value::$variant(_)) => {}
                    Some(_) => return Err(text::WRONG_TYPE.into()),
                    None if create => {
                        self.store
                            .db
                            .set(key, Value::$variant(Default::default()), None)
                    }
                    None => return Ok(None),
                }
                match self.store.db.get_mut(key, now) {
                    Some(Entry {
                        value: Value::$variant(collection),
                        ..
                    }) => Ok(Some(collection)),
                    _ => unreachable!("the key was just checked or created"),
                }
            }
        }
    };
}

collection_access!(hash, hash_mut, Hash, IndexMap<Bytes, Bytes>);
collection_access!(list, list_mut, List, VecDeque<Bytes>);
collection_access!(set, set_mut, Set, IndexSet<Bytes>);
collection_access!(zset, zset_mut, ZSet, crate::state::zset::ZSet);
collection_access!(stream, stream_mut, Stream, crate::state::stream::Stream);

thread_local! {
    static RANDOM: std::cell::Cell<u64> = std::cell::Cell::new(seed());
}

fn seed() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (now.as_nanos() as u64 ^ u64::from(std::process::id()).rotate_left(32)) | 1
}

/// A random index below `len` (> 0), for SPOP, SRANDMEMBER, HRANDFIELD: xorshift64*, which is
/// all these need (no secrecy, no bias worth a dependency).
pub fn random_below(len: usize) -> usize {
    RANDOM.with(|state| {
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) % len as u64) as usize
    })
}

/// `count` distinct indexes below `len` (all of them, in order, if `count >= len`).
pub fn pick_distinct(len: usize, count: usize) -> Vec<usize> {
    let mut indexes: Vec<usize> = (0..len).collect();
    if count >= len {
        return indexes;
    }
    for i in 0..count {
        let j = i + random_below(len - i);
        indexes.swap(i, j);
    }
    indexes.truncate(count);
    indexes
}

/// Most members SRANDMEMBER or HRANDFIELD repeat for a negative count: a reply past this would
/// only grow the primary (Redis would build it; here it is refused as out of range).
pub const MAX_RANDOM_REPEATS: u64 = 10_000_000;

/// Redis's error for a count of -2^63 (it cannot be negated).
pub const MIN_COUNT: &str =
    "ERR value is out of range, value must between -9223372036854775807 and 9223372036854775807";

/// An integer argument, or Redis's error.
pub fn int_arg(arg: &[u8]) -> Result<i64, Fail> {
    super::number::parse_i64(arg).ok_or_else(|| text::NOT_INTEGER.into())
}

/// `ERR wrong number of arguments for 'NAME' command`.
pub fn arity_error(name: &str) -> Fail {
    format!("ERR wrong number of arguments for '{name}' command").into()
}

/// Containers whose statistics and `cmd=` name the subcommand (`client|list`).
const CONTAINERS: &[&str] = &["client", "config", "command", "pubsub", "object", "memory"];

/// Redis's full name of a command: `get`, or `client|list` for a container's subcommand.
fn full_name(spec: &Spec, args: &[Bytes]) -> String {
    match args.get(1) {
        Some(sub) if CONTAINERS.contains(&spec.name) => format!(
            "{}|{}",
            spec.name,
            String::from_utf8_lossy(sub).to_ascii_lowercase()
        ),
        _ => spec.name.to_string(),
    }
}

/// Runs one request for `client`, writing its reply to `out`.
pub fn dispatch(store: &mut Store, client: &mut Client, out: &mut Out, args: &[Bytes]) {
    store.commands_processed += 1;
    client.info.last_active.set(std::time::Instant::now());
    transaction::settle_busy_answers(store, client, out);
    let Some(spec) = check(store, client, out, args) else {
        if client.transaction.is_some() {
            client.transaction_failed = true;
        }
        return;
    };
    *client.info.command.borrow_mut() = full_name(spec, args);
    if client.transaction.is_some() && spec.flags & NO_QUEUE == 0 {
        if let Some(queued) = &mut client.transaction {
            queued.push(args.to_vec());
            client.info.multi.set(queued.len() as i64);
        }
        out.simple("QUEUED");
        return;
    }
    run(store, client, out, spec, args);
    client.info.dirty.set(client.dirty.get());
}

/// The checks before a command runs, in Redis's order; the command if it may run.
fn check(
    store: &mut Store,
    client: &Client,
    out: &mut Out,
    args: &[Bytes],
) -> Option<&'static Spec> {
    let Some(spec) = store.table.lookup(&args[0]) else {
        let reason = unknown_command(args);
        store.stats.error(&reason);
        out.error(&reason);
        return None;
    };
    let Some(reason) = refusal(store, client, spec, args) else {
        return Some(spec);
    };
    store.stats.command(&full_name(spec, args)).rejected += 1;
    store.stats.error(&reason);
    out.error(&reason);
    None
}

/// Why `spec` may not run now, if it may not (`None`: it may).
fn refusal(store: &Store, client: &Client, spec: &'static Spec, args: &[Bytes]) -> Option<String> {
    let argc = args.len() as i32;
    if (spec.arity > 0 && argc != spec.arity) || argc < -spec.arity {
        return Some(arity_error(spec.name).0.into_owned());
    }
    if client.transaction.is_some() && spec.flags & NO_MULTI != 0 {
        return Some("ERR Command not allowed inside a transaction".into());
    }
    let denies_oom = spec.flags & DENY_OOM != 0
        || (client.transaction.is_some()
            && !matches!(spec.name, "exec" | "discard" | "quit" | "reset"))
        || (spec.name == "exec" && transaction::queued_deny_oom(store, client));
    if denies_oom && store.over_memory() {
        return Some(text::OOM.into());
    }
    if let (Some(reason), true) = (&store.log_failed, spec.flags & WRITE != 0) {
        return Some(format!("MISCONF Errors writing to the AOF file: {reason}"));
    }
    // In RESP3 a subscriber may run any command: pushes cannot be mistaken for replies.
    if client.subscriptions() > 0 && spec.flags & PUBSUB == 0 && !client.info.mailbox.resp3.get() {
        return Some(format!(
            "ERR Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context",
            full_name(spec, args)
        ));
    }
    None
}

/// Runs a command that passed the checks, and logs what it changed.
fn run(store: &mut Store, client: &mut Client, out: &mut Out, spec: &Spec, args: &[Bytes]) {
    store.select(client.db);
    let db = client.db;
    let started = std::time::Instant::now();
    let misses = store.notify_flags & super::notify::KEY_MISS != 0 && tells_misses(spec, args);
    let mut ctx = Ctx {
        store,
        client,
        out,
        now: Now(super::db::now_ms()),
        changed: Changed::Nothing,
        misses,
    };
    let shown_first = monitor::shown_before_running(spec);
    if shown_first {
        monitor::feed(ctx.store, ctx.client, args);
    }
    let failed = (spec.handler)(&mut ctx, args).err();
    let changed = std::mem::take(&mut ctx.changed);
    let store = ctx.store;
    store.publish_noted();
    if !shown_first && monitor::shown(spec, args) && !ctx.client.retrying {
        monitor::feed(store, ctx.client, args);
    }
    let stat = store.stats.command(&full_name(spec, args));
    stat.calls += 1;
    stat.usec += started.elapsed().as_micros() as u64;
    if let Some(Fail(reason)) = failed {
        stat.failed += 1;
        store.stats.error(&reason);
        ctx.out.error(&reason);
    }
    if matches!(changed, Changed::Nothing) {
        // The command looked at keys to change them and changed nothing: only keys that
        // expired on the way were touched.
        let db = &mut store.db;
        if !db.touched.is_empty() {
            let expired = &db.expired;
            db.touched.retain(|key| expired.contains(key));
        }
    }
    if spec.flags & WRITE != 0 && !matches!(changed, Changed::Nothing) && !store.waiting.is_empty()
    {
        wake_waiters(store, db, args);
    }
    store.process_touched();
    if store.log.is_none() {
        store.forget_expired();
        return;
    }
    store.log_expired();
    match changed {
        Changed::Nothing => {}
        Changed::Verbatim => store.log_command(args),
        Changed::As(commands) => {
            for command in commands {
                store.log_command(&command);
            }
        }
    }
}

/// Whether Redis looks `spec`'s keys up as reads, which tell of a missing key (`keymiss`):
/// the read-only commands but OBJECT and MEMORY, and the writes that read a source (`SET …
/// GET`, GETDEL, GETEX, the store commands' sources, BITOP, COPY, a BITFIELD that only reads).
fn tells_misses(spec: &Spec, args: &[Bytes]) -> bool {
    let has = |from: usize, word: &[u8]| {
        let options = args.get(from..).unwrap_or_default();
        options.iter().any(|arg| arg.eq_ignore_ascii_case(word))
    };
    match spec.name {
        "object" | "memory" => false,
        "set" => has(3, b"get"),
        "bitfield" => !has(2, b"set") && !has(2, b"incrby"),
        "getdel" | "getex" | "sinterstore" | "sunionstore" | "sdiffstore" | "zunionstore"
        | "zinterstore" | "zdiffstore" | "zrangestore" | "bitop" | "copy" => true,
        _ => spec.flags & WRITE == 0,
    }
}

/// Wakes the first client blocked on each key in `args` that now holds a list or sorted set
/// with something in it.
fn wake_waiters(store: &mut Store, db: usize, args: &[Bytes]) {
    wake_ready(store, db, &args[1..]);
}

/// Wakes the first client blocked on each of `keys` (in the selected database `db`) that holds
/// something to pop.
pub fn wake_ready(store: &mut Store, db: usize, keys: &[Bytes]) {
    let now = Now(super::db::now_ms());
    for key in keys {
        if !store.waiting.is_waited(db, key) {
            continue;
        }
        let ready = match store.db.get(key, now).map(|entry| &entry.value) {
            Some(Value::List(list)) => !list.is_empty(),
            Some(Value::ZSet(zset)) => !zset.is_empty(),
            // Every reader of a stream is served (each one's connection checks its own ID).
            Some(Value::Stream(_)) => {
                store.waiting.wake_all(db, key);
                continue;
            }
            _ => false,
        };
        if ready {
            store.waiting.wake(db, key);
        }
    }
}

/// Redis's text for an unknown command (or an unknown subcommand of a known container).
fn unknown_command(args: &[Bytes]) -> String {
    let mut listed = String::new();
    for arg in &args[1..] {
        if listed.len() >= 128 {
            break;
        }
        let room = 128 - listed.len();
        let arg = String::from_utf8_lossy(arg);
        let arg: String = arg.chars().take(room).collect();
        listed.push_str(&format!("'{arg}' "));
    }
    let name: String = String::from_utf8_lossy(&args[0])
        .chars()
        .take(128)
        .collect();
    format!("ERR unknown command '{name}', with args beginning with: {listed}")
}

/// Why a logged command did not apply while the append-only file was replayed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// The store has no command of that name: the file holds something the store never wrote.
    #[error("unknown command '{name}'")]
    UnknownCommand { name: String },
    /// The command failed, as it did when it was logged (a wrong type, say): nothing to apply.
    #[error("{reason}")]
    Failed { reason: String },
}

/// Runs a request while loading the append-only file: no reply, no logging.
pub fn replay(store: &mut Store, client: &mut Client, args: &[Bytes]) -> Result<(), ReplayError> {
    let Some(spec) = store.table.lookup(&args[0]) else {
        return Err(ReplayError::UnknownCommand {
            name: String::from_utf8_lossy(&args[0]).into_owned(),
        });
    };
    store.select(client.db);
    let mut out = Out::default();
    let mut ctx = Ctx {
        store,
        client,
        out: &mut out,
        now: Now(super::db::now_ms()),
        changed: Changed::Nothing,
        misses: false,
    };
    (spec.handler)(&mut ctx, args).map_err(|Fail(reason)| ReplayError::Failed {
        reason: reason.into_owned(),
    })
}

/// The subcommand of a container command (`CLIENT`, `CONFIG`, `COMMAND`, `PUBSUB`) among
/// `known` `(name, arity)`, with Redis's errors for an unknown one or a wrong arity.
pub fn subcommand(
    args: &[Bytes],
    container: &str,
    known: &[(&'static str, i32)],
) -> Result<&'static str, Fail> {
    let given = args[1].to_ascii_lowercase();
    let Some(&(name, arity)) = known.iter().find(|(name, _)| name.as_bytes() == given) else {
        return Err(format!(
            "ERR unknown subcommand '{}'. Try {} HELP.",
            String::from_utf8_lossy(&args[1])
                .chars()
                .take(128)
                .collect::<String>(),
            container.to_ascii_uppercase()
        )
        .into());
    };
    let argc = args.len() as i32;
    if (arity > 0 && argc != arity) || argc < -arity {
        return Err(arity_error(&format!("{container}|{name}")));
    }
    Ok(name)
}
