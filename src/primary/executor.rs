//! The executor: performs what the lifecycle decides, and hands it what happens.
//!
//! It owns everything the lifecycle ([`Machine`]) must not touch: the listening sockets, the
//! spawner and every worker's [`Process`], the timers, the clients waiting for answers, the
//! logger, the library's event handler and the service manager. Its loop waits on worker
//! events, intents and timers, one at a time; each becomes an [`Input`] for
//! [`Machine::handle`], whose [`Effect`]s it performs in order. An effect that has an answer
//! (a spawn's pid, a re-read configuration) is answered before the next effect, depth first,
//! so the machine sees the outcome before anything else happens.
//!
//! Besides, it does the work that only reads the lifecycle: `status`, the messages between
//! workers (`ipc`), the rescue of stranded connections (`rescue`) and the watch on the port
//! (`port_watch`).

use std::collections::HashMap;

use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;

use super::lifecycle::{
    self, Effect, Facts, Input, Machine, RequestId, Timer, WorkerId, WorkerOrder,
};
use super::logs::{Level, Logger};
use super::notify::{Notice, ServiceManager};
use super::process::{Launch, Process, WorkerSocket};
use super::report::workers;
use super::spawn::Spawner;
use super::timers::{Due, Timers};
use super::{ConfigReader, Event, Intent, Progress, SharedState, StartupFailed, WorkerAction};
use crate::balance::Listeners;
use crate::config::Config;
use crate::domain::ClusterEvent;
use crate::domain::{ClusterPhase, LifecycleEvent, Update};
use crate::runtime_dir::PrimaryDir;

pub(super) struct Executor {
    pub machine: Machine,
    pub listeners: Listeners,
    pub logger: Logger,
    spawner: Spawner,
    dir: PrimaryDir,
    /// The processes of the lifecycle's workers, from their spawn to their exit.
    pub processes: HashMap<WorkerId, Process>,
    pub timers: Timers,
    /// Where the answers to waiting requests go.
    requests: HashMap<RequestId, Progress>,
    next_request: u64,
    events: mpsc::UnboundedSender<Event>,
    reread: Option<ConfigReader>,
    pub shared_state: SharedState,
    /// Where lifecycle events go (the library's `Cluster::on_event`).
    pub observer: Option<mpsc::UnboundedSender<ClusterEvent>>,
    /// Where the admin server's event stream follows the lifecycle.
    lifecycle: broadcast::Sender<LifecycleEvent>,
    /// systemd (or another manager) waiting for the primary's `READY=1`, if any.
    service_manager: Option<ServiceManager>,
    /// Connections stranded on sockets no worker holds, relayed to ready workers.
    pub rescue: super::rescue::Rescue,
    pub(super) phase: watch::Sender<ClusterPhase>,
    /// Sockets on addresses Node workers asked for besides the cluster's (`node`).
    pub node_sockets: Vec<(std::net::SocketAddr, socket2::Socket)>,
    /// The polite drain every Node worker loads (`node::write_drain`), once written.
    node_drain: Option<std::path::PathBuf>,
    /// With `--balance round-robin`: the primary's accepting and handing (`node`).
    pub round_robin: Option<super::handoff::RoundRobinPort>,
    /// With `--balance proxy`: the proxy, and each worker's private port (`proxied`).
    pub proxy: Option<crate::proxy::Proxy>,
    pub private_ports: HashMap<WorkerId, u16>,
    /// With the proxy: the socket a Node worker's `listen($PORT)` was given, on its private
    /// port on loopback; its alone, closed with it (`node`).
    pub private_sockets: HashMap<WorkerId, socket2::Socket>,
    /// Whether connections were seen waiting on the cluster's port with no worker taking it
    /// (Node workers that listen elsewhere): said once.
    told_port_unserved: bool,
}

/// What the executor starts with, besides the configuration.
pub(super) struct Parts {
    pub listeners: Listeners,
    pub logger: Logger,
    pub spawner: Spawner,
    pub dir: PrimaryDir,
    pub reread: Option<ConfigReader>,
    pub shared_state: SharedState,
    pub observer: Option<mpsc::UnboundedSender<ClusterEvent>>,
    pub lifecycle: broadcast::Sender<LifecycleEvent>,
    pub phase: watch::Sender<ClusterPhase>,
}

