//! The supervisor: the one task that owns every slot and worker.
//!
//! It changes state only in response to an [`Event`] or an [`Intent`], one at a time, so no
//! lock guards the cluster's state and every transition can be read in one place.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use nix::sys::signal::Signal;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::logs::Logger;
use super::notify::{Notice, ServiceManager};
use super::process::{LaunchSpec, Worker, WorkerState};
use super::reload::{QueuedReload, Reload};
use super::report::workers;
use super::restart::{ExitReason, RestartPolicy};
use super::spawn::Spawner;
use super::{ConfigReader, Event, Intent, RunError, WorkerAction};
use crate::balance::{Listeners, Side};
use crate::config::{Config, ReadyMode};
use crate::domain::ClusterEvent;
use crate::domain::{ScaleTarget, Update};
use crate::runtime_dir::PrimaryDir;

pub use super::process::StopReason;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// Until every slot has had a ready worker or is crash-looping (see
    /// [`Supervisor::check_started`]).
    Starting,
    Running,
    Stopping,
}

/// What a slot remembers across the workers that held it.
#[derive(Clone, Debug)]
pub(super) struct SlotHistory {
    /// What this slot's workers run; a reload moves slots to the new spec one by one.
    pub spec: Arc<LaunchSpec>,
    /// Failures in a row; reset by the death of a worker that was ready for the healthy uptime.
    pub failures: u32,
    pub restarts: u32,
    pub errored: bool,
    pub last_exit: Option<LastExit>,
    /// The socket side the slot's serving worker uses; a replacement takes the other one.
    pub side: Side,
    /// A restart after a failure is scheduled (backoff); the slot is empty until then.
    pub respawn_pending: bool,
}

impl SlotHistory {
    pub fn new(spec: Arc<LaunchSpec>) -> Self {
        SlotHistory {
            spec,
            failures: 0,
            restarts: 0,
            errored: false,
            last_exit: None,
            side: Side::default(),
            respawn_pending: false,
        }
    }
}

#[derive(Clone, Debug)]
pub(super) struct LastExit {
    pub pid: u32,
    pub reason: ExitReason,
    pub uptime: Duration,
    pub at: SystemTime,
    pub tail: Vec<String>,
    /// How long the worker had been ready when it ended; `None` if it never was.
    pub ready_for: Option<Duration>,
    /// A worker that said it was ready but ended before that counted: how long after saying it.
    pub said_ready_before: Option<Duration>,
    pub stop_reason: Option<StopReason>,
}

pub(super) struct Supervisor {
    pub config: Config,
    pub listeners: Listeners,
    pub logger: Logger,
    pub spawner: Spawner,
    pub dir: PrimaryDir,
    pub policy: RestartPolicy,
    pub events: mpsc::UnboundedSender<Event>,
    /// Live worker processes, in start order. A slot has one, two during its replacement.
    pub workers: Vec<Worker>,
    /// Index `slot - 1`; may be longer than the worker count after a scale-down.
    pub slots: Vec<SlotHistory>,
    /// What new slots run: the last spec every slot reloaded to.
    pub spec: Arc<LaunchSpec>,
    /// The highest generation handed out so far.
    pub last_generation: u64,
    pub reload: Option<Reload>,
    pub shared_state: super::SharedState,
    /// Where lifecycle events go (the library's `Cluster::on_event`).
    pub observer: Option<mpsc::UnboundedSender<ClusterEvent>>,
    pub queued_reload: Option<QueuedReload>,
    /// A worker count to scale to once the current reload is done (changed in herdsman.toml).
    pub pending_scale: Option<usize>,
    pub reloads: u64,
    pub reread: Option<ConfigReader>,
    pub next_uid: u64,
    pub phase: Phase,
    pub started_at: Instant,
    /// Set when start-up failed; returned once the last worker has exited.
    pub failure: Option<RunError>,
    /// Whether steering was refused once (said once, not on every change).
    pub steering_failed: bool,
    /// systemd (or another manager) waiting for the primary's `READY=1`, if any.
    pub service_manager: Option<ServiceManager>,
    /// Some worker of the current command said it was ready (`READY=1`, IPC `ready`): with
    /// `--ready delay`, later workers are ready only once they say so too, and the delay after.
    pub command_signals_ready: bool,
    /// Some worker was ready for the healthy uptime: start-up is over for good.
    pub served_healthy: bool,
    /// The shared queue's stall (`--balance shared`, see `accepting`).
    pub shared_accept_stall: super::accepting::Stall,
    /// Connections stranded on sockets no worker holds, relayed to ready workers.
    pub rescue: super::rescue::Rescue,
    /// Whether the `--ready notify` hint was given (once per cluster).
    pub ready_hint_given: bool,
}

