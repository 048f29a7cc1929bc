//! What an operator asks of the whole cluster (stop) or of one worker (disconnect, kill).

use nix::sys::signal::Signal;

use super::super::report::workers;
use super::{Life, Machine, Phase, StopReason, WorkerOrder};
use crate::domain::ClusterEvent;
use crate::ipc::IpcMode;

impl Machine {
    /// Stops the cluster: every worker is asked to stop (or killed, `fast`), reloads and scale
    /// requests end as failed, and the listening sockets close.
    pub(super) fn stop(&mut self, fast: bool) {
        let already_stopping = self.phase == Phase::Stopping;
        if !already_stopping {
            self.notify_manager("STOPPING=1");
        }
        self.phase = Phase::Stopping;
        self.abort_reloads("the cluster is stopping");
        self.abort_waits("the cluster is stopping");
        if fast {
            let count = workers(self.workers.len());
            self.warn(format!("stopping now: killing {count}"));
            self.kill_all();
            self.effects.push(super::Effect::CloseListeners);
            return;
        }
        if already_stopping {
            self.info("already stopping; press Ctrl-C again to stop at once");
            return;
        }
        let how = match self.config.ipc {
            IpcMode::Node => format!(
                "Node's disconnect (or {}, to one that took fd 3)",
                self.config.stop_signal.as_str()
            ),
            _ => self.config.stop_signal.as_str().to_string(),
        };
        self.info(format!(
            "stopping: sending {how} to {} (killing after {})",
            workers(self.workers.len()),
            humantime::format_duration(self.config.kill_timeout)
        ));
        let ids: Vec<_> = self.workers.iter().map(|worker| worker.id).collect();
        for id in ids {
            self.stop_worker(id, StopReason::Shutdown);
        }
        // Workers let go of the listening sockets as they stop accepting; then new connections
        // are refused rather than queued for no one.
        self.effects.push(super::Effect::CloseListeners);
    }

    /// Disconnects or kills one worker: the one with `pid` in `slot`, or the slot's serving
    /// worker. A worker that is gone by now is left alone (its slot has a new one).
    pub(super) fn act_on_worker(&mut self, slot: usize, pid: Option<u32>, order: WorkerOrder) {
        let action = match order {
            WorkerOrder::Disconnect => "disconnect",
            WorkerOrder::Kill => "kill",
        };
        let Some(worker) = self.acting_on(slot, pid) else {
            let which = pid.map_or(String::new(), |pid| format!(" (pid {pid})"));
            self.warn(format!(
                "worker {slot}{which} is not running; nothing to {action}"
            ));
            return;
        };
        let (id, pid) = (worker.id, worker.pid);
        if worker.replaces().is_some() {
            // Stopping it would leave the reload it belongs to waiting for it.
            self.warn(format!(
                "worker {slot} (pid {pid}) is a replacement still starting (reload, restart); \
                 not going to {action} it"
            ));
            return;
        }
        match order {
            WorkerOrder::Disconnect => {
                self.info(format!("worker {slot} (pid {pid}) disconnecting, as asked"));
                self.retire_worker(id, StopReason::Disconnected);
            }
            WorkerOrder::Kill => {
                self.info(format!("worker {slot} (pid {pid}) killed, as asked"));
                if let Some(worker) = self.worker_mut(id) {
                    // A worker already on its way out keeps its reason (a replaced worker's
                    // exit completes its slot's replacement).
                    let was_draining = worker.is_draining();
                    let reason = worker.stop_reason().unwrap_or(StopReason::Killed);
                    worker.life = Life::Draining { reason };
                    self.signal(id, Signal::SIGKILL);
                    if !was_draining {
                        self.observe(ClusterEvent::Disconnect { slot, pid });
                    }
                }
                self.steer();
            }
        }
    }
}
