//! Rolling reloads and single-slot restarts: new worker before old, so that ready capacity never
//! drops below the worker count.
//!
//! A reload re-reads the configuration (when the cluster came from herdsman.toml), moves to a new
//! generation, and walks the slots `parallel` at a time: start the replacement in the slot (it
//! takes the slot's other socket), wait until it is ready, then retire the old worker. If a
//! replacement exits or is not ready in time, the reload is aborted: the other replacements in
//! flight are stopped, the old workers keep serving, and every slot not yet replaced keeps its
//! old spec, so a crash there restarts the old command, not the broken one.
//!
//! A reload asked for while one runs is queued (several such requests are merged into one),
//! never interleaved.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use super::super::report::{describe_exit, format_tail, workers};
use super::{
    LastExit, LaunchSpec, LifecycleEvent, Machine, Phase, ReloadChange, RequestId, StopReason,
    Update, WorkerId,
};
use crate::config::{Config, ConfigError};

/// A reload or restart in progress.
pub(super) struct Reload {
    /// What replacements run.
    spec: Arc<LaunchSpec>,
    /// `reload` moves the cluster to `spec`; `restart` replaces one slot's worker in place.
    whole_cluster: bool,
    /// The slot a restart replaces the worker of.
    restarted: Option<usize>,
    pending: VecDeque<usize>,
    /// Replacements started and not ready yet: (slot, the replacement, the worker it replaces).
    in_flight: Vec<(usize, WorkerId, WorkerId)>,
    /// Replaced workers not yet exited: the reload ends when the old code no longer runs.
    draining: Vec<WorkerId>,
    parallel: usize,
    replaced: usize,
    /// Slots with no worker when their turn came (in backoff, or errored): their next worker
    /// starts on `spec`, but none runs it yet.
    without_worker: Vec<usize>,
    /// The requests waiting for its progress and its end.
    subscribers: Vec<RequestId>,
    started: Instant,
    /// A worker count that herdsman.toml changed, applied once the reload is done.
    scale_to: Option<usize>,
}

impl Reload {
    /// The admin server's event for it.
    fn event(&self, change: ReloadChange, message: String) -> LifecycleEvent {
        LifecycleEvent::Reload {
            slot: self.restarted,
            generation: self.spec.generation,
            change,
            message,
        }
    }
}

/// How a reload ends.
enum Ending {
    /// Every slot runs the new spec, and the old workers are gone.
    Complete,
    /// Stopped for this reason; the slots not replaced keep their spec.
    Aborted(String),
}

/// A reload asked for while another runs (or waiting for its configuration).
pub(super) struct QueuedReload {
    parallel: usize,
    subscribers: Vec<RequestId>,
}

impl Machine {
    /// `herdsman reload`, SIGHUP, SIGUSR2.
    pub(super) fn request_reload(&mut self, parallel: usize, request: Option<RequestId>) {
        if self.phase == Phase::Stopping {
            self.done(request, false, "the cluster is stopping; nothing to reload");
            return;
        }
        if self.reload.is_some() || self.reading_config.is_some() {
            let message = "a reload is in progress; this one starts when it ends";
            self.info(message);
            self.reply(
                request,
                Update::Progress {
                    message: message.into(),
                },
            );
            let queued = self.queued_reload.get_or_insert(QueuedReload {
                parallel,
                subscribers: Vec::new(),
            });
            queued.parallel = queued.parallel.max(parallel);
            queued.subscribers.extend(request);
            return;
        }
        self.begin_reload(QueuedReload {
            parallel,
            subscribers: request.into_iter().collect(),
        });
    }

    /// Starts a reload: with herdsman.toml, once the configuration is read again.
    pub(super) fn begin_reload(&mut self, reload: QueuedReload) {
        if self.facts.rereads {
            self.reading_config = Some(reload);
            self.effects.push(super::Effect::ReadConfig);
        } else {
            self.walk_slots(reload, None);
        }
    }

