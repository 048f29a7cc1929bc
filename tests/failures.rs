//! Crash loops stay in their slot; start-up failures stop the primary with a clear message and
//! a distinct exit code (issue 2).

use std::time::Duration;

use crate::support::*;

/// Exit code when the listening address cannot be bound.
const EXIT_BIND: i32 = 3;
/// Exit code when no worker becomes ready at start-up.
const EXIT_NO_WORKER_READY: i32 = 4;

fn crash_looping_slot_leaves_the_others_serving(balance: &str) {
    let mut cluster = cluster()
        .args(&[
            "--workers",
            "2",
            "--balance",
            balance,
            "--ready-delay",
            "100ms",
        ])
        .env("TESTSERVER_CRASH_SLOT", "2")
        .start();
    let errored = cluster.stderr.wait_for("slot 2 is crash-looping (errored)");
    assert!(
        errored.contains(": 5 failures in a row, the last: worker 2 (pid "),
        "{errored}"
    );
    assert!(errored.contains(") exited with code 1 after "), "{errored}");
    let tail = cluster
        .stderr
        .wait_for("  | testserver: worker 2 crashing on purpose");
    assert_eq!(tail, "  | testserver: worker 2 crashing on purpose");
    let (slot, pid) = cluster.wait_ready(1)[0];
    assert_eq!(slot, 1);
    for index in 0..200 {
        let response = cluster
            .get("/")
            .unwrap_or_else(|error| panic!("request {index}: {error}"));
        assert_eq!(
            (response.status, response.pid()),
            (200, pid),
            "request {index}"
        );
    }
    assert!(
        cluster.child.try_wait().unwrap().is_none(),
        "the primary keeps running"
    );
    assert_eq!(
        cluster
            .stderr
            .count(|line| line.contains("worker 1 (pid") && line.contains("exited")),
        0
    );
}

#[test]
fn shared_crash_loop_leaves_the_other_slots_serving() {
    crash_looping_slot_leaves_the_others_serving("shared");
}

#[test]
fn reuseport_crash_loop_leaves_the_other_slots_serving() {
    crash_looping_slot_leaves_the_others_serving("reuseport");
}

/// Runs a cluster expected to fail at start-up; returns its exit code and stderr.
fn failed_start(builder: ClusterBuilder) -> (i32, String) {
    let mut cluster = builder.no_wait().start();
    let status = cluster.wait_exit();
    let elapsed = cluster.started.elapsed();
    assert!(
        elapsed < Duration::from_secs(5),
        "took {elapsed:?} to give up:\n{}",
        cluster.log()
    );
    (status.code().expect("an exit code"), cluster.log())
}

#[test]
fn command_not_found_stops_with_a_clear_message() {
    let (code, log) = failed_start(
        cluster()
            .args(&["-w", "2"])
            .command(&["herdsman-no-such-command"]),
    );
    assert_eq!(code, EXIT_NO_WORKER_READY, "{log}");
    assert!(
        log.contains("herdsman: error: no worker became ready: worker "),
        "{log}"
    );
    assert!(log.contains("exited with code 127 after"), "{log}");
    assert!(log.contains(
        "  | herdsman: cannot execute `herdsman-no-such-command`: No such file or directory"
    ));
    assert!(log.contains(
        "hint: `herdsman-no-such-command` was not found: check the spelling and $PATH, or give its path"
    ));
}

#[test]
fn port_in_use_stops_with_a_clear_message() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let (code, log) = failed_start(cluster().port(port));
    assert_eq!(code, EXIT_BIND, "{log}");
    // The listener is this test's own socket.
    let me = std::env::args().next().unwrap();
    assert!(
        log.starts_with(&format!(
            "herdsman: error: cannot listen on 127.0.0.1:{port}: Address already in use (os error \
             98) — pid {} (`{me}",
            std::process::id()
        )),
        "{log}"
    );
    assert!(
        log.ends_with("`) listens there; stop it or pick another --port (0 = any free port)"),
        "{log}"
    );
}

