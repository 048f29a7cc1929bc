//! When a starting worker counts as ready, and when start-up is over.
//!
//! Ready means serving, so a worker's signal (`READY=1`, an IPC `ready`) counts only once the
//! worker has stayed up `--ready-delay` after it; with `--ready delay` a worker that sends none is
//! ready `--ready-delay` after its start, until the command is seen to signal (then every later
//! worker waits for its own). Start-up is over once every slot is ready or errored.
//!
//! A Node worker's `listening` is a signal of its own kind, the one Node's primary knows: with
//! `--ready delay` it counts as the worker's signal, and once a worker of the command listened,
//! later ones wait for theirs; but once one said `process.send('ready')` (PM2's `wait_ready`),
//! later ones wait for their words, and with `--ready notify` only words count. An app that
//! listens first and warms up after is then not taken for ready while it warms.
//!
//! With the proxy (`--balance proxy`, `proxy-rr`) a worker is ready only once its private port
//! accepts the primary's probe, which also counts as its signal: an app that listens elsewhere
//! than `$PORT`, or not yet, is never taken for ready.
//!
//! With `--ready notify` a worker is ready only when it says so: the primary says at start what
//! it waits for, and names a worker that is still silent after [`HINT_AFTER`], with a hint, so
//! that a server that never sends `READY=1` does not look like a hung herdsman.

use std::time::Duration;

use super::super::report::workers;
use super::{Life, Machine, Phase, StopReason, Timer, WorkerId};
use crate::config::ReadyMode;
use crate::domain::ClusterEvent;
use crate::ipc::IpcMode;

/// How long a worker may stay silent under `--ready notify` before the primary names it.
pub const HINT_AFTER: Duration = Duration::from_secs(3);

impl Machine {
    /// A worker said it is ready (`READY=1`, an IPC `ready`). That does not count until it has
    /// stayed up `--ready-delay` more: gunicorn, for one, sends `READY=1` from its arbiter before
    /// its worker has imported the app, and an app that fails at import dies within moments.
    ///
    /// With `--ready delay`, the first such signal teaches that this command sends one: later
    /// workers wait for theirs. A worker already ready by the delay when its signal comes (a
    /// slow start) is not taken back, but should it die within `--ready-delay` of the signal,
    /// it counts as never ready (restart policy, start-up failure).
    pub(super) fn on_ready_signal(&mut self, id: WorkerId) {
        let now = self.now;
        self.command_signals_ready = true;
        let Some(worker) = self.worker_mut(id) else {
            return;
        };
        if worker.ready_signal_at.is_some() || worker.is_draining() {
            return;
        }
        worker.ready_signal_at = Some(now);
        self.check_after_ready_delay(id);
    }

    /// A Node worker's server listens: with `--ready delay` its signal, unless the command is
    /// seen to say `ready` in words (see the module's doc).
    pub(super) fn on_listening(&mut self, id: WorkerId) {
        let now = self.now;
        self.command_listens = true;
        let Some(worker) = self.worker_mut(id) else {
            return;
        };
        if worker.listening_at.is_some() || worker.is_draining() {
            return;
        }
        worker.listening_at = Some(now);
        self.check_after_ready_delay(id);
    }

    /// With the proxy: worker `id`'s private port accepted the probe. That is its ready signal
    /// if it sent none; if it did, its `--ready-delay` runs again from now.
    pub(super) fn on_port_accepting(&mut self, id: WorkerId) {
        let now = self.now;
        let Some(worker) = self.worker_mut(id) else {
            return;
        };
        if worker.accepting_at.is_some() {
            return;
        }
        worker.accepting_at = Some(now);
        if worker.ready_signal_at.is_none() {
            return self.on_ready_signal(id);
        }
        self.check_after_ready_delay(id);
    }

    /// A starting worker `id` is checked for readiness `--ready-delay` from now (at once when
    /// the delay is zero).
    fn check_after_ready_delay(&mut self, id: WorkerId) {
        if !self.worker(id).is_some_and(|worker| worker.is_starting()) {
            return;
        }
        let delay = self.config.ready_delay;
        if delay.is_zero() {
            self.ready_check(id);
        } else {
            self.schedule(Timer::ReadyDelay(id), delay);
        }
    }

    /// The worker's own signal where it counts: its words (`READY=1`, `ready`); with `--ready
    /// delay`, its listening too, unless the command is seen to send words.
    fn own_signal(&self, worker: &super::worker::WorkerRecord) -> Option<std::time::Instant> {
        match (worker.ready_signal_at, self.config.ready) {
            (Some(said), _) => Some(said),
            (None, ReadyMode::Delay) if !self.command_signals_ready => worker.listening_at,
            (None, _) => None,
        }
    }

    /// Whether worker `id` has given all the signals readiness needs: its own (or, with
    /// `--ready delay` and a command not seen to signal, its start), and with the proxy, its
    /// port accepting. The time of the last of them, from which `--ready-delay` counts.
    fn signalled_at(&self, worker: &super::worker::WorkerRecord) -> Option<std::time::Instant> {
        let silent_command = !self.command_signals_ready && !self.command_listens;
        let own = match self.own_signal(worker) {
            Some(signal) => signal,
            None if self.config.ready == ReadyMode::Delay && silent_command => worker.started_at,
            None => return None,
        };
        match self.config.balance.is_proxy() {
            true => worker.accepting_at.map(|accepting| accepting.max(own)),
            false => Some(own),
        }
    }

