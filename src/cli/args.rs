//! The command line: clap definitions, turned into [`RunFlags`] and control requests.
//!
//! The flags of `run` are the library's settings schema (`crate::config::Settings`, one row
//! per setting), flattened in: each is optional here, so that a flag not given leaves the setting
//! to herdsman.toml, then to the schema's default, which `--help` shows.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{RunFlags, Settings};
use crate::control::protocol::ScaleTarget;

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
    #[command(
        allow_negative_numbers = true,
        override_usage = "herdsman scale [OPTIONS] [NAME] <N|+K|-K>"
    )]
    Scale {
        /// [NAME] N|+K|-K: the cluster (default: the only one running), and the workers it
        /// should have (N), or how many more (+K) or fewer (-K)
        #[arg(num_args = 1..=2, required = true, value_name = "ARG")]
        args: Vec<String>,
        /// Print progress and the result as JSON lines
        #[arg(long)]
        json: bool,
    },
    /// Replace one worker, new before old.
    #[command(override_usage = "herdsman restart [OPTIONS] [NAME] <SLOT>")]
    Restart {
        /// [NAME] SLOT: the cluster (default: the only one running), and the slot to replace
        #[arg(num_args = 1..=2, required = true, value_name = "ARG")]
        args: Vec<String>,
        /// Print progress and the result as JSON lines
        #[arg(long)]
        json: bool,
    },
    /// Send a JSON message to a worker (or all) over the IPC channel (`run --ipc`).
    #[command(override_usage = "herdsman send [OPTIONS] [NAME] <SLOT|all> <JSON>")]
    Send {
        /// [NAME] SLOT|all JSON: the cluster (default: the only one running), the slot (or all),
        /// and the message, as JSON
        #[arg(num_args = 2..=3, required = true, value_name = "ARG")]
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
    /// Watch a cluster live in the terminal: workers, CPU and memory, a slot's log; act on keys.
    #[command(
        long_about = "Watch a cluster live in the terminal: the worker table (as `status`), each \
                      worker's CPU and memory over the last 10 minutes, and the log of the \
                      selected slot (as `logs -f --slot N`). Works over the control socket, like \
                      `status`; needs no --admin.",
        after_help = concat!(
            "Keys:\n",
            "  \u{2191}/\u{2193}, j          select a slot\n",
            "  r               reload (new workers before old, slot by slot)\n",
            "  + / -           scale up / down by one worker\n",
            "  k               restart the selected slot (new worker before old)\n",
            "  q, Esc, Ctrl-C  quit\n",
            "\n",
            "Exit codes: 0 after q; 5 when the cluster goes away (or none is running); ",
            "2 without a terminal; 128 + N on signal N (143 on SIGTERM)."
        )
    )]
    Monit {
        /// The cluster [default: the only one running]
        name: Option<String>,
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

pub fn parse_scale_target(text: &str) -> Result<ScaleTarget, crate::domain::ScaleError> {
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

    #[command(flatten)]
    pub settings: Settings,
}

impl RunArgs {
    pub fn into_flags(self) -> RunFlags {
        RunFlags {
            config: self.config,
            settings: self.settings,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::WorkerCount;
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
        let flags = (*args).into_flags().settings;
        assert_eq!(flags.workers, Some(WorkerCount::Exactly(3)));
        assert_eq!(flags.port, Some(0));
        assert_eq!(flags.host, None);
        assert_eq!(flags.command.unwrap(), ["node", "app.js", "--flag"]);
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
