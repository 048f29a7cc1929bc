//! One validated [`Config`] for a cluster: the type the rest of herdsman trusts.
//!
//! The CLI (`cli.rs`) parses flags and environment into [`RunFlags`], each value checked on its
//! own and `None` where not given. [`RunFlags::load`] reads herdsman.toml when there is one
//! (`file`), takes each setting from the flags, else the file, else the default, and checks them
//! together, naming what is wrong and how to fix it; `name` derives a cluster's name from its
//! command when none is given.

mod file;
mod name;

use std::path::{Path, PathBuf};

pub use file::FileSettings;
use name::{name_from_command, valid_name};

use std::ffi::OsString;
use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::str::FromStr;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde::Deserialize;

use crate::ipc::IpcMode;
use crate::state::{StateMode, StoreOptions};

/// How workers share the listening port (`--balance`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Balance {
    /// One listening socket, inherited by every worker; the kernel wakes whichever is waiting.
    Shared,
    /// One `SO_REUSEPORT` socket per slot, all bound to the same address; the kernel hashes
    /// connections evenly across them.
    Reuseport,
}

impl Balance {
    pub fn as_str(self) -> &'static str {
        match self {
            Balance::Shared => "shared",
            Balance::Reuseport => "reuseport",
        }
    }
}

impl fmt::Display for Balance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// When a starting worker counts as ready (`--ready`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
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

/// Parses a duration such as `500ms`, `1s`, `2m`, `1m 30s`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|error| format!("`{text}` is not a duration ({error}); write e.g. 500ms, 10s, 1m"))
}

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

/// Everything the primary needs to run a cluster, already checked.
#[derive(Clone, Debug)]
pub struct Config {
    /// Names the cluster for the control socket and logs; derived from the command by default.
    pub name: String,
    /// Whether the name was given (`--name`, `name =`) rather than derived from the command.
    pub name_is_explicit: bool,
    /// The worker command and its arguments; never empty.
    pub command: Vec<OsString>,
    /// Variables added to every worker's environment (`[env]`).
    pub env: Vec<(String, String)>,
    pub workers: usize,
    pub address: SocketAddr,
    pub balance: Balance,
    pub ready: ReadyMode,
    pub ready_delay: Duration,
    pub ready_timeout: Duration,
    pub stop_signal: Signal,
    pub kill_timeout: Duration,
    /// A ready worker that leaves a connection unaccepted in its queue this long is replaced.
    pub accept_timeout: Duration,
    pub log_format: LogFormat,
    /// Where workers' shared state lives (`--state`), and how the embedded store runs.
    pub state: StateMode,
    pub store: StoreOptions,
    /// Whether workers get an IPC channel (`--ipc`), and in which dialect.
    pub ipc: IpcMode,
    /// Whether the log says what `--ready notify` waits for, and names a worker still silent
    /// (`herdsman run`; a `Cluster` program's workers signal by themselves).
    pub explain_ready_notify: bool,
}

/// A configuration that cannot run, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "no worker command given; write it after `--`, e.g. `herdsman run -- node server.js`, \
         or as `command = …` in herdsman.toml"
    )]
    NoCommand,
    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },
    #[error("--host `{host}` is neither an IP address nor a name that resolves: {reason}")]
    BadHost { host: String, reason: String },
    #[error(
        "--name `{0}` may only hold letters, digits, `.`, `_` and `-` (at most 64 characters)"
    )]
    BadName(String),
    #[error("--ready-timeout ({timeout:?}) must be longer than --ready-delay ({delay:?})")]
    ReadyTimeoutTooShort { delay: Duration, timeout: Duration },
    #[error(
        "--state-listen {0} is not a loopback address; the store has no password, so it only \
         listens on 127.0.0.1 or ::1 (remote machines should use a real Redis: --state redis://…)"
    )]
    StateListenNotLoopback(SocketAddr),
    #[error("--{flag} configures the embedded store, but --state is `{state}`; drop one of them")]
    StateOptionWithoutStore { flag: &'static str, state: String },
}

