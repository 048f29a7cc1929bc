//! The commands that talk to a running cluster over its control socket: `ls`, `status`,
//! `reload`, `scale`, `restart`, `stop`, `logs` (and `monit`, in its own module). Each prints for people, or JSON with `--json`,
//! and exits with a code that says how it went.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::control::client::{self, ClientError};
use crate::control::protocol::{ClusterStatus, LogLine, Reply, Request, ScaleTarget};

use super::args::{self as cli, Command};
use crate::exit::{FAILED as EXIT_FAILED, NOT_RUNNING as EXIT_NOT_RUNNING, USAGE as EXIT_USAGE};

/// `println!` for what a command prints: a reader that went away (`| head`) ends the command
/// quietly with [`crate::exit::READER_GONE`], as its pipe ends `cat`, instead of a panic.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(error) = writeln!(std::io::stdout().lock(), $($arg)*) {
            output_failed(&error);
        }
    }};
}

/// Ends the process after stdout failed: quietly when its reader is gone.
fn output_failed(error: &std::io::Error) -> ! {
    if error.kind() != std::io::ErrorKind::BrokenPipe {
        eprintln!("herdsman: error: cannot write to stdout: {error}");
        std::process::exit(i32::from(EXIT_FAILED));
    }
    std::process::exit(i32::from(crate::exit::READER_GONE))
}

/// How long `stop` waits, after the primary closed the connection, for its process to end.
const STOP_WAIT: Duration = Duration::from_secs(10);

pub fn run(command: Command) -> ExitCode {
    let result = match command {
        Command::Ls { json } => ls(json),
        Command::Status { name, json } => status(name.as_deref(), json),
        Command::Reload {
            name,
            parallel,
            json,
        } => long_request(
            name.as_deref(),
            Request::Reload {
                parallel: parallel as usize,
            },
            json,
        ),
        Command::Restart { args, json } => {
            let (name, slot) = cli::name_and_value(&args);
            match slot.parse::<usize>() {
                Ok(slot) => restart(name, slot, json),
                Err(_) => Err(usage(format!("`{slot}` is not a slot number"))),
            }
        }
        Command::Scale { args, json } => {
            let (name, target) = cli::name_and_value(&args);
            match cli::parse_scale_target(target) {
                Ok(target) => scale(name, target, json),
                Err(error) => Err(usage(error.to_string())),
            }
        }
        Command::Send { args, json } => {
            let (name, to, data) = match args.as_slice() {
                [name, to, data] => (Some(name.as_str()), to, data),
                [to, data] => (None, to, data),
                _ => unreachable!("clap takes 2 or 3 values"),
            };
            match serde_json::from_str(data) {
                Ok(data) => send(name, to, data, json),
                Err(error) => Err(usage(format!(
                    "the message `{data}` is not JSON ({error}); quote it for the shell, e.g. '{{\"reload\":true}}'"
                ))),
            }
        }
        Command::Stop { name, json } => stop(name.as_deref(), json),
        Command::Logs {
            name,
            follow,
            slot,
            lines,
            json,
        } => logs(name.as_deref(), slot, lines, follow, json),
        Command::Monit { name } => super::monit::run(name.as_deref()),
        Command::Run(_) | Command::ExecShim { .. } => unreachable!("handled in main"),
    };
    match result {
        Ok(code) => code,
        Err(Failure { code, message }) => {
            eprintln!("herdsman: error: {message}");
            ExitCode::from(code)
        }
    }
}

/// A command that failed: the exit code, and the message printed as `herdsman: error: …`.
pub(super) struct Failure {
    pub code: u8,
    pub message: String,
}

pub(super) fn usage(message: String) -> Failure {
    Failure {
        code: EXIT_USAGE,
        message,
    }
}

impl From<ClientError> for Failure {
    fn from(error: ClientError) -> Self {
        let code = match error {
            ClientError::BadReply(_) | ClientError::Io(_) => EXIT_FAILED,
            // Not a cluster that is missing: a name that is.
            ClientError::Ambiguous(_) => EXIT_USAGE,
            _ => EXIT_NOT_RUNNING,
        };
        Failure {
            code,
            message: error.to_string(),
        }
    }
}

fn fetch_status(name: &str) -> Result<ClusterStatus, Failure> {
    let mut found = None;
    let result = client::request(name, &Request::Status {}, |reply| {
        if let Reply::Status(status) = reply {
            found = Some(status.clone());
        }
    })?;
    match (found, result) {
        (Some(status), _) => Ok(*status),
        (None, Some((_, message))) => Err(Failure {
            code: EXIT_FAILED,
            message,
        }),
        (None, None) => Err(Failure {
            code: EXIT_FAILED,
            message: "no status came back".into(),
        }),
    }
}

