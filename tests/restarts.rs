//! The restart policy: a worker that was ready and serving is restarted at once when something
//! outside kills it, reloads do not keep the failure count from starting over, and one
//! crash-looping slot does not hold up the others' start (issue 11, §3).

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::support::*;

/// How long the test lets a worker serve before killing it: past the restart policy's healthy
/// uptime (1 s of being ready), which is the point of the test, not a wait for an event.
const SERVED: Duration = Duration::from_millis(1300);

/// SIGKILLs slot 1's worker five times, each after it has served a while, with a reload between
/// kills when `reload_between`; every kill must be restarted at once and the slot never errored.
fn healthy_workers_killed_from_outside_restart_at_once(reload_between: bool) {
    let cluster = cluster()
        .args(&["-w", "1", "--name", "kills", "--ready-delay", "100ms"])
        .start();
    let mut ready = 1;
    for kill_number in 1..=5 {
        let (slot, pid) = cluster.wait_ready(ready)[ready - 1];
        assert_eq!(slot, 1);
        let pid = if reload_between {
            let output = cluster.herdsman(&["reload"]);
            assert_eq!(output.code, Some(0), "{output:?}\n{}", cluster.log());
            ready += 1;
            let (_, new_pid) = cluster.wait_ready(ready)[ready - 1];
            assert_ne!(new_pid, pid);
            new_pid
        } else {
            pid
        };
        std::thread::sleep(SERVED);
        kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
        let line = cluster.stderr.wait_for(&format!(
            "worker 1 (pid {pid}) was killed by SIGKILL after "
        ));
        assert!(
            line.ends_with("; restarting now"),
            "kill {kill_number}: {line}\n{}",
            cluster.log()
        );
        ready += 1;
    }
    cluster.wait_ready(ready);
    assert_eq!(
        cluster.stderr.count(|line| line.contains("crash-looping")),
        0
    );
    let status = status_json(&cluster, "kills");
    assert_eq!(status["slots"][0]["state"], "ready", "{status}");
    assert_eq!(status["slots"][0]["restarts"], 5, "{status}");
}

#[test]
fn worker_killed_after_serving_is_restarted_at_once() {
    healthy_workers_killed_from_outside_restart_at_once(false);
}

#[test]
fn reloads_do_not_keep_the_failure_count_from_resetting() {
    healthy_workers_killed_from_outside_restart_at_once(true);
}

/// With one slot crash-looping, the cluster is `running`, degraded, once that slot is errored and
/// the other ready, and herdsman tells its own service manager `READY=1` (as systemd's
/// `Type=notify` needs).
#[test]
fn crash_looping_slot_does_not_hold_up_start_up() {
    let dir = RuntimeDir::new();
    let socket_path = dir.path().join("service-manager.sock");
    let service_manager = UnixDatagram::bind(&socket_path).unwrap();
    service_manager.set_read_timeout(Some(DEADLINE)).unwrap();
    let cluster = cluster()
        .runtime_dir(&dir)
        .args(&["-w", "2", "--name", "degraded", "--ready-delay", "100ms"])
        .env("TESTSERVER_CRASH_SLOT", "2")
        .env("NOTIFY_SOCKET", socket_path.to_str().unwrap())
        .start();
    let mut buffer = [0u8; 4096];
    let length = service_manager
        .recv(&mut buffer)
        .unwrap_or_else(|error| panic!("no READY=1: {error}\n{}", cluster.log()));
    let datagram = String::from_utf8_lossy(&buffer[..length]).into_owned();
    assert_eq!(
        datagram,
        "READY=1\nSTATUS=1 of 2 workers ready; running degraded, slot 2 crash-looping"
    );
    cluster
        .stderr
        .wait_for("1 of 2 workers ready; running degraded, slot 2 crash-looping");
    let errored = cluster.stderr.wait_for("slot 2 is crash-looping (errored)");
    let warned = cluster.stderr.wait_for("running degraded");
    let lines = cluster.stderr.snapshot();
    let position = |wanted: &str| lines.iter().position(|line| line == wanted).unwrap();
    assert!(position(&errored) < position(&warned), "{}", cluster.log());
    let status = status_json(&cluster, "degraded");
    assert_eq!(status["state"], "running", "{status}");
    assert_eq!(status["degraded"], true, "{status}");
    let output = cluster.herdsman(&["status", "degraded"]);
    assert!(
        output
            .stdout
            .lines()
            .next()
            .unwrap()
            .contains("  running (degraded)  "),
        "{output:?}"
    );
    assert_eq!(cluster.get("/").unwrap().status, 200);
}
