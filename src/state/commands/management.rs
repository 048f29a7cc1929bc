//! Connection and server management commands (Redis's two groups of that name): PING, ECHO,
//! SELECT, QUIT, RESET, AUTH, HELLO, COMMAND, TIME, DBSIZE, FLUSHDB/FLUSHALL: what client
//! libraries send on connect, and what people type into `redis-cli`.

use bytes::Bytes;

use super::{arity_error, subcommand, Ctx, Fail, Out, Outcome, Spec};
use crate::state::clients::ClientInfo;
use crate::state::reply::text;
use crate::state::store::{ReplyMode, DATABASES};

/// The Redis version the store answers like (the commands and replies follow Redis 7.0).
pub const REDIS_VERSION: &str = "7.0.15";

pub fn ping(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    if args.len() > 2 {
        return Err(arity_error("ping"));
    }
    if ctx.client.subscriptions() > 0 && !ctx.out.resp3 {
        let message = args.get(1).map_or(&b""[..], |arg| arg.as_ref());
        ctx.out.bulks([&b"pong"[..], message]);
    } else if let Some(message) = args.get(1) {
        ctx.out.bulk(message);
    } else {
        ctx.out.simple("PONG");
    }
    Ok(())
}

/// `CLUSTER …`: the store is one node, as a Redis started without `cluster-enabled`.
pub fn cluster(_ctx: &mut Ctx, _args: &[Bytes]) -> Outcome {
    Err("ERR This instance has cluster support disabled".into())
}

/// `SAVE`: with a state file every write is in it before its reply goes out, so there is
/// nothing left to save; without one there is nowhere to save to.
pub fn save(ctx: &mut Ctx, _args: &[Bytes]) -> Outcome {
    if ctx.store.log.is_none() {
        return Err(
            "ERR the store has no state file to save to (start herdsman with --state-file)".into(),
        );
    }
    ctx.out.ok();
    Ok(())
}

/// `SHUTDOWN`'s answer, also while a script is busy (`script/busy.rs`).
pub const SHUTDOWN_REFUSED: &str =
    "ERR the store stops with its cluster (`herdsman stop`), not with SHUTDOWN";

/// `SHUTDOWN`: the store lives as long as the cluster that runs it.
pub fn shutdown(_ctx: &mut Ctx, _args: &[Bytes]) -> Outcome {
    Err(SHUTDOWN_REFUSED.into())
}

pub fn echo(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    ctx.out.bulk(&args[1]);
    Ok(())
}

/// A database index argument, or Redis's errors.
pub fn db_index(arg: &[u8]) -> Result<usize, Fail> {
    let index = crate::state::number::parse_i64(arg)
        .ok_or(Fail::from("ERR value is not an integer or out of range"))?;
    usize::try_from(index)
        .ok()
        .filter(|index| *index < DATABASES)
        .ok_or(Fail::from("ERR DB index is out of range"))
}

pub fn select(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let index = db_index(&args[1])?;
    ctx.client.db = index;
    ctx.client.info.db.set(index);
    ctx.store.select(index);
    ctx.out.ok();
    Ok(())
}

pub fn quit(ctx: &mut Ctx, _args: &[Bytes]) -> Outcome {
    ctx.out.ok();
    ctx.client.close_after_reply = true;
    Ok(())
}

pub fn reset(ctx: &mut Ctx, _args: &[Bytes]) -> Outcome {
    ctx.client.transaction = None;
    ctx.client.transaction_failed = false;
    ctx.client.info.multi.set(-1);
    *ctx.client.info.name.borrow_mut() = None;
    ctx.client.info.no_evict.set(false);
    ctx.client.reply = ReplyMode::On;
    ctx.store.unwatch(ctx.client);
    super::pubsub::forget(ctx.store, ctx.client);
    super::monitor::stop(ctx.store, ctx.client);
    ctx.client.db = 0;
    ctx.client.info.db.set(0);
    ctx.store.select(0);
    set_protocol(&ctx.client.info, ctx.out, 2);
    ctx.out.simple("RESET");
    Ok(())
}

/// Switches the connection of `info` to RESP `version` (2 or 3): the replies written to
/// `out`, and the pushes of its mailbox.
fn set_protocol(info: &ClientInfo, out: &mut Out, version: u8) {
    let resp3 = version == 3;
    out.resp3 = resp3;
    info.mailbox.resp3.set(resp3);
    info.resp.set(version);
}

/// There are no passwords: the store is reachable only through a private socket (or loopback).
/// As in Redis without `requirepass`, the default user needs none.
fn authenticate(user: Option<&[u8]>) -> Outcome {
    match user {
        None => Err("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?".into()),
        Some(b"default") => Ok(()),
        Some(_) => Err("WRONGPASS invalid username-password pair or user is disabled.".into()),
    }
}

pub fn auth(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    auth_to(ctx.out, args)
}

/// `AUTH`'s reply to `out`: it needs nothing of the store, so the busy-script loop answers it
/// too (`script/busy.rs`).
pub fn auth_to(out: &mut Out, args: &[Bytes]) -> Outcome {
    if args.len() > 3 {
        return Err(text::SYNTAX.into());
    }
    authenticate(if args.len() == 3 {
        Some(&args[1])
    } else {
        None
    })?;
    out.ok();
    Ok(())
}

