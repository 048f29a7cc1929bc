//! The store's thread: its own single-threaded runtime, the listeners, the clients, and the
//! timer that reclaims expired keys. The supervisor never waits on the store, and the store's
//! work never waits on the supervisor.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};
use tokio::sync::oneshot;
use tokio::task::LocalSet;

use std::os::fd::AsRawFd;

use super::clients::Peer;
use super::commands::Adopted;
use super::connection::{self, Limits};
use super::db::{now_ms, Now};
use super::store::{Store, DATABASES};

/// Reclaim expired keys this often (Redis: 10 times a second), at most this many per round
/// before letting clients in again.
const RECLAIM_EVERY: Duration = Duration::from_millis(100);
const RECLAIM_BATCH: usize = 20_000;
const RECLAIM_ROUNDS: usize = 10;
/// Give freed memory back to the kernel once this much has been freed since the peak.
const RELEASE_AFTER_FREEING: usize = 16 * 1024 * 1024;

/// What a client past `--state-max-clients` gets before it is closed: Redis's words, written
/// without waiting (best effort, as Redis does).
const MAX_CLIENTS_REACHED: &[u8] = b"-ERR max number of clients reached\r\n";

/// Figures the primary shows in `herdsman status`, refreshed by the store's timer.
#[derive(Debug, Default)]
pub struct LiveFigures {
    pub keys: AtomicU64,
    pub used_memory: AtomicU64,
    pub clients: AtomicU64,
    pub commands: AtomicU64,
}

pub struct Listening {
    pub unix: std::os::unix::net::UnixListener,
    pub tcp: Option<std::net::TcpListener>,
}

/// Serves until `stop` fires, then flushes the append-only file.
pub fn run(
    store: Store,
    listening: Listening,
    limits: Limits,
    figures: Arc<LiveFigures>,
    stop: oneshot::Receiver<()>,
) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = LocalSet::new();
    let store = Rc::new(RefCell::new(store));
    local.block_on(
        &runtime,
        serve(store.clone(), listening, limits, figures, stop),
    )?;
    drop(local);
    let store = Rc::try_unwrap(store)
        .map_err(|_| std::io::Error::other("store still in use"))?
        .into_inner();
    match store.append_only {
        Some(file) => file.close(),
        None => Ok(()),
    }
}

async fn serve(
    store: Rc<RefCell<Store>>,
    listening: Listening,
    limits: Limits,
    figures: Arc<LiveFigures>,
    mut stop: oneshot::Receiver<()>,
) -> std::io::Result<()> {
    let socket_path = listening
        .unix
        .local_addr()?
        .as_pathname()
        .map(|path| path.to_path_buf())
        .unwrap_or_default();
    let unix = UnixListener::from_std(listening.unix)?;
    let tcp = listening.tcp.map(TcpListener::from_std).transpose()?;
    let mut reclaim = tokio::time::interval(RECLAIM_EVERY);
    reclaim.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut clients = tokio::task::JoinSet::new();
    let mut peak_memory = 0;
    // A script past its time limit accepts connections itself (see commands/script/busy.rs);
    // they are served here once it is over.
    let busy = store.borrow().scripting.busy.clone();
    {
        let mut listeners = busy.listeners.borrow_mut();
        listeners.push((unix.as_raw_fd(), false));
        if let Some(tcp) = &tcp {
            listeners.push((tcp.as_raw_fd(), true));
        }
    }
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = unix.accept() => {
                if let Ok((stream, _)) = accepted {
                    if clients.len() >= limits.max_clients {
                        let _ = stream.try_write(MAX_CLIENTS_REACHED);
                        continue;
                    }
                    let peer = Peer::unix(&socket_path, stream.as_raw_fd());
                    let (reader, writer) = stream.into_split();
                    clients.spawn_local(connection::serve(reader, writer, store.clone(), limits, peer, None));
                }
            }
            accepted = accept_tcp(tcp.as_ref()) => {
                if let Ok((stream, address)) = accepted {
                    if clients.len() >= limits.max_clients {
                        let _ = stream.try_write(MAX_CLIENTS_REACHED);
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    let local = stream.local_addr().unwrap_or(address);
                    let peer = Peer::tcp(address, local, stream.as_raw_fd());
                    let (reader, writer) = stream.into_split();
                    clients.spawn_local(connection::serve(reader, writer, store.clone(), limits, peer, None));
                }
            }
            () = busy.adopt.notified() => {
                let accepted = std::mem::take(&mut *busy.accepted.borrow_mut());
                for Adopted { socket, tcp: is_tcp, early } in accepted {
                    let raw = socket.as_raw_fd();
                    if is_tcp {
                        let stream = std::net::TcpStream::from(socket);
                        let (Ok(address), Ok(local)) = (stream.peer_addr(), stream.local_addr()) else {
                            continue;
                        };
                        let Ok(stream) = tokio::net::TcpStream::from_std(stream) else {
                            continue;
                        };
                        let _ = stream.set_nodelay(true);
                        let peer = Peer::tcp(address, local, raw);
                        let (reader, writer) = stream.into_split();
                        clients.spawn_local(connection::serve(reader, writer, store.clone(), limits, peer, Some(early)));
                    } else {
                        let stream = std::os::unix::net::UnixStream::from(socket);
                        let Ok(stream) = tokio::net::UnixStream::from_std(stream) else {
                            continue;
                        };
                        let peer = Peer::unix(&socket_path, raw);
                        let (reader, writer) = stream.into_split();
                        clients.spawn_local(connection::serve(reader, writer, store.clone(), limits, peer, Some(early)));
                    }
                }
            }
            _ = reclaim.tick() => {
                let mut store = store.borrow_mut();
                // Bounded per tick: a flood of expiring keys is reclaimed over several ticks
                // rather than holding every client up (reads never see them: expiry is also
                // checked on access).
                for index in 0..DATABASES {
                    if store.db_at(index).len() == 0 {
                        continue;
                    }
                    for _ in 0..RECLAIM_ROUNDS {
                        if store.db_at(index).expire_due(Now(now_ms()), RECLAIM_BATCH) < RECLAIM_BATCH {
                            break;
                        }
                    }
                }
                store.publish_noted();
                store.process_touched();
                if store.log.is_some() {
                    store.log_expired();
                    store.flush_log();
                    if let Some(mut file) = store.append_only.take() {
                        match file.compact_if_grown(&store) {
                            Ok(true) => store.log_compacted(),
                            Ok(false) => {}
                            Err(error) => eprintln!("herdsman: cannot compact the state file: {error}"),
                        }
                        store.append_only = Some(file);
                    }
                } else {
                    store.forget_expired();
                }
                let used = store.used_memory();
                if used + RELEASE_AFTER_FREEING < peak_memory {
                    crate::sys::release_free_memory();
                    peak_memory = used;
                }
                peak_memory = peak_memory.max(used);
                figures.keys.store(store.total_keys() as u64, Ordering::Relaxed);
                figures.used_memory.store(used as u64, Ordering::Relaxed);
                figures.clients.store(store.connected_clients as u64, Ordering::Relaxed);
                figures.commands.store(store.commands_processed, Ordering::Relaxed);
            }
            Some(_) = clients.join_next(), if !clients.is_empty() => {}
        }
    }
    clients.shutdown().await;
    store.borrow_mut().flush_log();
    Ok(())
}

async fn accept_tcp(
    listener: Option<&TcpListener>,
) -> std::io::Result<(tokio::net::TcpStream, std::net::SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}
