//! Starting workers, where new connections go, and taking a worker out of service.
//!
//! With `reuseport`, every worker has a socket of its own (see `balance`), and a BPF program
//! steers new connections to the sockets of ready workers. A worker that must go while the
//! cluster serves (replaced, its slot removed, disconnected) is *retired*: steered away from
//! first, asked to stop only once its own accept queue is empty, because servers' graceful
//! shutdown closes a just-accepted connection whose request was not read yet.

use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::{Effect, Life, Machine, Phase, Spawn, StopReason, Timer, WorkerId, WorkerRecord};
use crate::balance::Side;
use crate::config::ReadyMode;
use crate::domain::ClusterEvent;

use super::LaunchSpec;

/// How often a retiring worker's queue is looked at while connections wait in it…
const RETIRE_POLL: Duration = Duration::from_millis(20);
/// …after it kept accepting for at least this long, for connections whose handshake the kernel
/// began on its socket before the steering changed to land in its queue…
const RETIRE_MIN_WAIT: Duration = Duration::from_millis(200);
/// …and at most this long, should its queue never empty (a worker that stopped accepting).
const RETIRE_MAX_WAIT: Duration = Duration::from_secs(5);

impl Machine {
    /// The cluster's start: what it listens on, then a worker for every slot.
    pub(super) fn start(&mut self) {
        // Before any worker runs, so that no connection is hashed to a socket no worker will use.
        self.steer();
        for slot in 1..=self.config.workers {
            self.start_worker(slot);
        }
        let poll = self.accept_poll();
        self.schedule(Timer::AcceptCheck, poll);
        self.schedule_limit_checks();
    }

    /// Starts a worker in `slot` running the slot's spec, on the side
    /// [`Machine::side_for_new_worker`] picks.
    pub(super) fn start_worker(&mut self, slot: usize) -> WorkerId {
        let side = self.side_for_new_worker(slot);
        self.slots[slot - 1].side = side;
        let spec = self.slots[slot - 1].spec.clone();
        self.spawn(slot, side, spec, None)
    }

    /// Starts a replacement for `old` in `slot`, running `spec` on the slot's other socket.
    pub(super) fn start_replacement(
        &mut self,
        slot: usize,
        spec: Arc<LaunchSpec>,
        old: WorkerId,
    ) -> WorkerId {
        let side = self.slots[slot - 1].side.other();
        self.spawn(slot, side, spec, Some(old))
    }

    fn spawn(
        &mut self,
        slot: usize,
        side: Side,
        spec: Arc<LaunchSpec>,
        replaces: Option<WorkerId>,
    ) -> WorkerId {
        let id = WorkerId(self.next_worker);
        self.next_worker += 1;
        self.workers.push(WorkerRecord {
            id,
            slot,
            side,
            pid: 0,
            generation: spec.generation,
            life: Life::Starting { replaces },
            started_at: self.now,
            ready_signal_at: None,
            listening_at: None,
            accepting_at: None,
            ready_at: None,
            accept_stall: None,
            replacing: None,
            retry_replace_at: None,
            heartbeats: false,
        });
        self.effects.push(Effect::Spawn(Spawn {
            worker: id,
            slot,
            side,
            spec,
            workers: self.config.workers,
        }));
        id
    }

    /// Its process runs: the readiness clocks start.
    pub(super) fn on_spawned(&mut self, id: WorkerId, pid: u32) {
        let now = self.now;
        let Some(worker) = self.worker_mut(id) else {
            return;
        };
        worker.pid = pid;
        worker.started_at = now;
        let (slot, generation, stopped) = (worker.slot, worker.generation, worker.stop_reason());
        self.info(format!(
            "worker {slot} (pid {pid}) starting, generation {generation}"
        ));
        self.observe(ClusterEvent::Fork { slot, pid });
        self.announce_worker(slot, pid, generation, super::WorkerChange::Spawned);
        if stopped.is_some() {
            // Stopped before it ran (its reload was aborted meanwhile): the order stands.
            self.effects.push(Effect::Stop { worker: id });
            let kill_timeout = self.config.kill_timeout;
            self.schedule(Timer::KillDeadline(id), kill_timeout);
            return;
        }
        if self.config.ready == ReadyMode::Delay {
            let delay = self.config.ready_delay;
            self.schedule(Timer::ReadyDelay(id), delay);
        }
        let timeout = self.config.ready_timeout;
        self.schedule(Timer::ReadyTimeout(id), timeout);
        self.schedule_ready_hint(id);
        self.steer();
        self.on_replacement_spawned(id);
    }

    /// Fork itself failed (out of processes or memory), or the sockets are closed (stopping).
    pub(super) fn on_spawn_failed(&mut self, id: WorkerId, error: String) {
        let Some(index) = self.workers.iter().position(|worker| worker.id == id) else {
            return;
        };
        let worker = self.workers.remove(index);
        if self.phase == Phase::Stopping {
            return;
        }
        let slot = worker.slot;
        self.error(format!("cannot start worker {slot}: {error}"));
        if worker.replaces().is_some() {
            self.on_replacement_not_started(slot);
            return;
        }
        let exit = super::LastExit {
            pid: 0,
            reason: super::ExitReason::Unknown,
            uptime: Duration::ZERO,
            at: self.wall_now(),
            tail: vec![error],
            ready_for: None,
            said_ready_before: None,
            stop_reason: None,
        };
        self.on_failure(slot, exit);
    }

