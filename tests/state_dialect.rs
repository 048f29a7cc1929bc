//! The embedded store's Redis dialect beyond the differential scripts (issue 14): replies whose
//! values differ by nature (HELLO's id, CLIENT LIST's figures) compared field by field with a
//! real redis-server, connection control (CLIENT KILL, CLIENT REPLY), a state file that keeps
//! every database and streams' IDs, and redis-py in its default protocol (RESP3).

use nix::sys::signal::Signal;

use crate::support::resp::{printable, state_socket, RedisServer, RespClient};
use crate::support::{cluster, Cluster, RuntimeDir};

fn state_cluster() -> Cluster {
    let cluster = cluster()
        .args(&["--workers", "1", "--ready-delay", "100ms"])
        .start();
    cluster.wait_ready(1);
    cluster
}

/// The names of a `CLIENT INFO` line's fields, and its `field=value` pairs.
fn fields(line: &str) -> (Vec<String>, Vec<(String, String)>) {
    let pairs: Vec<(String, String)> = line
        .trim_end()
        .split(' ')
        .map(|pair| {
            let (name, value) = pair.split_once('=').expect("name=value");
            (name.to_string(), value.to_string())
        })
        .collect();
    (pairs.iter().map(|(name, _)| name.clone()).collect(), pairs)
}

/// The text of a bulk or verbatim string reply.
fn text_of(reply: &[u8]) -> String {
    let text = String::from_utf8_lossy(reply).into_owned();
    let body = text.split_once("\r\n").expect("a header line").1;
    body.strip_prefix("txt:").unwrap_or(body).to_string()
}

#[test]
fn hello_and_client_info_answer_in_redis_7_format_in_both_protocols() {
    let dir = RuntimeDir::new();
    let redis = RedisServer::start(&dir);
    let cluster = state_cluster();
    let socket = state_socket(&cluster);
    let mut ours = RespClient::unix(&socket);
    let mut theirs = RespClient::unix(&redis.socket);
    // The maps agree but for the client id (the version is Redis's own, 7.0.15).
    let mask = |reply: Vec<u8>| {
        let text = printable(&reply);
        let id = text
            .split("id\\r\\n:")
            .nth(1)
            .unwrap()
            .split('\\')
            .next()
            .unwrap();
        text.replacen(&format!("id\\r\\n:{id}"), "id\\r\\n:ID", 1)
    };
    // INFO names the same version as HELLO.
    let redis_version = |info: Vec<u8>| {
        printable(&info)
            .split("\\r\\n")
            .find(|line| line.starts_with("redis_version:"))
            .map(str::to_string)
    };
    assert_eq!(
        redis_version(ours.call("INFO server")),
        redis_version(theirs.call("INFO server"))
    );
    for hello in [
        "HELLO 3 SETNAME app",
        "HELLO",
        "HELLO 2",
        "HELLO 3 AUTH default any",
    ] {
        assert_eq!(mask(ours.call(hello)), mask(theirs.call(hello)), "{hello}");
        let (ours_info, theirs_info) = (ours.call("CLIENT INFO"), theirs.call("CLIENT INFO"));
        assert_eq!(
            ours_info[0], theirs_info[0],
            "{hello}: reply type of CLIENT INFO"
        );
        let (names, pairs) = fields(&text_of(&ours_info));
        let (their_names, their_pairs) = fields(&text_of(&theirs_info));
        assert_eq!(names, their_names, "{hello}: CLIENT INFO's fields");
        for field in [
            "name", "flags", "db", "sub", "psub", "multi", "cmd", "user", "resp",
        ] {
            let value = |pairs: &[(String, String)]| {
                pairs
                    .iter()
                    .find(|(name, _)| name == field)
                    .unwrap()
                    .1
                    .clone()
            };
            assert_eq!(value(&pairs), value(&their_pairs), "{hello}: {field}=");
        }
        // A Unix socket client's address is the socket's path, port 0.
        let addr = &pairs.iter().find(|(name, _)| name == "addr").unwrap().1;
        assert_eq!(addr, &format!("{}:0", socket.display()));
    }
    // CLIENT LIST shows every client, one line each, this one with its name.
    // (A reply means the store has accepted and listed the other connection.)
    let mut other = RespClient::unix(&socket);
    other.call("PING");
    let list = text_of(&ours.call("CLIENT LIST"));
    let lines = list.lines().filter(|line| line.starts_with("id=")).count();
    assert_eq!(lines, 2, "{list}");
    assert!(list.ends_with("\n\r\n") || list.ends_with("\n"), "{list:?}");
    assert!(list.contains(" name=app "), "{list}");
}

