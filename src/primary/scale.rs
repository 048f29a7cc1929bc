//! Scaling at run time: `herdsman scale N|+K|-K`, SIGTTIN (+1), SIGTTOU (−1).
//!
//! New slots start at once. The workers of removed slots are *retired*
//! ([`Supervisor::retire_worker`]): new connections are steered away from them, and each is
//! asked to stop once the connections already queued on its own socket are accepted. The
//! primary never closes a slot's sockets, so no queued connection is ever reset; a later
//! scale-up reuses them.

use super::supervisor::{Phase, SlotHistory, StopReason, Supervisor};
use crate::config::MAX_WORKERS;
use crate::domain::{ScaleError, ScaleTarget, Scaled};

impl Supervisor {
    /// Changes the worker count; says what it did (logged here), or why it did not (logged by
    /// the caller where no client hears it).
    pub async fn scale(&mut self, target: ScaleTarget) -> Result<Scaled, ScaleError> {
        if self.phase == Phase::Stopping {
            return Err(ScaleError::Stopping);
        }
        if self.reload.is_some() {
            return Err(ScaleError::Reloading);
        }
        let from = self.config.workers;
        let to = target.resolve(from)?;
        if to > MAX_WORKERS {
            return Err(ScaleError::TooMany { max: MAX_WORKERS });
        }
        if to == from {
            let scaled = Scaled::Already { workers: from };
            self.logger.info(scaled.to_string());
            return Ok(scaled);
        }
        if to > from {
            self.listeners.ensure_slots(to)?;
        }
        let scaled = self.scale_to(to).await;
        self.logger.info(scaled.to_string());
        Ok(scaled)
    }

    /// Moves from the current worker count to `to` (already checked).
    async fn scale_to(&mut self, to: usize) -> Scaled {
        let from = self.config.workers;
        self.config.workers = to;
        if to > from {
            for slot in from + 1..=to {
                let fresh = SlotHistory::new(self.spec.clone());
                match self.slots.get_mut(slot - 1) {
                    Some(history) => *history = fresh,
                    None => self.slots.push(fresh),
                }
                self.start_worker(slot).await;
            }
            return Scaled::Up { from, to };
        }
        let leaving: Vec<u64> = self
            .workers
            .iter()
            .filter(|worker| worker.slot > to)
            .map(|worker| worker.uid)
            .collect();
        for uid in leaving {
            self.retire_worker(uid, StopReason::ScaleDown);
        }
        Scaled::Down { from, to }
    }
}
