//! The busy-script rule: a script that runs past `lua-time-limit` (5 s) must not wedge the
//! store. The store is single-threaded and the script holds its thread, so the connection
//! tasks cannot run; instead Lua's instruction hook (every 10 000 instructions) serves the
//! other clients itself once the limit has passed, with plain non-blocking socket calls:
//!
//! - each connected client's socket is peeked (`MSG_PEEK`); the complete requests in it are
//!   taken off the socket and answered `-BUSY …`, except `SCRIPT KILL`, which stops the script
//!   (or answers `-UNKILLABLE …` once the script has written, as in Redis). A request not yet
//!   complete stays on the socket for its connection to read when the script is over;
//! - `HELLO` (so a client library that says HELLO on connect can connect and send `SCRIPT
//!   KILL`), `AUTH`, and `SHUTDOWN` (which the store always refuses), which Redis 7.0 flags
//!   `allow-busy`, run as there: they need only the client's own state, which the loop reaches
//!   through its `ClientInfo`; inside a transaction the first two are queued, as Redis queues
//!   them. `WATCH`, `RESET` and `QUIT` are `allow-busy` too but need the store or the
//!   connection task, which wait for the script, and `FUNCTION STATS` is not implemented:
//!   those get `-BUSY`;
//! - the transaction commands that Redis lets through a busy script (`allow-busy`) act as
//!   there: `MULTI`, `DISCARD` and `UNWATCH` run, a command refused inside a transaction makes
//!   its `EXEC` abort, and `EXEC` itself is refused as `-EXECABORT Transaction discarded
//!   because of: BUSY …`, ending the transaction; so a transaction never runs half of its
//!   commands. The loop cannot reach a connection's queue: it notes what it did in the
//!   client's `busy_transaction` and the connection applies it before its next command;
//! - the listeners are accepted from as well, so a new `redis-cli SCRIPT KILL` gets through;
//!   those connections are numbered at once (a `HELLO` tells the id), answered the same way,
//!   and handed to the server loop afterwards with what their commands set.
//!
//! The alternative, running scripts on another thread, would need the whole store behind a
//! lock; this keeps the store's one-thread design and costs nothing until the limit passes.
//! One thing the hook cannot see: a client's request whose first bytes its connection had
//! already read before the script started is left alone (its rest does not parse as a
//! request) and answered when the script ends.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::os::fd::{OwnedFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use mlua::VmState;

use super::super::management;
use crate::state::clients::{BusyTransaction, ClientInfo, Peer};
use crate::state::reply::Out;
use crate::state::request::RequestParser;
use crate::state::store::{Mailbox, Store};

const BUSY: &[u8] =
    b"-BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.\r\n";
const BUSY_FUNCTION: &[u8] =
    b"-BUSY Redis is busy running a script. You can only call FUNCTION KILL or SHUTDOWN NOSAVE.\r\n";
const UNKILLABLE: &[u8] = b"-UNKILLABLE Sorry the script already executed write commands against the dataset. You can either wait the script termination or kill the server in a hard way using the SHUTDOWN NOSAVE command.\r\n";

/// A connection accepted while a script was busy, for the server loop to serve afterwards.
#[derive(Debug)]
pub struct Adopted {
    pub socket: OwnedFd,
    pub tcp: bool,
    /// Its id and what its commands set meanwhile (see `Store::adopt_client`); the peer
    /// address is filled in at adoption.
    pub early: Rc<ClientInfo>,
}

