//! Graceful and fast stop, the kill timeout, and no orphans when the primary dies (issue 2).

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::support::*;

#[test]
fn sigterm_lets_a_slow_request_finish_then_exits_0() {
    let mut cluster = cluster()
        .args(&["-w", "2", "--balance", "shared", "--ready-delay", "100ms"])
        .start();
    let pids: Vec<u32> = cluster.ready_pids(2);
    let address = cluster.address();
    let slow = std::thread::spawn(move || http_get(address, "/sleep?ms=1500"));
    let sleeping = cluster.stdout.wait_for("sleep start");
    cluster.signal(Signal::SIGTERM);
    let response = slow
        .join()
        .unwrap()
        .expect("the in-flight request completes");
    assert_eq!(response.status, 200);
    assert!(
        sleeping.contains(&format!("pid={} ", response.pid())),
        "{sleeping}"
    );
    let status = cluster.wait_exit();
    assert_eq!(status.code(), Some(0), "{}", cluster.log());
    let log = cluster.log();
    assert!(
        log.contains("herdsman: stopping: sending SIGTERM to 2 workers (killing after 10s)"),
        "{log}"
    );
    for pid in &pids {
        assert!(
            log.contains(&format!(" (pid {pid}) exited with code 0")),
            "{log}"
        );
    }
    assert!(log.ends_with("herdsman: stopped"), "{log}");
    wait_all_gone(&pids);
}

#[test]
fn worker_ignoring_the_stop_signal_is_killed_after_the_kill_timeout() {
    let mut cluster = cluster()
        .args(&[
            "-w",
            "1",
            "--ready-delay",
            "100ms",
            "--kill-timeout",
            "500ms",
        ])
        .env("TESTSERVER_IGNORE_TERM", "1")
        .start();
    let (_, pid) = cluster.wait_ready(1)[0];
    // Ready by the delay alone: wait until the server has its SIGTERM handler (installed before
    // it prints this), or the signal would end it at once under a loaded machine.
    cluster
        .stdout
        .wait_for(&format!("testserver pid={pid} worker=1 listening on"));
    let signalled = Instant::now();
    cluster.signal(Signal::SIGTERM);
    let status = cluster.wait_exit();
    assert!(
        signalled.elapsed() >= Duration::from_millis(500),
        "waited for the kill timeout"
    );
    assert_eq!(status.code(), Some(0), "{}", cluster.log());
    cluster
        .stdout
        .wait_for(&format!("testserver pid={pid} ignoring SIGTERM"));
    let log = cluster.log();
    assert!(
        log.contains(&format!(
            "worker 1 (pid {pid}) did not stop within 500ms; killed it"
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!("worker 1 (pid {pid}) was killed by SIGKILL")),
        "{log}"
    );
}

#[test]
fn second_sigint_stops_at_once() {
    let mut cluster = cluster()
        .args(&["-w", "2", "--ready-delay", "100ms", "--kill-timeout", "10m"])
        .env("TESTSERVER_IGNORE_TERM", "1")
        .start();
    let pids: Vec<u32> = cluster.ready_pids(2);
    cluster.signal(Signal::SIGINT);
    cluster
        .stderr
        .wait_for("stopping: sending SIGTERM to 2 workers");
    cluster
        .stdout
        .wait_for_count(2, |line| line.contains("ignoring SIGTERM"));
    cluster.signal(Signal::SIGINT);
    // The kill timeout is 10 minutes: exiting within the test deadline means the second
    // SIGINT did not wait for it.
    let status = cluster.wait_exit();
    assert_eq!(status.code(), Some(0));
    assert!(
        cluster
            .log()
            .contains("herdsman: stopping now: killing 2 workers"),
        "{}",
        cluster.log()
    );
    wait_all_gone(&pids);
}

#[test]
fn stop_signal_is_configurable() {
    let mut cluster = cluster()
        .args(&["-w", "1", "--ready-delay", "100ms", "--stop-signal", "INT"])
        .start();
    let (_, pid) = cluster.wait_ready(1)[0];
    cluster.signal(Signal::SIGTERM);
    assert_eq!(cluster.wait_exit().code(), Some(0));
    let log = cluster.log();
    assert!(
        log.contains("stopping: sending SIGINT to 1 worker"),
        "{log}"
    );
    // The test server has no SIGINT handler, so SIGINT's default action ends it.
    assert!(
        log.contains(&format!("worker 1 (pid {pid}) was killed by SIGINT")),
        "{log}"
    );
}

#[test]
fn primary_sigkill_leaves_no_worker_behind() {
    let mut cluster = cluster()
        .args(&["-w", "3", "--ready-delay", "100ms"])
        .start();
    let pids: Vec<u32> = cluster.ready_pids(3);
    assert!(pids.iter().all(|&pid| alive(pid)));
    cluster.signal(Signal::SIGKILL);
    let status = cluster.wait_exit();
    assert_eq!(status.code(), None, "killed by a signal");
    wait_all_gone(&pids);
}

#[test]
fn workers_run_in_their_own_process_group() {
    let cluster = cluster()
        .args(&["-w", "1", "--ready-delay", "100ms"])
        .start();
    let (_, pid) = cluster.wait_ready(1)[0];
    let pgid = nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid as i32))).unwrap();
    assert_eq!(pgid.as_raw() as u32, pid, "the worker leads its own group");
    let primary_group =
        nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(cluster.pid() as i32)));
    assert_ne!(primary_group.unwrap(), pgid);
}

/// Under systemd with `Type=notify`, the primary itself says READY=1 once every worker is
/// ready, and STOPPING=1 when it stops. The test plays systemd's part.
#[test]
fn primary_notifies_its_own_service_manager() {
    let dir = std::env::temp_dir().join(format!("herdsman-notify-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("systemd.sock");
    let _ = std::fs::remove_file(&path);
    let systemd = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    systemd.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut cluster = cluster()
        .args(&["-w", "2", "--ready-delay", "100ms"])
        .env("NOTIFY_SOCKET", path.to_str().unwrap())
        .start();
    let mut buffer = [0u8; 256];
    let length = systemd.recv(&mut buffer).expect("READY=1 from the primary");
    assert_eq!(&buffer[..length], b"READY=1\nSTATUS=2 workers ready");
    assert_eq!(
        cluster.wait_ready(2).len(),
        2,
        "both workers were ready first"
    );
    cluster.signal(Signal::SIGTERM);
    let length = systemd
        .recv(&mut buffer)
        .expect("STOPPING=1 from the primary");
    assert_eq!(&buffer[..length], b"STOPPING=1");
    assert_eq!(cluster.wait_exit().code(), Some(0));
    std::fs::remove_dir_all(&dir).unwrap();
}
