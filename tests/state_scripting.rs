//! Lua scripts in the embedded store (issue 14) beyond the differential scripts: a script that
//! never ends does not wedge the store (other clients get BUSY, SCRIPT KILL stops it), and the
//! state file logs what a script wrote, not the script.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::support::resp::{printable, state_socket, RespClient};
use crate::support::{cluster, Cluster, RuntimeDir};

const BUSY: &str =
    "-BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.\\r\\n";

fn one_worker() -> Cluster {
    let cluster = cluster()
        .args(&["--workers", "1", "--ready-delay", "100ms"])
        .start();
    cluster.wait_ready(1);
    cluster
}

fn one_worker_with_state_file(dir: &RuntimeDir, file: &str) -> Cluster {
    let cluster = cluster()
        .runtime_dir(dir)
        .args(&[
            "--workers",
            "1",
            "--ready-delay",
            "100ms",
            "--state-file",
            file,
        ])
        .start();
    cluster.wait_ready(1);
    cluster
}

/// PONG until the script has started (the connections race), then BUSY.
fn wait_for_busy(other: &mut RespClient) {
    crate::support::eventually("a BUSY reply", || {
        let reply = other.text("PING");
        assert!(reply == BUSY || reply == "+PONG\\r\\n", "{reply}");
        (reply == BUSY).then_some(())
    });
}

#[test]
fn a_script_that_loops_forever_gets_busy_replies_for_others_and_script_kill_stops_it() {
    let cluster = one_worker();
    let socket = state_socket(&cluster);
    let mut looping = RespClient::unix(&socket);
    let mut other = RespClient::unix(&socket);
    assert_eq!(other.text("SET before 1"), "+OK\\r\\n");
    let started = Instant::now();
    looping.send(&[b"EVAL", b"local i = 0 while true do i = i + 1 end", b"0"]);
    // Within lua-time-limit (5 s) the store is simply busy; past it, the other clients are
    // answered with BUSY: the connection that was open, and one opened while the script runs.
    let busy = BUSY;
    wait_for_busy(&mut other);
    assert!(
        started.elapsed() >= Duration::from_millis(4900),
        "BUSY came after {:?}, before the time limit",
        started.elapsed()
    );
    let mut newcomer = RespClient::unix(&socket);
    assert_eq!(newcomer.text("GET before"), busy);
    assert_eq!(newcomer.text("SCRIPT KILL"), "+OK\\r\\n");
    let killed = looping
        .read_reply()
        .expect("the script's caller gets its reply");
    assert_eq!(
        printable(&killed),
        "-ERR Script killed by user with SCRIPT KILL... script: 3fcf51a9b854b8f66cb8685600b0d7df968f4398, on @user_script:1.\\r\\n"
    );
    // The store serves everyone again, the newcomer included.
    assert_eq!(other.text("GET before"), "$1\\r\\n1\\r\\n");
    assert_eq!(newcomer.text("PING"), "+PONG\\r\\n");
    assert_eq!(looping.text("EVAL \"return 7\" 0"), ":7\\r\\n");
    assert_eq!(
        other.text("SCRIPT KILL"),
        "-NOTBUSY No scripts in execution right now.\\r\\n"
    );
}

#[test]
fn the_state_file_logs_the_writes_a_script_made_not_the_script() {
    let dir = RuntimeDir::new();
    let file = dir.path().join("state.aof");
    let file_arg = file.display().to_string();
    let start = || one_worker_with_state_file(&dir, &file_arg);
    let mut first = start();
    let mut client = RespClient::unix(&state_socket(&first));
    let script = "redis.call('set', KEYS[1], ARGV[1]) redis.call('select', 2) \
                  redis.call('incrby', KEYS[1], 5) return redis.call('get', KEYS[1])";
    client.send(&[b"EVAL", script.as_bytes(), b"1", b"k", b"v"]);
    assert_eq!(printable(&client.read_reply().unwrap()), "$1\\r\\n5\\r\\n");
    // SELECT in a script does not change the caller's database.
    assert_eq!(client.text("GET k"), "$1\\r\\nv\\r\\n");
    assert_eq!(
        client.text("EVAL \"return redis.call('get', 'nothing')\" 0"),
        "$-1\\r\\n"
    );
    first.signal(Signal::SIGKILL);
    first.wait_exit();
    let logged = String::from_utf8_lossy(&std::fs::read(&file).unwrap()).to_lowercase();
    assert!(
        !logged.contains("eval"),
        "the file holds the script: {logged}"
    );
    assert!(
        logged.contains("incrby"),
        "the file lacks the writes: {logged}"
    );

    let second = start();
    let mut client = RespClient::unix(&state_socket(&second));
    assert_eq!(client.text("GET k"), "$1\\r\\nv\\r\\n");
    client.call("SELECT 2");
    assert_eq!(client.text("GET k"), "$1\\r\\n5\\r\\n");
}

