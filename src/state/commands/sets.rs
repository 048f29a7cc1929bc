//! Set commands: members one by one, and SPOP / SRANDMEMBER / SMOVE. The algebra (SINTER and
//! the like) is in `set_algebra`.

use bytes::Bytes;

use super::{pick_distinct, random_below, Ctx, Fail, Outcome};
use crate::state::db::item_cost;
use crate::state::notify;
use crate::state::reply::text;

pub fn sadd(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let set = ctx.set_mut(&args[1], true)?.expect("created");
    let (mut added_members, mut added) = (0, 0);
    for member in &args[2..] {
        if set.insert(Bytes::copy_from_slice(member)) {
            added_members += 1;
            added += item_cost(member);
        }
    }
    ctx.store.db.grew(added);
    if added_members > 0 {
        ctx.notify(notify::SET, "sadd", &args[1]);
        ctx.changed();
    }
    ctx.out.int(added_members);
    Ok(())
}

pub fn srem(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let Some(set) = ctx.set_mut(&args[1], false)? else {
        ctx.out.int(0);
        return Ok(());
    };
    let (mut removed_members, mut removed) = (0, 0);
    for member in &args[2..] {
        if set.swap_remove(member.as_ref()) {
            removed_members += 1;
            removed += item_cost(member);
        }
    }
    ctx.store.db.adjust(&args[1], 0, removed);
    if removed_members > 0 {
        ctx.notify_emptied(notify::SET, "srem", &args[1]);
        ctx.changed();
    }
    ctx.out.int(removed_members);
    Ok(())
}

pub fn smembers(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let members: Vec<Bytes> = ctx
        .set(&args[1])?
        .map(|set| set.iter().cloned().collect())
        .unwrap_or_default();
    ctx.out.set_of(members.iter().map(|member| member.as_ref()));
    Ok(())
}

pub fn sismember(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let member = ctx
        .set(&args[1])?
        .is_some_and(|set| set.contains(args[2].as_ref()));
    ctx.out.int(i64::from(member));
    Ok(())
}

pub fn scard(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let len = ctx.set(&args[1])?.map_or(0, |set| set.len());
    ctx.out.int(len as i64);
    Ok(())
}

pub fn smismember(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let set = ctx.set(&args[1])?;
    let found: Vec<bool> = args[2..]
        .iter()
        .map(|member| set.is_some_and(|set| set.contains(member.as_ref())))
        .collect();
    ctx.out.array_header(found.len());
    for member in found {
        ctx.out.int(i64::from(member));
    }
    Ok(())
}

/// SPOP and SRANDMEMBER's count: Redis's "must be positive" error for a negative SPOP count.
fn count_arg(arg: &[u8]) -> Result<i64, Fail> {
    super::int_arg(arg)
}

pub fn spop(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    if args.len() > 3 {
        return Err(text::SYNTAX.into());
    }
    let count = match args.get(2) {
        Some(arg) => {
            let count = count_arg(arg)
                .ok()
                .filter(|count| *count >= 0)
                .ok_or(Fail::from("ERR value is out of range, must be positive"))?;
            Some(count as usize)
        }
        None => None,
    };
    let key = &args[1];
    let Some(set) = ctx.set_mut(key, false)? else {
        match count {
            Some(_) => ctx.out.set_of([]),
            None => ctx.out.null(),
        }
        return Ok(());
    };
    let wanted = count.unwrap_or(1).min(set.len());
    let mut popped = Vec::with_capacity(wanted);
    for _ in 0..wanted {
        let index = random_below(set.len());
        popped.extend(set.swap_remove_index(index));
    }
    let removed = popped.iter().map(|member| item_cost(member)).sum();
    ctx.store.db.adjust(key, 0, removed);
    if !popped.is_empty() {
        ctx.notify_emptied(notify::SET, "spop", key);
        // Logged as what it removed, so replaying gives the same set.
        let mut command = vec![Bytes::from_static(b"SREM"), key.clone()];
        command.extend(popped.iter().cloned());
        ctx.changed_as(command);
    }
    match count {
        Some(_) => ctx.out.set_of(popped.iter().map(|member| member.as_ref())),
        None => ctx
            .out
            .maybe_bulk(popped.first().map(|member| member.as_ref())),
    }
    Ok(())
}

pub fn srandmember(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    if args.len() > 3 {
        return Err(text::SYNTAX.into());
    }
    let count = args.get(2).map(|arg| count_arg(arg)).transpose()?;
    if count == Some(i64::MIN) {
        return Err(super::MIN_COUNT.into());
    }
    if count.is_some_and(|count| count < 0 && count.unsigned_abs() > super::MAX_RANDOM_REPEATS) {
        return Err("ERR value is out of range".into());
    }
    let Some(set) = ctx.set(&args[1])? else {
        match count {
            Some(_) => ctx.out.bulks([]),
            None => ctx.out.null(),
        }
        return Ok(());
    };
    let members: Vec<Bytes> = match count {
        None => vec![set[random_below(set.len())].clone()],
        Some(count) if count < 0 => (0..count.unsigned_abs())
            .map(|_| set[random_below(set.len())].clone())
            .collect(),
        Some(count) => pick_distinct(set.len(), count as usize)
            .into_iter()
            .map(|index| set[index].clone())
            .collect(),
    };
    match count {
        None => ctx.out.bulk(&members[0]),
        Some(_) => ctx.out.bulks(members.iter().map(|member| member.as_ref())),
    }
    Ok(())
}

pub fn smove(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let (from, to, member) = (&args[1], &args[2], &args[3]);
    let source_has = ctx.set(from)?.map(|set| set.contains(member.as_ref()));
    ctx.set(to)?;
    let Some(has) = source_has else {
        ctx.out.int(0);
        return Ok(());
    };
    if from == to || !has {
        ctx.out.int(i64::from(has));
        return Ok(());
    }
    let set = ctx.set_mut(from, false)?.expect("checked above");
    set.swap_remove(member.as_ref());
    ctx.store.db.adjust(from, 0, item_cost(member));
    ctx.notify_emptied(notify::SET, "srem", from);
    // A destination that already holds the member is not changed (its watchers keep their
    // transaction, as in Redis).
    let target_has = ctx
        .set(to)?
        .is_some_and(|set| set.contains(member.as_ref()));
    if !target_has {
        let target = ctx.set_mut(to, true)?.expect("created");
        target.insert(member.clone());
        ctx.store.db.grew(item_cost(member));
        ctx.notify(notify::SET, "sadd", to);
    }
    ctx.changed();
    ctx.out.int(1);
    Ok(())
}

pub fn sscan(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let options = super::keys::scan_options(args)?;
    let Some(set) = ctx.set(&args[1])? else {
        super::keys::scan_reply(ctx, 0, &[]);
        return Ok(());
    };
    let (range, next) = super::keys::scan_step(set.len(), options.cursor, options.count);
    let members: Vec<Bytes> = range
        .rev()
        .filter_map(|index| set.get_index(index))
        .filter(|member| {
            options
                .pattern
                .is_none_or(|pattern| crate::state::glob::matches(pattern, member))
        })
        .cloned()
        .collect();
    super::keys::scan_reply(ctx, next, &members);
    Ok(())
}
