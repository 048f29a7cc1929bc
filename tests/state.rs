//! The shared-state store embedded in the primary (issue 5): replies identical to a real
//! redis-server's, concurrency, pub/sub, expiry, the memory bound, and how workers are told
//! where the state lives (the append-only file: `state_file.rs`).

use std::time::{Duration, Instant};

use crate::support::resp::{printable, sorted_elements, state_socket, RedisServer, RespClient};
use crate::support::{cluster, Cluster, RuntimeDir, DEADLINE};

pub(crate) fn state_cluster(args: &[&str]) -> Cluster {
    let cluster = cluster()
        .args(&["--workers", "1", "--ready-delay", "100ms"])
        .args(args)
        .start();
    cluster.wait_ready(1);
    cluster
}

#[test]
fn malformed_requests_get_redis_errors_and_close_only_their_connection() {
    let dir = RuntimeDir::new();
    let redis = RedisServer::start(&dir);
    let cluster = state_cluster(&["--state-max-memory", "2mb"]);
    let socket = state_socket(&cluster);
    let mut bystander = RespClient::unix(&socket);
    assert_eq!(bystander.text("SET kept 1"), "+OK\\r\\n");
    let cases: [&[u8]; 6] = [
        b"*x\r\n",
        b"*1\r\n:1\r\n",
        b"*2\r\n$3\r\nGET\r\n*1\r\n",
        b"*1\r\n$-5\r\n",
        b"SET a \"unbalanced\r\n",
        b"*1\r\n$abc\r\n",
    ];
    for case in cases {
        let mut ours = RespClient::unix(&socket);
        let mut theirs = RespClient::unix(&redis.socket);
        ours.send_raw(case);
        theirs.send_raw(case);
        let (got, expected) = (ours.read_reply(), theirs.read_reply());
        assert_eq!(
            got.as_deref().map(printable),
            expected.as_deref().map(printable),
            "{}",
            printable(case)
        );
        assert!(ours.is_closed(), "still open after {}", printable(case));
    }
    // Deep nesting would overflow a recursive parser's stack: refused at the first byte.
    let mut nested = RespClient::unix(&socket);
    nested.send_raw(&b"*1\r\n".repeat(100_000));
    assert_eq!(
        printable(&nested.read_reply().unwrap()),
        "-ERR Protocol error: expected \\'$\\', got \\'*\\'\\r\\n"
    );
    // Larger than the store may hold: refused before it is read.
    let mut huge = RespClient::unix(&socket);
    huge.send_raw(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100000000\r\n");
    assert_eq!(
        printable(&huge.read_reply().unwrap()),
        "-ERR Protocol error: invalid bulk length\\r\\n"
    );
    assert!(huge.is_closed());
    // Many arguments each under the limit, together over it: cut off, not buffered forever.
    let mut many = RespClient::unix(&socket);
    many.send_raw(b"*1000\r\n$4\r\nMSET\r\n");
    let chunk = vec![b'x'; 1 << 20];
    let mut sent = 0;
    for _ in 0..3 {
        let mut arg = format!("${}\r\n", chunk.len()).into_bytes();
        arg.extend_from_slice(&chunk);
        arg.extend_from_slice(b"\r\n");
        many.send_raw(&arg);
        sent += 1;
    }
    assert_eq!(sent, 3);
    let reply = many.read_reply().expect("an error before the close");
    assert!(
        printable(&reply).starts_with("-ERR Protocol error: request larger than"),
        "{}",
        printable(&reply)
    );
    assert_eq!(bystander.text("GET kept"), "$1\\r\\n1\\r\\n");
    assert_eq!(cluster.ready_pids(1).len(), 1);
}

#[test]
fn increments_from_many_clients_add_up_exactly_and_transactions_are_atomic() {
    let cluster = state_cluster(&[]);
    let socket = state_socket(&cluster);
    const CLIENTS: usize = 8;
    const INCREMENTS: usize = 500;
    let incrementers: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                let mut client = RespClient::unix(&socket);
                for _ in 0..INCREMENTS {
                    client.send(&[b"INCR", b"hits"]);
                    client.send(&[b"MULTI"]);
                    client.send(&[b"INCR", b"a"]);
                    client.send(&[b"INCR", b"b"]);
                    client.send(&[b"EXEC"]);
                    for _ in 0..5 {
                        client.read_reply().expect("reply");
                    }
                }
            })
        })
        .collect();
    // Meanwhile a reader checks that a and b are never seen apart.
    let mut reader = RespClient::unix(&socket);
    let mut observations = 0;
    while incrementers.iter().any(|thread| !thread.is_finished()) && observations < 5000 {
        reader.send(&[b"MULTI"]);
        reader.send(&[b"GET", b"a"]);
        reader.send(&[b"GET", b"b"]);
        reader.send(&[b"EXEC"]);
        for _ in 0..3 {
            reader.read_reply().unwrap();
        }
        let both = reader.read_reply().unwrap();
        let values = sorted_elements(&both);
        assert_eq!(values[1], values[2], "a and b apart: {}", printable(&both));
        observations += 1;
    }
    for thread in incrementers {
        thread.join().unwrap();
    }
    let total = (CLIENTS * INCREMENTS).to_string();
    let expected = format!("${}\\r\\n{total}\\r\\n", total.len());
    assert_eq!(reader.text("GET hits"), expected);
    assert_eq!(reader.text("GET a"), expected);
    assert_eq!(reader.text("GET b"), expected);
    assert!(observations > 0);
}