#[test]
fn client_kill_closes_the_connection_and_client_reply_silences_it() {
    let cluster = state_cluster();
    let socket = state_socket(&cluster);
    let mut victim = RespClient::unix(&socket);
    let victim_id = victim.text("CLIENT ID");
    let victim_id = victim_id.trim_start_matches(':').trim_end_matches("\\r\\n");
    let mut killer = RespClient::unix(&socket);
    assert_eq!(
        killer.text(&format!("CLIENT KILL ID {victim_id}")),
        ":1\\r\\n"
    );
    assert!(victim.is_closed(), "the killed client is still connected");
    assert_eq!(killer.text("CLIENT KILL ID 999999"), ":0\\r\\n");
    // Killing itself: the reply first, then the close.
    let own = killer.text("CLIENT ID");
    let own = own.trim_start_matches(':').trim_end_matches("\\r\\n");
    assert_eq!(
        killer.text(&format!("CLIENT KILL ID {own} SKIPME no")),
        ":1\\r\\n"
    );
    assert!(killer.is_closed());

    let mut quiet = RespClient::unix(&socket);
    quiet.send(&[b"CLIENT", b"REPLY", b"OFF"]);
    quiet.send(&[b"SET", b"k", b"1"]);
    quiet.send(&[b"CLIENT", b"REPLY", b"SKIP"]);
    quiet.send(&[b"CLIENT", b"REPLY", b"ON"]);
    quiet.send(&[b"CLIENT", b"REPLY", b"SKIP"]);
    quiet.send(&[b"INCR", b"k"]);
    // The first reply that comes is the ON's; the skipped INCR ran but said nothing.
    assert_eq!(printable(&quiet.read_reply().unwrap()), "+OK\\r\\n");
    assert_eq!(quiet.text("GET k"), "$1\\r\\n2\\r\\n");
}

/// A cluster of one worker whose store keeps `dir`'s `state.aof`, started again each time.
fn with_state_file(dir: &RuntimeDir) -> impl Fn() -> Cluster + '_ {
    let file = dir.path().join("state.aof").display().to_string();
    move || {
        let cluster = cluster()
            .runtime_dir(dir)
            .args(&["--workers", "1", "--ready-delay", "100ms"])
            .args(&["--state-file", &file])
            .start();
        cluster.wait_ready(1);
        cluster
    }
}