impl Supervisor {
    pub fn new(
        config: Config,
        listeners: Listeners,
        logger: Logger,
        spawner: Spawner,
        dir: PrimaryDir,
        reread: Option<ConfigReader>,
    ) -> (Self, mpsc::UnboundedReceiver<Event>) {
        let (events, events_rx) = mpsc::unbounded_channel();
        let spec = Arc::new(LaunchSpec {
            generation: 1,
            command: config.command.clone(),
            env: config.env.clone(),
        });
        let supervisor = Supervisor {
            slots: vec![SlotHistory::new(spec.clone()); config.workers],
            spec,
            last_generation: 1,
            config,
            listeners,
            logger,
            spawner,
            dir,
            policy: RestartPolicy::default(),
            events,
            workers: Vec::new(),
            reload: None,
            queued_reload: None,
            pending_scale: None,
            reloads: 0,
            reread,
            next_uid: 1,
            phase: Phase::Starting,
            started_at: Instant::now(),
            failure: None,
            steering_failed: false,
            ready_hint_given: false,
            service_manager: ServiceManager::from_env(),
            command_signals_ready: false,
            served_healthy: false,
            shared_accept_stall: None,
            rescue: Default::default(),
            shared_state: super::SharedState::default(),
            observer: None,
        };
        (supervisor, events_rx)
    }

    pub fn with_observer(self, observer: Option<mpsc::UnboundedSender<ClusterEvent>>) -> Self {
        Supervisor { observer, ..self }
    }

    /// Reports a lifecycle event to the library's handler, if there is one.
    pub fn observe(&self, event: ClusterEvent) {
        if let Some(observer) = &self.observer {
            let _ = observer.send(event);
        }
    }

    /// Hands workers the shared state's URL, and reports the store in `status`.
    pub fn with_shared_state(self, shared_state: super::SharedState) -> Self {
        Supervisor {
            shared_state,
            ..self
        }
    }

    pub async fn supervise(
        mut self,
        mut events: mpsc::UnboundedReceiver<Event>,
        mut intents: mpsc::UnboundedReceiver<Intent>,
    ) -> Result<(), RunError> {
        self.logger.info(format!(
            "listening on {} ({}, balance {})",
            self.listeners.local_addr(),
            workers(self.config.workers),
            self.config.balance,
        ));
        let name = &self.config.name;
        self.logger.info(format!(
            "control: herdsman status {name} (also reload, scale, logs, stop)"
        ));
        if let Some(announcement) = &self.shared_state.announcement {
            self.logger.info(announcement.clone());
        }
        self.announce_ready_mode();
        // Before any worker runs, so that no connection is hashed to a socket no worker will use.
        self.steer();
        self.watch_port_group();
        for slot in 1..=self.config.workers {
            self.start_worker(slot).await;
        }
        self.after(self.accept_poll(), Event::AcceptCheck);
        while self.phase != Phase::Stopping || !self.workers.is_empty() {
            tokio::select! {
                Some(event) = events.recv() => self.on_event(event).await,
                Some(intent) = intents.recv() => self.on_intent(intent).await,
            }
            if self.reload.is_none() && self.phase != Phase::Stopping {
                if let Some(count) = self.pending_scale.take() {
                    if let Err(refused) = self.scale(ScaleTarget::To(count)).await {
                        self.logger.warn(refused.to_string());
                    }
                }
                if let Some(queued) = self.queued_reload.take() {
                    self.begin_reload(queued.parallel, queued.listeners).await;
                }
            }
        }
        match self.failure.take() {
            Some(failure) => Err(failure),
            None => {
                self.logger.info("stopped");
                Ok(())
            }
        }
    }

    /// Starts a worker in `slot` running the slot's spec, on the side
    /// [`Supervisor::side_for_new_worker`] picks.
    pub async fn start_worker(&mut self, slot: usize) -> Option<u64> {
        self.slots[slot - 1].side = self.side_for_new_worker(slot);
        let spec = self.slots[slot - 1].spec.clone();
        self.start_worker_with(slot, spec, None).await
    }

