//! The command line: clap definitions, turned into [`RunFlags`] and control requests.
//!
//! `run` flags are all optional here: a flag not given leaves the setting to herdsman.toml, then
//! to the default (see `config`). The defaults shown in `--help` are those.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use nix::sys::signal::Signal;

use herdsman::config::{self, Balance, LogFormat, ReadyMode, RunFlags, WorkerCount};
use herdsman::control::protocol::ScaleTarget;
use herdsman::ipc::IpcMode;
use herdsman::state::StateMode;

/// Run any server as a cluster of worker processes sharing one port.
#[derive(Debug, Parser)]
#[command(name = "herdsman", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run COMMAND as N supervised workers that share one listening port.
    Run(Box<RunArgs>),
    /// List the clusters running for this user.
    Ls {
        /// Print JSON (one status object per cluster) instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Show every worker of a cluster: state, pid, generation, uptime, restarts, CPU, memory.
    Status {
        /// The cluster [default: the only one running]
        name: Option<String>,
        /// Print the status as JSON
        #[arg(long)]
        json: bool,
    },
    /// Replace every worker, new before old, without dropping a request (also: SIGHUP).
    Reload {
        /// The cluster [default: the only one running]
        name: Option<String>,
        /// How many slots to replace at a time
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
        parallel: u16,
        /// Print progress and the result as JSON lines
        #[arg(long)]
        json: bool,
    },
    /// Change the number of workers: N, +K or -K (also: SIGTTIN, SIGTTOU).
    #[command(allow_negative_numbers = true)]
    Scale {
        /// [NAME] N|+K|-K
        #[arg(num_args = 1..=2, required = true, value_name = "ARGS")]
        args: Vec<String>,
        /// Print progress and the result as JSON lines
        #[arg(long)]
        json: bool,
    },
    /// Replace one worker, new before old.
    Restart {
        /// [NAME] SLOT
        #[arg(num_args = 1..=2, required = true, value_name = "ARGS")]
        args: Vec<String>,
        /// Print progress and the result as JSON lines
        #[arg(long)]
        json: bool,
    },
    /// Send a JSON message to a worker (or all) over the IPC channel (`run --ipc`).
    Send {
        /// [NAME] SLOT|all JSON
        #[arg(num_args = 2..=3, required = true, value_name = "ARGS")]
        args: Vec<String>,
        /// Print the result as JSON
        #[arg(long)]
        json: bool,
    },
    /// Stop a cluster gracefully (as SIGTERM does) and wait until it has exited.
    Stop {
        /// The cluster [default: the only one running]
        name: Option<String>,
        /// Print progress and the result as JSON lines
        #[arg(long)]
        json: bool,
    },
    /// Show a cluster's recent log lines, then follow with -f.
    Logs {
        /// The cluster [default: the only one running]
        name: Option<String>,
        /// Keep printing new lines until interrupted
        #[arg(short, long)]
        follow: bool,
        /// Only the lines of this slot's workers
        #[arg(long)]
        slot: Option<usize>,
        /// How many recent lines to print first
        #[arg(short = 'n', long, default_value_t = 200)]
        lines: usize,
        /// Print the lines as JSON objects
        #[arg(long)]
        json: bool,
    },
    /// Internal: the step between fork and the worker command (sets LISTEN_PID to the worker's
    /// own pid, moves the listening sockets to fd 3…, then execs COMMAND).
    #[command(name = "__exec-shim", hide = true)]
    ExecShim {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<OsString>,
    },
}

/// `[NAME] VALUE`: the name is optional, the value is not.
pub fn name_and_value(args: &[String]) -> (Option<&str>, &str) {
    match args {
        [name, value] => (Some(name.as_str()), value.as_str()),
        [value] => (None, value.as_str()),
        _ => unreachable!("clap takes 1 or 2 values"),
    }
}

pub fn parse_scale_target(text: &str) -> Result<ScaleTarget, herdsman::domain::ScaleError> {
    text.parse()
}

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  herdsman run --workers max --port 8000 -- node server.js\n  \
                        herdsman run                     # reads ./herdsman.toml"
)]
pub struct RunArgs {
    /// Read settings from this file [default: ./herdsman.toml when no COMMAND is given]
    #[arg(short, long, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Number of workers, or `max` for one per CPU [default: CPUs, or $HERDSMAN_WORKERS]
    #[arg(short = 'w', long, env = "HERDSMAN_WORKERS", value_parser = parse_workers)]
    pub workers: Option<WorkerCount>,

    /// Address to listen on (IP or host name) [default: 0.0.0.0]
    #[arg(long)]
    pub host: Option<String>,

    /// Port to listen on; 0 picks a free port (printed on start) [default: 8000]
    #[arg(short, long)]
    pub port: Option<u16>,

    /// How workers share the port [default: reuseport]
    #[arg(long, value_enum)]
    pub balance: Option<BalanceArg>,

    /// When a new worker counts as ready: `delay` = --ready-delay after its start, and after
    /// its ready signal if it sends one (READY=1 on $NOTIFY_SOCKET; with --ipc, a `ready` frame
    /// or process.send('ready')); `notify` = --ready-delay after its ready signal
    /// [default: delay]
    #[arg(long, value_enum)]
    pub ready: Option<ReadyArg>,

    /// How long a worker must stay up, after its start and after its READY=1, to count as ready
    /// [default: 1s]
    #[arg(long, value_parser = config::parse_duration)]
    pub ready_delay: Option<Duration>,

    /// How long a new worker may take to become ready before it is stopped [default: 30s]
    #[arg(long, value_parser = config::parse_duration)]
    pub ready_timeout: Option<Duration>,

