//! The embedded store's append-only file (`--state-file`): it survives a SIGKILL of the
//! primary and is compacted; an incomplete last write is cut off, damage before it stops the
//! start.

use nix::sys::signal::Signal;

use super::state::state_cluster;
use crate::support::resp::{state_socket, RespClient};
use crate::support::{cluster, RuntimeDir};

#[test]
fn the_state_file_survives_a_sigkill_of_the_primary_and_is_compacted() {
    let dir = RuntimeDir::new();
    let file = dir.path().join("state.aof");
    let file_arg = file.display().to_string();
    // The same cluster twice: before and after the SIGKILL.
    let start = || {
        cluster()
            .runtime_dir(&dir)
            .args(&[
                "--workers",
                "1",
                "--ready-delay",
                "100ms",
                "--state-file",
                &file_arg,
            ])
            .start()
    };
    let mut first = start();
    first.wait_ready(1);
    let mut client = RespClient::unix(&state_socket(&first));
    for _ in 0..2000 {
        client.send(&[b"INCR", b"visits"]);
    }
    for _ in 0..2000 {
        client.read_reply().unwrap();
    }
    for line in [
        "RPUSH queue a b c",
        "HSET session:1 user ada",
        "SADD online 1 2",
        "ZADD board 1.5 ada 0.1 bob 3 cy -inf floor",
        "ZINCRBY board 2 bob",
        "ZPOPMAX board",
        "SET temporary v EX 1000",
        "SET gone v PX 1",
        "MULTI",
        "INCRBYFLOAT price 0.1",
        "INCRBYFLOAT price 0.2",
        "EXEC",
    ] {
        client.call(line);
    }
    let board = client.text("ZRANGE board 0 -1 WITHSCORES");
    assert_eq!(
        board,
        "*6\\r\\n$5\\r\\nfloor\\r\\n$4\\r\\n-inf\\r\\n$3\\r\\nada\\r\\n$3\\r\\n1.5\\r\\n$3\\r\\nbob\\r\\n$18\\r\\n2.1000000000000001\\r\\n"
    );
    let acknowledged = client.text("INCR visits");
    assert_eq!(acknowledged, ":2001\\r\\n");
    let logged = std::fs::metadata(&file).unwrap().len();
    // No graceful anything: the acknowledged writes must already be in the file.
    first.signal(Signal::SIGKILL);
    first.wait_exit();

    let second = start();
    second.wait_ready(1);
    let line = second.stderr.wait_for("state store on");
    assert!(
        line.contains("(file ") && line.contains(" keys recovered)"),
        "{line}"
    );
    let mut client = RespClient::unix(&state_socket(&second));
    assert_eq!(client.text("GET visits"), "$4\\r\\n2001\\r\\n");
    assert_eq!(
        client.text("LRANGE queue 0 -1"),
        "*3\\r\\n$1\\r\\na\\r\\n$1\\r\\nb\\r\\n$1\\r\\nc\\r\\n"
    );
    assert_eq!(client.text("HGET session:1 user"), "$3\\r\\nada\\r\\n");
    assert_eq!(client.text("SCARD online"), ":2\\r\\n");
    // Set with 1000 s; the restart in between may take a second or two on a loaded machine.
    let ttl = client.text("TTL temporary");
    assert!(
        [":998\\r\\n", ":999\\r\\n", ":1000\\r\\n"].contains(&ttl.as_str()),
        "{ttl}"
    );
    assert_eq!(client.text("EXISTS gone"), ":0\\r\\n");
    assert_eq!(client.text("GET price"), "$3\\r\\n0.3\\r\\n");
    assert_eq!(client.text("ZRANGE board 0 -1 WITHSCORES"), board);
    let compacted = std::fs::metadata(&file).unwrap().len();
    assert!(
        compacted * 10 < logged,
        "2001 INCRs should compact to one SET: {logged} → {compacted} bytes"
    );
    // The compacted file replays to the same sorted set.
    drop(client);
    let mut second = second;
    second.signal(Signal::SIGKILL);
    second.wait_exit();
    let third = start();
    third.wait_ready(1);
    let mut client = RespClient::unix(&state_socket(&third));
    assert_eq!(client.text("ZRANGE board 0 -1 WITHSCORES"), board);
    assert_eq!(client.text("TYPE board"), "+zset\\r\\n");
}

#[test]
fn an_incomplete_last_write_is_cut_off_and_damage_before_it_stops_the_start() {
    let dir = RuntimeDir::new();
    let file = dir.path().join("state.aof");
    let file_arg = file.display().to_string();
    std::fs::write(
        &file,
        b"*3\r\n$3\r\nSET\r\n$1\r\na\r\n$1\r\n1\r\n*3\r\n$3\r\nSET\r\n$1\r\nb\r\n$4\r\n12",
    )
    .unwrap();
    let recovered = state_cluster(&["--state-file", &file_arg]);
    let line = recovered.stderr.wait_for("state store on");
    assert!(
        line.contains("cut off an incomplete last write of 26 bytes"),
        "{line}"
    );
    let mut client = RespClient::unix(&state_socket(&recovered));
    assert_eq!(client.text("MGET a b"), "*2\\r\\n$1\\r\\n1\\r\\n$-1\\r\\n");
    drop(client);
    drop(recovered);

    std::fs::write(
        &file,
        b"*1\r\n$4\r\nPING\r\n:garbage\r\n*1\r\n$4\r\nPING\r\n",
    )
    .unwrap();
    let mut damaged = cluster()
        .runtime_dir(&dir)
        .args(&["--workers", "1", "--state-file", &file_arg])
        .no_wait()
        .start();
    let status = damaged.wait_exit();
    assert_eq!(status.code(), Some(2));
    let log = damaged.log();
    assert!(
        log.contains(&format!(
            "state file: {file_arg} is damaged at byte 14: invalid multibulk length"
        )) || log.contains(&format!("state file: {file_arg} is damaged at byte 14")),
        "{log}"
    );
}

/// One state file, one store: a second cluster given the running one's `--state-file` is
/// refused at start (exit 3, naming the file) and leaves it alone, so the first one's writes,
/// before and after, are all in the file when it starts again.
#[test]
fn a_second_cluster_on_the_same_state_file_is_refused_and_loses_no_write() {
    let dir = RuntimeDir::new();
    let file = dir.path().join("state.aof");
    let file_arg = file.display().to_string();
    let start = |name: &str| {
        cluster()
            .runtime_dir(&dir)
            .args(&["--workers", "1", "--ready-delay", "100ms", "--name", name])
            .args(&["--state-file", &file_arg])
    };
    let mut first = start("first").start();
    first.wait_ready(1);
    let mut client = RespClient::unix(&state_socket(&first));
    assert_eq!(client.text("SET before second"), "+OK\\r\\n");
    let mut second = start("second").no_wait().start();
    let status = second.wait_exit();
    let log = second.log();
    assert_eq!(status.code(), Some(3), "{log}");
    assert!(
        log.contains(&format!("{file_arg} is in use by another process")),
        "{log}"
    );
    assert_eq!(client.text("SET after second"), "+OK\\r\\n");
    drop(client);
    first.signal(Signal::SIGKILL);
    first.wait_exit();
    let again = start("first").start();
    again.wait_ready(1);
    let mut client = RespClient::unix(&state_socket(&again));
    assert_eq!(
        client.text("MGET before after"),
        "*2\\r\\n$6\\r\\nsecond\\r\\n$6\\r\\nsecond\\r\\n"
    );
}
