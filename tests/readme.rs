//! What a newcomer copies from the README works (issue 11 §4): the server code and commands in
//! README.md are read from README.md itself, from the code block after a
//! `<!-- readme-test: NAME … -->` marker, and run under herdsman through 3 reloads under
//! keep-alive load: the Quick start's `server.js`, the Python lines (gunicorn, uvicorn, the
//! standard library's server), the Ruby line (puma under `bundle exec`) and the Go `main.go`.

use crate::support::*;

/// The fenced code block that follows `<!-- readme-test: NAME (…) -->` in README.md.
fn readme_block(name: &str) -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("read README.md");
    let marker = format!("<!-- readme-test: {name} ");
    let after = readme
        .split_once(&marker)
        .and_then(|(_, after)| after.split_once("-->"))
        .unwrap_or_else(|| panic!("README.md has no `{marker}…-->`"))
        .1;
    let mut lines = after.lines().skip_while(|line| line.trim().is_empty());
    let fence = lines.next().unwrap_or_default();
    assert!(
        fence.starts_with("```"),
        "`{marker}` is not followed by a code block but by {fence:?}"
    );
    let block: Vec<&str> = lines.take_while(|line| !line.starts_with("```")).collect();
    block.join("\n") + "\n"
}

/// A directory of its own for a test's files, as a user's project directory.
fn project_dir(runtime_dir: &RuntimeDir) -> std::path::PathBuf {
    let dir = runtime_dir.path().join("project");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// How a server may treat a keep-alive connection that is idle when it stops.
#[derive(Clone, Copy, PartialEq)]
enum IdleClose {
    /// Never under a request on its way: a client that does not retry (wrk, ab, a POST) sees
    /// no error either. The polite drain.
    Never,
    /// At once (uvicorn, Node's `server.close()`): clients that send again on a new connection
    /// what a reused one lost before any answer (curl, Go, browsers, [`KeepAliveClient`]) see
    /// no error; others do.
    AtOnce,
}

/// Three reloads while four keep-alive clients run: every request is answered, and (for a
/// polite server) no client had to send one again.
fn three_reloads_under_keep_alive_load(cluster: &Cluster, name: &str, idle: IdleClose) {
    cluster.wait_ready(2);
    let loads: Vec<LoadLoop> = (0..4).map(|_| load_loop(cluster.address(), true)).collect();
    for reload in 1..=3 {
        let output = cluster.herdsman(&["reload", name]);
        assert_eq!(output.code, Some(0), "reload {reload}: {output:?}");
    }
    for load in loads {
        let report = load.finish(200);
        let retries = match idle {
            IdleClose::Never => report.retries,
            IdleClose::AtOnce => 0,
        };
        assert_eq!(
            (report.failures, retries),
            (Vec::<String>::new(), 0),
            "{} ok, {} sent again; log:\n{}",
            report.ok,
            report.retries,
            cluster.log()
        );
    }
}

#[test]
fn readme_node_server_reloads_under_keep_alive_load_without_a_failed_request() {
    let runtime_dir = RuntimeDir::new();
    let dir = project_dir(&runtime_dir);
    std::fs::write(dir.join("server.js"), readme_block("server.js")).unwrap();
    let cluster = cluster()
        .runtime_dir(&runtime_dir)
        .current_dir(&dir)
        .args(&["-w", "2", "--ready-delay", "300ms"])
        .command(&["node", "server.js"])
        .start();
    three_reloads_under_keep_alive_load(&cluster, "server", IdleClose::Never);
}

/// The commands of the README's block `name`: each `herdsman run -- COMMAND` line's COMMAND.
fn readme_commands(name: &str) -> Vec<Vec<String>> {
    readme_block(name)
        .lines()
        .map(|line| {
            let command = line
                .split_once("herdsman run -- ")
                .unwrap_or_else(|| panic!("not a `herdsman run -- …` line: {line:?}"))
                .1;
            command.split_whitespace().map(String::from).collect()
        })
        .collect()
}

/// A WSGI app (gunicorn) and an ASGI app (uvicorn), both `app:app`, answering the pid.
const WSGI_APP: &str = r#"
import json, os
def app(environ, start_response):
    body = json.dumps({"pid": os.getpid()}).encode()
    start_response("200 OK", [("content-type", "application/json"), ("content-length", str(len(body)))])
    return [body]
"#;

const ASGI_APP: &str = r#"
import json, os
async def app(scope, receive, send):
    assert scope["type"] == "http"
    body = json.dumps({"pid": os.getpid()}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
"#;

/// Runs the README's Python line for `program` in a project holding `app.py` (or, for
/// `python3 server.py`, examples/python/server.py), through 3 reloads under keep-alive load.
fn readme_python_line_reloads_without_a_failed_request(
    program: &str,
    app: Option<&str>,
    idle: IdleClose,
) {
    let commands = readme_commands("python");
    let command = commands
        .iter()
        .find(|command| command[0] == program)
        .unwrap_or_else(|| panic!("the README's Python block has no {program} line"));
    let runtime_dir = RuntimeDir::new();
    let dir = project_dir(&runtime_dir);
    match app {
        Some(app) => std::fs::write(dir.join("app.py"), app).unwrap(),
        None => std::fs::copy(
            concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python/server.py"),
            dir.join("server.py"),
        )
        .map(|_| ())
        .unwrap(),
    }
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    let cluster = cluster()
        .runtime_dir(&runtime_dir)
        .current_dir(&dir)
        .args(&["-w", "2", "--name", "py"])
        .command(&command)
        .start();
    three_reloads_under_keep_alive_load(&cluster, "py", idle);
}

#[test]
fn readme_gunicorn_line_reloads_under_keep_alive_load_without_a_failed_request() {
    readme_python_line_reloads_without_a_failed_request(
        "gunicorn",
        Some(WSGI_APP),
        IdleClose::Never,
    );
}

/// uvicorn closes idle keep-alive connections the moment it stops, and no flag changes that;
/// the README says so.
#[test]
fn readme_uvicorn_line_reloads_under_keep_alive_load_without_a_failed_request_for_retrying_clients()
{
    readme_python_line_reloads_without_a_failed_request(
        "uvicorn",
        Some(ASGI_APP),
        IdleClose::AtOnce,
    );
}

#[test]
fn readme_python_server_line_reloads_under_keep_alive_load_without_a_failed_request() {
    readme_python_line_reloads_without_a_failed_request("python3", None, IdleClose::Never);
}

#[test]
fn readme_go_server_reloads_under_keep_alive_load_without_a_failed_request() {
    let runtime_dir = RuntimeDir::new();
    let dir = project_dir(&runtime_dir);
    std::fs::write(dir.join("main.go"), readme_block("main.go")).unwrap();
    // As the README says: `go build -o server main.go`, then `herdsman run -- ./server`.
    let build = std::process::Command::new("go")
        .args(["build", "-o", "server", "main.go"])
        .current_dir(&dir)
        .env("GOCACHE", runtime_dir.path().join("go-cache"))
        .env("GO111MODULE", "off")
        .output()
        .expect("run go (scripts/test.sh installs it)");
    assert!(build.status.success(), "go build: {build:?}");
    let cluster = cluster()
        .runtime_dir(&runtime_dir)
        .current_dir(&dir)
        .args(&["-w", "2", "--ready-delay", "300ms"])
        .command(&["./server"])
        .start();
    three_reloads_under_keep_alive_load(&cluster, "server", IdleClose::Never);
}

/// A Rack app for puma, answering the pid.
const RACK_APP: &str = r#"run ->(env) {
  body = %({"pid":#{Process.pid}})
  [200, {"content-type" => "application/json", "content-length" => body.bytesize.to_s}, [body]]
}
"#;

/// The puma Gemfile; `bundle install --local` resolves it from the installed gems (Debian's
/// `puma`), without the network.
const GEMFILE: &str = "source \"https://rubygems.org\"\ngem \"puma\"\n";

/// The README's Ruby line, `herdsman run --port 9292 -- bundle exec … puma -b tcp://…:9292`,
/// with a free port for 9292, and 127.0.0.1 for its 0.0.0.0 (the tests listen on 127.0.0.1
/// only: puma takes the activated socket whose address is its bind's), in a Bundler project of
/// `config.ru` and a Gemfile, through 3 reloads under keep-alive load. puma, as uvicorn, closes
/// idle keep-alive connections the moment it stops; the README says so.
#[test]
fn readme_puma_line_reloads_under_keep_alive_load_without_a_failed_request_for_retrying_clients() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let block = readme_block("puma");
    let line = block
        .lines()
        .find(|line| line.contains(" -- bundle exec "))
        .expect("the README's puma block has a `bundle exec` line")
        .replace("9292", &port.to_string())
        .replace("0.0.0.0", "127.0.0.1");
    let (options, command) = line
        .strip_prefix("herdsman run ")
        .and_then(|rest| rest.split_once(" -- "))
        .unwrap_or_else(|| panic!("not a `herdsman run … -- …` line: {line:?}"));
    assert_eq!(options, format!("--port {port}"), "in {line:?}");
    let command: Vec<&str> = command.split_whitespace().collect();
    let runtime_dir = RuntimeDir::new();
    let dir = project_dir(&runtime_dir);
    std::fs::write(dir.join("config.ru"), RACK_APP).unwrap();
    std::fs::write(dir.join("Gemfile"), GEMFILE).unwrap();
    let bundle_home = runtime_dir.path().join("bundle-home");
    let install = std::process::Command::new("bundle")
        .args(["install", "--local"])
        .current_dir(&dir)
        .env("BUNDLE_USER_HOME", &bundle_home)
        .output()
        .expect("run bundle (scripts/test.sh installs ruby-bundler and puma)");
    assert!(
        install.status.success(),
        "bundle install --local: {install:?}"
    );
    let cluster = cluster()
        .runtime_dir(&runtime_dir)
        .current_dir(&dir)
        .port(port)
        .env("BUNDLE_USER_HOME", &bundle_home.display().to_string())
        .args(&["-w", "2", "--name", "rb"])
        .command(&command)
        .start();
    three_reloads_under_keep_alive_load(&cluster, "rb", IdleClose::AtOnce);
}