    /// Signal that asks a worker to finish in-flight work and exit [default: TERM]
    #[arg(long, value_parser = config::parse_signal)]
    pub stop_signal: Option<Signal>,

    /// How long a stopping worker may take before it is killed (SIGKILL) [default: 10s]
    #[arg(long, value_parser = config::parse_duration)]
    pub kill_timeout: Option<Duration>,

    /// A ready worker that leaves a connection unaccepted on the cluster's socket this long is
    /// reported `not accepting` and replaced [default: 5s]
    #[arg(long, value_parser = config::parse_duration)]
    pub accept_timeout: Option<Duration>,

    /// Name of the cluster, for `herdsman status NAME` [default: the script's name for
    /// node, python… (`node server.js` → `server`), else the command's file name]
    #[arg(long)]
    pub name: Option<String>,

    /// Format of log lines on stdout/stderr [default: text]
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormatArg>,

    /// Shared state for workers: `embedded` (a Redis-protocol store in the primary), `off`, or
    /// a Redis URL handed to workers instead [default: embedded]
    #[arg(long, value_name = "embedded|off|URL", value_parser = config::parse_state)]
    pub state: Option<StateMode>,

    /// Also serve the embedded store on this loopback TCP address (e.g. 127.0.0.1:6380)
    #[arg(long, value_name = "ADDRESS")]
    pub state_listen: Option<SocketAddr>,

    /// Keep the embedded store in this append-only file (fsynced every second, replayed at
    /// start) [default: memory only]
    #[arg(long, value_name = "PATH")]
    pub state_file: Option<PathBuf>,

    /// Refuse writes that grow the embedded store past this size (e.g. 256mb) [default: none]
    #[arg(long, value_name = "SIZE", value_parser = config::parse_size)]
    pub state_max_memory: Option<u64>,

    /// Most clients the embedded store serves at once; one more gets Redis's "max number of
    /// clients reached". Lowered at start to fit the open-file limit [default: 10000]
    #[arg(long, value_name = "N", value_parser = config::parse_client_count)]
    pub state_max_clients: Option<usize>,

    /// Give every worker an IPC channel to the primary: `--ipc` (JSON lines at
    /// $HERDSMAN_IPC_FD) or `--ipc node` (Node's process.send / process.on('message'))
    #[arg(long, value_enum, num_args = 0..=1, default_missing_value = "on", value_name = "on|node|off")]
    pub ipc: Option<IpcArg>,

    /// The server command and its arguments, after `--`
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

fn parse_workers(text: &str) -> Result<WorkerCount, String> {
    text.parse()
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum BalanceArg {
    Shared,
    Reuseport,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ReadyArg {
    Delay,
    Notify,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum IpcArg {
    On,
    Node,
    Off,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormatArg {
    Text,
    Json,
}

impl RunArgs {
    pub fn into_flags(self) -> RunFlags {
        RunFlags {
            config: self.config,
            command: self.command,
            workers: self.workers,
            host: self.host,
            port: self.port,
            balance: self.balance.map(|balance| match balance {
                BalanceArg::Shared => Balance::Shared,
                BalanceArg::Reuseport => Balance::Reuseport,
            }),
            ready: self.ready.map(|ready| match ready {
                ReadyArg::Delay => ReadyMode::Delay,
                ReadyArg::Notify => ReadyMode::Notify,
            }),
            ready_delay: self.ready_delay,
            ready_timeout: self.ready_timeout,
            stop_signal: self.stop_signal,
            kill_timeout: self.kill_timeout,
            accept_timeout: self.accept_timeout,
            name: self.name,
            log_format: self.log_format.map(|format| match format {
                LogFormatArg::Text => LogFormat::Text,
                LogFormatArg::Json => LogFormat::Json,
            }),
            state: self.state,
            state_listen: self.state_listen,
            state_file: self.state_file,
            state_max_memory: self.state_max_memory,
            state_max_clients: self.state_max_clients,
            ipc: self.ipc.map(|ipc| match ipc {
                IpcArg::On => IpcMode::On,
                IpcArg::Node => IpcMode::Node,
                IpcArg::Off => IpcMode::Off,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_with_command() {
        let cli = Cli::try_parse_from([
            "herdsman", "run", "-w", "3", "--port", "0", "--", "node", "app.js", "--flag",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("expected run")
        };
        let flags = (*args).into_flags();
        assert_eq!(flags.workers, Some(WorkerCount::Exactly(3)));
        assert_eq!(flags.port, Some(0));
        assert_eq!(flags.host, None);
        assert_eq!(flags.command, ["node", "app.js", "--flag"]);
    }

    #[test]
    fn bad_values_are_refused() {
        let error = Cli::try_parse_from(["herdsman", "run", "--kill-timeout", "soon", "--", "x"])
            .unwrap_err();
        assert!(
            error.to_string().contains("`soon` is not a duration"),
            "{error}"
        );
        let error =
            Cli::try_parse_from(["herdsman", "run", "--workers", "0", "--", "x"]).unwrap_err();
        assert!(error.to_string().contains("at least 1 worker"), "{error}");
    }

    #[test]
    fn scale_takes_an_optional_name_and_a_signed_count() {
        for (argv, name, value) in [
            (vec!["herdsman", "scale", "4"], None, "4"),
            (vec!["herdsman", "scale", "-1"], None, "-1"),
            (vec!["herdsman", "scale", "api", "+2"], Some("api"), "+2"),
            (vec!["herdsman", "scale", "api", "-2"], Some("api"), "-2"),
        ] {
            let cli = Cli::try_parse_from(&argv).unwrap();
            let Command::Scale { args, .. } = cli.command else {
                panic!("expected scale")
            };
            assert_eq!(name_and_value(&args), (name, value), "{argv:?}");
        }
    }
}
