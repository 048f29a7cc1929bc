//! Sorted-set ranges: ZRANGE (by rank, BYSCORE, BYLEX, REV, LIMIT, WITHSCORES) and its older
//! forms, ZRANGESTORE, ZCOUNT, ZLEXCOUNT and ZREMRANGEBYRANK/BYSCORE/BYLEX, parsed in Redis's
//! order with its error texts.

use bytes::Bytes;

use super::zsets::{account, reply_members};
use super::{int_arg, Ctx, Fail, Outcome};
use crate::state::db::Value;
use crate::state::notify;
use crate::state::reply::text;
use crate::state::zset::{LexBound, Range, ScoreBound, ZSet};

const NOT_FLOAT_RANGE: &str = "ERR min or max is not a float";
const NOT_LEX_RANGE: &str = "ERR min or max not valid string range item";

/// One end of a score range as `zslParseRangeItem` reads it: `(` for exclusive, then what
/// `strtod` takes (leading spaces, `inf`, overflow to infinity), the whole text, no NaN.
fn score_bound(arg: &[u8]) -> Option<ScoreBound> {
    let (exclusive, rest) = match arg.first() {
        Some(b'(') => (true, &arg[1..]),
        _ => (false, arg),
    };
    let text = std::str::from_utf8(rest).ok()?;
    let value = if text.is_empty() {
        0.0
    } else {
        text.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c'])
            .parse::<f64>()
            .ok()?
    };
    (!value.is_nan()).then_some(ScoreBound { value, exclusive })
}

fn lex_bound(arg: &[u8]) -> Option<LexBound> {
    match arg {
        b"-" => Some(LexBound::Min),
        b"+" => Some(LexBound::Max),
        [b'[', rest @ ..] => Some(LexBound::Inclusive(Bytes::copy_from_slice(rest))),
        [b'(', rest @ ..] => Some(LexBound::Exclusive(Bytes::copy_from_slice(rest))),
        _ => None,
    }
}

pub fn score_range(min: &[u8], max: &[u8]) -> Result<Range, Fail> {
    match (score_bound(min), score_bound(max)) {
        (Some(min), Some(max)) => Ok(Range::Score(min, max)),
        _ => Err(NOT_FLOAT_RANGE.into()),
    }
}

pub fn lex_range(min: &[u8], max: &[u8]) -> Result<Range, Fail> {
    match (lex_bound(min), lex_bound(max)) {
        (Some(min), Some(max)) => Ok(Range::Lex(min, max)),
        _ => Err(NOT_LEX_RANGE.into()),
    }
}

/// Ranks `start..=stop` (negative from the end) clamped to a set of `len`, as Redis does; `None`
/// when empty.
pub fn clamp_ranks(start: i64, stop: i64, len: usize) -> Option<(usize, usize)> {
    let len = len as i64;
    let mut start = if start < 0 {
        len.saturating_add(start)
    } else {
        start
    };
    let mut stop = if stop < 0 {
        len.saturating_add(stop)
    } else {
        stop
    };
    if start < 0 {
        start = 0;
    }
    if start > stop || start >= len {
        return None;
    }
    if stop >= len {
        stop = len - 1;
    }
    Some((start as usize, stop as usize))
}

#[derive(Clone, Copy, PartialEq)]
enum By {
    Rank,
    Score,
    Lex,
}

/// What a ZRANGE-like command asks for.
struct Query {
    reverse: bool,
    withscores: bool,
    limit: Option<(i64, i64)>,
    ranks: (i64, i64),
    range: Option<Range>,
}

/// Parses `key min max [options]` (at `args[0]`), where `by`/`reverse` are fixed by the older
/// command forms.
fn parse_query(
    args: &[Bytes],
    by: Option<By>,
    reverse: Option<bool>,
    store: bool,
) -> Result<Query, Fail> {
    let (mut by, mut reverse) = (by, reverse);
    let mut withscores = false;
    let mut limit = None;
    let mut i = 3;
    while i < args.len() {
        let left = args.len() - i - 1;
        match args[i].to_ascii_lowercase().as_slice() {
            b"withscores" if !store => withscores = true,
            b"limit" if left >= 2 => {
                limit = Some((int_arg(&args[i + 1])?, int_arg(&args[i + 2])?));
                i += 2;
            }
            b"rev" if reverse.is_none() => reverse = Some(true),
            b"bylex" if by.is_none() => by = Some(By::Lex),
            b"byscore" if by.is_none() => by = Some(By::Score),
            _ => return Err(text::SYNTAX.into()),
        }
        i += 1;
    }
    let reverse = reverse.unwrap_or(false);
    let by = by.unwrap_or(By::Rank);
    if limit.is_some() && by == By::Rank {
        return Err(
            "ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX"
                .into(),
        );
    }
    if withscores && by == By::Lex {
        return Err("ERR syntax error, WITHSCORES not supported in combination with BYLEX".into());
    }
    let (min, max) = if reverse && by != By::Rank {
        (&args[2], &args[1])
    } else {
        (&args[1], &args[2])
    };
    let mut query = Query {
        reverse,
        withscores,
        limit,
        ranks: (0, 0),
        range: None,
    };
    match by {
        By::Rank => query.ranks = (int_arg(min)?, int_arg(max)?),
        By::Score => query.range = Some(score_range(min, max)?),
        By::Lex => query.range = Some(lex_range(min, max)?),
    }
    Ok(query)
}