/// A port that no socket listens on but a connection holds as its own end (the kernel lent it
/// to an outgoing connection): the message says so, and blames no listener.
#[test]
fn port_held_by_a_connection_says_no_socket_listens_there() {
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    // A client of its own, on a port the kernel lends (no SO_REUSEADDR, as most clients).
    let client = std::net::TcpStream::connect(server.local_addr().unwrap()).unwrap();
    let port = client.local_addr().unwrap().port();
    let (code, log) = failed_start(cluster().port(port));
    assert_eq!(code, EXIT_BIND, "{log}");
    assert!(
        log.starts_with(&format!(
            "herdsman: error: cannot listen on 127.0.0.1:{port}: Address already in use (os error \
             98) — no socket listens there, but a connection holds it as its own end: the kernel \
             lends ports "
        )),
        "{log}"
    );
    assert!(log.contains("pick a --port below"), "{log}");
    drop(client);
}

#[test]
fn app_binding_the_port_itself_gets_a_hint() {
    let (code, log) = failed_start(
        cluster()
            .args(&["-w", "2"])
            .env("TESTSERVER_BIND_PORT", "1"),
    );
    assert_eq!(code, EXIT_NO_WORKER_READY, "{log}");
    assert!(log.contains("Address already in use"), "{log}");
    assert!(log.contains("itself, but herdsman already listens there; run it with --balance proxy (each worker gets a private $PORT, and the primary relays to it), or make it use the inherited socket (fd 3, LISTEN_FDS)"), "{log}");
}

#[test]
fn worker_that_never_notifies_fails_start_up_in_notify_mode() {
    let (code, log) =
        failed_start(cluster().args(&["-w", "1", "--ready", "notify", "--ready-timeout", "1s"]));
    assert_eq!(code, EXIT_NO_WORKER_READY, "{log}");
    assert!(log.contains("herdsman: worker 1 (pid "), "{log}");
    assert!(log.contains(") not ready within 1s; stopping it"), "{log}");
    assert!(
        log.contains("was not ready in time and was stopped (exited with code 0)"),
        "{log}"
    );
    assert!(
        log.contains("hint: with --ready notify a worker must send READY=1 to $NOTIFY_SOCKET"),
        "{log}"
    );
}

#[test]
fn notify_readiness_is_attributed_to_the_worker_that_sent_it() {
    // With --ready notify, the ready lines can only come from READY=1.
    let cluster = cluster()
        .args(&["-w", "2", "--ready", "notify", "--ready-delay", "100ms"])
        .env("TESTSERVER_NOTIFY", "1")
        .env("TESTSERVER_NOTIFY_DELAY_MS", "50")
        .start();
    let ready = cluster.wait_ready(2);
    for (slot, pid) in ready {
        let started = cluster
            .stdout
            .wait_for(&format!("testserver pid={pid} worker="));
        assert!(
            started.ends_with(&format!("worker={slot} listening on {}", cluster.address())),
            "{started}"
        );
    }
    cluster.stderr.wait_for("all 2 workers ready");
}

#[test]
fn notify_mode_waits_for_ready_one() {
    let cluster = cluster()
        .args(&["-w", "2", "--ready", "notify"])
        .env("TESTSERVER_NOTIFY", "1")
        .start();
    let ready = cluster.wait_ready(2);
    assert_eq!(ready.len(), 2);
    assert_eq!(cluster.get("/").unwrap().status, 200);
}

/// A crash-looping slot restarts at once, then 100, 200, 400, 800 ms after each failure (read
/// from the primary's own JSON timestamps: each gap is at least its delay).
#[test]
fn crash_loop_restarts_back_off_exponentially() {
    let cluster = cluster()
        .args(&[
            "-w",
            "2",
            "--balance",
            "shared",
            "--ready-delay",
            "100ms",
            "--log-format",
            "json",
        ])
        .env("TESTSERVER_CRASH_SLOT", "2")
        .start();
    let starts = cluster.stderr.wait_for_count(6, |line| {
        line.contains("\"line\":\"worker 2 (pid ") && line.contains(") starting, generation 1\"")
    });
    let times: Vec<std::time::SystemTime> = starts
        .iter()
        .map(|line| {
            let record: serde_json::Value = serde_json::from_str(line).unwrap();
            humantime::parse_rfc3339(record["time"].as_str().unwrap()).unwrap()
        })
        .collect();
    let gaps: Vec<Duration> = times
        .windows(2)
        .map(|pair| pair[1].duration_since(pair[0]).unwrap())
        .collect();
    for (gap, delay) in gaps.iter().zip([0, 100, 200, 400, 800]) {
        assert!(
            *gap >= Duration::from_millis(delay),
            "gaps {gaps:?}: one below {delay} ms"
        );
    }
}
