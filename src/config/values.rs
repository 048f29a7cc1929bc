//! The types of the settings' values and their parsers, shared by every source: a flag's value
//! parser, herdsman.toml's deserializers (`file`), `HERDSMAN_*` variables, and the reload diff,
//! which shows a value as the file spells it ([`Shown`]).

use std::ffi::OsString;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde::Deserialize;

use crate::state::StateMode;

/// How workers share the listening port (`--balance`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Balance {
    /// One listening socket, inherited by every worker; the kernel wakes whichever is waiting.
    Shared,
    /// One `SO_REUSEPORT` socket per slot, all bound to the same address; the kernel hashes
    /// connections evenly across them.
    Reuseport,
    /// The primary accepts and hands each connection to the next free worker over its IPC
    /// channel (the fd as SCM_RIGHTS), as Node's primary does: Node workers and workers that
    /// speak herdsman's handoff frames (`primary::round_robin`).
    RoundRobin,
    /// As `round-robin`, each connection to the worker holding the fewest open connections
    /// (ties in turn); workers that report closes only (not Node's protocol).
    LeastConn,
    /// The primary accepts and relays bytes to each worker's private loopback `$PORT`, to the
    /// worker with the fewest open connections (ties in turn): any app, unmodified (`proxy`).
    Proxy,
    /// As `proxy`, each connection to the next worker in turn.
    ProxyRr,
}

impl Balance {
    const ALL: [Balance; 6] = [
        Balance::Shared,
        Balance::Reuseport,
        Balance::RoundRobin,
        Balance::LeastConn,
        Balance::Proxy,
        Balance::ProxyRr,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Balance::Shared => "shared",
            Balance::Reuseport => "reuseport",
            Balance::RoundRobin => "round-robin",
            Balance::LeastConn => "least-conn",
            Balance::Proxy => "proxy",
            Balance::ProxyRr => "proxy-rr",
        }
    }

    /// Whether the primary relays the bytes of every connection (`proxy`, `proxy-rr`): workers
    /// listen on a private `$PORT` of their own and inherit no socket.
    pub fn is_proxy(self) -> bool {
        matches!(self, Balance::Proxy | Balance::ProxyRr)
    }

    /// Whether the primary accepts and hands each connection's fd to a worker over its IPC
    /// channel (`round-robin`, `least-conn`).
    pub fn is_handoff(self) -> bool {
        matches!(self, Balance::RoundRobin | Balance::LeastConn)
    }
}

impl fmt::Display for Balance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `$HERDSMAN_BALANCE`.
impl FromStr for Balance {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Balance::ALL
            .into_iter()
            .find(|balance| balance.as_str() == text)
            .ok_or_else(|| {
                format!(
                    "`{text}` is not `shared`, `reuseport`, `round-robin`, `least-conn`, `proxy` or `proxy-rr`"
                )
            })
    }
}

/// Whether a client's connections all reach the same worker (`--sticky`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Sticky {
    /// Each new connection is balanced on its own.
    #[default]
    Off,
    /// By the client's IP address: the same address reaches the same worker while it lives
    /// (socket.io's polling transport, sessions kept in a worker's memory).
    Ip,
}

impl Sticky {
    pub fn as_str(self) -> &'static str {
        match self {
            Sticky::Off => "off",
            Sticky::Ip => "ip",
        }
    }
}

impl fmt::Display for Sticky {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether the proxy tells workers the client's address with HAProxy's PROXY protocol
/// (`--proxy-protocol`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum ProxyProtocol {
    /// No header: the worker sees the proxy's loopback address as its peer.
    #[default]
    Off,
    /// The text header, `PROXY TCP4 SRC DST SPORT DPORT\r\n`.
    V1,
    /// The binary header.
    V2,
}

impl ProxyProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyProtocol::Off => "off",
            ProxyProtocol::V1 => "v1",
            ProxyProtocol::V2 => "v2",
        }
    }
}

impl fmt::Display for ProxyProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// When a starting worker counts as ready (`--ready`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum ReadyMode {
    /// `--ready-delay` after the start, and after `READY=1` on `NOTIFY_SOCKET` if the command
    /// sends one.
    Delay,
    /// `READY=1` on `NOTIFY_SOCKET` only (then `--ready-delay` alive), within `--ready-timeout`.
    Notify,
}

/// How the primary writes its own and its workers' log lines (`--log-format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `[slot:pid] line`, the prefix coloured on a terminal.
    Text,
    /// One JSON object per line: `time`, `slot`, `pid`, `stream`, `line`.
    Json,
}

/// How many workers to run (`--workers N|max`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerCount {
    /// One per CPU available to this process.
    Max,
    Exactly(usize),
}

impl WorkerCount {
    pub fn resolve(self) -> usize {
        match self {
            WorkerCount::Max => std::thread::available_parallelism().map_or(1, |n| n.get()),
            WorkerCount::Exactly(n) => n,
        }
    }
}

