//! Ready means serving: a ready worker that leaves connections unaccepted is not serving,
//! whatever it said, and is replaced.
//!
//! The primary holds every listening socket, so it can read each one's accept queue (`TCP_INFO`,
//! whose `tcpi_unacked` is a listening socket's backlog; see `steering`). It samples the queues
//! of ready workers every [`Supervisor::accept_poll`]. A queue only shrinks when its connections
//! are accepted, so a queue that stayed non-empty and never shrank for `--accept-timeout` holds a
//! connection that nobody took (an app that binds a port of its own, a worker stuck for good):
//! that worker is reported `not accepting`, stopped, and its slot restarted like a crashed one,
//! on the same socket, so the new worker serves what waited. It counts as a failure of its slot
//! (never as a healthy run), so a command that never accepts backs off and ends `errored`.
//!
//! With `--balance shared` every worker takes from one queue and the primary cannot tell which
//! one does not: but one accepting worker is enough to drain it, so a shared queue that stays
//! stuck while workers claim to be ready means none of them accepts, and every ready worker is
//! reported and replaced. A single broken worker beside healthy ones is not visible there (nor
//! does it strand a connection).

use std::time::Duration;

use tokio::time::Instant;

use super::supervisor::{StopReason, Supervisor};
use super::Event;

/// Since when a queue has been non-empty without shrinking, and its length at the last sample.
pub type Stall = Option<(Instant, u32)>;

impl Supervisor {
    /// How often the accept queues are sampled: ten times per `--accept-timeout`, within bounds.
    pub fn accept_poll(&self) -> Duration {
        (self.config.accept_timeout / 10).clamp(Duration::from_millis(50), Duration::from_secs(1))
    }

    /// Samples the queues of ready workers, replaces those not accepting, and schedules the next
    /// sample.
    pub fn check_accepting(&mut self) {
        if self.phase == super::supervisor::Phase::Stopping {
            return;
        }
        if !self.served_healthy && !self.proven_slots().is_empty() {
            // A worker served for the healthy uptime: start-up is over for good (`failure`).
            self.served_healthy = true;
        }
        let now = Instant::now();
        let timeout = self.config.accept_timeout;
        let mut stalled = Vec::new();
        if self.listeners.steerable() {
            for index in 0..self.workers.len() {
                let worker = &self.workers[index];
                if !worker.is_serving() {
                    continue;
                }
                let queued = self.listeners.queued(worker.slot, worker.side).unwrap_or(0);
                let stall = next_stall(worker.accept_stall, queued, now);
                self.workers[index].accept_stall = stall;
                if stall.is_some_and(|(since, _)| now.duration_since(since) > timeout) {
                    stalled.push((self.workers[index].uid, queued, false));
                }
            }
        } else if let Some(queued) = self.listeners.shared_queued() {
            let serving: Vec<u64> = self
                .workers
                .iter()
                .filter(|worker| worker.is_serving())
                .map(|worker| worker.uid)
                .collect();
            self.shared_accept_stall = match serving.is_empty() {
                true => None,
                false => next_stall(self.shared_accept_stall, queued, now),
            };
            if self
                .shared_accept_stall
                .is_some_and(|(since, _)| now.duration_since(since) > timeout)
            {
                self.shared_accept_stall = None;
                stalled.extend(serving.into_iter().map(|uid| (uid, queued, true)));
            }
        }
        for (uid, queued, shared) in stalled {
            self.not_accepting(uid, queued, shared);
        }
        self.after(self.accept_poll(), Event::AcceptCheck);
    }

    fn not_accepting(&mut self, uid: u64, queued: u32, shared: bool) {
        let timeout = humantime::format_duration(self.config.accept_timeout);
        let port = self.listeners.local_addr().port();
        let Some(worker) = self.workers.iter().find(|worker| worker.uid == uid) else {
            return;
        };
        let (slot, pid) = (worker.slot, worker.pid);
        let connections = match queued {
            1 => "1 connection".to_string(),
            _ => format!("{queued} connections"),
        };
        let queue = if shared {
            "the shared queue (no ready worker takes from it)"
        } else {
            "its queue"
        };
        self.logger.error(format!(
            "worker {slot} (pid {pid}) not accepting: {connections} waited in {queue} for more \
             than {timeout} (--accept-timeout); replacing it\nhint: a worker must accept on the \
             socket it inherits (fd 3, LISTEN_FDS) for port {port}; this one may listen on a port \
             of its own, or be stuck"
        ));
        self.stop_worker(uid, StopReason::NotAccepting);
    }
}

/// The stall after a sample of `queued`: none while the queue is empty, restarted whenever it
/// shrank (something was accepted), kept while it stays or grows.
fn next_stall(previous: Stall, queued: u32, now: Instant) -> Stall {
    match previous {
        _ if queued == 0 => None,
        Some((since, last)) if queued >= last => Some((since, queued)),
        _ => Some((now, queued)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stall_lasts_while_the_queue_never_shrinks() {
        let start = Instant::now();
        let later = start + Duration::from_secs(1);
        assert_eq!(next_stall(None, 0, start), None);
        assert_eq!(next_stall(None, 2, start), Some((start, 2)));
        assert_eq!(next_stall(Some((start, 2)), 3, later), Some((start, 3)));
        assert_eq!(next_stall(Some((start, 2)), 2, later), Some((start, 2)));
        assert_eq!(next_stall(Some((start, 3)), 1, later), Some((later, 1)));
        assert_eq!(next_stall(Some((start, 3)), 0, later), None);
    }
}
