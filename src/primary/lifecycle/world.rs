//! A world for the machine with no processes, sockets or clock: what the executor does, done
//! by hand. Processes start at once (pids count up), timers fall due when the test moves the
//! time, and every effect is kept for the test to read.

use std::collections::HashMap;
use std::ffi::OsString;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::Signal;

use super::{Effect, ExitReason, Facts, Input, Intent, Machine, RequestId, Timer, Update};
use super::{WorkerId, WorkerRecord};
use crate::balance::Side;
use crate::config::{Balance, Config, ConfigError, LogFormat, ReadyMode};
use crate::ipc::IpcMode;
use crate::state::{StateMode, StoreOptions};

pub const READY_DELAY: Duration = Duration::from_millis(100);
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
pub const KILL_TIMEOUT: Duration = Duration::from_secs(5);

/// A configuration whose workers are ready once they say so (and stay up 100 ms).
pub fn config(workers: usize) -> Config {
    Config {
        name: "test".into(),
        name_is_explicit: true,
        command: vec![OsString::from("app")],
        env: Vec::new(),
        workers,
        address: "127.0.0.1:0".parse().unwrap(),
        balance: Balance::Reuseport,
        sticky: crate::config::Sticky::Off,
        proxy_protocol: crate::config::ProxyProtocol::Off,
        max_pending: 1,
        ready: ReadyMode::Notify,
        ready_delay: READY_DELAY,
        ready_timeout: READY_TIMEOUT,
        stop_signal: Signal::SIGTERM,
        kill_timeout: KILL_TIMEOUT,
        accept_timeout: Duration::from_secs(30),
        watchdog: None,
        max_memory: None,
        max_requests: None,
        max_requests_jitter: 0,
        log_format: LogFormat::Text,
        log_files: crate::config::LogFiles {
            dir: None,
            max_size: 1 << 20,
            keep: 1,
        },
        state: StateMode::Off,
        store: StoreOptions::default(),
        ipc: IpcMode::Off,
        explain_ready_notify: false,
        admin: None,
        admin_token: None,
    }
}

pub struct World {
    pub machine: Machine,
    pub now: Instant,
    /// Timers set, keyed as the executor keys them: when each falls due, and in what order it
    /// was set (for ties).
    timers: HashMap<Timer, (Instant, u64)>,
    set: u64,
    /// Every effect, in order.
    pub effects: Vec<Effect>,
    next_pid: u32,
    /// Connections waiting on each socket, as the accept and retire checks read them.
    pub queued: HashMap<(usize, Side), u32>,
    /// The RSS of workers' trees and the connections they served, as the limit checks read
    /// them (0 when unset).
    pub rss: HashMap<WorkerId, u64>,
    pub served: HashMap<WorkerId, u64>,
    /// Spawns fail while set (fork fails).
    pub fail_spawns: bool,
    /// What `ReadConfig` reads.
    pub next_config: Option<Result<Config, ConfigError>>,
    next_request: u64,
}

impl World {
    pub fn new(workers: usize) -> World {
        World::with(config(workers), false)
    }

    /// A world whose configuration re-reads on reload when `rereads`.
    pub fn with(config: Config, rereads: bool) -> World {
        let now = Instant::now();
        let facts = Facts {
            steerable: true,
            port: 8080,
            rereads,
            wall_at_start: SystemTime::UNIX_EPOCH,
            seed: 7,
        };
        World {
            machine: Machine::new(config, facts, now),
            now,
            timers: HashMap::new(),
            set: 0,
            effects: Vec::new(),
            next_pid: 100,
            queued: HashMap::new(),
            rss: HashMap::new(),
            served: HashMap::new(),
            fail_spawns: false,
            next_config: None,
            next_request: 1,
        }
    }

    /// Hands `input` in and performs its effects as the executor does, depth first.
    pub fn feed(&mut self, input: Input) {
        let mut stack = vec![self.machine.handle(self.now, input).into_iter()];
        while let Some(effects) = stack.last_mut() {
            let Some(effect) = effects.next() else {
                stack.pop();
                continue;
            };
            let answer = self.perform(&effect);
            self.effects.push(effect);
            if let Some(answer) = answer {
                stack.push(self.machine.handle(self.now, answer).into_iter());
            }
        }
    }

    fn perform(&mut self, effect: &Effect) -> Option<Input> {
        match effect {
            Effect::Spawn(order) if self.fail_spawns => Some(Input::SpawnFailed {
                worker: order.worker,
                error: "out of processes".into(),
            }),
            Effect::Spawn(order) => {
                self.next_pid += 1;
                Some(Input::Spawned {
                    worker: order.worker,
                    pid: self.next_pid,
                })
            }
            Effect::Schedule { timer, after } => {
                self.set += 1;
                self.timers.insert(*timer, (self.now + *after, self.set));
                None
            }
            Effect::ReadConfig => Some(Input::ConfigRead(
                self.next_config
                    .take()
                    .unwrap_or_else(|| Ok(self.machine.config().clone()))
                    .map(Box::new),
            )),
            Effect::AddSlots(_) => Some(Input::SlotsAdded(Ok(()))),
            _ => None,
        }
    }

