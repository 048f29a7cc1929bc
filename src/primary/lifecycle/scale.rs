//! Scaling at run time: `herdsman scale N|+K|-K`, SIGTTIN (+1), SIGTTOU (−1), the library's
//! `Primary::scale`, a changed `workers` in herdsman.toml on reload.
//!
//! New slots start at once. The workers of removed slots are *retired*
//! ([`Machine::retire_worker`]): new connections are steered away from them, and each is asked
//! to stop once the connections already queued on its own socket are accepted. The primary
//! never closes a slot's sockets, so no queued connection is ever reset; a later scale-up reuses
//! them. A request for the change is answered twice: at once with what was done, and once the
//! new count serves (every slot ready, every removed worker gone), a slot crash-loops, or
//! [`SCALE_WAIT`] has passed.

use std::time::{Duration, Instant};

use super::super::report::workers;
use super::{Machine, Phase, RequestId, Slot, StopReason, Timer, Update};
use crate::balance::BindError;
use crate::domain::{ScaleError, ScaleTarget, Scaled};

/// How long a `scale` request waits for the new count to serve.
pub const SCALE_WAIT: Duration = Duration::from_secs(120);

/// A `scale` request waiting for the new count to serve.
pub(super) struct ScaleWait {
    request: RequestId,
    since: Instant,
}

impl Machine {
    /// Changes the worker count; says what it did (logged, and the first line of the answer),
    /// or why it did not (the answer, or logged where no client hears it). More slots need
    /// their sockets first: the executor adds them ([`super::Effect::AddSlots`]) and answers.
    pub(super) fn scale(&mut self, target: ScaleTarget, request: Option<RequestId>) {
        match self.scale_refusal(target) {
            Ok(to) if to > self.config.workers => {
                self.adding_slots = Some((to, request));
                self.effects.push(super::Effect::AddSlots(to));
            }
            Ok(to) => self.scale_to(to, request),
            Err(refused) => self.refuse_scale(request, refused),
        }
    }

    /// The sockets for more slots are there, or could not be made.
    pub(super) fn on_slots_added(&mut self, added: Result<(), BindError>) {
        let Some((to, request)) = self.adding_slots.take() else {
            return;
        };
        match added {
            Ok(()) => self.scale_to(to, request),
            Err(error) => self.refuse_scale(request, ScaleError::Bind(error)),
        }
    }

    fn refuse_scale(&mut self, request: Option<RequestId>, refused: ScaleError) {
        match request {
            Some(_) => self.done(request, false, refused.to_string()),
            None => self.warn(refused.to_string()),
        }
    }

    /// The count to scale to, or why not.
    fn scale_refusal(&self, target: ScaleTarget) -> Result<usize, ScaleError> {
        if self.phase == Phase::Stopping {
            return Err(ScaleError::Stopping);
        }
        if self.reload.is_some() || self.reading_config.is_some() {
            return Err(ScaleError::Reloading);
        }
        target.resolve(self.config.workers)
    }

    /// Moves to `to` workers (already checked), and says so.
    fn scale_to(&mut self, to: usize, request: Option<RequestId>) {
        let message = self.move_to(to).to_string();
        self.info(&message);
        if let Some(request) = request {
            self.reply(Some(request), Update::Progress { message });
            self.scale_waits.push(ScaleWait {
                request,
                since: self.now,
            });
            self.schedule(Timer::ScaleDeadline(request), SCALE_WAIT);
        }
    }

    /// Moves from the current worker count to `to`; what it did.
    fn move_to(&mut self, to: usize) -> Scaled {
        let from = self.config.workers;
        if to == from {
            return Scaled::Already { workers: from };
        }
        self.config.workers = to;
        self.announce(super::LifecycleEvent::Scale { from, to });
        if to > from {
            for slot in from + 1..=to {
                let fresh = Slot::new(self.spec.clone());
                match self.slots.get_mut(slot - 1) {
                    Some(history) => *history = fresh,
                    None => self.slots.push(fresh),
                }
                self.start_worker(slot);
            }
            return Scaled::Up { from, to };
        }
        let leaving: Vec<_> = self
            .workers
            .iter()
            .filter(|worker| worker.slot > to)
            .map(|worker| worker.id)
            .collect();
        for id in leaving {
            self.retire_worker(id, StopReason::ScaleDown);
        }
        Scaled::Down { from, to }
    }

    /// Answers the `scale` requests whose wait is over: the count serves, or a slot
    /// crash-loops.
    pub(super) fn check_scale_waits(&mut self) {
        if self.scale_waits.is_empty() {
            return;
        }
        let count = self.config.workers;
        let ready = self.ready_slots().len();
        let leaving = self.workers.iter().any(|worker| worker.slot > count);
        let outcome = if ready == count && !leaving {
            Some((true, format!("{} ready", workers(ready))))
        } else {
            (1..=count)
                .find(|&slot| {
                    !self.workers.iter().any(|worker| worker.slot == slot) && self.is_errored(slot)
                })
                .map(|slot| {
                    let reason = self.slots[slot - 1].last_exit.as_ref().map_or(
                        "it keeps failing".into(),
                        |exit| {
                            let not_accepting = exit.stop_reason == Some(StopReason::NotAccepting);
                            exit.reason.shown(not_accepting)
                        },
                    );
                    (false, format!("slot {slot} is crash-looping: {reason}"))
                })
        };
        if let Some((ok, message)) = outcome {
            for wait in std::mem::take(&mut self.scale_waits) {
                self.done(Some(wait.request), ok, &message);
            }
        }
    }

    pub(super) fn on_scale_deadline(&mut self, request: RequestId) {
        let Some(index) = self.scale_waits.iter().position(|w| w.request == request) else {
            return;
        };
        let wait = self.scale_waits.remove(index);
        let count = self.config.workers;
        let ready = self.ready_slots().len();
        let leaving = self.workers.iter().filter(|w| w.slot > count).count();
        let waited = self.now.saturating_duration_since(wait.since);
        self.done(
            Some(request),
            false,
            format!(
                "after {}: {ready} of {count} workers ready, {leaving} still stopping",
                humantime::format_duration(Duration::from_secs(waited.as_secs()))
            ),
        );
    }

    /// Answers every waiting `scale` request with `reason` (the cluster stops).
    pub(super) fn abort_waits(&mut self, reason: &str) {
        for wait in std::mem::take(&mut self.scale_waits) {
            self.done(Some(wait.request), false, reason);
        }
    }
}
