//! The busy-script rule: a script that runs past `lua-time-limit` (5 s) must not wedge the
//! store. The store is single-threaded and the script holds its thread, so the connection
//! tasks cannot run; instead Lua's instruction hook (every 10 000 instructions) serves the
//! other clients itself once the limit has passed, with plain non-blocking socket calls:
//!
//! - each connected client's socket is peeked (`MSG_PEEK`); the complete requests in it are
//!   taken off the socket and answered `-BUSY …`, except `SCRIPT KILL`, which stops the script
//!   (or answers `-UNKILLABLE …` once the script has written, as in Redis). A request not yet
//!   complete stays on the socket for its connection to read when the script is over;
//! - the transaction commands that Redis lets through a busy script (`allow-busy`) act as
//!   there: `MULTI`, `DISCARD` and `UNWATCH` run, a command refused inside a transaction makes
//!   its `EXEC` abort, and `EXEC` itself is refused as `-EXECABORT Transaction discarded
//!   because of: BUSY …`, ending the transaction; so a transaction never runs half of its
//!   commands. The loop cannot reach a connection's queue: it notes what it did in the
//!   client's `busy_transaction` and the connection applies it before its next command;
//! - the listeners are accepted from as well, so a new `redis-cli SCRIPT KILL` gets through;
//!   those connections are answered the same way and handed to the server loop afterwards.
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

use crate::state::clients::ClientInfo;
use crate::state::request::RequestParser;
use crate::state::store::Store;

const BUSY: &[u8] =
    b"-BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.\r\n";
const BUSY_FUNCTION: &[u8] =
    b"-BUSY Redis is busy running a script. You can only call FUNCTION KILL or SHUTDOWN NOSAVE.\r\n";
const UNKILLABLE: &[u8] = b"-UNKILLABLE Sorry the script already executed write commands against the dataset. You can either wait the script termination or kill the server in a hard way using the SHUTDOWN NOSAVE command.\r\n";

/// A connection accepted while a script was busy: its socket, and whether it is TCP.
pub type Adopted = (OwnedFd, bool);

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
}

impl Busy {
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
            self.answer(info.peer.fd, Some(&info));
        }
        for &(listener, tcp) in self.listeners.borrow().iter() {
            for _ in 0..16 {
                let Some(owned) = crate::sys::accept_nowait(listener) else {
                    break;
                };
                self.accepted.borrow_mut().push((owned, tcp));
            }
        }
        let accepted: Vec<RawFd> = self
            .accepted
            .borrow()
            .iter()
            .map(|(fd, _)| std::os::fd::AsRawFd::as_raw_fd(fd))
            .collect();
        for fd in accepted {
            self.answer(fd, None);
        }
    }

    /// Answers the complete requests waiting on `fd` (the socket of `client`, or of a
    /// connection accepted meanwhile), and takes them off the socket.
    fn answer(&self, fd: RawFd, client: Option<&ClientInfo>) {
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
                match client {
                    Some(client) => transaction_reply(client, args, busy, &mut replies),
                    None => replies.extend_from_slice(busy),
                }
            }
        }
        if consumed == 0 {
            return;
        }
        crate::sys::consume_and_reply(fd, consumed, &replies);
    }
}

/// The reply to `args` from `client` while a script is busy, with what it does to the
/// client's transaction (Redis 7.0's `processCommand`: `MULTI`, `DISCARD`, `UNWATCH` are
/// allowed while busy; a refused command flags the open transaction; a refused `EXEC` aborts
/// it, open or not, with the reason).
fn transaction_reply(
    client: &ClientInfo,
    args: &[bytes::Bytes],
    busy: &[u8],
    replies: &mut Vec<u8>,
) {
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
            pending.discarded = true;
            pending.failed = false;
            replies.extend_from_slice(b"+OK\r\n");
        }
        (b"discard", 1) => replies.extend_from_slice(b"-ERR DISCARD without MULTI\r\n"),
        (b"exec", _) => {
            client.multi.set(-1);
            pending.discarded = true;
            pending.failed = false;
            replies.extend_from_slice(b"-EXECABORT Transaction discarded because of: ");
            replies.extend_from_slice(&busy[1..]);
        }
        (b"unwatch", 1) if !open => {
            pending.unwatched = true;
            replies.extend_from_slice(b"+OK\r\n");
        }
        _ => {
            pending.failed |= open;
            replies.extend_from_slice(busy);
        }
    }
    client.busy_transaction.set(pending);
}