/// The running script's state, shared by the store, the hook and the busy loop.
#[derive(Debug, Default)]
pub struct Busy {
    started: Cell<Option<Instant>>,
    /// The running script is a function (`FCALL`): `FUNCTION KILL` stops it.
    function: Cell<bool>,
    /// `busy-reply-threshold` (`lua-time-limit`) when CONFIG SET changed it.
    limit_ms: Cell<Option<u64>>,
    client: Cell<u64>,
    pub killed: Cell<bool>,
    /// The script ran a write command (it can no longer be killed).
    pub wrote: Rc<Cell<bool>>,
    /// The clients by id, for their sockets and transactions (kept by the store's
    /// register/unregister).
    pub sockets: RefCell<BTreeMap<u64, Rc<ClientInfo>>>,
    /// The listeners' sockets, and whether each is TCP.
    pub listeners: RefCell<Vec<(RawFd, bool)>>,
    /// Connections accepted while busy, for the server loop to serve afterwards.
    pub accepted: RefCell<Vec<Adopted>>,
    pub adopt: tokio::sync::Notify,
    /// Set from the primary's thread when the store is told to stop: a running script is then
    /// abandoned at the next hook, written or not (`SHUTDOWN NOSAVE`), so a script that loops
    /// forever cannot keep the primary from exiting.
    pub stopping: Arc<AtomicBool>,
    /// The running script was abandoned for the stop: its writes stay out of the state file.
    pub abandoned: Cell<bool>,
    /// The last client id given: clients are numbered here rather than in the store so that
    /// the loop can number the connections it accepts while the script holds the store.
    last_client_id: Cell<u64>,
}

impl Busy {
    /// The id of a new client (1 for the first, as in Redis).
    pub fn new_client_id(&self) -> u64 {
        let id = self.last_client_id.get() + 1;
        self.last_client_id.set(id);
        id
    }

    pub fn set_limit_ms(&self, limit: u64) {
        self.limit_ms.set(Some(limit));
    }

    fn limit(&self) -> std::time::Duration {
        self.limit_ms
            .get()
            .map_or(super::TIME_LIMIT, std::time::Duration::from_millis)
    }

    /// A script is running (its `redis.call`s are the ones MONITOR shows as `lua`).
    pub fn running(&self) -> bool {
        self.started.get().is_some()
    }

    pub fn start(&self, client: u64, function: bool) {
        self.started.set(Some(Instant::now()));
        self.function.set(function);
        self.client.set(client);
        self.killed.set(false);
        self.wrote.set(false);
        self.abandoned.set(false);
    }

    /// The script ended: connections accepted meanwhile go to the server loop.
    pub fn finish(&self, _store: &mut Store) {
        self.started.set(None);
        self.killed.set(false);
        if !self.accepted.borrow().is_empty() {
            self.adopt.notify_one();
        }
    }

    /// The instruction hook.
    pub fn tick(&self) -> mlua::Result<VmState> {
        let Some(started) = self.started.get() else {
            return Ok(VmState::Continue);
        };
        if self.stopping.load(Ordering::Relaxed) {
            self.abandoned.set(true);
            return super::hook_result(true);
        }
        // Killed or not, others are answered until the script is over.
        if started.elapsed() >= self.limit() {
            self.serve_others();
        }
        super::hook_result(self.killed.get())
    }

    fn serve_others(&self) {
        let running = self.client.get();
        let clients: Vec<Rc<ClientInfo>> = self
            .sockets
            .borrow()
            .iter()
            .filter(|(id, _)| **id != running)
            .map(|(_, info)| info.clone())
            .collect();
        for info in clients {
            self.answer(info.peer.fd, &info);
        }
        for &(listener, tcp) in self.listeners.borrow().iter() {
            for _ in 0..16 {
                let Some(socket) = crate::sys::accept_nowait(listener) else {
                    break;
                };
                let fd = std::os::fd::AsRawFd::as_raw_fd(&socket);
                let peer = Peer {
                    fd,
                    unix: !tcp,
                    ..Peer::default()
                };
                let early =
                    ClientInfo::new(self.new_client_id(), peer, Rc::new(Mailbox::default()));
                self.accepted.borrow_mut().push(Adopted {
                    socket,
                    tcp,
                    early: Rc::new(early),
                });
            }
        }
        let accepted: Vec<Rc<ClientInfo>> = self
            .accepted
            .borrow()
            .iter()
            .map(|adopted| adopted.early.clone())
            .collect();
        for info in accepted {
            self.answer(info.peer.fd, &info);
        }
    }