fn now() -> std::time::Instant {
    Instant::now().into_std()
}

impl Executor {
    pub fn new(config: Config, parts: Parts) -> (Self, mpsc::UnboundedReceiver<Event>) {
        let (events, events_rx) = mpsc::unbounded_channel();
        let facts = Facts {
            steerable: parts.listeners.steerable(),
            port: parts.listeners.local_addr().port(),
            rereads: parts.reread.is_some(),
            wall_at_start: std::time::SystemTime::now(),
            seed: std::hash::BuildHasher::hash_one(
                &std::collections::hash_map::RandomState::new(),
                std::process::id(),
            ),
        };
        let executor = Executor {
            machine: Machine::new(config, facts, now()),
            listeners: parts.listeners,
            logger: parts.logger,
            spawner: parts.spawner,
            dir: parts.dir,
            processes: HashMap::new(),
            timers: Timers::default(),
            requests: HashMap::new(),
            next_request: 1,
            events,
            reread: parts.reread,
            shared_state: parts.shared_state,
            observer: parts.observer,
            lifecycle: parts.lifecycle,
            service_manager: ServiceManager::from_env(),
            rescue: Default::default(),
            phase: parts.phase,
            node_sockets: Vec::new(),
            node_drain: None,
            round_robin: None,
            proxy: None,
            private_ports: HashMap::new(),
            private_sockets: HashMap::new(),
            told_port_unserved: false,
        };
        (executor, events_rx)
    }

    /// Runs the cluster until it has stopped: every worker exited after a stop, or start-up
    /// failed.
    pub async fn run(
        mut self,
        mut events: mpsc::UnboundedReceiver<Event>,
        mut intents: mpsc::UnboundedReceiver<Intent>,
    ) -> Result<(), StartupFailed> {
        let config = self.machine.config();
        let name = config.name.clone();
        self.logger.info(format!(
            "listening on {} ({}, balance {})",
            self.listeners.local_addr(),
            workers(config.workers),
            config.balance,
        ));
        self.logger.info(format!(
            "control: herdsman status {name} (also reload, scale, logs, stop)"
        ));
        if let Some(announcement) = &self.shared_state.announcement {
            self.logger.info(announcement.clone());
        }
        if let Some(announcement) = self.machine.ready_mode_announcement() {
            self.logger.info(announcement);
        }
        self.round_robin = super::handoff::RoundRobinPort::open(&self.listeners, config)
            .map_err(|error| StartupFailed(format!("cannot accept for round-robin: {error}")))?;
        self.proxy = self.start_proxy()?;
        self.node_drain = super::node::write_drain(self.dir.path(), &self.logger);
        self.feed(Input::Start).await;
        self.watch_port_group();
        while !self.machine.is_finished() {
            tokio::select! {
                // In this order: what workers said (a handed connection's answer among it)
                // before new connections are accepted, so that a pick counts what is known.
                biased;
                Some(event) = events.recv() => self.on_event(event).await,
                Some(intent) = intents.recv() => self.on_intent(intent).await,
                due = self.timers.next() => self.on_due(due).await,
                accepted = super::handoff::accept(self.round_robin.as_ref()) => {
                    self.on_connections(accepted);
                }
            }
        }
        // Answered by now; a client still waiting hears that the primary is gone.
        self.requests.clear();
        match self.machine.failure() {
            Some(report) => Err(StartupFailed(report.to_string())),
            None => {
                self.logger.info("stopped");
                Ok(())
            }
        }
    }

    /// Hands `input` to the machine and performs its effects, answering those that have an
    /// answer before the next one.
    pub async fn feed(&mut self, input: Input) {
        let mut stack = vec![self.machine.handle(now(), input).into_iter()];
        while let Some(effects) = stack.last_mut() {
            let Some(effect) = effects.next() else {
                stack.pop();
                continue;
            };
            if let Some(answer) = self.perform(effect).await {
                stack.push(self.machine.handle(now(), answer).into_iter());
            }
        }
        let phase = self.machine.phase();
        self.phase.send_if_modified(|published| {
            let changed = *published != phase;
            *published = phase;
            changed
        });
    }

