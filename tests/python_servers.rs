//! Real gunicorn and uvicorn under herdsman, as the README runs them: a worker is ready only when
//! it serves, so an app that fails at import fails start-up (exit 4) and aborts a reload (exit 1,
//! the old workers keep serving), even though gunicorn's arbiter sends `READY=1` before its
//! worker has imported the app (issue 11, §1). `scripts/test.sh` installs both servers.

use crate::support::*;

const EXIT_FAILED: i32 = 1;
const EXIT_NO_WORKER_READY: i32 = 4;

/// A WSGI app that answers `{"pid": …}` (the pid of gunicorn's worker process).
const WSGI_APP: &str = r#"import json, os

def app(environ, start_response):
    body = json.dumps({"pid": os.getpid(), "server": "gunicorn"}).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
"#;

/// The same app as ASGI, for uvicorn (also behind the proxy, `tests/proxy.rs`).
pub const ASGI_APP: &str = r#"import json, os

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = json.dumps({"pid": os.getpid(), "server": "uvicorn"}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
"#;

/// Longer than Python takes to import a server and an app on a loaded test machine.
const SLOW_IMPORT: &[&str] = &["--ready-delay", "5s"];

/// An app module that cannot be imported.
const BROKEN_APP: &str = "raise RuntimeError(\"app.py fails at import, on purpose\")\n";

/// Checks that `program` is installed (scripts/test.sh installs it), naming what to do if not.
fn require(program: &str) {
    let found = std::process::Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    assert!(
        found,
        "`{program}` is not installed; scripts/test.sh installs it (pip install {program})"
    );
}

fn gunicorn(dir: &RuntimeDir, extra: &[&str]) -> Vec<String> {
    require("gunicorn");
    let mut command = vec!["gunicorn".to_string(), "--workers".into(), "1".into()];
    command.extend(extra.iter().map(|arg| arg.to_string()));
    command.extend(["--chdir".into(), dir.path().display().to_string()]);
    command.push("app:app".into());
    command
}

fn uvicorn(dir: &RuntimeDir) -> Vec<String> {
    require("uvicorn");
    vec![
        "uvicorn".into(),
        "app:app".into(),
        "--fd".into(),
        "3".into(),
        "--app-dir".into(),
        dir.path().display().to_string(),
    ]
}

fn start(dir: &RuntimeDir, command: &[String], wait: bool, args: &[&str]) -> Cluster {
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    let builder = cluster()
        .runtime_dir(dir)
        .args(&["-w", "2", "--name", "py"])
        .args(args)
        .command(&command);
    if wait {
        builder.start()
    } else {
        builder.no_wait().start()
    }
}

/// Start-up with an app that fails at import: exit 4, with the import error in the message.
/// `args`: readiness is a signal (gunicorn's `READY=1`) or the start, followed by
/// `--ready-delay` up; the delay must be longer than the app's import, which a loaded machine
/// slows down.
fn fails_start_up(command: impl FnOnce(&RuntimeDir) -> Vec<String>, args: &[&str]) -> String {
    let dir = RuntimeDir::new();
    write_file(&dir, "app.py", BROKEN_APP);
    let mut cluster = start(&dir, &command(&dir), false, args);
    let status = cluster.wait_exit();
    let log = cluster.log();
    assert_eq!(status.code(), Some(EXIT_NO_WORKER_READY), "{log}");
    assert!(
        log.contains("herdsman: error: no worker became ready: worker "),
        "{log}"
    );
    assert!(
        log.contains("  | ") && log.contains("app.py fails at import, on purpose"),
        "{log}"
    );
    log
}

/// Serves on both slots, then reloads to a new generation that serves too.
fn serves_and_reloads(command: impl FnOnce(&RuntimeDir) -> Vec<String>, server: &str) {
    let dir = RuntimeDir::new();
    write_file(
        &dir,
        "app.py",
        if server == "uvicorn" {
            ASGI_APP
        } else {
            WSGI_APP
        },
    );
    let cluster = start(&dir, &command(&dir), true, &[]);
    cluster.wait_ready(2);
    let response = cluster.get("/").expect("GET /");
    assert_eq!(
        (response.status, response.field("server")),
        (200, server.into())
    );
    let output = cluster.herdsman(&["reload", "py"]);
    assert_eq!(output.code, Some(0), "{output:?}\n{}", cluster.log());
    assert!(
        output
            .stdout
            .contains("reload complete: 2 workers on generation 2"),
        "{output:?}"
    );
    assert_eq!(
        cluster.get("/").expect("GET / after the reload").status,
        200
    );
}

#[test]
fn gunicorn_app_failing_at_import_fails_start_up() {
    let log = fails_start_up(|dir| gunicorn(dir, &[]), SLOW_IMPORT);
    assert!(log.contains("Reason: Worker failed to boot."), "{log}");
}

#[test]
fn gunicorn_preload_app_failing_at_import_fails_start_up() {
    fails_start_up(|dir| gunicorn(dir, &["--preload"]), SLOW_IMPORT);
}

#[test]
fn uvicorn_app_failing_at_import_fails_start_up() {
    fails_start_up(uvicorn, SLOW_IMPORT);
}

#[test]
fn gunicorn_serves_and_reloads() {
    serves_and_reloads(|dir| gunicorn(dir, &[]), "gunicorn");
}

#[test]
fn gunicorn_preload_serves_and_reloads() {
    serves_and_reloads(|dir| gunicorn(dir, &["--preload"]), "gunicorn");
}

#[test]
fn uvicorn_serves_and_reloads() {
    serves_and_reloads(uvicorn, "uvicorn");
}

/// The README's gunicorn line: a reload to an app that fails at import is aborted with the
/// worker's exit and last stderr lines, and the old workers keep serving.
#[test]
fn gunicorn_reload_to_an_app_failing_at_import_is_aborted() {
    let dir = RuntimeDir::new();
    write_file(&dir, "app.py", WSGI_APP);
    let cluster = start(&dir, &gunicorn(&dir, &[]), true, SLOW_IMPORT);
    let mut old = cluster.wait_ready(2);
    old.sort_unstable();
    // Both gunicorn workers have imported the good app before it breaks.
    distinct_pids_by_requests(&cluster, 2);
    write_file(&dir, "app.py", BROKEN_APP);
    let output = cluster.herdsman(&["reload", "py"]);
    assert_eq!(
        output.code,
        Some(EXIT_FAILED),
        "{output:?}\n{}",
        cluster.log()
    );
    let text = format!("{}{}", output.stdout, output.stderr);
    assert!(
        text.contains("reload aborted: the new worker for slot 1 failed: worker 1 (pid "),
        "{text}"
    );
    assert!(text.contains(") exited with code 3 after "), "{text}");
    assert!(text.contains("after it said it was ready"), "{text}");
    assert!(
        text.contains("  | [") && text.contains("Reason: Worker failed to boot."),
        "{text}"
    );
    assert!(
        text.contains("the 2 workers not replaced keep serving their generation"),
        "{text}\n{}",
        cluster.log()
    );
    for index in 0..20 {
        let response = cluster
            .get("/")
            .unwrap_or_else(|error| panic!("request {index} after the aborted reload: {error}"));
        assert_eq!(response.status, 200, "request {index}");
    }
    let status = status_json(&cluster, "py");
    let rows = status["slots"].as_array().unwrap();
    let serving: Vec<(u64, &str)> = rows
        .iter()
        .map(|row| {
            (
                row["pid"].as_u64().unwrap_or(0),
                row["state"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        serving,
        old.iter()
            .map(|&(_, pid)| (pid as u64, "ready"))
            .collect::<Vec<_>>(),
        "{status}"
    );
    assert_eq!(status["generation"], 1, "{status}");
    // One replacement was tried, and the reload stopped there.
    assert_eq!(
        cluster
            .stderr
            .count(|line| line.contains("starting, generation 2")),
        1,
        "{}",
        cluster.log()
    );
}
