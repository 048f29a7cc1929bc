//! What an exit does: a worker asked to go is done; one that died is a failure of its slot,
//! which restarts (at once, then with backoff, `errored` in a crash loop), or, when no worker
//! was ever ready, ends start-up.
//!
//! [`Machine::on_exit`] is the one place that answers "what happens when a worker crashes during
//! a rolling reload": the old worker's death is recorded as a failure of its slot but starts no
//! worker, since its replacement already starts there (and is steered to once nothing else
//! serves); the replacement's death aborts the reload, and the old worker, if alive, keeps the
//! slot; if both died, [`Machine::ensure_occupied`] restarts the slot on its old spec. The test
//! `a_crash_during_a_reload` in `tests` walks through it.

use std::time::Duration;

use super::super::report::{describe_exit, format_tail, startup_hint};
use super::{ExitReason, LastExit, Machine, Phase, StopReason, Timer, WorkerId, WorkerRecord};
use crate::domain::{ClusterEvent, WorkerChange};

impl Machine {
    pub(super) fn on_exited(&mut self, id: WorkerId, reason: ExitReason, tail: Vec<String>) {
        let Some(index) = self.workers.iter().position(|worker| worker.id == id) else {
            return;
        };
        let worker = self.workers.remove(index);
        let slot = worker.slot;
        let (code, signal) = match reason {
            ExitReason::Code(code) => (Some(code), None),
            ExitReason::Signal(signal) => (None, Some(signal)),
            ExitReason::Unknown => (None, None),
        };
        self.observe(ClusterEvent::Exit {
            slot,
            pid: worker.pid,
            code,
            signal,
            exited_after_disconnect: worker.stop_reason().is_some_and(StopReason::was_requested),
        });
        let change = WorkerChange::Exited {
            code,
            signal,
            reason: worker.stop_reason().map_or("died", StopReason::as_str),
            description: reason.to_string(),
        };
        self.announce_worker(slot, worker.pid, worker.generation, change);
        self.steer();
        self.on_exit(worker, reason, tail);
        self.check_failed_replacements(slot);
        self.ensure_occupied(slot);
    }

    /// A worker has exited. Asked to (stopping, replaced, retired, disconnected): logged, and a
    /// replaced worker's exit lets its reload go on. Not asked to: a replacement that never
    /// became ready fails its reload; any other worker's death is a failure of its slot.
    pub fn on_exit(&mut self, worker: WorkerRecord, reason: ExitReason, tail: Vec<String>) {
        let (slot, pid, stop_reason) = (worker.slot, worker.pid, worker.stop_reason());
        let replacement = self.is_in_flight(worker.id);
        if stop_reason == Some(StopReason::Aborted) && self.phase != Phase::Stopping {
            // A replacement whose reload failed: that was said when it did.
            return;
        }
        let requested = stop_reason.is_some_and(StopReason::was_requested);
        if requested || self.phase == Phase::Stopping {
            let why = match self.failure.is_some() {
                true => " (start-up failed: the cluster stops)",
                false => "",
            };
            self.info(format!("worker {slot} (pid {pid}) {reason}{why}"));
            if stop_reason == Some(StopReason::Replaced) {
                self.on_replaced_exit(worker.id, slot, pid, reason.to_string());
            }
            return;
        }
        let now = self.now;
        let since = |at: std::time::Instant| now.saturating_duration_since(at);
        // It said it was ready, but did not stay up for the ready delay after: that did not count.
        let said_just_now = worker
            .signalled_at()
            .is_some_and(|at| since(at) < self.config.ready_delay);
        let exit = LastExit {
            pid,
            reason,
            uptime: since(worker.started_at),
            at: self.wall_now(),
            tail,
            ready_for: worker
                .ready_at
                .filter(|_| {
                    !matches!(
                        stop_reason,
                        Some(StopReason::NotReady | StopReason::NotAccepting)
                    ) && !said_just_now
                })
                .map(since),
            said_ready_before: worker
                .signalled_at()
                .filter(|_| worker.ready_at.is_none() || said_just_now)
                .map(since),
            stop_reason,
        };
        if replacement {
            // A replacement that never became ready: the reload fails, the old worker stays.
            self.on_replacement_failed(slot, &exit);
            return;
        }
        if slot > self.config.workers {
            self.info(format!(
                "worker {slot} (pid {pid}) of a removed slot {reason}"
            ));
            return;
        }
        self.on_failure(slot, exit);
    }

    /// A slot within the worker count must never be left without a worker: the exit paths that
    /// do not restart one themselves (a worker that died while its replacement was starting,
    /// then the replacement failed too) end here.
    pub(super) fn ensure_occupied(&mut self, slot: usize) {
        let empty = !self.workers.iter().any(|worker| worker.slot == slot);
        if empty
            && slot <= self.config.workers
            && self.phase != Phase::Stopping
            && self.slots[slot - 1].respawn_at.is_none()
        {
            self.slots[slot - 1].respawn_at = Some(self.now);
            self.schedule(Timer::Respawn(slot), Duration::ZERO);
        }
    }

