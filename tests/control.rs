//! The control socket and the commands on it: status, logs, ls, stop, names, permissions, and
//! herdsman.toml errors (issue 3).

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::support::*;

/// Exit code of a usage or configuration error.
const EXIT_USAGE: i32 = 2;
/// Exit code when the address or the name is taken.
const EXIT_BIND: i32 = 3;
/// Exit code when no such cluster runs.
const EXIT_NOT_RUNNING: i32 = 5;

#[test]
fn status_json_has_exact_fields() {
    let cluster = cluster()
        .args(&["-w", "2", "--name", "st", "--ready-delay", "100ms"])
        .start();
    let ready = cluster.wait_ready(2);
    let status = status_json(&cluster, "st");
    assert_eq!(status["name"], "st");
    assert_eq!(status["pid"], cluster.pid());
    assert_eq!(status["address"], cluster.address().to_string());
    assert_eq!(status["balance"], "reuseport");
    assert_eq!(status["state"], "running");
    assert_eq!(status["workers"], 2);
    assert_eq!(status["generation"], 1);
    assert_eq!(status["reloads"], 0);
    assert_eq!(
        status["command"],
        serde_json::json!([testserver_bin().display().to_string()])
    );
    assert!(status["uptime_ms"].as_u64().unwrap() < 60_000);
    let rows = status["slots"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for (row, slot) in rows.iter().zip(1..) {
        let pid = ready
            .iter()
            .find(|(ready_slot, _)| *ready_slot == slot)
            .unwrap()
            .1;
        assert_eq!(row["slot"], slot);
        assert_eq!(row["pid"], pid);
        assert_eq!(row["generation"], 1);
        assert_eq!(row["state"], "ready");
        assert_eq!(row["restarts"], 0);
        assert_eq!(row["last_exit"], serde_json::Value::Null);
        assert!(row["cpu_percent"].as_f64().unwrap() >= 0.0);
        assert!(row["rss_bytes"].as_u64().unwrap() > 100_000, "{row}");
        assert!(row["uptime_ms"].as_u64().is_some());
    }
    let victim = rows[1]["pid"].as_u64().unwrap() as i32;
    kill(Pid::from_raw(victim), Signal::SIGKILL).unwrap();
    cluster.wait_ready(3);
    let status = status_json(&cluster, "st");
    let row = &status["slots"][1];
    assert_eq!(row["restarts"], 1);
    assert_eq!(row["last_exit"]["pid"], victim);
    assert_eq!(row["last_exit"]["reason"], "was killed by SIGKILL");
    assert_eq!(row["last_exit"]["signal"], "SIGKILL");
    assert_eq!(row["last_exit"]["code"], serde_json::Value::Null);
    assert!(row["last_exit"]["at"].as_str().unwrap().ends_with('Z'));

    let table = cluster.herdsman(&["status"]);
    assert_eq!(table.code, Some(0), "{table:?}");
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert!(lines[0].starts_with(&format!(
        "st  pid {}  {}  balance reuseport  running",
        cluster.pid(),
        cluster.address()
    )));
    assert!(
        lines[1].starts_with("SLOT      PID  GEN  STATE"),
        "{}",
        table.stdout
    );
    assert_eq!(lines.len(), 5, "{}", table.stdout);
    assert!(lines[4].starts_with("state: unix://"), "{}", table.stdout);
    assert!(
        lines[4].ends_with("  0 keys  0.0 MB  0 clients"),
        "{}",
        table.stdout
    );
}

#[test]
fn logs_come_from_the_slot_asked_for() {
    let cluster = cluster()
        .args(&["-w", "2", "--name", "lg", "--ready-delay", "100ms"])
        .start();
    let ready = cluster.wait_ready(2);
    let pid_of = |slot| {
        ready
            .iter()
            .find(|(ready_slot, _)| *ready_slot == slot)
            .unwrap()
            .1
    };
    for _ in 0..2000 {
        let pid = cluster.get("/log?lines=2").unwrap().pid();
        let logged = |slot| {
            cluster
                .stdout
                .count(|line| line.contains(&format!("from pid {}", pid_of(slot))))
        };
        if pid > 0 && logged(1) > 0 && logged(2) > 0 {
            break;
        }
    }
    let output = cluster.herdsman(&["logs", "lg", "--slot", "1", "--lines", "500"]);
    assert_eq!(output.code, Some(0), "{output:?}");
    let lines: Vec<&str> = output.stdout.lines().collect();
    assert!(lines
        .iter()
        .any(|line| line.contains(&format!("log line 1 from pid {}", pid_of(1)))));
    for line in &lines {
        assert!(
            line.contains(&format!(" [1:{}] ", pid_of(1))),
            "only slot 1: {line}"
        );
    }
    let json = cluster.herdsman(&["logs", "lg", "--slot", "2", "--lines", "3", "--json"]);
    let records: Vec<serde_json::Value> = json
        .stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(records.len(), 3, "{json:?}");
    for record in &records {
        assert_eq!(record["slot"], 2);
        assert_eq!(record["pid"], pid_of(2));
    }
    let everything = cluster.herdsman(&["logs", "lg", "-n", "1000"]);
    assert!(
        everything
            .stdout
            .contains(" herdsman: all 2 workers ready\n"),
        "{everything:?}"
    );
}

#[test]
fn logs_follow_prints_new_lines() {
    let cluster = cluster()
        .args(&["-w", "1", "--name", "fl", "--ready-delay", "100ms"])
        .start();
    cluster.wait_ready(1);
    let mut follower = Command::new(herdsman_bin())
        .args(["logs", "fl", "-f", "-n", "0"])
        .env("XDG_RUNTIME_DIR", cluster.runtime_dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = Lines::read_from(follower.stdout.take().unwrap());
    // Until the follower is connected, lines logged are not "new"; keep logging until one shows.
    for attempt in 0..200 {
        cluster
            .get(&format!("/log?lines=1&attempt={attempt}"))
            .unwrap();
        if lines.count(|line| line.contains("log line 1 from pid")) > 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let line = lines.wait_for("log line 1 from pid");
    assert!(line.contains(" [1:"), "{line}");
    follower.kill().unwrap();
    follower.wait().unwrap();
}

/// A reader that goes away (`herdsman logs -f | head -1`) ends the command quietly: exit 141,
/// as its pipe ends `cat`, and nothing on stderr (no panic, no backtrace).
#[test]
fn a_command_whose_reader_goes_away_ends_quietly() {
    use std::io::{BufRead, Read};
    let cluster = cluster()
        .args(&["-w", "1", "--name", "piped", "--ready-delay", "100ms"])
        .start();
    cluster.wait_ready(1);
    let mut follower = Command::new(herdsman_bin())
        .args(["logs", "piped", "-f", "-n", "1"])
        .env("XDG_RUNTIME_DIR", cluster.runtime_dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(follower.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert!(!first.is_empty());
    drop(stdout);
    // New lines for it to print: the first write after the reader left fails.
    let status = eventually("the follower's exit", || {
        cluster.get("/log?lines=3").unwrap();
        follower.try_wait().unwrap()
    });
    let mut stderr = String::new();
    follower
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!((status.code(), stderr.as_str()), (Some(141), ""));
}

#[test]
fn stop_command_stops_gracefully_and_waits() {
    let mut cluster = cluster()
        .args(&["-w", "2", "--name", "sp", "--ready-delay", "100ms"])
        .start();
    let pids: Vec<u32> = cluster.ready_pids(2);
    let output = cluster.herdsman(&["stop", "sp"]);
    assert_eq!(output.code, Some(0), "{output:?}");
    assert_eq!(
        output.stdout,
        "stopping; waiting for the workers to finish\nstopped\n"
    );
    // `stop` returned after the primary exited.
    assert!(
        cluster.child.try_wait().unwrap().is_some(),
        "the primary has exited"
    );
    assert_eq!(cluster.wait_exit().code(), Some(0));
    wait_all_gone(&pids);
    let again = cluster.herdsman(&["status", "sp"]);
    assert_eq!(again.code, Some(EXIT_NOT_RUNNING));
    assert_eq!(
        again.stderr,
        "herdsman: error: no cluster named `sp` is running for this user (see `herdsman ls`)\n"
    );
}

#[test]
fn names_are_unique_and_a_dead_primarys_socket_is_replaced() {
    let dir = RuntimeDir::new();
    let mut first = cluster()
        .runtime_dir(&dir)
        .args(&["-w", "1", "--name", "api"])
        .start();
    let mut second = cluster()
        .runtime_dir(&dir)
        .args(&["-w", "1", "--name", "api"])
        .no_wait()
        .start();
    assert_eq!(second.wait_exit().code(), Some(EXIT_BIND));
    assert_eq!(
        second.log(),
        format!(
            "herdsman: error: a cluster named `api` is already running (pid {}); stop it with \
             `herdsman stop api`, or give this one another --name",
            first.pid()
        )
    );
    // Killed outright, the first primary leaves its socket file behind.
    first.signal(Signal::SIGKILL);
    first.wait_exit();
    assert!(dir.path().join("herdsman/api.sock").exists());
    assert_eq!(
        dir.herdsman(&["status", "api"]).code,
        Some(EXIT_NOT_RUNNING)
    );
    let third = cluster()
        .runtime_dir(&dir)
        .args(&["-w", "1", "--name", "api"])
        .start();
    assert_eq!(status_json(&third, "api")["pid"], third.pid());

    // Derived names fall back to NAME-2 instead of failing.
    let a = cluster().runtime_dir(&dir).args(&["-w", "1"]).start();
    let b = cluster().runtime_dir(&dir).args(&["-w", "1"]).start();
    a.stderr
        .wait_for("herdsman: control: herdsman status testserver (also");
    b.stderr
        .wait_for("herdsman: control: herdsman status testserver-2 (also");
    let ls = dir.herdsman(&["ls", "--json"]);
    let names: Vec<String> = ls
        .stdout
        .lines()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line).unwrap()["name"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(names, ["api", "testserver", "testserver-2"]);
    let ambiguous = dir.herdsman(&["status"]);
    assert_eq!(
        ambiguous.code,
        Some(EXIT_USAGE),
        "a name is missing, not a cluster"
    );
    assert_eq!(
        ambiguous.stderr,
        "herdsman: error: 3 clusters are running (api, testserver, testserver-2); name the one you mean\n"
    );
}

/// Runs `herdsman ARGS` as the user `nobody` against `dir`.
fn as_nobody(dir: &RuntimeDir, args: &[&str]) -> CommandOutput {
    let output = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .arg(herdsman_bin())
        .args(args)
        .env("XDG_RUNTIME_DIR", dir.path())
        .output()
        .expect("run setpriv (util-linux)");
    CommandOutput {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[test]
fn another_user_is_refused() {
    assert!(
        nix::unistd::getuid().is_root(),
        "this test switches to `nobody`, which needs root"
    );
    let dir = RuntimeDir::new();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let cluster = cluster()
        .runtime_dir(&dir)
        .args(&["-w", "1", "--name", "mine"])
        .start();
    cluster.wait_ready(1);
    let socket_dir = dir.path().join("herdsman");
    assert_eq!(
        std::fs::metadata(&socket_dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let socket = socket_dir.join("mine.sock");
    assert_eq!(
        std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // The private directory keeps other users out…
    let refused = as_nobody(&dir, &["status", "mine"]);
    assert_eq!(refused.code, Some(EXIT_NOT_RUNNING), "{refused:?}");

    // …and should it be opened up by mistake, the primary checks who connects.
    std::fs::set_permissions(&socket_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let refused = as_nobody(&dir, &["status", "mine"]);
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert_eq!(
        refused.stderr,
        "herdsman: error: permission denied: uid 65534 may not control this cluster, which \
         belongs to uid 0; run the command as that user\n"
    );
    assert_eq!(
        cluster.herdsman(&["status", "mine"]).code,
        Some(0),
        "the owner still may"
    );
}

#[test]
fn herdsman_toml_runs_a_cluster_with_no_command_given() {
    let dir = RuntimeDir::new();
    let toml = format!(
        "command = [{:?}]\nworkers = 2\nname = \"fromfile\"\nready-delay = \"100ms\"\n[env]\nAPP_VERSION = \"7\"\n",
        testserver_bin().display().to_string()
    );
    write_file(&dir, "herdsman.toml", &toml);
    // `herdsman run` with no command reads ./herdsman.toml.
    let mut command = Command::new(herdsman_bin());
    command
        .args(["run", "--host", "127.0.0.1", "--port", "0"])
        .current_dir(dir.path())
        .env("XDG_RUNTIME_DIR", dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().unwrap();
    let stderr = Lines::read_from(child.stderr.take().unwrap());
    stderr.wait_for_count(2, |line| {
        line.ends_with(" ready") && line.contains("worker")
    });
    let status = dir.herdsman(&["status", "fromfile", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(status["workers"], 2);
    let address: std::net::SocketAddr = status["address"].as_str().unwrap().parse().unwrap();
    assert_eq!(http_get(address, "/env").unwrap().field("APP_VERSION"), "7");
    let stop = dir.herdsman(&["stop", "fromfile"]);
    assert_eq!(stop.code, Some(0));
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

fn run_expecting_usage_error(dir: &RuntimeDir, args: &[&str]) -> String {
    let output = Command::new(herdsman_bin())
        .args(args)
        .current_dir(dir.path())
        .env("XDG_RUNTIME_DIR", dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(EXIT_USAGE), "{output:?}");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn config_errors_name_the_file_the_line_and_the_key() {
    let dir = RuntimeDir::new();
    let path = write_file(
        &dir,
        "bad.toml",
        "command = \"server\"\nport = 8000\nwrkers = 4\n",
    );
    let config = path.display().to_string();
    let stderr = run_expecting_usage_error(&dir, &["run", "--config", &config]);
    assert_eq!(
        stderr,
        format!(
            "herdsman: error: {config}: line 3, `wrkers`: unknown key; did you mean `workers`?\n"
        )
    );
    std::fs::write(&path, "command = \"server\"\nkill-timeout = 10\n").unwrap();
    let stderr = run_expecting_usage_error(&dir, &["run", "--config", &config]);
    assert_eq!(
        stderr,
        format!("herdsman: error: {config}: line 2, `kill-timeout`: expected a duration in quotes, e.g. \"10s\"\n")
    );
    let stderr = run_expecting_usage_error(&dir, &["run"]);
    assert_eq!(
        stderr,
        "herdsman: error: no worker command given; write it after `--`, e.g. `herdsman run -- node \
         server.js`, or as `command = …` in herdsman.toml\n"
    );
    let missing = run_expecting_usage_error(&dir, &["run", "--config", "nope.toml"]);
    assert_eq!(
        missing,
        "herdsman: error: nope.toml: No such file or directory (os error 2)\n"
    );
}

#[test]
fn a_malformed_request_is_refused_and_disturbs_nothing() {
    use std::io::{Read, Write};
    let cluster = cluster()
        .args(&["-w", "1", "--name", "bad", "--ready-delay", "100ms"])
        .start();
    cluster.wait_ready(1);
    let socket = cluster.runtime_dir.path().join("herdsman/bad.sock");
    for request in [
        "this is not json\n",
        "{\"command\":\"explode\"}\n",
        "{\"command\":\"status\"}",
    ] {
        let mut stream = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        let reply: serde_json::Value = serde_json::from_str(answer.trim()).unwrap();
        assert_eq!(reply["type"], "result", "{answer}");
        assert_eq!(reply["ok"], false, "{answer}");
        assert!(
            reply["message"]
                .as_str()
                .unwrap()
                .starts_with("bad request: "),
            "{answer}"
        );
    }
    assert_eq!(status_json(&cluster, "bad")["state"], "running");
    assert_eq!(cluster.get("/").unwrap().status, 200);
}

#[test]
fn stop_during_a_reload_aborts_it_and_leaves_no_process() {
    let mut cluster = cluster()
        .args(&["-w", "2", "--name", "sr", "--ready-delay", "3s"])
        .start();
    let first: Vec<u32> = cluster.ready_pids(2);
    let runtime_dir = cluster.runtime_dir.clone();
    let reload = std::thread::spawn(move || runtime_dir.herdsman(&["reload", "sr"]));
    let starting = cluster.stderr.wait_for("starting, generation 2");
    let (_, replacement) = parse_worker_line(&starting);
    let stop = cluster.herdsman(&["stop", "sr"]);
    assert_eq!(stop.code, Some(0), "{stop:?}");
    let reload = reload.join().unwrap();
    assert_eq!(reload.code, Some(1), "{reload:?}");
    assert_eq!(
        reload.stderr,
        "herdsman: error: reload aborted: the cluster is stopping\n"
    );
    assert_eq!(cluster.wait_exit().code(), Some(0));
    let mut all = first;
    all.push(replacement);
    wait_all_gone(&all);
}

#[test]
fn every_command_speaks_json_for_scripts() {
    let mut cluster = cluster()
        .args(&["-w", "1", "--name", "js", "--ready-delay", "100ms"])
        .start();
    cluster.wait_ready(1);
    let lines = |output: &CommandOutput| -> Vec<serde_json::Value> {
        assert_eq!(output.code, Some(0), "{output:?}");
        output
            .stdout
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    };
    let scale = lines(&cluster.herdsman(&["scale", "js", "2", "--json"]));
    assert_eq!(scale.len(), 2, "{scale:?}");
    assert_eq!(
        scale[0],
        serde_json::json!({"type": "progress", "message": "scaled 1 → 2: started slot 2"})
    );
    assert_eq!(
        scale[1],
        serde_json::json!({"type": "result", "ok": true, "message": "2 workers ready"})
    );
    let restart = lines(&cluster.herdsman(&["restart", "js", "2", "--json"]));
    assert_eq!(restart.first().unwrap()["message"], "restarting slot 2");
    assert_eq!(restart.last().unwrap()["type"], "result");
    assert_eq!(restart.last().unwrap()["ok"], true);
    let stop = lines(&cluster.herdsman(&["stop", "js", "--json"]));
    assert_eq!(
        stop,
        [
            serde_json::json!({"type": "progress", "message": "stopping; waiting for the workers to finish"}),
            serde_json::json!({"type": "result", "ok": true, "message": "stopped"}),
        ]
    );
    assert_eq!(cluster.wait_exit().code(), Some(0));
}
