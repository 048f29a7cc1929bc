//! Connection and server commands: PING, ECHO, SELECT, QUIT, RESET, AUTH, HELLO, CLIENT, INFO,
//! COMMAND, CONFIG, TIME, DBSIZE, FLUSHDB/FLUSHALL: what client libraries send on connect, and
//! what people type into `redis-cli`.

use std::fmt::Write as _;

use bytes::Bytes;
use redis_protocol::resp2::types::BorrowedFrame;

use super::{arity_error, int_arg, subcommand, Ctx, Fail, Outcome, Spec};
use crate::state::glob;
use crate::state::reply::text;

/// The Redis version the store answers like (the commands and replies follow Redis 7.0).
pub const REDIS_VERSION: &str = "7.0.0";

pub fn ping(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    if args.len() > 2 {
        return Err(arity_error("ping"));
    }
    if ctx.client.subscriptions() > 0 {
        let message = args.get(1).map_or(&b""[..], |arg| arg.as_ref());
        ctx.out.bulks([&b"pong"[..], message]);
    } else if let Some(message) = args.get(1) {
        ctx.out.bulk(message);
    } else {
        ctx.out.simple("PONG");
    }
    Ok(())
}

pub fn echo(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    ctx.out.bulk(&args[1]);
    Ok(())
}

pub fn select(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let index = int_arg(&args[1])?;
    if index != 0 {
        return Err("ERR DB index is out of range (herdsman's embedded store has database 0 only; use --state redis://… for more)".into());
    }
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
    ctx.client.name = None;
    super::pubsub::forget(ctx.store, ctx.client);
    ctx.out.simple("RESET");
    Ok(())
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
    if args.len() > 3 {
        return Err(text::SYNTAX.into());
    }
    authenticate(if args.len() == 3 {
        Some(&args[1])
    } else {
        None
    })?;
    ctx.out.ok();
    Ok(())
}

fn valid_client_name(name: &[u8]) -> Result<(), Fail> {
    if name.iter().all(|byte| (b'!'..=b'~').contains(byte)) {
        Ok(())
    } else {
        Err("ERR Client names cannot contain spaces, newlines or special characters.".into())
    }
}

pub fn hello(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let mut next = 1;
    if let Some(version) = args.get(1) {
        let version = crate::state::number::parse_i64(version).ok_or(Fail::from(
            "ERR Protocol version is not an integer or out of range",
        ))?;
        // RESP3 is not spoken: clients that probe with HELLO 3 fall back to RESP2 on NOPROTO.
        if version != 2 {
            return Err("NOPROTO unsupported protocol version".into());
        }
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
        ctx.client.name = (!name.is_empty()).then_some(name);
    }
    let id = ctx.client.id as i64;
    ctx.out.frames(&[
        BorrowedFrame::BulkString(b"server"),
        BorrowedFrame::BulkString(b"redis"),
        BorrowedFrame::BulkString(b"version"),
        BorrowedFrame::BulkString(REDIS_VERSION.as_bytes()),
        BorrowedFrame::BulkString(b"proto"),
        BorrowedFrame::Integer(2),
        BorrowedFrame::BulkString(b"id"),
        BorrowedFrame::Integer(id),
        BorrowedFrame::BulkString(b"mode"),
        BorrowedFrame::BulkString(b"standalone"),
        BorrowedFrame::BulkString(b"role"),
        BorrowedFrame::BulkString(b"master"),
        BorrowedFrame::BulkString(b"modules"),
        BorrowedFrame::Array(&[]),
    ]);
    Ok(())
}

pub fn client(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let known = [
        ("id", 2),
        ("setname", 3),
        ("getname", 2),
        ("setinfo", 4),
        ("info", 2),
        ("list", -2),
    ];
    match subcommand(args, "client", &known)? {
        "id" => ctx.out.int(ctx.client.id as i64),
        "setname" => {
            valid_client_name(&args[2])?;
            ctx.client.name = (!args[2].is_empty()).then(|| args[2].clone());
            ctx.out.ok();
        }
        "getname" => {
            let name = ctx.client.name.clone();
            ctx.out.maybe_bulk(name.as_deref());
        }
        // Libraries announce themselves (lib-name, lib-ver); accepted and not kept.
        "setinfo" => ctx.out.ok(),
        _ => {
            let name = ctx
                .client
                .name
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            let line = format!("id={} name={name} db=0\n", ctx.client.id);
            ctx.out.bulk(line.as_bytes());
        }
    }
    Ok(())
}