/// The flags of `herdsman run` as given: `None` (empty for the command) where not given.
#[derive(Clone, Debug, Default)]
pub struct RunFlags {
    pub config: Option<PathBuf>,
    pub command: Vec<OsString>,
    pub workers: Option<WorkerCount>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub balance: Option<Balance>,
    pub ready: Option<ReadyMode>,
    pub ready_delay: Option<Duration>,
    pub ready_timeout: Option<Duration>,
    pub stop_signal: Option<Signal>,
    pub kill_timeout: Option<Duration>,
    pub accept_timeout: Option<Duration>,
    pub name: Option<String>,
    pub log_format: Option<LogFormat>,
    pub state: Option<StateMode>,
    pub state_listen: Option<SocketAddr>,
    pub state_file: Option<PathBuf>,
    pub state_max_memory: Option<u64>,
    pub state_max_clients: Option<usize>,
    pub ipc: Option<IpcMode>,
}

/// The file `herdsman run` reads when given no command and no `--config`.
pub const DEFAULT_FILE: &str = "herdsman.toml";

impl RunFlags {
    /// The configuration file these flags use: `--config`, or `./herdsman.toml` when no command
    /// was given and the file exists.
    pub fn file(&self) -> Option<PathBuf> {
        match &self.config {
            Some(path) => Some(path.clone()),
            None if self.command.is_empty() && Path::new(DEFAULT_FILE).exists() => {
                Some(PathBuf::from(DEFAULT_FILE))
            }
            None => None,
        }
    }

    /// Reads the configuration file (if any), merges it under the flags, and validates.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let file = match self.file() {
            Some(path) => FileSettings::read(&path)?,
            None => FileSettings::default(),
        };
        let flags = self.clone();
        let settings = RunSettings {
            command: if flags.command.is_empty() {
                file.command.unwrap_or_default()
            } else {
                flags.command
            },
            workers: flags.workers.or(file.workers).unwrap_or(WorkerCount::Max),
            host: flags.host.or(file.host).unwrap_or_else(|| "0.0.0.0".into()),
            port: flags.port.or(file.port).unwrap_or(8000),
            balance: flags.balance.or(file.balance).unwrap_or(Balance::Reuseport),
            ready: flags.ready.or(file.ready).unwrap_or(ReadyMode::Delay),
            ready_delay: flags
                .ready_delay
                .or(file.ready_delay)
                .unwrap_or(Duration::from_secs(1)),
            ready_timeout: flags
                .ready_timeout
                .or(file.ready_timeout)
                .unwrap_or(Duration::from_secs(30)),
            stop_signal: flags
                .stop_signal
                .or(file.stop_signal)
                .unwrap_or(Signal::SIGTERM),
            kill_timeout: flags
                .kill_timeout
                .or(file.kill_timeout)
                .unwrap_or(Duration::from_secs(10)),
            accept_timeout: flags
                .accept_timeout
                .or(file.accept_timeout)
                .unwrap_or(Duration::from_secs(5)),
            name: flags.name.or(file.name),
            log_format: flags
                .log_format
                .or(file.log_format)
                .unwrap_or(LogFormat::Text),
            env: file.env.into_iter().collect(),
            state: flags.state.or(file.state).unwrap_or_default(),
            store: StoreOptions {
                listen: flags.state_listen.or(file.state_listen),
                file: flags.state_file.or(file.state_file),
                max_memory: flags.state_max_memory.or(file.state_max_memory),
                max_clients: flags.state_max_clients.or(file.state_max_clients),
            },
            ipc: flags.ipc.or(file.ipc).unwrap_or_default(),
        };
        settings.validate()
    }
}

/// Every setting of a cluster, from flags, file or default, before they are checked together.
#[derive(Clone, Debug)]
pub struct RunSettings {
    pub command: Vec<OsString>,
    pub workers: WorkerCount,
    pub host: String,
    pub port: u16,
    pub balance: Balance,
    pub ready: ReadyMode,
    pub ready_delay: Duration,
    pub ready_timeout: Duration,
    pub stop_signal: Signal,
    pub kill_timeout: Duration,
    pub accept_timeout: Duration,
    pub name: Option<String>,
    pub log_format: LogFormat,
    pub env: Vec<(String, String)>,
    pub state: StateMode,
    pub store: StoreOptions,
    pub ipc: IpcMode,
}

