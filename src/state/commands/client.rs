//! CLIENT: ID, INFO, LIST, SETNAME, GETNAME, SETINFO, KILL, NO-EVICT, REPLY, UNBLOCK, PAUSE,
//! UNPAUSE, GETREDIR, in Redis 7.0's formats.

use std::time::Instant;

use bytes::Bytes;

use super::management::valid_client_name;
use super::{int_arg, subcommand, Ctx, Fail, Outcome};
use crate::state::reply::text;
use crate::state::store::ReplyMode;

const HELP: &[&str] = &[
    "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "GETNAME",
    "    Return the name of the current connection.",
    "ID",
    "    Return the ID of the current connection.",
    "INFO",
    "    Return information about the current client connection.",
    "KILL <ip:port>",
    "    Kill connection made from <ip:port>.",
    "KILL <option> <value> [<option> <value> [...]]",
    "    Kill connections. Options are: ID, TYPE, USER, ADDR, LADDR, SKIPME.",
    "LIST [options ...]",
    "    Return information about client connections.",
    "UNPAUSE",
    "    Stop the current client pause, resuming traffic.",
    "PAUSE <timeout> [WRITE|ALL]",
    "    Suspend all, or just write, clients for <timeout> milliseconds.",
    "REPLY (ON|OFF|SKIP)",
    "    Control the replies sent to the current connection.",
    "SETNAME <name>",
    "    Assign the name <name> to the current connection.",
    "UNBLOCK <clientid> [TIMEOUT|ERROR]",
    "    Unblock the specified blocked client.",
    "NO-EVICT (ON|OFF)",
    "    Protect current client connection from eviction.",
    "HELP",
    "    Print this help.",
];

pub fn client(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let known = [
        ("id", 2),
        ("setname", 3),
        ("getname", 2),
        ("setinfo", 4),
        ("info", 2),
        ("list", -2),
        ("kill", -3),
        ("no-evict", 3),
        ("reply", 3),
        ("unblock", -3),
        ("pause", -3),
        ("unpause", 2),
        ("getredir", 2),
        ("help", 2),
    ];
    match subcommand(args, "client", &known)? {
        "id" => ctx.out.int(ctx.client.id as i64),
        "setname" => {
            valid_client_name(&args[2])?;
            *ctx.client.info.name.borrow_mut() = (!args[2].is_empty()).then(|| args[2].clone());
            ctx.out.ok();
        }
        "getname" => {
            let name = ctx.client.info.name.borrow().clone();
            ctx.out.maybe_bulk(name.as_deref());
        }
        // Libraries announce themselves (lib-name, lib-ver, Redis 7.2); accepted, not kept.
        "setinfo" => ctx.out.ok(),
        "info" => {
            let line = ctx.client.info.line(Instant::now());
            ctx.out.verbatim(line.as_bytes());
        }
        "list" => list(ctx, args)?,
        "kill" => kill(ctx, args)?,
        "no-evict" => {
            let on = on_off(&args[2])?;
            ctx.client.info.no_evict.set(on);
            ctx.out.ok();
        }
        "reply" => match args[2].to_ascii_lowercase().as_slice() {
            b"on" => {
                ctx.client.reply = ReplyMode::On;
                ctx.out.ok();
            }
            b"off" => ctx.client.reply = ReplyMode::Off,
            b"skip" => {
                if ctx.client.reply == ReplyMode::On {
                    ctx.client.reply = ReplyMode::SkipNext;
                }
            }
            _ => return Err(text::SYNTAX.into()),
        },
        "unblock" => {
            if args.len() > 4 {
                return Err(text::SYNTAX.into());
            }
            let id = int_arg(&args[2])?;
            let mut error = false;
            if let Some(reason) = args.get(3) {
                match reason.to_ascii_lowercase().as_slice() {
                    b"timeout" => {}
                    b"error" => error = true,
                    _ => return Err("ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR".into()),
                }
            }
            match u64::try_from(id)
                .ok()
                .and_then(|id| ctx.store.waiting.mailbox(id))
            {
                Some(mailbox) => {
                    mailbox.unblock.set(Some(error));
                    mailbox.notify.notify_one();
                    ctx.out.int(1);
                }
                None => ctx.out.int(0),
            }
        }
        "pause" => {
            let timeout = int_arg(&args[2])?;
            if timeout < 0 {
                return Err("ERR timeout is negative".into());
            }
            if let Some(mode) = args.get(3) {
                if args.len() > 4
                    || !matches!(mode.to_ascii_lowercase().as_slice(), b"write" | b"all")
                {
                    return Err(text::SYNTAX.into());
                }
            }
            // Accepted; the store does not hold clients back (it runs one command at a time).
            ctx.out.ok();
        }
        "unpause" => ctx.out.ok(),
        "getredir" => ctx.out.int(-1),
        _ => {
            ctx.out.array_header(HELP.len());
            for line in HELP {
                ctx.out.simple(line);
            }
        }
    }
    Ok(())
}

fn on_off(arg: &[u8]) -> Result<bool, Fail> {
    match arg.to_ascii_lowercase().as_slice() {
        b"on" => Ok(true),
        b"off" => Ok(false),
        _ => Err(text::SYNTAX.into()),
    }
}

