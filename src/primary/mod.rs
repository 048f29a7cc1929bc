//! The primary: binds the listening sockets, starts a worker per slot and supervises them.
//!
//! # Layout
//! - `mod.rs` (this file): [`run`] and the supervisor, the one task that owns every slot and
//!   worker and changes them only in response to [`Event`]s and [`Intent`]s.
//! - `process`: one worker process: start (through the exec shim), watch, signal.
//! - `restart`: when a crashed worker comes back (backoff), and how a worker ended.
//! - `notify`: the sd_notify socket each worker gets for readiness.
//! - `spawn`: the thread every worker is forked from (for `PR_SET_PDEATHSIG`).
//! - `logs`: the primary's messages and the workers' output, line by line.
//! - `signals`: operating-system signals mapped to intents.
//!
//! Worker lifecycle: `starting → ready → draining → exited`. A slot whose worker died waits in
//! backoff before the next one starts, and is `errored` while it crash-loops.

mod logs;
mod notify;
mod process;
mod restart;
mod signals;
mod spawn;

use std::io;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::sync::mpsc;

use crate::balance::{BindError, Listeners};
use crate::config::{Config, ReadyMode};
use crate::runtime_dir::PrimaryDir;
use logs::Logger;
use notify::{Notice, ServiceManager};
use process::{Launch, StopReason, Worker, WorkerState};
use restart::{ExitReason, RestartPolicy};
pub use signals::{forward_signals, Intent};
use spawn::Spawner;

/// Something that happened to a worker, reported to the supervisor by the tasks around it.
/// Workers are named by `uid`, unique for the primary's life, never by pid (pids are reused).
#[derive(Debug)]
pub enum Event {
    Notified {
        uid: u64,
        notice: Notice,
    },
    Exited {
        uid: u64,
        reason: ExitReason,
        tail: Vec<String>,
    },
    ReadyDelayElapsed {
        uid: u64,
    },
    ReadyTimeout {
        uid: u64,
    },
    KillDeadline {
        uid: u64,
    },
    RespawnDue {
        slot: usize,
    },
}

/// Why the primary stopped other than on request.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error("no worker became ready: {0}")]
    StartupFailed(String),
    #[error("cannot set up the primary: {0}")]
    Setup(#[source] io::Error),
}

/// Runs the cluster described by `config` until a stop intent arrives and every worker has
/// exited, or until start-up fails. Binding happens first, so a bad address fails at once.
pub async fn run(config: Config, intents: mpsc::UnboundedReceiver<Intent>) -> Result<(), RunError> {
    let listeners = Listeners::bind(config.address, config.balance, config.workers)?;
    let dir = PrimaryDir::create().map_err(RunError::Setup)?;
    let spawner = Spawner::start(tokio::runtime::Handle::current()).map_err(RunError::Setup)?;
    let (logger, writer) = logs::start(config.log_format);
    let (events, events_rx) = mpsc::unbounded_channel();
    let supervisor = Supervisor {
        slots: vec![SlotHistory::default(); config.workers],
        config,
        listeners,
        logger,
        spawner,
        dir,
        policy: RestartPolicy::default(),
        events,
        workers: Vec::new(),
        generation: 1,
        next_uid: 1,
        phase: Phase::Starting,
        failure: None,
        steering_failed: false,
        service_manager: ServiceManager::from_env(),
    };
    let result = supervisor.supervise(events_rx, intents).await;
    writer.finish().await;
    result
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// No worker has been ready yet.
    Starting,
    Running,
    Stopping,
}

/// What a slot remembers across the workers that held it.
#[derive(Clone, Debug, Default)]
struct SlotHistory {
    /// Failures in a row; reset by a worker that stayed up for the healthy uptime.
    failures: u32,
    restarts: u32,
    errored: bool,
    last_exit: Option<LastExit>,
}

#[derive(Clone, Debug)]
struct LastExit {
    pid: u32,
    reason: ExitReason,
    uptime: Duration,
    tail: Vec<String>,
    never_ready: bool,
    stop_reason: Option<StopReason>,
}

