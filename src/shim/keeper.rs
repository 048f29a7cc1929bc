//! The worker keeper: a tiny parent between the primary and each worker, so that nothing a
//! worker starts can outlive the primary.
//!
//! `PR_SET_PDEATHSIG` only reaches the worker itself: a helper it forks (`sh -c 'helper & exec
//! server'`) or a daemon that double-forks and calls `setsid` is reparented to pid 1 when the
//! primary dies, and keeps the listening socket (fd 3) open, so connections hang instead of
//! being refused. The keeper closes that gap:
//!
//! - it is a child subreaper (`PR_SET_CHILD_SUBREAPER`), so every descendant of the worker that
//!   loses its parent (whatever its process group or session) is reparented to the keeper, which
//!   reaps it: no zombie ever reaches the primary or pid 1;
//! - it watches its control socket (a socketpair whose other end only the primary holds): end of
//!   file means the primary is gone, *however* it died (SIGKILL included, and whichever of its
//!   threads forked the keeper), and the keeper then kills the worker's process group and every
//!   descendant left, and exits;
//! - when the worker exits, the keeper kills whatever the worker left (its group and every
//!   descendant), then ends the way the worker ended (the same exit code, or the same signal),
//!   so the primary's report ("was killed by SIGSEGV") stays true;
//! - signals from the primary arrive as bytes on the control socket (one byte, the signal's
//!   number) and go to the worker's process group; the keeper never hands the primary a pid that
//!   it has reaped, so a signal cannot reach a reused pid;
//! - the worker is the plain exec shim started again (`__exec-shim` without the control
//!   socket), so `LISTEN_PID` is the worker's own pid, which the keeper reports to the primary
//!   (`PID\n`) for status, logs and the library's handles.
//!
//! The worker gets `PR_SET_PDEATHSIG=SIGKILL` from the keeper, so it dies even if the keeper is
//! killed outright. Hand-written on `nix` (signalfd, poll, waitid) because no maintained crate
//! provides a subreaper-and-forward loop as a library; it is the job tini and dumb-init do.

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, killpg, sigprocmask, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::{SHIM_ARG, SHIM_CONTROL_FD_ENV};
use crate::sys;

/// Signals the keeper takes itself, instead of dying of them: forwarded to the worker's group
/// (someone signalled the keeper's pid), and SIGCHLD, which means a child to reap.
const FORWARDED: [Signal; 7] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

/// How often the keeper looks at its children even without a SIGCHLD (a signal could go to
/// another thread when the keeper is a library program that started threads before
/// `Cluster::run`).
const TICK: Duration = Duration::from_millis(500);

/// How long the keeper waits for its descendants to die when it cannot list them (no /proc):
/// their process group was killed; anything else is left to pid 1.
const BLIND_CLEANUP: Duration = Duration::from_secs(1);

/// Runs `command` as the worker under this keeper; returns only on a set-up failure, with the
/// exit code to use. `fds` are the worker's inherited sockets (listed in the environment).
pub fn run(command: &[OsString], control_fd: RawFd, fds: &[RawFd]) -> i32 {
    let Some(mut control) = sys::adopt_inherited_socket(control_fd) else {
        eprintln!("herdsman: keeper: fd {control_fd} ({SHIM_CONTROL_FD_ENV}) is not a socket");
        return super::EXIT_CANNOT_EXECUTE;
    };
    match keep(command, &mut control, fds) {
        Ok(end) => end.mirror(),
        Err(error) => {
            eprintln!("herdsman: keeper: {error}");
            super::EXIT_CANNOT_EXECUTE
        }
    }
}

/// How the worker ended, or that the primary went away first.
enum End {
    Worker(WaitStatus),
    PrimaryGone,
}

impl End {
    /// Ends this process as the worker ended.
    fn mirror(self) -> ! {
        match self {
            End::Worker(WaitStatus::Exited(_, code)) => std::process::exit(code),
            End::Worker(WaitStatus::Signaled(_, signal, _)) => sys::die_by_signal(signal),
            End::Worker(_) => std::process::exit(super::EXIT_CANNOT_EXECUTE),
            End::PrimaryGone => std::process::exit(1),
        }
    }
}