    pub(super) fn on_config_read(&mut self, read: Result<Box<Config>, ConfigError>) {
        let Some(reload) = self.reading_config.take() else {
            return;
        };
        match read {
            Ok(config) => self.walk_slots(reload, Some(*config)),
            Err(error) => {
                let message = format!("reload refused, nothing changed: {error}");
                self.error(&message);
                for request in reload.subscribers {
                    self.done(Some(request), false, &message);
                }
            }
        }
    }

    /// The reload proper: the new generation, and its first replacements.
    fn walk_slots(&mut self, queued: QueuedReload, config: Option<Config>) {
        let mut notes = Vec::new();
        let mut scale_to = None;
        if let Some(config) = config {
            let reloaded = self.apply_config(config);
            scale_to = reloaded.workers;
            notes.extend(reloaded.changes);
            notes.extend(reloaded.ignored);
        }
        self.last_generation += 1;
        let spec = Arc::new(LaunchSpec {
            generation: self.last_generation,
            command: self.config.command.clone(),
            env: self.config.env.clone(),
        });
        let count = self.config.workers;
        let parallel = queued.parallel.clamp(1, count);
        let mut opening = format!(
            "reloading {}, {parallel} at a time, to generation {}",
            workers(count),
            self.last_generation
        );
        if notes.is_empty() && self.facts.rereads {
            opening.push_str(" (herdsman.toml: no changes)");
        }
        for note in notes {
            opening.push_str(&format!("\n  {note}"));
        }
        self.reload = Some(Reload {
            spec,
            whole_cluster: true,
            restarted: None,
            pending: (1..=count).collect(),
            in_flight: Vec::new(),
            draining: Vec::new(),
            parallel,
            replaced: 0,
            without_worker: Vec::new(),
            subscribers: queued.subscribers,
            started: self.now,
            scale_to,
        });
        self.announce_reload(ReloadChange::Started, opening.clone());
        self.say(opening);
        self.advance_reload();
    }

    /// `herdsman restart SLOT`: one slot, new worker before old, same spec.
    pub(super) fn restart_slot(&mut self, slot: usize, request: Option<RequestId>) {
        let refusal = if self.phase == Phase::Stopping {
            Some("the cluster is stopping".to_string())
        } else if self.reload.is_some() || self.reading_config.is_some() {
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
            self.done(request, false, refusal);
            return;
        }
        self.reload = Some(Reload {
            spec: self.slots[slot - 1].spec.clone(),
            whole_cluster: false,
            restarted: Some(slot),
            pending: VecDeque::from([slot]),
            in_flight: Vec::new(),
            draining: Vec::new(),
            parallel: 1,
            replaced: 0,
            without_worker: Vec::new(),
            subscribers: request.into_iter().collect(),
            started: self.now,
            scale_to: None,
        });
        let message = format!("restarting slot {slot}");
        self.announce_reload(ReloadChange::Started, message.clone());
        self.say(message);
        self.advance_reload();
    }

    /// Starts replacements until `parallel` are in flight; finishes when all slots are done.
    fn advance_reload(&mut self) {
        loop {
            let Some(reload) = &mut self.reload else {
                return;
            };
            if reload.in_flight.len() >= reload.parallel {
                return;
            }
            let Some(slot) = reload.pending.pop_front() else {
                if reload.in_flight.is_empty() && reload.draining.is_empty() {
                    self.finish_reload(Ending::Complete);
                }
                return;
            };
            let spec = reload.spec.clone();
            match self.serving_worker(slot).map(|worker| worker.id) {
                Some(old) => {
                    // A replacement for a limit (`limits`) gives way to the reload's.
                    let limit_replacements = self.ids_replacing(old);
                    for id in limit_replacements {
                        self.stop_worker(id, StopReason::Aborted);
                    }
                    let new = self.start_replacement(slot, spec, old);
                    if let Some(reload) = &mut self.reload {
                        reload.in_flight.push((slot, new, old));
                    }
                }
                None => {
                    // The slot waits in backoff: its next worker simply starts on the new spec.
                    self.slots[slot - 1].spec = spec;
                    if let Some(reload) = &mut self.reload {
                        reload.without_worker.push(slot);
                    }
                    self.tell(format!(
                        "slot {slot}: no worker running; it restarts on the new generation"
                    ));
                }
            }
        }
    }

