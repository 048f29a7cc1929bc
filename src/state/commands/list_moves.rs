//! List commands that look inside a list or move items between lists: LPUSHX, RPUSHX, LSET,
//! LINSERT, LREM, LPOS, LMOVE, RPOPLPUSH, LMPOP, with Redis's argument order and error texts.

use bytes::Bytes;

use super::{int_arg, Ctx, Fail, Outcome};
use crate::state::db::item_cost;
use crate::state::notify;
use crate::state::reply::text;

fn push_event(front: bool) -> &'static str {
    if front {
        "lpush"
    } else {
        "rpush"
    }
}

fn pop_event(front: bool) -> &'static str {
    if front {
        "lpop"
    } else {
        "rpop"
    }
}

fn push_existing(ctx: &mut Ctx, args: &[Bytes], front: bool) -> Outcome {
    let Some(list) = ctx.list_mut(&args[1], false)? else {
        ctx.out.int(0);
        return Ok(());
    };
    let mut added = 0;
    for item in &args[2..] {
        added += item_cost(item);
        if front {
            list.push_front(item.clone());
        } else {
            list.push_back(item.clone());
        }
    }
    let len = list.len();
    ctx.store.db.grew(added);
    ctx.out.int(len as i64);
    ctx.notify(notify::LIST, push_event(front), &args[1]);
    ctx.changed();
    Ok(())
}

pub fn lpushx(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    push_existing(ctx, args, true)
}

pub fn rpushx(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    push_existing(ctx, args, false)
}

pub fn lset(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let index = int_arg(&args[2])?;
    let Some(list) = ctx.list_mut(&args[1], false)? else {
        return Err("ERR no such key".into());
    };
    let len = list.len() as i64;
    let position = if index < 0 { index + len } else { index };
    let Some(slot) = usize::try_from(position)
        .ok()
        .and_then(|position| list.get_mut(position))
    else {
        return Err("ERR index out of range".into());
    };
    let (added, removed) = (item_cost(&args[3]), item_cost(slot));
    *slot = args[3].clone();
    ctx.store.db.adjust(&args[1], added, removed);
    ctx.out.ok();
    ctx.notify(notify::LIST, "lset", &args[1]);
    ctx.changed();
    Ok(())
}

pub fn linsert(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let after = match args[2].to_ascii_lowercase().as_slice() {
        b"before" => false,
        b"after" => true,
        _ => return Err(text::SYNTAX.into()),
    };
    let Some(list) = ctx.list_mut(&args[1], false)? else {
        ctx.out.int(0);
        return Ok(());
    };
    let Some(at) = list.iter().position(|item| item == &args[3]) else {
        ctx.out.int(-1);
        return Ok(());
    };
    list.insert(if after { at + 1 } else { at }, args[4].clone());
    let len = list.len();
    ctx.store.db.grew(item_cost(&args[4]));
    ctx.notify(notify::LIST, "linsert", &args[1]);
    ctx.changed();
    ctx.out.int(len as i64);
    Ok(())
}

pub fn lrem(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let count = int_arg(&args[2])?;
    let key = &args[1];
    let Some(list) = ctx.list_mut(key, false)? else {
        ctx.out.int(0);
        return Ok(());
    };
    let limit = if count == 0 {
        u64::MAX
    } else {
        count.unsigned_abs()
    };
    let mut removed = 0u64;
    if count >= 0 {
        list.retain(|item| {
            let hit = removed < limit && item == &args[3];
            removed += u64::from(hit);
            !hit
        });
    } else {
        let mut index = list.len();
        while index > 0 && removed < limit {
            index -= 1;
            if list[index] == args[3] {
                list.remove(index);
                removed += 1;
            }
        }
    }
    ctx.store
        .db
        .adjust(key, 0, item_cost(&args[3]) * removed as usize);
    if removed > 0 {
        ctx.notify_emptied(notify::LIST, "lrem", key);
        ctx.changed();
    }
    ctx.out.int(removed as i64);
    Ok(())
}

/// A non-negative LPOS option, or `ERR {what} can't be negative`.
fn non_negative(arg: &[u8], what: &str) -> Result<u64, Fail> {
    crate::state::number::parse_i64(arg)
        .and_then(|value| u64::try_from(value).ok())
        .ok_or_else(|| format!("ERR {what} can't be negative").into())
}

