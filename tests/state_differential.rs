//! The embedded store against a real redis-server, script by script: every line of
//! tests/state/differential.redis goes to both, and the replies must be byte-identical (MONITOR
//! lines but for their time and socket path).

use crate::support::resp::{printable, sorted_elements, state_socket, RedisServer, RespClient};
use crate::support::{cluster, Cluster, RuntimeDir};

fn state_cluster() -> Cluster {
    let cluster = cluster()
        .args(&["--workers", "1", "--ready-delay", "100ms"])
        .start();
    cluster.wait_ready(1);
    cluster
}

/// The sections of tests/state/differential.redis: `## name` and its lines.
fn scripts() -> Vec<(String, Vec<String>)> {
    let text = include_str!("state/differential.redis");
    let mut scripts: Vec<(String, Vec<String>)> = Vec::new();
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("## ") {
            scripts.push((name.to_string(), Vec::new()));
        } else if !line.trim().is_empty() && !line.starts_with('#') {
            scripts
                .last_mut()
                .expect("a ## section first")
                .1
                .push(line.to_string());
        }
    }
    scripts
}

/// A MONITOR line with what must differ between two servers masked: the time (checked to be
/// `seconds.microseconds`) and a Unix socket's path (`unix:SOCKET`).
fn monitor_line(reply: &[u8]) -> String {
    let text = printable(reply);
    let Some((time, rest)) = text.strip_prefix('+').and_then(|line| line.split_once(' ')) else {
        return text;
    };
    let well_formed = time.split_once('.').is_some_and(|(seconds, micros)| {
        seconds.len() == 10
            && micros.len() == 6
            && seconds
                .bytes()
                .chain(micros.bytes())
                .all(|b| b.is_ascii_digit())
    });
    if !well_formed {
        return text;
    }
    let rest = match (rest.find(" unix:"), rest.find(']')) {
        (Some(start), Some(end)) if start < end => {
            format!("{} unix:SOCKET{}", &rest[..start], &rest[end..])
        }
        _ => rest.to_string(),
    };
    format!("+TIME {rest}")
}

#[test]
fn embedded_store_replies_byte_for_byte_like_redis_server() {
    let dir = RuntimeDir::new();
    let redis = RedisServer::start(&dir);
    let cluster = state_cluster();
    let socket = state_socket(&cluster);
    let mut compared = 0;
    let mut mismatches = Vec::new();
    for (name, lines) in scripts() {
        let mut ours = RespClient::unix(&socket);
        let mut theirs = RespClient::unix(&redis.socket);
        assert_eq!(ours.call("FLUSHALL"), theirs.call("FLUSHALL"));
        // A section named "… (resp3)" runs on connections switched to RESP3 (HELLO's own
        // reply differs in the client id; state_dialect.rs checks it).
        if name.ends_with("(resp3)") {
            ours.call("HELLO 3");
            theirs.call("HELLO 3");
        }
        // The second connection of `[2] ` lines, opened on first use.
        let mut second: Option<(RespClient, RespClient)> = None;
        for line in &lines {
            if let Some(line) = line.strip_prefix("% ") {
                let (command, fields) = line.split_once(" | ").expect("% COMMAND | FIELDS");
                let (got, expected) = (ours.call(command), theirs.call(command));
                let (got, expected) = (printable(&got), printable(&expected));
                for field in fields.split(' ') {
                    let field = format!("{field}:");
                    assert!(expected.contains(&field), "[{name}] redis lacks {field}");
                    assert!(
                        got.contains(&field),
                        "[{name}] `{command}` lacks {field}: {got}"
                    );
                }
                compared += 1;
                continue;
            }
            let (ours, theirs, line) = match line.strip_prefix("[2] ") {
                Some(line) => {
                    let (ours, theirs) = second.get_or_insert_with(|| {
                        (RespClient::unix(&socket), RespClient::unix(&redis.socket))
                    });
                    (ours, theirs, line)
                }
                None => (&mut ours, &mut theirs, line.as_str()),
            };
            if line == "<" || line == "<@" {
                // `<@`: a MONITOR line, compared but for its time and socket path.
                let shown: fn(&[u8]) -> String = if line == "<@" {
                    monitor_line
                } else {
                    printable
                };
                let (got, expected) = (ours.read_reply(), theirs.read_reply());
                assert_eq!(
                    got.as_deref().map(shown),
                    expected.as_deref().map(shown),
                    "[{name}] the next reply"
                );
                continue;
            }
            if let Some(command) = line.strip_prefix("> ") {
                // Sent without waiting: a blocking command, answered by a later `<`.
                let args = herdsman::state::split_args(command.as_bytes()).expect("well quoted");
                let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
                theirs.send(&args);
                ours.send(&args);
                continue;
            }
            let (unordered, command) = match line.strip_prefix("~ ") {
                Some(command) => (true, command),
                None => (false, line),
            };
            let expected = theirs.call(command);
            let got = ours.call(command);
            let same = if unordered {
                sorted_elements(&got) == sorted_elements(&expected)
            } else {
                got == expected
            };
            if !same {
                mismatches.push(format!(
                    "[{name}] `{command}`: herdsman {} vs redis {}",
                    printable(&got),
                    printable(&expected)
                ));
            }
            compared += 1;
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    assert!(compared > 300, "only {compared} commands compared");
}
