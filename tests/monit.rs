//! `herdsman monit` in a real terminal: tmux runs it, the test types keys (send-keys) and reads
//! the screen (capture-pane) (issue 16).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::*;

/// A tmux server of the test's own (its socket in the test's runtime directory), killed with
/// everything in it when the test ends, passed or not.
struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    /// One session, 120x40, running `sh` with the cluster's runtime directory.
    fn start(runtime_dir: &Path) -> Tmux {
        let tmux = Tmux {
            socket: runtime_dir.join("tmux.sock"),
        };
        let environment = format!("XDG_RUNTIME_DIR={}", runtime_dir.display());
        let output = tmux.run(&[
            "new-session",
            "-d",
            "-x",
            "120",
            "-y",
            "40",
            "-s",
            "monit",
            "env",
            &environment,
            "NO_COLOR=1",
            "PS1=shell$ ",
            "sh",
        ]);
        assert!(output.status.success(), "tmux new-session: {output:?}");
        tmux
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-f")
            .arg("/dev/null")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run tmux (scripts/test.sh installs it)")
    }

    /// Types `keys` (tmux key names: `Enter`, `q`) into the pane.
    fn send_keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "monit"];
        args.extend_from_slice(keys);
        let output = self.run(&args);
        assert!(output.status.success(), "tmux send-keys: {output:?}");
    }

    /// What the pane shows now.
    fn screen(&self) -> String {
        let output = self.run(&["capture-pane", "-p", "-t", "monit"]);
        assert!(output.status.success(), "tmux capture-pane: {output:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Waits until the pane shows what `check` looks for; fails with the last screen.
    fn wait_for(&self, what: &str, check: impl Fn(&str) -> bool) -> String {
        let mut last = String::new();
        let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            eventually(what, || {
                last = self.screen();
                check(&last).then(|| last.clone())
            })
        }));
        found.unwrap_or_else(|_| panic!("{what}: not within {DEADLINE:?}; the pane:\n{last}"))
    }
}

