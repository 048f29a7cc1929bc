//! `--sticky ip` and `--proxy-protocol` (issue 15): a client address's connections reach one
//! worker while it lives, in reuseport (the kernel's steering program), proxy and Node
//! round-robin mode; the
//! proxy tells apps the client's address with HAProxy's PROXY protocol header.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::support::*;

fn loopback(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// `GET /` from `source` on a new connection; the worker (slot) and pid that answered.
fn answered_from(address: SocketAddr, source: IpAddr) -> (String, u32) {
    let response = http_from(source, address, "GET", "/", None)
        .unwrap_or_else(|error| panic!("GET / from {source}: {error}"));
    assert_eq!(response.status, 200, "{response:?}");
    (response.field("worker"), response.pid())
}

/// The pids that answered `count` requests from `source`, each on a new connection.
fn pids_from(address: SocketAddr, source: IpAddr, count: usize) -> BTreeSet<u32> {
    (0..count)
        .map(|_| answered_from(address, source).1)
        .collect()
}

/// With `balance` and 2 workers: 200 fresh connections from 127.0.0.1 reach one worker with
/// `--sticky ip`, both without it; 127.0.0.2..9 each stick to one and spread over both.
fn one_source_reaches_one_worker(balance: &str) {
    one_source_reaches_one_worker_of(balance, &[&testserver_bin().display().to_string()]);
}

/// [`one_source_reaches_one_worker`] with workers running `command`.
fn one_source_reaches_one_worker_of(balance: &str, command: &[&str]) {
    let name = format!("sticky-{balance}");
    let sticky = cluster()
        .args(&[
            "-w",
            "2",
            "--balance",
            balance,
            "--sticky",
            "ip",
            "--name",
            &name,
        ])
        .command(command)
        .start();
    let pids: BTreeSet<u32> = sticky.ready_pids(2).into_iter().collect();
    let address = sticky.address();
    let from_one = pids_from(address, loopback(1), 200);
    assert_eq!(from_one.len(), 1, "{balance}: {from_one:?}");
    let mut reached = BTreeSet::new();
    for last in 2..=9 {
        let from = pids_from(address, loopback(last), 20);
        assert_eq!(from.len(), 1, "{balance}: 127.0.0.{last} reached {from:?}");
        reached.extend(from);
    }
    assert_eq!(reached, pids, "{balance}: eight sources over both workers");
    let status = status_json(&sticky, &name);
    assert_eq!(status["sticky"], "ip");
    let text = sticky.herdsman(&["status", &name]);
    assert!(
        text.stdout
            .contains(&format!("balance {balance}, sticky ip")),
        "{text:?}"
    );

    // The same without --sticky: one source's fresh connections go to both workers.
    let plain = cluster()
        .args(&["-w", "2", "--balance", balance])
        .command(command)
        .start();
    plain.wait_ready(2);
    let spread = pids_from(plain.address(), loopback(1), 200);
    assert_eq!(spread.len(), 2, "{balance} without --sticky: {spread:?}");
}

#[test]
fn sticky_ip_in_reuseport_mode_sends_one_source_to_one_worker() {
    one_source_reaches_one_worker("reuseport");
}

#[test]
fn sticky_ip_in_proxy_mode_sends_one_source_to_one_worker() {
    one_source_reaches_one_worker("proxy");
}

/// Node's round-robin: the primary hands each connection to the worker its address sticks to.
#[test]
fn sticky_ip_in_round_robin_mode_sends_one_source_to_one_worker() {
    let app = format!("{}/examples/node/busy-app.js", env!("CARGO_MANIFEST_DIR"));
    one_source_reaches_one_worker_of("round-robin", &["node", &app]);
}

/// Slot by source, for 127.0.0.1..9, with the pid that answered.
fn owners(address: SocketAddr) -> BTreeMap<u8, (String, u32)> {
    (1..=9)
        .map(|last| (last, answered_from(address, loopback(last))))
        .collect()
}

/// kill -9 of one of 3 sticky workers: its sources move to the others, every other source
/// stays where it was, and once its slot has a new worker the moved sources come back to it.
fn a_dead_workers_clients_move_and_others_stay(balance: &str) {
    let cluster = cluster()
        .args(&["-w", "3", "--balance", balance, "--sticky", "ip"])
        .args(&["--ready-delay", "2s"])
        .start();
    cluster.wait_ready(3);
    let address = cluster.address();
    let before = owners(address);
    let slots: BTreeSet<&String> = before.values().map(|(slot, _)| slot).collect();
    assert!(slots.len() >= 2, "{balance}: {before:?}");
    // The slot that serves the most sources goes.
    let victim_slot = slots
        .iter()
        .max_by_key(|slot| before.values().filter(|(s, _)| s == **slot).count())
        .map(|slot| slot.to_string())
        .unwrap();
    let victim = before
        .values()
        .find(|(slot, _)| *slot == victim_slot)
        .unwrap()
        .1;
    kill(Pid::from_raw(victim as i32), Signal::SIGKILL).unwrap();
    cluster
        .stderr
        .wait_for(&format!("(pid {victim}) was killed by SIGKILL"));
    // Its replacement needs 2 s to be ready: meanwhile the others serve every source.
    let during = owners(address);
    assert_eq!(
        cluster
            .stderr
            .count(|line| line.starts_with("herdsman: worker ") && line.ends_with(" ready")),
        3,
        "{balance}: the replacement was ready too soon for the test: {}",
        cluster.log()
    );
    for (last, (slot, pid)) in &before {
        let (now_slot, now_pid) = &during[last];
        if *slot == victim_slot {
            assert_ne!(
                now_pid, pid,
                "{balance}: 127.0.0.{last} still on the dead worker"
            );
        } else {
            assert_eq!(
                (now_slot, now_pid),
                (slot, pid),
                "{balance}: 127.0.0.{last} moved, and its worker lives"
            );
        }
    }
    cluster.wait_ready(4);
    let after = owners(address);
    for (last, (slot, pid)) in &before {
        let (now_slot, now_pid) = &after[last];
        assert_eq!(
            now_slot, slot,
            "{balance}: 127.0.0.{last} is back on its slot"
        );
        if *slot != victim_slot {
            assert_eq!(now_pid, pid, "{balance}: 127.0.0.{last}");
        }
    }
}

#[test]
fn kill_9_of_a_sticky_worker_moves_only_its_clients_reuseport() {
    a_dead_workers_clients_move_and_others_stay("reuseport");
}

#[test]
fn kill_9_of_a_sticky_worker_moves_only_its_clients_proxy() {
    a_dead_workers_clients_move_and_others_stay("proxy");
}

fn socket_io_app() -> String {
    format!(
        "{}/examples/node/socketio-polling-app.js",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// A socket.io session over the long-polling transport only, as engine.io 4 speaks it: the
/// handshake, the namespace's connect, then `whoami` five times (each a POST of the event and
/// a GET of its answer), every request on a new connection. Returns the pids that answered,
/// or the first refusal (`Session ID unknown` when a poll reached another worker).
fn polling_session(address: SocketAddr) -> Result<BTreeSet<u32>, String> {
    let base = "/socket.io/?EIO=4&transport=polling";
    let request = |method: &str, path: &str, body: Option<&str>| {
        let response = http_from(loopback(1), address, method, path, body)
            .unwrap_or_else(|error| panic!("{method} {path}: {error}"));
        match response.status {
            200 => Ok(response.body),
            _ => Err(format!("{method} {path}: {response:?}")),
        }
    };
    let open = request("GET", base, None)?;
    let handshake: serde_json::Value = serde_json::from_str(
        open.strip_prefix('0')
            .unwrap_or_else(|| panic!("open packet: {open:?}")),
    )
    .unwrap();
    let sid = handshake["sid"].as_str().unwrap().to_string();
    let session = format!("{base}&sid={sid}");
    assert_eq!(request("POST", &session, Some("40"))?, "ok");
    let connected = request("GET", &session, None)?;
    assert!(connected.starts_with("40{"), "{connected:?}");
    let mut pids = BTreeSet::new();
    for ack in 1..=5 {
        let event = format!("42{ack}[\"whoami\"]");
        assert_eq!(request("POST", &session, Some(&event))?, "ok");
        let answer = request("GET", &session, None)?;
        let prefix = format!("43{ack}[");
        let json = answer
            .strip_prefix(&prefix[..prefix.len() - 1])
            .unwrap_or_else(|| panic!("ack {ack}: {answer:?}"));
        let value: serde_json::Value = serde_json::from_str(json).unwrap();
        pids.insert(value[0]["pid"].as_u64().unwrap() as u32);
    }
    Ok(pids)
}

/// socket.io's polling transport across 2 workers: with `--sticky ip` every session's polls
/// reach the worker that holds it; without, one of a few sessions meets the other worker, which
/// answers "Session ID unknown".
#[test]
fn socket_io_polling_works_across_two_workers_only_with_sticky_ip() {
    let app = socket_io_app();
    let sticky = cluster()
        .args(&["-w", "2", "--sticky", "ip"])
        .command(&["node", &app])
        .start();
    let pids: BTreeSet<u32> = sticky.ready_pids(2).into_iter().collect();
    for session in 0..3 {
        let answered = polling_session(sticky.address())
            .unwrap_or_else(|refused| panic!("session {session}: {refused}"));
        assert_eq!(answered.len(), 1, "{answered:?}");
        assert!(answered.is_subset(&pids), "{answered:?} {pids:?}");
    }

    let plain = cluster()
        .args(&["-w", "2"])
        .command(&["node", &app])
        .start();
    plain.wait_ready(2);
    let refused = (0..5)
        .find_map(|_| polling_session(plain.address()).err())
        .expect("five polling sessions without --sticky never met the other worker");
    assert!(refused.contains("Session ID unknown"), "{refused}");
}

/// A server that expects the PROXY protocol header: parses it (v1 or v2, TCP4/TCP6), then
/// answers an HTTP request with what it said. The first `/flaky` request of the whole cluster
/// is closed unanswered (a file marks it), so the proxy sends it again to the other worker. A
/// connection of the proxy's own (v2 `LOCAL`, v1 `UNKNOWN`: the readiness probe) is closed; each
/// connection's kind (`local`, `proxy`, or `missing` without a header) is a line of $SEEN.
const PROXY_PROTOCOL_SERVER: &str = r#"import ipaddress, json, os, socket, struct, threading
server = socket.create_server((os.environ["HOST"], int(os.environ["PORT"])))
flaky_mark = os.environ["FLAKY_MARK"]
def seen(kind):
    with open(os.environ["SEEN"], "a") as log:
        log.write(kind + "\n")
SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
def read_exact(connection, count, data):
    while len(data) < count:
        more = connection.recv(65536)
        if not more:
            raise EOFError
        data += more
    return data
def header(connection):
    data = read_exact(connection, 6, b"")
    if data[:6] == SIGNATURE[:6]:
        data = read_exact(connection, 16, data)
        if not data.startswith(SIGNATURE):
            raise ValueError("bad signature %r" % data)
        if data[12] == 0x20:
            return {"local": True}, data[16:]
        length = struct.unpack("!H", data[14:16])[0]
        data = read_exact(connection, 16 + length, data)
        family, body = data[13], data[16:16 + length]
        if family == 0x11:
            source, port = ipaddress.IPv4Address(body[0:4]), struct.unpack("!H", body[8:10])[0]
        elif family == 0x21:
            source, port = ipaddress.IPv6Address(body[0:16]), struct.unpack("!H", body[32:34])[0]
        else:
            raise ValueError("family %x" % family)
        return {"version": 2, "command": data[12], "client": str(source), "port": port}, data[16 + length:]
    if data.startswith(b"PROXY "):
        while b"\r\n" not in data:
            data = read_exact(connection, len(data) + 1, data)
        line, rest = data.split(b"\r\n", 1)
        parts = line.decode().split(" ")
        if parts[1] == "UNKNOWN":
            return {"local": True}, rest
        return {"version": 1, "family": parts[1], "client": parts[2], "port": int(parts[4])}, rest
    raise ValueError("no PROXY header: %r" % data)
def serve(connection):
    try:
        said, data = header(connection)
        if said.get("local"):
            seen("local")
            connection.close()
            return
        seen("proxy")
        while b"\r\n\r\n" not in data:
            data = read_exact(connection, len(data) + 1, data)
        if data.startswith(b"GET /flaky "):
            try:
                os.close(os.open(flaky_mark, os.O_CREAT | os.O_EXCL))
                connection.close()
                return
            except FileExistsError:
                pass
        said["worker"] = os.environ["HERDSMAN_WORKER_ID"]
        body = json.dumps(said).encode()
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
    except (EOFError, ValueError) as error:
        seen("missing")
        body = str(error).encode()
        connection.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
    connection.close()
while True:
    connection, _ = server.accept()
    threading.Thread(target=serve, args=(connection,), daemon=True).start()
"#;

/// `--proxy-protocol v1` and `v2`: the worker learns the exact client address and port, also
/// on the retry of a request its first worker closed unanswered.
#[test]
fn the_proxy_protocol_header_tells_a_worker_the_client_address_and_port() {
    for version in ["v1", "v2"] {
        let dir = RuntimeDir::new();
        let script = write_file(&dir, "pp.py", PROXY_PROTOCOL_SERVER);
        let mark = dir.path().join("flaky-done");
        let seen = dir.path().join("seen");
        let cluster = cluster()
            .runtime_dir(&dir)
            .args(&["-w", "2", "--balance", "proxy", "--proxy-protocol", version])
            .env("FLAKY_MARK", &mark.display().to_string())
            .env("SEEN", &seen.display().to_string())
            .command(&["python3", &script.display().to_string()])
            .start();
        cluster.wait_ready(2);
        for (last, path) in [(3, "/"), (7, "/"), (5, "/flaky")] {
            let mut stream = connect_from(loopback(last), cluster.address()).unwrap();
            let port = stream.local_addr().unwrap().port();
            use std::io::Write;
            write!(
                stream,
                "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            let mut raw = String::new();
            stream.read_to_string(&mut raw).unwrap();
            let body = raw.split_once("\r\n\r\n").map_or("", |(_, body)| body);
            assert!(
                raw.starts_with("HTTP/1.1 200 OK"),
                "{version} {path}: {raw}"
            );
            let said: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(
                said["client"],
                format!("127.0.0.{last}"),
                "{version}: {said}"
            );
            assert_eq!(said["port"], port, "{version}: {said}");
            match version {
                "v1" => assert_eq!(said["family"], "TCP4"),
                _ => assert_eq!(said["command"], 0x21),
            }
        }
        assert!(
            mark.exists(),
            "{version}: the first /flaky was closed unanswered"
        );
        // Each worker's readiness probe said LOCAL/UNKNOWN; every relayed connection (4: the
        // retry of /flaky too) had the header.
        let seen = std::fs::read_to_string(&seen).unwrap();
        let count = |kind: &str| seen.lines().filter(|line| *line == kind).count();
        assert_eq!(
            (count("local"), count("proxy")),
            (2, 4),
            "{version}: {seen}"
        );
        assert_eq!(count("missing"), 0, "{version}: {seen}");
    }
}

#[test]
fn sticky_and_the_proxy_protocol_are_refused_where_they_cannot_work() {
    let dir = RuntimeDir::new();
    let run = |args: &[&str]| {
        let mut all = vec!["run", "--port", "0"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--", "python3", "-m", "http.server"]);
        dir.herdsman(&all)
    };
    let shared = run(&["--balance", "shared", "--sticky", "ip"]);
    assert_eq!(shared.code, Some(2), "{shared:?}");
    assert!(
        shared
            .stderr
            .contains("--sticky ip needs a balance mode that chooses the worker"),
        "{}",
        shared.stderr
    );
    for balance in ["reuseport", "shared"] {
        let output = run(&["--balance", balance, "--proxy-protocol", "v1"]);
        assert_eq!(output.code, Some(2), "{output:?}");
        assert!(
            output.stderr.contains(&format!(
                "--proxy-protocol v1 is written by the primary's proxy, and --balance {balance} \
                 has none"
            )),
            "{}",
            output.stderr
        );
    }
    let bad = run(&["--sticky", "cookie"]);
    assert_eq!(bad.code, Some(2), "{bad:?}");
}
