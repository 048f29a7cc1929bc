//! What a newcomer copies from the README works (issue 11 §4): the server code in README.md is
//! read from README.md itself, from the code block after a `<!-- readme-test: NAME … -->`
//! marker, and run under
//! herdsman through reloads under keep-alive load.

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

/// Three reloads while four keep-alive clients run: every request is answered, and no client
/// had to send one again.
fn three_reloads_under_keep_alive_load(cluster: &Cluster, name: &str, workers: usize) {
    cluster.wait_ready(workers);
    let loads: Vec<LoadLoop> = (0..4).map(|_| load_loop(cluster.address(), true)).collect();
    for reload in 1..=3 {
        let output = cluster.herdsman(&["reload", name]);
        assert_eq!(output.code, Some(0), "reload {reload}: {output:?}");
    }
    for load in loads {
        let report = load.finish(200);
        assert_eq!(
            (report.failures, report.retries),
            (Vec::<String>::new(), 0),
            "{} ok; log:\n{}",
            report.ok,
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
    three_reloads_under_keep_alive_load(&cluster, "server", 2);
}
