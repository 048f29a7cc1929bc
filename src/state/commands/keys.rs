//! Keyspace commands: DEL, EXISTS, the EXPIRE family, TTL, PERSIST, TYPE, SCAN, KEYS.

use bytes::Bytes;

use super::{int_arg, Ctx, Fail, Outcome};
use crate::state::glob;
use crate::state::notify;
use crate::state::reply::text;

pub fn del(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let mut removed = 0;
    for key in &args[1..] {
        if ctx.store.db.remove(key, ctx.now).is_some() {
            ctx.notify(notify::GENERIC, "del", key);
            removed += 1;
        }
    }
    if removed > 0 {
        ctx.changed();
    }
    ctx.out.int(removed);
    Ok(())
}

pub fn exists(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let count = args[1..]
        .iter()
        .filter(|key| {
            ctx.look_up(key);
            ctx.store.db.contains(key, ctx.now)
        })
        .count();
    ctx.out.int(count as i64);
    Ok(())
}

/// EXPIRE's NX / XX / GT / LT.
#[derive(Default)]
struct Condition {
    nx: bool,
    xx: bool,
    gt: bool,
    lt: bool,
}

fn parse_condition(args: &[Bytes]) -> Result<Condition, Fail> {
    let mut condition = Condition::default();
    for option in &args[3..] {
        match option.to_ascii_lowercase().as_slice() {
            b"nx" => condition.nx = true,
            b"xx" => condition.xx = true,
            b"gt" => condition.gt = true,
            b"lt" => condition.lt = true,
            _ => {
                return Err(
                    format!("ERR Unsupported option {}", String::from_utf8_lossy(option)).into(),
                )
            }
        }
    }
    if condition.nx && (condition.xx || condition.gt || condition.lt) {
        return Err("ERR NX and XX, GT or LT options at the same time are not compatible".into());
    }
    if condition.gt && condition.lt {
        return Err("ERR GT and LT options at the same time are not compatible".into());
    }
    Ok(condition)
}

/// The EXPIRE family: `unit` in milliseconds, `absolute` for the `…AT` forms.
fn expire_generic(ctx: &mut Ctx, args: &[Bytes], unit: i64, absolute: bool, name: &str) -> Outcome {
    let condition = parse_condition(args)?;
    let mut when = int_arg(&args[2])?;
    let invalid = || Fail::from(format!("ERR invalid expire time in '{name}' command"));
    if unit == 1000 {
        if !(i64::MIN / 1000..=i64::MAX / 1000).contains(&when) {
            return Err(invalid());
        }
        when *= 1000;
    }
    if !absolute {
        if when > i64::MAX - ctx.now.0 {
            return Err(invalid());
        }
        when += ctx.now.0;
    }
    let key = &args[1];
    let Some(entry) = ctx.entry(key) else {
        ctx.out.int(0);
        return Ok(());
    };
    let current = entry.expires_at;
    let refused = (condition.nx && current.is_some())
        || (condition.xx && current.is_none())
        || (condition.gt && current.is_none_or(|current| when <= current))
        || (condition.lt && current.is_some_and(|current| when >= current));
    if refused {
        ctx.out.int(0);
        return Ok(());
    }
    // Redis tells of a deletion before its reply, of a new deadline after it.
    if when <= ctx.now.0 && !ctx.store.db.loading {
        ctx.store.db.remove(key, ctx.now);
        ctx.notify(notify::GENERIC, "del", key);
        ctx.changed_as(vec![Bytes::from_static(b"DEL"), key.clone()]);
        ctx.out.int(1);
    } else {
        ctx.store.db.set_expiry(key, Some(when));
        ctx.changed_as(vec![
            Bytes::from_static(b"PEXPIREAT"),
            key.clone(),
            Bytes::from(when.to_string()),
        ]);
        ctx.out.int(1);
        ctx.notify(notify::GENERIC, "expire", key);
    }
    Ok(())
}

pub fn expire(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    expire_generic(ctx, args, 1000, false, "expire")
}

pub fn pexpire(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    expire_generic(ctx, args, 1, false, "pexpire")
}

pub fn expireat(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    expire_generic(ctx, args, 1000, true, "expireat")
}

pub fn pexpireat(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    expire_generic(ctx, args, 1, true, "pexpireat")
}

/// Time to live in milliseconds: -2 no key, -1 no deadline.
fn remaining(ctx: &mut Ctx, key: &[u8]) -> i64 {
    let now = ctx.now.0;
    match ctx.entry(key) {
        None => -2,
        Some(entry) => entry.expires_at.map_or(-1, |at| (at - now).max(0)),
    }
}

pub fn ttl(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let ms = remaining(ctx, &args[1]);
    ctx.out.int(if ms < 0 { ms } else { (ms + 500) / 1000 });
    Ok(())
}

pub fn pttl(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let ms = remaining(ctx, &args[1]);
    ctx.out.int(ms);
    Ok(())
}

/// The deadline in milliseconds: -2 no key, -1 no deadline.
fn deadline_of(ctx: &mut Ctx, key: &[u8]) -> i64 {
    match ctx.entry(key) {
        None => -2,
        Some(entry) => entry.expires_at.unwrap_or(-1),
    }
}

