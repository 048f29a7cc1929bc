//! Watching the cluster's port for foreign sockets while the cluster runs (reuseport).
//!
//! Every `WATCH_INTERVAL` the executor asks the listeners who else listens on the port (see
//! `balance::port_group` for why that matters and how it is told). A foreign socket that appears
//! is logged as a warning, naming its process (or the worker that opened it, for an app that
//! binds `$PORT` itself), and listed by `status` until it is gone; when it goes, the steering
//! program is attached again.

use crate::balance::{parent_pid, Foreign, WATCH_INTERVAL};
use crate::domain::ForeignListener;

use super::executor::Executor;
use super::timers::Due;

/// How far up the process tree a socket's holder is followed to find the worker it belongs to.
const MAX_ANCESTORS: usize = 16;

impl Executor {
    /// Starts the periodic look at the port (reuseport only: a foreign socket cannot share one
    /// `shared` socket's port, the kernel refuses it with "address in use").
    pub fn watch_port_group(&mut self) {
        if self.listeners.steerable() {
            self.timers.schedule(Due::PortGroupCheck, WATCH_INTERVAL);
        }
    }

    /// Looks at the port once: reports sockets that came or went, steers again, and looks
    /// again after [`WATCH_INTERVAL`].
    pub async fn check_port_group(&mut self) {
        self.timers.schedule(Due::PortGroupCheck, WATCH_INTERVAL);
        match self.listeners.check_group() {
            Ok(change) => {
                for foreign in &change.joined {
                    let line = self.describe_joined(foreign);
                    self.logger.warn(line);
                }
                for slot in &change.lost {
                    self.logger.error(format!(
                        "a listening socket of slot {slot} stopped listening: a process that holds \
                         it called shutdown() on it, which stops it for every holder and drops its \
                         queue; the kernel moved another of the cluster's sockets into its place \
                         in the port group, so steering may now send new connections where no \
                         worker accepts — restart the cluster, and keep the app from shutting \
                         down its inherited socket (closing it is enough)"
                    ));
                }
                for foreign in &change.left {
                    let rest = if self.listeners.foreign().is_empty() {
                        "the port is the cluster's alone again"
                    } else {
                        "steering attached again"
                    };
                    self.logger.info(format!(
                        "{} no longer listens on {}; {rest}",
                        foreign.who(),
                        foreign.address
                    ));
                }
            }
            Err(error) => self.logger.warn(format!(
                "cannot list the sockets on port {} (sock_diag: {error}); a foreign socket that \
                 joins the cluster's port group would go unreported",
                self.listeners.local_addr().port()
            )),
        }
        let targets = self.machine.steering_targets();
        if let Some(failed) = self.steer(&targets) {
            self.feed(failed).await;
        }
    }

    fn describe_joined(&self, foreign: &Foreign) -> String {
        if let Some((slot, worker_pid)) = self.worker_holding(foreign) {
            let through = match foreign.owner() {
                Some(owner) if owner.pid != worker_pid => {
                    format!(" (its process pid {}, `{}`)", owner.pid, owner.command)
                }
                _ => String::new(),
            };
            let how = if foreign.in_group {
                "with SO_REUSEPORT and joined the cluster's port group"
            } else {
                "on a more specific address, which the kernel prefers"
            };
            return format!(
                "warning: worker {slot} (pid {worker_pid}){through} listens on {} itself, {how}: the \
                 connections herdsman steers to worker {slot} wait on the socket it was given \
                 (fd 3, LISTEN_FDS), on which it does not accept; make the app use the inherited \
                 socket instead of binding $PORT",
                foreign.address
            );
        }
        let consequence = if foreign.in_group {
            "herdsman keeps steering new connections to its own workers, but a program that \
             process attaches to the group would take them"
        } else {
            "those connections no longer reach the cluster"
        };
        format!(
            "warning: {} {}: {consequence}; {} — `herdsman status` lists it until it is gone",
            foreign.who(),
            foreign.effect(),
            foreign.remedy()
        )
    }

    /// The slot and pid of the worker that holds `foreign` itself or through a process it
    /// started.
    fn worker_holding(&self, foreign: &Foreign) -> Option<(usize, u32)> {
        for owner in &foreign.owners {
            let mut pid = owner.pid;
            for _ in 0..MAX_ANCESTORS {
                let workers = self.machine.workers();
                if let Some(worker) = workers.iter().find(|worker| worker.pid == pid) {
                    return Some((worker.slot, worker.pid));
                }
                match parent_pid(pid) {
                    Some(parent) if parent > 1 && parent != std::process::id() => pid = parent,
                    _ => break,
                }
            }
        }
        None
    }

    /// The foreign sockets on the port, for `status`.
    pub fn foreign_status(&self) -> Vec<ForeignListener> {
        self.listeners
            .foreign()
            .iter()
            .map(|foreign| ForeignListener {
                address: foreign.address,
                pid: foreign.owner().map(|owner| owner.pid),
                command: foreign.owner().map(|owner| owner.command.clone()),
                cluster: foreign.cluster.clone(),
                slot: self.worker_holding(foreign).map(|(slot, _)| slot),
                in_group: foreign.in_group,
                description: format!("{} {}", foreign.who(), foreign.effect()),
            })
            .collect()
    }
}