    /// Starts a worker in `slot` running `spec`; `replaces` names the worker it will replace
    /// once ready (reload, restart). Returns the new worker's uid, or `None` if it could not be
    /// started (then already handled as a failure of the slot, outside of a replacement).
    pub async fn start_worker_with(
        &mut self,
        slot: usize,
        spec: Arc<LaunchSpec>,
        replaces: Option<u64>,
    ) -> Option<u64> {
        let side = match replaces {
            Some(_) => self.slots[slot - 1].side.other(),
            None => self.slots[slot - 1].side,
        };
        // Closed: the cluster is stopping, and no worker starts any more.
        let listen_fd = self.listeners.fd_for(slot, side)?;
        let uid = self.next_uid;
        self.next_uid += 1;
        let launch = super::process::Launch {
            uid,
            slot,
            spec,
            workers: self.config.workers,
            port: self.listeners.local_addr().port(),
            side,
            listen_fd,
            notify_path: self.dir.path().join(format!("notify-{uid}")),
            name: &self.config.name,
            state_url: self.shared_state.url.as_deref(),
            ipc: self.config.ipc,
        };
        match Worker::start(launch, &self.spawner, &self.logger, self.events.clone()).await {
            Ok(mut worker) => {
                worker.replaces = replaces;
                self.logger.info(format!(
                    "worker {slot} (pid {}) starting, generation {}",
                    worker.pid, worker.generation
                ));
                self.observe(ClusterEvent::Fork {
                    slot,
                    pid: worker.pid,
                });
                if self.config.ready == ReadyMode::Delay {
                    self.after(self.config.ready_delay, Event::ReadyDelayElapsed { uid });
                }
                self.after(self.config.ready_timeout, Event::ReadyTimeout { uid });
                self.schedule_ready_hint(uid);
                self.workers.push(worker);
                self.steer();
                Some(uid)
            }
            Err(error) => {
                // Fork itself failed (out of processes or memory).
                self.logger
                    .error(format!("cannot start worker {slot}: {error}"));
                if replaces.is_none() {
                    let exit = LastExit {
                        pid: 0,
                        reason: ExitReason::Unknown,
                        uptime: Duration::ZERO,
                        at: SystemTime::now(),
                        tail: vec![error.to_string()],
                        ready_for: None,
                        said_ready_before: None,
                        stop_reason: None,
                    };
                    Box::pin(self.on_failure(slot, exit)).await;
                }
                None
            }
        }
    }

