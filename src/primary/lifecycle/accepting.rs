//! Ready means serving: a ready worker that leaves connections unaccepted is not serving,
//! whatever it said, and is replaced.
//!
//! The primary holds every listening socket, so it can read each one's accept queue (`TCP_INFO`,
//! whose `tcpi_unacked` is a listening socket's backlog). The executor samples the queues every
//! [`Machine::accept_poll`] and hands them in ([`super::Input::AcceptSample`]). A queue only
//! shrinks when its connections are accepted, so a queue that stayed non-empty and never shrank
//! for `--accept-timeout` holds a connection that nobody took (an app that binds a port of its
//! own, a worker stuck for good): that worker is reported `not accepting`, stopped, and its slot
//! restarted like a crashed one, on the same socket, so the new worker serves what waited. It
//! counts as a failure of its slot (never as a healthy run), so a command that never accepts
//! backs off and ends `errored`.
//!
//! With `--watchdog` no longer than `--accept-timeout`, such a worker is hung instead, at the
//! watchdog's duration: it is replaced new first (`limits`), as one that stopped sending
//! `WATCHDOG=1` is.
//!
//! With `--balance shared` every worker takes from one queue and the primary cannot tell which
//! one does not: but one accepting worker is enough to drain it, so a shared queue that stays
//! stuck while workers claim to be ready means none of them accepts, and every ready worker is
//! reported and replaced. A single broken worker beside healthy ones is not visible there (nor
//! does it strand a connection).

use std::time::{Duration, Instant};

use super::{Machine, Phase, StopReason, Timer, WorkerId};

/// Since when a queue has been non-empty without shrinking, and its length at the last sample.
pub type Stall = Option<(Instant, u32)>;

impl Machine {
    /// How often the accept queues are sampled: ten times per `--accept-timeout`, within bounds.
    pub fn accept_poll(&self) -> Duration {
        (self.stall_limit().0 / 10).clamp(Duration::from_millis(50), Duration::from_secs(1))
    }

    /// How long a queue may stall, and whether a worker that stalls that long is hung
    /// (`--watchdog`, when no longer than `--accept-timeout`) rather than not accepting.
    fn stall_limit(&self) -> (Duration, bool) {
        match self.config.watchdog {
            Some(watchdog) if watchdog <= self.config.accept_timeout => (watchdog, true),
            _ => (self.config.accept_timeout, false),
        }
    }

    /// Takes a sample of the queues: replaces the ready workers not accepting, and schedules
    /// the next sample.
    pub(super) fn check_accepting(&mut self, queued: &[(WorkerId, u32)], shared: Option<u32>) {
        if self.phase == Phase::Stopping {
            return;
        }
        if !self.served_healthy && !self.proven_slots().is_empty() {
            // A worker served for the healthy uptime: start-up is over for good (`failure`).
            self.served_healthy = true;
        }
        let now = self.now;
        let (timeout, hung) = self.stall_limit();
        let stalled_for = |stall: Stall| {
            stall.is_some_and(|(since, _)| now.saturating_duration_since(since) > timeout)
        };
        let mut stalled = Vec::new();
        if self.facts.steerable {
            for &(id, count) in queued {
                let Some(worker) = self.worker_mut(id) else {
                    continue;
                };
                if !worker.is_serving() {
                    continue;
                }
                worker.accept_stall = next_stall(worker.accept_stall, count, now);
                if stalled_for(worker.accept_stall) {
                    stalled.push((id, count, false));
                }
            }
        } else if let Some(count) = shared {
            let serving: Vec<WorkerId> = self
                .workers
                .iter()
                .filter(|worker| worker.is_serving())
                .map(|worker| worker.id)
                .collect();
            self.shared_accept_stall = match serving.is_empty() {
                true => None,
                false => next_stall(self.shared_accept_stall, count, now),
            };
            if stalled_for(self.shared_accept_stall) {
                self.shared_accept_stall = None;
                stalled.extend(serving.into_iter().map(|id| (id, count, true)));
            }
        }
        for (id, queued, shared) in stalled {
            match hung {
                true => self.replace_for(id, super::ReplaceReason::QueueStuck { timeout, queued }),
                false => self.not_accepting(id, queued, shared),
            }
        }
        let poll = self.accept_poll();
        self.schedule(Timer::AcceptCheck, poll);
    }

    fn not_accepting(&mut self, id: WorkerId, queued: u32, shared: bool) {
        let timeout = humantime::format_duration(self.config.accept_timeout);
        let port = self.facts.port;
        let Some(worker) = self.worker(id) else {
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
        self.error(format!(
            "worker {slot} (pid {pid}) not accepting: {connections} waited in {queue} for more \
             than {timeout} (--accept-timeout); replacing it\nhint: a worker must accept on the \
             socket it inherits (fd 3, LISTEN_FDS) for port {port}; this one may listen on a port \
             of its own, or be stuck"
        ));
        self.stop_worker(id, StopReason::NotAccepting);
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
