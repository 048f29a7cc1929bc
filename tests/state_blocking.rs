//! Blocking commands in the embedded store (issue 14): first blocked, first served, per key;
//! `CLIENT UNBLOCK`; timeouts; a blocked client that disconnects is forgotten; XREAD BLOCK.

use std::time::{Duration, Instant};

use crate::support::cluster;
use crate::support::resp::{printable, state_socket, RespClient};

fn state_cluster() -> crate::support::Cluster {
    let cluster = cluster()
        .args(&["--workers", "1", "--ready-delay", "100ms"])
        .start();
    cluster.wait_ready(1);
    cluster
}

/// Waits until the store reports `count` blocked clients.
fn wait_blocked(client: &mut RespClient, count: usize) {
    crate::support::eventually(&format!("{count} blocked clients"), || {
        client
            .text("INFO clients")
            .contains(&format!("blocked_clients:{count}\\r\\n"))
            .then_some(())
    });
}

#[test]
fn blocked_clients_are_served_first_come_first_served_and_can_be_unblocked() {
    let cluster = state_cluster();
    let socket = state_socket(&cluster);
    let mut control = RespClient::unix(&socket);
    let mut first = RespClient::unix(&socket);
    let mut second = RespClient::unix(&socket);
    first.send(&[b"BLPOP", b"jobs", b"0"]);
    wait_blocked(&mut control, 1);
    second.send(&[b"BLPOP", b"other", b"jobs", b"0"]);
    wait_blocked(&mut control, 2);
    assert_eq!(control.text("RPUSH jobs one two"), ":2\\r\\n");
    let reply = |client: &mut RespClient| printable(&client.read_reply().unwrap());
    assert_eq!(
        reply(&mut first),
        "*2\\r\\n$4\\r\\njobs\\r\\n$3\\r\\none\\r\\n"
    );
    assert_eq!(
        reply(&mut second),
        "*2\\r\\n$4\\r\\njobs\\r\\n$3\\r\\ntwo\\r\\n"
    );
    wait_blocked(&mut control, 0);
    assert_eq!(control.text("EXISTS jobs"), ":0\\r\\n");

    // CLIENT UNBLOCK: as a timeout, or with an error; a request pipelined behind the blocked
    // command runs after it.
    let id = first.text("CLIENT ID");
    let id = id
        .trim_start_matches(':')
        .trim_end_matches("\\r\\n")
        .to_string();
    first.send(&[b"BZPOPMIN", b"board", b"0"]);
    first.send(&[b"PING"]);
    wait_blocked(&mut control, 1);
    assert_eq!(control.text(&format!("CLIENT UNBLOCK {id}")), ":1\\r\\n");
    assert_eq!(reply(&mut first), "*-1\\r\\n");
    assert_eq!(reply(&mut first), "+PONG\\r\\n");
    first.send(&[b"BLMOVE", b"a", b"b", b"LEFT", b"LEFT", b"0"]);
    wait_blocked(&mut control, 1);
    assert_eq!(
        control.text(&format!("CLIENT UNBLOCK {id} ERROR")),
        ":1\\r\\n"
    );
    assert_eq!(
        reply(&mut first),
        "-UNBLOCKED client unblocked via CLIENT UNBLOCK\\r\\n"
    );
    assert_eq!(control.text(&format!("CLIENT UNBLOCK {id}")), ":0\\r\\n");

    // A timeout in seconds, as a double; a blocked client that disconnects is forgotten.
    let started = Instant::now();
    assert_eq!(first.text("BRPOP nothing 0.2"), "*-1\\r\\n");
    assert!(started.elapsed() >= Duration::from_millis(200));
    second.send(&[b"BLPOP", b"gone", b"0"]);
    wait_blocked(&mut control, 1);
    drop(second);
    wait_blocked(&mut control, 0);
    assert_eq!(control.text("RPUSH gone x"), ":1\\r\\n");
    assert_eq!(control.text("LLEN gone"), ":1\\r\\n");
}

/// XREAD BLOCK: every reader of a stream is woken by an XADD; one whose ID is still ahead of
/// the stream waits on, and its timeout counts from when it blocked, however often it is woken.
#[test]
fn stream_readers_are_all_served_and_one_woken_too_early_keeps_its_deadline() {
    let cluster = state_cluster();
    let socket = state_socket(&cluster);
    let mut control = RespClient::unix(&socket);
    let mut readers: Vec<RespClient> = (0..2).map(|_| RespClient::unix(&socket)).collect();
    for (count, reader) in readers.iter_mut().enumerate() {
        reader.send(&[b"XREAD", b"BLOCK", b"0", b"STREAMS", b"events", b"$"]);
        wait_blocked(&mut control, count + 1);
    }
    assert_eq!(control.text("XADD events 1-0 job 7"), "$3\\r\\n1-0\\r\\n");
    for reader in &mut readers {
        assert_eq!(
            printable(&reader.read_reply().unwrap()),
            "*1\\r\\n*2\\r\\n$6\\r\\nevents\\r\\n*1\\r\\n*2\\r\\n$3\\r\\n1-0\\r\\n*2\\r\\n$3\\r\\njob\\r\\n$1\\r\\n7\\r\\n"
        );
    }
    wait_blocked(&mut control, 0);

    let reader = &mut readers[0];
    // Timed from before the send: the store's deadline cannot start earlier, however late
    // `wait_blocked` sees the reader blocked on a loaded machine.
    let started = Instant::now();
    reader.send(&[b"XREAD", b"BLOCK", b"500", b"STREAMS", b"events", b"9999-0"]);
    wait_blocked(&mut control, 1);
    // An entry every 50 ms for 2 s, none after the reader's ID: each wakes it in vain.
    let writer = std::thread::spawn(move || {
        for ms in 2..42 {
            let reply = control.text(&format!("XADD events {ms}-0 n {ms}"));
            assert!(reply.starts_with('$'), "{reply}");
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    assert_eq!(printable(&reader.read_reply().unwrap()), "*-1\\r\\n");
    let waited = started.elapsed();
    writer.join().unwrap();
    assert!(
        waited >= Duration::from_millis(500) && waited < Duration::from_millis(1500),
        "timed out after {waited:?}, not 500 ms"
    );
}
