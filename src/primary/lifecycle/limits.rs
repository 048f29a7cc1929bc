//! Replacing a ready worker for a reason: hung (`--watchdog`), over `--max-memory`, or done
//! with its `--max-requests`. The one place these replacements are decided.
//!
//! Every trigger ends in [`Machine::replace_for`]: the reason is recorded in the slot (its
//! last replacement, and a count by kind for `/metrics`) and logged, and a replacement starts
//! in the slot, new first, as a restart's does. Once it is ready, the old worker goes: retired
//! (steered away from, its queue finished, then the stop signal) for a limit; at once with
//! SIGABRT (a core dump to look at; SIGKILL after the kill timeout) when hung, since a hung
//! worker will not finish its queue (the rescue relays what waited there).
//!
//! If the replacement fails (exits, or is stopped for not being ready within the ready
//! timeout), a hung worker still goes, then, and its slot restarts as after a crash; a worker
//! over a limit keeps serving and is tried again after the slot's restart delay (at least a
//! second), so a command that cannot start does not loop.
//!
//! The readings come as inputs: `WATCHDOG=1` ([`super::Input::Heartbeat`], with
//! [`super::Timer::Watchdog`] due when one is late), the accept queues (`accepting`), the RSS
//! of each worker's process tree ([`super::Input::MemorySample`]) and the connections each
//! worker served ([`super::Input::ServedSample`]).

use std::fmt;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::{Life, Machine, Phase, StopReason, Timer, WorkerId};

/// How often the RSS of workers is read (with `--max-memory`).
pub const MEMORY_POLL: Duration = Duration::from_secs(1);
/// How often the connections workers served are read (with `--max-requests`).
pub const SERVED_POLL: Duration = Duration::from_millis(100);
/// The least time before a worker over a limit whose replacement failed is tried again.
const RETRY_AT_LEAST: Duration = Duration::from_secs(1);

/// Why a ready worker is replaced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplaceReason {
    /// No `WATCHDOG=1` within `--watchdog`; `ever`: whether it had sent one at all.
    NoHeartbeat { timeout: Duration, ever: bool },
    /// Its accept queue held connections, never shrinking, for `--watchdog`.
    QueueStuck { timeout: Duration, queued: u32 },
    /// The RSS of its process tree is over `--max-memory`.
    MaxMemory { rss: u64, limit: u64 },
    /// It served its `--max-requests` (plus its jitter).
    MaxRequests { served: u64, limit: u64 },
}

impl ReplaceReason {
    /// The reason's kind, as `/metrics` labels it: `watchdog`, `max-memory`, `max-requests`.
    pub fn kind(&self) -> &'static str {
        match self {
            ReplaceReason::NoHeartbeat { .. } | ReplaceReason::QueueStuck { .. } => "watchdog",
            ReplaceReason::MaxMemory { .. } => "max-memory",
            ReplaceReason::MaxRequests { .. } => "max-requests",
        }
    }

    /// A hung worker goes with SIGABRT instead of the stop signal, without finishing its queue.
    pub fn is_hung(&self) -> bool {
        self.kind() == "watchdog"
    }
}

impl fmt::Display for ReplaceReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = |duration: &Duration| humantime::format_duration(*duration).to_string();
        match self {
            ReplaceReason::NoHeartbeat {
                timeout,
                ever: true,
            } => write!(f, "no heartbeat for {} (--watchdog)", shown(timeout)),
            ReplaceReason::NoHeartbeat { timeout, .. } => write!(
                f,
                "no heartbeat (WATCHDOG=1) within {} of being ready (--watchdog)",
                shown(timeout)
            ),
            ReplaceReason::QueueStuck { timeout, queued } => write!(
                f,
                "left {} unaccepted for {} (--watchdog)",
                match queued {
                    1 => "1 connection".to_string(),
                    _ => format!("{queued} connections"),
                },
                shown(timeout)
            ),
            ReplaceReason::MaxMemory { rss, limit } => write!(
                f,
                "rss {} over --max-memory {}",
                mebibytes(*rss),
                mebibytes(*limit)
            ),
            ReplaceReason::MaxRequests { served, limit } => write!(
                f,
                "served {served} requests (--max-requests, its limit {limit})"
            ),
        }
    }
}

