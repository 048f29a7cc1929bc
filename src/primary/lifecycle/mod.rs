//! The supervisor's lifecycle: every worker, slot and the cluster as typed states, changed by
//! one transition function, [`Machine::handle`], and nothing else.
//!
//! An [`Input`] is something that happened (a worker started, said it is ready, exited), an
//! operator's intent (stop, reload, restart, scale, disconnect, kill), or a timer that fell due.
//! `handle` changes the state and returns [`Effect`]s: start a process, signal one, steer
//! connections, schedule a timer, answer a request, log a line, report an event. It touches no
//! process, socket, clock or channel: the time comes with each input, readings of the sockets
//! (how many connections wait in a queue) come as inputs, and the executor
//! (`primary::executor`) performs the effects. So every transition runs in a unit test with
//! plain `Instant`s (`tests`, `props`).
//!
//! # States
//! - a worker's [`Life`]: `starting` (a replacement names the worker it replaces) → `ready` →
//!   `retiring` (steered away from, finishing its queue) → `draining` (asked to stop) → gone;
//!   any of them may end at once by an exit.
//! - a slot ([`SlotState`]): `serving`, `replacing` (a reload's replacement starts beside the
//!   worker it replaces), `backoff` (empty, its next worker due), `errored` (crash-looping).
//! - the cluster ([`ClusterPhase`]): `starting` → `running` → `stopping`, `reloading` while a
//!   reload or restart runs.
//!
//! # Layout
//! - `worker`, `slot`: the records.
//! - `start`: starting workers, steering, retiring and stopping one.
//! - `readiness`: when a starting worker counts as ready; when start-up is over.
//! - `failure`: exits: restarts with backoff, `errored`, start-up failure. The answer to "what
//!   happens when a worker crashes during a rolling reload" is [`Machine::on_exit`].
//! - `reload`: rolling reloads and single-slot restarts, new worker before old.
//! - `scale`: adding and retiring slots; the answer once the new count serves.
//! - `accepting`: ready workers that leave connections unaccepted are replaced.
//! - `limits`: ready workers replaced for a reason, new first: hung (`--watchdog`), over
//!   `--max-memory`, done with `--max-requests`.
//! - `operator`: stop, and acting on one worker.

mod accepting;
mod failure;
mod limits;
mod operator;
mod readiness;
mod reconfigure;
mod reload;
mod scale;
mod slot;
mod start;
mod view;
mod worker;

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_limits;
#[cfg(test)]
pub(super) mod world;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::Signal;

use super::logs::Level;
pub use super::restart::{ExitReason, RestartPolicy};
use crate::balance::BindError;
use crate::balance::Side;
use crate::config::{Config, ConfigError};
use crate::domain::{
    ClusterEvent, LifecycleEvent, ReloadChange, ScaleTarget, Update, WorkerChange,
};

pub use accepting::Stall;
pub use limits::{ReplaceReason, Replacement};
pub use slot::{LastExit, Slot};
pub use worker::{LaunchSpec, Life, StopReason, WorkerId, WorkerRecord};

/// A request that waits for an answer (a control client's `reload`, `restart`, `scale`): the
/// executor keeps where the answer goes, the machine only its number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// Something the machine reacts to.
#[derive(Debug)]
pub enum Input {
    /// Start the cluster: a worker for every slot.
    Start,
    /// The process of `worker` runs, as `pid`.
    Spawned {
        worker: WorkerId,
        pid: u32,
    },
    /// The process of `worker` could not be started (fork failed, or the sockets are closed).
    SpawnFailed {
        worker: WorkerId,
        error: String,
    },
    /// The worker said it is ready (`READY=1`, an IPC `ready`, Node's `process.send('ready')`).
    ReadySignal {
        worker: WorkerId,
    },
    /// A Node worker's server listens (Node's `listening`): its ready signal under `--ready
    /// delay`, unless the command is seen to send its own.
    Listening {
        worker: WorkerId,
    },
    /// With the proxy: the worker's private port accepted a connection (the probe's).
    PortAccepting {
        worker: WorkerId,
    },
    Exited {
        worker: WorkerId,
        reason: ExitReason,
        /// Its last stderr lines.
        tail: Vec<String>,
    },
    /// [`Timer::Retire`] fell due; `queued` connections wait on the worker's socket.
    RetireCheck {
        worker: WorkerId,
        queued: u32,
    },
    /// [`Timer::AcceptCheck`] fell due; the accept queues of the workers, and of the shared
    /// socket (`--balance shared`).
    AcceptSample {
        queued: Vec<(WorkerId, u32)>,
        shared: Option<u32>,
    },
    /// `WATCHDOG=1` from a worker (with `--watchdog`).
    Heartbeat {
        worker: WorkerId,
    },
    /// [`Timer::MemoryCheck`] fell due: the RSS of each serving worker's process tree.
    MemorySample(Vec<(WorkerId, u64)>),
    /// [`Timer::ServedCheck`] fell due: the connections each serving worker has served so far
    /// (counted by the primary, or reported by the worker with `REQUESTS=n`).
    ServedSample(Vec<(WorkerId, u64)>),
    /// Steering connections failed (reported once): no connection can be relayed by steering.
    SteeringFailed,
    /// The configuration, read again for a reload ([`Effect::ReadConfig`]).
    ConfigRead(Result<Box<Config>, ConfigError>),
    /// The sockets for more slots were made, or why not ([`Effect::AddSlots`]).
    SlotsAdded(Result<(), BindError>),
    Timer(Timer),
    Intent(Intent),
}

