//! Where new connections go, and taking a worker out of service without failing one.
//!
//! With `reuseport`, every worker has a socket of its own (see `balance`), and a BPF program
//! steers new connections to the sockets of ready workers. A worker that must go while the cluster
//! serves (replaced, or its slot removed) is *retired*: steered away from first, asked to stop only
//! once its own accept queue is empty, because servers' graceful shutdown closes a just-accepted
//! connection whose request was not read yet.

use std::time::Duration;

use tokio::time::Instant;

use super::process::{Worker, WorkerState};
use super::supervisor::{StopReason, Supervisor};
use super::Event;
use crate::balance::Side;

/// How often a leaving worker's queue is checked.
const RETIRE_POLL: Duration = Duration::from_millis(20);
/// A leaving worker keeps accepting for at least this long, for connections whose handshake the
/// kernel began on its socket before the steering changed to land in its queue…
const RETIRE_MIN_WAIT: Duration = Duration::from_millis(200);
/// …and at most this long, should its queue never empty (a worker that stopped accepting).
const RETIRE_MAX_WAIT: Duration = Duration::from_secs(5);

impl Supervisor {
    /// Where new connections should go (reuseport): the sockets of serving workers; while none
    /// is ready, the sockets of starting ones (a replacement only once the worker it replaces
    /// is gone or stopping: killed while its replacement starts, say); while none runs, each
    /// slot's current side.
    pub fn steering_targets(&self) -> Vec<(usize, Side)> {
        let within = |worker: &&Worker| worker.slot <= self.config.workers;
        let ready = sockets_of(
            self.workers
                .iter()
                .filter(within)
                .filter(|w| w.is_serving()),
        );
        if !ready.is_empty() {
            return ready;
        }
        let still_there = |uid: u64| {
            self.workers
                .iter()
                .any(|worker| worker.uid == uid && worker.state != WorkerState::Draining)
        };
        let starting = sockets_of(self.workers.iter().filter(within).filter(|worker| {
            worker.state == WorkerState::Starting && !worker.replaces.is_some_and(still_there)
        }));
        if !starting.is_empty() {
            return starting;
        }
        (1..=self.config.workers)
            .map(|slot| (slot, self.slots[slot - 1].side))
            .collect()
    }

    /// Points new connections at the sockets of serving workers (reuseport), so that none wait
    /// in the queue of a worker that is starting, leaving, crash-looping or retired.
    pub fn steer(&mut self) {
        let targets = self.steering_targets();
        if let Err(error) = self.listeners.steer(&targets) {
            if !self.steering_failed {
                self.steering_failed = true;
                self.logger.warn(format!(
                    "cannot steer connections to ready workers ({error}); the kernel spreads them \
                     over every slot, so a slot without a ready worker holds some until it has one"
                ));
            }
        }
        self.watch_for_stranded();
    }

    /// Retires worker `uid` without failing a connection: new connections are steered away from
    /// it at once, and it is asked to stop (as [`Supervisor::stop_worker`]) once the connections
    /// already queued on its socket are accepted. With one shared queue it stops at once.
    pub fn retire_worker(&mut self, uid: u64, reason: StopReason) {
        if !self.listeners.steerable() {
            self.stop_worker(uid, reason);
            return;
        }
        let Some(worker) = self.worker_mut(uid) else {
            return;
        };
        if worker.leaving_since.is_some() || worker.state == WorkerState::Draining {
            return;
        }
        worker.leaving_since = Some(Instant::now());
        worker.stop_reason = Some(reason);
        self.steer();
        self.retire_check(uid);
    }

    /// Stops a leaving worker once its queue is empty, or checks again soon.
    pub fn retire_check(&mut self, uid: u64) {
        let Some(worker) = self.workers.iter().find(|worker| worker.uid == uid) else {
            return;
        };
        let (Some(since), Some(reason)) = (worker.leaving_since, worker.stop_reason) else {
            return;
        };
        if worker.state == WorkerState::Draining {
            return;
        }
        let waited = since.elapsed();
        let queued = self.listeners.queued(worker.slot, worker.side).unwrap_or(0);
        if (queued > 0 || waited < RETIRE_MIN_WAIT) && waited < RETIRE_MAX_WAIT {
            self.after(RETIRE_POLL, Event::RetireCheck { uid });
            return;
        }
        self.stop_worker(uid, reason);
    }
}

/// The sockets `workers` use, sorted, each once.
fn sockets_of<'a>(workers: impl Iterator<Item = &'a Worker>) -> Vec<(usize, Side)> {
    let mut sockets: Vec<(usize, Side)> =
        workers.map(|worker| (worker.slot, worker.side)).collect();
    sockets.sort_unstable();
    sockets.dedup();
    sockets
}
