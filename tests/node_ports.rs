//! Node apps' own addresses (issue 13): a port the app picks is bound once by the primary,
//! served to every worker and listed in `status`; `listen(0)` gives every worker the same port;
//! a unix socket path or a UDP bind fails in the worker with `ENOTSUP`, never a hang.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use super::node_cluster::{assert_served_by, example, free_port, node_cluster};
use crate::support::*;

/// Whether some text in `status` is `address`, or starts with it and goes on with no digit.
fn lists_address(status: &serde_json::Value, address: &str) -> bool {
    match status {
        serde_json::Value::String(text) => text
            .strip_prefix(address)
            .is_some_and(|rest| !rest.starts_with(|c: char| c.is_ascii_digit())),
        serde_json::Value::Array(values) => {
            values.iter().any(|value| lists_address(value, address))
        }
        serde_json::Value::Object(fields) => {
            fields.values().any(|value| lists_address(value, address))
        }
        _ => false,
    }
}

/// An app on a port of its own (`node http-app.js PORT 127.0.0.1`): herdsman binds what the
/// workers ask for, once for all, and lists it.
fn assert_serves_its_own_port(
    cluster: &Cluster,
    name: &str,
    port: u16,
    ready: &BTreeMap<usize, u32>,
) {
    let address: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert_served_by(address, ready);
    assert_eq!(
        http_get(address, "/").unwrap().field("port"),
        port.to_string()
    );
    let mut status = status_json(cluster, name);
    let foreign = status["foreign_listeners"].take();
    assert_eq!(foreign, serde_json::json!([]), "{status}");
    assert!(
        lists_address(&status, &format!("127.0.0.1:{port}")),
        "status lists 127.0.0.1:{port}: {status}"
    );
    assert_eq!(column(&status, "restarts"), [0, 0], "{status}");
}

#[test]
fn app_listening_on_a_port_of_its_own_is_served_there_and_listed() {
    let port = free_port();
    let (cluster, ready) = node_cluster(
        "own",
        &[
            "node",
            &example("http-app.js"),
            &port.to_string(),
            "127.0.0.1",
        ],
    );
    assert_serves_its_own_port(&cluster, "own", port, &ready);
}

#[test]
fn app_listening_on_a_port_of_its_own_needs_no_port_flag() {
    let port = free_port();
    let cluster = cluster()
        .args(&["--workers", "2", "--name", "noport"])
        .without_port()
        .no_wait()
        .command(&[
            "node",
            &example("http-app.js"),
            &port.to_string(),
            "127.0.0.1",
        ])
        .start();
    let ready = cluster.wait_ready(2).into_iter().collect();
    assert_serves_its_own_port(&cluster, "noport", port, &ready);
}

/// A connection to the cluster's port, where an app on a port of its own never listens, is no
/// worker's fault: it is said once, with what to do, and no worker is replaced for it (with
/// reuseport each slot's queue, with shared the one queue).
#[test]
fn a_connection_to_the_cluster_port_an_app_does_not_listen_on_replaces_no_worker() {
    for balance in ["reuseport", "shared"] {
        let port = free_port();
        let cluster = cluster()
            .args(&[
                "--workers",
                "2",
                "--name",
                "elsewhere",
                "--balance",
                balance,
            ])
            .args(&["--accept-timeout", "300ms"])
            .command(&[
                "node",
                &example("http-app.js"),
                &port.to_string(),
                "127.0.0.1",
            ])
            .start();
        let ready: BTreeMap<usize, u32> = cluster.wait_ready(2).into_iter().collect();
        let _stray = std::net::TcpStream::connect(cluster.address()).unwrap();
        cluster.stderr.wait_for(&format!(
            "herdsman: connections wait on {}, the cluster's --port, which no worker takes: \
             the workers listen on 127.0.0.1:{port} instead",
            cluster.address()
        ));
        cluster
            .stderr
            .wait_for("hint: give --port the port the app listens on");
        // Three times the accept timeout: the stall would have replaced a worker by now.
        std::thread::sleep(Duration::from_millis(900));
        let status = status_json(&cluster, "elsewhere");
        assert_eq!(column(&status, "restarts"), [0, 0], "{balance}: {status}");
        let log = cluster.log();
        assert!(!log.contains("not accepting"), "{balance}: {log}");
        assert_served_by(format!("127.0.0.1:{port}").parse().unwrap(), &ready);
    }
}

/// The address an app asks for is taken: the worker's listen() fails with EADDRINUSE, the
/// primary names who holds it and what to do (not `--port`, which does not choose it), and
/// start-up fails with a hint that fits a Node worker.
#[test]
fn an_app_address_already_taken_is_named_with_its_holder() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let mut cluster = cluster()
        .args(&["--workers", "1", "--name", "taken"])
        .no_wait()
        .command(&[
            "node",
            &example("http-app.js"),
            &port.to_string(),
            "127.0.0.1",
        ])
        .start();
    let status = cluster.wait_exit();
    let log = cluster.log();
    assert_eq!(status.code(), Some(4), "{log}");
    let line = log
        .lines()
        .find(|line| line.contains("asked to listen on"))
        .unwrap_or_else(|| panic!("no listen line: {log}"));
    let prefix = format!(
        "asked to listen on 127.0.0.1:{port}, which herdsman cannot bind: Address already in use \
         (os error 98) — pid {} (`",
        std::process::id()
    );
    assert!(line.contains(&prefix), "{line}");
    assert!(
        line.ends_with(
            "listens there; stop it, or have the app listen on another port; its listen() fails \
             with EADDRINUSE"
        ),
        "{line}"
    );
    assert!(
        log.contains("hint: the app's listen() failed because herdsman could not bind"),
        "{log}"
    );
    assert!(!log.contains("binds port"), "{log}");
}

