//! Set commands.

use bytes::Bytes;

use super::{Ctx, Outcome};
use crate::state::db::item_cost;

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
    ctx.out.bulks(members.iter().map(|member| member.as_ref()));
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