    /// Sends `event` to the supervisor after `delay`.
    pub fn after(&self, delay: Duration, event: Event) {
        let events = self.events.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = events.send(event);
        });
    }

    pub fn worker_mut(&mut self, uid: u64) -> Option<&mut Worker> {
        self.workers.iter_mut().find(|worker| worker.uid == uid)
    }

    /// The worker serving `slot` (not one being replaced away or stopped), if any.
    pub fn serving_worker(&self, slot: usize) -> Option<&Worker> {
        self.workers.iter().find(|worker| {
            worker.slot == slot
                && worker.state != WorkerState::Draining
                && worker.replaces.is_none()
        })
    }

    async fn on_event(&mut self, event: Event) {
        match event {
            Event::Notified {
                uid,
                notice: Notice::Ready,
            } => self.on_ready_signal(uid).await,
            Event::Notified {
                uid,
                notice: Notice::Status(status),
            } => {
                if let Some(worker) = self.worker_mut(uid) {
                    worker.status = Some(status);
                }
            }
            Event::Notified { .. } => {}
            Event::ReadyDelayElapsed { uid } => self.ready_check(uid).await,
            Event::ReadyTimeout { uid } => self.on_ready_timeout(uid),
            Event::ReadyHint { uid } => self.on_ready_hint(uid),
            Event::KillDeadline { uid } => {
                let kill_timeout = self.config.kill_timeout;
                if let Some(worker) = self.worker_mut(uid) {
                    let (slot, pid) = (worker.slot, worker.pid);
                    worker.signal(Signal::SIGKILL);
                    self.logger.warn(format!(
                        "worker {slot} (pid {pid}) did not stop within {}; killed it",
                        humantime::format_duration(kill_timeout)
                    ));
                }
            }
            Event::RespawnDue { slot } => {
                if let Some(history) = self.slots.get_mut(slot - 1) {
                    history.respawn_pending = false;
                }
                let occupied = self.workers.iter().any(|worker| worker.slot == slot);
                if self.phase != Phase::Stopping && !occupied && slot <= self.config.workers {
                    self.start_worker(slot).await;
                }
            }
            Event::RetireCheck { uid } => self.retire_check(uid),
            Event::AcceptCheck => self.check_accepting(),
            Event::RescueSweep => self.sweep_stranded(),
            Event::Ipc { uid, frame } => self.on_ipc(uid, frame).await,
            Event::IpcClosed { uid, reason } => self.on_ipc_closed(uid, reason),
            Event::PortGroupCheck => self.check_port_group(),
            Event::Exited { uid, reason, tail } => {
                let Some(index) = self.workers.iter().position(|worker| worker.uid == uid) else {
                    return;
                };
                let worker = self.workers.remove(index);
                let slot = worker.slot;
                let (code, signal) = match reason {
                    ExitReason::Code(code) => (Some(code), None),
                    ExitReason::Signal(signal) => (None, Some(signal)),
                    ExitReason::Unknown => (None, None),
                };
                self.observe(ClusterEvent::Exit {
                    slot,
                    pid: worker.pid,
                    code,
                    signal,
                    exited_after_disconnect: worker
                        .stop_reason
                        .is_some_and(StopReason::was_requested),
                });
                self.steer();
                self.on_exit(worker, reason, tail).await;
                self.ensure_occupied(slot);
            }
        }
    }

    /// Asks worker `uid` to stop (stop signal), and kills it if it is still there after the kill
    /// timeout.
    pub fn stop_worker(&mut self, uid: u64, reason: StopReason) {
        let (stop_signal, kill_timeout) = (self.config.stop_signal, self.config.kill_timeout);
        let Some(worker) = self.worker_mut(uid) else {
            return;
        };
        if worker.state == WorkerState::Draining {
            return;
        }
        worker.state = WorkerState::Draining;
        worker.stop_reason = Some(reason);
        worker.signal(stop_signal);
        let (slot, pid) = (worker.slot, worker.pid);
        self.observe(ClusterEvent::Disconnect { slot, pid });
        self.after(kill_timeout, Event::KillDeadline { uid });
        self.steer();
    }

    /// Kills every worker now (fast stop, failed start-up).
    pub fn kill_all(&mut self) {
        for worker in &mut self.workers {
            worker.stop_reason = Some(StopReason::Shutdown);
            worker.signal(Signal::SIGKILL);
        }
    }

    /// The slots (within the worker count) that have a serving worker, sorted.
    pub fn ready_slots(&self) -> Vec<usize> {
        let mut ready: Vec<usize> = self
            .workers
            .iter()
            .filter(|worker| worker.is_serving() && worker.slot <= self.config.workers)
            .map(|worker| worker.slot)
            .collect();
        ready.sort_unstable();
        ready.dedup();
        ready
    }

    async fn on_exit(&mut self, worker: Worker, reason: ExitReason, tail: Vec<String>) {
        let (slot, pid) = (worker.slot, worker.pid);
        // An aborted replacement is not: it is reported below as its reload's failure.
        let requested = worker
            .stop_reason
            .is_some_and(|reason| reason.was_requested() && reason != StopReason::Aborted);
        if requested || self.phase == Phase::Stopping {
            self.logger
                .info(format!("worker {slot} (pid {pid}) {reason}"));
            if worker.stop_reason == Some(StopReason::Replaced) {
                self.on_replaced_exit(worker.uid, slot, pid, reason.to_string())
                    .await;
            }
            return;
        }
        // It said it was ready, but did not stay up for the ready delay after: that did not count.
        let said_just_now = worker
            .ready_signal_at
            .is_some_and(|at| at.elapsed() < self.config.ready_delay);
        let exit = LastExit {
            pid,
            reason,
            uptime: worker.uptime(),
            at: SystemTime::now(),
            tail,
            ready_for: worker
                .ready_at
                .filter(|_| {
                    !matches!(
                        worker.stop_reason,
                        Some(StopReason::NotReady | StopReason::NotAccepting)
                    ) && !said_just_now
                })
                .map(|at| at.elapsed()),
            said_ready_before: worker
                .ready_signal_at
                .filter(|_| worker.ready_at.is_none() || said_just_now)
                .map(|at| at.elapsed()),
            stop_reason: worker.stop_reason,
        };
        if worker.replaces.is_some() {
            // A replacement that never became ready: the reload fails, the old worker stays.
            self.on_replacement_failed(slot, &exit);
            return;
        }
        if slot > self.config.workers {
            self.logger.info(format!(
                "worker {slot} (pid {pid}) of a removed slot {reason}"
            ));
            return;
        }
        self.on_failure(slot, exit).await;
    }

    pub(super) fn notify_service_manager(&self, state: &str) {
        if let Some(manager) = &self.service_manager {
            manager.notify(state);
        }
    }

    async fn on_intent(&mut self, intent: Intent) {
        match intent {
            Intent::Stop { fast } => self.stop(fast),
            Intent::Reload { parallel, progress } => self.request_reload(parallel, progress).await,
            Intent::Restart { slot, progress } => self.restart_slot(slot, progress).await,
            Intent::Scale { target, reply } => {
                let result = self.scale(target).await;
                match reply {
                    Some(reply) => {
                        let _ = reply.send(result);
                    }
                    // A signal's or the library's scale: what it did is logged already.
                    None => {
                        if let Err(refused) = result {
                            self.logger.warn(refused.to_string());
                        }
                    }
                }
            }
            Intent::Send { to, data, reply } => {
                let delivered = self.send_message(&to, &data, None, None);
                let _ = reply.send(delivered);
            }
            Intent::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Intent::Worker { slot, pid, action } => self.act_on_worker(slot, pid, action),
        }
    }

    /// Sends to, disconnects or kills one worker: the one with `pid` in `slot`, or the slot's
    /// serving worker. A worker that is gone by now is left alone (its slot has a new one).
    fn act_on_worker(&mut self, slot: usize, pid: Option<u32>, action: WorkerAction) {
        let found = match pid {
            Some(pid) => self
                .workers
                .iter()
                .find(|worker| worker.slot == slot && worker.pid == pid),
            None => self
                .serving_worker(slot)
                .or_else(|| self.workers.iter().rfind(|worker| worker.slot == slot)),
        };
        let Some(worker) = found else {
            let which = pid.map_or(String::new(), |pid| format!(" (pid {pid})"));
            self.logger.warn(format!(
                "worker {slot}{which} is not running; nothing to {action}"
            ));
            return;
        };
        let (uid, pid) = (worker.uid, worker.pid);
        if worker.replaces.is_some() && !matches!(action, WorkerAction::Send(_)) {
            // Stopping it would leave the reload it belongs to waiting for it.
            self.logger.warn(format!(
                "worker {slot} (pid {pid}) is a replacement still starting (reload, restart); \
                 not going to {action} it"
            ));
            return;
        }
        match action {
            WorkerAction::Send(data) => {
                if self.deliver(worker, &data, None) == super::ipc::Delivery::Closed {
                    self.logger
                        .warn(format!("worker {slot} (pid {pid}) has no IPC channel"));
                }
            }
            WorkerAction::Disconnect => {
                self.logger
                    .info(format!("worker {slot} (pid {pid}) disconnecting, as asked"));
                self.retire_worker(uid, StopReason::Disconnected);
            }
            WorkerAction::Kill => {
                self.logger
                    .info(format!("worker {slot} (pid {pid}) killed, as asked"));
                if let Some(worker) = self.worker_mut(uid) {
                    // A worker already on its way out keeps its reason (a replaced worker's
                    // exit completes its slot's replacement).
                    worker.stop_reason.get_or_insert(StopReason::Killed);
                    worker.signal(Signal::SIGKILL);
                    if worker.state != WorkerState::Draining {
                        worker.state = WorkerState::Draining;
                        self.observe(ClusterEvent::Disconnect { slot, pid });
                    }
                }
                self.steer();
            }
        }
    }

    fn stop(&mut self, fast: bool) {
        let already_stopping = self.phase == Phase::Stopping;
        if !already_stopping {
            self.notify_service_manager("STOPPING=1");
        }
        self.phase = Phase::Stopping;
        self.abort_reloads("the cluster is stopping");
        if fast {
            let count = workers(self.workers.len());
            self.logger.warn(format!("stopping now: killing {count}"));
            self.kill_all();
            self.listeners.close();
            return;
        }
        if already_stopping {
            self.logger
                .info("already stopping; press Ctrl-C again to stop at once");
            return;
        }
        self.logger.info(format!(
            "stopping: sending {} to {} (killing after {})",
            self.config.stop_signal.as_str(),
            workers(self.workers.len()),
            humantime::format_duration(self.config.kill_timeout)
        ));
        let uids: Vec<u64> = self.workers.iter().map(|worker| worker.uid).collect();
        for uid in uids {
            self.stop_worker(uid, StopReason::Shutdown);
        }
        // Workers let go of the listening sockets as they stop accepting; then new connections
        // are refused rather than queued for no one.
        self.listeners.close();
    }
}

/// Sends `message` as a final result to a client waiting for one.
pub(super) fn send_result(progress: &Option<super::Progress>, ok: bool, message: &str) {
    if let Some(progress) = progress {
        let _ = progress.send(Update::Done {
            ok,
            message: message.to_string(),
        });
    }
}
