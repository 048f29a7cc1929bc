//! The one definition of a cluster's settings: one row per setting, in [`settings!`] below.
//!
//! A row holds everything about its setting: the help text (its doc comment, with the default
//! `--help` shows), how the flag is spelled (clap's `#[arg]`), how herdsman.toml reads it
//! (serde's `#[serde]`; the key is the flag's name), its default, its `HERDSMAN_*` variable if
//! it has one, and what `reload` does when the file changes it. The macro turns the rows into:
//!
//! - [`Settings`]: one *layer* of settings, each `None` where its source is silent. The flags of
//!   `herdsman run` (clap derive, with the `HERDSMAN_*` variables as clap's `env`), herdsman.toml
//!   (serde derive), [`Settings::from_env`] (the variables, for a [`crate::Cluster`] program)
//!   and the `Cluster` builder each give one. [`Settings::or`] lays one over another.
//! - [`RunSettings`]: every setting with a value, by [`Settings::resolve`], which holds the only
//!   defaults; `RunSettings::validate` (in `config`) checks them together into a `Config`.
//! - `SETTINGS` (tests only): the rows as data (name, variable, what reload does).
//! - `reload_each`: the reload diff, row by row (see `config::reload`).
//!
//! A declarative macro rather than a derive on a hand-written struct, because the rows also
//! drive code that is not about parsing (the defaults, the layers, the reload diff), and a
//! `macro_rules!` keeps all of it in this file, with no proc-macro crate. The order of the rows
//! is the order of `--help` and of the lines a reload prints.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::Signal;

#[cfg(feature = "cli")]
use super::file;
use super::reload::{env_changes, Reloaded};
use super::values::*;
use super::Config;
use crate::ipc::IpcSetting;
use crate::state::StateMode;

/// What `reload` does when herdsman.toml changes a setting (as data, for the schema's tests;
/// the reload diff itself is generated from the same rows).
#[cfg(test)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnReload {
    /// Taken at once, for the workers the reload starts (`key: before → after`).
    Applied,
    /// The worker count: the cluster is scaled to it once the reload is done.
    Scaled,
    /// Needs herdsman itself to restart; the reload says so and keeps the old value.
    NeedsRestart,
}

/// A row of the schema, as data (for the schema's tests).
#[cfg(test)]
#[derive(Clone, Copy, Debug)]
pub struct Setting {
    /// The field of [`Settings`]; the flag and the herdsman.toml key are this in kebab-case.
    pub field: &'static str,
    /// The environment variable that gives it, below the flag and above the file.
    pub env: Option<&'static str>,
    /// Its default as herdsman.toml spells it; `None` for a setting that has none.
    pub default: Option<fn() -> String>,
    pub on_reload: OnReload,
}

#[cfg(test)]
impl Setting {
    /// The key in herdsman.toml, and the flag without its `--`.
    pub fn key(&self) -> String {
        self.field.replace('_', "-")
    }
}

/// A `HERDSMAN_*` variable that does not hold a value of its setting.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("${variable}: {message}")]
pub struct EnvError {
    pub variable: &'static str,
    pub message: String,
}

/// `RunSettings`' type for a row: the row's own type when it has a default, else an `Option`.
macro_rules! resolved_type {
    ($ty:ty) => { Option<$ty> };
    ($ty:ty, $default:expr) => { $ty };
}

macro_rules! resolved_value {
    ($value:expr) => {
        $value
    };
    ($value:expr, $default:expr) => {
        $value.unwrap_or_else(|| $default)
    };
}

#[cfg(test)]
macro_rules! default_shown {
    ($ty:ty) => {
        None
    };
    ($ty:ty, $default:expr) => {
        Some(|| <$ty as Shown>::shown(&$default))
    };
}

#[cfg(test)]
macro_rules! optional {
    () => {
        None
    };
    ($value:expr) => {
        Some($value)
    };
}