fn ls(json: bool) -> Result<ExitCode, Failure> {
    let statuses: Vec<ClusterStatus> = client::running_clusters()
        .iter()
        .filter_map(|name| fetch_status(name).ok())
        .collect();
    if json {
        for status in &statuses {
            out!("{}", serde_json::to_string(status).unwrap_or_default());
        }
        return Ok(ExitCode::SUCCESS);
    }
    if statuses.is_empty() {
        out!("no cluster is running");
        return Ok(ExitCode::SUCCESS);
    }
    out!(
        "{:<20} {:>7}  {:<22} {:<9} {:>7}  {:>3}  {:<10}",
        "NAME",
        "PID",
        "ADDRESS",
        "STATE",
        "READY",
        "GEN",
        "UPTIME"
    );
    for status in statuses {
        let ready = status
            .slots
            .iter()
            .filter(|slot| slot.state == "ready")
            .count();
        out!(
            "{:<20} {:>7}  {:<22} {:<9} {:>7}  {:>3}  {:<10}",
            status.name,
            status.pid,
            status.address,
            shown_state(&status),
            format!("{ready}/{}", status.workers),
            status.generation,
            short_duration(status.uptime_ms),
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The cluster's state as `status` and `ls` print it: `running (degraded)` when a slot lacks a
/// ready worker.
fn shown_state(status: &ClusterStatus) -> String {
    if status.degraded {
        format!("{} (degraded)", status.state)
    } else {
        status.state.clone()
    }
}

/// `--balance` as `status` prints it, with `--sticky` and `--proxy-protocol` when they are on:
/// `proxy, sticky ip, proxy-protocol v2`.
fn shown_balance(status: &ClusterStatus) -> String {
    let mut shown = status.balance.clone();
    for (name, value) in [
        ("sticky", &status.sticky),
        ("proxy-protocol", &status.proxy_protocol),
    ] {
        if value != "off" {
            shown.push_str(&format!(", {name} {value}"));
        }
    }
    shown
}

fn status(name: Option<&str>, json: bool) -> Result<ExitCode, Failure> {
    let name = client::resolve(name)?;
    let status = fetch_status(&name)?;
    if json {
        out!(
            "{}",
            serde_json::to_string_pretty(&status).unwrap_or_default()
        );
        return Ok(ExitCode::SUCCESS);
    }
    out!(
        "{}  pid {}  {}  balance {}  {}  generation {}  reloads {}  up {}",
        status.name,
        status.pid,
        status.address,
        shown_balance(&status),
        shown_state(&status),
        status.generation,
        status.reloads,
        short_duration(status.uptime_ms)
    );
    for address in &status.also_serving {
        out!("also serving {address} (a worker's listen() asked for it)");
    }
    for foreign in &status.foreign_listeners {
        let worker = foreign
            .slot
            .map(|slot| format!(" (worker {slot} binds the port itself)"))
            .unwrap_or_default();
        out!("warning: {}{worker}", foreign.description);
    }
    out!(
        "{:>4}  {:>7}  {:>3}  {:<9} {:>8}  {:>8}  {:>6}  {:>9}  LAST EXIT",
        "SLOT",
        "PID",
        "GEN",
        "STATE",
        "UPTIME",
        "RESTARTS",
        "CPU",
        "MEMORY"
    );
    let dash = || "-".to_string();
    for row in &status.slots {
        out!(
            "{:>4}  {:>7}  {:>3}  {:<9} {:>8}  {:>8}  {:>6}  {:>9}  {}",
            row.slot,
            row.pid.map_or_else(dash, |pid| pid.to_string()),
            row.generation
                .map_or_else(dash, |generation| generation.to_string()),
            row.state,
            row.uptime_ms.map_or_else(dash, short_duration),
            row.restarts,
            row.cpu_percent
                .map_or_else(dash, |cpu| format!("{cpu:.1}%")),
            row.rss_bytes.map_or_else(dash, megabytes),
            last_event(row).unwrap_or_else(dash),
        );
    }
    if let Some(state) = &status.shared_state {
        match (state.keys, state.used_memory, state.clients) {
            (Some(keys), Some(memory), Some(clients)) => out!(
                "state: {}{}  {keys} keys  {:.1} MB  {clients} clients",
                state.url,
                state
                    .tcp
                    .as_ref()
                    .map(|tcp| format!(" and redis://{tcp}"))
                    .unwrap_or_default(),
                memory as f64 / 1_048_576.0
            ),
            _ => out!("state: {} (external)", state.url),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The LAST EXIT column: the slot's last exit or, when later, its last replacement for a
/// reason (`replaced: rss 312 MiB over --max-memory 256 MiB`). Both times are RFC 3339 in UTC
/// with milliseconds, so they compare as text.
fn last_event(row: &crate::control::protocol::SlotStatus) -> Option<String> {
    let exit = row.last_exit.as_ref();
    match &row.last_replacement {
        Some(replaced) if exit.is_none_or(|exit| exit.at <= replaced.at) => Some(format!(
            "replaced: {} (pid {}, {})",
            replaced.reason, replaced.pid, replaced.at
        )),
        _ => exit.map(|exit| format!("{} ({})", exit.reason, exit.at)),
    }
}

/// `reload`, `restart` and `scale`: print progress as it comes, exit by the result.
fn long_request(name: Option<&str>, request: Request, json: bool) -> Result<ExitCode, Failure> {
    let name = client::resolve(name)?;
    let result = client::request(&name, &request, |reply| emit(reply, json))?;
    match result {
        Some((true, _)) => Ok(ExitCode::SUCCESS),
        Some((false, message)) => Err(Failure {
            code: EXIT_FAILED,
            message,
        }),
        None => Err(Failure {
            code: EXIT_FAILED,
            message: "the primary closed the connection".into(),
        }),
    }
}

fn scale(name: Option<&str>, target: ScaleTarget, json: bool) -> Result<ExitCode, Failure> {
    let name = client::resolve(name)?;
    // Refused here as a usage error, like `scale 0`; the primary refuses it too.
    target
        .resolve(fetch_status(&name)?.workers)
        .map_err(|refused| usage(refused.to_string()))?;
    // The primary answers what it did at once, and the result once the new count serves (the
    // new slots ready, the removed ones stopped), a slot crash-loops, or it gave up waiting.
    long_request(Some(&name), Request::Scale { to: target }, json)
}

fn stop(name: Option<&str>, json: bool) -> Result<ExitCode, Failure> {
    let name = client::resolve(name)?;
    let pid = fetch_status(&name)?.pid;
    client::request(&name, &Request::Stop {}, |reply| emit(reply, json))?;
    // The connection closes as the primary exits; wait until its process is gone too.
    let deadline = Instant::now() + STOP_WAIT;
    while process_alive(pid) {
        if Instant::now() >= deadline {
            let message = format!("the primary (pid {pid}) is still running after {STOP_WAIT:?}");
            return Err(Failure {
                code: EXIT_FAILED,
                message,
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    emit(
        &Reply::Result {
            ok: true,
            message: "stopped".into(),
        },
        json,
    );
    Ok(ExitCode::SUCCESS)
}

/// Whether `pid` runs (a zombie, waiting for its parent to reap it, has exited).
fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let state = stat
            .rsplit_once(')')
            .map_or("", |(_, rest)| rest.trim_start());
        !state.starts_with('Z') && !state.starts_with('X')
    })
}

/// `restart`: a slot the cluster does not have is a usage error, as for `logs --slot`.
fn restart(name: Option<&str>, slot: usize, json: bool) -> Result<ExitCode, Failure> {
    let name = client::resolve(name)?;
    check_slot(&fetch_status(&name)?, slot)?;
    long_request(Some(&name), Request::Restart { slot }, json)
}

/// `herdsman send`: a slot the cluster does not have is a usage error, as for `restart`.
fn send(
    name: Option<&str>,
    to: &str,
    data: serde_json::Value,
    json: bool,
) -> Result<ExitCode, Failure> {
    let name = client::resolve(name)?;
    if let Ok(slot) = to.parse::<usize>() {
        check_slot(&fetch_status(&name)?, slot)?;
    }
    let to = to.to_string();
    long_request(Some(&name), Request::Send { to, data }, json)
}

/// Refuses a slot that `status` does not have, naming the ones it has.
fn check_slot(status: &ClusterStatus, slot: usize) -> Result<(), Failure> {
    status
        .missing_slot(slot)
        .map_or(Ok(()), |missing| Err(usage(missing)))
}

fn logs(
    name: Option<&str>,
    slot: Option<usize>,
    lines: usize,
    follow: bool,
    json: bool,
) -> Result<ExitCode, Failure> {
    let name = client::resolve(name)?;
    if let Some(slot) = slot {
        check_slot(&fetch_status(&name)?, slot)?;
    }
    let request = Request::Logs {
        slot,
        lines,
        follow,
    };
    let result = client::request(&name, &request, |reply| {
        if let Reply::Log(line) = reply {
            print_log_line(line, json);
        }
    })?;
    match result {
        Some((false, message)) => Err(Failure {
            code: EXIT_FAILED,
            message,
        }),
        _ => Ok(ExitCode::SUCCESS),
    }
}

fn print_log_line(line: &LogLine, json: bool) {
    if json {
        out!("{}", serde_json::to_string(line).unwrap_or_default());
        return;
    }
    match line.slot {
        Some(slot) => out!("{} [{slot}:{}] {}", line.time, line.pid, line.line),
        None => out!("{} herdsman: {}", line.time, line.line),
    }
}

/// Prints a progress or result line: as JSON, or the message for people (a failed result is
/// left to the caller, which prints it as an error).
fn emit(reply: &Reply, json: bool) {
    if json {
        out!("{}", serde_json::to_string(reply).unwrap_or_default());
        return;
    }
    match reply {
        Reply::Progress { message } | Reply::Result { ok: true, message } => out!("{message}"),
        _ => {}
    }
}

/// `31.2 MB` (MiB, to a tenth), as `status` prints memory.
pub(super) fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1_048_576.0)
}

/// `4m 1s`, rounded to the second.
pub(super) fn short_duration(millis: u64) -> String {
    humantime::format_duration(Duration::from_secs(millis / 1000)).to_string()
}
