//! Rolling reloads and single-slot restarts: new worker before old, so that ready capacity never
//! drops below the worker count.
//!
//! A reload re-reads the configuration (when the cluster came from herdsman.toml), moves to a new
//! generation, and walks the slots `parallel` at a time: start the replacement in the slot (it
//! inherits the slot's socket, so it serves the same queue), wait until it is ready, then drain
//! the old worker. If a replacement exits or is not ready in time, the reload is aborted: the
//! other replacements in flight are stopped, the old workers keep serving, and every slot not yet
//! replaced keeps its old spec, so a crash there restarts the old command, not the broken one.
//!
//! A reload asked for while one runs is queued (several such requests are merged into one),
//! never interleaved.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::time::Instant;

use super::process::{LaunchSpec, WorkerState};
use super::report::{describe_exit, format_tail, workers};
use super::supervisor::{send_result, LastExit, Phase, StopReason, Supervisor};
use super::Progress;
use crate::config::{reloaded, Config, Reloaded};
use crate::control::protocol::Reply;

/// A reload or restart in progress.
pub(super) struct Reload {
    /// What replacements run.
    spec: Arc<LaunchSpec>,
    /// `reload` moves the cluster to `spec`; `restart` replaces one slot's worker in place.
    whole_cluster: bool,
    pending: VecDeque<usize>,
    /// Replacements started and not ready yet: (slot, uid).
    in_flight: Vec<(usize, u64)>,
    /// Replaced workers not yet exited: the reload ends when the old code no longer runs.
    draining: Vec<u64>,
    parallel: usize,
    replaced: usize,
    listeners: Vec<Progress>,
    started: Instant,
    /// A worker count that herdsman.toml changed, applied once the reload is done.
    scale_to: Option<usize>,
}

/// A reload asked for while another runs.
pub(super) struct QueuedReload {
    pub parallel: usize,
    pub listeners: Vec<Progress>,
}

impl Supervisor {
    /// `herdsman reload`, SIGHUP, SIGUSR2.
    pub async fn request_reload(&mut self, parallel: usize, progress: Option<Progress>) {
        if self.phase == Phase::Stopping {
            send_result(
                &progress,
                false,
                "the cluster is stopping; nothing to reload",
            );
            return;
        }
        if self.reload.is_some() {
            let message = "a reload is in progress; this one starts when it ends";
            self.logger.info(message);
            if let Some(progress) = &progress {
                let _ = progress.send(Reply::Progress {
                    message: message.into(),
                });
            }
            let queued = self.queued_reload.get_or_insert(QueuedReload {
                parallel,
                listeners: Vec::new(),
            });
            queued.parallel = queued.parallel.max(parallel);
            queued.listeners.extend(progress);
            return;
        }
        self.begin_reload(parallel, progress.into_iter().collect())
            .await;
    }

    pub async fn begin_reload(&mut self, parallel: usize, listeners: Vec<Progress>) {
        let mut notes = Vec::new();
        let mut scale_to = None;
        if let Some(reread) = &self.reread {
            match reread() {
                Ok(config) => {
                    let reloaded = self.apply_config(config);
                    scale_to = reloaded.workers;
                    notes.extend(reloaded.changes);
                    notes.extend(reloaded.ignored);
                }
                Err(error) => {
                    let message = format!("reload refused, nothing changed: {error}");
                    self.logger.error(&message);
                    for progress in listeners {
                        let _ = progress.send(Reply::Result {
                            ok: false,
                            message: message.clone(),
                        });
                    }
                    return;
                }
            }
        }
        self.last_generation += 1;
        let spec = Arc::new(LaunchSpec {
            generation: self.last_generation,
            command: self.config.command.clone(),
            env: self.config.env.clone(),
        });
        let count = self.config.workers;
        let parallel = parallel.clamp(1, count);
        let mut reload = Reload {
            spec,
            whole_cluster: true,
            pending: (1..=count).collect(),
            in_flight: Vec::new(),
            draining: Vec::new(),
            parallel,
            replaced: 0,
            listeners,
            started: Instant::now(),
            scale_to,
        };
        let mut opening = format!(
            "reloading {}, {parallel} at a time, to generation {}",
            workers(count),
            self.last_generation
        );
        if notes.is_empty() && self.reread.is_some() {
            opening.push_str(" (herdsman.toml: no changes)");
        }
        for note in notes {
            opening.push_str(&format!("\n  {note}"));
        }
        self.say(&mut reload, opening);
        self.reload = Some(reload);
        self.advance_reload().await;
    }

