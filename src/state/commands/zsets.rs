//! Sorted-set commands on members one at a time (ZADD, ZINCRBY, ZSCORE, ZREM, ZRANK, …), the
//! pops (ZPOPMIN, ZPOPMAX, ZMPOP), ZRANDMEMBER and ZSCAN. Ranges are in `zset_ranges`, the
//! algebra in `zset_algebra`; the structure itself is `crate::state::zset`.

use bytes::Bytes;

use super::{int_arg, pick_distinct, random_below, Ctx, Fail, Outcome};
use crate::state::notify;
use crate::state::reply::text;
use crate::state::zset::ZSet;

/// A score as Redis's `string2d` reads it (`strtod`: no space first, the whole text, no NaN,
/// no overflow or underflow to zero).
pub fn parse_score(arg: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(arg).ok()?;
    if text.is_empty() || text.starts_with(|c: char| c.is_ascii_whitespace()) {
        return None;
    }
    let value: f64 = text.parse().ok()?;
    let lower = text.to_ascii_lowercase();
    let spelled_infinite = lower.trim_start_matches(['+', '-']).starts_with("inf");
    let nonzero_digits = text
        .split(['e', 'E'])
        .next()
        .is_some_and(|digits| digits.bytes().any(|b| (b'1'..=b'9').contains(&b)));
    if value.is_nan()
        || (value.is_infinite() && !spelled_infinite)
        || (value == 0.0 && nonzero_digits)
    {
        return None;
    }
    Some(value)
}

pub fn score_arg(arg: &[u8]) -> Result<f64, Fail> {
    parse_score(arg).ok_or_else(|| text::NOT_FLOAT.into())
}

/// Accounts for a sorted set's change of cost, and removes the key if it is now empty.
pub fn account(ctx: &mut Ctx, key: &[u8], before: usize, after: usize) {
    ctx.store.db.adjust(
        key,
        after.saturating_sub(before),
        before.saturating_sub(after),
    );
}

/// Members with their scores: a flat array in RESP2; in RESP3 an array of `[member, score]`
/// pairs (as Redis 7.0's ZRANGE WITHSCORES), or of members alone without scores.
pub fn reply_members(ctx: &mut Ctx, items: &[(Bytes, f64)], withscores: bool) {
    let resp3 = ctx.out.resp3;
    if withscores && !resp3 {
        ctx.out.array_header(items.len() * 2);
    } else {
        ctx.out.array_header(items.len());
    }
    for (member, score) in items {
        if withscores && resp3 {
            ctx.out.array_header(2);
        }
        ctx.out.bulk(member);
        if withscores {
            ctx.out.double(*score);
        }
    }
}

pub fn zadd(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let (mut nx, mut xx, mut gt, mut lt, mut ch, mut incr) =
        (false, false, false, false, false, false);
    let mut i = 2;
    while i < args.len() {
        match args[i].to_ascii_lowercase().as_slice() {
            b"nx" => nx = true,
            b"xx" => xx = true,
            b"gt" => gt = true,
            b"lt" => lt = true,
            b"ch" => ch = true,
            b"incr" => incr = true,
            _ => break,
        }
        i += 1;
    }
    let pairs = &args[i..];
    if pairs.is_empty() || pairs.len() % 2 == 1 {
        return Err(text::SYNTAX.into());
    }
    if nx && xx {
        return Err("ERR XX and NX options at the same time are not compatible".into());
    }
    if ((gt || lt) && nx) || (gt && lt) {
        return Err("ERR GT, LT, and/or NX options at the same time are not compatible".into());
    }
    if incr && pairs.len() > 2 {
        return Err("ERR INCR option supports a single increment-element pair".into());
    }
    let scores = pairs
        .chunks(2)
        .map(|pair| score_arg(&pair[0]))
        .collect::<Result<Vec<f64>, Fail>>()?;
    let key = &args[1];
    if ctx.zset(key)?.is_none() && xx {
        if incr {
            ctx.out.null();
        } else {
            ctx.out.int(0);
        }
        return Ok(());
    }
    let zset = ctx.zset_mut(key, true)?.expect("created");
    let before = zset.cost();
    let (mut added, mut updated, mut processed) = (0, 0, 0);
    let mut result = None;
    let mut failed = None;
    for (pair, &score) in pairs.chunks(2).zip(&scores) {
        let member = &pair[1];
        match zset.score(member) {
            Some(current) => {
                if nx {
                    continue;
                }
                let new = if incr { current + score } else { score };
                if new.is_nan() {
                    failed = Some("ERR resulting score is not a number (NaN)");
                    break;
                }
                if (lt && new >= current) || (gt && new <= current) {
                    continue;
                }
                if new != current {
                    zset.insert(member, new);
                    updated += 1;
                }
                processed += 1;
                result = Some(new);
            }
            None => {
                if xx {
                    continue;
                }
                zset.insert(member, score);
                added += 1;
                processed += 1;
                result = Some(score);
            }
        }
    }
    let after = zset.cost();
    account(ctx, key, before, after);
    if added + updated > 0 {
        ctx.changed();
    }
    if let Some(reason) = failed {
        return Err(reason.into());
    }
    if incr {
        match (processed > 0).then_some(result).flatten() {
            Some(score) => ctx.out.double(score),
            None => ctx.out.null(),
        }
    } else {
        ctx.out.int(if ch { added + updated } else { added });
    }
    if added + updated > 0 {
        ctx.notify(notify::ZSET, if incr { "zincr" } else { "zadd" }, key);
    }
    Ok(())
}

