//! What `CLIENT LIST` and `CLIENT INFO` show of each connection, in Redis 7.0's exact line
//! format (clients such as rq parse it: `addr=` must be there).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;

use super::store::Mailbox;

/// Where a connection comes from.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    /// `ip:port` for TCP; `/path/to/socket:0` for a Unix socket, as Redis writes it.
    pub addr: String,
    pub laddr: String,
    pub fd: i32,
    pub unix: bool,
}

impl Peer {
    pub fn unix(path: &std::path::Path, fd: i32) -> Peer {
        let addr = format!("{}:0", path.display());
        Peer {
            laddr: addr.clone(),
            addr,
            fd,
            unix: true,
        }
    }

    pub fn tcp(peer: std::net::SocketAddr, local: std::net::SocketAddr, fd: i32) -> Peer {
        Peer {
            addr: peer.to_string(),
            laddr: local.to_string(),
            fd,
            unix: false,
        }
    }
}

/// One client as the store's list knows it, updated by its connection as it runs commands.
#[derive(Debug)]
pub struct ClientInfo {
    pub id: u64,
    pub peer: Peer,
    pub created: Instant,
    pub last_active: Cell<Instant>,
    pub name: RefCell<Option<Bytes>>,
    pub db: Cell<usize>,
    pub channels: Cell<usize>,
    pub patterns: Cell<usize>,
    /// Commands queued in `MULTI`, or -1 outside one.
    pub multi: Cell<i64>,
    /// A watched key changed (`d`).
    pub dirty: Cell<bool>,
    pub no_evict: Cell<bool>,
    /// In MONITOR mode.
    pub monitor: Cell<bool>,
    /// The last command, as `CLIENT LIST`'s `cmd=` (`get`, `client|list`).
    pub command: RefCell<String>,
    pub resp: Cell<u8>,
    pub mailbox: Rc<Mailbox>,
    /// What the busy-script loop did to this client's transaction while a script held the
    /// store (it answers on the socket and cannot reach the connection's queue).
    pub busy_transaction: Cell<BusyTransaction>,
    /// Commands the busy-script loop queued in this client's open transaction (`HELLO`,
    /// `AUTH`: the ones Redis lets through a busy script and then queues), for the connection
    /// to append to its queue.
    pub busy_queued: RefCell<Vec<Vec<Bytes>>>,
}

/// Transaction changes made by the busy-script loop (`script/busy.rs`), for the connection to
/// apply before its next command. `multi` itself is set by the loop directly: a `MULTI` makes
/// it 0, a `DISCARD` or an `EXEC` -1.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct BusyTransaction {
    /// The transaction was discarded (by `DISCARD`, or an `EXEC` refused with `EXECABORT`):
    /// its queue goes and its keys are unwatched.
    pub discarded: bool,
    /// `UNWATCH` outside a transaction.
    pub unwatched: bool,
    /// A command was refused with BUSY inside the transaction now open: its `EXEC` aborts.
    pub failed: bool,
}

impl ClientInfo {
    pub fn new(id: u64, peer: Peer, mailbox: Rc<Mailbox>) -> ClientInfo {
        let now = Instant::now();
        ClientInfo {
            id,
            peer,
            created: now,
            last_active: Cell::new(now),
            name: RefCell::new(None),
            db: Cell::new(0),
            channels: Cell::new(0),
            patterns: Cell::new(0),
            multi: Cell::new(-1),
            dirty: Cell::new(false),
            no_evict: Cell::new(false),
            monitor: Cell::new(false),
            command: RefCell::new("NULL".into()),
            resp: Cell::new(2),
            mailbox,
            busy_transaction: Cell::new(BusyTransaction::default()),
            busy_queued: RefCell::new(Vec::new()),
        }
    }

    /// Redis's flag letters: O monitor, P pub/sub, x in MULTI, d a watched key changed, U Unix socket,
    /// e no-evict; N for none.
    fn flags(&self) -> String {
        let mut flags = String::new();
        if self.monitor.get() {
            flags.push('O');
        }
        if self.channels.get() + self.patterns.get() > 0 {
            flags.push('P');
        }
        if self.multi.get() >= 0 {
            flags.push('x');
        }
        if self.dirty.get() {
            flags.push('d');
        }
        if self.peer.unix {
            flags.push('U');
        }
        if self.no_evict.get() {
            flags.push('e');
        }
        if flags.is_empty() {
            flags.push('N');
        }
        flags
    }

    /// The client's `CLIENT LIST` line, newline included. The buffer figures are Redis's
    /// names with nothing to report (the store keeps no per-client buffers of that kind).
    pub fn line(&self, now: Instant) -> String {
        let name = self
            .name
            .borrow()
            .as_deref()
            .map(String::from_utf8_lossy)
            .unwrap_or_default()
            .into_owned();
        format!(
            "id={} addr={} laddr={} fd={} name={name} age={} idle={} flags={} db={} sub={} psub={} ssub=0 multi={} qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd={} user=default redir=-1 resp={}\n",
            self.id,
            self.peer.addr,
            self.peer.laddr,
            self.peer.fd,
            now.duration_since(self.created).as_secs(),
            now.duration_since(self.last_active.get()).as_secs(),
            self.flags(),
            self.db.get(),
            self.channels.get(),
            self.patterns.get(),
            self.multi.get(),
            self.command.borrow(),
            self.resp.get(),
        )
    }
}