/// What an operator asks (a signal, the control socket, the library).
#[derive(Debug)]
pub enum Intent {
    /// Stop the cluster: `fast` kills workers at once instead of letting them drain.
    Stop { fast: bool },
    /// Replace every worker, `parallel` slots at a time, new before old.
    Reload {
        parallel: usize,
        request: Option<RequestId>,
    },
    /// Replace one slot's worker, new before old.
    Restart {
        slot: usize,
        request: Option<RequestId>,
    },
    /// Change the worker count.
    Scale {
        target: ScaleTarget,
        request: Option<RequestId>,
    },
    /// Stop one worker: the one with `pid` in `slot`, or the slot's serving worker.
    Worker {
        slot: usize,
        pid: Option<u32>,
        order: WorkerOrder,
    },
}

/// What the program asks of one worker (besides messages, which the executor delivers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerOrder {
    /// Stop it gracefully; the slot gets a new worker once it has exited.
    Disconnect,
    /// SIGKILL now; the slot gets a new worker at once.
    Kill,
}

/// A timer, keyed by what it is for: scheduling one again moves it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Timer {
    /// `--ready-delay` after a worker's start or its ready signal.
    ReadyDelay(WorkerId),
    ReadyTimeout(WorkerId),
    /// Time to name a worker still silent under `--ready notify`.
    ReadyHint(WorkerId),
    /// The kill timeout of a worker asked to stop.
    KillDeadline(WorkerId),
    /// Time to look at a retiring worker's queue (the executor reads it: [`Input::RetireCheck`]).
    Retire(WorkerId),
    /// A slot's backoff is over.
    Respawn(usize),
    /// Time to sample the accept queues (the executor reads them: [`Input::AcceptSample`]).
    AcceptCheck,
    /// A `scale` request has waited long enough for the new count.
    ScaleDeadline(RequestId),
    /// A ready worker's heartbeat (`WATCHDOG=1`) is overdue (`--watchdog`).
    Watchdog(WorkerId),
    /// Time to read the workers' RSS (the executor does: [`Input::MemorySample`]).
    MemoryCheck,
    /// Time to read what the workers served (the executor does: [`Input::ServedSample`]).
    ServedCheck,
}

impl Timer {
    /// The worker the timer is about, if any (its timers go when it exits).
    pub fn worker(&self) -> Option<WorkerId> {
        match *self {
            Timer::ReadyDelay(id)
            | Timer::ReadyTimeout(id)
            | Timer::ReadyHint(id)
            | Timer::KillDeadline(id)
            | Timer::Retire(id)
            | Timer::Watchdog(id) => Some(id),
            Timer::Respawn(_)
            | Timer::AcceptCheck
            | Timer::ScaleDeadline(_)
            | Timer::MemoryCheck
            | Timer::ServedCheck => None,
        }
    }
}

/// An order to start a worker's process.
#[derive(Clone, Debug)]
pub struct Spawn {
    pub worker: WorkerId,
    pub slot: usize,
    pub side: Side,
    pub spec: Arc<LaunchSpec>,
    /// The worker count, for `HERDSMAN_WORKER_COUNT`.
    pub workers: usize,
}

/// What the executor does for the machine.
#[derive(Debug)]
pub enum Effect {
    /// Start a process; the executor answers [`Input::Spawned`] or [`Input::SpawnFailed`]
    /// before any other input.
    Spawn(Spawn),
    /// Ask a worker to stop: the stop signal, or for a Node cluster worker, Node's
    /// `disconnect` (it closes its servers, finishes their connections, then is signalled).
    Stop {
        worker: WorkerId,
    },
    Signal {
        worker: WorkerId,
        signal: Signal,
    },
    /// New connections go to these sockets (reuseport).
    Steer(Vec<(usize, Side)>),
    /// Close the listening sockets: the cluster stops, new connections are refused.
    CloseListeners,
    Schedule {
        timer: Timer,
        after: Duration,
    },
    /// Read the configuration again; the executor answers [`Input::ConfigRead`] at once.
    ReadConfig,
    /// Make the listening sockets for this many slots (scaling up); the executor answers
    /// [`Input::SlotsAdded`] at once.
    AddSlots(usize),
    Reply {
        request: RequestId,
        answer: Update,
    },
    Log(Level, String),
    /// A lifecycle event for the library's handler.
    Observe(ClusterEvent),
    /// A lifecycle event for the admin server's stream (`/api/events`).
    Announce(LifecycleEvent),
    /// A state for the primary's own service manager (sd_notify).
    NotifyManager(String),
}

