use std::time::Duration;

use super::*;
use crate::ipc::frame::Target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What a channel's reader reported, as a stream.
fn collect<F: Send + 'static>() -> (
    impl FnMut(Received<F>) + Send + 'static,
    mpsc::UnboundedReceiver<Received<F>>,
) {
    let (sender, receiver) = mpsc::unbounded_channel();
    (
        move |received| {
            let _ = sender.send(received);
        },
        receiver,
    )
}

async fn next<F>(received: &mut mpsc::UnboundedReceiver<Received<F>>) -> Received<F> {
    tokio::time::timeout(Duration::from_secs(10), received.recv())
        .await
        .expect("a report within 10 s")
        .expect("the reader reports until the channel closes")
}

#[tokio::test]
async fn both_ends_speak_through_one_channel_in_both_dialects() {
    for dialect in [Dialect::Herdsman, Dialect::Node] {
        let (at_primary, mut primary_got) = collect();
        let (primary, theirs, _reading) = PrimaryChannel::pair(dialect, at_primary).unwrap();
        let (at_worker, mut worker_got) = collect();
        let (worker, worker_reading) = WorkerChannel::open(theirs, dialect, at_worker).unwrap();

        let hello = FromWorker::Message {
            data: serde_json::json!({"jobs": 3}),
            to: Target::Primary,
        };
        assert!(matches!(
            worker.send(&FromWorker::Ready),
            Ok(Delivery::Queued { .. })
        ));
        assert!(matches!(worker.send(&hello), Ok(Delivery::Queued { .. })));
        assert_eq!(
            next(&mut primary_got).await,
            Received::Frame(FromWorker::Ready)
        );
        assert_eq!(next(&mut primary_got).await, Received::Frame(hello));
        primary.handled();
        primary.handled();

        let data = Value::from("flush");
        let from = (dialect == Dialect::Herdsman).then_some(2);
        assert!(matches!(primary.send(&data, from), Delivery::Queued { .. }));
        assert_eq!(
            next(&mut worker_got).await,
            Received::Frame(ToWorker::Message {
                data: std::borrow::Cow::Owned(data),
                from
            })
        );

        // The worker goes: the primary's reader reports end of file, and its sends fail.
        drop(worker);
        worker_reading.abort();
        assert_eq!(next(&mut primary_got).await, Received::Closed(None));
    }
}

#[tokio::test]
async fn a_bad_frame_cuts_the_channel_with_its_reason() {
    let (at_primary, mut primary_got) = collect();
    let (_primary, theirs, _reading) = PrimaryChannel::pair(Dialect::Herdsman, at_primary).unwrap();
    let mut theirs = UnixStream::from_std({
        theirs.set_nonblocking(true).unwrap();
        theirs
    })
    .unwrap();
    theirs
        .write_all(b"{\"type\":\"ready\"}\n{\"type\":\"shout\"}\n{\"type\":\"ready\"}\n")
        .await
        .unwrap();
    assert_eq!(
        next(&mut primary_got).await,
        Received::Frame(FromWorker::Ready)
    );
    assert_eq!(
            next(&mut primary_got).await,
            Received::Closed(Some(
                r#"frame {"type":"shout"} is not a herdsman frame: `type` must be "ready", "message", or a handoff answer ("accepted", "refused", "closed", "pong") with a numeric `id`"#
                    .into()
            ))
        );
    // Nothing after the bad frame, and the reader has ended.
    assert!(primary_got.recv().await.is_none());
}

/// A worker passes over frames it does not know (a newer primary's, such as a connection
/// handed over) and Node's own messages, and reads on; the primary passes over Node's.
#[tokio::test]
async fn each_end_passes_over_what_is_not_for_it_and_reads_on() {
    let (ours, theirs) = StdUnixStream::pair().unwrap();
    let (at_worker, mut worker_got) = collect();
    let (_worker, _reading) = WorkerChannel::open(theirs, Dialect::Herdsman, at_worker).unwrap();
    let mut ours = UnixStream::from_std({
        ours.set_nonblocking(true).unwrap();
        ours
    })
    .unwrap();
    ours.write_all(
        b"{\"type\":\"connection\",\"fd\":0}\n{\"data\":1,\"from\":3,\"type\":\"message\"}\n",
    )
    .await
    .unwrap();
    assert_eq!(
        next(&mut worker_got).await,
        Received::Frame(ToWorker::Message {
            data: std::borrow::Cow::Owned(Value::from(1)),
            from: Some(3)
        })
    );

    let (at_primary, mut primary_got) = collect();
    let (_primary, theirs, _reading) = PrimaryChannel::pair(Dialect::Node, at_primary).unwrap();
    let mut theirs = UnixStream::from_std({
        theirs.set_nonblocking(true).unwrap();
        theirs
    })
    .unwrap();
    theirs
        .write_all(b"{\"cmd\":\"NODE_HANDLE_ACK\"}\n\"ready\"\n")
        .await
        .unwrap();
    assert_eq!(
        next(&mut primary_got).await,
        Received::Frame(FromWorker::Ready)
    );
}