pub fn zincrby(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let increment = score_arg(&args[2])?;
    let key = &args[1];
    let zset = ctx.zset_mut(key, true)?.expect("created");
    let before = zset.cost();
    let current = zset.score(&args[3]);
    let new = current.unwrap_or(0.0) + increment;
    let failed = new.is_nan();
    if !failed {
        zset.insert(&args[3], new);
    }
    let updated = current != Some(new);
    let after = zset.cost();
    account(ctx, key, before, after);
    if failed {
        return Err("ERR resulting score is not a number (NaN)".into());
    }
    ctx.changed();
    ctx.out.double(new);
    if updated {
        ctx.notify(notify::ZSET, "zincr", key);
    }
    Ok(())
}

pub fn zcard(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let len = ctx.zset(&args[1])?.map_or(0, ZSet::len);
    ctx.out.int(len as i64);
    Ok(())
}

pub fn zscore(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    match ctx.zset(&args[1])?.and_then(|zset| zset.score(&args[2])) {
        Some(score) => ctx.out.double(score),
        None => ctx.out.null(),
    }
    Ok(())
}

pub fn zmscore(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let zset = ctx.zset(&args[1])?;
    let scores: Vec<Option<f64>> = args[2..]
        .iter()
        .map(|member| zset.and_then(|zset| zset.score(member)))
        .collect();
    ctx.out.array_header(scores.len());
    for score in scores {
        match score {
            Some(score) => ctx.out.double(score),
            None => ctx.out.null(),
        }
    }
    Ok(())
}

pub fn zrem(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let key = &args[1];
    let Some(zset) = ctx.zset_mut(key, false)? else {
        ctx.out.int(0);
        return Ok(());
    };
    let before = zset.cost();
    let removed = args[2..]
        .iter()
        .filter(|member| zset.remove(member).is_some())
        .count();
    let after = zset.cost();
    account(ctx, key, before, after);
    if removed > 0 {
        ctx.notify_emptied(notify::ZSET, "zrem", key);
        ctx.changed();
    }
    ctx.out.int(removed as i64);
    Ok(())
}

fn rank(ctx: &mut Ctx, args: &[Bytes], reverse: bool) -> Outcome {
    match ctx
        .zset(&args[1])?
        .and_then(|zset| zset.rank(&args[2], reverse))
    {
        Some(rank) => ctx.out.int(rank as i64),
        None => ctx.out.null(),
    }
    Ok(())
}

pub fn zrank(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    rank(ctx, args, false)
}

pub fn zrevrank(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    rank(ctx, args, true)
}