pub fn info(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let wanted: Vec<Vec<u8>> = args[1..]
        .iter()
        .map(|arg| arg.to_ascii_lowercase())
        .collect();
    let everything = wanted.is_empty()
        || wanted
            .iter()
            .any(|section| matches!(section.as_slice(), b"all" | b"default" | b"everything"));
    let store = &ctx.store;
    let uptime = store.started.elapsed().as_secs();
    let sections: [(&str, String); 7] = [
        (
            "server",
            format!(
                "redis_version:{REDIS_VERSION}\r\nredis_mode:standalone\r\nherdsman_version:{}\r\nprocess_id:{}\r\nuptime_in_seconds:{uptime}\r\n",
                env!("CARGO_PKG_VERSION"),
                std::process::id()
            ),
        ),
        (
            "clients",
            format!("connected_clients:{}\r\n", store.connected_clients),
        ),
        (
            "memory",
            format!(
                "used_memory:{}\r\nmaxmemory:{}\r\nmaxmemory_policy:noeviction\r\n",
                store.db.used_memory(),
                store.max_memory.unwrap_or(0)
            ),
        ),
        (
            "persistence",
            format!(
                "loading:0\r\naof_enabled:{}\r\n",
                u8::from(store.log.is_some())
            ),
        ),
        (
            "stats",
            format!(
                "total_commands_processed:{}\r\n",
                store.commands_processed
            ),
        ),
        ("replication", "role:master\r\nconnected_slaves:0\r\n".into()),
        (
            "keyspace",
            if store.db.len() > 0 {
                format!(
                    "db0:keys={},expires={},avg_ttl=0\r\n",
                    store.db.len(),
                    store.db.expiring()
                )
            } else {
                String::new()
            },
        ),
    ];
    let mut reply = String::new();
    for (name, body) in sections {
        if everything || wanted.iter().any(|section| section == name.as_bytes()) {
            if !reply.is_empty() {
                reply.push_str("\r\n");
            }
            let mut title = name.to_string();
            title[..1].make_ascii_uppercase();
            let _ = write!(reply, "# {title}\r\n{body}");
        }
    }
    ctx.out.bulk(reply.as_bytes());
    Ok(())
}

fn describe(spec: &Spec, out: &mut super::Out) {
    let flags: Vec<BorrowedFrame> = spec
        .flag_names()
        .into_iter()
        .map(|flag| BorrowedFrame::SimpleString(flag.as_bytes()))
        .collect();
    let (first, last, step) = spec.keys;
    out.frames(&[
        BorrowedFrame::BulkString(spec.name.as_bytes()),
        BorrowedFrame::Integer(i64::from(spec.arity)),
        BorrowedFrame::Array(&flags),
        BorrowedFrame::Integer(i64::from(first)),
        BorrowedFrame::Integer(i64::from(last)),
        BorrowedFrame::Integer(i64::from(step)),
        BorrowedFrame::Array(&[]),
        BorrowedFrame::Array(&[]),
        BorrowedFrame::Array(&[]),
        BorrowedFrame::Array(&[]),
    ]);
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

pub fn config(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let known = [("get", -3), ("set", -4), ("resetstat", 2)];
    match subcommand(args, "config", &known)? {
        "get" => {
            let max_memory = ctx.store.max_memory.unwrap_or(0).to_string();
            let append_only = if ctx.store.log.is_some() { "yes" } else { "no" };
            let settings: [(&str, &str); 7] = [
                ("maxmemory", &max_memory),
                ("maxmemory-policy", "noeviction"),
                ("appendonly", append_only),
                ("appendfsync", "everysec"),
                ("save", ""),
                ("databases", "1"),
                ("notify-keyspace-events", ""),
            ];
            let mut items: Vec<&[u8]> = Vec::new();
            for (name, value) in settings {
                if args[2..]
                    .iter()
                    .any(|pattern| glob::matches(&pattern.to_ascii_lowercase(), name.as_bytes()))
                {
                    items.push(name.as_bytes());
                    items.push(value.as_bytes());
                }
            }
            ctx.out.bulks(items);
        }
        "set" => {
            return Err("ERR the embedded store is configured by herdsman's flags (--state-max-memory, --state-file); CONFIG SET is not supported".into())
        }
        _ => ctx.out.ok(),
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
    ctx.store.db.clear();
    ctx.out.ok();
    ctx.changed_as(vec![Bytes::from_static(b"FLUSHALL")]);
    Ok(())
}