/// `CLIENT LIST [TYPE normal|pubsub|master|replica] [ID id …]`.
fn list(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let mut ids: Option<Vec<u64>> = None;
    let mut kind: Option<Vec<u8>> = None;
    let mut i = 2;
    while i < args.len() {
        match args[i].to_ascii_lowercase().as_slice() {
            b"type" if i + 1 < args.len() => {
                let name = args[i + 1].to_ascii_lowercase();
                if !matches!(
                    name.as_slice(),
                    b"normal" | b"pubsub" | b"master" | b"replica" | b"slave"
                ) {
                    return Err(format!(
                        "ERR Unknown client type '{}'",
                        String::from_utf8_lossy(&args[i + 1])
                    )
                    .into());
                }
                kind = Some(name);
                i += 2;
            }
            b"id" if i + 1 < args.len() => {
                let mut wanted = Vec::new();
                for arg in &args[i + 1..] {
                    let id = int_arg(arg)
                        .ok()
                        .filter(|id| *id > 0)
                        .ok_or(Fail::from("ERR Invalid client ID"))?;
                    wanted.push(id as u64);
                }
                ids = Some(wanted);
                i = args.len();
            }
            _ => return Err(text::SYNTAX.into()),
        }
    }
    let now = Instant::now();
    let mut text = String::new();
    for info in ctx.store.clients.values() {
        if ids.as_ref().is_some_and(|ids| !ids.contains(&info.id)) {
            continue;
        }
        let pubsub = info.channels.get() + info.patterns.get() > 0;
        let keep = match kind.as_deref() {
            None => true,
            Some(b"pubsub") => pubsub,
            Some(b"normal") => !pubsub,
            Some(_) => false,
        };
        if keep {
            text.push_str(&info.line(now));
        }
    }
    ctx.out.verbatim(text.as_bytes());
    Ok(())
}

/// `CLIENT KILL addr` (the old form: OK or an error) or `CLIENT KILL filter value …` (how many).
fn kill(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    if args.len() == 3 {
        let addr = String::from_utf8_lossy(&args[2]).into_owned();
        let target = ctx
            .store
            .clients
            .values()
            .find(|info| info.peer.addr == addr)
            .cloned()
            .ok_or(Fail::from("ERR No such client"))?;
        close(ctx, &target);
        ctx.out.ok();
        return Ok(());
    }
    if !args.len().is_multiple_of(2) {
        return Err(text::SYNTAX.into());
    }
    let (mut id, mut addr, mut laddr, mut kind, mut skip_me) = (None, None, None, None, true);
    for pair in args[2..].chunks(2) {
        let value = &pair[1];
        match pair[0].to_ascii_lowercase().as_slice() {
            b"id" => {
                let given = crate::state::number::parse_i64(value)
                    .filter(|id| *id > 0)
                    .ok_or(Fail::from("ERR client-id should be greater than 0"))?;
                id = Some(given as u64);
            }
            b"addr" => addr = Some(String::from_utf8_lossy(value).into_owned()),
            b"laddr" => laddr = Some(String::from_utf8_lossy(value).into_owned()),
            b"type" => {
                let name = value.to_ascii_lowercase();
                if !matches!(
                    name.as_slice(),
                    b"normal" | b"pubsub" | b"master" | b"replica" | b"slave"
                ) {
                    return Err(format!(
                        "ERR Unknown client type '{}'",
                        String::from_utf8_lossy(value)
                    )
                    .into());
                }
                kind = Some(name);
            }
            b"user" => {
                if value.as_ref() != b"default" {
                    return Err(
                        format!("ERR No such user '{}'", String::from_utf8_lossy(value)).into(),
                    );
                }
            }
            b"skipme" => match value.to_ascii_lowercase().as_slice() {
                b"yes" => skip_me = true,
                b"no" => skip_me = false,
                _ => return Err(text::SYNTAX.into()),
            },
            _ => return Err(text::SYNTAX.into()),
        }
    }
    let targets: Vec<_> = ctx
        .store
        .clients
        .values()
        .filter(|info| {
            let pubsub = info.channels.get() + info.patterns.get() > 0;
            id.is_none_or(|id| info.id == id)
                && addr.as_ref().is_none_or(|addr| &info.peer.addr == addr)
                && laddr.as_ref().is_none_or(|laddr| &info.peer.laddr == laddr)
                && kind.as_deref().is_none_or(|kind| match kind {
                    b"pubsub" => pubsub,
                    b"normal" => !pubsub,
                    _ => false,
                })
                && !(skip_me && info.id == ctx.client.id)
        })
        .cloned()
        .collect();
    for target in &targets {
        close(ctx, target);
    }
    ctx.out.int(targets.len() as i64);
    Ok(())
}

/// Closes a client's connection: this one after its reply, another at once.
fn close(ctx: &mut Ctx, target: &crate::state::clients::ClientInfo) {
    if target.id == ctx.client.id {
        ctx.client.close_after_reply = true;
    } else {
        target.mailbox.kill();
    }
}
