//! Lua scripts in the embedded store (issue 14) beyond the differential scripts: a script that
//! never ends does not wedge the store (other clients get BUSY, SCRIPT KILL stops it, HELLO and
//! the other `allow-busy` commands are answered), and the state file logs what a script wrote,
//! not the script.

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

/// `HELLO`'s reply (printable) to client `id` once it speaks RESP `proto`.
fn hello_reply(proto: u8, id: u64) -> String {
    let header = if proto == 3 { "%7" } else { "*14" };
    format!(
        "{header}\\r\\n$6\\r\\nserver\\r\\n$5\\r\\nredis\\r\\n$7\\r\\nversion\\r\\n$6\\r\\n7.0.15\\r\\n$5\\r\\nproto\\r\\n:{proto}\\r\\n$2\\r\\nid\\r\\n:{id}\\r\\n$4\\r\\nmode\\r\\n$10\\r\\nstandalone\\r\\n$4\\r\\nrole\\r\\n$6\\r\\nmaster\\r\\n$7\\r\\nmodules\\r\\n*0\\r\\n"
    )
}

/// The client's id (`CLIENT ID`).
fn client_id(client: &mut RespClient) -> u64 {
    let reply = client.text("CLIENT ID");
    reply
        .strip_prefix(':')
        .and_then(|id| id.strip_suffix("\\r\\n"))
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("CLIENT ID answered {reply}"))
}

/// While a script is busy, the commands Redis 7.0 flags `allow-busy` that need nothing of the
/// store are answered as Redis answers them: `HELLO` above all, which redis-py 8 and other
/// client libraries send on connect, so that a client connecting to send `SCRIPT KILL` gets
/// that far; and `AUTH` and `SHUTDOWN`. What `HELLO` set (protocol, name, and the id it told)
/// holds once the script is over, for the new connection and for one open before.
#[test]
fn a_busy_script_answers_hello_so_a_new_client_can_connect_and_kill_it() {
    let cluster = one_worker();
    let socket = state_socket(&cluster);
    let mut looping = RespClient::unix(&socket);
    let mut other = RespClient::unix(&socket);
    assert_eq!(other.text("CONFIG SET lua-time-limit 10"), "+OK\\r\\n");
    let other_id = client_id(&mut other);
    looping.send(&[b"EVAL", b"while true do end", b"0"]);
    wait_for_busy(&mut other);
    let mut newcomer = RespClient::unix(&socket);
    let hello = newcomer.text("HELLO 3 SETNAME killer");
    assert!(hello.starts_with("%7\\r\\n$6\\r\\nserver"), "{hello}");
    assert_eq!(newcomer.text("AUTH default any"), "+OK\\r\\n");
    assert_eq!(
        newcomer.text("AUTH"),
        "-ERR wrong number of arguments for \\'auth\\' command\\r\\n"
    );
    assert_eq!(newcomer.text("CLIENT ID"), BUSY);
    assert_eq!(other.text("HELLO 3"), hello_reply(3, other_id));
    assert_eq!(
        other.text("SHUTDOWN NOSAVE"),
        "-ERR the store stops with its cluster (`herdsman stop`), not with SHUTDOWN\\r\\n"
    );
    assert_eq!(newcomer.text("SCRIPT KILL"), "+OK\\r\\n");
    let killed = printable(&looping.read_reply().expect("the caller gets its reply"));
    assert!(killed.starts_with("-ERR Script killed by user"), "{killed}");
    // The newcomer's id is the one HELLO told, and both connections speak RESP3.
    assert_eq!(hello, hello_reply(3, client_id(&mut newcomer)));
    assert_eq!(newcomer.text("CLIENT GETNAME"), "$6\\r\\nkiller\\r\\n");
    assert_eq!(newcomer.text("HGETALL missing"), "%0\\r\\n");
    assert_eq!(other.text("HGETALL missing"), "%0\\r\\n");
}

/// Inside a transaction during a busy script, `HELLO` and `AUTH` are queued (as Redis queues
/// them) and `SHUTDOWN` is refused as in any transaction, which makes its `EXEC` abort.
#[test]
fn a_transaction_during_a_busy_script_queues_hello_and_refuses_shutdown() {
    let cluster = one_worker();
    let socket = state_socket(&cluster);
    let mut looping = RespClient::unix(&socket);
    let mut queueing = RespClient::unix(&socket);
    let mut refused = RespClient::unix(&socket);
    let mut other = RespClient::unix(&socket);
    assert_eq!(other.text("CONFIG SET lua-time-limit 10"), "+OK\\r\\n");
    let queueing_id = client_id(&mut queueing);
    looping.send(&[b"EVAL", b"while true do end", b"0"]);
    wait_for_busy(&mut other);
    assert_eq!(queueing.text("MULTI"), "+OK\\r\\n");
    assert_eq!(queueing.text("HELLO 2 SETNAME queued"), "+QUEUED\\r\\n");
    assert_eq!(queueing.text("AUTH default any"), "+QUEUED\\r\\n");
    assert_eq!(refused.text("MULTI"), "+OK\\r\\n");
    assert_eq!(
        refused.text("SHUTDOWN"),
        "-ERR Command not allowed inside a transaction\\r\\n"
    );
    assert_eq!(other.text("SCRIPT KILL"), "+OK\\r\\n");
    let killed = printable(&looping.read_reply().expect("the caller gets its reply"));
    assert!(killed.starts_with("-ERR Script killed by user"), "{killed}");
    assert_eq!(
        queueing.text("EXEC"),
        format!("*2\\r\\n{}+OK\\r\\n", hello_reply(2, queueing_id))
    );
    assert_eq!(queueing.text("CLIENT GETNAME"), "$6\\r\\nqueued\\r\\n");
    assert_eq!(
        refused.text("EXEC"),
        "-EXECABORT Transaction discarded because of previous errors.\\r\\n"
    );
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
