//! No connection the kernel queued is stranded (issue 11, §3): connections waiting on the socket
//! of a worker that died are served, by the primary relaying them to a ready worker; and a
//! library worker that stops serves every connection it accepted.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::support::*;

/// How long a test client waits for its answer before it counts as stranded.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// One `GET /` on a new connection: counts the connection in `connected` once the handshake is
/// done (the connection then waits in some socket's queue), and returns the answering pid and
/// when the answer was complete, or what went wrong.
fn get_counted(address: SocketAddr, connected: &AtomicUsize) -> Result<(u32, Instant), String> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))
        .map_err(|error| format!("connect: {error}"))?;
    connected.fetch_add(1, Ordering::SeqCst);
    stream
        .set_read_timeout(Some(CLIENT_TIMEOUT))
        .map_err(|error| error.to_string())?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .map_err(|error| format!("write: {error}"))?;
    let mut raw = String::new();
    stream
        .read_to_string(&mut raw)
        .map_err(|error| match error.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                format!("no answer within {CLIENT_TIMEOUT:?} (stranded in a queue)")
            }
            _ => format!("read: {error} (after {} bytes)", raw.len()),
        })?;
    let answered = Instant::now();
    if !raw.starts_with("HTTP/1.1 200") {
        return Err(format!("answer {raw:?}"));
    }
    let body = raw.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    let pid = Response {
        status: 200,
        body: body.to_string(),
    }
    .pid();
    Ok((pid, answered))
}

type Answer = std::thread::JoinHandle<Result<(u32, Instant), String>>;

/// Starts `count` requests, each on its own thread; waits until all are connected.
fn queue_requests(address: SocketAddr, count: usize, connected: &Arc<AtomicUsize>) -> Vec<Answer> {
    let before = connected.load(Ordering::SeqCst);
    let requests = (0..count)
        .map(|_| {
            let connected = connected.clone();
            std::thread::spawn(move || get_counted(address, &connected))
        })
        .collect();
    eventually("every test connection is established", || {
        (connected.load(Ordering::SeqCst) >= before + count).then_some(())
    });
    requests
}

/// Starts a `/burn` that keeps the single-threaded worker busy (it accepts nothing meanwhile);
/// returns the thread and the burning worker's pid.
fn burn(cluster: &Cluster, ms: u64) -> (std::thread::JoinHandle<()>, u32) {
    let before = cluster.stdout.count(|line| line.contains("burn start"));
    let address = cluster.address();
    let thread = std::thread::spawn(move || {
        // Its worker is killed while it burns: the answer is lost, as any in-flight one would be.
        let _ = http_get(address, &format!("/burn?ms={ms}"));
    });
    let line = cluster
        .stdout
        .wait_for_count(before + 1, |line| line.contains("burn start"))
        .pop()
        .unwrap();
    let pid = word_after(&line, "pid=").parse().unwrap();
    (thread, pid)
}

fn sigkill(pid: u32) {
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).expect("SIGKILL the worker");
}

/// Joins every request; returns the failures (with the log) and the answers.
fn outcomes(requests: Vec<Answer>) -> (Vec<String>, Vec<(u32, Instant)>) {
    let mut failures = Vec::new();
    let mut answers = Vec::new();
    for (index, request) in requests.into_iter().enumerate() {
        match request.join().unwrap() {
            Ok(answer) => answers.push(answer),
            Err(error) => failures.push(format!("request {index}: {error}")),
        }
    }
    (failures, answers)
}

/// The old worker is killed while its replacement starts, with connections queued on its
/// socket and more arriving: every one is served (they used to wait for a later reload to use
/// that socket again).
#[test]
fn old_worker_killed_during_its_replacements_start_strands_no_connection() {
    let cluster = cluster()
        .args(&[
            "-w",
            "1",
            "--balance",
            "reuseport",
            "--name",
            "kq",
            "--ready",
            "notify",
        ])
        .env("TESTSERVER_NOTIFY", "1")
        .env("TESTSERVER_NOTIFY_DELAY_MS", "1500")
        .start();
    let (_, old) = cluster.wait_ready(1)[0];
    let (burning, burner) = burn(&cluster, 5000);
    assert_eq!(burner, old);
    let runtime_dir = cluster.runtime_dir.clone();
    let reload = std::thread::spawn(move || runtime_dir.herdsman(&["reload", "kq"]));
    let starting = cluster.stderr.wait_for("starting, generation 2");
    let (_, replacement) = parse_worker_line(&starting);
    let connected = Arc::new(AtomicUsize::new(0));
    // Queued on the old worker's socket: it is busy, and still the one connections go to.
    let mut requests = queue_requests(cluster.address(), 20, &connected);
    sigkill(old);
    // A stream of new connections while the replacement is still starting.
    for _ in 0..20 {
        requests.extend(queue_requests(cluster.address(), 1, &connected));
        std::thread::sleep(Duration::from_millis(25));
    }
    let (failures, answers) = outcomes(requests);
    assert_eq!(failures, Vec::<String>::new(), "log:\n{}", cluster.log());
    assert_eq!(answers.len(), 40);
    assert!(answers.iter().all(|&(pid, _)| pid == replacement));
    let reload = reload.join().unwrap();
    assert_eq!(reload.code, Some(0), "{reload:?}");
    burning.join().unwrap();
    let relayed = cluster
        .stderr
        .wait_for("no worker serves; relayed to ready workers");
    assert!(relayed.starts_with("herdsman: slot 1: "), "{relayed}");
}

