//! Parts of strings: GETRANGE (SUBSTR), SETRANGE, LCS, and GETEX (read with a new deadline).

use bytes::Bytes;

use super::{int_arg, Ctx, Fail, Outcome};
use crate::state::db::Value;
use crate::state::notify;
use crate::state::reply::text;

/// Redis's largest string (`proto-max-bulk-len`).
const MAX_STRING: i64 = 512 * 1024 * 1024;

pub fn getrange(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let start = int_arg(&args[2])?;
    let end = int_arg(&args[3])?;
    let value = ctx.string(&args[1])?.cloned().unwrap_or_default();
    let len = value.len() as i64;
    if start < 0 && end < 0 && start > end {
        ctx.out.bulk(b"");
        return Ok(());
    }
    let start = if start < 0 {
        (len + start).max(0)
    } else {
        start
    };
    let end = if end < 0 { (len + end).max(0) } else { end };
    let end = end.min(len - 1);
    if start > end || len == 0 {
        ctx.out.bulk(b"");
    } else {
        ctx.out.bulk(&value[start as usize..=end as usize]);
    }
    Ok(())
}

pub fn setrange(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let offset = int_arg(&args[2])?;
    if offset < 0 {
        return Err("ERR offset is out of range".into());
    }
    let patch = &args[3];
    let current = ctx.string(&args[1])?.cloned();
    if patch.is_empty() {
        ctx.out.int(current.map_or(0, |value| value.len() as i64));
        return Ok(());
    }
    if offset.saturating_add(patch.len() as i64) > MAX_STRING {
        return Err("ERR string exceeds maximum allowed size (proto-max-bulk-len)".into());
    }
    let mut value = current.map(|value| value.to_vec()).unwrap_or_default();
    let offset = offset as usize;
    if value.len() < offset + patch.len() {
        value.resize(offset + patch.len(), 0);
    }
    value[offset..offset + patch.len()].copy_from_slice(patch);
    let len = value.len();
    ctx.store
        .db
        .replace_value(&args[1], Value::Str(value.into()));
    ctx.notify(notify::STRING, "setrange", &args[1]);
    ctx.changed();
    ctx.out.int(len as i64);
    Ok(())
}

/// `GETEX key [EX s | PX ms | EXAT t | PXAT t | PERSIST]`.
pub fn getex(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let mut deadline: Option<Option<i64>> = None;
    let mut i = 2;
    while i < args.len() {
        let option = args[i].to_ascii_lowercase();
        match (option.as_slice(), args.get(i + 1)) {
            (b"persist", _) if deadline.is_none() => deadline = Some(None),
            (b"ex" | b"px" | b"exat" | b"pxat", Some(arg)) if deadline.is_none() => {
                let amount = int_arg(arg)?;
                let (unit, absolute) = match option.as_slice() {
                    b"ex" => (1000, false),
                    b"px" => (1, false),
                    b"exat" => (1000, true),
                    _ => (1, true),
                };
                let invalid = || Fail::from("ERR invalid expire time in 'getex' command");
                if amount <= 0 || (unit == 1000 && amount > i64::MAX / 1000) {
                    return Err(invalid());
                }
                let mut at = amount * unit;
                if !absolute {
                    at = at.checked_add(ctx.now.0).ok_or_else(invalid)?;
                }
                deadline = Some(Some(at));
                i += 1;
            }
            _ => return Err(text::SYNTAX.into()),
        }
        i += 1;
    }
    let key = &args[1];
    let Some(value) = ctx.string(key)?.cloned() else {
        ctx.out.null();
        return Ok(());
    };
    // Redis replies before it changes the deadline (and tells of it).
    ctx.out.bulk(&value);
    match deadline {
        Some(Some(at)) if at <= ctx.now.0 => {
            ctx.store.db.remove(key, ctx.now);
            ctx.notify(notify::GENERIC, "del", key);
            ctx.changed_as(vec![Bytes::from_static(b"DEL"), key.clone()]);
        }
        Some(Some(at)) => {
            ctx.store.db.set_expiry(key, Some(at));
            ctx.notify(notify::GENERIC, "expire", key);
            ctx.changed_as(vec![
                Bytes::from_static(b"PEXPIREAT"),
                key.clone(),
                Bytes::from(at.to_string()),
            ]);
        }
        Some(None)
            if ctx
                .entry(key)
                .is_some_and(|entry| entry.expires_at.is_some()) =>
        {
            ctx.store.db.set_expiry(key, None);
            ctx.notify(notify::GENERIC, "persist", key);
            ctx.changed_as(vec![Bytes::from_static(b"PERSIST"), key.clone()]);
        }
        Some(None) => {}
        None => {}
    }
    Ok(())
}

