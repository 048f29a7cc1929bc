//! Handles on a real socketpair: the frame and its fd in one `sendmsg`, Node's flow control
//! (nothing after a handle before its `NODE_HANDLE_ACK`), no fd left open, and real Node
//! taking a listening socket as a `net.Server`.

use std::io::{IoSliceMut, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use serde_json::json;
use tokio::sync::mpsc;

use super::*;

const ACK: &[u8] = b"{\"cmd\":\"NODE_HANDLE_ACK\"}\n";
const NACK_LINE: &str = "{\"cmd\":\"NODE_HANDLE_NACK\"}";

/// The worker's end, read as Node reads it: `recvmsg`, keeping the fds that come.
struct NodeEnd {
    stream: StdUnixStream,
    pending: Vec<u8>,
    fds: Vec<OwnedFd>,
}

impl NodeEnd {
    fn new(stream: StdUnixStream) -> NodeEnd {
        stream
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        NodeEnd {
            stream,
            pending: Vec::new(),
            fds: Vec::new(),
        }
    }

    /// One `recvmsg`; false if nothing came within 50 ms.
    #[allow(unsafe_code)]
    fn receive(&mut self) -> bool {
        let mut buffer = vec![0u8; 64 * 1024];
        let mut space = nix::cmsg_space!([RawFd; 4]);
        let mut iov = [IoSliceMut::new(&mut buffer)];
        let (bytes, fds) = match recvmsg::<()>(
            self.stream.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(message) => {
                let mut fds = Vec::new();
                for control in message.cmsgs().unwrap() {
                    if let ControlMessageOwned::ScmRights(received) = control {
                        fds.extend(received);
                    }
                }
                (message.bytes, fds)
            }
            Err(Errno::EAGAIN) => return false,
            Err(error) => panic!("recvmsg: {error}"),
        };
        assert!(bytes > 0, "the primary closed the channel");
        for fd in fds {
            // SAFETY: recvmsg just installed `fd` in this process; nothing else owns it.
            self.fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        self.pending.extend_from_slice(&buffer[..bytes]);
        true
    }

    /// The next line, and the fds that came since the last one, within 10 s.
    fn line(&mut self) -> (String, Vec<OwnedFd>) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(newline) = self.pending.iter().position(|&byte| byte == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=newline).collect();
                let line = String::from_utf8(line[..newline].to_vec()).unwrap();
                return (line, std::mem::take(&mut self.fds));
            }
            assert!(Instant::now() < deadline, "no line within 10 s");
            self.receive();
        }
    }

    /// Nothing comes for 300 ms.
    fn nothing(&mut self) {
        let until = Instant::now() + Duration::from_millis(300);
        while Instant::now() < until {
            assert!(!self.receive(), "got {}", self.pending.escape_ascii());
        }
    }

    fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }
}

/// How many of this process's fds are `socket` (its open file), from /proc/self/fd: exact
/// while other tests run, as no other test holds this socket.
fn fds_on(socket: &impl AsRawFd) -> usize {
    let target = std::fs::read_link(format!("/proc/self/fd/{}", socket.as_raw_fd())).unwrap();
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter(|link| *link == target)
        .count()
}

