//! The typed status becomes exactly the JSON that `herdsman status --json` printed before the
//! types moved below the faces (docs/control.md).

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use crate::config::{Balance, ProxyProtocol, Sticky};
use crate::domain::{
    ClusterPhase, ClusterStatus, ExitReason, ForeignListener, LastExit, LastReplacement, LogEntry,
    Occupant, SlotStatus, StateStatus, Update, WorkerPhase, WorkerStatus,
};
use crate::state::StoreFigures;

fn at(millis: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(millis)
}

fn address(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

fn worker(pid: u32, generation: u64, phase: WorkerPhase) -> WorkerStatus {
    WorkerStatus {
        pid,
        generation,
        phase,
        not_accepting: false,
        uptime: Duration::from_micros(1_500_900),
        cpu_percent: None,
        rss_bytes: None,
        connections: None,
        accept_queue: None,
    }
}

fn row(slot: usize, occupant: Occupant, restarts: u32, last_exit: Option<LastExit>) -> SlotStatus {
    SlotStatus {
        slot,
        occupant,
        restarts,
        last_exit,
        last_replacement: None,
        replacements: Vec::new(),
        restart_reasons: Vec::new(),
    }
}

fn exit(pid: u32, reason: ExitReason, not_accepting: bool) -> Option<LastExit> {
    Some(LastExit {
        pid,
        reason,
        not_accepting,
        at: at(1_700_000_000_123),
    })
}

/// Every row state, exit kind and optional part once.
fn full_example() -> ClusterStatus {
    ClusterStatus {
        name: "api".into(),
        pid: 4100,
        address: address("127.0.0.1:8000"),
        balance: Balance::Reuseport,
        sticky: Sticky::Ip,
        proxy_protocol: ProxyProtocol::Off,
        phase: ClusterPhase::Reloading,
        degraded: true,
        workers: 4,
        generation: 2,
        reloads: 1,
        reloads_aborted: 2,
        accept_queue: None,
        uptime: Duration::from_micros(61_234_567),
        command: vec!["python3".into(), "-m".into(), "http.server".into()],
        slots: vec![
            row(
                1,
                Occupant::Worker(WorkerStatus {
                    cpu_percent: Some(12.5),
                    rss_bytes: Some(20_480_000),
                    connections: Some(7),
                    accept_queue: Some(3),
                    ..worker(4101, 2, WorkerPhase::Ready)
                }),
                0,
                None,
            ),
            row(
                1,
                Occupant::Worker(WorkerStatus {
                    cpu_percent: Some(0.0),
                    ..worker(4099, 1, WorkerPhase::Retiring)
                }),
                0,
                None,
            ),
            row(
                2,
                Occupant::Worker(WorkerStatus {
                    not_accepting: true,
                    ..worker(4102, 1, WorkerPhase::Draining)
                }),
                1,
                exit(4090, ExitReason::Signal(9), true),
            ),
            row(
                2,
                Occupant::Worker(worker(4103, 2, WorkerPhase::Starting)),
                1,
                exit(4090, ExitReason::Signal(9), true),
            ),
            row(
                3,
                Occupant::Errored,
                5,
                exit(4095, ExitReason::Code(1), false),
            ),
            row(
                4,
                Occupant::Backoff,
                1,
                exit(4096, ExitReason::Signal(40), false),
            ),
            SlotStatus {
                last_replacement: Some(LastReplacement {
                    pid: 4098,
                    kind: "max-memory",
                    reason: "rss 312 MiB over --max-memory 256 MiB".into(),
                    at: at(1_700_000_000_123),
                }),
                replacements: vec![("max-memory", 2), ("watchdog", 1)],
                ..row(
                    5,
                    Occupant::Worker(worker(4104, 1, WorkerPhase::Draining)),
                    0,
                    exit(4097, ExitReason::Unknown, false),
                )
            },
        ],
        shared_state: Some(StateStatus {
            url: "redis+unix:///run/user/1000/herdsman/4100/state.sock".into(),
            tcp: Some(address("127.0.0.1:6390")),
            embedded: Some(StoreFigures {
                keys: 12,
                used_memory: 4096,
                clients: 3,
                commands: 250,
            }),
        }),
        foreign_listeners: vec![ForeignListener {
            address: address("0.0.0.0:8000"),
            pid: Some(777),
            command: Some("nginx".into()),
            cluster: None,
            slot: None,
            in_group: true,
            description: "nginx (pid 777) takes some of the cluster's connections".into(),
        }],
        also_serving: vec![address("127.0.0.1:9000")],
    }
}

const FULL_EXAMPLE_JSON: &str = concat!(
    r#"{"type":"status","name":"api","pid":4100,"address":"127.0.0.1:8000","#,
    r#""balance":"reuseport","sticky":"ip","proxy_protocol":"off","state":"reloading","#,
    r#""degraded":true,"workers":4,"generation":2,"#,
    r#""reloads":1,"reloads_aborted":2,"uptime_ms":61234,"command":["python3","-m","http.server"],"slots":["#,
    r#"{"slot":1,"pid":4101,"generation":2,"state":"ready","uptime_ms":1500,"restarts":0,"#,
    r#""last_exit":null,"cpu_percent":12.5,"rss_bytes":20480000,"connections":7,"accept_queue":3},"#,
    r#"{"slot":1,"pid":4099,"generation":1,"state":"draining","uptime_ms":1500,"restarts":0,"#,
    r#""last_exit":null,"cpu_percent":0.0,"rss_bytes":null},"#,
    r#"{"slot":2,"pid":4102,"generation":1,"state":"not accepting","uptime_ms":1500,"#,
    r#""restarts":1,"last_exit":{"pid":4090,"reason":"not accepting; was killed by SIGKILL","#,
    r#""code":null,"signal":"SIGKILL","at":"2023-11-14T22:13:20.123Z"},"cpu_percent":null,"#,
    r#""rss_bytes":null},"#,
    r#"{"slot":2,"pid":4103,"generation":2,"state":"starting","uptime_ms":1500,"restarts":1,"#,
    r#""last_exit":{"pid":4090,"reason":"not accepting; was killed by SIGKILL","code":null,"#,
    r#""signal":"SIGKILL","at":"2023-11-14T22:13:20.123Z"},"cpu_percent":null,"#,
    r#""rss_bytes":null},"#,
    r#"{"slot":3,"pid":null,"generation":null,"state":"errored","uptime_ms":null,"restarts":5,"#,
    r#""last_exit":{"pid":4095,"reason":"exited with code 1","code":1,"signal":null,"#,
    r#""at":"2023-11-14T22:13:20.123Z"},"cpu_percent":null,"rss_bytes":null},"#,
    r#"{"slot":4,"pid":null,"generation":null,"state":"backoff","uptime_ms":null,"restarts":1,"#,
    r#""last_exit":{"pid":4096,"reason":"was killed by signal 40","code":null,"#,
    r#""signal":"40","at":"2023-11-14T22:13:20.123Z"},"cpu_percent":null,"#,
    r#""rss_bytes":null},"#,
    r#"{"slot":5,"pid":4104,"generation":1,"state":"draining","uptime_ms":1500,"restarts":0,"#,
    r#""last_exit":{"pid":4097,"reason":"exited (status unknown)","code":null,"signal":null,"#,
    r#""at":"2023-11-14T22:13:20.123Z"},"cpu_percent":null,"rss_bytes":null,"#,
    r#""last_replacement":{"pid":4098,"kind":"max-memory","#,
    r#""reason":"rss 312 MiB over --max-memory 256 MiB","at":"2023-11-14T22:13:20.123Z"},"#,
    r#""replacements":{"max-memory":2,"watchdog":1}}],"#,
    r#""shared_state":{"url":"redis+unix:///run/user/1000/herdsman/4100/state.sock","#,
    r#""kind":"embedded","tcp":"127.0.0.1:6390","keys":12,"used_memory":4096,"clients":3,"commands_processed":250},"#,
    r#""foreign_listeners":[{"address":"0.0.0.0:8000","pid":777,"command":"nginx","#,
    r#""cluster":null,"slot":null,"in_group":true,"#,
    r#""description":"nginx (pid 777) takes some of the cluster's connections"}],"#,
    r#""also_serving":["127.0.0.1:9000"]}"#,
);

#[test]
fn typed_status_maps_to_the_documented_json() {
    let reply = super::Reply::from(&full_example());
    assert_eq!(serde_json::to_string(&reply).unwrap(), FULL_EXAMPLE_JSON);
}

#[test]
fn an_external_store_and_no_store() {
    let mut status = full_example();
    status.shared_state = Some(StateStatus {
        url: "redis://cache:6379/0".into(),
        tcp: None,
        embedded: None,
    });
    let json = serde_json::to_value(super::ClusterStatus::from(&status)).unwrap();
    assert_eq!(
        json["shared_state"],
        serde_json::json!({"url": "redis://cache:6379/0", "kind": "external", "tcp": null,
            "keys": null, "used_memory": null, "clients": null, "commands_processed": null})
    );
    status.shared_state = None;
    let json = serde_json::to_value(super::ClusterStatus::from(&status)).unwrap();
    assert_eq!(json["shared_state"], serde_json::Value::Null);
}

#[test]
fn updates_and_log_lines_map_to_their_replies() {
    let progress = super::Reply::from(Update::Progress {
        message: "slot 1 ready".into(),
    });
    let done = super::Reply::from(Update::Done {
        ok: false,
        message: "failed".into(),
    });
    let log = super::Reply::Log(
        (&LogEntry {
            time: at(1_700_000_000_123),
            slot: Some(2),
            pid: 42,
            stream: "stderr",
            line: "hello".into(),
        })
            .into(),
    );
    let lines: Vec<String> = [progress, done, log]
        .iter()
        .map(|reply| serde_json::to_string(reply).unwrap())
        .collect();
    assert_eq!(
        lines,
        [
            r#"{"type":"progress","message":"slot 1 ready"}"#,
            r#"{"type":"result","ok":false,"message":"failed"}"#,
            r#"{"type":"log","time":"2023-11-14T22:13:20.123Z","slot":2,"pid":42,"stream":"stderr","line":"hello"}"#,
        ]
    );
}