    /// `herdsman restart SLOT`: one slot, new worker before old, same spec.
    pub async fn restart_slot(&mut self, slot: usize, progress: Option<Progress>) {
        let refusal = if self.phase == Phase::Stopping {
            Some("the cluster is stopping".to_string())
        } else if self.reload.is_some() {
            Some("a reload is in progress; restart when it ends".to_string())
        } else if slot == 0 || slot > self.config.workers {
            Some(format!(
                "there is no slot {slot}; slots are 1 to {}",
                self.config.workers
            ))
        } else {
            None
        };
        if let Some(refusal) = refusal {
            send_result(&progress, false, &refusal);
            return;
        }
        let mut reload = Reload {
            spec: self.slots[slot - 1].spec.clone(),
            whole_cluster: false,
            pending: VecDeque::from([slot]),
            in_flight: Vec::new(),
            draining: Vec::new(),
            parallel: 1,
            replaced: 0,
            listeners: progress.into_iter().collect(),
            started: Instant::now(),
            scale_to: None,
        };
        self.say(&mut reload, format!("restarting slot {slot}"));
        self.reload = Some(reload);
        self.advance_reload().await;
    }

    /// Starts replacements until `parallel` are in flight; finishes when all slots are done.
    async fn advance_reload(&mut self) {
        loop {
            let Some(reload) = &mut self.reload else {
                return;
            };
            if reload.in_flight.len() >= reload.parallel {
                return;
            }
            let Some(slot) = reload.pending.pop_front() else {
                if reload.in_flight.is_empty() && reload.draining.is_empty() {
                    self.finish_reload(Ok(()));
                }
                return;
            };
            let spec = reload.spec.clone();
            match self
                .serving_worker(slot)
                .map(|worker| (worker.uid, worker.pid))
            {
                Some((old_uid, old_pid)) => {
                    let Some(uid) = self.start_worker_with(slot, spec, Some(old_uid)).await else {
                        let message =
                            format!("the new worker for slot {slot} could not be started");
                        self.abort_reload(message);
                        return;
                    };
                    let new_pid = self.worker_mut(uid).map_or(0, |worker| worker.pid);
                    let Some(reload) = &mut self.reload else {
                        return;
                    };
                    reload.in_flight.push((slot, uid));
                    let message =
                        format!("slot {slot}: starting pid {new_pid} to replace pid {old_pid}");
                    Self::tell(reload, message);
                }
                None => {
                    // The slot waits in backoff: its next worker simply starts on the new spec.
                    self.slots[slot - 1].spec = spec;
                    let Some(reload) = &mut self.reload else {
                        return;
                    };
                    reload.replaced += 1;
                    Self::tell(
                        reload,
                        format!(
                            "slot {slot}: no worker running; it restarts on the new generation"
                        ),
                    );
                }
            }
        }
    }

    /// A replacement became ready: drain the worker it replaces and move on.
    pub async fn on_replacement_ready(&mut self, uid: u64, old_uid: u64) {
        let old_pid = self
            .workers
            .iter()
            .find(|worker| worker.uid == old_uid)
            .map(|worker| worker.pid);
        let Some(worker) = self.worker_mut(uid) else {
            return;
        };
        worker.replaces = None;
        let (slot, pid, side) = (worker.slot, worker.pid, worker.side);
        // New connections go to the replacement's side from now on; the old worker finishes
        // the ones already queued on its own side, then stops.
        self.slots[slot - 1].side = side;
        self.retire_worker(old_uid, StopReason::Replaced);
        let Some(reload) = &mut self.reload else {
            return;
        };
        self.slots[slot - 1].spec = reload.spec.clone();
        reload.in_flight.retain(|&(_, in_flight)| in_flight != uid);
        // The old worker may have died meanwhile; then there is nothing to wait for.
        if old_pid.is_some() {
            reload.draining.push(old_uid);
        }
        reload.replaced += 1;
        let drained = old_pid.map_or(String::new(), |old| format!(", draining pid {old}"));
        Self::tell(reload, format!("slot {slot}: pid {pid} ready{drained}"));
        self.advance_reload().await;
    }