    /// Performs one effect; what came of it, when the machine waits to know.
    async fn perform(&mut self, effect: Effect) -> Option<Input> {
        match effect {
            Effect::Spawn(order) => Some(self.spawn(order).await),
            Effect::Stop { worker } => {
                self.stop_process(worker);
                None
            }
            Effect::Signal { worker, signal } => {
                if let Some(process) = self.processes.get(&worker) {
                    process.signal(signal);
                }
                None
            }
            Effect::Steer(targets) => {
                // Who serves changed: waiting connections may have a worker now.
                self.hand_connections();
                self.route_proxy();
                self.steer(&targets)
            }
            Effect::CloseListeners => {
                self.listeners.close();
                if let Some(port) = &mut self.round_robin {
                    port.close();
                }
                if let Some(proxy) = &self.proxy {
                    proxy.close();
                }
                None
            }
            Effect::Schedule { timer, after } => {
                self.timers.schedule(Due::Lifecycle(timer), after);
                None
            }
            Effect::AddSlots(count) => {
                let added = self.listeners.ensure_slots(count);
                Some(Input::SlotsAdded(added))
            }
            // Asked for only when there is a reader (`Facts::rereads`).
            Effect::ReadConfig => self
                .reread
                .as_ref()
                .map(|reread| Input::ConfigRead(reread().map(Box::new))),
            Effect::Reply { request, answer } => {
                let last = matches!(answer, Update::Done { .. });
                if let Some(progress) = self.requests.get(&request) {
                    let _ = progress.send(answer);
                }
                if last {
                    self.requests.remove(&request);
                }
                None
            }
            Effect::Log(level, line) => {
                match level {
                    Level::Info => self.logger.info(line),
                    Level::Warn => self.logger.warn(line),
                    Level::Error => self.logger.error(line),
                }
                None
            }
            Effect::Observe(event) => {
                self.observe(event);
                None
            }
            Effect::Announce(event) => {
                // Nobody may be following: that is fine.
                let _ = self.lifecycle.send(event);
                None
            }
            Effect::NotifyManager(state) => {
                if let Some(manager) = &self.service_manager {
                    manager.notify(&state);
                }
                None
            }
        }
    }

    /// Points new connections at `targets`, and watches the sockets no worker holds for a
    /// while. The first failure is said, and is the machine's to know.
    pub fn steer(&mut self, targets: &[(usize, crate::balance::Side)]) -> Option<Input> {
        let failed = self.listeners.steer(targets).err();
        self.watch_for_stranded();
        // Said once: the machine knows it from then on (`Input::SteeringFailed`).
        let error = failed.filter(|_| !self.machine.steering_failed())?;
        self.logger.warn(format!(
            "cannot steer connections to ready workers ({error}); the kernel spreads them over \
             every slot, so a slot without a ready worker holds some until it has one"
        ));
        Some(Input::SteeringFailed)
    }

    async fn spawn(&mut self, order: lifecycle::Spawn) -> Input {
        let worker = order.worker;
        // Closed: the cluster is stopping, and no worker starts any more.
        let Some(listen_fd) = self.listeners.fd_for(order.slot, order.side) else {
            let error = "the listening sockets are closed".to_string();
            return Input::SpawnFailed { worker, error };
        };
        let socket = match self.proxy {
            Some(_) => match self.private_port(worker) {
                Ok(port) => WorkerSocket::Private { port },
                Err(error) => {
                    let error = format!("cannot find a free loopback port for it: {error}");
                    return Input::SpawnFailed { worker, error };
                }
            },
            None if self.machine.config().balance.is_handoff()
                && self.machine.config().ipc == crate::ipc::IpcMode::On =>
            {
                WorkerSocket::Handoff {
                    address: self.listeners.local_addr(),
                    report_closes: self.machine.config().balance
                        == crate::config::Balance::LeastConn,
                }
            }
            None => WorkerSocket::Inherited {
                fd: listen_fd,
                port: self.listeners.local_addr().port(),
            },
        };
        let config = self.machine.config();
        let launch = Launch {
            worker,
            slot: order.slot,
            spec: order.spec,
            workers: order.workers,
            socket,
            notify_path: self.dir.path().join(format!("notify-{}", worker.0)),
            name: &config.name,
            state_url: self.shared_state.url.as_deref(),
            ipc: config.ipc,
            watchdog: config.watchdog,
            max_requests: self.machine.request_limit(worker),
            node_drain: self.node_drain.as_deref(),
        };
        let started = Process::start(launch, &self.spawner, &self.logger, self.events.clone());
        match started.await {
            Ok(process) => {
                let pid = process.pid;
                self.processes.insert(worker, process);
                self.probe_private_port(worker);
                self.handoff_spawned(worker);
                Input::Spawned { worker, pid }
            }
            Err(error) => Input::SpawnFailed {
                worker,
                error: error.to_string(),
            },
        }
    }

