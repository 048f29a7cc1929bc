//! The primary's end of the control socket.
//!
//! The socket lives at `RUNTIME_DIR/NAME.sock` (mode 0600, in a 0700 directory), beside
//! `NAME.lock`, which the primary holds an exclusive lock on for its whole life. The lock, not the
//! socket file, says whether a cluster of that name runs: the kernel releases it when the primary
//! dies, even by SIGKILL, so a socket left behind is recognised as stale and replaced, and two
//! live primaries never share a name. Every connection's peer uid is checked (SO_PEERCRED).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::ipc::frame::Target;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{broadcast, mpsc, oneshot, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::protocol::{LogLine, Reply, Request};
use crate::domain::{LogEntry, Update};
use crate::ipc::channel::{Delivered, INBOX_BYTES};
use crate::primary::{Intent, LogHub};
use crate::runtime_dir;

/// A request line longer than this (its `\n` included) is refused.
pub const MAX_REQUEST: usize = 64 * 1024;
/// A client must send its request within this time.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; `herdsman logs -f` holds one for as long as it follows.
pub const MAX_CONNECTIONS: usize = 64;
/// Connections beyond [`MAX_CONNECTIONS`] that are told so at once; any more are closed unanswered.
const MAX_REFUSALS: usize = 64;
/// After its answer, how long a connection is read (and what it sends discarded) for the client
/// to close it, and how much is read at most: closing a socket with unread data resets the
/// connection, and the reset could destroy the answer on its way.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
const DRAIN_BYTES: usize = 16 * 1024 * 1024;
/// How long to wait after a failed accept before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// With a default (derived) name, `NAME-2` … `NAME-N` are tried when NAME is taken.
const DEFAULT_NAME_TRIES: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(
        "a cluster named `{name}` is already running (pid {pid}); stop it with \
         `herdsman stop {name}`, or give this one another --name"
    )]
    NameTaken { name: String, pid: String },
    #[error("cannot set up the control socket {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

/// Whether a primary holds the lock of cluster `name` (what `herdsman ls` lists, and what a
/// foreign socket on the port is checked against).
pub fn is_running(name: &str) -> bool {
    let Ok(lock) = File::open(runtime_dir::base().join(format!("{name}.lock"))) else {
        return false;
    };
    matches!(lock.try_lock_shared(), Err(TryLockError::WouldBlock))
}

/// The bound control socket; owns the cluster's name while it lives.
pub struct ControlSocket {
    listener: UnixListener,
    file: SocketFile,
    lock: File,
}