fn keep(command: &[OsString], control: &mut UnixStream, fds: &[RawFd]) -> io::Result<End> {
    nix::sys::prctl::set_child_subreaper(true)?;
    let mut taken = SigSet::empty();
    taken.add(Signal::SIGCHLD);
    FORWARDED.iter().for_each(|&signal| taken.add(signal));
    // Blocked before the worker exists, so no SIGCHLD is lost; the worker's exec (std's) clears
    // the mask again.
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&taken), None)?;
    let signals = SignalFd::with_flags(&taken, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;

    let program = std::env::args_os()
        .next()
        .unwrap_or_else(|| "herdsman".into());
    let mut shim = Command::new("/proc/self/exe");
    shim.arg0(program)
        .arg(SHIM_ARG)
        .arg("--")
        .args(command)
        .env_remove(SHIM_CONTROL_FD_ENV)
        .process_group(0);
    sys::arm_child(&mut shim, Some(nix::unistd::getpid().as_raw()), Vec::new());
    let worker = shim.spawn()?;
    let worker = Pid::from_raw(worker.id() as i32);
    // The worker has its copies; the keeper's would keep the IPC channel open after it exits.
    sys::close_inherited(fds);
    // The primary may already be gone; the read below then tells.
    let _ = control.write_all(format!("{worker}\n").as_bytes());

    let mut buffer = [0u8; 64];
    loop {
        let (control_ready, signal_ready) = {
            let mut polled = [
                PollFd::new(control.as_fd(), PollFlags::POLLIN),
                PollFd::new(signals.as_fd(), PollFlags::POLLIN),
            ];
            match poll(
                &mut polled,
                PollTimeout::try_from(TICK).unwrap_or(PollTimeout::NONE),
            ) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(error) => return Err(error.into()),
            }
            let ready = |fd: &PollFd| fd.revents().is_some_and(|events| !events.is_empty());
            (ready(&polled[0]), ready(&polled[1]))
        };
        if control_ready {
            match control.read(&mut buffer) {
                Ok(0) => {
                    // The primary is gone. The worker is alive (or an unreaped zombie), so its
                    // pid still names its group.
                    let _ = killpg(worker, Signal::SIGKILL);
                    kill_descendants();
                    return Ok(End::PrimaryGone);
                }
                Ok(count) => {
                    for &number in &buffer[..count] {
                        if let Ok(signal) = Signal::try_from(i32::from(number)) {
                            let _ = killpg(worker, signal);
                        }
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    let _ = killpg(worker, Signal::SIGKILL);
                    kill_descendants();
                    return Ok(End::PrimaryGone);
                }
            }
        }
        if signal_ready {
            while let Ok(Some(info)) = signals.read_signal() {
                let number = info.ssi_signo as i32;
                if number != libc::SIGCHLD {
                    if let Ok(signal) = Signal::try_from(number) {
                        let _ = killpg(worker, signal);
                    }
                }
            }
        }
        if let Some(status) = reap_until_worker(worker) {
            // Still a zombie (peeked, not reaped): its pid names its group until reaped below.
            let _ = killpg(worker, Signal::SIGKILL);
            kill_descendants();
            return Ok(End::Worker(status));
        }
    }
}

/// Reaps every child that has exited except the worker; returns the worker's status, without
/// reaping it, once it has exited.
fn reap_until_worker(worker: Pid) -> Option<WaitStatus> {
    let peek = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    // Bounded: each round reaps one child, and a keeper has finitely many.
    for _ in 0..100_000 {
        match waitid(Id::All, peek) {
            Ok(status) => match status.pid() {
                None => return None,
                Some(pid) if pid == worker => return Some(status),
                Some(pid) => {
                    let _ = waitpid(pid, Some(WaitPidFlag::WNOHANG));
                }
            },
            Err(_) => return None,
        }
    }
    None
}

/// Kills every descendant of this process and reaps them all (the worker included). A killed
/// child's own children are reparented here (subreaper), and are found on the next round.
fn kill_descendants() {
    let started = Instant::now();
    loop {
        let children = sys::own_children();
        if let Some(children) = &children {
            for &child in children {
                let _ = kill(Pid::from_raw(child), Signal::SIGKILL);
            }
        }
        loop {
            match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => break,
                Ok(_) => {}
                Err(Errno::EINTR) => {}
                // ECHILD: nobody is left.
                Err(_) => return,
            }
        }
        if children.is_none() && started.elapsed() > BLIND_CLEANUP {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}