    /// Answers the complete requests waiting on `fd` (the socket of `client`, connected
    /// before the script or accepted meanwhile), and takes them off the socket.
    fn answer(&self, fd: RawFd, client: &ClientInfo) {
        let mut peeked = vec![0u8; 64 * 1024];
        let total = crate::sys::peek_nowait(fd, &mut peeked);
        if total == 0 {
            return;
        }
        let mut input = BytesMut::from(&peeked[..total]);
        let mut parser = RequestParser::new(crate::state::request::MAX_BULK);
        let mut consumed = 0;
        let mut replies = Vec::new();
        while let Ok(Some(args)) = parser.next(&mut input) {
            consumed = total - input.len();
            let container: &[u8] = if self.function.get() {
                b"function"
            } else {
                b"script"
            };
            let kill = args.len() == 2
                && args[0].eq_ignore_ascii_case(container)
                && args[1].eq_ignore_ascii_case(b"kill");
            if kill && self.wrote.get() {
                replies.extend_from_slice(UNKILLABLE);
            } else if kill {
                self.killed.set(true);
                replies.extend_from_slice(b"+OK\r\n");
            } else {
                let busy = if self.function.get() {
                    BUSY_FUNCTION
                } else {
                    BUSY
                };
                busy_reply(client, args, busy, &mut replies);
            }
        }
        if consumed == 0 {
            return;
        }
        crate::sys::consume_and_reply(fd, consumed, &replies);
    }
}

/// The reply to `args` from `client` while a script is busy, with what it does to the
/// client's transaction (Redis 7.0's `processCommand`: the `allow-busy` commands the loop can
/// run, run; a refused command flags the open transaction; a refused `EXEC` aborts it, open or
/// not, with the reason).
fn busy_reply(client: &ClientInfo, args: &[bytes::Bytes], busy: &[u8], replies: &mut Vec<u8>) {
    let mut pending = client.busy_transaction.get();
    let open = client.multi.get() >= 0;
    let name = args[0].to_ascii_lowercase();
    match (name.as_slice(), args.len()) {
        (b"multi", 1) if open => {
            replies.extend_from_slice(b"-ERR MULTI calls can not be nested\r\n")
        }
        (b"multi", 1) => {
            client.multi.set(0);
            pending.failed = false;
            replies.extend_from_slice(b"+OK\r\n");
        }
        (b"discard", 1) if open => {
            client.multi.set(-1);
            client.busy_queued.take();
            pending.discarded = true;
            pending.failed = false;
            replies.extend_from_slice(b"+OK\r\n");
        }
        (b"discard", 1) => replies.extend_from_slice(b"-ERR DISCARD without MULTI\r\n"),
        (b"exec", _) => {
            client.multi.set(-1);
            client.busy_queued.take();
            pending.discarded = true;
            pending.failed = false;
            replies.extend_from_slice(b"-EXECABORT Transaction discarded because of: ");
            replies.extend_from_slice(&busy[1..]);
        }
        (b"unwatch", 1) if !open => {
            pending.unwatched = true;
            replies.extend_from_slice(b"+OK\r\n");
        }
        (b"auth", 1) => replies.extend_from_slice(&error(
            super::super::arity_error("auth").0.as_ref(),
            &mut pending,
            open,
        )),
        (b"hello" | b"auth", _) if open => {
            client.busy_queued.borrow_mut().push(args.to_vec());
            client.multi.set(client.multi.get() + 1);
            replies.extend_from_slice(b"+QUEUED\r\n");
        }
        (b"hello" | b"auth", _) => {
            let mut out = Out {
                resp3: client.resp.get() == 3,
                ..Out::default()
            };
            let done = if name == b"hello" {
                management::hello_to(client, &mut out, args)
            } else {
                management::auth_to(&mut out, args)
            };
            if let Err(fail) = done {
                out.error(&fail.0);
            }
            replies.extend_from_slice(&out.buf);
        }
        (b"shutdown", _) if open => replies.extend_from_slice(&error(
            "ERR Command not allowed inside a transaction",
            &mut pending,
            open,
        )),
        (b"shutdown", _) => {
            replies.extend_from_slice(&error(management::SHUTDOWN_REFUSED, &mut pending, open))
        }
        _ => {
            pending.failed |= open;
            replies.extend_from_slice(busy);
        }
    }
    client.busy_transaction.set(pending);
}

/// The error reply `text`, which, as any refused command, makes an open transaction fail.
fn error(text: &str, pending: &mut BusyTransaction, open: bool) -> Vec<u8> {
    pending.failed |= open;
    let mut out = Out::default();
    out.error(text);
    out.buf.to_vec()
}
