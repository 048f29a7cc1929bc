//! A cluster's settings, and the one validated [`Config`] made of them: the type the rest of
//! herdsman trusts.
//!
//! - `schema`: the one definition. Each setting is one row of a table (its help, flag, key,
//!   default, `HERDSMAN_*` variable and what a reload does with it); from it come
//!   [`Settings`], one *layer* of settings with `None` where its source is silent, and
//!   [`RunSettings`], every setting with its default where no layer gave one.
//! - The layers, highest first: for `herdsman run`, its flags (with the `HERDSMAN_*` variables,
//!   both through clap derive on [`Settings`]) over herdsman.toml (`file`, serde derive on the
//!   same [`Settings`]: `RunFlags::load`); for a [`crate::Cluster`] program, what it always is,
//!   the `HERDSMAN_*` variables ([`Settings::from_env`]) and `$PORT`/`$HOST`, over its builder.
//!   [`RunSettings::validate`] then checks the settings together into a [`Config`], naming what
//!   is wrong and how to fix it; `name` derives a cluster's name from its command.
//! - `reload`: [`reloaded`], what a reload takes from a re-read herdsman.toml, row by row.
//! - `values`: the settings' value types ([`Balance`], [`ReadyMode`], …) and their parsers.
//!
//! `file` and `RunFlags`, and the clap derives, are the feature `cli` (the binary's).

#[cfg(feature = "cli")]
mod file;
mod name;
mod reload;
mod schema;
#[cfg(all(test, feature = "cli"))]
mod tests_schema;
mod values;

use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::Signal;

#[cfg(feature = "cli")]
pub use file::RunFlags;
use name::{name_from_command, valid_name};
pub use reload::{reloaded, Reloaded};
pub use schema::{EnvError, RunSettings, Settings};
#[cfg(test)]
pub use schema::{OnReload, SETTINGS};
pub use values::*;

use crate::ipc::IpcMode;
use crate::state::{StateMode, StoreOptions};

