//! Every per-client queue of the primary is bounded (issue 10): a worker that never reads its IPC
//! channel, an output nobody reads, oversized control requests. Each memory test runs the primary
//! under `prlimit --as`, so that a regression stops at that ceiling instead of eating the machine,
//! and asserts the primary's peak resident size (`VmHWM`) stays far below it.

use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::support::*;

/// The address space the primary may use: a regression fails against this, not the machine.
const ADDRESS_SPACE: u64 = 1024 * 1024 * 1024;
/// The peak resident size the primary must stay under.
const RSS_CEILING: u64 = 40 * 1024 * 1024;
/// How long the floods below may take: a debug build moves about 7 MB/s of messages.
const FLOOD_DEADLINE: Duration = Duration::from_secs(90);

/// Slot 2 sends slot 1 `FLOOD` messages of 64 KB through the primary once it gets SIGUSR1; slot 1
/// reads nothing until it gets SIGUSR1, then counts what it reads until `"after"`.
const FLOOD_WORKER: &str = r#"
import json, os, signal, socket, time
channel = socket.socket(fileno=int(os.environ["HERDSMAN_IPC_FD"]))
me = int(os.environ["HERDSMAN_WORKER_ID"])
go = False
def start(*_):
    global go
    go = True
signal.signal(signal.SIGUSR1, start)
channel.sendall(b'{"type":"ready"}\n')
while not go:
    time.sleep(0.02)
if me == 2:
    frame = (json.dumps({"type": "message", "data": "x" * 65000, "to": 1}) + "\n").encode()
    for _ in range(int(os.environ["FLOOD"])):
        channel.sendall(frame)
    print("flood sent", flush=True)
else:
    count = 0
    for line in channel.makefile("rb"):
        if json.loads(line)["data"] == "after":
            print(f"got after after {count} messages", flush=True)
        else:
            count += 1
time.sleep(600)
"#;

/// 104 MB of messages.
const FLOOD: u64 = 1600;