    /// A replacement's process runs: say so to the clients waiting on the reload.
    pub(super) fn on_replacement_spawned(&mut self, id: WorkerId) {
        let Some(reload) = &self.reload else {
            return;
        };
        let Some(&(slot, _, old)) = reload.in_flight.iter().find(|(_, new, _)| *new == id) else {
            return;
        };
        let new_pid = self.worker(id).map_or(0, |worker| worker.pid);
        let old_pid = self.worker(old).map_or(0, |worker| worker.pid);
        self.tell(format!(
            "slot {slot}: starting pid {new_pid} to replace pid {old_pid}"
        ));
    }

    /// Whether `id` is a replacement of the running reload, not ready yet.
    pub(super) fn is_in_flight(&self, id: WorkerId) -> bool {
        self.reload
            .as_ref()
            .is_some_and(|reload| reload.in_flight.iter().any(|&(_, new, _)| new == id))
    }

    /// Whether the running reload has yet to replace `slot`'s worker, or is replacing it.
    pub(super) fn reload_will_replace(&self, slot: usize) -> bool {
        self.reload.as_ref().is_some_and(|reload| {
            reload.pending.contains(&slot) || reload.in_flight.iter().any(|(s, _, _)| *s == slot)
        })
    }

    /// The starting workers that replace `old`.
    fn ids_replacing(&self, old: WorkerId) -> Vec<WorkerId> {
        self.workers
            .iter()
            .filter(|worker| worker.replaces() == Some(old))
            .map(|worker| worker.id)
            .collect()
    }

    /// A replacement could not even be started.
    pub(super) fn on_replacement_not_started(&mut self, slot: usize) {
        self.abort_reload(format!(
            "the new worker for slot {slot} could not be started"
        ));
    }

    /// A replacement became ready: retire the worker it replaces and move on.
    pub(super) fn on_replacement_ready(&mut self, id: WorkerId, old: WorkerId) {
        let old_pid = self.worker(old).map(|worker| worker.pid);
        let Some(worker) = self.worker(id) else {
            return;
        };
        let (slot, pid, side) = (worker.slot, worker.pid, worker.side);
        // New connections go to the replacement's side from now on; the old worker finishes
        // the ones already queued on its own side, then stops.
        self.slots[slot - 1].side = side;
        match self.hung_signal(old) {
            // A hung worker will not finish its queue: it goes now (`limits`).
            Some(_) => self.stop_worker(old, StopReason::Replaced),
            None => self.retire_worker(old, StopReason::Replaced),
        }
        let Some(reload) = &mut self.reload else {
            return;
        };
        self.slots[slot - 1].spec = reload.spec.clone();
        reload.in_flight.retain(|&(_, new, _)| new != id);
        // The old worker may have died meanwhile; then there is nothing to wait for.
        if old_pid.is_some() {
            reload.draining.push(old);
        }
        reload.replaced += 1;
        let drained = old_pid.map_or(String::new(), |old| format!(", draining pid {old}"));
        self.tell(format!("slot {slot}: pid {pid} ready{drained}"));
        self.advance_reload();
    }

    /// A worker that a replacement made redundant has exited.
    pub(super) fn on_replaced_exit(&mut self, id: WorkerId, slot: usize, pid: u32, how: String) {
        let Some(reload) = &mut self.reload else {
            return;
        };
        if !reload.draining.contains(&id) {
            return;
        }
        reload.draining.retain(|&draining| draining != id);
        self.tell(format!("slot {slot}: pid {pid} {how}"));
        self.advance_reload();
    }