    /// A worker that a replacement made redundant has exited.
    pub async fn on_replaced_exit(&mut self, uid: u64, slot: usize, pid: u32, how: String) {
        let Some(reload) = &mut self.reload else {
            return;
        };
        if !reload.draining.contains(&uid) {
            return;
        }
        reload.draining.retain(|&draining| draining != uid);
        Self::tell(reload, format!("slot {slot}: pid {pid} {how}"));
        self.advance_reload().await;
    }

    /// A replacement exited before it was ready (or was stopped for not being ready in time).
    pub fn on_replacement_failed(&mut self, slot: usize, exit: &LastExit) {
        let message = format!(
            "the new worker for slot {slot} failed: {}{}",
            describe_exit(slot, exit),
            format_tail(&exit.tail)
        );
        self.abort_reload(message);
    }

    /// Stops the replacements in flight and ends the reload as failed.
    fn abort_reload(&mut self, reason: String) {
        let Some(reload) = &mut self.reload else {
            return;
        };
        reload.pending.clear();
        let in_flight: Vec<u64> = reload.in_flight.drain(..).map(|(_, uid)| uid).collect();
        for uid in in_flight {
            self.stop_worker(uid, StopReason::Aborted);
        }
        self.finish_reload(Err(reason));
    }

    /// Ends reloads in progress or queued, as failed (the cluster is stopping).
    pub fn abort_reloads(&mut self, reason: &str) {
        if let Some(queued) = self.queued_reload.take() {
            for progress in queued.listeners {
                let _ = progress.send(Reply::Result {
                    ok: false,
                    message: reason.to_string(),
                });
            }
        }
        self.abort_reload(reason.to_string());
    }

    fn finish_reload(&mut self, result: Result<(), String>) {
        let Some(mut reload) = self.reload.take() else {
            return;
        };
        let elapsed = humantime::format_duration(std::time::Duration::from_millis(
            reload.started.elapsed().as_millis() as u64,
        ));
        let (ok, message) = match result {
            Ok(()) if reload.whole_cluster => {
                self.spec = reload.spec.clone();
                self.reloads += 1;
                (
                    true,
                    format!(
                        "reload complete: {} on generation {} in {elapsed}",
                        workers(reload.replaced),
                        reload.spec.generation
                    ),
                )
            }
            Ok(()) => (true, format!("restart complete in {elapsed}")),
            Err(reason) => {
                let kept = self
                    .workers
                    .iter()
                    .filter(|worker| worker.state != WorkerState::Draining)
                    .filter(|worker| worker.generation != reload.spec.generation)
                    .count();
                let what = if reload.whole_cluster {
                    "reload"
                } else {
                    "restart"
                };
                let mut message = format!("{what} aborted: {reason}");
                if self.phase != Phase::Stopping {
                    message.push_str(&format!(
                        "\nthe {kept} workers not replaced keep serving their generation"
                    ));
                }
                (false, message)
            }
        };
        if ok {
            self.logger.info(&message);
        } else {
            self.logger.error(&message);
        }
        for progress in reload.listeners.drain(..) {
            let _ = progress.send(Reply::Result {
                ok,
                message: message.clone(),
            });
        }
        if ok {
            self.pending_scale = reload.scale_to;
        }
    }

    /// Takes the settings of a re-read configuration that a reload applies (the schema says
    /// which: `config::reloaded`), and returns what changed.
    fn apply_config(&mut self, new: Config) -> Reloaded {
        if new.command != self.config.command {
            // Whether the new command signals readiness is for its own workers to show.
            self.command_signals_ready = false;
        }
        let reloaded = reloaded(&self.config, new);
        self.config = reloaded.config.clone();
        reloaded
    }
}

impl Supervisor {
    /// Logs `message` and sends it to the clients waiting on the reload.
    fn say(&self, reload: &mut Reload, message: String) {
        self.logger.info(&message);
        Self::tell(reload, message);
    }

    fn tell(reload: &mut Reload, message: String) {
        reload.listeners.retain(|progress| {
            progress
                .send(Reply::Progress {
                    message: message.clone(),
                })
                .is_ok()
        });
    }
}
