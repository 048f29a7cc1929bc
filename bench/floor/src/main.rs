//! The floors: the least CPU a primary can spend on this machine to hand a connection to a
//! worker, and to relay one, for the benchmark scripts to put beside herdsman's own primary.
//!
//!   floor handoff PORT WORKERS -- COMMAND [ARGS...]   (bench/rrcpu.sh's `floor`)
//!   floor node-handoff PORT WORKERS -- node APP.js     (bench/node.sh's `floor-node`)
//!   floor relay PORT WORKERS -- COMMAND [ARGS...]     (bench/cluster.sh's `floor-relay`)
//!
//! Each binds 127.0.0.1:PORT, starts WORKERS copies of COMMAND as herdsman starts them, and then
//! does nothing but its data path, in one thread on one blocking `epoll_wait`:
//! - `handoff` (`--balance round-robin --ipc`: `HERDSMAN_IPC_FD`, `HERDSMAN_HANDOFF`): accepts
//!   while a worker has no connection unanswered (`--max-pending 1`, in turn), sends it with
//!   herdsman's `connection` frame (SCM_RIGHTS), reads the answers, and closes its copy once
//!   `accepted` (`handoff`).
//! - `node-handoff` (`--balance round-robin` with Node workers: `NODE_UNIQUE_ID`,
//!   `NODE_CHANNEL_FD`): the same loop in Node's cluster dialect. It answers each worker's
//!   `queryServer` as Node's round-robin primary does (no handle, a `sockname`), hands each
//!   connection as Node's `newconn` (a `NODE_HANDLE` frame with SCM_RIGHTS), and waits for the
//!   worker's `accepted`, so every cost the worker pays for Node's protocol is in the measure
//!   and none of a real primary's.
//! - `relay` (`--balance proxy-rr`: `PORT` a private loopback port, `HOST`): connects each
//!   client to a worker in turn and copies bytes both ways until either end closes (`relay`).
//!
//! No runtime, no timers, no control plane, no liveness questions, no HTTP framing, no retry,
//! no recovery of a connection a dying worker held, no half-close: what herdsman's primary does
//! besides is what the difference between the two measures. Written by hand (not a crate)
//! because it is the system calls themselves that are measured. It runs until it is killed; its
//! workers get SIGTERM when it dies (`PR_SET_PDEATHSIG`).

use std::io::{self, IoSlice, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::socket::{accept4, recv, send, sendmsg, ControlMessage, MsgFlags, SockFlag};

/// The listener's epoll token.
const LISTENER: u64 = u64::MAX;

fn main() {
    if let Err(error) = run() {
        eprintln!("floor: {error}");
        std::process::exit(1);
    }
}

fn run() -> io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = || {
        io::Error::other(
            "usage: floor handoff|node-handoff|relay PORT WORKERS -- COMMAND [ARGS...]",
        )
    };
    let (Some(mode), Some(port), Some(count), Some("--")) = (
        args.first().map(String::as_str),
        args.get(1).and_then(|port| port.parse::<u16>().ok()),
        args.get(2).and_then(|count| count.parse::<usize>().ok()),
        args.get(3).map(String::as_str),
    ) else {
        return Err(usage());
    };
    let command = args
        .get(4..)
        .filter(|command| !command.is_empty())
        .ok_or_else(usage)?;
    let listener = TcpListener::bind(("127.0.0.1", port))?;
    listener.set_nonblocking(true)?;
    let workers = count.max(1);
    match mode {
        "handoff" => handoff(listener, workers, command, Dialect::Herdsman),
        "node-handoff" => handoff(listener, workers, command, Dialect::Node),
        "relay" => relay(listener, workers, command),
        _ => Err(usage()),
    }
}

/// Starts `command` with `env`, and `channel` (if any) as its fd 3.
fn spawn(
    command: &[String],
    env: &[(&str, String)],
    channel: Option<&UnixStream>,
) -> io::Result<()> {
    let mut worker = Command::new(&command[0]);
    worker
        .args(&command[1..])
        .envs(env.iter().map(|(key, value)| (key, value)));
    let fd = channel.map(AsRawFd::as_raw_fd);
    // SAFETY: between fork and exec only async-signal-safe calls (prctl, dup2).
    unsafe {
        worker.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(io::Error::last_os_error());
            }
            if let Some(fd) = fd {
                if libc::dup2(fd, 3) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    worker.spawn().map(drop)
}

fn wait(epoll: &Epoll, events: &mut [EpollEvent]) -> io::Result<usize> {
    loop {
        match epoll.wait(events, EpollTimeout::NONE) {
            Ok(ready) => return Ok(ready),
            Err(Errno::EINTR) => continue,
            Err(error) => return Err(error.into()),
        }
    }
}

/// The next connection waiting on `listener`, `None` when there is none.
fn accept(listener: &TcpListener) -> io::Result<Option<OwnedFd>> {
    loop {
        match accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
            // SAFETY: accept4 returned a new descriptor that nothing else owns.
            Ok(fd) => return Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) })),
            Err(Errno::EAGAIN) => return Ok(None),
            Err(Errno::ECONNABORTED | Errno::EINTR) => continue,
            Err(error) => return Err(error.into()),
        }
    }
}