    /// A replacement exited before it was ready (or was stopped for not being ready in time).
    pub(super) fn on_replacement_failed(&mut self, slot: usize, exit: &LastExit) {
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
        let in_flight: Vec<WorkerId> = reload.in_flight.drain(..).map(|(_, new, _)| new).collect();
        for id in in_flight {
            self.stop_worker(id, StopReason::Aborted);
        }
        self.finish_reload(Ending::Aborted(reason));
    }

    /// Ends reloads in progress or queued, as failed (the cluster is stopping).
    pub(super) fn abort_reloads(&mut self, reason: &str) {
        let queued = self.queued_reload.take().into_iter();
        let reading = self.reading_config.take().into_iter();
        for request in queued.chain(reading).flat_map(|queued| queued.subscribers) {
            self.done(Some(request), false, reason);
        }
        self.abort_reload(reason.to_string());
    }

    /// Tells the admin server's stream that the reload in progress started.
    fn announce_reload(&mut self, change: ReloadChange, message: String) {
        if let Some(reload) = &self.reload {
            let event = reload.event(change, message);
            self.announce(event);
        }
    }

    fn finish_reload(&mut self, ending: Ending) {
        let aborted = matches!(ending, Ending::Aborted(_));
        let Some(reload) = self.reload.take() else {
            return;
        };
        let elapsed = humantime::format_duration(std::time::Duration::from_millis(
            self.now
                .saturating_duration_since(reload.started)
                .as_millis() as u64,
        ));
        let (ok, message) = match ending {
            Ending::Complete if reload.whole_cluster => {
                self.spec = reload.spec.clone();
                self.reloads += 1;
                let mut message = format!(
                    "reload complete: {} on generation {} in {elapsed}",
                    workers(reload.replaced),
                    reload.spec.generation
                );
                if !reload.without_worker.is_empty() {
                    let slots: Vec<String> =
                        reload.without_worker.iter().map(usize::to_string).collect();
                    message.push_str(&format!(
                        "; slot {} had no worker (restarting after failures): its next one runs \
                         generation {}",
                        slots.join(", "),
                        reload.spec.generation
                    ));
                }
                (true, message)
            }
            Ending::Complete => (true, format!("restart complete in {elapsed}")),
            Ending::Aborted(reason) => {
                if reload.whole_cluster {
                    self.reloads_aborted += 1;
                }
                let kept = self
                    .workers
                    .iter()
                    .filter(|worker| !worker.is_draining())
                    .filter(|worker| worker.generation != reload.spec.generation)
                    .count();
                let what = if reload.whole_cluster {
                    "reload"
                } else {
                    "restart"
                };
                let mut message = format!("{what} aborted: {reason}");
                if self.phase != Phase::Stopping {
                    message.push_str(&match kept {
                        1 => "\nthe 1 worker not replaced keeps serving its generation".into(),
                        _ => format!(
                            "\nthe {kept} workers not replaced keep serving their generation"
                        ),
                    });
                }
                (false, message)
            }
        };
        if ok {
            self.info(&message);
        } else {
            self.error(&message);
        }
        let change = match aborted {
            true => ReloadChange::Aborted,
            false => ReloadChange::Completed,
        };
        self.announce(reload.event(change, message.clone()));
        for request in reload.subscribers {
            self.done(Some(request), ok, &message);
        }
        if ok {
            self.pending_scale = reload.scale_to;
        }
    }

    /// Logs `message` and sends it to the clients waiting on the reload.
    fn say(&mut self, message: String) {
        self.info(&message);
        self.tell(message);
    }

    /// Sends `message` to the clients waiting on the reload.
    fn tell(&mut self, message: String) {
        let subscribers = self
            .reload
            .as_ref()
            .map(|reload| reload.subscribers.clone())
            .unwrap_or_default();
        for request in subscribers {
            self.reply(
                Some(request),
                Update::Progress {
                    message: message.clone(),
                },
            );
        }
    }
}