#[test]
fn the_state_file_keeps_every_database_and_the_new_commands() {
    let dir = RuntimeDir::new();
    let start = with_state_file(&dir);
    let mut first = start();
    let mut client = RespClient::unix(&state_socket(&first));
    for line in [
        "SET zero 0",
        "SELECT 3",
        "SET three 3",
        "SADD pool a b c d",
        "SPOP pool 2",
        "SETRANGE page 2 xy",
        "SETBIT bits 9 1",
        "BITFIELD counter INCRBY u8 0 200",
        "HSET h f v",
        "GETEX three EX 1000",
        "COPY h h2 DB 7",
        "SELECT 0",
        "MOVE zero 5",
        "SWAPDB 5 6",
        "SELECT 3",
        "SET last 1",
    ] {
        let reply = client.text(line);
        assert!(!reply.starts_with('-'), "{line}: {reply}");
    }
    let pool_left = client.text("SMEMBERS pool");
    first.signal(Signal::SIGKILL);
    first.wait_exit();

    let second = start();
    let mut client = RespClient::unix(&state_socket(&second));
    assert_eq!(client.text("GET three"), "$-1\\r\\n");
    assert_eq!(client.text("GET zero"), "$-1\\r\\n");
    client.call("SELECT 3");
    assert_eq!(client.text("GET three"), "$1\\r\\n3\\r\\n");
    assert_eq!(client.text("TTL three"), ":1000\\r\\n");
    assert_eq!(
        client.text("SMEMBERS pool"),
        pool_left,
        "SPOP replayed differently"
    );
    assert_eq!(client.text("GET page"), "$4\\r\\n\\x00\\x00xy\\r\\n");
    assert_eq!(client.text("GETBIT bits 9"), ":1\\r\\n");
    assert_eq!(
        client.text("BITFIELD counter GET u8 0"),
        "*1\\r\\n:200\\r\\n"
    );
    assert_eq!(client.text("GET last"), "$1\\r\\n1\\r\\n");
    client.call("SELECT 6");
    assert_eq!(client.text("GET zero"), "$1\\r\\n0\\r\\n");
    client.call("SELECT 7");
    assert_eq!(client.text("HGET h2 f"), "$1\\r\\nv\\r\\n");
    // A write after the restart (the file was compacted) lands in the database it ran in.
    client.call("SET after 1");
    drop(client);
    let mut third_client = {
        let mut second = second;
        second.signal(Signal::SIGKILL);
        second.wait_exit();
        let third = start();
        let client = RespClient::unix(&state_socket(&third));
        (third, client)
    };
    third_client.1.call("SELECT 7");
    assert_eq!(third_client.1.text("GET after"), "$1\\r\\n1\\r\\n");
    third_client.1.call("SELECT 0");
    assert_eq!(third_client.1.text("GET after"), "$-1\\r\\n");
}

/// Streams in the state file: entries with the IDs they were given (`*` included), what a
/// trim removed, and the last ID past the newest entry (XDEL) or of an emptied stream, the
/// same after replaying the log and after replaying the compacted file.
#[test]
fn the_state_file_keeps_streams_with_their_last_ids() {
    let dir = RuntimeDir::new();
    let start = with_state_file(&dir);
    let mut cluster = start();
    let mut client = RespClient::unix(&state_socket(&cluster));
    for line in [
        "XADD s * a 1",
        "XADD s * b 2",
        "XADD s MAXLEN 2 * c 3",
        "XADD s 99999999999999-0 d 4",
        "XDEL s 99999999999999-0",
        "XADD e 5-0 x y",
        "XTRIM e MAXLEN 0",
    ] {
        let reply = client.text(line);
        assert!(!reply.starts_with('-'), "{line}: {reply}");
    }
    let entries = client.text("XRANGE s - +");
    assert!(entries.starts_with("*2\\r\\n"), "{entries}");
    for restart in ["the log replayed", "the compacted file replayed"] {
        cluster.signal(Signal::SIGKILL);
        cluster.wait_exit();
        cluster = start();
        let mut client = RespClient::unix(&state_socket(&cluster));
        assert_eq!(client.text("XRANGE s - +"), entries, "{restart}");
        let top = "-ERR The ID specified in XADD is equal or smaller than the target stream top item\\r\\n";
        assert_eq!(client.text("XADD s 99999999999999-0 d 4"), top, "{restart}");
        assert_eq!(client.text("TYPE e"), "+stream\\r\\n", "{restart}");
        assert_eq!(client.text("XLEN e"), ":0\\r\\n", "{restart}");
        assert_eq!(client.text("XADD e 5-0 x y"), top, "{restart}");
    }
}

#[test]
fn redis_py_in_its_default_protocol_gets_sets_subscribes_and_watches() {
    let cluster = state_cluster();
    let url = format!("unix://{}", state_socket(&cluster).display());
    let script = format!(
        "{}/tests/state/redis_py_default_protocol.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let output = std::process::Command::new("python3")
        .arg(&script)
        .env("REDIS_URL", &url)
        .output()
        .expect("python3 (scripts/test.sh installs it)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // redis-py 8 speaks RESP3 unless told otherwise; the script checked HELLO says 3.
    assert!(
        stdout.starts_with("ok 8.") && stdout.trim_end().ends_with(" 3"),
        "{stdout}"
    );
}