    /// Where the tasks that watch workers send what they see.
    pub fn events(&self) -> mpsc::UnboundedSender<Event> {
        self.events.clone()
    }

    /// Reports a lifecycle event to the library's handler, if there is one.
    pub fn observe(&self, event: ClusterEvent) {
        if let Some(observer) = &self.observer {
            let _ = observer.send(event);
        }
    }

    async fn on_event(&mut self, event: Event) {
        match event {
            Event::Notified {
                worker,
                notice: Notice::Ready,
            } => self.feed(Input::ReadySignal { worker }).await,
            Event::Notified {
                worker,
                notice: Notice::Accepting,
            } => self.feed(Input::PortAccepting { worker }).await,
            Event::Notified {
                worker,
                notice: Notice::Status(status),
            } => {
                if let Some(process) = self.processes.get_mut(&worker) {
                    process.status = Some(status);
                }
            }
            Event::Notified {
                worker,
                notice: Notice::Watchdog,
            } => self.feed(Input::Heartbeat { worker }).await,
            Event::Notified {
                worker,
                notice: Notice::Requests(count),
            } => {
                if let Some(process) = self.processes.get_mut(&worker) {
                    process.reported_served = count;
                }
                // The report that reaches the limit is acted on now, not at the next poll (by
                // when a later report may have raised the count the replacement names).
                if self
                    .machine
                    .request_limit(worker)
                    .is_some_and(|limit| count >= limit)
                {
                    let sample = self.served_sample();
                    self.feed(Input::ServedSample(sample)).await;
                }
            }
            Event::Notified { .. } => {}
            Event::Exited {
                worker,
                reason,
                tail,
            } => {
                self.processes.remove(&worker);
                self.timers.cancel_worker(worker);
                self.round_robin_gone(worker);
                self.private_ports.remove(&worker);
                self.private_sockets.remove(&worker);
                if let Some(proxy) = &self.proxy {
                    proxy.forget(worker.0);
                }
                self.feed(Input::Exited {
                    worker,
                    reason,
                    tail,
                })
                .await;
            }
            Event::Ipc { worker, frame } => self.on_ipc(worker, frame).await,
            Event::IpcClosed { worker, reason } => self.on_ipc_closed(worker, reason),
        }
    }

    /// A request that waits for an answer gets a number; its answers go to `progress`.
    fn register(&mut self, progress: Option<Progress>) -> Option<RequestId> {
        let progress = progress?;
        let request = RequestId(self.next_request);
        self.next_request += 1;
        self.requests.insert(request, progress);
        Some(request)
    }

    async fn on_intent(&mut self, intent: Intent) {
        let intent = match intent {
            Intent::Stop { fast } => lifecycle::Intent::Stop { fast },
            Intent::Reload { parallel, progress } => {
                self.logger.reopen_files();
                lifecycle::Intent::Reload {
                    parallel,
                    request: self.register(progress),
                }
            }
            Intent::Restart { slot, progress } => lifecycle::Intent::Restart {
                slot,
                request: self.register(progress),
            },
            Intent::Scale { target, progress } => lifecycle::Intent::Scale {
                target,
                request: self.register(progress),
            },
            Intent::Status(reply) => {
                let _ = reply.send(self.status());
                return;
            }
            Intent::Send { to, data, reply } => {
                let delivered = self.send_message(&to, &data, None, None);
                let _ = reply.send(delivered);
                return;
            }
            Intent::Worker {
                slot,
                pid,
                action: WorkerAction::Send(data),
            } => {
                self.send_to_worker(slot, pid, &data);
                return;
            }
            Intent::Worker { slot, pid, action } => lifecycle::Intent::Worker {
                slot,
                pid,
                order: match action {
                    WorkerAction::Kill => WorkerOrder::Kill,
                    _ => WorkerOrder::Disconnect,
                },
            },
        };
        self.feed(Input::Intent(intent)).await;
    }