pub fn expiretime(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let at = deadline_of(ctx, &args[1]);
    ctx.out.int(if at < 0 { at } else { at / 1000 });
    Ok(())
}

pub fn pexpiretime(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let at = deadline_of(ctx, &args[1]);
    ctx.out.int(at);
    Ok(())
}

pub fn randomkey(ctx: &mut Ctx, _args: &[Bytes]) -> Outcome {
    // A few tries past keys whose deadline passed (each try reclaims the one it finds).
    for _ in 0..100 {
        let len = ctx.store.db.len();
        if len == 0 {
            break;
        }
        let key = ctx.store.db.key_at(super::random_below(len)).clone();
        if ctx.entry(&key).is_some() {
            ctx.out.bulk(&key);
            return Ok(());
        }
    }
    ctx.out.null();
    Ok(())
}

pub fn persist(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let had_deadline = ctx
        .entry(&args[1])
        .is_some_and(|entry| entry.expires_at.is_some());
    if had_deadline {
        ctx.store.db.set_expiry(&args[1], None);
        ctx.notify(notify::GENERIC, "persist", &args[1]);
        ctx.changed();
    }
    ctx.out.int(i64::from(had_deadline));
    Ok(())
}

pub fn type_of(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let name = ctx
        .entry(&args[1])
        .map_or("none", |entry| entry.value.type_name());
    ctx.out.simple(name);
    Ok(())
}

pub fn scan(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let cursor = std::str::from_utf8(&args[1])
        .ok()
        .and_then(|text| text.parse::<u64>().ok())
        .ok_or(Fail::from("ERR invalid cursor"))?;
    let mut count = 10;
    let mut pattern: Option<&[u8]> = None;
    let mut type_name: Option<Vec<u8>> = None;
    let mut i = 2;
    while i < args.len() {
        let value = args.get(i + 1).ok_or(Fail::from(text::SYNTAX))?;
        match args[i].to_ascii_lowercase().as_slice() {
            b"count" => {
                count = int_arg(value)?;
                if count < 1 {
                    return Err(text::SYNTAX.into());
                }
            }
            b"match" => pattern = Some(value),
            b"type" => type_name = Some(value.to_ascii_lowercase()),
            _ => return Err(text::SYNTAX.into()),
        }
        i += 2;
    }
    let (next, keys) = ctx
        .store
        .db
        .scan(cursor, count as usize, ctx.now, |key, entry| {
            pattern.is_none_or(|pattern| glob::matches(pattern, key))
                && type_name
                    .as_deref()
                    .is_none_or(|name| name == entry.value.type_name().as_bytes())
        });
    ctx.out.array_header(2);
    ctx.out.bulk(next.to_string().as_bytes());
    ctx.out.bulks(keys.iter().map(|key| key.as_ref()));
    Ok(())
}

/// `SSCAN`/`HSCAN`'s cursor and options (`MATCH`, `COUNT`) after the key.
pub struct ScanOptions<'a> {
    pub cursor: usize,
    pub count: usize,
    pub pattern: Option<&'a [u8]>,
}

pub fn scan_options(args: &[Bytes]) -> Result<ScanOptions<'_>, Fail> {
    let cursor = std::str::from_utf8(&args[2])
        .ok()
        .and_then(|text| text.parse::<u64>().ok())
        .ok_or(Fail::from("ERR invalid cursor"))?;
    let mut options = ScanOptions {
        cursor: cursor as usize,
        count: 10,
        pattern: None,
    };
    let mut i = 3;
    while i < args.len() {
        let value = args.get(i + 1).ok_or(Fail::from(text::SYNTAX))?;
        match args[i].to_ascii_lowercase().as_slice() {
            b"count" => {
                let count = int_arg(value)?;
                if count < 1 {
                    return Err(text::SYNTAX.into());
                }
                options.count = count as usize;
            }
            b"match" => options.pattern = Some(value),
            _ => return Err(text::SYNTAX.into()),
        }
        i += 2;
    }
    Ok(options)
}

/// One step of a collection scan over `len` items, walking from the end towards the start as
/// `Db::scan` does (so removals, which move items down, never make it skip one): the item
/// positions to look at, and the cursor to return (0 when done).
pub fn scan_step(len: usize, cursor: usize, count: usize) -> (std::ops::Range<usize>, usize) {
    let end = if cursor == 0 || cursor > len {
        len
    } else {
        cursor
    };
    let start = end.saturating_sub(count);
    (start..end, start)
}

/// Writes a scan step's reply: the cursor, then the items.
pub fn scan_reply(ctx: &mut Ctx, next: usize, items: &[Bytes]) {
    ctx.out.array_header(2);
    ctx.out.bulk(next.to_string().as_bytes());
    ctx.out.bulks(items.iter().map(|item| item.as_ref()));
}

pub fn keys(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let pattern = &args[1];
    let all = pattern.as_ref() == b"*";
    let keys: Vec<Bytes> = ctx
        .store
        .db
        .iter(ctx.now)
        .filter(|(key, _)| all || glob::matches(pattern, key))
        .map(|(key, _)| key.to_bytes())
        .collect();
    ctx.out.bulks(keys.iter().map(|key| key.as_ref()));
    Ok(())
}
