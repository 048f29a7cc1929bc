//! The blocking commands: BLPOP, BRPOP, BLMOVE, BRPOPLPUSH, BLMPOP, BZPOPMIN, BZPOPMAX, BZMPOP.
//! Each serves at once when a key holds something; otherwise it blocks the client (see
//! `crate::state::blocking`) and its connection runs it again when woken, or answers the null
//! reply at the deadline. Inside `EXEC` they do not block: they answer as on a timeout.
//! `WAIT` is here too: with no replicas to wait for, it blocks only on its timeout.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{Ctx, Fail, Outcome};
use crate::state::blocking::{Blocked, OnTimeout};
use crate::state::db::{Entry, Value};
use crate::state::reply::text;

/// A timeout in seconds (a double, 0 for none) as Redis reads it: its deadline.
fn timeout_arg(arg: &[u8]) -> Result<Option<Instant>, Fail> {
    let seconds = super::zsets::parse_score(arg)
        .ok_or(Fail::from("ERR timeout is not a float or out of range"))?;
    // Redis multiplies into a `long long` of milliseconds: an infinite one comes out negative.
    if seconds < 0.0 || seconds.is_infinite() {
        return Err("ERR timeout is negative".into());
    }
    if seconds == 0.0 {
        return Ok(None);
    }
    let duration = Duration::try_from_secs_f64(seconds)
        .ok()
        .filter(|duration| duration.as_secs() < 100 * 365 * 86_400)
        .ok_or(Fail::from("ERR timeout is out of range"))?;
    Ok(Some(Instant::now() + duration))
}

/// Nothing to serve: block (or, inside `EXEC`, answer the null reply).
fn block(
    ctx: &mut Ctx,
    args: &[Bytes],
    keys: &[Bytes],
    deadline: Option<Instant>,
    exec_null_array: bool,
) -> Outcome {
    if ctx.client.in_exec {
        // Inside EXEC: BLMOVE and BRPOPLPUSH answer the null bulk, the others the null array.
        if exec_null_array {
            ctx.out.null_array();
        } else {
            ctx.out.null();
        }
        return Ok(());
    }
    let (id, db) = (ctx.client.id, ctx.client.db);
    ctx.store
        .waiting
        .block(id, &ctx.client.mailbox.clone(), db, keys);
    ctx.client.blocked = Some(Blocked {
        args: args.to_vec(),
        deadline,
        on_timeout: OnTimeout::NullArray,
    });
    Ok(())
}

/// Whether `key` holds a non-empty list (`zset`: sorted set); WRONGTYPE for another type.
fn ready(ctx: &mut Ctx, key: &[u8], zset: bool) -> Result<bool, Fail> {
    let retrying = ctx.client.retrying;
    match ctx.entry(key) {
        None => Ok(false),
        Some(Entry {
            value: Value::List(list),
            ..
        }) if !zset => Ok(!list.is_empty()),
        Some(Entry {
            value: Value::ZSet(set),
            ..
        }) if zset => Ok(!set.is_empty()),
        Some(_) if retrying => Ok(false),
        Some(_) => Err(text::WRONG_TYPE.into()),
    }
}

fn bpop(ctx: &mut Ctx, args: &[Bytes], front: bool) -> Outcome {
    let deadline = timeout_arg(&args[args.len() - 1])?;
    let keys = &args[1..args.len() - 1];
    for key in keys {
        if !ready(ctx, key, false)? {
            continue;
        }
        let list = ctx.list_mut(key, false)?.expect("ready");
        let item = if front {
            list.pop_front()
        } else {
            list.pop_back()
        }
        .expect("not empty");
        ctx.store
            .db
            .adjust(key, 0, crate::state::db::item_cost(&item));
        ctx.changed_as(vec![
            Bytes::from_static(if front { b"LPOP" } else { b"RPOP" }),
            key.clone(),
        ]);
        ctx.out.array_header(2);
        ctx.out.bulk(key);
        ctx.out.bulk(&item);
        let event = if front { "lpop" } else { "rpop" };
        ctx.notify_emptied(crate::state::notify::LIST, event, key);
        return Ok(());
    }
    block(ctx, args, keys, deadline, true)
}

pub fn blpop(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    bpop(ctx, args, true)
}

pub fn brpop(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    bpop(ctx, args, false)
}