    /// Marks worker `id` ready if it has earned it: `--ready-delay` after its readiness signal
    /// and, with `--ready delay`, after its start; with `--ready delay` and no signal, after its
    /// start alone. Called when either delay has elapsed.
    pub(super) fn ready_check(&mut self, id: WorkerId) {
        let delay = self.config.ready_delay;
        let Some(worker) = self.worker(id) else {
            return;
        };
        // The signal comes after the start, so a delay elapsed since it has elapsed since both.
        let Some(since) = self.signalled_at(worker) else {
            return;
        };
        if self.now.saturating_duration_since(since) >= delay {
            self.mark_ready(id);
        }
    }

    fn mark_ready(&mut self, id: WorkerId) {
        let now = self.now;
        let Some(worker) = self.worker_mut(id) else {
            return;
        };
        let Life::Starting { replaces } = worker.life else {
            return;
        };
        worker.life = Life::Ready;
        worker.ready_at = Some(now);
        let (slot, pid, generation) = (worker.slot, worker.pid, worker.generation);
        self.info(format!("worker {slot} (pid {pid}) ready"));
        self.observe(ClusterEvent::Online { slot, pid });
        self.observe(ClusterEvent::Listening { slot, pid });
        self.announce_worker(slot, pid, generation, super::WorkerChange::Ready);
        self.arm_watchdog(id);
        match replaces {
            Some(old) if self.is_in_flight(id) => self.on_replacement_ready(id, old),
            Some(old) => self.on_limit_replacement_ready(id, old),
            None => {}
        }
        self.steer();
        self.check_started();
    }

    /// Start-up is over once every slot has a ready worker or is crash-looping (`errored`) while
    /// another serves: the cluster runs (degraded, when some slot is errored), and a service
    /// manager waiting for the primary's `READY=1` gets it, so that one broken slot does not
    /// hold up (under systemd: fail) the ones that serve.
    pub(super) fn check_started(&mut self) {
        if self.phase != Phase::Starting {
            return;
        }
        let ready = self.ready_slots();
        let count = self.config.workers;
        let errored: Vec<usize> = (1..=count)
            .filter(|slot| !ready.contains(slot) && self.is_errored(*slot))
            .collect();
        if ready.is_empty() || ready.len() + errored.len() < count {
            return;
        }
        self.phase = Phase::Running;
        let status = if errored.is_empty() {
            match count {
                1 => self.info("the 1 worker is ready"),
                _ => self.info(format!("all {} ready", workers(count))),
            }
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
            self.warn(&status);
            status
        };
        self.notify_manager(format!("READY=1\nSTATUS={status}"));
    }

    pub(super) fn on_ready_timeout(&mut self, id: WorkerId) {
        let timeout = self.config.ready_timeout;
        let Some(worker) = self.worker(id) else {
            return;
        };
        // One that said it is ready in time finishes its probation (`--ready-delay`).
        let proxied = self.config.balance.is_proxy();
        let signalled =
            self.own_signal(worker).is_some() && (!proxied || worker.accepting_at.is_some());
        if !worker.is_starting() || signalled {
            return;
        }
        let (slot, pid) = (worker.slot, worker.pid);
        let why = match proxied {
            true => {
                "; its $PORT never accepted a connection (under the proxy a worker must listen \
                 on $HOST:$PORT, the private port herdsman gives it)"
            }
            false => "",
        };
        self.warn(format!(
            "worker {slot} (pid {pid}) not ready within {}{why}; stopping it",
            humantime::format_duration(timeout)
        ));
        self.stop_worker(id, StopReason::NotReady);
    }

    /// What a ready signal is under this configuration, for people.
    fn ready_signal(&self) -> &'static str {
        match self.config.ipc {
            IpcMode::Off => "READY=1 on $NOTIFY_SOCKET",
            IpcMode::On => "READY=1 on $NOTIFY_SOCKET or an IPC `ready` frame",
            IpcMode::Node => "READY=1 on $NOTIFY_SOCKET or process.send('ready')",
        }
    }

    /// What `--ready notify` waits for, said at start; `None` unless asked to explain.
    pub fn ready_mode_announcement(&self) -> Option<String> {
        (self.config.ready == ReadyMode::Notify && self.config.explain_ready_notify).then(|| {
            format!(
                "--ready notify: a worker is ready once it sends {}; waiting up to {} for each",
                self.ready_signal(),
                humantime::format_duration(self.config.ready_timeout)
            )
        })
    }

    /// Schedules the hint for worker `id`, when it could come before the ready timeout.
    pub(super) fn schedule_ready_hint(&mut self, id: WorkerId) {
        if self.config.ready == ReadyMode::Notify
            && self.config.explain_ready_notify
            && self.config.ready_timeout > HINT_AFTER * 2
        {
            self.schedule(Timer::ReadyHint(id), HINT_AFTER);
        }
    }

    /// Names worker `id` if it is still starting; the first time, with what to do.
    pub(super) fn on_ready_hint(&mut self, id: WorkerId) {
        let Some(worker) = self.worker(id) else {
            return;
        };
        if !worker.is_starting() || worker.ready_signal_at.is_some() {
            return;
        }
        let mut line = format!(
            "worker {} (pid {}) has not sent {} after {}; it is stopped at {}",
            worker.slot,
            worker.pid,
            self.ready_signal(),
            humantime::format_duration(HINT_AFTER),
            humantime::format_duration(self.config.ready_timeout)
        );
        if !self.ready_hint_given {
            line.push_str(
                "\nhint: with --ready notify only the worker's own signal counts \
                 (systemd-notify --ready, sd_notify(3), one datagram on $NOTIFY_SOCKET); \
                 for a server that sends none, use --ready delay",
            );
            self.ready_hint_given = true;
        }
        self.warn(line);
    }
}
