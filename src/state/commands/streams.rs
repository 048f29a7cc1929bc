//! Streams without consumer groups: XADD, XTRIM, XDEL, XLEN, XRANGE, XREVRANGE, XREAD (with
//! BLOCK) and XSETID, as Redis 7.0 parses and answers them (BullMQ's event stream, rq's
//! results). A blocked XREAD waits like BLPOP (`crate::state::blocking`), with `$` resolved to
//! the stream's last ID when it blocks; every reader blocked on a stream is woken by an XADD.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{arity_error, int_arg, Ctx, Fail, Outcome};
use crate::state::blocking::Blocked;
use crate::state::notify;
use crate::state::reply::text;
use crate::state::stream::{Stream, StreamId, Trim};

const INVALID_ID: &str = "ERR Invalid stream ID specified as stream command argument";

/// An unsigned decimal as Redis's `string2ull` takes it (digits only here).
fn parse_u64(text: &[u8]) -> Option<u64> {
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// A stream ID argument: `ms-seq`, or `ms` (the sequence is then `missing_seq`); `-` and `+`
/// unless `strict`; `ms-*` where `auto_seq` (XADD), answered with `false` for "sequence not
/// given".
fn parse_id(
    arg: &[u8],
    missing_seq: u64,
    strict: bool,
    auto_seq: bool,
) -> Result<(StreamId, bool), Fail> {
    if arg.len() > 127 {
        return Err(INVALID_ID.into());
    }
    match arg {
        b"-" | b"+" if strict => return Err(INVALID_ID.into()),
        b"-" => return Ok((StreamId::default(), true)),
        b"+" => return Ok((StreamId::MAX, true)),
        _ => {}
    }
    let (ms, seq) = match arg.iter().position(|&byte| byte == b'-') {
        Some(dash) => (&arg[..dash], Some(&arg[dash + 1..])),
        None => (arg, None),
    };
    let ms = parse_u64(ms).ok_or(Fail::from(INVALID_ID))?;
    match seq {
        Some(b"*") if auto_seq => Ok((StreamId { ms, seq: 0 }, false)),
        Some(seq) => {
            let seq = parse_u64(seq).ok_or(Fail::from(INVALID_ID))?;
            Ok((StreamId { ms, seq }, true))
        }
        None => Ok((
            StreamId {
                ms,
                seq: missing_seq,
            },
            true,
        )),
    }
}

/// A trim: what to keep, whether approximately (`~`), and the most entries it may remove.
struct TrimArgs {
    trim: Trim,
    approximate: bool,
    limit: u64,
}

/// The options of XADD (`for_add`) or XTRIM, parsed as Redis parses them; with XADD, the
/// position of the ID argument, the ID (`None` for `*`) and whether its sequence was given.
struct AddArgs {
    trim: Option<TrimArgs>,
    no_make_stream: bool,
    id_at: usize,
    id: Option<(StreamId, bool)>,
}

fn parse_add_or_trim(args: &[Bytes], for_add: bool) -> Result<AddArgs, Fail> {
    let mut parsed = AddArgs {
        trim: None,
        no_make_stream: false,
        id_at: args.len(),
        id: None,
    };
    let mut limit = None;
    let mut i = 2;
    while i < args.len() {
        let more = args.len() - 1 - i;
        let option = args[i].to_ascii_lowercase();
        match option.as_slice() {
            b"*" if for_add => {
                parsed.id_at = i;
                break;
            }
            b"maxlen" | b"minid" if more > 0 => {
                if parsed.trim.is_some() {
                    return Err("ERR syntax error, MAXLEN and MINID options at the same time are not compatible".into());
                }
                let mut approximate = false;
                if more >= 2 && (args[i + 1].as_ref() == b"~" || args[i + 1].as_ref() == b"=") {
                    approximate = args[i + 1].as_ref() == b"~";
                    i += 1;
                }
                let threshold = &args[i + 1];
                let trim = if option == b"maxlen" {
                    let max = int_arg(threshold)?;
                    if max < 0 {
                        return Err("ERR The MAXLEN argument must be >= 0.".into());
                    }
                    Trim::MaxLen(max as u64)
                } else {
                    Trim::MinId(parse_id(threshold, 0, true, false)?.0)
                };
                parsed.trim = Some(TrimArgs {
                    trim,
                    approximate,
                    limit: 0,
                });
                i += 1;
            }
            b"limit" if more > 0 => {
                let given = int_arg(&args[i + 1])?;
                if given < 0 {
                    return Err("ERR The LIMIT argument must be >= 0.".into());
                }
                limit = Some(given as u64);
                i += 1;
            }
            b"nomkstream" if for_add => parsed.no_make_stream = true,
            _ if for_add => {
                parsed.id = Some(parse_id(&args[i], 0, true, true)?);
                parsed.id_at = i;
                break;
            }
            _ => return Err(text::SYNTAX.into()),
        }
        i += 1;
    }
    match (&mut parsed.trim, limit) {
        (None, Some(_)) => Err(
            "ERR syntax error, LIMIT cannot be used without specifying a trimming strategy".into(),
        ),
        (None, None) if !for_add => {
            Err("ERR syntax error, XTRIM must be called with a trimming strategy".into())
        }
        (Some(trim), Some(_)) if !trim.approximate => {
            Err("ERR syntax error, LIMIT cannot be used without the special ~ option".into())
        }
        (Some(trim), given) => {
            // Without LIMIT, `~` removes at most 100 nodes' worth, as Redis; exact trims all.
            trim.limit = given.unwrap_or(if trim.approximate { 10_000 } else { 0 });
            Ok(parsed)
        }
        (None, None) => Ok(parsed),
    }
}

/// Trims the stream at `key` (which the caller looked up) and accounts for the memory; how
/// many entries went.
fn apply_trim(ctx: &mut Ctx, key: &Bytes, trim: &TrimArgs) -> Result<u64, Fail> {
    let stream = ctx.stream_mut(key, false)?.expect("the caller found it");
    let before = stream.cost();
    let removed = stream.trim(trim.trim, trim.approximate, trim.limit);
    let (after, len) = (stream.cost(), stream.len());
    ctx.store.db.adjust(key, 0, before - after);
    if removed > 0 {
        // Logged exactly, so that replaying removes the same entries.
        ctx.changed_as(vec![
            Bytes::from_static(b"XTRIM"),
            key.clone(),
            Bytes::from_static(b"MAXLEN"),
            Bytes::from_static(b"="),
            Bytes::from(len.to_string()),
        ]);
    }
    Ok(removed)
}

/// The ID XADD gives the next entry of a stream whose last ID is `last`: `wanted` as parsed
/// (`None` for `*`), at `now_ms`.
fn next_id(last: StreamId, wanted: Option<(StreamId, bool)>, now_ms: u64) -> Option<StreamId> {
    match wanted {
        None => {
            let ms = now_ms.max(last.ms);
            if ms == last.ms {
                last.next()
            } else {
                Some(StreamId { ms, seq: 0 })
            }
        }
        Some((id, true)) => (id > last).then_some(id),
        Some((id, false)) if id.ms == last.ms => last
            .seq
            .checked_add(1)
            .map(|seq| StreamId { ms: id.ms, seq }),
        Some((id, false)) => (id.ms > last.ms).then_some(id),
    }
}

pub fn xadd(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let parsed = parse_add_or_trim(args, true)?;
    let fields = &args[(parsed.id_at + 1).min(args.len())..];
    if fields.len() < 2 || fields.len() % 2 == 1 {
        return Err(arity_error("xadd"));
    }
    if parsed.id == Some((StreamId::default(), true)) {
        return Err("ERR The ID specified in XADD must be greater than 0-0".into());
    }
    let key = &args[1];
    let now_ms = ctx.now.0.max(0) as u64;
    let Some(stream) = ctx.stream_mut(key, !parsed.no_make_stream)? else {
        ctx.out.null();
        return Ok(());
    };
    if stream.last_id == StreamId::MAX {
        return Err(
            "ERR The stream has exhausted the last possible ID, unable to add more items".into(),
        );
    }
    let Some(id) = next_id(stream.last_id, parsed.id, now_ms) else {
        return Err(
            "ERR The ID specified in XADD is equal or smaller than the target stream top item"
                .into(),
        );
    };
    let before = stream.cost();
    stream.append(id, fields.to_vec());
    let added = stream.cost() - before;
    ctx.store.db.grew(added);
    let id_text = id.text();
    let mut logged = vec![Bytes::from_static(b"XADD"), key.clone(), id_text.clone()];
    logged.extend_from_slice(fields);
    ctx.changed_as(logged);
    ctx.out.bulk(&id_text);
    ctx.notify(notify::STREAM, "xadd", key);
    if let Some(trim) = &parsed.trim {
        if apply_trim(ctx, key, trim)? > 0 {
            ctx.notify(notify::STREAM, "xtrim", key);
        }
    }
    Ok(())
}

pub fn xtrim(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let parsed = parse_add_or_trim(args, false)?;
    if ctx.stream(&args[1])?.is_none() {
        ctx.out.int(0);
        return Ok(());
    }
    let trim = parsed.trim.expect("XTRIM's parse requires a strategy");
    let removed = apply_trim(ctx, &args[1], &trim)?;
    if removed > 0 {
        ctx.notify(notify::STREAM, "xtrim", &args[1]);
    }
    ctx.out.int(removed as i64);
    Ok(())
}

pub fn xdel(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let ids = args[2..]
        .iter()
        .map(|arg| parse_id(arg, 0, true, false).map(|(id, _)| id))
        .collect::<Result<Vec<_>, _>>()?;
    let Some(stream) = ctx.stream_mut(&args[1], false)? else {
        ctx.out.int(0);
        return Ok(());
    };
    let before = stream.cost();
    let deleted = ids.into_iter().filter(|id| stream.delete(*id)).count();
    let after = stream.cost();
    ctx.store.db.adjust(&args[1], 0, before - after);
    if deleted > 0 {
        ctx.changed();
        ctx.notify(notify::STREAM, "xdel", &args[1]);
    }
    ctx.out.int(deleted as i64);
    Ok(())
}

pub fn xlen(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let len = ctx.stream(&args[1])?.map_or(0, Stream::len);
    ctx.out.int(len as i64);
    Ok(())
}

/// XSETID key last-id: the stream's last ID, never below its newest entry's.
pub fn xsetid(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    if args.len() > 3 {
        return Err(text::SYNTAX.into());
    }
    let (id, _) = parse_id(&args[2], 0, true, false)?;
    let Some(stream) = ctx.stream_mut(&args[1], false)? else {
        return Err("ERR no such key".into());
    };
    if stream.newest().is_some_and(|newest| id < newest) {
        return Err(
            "ERR The ID specified in XSETID is smaller than the target stream top item".into(),
        );
    }
    stream.last_id = id;
    ctx.changed();
    ctx.notify(notify::STREAM, "xsetid", &args[1]);
    ctx.out.ok();
    Ok(())
}

/// Entries copied out of a stream, to reply with once the stream is no longer borrowed.
type Entries = Vec<(StreamId, Vec<Bytes>)>;

fn copy_range(
    stream: &Stream,
    start: StreamId,
    end: StreamId,
    reverse: bool,
    count: usize,
) -> Entries {
    stream
        .range(start, end, reverse, count)
        .into_iter()
        .map(|(id, fields)| (id, fields.to_vec()))
        .collect()
}

/// Writes `entries` as Redis does: `[id, [field, value, …]]` each.
fn reply_entries(ctx: &mut Ctx, entries: &Entries) {
    ctx.out.array_header(entries.len());
    for (id, fields) in entries {
        ctx.out.array_header(2);
        ctx.out.bulk(&id.text());
        ctx.out.bulks(fields.iter().map(|field| field.as_ref()));
    }
}

/// An end of an XRANGE interval: an ID, `-`, `+`, or `(ID` for an exclusive one.
fn interval_end(arg: &[u8], missing_seq: u64) -> Result<(StreamId, bool), Fail> {
    if arg.len() > 1 && arg[0] == b'(' {
        Ok((parse_id(&arg[1..], missing_seq, true, false)?.0, true))
    } else {
        Ok((parse_id(arg, missing_seq, false, false)?.0, false))
    }
}

fn range(ctx: &mut Ctx, args: &[Bytes], reverse: bool) -> Outcome {
    let (start_arg, end_arg) = if reverse {
        (&args[3], &args[2])
    } else {
        (&args[2], &args[3])
    };
    let (mut start, exclusive) = interval_end(start_arg, 0)?;
    if exclusive {
        start = start
            .next()
            .ok_or(Fail::from("ERR invalid start ID for the interval"))?;
    }
    let (mut end, exclusive) = interval_end(end_arg, u64::MAX)?;
    if exclusive {
        end = end
            .previous()
            .ok_or(Fail::from("ERR invalid end ID for the interval"))?;
    }
    let mut count = None;
    let mut i = 4;
    while i < args.len() {
        if args[i].eq_ignore_ascii_case(b"count") && i + 1 < args.len() {
            count = Some(int_arg(&args[i + 1])?.max(0) as usize);
            i += 2;
        } else {
            return Err(text::SYNTAX.into());
        }
    }
    let Some(stream) = ctx.stream(&args[1])? else {
        ctx.out.array_header(0);
        return Ok(());
    };
    if count == Some(0) {
        ctx.out.null_array();
        return Ok(());
    }
    let entries = copy_range(stream, start, end, reverse, count.unwrap_or(0));
    reply_entries(ctx, &entries);
    Ok(())
}

pub fn xrange(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    range(ctx, args, false)
}

pub fn xrevrange(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    range(ctx, args, true)
}

/// XREAD [COUNT n] [BLOCK ms] STREAMS key… id…
pub fn xread(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let mut count = 0usize;
    let mut block = None;
    let mut streams_at = None;
    let mut i = 1;
    while i < args.len() {
        let more = args.len() - 1 - i;
        let option = args[i].to_ascii_lowercase();
        match option.as_slice() {
            b"block" if more > 0 => {
                i += 1;
                block = Some(block_timeout(&args[i])?);
            }
            b"count" if more > 0 => {
                i += 1;
                count = int_arg(&args[i])?.max(0) as usize;
            }
            b"streams" if more > 0 => {
                streams_at = Some(i + 1);
                break;
            }
            b"group" if more >= 2 => return Err(
                "ERR The GROUP option is only supported by XREADGROUP. You called XREAD instead."
                    .into(),
            ),
            _ => return Err(text::SYNTAX.into()),
        }
        i += 1;
    }
    let Some(streams_at) = streams_at else {
        return Err(text::SYNTAX.into());
    };
    let listed = args.len() - streams_at;
    if !listed.is_multiple_of(2) {
        return Err("ERR Unbalanced XREAD list of streams: for each stream key an ID or '$' must be specified.".into());
    }
    let keys = &args[streams_at..streams_at + listed / 2];
    let mut after = Vec::with_capacity(keys.len());
    for (key, id) in keys.iter().zip(&args[streams_at + listed / 2..]) {
        let stream = ctx.stream(key)?;
        if id.as_ref() == b"$" {
            after.push(stream.map_or(StreamId::default(), |stream| stream.last_id));
        } else if id.as_ref() == b">" {
            return Err("ERR The > ID can be specified only when calling XREADGROUP using the GROUP <group> <consumer> option.".into());
        } else {
            after.push(parse_id(id, 0, true, false)?.0);
        }
    }
    let mut served: Vec<(&Bytes, Entries)> = Vec::new();
    for (key, after) in keys.iter().zip(&after) {
        let Some(stream) = ctx.stream(key)? else {
            continue;
        };
        if stream.newest().is_none_or(|newest| newest <= *after) {
            continue;
        }
        let start = after.next().expect("an entry is newer");
        served.push((key, copy_range(stream, start, StreamId::MAX, false, count)));
    }
    if !served.is_empty() {
        if ctx.out.resp3 {
            ctx.out.map_header(served.len());
        } else {
            ctx.out.array_header(served.len());
        }
        for (key, entries) in &served {
            if !ctx.out.resp3 {
                ctx.out.array_header(2);
            }
            ctx.out.bulk(key);
            reply_entries(ctx, entries);
        }
        return Ok(());
    }
    match block {
        Some(timeout) if !ctx.client.in_exec => {
            // Wait for an entry after the IDs as they are now (`$` resolved), so that running
            // the command again when woken serves what came since.
            let mut waiting = args[..streams_at + listed / 2].to_vec();
            waiting.extend(after.iter().map(|id| id.text()));
            let (id, db) = (ctx.client.id, ctx.client.db);
            ctx.store
                .waiting
                .block(id, &ctx.client.mailbox.clone(), db, keys);
            ctx.client.blocked = Some(Blocked {
                args: waiting,
                deadline: timeout.map(|ms| Instant::now() + Duration::from_millis(ms)),
                on_timeout: crate::state::blocking::OnTimeout::NullArray,
            });
        }
        _ => ctx.out.null_array(),
    }
    Ok(())
}

/// BLOCK's milliseconds, as Redis reads them: `None` for 0 (wait for ever).
fn block_timeout(arg: &[u8]) -> Result<Option<u64>, Fail> {
    let ms = crate::state::number::parse_i64(arg)
        .ok_or(Fail::from("ERR timeout is not an integer or out of range"))?;
    if ms < 0 {
        return Err("ERR timeout is negative".into());
    }
    Ok((ms > 0).then_some(ms as u64))
}