struct Supervisor {
    config: Config,
    listeners: Listeners,
    logger: Logger,
    spawner: Spawner,
    dir: PrimaryDir,
    policy: RestartPolicy,
    events: mpsc::UnboundedSender<Event>,
    /// Live worker processes, in start order. A slot has at most one, outside of reloads.
    workers: Vec<Worker>,
    /// Index `slot - 1`.
    slots: Vec<SlotHistory>,
    generation: u64,
    next_uid: u64,
    phase: Phase,
    /// Set when start-up failed; returned once the last worker has exited.
    failure: Option<RunError>,
    /// Whether steering was refused once (said once, not on every change).
    steering_failed: bool,
    /// systemd (or another manager) waiting for the primary's `READY=1`, if any.
    service_manager: Option<ServiceManager>,
}

impl Supervisor {
    async fn supervise(
        mut self,
        mut events: mpsc::UnboundedReceiver<Event>,
        mut intents: mpsc::UnboundedReceiver<Intent>,
    ) -> Result<(), RunError> {
        let config = &self.config;
        self.logger.info(format!(
            "listening on {} ({}, balance {})",
            self.listeners.local_addr(),
            workers(config.workers),
            config.balance
        ));
        for slot in 1..=self.config.workers {
            self.start_worker(slot).await;
        }
        while self.phase != Phase::Stopping || !self.workers.is_empty() {
            tokio::select! {
                Some(event) = events.recv() => self.on_event(event).await,
                Some(intent) = intents.recv() => self.on_intent(intent),
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

    async fn start_worker(&mut self, slot: usize) {
        let uid = self.next_uid;
        self.next_uid += 1;
        let launch = Launch {
            uid,
            slot,
            generation: self.generation,
            workers: self.config.workers,
            port: self.listeners.local_addr().port(),
            listen_fd: self.listeners.fd_for_slot(slot),
            notify_path: self.dir.path().join(format!("notify-{uid}")),
            command: &self.config.command,
            name: &self.config.name,
        };
        match Worker::start(launch, &self.spawner, &self.logger, self.events.clone()).await {
            Ok(worker) => {
                self.logger.info(format!(
                    "worker {slot} (pid {}) starting, generation {}",
                    worker.pid, worker.generation
                ));
                if self.config.ready == ReadyMode::Delay {
                    self.after(self.config.ready_delay, Event::ReadyDelayElapsed { uid });
                }
                self.after(self.config.ready_timeout, Event::ReadyTimeout { uid });
                self.workers.push(worker);
            }
            Err(error) => {
                // Fork itself failed (out of processes or memory): retry like a crash.
                self.logger
                    .error(format!("cannot start worker {slot}: {error}"));
                let exit = LastExit {
                    pid: 0,
                    reason: ExitReason::Unknown,
                    uptime: Duration::ZERO,
                    tail: vec![error.to_string()],
                    never_ready: true,
                    stop_reason: None,
                };
                self.on_failure(slot, exit).await;
            }
        }
    }

    /// Sends `event` to the supervisor after `delay`.
    fn after(&self, delay: Duration, event: Event) {
        let events = self.events.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = events.send(event);
        });
    }

    fn worker_mut(&mut self, uid: u64) -> Option<&mut Worker> {
        self.workers.iter_mut().find(|worker| worker.uid == uid)
    }

    async fn on_event(&mut self, event: Event) {
        match event {
            Event::Notified {
                uid,
                notice: Notice::Ready,
            } => self.mark_ready(uid),
            Event::Notified { .. } => {}
            Event::ReadyDelayElapsed { uid } => self.mark_ready(uid),
            Event::ReadyTimeout { uid } => self.on_ready_timeout(uid),
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
                let occupied = self.workers.iter().any(|worker| worker.slot == slot);
                if self.phase != Phase::Stopping && !occupied && slot <= self.config.workers {
                    self.start_worker(slot).await;
                }
            }
            Event::Exited { uid, reason, tail } => {
                let Some(index) = self.workers.iter().position(|worker| worker.uid == uid) else {
                    return;
                };
                let worker = self.workers.remove(index);
                self.steer_to_ready_slots();
                self.on_exit(worker, reason, tail).await;
            }
        }
    }

    fn mark_ready(&mut self, uid: u64) {
        let Some(worker) = self.worker_mut(uid) else {
            return;
        };
        if worker.state != WorkerState::Starting {
            return;
        }
        worker.state = WorkerState::Ready;
        let (slot, pid) = (worker.slot, worker.pid);
        self.logger.info(format!("worker {slot} (pid {pid}) ready"));
        self.steer_to_ready_slots();
        if self.phase == Phase::Starting {
            let ready = self
                .workers
                .iter()
                .filter(|w| w.state == WorkerState::Ready)
                .count();
            if ready == self.config.workers {
                self.phase = Phase::Running;
                self.logger.info(format!("all {} ready", workers(ready)));
                self.notify_service_manager(&format!("READY=1\nSTATUS={} ready", workers(ready)));
            }
        }
    }

