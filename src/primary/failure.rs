//! What happens when a worker ends without being asked to: its slot restarts (with backoff,
//! `errored` in a crash loop), or, when no worker was ever ready, start-up has failed.

use std::time::Duration;

use super::report::{describe_exit, format_tail, startup_hint};
use super::supervisor::{LastExit, Phase, StopReason, Supervisor};
use super::{Event, RunError};

impl Supervisor {
    /// A slot within the worker count must never be left without a worker: the exit paths that
    /// do not restart one themselves (a worker that died while its replacement was starting,
    /// then the replacement failed too) end here.
    pub fn ensure_occupied(&mut self, slot: usize) {
        let empty = !self.workers.iter().any(|worker| worker.slot == slot);
        if empty
            && slot <= self.config.workers
            && self.phase != Phase::Stopping
            && !self.slots[slot - 1].respawn_pending
        {
            self.slots[slot - 1].respawn_pending = true;
            self.after(Duration::ZERO, Event::RespawnDue { slot });
        }
    }

    /// A worker of `slot` ended without being asked to: record it, then restart the slot or,
    /// when no worker was ever ready, give up on start-up.
    pub async fn on_failure(&mut self, slot: usize, exit: LastExit) {
        let policy = &self.policy;
        let history = &mut self.slots[slot - 1];
        // A worker that served for a while proves the command works: its death (the OOM killer,
        // an operator) starts the count over and is restarted at once. Measured per worker from
        // its readiness, so that reloads, which replace workers, never keep it from resetting.
        let healthy = exit
            .ready_for
            .is_some_and(|ready_for| ready_for >= policy.healthy_uptime);
        if healthy {
            history.failures = 0;
            history.errored = false;
            self.served_healthy = true;
        }
        history.failures += 1;
        history.restarts += 1;
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
            self.logger.warn(what);
            return;
        }
        let delay = self.policy.delay(failures);
        let when = if delay.is_zero() {
            "restarting now".to_string()
        } else {
            format!("restarting in {}", humantime::format_duration(delay))
        };
        let history = &mut self.slots[slot - 1];
        if failures >= self.policy.errored_after && !history.errored {
            history.errored = true;
            self.logger.error(format!(
                "slot {slot} is crash-looping (errored): {failures} failures in a row, the last: \
                 {what}; {when}{}",
                format_tail(&exit.tail)
            ));
        } else {
            self.logger.warn(format!("{what}; {when}"));
        }
        self.check_started();
        if delay.is_zero() {
            Box::pin(self.start_worker(slot)).await;
        } else {
            self.slots[slot - 1].respawn_pending = true;
            self.after(delay, Event::RespawnDue { slot });
        }
    }

    /// Start-up has failed when no worker is ready and either every slot failed twice in
    /// a row (the command cannot work) or a worker never signalled readiness in time (waiting
    /// longer would not help).
    pub fn startup_has_failed(&self, exit: &LastExit) -> bool {
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
    pub fn proven_slots(&self) -> Vec<usize> {
        let (delay, healthy) = (self.config.ready_delay, self.policy.healthy_uptime);
        let mut slots: Vec<usize> = self
            .workers
            .iter()
            .filter(|worker| worker.is_serving() && worker.slot <= self.config.workers)
            .filter(|worker| {
                worker.ready_at.is_some_and(|at| at.elapsed() >= healthy)
                    && worker
                        .ready_signal_at
                        .is_none_or(|at| at.elapsed() >= delay)
            })
            .map(|worker| worker.slot)
            .collect();
        slots.sort_unstable();
        slots.dedup();
        slots
    }

    pub fn fail_startup(&mut self, slot: usize) {
        let history = &self.slots[slot - 1];
        let Some(exit) = &history.last_exit else {
            return;
        };
        let mut report = describe_exit(slot, exit);
        if history.failures > 1 {
            report.push_str(&format!(" ({} times)", history.failures));
        }
        report.push_str(&format_tail(&exit.tail));
        let port = self.listeners.local_addr().port();
        report.push_str(&format!(
            "\nhint: {}",
            startup_hint(exit, &self.config, port)
        ));
        self.failure = Some(RunError::StartupFailed(report));
        self.phase = Phase::Stopping;
        // Nothing serves yet, so there is nothing to drain: stop the other workers at once.
        self.kill_all();
    }
}
