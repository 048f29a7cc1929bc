//! The commands: the table of names, arities and flags, and [`dispatch`], which checks a request
//! in Redis's order (unknown command, arity, memory, pub/sub context, transaction queueing)
//! before running it. One file per family: `strings`, `ranges` (GETRANGE, SETRANGE, LCS, GETEX),
//! `bits` (bitmaps), `keys`, `keyspace` (RENAME, COPY, MOVE, SWAPDB, OBJECT, MEMORY), `hashes`,
//! `lists`, `sets`, `set_algebra`, `pubsub`, `server` (connection), `client`, `info` (INFO,
//! CONFIG), `transaction` (MULTI, EXEC, WATCH).

mod bits;
mod client;
mod hashes;
mod info;
mod keys;
mod keyspace;
mod lists;
mod pubsub;
mod ranges;
mod server;
mod set_algebra;
mod sets;
mod strings;
mod transaction;

pub use pubsub::forget as pubsub_forget;

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use indexmap::{IndexMap, IndexSet};

use super::db::{Entry, Now, Value};
use super::reply::{text, Out};
use super::store::{Client, Store};

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
        names
    }
}

macro_rules! spec {
    ($name:literal, $arity:expr, $flags:expr, $handler:path, $keys:expr) => {
        Spec {
            name: $name,
            arity: $arity,
            flags: $flags,
            handler: $handler,
            keys: $keys,
        }
    };
}

const NO_KEYS: (i32, i32, i32) = (0, 0, 0);
const KEY: (i32, i32, i32) = (1, 1, 1);
const ALL_KEYS: (i32, i32, i32) = (1, -1, 1);
const PAIRS: (i32, i32, i32) = (1, -1, 2);