struct Handoff {
    channel: UnixStream,
    /// The connection handed and not answered yet.
    pending: Option<OwnedFd>,
    /// The start of a line the last read cut.
    partial: Vec<u8>,
    /// Whether it takes connections: at once for herdsman's workers, once it asked for the
    /// server (`queryServer`) for Node's.
    serving: bool,
}

/// Which protocol the workers speak.
#[derive(Clone, Copy, PartialEq)]
enum Dialect {
    /// herdsman's: `connection` frames, `accepted`/`refused` answers.
    Herdsman,
    /// Node's cluster messages: `queryServer`, `newconn`, `{ack, accepted}`.
    Node,
}

/// The key of the one server a Node worker gets: any string, the worker sends it back.
const NODE_KEY: &str = "floor";

impl Dialect {
    fn env(self, address: SocketAddr, slot: usize, count: usize) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("HERDSMAN_WORKER_ID", slot.to_string()),
            ("HERDSMAN_WORKER_COUNT", count.to_string()),
        ];
        match self {
            Dialect::Herdsman => {
                env.push(("HERDSMAN_IPC_FD", "3".to_string()));
                env.push(("HERDSMAN_HANDOFF", address.to_string()));
            }
            Dialect::Node => {
                env.push(("NODE_UNIQUE_ID", slot.to_string()));
                env.push(("NODE_CHANNEL_FD", "3".to_string()));
                env.push(("NODE_CHANNEL_SERIALIZATION_MODE", "json".to_string()));
                env.push(("PORT", address.port().to_string()));
                env.push(("HOST", address.ip().to_string()));
            }
        }
        env
    }

    /// The line that carries connection `id`'s fd.
    fn connection(self, id: u64) -> String {
        match self {
            Dialect::Herdsman => format!("{{\"id\":{id},\"type\":\"connection\"}}\n"),
            Dialect::Node => format!(
                "{{\"cmd\":\"NODE_HANDLE\",\"type\":\"net.Native\",\"msg\":{{\"cmd\":\"NODE_CLUSTER\",\
                 \"act\":\"newconn\",\"key\":\"{NODE_KEY}\",\"seq\":{id}}}}}\n"
            ),
        }
    }
}

fn handoff(
    listener: TcpListener,
    count: usize,
    command: &[String],
    dialect: Dialect,
) -> io::Result<()> {
    let address = listener.local_addr()?;
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    // Edge-triggered: the loop remembers that connections may wait (`backlog`) and accepts
    // them once a worker is free, without a wake-up per connection it cannot hand yet.
    epoll.add(
        &listener,
        EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLET, LISTENER),
    )?;
    let mut workers = Vec::new();
    for slot in 1..=count {
        let (ours, theirs) = UnixStream::pair()?;
        spawn(command, &dialect.env(address, slot, count), Some(&theirs))?;
        epoll.add(
            &ours,
            EpollEvent::new(EpollFlags::EPOLLIN, workers.len() as u64),
        )?;
        workers.push(Handoff {
            channel: ours,
            pending: None,
            partial: Vec::new(),
            serving: dialect == Dialect::Herdsman,
        });
    }
    println!("floor handoff: listening on {address}, all {count} workers started");

    let mut events = [EpollEvent::empty(); 16];
    let mut buffer = vec![0u8; 64 * 1024];
    let mut backlog = true;
    let mut turn = 0;
    let mut next_id = 0u64;
    loop {
        let ready = wait(&epoll, &mut events)?;
        for event in &events[..ready] {
            if event.data() == LISTENER {
                backlog = true;
                continue;
            }
            let worker = &mut workers[event.data() as usize];
            let read = recv(worker.channel.as_raw_fd(), &mut buffer, MsgFlags::empty())?;
            if read == 0 {
                return Err(io::Error::other("a worker closed its channel"));
            }
            worker.partial.extend_from_slice(&buffer[..read]);
            let Some(end) = worker.partial.iter().rposition(|&byte| byte == b'\n') else {
                continue;
            };
            let mut answered = false;
            let mut query = None;
            for line in worker.partial[..end].split(|&byte| byte == b'\n') {
                answered |= contains(line, b"\"accepted\"") || contains(line, b"\"refused\"");
                if dialect == Dialect::Node && contains(line, b"\"queryServer\"") {
                    query = Some(seq_of(line)?);
                }
            }
            worker.partial.drain(..=end);
            if answered {
                // Closes the primary's copy: the worker holds the connection now.
                worker.pending = None;
            }
            if let Some(seq) = query {
                // Node's round-robin answer: no handle, the address the worker listens on.
                let reply = format!(
                    "{{\"cmd\":\"NODE_CLUSTER\",\"errno\":0,\"key\":\"{NODE_KEY}\",\"ack\":{seq},\
                     \"data\":null,\"sockname\":{{\"address\":\"{}\",\"family\":\"IPv4\",\
                     \"port\":{}}},\"seq\":0}}\n",
                    address.ip(),
                    address.port()
                );
                (&worker.channel).write_all(reply.as_bytes())?;
                worker.serving = true;
            }
        }
        while backlog {
            let free = (0..workers.len())
                .map(|offset| (turn + offset) % workers.len())
                .find(|&index| workers[index].serving && workers[index].pending.is_none());
            let Some(index) = free else { break };
            let Some(connection) = accept(&listener)? else {
                backlog = false;
                break;
            };
            let line = dialect.connection(next_id);
            let fds = [connection.as_raw_fd()];
            let worker = &mut workers[index];
            let sent = sendmsg::<()>(
                worker.channel.as_raw_fd(),
                &[IoSlice::new(line.as_bytes())],
                &[ControlMessage::ScmRights(&fds)],
                MsgFlags::MSG_NOSIGNAL,
                None,
            )?;
            if sent != line.len() {
                return Err(io::Error::other("a handoff line went out in part"));
            }
            worker.pending = Some(connection);
            next_id += 1;
            turn = index + 1;
        }
    }
}