    /// The accept queues of the serving workers that take the cluster's port: each one's own
    /// with reuseport, the one shared queue otherwise. A connection waiting where no worker
    /// takes the port (Node workers that listen on ports of their own) is said once, since
    /// nobody will take it.
    fn accept_sample(&mut self) -> (Vec<(WorkerId, u32)>, Option<u32>) {
        let serving: Vec<(&lifecycle::WorkerRecord, bool)> = self
            .machine
            .workers()
            .iter()
            .filter(|worker| worker.is_serving())
            .map(|worker| {
                let takes = self
                    .processes
                    .get(&worker.id)
                    .is_some_and(|process| process.serves_cluster_port);
                (worker, takes)
            })
            .collect();
        let (sample, unserved) = match self.listeners.steerable() {
            true => {
                let queue = |worker: &lifecycle::WorkerRecord| {
                    self.listeners.queued(worker.slot, worker.side).unwrap_or(0)
                };
                let unserved = serving
                    .iter()
                    .any(|&(worker, takes)| !takes && queue(worker) > 0);
                let queued = serving
                    .iter()
                    .filter(|(_, takes)| *takes)
                    .map(|&(worker, _)| (worker.id, queue(worker)))
                    .collect();
                ((queued, None), unserved)
            }
            false => {
                let shared = self.listeners.shared_queued();
                match serving.iter().any(|(_, takes)| *takes) {
                    true => ((Vec::new(), shared), false),
                    false => (
                        (Vec::new(), None),
                        !serving.is_empty() && shared.is_some_and(|queued| queued > 0),
                    ),
                }
            }
        };
        if unserved && !self.told_port_unserved {
            self.told_port_unserved = true;
            let elsewhere: Vec<String> = self
                .node_sockets
                .iter()
                .map(|(address, _)| address.to_string())
                .collect();
            let listen = match elsewhere.is_empty() {
                true => "listen on no port yet".to_string(),
                false => format!("listen on {} instead", elsewhere.join(", ")),
            };
            self.logger.warn(format!(
                "connections wait on {}, the cluster's --port, which no worker takes: the workers \
                 {listen}; they wait until their clients give up\nhint: give --port the port the \
                 app listens on, or have the app listen on $PORT",
                self.listeners.local_addr()
            ));
        }
        sample
    }

    async fn on_due(&mut self, due: Due) {
        match due {
            Due::Lifecycle(Timer::Retire(worker)) => {
                let Some(record) = self.machine.worker(worker) else {
                    return;
                };
                let queued = match &self.proxy {
                    // Its connections from the proxy: requests in flight, and kept ones
                    // until their clients' next request moves them on.
                    Some(proxy) => proxy.open_connections(worker.0) as u32,
                    None => self.listeners.queued(record.slot, record.side).unwrap_or(0),
                };
                self.feed(Input::RetireCheck { worker, queued }).await;
            }
            Due::Lifecycle(Timer::AcceptCheck) => {
                let (queued, shared) = self.accept_sample();
                self.feed(Input::AcceptSample { queued, shared }).await;
            }
            Due::Lifecycle(Timer::MemoryCheck) => {
                let sample = self.memory_sample();
                self.feed(Input::MemorySample(sample)).await;
            }
            Due::Lifecycle(Timer::ServedCheck) => {
                let sample = self.served_sample();
                self.feed(Input::ServedSample(sample)).await;
            }
            Due::Lifecycle(timer) => self.feed(Input::Timer(timer)).await,
            Due::RescueSweep => self.sweep_stranded(),
            Due::PortGroupCheck => self.check_port_group().await,
            Due::RoundRobin => self.round_robin_due(),
            Due::RoundRobinAccept => self.resume_accepting(),
        }
    }
}