#[test]
fn published_messages_reach_each_subscriber_once() {
    let cluster = state_cluster(&[]);
    let socket = state_socket(&cluster);
    let mut channel = RespClient::unix(&socket);
    let mut pattern = RespClient::unix(&socket);
    assert_eq!(
        channel.text("SUBSCRIBE news"),
        "*3\\r\\n$9\\r\\nsubscribe\\r\\n$4\\r\\nnews\\r\\n:1\\r\\n"
    );
    assert_eq!(
        pattern.text("PSUBSCRIBE n*"),
        "*3\\r\\n$10\\r\\npsubscribe\\r\\n$2\\r\\nn*\\r\\n:1\\r\\n"
    );
    let mut publisher = RespClient::unix(&socket);
    assert_eq!(publisher.text("PUBLISH news hello"), ":2\\r\\n");
    assert_eq!(publisher.text("PUBLISH other nobody"), ":0\\r\\n");
    assert_eq!(publisher.text("PUBLISH news again"), ":2\\r\\n");
    for message in ["hello", "again"] {
        assert_eq!(
            printable(&channel.read_reply().unwrap()),
            format!(
                "*3\\r\\n$7\\r\\nmessage\\r\\n$4\\r\\nnews\\r\\n${}\\r\\n{message}\\r\\n",
                message.len()
            )
        );
        assert_eq!(
            printable(&pattern.read_reply().unwrap()),
            format!("*4\\r\\n$8\\r\\npmessage\\r\\n$2\\r\\nn*\\r\\n$4\\r\\nnews\\r\\n${}\\r\\n{message}\\r\\n", message.len())
        );
    }
    // Exactly once: after a PING round trip nothing else is queued before the PONG.
    assert_eq!(
        channel.text("PING"),
        "*2\\r\\n$4\\r\\npong\\r\\n$0\\r\\n\\r\\n"
    );
    drop(channel);
    let deadline = Instant::now() + DEADLINE;
    while publisher.text("PUBSUB NUMSUB news") != "*2\\r\\n$4\\r\\nnews\\r\\n:0\\r\\n" {
        assert!(
            Instant::now() < deadline,
            "the closed subscriber was not forgotten"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn keys_expire_to_the_millisecond_and_are_reclaimed_without_being_read() {
    let cluster = state_cluster(&[]);
    let mut client = RespClient::unix(&state_socket(&cluster));
    for i in 0..1000 {
        client.send(&[b"SET", format!("k{i}").as_bytes(), b"v", b"PX", b"300"]);
    }
    client.send(&[b"SET", b"stays", b"v"]);
    for _ in 0..1001 {
        client.read_reply().unwrap();
    }
    assert_eq!(client.text("DBSIZE"), ":1001\\r\\n");
    // Nobody reads the keys: the reclaiming timer must remove them.
    let deadline = Instant::now() + DEADLINE;
    while client.text("DBSIZE") != ":1\\r\\n" {
        assert!(Instant::now() < deadline, "expired keys were not reclaimed");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Exact to the millisecond on access: GET right after the deadline finds nothing.
    client.send(&[b"SET", b"brief", b"v", b"PX", b"50"]);
    client.read_reply().unwrap();
    let set_at = Instant::now();
    loop {
        let reply = client.text("GET brief");
        if reply == "$-1\\r\\n" {
            break;
        }
        assert_eq!(reply, "$1\\r\\nv\\r\\n");
        assert!(
            set_at.elapsed() < Duration::from_millis(60),
            "still there after 60 ms"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(set_at.elapsed() >= Duration::from_millis(45));
}

/// Issue 14: a key reclaimed by the timer, never read, is announced as `expired` (in its own
/// database); so is one a read finds past its deadline (most often before the timer does).
#[test]
fn expired_keys_are_announced_whether_the_timer_or_a_read_finds_them() {
    let cluster = state_cluster(&[]);
    let socket = state_socket(&cluster);
    let mut client = RespClient::unix(&socket);
    let mut subscriber = RespClient::unix(&socket);
    assert_eq!(
        client.text("CONFIG SET notify-keyspace-events Ex"),
        "+OK\\r\\n"
    );
    subscriber.call("PSUBSCRIBE __keyevent@*__:expired");
    client.call("SELECT 3");
    client.call("SET by-timer v PX 50");
    let message = subscriber.read_reply().expect("the timer's expired event");
    assert_eq!(
        printable(&message),
        "*4\\r\\n$8\\r\\npmessage\\r\\n$22\\r\\n__keyevent@*__:expired\\r\\n\
         $22\\r\\n__keyevent@3__:expired\\r\\n$8\\r\\nby-timer\\r\\n"
    );
    // Past its deadline within 2 ms: the read finds it (unless the timer came first).
    client.call("SET by-read v PX 1");
    std::thread::sleep(Duration::from_millis(2));
    assert_eq!(client.text("GET by-read"), "$-1\\r\\n");
    let message = subscriber.read_reply().expect("the read's expired event");
    assert!(printable(&message).ends_with("$7\\r\\nby-read\\r\\n"));
}

/// Issue 14: MONITOR names a TCP client by its address, a Unix socket client by the socket and
/// a script's commands `lua`, each line stamped with the time, as Redis writes them.
#[test]
fn monitor_names_each_client_as_redis_does() {
    use std::io::{Read, Write};
    let cluster = state_cluster(&["--state-listen", "127.0.0.1:0"]);
    let socket = state_socket(&cluster);
    let line = cluster.stderr.wait_for("state store on");
    let tcp: std::net::SocketAddr = crate::support::word_after(&line, "redis://")
        .parse()
        .unwrap();
    let mut monitor = RespClient::unix(&socket);
    assert_eq!(monitor.text("MONITOR"), "+OK\\r\\n");
    let mut raw = std::net::TcpStream::connect(tcp).unwrap();
    raw.set_read_timeout(Some(DEADLINE)).unwrap();
    let port = raw.local_addr().unwrap().port();
    for inline in [&b"SELECT 4\r\n"[..], b"SET k \"a b\"\r\n"] {
        raw.write_all(inline).unwrap();
        let mut ok = [0u8; 5];
        raw.read_exact(&mut ok).unwrap();
        assert_eq!(&ok, b"+OK\r\n");
    }
    let mut unix = RespClient::unix(&socket);
    unix.call("EVAL \"return redis.call('get', 'k')\" 0");
    let expected = [
        format!("[4 127.0.0.1:{port}] \"SELECT\" \"4\""),
        format!("[4 127.0.0.1:{port}] \"SET\" \"k\" \"a b\""),
        format!(
            "[0 unix:{}] \"EVAL\" \"return redis.call('get', 'k')\" \"0\"",
            socket.display()
        ),
        "[0 lua] \"get\" \"k\"".to_string(),
    ];
    for expected in expected {
        let reply = String::from_utf8(monitor.read_reply().expect("a MONITOR line")).unwrap();
        let (time, rest) = reply
            .strip_prefix('+')
            .and_then(|line| line.split_once(' '))
            .unwrap_or_else(|| panic!("not a MONITOR line: {reply:?}"));
        let (seconds, micros) = time.split_once('.').unwrap();
        assert!(seconds.parse::<u64>().unwrap() > 1_700_000_000, "{reply:?}");
        assert_eq!(micros.len(), 6, "{reply:?}");
        assert_eq!(rest, format!("{expected}\r\n"));
    }
}

#[test]
fn past_max_memory_writes_get_the_oom_error_and_reads_still_work() {
    let cluster = state_cluster(&["--state-max-memory", "1mb"]);
    let mut client = RespClient::unix(&state_socket(&cluster));
    let value = vec![b'x'; 10_000];
    let mut stored = 0;
    let refused = loop {
        assert!(stored < 200, "1mb allowed {stored} values of 10 kB");
        let reply = printable(&{
            client.send(&[b"SET", format!("k{stored}").as_bytes(), &value]);
            client.read_reply().unwrap()
        });
        if reply != "+OK\\r\\n" {
            break reply;
        }
        stored += 1;
    };
    assert_eq!(
        refused,
        "-OOM command not allowed when used memory > \\'maxmemory\\'.\\r\\n"
    );
    assert!((90..=105).contains(&stored), "{stored} values stored");
    assert_eq!(client.text("STRLEN k0"), ":10000\\r\\n");
    assert_eq!(client.text("DBSIZE"), format!(":{stored}\\r\\n"));
    assert_eq!(client.text("INCR n"), refused);
    // Freeing memory is always allowed, and makes room again.
    assert_eq!(client.text("DEL k0 k1 k2"), ":3\\r\\n");
    assert_eq!(client.text("INCR n"), ":1\\r\\n");
}

#[test]
fn workers_get_the_store_url_a_redis_url_or_nothing() {
    let embedded = state_cluster(&["--state-listen", "127.0.0.1:0"]);
    let env = embedded.get("/env").unwrap();
    let socket = state_socket(&embedded);
    let url = format!("unix://{}", socket.display());
    assert_eq!(env.field("HERDSMAN_STATE_URL"), url);
    assert_eq!(env.field("REDIS_URL"), url);
    let mode = std::fs::metadata(&socket).map(|meta| {
        use std::os::unix::fs::PermissionsExt;
        meta.permissions().mode() & 0o777
    });
    assert_eq!(mode.unwrap(), 0o600);
    // The same store over loopback TCP, on the port the primary printed.
    let line = embedded.stderr.wait_for("state store on");
    let tcp: std::net::SocketAddr = crate::support::word_after(&line, "redis://")
        .parse()
        .unwrap();
    let mut over_tcp = RespClient::tcp(tcp);
    let mut over_unix = RespClient::unix(&socket);
    assert_eq!(over_tcp.text("SET shared 1"), "+OK\\r\\n");
    assert_eq!(over_unix.text("GET shared"), "$1\\r\\n1\\r\\n");
    let status = crate::support::status_json(&embedded, "testserver");
    assert_eq!(status["shared_state"]["kind"], "embedded");
    assert_eq!(status["shared_state"]["url"], url.as_str());
    // The figures refresh ten times a second.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let text = embedded.herdsman(&["status", "testserver"]).stdout;
        let line = text
            .lines()
            .find(|line| line.starts_with("state: "))
            .unwrap_or("");
        if line.contains(" 1 keys ") && line.contains(" 2 clients") {
            assert!(
                line.starts_with(&format!("state: {url} and redis://{tcp}  ")),
                "{line}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "status never showed 1 key, 2 clients: {text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let external = state_cluster(&["--state", "redis://10.1.2.3:6379/4"]);
    let env = external.get("/env").unwrap();
    assert_eq!(env.field("REDIS_URL"), "redis://10.1.2.3:6379/4");
    assert_eq!(env.field("HERDSMAN_STATE_URL"), "redis://10.1.2.3:6379/4");
    assert!(!external.log().contains("state store on"));

    let off = state_cluster(&["--state", "off"]);
    let env = off.get("/env").unwrap();
    assert_eq!(env.field("REDIS_URL"), "");
    assert_eq!(env.field("HERDSMAN_STATE_URL"), "");
}

#[test]
fn state_flags_that_cannot_work_are_refused_with_exit_code_2() {
    let dir = RuntimeDir::new();
    let cases: [(&[&str], &str); 3] = [
        (
            &["--state-listen", "0.0.0.0:6380"],
            "is not a loopback address",
        ),
        (
            &["--state", "off", "--state-file", "x.aof"],
            "--state-file configures the embedded store, but --state is `off`",
        ),
        (
            &["--state", "memcache://x"],
            "expected `embedded`, `off` or a Redis URL",
        ),
    ];
    for (args, message) in cases {
        dir.assert_run_refused(&[args, &["--", "true"]].concat(), message);
    }
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let output = dir.herdsman(&[
        "run",
        "--port",
        "0",
        "--state-listen",
        &address,
        "--",
        "true",
    ]);
    assert_eq!(output.code, Some(3), "{output:?}");
    assert!(
        output
            .stderr
            .contains(&format!("cannot listen on {address}")),
        "{}",
        output.stderr
    );
}

/// Requests from several threads, each on a new connection; the `views` every answer carried
/// and the pids that answered.
fn count_views(cluster: &Cluster, requests: usize) -> (Vec<u64>, std::collections::BTreeSet<u32>) {
    let address = cluster.address();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                (0..requests / 4)
                    .map(|_| {
                        let response = crate::support::http_get(address, "/").expect("GET /");
                        assert_eq!(response.status, 200, "{}", response.body);
                        let views: u64 = response.field("views").parse().unwrap();
                        (views, response.pid())
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut views = Vec::new();
    let mut pids = std::collections::BTreeSet::new();
    for thread in threads {
        for (count, pid) in thread.join().unwrap() {
            views.push(count);
            pids.insert(pid);
        }
    }
    views.sort_unstable();
    (views, pids)
}

fn shares_one_exact_counter(command: &[&str]) {
    let cluster = cluster()
        .args(&["--workers", "2", "--ready-delay", "500ms"])
        .command(command)
        .start();
    let ready = cluster.ready_pids(2);
    let (views, pids) = count_views(&cluster, 400);
    // Every increment from every worker counted exactly once: the answers are 1..=400.
    assert_eq!(views, (1..=400).collect::<Vec<u64>>());
    assert_eq!(pids, ready.into_iter().collect(), "both workers answered");
    let mut client = RespClient::unix(&state_socket(&cluster));
    assert_eq!(client.text("GET page_views"), "$3\\r\\n400\\r\\n");
}

#[test]
fn node_workers_share_one_counter_through_ioredis() {
    let script = format!("{}/examples/node/counter.js", env!("CARGO_MANIFEST_DIR"));
    shares_one_exact_counter(&["node", &script]);
}

#[test]
fn python_workers_share_one_counter_through_redis_py() {
    let script = format!("{}/examples/python/counter.py", env!("CARGO_MANIFEST_DIR"));
    shares_one_exact_counter(&["python3", &script]);
}

/// The shared_state example (the library's `Worker::state()`): one counter and one history for
/// every worker, against the embedded store and, unchanged, against a real redis-server.
#[test]
fn rust_workers_share_state_through_worker_state_embedded_or_real_redis() {
    let dir = RuntimeDir::new();
    let redis = RedisServer::start(&dir);
    let real = format!("unix://{}", redis.socket.display());
    for state in ["embedded", real.as_str()] {
        let cluster = cluster()
            .args(&["--workers", "2", "--ready-delay", "300ms", "--state", state])
            .command(&[&crate::support::example_bin("shared_state")
                .display()
                .to_string()])
            .start();
        let ready: std::collections::BTreeSet<u32> = cluster.ready_pids(2).into_iter().collect();
        let mut answered = std::collections::BTreeSet::new();
        for visit in 1..=100u64 {
            let response = cluster.get("/").unwrap();
            assert_eq!(response.status, 200, "{}", response.body);
            assert_eq!(response.field("visits"), visit.to_string(), "[{state}]");
            answered.insert(response.pid());
        }
        assert_eq!(answered, ready, "[{state}] both workers answered");
        let history: Vec<serde_json::Value> =
            serde_json::from_str(&cluster.get("/history").unwrap().body).unwrap();
        let visits: Vec<u64> = history
            .iter()
            .map(|entry| entry["visit"].as_u64().unwrap())
            .collect();
        assert_eq!(visits, (81..=100).rev().collect::<Vec<u64>>(), "[{state}]");
        if state != "embedded" {
            let mut client = RespClient::unix(&redis.socket);
            assert_eq!(client.text("GET visits"), "$3\\r\\n100\\r\\n");
            assert_eq!(client.text("LLEN history"), ":100\\r\\n");
        }
    }
}