impl RunSettings {
    /// Checks the settings together and turns them into a [`Config`].
    pub fn validate(self) -> Result<Config, ConfigError> {
        if self.command.is_empty() {
            return Err(ConfigError::NoCommand);
        }
        self.check_state()?;
        let address = resolve_host(&self.host, self.port)?;
        let name_is_explicit = self.name.is_some();
        let name = match self.name {
            Some(name) if valid_name(&name) => name,
            Some(name) => return Err(ConfigError::BadName(name)),
            None => name_from_command(&self.command),
        };
        if self.ready == ReadyMode::Delay && self.ready_timeout <= self.ready_delay {
            return Err(ConfigError::ReadyTimeoutTooShort {
                delay: self.ready_delay,
                timeout: self.ready_timeout,
            });
        }
        Ok(Config {
            name,
            name_is_explicit,
            command: self.command,
            env: self.env,
            workers: self.workers.resolve(),
            address,
            balance: self.balance,
            ready: self.ready,
            ready_delay: self.ready_delay,
            ready_timeout: self.ready_timeout,
            stop_signal: self.stop_signal,
            kill_timeout: self.kill_timeout,
            accept_timeout: self.accept_timeout,
            log_format: self.log_format,
            state: self.state,
            store: self.store,
            ipc: self.ipc,
            explain_ready_notify: true,
        })
    }

    fn check_state(&self) -> Result<(), ConfigError> {
        if let Some(address) = self.store.listen {
            if !address.ip().is_loopback() {
                return Err(ConfigError::StateListenNotLoopback(address));
            }
        }
        if self.state != StateMode::Embedded {
            let given = [
                ("state-listen", self.store.listen.is_some()),
                ("state-file", self.store.file.is_some()),
                ("state-max-memory", self.store.max_memory.is_some()),
                ("state-max-clients", self.store.max_clients.is_some()),
            ];
            if let Some((flag, _)) = given.iter().find(|(_, given)| *given) {
                return Err(ConfigError::StateOptionWithoutStore {
                    flag,
                    state: self.state.to_string(),
                });
            }
        }
        Ok(())
    }
}

/// Parses `--state-max-clients`: a count of 1 or more.
pub fn parse_client_count(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(count) if count >= 1 => Ok(count),
        _ => Err(format!(
            "`{text}` is not a number of clients (1 or more, e.g. 10000)"
        )),
    }
}

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