pub fn lpos(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let (mut rank, mut count, mut maxlen) = (1i64, None, 0u64);
    let mut i = 3;
    while i < args.len() {
        let has_value = i + 1 < args.len();
        match args[i].to_ascii_lowercase().as_slice() {
            b"rank" if has_value => {
                rank = int_arg(&args[i + 1])?;
                if rank == i64::MIN {
                    return Err(super::MIN_COUNT.into());
                }
                if rank == 0 {
                    return Err("ERR RANK can't be zero: use 1 to start from the first match, 2 from the second ... or use negative to start from the end of the list".into());
                }
            }
            b"count" if has_value => count = Some(non_negative(&args[i + 1], "COUNT")?),
            b"maxlen" if has_value => maxlen = non_negative(&args[i + 1], "MAXLEN")?,
            _ => return Err(text::SYNTAX.into()),
        }
        i += 2;
    }
    let Some(list) = ctx.list(&args[1])? else {
        match count {
            Some(_) => ctx.out.array_header(0),
            None => ctx.out.null(),
        }
        return Ok(());
    };
    let wanted = match count {
        Some(0) => u64::MAX,
        Some(count) => count,
        None => 1,
    };
    let len = list.len();
    let compared = if maxlen == 0 {
        len
    } else {
        (maxlen.min(len as u64)) as usize
    };
    let mut skip = rank.unsigned_abs() - 1;
    let mut found = Vec::new();
    for step in 0..compared {
        let index = if rank > 0 { step } else { len - 1 - step };
        if list[index] == args[2] {
            if skip > 0 {
                skip -= 1;
                continue;
            }
            found.push(index as i64);
            if found.len() as u64 >= wanted {
                break;
            }
        }
    }
    match count {
        Some(_) => {
            ctx.out.array_header(found.len());
            for index in found {
                ctx.out.int(index);
            }
        }
        None => match found.first() {
            Some(&index) => ctx.out.int(index),
            None => ctx.out.null(),
        },
    }
    Ok(())
}

fn side(arg: &[u8]) -> Result<bool, Fail> {
    match arg.to_ascii_lowercase().as_slice() {
        b"left" => Ok(true),
        b"right" => Ok(false),
        _ => Err(text::SYNTAX.into()),
    }
}

/// Pops from `source` at `from_left`'s end and pushes to `dest`, replying with the item (between
/// the push's event and the pop's, where Redis writes it); the item, or `None` (and no reply)
/// when the source is empty or missing.
pub fn move_item(
    ctx: &mut Ctx,
    source: &[u8],
    dest: &[u8],
    from_left: bool,
    to_left: bool,
) -> Result<Option<Bytes>, Fail> {
    if ctx.list(source)?.is_none_or(|list| list.is_empty()) {
        return Ok(None);
    }
    ctx.list(dest)?;
    let list = ctx.list_mut(source, false)?.expect("checked above");
    let item = if from_left {
        list.pop_front()
    } else {
        list.pop_back()
    }
    .expect("not empty");
    // As in Redis: the push onto the destination, then the source's pop and, if that emptied
    // it, its removal (so a one-item list rotated onto itself stays the same key).
    let list = if source == dest {
        list
    } else {
        ctx.list_mut(dest, true)?.expect("created")
    };
    if to_left {
        list.push_front(item.clone());
    } else {
        list.push_back(item.clone());
    }
    ctx.notify(notify::LIST, push_event(to_left), dest);
    ctx.out.bulk(&item);
    ctx.store.db.adjust(source, 0, 0);
    ctx.notify_emptied(notify::LIST, pop_event(from_left), source);
    ctx.changed();
    Ok(Some(item))
}

pub fn lmove(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let (from_left, to_left) = (side(&args[3])?, side(&args[4])?);
    if move_item(ctx, &args[1], &args[2], from_left, to_left)?.is_none() {
        ctx.out.null();
    }
    Ok(())
}

pub fn rpoplpush(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    if move_item(ctx, &args[1], &args[2], false, true)?.is_none() {
        ctx.out.null();
    }
    Ok(())
}

pub fn lmpop(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let (keys, right, count) = super::zsets::mpop_args(&args[1..], [b"left", b"right"])?;
    for key in keys {
        let Some(list) = ctx.list_mut(key, false)? else {
            continue;
        };
        let taken = count.min(list.len());
        let items: Vec<Bytes> = if right {
            (0..taken).filter_map(|_| list.pop_back()).collect()
        } else {
            list.drain(..taken).collect()
        };
        let removed = items.iter().map(|item| item_cost(item)).sum();
        ctx.store.db.adjust(key, 0, removed);
        ctx.out.array_header(2);
        ctx.out.bulk(key);
        ctx.out.bulks(items.iter().map(|item| item.as_ref()));
        ctx.notify_emptied(notify::LIST, pop_event(!right), key);
        ctx.changed();
        return Ok(());
    }
    ctx.out.null_array();
    Ok(())
}