/// What the machine is told once, at its start, about the world it runs in.
#[derive(Clone, Debug)]
pub struct Facts {
    /// Connections can be steered between sockets (reuseport), rather than one shared queue.
    pub steerable: bool,
    /// The cluster's port, for messages.
    pub port: u16,
    /// The configuration can be read again on reload (it came from herdsman.toml).
    pub rereads: bool,
    /// The wall-clock time at the machine's start `Instant`: exits are dated from it.
    pub wall_at_start: SystemTime,
    /// Where each worker's `--max-requests-jitter` is drawn from.
    pub seed: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Until every slot has had a ready worker or is crash-looping ([`Machine::check_started`]).
    Starting,
    Running,
    Stopping,
}

pub struct Machine {
    config: Config,
    facts: Facts,
    policy: RestartPolicy,
    /// Live workers, in start order. A slot has one, two during its replacement.
    workers: Vec<WorkerRecord>,
    /// Index `slot - 1`; may be longer than the worker count after a scale-down.
    slots: Vec<Slot>,
    /// What new slots run: the last spec every slot reloaded to.
    spec: Arc<LaunchSpec>,
    /// The highest generation handed out so far.
    last_generation: u64,
    phase: Phase,
    reload: Option<reload::Reload>,
    /// Reloads asked for while one runs, merged into one.
    queued_reload: Option<reload::QueuedReload>,
    /// A reload waiting for the configuration it re-reads.
    reading_config: Option<reload::QueuedReload>,
    /// A worker count to scale to once the current reload is done (changed in herdsman.toml).
    pending_scale: Option<usize>,
    /// `scale` requests waiting for the new count to serve.
    scale_waits: Vec<scale::ScaleWait>,
    /// A scale up waiting for the sockets of its new slots: the count, and who asked.
    adding_slots: Option<(usize, Option<RequestId>)>,
    reloads: u64,
    /// Reloads of the cluster that were aborted (a replacement died or was not ready in time).
    reloads_aborted: u64,
    next_worker: u64,
    started_at: Instant,
    /// Set when start-up failed; the primary ends with it once the last worker has exited.
    failure: Option<String>,
    /// The sockets the last steering pointed at, and whether steering failed.
    steered: Vec<(usize, Side)>,
    steering_failed: bool,
    /// Some worker of the current command said it was ready: with `--ready delay`, later workers
    /// are ready only once they say so too, and the delay after.
    command_signals_ready: bool,
    /// Some worker of the current command listened (Node's `listening`): with `--ready delay`,
    /// later workers are ready only once they listen too (or say they are ready).
    command_listens: bool,
    /// Some worker was ready for the healthy uptime: start-up is over for good.
    served_healthy: bool,
    /// The shared queue's stall (`--balance shared`, see `accepting`).
    shared_accept_stall: Stall,
    /// Whether the `--ready notify` hint was given (once per cluster).
    ready_hint_given: bool,
    /// Whether the `--watchdog` hint was given (once per cluster).
    watchdog_hint_given: bool,
    /// The time of the input being handled.
    now: Instant,
    effects: Vec<Effect>,
}

impl Machine {
    pub fn new(config: Config, facts: Facts, now: Instant) -> Machine {
        let spec = Arc::new(LaunchSpec {
            generation: 1,
            command: config.command.clone(),
            env: config.env.clone(),
        });
        Machine {
            slots: vec![Slot::new(spec.clone()); config.workers],
            spec,
            last_generation: 1,
            config,
            facts,
            policy: RestartPolicy::default(),
            workers: Vec::new(),
            phase: Phase::Starting,
            reload: None,
            queued_reload: None,
            reading_config: None,
            pending_scale: None,
            scale_waits: Vec::new(),
            adding_slots: None,
            reloads: 0,
            reloads_aborted: 0,
            next_worker: 1,
            started_at: now,
            failure: None,
            steered: Vec::new(),
            steering_failed: false,
            command_signals_ready: false,
            command_listens: false,
            served_healthy: false,
            shared_accept_stall: None,
            ready_hint_given: false,
            watchdog_hint_given: false,
            now,
            effects: Vec::new(),
        }
    }

