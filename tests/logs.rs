//! Worker output is forwarded line by line with a prefix, or as JSON (issue 2).

use std::collections::BTreeSet;

use crate::support::*;

#[test]
fn json_log_lines_parse() {
    let cluster = cluster()
        .args(&["-w", "1", "--ready-delay", "100ms", "--log-format", "json"])
        .start();
    cluster.stderr.wait_for("\"line\":\"worker 1 (pid ");
    let response = cluster.get("/log?lines=3").unwrap();
    let pid = response.pid() as u64;
    cluster
        .stdout
        .wait_for_count(3, |line| line.contains("log line"));
    cluster.stderr.wait_for("log to stderr");
    let parse = |line: &String| -> serde_json::Value {
        serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {line}"))
    };
    let stdout: Vec<serde_json::Value> = cluster.stdout.snapshot().iter().map(parse).collect();
    let logged: Vec<&serde_json::Value> = stdout
        .iter()
        .filter(|record| record["line"].as_str().unwrap().starts_with("log line"))
        .collect();
    assert_eq!(logged.len(), 3);
    for (index, record) in logged.iter().enumerate() {
        assert_eq!(record["slot"], 1);
        assert_eq!(record["pid"], pid);
        assert_eq!(record["stream"], "stdout");
        assert_eq!(
            record["line"],
            format!("log line {} from pid {pid}", index + 1)
        );
        assert!(record["time"].as_str().unwrap().ends_with('Z'));
    }
    let stderr: Vec<serde_json::Value> = cluster.stderr.snapshot().iter().map(parse).collect();
    let from_worker = stderr
        .iter()
        .find(|record| record["stream"] == "stderr")
        .unwrap();
    assert_eq!(from_worker["line"], format!("log to stderr from pid {pid}"));
    assert_eq!(from_worker["pid"], pid);
    let listening = &stderr[0];
    assert_eq!(listening["stream"], "herdsman");
    assert_eq!(listening["level"], "info");
    assert_eq!(listening["slot"], serde_json::Value::Null);
    assert_eq!(
        listening["line"],
        format!(
            "listening on {} (1 worker, balance reuseport)",
            cluster.address()
        )
    );
}

#[test]
fn lines_from_workers_are_prefixed_and_never_interleave() {
    let cluster = cluster()
        .args(&[
            "-w",
            "2",
            "--balance",
            "reuseport",
            "--ready-delay",
            "100ms",
        ])
        .start();
    cluster.wait_ready(2);
    let address = cluster.address();
    // Both workers print 3,000 lines at the same time, in several requests each.
    let writers: Vec<_> = (0..8)
        .map(|_| std::thread::spawn(move || http_get(address, "/log?lines=3000").unwrap().pid()))
        .collect();
    let pids: BTreeSet<u32> = writers
        .into_iter()
        .map(|writer| writer.join().unwrap())
        .collect();
    cluster
        .stdout
        .wait_for_count(8 * 3000, |line| line.contains("log line"));
    let mut checked = 0;
    for line in cluster.stdout.snapshot() {
        let (prefix, text) = line.split_once(' ').unwrap();
        let (slot, pid) = prefix
            .trim_start_matches('[')
            .trim_end_matches(']')
            .split_once(':')
            .unwrap();
        assert!(slot == "1" || slot == "2", "{line}");
        if let Some(rest) = text.strip_prefix("log line ") {
            let (number, from) = rest
                .split_once(" from pid ")
                .unwrap_or_else(|| panic!("{line}"));
            assert!(number.parse::<u32>().is_ok(), "{line}");
            assert_eq!(from, pid, "{line}");
            assert!(pids.contains(&pid.parse().unwrap()), "{line}");
            checked += 1;
        } else {
            assert!(
                text.starts_with(&format!("testserver pid={pid} ")),
                "{line}"
            );
        }
    }
    assert_eq!(checked, 8 * 3000);
}

/// On a terminal, the prefix of each worker line is coloured (one colour per slot) and the
/// primary's own prefix is bold; `script` gives herdsman a real pseudo-terminal.
#[test]
fn prefixes_are_coloured_on_a_terminal() {
    let dir = RuntimeDir::new();
    let command = format!(
        "{} run -w 2 --host 127.0.0.1 --port 0 --ready-delay 100ms --name tty -- {}",
        herdsman_bin().display(),
        testserver_bin().display()
    );
    let mut child = std::process::Command::new("script")
        .args(["-q", "-e", "-c", &command, "/dev/null"])
        .env("XDG_RUNTIME_DIR", dir.path())
        .env_remove("NO_COLOR")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run script (util-linux)");
    let lines = Lines::read_from(child.stdout.take().unwrap());
    lines.wait_for("all 2 workers ready");
    let stop = dir.herdsman(&["stop", "tty"]);
    assert_eq!(stop.code, Some(0), "{stop:?}");
    child.wait().unwrap();
    let output = lines.snapshot().join("\n");
    assert!(
        output.contains("\x1b[1mherdsman:\x1b[0m listening on 127.0.0.1:"),
        "{output:?}"
    );
    assert!(output.contains("\x1b[36m[1:"), "slot 1 in cyan: {output:?}");
    assert!(
        output.contains("\x1b[32m[2:"),
        "slot 2 in green: {output:?}"
    );
}