impl Tmux {
    /// The pids of the pane shell's children (the command it runs in the foreground).
    fn pane_children(&self) -> Vec<u32> {
        let output = self.run(&["list-panes", "-t", "monit", "-F", "#{pane_pid}"]);
        let shell = String::from_utf8_lossy(&output.stdout).trim().to_string();
        std::fs::read_to_string(format!("/proc/{shell}/task/{shell}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .map(|pid| pid.parse().unwrap())
            .collect()
    }
}

/// Runs `herdsman monit ARGS` in a new tmux session over `cluster`'s runtime directory, its
/// exit code echoed after it as `monit-exit=N`.
fn monit_in_tmux(cluster: &Cluster, args: &str) -> Tmux {
    let tmux = Tmux::start(cluster.runtime_dir.path());
    // Keys typed before the shell's first prompt would be echoed ahead of it.
    tmux.wait_for("the shell's prompt", |screen| {
        screen.lines().next() == Some("shell$")
    });
    let command = format!(
        "{} monit{args}; echo \"monit-exit=$?\"",
        herdsman_bin().display()
    );
    tmux.send_keys(&[&command, "Enter"]);
    tmux
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

/// The cells of the worker table's row of `pid` (SLOT PID GEN STATE …, without the selection
/// mark), if the pane has one.
fn table_row(screen: &str, pid: u64) -> Option<Vec<String>> {
    screen.lines().find_map(|line| {
        let cells: Vec<String> = line
            .trim_matches('│')
            .split_whitespace()
            .skip_while(|cell| *cell == ">")
            .map(String::from)
            .collect();
        (cells.len() > 3 && cells[1] == pid.to_string()).then_some(cells)
    })
}

#[test]
fn monit_in_tmux_shows_the_workers_reloads_on_r_and_quits_on_q() {
    let cluster = cluster()
        .args(&["-w", "2", "--ready-delay", "100ms", "--name", "web"])
        .start();
    cluster.wait_ready(2);
    let before = status_json(&cluster, "web");
    let old_pids = column(&before, "pid");
    assert_eq!(old_pids.len(), 2, "{before}");
    let generation = before["generation"].as_u64().unwrap();

    let tmux = monit_in_tmux(&cluster, " web");
    let screen = tmux.wait_for("both workers in monit's table", |screen| {
        old_pids.iter().all(|&pid| table_row(screen, pid).is_some())
    });
    assert!(screen.contains("SLOT PID     GEN STATE"), "{screen}");
    for &pid in &old_pids {
        let row = table_row(&screen, pid).unwrap();
        assert_eq!(
            row[2..4],
            [generation.to_string(), "ready".into()],
            "{screen}"
        );
        // reuseport: the kernel hands the connections over, the primary does not count them.
        assert_eq!(conns_cell(&screen, pid), None, "{screen}");
    }

    tmux.send_keys(&["r"]);
    let after = eventually("a completed reload in status", || {
        let status = status_json(&cluster, "web");
        let pids = column(&status, "pid");
        let done = status["reloads"] == 1
            && column(&status, "generation") == [generation + 1, generation + 1]
            && pids.len() == 2
            && pids.iter().all(|pid| !old_pids.contains(pid))
            && status["slots"]
                .as_array()
                .unwrap()
                .iter()
                .all(|row| row["state"] == "ready");
        done.then_some(status)
    });
    let new_pids = column(&after, "pid");
    let screen = tmux.wait_for("the new pids and the reload's result in monit", |screen| {
        new_pids.iter().all(|&pid| table_row(screen, pid).is_some())
            && old_pids.iter().all(|&pid| table_row(screen, pid).is_none())
            && screen.contains("last action: reload: done")
    });
    for &pid in &new_pids {
        let row = table_row(&screen, pid).unwrap();
        assert_eq!(row[2], (generation + 1).to_string(), "{screen}");
    }

    tmux.send_keys(&["q"]);
    tmux.wait_for("monit exiting 0", |screen| {
        screen.lines().any(|line| line == "monit-exit=0")
    });
    // The shell has the terminal again: it runs what is typed.
    tmux.send_keys(&["echo typed-after-$((6 * 7))", "Enter"]);
    tmux.wait_for("the shell answering", |screen| {
        screen.lines().any(|line| line == "typed-after-42")
    });
    // monit only watched: the cluster still runs its two new workers.
    assert_eq!(column(&status_json(&cluster, "web"), "pid"), new_pids);
}

#[test]
fn monit_scales_on_plus_and_minus_restarts_the_selected_slot_on_k_and_ends_on_sigterm() {
    let cluster = cluster()
        .args(&["-w", "1", "--ready-delay", "100ms", "--name", "web"])
        .start();
    let first = cluster.ready_pids(1)[0] as u64;
    let tmux = monit_in_tmux(&cluster, " web");
    tmux.wait_for("the worker in monit's table", |screen| {
        table_row(screen, first).is_some()
    });

    tmux.send_keys(&["+"]);
    let second = eventually("a second worker ready", || {
        let status = status_json(&cluster, "web");
        let rows = status["slots"].as_array().unwrap();
        (status["workers"] == 2
            && rows.len() == 2
            && rows.iter().all(|row| row["state"] == "ready"))
        .then(|| rows[1]["pid"].as_u64().unwrap())
    });
    tmux.wait_for("slot 2 and the scale's result in monit", |screen| {
        table_row(screen, second).is_some_and(|row| row[0] == "2")
            && screen.contains("last action: scale +1: done")
    });

    // Down to slot 2, then restart it: a new pid in slot 2, slot 1 untouched.
    tmux.send_keys(&["j"]);
    tmux.wait_for("slot 2 selected", |screen| {
        screen.lines().any(|line| line.starts_with("│> 2 "))
    });
    tmux.send_keys(&["k"]);
    let replacement = eventually("slot 2 restarted", || {
        let status = status_json(&cluster, "web");
        let pids = column(&status, "pid");
        (pids.len() == 2 && pids[0] == first && pids[1] != second)
            .then_some(pids[1])
            .filter(|_| status["slots"][1]["state"] == "ready")
    });
    tmux.wait_for("the restart's result in monit", |screen| {
        table_row(screen, replacement).is_some()
            && screen.contains("last action: restart slot 2: done")
    });

    tmux.send_keys(&["-"]);
    eventually("back to one worker", || {
        let status = status_json(&cluster, "web");
        (status["workers"] == 1 && column(&status, "pid") == [first]).then_some(())
    });
    tmux.wait_for("the scale down's result in monit", |screen| {
        table_row(screen, replacement).is_none() && screen.contains("last action: scale -1: done")
    });

    // SIGTERM ends monit (128 + 15) and gives the terminal back to the shell.
    let monit = tmux.pane_children();
    assert_eq!(monit.len(), 1, "{monit:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(monit[0] as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let screen = tmux.wait_for("monit exiting 143", |screen| {
        screen.lines().any(|line| line == "monit-exit=143")
    });
    assert!(!screen.contains("SLOT PID"), "{screen}");
}

#[test]
fn monit_exits_5_with_a_message_when_the_cluster_goes_away() {
    let cluster = cluster()
        .args(&["-w", "1", "--ready-delay", "100ms", "--name", "web"])
        .start();
    let pid = cluster.ready_pids(1)[0] as u64;
    // No NAME: the only cluster running.
    let tmux = monit_in_tmux(&cluster, "");
    tmux.wait_for("the worker in monit's table", |screen| {
        table_row(screen, pid).is_some()
    });
    let output = cluster.herdsman(&["stop", "web"]);
    assert_eq!(output.code, Some(0), "{output:?}");
    let screen = tmux.wait_for("monit exiting 5", |screen| {
        screen.lines().any(|line| line == "monit-exit=5")
    });
    // The terminal is the shell's again (monit's screen is gone), with monit's reason on it.
    let text = screen.replace('\n', "");
    assert!(
        text.contains(
            "herdsman: error: cluster `web` went away (it is no longer running: it was stopped, \
             or its primary exited); monit stopped"
        ),
        "{screen}"
    );
    assert!(!screen.contains("SLOT PID"), "{screen}");
}

#[test]
fn monit_refuses_to_run_without_a_terminal() {
    let cluster = cluster()
        .args(&["-w", "1", "--ready-delay", "100ms", "--name", "web"])
        .start();
    cluster.wait_ready(1);
    let output = cluster.herdsman(&["monit", "web"]);
    assert_eq!(output.code, Some(2), "{output:?}");
    assert_eq!(
        output.stderr,
        "herdsman: error: herdsman monit needs a terminal (its stdin and stdout are not one); \
         in a script use `herdsman status web --json` or `herdsman logs web -f`\n"
    );
    let output = cluster.herdsman(&["monit", "nosuch"]);
    assert_eq!(output.code, Some(5), "{output:?}");
    assert_eq!(
        output.stderr,
        "herdsman: error: no cluster named `nosuch` is running for this user (see `herdsman ls`)\n"
    );
}

/// The `CONNS` cell of `pid`'s row, read under the header's `CONNS` (the cells before it hold
/// spaces, as `1m 1s` does).
fn conns_cell(screen: &str, pid: u64) -> Option<String> {
    let lines: Vec<Vec<char>> = screen.lines().map(|line| line.chars().collect()).collect();
    let header = lines.iter().find(|line| {
        let text: String = line.iter().collect();
        text.contains("CONNS")
    })?;
    let text: String = header.iter().collect();
    let column = text
        .find("CONNS")
        .map(|byte| text[..byte].chars().count())?;
    let row = lines.iter().find(|line| {
        let text: String = line.iter().collect();
        table_row(&text, pid).is_some()
    })?;
    let cell: String = row.get(column..column + 5)?.iter().collect();
    Some(cell.trim().to_string())
}

#[test]
fn monit_counts_the_connections_open_to_each_worker_where_the_primary_holds_them() {
    let cluster = cluster()
        .args(&["-w", "1", "--ready-delay", "100ms", "--name", "conns"])
        .args(&["--balance", "proxy"])
        .start();
    let pid = u64::from(cluster.ready_pids(1)[0]);
    // Two keep-alive connections, each answered once and left open.
    let mut held: Vec<KeepAliveClient> = (0..2)
        .map(|_| KeepAliveClient::new(cluster.address()))
        .collect();
    for client in &mut held {
        assert_eq!(client.get("/").unwrap().status, 200);
    }
    let tmux = monit_in_tmux(&cluster, " conns");
    tmux.wait_for("2 open connections in the worker's row", |screen| {
        conns_cell(screen, pid).as_deref() == Some("2")
    });
    drop(held);
    tmux.wait_for("0 once the clients closed them", |screen| {
        conns_cell(screen, pid).as_deref() == Some("0")
    });
    tmux.send_keys(&["q"]);
    tmux.wait_for("monit's exit code", |screen| {
        screen.contains("monit-exit=0")
    });
}