fn resolve_host(host: &str, port: u16) -> Result<SocketAddr, ConfigError> {
    let unbracketed = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = unbracketed.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let bad = |reason: String| ConfigError::BadHost {
        host: host.to_string(),
        reason,
    };
    (host, port)
        .to_socket_addrs()
        .map_err(|error| bad(error.to_string()))?
        .next()
        .ok_or_else(|| bad("it resolves to no address".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_counts() {
        assert_eq!("max".parse::<WorkerCount>(), Ok(WorkerCount::Max));
        assert_eq!("MAX".parse::<WorkerCount>(), Ok(WorkerCount::Max));
        assert_eq!("3".parse::<WorkerCount>(), Ok(WorkerCount::Exactly(3)));
        assert_eq!(
            "0".parse::<WorkerCount>(),
            Err("the cluster needs at least 1 worker".to_string())
        );
        assert_eq!(
            "two".parse::<WorkerCount>(),
            Err("expected a number of workers or `max`, got `two`".to_string())
        );
        assert!(WorkerCount::Max.resolve() >= 1);
    }

    #[test]
    fn signals_by_name_and_number() {
        assert_eq!(parse_signal("TERM"), Ok(Signal::SIGTERM));
        assert_eq!(parse_signal("sigint"), Ok(Signal::SIGINT));
        assert_eq!(parse_signal("SIGQUIT"), Ok(Signal::SIGQUIT));
        assert_eq!(parse_signal("10"), Ok(Signal::SIGUSR1));
        assert!(parse_signal("NOPE")
            .unwrap_err()
            .contains("`NOPE` is not a signal name"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("soon")
            .unwrap_err()
            .starts_with("`soon` is not a duration"));
    }

    fn settings() -> RunSettings {
        RunSettings {
            command: vec!["server".into()],
            workers: WorkerCount::Exactly(2),
            host: "127.0.0.1".into(),
            port: 0,
            balance: Balance::Shared,
            ready: ReadyMode::Delay,
            ready_delay: Duration::from_secs(1),
            ready_timeout: Duration::from_secs(30),
            stop_signal: Signal::SIGTERM,
            kill_timeout: Duration::from_secs(10),
            accept_timeout: Duration::from_secs(5),
            name: None,
            log_format: LogFormat::Text,
            env: Vec::new(),
            state: StateMode::Embedded,
            store: StoreOptions::default(),
            ipc: IpcMode::Off,
        }
    }

    #[test]
    fn state_settings() {
        assert_eq!(parse_state("off"), Ok(StateMode::Off));
        assert_eq!(
            parse_state("redis://10.0.0.5:6379/2"),
            Ok(StateMode::External("redis://10.0.0.5:6379/2".into()))
        );
        assert!(parse_state("memcached://x")
            .unwrap_err()
            .contains("Redis URL"));
        assert_eq!(parse_size("100mb"), Ok(100 << 20));
        assert_eq!(parse_size("1k"), Ok(1000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("0").is_err());

        let mut remote = settings();
        remote.store.listen = Some("0.0.0.0:6380".parse().unwrap());
        assert!(matches!(
            remote.validate(),
            Err(ConfigError::StateListenNotLoopback(_))
        ));
        let mut off_with_file = settings();
        off_with_file.state = StateMode::Off;
        off_with_file.store.file = Some("state.aof".into());
        assert_eq!(
            off_with_file.validate().unwrap_err().to_string(),
            "--state-file configures the embedded store, but --state is `off`; drop one of them"
        );
    }

    #[test]
    fn validation() {
        let config = settings().validate().unwrap();
        assert_eq!(config.name, "server");
        assert_eq!(config.address, "127.0.0.1:0".parse().unwrap());
        assert_eq!(config.workers, 2);

        let config = RunSettings {
            host: "[::1]".into(),
            port: 80,
            ..settings()
        };
        assert_eq!(
            config.validate().unwrap().address,
            "[::1]:80".parse().unwrap()
        );

        let error = RunSettings {
            command: vec![],
            ..settings()
        }
        .validate()
        .unwrap_err();
        assert!(matches!(error, ConfigError::NoCommand));

        let error = RunSettings {
            name: Some("a b".into()),
            ..settings()
        }
        .validate()
        .unwrap_err();
        assert!(matches!(error, ConfigError::BadName(_)));

        let short = RunSettings {
            ready_timeout: Duration::from_millis(500),
            ..settings()
        };
        assert!(matches!(
            short.validate().unwrap_err(),
            ConfigError::ReadyTimeoutTooShort { .. }
        ));
    }

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let dir = std::env::temp_dir().join(format!("herdsman-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("herdsman.toml");
        let toml = "command = \"app --serve\"\nworkers = 3\nport = 9000\n[env]\nA = \"1\"\n";
        std::fs::write(&path, toml).unwrap();
        let flags = RunFlags {
            config: Some(path.clone()),
            port: Some(7000),
            ..RunFlags::default()
        };
        let config = flags.load().unwrap();
        assert_eq!(config.command, ["app", "--serve"]);
        assert_eq!(config.workers, 3);
        assert_eq!(config.address.port(), 7000);
        assert_eq!(config.ready_delay, Duration::from_secs(1));
        assert_eq!(config.env, [("A".to_string(), "1".to_string())]);
        assert!(!config.name_is_explicit);

        std::fs::write(&path, "workers = \"lots\"\n").unwrap();
        let error = flags.load().unwrap_err().to_string();
        assert_eq!(
            error,
            format!(
                "{}: line 1, `workers`: expected a number of workers or `max`, got `lots`",
                path.display()
            )
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