/// Everything the primary needs to run a cluster, already checked.
#[derive(Clone, Debug, PartialEq)]
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
    /// Whether a client address's connections all reach one worker (`--sticky`).
    pub sticky: Sticky,
    /// The header the proxy starts each upstream connection with (`--proxy-protocol`).
    pub proxy_protocol: ProxyProtocol,
    /// With a handoff balance: unanswered connections per worker, at most (`--max-pending`).
    pub max_pending: usize,
    pub ready: ReadyMode,
    pub ready_delay: Duration,
    pub ready_timeout: Duration,
    pub stop_signal: Signal,
    pub kill_timeout: Duration,
    /// A ready worker that leaves a connection unaccepted in its queue this long is replaced.
    pub accept_timeout: Duration,
    /// A ready worker silent (no `WATCHDOG=1`) this long is hung and replaced (`--watchdog`).
    pub watchdog: Option<Duration>,
    /// A worker whose process tree's RSS is over this is replaced (`--max-memory`).
    pub max_memory: Option<Size>,
    /// A worker that served this many connections is replaced (`--max-requests`)…
    pub max_requests: Option<u64>,
    /// …each worker's limit raised by a random 0 to this (`--max-requests-jitter`).
    pub max_requests_jitter: u64,
    pub log_format: LogFormat,
    /// Where log lines are also written to files (`--log-dir`), and how they rotate.
    pub log_files: LogFiles,
    /// Where workers' shared state lives (`--state`), and how the embedded store runs.
    pub state: StateMode,
    pub store: StoreOptions,
    /// Whether workers get an IPC channel (`--ipc`), and in which dialect.
    pub ipc: IpcMode,
    /// Whether the log says what `--ready notify` waits for, and names a worker still silent
    /// (`herdsman run`; a `Cluster` program's workers signal by themselves).
    pub explain_ready_notify: bool,
    /// Where the admin HTTP server listens (`--admin`); off when `None`.
    pub admin: Option<SocketAddr>,
    /// What the admin server asks for besides the probes (`--admin-token`).
    pub admin_token: Option<String>,
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
    #[error(
        "--ready-timeout ({}) must be longer than --ready-delay ({})",
        humantime::format_duration(*timeout),
        humantime::format_duration(*delay)
    )]
    ReadyTimeoutTooShort { delay: Duration, timeout: Duration },
    #[error(
        "--state-listen {0} is not a loopback address; the store has no password, so it only \
         listens on 127.0.0.1 or ::1 (remote machines should use a real Redis: --state redis://…)"
    )]
    StateListenNotLoopback(SocketAddr),
    #[error("--{flag} configures the embedded store, but --state is `{state}`; drop one of them")]
    StateOptionWithoutStore { flag: &'static str, state: String },
    #[error(
        "--balance {balance} hands each connection to a worker over its IPC channel, and `{command}` \
         runs without one: give it --ipc if it takes handed connections (herdsman::Worker's \
         listener does; the frames are in docs/protocol.md), run a Node worker (`node app.js`, \
         or --ipc node), or pick --balance reuseport, shared or proxy"
    )]
    HandoffNeedsIpc { balance: Balance, command: String },
    #[error(
        "--balance least-conn counts each worker's open connections from the closes it reports, \
         and Node's cluster protocol reports none: use --balance round-robin for Node workers \
         (it passes over a busy worker too), or --balance proxy (least-connections for any app)"
    )]
    LeastConnNeedsCloseReports,
    #[error(
        "--admin {0} is not a loopback address, and the admin server can reload, scale and \
         restart the cluster: give it a secret with --admin-token (or $HERDSMAN_ADMIN_TOKEN), \
         or listen on 127.0.0.1"
    )]
    AdminNeedsToken(SocketAddr),
    #[error(
        "--max-requests-jitter {0} raises each worker's --max-requests, but no --max-requests \
         is set: give --max-requests N too (e.g. --max-requests 1000 --max-requests-jitter 50)"
    )]
    JitterWithoutMaxRequests(u64),
    #[error(
        "--max-requests 0 would replace every worker before it serves: give a number of \
         connections (e.g. 1000), or leave it out for no limit"
    )]
    ZeroMaxRequests,
    #[error(
        "herdsman.toml's [env] sets {name}, which herdsman sets for every worker itself (it would \
         be overridden): remove it from [env]{instead}"
    )]
    EnvSetByHerdsman { name: String, instead: &'static str },
    #[error(
        "--sticky {0} needs a balance mode that chooses the worker, and with --balance shared \
         the kernel wakes whichever worker waits: use --balance reuseport (the default), proxy \
         or round-robin, or drop --sticky"
    )]
    StickyNeedsChoice(Sticky),
    #[error(
        "--proxy-protocol {protocol} is written by the primary's proxy, and --balance {balance} \
         has none (workers accept the clients themselves): use --balance proxy or proxy-rr, or \
         drop --proxy-protocol"
    )]
    ProxyProtocolNeedsProxy {
        protocol: ProxyProtocol,
        balance: Balance,
    },
}

