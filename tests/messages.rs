//! What herdsman says when asked for something it cannot do, or while it waits (issue 11 §4):
//! once, in the words of the README, with a documented exit code.

use nix::sys::signal::Signal;

use crate::support::*;

#[test]
fn a_scale_by_signal_is_logged_once() {
    let cluster = cluster()
        .args(&["-w", "2", "--name", "sig", "--ready-delay", "100ms"])
        .start();
    cluster.wait_ready(2);
    cluster.signal(Signal::SIGTTIN);
    cluster.wait_ready(3);
    cluster.signal(Signal::SIGTTOU);
    cluster.stderr.wait_for("scaled 3 → 2: draining slot 3");
    // Logged once each; the exit of slot 3's worker comes after both.
    cluster.stderr.wait_for_count(1, |line| {
        line.contains("worker 3 (pid ") && line.contains("exit")
    });
    let count = |text: &str| cluster.stderr.count(|line| line.contains(text));
    assert_eq!(
        (count("scaled 2 → 3"), count("scaled 3 → 2")),
        (1, 1),
        "{}",
        cluster.log()
    );
}

#[test]
fn scaling_below_one_worker_is_refused_alike_however_it_is_asked() {
    let cluster = cluster()
        .args(&["-w", "2", "--name", "few", "--ready-delay", "100ms"])
        .start();
    cluster.wait_ready(2);
    let minus = cluster.herdsman(&["scale", "few", "-5"]);
    assert_eq!(
        (minus.code, minus.stderr.as_str()),
        (
            Some(2),
            "herdsman: error: `scale -5` would leave no worker (the cluster has 2); a cluster \
             needs at least 1: `scale -1` leaves 1, `herdsman stop` stops it\n"
        ),
        "{minus:?}"
    );
    let zero = cluster.herdsman(&["scale", "few", "0"]);
    assert_eq!(
        (zero.code, zero.stderr.as_str()),
        (
            Some(2),
            "herdsman: error: a cluster needs at least 1 worker; use `herdsman stop` to stop it\n"
        )
    );
    // Past the most a cluster may have: the same usage error.
    let many = cluster.herdsman(&["scale", "few", "1000000"]);
    assert_eq!(
        (many.code, many.stderr.as_str()),
        (
            Some(2),
            "herdsman: error: at most 1024 workers are supported\n"
        )
    );
    assert_eq!(
        status_json(&cluster, "few")["workers"],
        2,
        "nothing changed"
    );
    // SIGTTOU at one worker: refused and said, the worker keeps serving.
    let down = cluster.herdsman(&["scale", "few", "-1"]);
    assert_eq!(down.code, Some(0), "{down:?}");
    cluster.signal(Signal::SIGTTOU);
    cluster
        .stderr
        .wait_for("`scale -1` would leave no worker (the cluster has 1); a cluster needs at least 1: use `herdsman stop` to stop it");
    assert_eq!(status_json(&cluster, "few")["workers"], 1);
}

#[test]
fn logs_of_a_slot_the_cluster_does_not_have_is_an_error_naming_the_slots() {
    let cluster = cluster()
        .args(&["-w", "2", "--name", "l", "--ready-delay", "100ms"])
        .start();
    cluster.wait_ready(2);
    let output = cluster.herdsman(&["logs", "l", "--slot", "9"]);
    assert_eq!(
        (output.code, output.stdout.as_str(), output.stderr.as_str()),
        (
            Some(2),
            "",
            "herdsman: error: cluster `l` has no slot 9; slots are 1 to 2\n"
        )
    );
    let output = cluster.herdsman(&["logs", "l", "--slot", "2"]);
    assert_eq!(output.code, Some(0), "{output:?}");
}

#[test]
fn a_command_without_a_name_among_several_clusters_is_a_usage_error() {
    let dir = RuntimeDir::new();
    let _one = cluster()
        .runtime_dir(&dir)
        .args(&["-w", "1", "--name", "one"])
        .start();
    let _two = cluster()
        .runtime_dir(&dir)
        .args(&["-w", "1", "--name", "two"])
        .start();
    let output = dir.herdsman(&["status"]);
    assert_eq!(
        (output.code, output.stderr.as_str()),
        (
            Some(2),
            "herdsman: error: 2 clusters are running (one, two); name the one you mean\n"
        )
    );
}

#[test]
fn ready_notify_says_what_it_waits_for_and_names_a_silent_worker() {
    let cluster = cluster()
        .args(&["-w", "1", "--ready", "notify", "--ready-timeout", "20s"])
        .start();
    cluster.stderr.wait_for(
        "herdsman: --ready notify: a worker is ready once it sends READY=1 on $NOTIFY_SOCKET; \
         waiting up to 20s for each",
    );
    let line = cluster
        .stderr
        .wait_for("has not sent READY=1 on $NOTIFY_SOCKET after 3s; it is stopped at 20s");
    assert!(line.starts_with("herdsman: worker 1 (pid "), "{line}");
    cluster
        .stderr
        .wait_for("hint: with --ready notify only the worker's own signal counts");
}

#[test]
fn herdsman_toml_errors_suggest_the_key_and_blame_the_right_line() {
    let dir = RuntimeDir::new();
    let run = |toml: &str| {
        let path = write_file(&dir, "herdsman.toml", toml);
        let mut cluster = cluster()
            .runtime_dir(&dir)
            .command(&[])
            .args(&["--config", path.to_str().unwrap()])
            .no_wait()
            .start();
        let code = cluster.wait_exit().code();
        (code, cluster.log(), path.display().to_string())
    };
    let (code, log, path) = run("port = 8000\nwrkers = 2\n");
    assert_eq!(
        (code, log),
        (
            Some(2),
            format!(
                "herdsman: error: {path}: line 2, `wrkers`: unknown key; did you mean `workers`?"
            )
        )
    );
    let (code, log, path) = run("command = [\"node\", \"server.js\"\nworkers = 2\n");
    assert_eq!(
        (code, log),
        (
            Some(2),
            format!(
                "herdsman: error: {path}: line 1, `command`: missing comma between array \
                 elements, expected `,` (the `[` here is not closed before line 2)"
            )
        )
    );
}

/// `herdsman run node app.js`: the server command without its `--` is a usage error that says
/// where the command goes.
#[test]
fn a_server_command_without_its_double_dash_gets_a_tip() {
    let dir = RuntimeDir::new();
    let output = dir.herdsman(&["run", "--workers", "2", "node", "app.js"]);
    assert_eq!(output.code, Some(2), "{output:?}");
    assert!(
        output.stderr.starts_with(
            "error: unexpected argument 'node' found\n\n  tip: the server command goes after \
             `--`: herdsman run [OPTIONS] -- node …\n"
        ),
        "{output:?}"
    );
}