#[test]
fn a_killed_script_stays_killed_even_when_it_catches_errors_with_pcall() {
    let cluster = one_worker();
    let socket = state_socket(&cluster);
    let mut looping = RespClient::unix(&socket);
    let mut other = RespClient::unix(&socket);
    assert_eq!(other.text("CONFIG SET lua-time-limit 10"), "+OK\\r\\n");
    let script =
        "local f = function() while 1 do redis.call('ping') end end while 1 do pcall(f) end";
    looping.send(&[b"EVAL", script.as_bytes(), b"0"]);
    wait_for_busy(&mut other);
    assert_eq!(other.text("SCRIPT KILL"), "+OK\\r\\n");
    let killed = printable(&looping.read_reply().expect("the caller gets its reply"));
    assert!(
        killed.starts_with("-ERR Script killed by user with SCRIPT KILL..."),
        "{killed}"
    );
    assert_eq!(other.text("PING"), "+PONG\\r\\n");
}

/// Issue 14 (Redis's `unit/multi` "… and script timeout" tests): while a script is busy,
/// `MULTI` and `DISCARD` run, a command refused inside a transaction aborts its `EXEC`, and
/// `EXEC` is refused as `EXECABORT … BUSY`, ending the transaction; none of it runs.
#[test]
fn a_transaction_around_a_busy_script_runs_none_of_its_commands() {
    let cluster = one_worker();
    let socket = state_socket(&cluster);
    let mut looping = RespClient::unix(&socket);
    let mut before = RespClient::unix(&socket);
    let mut during = RespClient::unix(&socket);
    let mut other = RespClient::unix(&socket);
    assert_eq!(other.text("CONFIG SET lua-time-limit 10"), "+OK\\r\\n");
    assert_eq!(other.text("SET xx 1"), "+OK\\r\\n");
    assert_eq!(before.text("MULTI"), "+OK\\r\\n");
    assert_eq!(before.text("INCR xx"), "+QUEUED\\r\\n");
    looping.send(&[b"EVAL", b"while true do end", b"0"]);
    let busy = BUSY;
    wait_for_busy(&mut other);
    assert_eq!(during.text("MULTI"), "+OK\\r\\n");
    assert_eq!(
        during.text("MULTI"),
        "-ERR MULTI calls can not be nested\\r\\n"
    );
    assert_eq!(during.text("INCR xx"), busy);
    assert_eq!(
        before.text("EXEC"),
        format!(
            "-EXECABORT Transaction discarded because of: {}",
            &busy[1..]
        )
    );
    assert_eq!(other.text("DISCARD"), "-ERR DISCARD without MULTI\\r\\n");
    assert_eq!(other.text("SCRIPT KILL"), "+OK\\r\\n");
    let killed = printable(&looping.read_reply().expect("the caller gets its reply"));
    assert!(killed.starts_with("-ERR Script killed by user"), "{killed}");
    // `before` left its transaction at EXEC; `during` is still in the one it opened.
    assert_eq!(before.text("PING x"), "$1\\r\\nx\\r\\n");
    assert_eq!(during.text("INCR xx"), "+QUEUED\\r\\n");
    assert_eq!(
        during.text("EXEC"),
        "-EXECABORT Transaction discarded because of previous errors.\\r\\n"
    );
    assert_eq!(during.text("PING x"), "$1\\r\\nx\\r\\n");
    assert_eq!(other.text("GET xx"), "$1\\r\\n1\\r\\n");
}

/// A script that never ends does not keep the primary from stopping: SIGTERM abandons it (as
/// `SHUTDOWN NOSAVE` does in Redis, written or not), the primary exits 0, and the state file
/// holds nothing of what the abandoned script wrote.
#[test]
fn sigterm_stops_a_primary_whose_store_runs_a_script_that_never_ends() {
    let dir = RuntimeDir::new();
    let file = dir.path().join("state.aof");
    let file_arg = file.display().to_string();
    let mut cluster = one_worker_with_state_file(&dir, &file_arg);
    let socket = state_socket(&cluster);
    let mut looping = RespClient::unix(&socket);
    let mut other = RespClient::unix(&socket);
    assert_eq!(other.text("SET before 1"), "+OK\\r\\n");
    assert_eq!(other.text("CONFIG SET lua-time-limit 10"), "+OK\\r\\n");
    let script = "redis.call('set', 'abandoned', 'x') while true do end";
    looping.send(&[b"EVAL", script.as_bytes(), b"0"]);
    wait_for_busy(&mut other);
    cluster.signal(Signal::SIGTERM);
    assert_eq!(cluster.wait_exit().code(), Some(0));
    let logged = String::from_utf8_lossy(&std::fs::read(&file).unwrap()).into_owned();
    assert!(
        logged.contains("before"),
        "the file lacks SET before: {logged}"
    );
    assert!(
        !logged.contains("abandoned"),
        "the file holds the abandoned script's write: {logged}"
    );
}
