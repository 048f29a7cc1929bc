//! When a starting worker counts as ready, and when start-up is over.
//!
//! Ready means serving, so a worker's signal (`READY=1`, an IPC `ready`) counts only once the
//! worker has stayed up `--ready-delay` after it; with `--ready delay` a worker that sends none is
//! ready `--ready-delay` after its start, until the command is seen to signal (then every later
//! worker waits for its own). Start-up is over once every slot is ready or errored.

use tokio::time::Instant;

use super::process::WorkerState;
use super::report::workers;
use super::supervisor::{Phase, StopReason, Supervisor};
use super::Event;
use crate::config::ReadyMode;
use crate::domain::ClusterEvent;

impl Supervisor {
    /// A worker said it is ready (`READY=1`, an IPC `ready`). That does not count until it has
    /// stayed up `--ready-delay` more: gunicorn, for one, sends `READY=1` from its arbiter before
    /// its worker has imported the app, and an app that fails at import dies within moments.
    ///
    /// With `--ready delay`, the first such signal teaches that this command sends one: later
    /// workers wait for theirs. A worker already ready by the delay when its signal comes (a
    /// slow start) is not taken back, but should it die within `--ready-delay` of the signal,
    /// it counts as never ready (restart policy, start-up failure).
    pub(super) async fn on_ready_signal(&mut self, uid: u64) {
        let delay = self.config.ready_delay;
        self.command_signals_ready = true;
        let Some(worker) = self.worker_mut(uid) else {
            return;
        };
        if worker.ready_signal_at.is_some() || worker.state == WorkerState::Draining {
            return;
        }
        worker.ready_signal_at = Some(Instant::now());
        if worker.state != WorkerState::Starting {
            return;
        }
        if delay.is_zero() {
            self.ready_check(uid).await;
        } else {
            self.after(delay, Event::ReadyDelayElapsed { uid });
        }
    }

    /// Marks worker `uid` ready if it has earned it: `--ready-delay` after its readiness signal
    /// and, with `--ready delay`, after its start; with `--ready delay` and no signal, after its
    /// start alone. Called when either delay has elapsed.
    pub(super) async fn ready_check(&mut self, uid: u64) {
        let (mode, delay) = (self.config.ready, self.config.ready_delay);
        let Some(worker) = self.workers.iter().find(|worker| worker.uid == uid) else {
            return;
        };
        // The signal comes after the start, so a delay elapsed since it has elapsed since both.
        let since = match (worker.ready_signal_at, mode) {
            (Some(signal), _) => signal,
            (None, ReadyMode::Delay) if !self.command_signals_ready => worker.started_at,
            (None, _) => return,
        };
        if since.elapsed() >= delay {
            self.mark_ready(uid).await;
        }
    }

    async fn mark_ready(&mut self, uid: u64) {
        let Some(worker) = self.worker_mut(uid) else {
            return;
        };
        if worker.state != WorkerState::Starting {
            return;
        }
        worker.state = WorkerState::Ready;
        worker.ready_at = Some(Instant::now());
        let (slot, pid, replaces) = (worker.slot, worker.pid, worker.replaces);
        self.logger.info(format!("worker {slot} (pid {pid}) ready"));
        self.observe(ClusterEvent::Online { slot, pid });
        self.observe(ClusterEvent::Listening { slot, pid });
        if let Some(old) = replaces {
            self.on_replacement_ready(uid, old).await;
        }
        self.steer();
        self.check_started();
    }

    /// Start-up is over once every slot has a ready worker or is crash-looping (`errored`) while
    /// another serves: the cluster runs (degraded, when some slot is errored), and a service
    /// manager waiting for the primary's `READY=1` gets it, so that one broken slot does not
    /// hold up (under systemd: fail) the ones that serve.
    pub fn check_started(&mut self) {
        if self.phase != Phase::Starting {
            return;
        }
        let ready = self.ready_slots();
        let count = self.config.workers;
        let errored: Vec<usize> = (1..=count)
            .filter(|slot| !ready.contains(slot) && self.slots[slot - 1].errored)
            .collect();
        if ready.is_empty() || ready.len() + errored.len() < count {
            return;
        }
        self.phase = Phase::Running;
        let status = if errored.is_empty() {
            self.logger.info(format!("all {} ready", workers(count)));
            format!("{} ready", workers(count))
        } else {
            let slots = errored
                .iter()
                .map(|slot| slot.to_string())
                .collect::<Vec<_>>()
                .join(", ");
            let status = format!(
                "{} of {count} workers ready; running degraded, slot {slots} crash-looping",
                ready.len()
            );
            self.logger.warn(&status);
            status
        };
        self.notify_service_manager(&format!("READY=1\nSTATUS={status}"));
    }

    pub(super) fn on_ready_timeout(&mut self, uid: u64) {
        let timeout = self.config.ready_timeout;
        let Some(worker) = self.worker_mut(uid) else {
            return;
        };
        // One that said it is ready in time finishes its probation (`--ready-delay`).
        if worker.state != WorkerState::Starting || worker.ready_signal_at.is_some() {
            return;
        }
        let (slot, pid) = (worker.slot, worker.pid);
        self.logger.warn(format!(
            "worker {slot} (pid {pid}) not ready within {}; stopping it",
            humantime::format_duration(timeout)
        ));
        self.stop_worker(uid, StopReason::NotReady);
    }
}