/// A worker is SIGKILLed with connections queued on its socket, and its slot then crash-loops:
/// the queued connections are served by the other worker within a second (they used to wait in
/// the queue of a slot in backoff until their clients gave up).
#[test]
fn connections_queued_for_a_killed_worker_are_served_within_a_second() {
    let dir = RuntimeDir::new();
    let crash = dir.path().join("crash");
    let cluster = cluster()
        .runtime_dir(&dir)
        .args(&[
            "-w",
            "2",
            "--balance",
            "reuseport",
            "--ready-delay",
            "200ms",
        ])
        .env("TESTSERVER_CRASH_IF", crash.to_str().unwrap())
        .start();
    let ready = cluster.wait_ready(2);
    let (burning, burner) = burn(&cluster, 5000);
    let (slot, _) = *ready.iter().find(|&&(_, pid)| pid == burner).unwrap();
    let other = ready.iter().find(|&&(_, pid)| pid != burner).unwrap().1;
    let connected = Arc::new(AtomicUsize::new(0));
    let requests = queue_requests(cluster.address(), 40, &connected);
    // Wait until the free worker has answered its share: the rest wait in the burner's queue.
    eventually("the free worker answers its share", || {
        let finished = requests
            .iter()
            .filter(|request| request.is_finished())
            .count();
        (finished > 0 && finished < 40).then_some(())
    });
    std::fs::write(&crash, "").unwrap();
    let killed = Instant::now();
    sigkill(burner);
    let (failures, answers) = outcomes(requests);
    assert_eq!(failures, Vec::<String>::new(), "log:\n{}", cluster.log());
    assert_eq!(answers.len(), 40);
    assert!(answers.iter().all(|&(pid, _)| pid == other));
    let last = answers.iter().map(|&(_, at)| at).max().unwrap();
    let waited = last.saturating_duration_since(killed);
    eprintln!("the queued connections were answered within {waited:?} of the kill");
    assert!(
        waited < Duration::from_secs(1),
        "the last queued connection was answered {waited:?} after the kill; log:\n{}",
        cluster.log()
    );
    let relayed = cluster
        .stderr
        .wait_for("no worker serves; relayed to ready workers");
    assert!(
        relayed.starts_with(&format!("herdsman: slot {slot}: ")),
        "{relayed}"
    );
    burning.join().unwrap();
}

/// `herdsman::Worker`'s graceful shutdown with one shared queue, under clients that open a
/// connection per request: 20 reloads fail no request (the stopping worker used to close the
/// connections it had just accepted, about ten per reload under wrk).
#[test]
fn library_workers_sharing_one_queue_lose_no_request_over_20_reloads() {
    let cluster = cluster()
        .program(example_bin("zero_downtime"))
        .env("HERDSMAN_WORKERS", "2")
        .env("HERDSMAN_BALANCE", "shared")
        .env("WARM_UP_MS", "50")
        .env("DRAIN_MS", "100")
        .start();
    assert!(
        cluster.stderr.snapshot()[0].ends_with("(2 workers, balance shared)"),
        "{}",
        cluster.log()
    );
    cluster.wait_ready(2);
    let clients: Vec<_> = (0..4)
        .map(|_| load_loop(cluster.address(), false))
        .collect();
    for reload in 1..=20 {
        let output = cluster.herdsman(&["reload", "zero_downtime"]);
        assert_eq!(output.code, Some(0), "reload {reload}: {output:?}");
    }
    let reports: Vec<LoadReport> = clients.into_iter().map(|client| client.finish(1)).collect();
    let failures: Vec<&String> = reports.iter().flat_map(|report| &report.failures).collect();
    let ok: usize = reports.iter().map(|report| report.ok).sum();
    assert_eq!(failures, Vec::<&String>::new(), "{ok} requests answered");
    assert!(ok >= 200, "only {ok} requests answered over 20 reloads");
    assert_eq!(status_json(&cluster, "zero_downtime")["generation"], 21);
}