#[test]
fn a_worker_that_never_reads_its_ipc_channel_gets_messages_dropped_not_queued() {
    let cluster = cluster()
        .memory_limit(ADDRESS_SPACE)
        .args(&[
            "--workers",
            "2",
            "--ready",
            "notify",
            "--ipc",
            "--name",
            "flood",
        ])
        .env("FLOOD", &FLOOD.to_string())
        .command(&["python3", "-c", FLOOD_WORKER])
        .start();
    let mut ready = cluster.wait_ready(2);
    ready.sort();
    let (reader, sender) = (ready[0].1, ready[1].1);
    kill(Pid::from_raw(sender as i32), Signal::SIGUSR1).unwrap();
    // 104 MB went through the primary to a worker that reads nothing.
    cluster.stdout.wait_for_within(FLOOD_DEADLINE, "flood sent");
    assert!(alive(cluster.pid()), "the primary died:\n{}", cluster.log());
    let peak = proc_status_bytes(cluster.pid(), "VmHWM");
    assert!(
        peak < RSS_CEILING,
        "the primary's peak RSS is {peak} bytes after {FLOOD} messages of 65 kB to a worker that \
         does not read"
    );
    let full = format!(
        "herdsman: worker 1 (pid {reader}) does not read its IPC channel: its inbox is full (4.0 \
         MiB unread); dropping messages to it until it reads"
    );
    cluster.stderr.wait_for(&full);
    assert_eq!(cluster.stderr.count(|line| line == full), 1, "logged once");
    let routed_dropped = cluster.stderr.wait_for("(delivered to 0, dropped for 1)");
    assert!(
        routed_dropped.contains("worker 2 (pid "),
        "{routed_dropped}"
    );
    // `herdsman send` says the message was dropped, and why. (Larger than the flood's messages,
    // so that it cannot fit in what room their last one left.)
    let mut attempts = 1;
    let probe = format!("\"{}\"", "y".repeat(65400));
    let output = cluster.herdsman(&["send", "flood", "1", &probe]);
    assert_eq!(output.code, Some(1), "{output:?}");
    assert_eq!(
        output.stderr.trim(),
        "herdsman: error: not sent: the IPC inbox of worker 1 is full (4 MiB unread: not read \
         from), so the message was dropped",
        "{output:?}"
    );
    // Once the worker reads, messages reach it again, and the drops are counted in the log.
    kill(Pid::from_raw(reader as i32), Signal::SIGUSR1).unwrap();
    loop {
        attempts += 1;
        let output = cluster.herdsman(&["send", "flood", "1", r#""after""#]);
        if output.code == Some(0) {
            assert_eq!(output.stdout.trim(), "sent to 1 worker");
            break;
        }
        assert!(attempts < 200, "the inbox never emptied: {output:?}");
    }
    let got = cluster.stdout.wait_for("got after after ");
    let received: u64 = word_after(&got, "got after after ").parse().unwrap();
    let again = cluster.stderr.wait_for("reads its IPC channel again; ");
    let dropped: u64 = word_after(&again, "again; ").parse().unwrap();
    assert!(
        again.starts_with(&format!("herdsman: worker 1 (pid {reader}) reads its IPC")),
        "{again}"
    );
    // Every message either reached the worker or was counted as dropped: the flood, plus the
    // sends refused while the inbox was full (the last `after` went through).
    assert_eq!(received + dropped, FLOOD + attempts - 1, "{got} / {again}");
    assert!(received > 0 && dropped > FLOOD / 2, "{got} / {again}");
}

/// Sends the primary `MESSAGES` IPC messages of 190 bytes (each logged by the primary, whole: it
/// shortens only beyond 200 characters), then creates `DONE`.
const CHATTY_WORKER: &str = r#"
import os, socket
channel = socket.socket(fileno=int(os.environ["HERDSMAN_IPC_FD"]))
channel.sendall(b'{"type":"ready"}\n')
total, batch = int(os.environ["MESSAGES"]), 10000
pad = b"m" * 180
for start in range(0, total, batch):
    channel.sendall(b"".join(b'{"type":"message","data":"%d %s"}\n' % (n, pad) for n in range(start, start + batch)))
open(os.environ["DONE"], "w").close()
channel.recv(1)
"#;

/// On a primary without the bound, these take 90 MB or more.
const MESSAGES: u64 = 300_000;

#[test]
fn the_primary_drops_and_counts_its_own_log_lines_when_nobody_reads_its_output() {
    let done = tempfile_path("chatty-done");
    let mut cluster = cluster()
        .memory_limit(ADDRESS_SPACE)
        .hold_stderr()
        .args(&[
            "--workers",
            "1",
            "--ready",
            "notify",
            // Ready at its signal, before the flood: no primary line but the messages is dropped.
            "--ready-delay",
            "0s",
            "--ipc",
            "--name",
            "chatty",
        ])
        .env("MESSAGES", &MESSAGES.to_string())
        .env("DONE", done.to_str().unwrap())
        .command(&["python3", "-c", CHATTY_WORKER])
        .start();
    // Each message becomes a line on the primary's stderr, which nobody reads.
    let deadline = std::time::Instant::now() + FLOOD_DEADLINE;
    while !done.exists() {
        assert!(
            alive(cluster.pid()),
            "the primary died (exit {:?})",
            cluster.child.try_wait()
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the worker never finished"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let peak = proc_status_bytes(cluster.pid(), "VmHWM");
    assert!(
        peak < RSS_CEILING,
        "the primary's peak RSS is {peak} bytes after {MESSAGES} log lines it could not write"
    );
    // Once its output is read, the primary catches up and says how many lines it dropped; with
    // the lines it did write, that is every message.
    cluster.read_stderr();
    let is_message = |line: &str| line.contains(") message: ");
    let dropped_in = |line: &str| -> u64 {
        let Some((count, rest)) = line
            .strip_prefix("herdsman: ")
            .and_then(|rest| rest.split_once(' '))
        else {
            return 0;
        };
        let report = rest.starts_with("log lines dropped: herdsman's output was not read")
            || (count == "1" && rest.starts_with("log line dropped: "));
        if report {
            count.parse().unwrap()
        } else {
            0
        }
    };
    let (written, dropped) = eventually("every message written or counted as dropped", || {
        let lines = cluster.stderr.snapshot();
        let written = lines.iter().filter(|line| is_message(line)).count() as u64;
        let dropped: u64 = lines.iter().map(|line| dropped_in(line)).sum();
        (written + dropped == MESSAGES).then_some((written, dropped))
    });
    assert!(
        dropped > MESSAGES / 2,
        "{written} written, {dropped} dropped"
    );
    // Nothing else was lost: the start-up lines came before the flood.
    cluster.stderr.wait_for("worker 1 (pid ");
    let status = status_json(&cluster, "chatty");
    assert_eq!(status["slots"][0]["state"], "ready");
    let _ = std::fs::remove_file(&done);
}

/// A path in the temporary directory, unique to this test process.
fn tempfile_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("herdsman-{name}-{}", std::process::id()))
}

/// Sends `request` on a new connection to `socket` and reads the whole answer; an error (a
/// reset) is returned, not hidden.
fn exchange(socket: &std::path::Path, request: &[u8]) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(DEADLINE))?;
    stream.write_all(request)?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

fn result_message(answer: &str) -> String {
    let reply: serde_json::Value =
        serde_json::from_str(answer.trim()).unwrap_or_else(|error| panic!("{error}: {answer:?}"));
    assert_eq!(reply["type"], "result", "{answer}");
    assert_eq!(reply["ok"], false, "{answer}");
    reply["message"].as_str().unwrap().to_string()
}

#[test]
fn oversized_and_several_line_control_requests_get_an_answer_not_a_reset() {
    let cluster = cluster()
        .args(&["-w", "1", "--name", "big", "--ready-delay", "100ms"])
        .start();
    cluster.wait_ready(1);
    let socket = cluster.runtime_dir.path().join("herdsman/big.sock");
    let too_large = "request too large: 65536 bytes without an end of line; the limit is 64 KiB \
                     per request, one JSON object on one line (send a long message in parts)";
    for size in [64 * 1024, 64 * 1024 + 1, 300 * 1024, 4 * 1024 * 1024] {
        let mut request = br#"{"command":"send","to":"1","data":""#.to_vec();
        request.resize(size, b'x');
        for attempt in 0..10 {
            let answer = exchange(&socket, &request)
                .unwrap_or_else(|error| panic!("{size} bytes, attempt {attempt}: {error}"));
            assert_eq!(result_message(&answer), too_large, "{size} bytes");
        }
    }
    let two = b"{\"command\":\"status\"}\n{\"command\":\"status\"}\n";
    for attempt in 0..10 {
        let answer = exchange(&socket, two).unwrap_or_else(|error| panic!("{attempt}: {error}"));
        assert_eq!(
            result_message(&answer),
            "bad request: more than one line; send one request per connection, as one JSON \
             object on one line"
        );
    }
    // Unknown fields are refused, by name, on every request (`status` and `stop` included).
    for (request, field) in [
        ("{\"command\":\"status\",\"verbose\":true}\n", "verbose"),
        ("{\"command\":\"stop\",\"fast\":true}\n", "fast"),
        ("{\"command\":\"logs\",\"folow\":true}\n", "folow"),
    ] {
        let message = result_message(&exchange(&socket, request.as_bytes()).unwrap());
        assert!(
            message.starts_with(&format!("bad request: unknown field `{field}`")),
            "{request}: {message}"
        );
    }
    // A request just under the limit is served; the cluster is undisturbed.
    let mut padded = b"{\"command\":\"status\"".to_vec();
    padded.resize(64 * 1024 - 2, b' ');
    padded.extend(b"}\n");
    let answer = exchange(&socket, &padded).unwrap();
    assert!(answer.starts_with("{\"type\":\"status\""), "{answer}");
    assert_eq!(status_json(&cluster, "big")["state"], "running");
}

#[test]
fn control_connections_beyond_the_limit_are_told_the_primary_is_busy() {
    use std::io::Read;
    let cluster = cluster()
        .args(&["-w", "1", "--name", "busy", "--ready-delay", "100ms"])
        .start();
    cluster.wait_ready(1);
    let socket = cluster.runtime_dir.path().join("herdsman/busy.sock");
    // 64 clients that connect and say nothing hold every connection the primary serves.
    let idle: Vec<_> = (0..64)
        .map(|_| std::os::unix::net::UnixStream::connect(&socket).unwrap())
        .collect();
    let mut extra = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut answer = String::new();
    extra.read_to_string(&mut answer).unwrap();
    assert_eq!(
        result_message(&answer),
        "busy: 64 control connections are open, the most the primary serves at once \
         (`herdsman logs -f` holds one each); close some and try again"
    );
    drop(idle);
    // Once they have gone, requests are served again.
    eventually("the primary serves control requests again", || {
        let answer = exchange(&socket, b"{\"command\":\"status\"}\n").ok()?;
        answer.starts_with("{\"type\":\"status\"").then_some(())
    });
}
