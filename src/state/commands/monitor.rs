//! MONITOR: every command that runs is shown to the monitoring clients as Redis 7.0 shows it,
//! `+1700000000.123456 [0 127.0.0.1:5000] "set" "k" "v"` (`[0 lua]` for a script's commands,
//! `[0 unix:/path/state.sock]` for a Unix socket client). A command is shown once it has run
//! (so `MULTI`, the transaction's commands, then `EXEC`), except the scripts' commands
//! (`EVAL`, `FCALL`, …), shown before they run so the commands a script calls come after it.
//! As in Redis, administrative commands (`CONFIG`, `CLIENT KILL`, `MONITOR`, …), `QUIT`, a
//! refused request and a blocked command woken again are not shown, and passwords (`AUTH`,
//! `HELLO … AUTH`) read `"(redacted)"`.

use bytes::Bytes;

use super::{Ctx, Outcome, Spec};
use crate::state::store::{Client, Store};

/// `MONITOR`: the client gets every command from now on, until it closes or sends `RESET`.
pub fn monitor(ctx: &mut Ctx, _args: &[Bytes]) -> Outcome {
    if ctx.client.in_exec {
        return Err("ERR MONITOR isn't allowed for DENY BLOCKING client".into());
    }
    if ctx.client.info.monitor.get() {
        return Ok(());
    }
    ctx.client.info.monitor.set(true);
    ctx.store
        .monitors
        .push((ctx.client.id, ctx.client.mailbox.clone()));
    ctx.out.ok();
    Ok(())
}

/// Ends `client`'s monitoring (`RESET`).
pub fn stop(store: &mut Store, client: &Client) {
    client.info.monitor.set(false);
    store.monitors.retain(|(id, _)| *id != client.id);
}

/// Commands shown before they run: the scripts, whose own commands follow them.
pub fn shown_before_running(spec: &Spec) -> bool {
    matches!(
        spec.name,
        "eval" | "evalsha" | "eval_ro" | "evalsha_ro" | "fcall" | "fcall_ro"
    )
}

/// Whether a command that ran is shown: Redis hides QUIT and its administrative commands (of
/// those the store has: MONITOR, CONFIG and some of CLIENT's).
pub fn shown(spec: &Spec, args: &[Bytes]) -> bool {
    let subcommand = || args.get(1).map(|sub| sub.to_ascii_lowercase());
    match spec.name {
        "quit" | "monitor" | "config" => false,
        "client" => !matches!(
            subcommand().as_deref(),
            Some(b"kill" | b"list" | b"no-evict" | b"pause" | b"unpause" | b"unblock")
        ),
        _ => true,
    }
}

/// Shows `args`, run by `client`, to every monitoring client.
pub fn feed(store: &Store, client: &Client, args: &[Bytes]) {
    if store.monitors.is_empty() {
        return;
    }
    let line = Bytes::from(line(store, client, args));
    for (_, mailbox) in &store.monitors {
        mailbox.deliver(line.clone());
    }
}

fn line(store: &Store, client: &Client, args: &[Bytes]) -> Vec<u8> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let origin = if store.scripting.busy.running() {
        "lua".to_string()
    } else if client.info.peer.unix {
        let path = &client.info.peer.addr;
        format!("unix:{}", path.strip_suffix(":0").unwrap_or(path))
    } else {
        client.info.peer.addr.clone()
    };
    let mut line = format!(
        "+{}.{:06} [{} {origin}]",
        now.as_secs(),
        now.subsec_micros(),
        client.db
    )
    .into_bytes();
    let hidden = redacted(args);
    for (index, arg) in args.iter().enumerate() {
        line.push(b' ');
        if hidden.contains(&index) {
            line.extend_from_slice(b"\"(redacted)\"");
        } else {
            quote(&mut line, arg);
        }
    }
    line.extend_from_slice(b"\r\n");
    line
}

/// The positions of the arguments Redis hides: AUTH's (its one- and two-argument forms), and
/// the user and password of each of HELLO's AUTH options up to the first option it refuses.
fn redacted(args: &[Bytes]) -> Vec<usize> {
    let name = args[0].to_ascii_lowercase();
    if name == b"auth" {
        return if args.len() <= 3 {
            (1..args.len()).collect()
        } else {
            Vec::new()
        };
    }
    if name != b"hello" || args.len() < 2 {
        return Vec::new();
    }
    if !matches!(args[1].as_ref(), b"2" | b"3") {
        return Vec::new();
    }
    let mut hidden = Vec::new();
    let mut index = 2;
    while index < args.len() {
        let more = args.len() - 1 - index;
        let option = args[index].to_ascii_lowercase();
        if option == b"auth" && more >= 2 {
            hidden.extend([index + 1, index + 2]);
            index += 3;
        } else if option == b"setname" && more >= 1 {
            index += 2;
        } else {
            break;
        }
    }
    hidden
}

/// `arg` in double quotes as Redis's `sdscatrepr` writes it.
fn quote(out: &mut Vec<u8>, arg: &[u8]) {
    out.push(b'"');
    for &byte in arg {
        match byte {
            b'\\' | b'"' => out.extend_from_slice(&[b'\\', byte]),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            7 => out.extend_from_slice(b"\\a"),
            8 => out.extend_from_slice(b"\\b"),
            b' '..=b'~' => out.push(byte),
            _ => out.extend_from_slice(format!("\\x{byte:02x}").as_bytes()),
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &[&str]) -> Vec<Bytes> {
        line.iter()
            .map(|arg| Bytes::from(arg.to_string()))
            .collect()
    }

    #[test]
    fn arguments_are_quoted_and_passwords_hidden_as_redis_does() {
        let mut out = Vec::new();
        quote(&mut out, b"a \"b\"\\\n\r\t\x07\x08\x01\xff");
        assert_eq!(out, b"\"a \\\"b\\\"\\\\\\n\\r\\t\\a\\b\\x01\\xff\"");
        assert_eq!(redacted(&args(&["AUTH", "pw"])), vec![1]);
        assert_eq!(redacted(&args(&["auth", "u", "pw"])), vec![1, 2]);
        assert_eq!(
            redacted(&args(&["auth", "u", "pw", "x"])),
            Vec::<usize>::new()
        );
        assert_eq!(
            redacted(&args(&["HELLO", "3", "SETNAME", "n", "AUTH", "u", "p"])),
            vec![5, 6]
        );
        assert_eq!(
            redacted(&args(&["hello", "2", "bogus", "auth", "u", "p"])),
            Vec::<usize>::new()
        );
        assert_eq!(
            redacted(&args(&["hello", "4", "auth", "u", "p"])),
            Vec::<usize>::new()
        );
    }
}