/// Every command the store knows.
static COMMANDS: &[Spec] = &[
    // connection and server
    spec!("ping", -1, PUBSUB, server::ping, NO_KEYS),
    spec!("echo", 2, 0, server::echo, NO_KEYS),
    spec!("select", 2, 0, server::select, NO_KEYS),
    spec!("swapdb", 3, WRITE, keyspace::swapdb, NO_KEYS),
    spec!("quit", -1, PUBSUB | NO_QUEUE, server::quit, NO_KEYS),
    spec!("reset", 1, PUBSUB | NO_QUEUE, server::reset, NO_KEYS),
    spec!("auth", -2, 0, server::auth, NO_KEYS),
    spec!("hello", -1, 0, server::hello, NO_KEYS),
    spec!("client", -2, PUBSUB, client::client, NO_KEYS),
    spec!("info", -1, 0, info::info, NO_KEYS),
    spec!("command", -1, 0, server::command, NO_KEYS),
    spec!("config", -2, 0, info::config, NO_KEYS),
    spec!("object", -2, 0, keyspace::object, (2, 2, 1)),
    spec!("memory", -2, 0, keyspace::memory, NO_KEYS),
    spec!("time", 1, 0, server::time, NO_KEYS),
    spec!("dbsize", 1, 0, server::dbsize, NO_KEYS),
    spec!("flushdb", -1, WRITE, server::flush, NO_KEYS),
    spec!("flushall", -1, WRITE, server::flush, NO_KEYS),
    // strings
    spec!("get", 2, 0, strings::get, KEY),
    spec!("set", -3, WRITE | DENY_OOM, strings::set, KEY),
    spec!("setnx", 3, WRITE | DENY_OOM, strings::setnx, KEY),
    spec!("setex", 4, WRITE | DENY_OOM, strings::setex, KEY),
    spec!("psetex", 4, WRITE | DENY_OOM, strings::psetex, KEY),
    spec!("getset", 3, WRITE | DENY_OOM, strings::getset, KEY),
    spec!("getdel", 2, WRITE, strings::getdel, KEY),
    spec!("getex", -2, WRITE, ranges::getex, KEY),
    spec!("getrange", 4, 0, ranges::getrange, KEY),
    spec!("substr", 4, 0, ranges::getrange, KEY),
    spec!("setrange", 4, WRITE | DENY_OOM, ranges::setrange, KEY),
    spec!("lcs", -3, 0, ranges::lcs, (1, 2, 1)),
    spec!("setbit", 4, WRITE | DENY_OOM, bits::setbit, KEY),
    spec!("getbit", 3, 0, bits::getbit, KEY),
    spec!("bitcount", -2, 0, bits::bitcount, KEY),
    spec!("bitpos", -3, 0, bits::bitpos, KEY),
    spec!("bitop", -4, WRITE | DENY_OOM, bits::bitop, (2, -1, 1)),
    spec!("bitfield", -2, WRITE | DENY_OOM, bits::bitfield, KEY),
    spec!("bitfield_ro", -2, 0, bits::bitfield_ro, KEY),
    spec!("mget", -2, 0, strings::mget, ALL_KEYS),
    spec!("mset", -3, WRITE | DENY_OOM, strings::mset, PAIRS),
    spec!("msetnx", -3, WRITE | DENY_OOM, strings::msetnx, PAIRS),
    spec!("append", 3, WRITE | DENY_OOM, strings::append, KEY),
    spec!("strlen", 2, 0, strings::strlen, KEY),
    spec!("incr", 2, WRITE | DENY_OOM, strings::incr, KEY),
    spec!("decr", 2, WRITE | DENY_OOM, strings::decr, KEY),
    spec!("incrby", 3, WRITE | DENY_OOM, strings::incrby, KEY),
    spec!("decrby", 3, WRITE | DENY_OOM, strings::decrby, KEY),
    spec!(
        "incrbyfloat",
        3,
        WRITE | DENY_OOM,
        strings::incrbyfloat,
        KEY
    ),
    // keys
    spec!("del", -2, WRITE, keys::del, ALL_KEYS),
    spec!("unlink", -2, WRITE, keys::del, ALL_KEYS),
    spec!("exists", -2, 0, keys::exists, ALL_KEYS),
    spec!("expire", -3, WRITE, keys::expire, KEY),
    spec!("pexpire", -3, WRITE, keys::pexpire, KEY),
    spec!("expireat", -3, WRITE, keys::expireat, KEY),
    spec!("pexpireat", -3, WRITE, keys::pexpireat, KEY),
    spec!("ttl", 2, 0, keys::ttl, KEY),
    spec!("pttl", 2, 0, keys::pttl, KEY),
    spec!("persist", 2, WRITE, keys::persist, KEY),
    spec!("type", 2, 0, keys::type_of, KEY),
    spec!("scan", -2, 0, keys::scan, NO_KEYS),
    spec!("keys", 2, 0, keys::keys, NO_KEYS),
    spec!("randomkey", 1, 0, keys::randomkey, NO_KEYS),
    spec!("expiretime", 2, 0, keys::expiretime, KEY),
    spec!("pexpiretime", 2, 0, keys::pexpiretime, KEY),
    spec!("rename", 3, WRITE, keyspace::rename, (1, 2, 1)),
    spec!("renamenx", 3, WRITE, keyspace::renamenx, (1, 2, 1)),
    spec!("copy", -3, WRITE | DENY_OOM, keyspace::copy, (1, 2, 1)),
    spec!("move", 3, WRITE, keyspace::move_key, KEY),
    // hashes
    spec!("hset", -4, WRITE | DENY_OOM, hashes::hset, KEY),
    spec!("hmset", -4, WRITE | DENY_OOM, hashes::hmset, KEY),
    spec!("hsetnx", 4, WRITE | DENY_OOM, hashes::hsetnx, KEY),
    spec!("hget", 3, 0, hashes::hget, KEY),
    spec!("hmget", -3, 0, hashes::hmget, KEY),
    spec!("hgetall", 2, 0, hashes::hgetall, KEY),
    spec!("hdel", -3, WRITE, hashes::hdel, KEY),
    spec!("hexists", 3, 0, hashes::hexists, KEY),
    spec!("hincrby", 4, WRITE | DENY_OOM, hashes::hincrby, KEY),
    spec!(
        "hincrbyfloat",
        4,
        WRITE | DENY_OOM,
        hashes::hincrbyfloat,
        KEY
    ),
    spec!("hlen", 2, 0, hashes::hlen, KEY),
    spec!("hkeys", 2, 0, hashes::hkeys, KEY),
    spec!("hvals", 2, 0, hashes::hvals, KEY),
    spec!("hrandfield", -2, 0, hashes::hrandfield, KEY),
    spec!("hstrlen", 3, 0, hashes::hstrlen, KEY),
    spec!("hscan", -3, 0, hashes::hscan, KEY),
    // lists
    spec!("lpush", -3, WRITE | DENY_OOM, lists::lpush, KEY),
    spec!("rpush", -3, WRITE | DENY_OOM, lists::rpush, KEY),
    spec!("lpop", -2, WRITE, lists::lpop, KEY),
    spec!("rpop", -2, WRITE, lists::rpop, KEY),
    spec!("lrange", 4, 0, lists::lrange, KEY),
    spec!("llen", 2, 0, lists::llen, KEY),
    spec!("ltrim", 4, WRITE, lists::ltrim, KEY),
    spec!("lindex", 3, 0, lists::lindex, KEY),
    // sets
    spec!("sadd", -3, WRITE | DENY_OOM, sets::sadd, KEY),
    spec!("srem", -3, WRITE, sets::srem, KEY),
    spec!("smembers", 2, 0, sets::smembers, KEY),
    spec!("sismember", 3, 0, sets::sismember, KEY),
    spec!("scard", 2, 0, sets::scard, KEY),
    spec!("smismember", -3, 0, sets::smismember, KEY),
    spec!("sscan", -3, 0, sets::sscan, KEY),
    spec!("spop", -2, WRITE, sets::spop, KEY),
    spec!("srandmember", -2, 0, sets::srandmember, KEY),
    spec!("smove", 4, WRITE, sets::smove, (1, 2, 1)),
    spec!("sinter", -2, 0, set_algebra::sinter, ALL_KEYS),
    spec!("sunion", -2, 0, set_algebra::sunion, ALL_KEYS),
    spec!("sdiff", -2, 0, set_algebra::sdiff, ALL_KEYS),
    spec!(
        "sinterstore",
        -3,
        WRITE | DENY_OOM,
        set_algebra::sinterstore,
        ALL_KEYS
    ),
    spec!(
        "sunionstore",
        -3,
        WRITE | DENY_OOM,
        set_algebra::sunionstore,
        ALL_KEYS
    ),
    spec!(
        "sdiffstore",
        -3,
        WRITE | DENY_OOM,
        set_algebra::sdiffstore,
        ALL_KEYS
    ),
    spec!("sintercard", -3, 0, set_algebra::sintercard, NO_KEYS),
    // pub/sub
    spec!("publish", 3, 0, pubsub::publish, NO_KEYS),
    spec!("subscribe", -2, PUBSUB, pubsub::subscribe, NO_KEYS),
    spec!("unsubscribe", -1, PUBSUB, pubsub::unsubscribe, NO_KEYS),
    spec!("psubscribe", -2, PUBSUB, pubsub::psubscribe, NO_KEYS),
    spec!("punsubscribe", -1, PUBSUB, pubsub::punsubscribe, NO_KEYS),
    spec!("pubsub", -2, 0, pubsub::pubsub, NO_KEYS),
    // transactions
    spec!("multi", 1, NO_QUEUE, transaction::multi, NO_KEYS),
    spec!("exec", 1, NO_QUEUE, transaction::exec, NO_KEYS),
    spec!("discard", 1, NO_QUEUE, transaction::discard, NO_KEYS),
    spec!("watch", -2, NO_QUEUE, transaction::watch, ALL_KEYS),
    spec!("unwatch", 1, NO_QUEUE, transaction::unwatch, NO_KEYS),
];