/// Removes up to `count` members from the low (or high) end of the set at `key` (the caller
/// replies with [`reply_popped`]).
pub fn pop(ctx: &mut Ctx, key: &[u8], count: usize, max: bool) -> Result<Vec<(Bytes, f64)>, Fail> {
    let Some(zset) = ctx.zset_mut(key, false)? else {
        return Ok(Vec::new());
    };
    let before = zset.cost();
    let taken = count.min(zset.len());
    let items = if taken == 0 {
        Vec::new()
    } else if max {
        zset.by_rank(zset.len() - taken, zset.len() - 1, true)
    } else {
        zset.by_rank(0, taken - 1, false)
    };
    for (member, _) in &items {
        zset.remove(member);
    }
    let after = zset.cost();
    account(ctx, key, before, after);
    if !items.is_empty() {
        ctx.changed();
    }
    Ok(items)
}

/// The members a pop took from `key` (member and score, each pair an array of its own when
/// `nested`), after the reply's headers, with the events where Redis writes them: the pop's
/// before the members, `del` after them if it emptied the key.
pub fn reply_popped(ctx: &mut Ctx, key: &[u8], max: bool, items: &[(Bytes, f64)], nested: bool) {
    if items.is_empty() {
        return;
    }
    ctx.notify(notify::ZSET, if max { "zpopmax" } else { "zpopmin" }, key);
    for (member, score) in items {
        if nested {
            ctx.out.array_header(2);
        }
        ctx.out.bulk(member);
        ctx.out.double(*score);
    }
    if !ctx.store.db.is_live(key, ctx.now) {
        ctx.notify(notify::GENERIC, "del", key);
    }
}

fn zpop(ctx: &mut Ctx, args: &[Bytes], max: bool) -> Outcome {
    if args.len() > 3 {
        return Err(text::SYNTAX.into());
    }
    let count = match args.get(2) {
        Some(arg) => {
            let count = crate::state::number::parse_i64(arg)
                .filter(|count| *count >= 0)
                .ok_or(Fail::from("ERR value is out of range, must be positive"))?;
            Some(count as usize)
        }
        None => None,
    };
    let items = pop(ctx, &args[1], count.unwrap_or(1), max)?;
    // With a count, RESP3 nests the pairs (as reply_members does); without, it stays flat.
    let nested = count.is_some() && ctx.out.resp3;
    ctx.out
        .array_header(if nested { items.len() } else { items.len() * 2 });
    reply_popped(ctx, &args[1], max, &items, nested);
    Ok(())
}

pub fn zpopmin(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    zpop(ctx, args, false)
}

pub fn zpopmax(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    zpop(ctx, args, true)
}

/// A count or numkeys from 1 up, with Redis's error `ERR {what} should be greater than 0` (for
/// a non-integer too).
pub fn positive_arg(arg: &[u8], what: &str) -> Result<usize, Fail> {
    match crate::state::number::parse_i64(arg) {
        Some(value) if value >= 1 => Ok(value as usize),
        _ => Err(format!("ERR {what} should be greater than 0").into()),
    }
}

/// ZMPOP's and LMPOP's arguments after the command name: the keys, which end (`ends`: the words
/// for the low and the high end; true for the high one), the count.
pub fn mpop_args<'a>(
    args: &'a [Bytes],
    ends: [&[u8]; 2],
) -> Result<(&'a [Bytes], bool, usize), Fail> {
    let numkeys = positive_arg(&args[0], "numkeys")?;
    let where_at = numkeys.checked_add(1).filter(|&at| at < args.len());
    let Some(where_at) = where_at else {
        return Err(text::SYNTAX.into());
    };
    let word = args[where_at].to_ascii_lowercase();
    let max = if word == ends[0] {
        false
    } else if word == ends[1] {
        true
    } else {
        return Err(text::SYNTAX.into());
    };
    let count = match &args[where_at + 1..] {
        [] => 1,
        [option, count] if option.eq_ignore_ascii_case(b"count") => positive_arg(count, "count")?,
        _ => return Err(text::SYNTAX.into()),
    };
    Ok((&args[1..=numkeys], max, count))
}