pub fn valid_client_name(name: &[u8]) -> Result<(), Fail> {
    if name.iter().all(|byte| (b'!'..=b'~').contains(byte)) {
        Ok(())
    } else {
        Err("ERR Client names cannot contain spaces, newlines or special characters.".into())
    }
}

pub fn hello(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    hello_to(&ctx.client.info, ctx.out, args)
}

/// `HELLO` from the client of `info`, its reply to `out`: what it changes is all in `info`, so
/// the busy-script loop answers it too (`script/busy.rs`), as Redis does (`allow-busy`).
pub fn hello_to(info: &ClientInfo, out: &mut Out, args: &[Bytes]) -> Outcome {
    let mut next = 1;
    let mut protocol = None;
    if let Some(version) = args.get(1) {
        let version = crate::state::number::parse_i64(version).ok_or(Fail::from(
            "ERR Protocol version is not an integer or out of range",
        ))?;
        if !(2..=3).contains(&version) {
            return Err("NOPROTO unsupported protocol version".into());
        }
        protocol = Some(version as u8);
        next = 2;
    }
    let mut name = None;
    while next < args.len() {
        let more = args.len() - 1 - next;
        match args[next].to_ascii_lowercase().as_slice() {
            b"auth" if more >= 2 => {
                authenticate(Some(&args[next + 1]))?;
                next += 3;
            }
            b"setname" if more >= 1 => {
                valid_client_name(&args[next + 1])?;
                name = Some(args[next + 1].clone());
                next += 2;
            }
            _ => {
                return Err(format!(
                    "ERR Syntax error in HELLO option '{}'",
                    String::from_utf8_lossy(&args[next])
                )
                .into())
            }
        }
    }
    if let Some(name) = name {
        *info.name.borrow_mut() = (!name.is_empty()).then_some(name);
    }
    if let Some(version) = protocol {
        set_protocol(info, out, version);
    }
    // Redis 7.0's map, in its order.
    out.map_header(7);
    out.bulk(b"server");
    out.bulk(b"redis");
    out.bulk(b"version");
    out.bulk(REDIS_VERSION.as_bytes());
    out.bulk(b"proto");
    out.int(i64::from(info.resp.get()));
    out.bulk(b"id");
    out.int(info.id as i64);
    out.bulk(b"mode");
    out.bulk(b"standalone");
    out.bulk(b"role");
    out.bulk(b"master");
    out.bulk(b"modules");
    out.array_header(0);
    Ok(())
}

fn describe(spec: &Spec, out: &mut super::Out) {
    let flags = spec.flag_names();
    let (first, last, step) = spec.keys;
    out.array_header(10);
    out.bulk(spec.name.as_bytes());
    out.int(i64::from(spec.arity));
    out.set_header(flags.len());
    for flag in flags {
        out.simple(flag);
    }
    out.int(i64::from(first));
    out.int(i64::from(last));
    out.int(i64::from(step));
    for _ in 0..4 {
        out.array_header(0);
    }
}

pub fn command(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let all = ctx.store.table.all();
    if args.len() == 1 {
        ctx.out.array_header(all.len());
        for spec in all {
            describe(spec, ctx.out);
        }
        return Ok(());
    }
    let known = [("count", 2), ("info", -2), ("docs", -2), ("list", -2)];
    match subcommand(args, "command", &known)? {
        "count" => ctx.out.int(all.len() as i64),
        "info" => {
            ctx.out.array_header(args.len() - 2);
            for name in &args[2..] {
                match ctx.store.table.lookup(name) {
                    Some(spec) => describe(spec, ctx.out),
                    None => ctx.out.null_array(),
                }
            }
        }
        // No documentation to offer; clients (redis-cli) that ask on connect get none.
        "docs" => ctx.out.bulks([]),
        _ => ctx.out.bulks(all.iter().map(|spec| spec.name.as_bytes())),
    }
    Ok(())
}

pub fn time(ctx: &mut Ctx, _args: &[Bytes]) -> Outcome {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let seconds = now.as_secs().to_string();
    let micros = now.subsec_micros().to_string();
    ctx.out.bulks([seconds.as_bytes(), micros.as_bytes()]);
    Ok(())
}

pub fn dbsize(ctx: &mut Ctx, _args: &[Bytes]) -> Outcome {
    // As Redis: keys past their deadline and not reclaimed yet still count.
    ctx.out.int(ctx.store.db.len() as i64);
    Ok(())
}

pub fn flush(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    if args.len() > 2
        || args
            .get(1)
            .is_some_and(|mode| !matches!(mode.to_ascii_lowercase().as_slice(), b"async" | b"sync"))
    {
        return Err(text::SYNTAX.into());
    }
    let all = args[0].eq_ignore_ascii_case(b"flushall");
    let databases: Vec<usize> = if all {
        (0..DATABASES).collect()
    } else {
        vec![ctx.store.current_db()]
    };
    for db in databases {
        ctx.store.touch_all_watched(db, None, ctx.now);
        ctx.store.db_at(db).clear();
    }
    ctx.out.ok();
    ctx.changed_as(vec![Bytes::from_static(if all {
        b"FLUSHALL"
    } else {
        b"FLUSHDB"
    })]);
    Ok(())
}
