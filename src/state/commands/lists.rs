//! List commands: pushes and pops at both ends, ranges, trimming, indexing.

use bytes::Bytes;

use super::{int_arg, Ctx, Fail, Outcome};
use std::collections::VecDeque;

use crate::state::db::{item_cost, Entry, Value};
use crate::state::notify;

fn push(ctx: &mut Ctx, args: &[Bytes], front: bool) -> Outcome {
    let list = ctx.list_mut(&args[1], true)?.expect("created");
    let mut added = 0;
    for item in &args[2..] {
        let item = Bytes::copy_from_slice(item);
        added += item_cost(&item);
        if front {
            list.push_front(item);
        } else {
            list.push_back(item);
        }
    }
    let len = list.len();
    ctx.store.db.grew(added);
    ctx.out.int(len as i64);
    ctx.notify(
        notify::LIST,
        if front { "lpush" } else { "rpush" },
        &args[1],
    );
    ctx.changed();
    Ok(())
}

pub fn lpush(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    push(ctx, args, true)
}

pub fn rpush(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    push(ctx, args, false)
}

fn pop(ctx: &mut Ctx, args: &[Bytes], front: bool, name: &str) -> Outcome {
    if args.len() > 3 {
        return Err(super::arity_error(name));
    }
    let count = match args.get(2) {
        Some(arg) => Some(
            crate::state::number::parse_i64(arg)
                .filter(|count| *count >= 0)
                .ok_or(Fail::from("ERR value is out of range, must be positive"))?,
        ),
        None => None,
    };
    let Some(list) = ctx.list_mut(&args[1], false)? else {
        match count {
            Some(_) => ctx.out.null_array(),
            None => ctx.out.null(),
        }
        return Ok(());
    };
    let wanted = count.unwrap_or(1).min(list.len() as i64) as usize;
    let mut popped = Vec::with_capacity(wanted);
    for _ in 0..wanted {
        let item = if front {
            list.pop_front()
        } else {
            list.pop_back()
        };
        popped.extend(item);
    }
    let removed = popped.iter().map(|item| item_cost(item)).sum();
    ctx.store.db.adjust(&args[1], 0, removed);
    match count {
        Some(_) => ctx.out.bulks(popped.iter().map(|item| item.as_ref())),
        None => ctx.out.maybe_bulk(popped.first().map(|item| item.as_ref())),
    }
    if !popped.is_empty() {
        ctx.notify_emptied(notify::LIST, if front { "lpop" } else { "rpop" }, &args[1]);
        ctx.changed();
    }
    Ok(())
}

pub fn lpop(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    pop(ctx, args, true, "lpop")
}

pub fn rpop(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    pop(ctx, args, false, "rpop")
}

/// Redis's range arithmetic: negative indexes count from the end; `None` for an empty range.
fn clamp_range(start: i64, end: i64, len: usize) -> Option<(usize, usize)> {
    let len = len as i64;
    let start = if start < 0 {
        (start + len).max(0)
    } else {
        start
    };
    let end = if end < 0 { end + len } else { end };
    if start > end || start >= len {
        return None;
    }
    Some((start as usize, end.min(len - 1) as usize))
}

pub fn lrange(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let start = int_arg(&args[2])?;
    let end = int_arg(&args[3])?;
    // Checked (type, key miss) first; then written straight from the list, item by item.
    let len = ctx.list(&args[1])?.map_or(0, VecDeque::len);
    let Some((start, end)) = clamp_range(start, end, len) else {
        ctx.out.bulks([]);
        return Ok(());
    };
    if let Some(Entry {
        value: Value::List(list),
        ..
    }) = ctx.store.db.get(&args[1], ctx.now)
    {
        ctx.out
            .bulks(list.range(start..=end).map(|item| item.as_ref()));
    }
    Ok(())
}

pub fn llen(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let len = ctx.list(&args[1])?.map_or(0, |list| list.len());
    ctx.out.int(len as i64);
    Ok(())
}

pub fn ltrim(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let start = int_arg(&args[2])?;
    let end = int_arg(&args[3])?;
    let Some(list) = ctx.list_mut(&args[1], false)? else {
        ctx.out.ok();
        return Ok(());
    };
    let before = list.len();
    let (keep_from, keep_to) = match clamp_range(start, end, list.len()) {
        Some(range) => range,
        None => (list.len(), list.len()),
    };
    let mut removed: usize = list
        .drain(keep_to.saturating_add(1).min(list.len())..)
        .map(|item| item_cost(&item))
        .sum();
    removed += list
        .drain(..keep_from.min(list.len()))
        .map(|item| item_cost(&item))
        .sum::<usize>();
    let changed = list.len() != before;
    ctx.store.db.adjust(&args[1], 0, removed);
    ctx.notify_emptied(notify::LIST, "ltrim", &args[1]);
    if changed {
        ctx.changed();
    }
    ctx.out.ok();
    Ok(())
}

pub fn lindex(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let index = int_arg(&args[2])?;
    let item = ctx.list(&args[1])?.and_then(|list| {
        let index = if index < 0 {
            index + list.len() as i64
        } else {
            index
        };
        usize::try_from(index)
            .ok()
            .and_then(|index| list.get(index).cloned())
    });
    ctx.out.maybe_bulk(item.as_deref());
    Ok(())
}
