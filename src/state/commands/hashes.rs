//! Hash commands. Fields keep the order they were added in, as a small Redis hash does.

use bytes::Bytes;

use super::{int_arg, Ctx, Fail, Outcome};
use crate::state::db::item_cost;
use crate::state::notify;
use crate::state::number::{self, parse_float, LongDouble};
use crate::state::reply::text;

/// Sets field/value pairs; how many fields are new. The caller replies, then publishes its
/// event (Redis's order).
fn set_fields(ctx: &mut Ctx, key: &Bytes, pairs: &[Bytes]) -> Result<i64, Fail> {
    let hash = ctx.hash_mut(key, true)?.expect("created");
    let (mut added, mut removed, mut new_fields) = (0, 0, 0);
    for pair in pairs.chunks(2) {
        let value = Bytes::copy_from_slice(&pair[1]);
        added += item_cost(&value);
        match hash.get_mut(pair[0].as_ref()) {
            Some(old) => {
                removed += item_cost(old);
                *old = value;
            }
            None => {
                added += item_cost(&pair[0]);
                hash.insert(Bytes::copy_from_slice(&pair[0]), value);
                new_fields += 1;
            }
        }
    }
    ctx.store.db.grew(added);
    ctx.store.db.adjust(key, 0, removed);
    ctx.changed();
    Ok(new_fields)
}

pub fn hset(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    if !args.len().is_multiple_of(2) {
        return Err(super::arity_error("hset"));
    }
    let new_fields = set_fields(ctx, &args[1], &args[2..])?;
    ctx.out.int(new_fields);
    ctx.notify(notify::HASH, "hset", &args[1]);
    Ok(())
}

pub fn hmset(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    if !args.len().is_multiple_of(2) {
        return Err(super::arity_error("hmset"));
    }
    set_fields(ctx, &args[1], &args[2..])?;
    ctx.out.ok();
    ctx.notify(notify::HASH, "hset", &args[1]);
    Ok(())
}

pub fn hsetnx(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let exists = ctx
        .hash(&args[1])?
        .is_some_and(|hash| hash.contains_key(args[2].as_ref()));
    if exists {
        ctx.out.int(0);
    } else {
        set_fields(ctx, &args[1], &args[2..4])?;
        ctx.out.int(1);
        ctx.notify(notify::HASH, "hset", &args[1]);
    }
    Ok(())
}

pub fn hget(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let value = ctx
        .hash(&args[1])?
        .and_then(|hash| hash.get(args[2].as_ref()))
        .cloned();
    ctx.out.maybe_bulk(value.as_deref());
    Ok(())
}

pub fn hmget(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let hash = ctx.hash(&args[1])?;
    let values: Vec<Option<Bytes>> = args[2..]
        .iter()
        .map(|field| hash.and_then(|hash| hash.get(field.as_ref())).cloned())
        .collect();
    ctx.out.array(values.iter().map(|value| value.as_deref()));
    Ok(())
}

pub fn hgetall(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let Some(hash) = ctx.hash(&args[1])? else {
        ctx.out.map_header(0);
        return Ok(());
    };
    let items: Vec<(Bytes, Bytes)> = hash
        .iter()
        .map(|(field, value)| (field.clone(), value.clone()))
        .collect();
    ctx.out.map_of(
        items
            .iter()
            .map(|(field, value)| (field.as_ref(), value.as_ref())),
    );
    Ok(())
}

pub fn hdel(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let Some(hash) = ctx.hash_mut(&args[1], false)? else {
        ctx.out.int(0);
        return Ok(());
    };
    let (mut deleted, mut removed) = (0, 0);
    for field in &args[2..] {
        if let Some((field, value)) = hash.shift_remove_entry(field.as_ref()) {
            removed += item_cost(&field) + item_cost(&value);
            deleted += 1;
        }
    }
    ctx.store.db.adjust(&args[1], 0, removed);
    if deleted > 0 {
        ctx.notify_emptied(notify::HASH, "hdel", &args[1]);
        ctx.changed();
    }
    ctx.out.int(deleted);
    Ok(())
}

pub fn hexists(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let exists = ctx
        .hash(&args[1])?
        .is_some_and(|hash| hash.contains_key(args[2].as_ref()));
    ctx.out.int(i64::from(exists));
    Ok(())
}

pub fn hincrby(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let by = int_arg(&args[3])?;
    let current = match ctx
        .hash(&args[1])?
        .and_then(|hash| hash.get(args[2].as_ref()))
    {
        Some(value) => {
            number::parse_i64(value).ok_or(Fail::from("ERR hash value is not an integer"))?
        }
        None => 0,
    };
    let value = current.checked_add(by).ok_or(Fail::from(text::OVERFLOW))?;
    set_fields(
        ctx,
        &args[1],
        &[args[2].clone(), Bytes::from(value.to_string())],
    )?;
    ctx.out.int(value);
    ctx.notify(notify::HASH, "hincrby", &args[1]);
    Ok(())
}