/// Removes the socket file when the primary is done with it.
struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl ControlSocket {
    /// Claims `name` (or, when it was derived rather than given, the first free `name-N`) and
    /// binds its socket. Returns the socket and the name claimed. Runs on the primary's runtime.
    pub fn bind(name: &str, explicit: bool) -> Result<(ControlSocket, String), ControlError> {
        let base = runtime_dir::base();
        let io_error = |path: &PathBuf| {
            let path = path.clone();
            move |source| ControlError::Io { path, source }
        };
        runtime_dir::ensure_private_dir(&base).map_err(io_error(&base))?;
        let tries = if explicit { 1 } else { DEFAULT_NAME_TRIES };
        let mut first_taken = None;
        for attempt in 1..=tries {
            let candidate = if attempt == 1 {
                name.to_string()
            } else {
                format!("{name}-{attempt}")
            };
            let lock_path = base.join(format!("{candidate}.lock"));
            let mut lock = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&lock_path)
                .map_err(io_error(&lock_path))?;
            match lock.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => {
                    let mut pid = String::new();
                    let _ = lock.read_to_string(&mut pid);
                    first_taken.get_or_insert((candidate, pid.trim().to_string()));
                    continue;
                }
                Err(TryLockError::Error(error)) => return Err(io_error(&lock_path)(error)),
            }
            lock.set_len(0)
                .and_then(|()| lock.rewind())
                .map_err(io_error(&lock_path))?;
            write!(lock, "{}", std::process::id()).map_err(io_error(&lock_path))?;
            let path = base.join(format!("{candidate}.sock"));
            // We hold the lock, so a socket file here was left by a primary that died.
            let _ = std::fs::remove_file(&path);
            let listener = UnixListener::bind(&path).map_err(io_error(&path))?;
            let file = SocketFile(path.clone());
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(io_error(&path))?;
            return Ok((
                ControlSocket {
                    listener,
                    file,
                    lock,
                },
                candidate,
            ));
        }
        let (name, pid) = first_taken.unwrap_or_default();
        Err(ControlError::NameTaken { name, pid })
    }

    /// Serves requests until the task is aborted (the primary exits), sending intents to the
    /// supervisor and reading logs from `hub`. Dropping the task removes the socket file and
    /// releases the name.
    /// Serves clients until `shutdown` is cancelled: then it stops accepting, and the
    /// connections it serves end.
    pub fn serve(
        self,
        intents: mpsc::UnboundedSender<Intent>,
        hub: Arc<LogHub>,
        shutdown: CancellationToken,
    ) -> JoinHandle<()> {
        let ControlSocket {
            listener,
            file,
            lock,
        } = self;
        tokio::spawn(async move {
            let _owned = (file, lock);
            let served = Arc::new(Semaphore::new(MAX_CONNECTIONS));
            let refused = Arc::new(Semaphore::new(MAX_REFUSALS));
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    () = shutdown.cancelled() => return,
                };
                match accepted {
                    Ok((stream, _)) => {
                        if let Ok(permit) = served.clone().try_acquire_owned() {
                            let (intents, hub) = (intents.clone(), hub.clone());
                            let shutdown = shutdown.clone();
                            tokio::spawn(async move {
                                tokio::select! {
                                    () = serve_connection(stream, intents, hub) => {}
                                    () = shutdown.cancelled() => {}
                                }
                                drop(permit);
                            });
                        } else if let Ok(permit) = refused.clone().try_acquire_owned() {
                            tokio::spawn(async move {
                                refuse_busy(stream).await;
                                drop(permit);
                            });
                        }
                        // Else the connection is closed unanswered: every slot is taken.
                    }
                    // Out of file descriptors, most likely: let some close before trying again.
                    Err(_) => tokio::time::sleep(ACCEPT_BACKOFF).await,
                }
            }
        })
    }
}

type Reader = BufReader<tokio::net::unix::OwnedReadHalf>;

/// Serves one connection, then reads what the client may still send until it closes (see
/// [`DRAIN_TIMEOUT`]).
async fn serve_connection(
    stream: UnixStream,
    intents: mpsc::UnboundedSender<Intent>,
    hub: Arc<LogHub>,
) {
    let peer = stream.peer_cred().map(|credentials| credentials.uid());
    let (reader, mut writer) = stream.into_split();
    let mut reader = BufReader::new(reader);
    handle(peer, &mut reader, &mut writer, intents, hub).await;
    drain(reader).await;
}

/// Tells a client that every connection is taken, and closes cleanly.
async fn refuse_busy(stream: UnixStream) {
    let (reader, mut writer) = stream.into_split();
    let message = format!(
        "busy: {MAX_CONNECTIONS} control connections are open, the most the primary serves at \
         once (`herdsman logs -f` holds one each); close some and try again"
    );
    Replies {
        writer: &mut writer,
    }
    .finish(false, message)
    .await;
    drain(BufReader::new(reader)).await;
}

/// Reads and discards what the client still sends, until it closes (or [`DRAIN_TIMEOUT`],
/// [`DRAIN_BYTES`]).
async fn drain(mut reader: Reader) {
    let mut sink = vec![0u8; 16 * 1024];
    let mut left = DRAIN_BYTES;
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while left > 0 {
            match reader.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(read) => left = left.saturating_sub(read),
            }
        }
    })
    .await;
}

/// How reading the request line went.
enum Incoming {
    Line(Vec<u8>),
    /// More than one line arrived.
    SeveralLines,
    /// [`MAX_REQUEST`] bytes and no end of line.
    TooLarge,
    /// The client closed (or shut down its side) before the end of the line.
    Incomplete,
    Failed(io::Error),
    TimedOut,
}

