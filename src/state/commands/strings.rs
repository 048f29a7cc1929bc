//! String commands: GET, SET and its variants, MGET/MSET, APPEND, STRLEN, and the counters.

use bytes::Bytes;

use super::{int_arg, Ctx, Fail, Outcome};
use crate::state::compact::CompactBytes;
use crate::state::db::{Entry, Value};
use crate::state::notify;
use crate::state::number::{self, parse_float, LongDouble};
use crate::state::reply::text;

pub fn get(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    // Written straight from the keyspace: the hottest command copies its value once.
    ctx.look_up(&args[1]);
    match ctx.store.db.get(&args[1], ctx.now) {
        None => ctx.out.null(),
        Some(Entry {
            value: Value::Str(text),
            ..
        }) => ctx.out.bulk(text),
        Some(_) => return Err(text::WRONG_TYPE.into()),
    }
    Ok(())
}

/// SET's options, as parsed by Redis: each option excludes only the ones it conflicts with.
#[derive(Default)]
struct SetOptions {
    nx: bool,
    xx: bool,
    get: bool,
    keep_ttl: bool,
    /// The expiry option: its unit in milliseconds, whether it is absolute, and its argument.
    expire: Option<(i64, bool, Bytes)>,
}

fn parse_set_options(args: &[Bytes]) -> Result<SetOptions, Fail> {
    let mut options = SetOptions::default();
    let mut i = 3;
    while i < args.len() {
        let option = args[i].to_ascii_lowercase();
        let next = args.get(i + 1);
        match (option.as_slice(), next) {
            (b"nx", _) if !options.xx => options.nx = true,
            (b"xx", _) if !options.nx => options.xx = true,
            (b"get", _) => options.get = true,
            (b"keepttl", _) if options.expire.is_none() => options.keep_ttl = true,
            (b"ex" | b"px" | b"exat" | b"pxat", Some(next))
                if !options.keep_ttl && same_expire_option(&options, &option) =>
            {
                let (unit, absolute) = match option.as_slice() {
                    b"ex" => (1000, false),
                    b"px" => (1, false),
                    b"exat" => (1000, true),
                    _ => (1, true),
                };
                options.expire = Some((unit, absolute, next.clone()));
                i += 1;
            }
            _ => return Err(text::SYNTAX.into()),
        }
        i += 1;
    }
    Ok(options)
}

/// Redis lets an expiry option repeat itself (`EX 1 EX 2`), not mix with another.
fn same_expire_option(options: &SetOptions, option: &[u8]) -> bool {
    let Some((unit, absolute, _)) = &options.expire else {
        return true;
    };
    let current: &[u8] = match (unit, absolute) {
        (1000, false) => b"ex",
        (1, false) => b"px",
        (1000, true) => b"exat",
        _ => b"pxat",
    };
    current == option
}

/// The deadline an expiry argument names, or Redis's error for `command`.
fn deadline(ctx: &Ctx, arg: &[u8], unit: i64, absolute: bool, command: &str) -> Result<i64, Fail> {
    let amount = int_arg(arg)?;
    let invalid = || Fail::from(format!("ERR invalid expire time in '{command}' command"));
    if amount <= 0 || (unit == 1000 && amount > i64::MAX / 1000) {
        return Err(invalid());
    }
    let mut at = amount * unit;
    if !absolute {
        at = at.checked_add(ctx.now.0).ok_or_else(invalid)?;
    }
    Ok(at)
}

pub fn set(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let options = parse_set_options(args)?;
    let expires_at = match &options.expire {
        Some((unit, absolute, arg)) => Some(deadline(ctx, arg, *unit, *absolute, "set")?),
        None => None,
    };
    let key = &args[1];
    let old = if options.get {
        ctx.string(key)?.cloned()
    } else {
        None
    };
    // One lookup for both questions: is the key there, and what is its deadline (a write's
    // lookup: no `keymiss`).
    let current_deadline = ctx.store.db.get(key, ctx.now).map(|entry| entry.expires_at);
    let found = current_deadline.is_some();
    if (options.nx && found) || (options.xx && !found) {
        if options.get {
            ctx.out.maybe_bulk(old.as_deref());
        } else {
            ctx.out.null();
        }
        return Ok(());
    }
    let expires_at = if options.keep_ttl {
        current_deadline.flatten()
    } else {
        expires_at
    };
    store_string(ctx, key, &args[2], expires_at);
    ctx.notify(notify::STRING, "set", key);
    if options.expire.is_some() {
        ctx.notify(notify::GENERIC, "expire", key);
    }
    if options.get {
        ctx.out.maybe_bulk(old.as_deref());
    } else {
        ctx.out.ok();
    }
    match expires_at {
        Some(at) if options.expire.is_some() => ctx.changed_as(vec![
            Bytes::from_static(b"SET"),
            key.clone(),
            args[2].clone(),
            Bytes::from_static(b"PXAT"),
            Bytes::from(at.to_string()),
        ]),
        _ => ctx.changed(),
    }
    Ok(())
}

fn store_string(ctx: &mut Ctx, key: &[u8], value: &[u8], expires_at: Option<i64>) {
    ctx.store
        .db
        .set(key, Value::Str(CompactBytes::new(value)), expires_at);
}

pub fn setnx(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    if ctx.entry(&args[1]).is_some() {
        ctx.out.int(0);
    } else {
        store_string(ctx, &args[1], &args[2], None);
        ctx.notify(notify::STRING, "set", &args[1]);
        ctx.out.int(1);
        ctx.changed();
    }
    Ok(())
}