    /// Moves the time on by `by`, firing the timers that fall due on the way, in order.
    pub fn advance(&mut self, by: Duration) {
        let until = self.now + by;
        loop {
            let next = self
                .timers
                .iter()
                .filter(|(_, (at, _))| *at <= until)
                .min_by_key(|(_, (at, set))| (*at, *set))
                .map(|(timer, (at, _))| (*timer, *at));
            let Some((timer, at)) = next else {
                break;
            };
            self.timers.remove(&timer);
            self.now = self.now.max(at);
            let input = match timer {
                Timer::Retire(worker) => {
                    let Some(record) = self.machine.worker(worker) else {
                        continue;
                    };
                    let queued = self.queued_on(record.slot, record.side);
                    Input::RetireCheck { worker, queued }
                }
                Timer::AcceptCheck => Input::AcceptSample {
                    queued: self
                        .machine
                        .workers()
                        .iter()
                        .map(|w| (w.id, self.queued_on(w.slot, w.side)))
                        .collect(),
                    shared: None,
                },
                Timer::MemoryCheck => Input::MemorySample(self.serving_with(&self.rss)),
                Timer::ServedCheck => Input::ServedSample(self.serving_with(&self.served)),
                timer => Input::Timer(timer),
            };
            self.feed(input);
        }
        self.now = until;
    }

    /// `readings` of the serving workers, as the executor hands them in.
    fn serving_with(&self, readings: &HashMap<WorkerId, u64>) -> Vec<(WorkerId, u64)> {
        let serving = self.machine.workers().iter().filter(|w| w.is_serving());
        serving
            .map(|w| (w.id, readings.get(&w.id).copied().unwrap_or(0)))
            .collect()
    }

    fn queued_on(&self, slot: usize, side: Side) -> u32 {
        self.queued.get(&(slot, side)).copied().unwrap_or(0)
    }

    pub fn is_set(&self, timer: Timer) -> bool {
        self.timers.contains_key(&timer)
    }

    pub fn start(&mut self) {
        self.feed(Input::Start);
    }

    /// Starts the cluster and makes every worker ready.
    pub fn started(workers: usize) -> World {
        let mut world = World::new(workers);
        world.start();
        world.ready_all();
        world
    }

    /// Every starting worker says it is ready, and stays up for the ready delay.
    pub fn ready_all(&mut self) {
        for id in self.ids(|worker| worker.is_starting()) {
            self.feed(Input::ReadySignal { worker: id });
        }
        self.advance(READY_DELAY);
    }

    pub fn ready(&mut self, id: WorkerId) {
        self.feed(Input::ReadySignal { worker: id });
        self.advance(READY_DELAY);
    }

    pub fn exit(&mut self, id: WorkerId, reason: ExitReason) {
        self.feed(Input::Exited {
            worker: id,
            reason,
            tail: Vec::new(),
        });
    }

    pub fn crash(&mut self, id: WorkerId) {
        self.exit(id, ExitReason::Code(1));
    }

    /// Every signal sent, in order, a request to stop as the stop signal.
    fn signals(&self) -> Vec<(WorkerId, Signal)> {
        let stop_signal = self.machine.config().stop_signal;
        self.effects
            .iter()
            .filter_map(|effect| match effect {
                Effect::Signal { worker, signal } => Some((*worker, *signal)),
                Effect::Stop { worker } => Some((*worker, stop_signal)),
                _ => None,
            })
            .collect()
    }

    /// Every worker that was sent a signal exits by it.
    pub fn exit_signalled(&mut self) {
        for (id, signal) in self.signals() {
            if self.machine.worker(id).is_some() {
                self.exit(id, ExitReason::Signal(signal as i32));
            }
        }
    }

    pub fn intent(&mut self, intent: Intent) {
        self.feed(Input::Intent(intent));
    }

    pub fn request(&mut self) -> RequestId {
        self.next_request += 1;
        RequestId(self.next_request)
    }

    pub fn ids(&self, which: impl Fn(&WorkerRecord) -> bool) -> Vec<WorkerId> {
        self.machine
            .workers()
            .iter()
            .filter(|worker| which(worker))
            .map(|worker| worker.id)
            .collect()
    }

    /// The workers in `slot`, oldest first.
    pub fn in_slot(&self, slot: usize) -> Vec<WorkerId> {
        self.ids(|worker| worker.slot == slot)
    }

    pub fn lines(&self) -> Vec<String> {
        self.effects
            .iter()
            .filter_map(|effect| match effect {
                Effect::Log(_, line) => Some(line.clone()),
                _ => None,
            })
            .collect()
    }

    /// The admin server's lifecycle events so far, in order.
    pub fn announced(&self) -> Vec<crate::domain::LifecycleEvent> {
        self.effects
            .iter()
            .filter_map(|effect| match effect {
                Effect::Announce(event) => Some(event.clone()),
                _ => None,
            })
            .collect()
    }

    pub fn logged(&self, part: &str) -> bool {
        self.lines().iter().any(|line| line.contains(part))
    }

    pub fn answers(&self, request: RequestId) -> Vec<Update> {
        self.effects
            .iter()
            .filter_map(|effect| match effect {
                Effect::Reply {
                    request: to,
                    answer,
                } if *to == request => Some(answer.clone()),
                _ => None,
            })
            .collect()
    }

    /// The final answers `request` got: `(ok, message)`.
    pub fn results(&self, request: RequestId) -> Vec<(bool, String)> {
        self.answers(request)
            .into_iter()
            .filter_map(|answer| match answer {
                Update::Done { ok, message } => Some((ok, message)),
                Update::Progress { message: _ } => None,
            })
            .collect()
    }

    pub fn spawns(&self) -> Vec<(usize, u64)> {
        self.effects
            .iter()
            .filter_map(|effect| match effect {
                Effect::Spawn(order) => Some((order.slot, order.spec.generation)),
                _ => None,
            })
            .collect()
    }

    /// The signals sent to worker `id`, a request to stop as the stop signal.
    pub fn signals_to(&self, id: WorkerId) -> Vec<Signal> {
        let signals = self.signals().into_iter();
        signals
            .filter(|(worker, _)| *worker == id)
            .map(|(_, signal)| signal)
            .collect()
    }
}
