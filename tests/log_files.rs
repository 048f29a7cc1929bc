//! `--log-dir` (issue 16): each slot's stdout and stderr and herdsman's own lines in files,
//! timestamped as `herdsman logs` shows them, rotated at the size given with the kept count
//! honoured; a directory that cannot be written is exit 2 at start-up; a disk that refuses
//! writes costs lines, said so, never the cluster.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::support::*;

/// `2026-12-03T09:00:00.123Z `: the timestamp every line starts with.
const STAMP: usize = 25;

/// The text of a line after its timestamp, checking that it has one.
fn after_stamp(line: &str) -> &str {
    let (stamp, rest) = line.split_at(STAMP);
    assert!(
        stamp.len() == STAMP && stamp.ends_with("Z ") && stamp.as_bytes()[10] == b'T',
        "no timestamp in {line:?}"
    );
    humantime::parse_rfc3339(stamp.trim_end()).unwrap_or_else(|error| panic!("{error}: {line:?}"));
    rest
}

/// The files of `dir`, by name, with their text.
fn files_of(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().unwrap();
            (name, std::fs::read_to_string(entry.path()).unwrap())
        })
        .collect()
}

/// The pid a worker's status row names for `slot`.
fn pid_of_slot(cluster: &Cluster, name: &str, slot: u64) -> u64 {
    let status = status_json(cluster, name);
    status["slots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["slot"] == slot)
        .and_then(|row| row["pid"].as_u64())
        .unwrap_or_else(|| panic!("no slot {slot} in {status}"))
}

#[test]
fn log_dir_files_hold_each_slots_lines_and_rotate_at_the_size_given() {
    const MAX: usize = 2048;
    const KEEP: usize = 2;
    const LINES: usize = 150;
    let runtime = RuntimeDir::new();
    // Two levels that do not exist yet: the directory is created.
    let dir = runtime.path().join("logs").join("api");
    let cluster = cluster()
        .runtime_dir(&runtime)
        .args(&["-w", "2", "--name", "logfiles", "--ready-delay", "100ms"])
        .args(&["--log-dir", dir.to_str().unwrap()])
        .args(&["--log-max-size", "2kb", "--log-keep", &KEEP.to_string()])
        .start();
    cluster.wait_ready(2);
    let pids = [1, 2].map(|slot| pid_of_slot(&cluster, "logfiles", slot));

    // Requests until each worker has printed its lines at least three times over (150 lines
    // of ~60 bytes: about 4 files' worth each time).
    let mut requests: BTreeMap<u64, usize> = BTreeMap::new();
    for _ in 0..400 {
        let pid = cluster.get(&format!("/log?lines={LINES}")).unwrap().pid() as u64;
        *requests.entry(pid).or_default() += 1;
        if pids.iter().all(|pid| requests.get(pid) >= Some(&3)) {
            break;
        }
    }
    assert!(
        pids.iter().all(|pid| requests.get(pid) >= Some(&3)),
        "400 requests reached {requests:?}, not both of {pids:?} three times"
    );

    for (slot, pid) in [1, 2].into_iter().zip(pids) {
        let out = dir.join(format!("logfiles-{slot}.out.log"));
        let last = format!("[{slot}:{pid}] log line {LINES} from pid {pid}");
        let errors = format!("[{slot}:{pid}] log to stderr from pid {pid}");
        let err = dir.join(format!("logfiles-{slot}.err.log"));
        let count = requests[&pid];
        eventually("the last lines reach the files", || {
            let out = std::fs::read_to_string(&out).ok()?;
            let err = std::fs::read_to_string(&err).ok()?;
            let logged = err.lines().filter(|line| line.ends_with(&errors)).count();
            (out.lines().last().map(after_stamp) == Some(last.as_str()) && logged == count)
                .then_some(())
        });
        let files = files_of(&dir);
        let prefix = format!("logfiles-{slot}.out.log");
        // The current file and exactly KEEP rotated ones: the older ones were dropped.
        let names: Vec<&String> = files
            .keys()
            .filter(|name| name.starts_with(&prefix))
            .collect();
        let expected: Vec<String> = std::iter::once(prefix.clone())
            .chain((1..=KEEP).map(|index| format!("{prefix}.{index}")))
            .collect();
        assert_eq!(names, expected.iter().collect::<Vec<_>>());
        // Oldest first: .2, .1, the current file.
        let texts: Vec<&String> = expected.iter().rev().map(|name| &files[name]).collect();
        for (index, text) in texts.iter().enumerate() {
            assert!(
                text.len() <= MAX,
                "{} has {} bytes",
                expected[KEEP - index],
                text.len()
            );
            assert!(text.ends_with('\n'), "a line was cut");
            if let Some(newer) = texts.get(index + 1) {
                // Rotated exactly when the next line would have passed the size.
                let next = newer.lines().next().unwrap().len() + 1;
                assert!(
                    text.len() + next > MAX,
                    "{} rotated at {} bytes, with room for a {next}-byte line",
                    expected[KEEP - index],
                    text.len()
                );
            }
        }
        // The kept lines are the last ones written, in order, none lost between files.
        let numbers: Vec<usize> = texts
            .iter()
            .flat_map(|text| text.lines())
            .map(after_stamp)
            .map(|line| {
                let number = line
                    .strip_prefix(&format!("[{slot}:{pid}] log line "))
                    .and_then(|rest| rest.split(' ').next())
                    .unwrap_or_else(|| panic!("slot {slot}'s file has {line:?}"));
                number.parse().unwrap()
            })
            .collect();
        assert!(
            numbers.len() < LINES * count,
            "the oldest lines were dropped"
        );
        for pair in numbers.windows(2) {
            assert!(
                pair[1] == pair[0] + 1 || (pair[0] == LINES && pair[1] == 1),
                "a line is missing between {pair:?}"
            );
        }
        assert_eq!(numbers.last(), Some(&LINES));
    }

    // herdsman's own lines, timestamped as `herdsman logs` shows them.
    let own = std::fs::read_to_string(dir.join("logfiles.herdsman.log")).unwrap();
    let own: Vec<&str> = own.lines().map(after_stamp).collect();
    for (slot, pid) in [1, 2].into_iter().zip(pids) {
        let ready = format!("herdsman: worker {slot} (pid {pid}) ready");
        assert!(own.contains(&ready.as_str()), "{own:#?}");
    }
    let logs = cluster.herdsman(&["logs", "logfiles", "-n", "100000"]);
    assert_eq!(logs.code, Some(0));
    let shown: Vec<&str> = logs.stdout.lines().map(after_stamp).collect();
    assert!(
        own.iter().all(|line| shown.contains(line)),
        "the file's lines are not as `herdsman logs` shows them:\n{own:#?}\n{shown:#?}"
    );
}

#[test]
fn a_log_dir_that_cannot_be_written_is_a_start_up_error() {
    let runtime = RuntimeDir::new();
    let file = write_file(&runtime, "plain-file", "not a directory\n");
    let under_file = file.join("logs");
    let cases: Vec<(PathBuf, &str)> = vec![
        (file.clone(), "it is not a directory"),
        (under_file.clone(), "Not a directory (os error 20)"),
    ];
    for (dir, why) in cases {
        let output = runtime.herdsman(&[
            "run",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--log-dir",
            dir.to_str().unwrap(),
            "--",
            "true",
        ]);
        assert_eq!(output.code, Some(2), "{output:?}");
        let expected = format!(
            "herdsman: error: cannot write log files to {}: {why}; give --log-dir a directory \
             herdsman may create and write, or leave it out\n",
            dir.display()
        );
        assert_eq!(output.stderr, expected);
    }
}

#[test]
fn a_disk_that_refuses_writes_costs_lines_not_the_cluster() {
    let runtime = RuntimeDir::new();
    let dir = runtime.path().join("logs");
    std::fs::create_dir_all(&dir).unwrap();
    // Every write to slot 1's stdout file fails: ENOSPC.
    std::os::unix::fs::symlink("/dev/full", dir.join("full-1.out.log")).unwrap();
    let cluster = cluster()
        .runtime_dir(&runtime)
        .args(&["-w", "1", "--name", "full", "--ready-delay", "100ms"])
        .args(&["--log-dir", dir.to_str().unwrap()])
        .start();
    cluster.wait_ready(1);
    let response = cluster.get("/log?lines=5").unwrap();
    assert_eq!(response.status, 200);
    // Reported as the writer finds out: at least the testserver's `listening on` line and the
    // 5 lines asked for.
    let reports = eventually("6 lines reported not written", || {
        let reports: Vec<(usize, String)> = cluster
            .stderr
            .snapshot()
            .iter()
            .filter(|line| line.contains(" not written to "))
            .map(|line| {
                let (count, rest) = line
                    .strip_prefix("herdsman: ")
                    .and_then(|line| line.split_once(' '))
                    .unwrap_or_else(|| panic!("{line:?}"));
                (count.parse().unwrap(), rest.to_string())
            })
            .collect();
        let total: usize = reports.iter().map(|(count, _)| count).sum();
        (total >= 6).then_some(reports)
    });
    for (count, rest) in reports {
        let lines = if count == 1 { "line" } else { "lines" };
        assert_eq!(
            rest,
            format!(
                "log {lines} not written to {}: writing failed: No space left on device \
                 (os error 28)",
                dir.display()
            )
        );
    }
    // The cluster goes on: it answers, and the stderr file has its line.
    assert_eq!(cluster.get("/").unwrap().status, 200);
    let pid = response.pid();
    eventually("slot 1's stderr line reaches its file", || {
        let text = std::fs::read_to_string(dir.join("full-1.err.log")).ok()?;
        text.contains(&format!("[1:{pid}] log to stderr from pid {pid}"))
            .then_some(())
    });
}

/// logrotate's `create`: the files are moved away, `herdsman reload` (SIGHUP, its
/// `postrotate`) opens them again by name, and the next lines go to new files.
#[test]
fn a_reload_opens_the_log_files_again_by_name() {
    let runtime = RuntimeDir::new();
    let dir = runtime.path().join("logs");
    let cluster = cluster()
        .runtime_dir(&runtime)
        .args(&["-w", "1", "--name", "rotated", "--ready-delay", "100ms"])
        .args(&["--log-dir", dir.to_str().unwrap()])
        .start();
    let pid = cluster.ready_pids(1)[0];
    let out = dir.join("rotated-1.out.log");
    let own = dir.join("rotated.herdsman.log");
    let ready = format!("worker 1 (pid {pid}) ready");
    // Both files exist before they are moved: the worker's first line and the ready line.
    eventually(
        "the listening line and the ready line in their files",
        || {
            let text = std::fs::read_to_string(&own).ok()?;
            let first = std::fs::read_to_string(&out).ok()?;
            (text.contains(&ready) && first.contains("listening on")).then_some(())
        },
    );
    for path in [&out, &own] {
        std::fs::rename(path, path.with_extension("log.old")).unwrap();
    }
    let reload = cluster.herdsman(&["reload", "rotated"]);
    assert_eq!(reload.code, Some(0), "{reload:?}");
    let new_pid = cluster.get("/log?lines=2").unwrap().pid();
    let expected = format!("[1:{new_pid}] log line 2 from pid {new_pid}");
    eventually("the new lines in new files", || {
        let out = std::fs::read_to_string(&out).ok()?;
        let own = std::fs::read_to_string(&own).ok()?;
        (out.lines().any(|line| line.ends_with(&expected)) && own.contains("reload complete"))
            .then_some(())
    });
    let old = std::fs::read_to_string(dir.join("rotated.herdsman.log.old")).unwrap();
    assert!(
        old.contains(&ready) && !old.contains("reload complete"),
        "{old}"
    );
}
