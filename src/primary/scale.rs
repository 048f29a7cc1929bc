//! Scaling at run time: `herdsman scale N|+K|-K`, SIGTTIN (+1), SIGTTOU (−1).
//!
//! New slots start at once. The workers of removed slots are *retired*
//! ([`Supervisor::retire_worker`]): new connections are steered away from them, and each is
//! asked to stop once the connections already queued on its own socket are accepted. The
//! primary never closes a slot's sockets, so no queued connection is ever reset; a later
//! scale-up reuses them.

use super::report::workers;
use super::supervisor::{Phase, SlotHistory, StopReason, Supervisor};
use crate::config::MAX_WORKERS;
use crate::control::protocol::ScaleTarget;

impl Supervisor {
    /// Changes the worker count; says what it did (logged here), or why it did not (logged by
    /// the caller where no client hears it).
    pub async fn scale(&mut self, target: ScaleTarget) -> Result<String, String> {
        if self.phase == Phase::Stopping {
            return Err("the cluster is stopping".into());
        }
        if self.reload.is_some() {
            return Err("a reload is in progress; scale when it ends".into());
        }
        let from = self.config.workers;
        let to = target.resolve(from)?;
        if to > MAX_WORKERS {
            return Err(format!("at most {MAX_WORKERS} workers are supported"));
        }
        if to == from {
            let message = format!("already at {}", workers(from));
            self.logger.info(&message);
            return Ok(message);
        }
        if to > from {
            self.listeners
                .ensure_slots(to)
                .map_err(|error| error.to_string())?;
        }
        Ok(self.scale_to(to).await)
    }

    /// Moves from the current worker count to `to` (already checked).
    async fn scale_to(&mut self, to: usize) -> String {
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
            let message = format!("scaled {from} → {to}: started {}", slot_list(from + 1, to));
            self.logger.info(&message);
            return message;
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
        let message = format!("scaled {from} → {to}: draining {}", slot_list(to + 1, from));
        self.logger.info(&message);
        message
    }
}

/// `slot 3`, `slots 3 and 4`, `slots 3 to 6`.
fn slot_list(first: usize, last: usize) -> String {
    match last - first {
        0 => format!("slot {first}"),
        1 => format!("slots {first} and {last}"),
        _ => format!("slots {first} to {last}"),
    }
}