fn set_with_expiry(ctx: &mut Ctx, args: &[Bytes], unit: i64, command: &str) -> Outcome {
    let at = deadline(ctx, &args[2], unit, false, command)?;
    store_string(ctx, &args[1], &args[3], Some(at));
    ctx.notify(notify::STRING, "set", &args[1]);
    ctx.notify(notify::GENERIC, "expire", &args[1]);
    ctx.out.ok();
    ctx.changed_as(vec![
        Bytes::from_static(b"SET"),
        args[1].clone(),
        args[3].clone(),
        Bytes::from_static(b"PXAT"),
        Bytes::from(at.to_string()),
    ]);
    Ok(())
}

pub fn setex(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    set_with_expiry(ctx, args, 1000, "setex")
}

pub fn psetex(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    set_with_expiry(ctx, args, 1, "psetex")
}

pub fn getset(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let old = ctx.string(&args[1])?.cloned();
    store_string(ctx, &args[1], &args[2], None);
    ctx.out.maybe_bulk(old.as_deref());
    ctx.notify(notify::STRING, "set", &args[1]);
    ctx.changed();
    Ok(())
}

pub fn getdel(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let old = ctx.string(&args[1])?.cloned();
    ctx.out.maybe_bulk(old.as_deref());
    if old.is_some() {
        ctx.store.db.remove(&args[1], ctx.now);
        ctx.notify(notify::GENERIC, "del", &args[1]);
        ctx.changed();
    }
    Ok(())
}

pub fn mget(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let values: Vec<Option<Bytes>> = args[1..]
        .iter()
        .map(|key| match ctx.entry(key) {
            Some(Entry {
                value: Value::Str(text),
                ..
            }) => Some(text.to_bytes()),
            _ => None,
        })
        .collect();
    ctx.out.array(values.iter().map(|value| value.as_deref()));
    Ok(())
}

pub fn mset(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    if args.len().is_multiple_of(2) {
        return Err(super::arity_error("mset"));
    }
    for pair in args[1..].chunks(2) {
        store_string(ctx, &pair[0], &pair[1], None);
        ctx.notify(notify::STRING, "set", &pair[0]);
    }
    ctx.out.ok();
    ctx.changed();
    Ok(())
}

pub fn msetnx(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    if args.len().is_multiple_of(2) {
        return Err(super::arity_error("msetnx"));
    }
    if args[1..]
        .chunks(2)
        .any(|pair| ctx.entry(&pair[0]).is_some())
    {
        ctx.out.int(0);
        return Ok(());
    }
    for pair in args[1..].chunks(2) {
        store_string(ctx, &pair[0], &pair[1], None);
        ctx.notify(notify::STRING, "set", &pair[0]);
    }
    ctx.out.int(1);
    ctx.changed();
    Ok(())
}

pub fn append(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let mut value = ctx
        .string(&args[1])?
        .map(|old| old.to_vec())
        .unwrap_or_default();
    value.extend_from_slice(&args[2]);
    let len = value.len();
    ctx.store
        .db
        .replace_value(&args[1], Value::Str(value.into()));
    ctx.notify(notify::STRING, "append", &args[1]);
    ctx.out.int(len as i64);
    ctx.changed();
    Ok(())
}

pub fn strlen(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let len = ctx.string(&args[1])?.map_or(0, |text| text.len());
    ctx.out.int(len as i64);
    Ok(())
}

/// Adds `by` to the integer at `key` (0 when missing), keeping its deadline.
fn add(ctx: &mut Ctx, key: &[u8], by: i64) -> Outcome {
    let current = match ctx.string(key)? {
        Some(text) => number::parse_i64(text).ok_or(Fail::from(text::NOT_INTEGER))?,
        None => 0,
    };
    let value = current.checked_add(by).ok_or(Fail::from(text::OVERFLOW))?;
    ctx.store
        .db
        .replace_value(key, Value::Str(value.to_string().into()));
    ctx.notify(notify::STRING, "incrby", key);
    ctx.out.int(value);
    ctx.changed();
    Ok(())
}

pub fn incr(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    add(ctx, &args[1], 1)
}

pub fn decr(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    add(ctx, &args[1], -1)
}

pub fn incrby(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let by = int_arg(&args[2])?;
    add(ctx, &args[1], by)
}

pub fn decrby(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let by = int_arg(&args[2])?;
    if by == i64::MIN {
        return Err("ERR decrement would overflow".into());
    }
    add(ctx, &args[1], -by)
}

pub fn incrbyfloat(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let key = &args[1];
    let current = match ctx.string(key)? {
        Some(text) => parse_float(text).ok_or(Fail::from(text::NOT_FLOAT))?,
        None => LongDouble::ZERO,
    };
    let by = parse_float(&args[2]).ok_or(Fail::from(text::NOT_FLOAT))?;
    let sum = current
        .add(by)
        .ok_or(Fail::from("ERR increment would produce NaN or Infinity"))?
        .format();
    ctx.store
        .db
        .replace_value(key, Value::Str(sum.clone().into()));
    ctx.notify(notify::STRING, "incrbyfloat", key);
    ctx.out.bulk(sum.as_bytes());
    ctx.changed_as(vec![
        Bytes::from_static(b"SET"),
        key.clone(),
        Bytes::from(sum),
        Bytes::from_static(b"KEEPTTL"),
    ]);
    Ok(())
}
