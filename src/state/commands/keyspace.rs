//! Commands that move values between keys and databases (RENAME, RENAMENX, COPY, MOVE, SWAPDB)
//! and that describe a value (OBJECT, MEMORY USAGE).

use bytes::Bytes;

use super::management::db_index;
use super::{subcommand, Ctx, Fail, Outcome};
use crate::state::db::{Entry, Value};
use crate::state::notify;
use crate::state::reply::text;

const SAME_OBJECT: &str = "ERR source and destination objects are the same";

/// RENAME and RENAMENX; `only_new` for RENAMENX. Whether it renamed.
fn rename_generic(ctx: &mut Ctx, args: &[Bytes], only_new: bool) -> Result<bool, Fail> {
    let (from, to) = (&args[1], &args[2]);
    let Some(entry) = ctx.entry(from).cloned() else {
        return Err("ERR no such key".into());
    };
    if from == to {
        return Ok(!only_new);
    }
    if only_new && ctx.entry(to).is_some() {
        return Ok(false);
    }
    ctx.store.db.remove(from, ctx.now);
    // Replaced as Redis replaces it: removed, then added anew (its `new` event).
    ctx.store.db.remove(to, ctx.now);
    ctx.store.db.set(to, entry.value, entry.expires_at);
    ctx.notify(notify::GENERIC, "rename_from", from);
    ctx.notify(notify::GENERIC, "rename_to", to);
    ctx.changed();
    Ok(true)
}

pub fn rename(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    rename_generic(ctx, args, false)?;
    ctx.out.ok();
    Ok(())
}

pub fn renamenx(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let renamed = rename_generic(ctx, args, true)?;
    ctx.out.int(i64::from(renamed));
    Ok(())
}

/// `COPY source destination [DB index] [REPLACE]`.
pub fn copy(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let mut target_db = ctx.store.current_db();
    let mut replace = false;
    let mut i = 3;
    while i < args.len() {
        match args[i].to_ascii_lowercase().as_slice() {
            b"replace" => replace = true,
            b"db" if i + 1 < args.len() => {
                target_db = db_index(&args[i + 1])?;
                i += 1;
            }
            _ => return Err(text::SYNTAX.into()),
        }
        i += 1;
    }
    let (from, to) = (&args[1], &args[2]);
    if from == to && target_db == ctx.store.current_db() {
        return Err(SAME_OBJECT.into());
    }
    let Some(entry) = ctx.entry(from).cloned() else {
        ctx.out.int(0);
        return Ok(());
    };
    let now = ctx.now;
    let target = ctx.store.db_at(target_db);
    if target.get(to, now).is_some() {
        if !replace {
            ctx.out.int(0);
            return Ok(());
        }
        target.remove(to, now);
    }
    target.set(to, entry.value, entry.expires_at);
    ctx.notify_in(notify::GENERIC, "copy_to", to, target_db);
    ctx.changed();
    ctx.out.int(1);
    Ok(())
}

pub fn move_key(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let target_db = db_index(&args[2])?;
    if target_db == ctx.store.current_db() {
        return Err(SAME_OBJECT.into());
    }
    let Some(entry) = ctx.entry(&args[1]).cloned() else {
        ctx.out.int(0);
        return Ok(());
    };
    let now = ctx.now;
    if ctx.store.db_at(target_db).get(&args[1], now).is_some() {
        ctx.out.int(0);
        return Ok(());
    }
    ctx.store
        .db_at(target_db)
        .set(&args[1], entry.value, entry.expires_at);
    ctx.store.db.remove(&args[1], now);
    ctx.notify(notify::GENERIC, "move_from", &args[1]);
    ctx.notify_in(notify::GENERIC, "move_to", &args[1], target_db);
    ctx.changed();
    ctx.out.int(1);
    Ok(())
}