/// The `seq` of a Node cluster message (`…"seq":N…`).
fn seq_of(line: &[u8]) -> io::Result<u64> {
    let at = line
        .windows(6)
        .position(|window| window == b"\"seq\":")
        .ok_or_else(|| io::Error::other("a queryServer without seq"))?;
    let digits: String = line[at + 6..]
        .iter()
        .take_while(|byte| byte.is_ascii_digit())
        .map(|&byte| byte as char)
        .collect();
    digits
        .parse()
        .map_err(|_| io::Error::other("a queryServer with a bad seq"))
}

/// A client's connection and its worker's: token `2 × index` is the client's side, `+ 1` the
/// worker's.
struct Pair {
    ends: [TcpStream; 2],
}

fn relay(listener: TcpListener, count: usize, command: &[String]) -> io::Result<()> {
    let address = listener.local_addr()?;
    let mut upstreams: Vec<SocketAddr> = Vec::new();
    for slot in 1..=count {
        let private = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let env = [
            ("PORT", private.port().to_string()),
            ("HOST", "127.0.0.1".to_string()),
            ("TESTSERVER_HOST", "127.0.0.1".to_string()),
            ("HERDSMAN_WORKER_ID", slot.to_string()),
            ("HERDSMAN_WORKER_COUNT", count.to_string()),
        ];
        spawn(command, &env, None)?;
        upstreams.push(private);
    }
    // Serving once every private port accepts (10 s at most).
    let deadline = Instant::now() + Duration::from_secs(10);
    for upstream in &upstreams {
        while TcpStream::connect(upstream).is_err() {
            if Instant::now() > deadline {
                return Err(io::Error::other(format!("no worker accepts on {upstream}")));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    epoll.add(&listener, EpollEvent::new(EpollFlags::EPOLLIN, LISTENER))?;
    println!("floor relay: listening on {address}, all {count} workers serving");

    let mut pairs: Vec<Option<Pair>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut events = [EpollEvent::empty(); 64];
    let mut buffer = vec![0u8; 64 * 1024];
    let mut turn = 0;
    loop {
        let ready = wait(&epoll, &mut events)?;
        for event in &events[..ready] {
            if event.data() == LISTENER {
                while let Some(client) = accept(&listener)? {
                    let client = TcpStream::from(client);
                    let Ok(upstream) = TcpStream::connect(upstreams[turn % upstreams.len()]) else {
                        continue;
                    };
                    turn += 1;
                    // Blocking sockets: epoll says when to read; a write waits for room.
                    client.set_nonblocking(false)?;
                    client.set_nodelay(true)?;
                    upstream.set_nodelay(true)?;
                    let index = free.pop().unwrap_or_else(|| {
                        pairs.push(None);
                        pairs.len() - 1
                    });
                    for (side, end) in [&client, &upstream].into_iter().enumerate() {
                        let token = (2 * index + side) as u64;
                        epoll.add(end, EpollEvent::new(EpollFlags::EPOLLIN, token))?;
                    }
                    pairs[index] = Some(Pair {
                        ends: [client, upstream],
                    });
                }
                continue;
            }
            let (index, side) = (event.data() as usize / 2, event.data() as usize % 2);
            let Some(pair) = &pairs[index] else { continue };
            let read = recv(
                pair.ends[side].as_raw_fd(),
                &mut buffer,
                MsgFlags::MSG_DONTWAIT,
            );
            let closed = match read {
                Ok(0) => true,
                Ok(read) => !write_all(&pair.ends[1 - side], &buffer[..read]),
                Err(Errno::EAGAIN | Errno::EINTR) => false,
                Err(_) => true,
            };
            if closed {
                // Either end closed: both go (their fds leave the epoll set as they close).
                pairs[index] = None;
                free.push(index);
            }
        }
    }
}

/// Writes all of `bytes` to `to` (a blocking socket); false if it is gone.
fn write_all(to: &TcpStream, mut bytes: &[u8]) -> bool {
    while !bytes.is_empty() {
        match send(to.as_raw_fd(), bytes, MsgFlags::MSG_NOSIGNAL) {
            Ok(sent) => bytes = &bytes[sent..],
            Err(Errno::EINTR) => {}
            Err(_) => return false,
        }
    }
    true
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}