/// Writes `line` to `socket` with `fd` attached (SCM_RIGHTS), as a peer sending a handle does.
pub(super) fn send_with_fd(socket: &StdUnixStream, line: &[u8], fd: &impl AsRawFd) {
    let fds = [fd.as_raw_fd()];
    let sent = nix::sys::socket::sendmsg::<()>(
        socket.as_raw_fd(),
        &[std::io::IoSlice::new(line)],
        &[nix::sys::socket::ControlMessage::ScmRights(&fds)],
        nix::sys::socket::MsgFlags::empty(),
        None,
    )
    .unwrap();
    assert_eq!(sent, line.len());
}

/// The kernel ends a read at a frame that carried fds, with bytes still queued behind it: a
/// reader that took such a short read for "all there was" (and cleared the socket's readiness)
/// would wait for bytes that are already there. Everything is queued before each reader starts,
/// so no later write wakes it.
#[tokio::test]
async fn bytes_queued_behind_a_frame_with_fds_are_read_at_once() {
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let connection = std::net::TcpStream::connect(server.local_addr().unwrap()).unwrap();

    // The worker's end: two handed connections, then a message.
    let (ours, theirs) = StdUnixStream::pair().unwrap();
    send_with_fd(&ours, &handoff::line(Kind::Connection, 0), &connection);
    send_with_fd(&ours, &handoff::line(Kind::Connection, 1), &connection);
    let message = ToWorker::Message {
        data: std::borrow::Cow::Owned(Value::from(7)),
        from: None,
    };
    std::io::Write::write_all(&mut &ours, &message.encode(Dialect::Herdsman)).unwrap();
    let (at_worker, mut worker_got) = collect();
    let (_worker, _reading) = WorkerChannel::open(theirs, Dialect::Herdsman, at_worker).unwrap();
    for id in 0..2 {
        let received = next(&mut worker_got).await;
        assert!(
            matches!(received, Received::Connection { id: got, fd: Some(_) } if got == id),
            "connection {id} with its fd, got {received:?}"
        );
    }
    assert_eq!(next(&mut worker_got).await, Received::Frame(message));

    // The primary's end, which takes no fds: a Node worker's handle, then a message.
    let (ours, theirs) = StdUnixStream::pair().unwrap();
    send_with_fd(
        &theirs,
        b"{\"cmd\":\"NODE_HANDLE\",\"type\":\"net.Socket\",\"msg\":{\"a\":1}}\n",
        &connection,
    );
    std::io::Write::write_all(&mut &theirs, b"\"ready\"\n").unwrap();
    let (at_primary, mut primary_got) = collect();
    let (_primary, _reading) = PrimaryChannel::open(ours, Dialect::Node, at_primary).unwrap();
    assert!(matches!(
        next(&mut primary_got).await,
        Received::Frame(FromWorker::UnsupportedHandle { .. })
    ));
    assert_eq!(
        next(&mut primary_got).await,
        Received::Frame(FromWorker::Ready)
    );
}

#[tokio::test]
async fn the_primary_reads_no_further_than_the_frames_it_has_not_handled() {
    let (at_primary, mut primary_got) = collect();
    let (primary, theirs, _reading) = PrimaryChannel::pair(Dialect::Herdsman, at_primary).unwrap();
    let mut theirs = UnixStream::from_std({
        theirs.set_nonblocking(true).unwrap();
        theirs
    })
    .unwrap();
    let frames = b"{\"type\":\"ready\"}\n".repeat(UNHANDLED_FRAMES + 1);
    theirs.write_all(&frames).await.unwrap();
    for _ in 0..UNHANDLED_FRAMES {
        assert_eq!(
            next(&mut primary_got).await,
            Received::Frame(FromWorker::Ready)
        );
    }
    // The last waits until one is handled.
    let waiting = tokio::time::timeout(Duration::from_millis(200), primary_got.recv()).await;
    assert!(waiting.is_err(), "read past the bound: {waiting:?}");
    primary.handled();
    assert_eq!(
        next(&mut primary_got).await,
        Received::Frame(FromWorker::Ready)
    );
}

