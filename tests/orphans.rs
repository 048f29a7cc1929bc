//! Nothing the cluster starts outlives the primary, and orphans are reaped (issue 10).

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::net::TcpStream;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::support::*;

/// The pids of live processes whose argv is exactly `argv`.
fn processes_with_argv(argv: &[&str]) -> BTreeSet<u32> {
    let wanted: Vec<u8> = argv
        .iter()
        .flat_map(|arg| [arg.as_bytes(), b"\0"].concat())
        .collect();
    let mut found = BTreeSet::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse().ok())
        else {
            continue;
        };
        if std::fs::read(entry.path().join("cmdline")).is_ok_and(|cmdline| cmdline == wanted)
            && alive(pid)
        {
            found.insert(pid);
        }
    }
    found
}

/// The children of `pid`, from /proc.
fn children_of(pid: u32) -> BTreeSet<u32> {
    let mut children = BTreeSet::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let list = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        children.extend(
            list.split_whitespace()
                .filter_map(|pid| pid.parse::<u32>().ok()),
        );
    }
    children
}

/// SIGKILLs, when dropped, the processes a test made that are still there (a failed test must
/// not leave 300-second sleeps behind).
struct KillOnDrop(Vec<Vec<String>>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for argv in &self.0 {
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            for pid in processes_with_argv(&argv) {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
    }
}

/// A worker's helpers (one in its process group, one in a session of its own, as a daemon
/// would be) held the listening socket after a SIGKILL of the primary, so connections hung.
#[test]
fn primary_sigkill_takes_the_workers_helpers_and_the_port_with_it() {
    let marker = std::process::id();
    let in_group = format!("300.{marker}");
    let own_session = format!("301.{marker}");
    let _cleanup = KillOnDrop(vec![
        vec!["sleep".into(), in_group.clone()],
        vec!["sleep".into(), own_session.clone()],
    ]);
    let script = format!(
        "sleep {in_group} & setsid sleep {own_session} & exec {}",
        testserver_bin().display()
    );
    let mut cluster = cluster()
        .args(&["-w", "2", "--ready-delay", "100ms"])
        .command(&["sh", "-c", &script])
        .start();
    let workers = cluster.ready_pids(2);
    let helpers = eventually("both workers' helpers running", || {
        let in_group = processes_with_argv(&["sleep", &in_group]);
        let own_session = processes_with_argv(&["sleep", &own_session]);
        (in_group.len() == 2 && own_session.len() == 2).then(|| {
            in_group
                .union(&own_session)
                .copied()
                .collect::<BTreeSet<u32>>()
        })
    });
    let address = cluster.address();
    cluster
        .get("/")
        .expect("the cluster serves before the kill");
    // The primary's own children: whatever stands between it and the workers.
    let mut started: BTreeSet<u32> = children_of(cluster.pid());
    started.extend(workers.iter().copied());
    started.extend(helpers.iter().copied());

    cluster.signal(Signal::SIGKILL);
    let killed = Instant::now();
    assert_eq!(cluster.wait_exit().signal(), Some(libc::SIGKILL));
    let limit = Duration::from_secs(1);
    let survivors = loop {
        let survivors: Vec<u32> = started.iter().copied().filter(|&pid| alive(pid)).collect();
        if survivors.is_empty() || killed.elapsed() > limit {
            break survivors;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(
        survivors.is_empty(),
        "still alive {limit:?} after the primary's SIGKILL: {survivors:?} (workers {workers:?}, \
         helpers {helpers:?}, all {started:?})"
    );
    match TcpStream::connect_timeout(&address, Duration::from_secs(2)) {
        Err(error) => assert_eq!(error.kind(), ErrorKind::ConnectionRefused, "{error}"),
        Ok(_) => panic!("{address} still accepts connections after the cluster died"),
    }
}

/// Whether this machine lets us create a PID namespace (root, or user namespaces allowed).
fn unshare_permitted() -> bool {
    Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Processes of the PID namespace `namespace` (`/proc/PID/ns/pid`) that are zombies, or alive
/// with argv `marker`.
fn zombies_or_marked(namespace: &std::path::Path, marker: &[&str]) -> (usize, usize) {
    let marked = processes_with_argv(marker);
    let (mut zombies, mut alive_marked) = (0, 0);
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        if std::fs::read_link(entry.path().join("ns/pid"))
            .ok()
            .as_deref()
            != Some(namespace)
        {
            continue;
        }
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        if stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
        {
            zombies += 1;
        } else if marked.contains(&pid) {
            alive_marked += 1;
        }
    }
    (zombies, alive_marked)
}

/// As pid 1 of a PID namespace (a container), herdsman reaps every orphan: those of its
/// workers, and those that reach pid 1 directly (as `docker exec` leaves them); SIGTERM still
/// stops the cluster, with exit code 0.
#[test]
fn as_pid_1_reaps_every_orphan_and_stops_on_sigterm() {
    if !unshare_permitted() {
        eprintln!(
            "SKIPPED as_pid_1_reaps_every_orphan_and_stops_on_sigterm: \
             `unshare --pid --fork --mount-proc` is not permitted here (needs root or user \
             namespaces)"
        );
        return;
    }
    let dir = RuntimeDir::new();
    let orphans = "for i in $(seq 200); do (sleep 0.01 &) ; done";
    let script = format!("{orphans}; exec {}", testserver_bin().display());
    let mut unshare = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc"])
        .arg(herdsman_bin())
        .args(["run", "--host", "127.0.0.1", "--port", "0", "-w", "1"])
        // Ready once the server serves, so after the worker made its 200 orphans.
        .args(["--ready", "notify", "--", "sh", "-c", &script])
        .env("TESTSERVER_NOTIFY", "1")
        .env("XDG_RUNTIME_DIR", dir.path())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start unshare");
    // Killing pid 1 of the namespace kills everything in it.
    struct KillNamespace(u32);
    impl Drop for KillNamespace {
        fn drop(&mut self) {
            if self.0 != 0 {
                let _ = kill(Pid::from_raw(self.0 as i32), Signal::SIGKILL);
            }
        }
    }
    let stderr = Lines::read_from(unshare.stderr.take().unwrap());
    stderr.wait_for("the 1 worker is ready");
    let primary = eventually("herdsman under unshare", || {
        children_of(unshare.id()).into_iter().next()
    });
    let mut guard = KillNamespace(primary);
    let status = std::fs::read_to_string(format!("/proc/{primary}/status")).unwrap();
    let nspid = status
        .lines()
        .find(|line| line.starts_with("NSpid:"))
        .unwrap();
    assert_eq!(
        nspid.split_whitespace().last(),
        Some("1"),
        "herdsman is pid 1: {nspid}"
    );
    let namespace = std::fs::read_link(format!("/proc/{primary}/ns/pid")).unwrap();

    // Orphans that reach pid 1 itself: a process entered into the namespace from outside.
    let entered = Command::new("nsenter")
        .args(["--target", &primary.to_string(), "--pid", "--mount"])
        .args(["sh", "-c", orphans])
        .status()
        .expect("run nsenter");
    assert!(entered.success(), "nsenter: {entered}");
    eventually("no zombie and no orphan left in the namespace", || {
        let (zombies, alive) = zombies_or_marked(&namespace, &["sleep", "0.01"]);
        (zombies == 0 && alive == 0).then_some(())
    });

    kill(Pid::from_raw(primary as i32), Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + DEADLINE;
    let exit = loop {
        if let Some(status) = unshare.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "herdsman as pid 1 ignored SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    guard.0 = 0;
    assert_eq!(exit.code(), Some(0), "{}", stderr.snapshot().join("\n"));
    assert!(
        stderr
            .snapshot()
            .iter()
            .any(|line| line.contains("stopping")),
        "{}",
        stderr.snapshot().join("\n")
    );
}

/// The keeper ends as its worker ended, so a crash is reported as the worker's own.
#[test]
fn a_worker_killed_by_sigsegv_is_reported_as_such() {
    let cluster = cluster()
        .args(&["-w", "1", "--ready-delay", "5s"])
        .command(&["sh", "-c", "kill -SEGV $$"])
        .no_wait()
        .start();
    let starting = cluster.stderr.wait_for("worker 1 (pid ");
    let (_, pid) = parse_worker_line(&starting);
    cluster
        .stderr
        .wait_for(&format!("worker 1 (pid {pid}) was killed by SIGSEGV"));
}

/// A keeper that cannot act (stopped here) does not keep a worker past the kill timeout: the
/// primary kills the keeper, and the kernel its worker (`PR_SET_PDEATHSIG`).
#[test]
fn a_stopped_keeper_does_not_hold_up_the_kill_timeout() {
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
    let worker = cluster.ready_pids(1)[0];
    let keepers = children_of(cluster.pid());
    assert_eq!(keepers.len(), 1, "one keeper: {keepers:?}");
    let keeper = *keepers.first().unwrap();
    assert_eq!(
        children_of(keeper),
        BTreeSet::from([worker]),
        "the keeper's child is the worker"
    );
    kill(Pid::from_raw(keeper as i32), Signal::SIGSTOP).unwrap();
    cluster.signal(Signal::SIGTERM);
    assert_eq!(cluster.wait_exit().code(), Some(0), "{}", cluster.log());
    wait_all_gone(&[keeper, worker]);
    assert!(
        cluster
            .log()
            .contains(&format!("worker 1 (pid {worker}) was killed by SIGKILL")),
        "{}",
        cluster.log()
    );
}