#[cfg(test)]
macro_rules! on_reload {
    (applied) => {
        OnReload::Applied
    };
    (env) => {
        OnReload::Applied
    };
    (scaled) => {
        OnReload::Scaled
    };
    (restart) => {
        OnReload::NeedsRestart
    };
}

/// One row of the reload diff: compares `old` and `new`, notes the line, takes what applies.
macro_rules! reload_row {
    (applied; $old:ident, $new:ident, $out:ident, $field:ident) => {
        $out.change(stringify!($field), $old.$field.shown(), $new.$field.shown());
        $out.config.$field = $new.$field.clone();
    };
    (scaled; $old:ident, $new:ident, $out:ident, $field:ident) => {
        $out.change(stringify!($field), $old.$field.shown(), $new.$field.shown());
        if $old.$field != $new.$field {
            $out.workers = Some($new.$field);
        }
    };
    // `[env]` values may be secrets: only the names of the variables are shown.
    (env; $old:ident, $new:ident, $out:ident, $field:ident) => {
        $out.changes.extend(env_changes(&$old.$field, &$new.$field));
        $out.config.$field = $new.$field.clone();
    };
    (restart; $old:ident, $new:ident, $out:ident, $field:ident) => {
        $out.needs_restart(stringify!($field), $old.$field != $new.$field);
    };
    // Settings that `Config` holds in another form (`host` and `port` as its `address`) say
    // how to tell a change, under what name.
    (restart($what:literal, $differs:path); $old:ident, $new:ident, $out:ident, $field:ident) => {
        $out.needs_restart($what, $differs($old, $new));
    };
}

