//! One worker process, as the primary sees it: how it is started, watched and signalled.
//!
//! A worker is started under its *keeper* (`herdsman __exec-shim` with a control socket, see
//! `crate::shim`): the primary's child is the keeper, the worker is the keeper's child. The keeper
//! kills everything the worker started when the worker exits or the primary dies (however it
//! dies), and ends as its worker ended, so the keeper's exit status is the worker's.
//!
//! Each worker runs in its own process group (so the terminal's Ctrl-C reaches only the primary)
//! and is signalled as a group, so helpers it started (`sh -c`, `npm start`) stop with it. A
//! watch task owns the keeper: it is the only one that signals (through the keeper's control
//! socket) or reaps it, and the keeper is the only one that signals or reaps the worker, so a
//! signal can never reach a pid that was reaped and reused.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::process::Child;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::ipc::open_channel;
use super::lifecycle::{LaunchSpec, WorkerId};
use super::logs::{Logger, Stream, Tail};
use super::notify::NotifySocket;
use super::restart::ExitReason;
use super::spawn::Spawner;
use super::Event;
use crate::ipc::{self, IpcMode, PrimaryChannel};
use crate::shim::{SHIM_ARG, SHIM_CONTROL_FD_ENV, SHIM_FDS_ENV, SHIM_LISTEN_COUNT_ENV};
use crate::sys;

/// How long the watch task waits for a dead worker's output (for the crash report) and its last
/// IPC frames (reported before its exit) to drain.
/// Bounded because a process the worker left behind could hold the pipes open.
const OUTPUT_DRAIN: Duration = Duration::from_millis(250);

/// How long the primary waits for a keeper to report its worker's pid (it forks at once).
const PID_REPORT: Duration = Duration::from_secs(5);

/// How long a keeper asked to SIGKILL its worker may take to end before it is killed itself.
const KEEPER_GRACE: Duration = Duration::from_secs(2);

/// Everything a new worker process needs to know.
pub struct Launch<'a> {
    pub worker: WorkerId,
    pub slot: usize,
    pub spec: Arc<LaunchSpec>,
    pub workers: usize,
    /// The socket the worker serves on.
    pub socket: WorkerSocket,
    pub notify_path: PathBuf,
    pub name: &'a str,
    /// `HERDSMAN_STATE_URL` and `REDIS_URL`, unless shared state is off.
    pub state_url: Option<&'a str>,
    pub ipc: IpcMode,
    /// `--watchdog`: the worker gets `WATCHDOG_USEC` (and `WATCHDOG_PID`, from the shim).
    pub watchdog: Option<Duration>,
    /// This worker's `--max-requests` (with its jitter), as `HERDSMAN_MAX_REQUESTS`.
    pub max_requests: Option<u64>,
    /// The polite drain a Node worker loads (`--require` in `NODE_OPTIONS`), if written.
    pub node_drain: Option<&'a std::path::Path>,
}

/// Where a worker serves.
#[derive(Clone, Copy, Debug)]
pub enum WorkerSocket {
    /// The fd, in the primary, of the slot's socket the worker inherits (see `balance`), and
    /// the cluster's port (`$PORT`).
    Inherited { fd: RawFd, port: u16 },
    /// A loopback port of its own, which the primary's proxy relays to (`--balance proxy`):
    /// `$PORT`, with `HOST=127.0.0.1`, and no inherited socket.
    Private { port: u16 },
    /// No socket: the primary hands it connections over its channel (`--balance
    /// round-robin` or `least-conn` with `--ipc`), announced as `HERDSMAN_HANDOFF=ADDRESS`,
    /// the cluster's address (so a worker that would accept from an inherited socket cannot
    /// take connections past the balancer).
    /// With `least-conn` it reports each connection's close (`HERDSMAN_HANDOFF_CLOSES=1`);
    /// round-robin counts none, so it is spared the frame (one wake-up of the primary less per
    /// connection).
    Handoff {
        address: std::net::SocketAddr,
        report_closes: bool,
    },
}

/// A live worker process: what the executor needs to signal it, talk to it and report on it.
/// Where it is in its life is the lifecycle's ([`super::lifecycle::WorkerRecord`]).
pub struct Process {
    pub pid: u32,
    /// Its keeper's pid: the worker's parent, which adopts what the worker leaves.
    pub keeper_pid: u32,
    /// The connections it said it served (`REQUESTS=n` on its notify socket).
    pub reported_served: u64,
    /// The last `STATUS=` the worker sent on its notify socket.
    pub status: Option<String>,
    /// CPU time and when it was read, for the CPU % of the next status request.
    pub cpu_sample: Option<(Duration, std::time::Instant)>,
    /// The worker's IPC channel, with `--ipc`, until it closes.
    pub ipc: Option<PrimaryChannel>,
    /// A Node worker that asked for a socket by address: it is stopped with `disconnect`.
    pub stops_by_disconnect: bool,
    /// It was sent Node's `disconnect` (once).
    pub disconnecting: bool,
    /// Whether it takes the connections of the cluster's port, so that a connection left in
    /// its queue says it does not accept: every worker but a Node one, which does once it
    /// asks for the cluster's socket (`listen($PORT)`, `listen(0)`, fd 3), not when it listens
    /// only on a port of its own choosing.
    pub serves_cluster_port: bool,
    signals: mpsc::UnboundedSender<Signal>,
    _notify: NotifySocket,
}

