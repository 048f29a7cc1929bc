//! SINTER, SUNION, SDIFF, their STORE forms, and SINTERCARD.

use bytes::Bytes;
use indexmap::IndexSet;

use super::{Ctx, Fail, Outcome};
use crate::state::db::Value;
use crate::state::notify;

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Inter,
    Union,
    Diff,
}

/// The sets at `keys` (every key type-checked first, as Redis); a missing key is `None`.
fn sets_of(ctx: &mut Ctx, keys: &[Bytes]) -> Result<Vec<Option<IndexSet<Bytes>>>, Fail> {
    let mut sets = Vec::with_capacity(keys.len());
    for key in keys {
        sets.push(ctx.set(key)?.cloned());
    }
    Ok(sets)
}

fn compute(sets: Vec<Option<IndexSet<Bytes>>>, op: Op) -> IndexSet<Bytes> {
    match op {
        Op::Inter => {
            if sets.iter().any(Option::is_none) {
                return IndexSet::new();
            }
            let mut sets: Vec<IndexSet<Bytes>> = sets.into_iter().flatten().collect();
            sets.sort_by_key(IndexSet::len);
            let mut iter = sets.into_iter();
            let first = iter.next().unwrap_or_default();
            let rest: Vec<IndexSet<Bytes>> = iter.collect();
            first
                .into_iter()
                .filter(|member| rest.iter().all(|set| set.contains(member)))
                .collect()
        }
        Op::Union => sets.into_iter().flatten().flatten().collect(),
        Op::Diff => {
            let mut iter = sets.into_iter();
            let mut first = iter.next().flatten().unwrap_or_default();
            for set in iter.flatten() {
                first.retain(|member| !set.contains(member));
            }
            first
        }
    }
}

fn reply(ctx: &mut Ctx, args: &[Bytes], op: Op) -> Outcome {
    let sets = sets_of(ctx, &args[1..])?;
    let result = compute(sets, op);
    ctx.out.set_of(result.iter().map(|member| member.as_ref()));
    Ok(())
}

fn store(ctx: &mut Ctx, args: &[Bytes], op: Op) -> Outcome {
    let sets = sets_of(ctx, &args[2..])?;
    // Redis replies before it tells of the store, and of a removal too, except for an
    // intersection with a missing set (its shortcut removes first).
    let removal_first = matches!(op, Op::Inter) && sets.iter().any(Option::is_none);
    let result = compute(sets, op);
    let dest = &args[1];
    let len = result.len();
    if result.is_empty() {
        if !removal_first {
            ctx.out.int(0);
        }
        if ctx.store.db.remove(dest, ctx.now).is_some() {
            ctx.notify(notify::GENERIC, "del", dest);
        }
        if removal_first {
            ctx.out.int(0);
        }
    } else {
        ctx.store.db.set(dest, Value::Set(Box::new(result)), None);
        ctx.out.int(len as i64);
        let event = match op {
            Op::Inter => "sinterstore",
            Op::Union => "sunionstore",
            Op::Diff => "sdiffstore",
        };
        ctx.notify(notify::SET, event, dest);
    }
    ctx.changed();
    Ok(())
}

pub fn sinter(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    reply(ctx, args, Op::Inter)
}

pub fn sunion(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    reply(ctx, args, Op::Union)
}

pub fn sdiff(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    reply(ctx, args, Op::Diff)
}

pub fn sinterstore(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    store(ctx, args, Op::Inter)
}

pub fn sunionstore(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    store(ctx, args, Op::Union)
}

pub fn sdiffstore(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    store(ctx, args, Op::Diff)
}

/// `SINTERCARD numkeys key [key …] [LIMIT limit]`.
pub fn sintercard(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let count = crate::state::number::parse_i64(&args[1]).unwrap_or(0);
    if count <= 0 {
        return Err("ERR numkeys should be greater than 0".into());
    }
    let count = count as usize;
    if count > args.len() - 2 {
        return Err("ERR Number of keys can't be greater than number of args".into());
    }
    let mut limit = 0usize;
    let mut i = 2 + count;
    while i < args.len() {
        match (args[i].to_ascii_lowercase().as_slice(), args.get(i + 1)) {
            (b"limit", Some(value)) => {
                let value = crate::state::number::parse_i64(value)
                    .filter(|value| *value >= 0)
                    .ok_or(Fail::from("ERR LIMIT can't be negative"))?;
                limit = value as usize;
                i += 2;
            }
            _ => return Err(crate::state::reply::text::SYNTAX.into()),
        }
    }
    let sets = sets_of(ctx, &args[2..2 + count])?;
    let mut cardinality = compute(sets, Op::Inter).len();
    if limit > 0 {
        cardinality = cardinality.min(limit);
    }
    ctx.out.int(cardinality as i64);
    Ok(())
}