#[test]
fn app_listening_on_port_0_gets_the_same_port_in_every_worker() {
    let (cluster, ready) =
        node_cluster("zero", &["node", &example("http-app.js"), "0", "127.0.0.1"]);
    let ports: BTreeSet<u16> = ready
        .values()
        .map(|pid| {
            let line = cluster
                .stdout
                .wait_for(&format!("http {pid} listening on "));
            let address: serde_json::Value =
                serde_json::from_str(line.split_once(" listening on ").unwrap().1).unwrap();
            address["port"].as_u64().unwrap() as u16
        })
        .collect();
    assert_eq!(ports.len(), 1, "one port for both workers: {ports:?}");
    let port = ports.into_iter().next().unwrap();
    assert_ne!(port, 0);
    assert_serves_its_own_port(&cluster, "zero", port, &ready);
}

/// A worker that serves HTTP on the cluster's port, then tries a unix socket path and a UDP
/// bind, which herdsman does not serve: each fails in the worker with `ENOTSUP`.
const UNSERVED_LISTENS_WORKER: &str = r#"
const dgram = require('node:dgram');
const http = require('node:http');
const path = require('node:path');
http
  .createServer((request, response) => response.end(JSON.stringify({ pid: process.pid })))
  .listen(process.env.PORT, () => {
    http.createServer()
      .on('error', (error) => console.log(`unix listen failed: ${error.code}`))
      .listen(path.join(process.env.SOCKET_DIR, `app-${process.env.HERDSMAN_WORKER_ID}.sock`));
    dgram.createSocket('udp4')
      .on('error', (error) => console.log(`udp bind failed: ${error.code}`))
      .bind(0, '127.0.0.1');
  });
"#;

#[test]
fn a_unix_socket_or_udp_listen_fails_in_the_worker_with_enotsup_not_a_hang() {
    let dir = RuntimeDir::new();
    let script = dir.path().join("unserved.js");
    std::fs::write(&script, UNSERVED_LISTENS_WORKER).unwrap();
    let cluster = cluster()
        .runtime_dir(&dir)
        .args(&["--workers", "1", "--name", "unserved"])
        .env("SOCKET_DIR", dir.path().to_str().unwrap())
        .command(&["node", script.to_str().unwrap()])
        .start();
    let ready: BTreeMap<usize, u32> = cluster.wait_ready(1).into_iter().collect();
    let pid = ready[&1];
    cluster.stdout.wait_for_count(1, |line| {
        line == format!("[1:{pid}] unix listen failed: ENOTSUP")
    });
    cluster.stdout.wait_for_count(1, |line| {
        line == format!("[1:{pid}] udp bind failed: ENOTSUP")
    });
    for what in ["a unix socket path", "a UDP socket (dgram)"] {
        cluster.stderr.wait_for_count(1, |line| {
            line.starts_with(&format!(
                "herdsman: worker 1 (pid {pid}) asked to listen on {what}"
            ))
        });
    }
    // The worker keeps serving HTTP on the cluster's port.
    let response = cluster.get("/").expect("GET /");
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.pid(), pid);
}

/// Under the proxy a Node worker's `listen($PORT)` gets a socket on its private port that is
/// its own: on loopback (127.0.0.2 is refused), not an address served for every worker, and
/// closed with the worker, so reloads leave none behind.
#[test]
fn under_the_proxy_a_node_workers_port_is_its_own_on_loopback_and_goes_with_it() {
    let cluster = cluster()
        .args(&["--workers", "2", "--name", "np", "--balance", "proxy"])
        .command(&["node", &example("http-app.js")])
        .start();
    cluster.wait_ready(2);
    let mut ports = BTreeSet::new();
    for _ in 0..200 {
        ports.insert(cluster.get("/").unwrap().field("port"));
        if ports.len() == 2 {
            break;
        }
    }
    let ports: Vec<u16> = ports.iter().map(|port| port.parse().unwrap()).collect();
    assert_eq!(ports.len(), 2, "each worker its own port: {ports:?}");
    for &port in &ports {
        let elsewhere = std::net::TcpStream::connect(("127.0.0.2", port));
        assert!(elsewhere.is_err(), "port {port} answers beyond 127.0.0.1");
    }
    let reload = cluster.herdsman(&["reload", "np"]);
    assert_eq!(reload.code, Some(0), "{reload:?}");
    let status = status_json(&cluster, "np");
    assert!(status.get("also_serving").is_none(), "{status}");
    assert!(
        !cluster.log().contains("as a worker's listen() asked"),
        "{}",
        cluster.log()
    );
    for port in ports {
        eventually("the old worker's port closed with it", || {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .is_err()
                .then_some(())
        });
    }
    assert_eq!(cluster.get("/").unwrap().status, 200);
}