pub fn hincrbyfloat(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let by = parse_float(&args[3]).ok_or(Fail::from(text::NOT_FLOAT))?;
    if !by.is_finite() {
        return Err("ERR value is NaN or Infinity".into());
    }
    let current = match ctx
        .hash(&args[1])?
        .and_then(|hash| hash.get(args[2].as_ref()))
    {
        Some(value) => parse_float(value).ok_or(Fail::from("ERR hash value is not a float"))?,
        None => LongDouble::ZERO,
    };
    let sum = current
        .add(by)
        .ok_or(Fail::from("ERR increment would produce NaN or Infinity"))?
        .format();
    set_fields(ctx, &args[1], &[args[2].clone(), Bytes::from(sum.clone())])?;
    ctx.out.bulk(sum.as_bytes());
    ctx.notify(notify::HASH, "hincrbyfloat", &args[1]);
    ctx.changed_as(vec![
        Bytes::from_static(b"HSET"),
        args[1].clone(),
        args[2].clone(),
        Bytes::from(sum),
    ]);
    Ok(())
}

pub fn hlen(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let len = ctx.hash(&args[1])?.map_or(0, |hash| hash.len());
    ctx.out.int(len as i64);
    Ok(())
}

pub fn hkeys(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let fields: Vec<Bytes> = ctx
        .hash(&args[1])?
        .map(|hash| hash.keys().cloned().collect())
        .unwrap_or_default();
    ctx.out.bulks(fields.iter().map(|field| field.as_ref()));
    Ok(())
}

pub fn hvals(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let values: Vec<Bytes> = ctx
        .hash(&args[1])?
        .map(|hash| hash.values().cloned().collect())
        .unwrap_or_default();
    ctx.out.bulks(values.iter().map(|value| value.as_ref()));
    Ok(())
}

/// `HRANDFIELD key [count [WITHVALUES]]`.
pub fn hrandfield(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let with_values = match args.get(3) {
        None => false,
        Some(arg) if args.len() == 4 && arg.eq_ignore_ascii_case(b"withvalues") => true,
        Some(_) => return Err(text::SYNTAX.into()),
    };
    let count = args.get(2).map(|arg| int_arg(arg)).transpose()?;
    if let Some(count) = count {
        if count == i64::MIN {
            return Err(super::MIN_COUNT.into());
        }
        if (with_values && !(-(i64::MAX / 2)..=i64::MAX / 2).contains(&count))
            || (count < 0 && count.unsigned_abs() > super::MAX_RANDOM_REPEATS)
        {
            return Err("ERR value is out of range".into());
        }
    }
    let resp3 = ctx.out.resp3;
    let Some(hash) = ctx.hash(&args[1])? else {
        match count {
            Some(_) => ctx.out.bulks([]),
            None => ctx.out.null(),
        }
        return Ok(());
    };
    let picked: Vec<(Bytes, Bytes)> = match count {
        None => vec![super::random_below(hash.len())],
        Some(count) if count < 0 => (0..count.unsigned_abs())
            .map(|_| super::random_below(hash.len()))
            .collect(),
        Some(count) => super::pick_distinct(hash.len(), count as usize),
    }
    .into_iter()
    .filter_map(|index| hash.get_index(index))
    .map(|(field, value)| (field.clone(), value.clone()))
    .collect();
    let out = &mut *ctx.out;
    match count {
        None => out.bulk(&picked[0].0),
        Some(_) if with_values && resp3 => {
            // RESP3: an array of [field, value] pairs, as Redis 7.0.
            out.array_header(picked.len());
            for (field, value) in &picked {
                out.array_header(2);
                out.bulk(field);
                out.bulk(value);
            }
        }
        Some(_) if with_values => {
            out.array_header(picked.len() * 2);
            for (field, value) in &picked {
                out.bulk(field);
                out.bulk(value);
            }
        }
        Some(_) => out.bulks(picked.iter().map(|(field, _)| field.as_ref())),
    }
    Ok(())
}

pub fn hstrlen(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let len = ctx
        .hash(&args[1])?
        .and_then(|hash| hash.get(args[2].as_ref()))
        .map_or(0, Bytes::len);
    ctx.out.int(len as i64);
    Ok(())
}

pub fn hscan(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let options = super::keys::scan_options(args)?;
    let Some(hash) = ctx.hash(&args[1])? else {
        super::keys::scan_reply(ctx, 0, &[]);
        return Ok(());
    };
    let (range, next) = super::keys::scan_step(hash.len(), options.cursor, options.count);
    let items: Vec<Bytes> = range
        .rev()
        .filter_map(|index| hash.get_index(index))
        .filter(|(field, _)| {
            options
                .pattern
                .is_none_or(|pattern| crate::state::glob::matches(pattern, field))
        })
        .flat_map(|(field, value)| [field.clone(), value.clone()])
        .collect();
    super::keys::scan_reply(ctx, next, &items);
    Ok(())
}
