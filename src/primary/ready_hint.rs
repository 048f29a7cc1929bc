//! With `--ready notify` a worker is ready only when it says so: the primary says at start what
//! it waits for, and names a worker that is still silent after a few seconds, with a hint, so
//! that a server that never sends `READY=1` does not look like a hung herdsman.

use std::time::Duration;

use super::process::WorkerState;
use super::supervisor::Supervisor;
use crate::config::ReadyMode;
use crate::ipc::IpcMode;

/// How long a worker may stay silent before the primary names it.
pub const HINT_AFTER: Duration = Duration::from_secs(3);

impl Supervisor {
    /// What a ready signal is under this configuration, for people.
    fn ready_signal(&self) -> &'static str {
        match self.config.ipc {
            IpcMode::Off => "READY=1 on $NOTIFY_SOCKET",
            IpcMode::On => "READY=1 on $NOTIFY_SOCKET or an IPC `ready` frame",
            IpcMode::Node => "READY=1 on $NOTIFY_SOCKET or process.send('ready')",
        }
    }

    /// Says at start what `--ready notify` waits for.
    pub(super) fn announce_ready_mode(&self) {
        if self.config.ready == ReadyMode::Notify && self.config.explain_ready_notify {
            self.logger.info(format!(
                "--ready notify: a worker is ready once it sends {}; waiting up to {} for each",
                self.ready_signal(),
                humantime::format_duration(self.config.ready_timeout)
            ));
        }
    }

    /// Schedules the hint for worker `uid`, when it could come before the ready timeout.
    pub(super) fn schedule_ready_hint(&self, uid: u64) {
        if self.config.ready == ReadyMode::Notify
            && self.config.explain_ready_notify
            && self.config.ready_timeout > HINT_AFTER * 2
        {
            self.after(HINT_AFTER, super::Event::ReadyHint { uid });
        }
    }

    /// Names worker `uid` if it is still starting; the first time, with what to do.
    pub(super) fn on_ready_hint(&mut self, uid: u64) {
        let Some(worker) = self.workers.iter().find(|worker| worker.uid == uid) else {
            return;
        };
        // One that has signalled is only finishing its `--ready-delay` probation.
        if worker.state != WorkerState::Starting || worker.ready_signal_at.is_some() {
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
        self.logger.warn(line);
    }
}
