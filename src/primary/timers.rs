//! The executor's timers: keyed, so that scheduling one again moves it and a worker's timers go
//! with it; all in one queue the executor's loop waits on (no task per timer).

use std::collections::HashMap;
use std::time::Duration;

use tokio_util::time::delay_queue::{DelayQueue, Key};

use super::lifecycle::{Timer, WorkerId};

/// What falls due: a timer of the lifecycle, or one of the executor's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Due {
    Lifecycle(Timer),
    /// Time to look for connections queued on sockets no worker holds (`rescue`).
    RescueSweep,
    /// Time to look for foreign sockets on the cluster's port (`port_watch`).
    PortGroupCheck,
    /// Time to hand waiting connections again (`--balance round-robin`, `node`).
    RoundRobin,
    /// Time to accept again after accepting failed (`--balance round-robin`, `node`).
    RoundRobinAccept,
}

#[derive(Default)]
pub struct Timers {
    queue: DelayQueue<Due>,
    keys: HashMap<Due, Key>,
}

impl Timers {
    /// Sets `due` to fall due after `after`, moving it if it was set already.
    pub fn schedule(&mut self, due: Due, after: Duration) {
        match self.keys.get(&due) {
            Some(key) => self.queue.reset(key, after),
            None => {
                let key = self.queue.insert(due, after);
                self.keys.insert(due, key);
            }
        }
    }

    /// Drops the timers of a worker that is gone.
    pub fn cancel_worker(&mut self, worker: WorkerId) {
        let gone: Vec<Due> = self
            .keys
            .keys()
            .filter(|due| matches!(due, Due::Lifecycle(timer) if timer.worker() == Some(worker)))
            .copied()
            .collect();
        for due in gone {
            if let Some(key) = self.keys.remove(&due) {
                self.queue.remove(&key);
            }
        }
    }

    /// The next timer to fall due; pending while none is set.
    pub async fn next(&mut self) -> Due {
        if self.queue.is_empty() {
            return std::future::pending().await;
        }
        let expired = std::future::poll_fn(|cx| self.queue.poll_expired(cx)).await;
        match expired {
            Some(expired) => {
                let due = expired.into_inner();
                self.keys.remove(&due);
                due
            }
            None => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn timers_move_when_set_again_and_go_with_their_worker() {
        let mut timers = Timers::default();
        let worker = WorkerId(7);
        timers.schedule(
            Due::Lifecycle(Timer::KillDeadline(worker)),
            Duration::from_secs(1),
        );
        timers.schedule(Due::Lifecycle(Timer::Respawn(2)), Duration::from_secs(3));
        timers.schedule(Due::RescueSweep, Duration::from_secs(5));
        // Set again: moved later, not twice.
        timers.schedule(Due::Lifecycle(Timer::Respawn(2)), Duration::from_secs(2));
        timers.cancel_worker(worker);
        assert_eq!(timers.next().await, Due::Lifecycle(Timer::Respawn(2)));
        assert_eq!(timers.next().await, Due::RescueSweep);
        let nothing = tokio::time::timeout(Duration::from_secs(60), timers.next()).await;
        assert!(nothing.is_err(), "no timer is left");
    }
}
