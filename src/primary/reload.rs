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
use crate::config::Config;
use crate::domain::Update;

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
                let _ = progress.send(Update::Progress {
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
                    let (applied, ignored) = self.apply_config(config);
                    scale_to = applied.workers;
                    notes.extend(applied.changes);
                    notes.extend(ignored);
                }
                Err(error) => {
                    let message = format!("reload refused, nothing changed: {error}");
                    self.logger.error(&message);
                    for progress in listeners {
                        let _ = progress.send(Update::Done {
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
                let _ = progress.send(Update::Done {
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
            let _ = progress.send(Update::Done {
                ok,
                message: message.clone(),
            });
        }
        if ok {
            self.pending_scale = reload.scale_to;
        }
    }

    /// Takes the settings of a re-read configuration that can change without restarting the
    /// primary. Returns what changed and what changed but needs a restart (ignored).
    fn apply_config(&mut self, new: Config) -> (Applied, Vec<String>) {
        let old = &self.config;
        let mut changes = Vec::new();
        let mut ignored = Vec::new();
        let mut change = |name: &str, before: String, after: String| {
            if before != after {
                changes.push(format!("{name}: {before} → {after}"));
            }
        };
        let shown = |command: &[std::ffi::OsString]| {
            command
                .iter()
                .map(|part| part.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
        };
        // Settings are named as herdsman.toml spells them; `[env]` values may be secrets, so
        // only the names of the variables that changed are shown.
        change("command", shown(&old.command), shown(&new.command));
        changes.extend(env_changes(&old.env, &new.env));
        let mut change = |name: &str, before: String, after: String| {
            if before != after {
                changes.push(format!("{name}: {before} → {after}"));
            }
        };
        change("workers", old.workers.to_string(), new.workers.to_string());
        let ready = |mode| match mode {
            crate::config::ReadyMode::Delay => "delay".to_string(),
            crate::config::ReadyMode::Notify => "notify".to_string(),
        };
        change("ready", ready(old.ready), ready(new.ready));
        let duration = |value| humantime::format_duration(value).to_string();
        change(
            "ready-delay",
            duration(old.ready_delay),
            duration(new.ready_delay),
        );
        change(
            "ready-timeout",
            duration(old.ready_timeout),
            duration(new.ready_timeout),
        );
        change(
            "kill-timeout",
            duration(old.kill_timeout),
            duration(new.kill_timeout),
        );
        let signal = |signal: nix::sys::signal::Signal| {
            signal.as_str().trim_start_matches("SIG").to_string()
        };
        change(
            "accept-timeout",
            duration(old.accept_timeout),
            duration(new.accept_timeout),
        );
        change(
            "stop-signal",
            signal(old.stop_signal),
            signal(new.stop_signal),
        );
        let mut needs_restart = |name: &str, differs: bool| {
            if differs {
                ignored.push(format!(
                    "{name} changed, but takes effect only when herdsman itself restarts"
                ));
            }
        };
        needs_restart(
            "host/port",
            old.address != new.address && new.address.port() != 0,
        );
        needs_restart("balance", old.balance != new.balance);
        needs_restart("log-format", old.log_format != new.log_format);
        needs_restart("name", new.name_is_explicit && new.name != old.name);
        needs_restart("state", old.state != new.state || old.store != new.store);
        needs_restart("ipc", old.ipc != new.ipc);
        let workers = (new.workers != old.workers).then_some(new.workers);
        if new.command != old.command {
            // Whether the new command signals readiness is for its own workers to show.
            self.command_signals_ready = false;
        }
        self.config = Config {
            command: new.command,
            env: new.env,
            ready: new.ready,
            ready_delay: new.ready_delay,
            ready_timeout: new.ready_timeout,
            kill_timeout: new.kill_timeout,
            accept_timeout: new.accept_timeout,
            stop_signal: new.stop_signal,
            ..self.config.clone()
        };
        (Applied { workers, changes }, ignored)
    }
}

/// `[env] NAME added`, `… changed`, `… removed`: the names only, never the values.
fn env_changes(old: &[(String, String)], new: &[(String, String)]) -> Vec<String> {
    let value = |env: &[(String, String)], name: &str| {
        env.iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    };
    let mut changes = Vec::new();
    for (name, after) in new {
        match value(old, name) {
            None => changes.push(format!("[env] {name} added")),
            Some(before) if &before != after => changes.push(format!("[env] {name} changed")),
            Some(_) => {}
        }
    }
    for (name, _) in old {
        if value(new, name).is_none() {
            changes.push(format!("[env] {name} removed"));
        }
    }
    changes
}

/// What a re-read configuration changed.
struct Applied {
    /// A new worker count, applied (by scaling) once the reload is done.
    workers: Option<usize>,
    changes: Vec<String>,
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
                .send(Update::Progress {
                    message: message.clone(),
                })
                .is_ok()
        });
    }
}