impl FromStr for WorkerCount {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.eq_ignore_ascii_case("max") {
            return Ok(WorkerCount::Max);
        }
        match text.parse::<usize>() {
            Ok(0) => Err("the cluster needs at least 1 worker".into()),
            Ok(n) if n > MAX_WORKERS => Err(format!("at most {MAX_WORKERS} workers are supported")),
            Ok(n) => Ok(WorkerCount::Exactly(n)),
            Err(_) => Err(format!(
                "expected a number of workers or `max`, got `{text}`"
            )),
        }
    }
}

/// A sanity bound, far above any machine's core count, that stops a typo from forking 10⁶ times.
pub const MAX_WORKERS: usize = 1024;

#[cfg(feature = "cli")]
/// Parses `--workers`: a count from 1 to [`MAX_WORKERS`], or `max`.
pub fn parse_workers(text: &str) -> Result<WorkerCount, String> {
    text.parse()
}

#[cfg(feature = "cli")]
/// Parses a duration such as `500ms`, `1s`, `2m`, `1m 30s`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|_| {
        format!("`{text}` is not a duration; write a number and a unit, e.g. 500ms, 10s, 1m")
    })
}

#[cfg(feature = "cli")]
/// Parses a signal name: `TERM`, `SIGTERM`, `term` or a number such as `15`.
pub fn parse_signal(text: &str) -> Result<Signal, String> {
    if let Ok(number) = text.parse::<i32>() {
        return Signal::try_from(number).map_err(|_| format!("{number} is not a signal number"));
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    Signal::from_str(&name)
        .map_err(|_| format!("`{text}` is not a signal name; write e.g. TERM, INT, QUIT, USR1"))
}

#[cfg(feature = "cli")]
/// Parses `--max-pending`: how many handed connections a worker may leave unanswered.
pub fn parse_max_pending(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(count) if count >= 1 => Ok(count),
        _ => Err(format!(
            "`{text}` is not a number of unanswered connections per worker (1 or more; 1, the \
             default, is Node's)"
        )),
    }
}

#[cfg(feature = "cli")]
/// Parses `--state-max-clients`: a count of 1 or more.
pub fn parse_client_count(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(count) if count >= 1 => Ok(count),
        _ => Err(format!(
            "`{text}` is not a number of clients (1 or more, e.g. 10000)"
        )),
    }
}

#[cfg(feature = "cli")]
/// Parses `--state`: `embedded`, `off`, or a Redis URL (`redis://`, `rediss://`, `unix://`).
pub fn parse_state(text: &str) -> Result<StateMode, String> {
    match text {
        "embedded" | "on" => Ok(StateMode::Embedded),
        "off" | "none" => Ok(StateMode::Off),
        url if ["redis://", "rediss://", "unix://", "redis+unix://"]
            .iter()
            .any(|scheme| url.starts_with(scheme)) =>
        {
            Ok(StateMode::External(url.to_string()))
        }
        _ => Err(format!(
            "expected `embedded`, `off` or a Redis URL such as redis://127.0.0.1:6379/0, got `{text}`"
        )),
    }
}

#[cfg(feature = "cli")]
/// Parses a size as Redis writes them: `1048576`, `512kb`, `100mb`, `1gb` (powers of 1024;
/// `k`, `m`, `g` alone are powers of 1000, as in redis.conf).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let lower = text.trim().to_ascii_lowercase();
    let split = lower
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(split);
    let multiplier: u64 = match unit.trim() {
        "" | "b" => 1,
        "k" => 1000,
        "kb" | "kib" => 1 << 10,
        "m" => 1_000_000,
        "mb" | "mib" => 1 << 20,
        "g" => 1_000_000_000,
        "gb" | "gib" => 1 << 30,
        _ => {
            return Err(format!(
                "`{text}` is not a size; write e.g. 100mb, 1gb, 524288"
            ))
        }
    };
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size; write e.g. 100mb, 1gb, 524288"))?;
    number
        .checked_mul(multiplier)
        .filter(|size| *size > 0)
        .ok_or_else(|| format!("`{text}` is not a usable size (zero, or too large)"))
}

#[cfg(feature = "cli")]
/// Parses `--log-max-size`: a size as [`parse_size`] reads it.
pub fn parse_log_size(text: &str) -> Result<ByteSize, String> {
    parse_size(text).map(ByteSize)
}

#[cfg(feature = "cli")]
/// Parses `--log-keep`: how many rotated files to keep, 0 or more.
pub fn parse_keep(text: &str) -> Result<usize, String> {
    text.trim()
        .parse::<usize>()
        .map_err(|_| format!("`{text}` is not a number of files to keep (0 or more, e.g. 5)"))
}

/// A size in bytes (`--log-max-size`), shown as herdsman.toml would spell it (`10mb`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteSize(pub u64);

/// Where `--log-dir` writes, and when its files rotate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogFiles {
    /// The directory, created at start if missing; no files when `None`.
    pub dir: Option<std::path::PathBuf>,
    /// A file that would grow past this many bytes is rotated first.
    pub max_size: u64,
    /// Rotated files kept (`NAME-1.out.log.1` … `.N`); the oldest is dropped.
    pub keep: usize,
}