    fn on_ready_timeout(&mut self, uid: u64) {
        let timeout = self.config.ready_timeout;
        let Some(worker) = self.worker_mut(uid) else {
            return;
        };
        if worker.state != WorkerState::Starting {
            return;
        }
        let (slot, pid) = (worker.slot, worker.pid);
        self.logger.warn(format!(
            "worker {slot} (pid {pid}) not ready within {}; stopping it",
            humantime::format_duration(timeout)
        ));
        self.stop_worker(uid, StopReason::NotReady);
    }

    /// Asks worker `uid` to stop (stop signal), and kills it if it is still there after the kill
    /// timeout.
    fn stop_worker(&mut self, uid: u64, reason: StopReason) {
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
        self.after(kill_timeout, Event::KillDeadline { uid });
        self.steer_to_ready_slots();
    }

    /// Points new connections at the slots whose worker is ready (reuseport), so that none
    /// wait in the queue of a slot that is starting, draining or crash-looping.
    fn steer_to_ready_slots(&mut self) {
        let mut ready: Vec<usize> = self
            .workers
            .iter()
            .filter(|worker| worker.state == WorkerState::Ready)
            .map(|worker| worker.slot)
            .collect();
        ready.sort_unstable();
        ready.dedup();
        if let Err(error) = self.listeners.steer(&ready) {
            if !self.steering_failed {
                self.steering_failed = true;
                self.logger.warn(format!(
                    "cannot steer connections to ready workers ({error}); the kernel spreads them \
                     over every slot, so a slot without a ready worker holds some until it has one"
                ));
            }
        }
    }

    async fn on_exit(&mut self, worker: Worker, reason: ExitReason, tail: Vec<String>) {
        let (slot, pid) = (worker.slot, worker.pid);
        let uptime = worker.uptime();
        if worker.stop_reason == Some(StopReason::Shutdown) || self.phase == Phase::Stopping {
            self.logger
                .info(format!("worker {slot} (pid {pid}) {reason}"));
            return;
        }
        let exit = LastExit {
            pid,
            reason,
            uptime,
            tail,
            never_ready: worker.state == WorkerState::Starting
                || worker.stop_reason == Some(StopReason::NotReady),
            stop_reason: worker.stop_reason,
        };
        self.on_failure(slot, exit).await;
    }

    /// A worker of `slot` ended without being asked to: record it, then restart the slot or,
    /// when no worker was ever ready, give up on start-up.
    async fn on_failure(&mut self, slot: usize, exit: LastExit) {
        let policy = &self.policy;
        let history = &mut self.slots[slot - 1];
        if !exit.never_ready && exit.uptime >= policy.healthy_uptime {
            history.failures = 0;
            history.errored = false;
        }
        history.failures += 1;
        history.restarts += 1;
        history.last_exit = Some(exit.clone());
        let failures = history.failures;

        if self.phase == Phase::Starting && self.startup_has_failed(&exit) {
            self.fail_startup(slot);
            return;
        }

        let delay = self.policy.delay(failures);
        let when = if delay.is_zero() {
            "restarting now".to_string()
        } else {
            format!("restarting in {}", humantime::format_duration(delay))
        };
        let what = describe_exit(slot, &exit);
        let history = &mut self.slots[slot - 1];
        if failures >= self.policy.errored_after && !history.errored {
            history.errored = true;
            self.logger.error(format!(
                "slot {slot} is crash-looping (errored): {failures} failures in a row, the last: \
                 {what}; {when}{}",
                format_tail(&exit.tail)
            ));
        } else {
            self.logger.warn(format!("{what}; {when}"));
        }
        if delay.is_zero() {
            Box::pin(self.start_worker(slot)).await;
        } else {
            self.after(delay, Event::RespawnDue { slot });
        }
    }

    /// Start-up has failed when no worker was ever ready and either every slot failed twice in
    /// a row (the command cannot work) or a worker never signalled readiness in time (waiting
    /// longer would not help).
    fn startup_has_failed(&self, exit: &LastExit) -> bool {
        exit.stop_reason == Some(StopReason::NotReady)
            || self.slots.iter().all(|history| history.failures >= 2)
    }