/// The members a query selects, in reply order.
fn select(zset: &ZSet, query: &Query) -> Vec<(Bytes, f64)> {
    let Some(range) = &query.range else {
        let Some((start, stop)) = clamp_ranks(query.ranks.0, query.ranks.1, zset.len()) else {
            return Vec::new();
        };
        return if query.reverse {
            let len = zset.len();
            zset.by_rank(len - 1 - stop, len - 1 - start, true)
        } else {
            zset.by_rank(start, stop, false)
        };
    };
    let Some((first, last)) = zset.range_ranks(range) else {
        return Vec::new();
    };
    let (offset, count) = query.limit.unwrap_or((0, -1));
    if offset < 0 {
        return Vec::new();
    }
    let within = last - first + 1;
    let offset = offset as u64;
    if offset >= within as u64 {
        return Vec::new();
    }
    let offset = offset as usize;
    let taken = if count < 0 {
        within - offset
    } else {
        (within - offset).min(count as u64 as usize)
    };
    if taken == 0 {
        return Vec::new();
    }
    if query.reverse {
        zset.by_rank(last + 1 - offset - taken, last - offset, true)
    } else {
        zset.by_rank(first + offset, first + offset + taken - 1, false)
    }
}

fn range_command(ctx: &mut Ctx, args: &[Bytes], by: Option<By>, reverse: Option<bool>) -> Outcome {
    let query = parse_query(&args[1..], by, reverse, false)?;
    let items = match ctx.zset(&args[1])? {
        Some(zset) => select(zset, &query),
        None => Vec::new(),
    };
    reply_members(ctx, &items, query.withscores);
    Ok(())
}

pub fn zrange(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    range_command(ctx, args, None, None)
}

pub fn zrevrange(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    range_command(ctx, args, Some(By::Rank), Some(true))
}

pub fn zrangebyscore(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    range_command(ctx, args, Some(By::Score), Some(false))
}

pub fn zrevrangebyscore(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    range_command(ctx, args, Some(By::Score), Some(true))
}

pub fn zrangebylex(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    range_command(ctx, args, Some(By::Lex), Some(false))
}

pub fn zrevrangebylex(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    range_command(ctx, args, Some(By::Lex), Some(true))
}

/// Stores `items` as the sorted set at `dest` (deleting it if there are none); how many.
/// Stores a computed sorted set at `dest` (an empty one removes it); `event` is the command's
/// keyspace event.
pub fn store_result(
    ctx: &mut Ctx,
    dest: &[u8],
    items: impl IntoIterator<Item = (Bytes, f64)>,
    event: &str,
) {
    let mut result = ZSet::default();
    for (member, score) in items {
        result.insert(&member, score);
    }
    let len = result.len();
    // Redis replies first, then tells of the store or the removal.
    ctx.out.int(len as i64);
    if len > 0 {
        ctx.store.db.set(dest, Value::ZSet(Box::new(result)), None);
        ctx.notify(notify::ZSET, event, dest);
        ctx.changed();
    } else if ctx.store.db.remove(dest, ctx.now).is_some() {
        ctx.notify(notify::GENERIC, "del", dest);
        ctx.changed();
    }
}

pub fn zrangestore(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let query = parse_query(&args[2..], None, None, true)?;
    let items = match ctx.zset(&args[2])? {
        Some(zset) => select(zset, &query),
        None => Vec::new(),
    };
    store_result(ctx, &args[1], items, "zrangestore");
    Ok(())
}

pub fn zcount(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let range = score_range(&args[2], &args[3])?;
    let count = ctx.zset(&args[1])?.map_or(0, |zset| zset.count(&range));
    ctx.out.int(count as i64);
    Ok(())
}

pub fn zlexcount(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let range = lex_range(&args[2], &args[3])?;
    let count = ctx.zset(&args[1])?.map_or(0, |zset| zset.count(&range));
    ctx.out.int(count as i64);
    Ok(())
}

fn remove_range(ctx: &mut Ctx, args: &[Bytes], by: By) -> Outcome {
    let query = Query {
        reverse: false,
        withscores: false,
        limit: None,
        ranks: match by {
            By::Rank => (int_arg(&args[2])?, int_arg(&args[3])?),
            _ => (0, 0),
        },
        range: match by {
            By::Rank => None,
            By::Score => Some(score_range(&args[2], &args[3])?),
            By::Lex => Some(lex_range(&args[2], &args[3])?),
        },
    };
    let key = &args[1];
    let Some(zset) = ctx.zset_mut(key, false)? else {
        ctx.out.int(0);
        return Ok(());
    };
    let before = zset.cost();
    let items = select(zset, &query);
    for (member, _) in &items {
        zset.remove(member);
    }
    let after = zset.cost();
    account(ctx, key, before, after);
    if !items.is_empty() {
        let event = match by {
            By::Rank => "zremrangebyrank",
            By::Score => "zremrangebyscore",
            By::Lex => "zremrangebylex",
        };
        ctx.notify_emptied(notify::ZSET, event, key);
        ctx.changed();
    }
    ctx.out.int(items.len() as i64);
    Ok(())
}

pub fn zremrangebyrank(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    remove_range(ctx, args, By::Rank)
}

pub fn zremrangebyscore(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    remove_range(ctx, args, By::Score)
}

pub fn zremrangebylex(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    remove_range(ctx, args, By::Lex)
}
