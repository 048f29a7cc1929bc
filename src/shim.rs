//! The exec shim: the step between fork and the worker command.
//!
//! Socket activation wants `LISTEN_PID` to equal the pid of the process that uses the sockets
//! (libsystemd, gunicorn and puma ignore them otherwise), and the pid is only known after the
//! fork. Setting an environment variable between fork and exec in a multi-threaded primary is not
//! async-signal-safe, so the primary instead execs `herdsman __exec-shim -- COMMAND…`: this tiny
//! single-threaded step moves the listening sockets to fds 3…, sets `LISTEN_FDS` and `LISTEN_PID`
//! to its own pid, and execs COMMAND, which keeps that pid.
//!
//! Started by the primary, the shim is first the worker's *keeper* (see [`keeper`]): given a
//! control socket ([`SHIM_CONTROL_FD_ENV`]), it starts the shim again as its child, which does
//! the above, and stays as the worker's parent so that nothing the worker starts outlives the
//! primary.

mod keeper;

use std::ffi::OsString;
use std::io;
use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;

use crate::sys;

/// Names the fds (comma-separated, in the shim's fd table) to move to 3, 4, ….
pub const SHIM_FDS_ENV: &str = "HERDSMAN_SHIM_FDS";

/// How many of those fds are listening sockets (`LISTEN_FDS`); the rest (the IPC channel) are
/// passed along without being announced as sockets to accept on. Default: all of them.
pub const SHIM_LISTEN_COUNT_ENV: &str = "HERDSMAN_SHIM_LISTEN_COUNT";

/// Names the fd of the keeper's control socket (see [`keeper`]); without it the shim only execs.
pub const SHIM_CONTROL_FD_ENV: &str = "HERDSMAN_SHIM_CONTROL_FD";

/// Exit code when the command was not found, as a shell reports it.
pub const EXIT_NOT_FOUND: i32 = 127;
/// Exit code when the command was found but could not be executed.
pub const EXIT_CANNOT_EXECUTE: i32 = 126;

/// The argument that makes a process the shim: the primary starts every worker as
/// `/proc/self/exe __exec-shim -- COMMAND…`, which is `herdsman` for the CLI and the program
/// itself for the library's `Cluster`.
pub const SHIM_ARG: &str = "__exec-shim";

/// When this process was started as the shim, becomes the command (returning only the exit
/// code of a failure); `None` otherwise.
pub fn exec_if_requested() -> Option<i32> {
    let mut args = std::env::args_os().skip(1);
    if args.next()? != SHIM_ARG {
        return None;
    }
    let mut command: Vec<OsString> = args.collect();
    if command.first().is_some_and(|arg| arg == "--") {
        command.remove(0);
    }
    Some(exec(&command))
}

/// Becomes `command`; returns only on failure, with the exit code to use.
pub fn exec(command: &[OsString]) -> i32 {
    let Some((program, args)) = command.split_first() else {
        eprintln!("herdsman: __exec-shim needs a command");
        return EXIT_CANNOT_EXECUTE;
    };
    let fds = match inherited_fds() {
        Ok(fds) => fds,
        Err(error) => {
            eprintln!("herdsman: bad {SHIM_FDS_ENV}: {error}");
            return EXIT_CANNOT_EXECUTE;
        }
    };
    if let Some(control) = std::env::var_os(SHIM_CONTROL_FD_ENV) {
        let Some(control) = control.to_str().and_then(|fd| fd.parse::<RawFd>().ok()) else {
            eprintln!("herdsman: bad {SHIM_CONTROL_FD_ENV}: {control:?}");
            return EXIT_CANNOT_EXECUTE;
        };
        return keeper::run(command, control, &fds);
    }
    let mut exec = Command::new(program);
    let listen_count = std::env::var(SHIM_LISTEN_COUNT_ENV)
        .ok()
        .and_then(|count| count.parse::<usize>().ok())
        .unwrap_or(fds.len())
        .min(fds.len());
    exec.args(args)
        .env_remove(SHIM_FDS_ENV)
        .env_remove(SHIM_LISTEN_COUNT_ENV);
    if !fds.is_empty() {
        if let Err(error) = sys::move_fds_into_place(&fds) {
            eprintln!("herdsman: cannot pass the listening sockets to the worker: {error}");
            return EXIT_CANNOT_EXECUTE;
        }
        exec.env("LISTEN_FDS", listen_count.to_string())
            .env("LISTEN_PID", std::process::id().to_string());
    }
    if std::env::var_os("WATCHDOG_USEC").is_some() {
        // As systemd sets it: the process that must send WATCHDOG=1 (sd_watchdog_enabled(3)).
        exec.env("WATCHDOG_PID", std::process::id().to_string());
    }
    let error = exec.exec();
    let shown = program.to_string_lossy();
    eprintln!("herdsman: cannot execute `{shown}`: {error}");
    match error.kind() {
        io::ErrorKind::NotFound => EXIT_NOT_FOUND,
        _ => EXIT_CANNOT_EXECUTE,
    }
}

/// An item of [`SHIM_FDS_ENV`] that is not a file descriptor number.
#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not an fd number")]
struct NotAnFd(String);

fn inherited_fds() -> Result<Vec<RawFd>, NotAnFd> {
    let Some(list) = std::env::var_os(SHIM_FDS_ENV) else {
        return Ok(Vec::new());
    };
    let list = list.to_string_lossy().into_owned();
    list.split(',')
        .filter(|item| !item.is_empty())
        .map(|item| item.parse::<RawFd>().map_err(|_| NotAnFd(item.to_string())))
        .collect()
}
