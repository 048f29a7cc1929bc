//! What the executor and `status` read of the machine: queries only, no transition.

use std::time::{Instant, SystemTime};

use super::{Life, Machine, Phase, Slot, WorkerId, WorkerRecord};
use crate::balance::Side;
use crate::config::Config;
use crate::domain::{ClusterPhase, SlotState};

impl Machine {
    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn workers(&self) -> &[WorkerRecord] {
        &self.workers
    }

    pub fn worker(&self, id: WorkerId) -> Option<&WorkerRecord> {
        self.workers.iter().find(|worker| worker.id == id)
    }

    pub(super) fn worker_mut(&mut self, id: WorkerId) -> Option<&mut WorkerRecord> {
        self.workers.iter_mut().find(|worker| worker.id == id)
    }

    pub fn slot(&self, slot: usize) -> Option<&Slot> {
        slot.checked_sub(1).and_then(|index| self.slots.get(index))
    }

    /// The generation new workers get.
    pub fn generation(&self) -> u64 {
        self.spec.generation
    }

    /// Completed reloads.
    pub fn reloads(&self) -> u64 {
        self.reloads
    }

    /// Aborted reloads (of the cluster; a restart of one slot is not counted).
    pub fn reloads_aborted(&self) -> u64 {
        self.reloads_aborted
    }

    pub fn started_at(&self) -> Instant {
        self.started_at
    }

    /// The wall-clock time now, as the machine knows it (from its start and `now`).
    pub(super) fn wall_now(&self) -> SystemTime {
        self.facts.wall_at_start + self.now.saturating_duration_since(self.started_at)
    }

    pub fn phase(&self) -> ClusterPhase {
        match self.phase {
            Phase::Stopping => ClusterPhase::Stopping,
            _ if self.reload.is_some() => ClusterPhase::Reloading,
            Phase::Starting => ClusterPhase::Starting,
            Phase::Running => ClusterPhase::Running,
        }
    }

    /// Whether the primary is done: stopping, and every worker has exited.
    pub fn is_finished(&self) -> bool {
        self.phase == Phase::Stopping && self.workers.is_empty()
    }

    /// Why start-up failed, once it has.
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    /// Running (or reloading) with a slot that lost its worker and has no ready one yet: it is
    /// crash-looping, waiting to restart, or restarting. A new slot's first worker starting (a
    /// scale up) is no loss.
    pub fn is_degraded(&self) -> bool {
        let ready = self.ready_slots();
        let lost = |slot: usize| {
            !ready.contains(&slot) && self.slot(slot).is_some_and(|it| it.last_exit.is_some())
        };
        matches!(self.phase, Phase::Running) && (1..=self.config.workers).any(lost)
    }

    /// The state of `slot` within the worker count, or of a removed slot that still has a
    /// worker; `None` for a removed slot whose workers are gone.
    pub fn slot_state(&self, slot: usize) -> Option<SlotState> {
        let mut workers = self.workers.iter().filter(|worker| worker.slot == slot);
        if workers.clone().next().is_some() {
            return Some(match workers.any(|worker| worker.replaces().is_some()) {
                true => SlotState::Replacing,
                false => SlotState::Serving,
            });
        }
        if slot == 0 || slot > self.config.workers {
            return None;
        }
        Some(match self.is_errored(slot) {
            true => SlotState::Errored,
            false => SlotState::Backoff,
        })
    }

    pub(super) fn is_errored(&self, slot: usize) -> bool {
        self.slots[slot - 1].failures >= self.policy.errored_after
    }

    /// The slots (within the worker count) that have a serving worker, sorted.
    pub fn ready_slots(&self) -> Vec<usize> {
        let mut ready: Vec<usize> = self
            .workers
            .iter()
            .filter(|worker| worker.is_serving() && worker.slot <= self.config.workers)
            .map(|worker| worker.slot)
            .collect();
        ready.sort_unstable();
        ready.dedup();
        ready
    }

    /// Whether some live worker accepts on `slot`'s `side` socket (the rescue sweeps the others).
    pub fn holds(&self, slot: usize, side: Side) -> bool {
        self.workers
            .iter()
            .any(|worker| worker.slot == slot && worker.side == side)
    }

    /// Whether steering was refused (it is then not tried for relays).
    pub fn steering_failed(&self) -> bool {
        self.steering_failed
    }

    /// Whether connections sent to the cluster's address now reach a serving worker: every
    /// socket the steering points at has one (and steering works). Then connections stranded on
    /// a socket no worker holds can be relayed (`rescue`).
    pub fn relay_possible(&self) -> bool {
        !self.steering_failed
            && !self.steered.is_empty()
            && self.steered.iter().all(|&(slot, side)| {
                self.workers
                    .iter()
                    .any(|worker| worker.slot == slot && worker.side == side && worker.is_serving())
            })
    }

    /// The worker an order for `slot` (and `pid`, when pinned) is about: that process, or the
    /// slot's serving worker, else its newest.
    pub fn acting_on(&self, slot: usize, pid: Option<u32>) -> Option<&WorkerRecord> {
        match pid {
            Some(pid) => self
                .workers
                .iter()
                .find(|worker| worker.slot == slot && worker.pid == pid),
            None => self
                .serving_worker(slot)
                .or_else(|| self.workers.iter().rfind(|worker| worker.slot == slot)),
        }
    }

    /// The worker serving `slot` (not one being replaced away or stopped), if any.
    pub fn serving_worker(&self, slot: usize) -> Option<&WorkerRecord> {
        self.workers.iter().find(|worker| {
            worker.slot == slot
                && matches!(
                    worker.life,
                    Life::Starting { replaces: None } | Life::Ready | Life::Retiring { .. }
                )
        })
    }
}