/// Waits up to 10 s for `socket` to be open `count` times in this process.
async fn wait_for_fds(socket: &impl AsRawFd, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while fds_on(socket) != count {
        assert!(
            Instant::now() < deadline,
            "{} fds on the socket, not {count}",
            fds_on(socket)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn dup(listener: &TcpListener) -> OwnedFd {
    OwnedFd::from(listener.try_clone().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handle_rides_with_its_frame_and_is_closed_once_acknowledged() {
    let (primary, theirs, _reading) = PrimaryChannel::pair(Dialect::Node, |_| {}).unwrap();
    let mut node = NodeEnd::new(theirs);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let reply = json!({"errno": 0, "key": "127.0.0.1:0:4:undefined:0", "ack": 2, "data": null});
    let sent = primary.send_internal_handle(reply.as_object().unwrap(), dup(&listener).into());
    assert!(matches!(sent.delivery, Delivery::Queued { .. }), "{sent:?}");
    assert_eq!(sent.seq, 0);
    let (line, fds) = node.line();
    assert_eq!(
        line,
        "{\"cmd\":\"NODE_HANDLE\",\"type\":\"net.Native\",\"msg\":{\"cmd\":\"NODE_CLUSTER\",\
         \"ack\":2,\"data\":null,\"errno\":0,\"key\":\"127.0.0.1:0:4:undefined:0\",\"seq\":0}}"
    );
    assert_eq!(fds.len(), 1);
    let received = TcpListener::from(fds.into_iter().next().unwrap());
    assert_eq!(
        received.local_addr().unwrap(),
        listener.local_addr().unwrap()
    );
    // The same listening socket: a connection to it is accepted from the received fd.
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (accepted, _) = received.accept().unwrap();
    assert_eq!(accepted.peer_addr().unwrap(), client.local_addr().unwrap());
    // The listener, the primary's copy (until the worker acknowledges it), the received one.
    assert_eq!(fds_on(&listener), 3);
    node.write(ACK);
    wait_for_fds(&listener, 2).await;
    drop(received);
    assert_eq!(fds_on(&listener), 1);

    // A handle the inbox refuses, or sent on a channel whose worker is gone, is closed too.
    let huge = Value::String("x".repeat(INBOX_BYTES));
    let refused = primary.send_handle(&huge, "net.Server", dup(&listener));
    assert!(matches!(refused, Delivery::TooLarge { .. }), "{refused:?}");
    assert_eq!(fds_on(&listener), 1);
    drop(node);
    let mut delivery = Delivery::Queued {
        dropped: 0,
        bytes: 0,
    };
    for _ in 0..1000 {
        delivery = primary.send_handle(&json!(1), "net.Server", dup(&listener));
        if delivery == Delivery::Closed {
            break;
        }
        wait_for_fds(&listener, 1).await;
    }
    assert_eq!(delivery, Delivery::Closed);
    assert_eq!(fds_on(&listener), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_after_a_handle_wait_for_its_ack() {
    let (reported, mut reports) = mpsc::unbounded_channel();
    let (primary, theirs, _reading) = PrimaryChannel::pair(Dialect::Node, move |received| {
        let _ = reported.send(received);
    })
    .unwrap();
    let mut node = NodeEnd::new(theirs);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let handle = primary.send_handle(&json!({"hello": 1}), "net.Server", dup(&listener));
    assert!(matches!(handle, Delivery::Queued { .. }));
    assert!(matches!(
        primary.send(&json!("after"), None),
        Delivery::Queued { .. }
    ));
    let disconnect = json!({"act": "disconnect"});
    let sent = primary.send_internal(disconnect.as_object().unwrap());
    assert_eq!(sent.seq, 0);
    let frame = "{\"cmd\":\"NODE_HANDLE\",\"type\":\"net.Server\",\"msg\":{\"hello\":1}}";
    let (line, fds) = node.line();
    assert_eq!((line.as_str(), fds.len()), (frame, 1));
    drop(fds);
    node.nothing();

    // A handle from the worker is refused at once, ahead of the queue, and reported; its fd
    // never reaches the primary.
    let theirs = TcpListener::bind("127.0.0.1:0").unwrap();
    let line = b"{\"cmd\":\"NODE_HANDLE\",\"type\":\"net.Server\",\"msg\":\"mine\"}\n";
    super::tests::send_with_fd(&node.stream, line, &theirs);
    assert_eq!(node.line().0, NACK_LINE);
    let report = tokio::time::timeout(Duration::from_secs(10), reports.recv()).await;
    assert_eq!(
        report.unwrap().unwrap(),
        Received::Frame(FromWorker::UnsupportedHandle {
            handle_type: Some("net.Server".into()),
            message: json!("mine")
        })
    );
    assert_eq!(fds_on(&theirs), 1);
    node.nothing();

    // NODE_HANDLE_NACK (the fd did not come): the same frame, with the fd, again.
    node.write(format!("{NACK_LINE}\n").as_bytes());
    let (again, fds) = node.line();
    assert_eq!((again.as_str(), fds.len()), (frame, 1));
    node.nothing();
    assert_eq!(fds_on(&listener), 3);
    drop(fds);

    // The ACK releases what waited, in order.
    node.write(ACK);
    assert_eq!(node.line().0, "\"after\"");
    assert_eq!(
        node.line().0,
        "{\"cmd\":\"NODE_CLUSTER\",\"act\":\"disconnect\",\"seq\":0}"
    );
    wait_for_fds(&listener, 1).await;
    // A stray ACK (none awaited) does not let the next handle's followers through.
    node.write(ACK);
    node.nothing();
    primary.send_handle(&json!(2), "net.Server", dup(&listener));
    primary.send(&json!("later"), None);
    assert_eq!(node.line().1.len(), 1);
    node.nothing();
    node.write(ACK);
    assert_eq!(node.line().0, "\"later\"");
}

/// Real Node takes a listening socket sent as `net.Server` (its public conversion) and serves
/// on it; the message queued behind the handle reaches it once it acknowledged the handle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_serves_on_a_listening_socket_sent_as_a_net_server() {
    const SCRIPT: &str = r#"
const net = require('node:net');
// The test's end gone: exit (1 unless this script was done and disconnected itself).
let done = false;
process.on('disconnect', () => process.exit(done ? 0 : 1));
process.on('message', (message, server) => {
  if (message === 'after') return process.send({ after: true });
  if (!(server instanceof net.Server) || !server.listening)
    return process.send({ bad: String(server) });
  server.on('connection', (socket) => {
    socket.end(JSON.stringify({ pid: process.pid, message }) + '\n');
    server.close();
    done = true;
    process.disconnect();
  });
  process.send({ listening: server.address().port });
});
"#;
    let (reported, mut reports) = mpsc::unbounded_channel();
    let (primary, theirs, _reading) = PrimaryChannel::pair(Dialect::Node, move |received| {
        let _ = reported.send(received);
    })
    .unwrap();
    // The channel at fd 3, as the exec shim puts a worker's (`NODE_CHANNEL_FD`).
    let node = Reap(
        Command::new("sh")
            .args(["-c", "exec node -e \"$1\" 3<&0 0</dev/null", "sh", SCRIPT])
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .env("NODE_CHANNEL_FD", "3")
            .env("NODE_CHANNEL_SERIALIZATION_MODE", "json")
            .spawn()
            .expect("node runs (scripts/test.sh installs it)"),
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let hello = json!({"hello": "server"});
    assert!(matches!(
        primary.send_handle(&hello, "net.Server", dup(&listener)),
        Delivery::Queued { .. }
    ));
    assert!(matches!(
        primary.send(&json!("after"), None),
        Delivery::Queued { .. }
    ));
    let mut next = async || {
        let report = tokio::time::timeout(Duration::from_secs(10), reports.recv()).await;
        match report.expect("node answers within 10 s").unwrap() {
            Received::Frame(FromWorker::Message { data, .. }) => data,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(next().await, json!({"listening": port}));
    assert_eq!(next().await, json!({"after": true}));
    // Acknowledged: the primary's copy is closed.
    wait_for_fds(&listener, 1).await;
    let answer = tokio::task::spawn_blocking(move || {
        let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut answer = String::new();
        client.read_to_string(&mut answer).unwrap();
        answer
    })
    .await
    .unwrap();
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer, json!({"pid": node.0.id(), "message": hello}));
    let exited = tokio::task::spawn_blocking(move || {
        let mut node = node;
        node.0.wait().unwrap()
    })
    .await
    .unwrap();
    assert!(exited.success(), "{exited:?}");
}

/// A child killed and reaped when the test ends, failed or not.
struct Reap(std::process::Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