/// Commands by name.
#[derive(Debug)]
pub struct Table {
    by_name: HashMap<&'static [u8], &'static Spec>,
}

impl Table {
    pub fn new() -> Table {
        Table {
            by_name: COMMANDS
                .iter()
                .map(|spec| (spec.name.as_bytes(), spec))
                .collect(),
        }
    }

    /// The command called `name`, in any case.
    pub fn lookup(&self, name: &[u8]) -> Option<&'static Spec> {
        let mut lower = [0u8; 16];
        let lower = lower.get_mut(..name.len())?;
        for (to, from) in lower.iter_mut().zip(name) {
            *to = from.to_ascii_lowercase();
        }
        self.by_name.get(&*lower).copied()
    }

    pub fn all(&self) -> &'static [Spec] {
        COMMANDS
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

    pub fn entry(&mut self, key: &[u8]) -> Option<&Entry> {
        self.store.db.get(key, self.now)
    }

    pub fn string(&mut self, key: &[u8]) -> Result<Option<&Bytes>, Fail> {
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
    let started = std::time::Instant::now();
    let mut ctx = Ctx {
        store,
        client,
        out,
        now: Now(super::db::now_ms()),
        changed: Changed::Nothing,
    };
    let failed = (spec.handler)(&mut ctx, args).err();
    let changed = std::mem::take(&mut ctx.changed);
    let store = ctx.store;
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

/// Runs a request while loading the append-only file: no reply, no logging.
pub fn replay(store: &mut Store, client: &mut Client, args: &[Bytes]) -> Result<(), String> {
    let Some(spec) = store.table.lookup(&args[0]) else {
        return Err(format!(
            "unknown command '{}'",
            String::from_utf8_lossy(&args[0])
        ));
    };
    store.select(client.db);
    let mut out = Out::default();
    let mut ctx = Ctx {
        store,
        client,
        out: &mut out,
        now: Now(super::db::now_ms()),
        changed: Changed::Nothing,
    };
    (spec.handler)(&mut ctx, args).map_err(|Fail(reason)| reason.into_owned())
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