macro_rules! settings {
    ($(
        $(#[doc = $doc:literal])*
        #[flag($($flag:tt)*)]
        #[file($($file:tt)*)]
        $field:ident: $ty:ty $(= $default:expr)?,
        $(env $env:literal,)?
        reload $reload:ident $(($($how:tt)*))?;
    )*) => {
        /// One layer of settings, each `None` where its source is silent (see the module doc).
        #[derive(Clone, Debug, Default, PartialEq)]
        #[cfg_attr(feature = "cli", derive(clap::Args, serde::Deserialize))]
        #[cfg_attr(feature = "cli", serde(deny_unknown_fields, rename_all = "kebab-case"))]
        pub struct Settings {
            $(
                $(#[doc = $doc])*
                #[cfg_attr(feature = "cli", arg($($flag)*))]
                $(#[cfg_attr(feature = "cli", arg(env = $env))])?
                #[cfg_attr(feature = "cli", serde($($file)*))]
                pub $field: Option<$ty>,
            )*
        }

        /// Every setting of a cluster, from the first layer that gives it, else its default;
        /// not yet checked together.
        #[derive(Clone, Debug, PartialEq)]
        pub struct RunSettings {
            $( pub $field: resolved_type!($ty $(, $default)?), )*
        }

        impl Settings {
            /// This layer over `lower`: each setting from `self` where it gives one.
            pub fn or(self, lower: Settings) -> Settings {
                Settings { $( $field: self.$field.or(lower.$field), )* }
            }

            /// Every setting from this layer, else its default.
            pub fn resolve(self) -> RunSettings {
                RunSettings { $( $field: resolved_value!(self.$field $(, $default)?), )* }
            }

            /// The settings the `HERDSMAN_*` variables give (`var` reads one; empty is unset).
            pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Settings, EnvError> {
                #[allow(unused_mut)]
                let mut settings = Settings::default();
                $($(
                    if let Some(text) = var($env).filter(|text| !text.is_empty()) {
                        settings.$field = Some(text.parse::<$ty>().map_err(|error| EnvError {
                            variable: $env,
                            message: error.to_string(),
                        })?);
                    }
                )?)*
                Ok(settings)
            }
        }

        /// The rows of the schema, in order.
        #[cfg(test)]
        pub const SETTINGS: &[Setting] = &[
            $( Setting {
                field: stringify!($field),
                env: optional!($($env)?),
                default: default_shown!($ty $(, $default)?),
                on_reload: on_reload!($reload),
            }, )*
        ];

        /// The reload diff of `old` and `new`, row by row, into `out`.
        pub(super) fn reload_each(old: &Config, new: &Config, out: &mut Reloaded) {
            $( reload_row!($reload $(($($how)*))?; old, new, out, $field); )*
        }
    };
}

settings! {
    /// The server command and its arguments, after `--`
    #[flag(last = true, value_name = "COMMAND")]
    #[file(default, deserialize_with = "file::command")]
    command: Vec<OsString>,
    reload applied;

    /// Variables added to every worker's environment (herdsman.toml's `[env]` table)
    #[flag(skip)]
    #[file(default)]
    env: BTreeMap<String, String> = BTreeMap::new(),
    reload env;

    /// Number of workers, or `max` for one per CPU [default: max, or $HERDSMAN_WORKERS]
    #[flag(short = 'w', long, value_parser = parse_workers)]
    #[file(default, deserialize_with = "file::workers")]
    workers: WorkerCount = WorkerCount::Max,
    env "HERDSMAN_WORKERS",
    reload scaled;

    /// Address to listen on (IP or host name) [default: 0.0.0.0]
    #[flag(long)]
    #[file()]
    host: String = "0.0.0.0".into(),
    reload restart("host/port", address_changed);

    /// Port to listen on; 0 picks a free port (printed on start) [default: 8000]
    #[flag(short, long)]
    #[file(default, deserialize_with = "file::port")]
    port: u16 = 8000,
    reload restart("host/port", address_changed);

    /// How workers share the port [default: reuseport, or $HERDSMAN_BALANCE]
    #[flag(long, value_enum)]
    #[file(default, deserialize_with = "file::choice")]
    balance: Balance = Balance::Reuseport,
    env "HERDSMAN_BALANCE",
    reload restart;

    /// Send each client address's connections to the same worker while it lives: `ip` (for
    /// socket.io's polling transport, or sessions in a worker's memory); not with --balance
    /// shared, where the kernel picks [default: off]
    #[flag(long, value_enum, value_name = "off|ip")]
    #[file(default, deserialize_with = "file::choice")]
    sticky: Sticky = Sticky::Off,
    reload restart;

    /// With --balance proxy or proxy-rr: start each connection to a worker with HAProxy's PROXY
    /// protocol header (`v1` text, `v2` binary), so the app learns the client's address; the
    /// app must expect it [default: off]
    #[flag(long, value_enum, value_name = "off|v1|v2")]
    #[file(default, deserialize_with = "file::choice", alias = "proxy_protocol")]
    proxy_protocol: ProxyProtocol = ProxyProtocol::Off,
    reload restart;

    /// With --balance round-robin or least-conn: how many handed connections a worker may
    /// leave unanswered before it is passed over (1, as Node's round-robin) [default: 1]
    #[flag(long, value_name = "N", value_parser = parse_max_pending)]
    #[file(default, deserialize_with = "file::max_pending", alias = "max_pending")]
    max_pending: usize = 1,
    reload restart;

    /// When a new worker counts as ready: `delay` = --ready-delay after its start, and after
    /// its ready signal if it sends one (READY=1 on $NOTIFY_SOCKET; with --ipc, a `ready` frame
    /// or process.send('ready')); `notify` = --ready-delay after its ready signal
    /// [default: delay]
    #[flag(long, value_enum)]
    #[file(default, deserialize_with = "file::choice")]
    ready: ReadyMode = ReadyMode::Delay,
    reload applied;

    /// How long a worker must stay up, after its start and after its READY=1, to count as ready
    /// [default: 1s]
    #[flag(long, value_parser = parse_duration)]
    #[file(default, deserialize_with = "file::duration", alias = "ready_delay")]
    ready_delay: Duration = Duration::from_secs(1),
    reload applied;

    /// How long a new worker may take to become ready before it is stopped [default: 30s]
    #[flag(long, value_parser = parse_duration)]
    #[file(default, deserialize_with = "file::duration", alias = "ready_timeout")]
    ready_timeout: Duration = Duration::from_secs(30),
    reload applied;

    /// How long a stopping worker may take before it is killed (SIGKILL) [default: 10s]
    #[flag(long, value_parser = parse_duration)]
    #[file(default, deserialize_with = "file::duration", alias = "kill_timeout")]
    kill_timeout: Duration = Duration::from_secs(10),
    reload applied;

    /// A ready worker that leaves a connection unaccepted on the cluster's socket this long is
    /// reported `not accepting` and replaced [default: 5s]
    #[flag(long, value_parser = parse_duration)]
    #[file(default, deserialize_with = "file::duration", alias = "accept_timeout")]
    accept_timeout: Duration = Duration::from_secs(5),
    reload applied;

    /// A ready worker that sends no WATCHDOG=1 on $NOTIFY_SOCKET for this long (workers get
    /// $WATCHDOG_USEC), or leaves connections unaccepted this long, is hung: replaced, new
    /// first, then sent SIGABRT (gunicorn's --timeout) [default: off]
    #[flag(long, value_name = "DURATION", value_parser = parse_watchdog)]
    #[file(default, deserialize_with = "file::watchdog")]
    watchdog: Duration,
    reload applied;

    /// A worker whose process tree's resident memory grows past this (e.g. 200mb, 1gb; checked
    /// every second) is replaced gracefully, new first (PM2's max_memory_restart)
    /// [default: off]
    #[flag(long, value_name = "SIZE", value_parser = parse_size)]
    #[file(default, deserialize_with = "file::size", alias = "max_memory")]
    max_memory: u64,
    reload applied;

    /// A worker that has served this many connections (counted by the proxy or round-robin,
    /// or reported by the worker: REQUESTS=n) is replaced gracefully, new first (gunicorn's
    /// --max-requests) [default: off]
    #[flag(long, value_name = "N", value_parser = parse_request_count)]
    #[file(default, deserialize_with = "file::request_count", alias = "max_requests")]
    max_requests: u64,
    reload applied;

    /// Each worker's --max-requests is raised by a random 0 to this, so that workers are not
    /// all replaced at once [default: 0]
    #[flag(long, value_name = "J", value_parser = parse_request_count)]
    #[file(default, deserialize_with = "file::request_count", alias = "max_requests_jitter")]
    max_requests_jitter: u64 = 0,
    reload applied;

    /// Signal that asks a worker to finish in-flight work and exit [default: TERM]
    #[flag(long, value_parser = parse_signal)]
    #[file(default, deserialize_with = "file::signal", alias = "stop_signal")]
    stop_signal: Signal = Signal::SIGTERM,
    reload applied;

    /// Format of log lines on stdout/stderr [default: text]
    #[flag(long, value_enum)]
    #[file(default, deserialize_with = "file::choice", alias = "log_format")]
    log_format: LogFormat = LogFormat::Text,
    reload restart;

    /// Also write each slot's stdout and stderr, and herdsman's own lines, to files in this
    /// directory (created if missing): NAME-SLOT.out.log, NAME-SLOT.err.log and
    /// NAME.herdsman.log, timestamped as `herdsman logs` shows them [default: off]
    #[flag(long, value_name = "DIR")]
    #[file(alias = "log_dir")]
    log_dir: PathBuf,
    reload restart("log files", log_files_changed);

    /// Rotate a --log-dir file before it grows past this size (e.g. 10mb, 512kb)
    /// [default: 10mb]
    #[flag(long, value_name = "SIZE", value_parser = parse_log_size)]
    #[file(default, deserialize_with = "file::log_size", alias = "log_max_size")]
    log_max_size: ByteSize = ByteSize(10 << 20),
    reload restart("log files", log_files_changed);

    /// Rotated files kept of each --log-dir file (NAME-1.out.log.1 … .N, the oldest dropped;
    /// 0 keeps none) [default: 5]
    #[flag(long, value_name = "N", value_parser = parse_keep)]
    #[file(default, deserialize_with = "file::keep_count", alias = "log_keep")]
    log_keep: usize = 5,
    reload restart("log files", log_files_changed);

    /// Name of the cluster, for `herdsman status NAME` [default: the script's name for
    /// node, python… (`node server.js` → `server`), what `sh -c` runs, else the command's file
    /// name]
    #[flag(long)]
    #[file()]
    name: String,
    reload restart("name", name_changed);

    /// Shared state for workers: `embedded` (a Redis-protocol store in the primary), `off`, or
    /// a Redis URL handed to workers instead [default: embedded]
    #[flag(long, value_name = "embedded|off|URL", value_parser = parse_state)]
    #[file(default, deserialize_with = "file::state")]
    state: StateMode = StateMode::Embedded,
    reload restart("state", state_changed);

    /// Also serve the embedded store on this loopback TCP address (e.g. 127.0.0.1:6380)
    #[flag(long, value_name = "ADDRESS")]
    #[file(default, deserialize_with = "file::loopback_address", alias = "state_listen")]
    state_listen: SocketAddr,
    reload restart("state", state_changed);

    /// Keep the embedded store in this append-only file (fsynced every second, replayed at
    /// start) [default: memory only]
    #[flag(long, value_name = "PATH")]
    #[file(alias = "state_file")]
    state_file: PathBuf,
    reload restart("state", state_changed);

    /// Refuse writes that grow the embedded store past this size (e.g. 256mb) [default: none]
    #[flag(long, value_name = "SIZE", value_parser = parse_size)]
    #[file(default, deserialize_with = "file::size", alias = "state_max_memory")]
    state_max_memory: u64,
    reload restart("state", state_changed);

    /// Most clients the embedded store serves at once; one more gets Redis's "max number of
    /// clients reached". Lowered at start to fit the open-file limit [default: 10000]
    #[flag(long, value_name = "N", value_parser = parse_client_count)]
    #[file(default, deserialize_with = "file::client_count", alias = "state_max_clients")]
    state_max_clients: usize,
    reload restart("state", state_changed);

    /// Serve /metrics, health probes, the status API and a live dashboard over HTTP on this
    /// address (e.g. 127.0.0.1:9090; port 0 picks a free port, logged) [default: off]
    #[flag(long, value_name = "ADDRESS")]
    #[file(default, deserialize_with = "file::loopback_address")]
    admin: SocketAddr,
    reload restart;

    /// Token the admin server asks for (`Authorization: Bearer TOKEN`) on everything but
    /// /health, /ready and /live; required with a non-loopback --admin [default: none]
    #[flag(long, value_name = "TOKEN")]
    #[file(alias = "admin_token")]
    admin_token: String,
    env "HERDSMAN_ADMIN_TOKEN",
    reload restart;

    /// Give every worker an IPC channel to the primary: `--ipc` (JSON lines at
    /// $HERDSMAN_IPC_FD) or `--ipc node` (Node's process.send / process.on('message') and
    /// its cluster protocol); `auto`: `node` for a `node` command, else off
    /// [default: auto]
    #[flag(long, value_enum, num_args = 0..=1, default_missing_value = "on", value_name = "on|node|off|auto")]
    #[file(default, deserialize_with = "file::choice")]
    ipc: IpcSetting = IpcSetting::Auto,
    reload restart;
}

/// A new address needs new listening sockets; a new port 0 would pick another free port, so it
/// keeps the one in use.
fn address_changed(old: &Config, new: &Config) -> bool {
    old.address != new.address && new.address.port() != 0
}

/// A derived name follows the command, which reload changes; only one given is reported.
fn name_changed(old: &Config, new: &Config) -> bool {
    new.name_is_explicit && new.name != old.name
}

fn log_files_changed(old: &Config, new: &Config) -> bool {
    old.log_files != new.log_files
}

fn state_changed(old: &Config, new: &Config) -> bool {
    old.state != new.state || old.store != new.store
}

impl Default for RunSettings {
    /// Every default.
    fn default() -> Self {
        Settings::default().resolve()
    }
}