pub fn swapdb(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let index = |arg: &[u8], which: &'static str| {
        crate::state::number::parse_i64(arg)
            .ok_or(Fail::from(which))
            .and_then(|index| {
                usize::try_from(index)
                    .ok()
                    .filter(|index| *index < crate::state::store::DATABASES)
                    .ok_or(Fail::from("ERR DB index is out of range"))
            })
    };
    let a = index(&args[1], "ERR invalid first DB index")?;
    let b = index(&args[2], "ERR invalid second DB index")?;
    if a != b {
        ctx.store.touch_all_watched(a, Some(b), ctx.now);
        ctx.store.touch_all_watched(b, Some(a), ctx.now);
        ctx.store.swap_databases(a, b);
    }
    ctx.changed();
    ctx.out.ok();
    Ok(())
}

/// A knob CONFIG SET gave, or its default.
fn knob(ctx: &Ctx, name: &str, default: usize) -> usize {
    ctx.store
        .settings
        .get(name)
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// The encoding Redis 7.0 would use for this value (the store has one of its own; clients and
/// tests ask).
fn encoding(ctx: &Ctx, value: &Value) -> &'static str {
    match value {
        Value::Str(text) => {
            if text.len() <= 20 && crate::state::number::parse_i64(text).is_some() {
                "int"
            } else if text.len() <= 44 {
                "embstr"
            } else {
                "raw"
            }
        }
        Value::Hash(hash) => {
            let entries = knob(ctx, "hash-max-listpack-entries", 128);
            let size = knob(ctx, "hash-max-listpack-value", 64);
            if hash.len() <= entries && hash.iter().all(|(f, v)| f.len() <= size && v.len() <= size)
            {
                "listpack"
            } else {
                "hashtable"
            }
        }
        Value::List(_) => "quicklist",
        Value::Stream(_) => "stream",
        Value::ZSet(zset) => {
            let entries = knob(ctx, "zset-max-listpack-entries", 128);
            let size = knob(ctx, "zset-max-listpack-value", 64);
            if zset.len() <= entries && zset.iter().all(|(member, _)| member.len() <= size) {
                "listpack"
            } else {
                "skiplist"
            }
        }
        Value::Set(set) => {
            let entries = knob(ctx, "set-max-intset-entries", 512);
            if set.len() <= entries
                && set
                    .iter()
                    .all(|member| crate::state::number::parse_i64(member).is_some())
            {
                "intset"
            } else {
                "hashtable"
            }
        }
    }
}

pub fn object(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let known = [
        ("encoding", 3),
        ("refcount", 3),
        ("idletime", 3),
        ("freq", 3),
        ("help", 2),
    ];
    let sub = subcommand(args, "object", &known)?;
    if sub == "help" {
        ctx.out.array_header(1);
        ctx.out
            .simple("OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are: ENCODING, FREQ, IDLETIME, REFCOUNT, HELP");
        return Ok(());
    }
    let Some(Entry { value, .. }) = ctx.entry(&args[2]).cloned() else {
        ctx.out.null();
        return Ok(());
    };
    match sub {
        "encoding" => {
            let name = encoding(ctx, &value);
            ctx.out.bulk(name.as_bytes());
        }
        "refcount" => ctx.out.int(1),
        "idletime" => ctx.out.int(0),
        _ => return Err("ERR An LFU maxmemory policy is not selected, access frequency not tracked. Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust.".into()),
    }
    Ok(())
}

/// `MEMORY USAGE key [SAMPLES n]`: the store's estimate of what the key holds.
pub fn memory(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let known = [("usage", -3), ("help", 2)];
    if subcommand(args, "memory", &known)? == "help" {
        ctx.out.array_header(1);
        ctx.out
            .simple("MEMORY <subcommand> [<arg> [value] [opt] ...]. Subcommands are: USAGE <key> [SAMPLES <count>], HELP");
        return Ok(());
    }
    match &args[3..] {
        [] => {}
        [option, count] if option.eq_ignore_ascii_case(b"samples") => {
            super::int_arg(count)?;
        }
        _ => return Err(text::SYNTAX.into()),
    }
    let key_len = args[2].len();
    match ctx.entry(&args[2]) {
        None => ctx.out.null(),
        Some(entry) => {
            let bytes = crate::state::db::ENTRY_OVERHEAD + key_len + entry.value.cost();
            ctx.out.int(bytes as i64);
        }
    }
    Ok(())
}
