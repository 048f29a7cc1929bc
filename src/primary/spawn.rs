//! The spawner thread: every worker is forked from one thread that lives as long as the primary.
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, not the process. Tokio
//! may run a task on a thread that later goes away (a blocking-pool thread ends when idle), so
//! the primary never forks from a task: it hands the command to this thread and awaits the child.
//! Dropping the [`Spawner`] ends the thread, which kills every worker it spawned.

use std::io;
use std::process::Command;
use std::sync::mpsc as std_mpsc;

use tokio::process::Child;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

struct Request {
    command: Command,
    reply: oneshot::Sender<io::Result<Child>>,
}

pub struct Spawner {
    requests: std_mpsc::Sender<Request>,
}

impl Spawner {
    /// Starts the thread. Children are registered with `runtime`'s process driver.
    pub fn start(runtime: Handle) -> io::Result<Spawner> {
        let (requests, incoming) = std_mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("herdsman-spawner".into())
            .spawn(move || {
                let _runtime = runtime.enter();
                for request in incoming {
                    let child = tokio::process::Command::from(request.command).spawn();
                    // The requester may have given up; the child is then reaped by the driver.
                    let _ = request.reply.send(child);
                }
            })?;
        Ok(Spawner { requests })
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
