//! Publish/subscribe: PUBLISH, (P)SUBSCRIBE, (P)UNSUBSCRIBE, PUBSUB. A subscribed client gets
//! messages through its mailbox; its connection task writes them out.

use bytes::Bytes;

use super::{subcommand, Ctx, Outcome};
use crate::state::glob;

/// A (un)subscription's confirmation: an array in RESP2, a push in RESP3.
fn confirm(ctx: &mut Ctx, kind: &str, name: Option<&[u8]>) {
    let count = ctx.client.subscriptions() as i64;
    ctx.client.info.channels.set(ctx.client.channels.len());
    ctx.client.info.patterns.set(ctx.client.patterns.len());
    ctx.out.push_header(3);
    ctx.out.bulk(kind.as_bytes());
    ctx.out.maybe_bulk(name);
    ctx.out.int(count);
}

pub fn publish(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let receivers = ctx.store.pubsub.publish(&args[1], &args[2]);
    ctx.out.int(receivers as i64);
    Ok(())
}

pub fn subscribe(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    for channel in &args[1..] {
        let channel = Bytes::copy_from_slice(channel);
        if ctx.client.channels.insert(channel.clone()) {
            ctx.store.pubsub.subscribe(&channel, ctx.client);
        }
        confirm(ctx, "subscribe", Some(&channel));
    }
    Ok(())
}

pub fn unsubscribe(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let channels: Vec<Bytes> = if args.len() > 1 {
        args[1..].to_vec()
    } else {
        ctx.client.channels.iter().cloned().collect()
    };
    if channels.is_empty() {
        confirm(ctx, "unsubscribe", None);
    }
    for channel in channels {
        if ctx.client.channels.shift_remove(&channel) {
            ctx.store.pubsub.unsubscribe(&channel, ctx.client.id);
        }
        confirm(ctx, "unsubscribe", Some(&channel));
    }
    Ok(())
}

pub fn psubscribe(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    for pattern in &args[1..] {
        let pattern = Bytes::copy_from_slice(pattern);
        if ctx.client.patterns.insert(pattern.clone()) {
            ctx.store.pubsub.psubscribe(&pattern, ctx.client);
        }
        confirm(ctx, "psubscribe", Some(&pattern));
    }
    Ok(())
}

pub fn punsubscribe(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let patterns: Vec<Bytes> = if args.len() > 1 {
        args[1..].to_vec()
    } else {
        ctx.client.patterns.iter().cloned().collect()
    };
    if patterns.is_empty() {
        confirm(ctx, "punsubscribe", None);
    }
    for pattern in patterns {
        if ctx.client.patterns.shift_remove(&pattern) {
            ctx.store.pubsub.punsubscribe(&pattern, ctx.client.id);
        }
        confirm(ctx, "punsubscribe", Some(&pattern));
    }
    Ok(())
}

/// Removes every subscription of a client that is going away.
pub fn forget(
    ctx_store: &mut crate::state::store::Store,
    client: &mut crate::state::store::Client,
) {
    for channel in client.channels.drain(..) {
        ctx_store.pubsub.unsubscribe(&channel, client.id);
    }
    for pattern in client.patterns.drain(..) {
        ctx_store.pubsub.punsubscribe(&pattern, client.id);
    }
    client.info.channels.set(0);
    client.info.patterns.set(0);
}

pub fn pubsub(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    match subcommand(
        args,
        "pubsub",
        &[("channels", -2), ("numsub", -2), ("numpat", 2)],
    )? {
        "channels" => {
            let pattern = args.get(2);
            let channels: Vec<Bytes> = ctx
                .store
                .pubsub
                .channels()
                .filter(|(name, _)| pattern.is_none_or(|pattern| glob::matches(pattern, name)))
                .map(|(name, _)| name.clone())
                .collect();
            ctx.out.bulks(channels.iter().map(|name| name.as_ref()));
        }
        "numsub" => {
            // An array in RESP3 too, as in Redis 7.0.
            ctx.out.array_header((args.len() - 2) * 2);
            for name in &args[2..] {
                let count = ctx.store.pubsub.subscribers(name) as i64;
                ctx.out.bulk(name);
                ctx.out.int(count);
            }
        }
        _ => ctx.out.int(ctx.store.pubsub.pattern_count() as i64),
    }
    Ok(())
}