#[tokio::test]
async fn a_full_inbox_drops_whole_messages_and_counts_them() {
    let (channel, worker_end, _reader) = PrimaryChannel::pair(Dialect::Herdsman, |_| {}).unwrap();
    let message = Value::String("x".repeat(64 * 1024));
    // Nobody reads the worker's end: the kernel's buffer fills, then the inbox.
    let mut queued = 0;
    let first_drop = loop {
        match channel.send(&message, None) {
            Delivery::Queued { dropped: 0, .. } => queued += 1,
            other => break other,
        }
        tokio::task::yield_now().await;
        assert!(queued < 1000, "never full");
    };
    assert_eq!(first_drop, Delivery::Full { first: true });
    assert!(
        queued >= INBOX_BYTES / (64 * 1024 + FRAME_OVERHEAD + 64),
        "{queued}"
    );
    assert_eq!(
        channel.send(&message, None),
        Delivery::Full { first: false }
    );
    let huge = Value::String("x".repeat(INBOX_BYTES));
    assert!(matches!(
        channel.send(&huge, None),
        Delivery::TooLarge { .. }
    ));
    let mut reader = UnixStream::from_std({
        worker_end.set_nonblocking(true).unwrap();
        worker_end
    })
    .unwrap();
    let inbox = channel.inbox.clone().unwrap();
    let mut sink = vec![0u8; 1 << 20];
    // A little room (the kernel's buffer took a few frames more) is not the worker reading:
    // the run of drops goes on, nothing said yet.
    let taken = reader.read(&mut sink[..256 * 1024]).await.unwrap();
    assert!(taken > 0);
    for _ in 0..100 {
        if inbox.available_permits() > 2 * (64 * 1024 + FRAME_OVERHEAD + 64) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(inbox.available_permits() > 64 * 1024 + FRAME_OVERHEAD + 64);
    assert_eq!(
        channel.send(&message, None),
        Delivery::Full { first: false }
    );
    // The worker reads everything queued: the next message fits, and reports the drops.
    for _ in 0..10_000 {
        if inbox.available_permits() == INBOX_BYTES {
            break;
        }
        let _ = tokio::time::timeout(Duration::from_millis(20), reader.read(&mut sink)).await;
    }
    let delivery = channel.send(&Value::from(1), None);
    let line = ToWorker::Message {
        data: std::borrow::Cow::Borrowed(&message),
        from: None,
    }
    .encode(Dialect::Herdsman)
    .len() as u64;
    assert_eq!(
        delivery,
        Delivery::Queued {
            dropped: 3,
            bytes: 3 * line
        }
    );
}

#[tokio::test]
async fn a_handed_connection_arrives_with_its_fd_and_pings_are_answered_by_the_reader() {
    let (at_primary, mut primary_got) = collect();
    let (primary, theirs, _reading) = PrimaryChannel::pair(Dialect::Herdsman, at_primary).unwrap();
    let (at_worker, mut worker_got) = collect();
    let (worker, _worker_reading) =
        WorkerChannel::open(theirs, Dialect::Herdsman, at_worker).unwrap();
    // Three connections back to back: each fd pairs with its own frame.
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut clients = Vec::new();
    for index in 0..3u64 {
        let client = std::net::TcpStream::connect(server.local_addr().unwrap()).unwrap();
        let (accepted, _) = server.accept().unwrap();
        let sent = primary.send_connection(Arc::new(accepted.into()));
        assert_eq!(sent.seq, index);
        assert!(matches!(sent.delivery, Delivery::Queued { .. }));
        clients.push(client);
    }
    for (index, client) in clients.iter().enumerate() {
        let Received::Connection {
            id,
            fd: Some(Handed(fd)),
        } = next(&mut worker_got).await
        else {
            panic!("connection {index} without its fd");
        };
        assert_eq!(id, index as u64);
        let stream = std::net::TcpStream::from(fd);
        assert_eq!(stream.peer_addr().unwrap(), client.local_addr().unwrap());
    }
    let ping = primary.send_ping();
    assert_eq!(ping.seq, 3);
    assert_eq!(
        next(&mut primary_got).await,
        Received::Frame(FromWorker::Handoff {
            kind: Kind::Pong,
            id: 3
        })
    );
    worker.answer(Kind::Closed, 1);
    assert_eq!(
        next(&mut primary_got).await,
        Received::Frame(FromWorker::Handoff {
            kind: Kind::Closed,
            id: 1
        })
    );
}
