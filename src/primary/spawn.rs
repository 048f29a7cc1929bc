//! The spawner thread, and the reaper of children the primary did not start.
//!
//! Every worker's keeper is forked from one thread that lives as long as the primary: forking
//! from a tokio task would fork from whichever thread runs it, and the keepers (see
//! `crate::shim`) are what keeps a worker's tree from outliving the primary, so they are started
//! in one place that also knows every pid it started. Dropping the [`Spawner`] ends the thread.
//!
//! As pid 1 (a container), or when `herdsman run` made itself a child subreaper
//! ([`adopt_orphans`]), processes whose parent died are reparented to the primary, and their
//! zombies are the primary's to reap. tokio's process driver waits for each of its children by
//! pid, so a blanket `waitpid(-1)` would steal the keepers' exit statuses. The reaper instead
//! lists the primary's children (`/proc/self/task/*/children`) on every SIGCHLD (and every
//! second) and reaps only those the spawner did not start. The spawner holds the list of the
//! pids it started locked from before the fork until the pid is in it, so a keeper that exits
//! at once is never mistaken for an orphan.

use std::collections::HashSet;
use std::io;
use std::process::Command;
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;
use tokio::process::Child;
use tokio::runtime::Handle;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;

use crate::sys;

/// How often the reaper looks for zombies without being woken by SIGCHLD.
const REAP_INTERVAL: Duration = Duration::from_secs(1);

struct Request {
    command: Command,
    reply: oneshot::Sender<io::Result<Child>>,
}

/// The pids the spawner started and tokio has not reaped yet.
#[derive(Clone, Default)]
pub struct Started(Arc<Mutex<HashSet<u32>>>);

impl Started {
    /// `pid` was reaped (its exit status is known): from now on the pid may be an orphan's.
    pub fn forget(&self, pid: u32) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&pid);
    }
}

pub struct Spawner {
    requests: std_mpsc::Sender<Request>,
    started: Started,
}

#[cfg(feature = "cli")]
/// Makes this process a child subreaper (`PR_SET_CHILD_SUBREAPER`), so that orphans among its
/// descendants are reparented to it, and reaped by the primary, instead of going to pid 1.
/// `herdsman run` calls it; a program built on `Cluster` does not, so that the primary never
/// reaps a child that program started itself (as pid 1, orphans are reaped either way).
pub fn adopt_orphans() -> io::Result<()> {
    nix::sys::prctl::set_child_subreaper(true)?;
    Ok(())
}

/// Whether orphans can be reparented to this process.
fn adopts_orphans() -> bool {
    std::process::id() == 1 || nix::sys::prctl::get_child_subreaper().unwrap_or(false)
}

impl Spawner {
    /// Starts the thread (children are registered with `runtime`'s process driver) and, when
    /// this process adopts orphans, the reaper.
    pub fn start(runtime: Handle) -> io::Result<Spawner> {
        let (requests, incoming) = std_mpsc::channel::<Request>();
        let started = Started::default();
        let registry = started.clone();
        if adopts_orphans() {
            runtime.spawn(reap_orphans(started.clone()));
        }
        std::thread::Builder::new()
            .name("herdsman-spawner".into())
            .spawn(move || {
                let _runtime = runtime.enter();
                for request in incoming {
                    let mut pids = registry.0.lock().unwrap_or_else(|e| e.into_inner());
                    let child = tokio::process::Command::from(request.command).spawn();
                    if let Some(pid) = child.as_ref().ok().and_then(Child::id) {
                        pids.insert(pid);
                    }
                    drop(pids);
                    // The requester may have given up; the child is then reaped by the driver.
                    if let Err(Ok(child)) = request.reply.send(child) {
                        if let Some(pid) = child.id() {
                            registry.forget(pid);
                        }
                    }
                }
            })?;
        Ok(Spawner { requests, started })
    }

    /// The pids this spawner started, for the watch task to forget once reaped.
    pub fn started(&self) -> Started {
        self.started.clone()
    }

    /// Forks and execs `command` on the spawner thread.
    pub async fn spawn(&self, command: Command) -> io::Result<Child> {
        let (reply, child) = oneshot::channel();
        let gone = || io::Error::other("the spawner thread has stopped");
        self.requests
            .send(Request { command, reply })
            .map_err(|_| gone())?;
        child.await.map_err(|_| gone())?
    }
}

/// Reaps, for the primary's life, every exited child that the spawner did not start.
async fn reap_orphans(started: Started) {
    let mut children = signal(SignalKind::child()).ok();
    let mut tick = tokio::time::interval(REAP_INTERVAL);
    loop {
        match children.as_mut() {
            Some(children) => {
                tokio::select! {
                    _ = children.recv() => {}
                    _ = tick.tick() => {}
                }
            }
            None => {
                tick.tick().await;
            }
        }
        reap_unknown(&started);
    }
}

fn reap_unknown(started: &Started) {
    let pids = started.0.lock().unwrap_or_else(|e| e.into_inner());
    let Some(children) = sys::own_children() else {
        return;
    };
    for child in children {
        if pids.contains(&(child as u32)) {
            continue;
        }
        // Not one of ours, so an adopted orphan: reap it if it has exited, whatever it was.
        let _ = waitpid(Pid::from_raw(child), Some(WaitPidFlag::WNOHANG));
    }
}
