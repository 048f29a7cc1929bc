//! The command line: clap definitions, turned into [`RunSettings`] for validation.

use std::ffi::OsString;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use nix::sys::signal::Signal;

use herdsman::config::{self, Balance, LogFormat, ReadyMode, RunSettings, WorkerCount};

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
    Run(RunArgs),
    /// Internal: the step between fork and the worker command (sets LISTEN_PID to the worker's
    /// own pid, moves the listening sockets to fd 3…, then execs COMMAND).
    #[command(name = "__exec-shim", hide = true)]
    ExecShim {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<OsString>,
    },
}

#[derive(Debug, Args)]
#[command(after_help = "Example:\n  herdsman run --workers max --port 8000 -- node server.js")]
pub struct RunArgs {
    /// Number of workers, or `max` for one per CPU [default: CPUs, or $HERDSMAN_WORKERS]
    #[arg(short = 'w', long, env = "HERDSMAN_WORKERS", value_parser = parse_workers)]
    pub workers: Option<WorkerCount>,

    /// Address to listen on (IP or host name)
    #[arg(long, default_value = "0.0.0.0")]
    pub host: String,

    /// Port to listen on; 0 picks a free port (printed on start)
    #[arg(short, long, default_value_t = 8000)]
    pub port: u16,

    /// How workers share the port
    #[arg(long, value_enum, default_value_t = BalanceArg::Reuseport)]
    pub balance: BalanceArg,

    /// When a new worker counts as ready: `delay` = READY=1 on $NOTIFY_SOCKET or after
    /// --ready-delay; `notify` = READY=1 only
    #[arg(long, value_enum, default_value_t = ReadyArg::Delay)]
    pub ready: ReadyArg,

    /// With --ready delay: how long a worker must stay up to count as ready
    #[arg(long, default_value = "1s", value_parser = config::parse_duration)]
    pub ready_delay: Duration,

    /// How long a new worker may take to become ready before it is stopped
    #[arg(long, default_value = "30s", value_parser = config::parse_duration)]
    pub ready_timeout: Duration,

    /// Signal that asks a worker to finish in-flight work and exit
    #[arg(long, default_value = "TERM", value_parser = config::parse_signal)]
    pub stop_signal: Signal,

    /// How long a stopping worker may take before it is killed (SIGKILL)
    #[arg(long, default_value = "10s", value_parser = config::parse_duration)]
    pub kill_timeout: Duration,

    /// Name of the cluster [default: the command's file name]
    #[arg(long)]
    pub name: Option<String>,

    /// Format of log lines on stdout/stderr
    #[arg(long, value_enum, default_value_t = LogFormatArg::Text)]
    pub log_format: LogFormatArg,

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
pub enum LogFormatArg {
    Text,
    Json,
}

impl RunArgs {
    pub fn into_settings(self) -> RunSettings {
        RunSettings {
            command: self.command,
            workers: self.workers.unwrap_or(WorkerCount::Max),
            host: self.host,
            port: self.port,
            balance: match self.balance {
                BalanceArg::Shared => Balance::Shared,
                BalanceArg::Reuseport => Balance::Reuseport,
            },
            ready: match self.ready {
                ReadyArg::Delay => ReadyMode::Delay,
                ReadyArg::Notify => ReadyMode::Notify,
            },
            ready_delay: self.ready_delay,
            ready_timeout: self.ready_timeout,
            stop_signal: self.stop_signal,
            kill_timeout: self.kill_timeout,
            name: self.name,
            log_format: match self.log_format {
                LogFormatArg::Text => LogFormat::Text,
                LogFormatArg::Json => LogFormat::Json,
            },
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
        let settings = args.into_settings();
        assert_eq!(settings.workers, WorkerCount::Exactly(3));
        assert_eq!(settings.port, 0);
        assert_eq!(settings.command, ["node", "app.js", "--flag"]);
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
}