impl RunSettings {
    /// Checks the settings together and turns them into a [`Config`].
    pub fn validate(self) -> Result<Config, ConfigError> {
        let command = match self.command {
            Some(command) if !command.is_empty() => command,
            _ => return Err(ConfigError::NoCommand),
        };
        let store = StoreOptions {
            listen: self.state_listen,
            file: self.state_file,
            max_memory: self.state_max_memory,
            max_clients: self.state_max_clients,
        };
        check_state(&self.state, &store)?;
        let address = resolve_host(&self.host, self.port)?;
        let name_is_explicit = self.name.is_some();
        let name = match self.name {
            Some(name) if valid_name(&name) => name,
            Some(name) => return Err(ConfigError::BadName(name)),
            None => name_from_command(&command),
        };
        if self.ready == ReadyMode::Delay && self.ready_timeout <= self.ready_delay {
            return Err(ConfigError::ReadyTimeoutTooShort {
                delay: self.ready_delay,
                timeout: self.ready_timeout,
            });
        }
        let node = is_node(&command);
        let ipc = self.ipc.resolve(node);
        if self.balance.is_handoff() && ipc == IpcMode::Off {
            let command = command[0].to_string_lossy().into_owned();
            let balance = self.balance;
            return Err(ConfigError::HandoffNeedsIpc { balance, command });
        }
        if self.balance == Balance::LeastConn && ipc == IpcMode::Node {
            return Err(ConfigError::LeastConnNeedsCloseReports);
        }
        if self.max_requests_jitter > 0 && self.max_requests.is_none() {
            return Err(ConfigError::JitterWithoutMaxRequests(
                self.max_requests_jitter,
            ));
        }
        if self.max_requests == Some(0) {
            return Err(ConfigError::ZeroMaxRequests);
        }
        if let Some(name) = self.env.keys().find(|name| {
            set_by_herdsman(name, self.balance.is_proxy(), self.state != StateMode::Off)
        }) {
            let instead = match name.as_str() {
                "PORT" | "HOST" => "; choose the address with `port = …` and `host = …`",
                "REDIS_URL" | "HERDSMAN_STATE_URL" => {
                    "; point workers at another store with `state = \"redis://…\"`"
                }
                _ => "",
            };
            let name = name.clone();
            return Err(ConfigError::EnvSetByHerdsman { name, instead });
        }
        if self.sticky != Sticky::Off && self.balance == Balance::Shared {
            return Err(ConfigError::StickyNeedsChoice(self.sticky));
        }
        if self.proxy_protocol != ProxyProtocol::Off && !self.balance.is_proxy() {
            return Err(ConfigError::ProxyProtocolNeedsProxy {
                protocol: self.proxy_protocol,
                balance: self.balance,
            });
        }
        let admin_token = self.admin_token.filter(|token| !token.is_empty());
        if let Some(address) = self.admin {
            if !address.ip().is_loopback() && admin_token.is_none() {
                return Err(ConfigError::AdminNeedsToken(address));
            }
        }
        Ok(Config {
            name,
            name_is_explicit,
            command,
            env: self.env.into_iter().collect(),
            workers: self.workers.resolve(),
            address,
            balance: self.balance,
            sticky: self.sticky,
            proxy_protocol: self.proxy_protocol,
            max_pending: self.max_pending,
            ready: self.ready,
            ready_delay: self.ready_delay,
            ready_timeout: self.ready_timeout,
            stop_signal: self.stop_signal,
            kill_timeout: self.kill_timeout,
            accept_timeout: self.accept_timeout,
            watchdog: self.watchdog,
            max_memory: self.max_memory.map(Size),
            max_requests: self.max_requests,
            max_requests_jitter: self.max_requests_jitter,
            log_format: self.log_format,
            log_files: LogFiles {
                dir: self.log_dir,
                max_size: self.log_max_size.0,
                keep: self.log_keep,
            },
            state: self.state,
            store,
            ipc,
            explain_ready_notify: true,
            admin: self.admin,
            admin_token,
        })
    }
}

/// Whether `command` runs Node (`node`, `nodejs`, by any path): its workers get Node's cluster
/// protocol (`--ipc node`), so apps run unmodified.
fn is_node(command: &[OsString]) -> bool {
    let program = std::path::Path::new(&command[0]);
    program
        .file_name()
        .is_some_and(|name| name == "node" || name == "nodejs")
}

/// Whether herdsman sets the variable `name` in a worker's environment itself (README, "What
/// every worker gets"), over what `[env]` says: `HOST` under the proxy, `REDIS_URL` with a
/// store.
fn set_by_herdsman(name: &str, proxy: bool, store: bool) -> bool {
    const ALWAYS: &[&str] = &[
        "PORT",
        "LISTEN_FDS",
        "LISTEN_PID",
        "LISTEN_FDNAMES",
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
        "NODE_CHANNEL_FD",
        "NODE_CHANNEL_SERIALIZATION_MODE",
        "NODE_UNIQUE_ID",
    ];
    ALWAYS.contains(&name)
        || name.starts_with("HERDSMAN_")
        || (proxy && name == "HOST")
        || (store && name == "REDIS_URL")
}