/// `312 MiB`, to a tenth below 10 MiB.
pub fn mebibytes(bytes: u64) -> String {
    let mib = bytes as f64 / 1_048_576.0;
    match mib < 10.0 {
        true => format!("{mib:.1} MiB"),
        false => format!("{} MiB", mib.round() as u64),
    }
}

/// A slot's last replacement for a reason, for `status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replacement {
    pub pid: u32,
    pub reason: ReplaceReason,
    pub at: std::time::SystemTime,
}

impl Machine {
    /// The `--max-requests` of worker `id`: the setting plus its own jitter, 0 to
    /// `--max-requests-jitter` (gunicorn's), drawn from the worker's id and the machine's seed.
    pub fn request_limit(&self, id: WorkerId) -> Option<u64> {
        let limit = self.config.max_requests?;
        let jitter = self.config.max_requests_jitter;
        Some(match jitter {
            0 => limit,
            _ => limit + splitmix(self.facts.seed ^ id.0) % (jitter + 1),
        })
    }

    /// Replaces ready worker `id` for `reason`, new first (see the module doc). A worker that
    /// is not serving, already being replaced, or whose slot a reload has yet to replace, is
    /// left as it is.
    pub(super) fn replace_for(&mut self, id: WorkerId, reason: ReplaceReason) {
        if self.phase == Phase::Stopping {
            return;
        }
        let now = self.now;
        let Some(worker) = self.worker(id) else {
            return;
        };
        let waiting = worker.retry_replace_at.is_some_and(|at| now < at);
        if !worker.is_serving() || worker.replacing.is_some() || waiting {
            return;
        }
        let (slot, pid) = (worker.slot, worker.pid);
        if self.reload_will_replace(slot) || slot > self.config.workers {
            return;
        }
        let at = self.wall_now();
        let history = &mut self.slots[slot - 1];
        *history.replacements.entry(reason.kind()).or_default() += 1;
        history.last_replacement = Some(Replacement {
            pid,
            reason: reason.clone(),
            at,
        });
        let how = match reason.is_hung() {
            true => "new first, then SIGABRT",
            false => "new first, gracefully",
        };
        let line = format!(
            "worker {slot} (pid {pid}) replaced: {reason}; starting its replacement ({how})"
        );
        if reason.is_hung() {
            self.warn(line);
        } else {
            self.info(line);
        }
        if let Some(worker) = self.worker_mut(id) {
            worker.replacing = Some(reason);
            worker.retry_replace_at = None;
        }
        let spec = self.slots[slot - 1].spec.clone();
        self.start_replacement(slot, spec, id);
    }

    /// A replacement started by [`Machine::replace_for`] is ready: the old worker goes.
    pub(super) fn on_limit_replacement_ready(&mut self, id: WorkerId, old: WorkerId) {
        let Some(worker) = self.worker(id) else {
            return;
        };
        let (slot, side) = (worker.slot, worker.side);
        self.slots[slot - 1].side = side;
        let hung = self
            .worker(old)
            .and_then(|worker| worker.replacing.as_ref())
            .is_some_and(ReplaceReason::is_hung);
        match hung {
            true => self.stop_worker(old, StopReason::Replaced),
            false => self.retire_worker(old, StopReason::Replaced),
        }
    }

