//! Zero-downtime reloads and scaling under load; failed reloads keep the old workers (issue 3).

use std::collections::BTreeSet;

use nix::sys::signal::Signal;

use crate::support::*;

fn ready_pids(status: &serde_json::Value) -> BTreeSet<u64> {
    status["slots"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|row| row["state"] == "ready")
        .map(|row| row["pid"].as_u64().unwrap())
        .collect()
}

/// Five reloads while a client loop runs: not one request fails, and every slot ends five
/// generations on, in a new process.
fn five_reloads_under_load_fail_no_request(keep_alive: bool) {
    let cluster = cluster()
        .args(&["-w", "2", "--name", "web", "--ready", "notify"])
        .env("TESTSERVER_NOTIFY", "1")
        .start();
    cluster.wait_ready(2);
    let before = ready_pids(&status_json(&cluster, "web"));
    let load = load_loop(cluster.address(), keep_alive);
    for reload in 1..=5 {
        let output = cluster.herdsman(&["reload", "web"]);
        assert_eq!(output.code, Some(0), "reload {reload}: {output:?}");
        assert!(
            output.stdout.ends_with(&format!(
                "reload complete: 2 workers on generation {}",
                reload + 1
            )) || output.stdout.contains(&format!(
                "reload complete: 2 workers on generation {} in",
                reload + 1
            )),
            "{}",
            output.stdout
        );
    }
    let report = load.finish(2000);
    assert_eq!(
        report.failures,
        Vec::<String>::new(),
        "{} ok, {} retried; log:\n{}",
        report.ok,
        report.retries,
        cluster.log()
    );
    assert!(report.ok >= 2000);
    let status = status_json(&cluster, "web");
    assert_eq!(status["generation"], 6);
    assert_eq!(status["reloads"], 5);
    let rows = status["slots"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{status}");
    for (index, row) in rows.iter().enumerate() {
        assert_eq!(row["slot"], index + 1);
        assert_eq!(row["generation"], 6);
        assert_eq!(row["state"], "ready");
        assert!(
            !before.contains(&row["pid"].as_u64().unwrap()),
            "slot {} has a new pid",
            index + 1
        );
    }
}

#[test]
fn five_reloads_with_keep_alive_fail_no_request() {
    five_reloads_under_load_fail_no_request(true);
}

#[test]
fn five_reloads_with_a_connection_per_request_fail_no_request() {
    five_reloads_under_load_fail_no_request(false);
}

/// Starts a cluster from `toml` (plus flags), named `app`.
fn from_file(dir: &RuntimeDir, toml: &str, args: &[&str]) -> (Cluster, std::path::PathBuf) {
    let path = write_file(dir, "herdsman.toml", toml);
    let path_text = path.display().to_string();
    let mut all = vec!["--config", path_text.as_str(), "--name", "app"];
    all.extend_from_slice(args);
    let cluster = cluster().runtime_dir(dir).command(&[]).args(&all).start();
    (cluster, path)
}

fn server_toml(extra: &str) -> String {
    format!(
        "command = [{:?}]\nworkers = 2\n{extra}",
        testserver_bin().display().to_string()
    )
}

#[test]
fn reload_whose_new_worker_crashes_is_aborted_and_the_old_workers_keep_serving() {
    let dir = RuntimeDir::new();
    let (cluster, path) = from_file(&dir, &server_toml(""), &["--ready-delay", "200ms"]);
    cluster.wait_ready(2);
    let before = ready_pids(&status_json(&cluster, "app"));
    std::fs::write(&path, server_toml("[env]\nTESTSERVER_CRASH_SLOT = \"1\"\n")).unwrap();
    let output = cluster.herdsman(&["reload", "app"]);
    assert_eq!(output.code, Some(1), "{output:?}");
    assert!(
        output
            .stdout
            .contains("\n  [env] TESTSERVER_CRASH_SLOT added\n"),
        "{output:?}"
    );
    assert!(
        output.stderr.starts_with(
            "herdsman: error: reload aborted: the new worker for slot 1 failed: worker 1 (pid "
        ),
        "{output:?}"
    );
    assert!(
        output.stderr.contains(") exited with code 1 after "),
        "{output:?}"
    );
    assert!(
        output
            .stderr
            .contains("  | testserver: worker 1 crashing on purpose"),
        "{output:?}"
    );
    assert!(
        output
            .stderr
            .contains("the 2 workers not replaced keep serving their generation"),
        "{output:?}"
    );
    let status = status_json(&cluster, "app");
    assert_eq!(ready_pids(&status), before, "the old workers are unchanged");
    assert_eq!(status["generation"], 1);
    assert_eq!(status["reloads"], 0);
    for _ in 0..50 {
        let response = cluster.get("/").unwrap();
        assert!(before.contains(&(response.pid() as u64)));
    }
}

#[test]
fn reload_whose_new_worker_never_notifies_is_aborted() {
    let dir = RuntimeDir::new();
    let toml = server_toml("[env]\nTESTSERVER_NOTIFY = \"1\"\n");
    let (cluster, path) = from_file(&dir, &toml, &["--ready", "notify", "--ready-timeout", "1s"]);
    cluster.wait_ready(2);
    let before = ready_pids(&status_json(&cluster, "app"));
    std::fs::write(&path, server_toml("[env]\nTESTSERVER_NOTIFY = \"0\"\n")).unwrap();
    let output = cluster.herdsman(&["reload", "app"]);
    assert_eq!(output.code, Some(1), "{output:?}");
    assert!(
        output
            .stderr
            .contains("the new worker for slot 1 failed: worker 1 (pid ")
            && output
                .stderr
                .contains(") was not ready in time and was stopped"),
        "{output:?}"
    );
    let status = status_json(&cluster, "app");
    assert_eq!(ready_pids(&status), before);
    assert_eq!(
        status["slots"].as_array().unwrap().len(),
        2,
        "the stopped replacement is gone: {status}"
    );
    assert_eq!(cluster.get("/").unwrap().status, 200);
}

#[test]
fn reload_rereads_herdsman_toml_and_says_what_changed() {
    let dir = RuntimeDir::new();
    let (cluster, path) = from_file(
        &dir,
        &server_toml(
            "ready-delay = \"100ms\"\n[env]\nAPP_VERSION = \"first-secret\"\nOLD = \"x\"\n",
        ),
        &[],
    );
    cluster.wait_ready(2);
    assert_eq!(
        cluster.get("/env").unwrap().field("APP_VERSION"),
        "first-secret"
    );
    let changed = format!(
        "command = [{:?}]\nworkers = 3\nbalance = \"shared\"\nready-delay = \"150ms\"\n\
         [env]\nAPP_VERSION = \"second-secret\"\nNEW = \"y\"\n",
        testserver_bin().display().to_string()
    );
    std::fs::write(&path, changed).unwrap();
    let output = cluster.herdsman(&["reload", "app"]);
    assert_eq!(output.code, Some(0), "{output:?}");
    let stdout = &output.stdout;
    assert!(
        stdout.starts_with("reloading 2 workers, 1 at a time, to generation 2\n"),
        "{stdout}"
    );
    // Named as in the file; `[env]` by variable names only, never their values (issue 11).
    assert!(
        stdout.contains("\n  [env] APP_VERSION changed\n  [env] NEW added\n  [env] OLD removed\n"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("secret") && !stdout.contains("[(\""),
        "{stdout}"
    );
    assert!(
        stdout.contains("\n  ready-delay: 100ms → 150ms\n"),
        "{stdout}"
    );
    assert!(stdout.contains("\n  workers: 2 → 3\n"), "{stdout}");
    assert!(
        stdout
            .contains("\n  balance changed, but takes effect only when herdsman itself restarts\n"),
        "{stdout}"
    );
    cluster.stderr.wait_for("scaled 2 → 3: started slot 3");
    cluster.wait_ready(2 + 2 + 1);
    for _ in 0..200 {
        let env = cluster.get("/env").unwrap();
        assert_eq!(
            env.field("APP_VERSION"),
            "second-secret",
            "every worker runs the new environment"
        );
    }
    let status = status_json(&cluster, "app");
    assert_eq!(status["workers"], 3);
    assert_eq!(status["balance"], "reuseport");
}

#[test]
fn reload_asked_for_during_a_reload_waits_for_it() {
    let cluster = cluster()
        .args(&["-w", "2", "--name", "q", "--ready-delay", "500ms"])
        .start();
    cluster.wait_ready(2);
    let runtime_dir = cluster.runtime_dir.clone();
    let first = std::thread::spawn(move || runtime_dir.herdsman(&["reload", "q"]));
    cluster
        .stderr
        .wait_for("reloading 2 workers, 1 at a time, to generation 2");
    let second = cluster.herdsman(&["reload", "q"]);
    let first = first.join().unwrap();
    assert_eq!(first.code, Some(0), "{first:?}");
    assert_eq!(second.code, Some(0), "{second:?}");
    assert!(
        second
            .stdout
            .starts_with("a reload is in progress; this one starts when it ends\n"),
        "{second:?}"
    );
    assert!(
        second
            .stdout
            .contains("reload complete: 2 workers on generation 3"),
        "{second:?}"
    );
    assert_eq!(status_json(&cluster, "q")["generation"], 3);
}

#[test]
fn sighup_reloads_and_sigttin_sigttou_scale() {
    let cluster = cluster()
        .args(&["-w", "2", "--name", "sig", "--ready-delay", "100ms"])
        .start();
    cluster.wait_ready(2);
    cluster.signal(Signal::SIGHUP);
    cluster
        .stderr
        .wait_for("reload complete: 2 workers on generation 2");
    cluster.signal(Signal::SIGTTIN);
    cluster.stderr.wait_for("scaled 2 → 3: started slot 3");
    cluster.signal(Signal::SIGTTOU);
    cluster.stderr.wait_for("scaled 3 → 2: draining slot 3");
    cluster.stderr.wait_for("worker 3 (pid ");
    let status = status_json(&cluster, "sig");
    assert_eq!(status["workers"], 2);
    assert_eq!(status["generation"], 2);
}

/// Scale 2 → 4 → 1 while a client loop runs: no request fails, status shows the right slots.
fn scaling_under_load_fails_no_request(balance: &str) {
    let cluster = cluster()
        .args(&[
            "-w",
            "2",
            "--name",
            "s",
            "--balance",
            balance,
            "--ready",
            "notify",
        ])
        .env("TESTSERVER_NOTIFY", "1")
        .start();
    cluster.wait_ready(2);
    let load = load_loop(cluster.address(), false);
    let up = cluster.herdsman(&["scale", "s", "4"]);
    assert_eq!(up.code, Some(0), "{up:?}");
    assert_eq!(
        up.stdout,
        "scaled 2 → 4: started slots 3 and 4\n4 workers ready\n"
    );
    let status = status_json(&cluster, "s");
    let slots = column(&status, "slot");
    assert_eq!(slots, [1, 2, 3, 4]);
    let down = cluster.herdsman(&["scale", "s", "-3"]);
    assert_eq!(down.code, Some(0), "{down:?}");
    assert_eq!(
        down.stdout,
        "scaled 4 → 1: draining slots 2 to 4\n1 worker ready\n"
    );
    let report = load.finish(2000);
    assert_eq!(report.failures, Vec::<String>::new(), "{} ok", report.ok);
    let status = status_json(&cluster, "s");
    let rows = status["slots"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{status}");
    assert_eq!(
        (rows[0]["slot"].as_u64(), rows[0]["state"].as_str()),
        (Some(1), Some("ready"))
    );
    assert_eq!(status["workers"], 1);
    for _ in 0..20 {
        assert_eq!(
            cluster.get("/").unwrap().pid() as u64,
            rows[0]["pid"].as_u64().unwrap()
        );
    }
}

#[test]
fn reuseport_scaling_under_load_fails_no_request() {
    scaling_under_load_fails_no_request("reuseport");
}

/// With one shared queue a worker cannot be steered away from before it stops, so `shared`
/// promises the slots, not zero failures, on a scale-down (see docs/operations.md).
#[test]
fn shared_scaling_starts_and_retires_slots() {
    let cluster = cluster()
        .args(&[
            "-w",
            "2",
            "--name",
            "s",
            "--balance",
            "shared",
            "--ready-delay",
            "100ms",
        ])
        .start();
    cluster.wait_ready(2);
    let up = cluster.herdsman(&["scale", "s", "+2"]);
    assert_eq!(
        up.stdout, "scaled 2 → 4: started slots 3 and 4\n4 workers ready\n",
        "{up:?}"
    );
    let down = cluster.herdsman(&["scale", "s", "1"]);
    assert_eq!(
        down.stdout, "scaled 4 → 1: draining slots 2 to 4\n1 worker ready\n",
        "{down:?}"
    );
    let status = status_json(&cluster, "s");
    let rows = status["slots"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{status}");
    assert_eq!(rows[0]["slot"], 1);
    assert_eq!(cluster.get("/").unwrap().status, 200);
}

#[test]
fn restart_replaces_one_slot_new_before_old() {
    let cluster = cluster()
        .args(&["-w", "2", "--name", "r", "--ready-delay", "100ms"])
        .start();
    let ready = cluster.wait_ready(2);
    let old_one = ready.iter().find(|(slot, _)| *slot == 1).unwrap().1;
    let two = ready.iter().find(|(slot, _)| *slot == 2).unwrap().1;
    let output = cluster.herdsman(&["restart", "r", "1"]);
    assert_eq!(output.code, Some(0), "{output:?}");
    assert!(
        output
            .stdout
            .starts_with("restarting slot 1\nslot 1: starting pid "),
        "{output:?}"
    );
    assert!(
        output
            .stdout
            .contains(&format!("to replace pid {old_one}\n")),
        "{output:?}"
    );
    let status = status_json(&cluster, "r");
    let pids = column(&status, "pid");
    assert_ne!(pids[0], old_one as u64);
    assert_eq!(pids[1], two as u64, "slot 2 untouched");
    assert_eq!(status["generation"], 1, "a restart is not a reload");
    let refused = cluster.herdsman(&["restart", "r", "7"]);
    assert_eq!(refused.code, Some(2), "a usage error, as `logs --slot 7`");
    assert_eq!(
        refused.stderr,
        "herdsman: error: cluster `r` has no slot 7; slots are 1 to 2\n"
    );
}

/// The old worker dies while its replacement is starting: the reload still completes, with the
/// replacement serving the slot (it used to wait forever for the old worker's exit).
#[test]
fn old_worker_crashing_during_its_replacement_does_not_stall_the_reload() {
    let cluster = cluster()
        .args(&["-w", "1", "--name", "oc", "--ready-delay", "1s"])
        .start();
    let (_, old) = cluster.wait_ready(1)[0];
    let runtime_dir = cluster.runtime_dir.clone();
    let reload = std::thread::spawn(move || runtime_dir.herdsman(&["reload", "oc"]));
    let starting = cluster.stderr.wait_for("starting, generation 2");
    let (_, replacement) = parse_worker_line(&starting);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(old as i32), Signal::SIGKILL).unwrap();
    let reload = reload.join().unwrap();
    assert_eq!(reload.code, Some(0), "{reload:?}");
    let status = status_json(&cluster, "oc");
    assert_eq!(column(&status, "pid"), [replacement as u64]);
    assert_eq!(column(&status, "generation"), [2]);
    assert_eq!(cluster.get("/").unwrap().pid(), replacement);
}
