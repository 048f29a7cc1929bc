//! The command table: every command's name, arity, flags, handler and key positions, as
//! `COMMAND` reports them.

use std::collections::HashMap;

use super::{
    bits, blocking, client, hashes, info, keys, keyspace, list_moves, lists, management, monitor,
    pubsub, ranges, script, set_algebra, sets, streams, strings, transaction, zset_algebra,
    zset_ranges, zsets, Spec, DENY_OOM, NO_MULTI, NO_QUEUE, PUBSUB, WRITE,
};

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
    spec!("ping", -1, PUBSUB, management::ping, NO_KEYS),
    spec!("echo", 2, 0, management::echo, NO_KEYS),
    spec!("cluster", -2, 0, management::cluster, NO_KEYS),
    spec!("save", 1, NO_MULTI, management::save, NO_KEYS),
    spec!("shutdown", -1, NO_MULTI, management::shutdown, NO_KEYS),
    spec!("select", 2, 0, management::select, NO_KEYS),
    spec!("swapdb", 3, WRITE, keyspace::swapdb, NO_KEYS),
    spec!("quit", -1, PUBSUB | NO_QUEUE, management::quit, NO_KEYS),
    spec!("reset", 1, PUBSUB | NO_QUEUE, management::reset, NO_KEYS),
    spec!("auth", -2, 0, management::auth, NO_KEYS),
    spec!("hello", -1, 0, management::hello, NO_KEYS),
    spec!("client", -2, PUBSUB, client::client, NO_KEYS),
    spec!("info", -1, 0, info::info, NO_KEYS),
    spec!("command", -1, 0, management::command, NO_KEYS),
    spec!("config", -2, 0, info::config, NO_KEYS),
    spec!("object", -2, 0, keyspace::object, (2, 2, 1)),
    spec!("memory", -2, 0, keyspace::memory, NO_KEYS),
    spec!("time", 1, 0, management::time, NO_KEYS),
    spec!("monitor", 1, 0, monitor::monitor, NO_KEYS),
    spec!("dbsize", 1, 0, management::dbsize, NO_KEYS),
    spec!("flushdb", -1, WRITE, management::flush, NO_KEYS),
    spec!("flushall", -1, WRITE, management::flush, NO_KEYS),
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
    spec!("lpushx", -3, WRITE | DENY_OOM, list_moves::lpushx, KEY),
    spec!("rpushx", -3, WRITE | DENY_OOM, list_moves::rpushx, KEY),
    spec!("lset", 4, WRITE | DENY_OOM, list_moves::lset, KEY),
    spec!("linsert", 5, WRITE | DENY_OOM, list_moves::linsert, KEY),
    spec!("lrem", 4, WRITE, list_moves::lrem, KEY),
    spec!("lpos", -3, 0, list_moves::lpos, KEY),
    spec!("lmove", 5, WRITE | DENY_OOM, list_moves::lmove, (1, 2, 1)),
    spec!(
        "rpoplpush",
        3,
        WRITE | DENY_OOM,
        list_moves::rpoplpush,
        (1, 2, 1)
    ),
    spec!("lmpop", -4, WRITE, list_moves::lmpop, NO_KEYS),
    spec!("blpop", -3, WRITE, blocking::blpop, (1, -2, 1)),
    spec!("brpop", -3, WRITE, blocking::brpop, (1, -2, 1)),
    spec!("blmove", 6, WRITE | DENY_OOM, blocking::blmove, (1, 2, 1)),
    spec!(
        "brpoplpush",
        4,
        WRITE | DENY_OOM,
        blocking::brpoplpush,
        (1, 2, 1)
    ),
    spec!("blmpop", -5, WRITE, blocking::blmpop, NO_KEYS),
    spec!("wait", 3, 0, blocking::wait, NO_KEYS),
    spec!("bzpopmin", -3, WRITE, blocking::bzpopmin, (1, -2, 1)),
    spec!("bzpopmax", -3, WRITE, blocking::bzpopmax, (1, -2, 1)),
    spec!("bzmpop", -5, WRITE, blocking::bzmpop, NO_KEYS),
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
    // sorted sets
    spec!("zadd", -4, WRITE | DENY_OOM, zsets::zadd, KEY),
    spec!("zincrby", 4, WRITE | DENY_OOM, zsets::zincrby, KEY),
    spec!("zcard", 2, 0, zsets::zcard, KEY),
    spec!("zscore", 3, 0, zsets::zscore, KEY),
    spec!("zmscore", -3, 0, zsets::zmscore, KEY),
    spec!("zrem", -3, WRITE, zsets::zrem, KEY),
    spec!("zrank", 3, 0, zsets::zrank, KEY),
    spec!("zrevrank", 3, 0, zsets::zrevrank, KEY),
    spec!("zpopmin", -2, WRITE, zsets::zpopmin, KEY),
    spec!("zpopmax", -2, WRITE, zsets::zpopmax, KEY),
    spec!("zmpop", -4, WRITE, zsets::zmpop, NO_KEYS),
    spec!("zrandmember", -2, 0, zsets::zrandmember, KEY),
    spec!("zscan", -3, 0, zsets::zscan, KEY),
    spec!("zrange", -4, 0, zset_ranges::zrange, KEY),
    spec!("zrevrange", -4, 0, zset_ranges::zrevrange, KEY),
    spec!("zrangebyscore", -4, 0, zset_ranges::zrangebyscore, KEY),
    spec!(
        "zrevrangebyscore",
        -4,
        0,
        zset_ranges::zrevrangebyscore,
        KEY
    ),
    spec!("zrangebylex", -4, 0, zset_ranges::zrangebylex, KEY),
    spec!("zrevrangebylex", -4, 0, zset_ranges::zrevrangebylex, KEY),
    spec!(
        "zrangestore",
        -5,
        WRITE | DENY_OOM,
        zset_ranges::zrangestore,
        (1, 2, 1)
    ),
    spec!("zcount", 4, 0, zset_ranges::zcount, KEY),
    spec!("zlexcount", 4, 0, zset_ranges::zlexcount, KEY),
    spec!(
        "zremrangebyrank",
        4,
        WRITE,
        zset_ranges::zremrangebyrank,
        KEY
    ),
    spec!(
        "zremrangebyscore",
        4,
        WRITE,
        zset_ranges::zremrangebyscore,
        KEY
    ),
    spec!("zremrangebylex", 4, WRITE, zset_ranges::zremrangebylex, KEY),
    spec!("zunion", -3, 0, zset_algebra::zunion, NO_KEYS),
    spec!("zinter", -3, 0, zset_algebra::zinter, NO_KEYS),
    spec!("zdiff", -3, 0, zset_algebra::zdiff, NO_KEYS),
    spec!(
        "zunionstore",
        -4,
        WRITE | DENY_OOM,
        zset_algebra::zunionstore,
        KEY
    ),
    spec!(
        "zinterstore",
        -4,
        WRITE | DENY_OOM,
        zset_algebra::zinterstore,
        KEY
    ),
    spec!(
        "zdiffstore",
        -4,
        WRITE | DENY_OOM,
        zset_algebra::zdiffstore,
        KEY
    ),
    spec!("zintercard", -3, 0, zset_algebra::zintercard, NO_KEYS),
    // streams
    spec!("xadd", -5, WRITE | DENY_OOM, streams::xadd, KEY),
    spec!("xtrim", -4, WRITE, streams::xtrim, KEY),
    spec!("xdel", -3, WRITE, streams::xdel, KEY),
    spec!("xsetid", -3, WRITE | DENY_OOM, streams::xsetid, KEY),
    spec!("xlen", 2, 0, streams::xlen, KEY),
    spec!("xrange", -4, 0, streams::xrange, KEY),
    spec!("xrevrange", -4, 0, streams::xrevrange, KEY),
    spec!("xread", -4, 0, streams::xread, NO_KEYS),
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
    // scripting
    spec!("eval", -3, 0, script::eval, NO_KEYS),
    spec!("evalsha", -3, 0, script::evalsha, NO_KEYS),
    spec!("eval_ro", -3, 0, script::eval_ro, NO_KEYS),
    spec!("evalsha_ro", -3, 0, script::evalsha_ro, NO_KEYS),
    spec!("script", -2, 0, script::script, NO_KEYS),
    spec!("function", -2, 0, script::function, NO_KEYS),
    spec!("fcall", -3, 0, script::fcall, NO_KEYS),
    spec!("fcall_ro", -3, 0, script::fcall_ro, NO_KEYS),
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
