//! Scaling at run time: `herdsman scale N|+K|-K`, SIGTTIN (+1), SIGTTOU (−1).
//!
//! New slots start at once. A removed slot is *retired*: it leaves the set of slots that new
//! connections are steered to, and its worker is asked to stop only once the slot's own accept
//! queue is empty (reuseport: connections the kernel queued on that socket before the steering
//! changed would otherwise wait with no one to accept them). The primary never closes a slot's
//! socket, so no queued connection is ever reset; a later scale-up reuses it.

use std::time::Duration;

use tokio::time::Instant;

use super::report::workers;
use super::supervisor::{Phase, SlotHistory, StopReason, Supervisor};
use super::Event;
use crate::config::MAX_WORKERS;
use crate::control::protocol::ScaleTarget;

/// How often a retiring slot's queue is checked.
const RETIRE_POLL: Duration = Duration::from_millis(20);
/// A retiring slot waits at least this long, for handshakes the kernel had begun on it to land
/// in its queue, before its worker stops.
const RETIRE_MIN_WAIT: Duration = Duration::from_millis(200);
/// …and at most this long, should its queue never empty (a worker that stopped accepting).
const RETIRE_MAX_WAIT: Duration = Duration::from_secs(5);

impl Supervisor {
    /// Changes the worker count; says what it did, or why it did not.
    pub async fn scale(&mut self, target: ScaleTarget) -> Result<String, String> {
        if self.phase == Phase::Stopping {
            return Err("the cluster is stopping".into());
        }
        if self.reload.is_some() {
            return Err("a reload is in progress; scale when it ends".into());
        }
        let from = self.config.workers;
        let to = target.resolve(from);
        if to > MAX_WORKERS {
            return Err(format!("at most {MAX_WORKERS} workers are supported"));
        }
        if to == from {
            return Ok(format!("already at {}", workers(from)));
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
            let message = format!(
                "scaled {from} → {to}: started slots {}",
                slot_list(from + 1, to)
            );
            self.logger.info(&message);
            return message;
        }
        self.steer_to_ready_slots();
        let now = Instant::now();
        for slot in to + 1..=from {
            self.slots[slot - 1].retiring_since = Some(now);
            self.retire_check(slot);
        }
        let message = format!(
            "scaled {from} → {to}: draining slots {}",
            slot_list(to + 1, from)
        );
        self.logger.info(&message);
        message
    }

    /// Stops a retiring slot's workers once its queue is empty, or checks again soon.
    pub fn retire_check(&mut self, slot: usize) {
        let Some(since) = self
            .slots
            .get(slot - 1)
            .and_then(|history| history.retiring_since)
        else {
            return;
        };
        if slot <= self.config.workers {
            // Scaled back up meanwhile; the slot is in use again.
            self.slots[slot - 1].retiring_since = None;
            return;
        }
        let waited = since.elapsed();
        let drained = match self.listeners.queued(slot) {
            // One shared queue: the other workers serve it.
            None => true,
            Some(queued) => queued == 0 && waited >= RETIRE_MIN_WAIT,
        };
        if !drained && waited < RETIRE_MAX_WAIT {
            self.after(RETIRE_POLL, Event::RetireCheck { slot });
            return;
        }
        self.slots[slot - 1].retiring_since = None;
        let uids: Vec<u64> = self
            .workers
            .iter()
            .filter(|worker| worker.slot == slot)
            .map(|worker| worker.uid)
            .collect();
        for uid in uids {
            self.stop_worker(uid, StopReason::ScaleDown);
        }
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