    /// After an exit in `slot`: a worker being replaced whose replacement is gone (it failed)
    /// goes now if hung, or waits to be tried again.
    pub(super) fn check_failed_replacements(&mut self, slot: usize) {
        let orphaned: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|worker| worker.slot == slot && worker.is_serving())
            .filter(|worker| worker.replacing.is_some())
            .filter(|old| !self.workers.iter().any(|w| w.replaces() == Some(old.id)))
            .map(|old| old.id)
            .collect();
        let delay = self.policy.delay(self.slots[slot - 1].failures);
        let retry_at = self.now + delay.max(RETRY_AT_LEAST);
        for id in orphaned {
            let Some(worker) = self.worker_mut(id) else {
                continue;
            };
            let pid = worker.pid;
            let Some(reason) = worker.replacing.take() else {
                continue;
            };
            if reason.is_hung() {
                // Put back: the stop below sends SIGABRT for it.
                worker.replacing = Some(reason);
                self.error(format!(
                    "worker {slot} (pid {pid}) is hung and its replacement failed; stopping it \
                     anyway (SIGABRT), the slot restarts"
                ));
                self.stop_worker(id, StopReason::Replaced);
            } else {
                worker.retry_replace_at = Some(retry_at);
                self.warn(format!(
                    "worker {slot} (pid {pid}) keeps serving: its replacement failed; trying \
                     again in {}",
                    humantime::format_duration(delay.max(RETRY_AT_LEAST))
                ));
            }
        }
    }

    /// `WATCHDOG=1` from worker `id`: its watchdog starts over.
    pub(super) fn on_heartbeat(&mut self, id: WorkerId) {
        let Some(timeout) = self.config.watchdog else {
            return;
        };
        let Some(worker) = self.worker_mut(id) else {
            return;
        };
        worker.heartbeats = true;
        if worker.life == Life::Ready {
            self.schedule(Timer::Watchdog(id), timeout);
        }
    }

    /// Worker `id` became ready: with `--watchdog`, its first heartbeat is due.
    pub(super) fn arm_watchdog(&mut self, id: WorkerId) {
        if let Some(timeout) = self.config.watchdog {
            self.schedule(Timer::Watchdog(id), timeout);
        }
    }

    /// [`Timer::Watchdog`]: no heartbeat came within `--watchdog`.
    pub(super) fn on_watchdog(&mut self, id: WorkerId) {
        let Some(timeout) = self.config.watchdog else {
            return;
        };
        let Some(worker) = self.worker(id) else {
            return;
        };
        let ever = worker.heartbeats;
        if !ever && !self.watchdog_hint_given {
            self.watchdog_hint_given = true;
            self.warn(format!(
                "hint: with --watchdog {} every ready worker must send WATCHDOG=1 on \
                 $NOTIFY_SOCKET at least that often (sd_notify(3), `systemd-notify WATCHDOG=1`; \
                 every half of $WATCHDOG_USEC is usual; herdsman's Rust library sends it itself)",
                humantime::format_duration(timeout)
            ));
        }
        self.replace_for(id, ReplaceReason::NoHeartbeat { timeout, ever });
    }

    /// The RSS of each worker's process tree ([`super::Input::MemorySample`]).
    pub(super) fn on_memory_sample(&mut self, sample: &[(WorkerId, u64)]) {
        let Some(crate::config::Size(limit)) = self.config.max_memory else {
            return;
        };
        for &(id, rss) in sample {
            if rss > limit {
                self.replace_for(id, ReplaceReason::MaxMemory { rss, limit });
            }
        }
        if self.phase != Phase::Stopping {
            self.schedule(Timer::MemoryCheck, MEMORY_POLL);
        }
    }

    /// The connections each worker has served so far ([`super::Input::ServedSample`]).
    pub(super) fn on_served_sample(&mut self, sample: &[(WorkerId, u64)]) {
        if self.config.max_requests.is_none() {
            return;
        }
        for &(id, served) in sample {
            let Some(limit) = self.request_limit(id) else {
                continue;
            };
            if served >= limit {
                self.replace_for(id, ReplaceReason::MaxRequests { served, limit });
            }
        }
        if self.phase != Phase::Stopping {
            self.schedule(Timer::ServedCheck, SERVED_POLL);
        }
    }

    /// The polls the limits need, at start.
    pub(super) fn schedule_limit_checks(&mut self) {
        if self.config.max_memory.is_some() {
            self.schedule(Timer::MemoryCheck, MEMORY_POLL);
        }
        if self.config.max_requests.is_some() {
            self.schedule(Timer::ServedCheck, SERVED_POLL);
        }
    }

    /// The signal a worker asked to stop gets: SIGABRT when it is hung, else the stop order.
    pub(super) fn hung_signal(&self, id: WorkerId) -> Option<Signal> {
        self.worker(id)
            .and_then(|worker| worker.replacing.as_ref())
            .filter(|reason| reason.is_hung())
            .map(|_| Signal::SIGABRT)
    }
}

/// A well-spread 64-bit hash (splitmix64's finaliser).
fn splitmix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