    /// The transition function: the state after `input` at `now`, and what to do about it.
    pub fn handle(&mut self, now: Instant, input: Input) -> Vec<Effect> {
        self.now = now;
        match input {
            Input::Start => self.start(),
            Input::Spawned { worker, pid } => self.on_spawned(worker, pid),
            Input::SpawnFailed { worker, error } => self.on_spawn_failed(worker, error),
            Input::ReadySignal { worker } => self.on_ready_signal(worker),
            Input::Listening { worker } => self.on_listening(worker),
            Input::PortAccepting { worker } => self.on_port_accepting(worker),
            Input::Exited {
                worker,
                reason,
                tail,
            } => self.on_exited(worker, reason, tail),
            Input::RetireCheck { worker, queued } => self.retire_check(worker, queued),
            Input::AcceptSample { queued, shared } => self.check_accepting(&queued, shared),
            Input::Heartbeat { worker } => self.on_heartbeat(worker),
            Input::MemorySample(sample) => self.on_memory_sample(&sample),
            Input::ServedSample(sample) => self.on_served_sample(&sample),
            Input::SteeringFailed => self.steering_failed = true,
            Input::ConfigRead(config) => self.on_config_read(config),
            Input::SlotsAdded(added) => self.on_slots_added(added),
            Input::Timer(timer) => self.on_timer(timer),
            Input::Intent(intent) => self.on_intent(intent),
        }
        self.after_input();
        std::mem::take(&mut self.effects)
    }

    fn on_timer(&mut self, timer: Timer) {
        match timer {
            Timer::ReadyDelay(id) => self.ready_check(id),
            Timer::ReadyTimeout(id) => self.on_ready_timeout(id),
            Timer::ReadyHint(id) => self.on_ready_hint(id),
            Timer::KillDeadline(id) => self.on_kill_deadline(id),
            Timer::Respawn(slot) => self.on_respawn_due(slot),
            Timer::ScaleDeadline(request) => self.on_scale_deadline(request),
            Timer::Watchdog(id) => self.on_watchdog(id),
            // Read by the executor and handed in as `RetireCheck`, `AcceptSample`,
            // `MemorySample` and `ServedSample`.
            Timer::Retire(_) | Timer::AcceptCheck | Timer::MemoryCheck | Timer::ServedCheck => {}
        }
    }

    fn on_intent(&mut self, intent: Intent) {
        match intent {
            Intent::Stop { fast } => self.stop(fast),
            Intent::Reload { parallel, request } => self.request_reload(parallel, request),
            Intent::Restart { slot, request } => self.restart_slot(slot, request),
            Intent::Scale { target, request } => self.scale(target, request),
            Intent::Worker { slot, pid, order } => self.act_on_worker(slot, pid, order),
        }
    }

    /// What waits for the end of a reload, once no reload runs.
    fn after_input(&mut self) {
        if self.reload.is_none() && self.reading_config.is_none() && self.phase != Phase::Stopping {
            if let Some(count) = self.pending_scale.take() {
                self.scale(ScaleTarget::To(count), None);
            }
            if let Some(queued) = self.queued_reload.take() {
                self.begin_reload(queued);
            }
        }
        self.check_scale_waits();
    }

    // Effects.

    fn log(&mut self, level: Level, line: impl Into<String>) {
        self.effects.push(Effect::Log(level, line.into()));
    }

    fn info(&mut self, line: impl Into<String>) {
        self.log(Level::Info, line);
    }

    fn warn(&mut self, line: impl Into<String>) {
        self.log(Level::Warn, line);
    }

    fn error(&mut self, line: impl Into<String>) {
        self.log(Level::Error, line);
    }

    fn observe(&mut self, event: ClusterEvent) {
        self.effects.push(Effect::Observe(event));
    }

    fn announce(&mut self, event: LifecycleEvent) {
        self.effects.push(Effect::Announce(event));
    }

    fn announce_worker(&mut self, slot: usize, pid: u32, generation: u64, change: WorkerChange) {
        self.announce(LifecycleEvent::Worker {
            slot,
            pid,
            generation,
            change,
        });
    }

    fn schedule(&mut self, timer: Timer, after: Duration) {
        self.effects.push(Effect::Schedule { timer, after });
    }

    fn signal(&mut self, worker: WorkerId, signal: Signal) {
        self.effects.push(Effect::Signal { worker, signal });
    }

    fn reply(&mut self, request: Option<RequestId>, answer: Update) {
        if let Some(request) = request {
            self.effects.push(Effect::Reply { request, answer });
        }
    }

    fn done(&mut self, request: Option<RequestId>, ok: bool, message: impl Into<String>) {
        let message = message.into();
        self.reply(request, Update::Done { ok, message });
    }

    fn notify_manager(&mut self, state: impl Into<String>) {
        self.effects.push(Effect::NotifyManager(state.into()));
    }
}