impl Process {
    /// Starts a worker: the exec shim, told which fd to move to 3, execs the command.
    pub async fn start(
        launch: Launch<'_>,
        spawner: &Spawner,
        logger: &Logger,
        events: mpsc::UnboundedSender<Event>,
    ) -> io::Result<Process> {
        let notify = NotifySocket::bind(launch.notify_path.clone(), launch.worker, events.clone())?;
        let serves_cluster_port = launch.ipc != IpcMode::Node;
        let channel = match launch.ipc.dialect() {
            None => None,
            Some(dialect) => Some(open_channel(launch.worker, dialect, events.clone())?),
        };
        let (mut inherited, port) = match launch.socket {
            WorkerSocket::Inherited { fd, port } => (vec![fd], port),
            WorkerSocket::Private { port } => (Vec::new(), port),
            WorkerSocket::Handoff { address, .. } => (Vec::new(), address.port()),
        };
        let listen_count = inherited.len();
        // The channel follows the listening socket, if any, from fd 3 on.
        let ipc_fd = (ipc::WORKER_FD - 1 + listen_count as i32).to_string();
        inherited.extend(channel.as_ref().map(|(_, theirs, _)| theirs.as_raw_fd()));
        // Only the primary holds `keeper_control` (close-on-exec): the keeper reads end of file
        // on its end when the primary is gone.
        let (keeper_control, keeper_end) = std::os::unix::net::UnixStream::pair()?;
        let shim_fds = inherited
            .iter()
            .map(|fd| fd.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let mut command = Command::new("/proc/self/exe");
        command
            .arg0("herdsman")
            .arg(SHIM_ARG)
            .arg("--")
            .args(&launch.spec.command)
            // The app's own variables first, so that herdsman's below always win.
            .envs(launch.spec.env.iter().map(|(name, value)| (name, value)))
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .env(SHIM_FDS_ENV, shim_fds)
            .env(SHIM_CONTROL_FD_ENV, keeper_end.as_raw_fd().to_string())
            .env(SHIM_LISTEN_COUNT_ENV, listen_count.to_string())
            .env("PORT", port.to_string())
            .env("HERDSMAN_NAME", launch.name)
            .env("HERDSMAN_WORKER_ID", launch.slot.to_string())
            .env("HERDSMAN_WORKER_COUNT", launch.workers.to_string())
            .env("HERDSMAN_GENERATION", launch.spec.generation.to_string())
            .env("NOTIFY_SOCKET", notify.path())
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .envs(launch.watchdog.map(|watchdog| {
                let usec = watchdog.as_micros().to_string();
                ("WATCHDOG_USEC", usec)
            }))
            .env_remove("HERDSMAN_MAX_REQUESTS")
            .envs(
                launch
                    .max_requests
                    .map(|limit| ("HERDSMAN_MAX_REQUESTS", limit.to_string())),
            )
            .envs(
                launch
                    .state_url
                    .into_iter()
                    .flat_map(|url| [("HERDSMAN_STATE_URL", url), ("REDIS_URL", url)]),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        match launch.socket {
            WorkerSocket::Inherited { .. } => command.env("LISTEN_FDNAMES", "herdsman"),
            WorkerSocket::Private { .. } => command.env("HOST", "127.0.0.1"),
            WorkerSocket::Handoff {
                address,
                report_closes,
            } => {
                if report_closes {
                    command.env(crate::worker::HANDOFF_CLOSES_ENV, "1");
                }
                command.env(crate::worker::HANDOFF_ENV, address.to_string())
            }
        };
        match launch.ipc {
            IpcMode::Off => {}
            IpcMode::On => {
                command.env("HERDSMAN_IPC_FD", &ipc_fd);
            }
            IpcMode::Node => {
                command
                    .env("NODE_CHANNEL_FD", &ipc_fd)
                    .env("NODE_CHANNEL_SERIALIZATION_MODE", "json");
                // NODE_UNIQUE_ID makes Node's `cluster` module run its worker half (see `node`),
                // which Node sets up only for a script: with `-e` its listen() would wait for
                // ever on a reply nothing receives.
                if runs_a_script(&launch.spec.command) {
                    command.env("NODE_UNIQUE_ID", launch.slot.to_string());
                }
                if let Some(drain) = launch.node_drain {
                    let app_options = launch
                        .spec
                        .env
                        .iter()
                        .rev()
                        .find(|(name, _)| name == "NODE_OPTIONS")
                        .map(|(_, value)| value.clone().into())
                        .or_else(|| std::env::var_os("NODE_OPTIONS"));
                    command.env(
                        "NODE_OPTIONS",
                        super::node::options_with_drain(drain, app_options.as_deref()),
                    );
                }
            }
        }
        inherited.push(keeper_end.as_raw_fd());
        // No PR_SET_PDEATHSIG for the keeper: it must outlive the primary long enough to kill
        // the worker's whole tree; it learns of the primary's death from its control socket.
        sys::arm_child(&mut command, None, inherited);
        let spawned = spawner.spawn(command).await;
        // The keeper has its copies of its ends (or failed to start); ours go.
        drop(keeper_end);
        let (ipc, ipc_reader) = match channel {
            Some((channel, _theirs, reader)) => (Some(channel), Some(reader)),
            None => (None, None),
        };
        let mut child = spawned?;
        let keeper_pid = child
            .id()
            .ok_or_else(|| io::Error::other("the worker exited at once"))?;
        keeper_control.set_nonblocking(true)?;
        let mut control = tokio::io::BufReader::new(UnixStream::from_std(keeper_control)?);
        // A keeper that fails before forking says why on stderr and exits: its exit is then
        // the worker's, reported under the keeper's pid.
        let pid = worker_pid(&mut control).await.unwrap_or(keeper_pid);
        let control = control.into_inner();

        let tail = Tail::default();
        let outputs = [
            ipc_reader,
            child
                .stdout
                .take()
                .map(|out| logger.forward(out, launch.slot, pid, Stream::Stdout, None)),
            child.stderr.take().map(|err| {
                logger.forward(err, launch.slot, pid, Stream::Stderr, Some(tail.clone()))
            }),
        ];
        let (signals, signal_rx) = mpsc::unbounded_channel();
        let started = spawner.started();
        tokio::spawn(async move {
            watch(
                child,
                control,
                launch.worker,
                signal_rx,
                outputs,
                tail,
                events,
            )
            .await;
            started.forget(keeper_pid);
        });
        Ok(Process {
            pid,
            keeper_pid,
            reported_served: 0,
            status: None,
            cpu_sample: None,
            ipc,
            stops_by_disconnect: false,
            disconnecting: false,
            serves_cluster_port,
            signals,
            _notify: notify,
        })
    }

    /// Sends `signal` to the worker's process group (ignored once it has exited).
    pub fn signal(&self, signal: Signal) {
        let _ = self.signals.send(signal);
    }
}

/// Whether a Node command runs a script file rather than code given with `-e`/`-p` (Node
/// starts its cluster worker only for `process.argv[1]`).
fn runs_a_script(command: &[std::ffi::OsString]) -> bool {
    !command
        .iter()
        .skip(1)
        .any(|arg| matches!(arg.to_str(), Some("-e" | "--eval" | "-p" | "--print")))
}

/// The worker's pid, as its keeper reports it (`PID\n`); `None` if the keeper ended first.
async fn worker_pid(control: &mut tokio::io::BufReader<UnixStream>) -> Option<u32> {
    let mut line = String::new();
    match tokio::time::timeout(PID_REPORT, control.read_line(&mut line)).await {
        Ok(Ok(_)) => line.trim().parse().ok(),
        _ => None,
    }
}

async fn watch(
    mut child: Child,
    mut control: UnixStream,
    worker: WorkerId,
    mut signals: mpsc::UnboundedReceiver<Signal>,
    outputs: [Option<JoinHandle<()>>; 3],
    tail: Tail,
    events: mpsc::UnboundedSender<Event>,
) {
    // Set once a SIGKILL was asked for: the keeper itself is killed if it has not ended by then.
    let mut keeper_deadline: Option<Instant> = None;
    let status = loop {
        let overdue = async {
            match keeper_deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            status = child.wait() => break status,
            Some(signal) = signals.recv() => {
                // One byte, the signal's number; the keeper sends it to the worker's group.
                // A keeper already gone has nothing left to signal.
                let byte = [signal as i32 as u8];
                let _ = tokio::time::timeout(KEEPER_GRACE, control.write_all(&byte)).await;
                if signal == Signal::SIGKILL && keeper_deadline.is_none() {
                    keeper_deadline = Some(Instant::now() + KEEPER_GRACE);
                }
            }
            () = overdue => {
                // A keeper that does not act on SIGKILL (stopped, stuck): the kernel's
                // PR_SET_PDEATHSIG then kills its worker.
                let _ = child.start_kill();
                keeper_deadline = None;
            }
        }
    };
    // The keeper ends only once the worker and everything it started are gone (no orphans).
    drop(control);
    let drained = async {
        for output in outputs.into_iter().flatten() {
            let _ = output.await;
        }
    };
    let _ = tokio::time::timeout(OUTPUT_DRAIN, drained).await;
    let reason = status.map_or(ExitReason::Unknown, ExitReason::from);
    let _ = events.send(Event::Exited {
        worker,
        reason,
        tail: tail.lines(),
    });
}