    /// Where new connections should go (reuseport): the sockets of serving workers; while none
    /// is ready, the sockets of starting ones (a replacement only once the worker it replaces
    /// is gone or stopping: killed while its replacement starts, say); while none runs, each
    /// slot's current side.
    pub fn steering_targets(&self) -> Vec<(usize, Side)> {
        let count = self.config.workers;
        let within = |worker: &&WorkerRecord| worker.slot <= count;
        let ready = sockets_of(
            self.workers
                .iter()
                .filter(within)
                .filter(|w| w.is_serving()),
        );
        if !ready.is_empty() {
            return ready;
        }
        let still_there = |id: WorkerId| {
            self.workers
                .iter()
                .any(|worker| worker.id == id && !worker.is_draining())
        };
        let starting =
            sockets_of(self.workers.iter().filter(within).filter(|worker| {
                worker.is_starting() && !worker.replaces().is_some_and(still_there)
            }));
        if !starting.is_empty() {
            return starting;
        }
        (1..=count)
            .map(|slot| (slot, self.slots[slot - 1].side))
            .collect()
    }

    /// Points new connections at the sockets of serving workers (reuseport), so that none wait
    /// in the queue of a worker that is starting, leaving, crash-looping or retired.
    pub(super) fn steer(&mut self) {
        let targets = self.steering_targets();
        self.steered = targets.clone();
        self.effects.push(Effect::Steer(targets));
    }

    /// The side a new worker of `slot` (not a replacement) takes: the slot's side, unless a
    /// worker still leaving the slot uses it, or unless another worker is ready to take the
    /// connections left queued there by relay (`rescue`): then the other side, and what waits
    /// on the slot's side is relayed at once instead of waiting for the new worker to start.
    fn side_for_new_worker(&self, slot: usize) -> Side {
        let side = self.slots[slot - 1].side;
        if self.holds(slot, side) {
            return side.other();
        }
        if self.relay_possible() && !self.holds(slot, side.other()) {
            return side.other();
        }
        side
    }

    /// Asks worker `id` to stop (stop signal), and kills it if it is still there after the kill
    /// timeout.
    pub(super) fn stop_worker(&mut self, id: WorkerId, reason: StopReason) {
        let kill_timeout = self.config.kill_timeout;
        let Some(worker) = self.worker_mut(id) else {
            return;
        };
        if worker.is_draining() {
            return;
        }
        worker.life = Life::Draining { reason };
        let (slot, pid) = (worker.slot, worker.pid);
        match self.hung_signal(id) {
            Some(signal) => self.signal(id, signal),
            None => self.effects.push(Effect::Stop { worker: id }),
        }
        self.observe(ClusterEvent::Disconnect { slot, pid });
        self.schedule(Timer::KillDeadline(id), kill_timeout);
        self.steer();
    }

    pub(super) fn on_kill_deadline(&mut self, id: WorkerId) {
        let kill_timeout = self.config.kill_timeout;
        let Some(worker) = self.worker(id) else {
            return;
        };
        let (slot, pid) = (worker.slot, worker.pid);
        self.signal(id, Signal::SIGKILL);
        self.warn(format!(
            "worker {slot} (pid {pid}) did not stop within {}; killed it",
            humantime::format_duration(kill_timeout)
        ));
    }

    /// Kills every worker now (fast stop, failed start-up).
    pub(super) fn kill_all(&mut self) {
        let ids: Vec<WorkerId> = self.workers.iter().map(|worker| worker.id).collect();
        for id in ids {
            if let Some(worker) = self.worker_mut(id) {
                worker.life = Life::Draining {
                    reason: StopReason::Shutdown,
                };
            }
            self.signal(id, Signal::SIGKILL);
        }
    }

    /// Retires worker `id` without failing a connection: new connections are steered away from
    /// it at once, and it is asked to stop (as [`Machine::stop_worker`]) once the connections
    /// already queued on its socket are accepted. With one shared queue it stops at once.
    pub(super) fn retire_worker(&mut self, id: WorkerId, reason: StopReason) {
        // Steered away (reuseport) or taken off the proxy's list, a worker finishes what it
        // has first: its queue, or the requests the proxy has in flight on it.
        if !self.facts.steerable && !self.config.balance.is_proxy() {
            self.stop_worker(id, reason);
            return;
        }
        let now = self.now;
        let Some(worker) = self.worker_mut(id) else {
            return;
        };
        if matches!(worker.life, Life::Retiring { .. } | Life::Draining { .. }) {
            return;
        }
        worker.life = Life::Retiring { since: now, reason };
        self.steer();
        self.schedule(Timer::Retire(id), RETIRE_MIN_WAIT);
    }

    /// Stops a retiring worker once its queue is empty (with the proxy: it has no connection
    /// from the proxy left), or looks again soon.
    pub(super) fn retire_check(&mut self, id: WorkerId, queued: u32) {
        let Some(Life::Retiring { since, reason }) = self.worker(id).map(|worker| worker.life)
        else {
            return;
        };
        let waited = self.now.saturating_duration_since(since);
        if (queued > 0 || waited < RETIRE_MIN_WAIT) && waited < RETIRE_MAX_WAIT {
            let poll = RETIRE_POLL.max(RETIRE_MIN_WAIT.saturating_sub(waited));
            self.schedule(Timer::Retire(id), poll.min(RETIRE_MAX_WAIT - waited));
            return;
        }
        self.stop_worker(id, reason);
    }
}

/// The sockets `workers` use, sorted, each once.
fn sockets_of<'a>(workers: impl Iterator<Item = &'a WorkerRecord>) -> Vec<(usize, Side)> {
    let mut sockets: Vec<(usize, Side)> =
        workers.map(|worker| (worker.slot, worker.side)).collect();
    sockets.sort_unstable();
    sockets.dedup();
    sockets
}