pub fn zmpop(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let (keys, max, count) = mpop_args(&args[1..], [b"min", b"max"])?;
    for key in keys {
        if ctx.zset(key)?.is_none() {
            continue;
        }
        let items = pop(ctx, key, count, max)?;
        ctx.out.array_header(2);
        ctx.out.bulk(key);
        ctx.out.array_header(items.len());
        reply_popped(ctx, key, max, &items, true);
        return Ok(());
    }
    ctx.out.null_array();
    Ok(())
}

/// `[member, score]` pairs, nested in RESP2 too (ZMPOP, ZRANDMEMBER's RESP3 form).
pub fn reply_pairs(ctx: &mut Ctx, items: &[(Bytes, f64)]) {
    ctx.out.array_header(items.len());
    for (member, score) in items {
        ctx.out.array_header(2);
        ctx.out.bulk(member);
        ctx.out.double(*score);
    }
}

pub fn zrandmember(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let Some(count_text) = args.get(2) else {
        let member = ctx.zset(&args[1])?.map(|zset| {
            zset.at_rank(random_below(zset.len()))
                .map(|(member, _)| member.clone())
        });
        ctx.out.maybe_bulk(member.flatten().as_deref());
        return Ok(());
    };
    let count = int_arg(count_text)?;
    if count == i64::MIN {
        return Err(super::MIN_COUNT.into());
    }
    let withscores = match &args[3..] {
        [] => false,
        [option] if option.eq_ignore_ascii_case(b"withscores") => true,
        _ => return Err(text::SYNTAX.into()),
    };
    if withscores && !(-(i64::MAX / 2)..=i64::MAX / 2).contains(&count) {
        return Err("ERR value is out of range".into());
    }
    if count < 0 && count.unsigned_abs() > super::MAX_RANDOM_REPEATS {
        return Err("ERR value is out of range".into());
    }
    let items: Vec<(Bytes, f64)> = match ctx.zset(&args[1])? {
        None => Vec::new(),
        Some(_) if count == 0 => Vec::new(),
        Some(zset) if count < 0 => (0..count.unsigned_abs())
            .filter_map(|_| zset.at_rank(random_below(zset.len())))
            .map(|(member, score)| (member.to_bytes(), score))
            .collect(),
        // The whole set, highest first, as Redis 7.0 returns a small one.
        Some(zset) if count as usize >= zset.len() => zset.by_rank(0, zset.len() - 1, true),
        Some(zset) => pick_distinct(zset.len(), count as usize)
            .into_iter()
            .filter_map(|rank| zset.at_rank(rank))
            .map(|(member, score)| (member.to_bytes(), score))
            .collect(),
    };
    if withscores && ctx.out.resp3 {
        reply_pairs(ctx, &items);
    } else {
        reply_members(ctx, &items, withscores);
    }
    Ok(())
}

/// Sets this small or smaller come back whole and in order in one `ZSCAN` step, as Redis's
/// listpack-encoded sorted sets do.
const SCAN_WHOLE: usize = 128;

pub fn zscan(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let options = super::keys::scan_options(args)?;
    let Some(zset) = ctx.zset(&args[1])? else {
        super::keys::scan_reply(ctx, 0, &[]);
        return Ok(());
    };
    let keep = |member: &[u8]| {
        options
            .pattern
            .is_none_or(|pattern| crate::state::glob::matches(pattern, member))
    };
    let (items, next): (Vec<(Bytes, f64)>, usize) = if zset.len() <= SCAN_WHOLE {
        let items = zset
            .iter()
            .filter(|(member, _)| keep(member))
            .map(|(member, score)| (member.to_bytes(), score))
            .collect();
        (items, 0)
    } else {
        let (range, next) = super::keys::scan_step(zset.len(), options.cursor, options.count);
        let items = range
            .rev()
            .filter_map(|index| zset.at_position(index))
            .filter(|(member, _)| keep(member))
            .map(|(member, score)| (member.to_bytes(), score))
            .collect();
        (items, next)
    };
    let flat: Vec<Bytes> = items
        .into_iter()
        .flat_map(|(member, score)| {
            [
                member,
                Bytes::from(crate::state::number::format_double(score)),
            ]
        })
        .collect();
    super::keys::scan_reply(ctx, next, &flat);
    Ok(())
}