async fn read_request(reader: &mut Reader) -> Incoming {
    let mut line = Vec::new();
    let limited = (&mut *reader).take(MAX_REQUEST as u64);
    let read = tokio::time::timeout(REQUEST_TIMEOUT, async {
        let mut limited = limited;
        limited.read_until(b'\n', &mut line).await
    })
    .await;
    match read {
        Err(_) => Incoming::TimedOut,
        Ok(Err(error)) => Incoming::Failed(error),
        Ok(Ok(_)) if line.ends_with(b"\n") => {
            // What came with the line, in the same read; what comes later is discarded.
            let rest = reader.buffer();
            if rest.iter().all(u8::is_ascii_whitespace) {
                Incoming::Line(line)
            } else {
                Incoming::SeveralLines
            }
        }
        Ok(Ok(_)) if line.len() >= MAX_REQUEST => Incoming::TooLarge,
        Ok(Ok(_)) => Incoming::Incomplete,
    }
}

async fn handle(
    peer: io::Result<u32>,
    reader: &mut Reader,
    writer: &mut tokio::net::unix::OwnedWriteHalf,
    intents: mpsc::UnboundedSender<Intent>,
    hub: Arc<LogHub>,
) {
    let mut client = Replies { writer };
    // The request is read before anything is answered, even a refusal: closing a socket with
    // unread data resets the connection, and the reset could destroy the answer on its way.
    let incoming = read_request(reader).await;
    let owner = nix::unistd::getuid().as_raw();
    let refusal = match peer {
        Ok(uid) if uid == owner || uid == 0 => None,
        Ok(uid) => Some(format!(
            "permission denied: uid {uid} may not control this cluster, which belongs to uid \
             {owner}; run the command as that user"
        )),
        Err(error) => Some(format!("cannot check who is asking: {error}")),
    };
    if let Some(refusal) = refusal {
        return client.finish(false, refusal).await;
    }
    let problem = match incoming {
        Incoming::Line(line) => Ok(line),
        Incoming::TooLarge => Err(format!(
            "request too large: {MAX_REQUEST} bytes without an end of line; the limit is {} KiB \
             per request, one JSON object on one line (send a long message in parts)",
            MAX_REQUEST / 1024
        )),
        Incoming::SeveralLines => Err("bad request: more than one line; send one request per \
             connection, as one JSON object on one line"
            .into()),
        Incoming::Incomplete => Err(
            "bad request: the connection ended before the end of the line; end the request \
             with a newline"
                .into(),
        ),
        Incoming::Failed(error) => Err(format!("bad request: {error}")),
        Incoming::TimedOut => Err(format!(
            "bad request: none arrived within {}s",
            REQUEST_TIMEOUT.as_secs()
        )),
    };
    let request = match problem {
        Ok(line) => serde_json::from_slice::<Request>(&line),
        Err(message) => return client.finish(false, message).await,
    };
    let request = match request {
        Ok(request) => request,
        Err(error) => return client.finish(false, format!("bad request: {error}")).await,
    };
    match request {
        Request::Status {} => {
            let (reply, status) = oneshot::channel();
            let _ = intents.send(Intent::Status(reply));
            match status.await {
                Ok(status) => {
                    if client.send(&Reply::from(&status)).await {
                        client.finish(true, String::new()).await;
                    }
                }
                Err(_) => client.finish(false, "the primary is stopping".into()).await,
            }
        }
        Request::Reload { parallel } => {
            let (progress, replies) = mpsc::unbounded_channel();
            let _ = intents.send(Intent::Reload {
                parallel,
                progress: Some(progress),
            });
            client.relay(replies).await;
        }
        Request::Restart { slot } => {
            let (progress, replies) = mpsc::unbounded_channel();
            let _ = intents.send(Intent::Restart {
                slot,
                progress: Some(progress),
            });
            client.relay(replies).await;
        }
        Request::Scale { to } => {
            let (progress, replies) = mpsc::unbounded_channel();
            let _ = intents.send(Intent::Scale {
                target: to,
                progress: Some(progress),
            });
            client.relay(replies).await;
        }
        Request::Send { to, data } => {
            let target = match to.as_str() {
                "all" => Some(Target::All),
                slot => slot
                    .parse()
                    .ok()
                    .filter(|slot| *slot >= 1)
                    .map(Target::Slot),
            };
            let Some(target) = target else {
                let message = format!("`{to}` is neither a slot number nor `all`");
                client.finish(false, message).await;
                return;
            };
            let (reply, delivered) = oneshot::channel();
            let _ = intents.send(Intent::Send {
                to: target,
                data,
                reply,
            });
            match delivered.await {
                Ok(Delivered { queued: 0, dropped }) if dropped > 0 => {
                    let which = if to != "all" {
                        format!("worker {to}")
                    } else if dropped == 1 {
                        "1 worker".to_string()
                    } else {
                        format!("{dropped} workers")
                    };
                    let message = format!(
                        "not sent: the IPC inbox of {which} is full ({} unread: not read \
                         from), so the message was dropped",
                        inbox_size()
                    );
                    client.finish(false, message).await
                }
                Ok(Delivered { queued: 0, .. }) => {
                    let message = if to == "all" {
                        "no worker has an IPC channel (start the cluster with --ipc or --ipc node)"
                            .to_string()
                    } else {
                        format!("worker {to} has no IPC channel (no such slot, or the cluster runs without --ipc)")
                    };
                    client.finish(false, message).await
                }
                Ok(Delivered { queued, dropped }) => {
                    let workers = if queued == 1 { "worker" } else { "workers" };
                    let dropped = match dropped {
                        0 => String::new(),
                        count => format!(
                            "; dropped for {count} whose IPC inbox is full ({} unread)",
                            inbox_size()
                        ),
                    };
                    client
                        .finish(true, format!("sent to {queued} {workers}{dropped}"))
                        .await
                }
                Err(_) => client.finish(false, "the primary is stopping".into()).await,
            }
        }
        Request::Stop {} => {
            let _ = intents.send(Intent::Stop { fast: false });
            // No result: the connection closes when the primary exits, which is what the
            // client waits for.
            let message = "stopping; waiting for the workers to finish".to_string();
            client.send(&Reply::Progress { message }).await;
            std::future::pending::<()>().await;
        }
        Request::Logs {
            slot,
            lines,
            follow,
        } => {
            let mut new_lines = hub.subscribe();
            let (recent, last) = hub.recent(slot, lines);
            for line in recent {
                if !client.send(&Reply::Log(LogLine::from(&line))).await {
                    return;
                }
            }
            if !follow {
                return client.finish(true, String::new()).await;
            }
            loop {
                let line = match new_lines.recv().await {
                    Ok((number, _)) if last.is_some_and(|last| number <= last) => continue,
                    Ok((_, line)) if slot.is_some() && line.slot != slot => continue,
                    Ok((_, line)) => line,
                    Err(broadcast::error::RecvError::Lagged(missed)) => LogEntry {
                        time: std::time::SystemTime::now(),
                        slot: None,
                        pid: std::process::id(),
                        stream: "herdsman",
                        line: format!("({missed} lines skipped: this client read too slowly)"),
                    },
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if !client.send(&Reply::Log(LogLine::from(&line))).await {
                    return;
                }
            }
        }
    }
}

/// Writes reply lines to one client (`control::client` is the CLI's end).
struct Replies<'a> {
    writer: &'a mut tokio::net::unix::OwnedWriteHalf,
}

impl Replies<'_> {
    /// Sends one reply line; `false` when the client has gone.
    async fn send(&mut self, reply: &Reply) -> bool {
        let mut line = serde_json::to_string(reply).unwrap_or_default();
        line.push('\n');
        self.writer.write_all(line.as_bytes()).await.is_ok()
    }

    async fn finish(&mut self, ok: bool, message: String) {
        self.send(&Reply::Result { ok, message }).await;
        let _ = self.writer.shutdown().await;
    }

    /// Forwards progress replies until a result (or the primary goes away).
    async fn relay(&mut self, mut updates: mpsc::UnboundedReceiver<Update>) {
        while let Some(update) = updates.recv().await {
            let done = matches!(update, Update::Done { .. });
            if !self.send(&Reply::from(update)).await || done {
                let _ = self.writer.shutdown().await;
                return;
            }
        }
        self.finish(false, "the primary stopped before the request ended".into())
            .await;
    }
}

fn inbox_size() -> String {
    format!("{} MiB", INBOX_BYTES / (1024 * 1024))
}