    fn fail_startup(&mut self, slot: usize) {
        let history = &self.slots[slot - 1];
        let Some(exit) = &history.last_exit else {
            return;
        };
        let mut report = describe_exit(slot, exit);
        if history.failures > 1 {
            report.push_str(&format!(" ({} times)", history.failures));
        }
        report.push_str(&format_tail(&exit.tail));
        let port = self.listeners.local_addr().port();
        report.push_str(&format!(
            "\nhint: {}",
            startup_hint(exit, &self.config, port)
        ));
        self.failure = Some(RunError::StartupFailed(report));
        self.phase = Phase::Stopping;
        // Nothing serves yet, so there is nothing to drain: stop the other workers at once.
        for worker in &mut self.workers {
            worker.stop_reason = Some(StopReason::Shutdown);
            worker.signal(Signal::SIGKILL);
        }
    }

    fn notify_service_manager(&self, state: &str) {
        if let Some(manager) = &self.service_manager {
            manager.notify(state);
        }
    }

    fn on_intent(&mut self, intent: Intent) {
        if self.phase != Phase::Stopping {
            self.notify_service_manager("STOPPING=1");
        }
        match intent {
            Intent::Stop { fast: false } => {
                if self.phase == Phase::Stopping {
                    self.logger
                        .info("already stopping; press Ctrl-C again to stop at once");
                    return;
                }
                self.phase = Phase::Stopping;
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
            }
            Intent::Stop { fast: true } => {
                self.phase = Phase::Stopping;
                self.logger.warn(format!(
                    "stopping now: killing {}",
                    workers(self.workers.len())
                ));
                for worker in &mut self.workers {
                    worker.stop_reason = Some(StopReason::Shutdown);
                    worker.signal(Signal::SIGKILL);
                }
            }
        }
    }
}

/// `1 worker`, `2 workers`.
fn workers(count: usize) -> String {
    match count {
        1 => "1 worker".into(),
        _ => format!("{count} workers"),
    }
}

/// `worker 2 (pid 4121) exited with code 1 after 80ms`.
fn describe_exit(slot: usize, exit: &LastExit) -> String {
    let uptime = humantime::format_duration(Duration::from_millis(exit.uptime.as_millis() as u64));
    match exit.stop_reason {
        Some(StopReason::NotReady) => format!(
            "worker {slot} (pid {}) was not ready in time and was stopped ({})",
            exit.pid, exit.reason
        ),
        _ if exit.pid == 0 => format!("worker {slot} could not be started"),
        _ => format!(
            "worker {slot} (pid {}) {} after {uptime}",
            exit.pid, exit.reason
        ),
    }
}

/// The last stderr lines, one per line under the message, or nothing.
fn format_tail(tail: &[String]) -> String {
    if tail.is_empty() {
        return String::new();
    }
    let mut text = String::from("; its last stderr lines:");
    for line in tail {
        text.push_str("\n  | ");
        text.push_str(line);
    }
    text
}

/// What the user can do about a start-up failure, guessed from how the worker ended.
fn startup_hint(exit: &LastExit, config: &Config, port: u16) -> String {
    let tail = exit.tail.join("\n").to_ascii_lowercase();
    let program = config.command[0].to_string_lossy();
    if exit.stop_reason == Some(StopReason::NotReady) && config.ready == ReadyMode::Notify {
        return "with --ready notify a worker must send READY=1 to $NOTIFY_SOCKET (sd_notify) \
                within --ready-timeout; make the app notify, or use --ready delay"
            .into();
    }
    if exit.reason == ExitReason::Code(crate::shim::EXIT_NOT_FOUND) {
        return format!(
            "`{program}` was not found: check the spelling and $PATH, or give its path"
        );
    }
    if exit.reason == ExitReason::Code(crate::shim::EXIT_CANNOT_EXECUTE) {
        return format!(
            "`{program}` could not be executed: check that it is a program and executable"
        );
    }
    if tail.contains("eaddrinuse")
        || tail.contains("address already in use")
        || tail.contains("address in use")
    {
        return format!(
            "this app binds port {port} itself, but herdsman already listens there; make it use \
             the inherited socket (fd 3, LISTEN_FDS) as the README shows for your language"
        );
    }
    "the worker exits on its own before it is ready; run the command by hand to see why".into()
}