fn bmove(ctx: &mut Ctx, args: &[Bytes], from_left: bool, to_left: bool, timeout: &[u8]) -> Outcome {
    let deadline = timeout_arg(timeout)?;
    if ctx.client.retrying && !ready(ctx, &args[1], false)? {
        return block(ctx, args, &args[1..2], deadline, false);
    }
    match super::list_moves::move_item(ctx, &args[1], &args[2], from_left, to_left)? {
        Some(_) => {
            let (from, to) = (side_name(from_left), side_name(to_left));
            ctx.changed_as(vec![
                Bytes::from_static(b"LMOVE"),
                args[1].clone(),
                args[2].clone(),
                Bytes::from_static(from),
                Bytes::from_static(to),
            ]);
            Ok(())
        }
        None => block(ctx, args, &args[1..2], deadline, false),
    }
}

fn side_name(left: bool) -> &'static [u8] {
    if left {
        b"LEFT"
    } else {
        b"RIGHT"
    }
}

fn side(arg: &[u8]) -> Result<bool, Fail> {
    match arg.to_ascii_lowercase().as_slice() {
        b"left" => Ok(true),
        b"right" => Ok(false),
        _ => Err(text::SYNTAX.into()),
    }
}

pub fn blmove(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let (from_left, to_left) = (side(&args[3])?, side(&args[4])?);
    bmove(ctx, args, from_left, to_left, &args[5])
}

pub fn brpoplpush(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    bmove(ctx, args, false, true, &args[3])
}

/// BLMPOP and BZMPOP: `timeout numkeys key… end [COUNT n]`.
fn bmpop(ctx: &mut Ctx, args: &[Bytes], zset: bool) -> Outcome {
    let deadline = timeout_arg(&args[1])?;
    let ends: [&[u8]; 2] = if zset {
        [b"min", b"max"]
    } else {
        [b"left", b"right"]
    };
    let (keys, _, _) = super::zsets::mpop_args(&args[2..], ends)?;
    let keys = keys.to_vec();
    for key in &keys {
        if ready(ctx, key, zset)? {
            let mut rest = vec![Bytes::from_static(if zset { b"ZMPOP" } else { b"LMPOP" })];
            rest.extend_from_slice(&args[2..]);
            ctx.changed_as(rest.clone());
            return if zset {
                super::zsets::zmpop(ctx, &rest)
            } else {
                super::list_moves::lmpop(ctx, &rest)
            };
        }
    }
    block(ctx, args, &keys, deadline, true)
}

pub fn blmpop(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    bmpop(ctx, args, false)
}

pub fn bzmpop(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    bmpop(ctx, args, true)
}

fn bzpop(ctx: &mut Ctx, args: &[Bytes], max: bool) -> Outcome {
    let deadline = timeout_arg(&args[args.len() - 1])?;
    let keys = &args[1..args.len() - 1];
    for key in keys {
        if !ready(ctx, key, true)? {
            continue;
        }
        let items = super::zsets::pop(ctx, key, 1, max)?;
        ctx.changed_as(vec![
            Bytes::from_static(if max { b"ZPOPMAX" } else { b"ZPOPMIN" }),
            key.clone(),
        ]);
        ctx.out.array_header(3);
        ctx.out.bulk(key);
        super::zsets::reply_popped(ctx, key, max, &items, false);
        return Ok(());
    }
    block(ctx, args, keys, deadline, true)
}

pub fn bzpopmin(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    bzpop(ctx, args, false)
}

pub fn bzpopmax(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    bzpop(ctx, args, true)
}

/// `WAIT numreplicas timeout`: the store has no replicas, so none acknowledge. As in Redis,
/// it answers 0 at once when that is enough (`numreplicas` 0 or less) or inside `EXEC`, and
/// otherwise blocks for `timeout` milliseconds (0: for ever) and then answers 0.
pub fn wait(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    const ACKNOWLEDGED: i64 = 0;
    let wanted = super::int_arg(&args[1])?;
    let milliseconds = crate::state::number::parse_i64(&args[2])
        .ok_or(Fail::from("ERR timeout is not an integer or out of range"))?;
    if milliseconds < 0 {
        return Err("ERR timeout is negative".into());
    }
    if wanted <= ACKNOWLEDGED || ctx.client.in_exec {
        ctx.out.int(ACKNOWLEDGED);
        return Ok(());
    }
    // A deadline past what `Instant` holds is as good as none.
    let deadline = match milliseconds.unsigned_abs() {
        0 => None,
        ms => Instant::now().checked_add(Duration::from_millis(ms)),
    };
    let (id, db) = (ctx.client.id, ctx.client.db);
    ctx.store
        .waiting
        .block(id, &ctx.client.mailbox.clone(), db, &[]);
    ctx.client.blocked = Some(Blocked {
        args: args.to_vec(),
        deadline,
        on_timeout: OnTimeout::Integer(ACKNOWLEDGED),
    });
    Ok(())
}
