//! Servers in other languages run under herdsman unchanged but for taking the inherited socket,
//! exactly as the README shows (issue 2: any server command).

use std::collections::BTreeSet;

use nix::sys::signal::Signal;

use crate::support::*;

fn example(path: &str) -> String {
    format!("{}/examples/{path}", env!("CARGO_MANIFEST_DIR"))
}

fn serves_and_stops_gracefully(command: &[&str], runtime: &str) {
    let mut cluster = cluster()
        .args(&["-w", "2", "--ready-delay", "300ms"])
        .command(command)
        .start();
    let ready: BTreeSet<u32> = cluster.ready_pids(2).into_iter().collect();
    let mut serving = BTreeSet::new();
    for _ in 0..2000 {
        let response = cluster.get("/").expect("GET /");
        assert_eq!(response.status, 200);
        assert_eq!(response.field("runtime"), runtime);
        serving.insert(response.pid());
        if serving.len() == 2 {
            break;
        }
    }
    assert_eq!(serving, ready, "both workers serve");
    cluster.signal(Signal::SIGTERM);
    assert_eq!(cluster.wait_exit().code(), Some(0), "{}", cluster.log());
    for pid in ready {
        assert!(
            cluster
                .log()
                .contains(&format!(" (pid {pid}) exited with code 0")),
            "{}",
            cluster.log()
        );
    }
}

#[test]
fn node_server_takes_the_inherited_socket() {
    serves_and_stops_gracefully(&["node", &example("node/server.js")], "node");
}

#[test]
fn python_server_takes_the_inherited_socket() {
    serves_and_stops_gracefully(&["python3", &example("python/server.py")], "python");
}
