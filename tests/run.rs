//! A cluster serves from every worker, hands each the socket the way socket activation does, and
//! replaces a killed worker without failing a request (issue 2).

use std::collections::{BTreeMap, BTreeSet};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::support::*;

fn serves_from_every_worker(balance: &str) {
    let cluster = cluster()
        .args(&[
            "--workers",
            "3",
            "--balance",
            balance,
            "--ready-delay",
            "100ms",
        ])
        .start();
    assert_ne!(cluster.address().port(), 0, "--port 0 binds a real port");
    assert!(
        cluster
            .log()
            .contains(&format!("(3 workers, balance {balance})")),
        "{}",
        cluster.log()
    );
    let ready = cluster.wait_ready(3);
    let slots: BTreeSet<usize> = ready.iter().map(|&(slot, _)| slot).collect();
    assert_eq!(slots, BTreeSet::from([1, 2, 3]));
    let ready_pids: BTreeSet<u32> = ready.iter().map(|&(_, pid)| pid).collect();
    assert_eq!(ready_pids.len(), 3);
    let serving = match balance {
        "shared" => distinct_pids_by_burning(&cluster, 3),
        _ => distinct_pids_by_requests(&cluster, 3),
    };
    assert_eq!(serving, ready_pids);
}

#[test]
fn shared_socket_serves_from_every_worker() {
    serves_from_every_worker("shared");
}

#[test]
fn reuseport_serves_from_every_worker() {
    serves_from_every_worker("reuseport");
}

#[test]
fn socket_activation_variables_name_the_worker_itself() {
    let cluster = cluster()
        .args(&["--workers", "2", "--ready-delay", "100ms"])
        .start();
    let ready: BTreeMap<u32, usize> = cluster
        .wait_ready(2)
        .into_iter()
        .map(|(slot, pid)| (pid, slot))
        .collect();
    let mut seen = BTreeMap::new();
    for _ in 0..2000 {
        let env = cluster.get("/env").unwrap();
        seen.insert(env.field("pid").parse::<u32>().unwrap(), env);
        if seen.len() == 2 {
            break;
        }
    }
    assert_eq!(seen.len(), 2, "both workers answered");
    for (pid, env) in &seen {
        assert_eq!(
            env.field("LISTEN_PID"),
            pid.to_string(),
            "LISTEN_PID is the worker's own pid"
        );
        assert_eq!(env.field("LISTEN_FDS"), "1");
        assert_eq!(env.field("LISTEN_FDNAMES"), "herdsman");
        assert_eq!(env.field("PORT"), cluster.address().port().to_string());
        assert_eq!(env.field("HERDSMAN_WORKER_ID"), ready[pid].to_string());
        assert_eq!(env.field("HERDSMAN_WORKER_COUNT"), "2");
        assert_eq!(env.field("HERDSMAN_GENERATION"), "1");
        assert_eq!(env.field("HERDSMAN_NAME"), "testserver");
        assert!(env
            .field("NOTIFY_SOCKET")
            .ends_with(&format!("notify-{}", ready[pid])));
    }
}

/// A client loop runs; worker 1 is killed with SIGKILL between two of its requests. Every
/// request succeeds (the kernel keeps queued connections for the others or the replacement), and
/// the replacement serves.
fn killed_worker_is_replaced_without_a_failed_request(balance: &str) {
    let cluster = cluster()
        .args(&[
            "--workers",
            "2",
            "--balance",
            balance,
            "--ready-delay",
            "100ms",
        ])
        .start();
    let ready = cluster.wait_ready(2);
    let victim = ready.iter().find(|&&(slot, _)| slot == 1).unwrap().1;
    let survivor = ready.iter().find(|&&(slot, _)| slot == 2).unwrap().1;
    let mut failures = Vec::new();
    let mut served: BTreeMap<u32, usize> = BTreeMap::new();
    for index in 0..400 {
        if index == 100 {
            kill(Pid::from_raw(victim as i32), Signal::SIGKILL).unwrap();
        }
        match cluster.get("/") {
            Ok(response) if response.status == 200 => {
                *served.entry(response.pid()).or_default() += 1
            }
            other => failures.push(format!("request {index}: {other:?}")),
        }
    }
    assert_eq!(
        failures,
        Vec::<String>::new(),
        "served: {served:?}\n{}",
        cluster.log()
    );
    assert_eq!(served.values().sum::<usize>(), 400);
    cluster
        .stderr
        .wait_for(&format!("worker 1 (pid {victim}) was killed by SIGKILL"));
    let (slot, replacement) = cluster.wait_ready(3)[2];
    assert_eq!(slot, 1);
    assert_ne!(replacement, victim);
    assert!(!alive(victim));
    let serving = match balance {
        "shared" => distinct_pids_by_burning(&cluster, 2),
        _ => distinct_pids_by_requests(&cluster, 2),
    };
    assert_eq!(serving, BTreeSet::from([survivor, replacement]));
}

#[test]
fn shared_replaces_a_killed_worker_without_a_failed_request() {
    killed_worker_is_replaced_without_a_failed_request("shared");
}

#[test]
fn reuseport_replaces_a_killed_worker_without_a_failed_request() {
    killed_worker_is_replaced_without_a_failed_request("reuseport");
}

/// The only worker dies; a connection made while it is being replaced waits in the socket's
/// queue (the primary holds the socket open) and the replacement answers it.
fn connection_queued_while_the_worker_restarts_is_served(balance: &str) {
    let cluster = cluster()
        .args(&[
            "--workers",
            "1",
            "--balance",
            balance,
            "--ready-delay",
            "100ms",
        ])
        .start();
    let (_, old) = cluster.wait_ready(1)[0];
    kill(Pid::from_raw(old as i32), Signal::SIGKILL).unwrap();
    cluster
        .stderr
        .wait_for(&format!("worker 1 (pid {old}) was killed by SIGKILL"));
    let response = cluster.get("/").expect("the queued connection is served");
    assert_eq!(response.status, 200);
    assert_ne!(response.pid(), old);
    let (_, replacement) = cluster.wait_ready(2)[1];
    assert_eq!(response.pid(), replacement);
}

#[test]
fn reuseport_serves_a_connection_queued_while_its_worker_restarts() {
    connection_queued_while_the_worker_restarts_is_served("reuseport");
}

#[test]
fn shared_serves_a_connection_queued_while_its_worker_restarts() {
    connection_queued_while_the_worker_restarts_is_served("shared");
}

#[test]
fn herdsman_workers_sets_the_default_count_and_the_flag_wins() {
    let from_env = cluster()
        .env("HERDSMAN_WORKERS", "3")
        .args(&["--ready-delay", "100ms"])
        .start();
    assert!(
        from_env.log().contains("(3 workers, balance reuseport)"),
        "{}",
        from_env.log()
    );
    assert_eq!(from_env.ready_pids(3).len(), 3);
    let flag = cluster()
        .env("HERDSMAN_WORKERS", "3")
        .args(&["-w", "1"])
        .start();
    assert!(
        flag.log().contains("(1 worker, balance reuseport)"),
        "{}",
        flag.log()
    );
}