fn check_state(state: &StateMode, store: &StoreOptions) -> Result<(), ConfigError> {
    if let Some(address) = store.listen {
        if !address.ip().is_loopback() {
            return Err(ConfigError::StateListenNotLoopback(address));
        }
    }
    if *state != StateMode::Embedded {
        let given = [
            ("state-listen", store.listen.is_some()),
            ("state-file", store.file.is_some()),
            ("state-max-memory", store.max_memory.is_some()),
            ("state-max-clients", store.max_clients.is_some()),
        ];
        if let Some((flag, _)) = given.iter().find(|(_, given)| *given) {
            return Err(ConfigError::StateOptionWithoutStore {
                flag,
                state: state.to_string(),
            });
        }
    }
    Ok(())
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

    fn settings() -> RunSettings {
        RunSettings {
            command: Some(vec!["server".into()]),
            workers: WorkerCount::Exactly(2),
            host: "127.0.0.1".into(),
            port: 0,
            balance: Balance::Shared,
            ..RunSettings::default()
        }
    }

    #[test]
    fn a_node_command_speaks_nodes_protocol_unless_told_otherwise() {
        use crate::ipc::IpcSetting;
        let ipc = |command: &str, ipc: IpcSetting| {
            RunSettings {
                command: Some(vec![command.into(), "app.js".into()]),
                ipc,
                ..settings()
            }
            .validate()
            .unwrap()
            .ipc
        };
        assert_eq!(ipc("node", IpcSetting::Auto), IpcMode::Node);
        assert_eq!(ipc("/usr/bin/nodejs", IpcSetting::Auto), IpcMode::Node);
        assert_eq!(ipc("python3", IpcSetting::Auto), IpcMode::Off);
        assert_eq!(ipc("node", IpcSetting::Off), IpcMode::Off);
        assert_eq!(ipc("node", IpcSetting::On), IpcMode::On);
        assert_eq!(ipc("python3", IpcSetting::Node), IpcMode::Node);
    }

    #[test]
    fn state_settings() {
        let remote = RunSettings {
            state_listen: Some("0.0.0.0:6380".parse().unwrap()),
            ..settings()
        };
        assert!(matches!(
            remote.validate(),
            Err(ConfigError::StateListenNotLoopback(_))
        ));
        let off_with_file = RunSettings {
            state: StateMode::Off,
            state_file: Some("state.aof".into()),
            ..settings()
        };
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

        for command in [None, Some(vec![])] {
            let error = RunSettings {
                command,
                ..settings()
            }
            .validate()
            .unwrap_err();
            assert!(matches!(error, ConfigError::NoCommand));
        }

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

    /// `[env]` may not set what herdsman sets itself: it would be overridden without a word.
    #[test]
    fn env_may_not_set_what_herdsman_sets() {
        let with = |name: &str, balance| {
            RunSettings {
                balance,
                env: [(name.to_string(), "1".to_string())].into(),
                ..settings()
            }
            .validate()
        };
        assert_eq!(
            with("PORT", Balance::Reuseport).unwrap_err().to_string(),
            "herdsman.toml's [env] sets PORT, which herdsman sets for every worker itself (it \
             would be overridden): remove it from [env]; choose the address with `port = …` and \
             `host = …`"
        );
        assert!(with("HERDSMAN_WORKER_ID", Balance::Reuseport).is_err());
        assert!(with("HOST", Balance::Proxy).is_err());
        assert!(with("HOST", Balance::Reuseport).is_ok());
        assert!(with("NODE_ENV", Balance::Reuseport).is_ok());
    }

    #[test]
    fn sticky_needs_a_chooser_and_the_proxy_protocol_a_proxy() {
        let with = |balance, sticky, proxy_protocol| {
            RunSettings {
                balance,
                sticky,
                proxy_protocol,
                ..settings()
            }
            .validate()
        };
        for balance in [Balance::Reuseport, Balance::Proxy, Balance::ProxyRr] {
            let config = with(balance, Sticky::Ip, ProxyProtocol::Off).unwrap();
            assert_eq!(config.sticky, Sticky::Ip);
        }
        assert_eq!(
            with(Balance::Shared, Sticky::Ip, ProxyProtocol::Off)
                .unwrap_err()
                .to_string(),
            "--sticky ip needs a balance mode that chooses the worker, and with --balance shared \
             the kernel wakes whichever worker waits: use --balance reuseport (the default), \
             proxy or round-robin, or drop --sticky"
        );
        for protocol in [ProxyProtocol::V1, ProxyProtocol::V2] {
            let config = with(Balance::Proxy, Sticky::Off, protocol).unwrap();
            assert_eq!(config.proxy_protocol, protocol);
        }
        assert_eq!(
            with(Balance::Reuseport, Sticky::Off, ProxyProtocol::V2)
                .unwrap_err()
                .to_string(),
            "--proxy-protocol v2 is written by the primary's proxy, and --balance reuseport has \
             none (workers accept the clients themselves): use --balance proxy or proxy-rr, or \
             drop --proxy-protocol"
        );
    }

    #[cfg(feature = "cli")]
    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let dir = std::env::temp_dir().join(format!("herdsman-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("herdsman.toml");
        let toml = "command = \"app --serve\"\nworkers = 3\nport = 9000\n[env]\nA = \"1\"\n";
        std::fs::write(&path, toml).unwrap();
        let flags = RunFlags {
            config: Some(path.clone()),
            settings: Settings {
                port: Some(7000),
                ..Settings::default()
            },
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