/// A value as the reload diff shows it: as herdsman.toml spells it (`1s`, `TERM`, `notify`).
pub trait Shown {
    fn shown(&self) -> String;
}

impl Shown for Duration {
    fn shown(&self) -> String {
        humantime::format_duration(*self).to_string()
    }
}

impl Shown for Signal {
    fn shown(&self) -> String {
        self.as_str().trim_start_matches("SIG").to_string()
    }
}

impl Shown for ReadyMode {
    fn shown(&self) -> String {
        match self {
            ReadyMode::Delay => "delay".into(),
            ReadyMode::Notify => "notify".into(),
        }
    }
}

/// A size in bytes (`--max-memory`), shown as herdsman.toml may spell it (`256mb`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Size(pub u64);

impl Shown for Size {
    fn shown(&self) -> String {
        let Size(bytes) = *self;
        match bytes {
            _ if bytes % (1 << 30) == 0 => format!("{}gb", bytes >> 30),
            _ if bytes % (1 << 20) == 0 => format!("{}mb", bytes >> 20),
            _ if bytes % (1 << 10) == 0 => format!("{}kb", bytes >> 10),
            _ => bytes.to_string(),
        }
    }
}

/// A limit that may be off: its value, or `off`.
impl<T: Shown> Shown for Option<T> {
    fn shown(&self) -> String {
        self.as_ref().map_or_else(|| "off".into(), T::shown)
    }
}

impl Shown for u64 {
    fn shown(&self) -> String {
        self.to_string()
    }
}

#[cfg(feature = "cli")]
/// Parses a count of requests (`--max-requests`, `--max-requests-jitter`).
pub fn parse_request_count(text: &str) -> Result<u64, String> {
    text.trim()
        .parse::<u64>()
        .map_err(|_| format!("`{text}` is not a number of requests; write e.g. 1000"))
}

#[cfg(feature = "cli")]
/// Parses `--watchdog`: a duration of at least 100ms.
pub fn parse_watchdog(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    match duration >= Duration::from_millis(100) {
        true => Ok(duration),
        false => Err(format!(
            "`{text}` is too short for a watchdog (workers send a heartbeat every half of it);              write at least 100ms, e.g. 10s or 30s"
        )),
    }
}

impl Shown for usize {
    fn shown(&self) -> String {
        self.to_string()
    }
}

impl Shown for u16 {
    fn shown(&self) -> String {
        self.to_string()
    }
}

impl Shown for String {
    fn shown(&self) -> String {
        self.clone()
    }
}

impl Shown for WorkerCount {
    fn shown(&self) -> String {
        match self {
            WorkerCount::Max => "max".into(),
            WorkerCount::Exactly(n) => n.to_string(),
        }
    }
}

impl Shown for Balance {
    fn shown(&self) -> String {
        self.as_str().into()
    }
}

impl Shown for Sticky {
    fn shown(&self) -> String {
        self.as_str().into()
    }
}

impl Shown for ProxyProtocol {
    fn shown(&self) -> String {
        self.as_str().into()
    }
}

impl Shown for LogFormat {
    fn shown(&self) -> String {
        match self {
            LogFormat::Text => "text".into(),
            LogFormat::Json => "json".into(),
        }
    }
}

impl Shown for StateMode {
    fn shown(&self) -> String {
        self.to_string()
    }
}

impl Shown for crate::ipc::IpcSetting {
    fn shown(&self) -> String {
        match self {
            crate::ipc::IpcSetting::Auto => "auto".into(),
            crate::ipc::IpcSetting::Off => "off".into(),
            crate::ipc::IpcSetting::On => "on".into(),
            crate::ipc::IpcSetting::Node => "node".into(),
        }
    }
}

impl Shown for crate::ipc::IpcMode {
    fn shown(&self) -> String {
        match self {
            crate::ipc::IpcMode::Off => "off".into(),
            crate::ipc::IpcMode::On => "on".into(),
            crate::ipc::IpcMode::Node => "node".into(),
        }
    }
}

impl Shown for ByteSize {
    fn shown(&self) -> String {
        let ByteSize(bytes) = *self;
        match bytes {
            _ if bytes % (1 << 30) == 0 => format!("{}gb", bytes >> 30),
            _ if bytes % (1 << 20) == 0 => format!("{}mb", bytes >> 20),
            _ if bytes % (1 << 10) == 0 => format!("{}kb", bytes >> 10),
            _ => bytes.to_string(),
        }
    }
}

/// `[env]`: the names of the variables, never their values.
impl Shown for std::collections::BTreeMap<String, String> {
    fn shown(&self) -> String {
        self.keys().cloned().collect::<Vec<_>>().join(" ")
    }
}

/// A command, its parts joined by spaces.
impl Shown for Vec<OsString> {
    fn shown(&self) -> String {
        self.iter()
            .map(|part| part.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[cfg(test)]
#[path = "values_tests.rs"]
mod tests;