/// `LCS key1 key2 [LEN] [IDX] [MINMATCHLEN n] [WITHMATCHLEN]`, with Redis's dynamic
/// programming table and its walk back for the matches (so ranges come out in its order).
pub fn lcs(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let (mut len_only, mut idx, mut with_len, mut min_len) = (false, false, false, 0i64);
    let mut i = 3;
    while i < args.len() {
        match args[i].to_ascii_lowercase().as_slice() {
            b"idx" => idx = true,
            b"len" => len_only = true,
            b"withmatchlen" => with_len = true,
            b"minmatchlen" if i + 1 < args.len() => {
                min_len = int_arg(&args[i + 1])?.max(0);
                i += 1;
            }
            _ => return Err(text::SYNTAX.into()),
        }
        i += 1;
    }
    let a = string_or_empty(ctx, &args[1])?;
    let b = string_or_empty(ctx, &args[2])?;
    if len_only && idx {
        return Err("ERR If you want both the length and indexes, please just use IDX.".into());
    }
    let (alen, blen) = (a.len(), b.len());
    // Redis's bound on the table (4 bytes a cell, at most proto-max-bulk-len).
    if (alen + 1).saturating_mul(blen + 1).saturating_mul(4) > MAX_STRING as usize {
        return Err(
            "ERR Insufficient memory, transient memory for LCS exceeds proto-max-bulk-len".into(),
        );
    }
    let width = alen + 1;
    let mut table = vec![0u32; width * (blen + 1)];
    for j in 1..=blen {
        for i in 1..=alen {
            table[j * width + i] = if a[i - 1] == b[j - 1] {
                table[(j - 1) * width + i - 1] + 1
            } else {
                table[j * width + i - 1].max(table[(j - 1) * width + i])
            };
        }
    }
    let at = |i: usize, j: usize| table[j * width + i];
    let total = at(alen, blen) as usize;
    if len_only {
        ctx.out.int(total as i64);
        return Ok(());
    }
    let mut result = vec![0u8; total];
    let mut matches: Vec<[i64; 5]> = Vec::new();
    let (mut left, mut i, mut j) = (total, alen, blen);
    let (mut a_start, mut a_end, mut b_start, mut b_end) = (alen, 0, 0, 0);
    while i > 0 && j > 0 {
        let mut emit = false;
        if a[i - 1] == b[j - 1] {
            result[left - 1] = a[i - 1];
            if a_start == alen {
                (a_start, a_end, b_start, b_end) = (i - 1, i - 1, j - 1, j - 1);
            } else if a_start == i && b_start == j {
                a_start -= 1;
                b_start -= 1;
            } else {
                emit = true;
            }
            if a_start == 0 || b_start == 0 {
                emit = true;
            }
            left -= 1;
            i -= 1;
            j -= 1;
        } else {
            if at(i - 1, j) > at(i, j - 1) {
                i -= 1;
            } else {
                j -= 1;
            }
            if a_start != alen {
                emit = true;
            }
        }
        if emit {
            let match_len = (a_end - a_start + 1) as i64;
            if min_len == 0 || match_len >= min_len {
                matches.push([
                    a_start as i64,
                    a_end as i64,
                    b_start as i64,
                    b_end as i64,
                    match_len,
                ]);
            }
            a_start = alen;
        }
    }
    if !idx {
        ctx.out.bulk(&result);
        return Ok(());
    }
    let out = &mut *ctx.out;
    out.map_header(2);
    out.bulk(b"matches");
    out.array_header(matches.len());
    for [a0, a1, b0, b1, match_len] in matches {
        out.array_header(2 + usize::from(with_len));
        out.array_header(2);
        out.int(a0);
        out.int(a1);
        out.array_header(2);
        out.int(b0);
        out.int(b1);
        if with_len {
            out.int(match_len);
        }
    }
    out.bulk(b"len");
    out.int(total as i64);
    Ok(())
}

fn string_or_empty(ctx: &mut Ctx, key: &[u8]) -> Result<Bytes, Fail> {
    match ctx.entry(key) {
        None => Ok(Bytes::new()),
        Some(entry) => match &entry.value {
            Value::Str(text) => Ok(text.to_bytes()),
            _ => Err("ERR The specified keys must contain string values".into()),
        },
    }
}