    pub(super) fn on_respawn_due(&mut self, slot: usize) {
        if let Some(history) = self.slots.get_mut(slot - 1) {
            history.respawn_at = None;
        }
        let occupied = self.workers.iter().any(|worker| worker.slot == slot);
        if self.phase != Phase::Stopping && !occupied && slot <= self.config.workers {
            self.start_worker(slot);
        }
    }

    /// A worker of `slot` ended without being asked to: record it, then restart the slot or,
    /// when no worker was ever ready, give up on start-up.
    pub(super) fn on_failure(&mut self, slot: usize, exit: LastExit) {
        // A worker that served for a while proves the command works: its death (the OOM killer,
        // an operator) starts the count over and is restarted at once. Measured per worker from
        // its readiness, so that reloads, which replace workers, never keep it from resetting.
        let healthy = exit
            .ready_for
            .is_some_and(|ready_for| ready_for >= self.policy.healthy_uptime);
        let history = &mut self.slots[slot - 1];
        if healthy {
            history.failures = 0;
            self.served_healthy = true;
        }
        history.failures += 1;
        history.last_exit = Some(exit.clone());
        let failures = history.failures;

        if self.phase == Phase::Running
            && !healthy
            && !self.served_healthy
            && self.reloads == 0
            && self.reload.is_none()
            && self.proven_slots().is_empty()
        {
            // Every worker counted ready died young (ready by the delay, it said READY=1 only
            // later, or it was still importing the app): start-up is not over after all.
            self.phase = Phase::Starting;
        }
        if self.phase == Phase::Starting && self.startup_has_failed(&exit) {
            self.fail_startup(slot);
            return;
        }
        let what = describe_exit(slot, &exit);
        if self.workers.iter().any(|worker| worker.slot == slot) {
            // Its replacement (reload, restart) is already starting in the slot.
            self.warn(what);
            return;
        }
        let delay = self.policy.delay(failures);
        let when = if delay.is_zero() {
            "restarting now".to_string()
        } else {
            format!("restarting in {}", humantime::format_duration(delay))
        };
        if failures == self.policy.errored_after {
            self.error(format!(
                "slot {slot} is crash-looping (errored): {failures} failures in a row, the last: \
                 {what}; {when}{}",
                format_tail(&exit.tail)
            ));
        } else {
            self.warn(format!("{what}; {when}"));
        }
        self.check_started();
        // Counted here, where the restart is decided: not for a slot whose replacement already
        // starts, nor when start-up has failed.
        let history = &mut self.slots[slot - 1];
        history.restarts += 1;
        *history.restart_reasons.entry(exit.kind()).or_default() += 1;
        if delay.is_zero() {
            self.start_worker(slot);
        } else {
            self.slots[slot - 1].respawn_at = Some(self.now + delay);
            self.schedule(Timer::Respawn(slot), delay);
        }
    }

    /// Start-up has failed when no worker is ready and either every slot failed twice in
    /// a row (the command cannot work) or a worker never signalled readiness in time (waiting
    /// longer would not help).
    fn startup_has_failed(&self, exit: &LastExit) -> bool {
        if !self.proven_slots().is_empty() {
            return false;
        }
        exit.stop_reason == Some(StopReason::NotReady)
            || self.slots[..self.config.workers]
                .iter()
                .all(|history| history.failures >= 2)
    }

    /// The slots whose worker has been ready for the healthy uptime and did not say it was ready
    /// within the last `--ready-delay` (a worker ready by the delay that then sends `READY=1` is
    /// still on probation).
    pub(super) fn proven_slots(&self) -> Vec<usize> {
        let (delay, healthy, now) = (
            self.config.ready_delay,
            self.policy.healthy_uptime,
            self.now,
        );
        let mut slots: Vec<usize> = self
            .workers
            .iter()
            .filter(|worker| worker.is_serving() && worker.slot <= self.config.workers)
            .filter(|worker| {
                worker
                    .ready_at
                    .is_some_and(|at| now.saturating_duration_since(at) >= healthy)
                    && worker
                        .signalled_at()
                        .is_none_or(|at| now.saturating_duration_since(at) >= delay)
            })
            .map(|worker| worker.slot)
            .collect();
        slots.sort_unstable();
        slots.dedup();
        slots
    }

    fn fail_startup(&mut self, slot: usize) {
        let history = &self.slots[slot - 1];
        let Some(exit) = &history.last_exit else {
            return;
        };
        // Ready and then dead within the healthy uptime: "all ready" was said, so say what
        // happened since.
        let mut report = match exit.ready_for {
            Some(_) => format!(
                "no worker stayed up: each died within {} of becoming ready; the last, ",
                humantime::format_duration(self.policy.healthy_uptime)
            ),
            None => "no worker became ready: ".to_string(),
        };
        report.push_str(&describe_exit(slot, exit));
        if history.failures > 1 {
            report.push_str(&format!(" ({} times)", history.failures));
        }
        report.push_str(&format_tail(&exit.tail));
        report.push_str(&format!(
            "\nhint: {}",
            startup_hint(exit, &self.config, self.facts.port)
        ));
        self.failure = Some(report);
        self.phase = Phase::Stopping;
        self.abort_waits("the cluster is stopping");
        // Nothing serves yet, so there is nothing to drain: stop the other workers at once.
        self.kill_all();
    }
}
