//! MULTI / EXEC / DISCARD and WATCH / UNWATCH. The store runs one command at a time on one
//! thread, so running the queued commands back to back is atomic: no other client's command can
//! come between them. A watched key that any command changed (a write, an expiry, FLUSHALL,
//! SWAPDB) since WATCH makes EXEC run nothing and reply with the null array, as in Redis.

use bytes::Bytes;

use super::{run, Ctx, Out, Outcome, DENY_OOM};
use crate::state::clients::BusyTransaction;
use crate::state::store::{Client, Store};

pub fn multi(ctx: &mut Ctx, _args: &[Bytes]) -> Outcome {
    if ctx.client.transaction.is_some() {
        return Err("ERR MULTI calls can not be nested".into());
    }
    ctx.client.transaction = Some(Vec::new());
    ctx.client.transaction_failed = false;
    ctx.client.info.multi.set(0);
    ctx.out.ok();
    Ok(())
}

pub fn watch(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    if ctx.client.transaction.is_some() {
        return Err("ERR WATCH inside MULTI is not allowed".into());
    }
    for key in &args[1..] {
        ctx.store.watch(ctx.client, key, ctx.now);
    }
    ctx.out.ok();
    Ok(())
}

pub fn unwatch(ctx: &mut Ctx, _args: &[Bytes]) -> Outcome {
    ctx.store.unwatch(ctx.client);
    ctx.out.ok();
    Ok(())
}

pub fn discard(ctx: &mut Ctx, _args: &[Bytes]) -> Outcome {
    if ctx.client.transaction.take().is_none() {
        return Err("ERR DISCARD without MULTI".into());
    }
    ctx.client.transaction_failed = false;
    ctx.client.info.multi.set(-1);
    ctx.store.unwatch(ctx.client);
    ctx.out.ok();
    Ok(())
}

pub fn exec(ctx: &mut Ctx, _args: &[Bytes]) -> Outcome {
    let Some(queued) = ctx.client.transaction.take() else {
        return Err("ERR EXEC without MULTI".into());
    };
    ctx.client.info.multi.set(-1);
    let touched = ctx.client.dirty.get() || ctx.store.watched_key_expired(ctx.client, ctx.now);
    ctx.store.unwatch(ctx.client);
    if std::mem::take(&mut ctx.client.transaction_failed) {
        return Err("EXECABORT Transaction discarded because of previous errors.".into());
    }
    if touched {
        ctx.out.null_array();
        return Ok(());
    }
    ctx.out.array_header(queued.len());
    let logging = ctx.store.log.is_some();
    let log_start = ctx.store.log.as_ref().map_or(0, Vec::len);
    if logging {
        ctx.store.log_command(&[&b"MULTI"[..]]);
    }
    let body_start = ctx.store.log.as_ref().map_or(0, Vec::len);
    ctx.client.in_exec = true;
    for args in &queued {
        let spec = ctx
            .store
            .table
            .lookup(&args[0])
            .expect("queued commands were looked up");
        run(ctx.store, ctx.client, ctx.out, spec, args);
    }
    ctx.client.in_exec = false;
    if let Some(log) = &mut ctx.store.log {
        if log.len() == body_start {
            log.truncate(log_start);
        } else {
            super::super::store::encode_command(log, &[&b"EXEC"[..]]);
        }
    }
    Ok(())
}

/// Whether `EXEC` would run a command that may grow memory (so it is refused when full).
pub fn queued_deny_oom(store: &Store, client: &Client) -> bool {
    client.transaction.as_ref().is_some_and(|queued| {
        queued.iter().any(|args| {
            store
                .table
                .lookup(&args[0])
                .is_some_and(|spec| spec.flags & DENY_OOM != 0)
        })
    })
}

/// Applies what the busy-script loop did to `client`'s transaction while a script ran
/// (`clients::BusyTransaction`): before the client's next command, its queue and watched keys
/// are what the replies it got said.
pub fn settle_busy_answers(store: &mut Store, client: &mut Client, out: &mut Out) {
    // A `HELLO` answered by the loop may have switched the protocol.
    out.resp3 = client.info.resp.get() == 3;
    let pending = client.info.busy_transaction.take();
    let queued = client.info.busy_queued.take();
    if pending == BusyTransaction::default() && queued.is_empty() {
        return;
    }
    if pending.discarded {
        client.transaction = None;
        client.transaction_failed = false;
    }
    if pending.discarded || pending.unwatched {
        store.unwatch(client);
    }
    if client.info.multi.get() >= 0 && client.transaction.is_none() {
        client.transaction = Some(Vec::new());
        client.transaction_failed = false;
    }
    if let Some(transaction) = &mut client.transaction {
        transaction.extend(queued);
    }
    if pending.failed {
        client.transaction_failed = true;
    }
}
