//! The `herdsman` command: parse the command line, run the library, map the outcome to an exit
//! code (documented in the README).

mod cli;
mod commands;

use std::process::ExitCode;

use clap::Parser;
use herdsman::control::server::ControlError;
use herdsman::primary::{self, ConfigReader, RunError};
use herdsman::state::StateError;
use tokio::sync::mpsc;

use cli::{Cli, Command, RunArgs};

/// A runtime failure: the primary could not keep running; or a requested operation failed.
const EXIT_FAILED: u8 = 1;
/// A usage or configuration error (clap uses 2 for usage errors too).
const EXIT_USAGE: u8 = 2;
/// Start-up failed: the listening address (or the cluster's name) is taken or cannot be used.
const EXIT_BIND: u8 = 3;
/// Start-up failed: no worker became ready.
const EXIT_NO_WORKER_READY: u8 = 4;
/// No such cluster is running, or its control socket cannot be reached.
const EXIT_NOT_RUNNING: u8 = 5;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::ExecShim { command } => ExitCode::from(herdsman::shim::exec(&command) as u8),
        Command::Run(args) => run(*args),
        command => commands::run(command),
    }
}

fn run(args: RunArgs) -> ExitCode {
    let flags = args.into_flags();
    let config = match flags.load() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("herdsman: error: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    // `reload` reads herdsman.toml again, under the same flags.
    let reread: Option<ConfigReader> = flags.file().map(|_| {
        let flags = flags.clone();
        Box::new(move || flags.load().map_err(|error| error.to_string())) as ConfigReader
    });
    // One thread is plenty: the primary never touches the data path in these balance modes.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("herdsman: error: cannot start the async runtime: {error}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let result = runtime.block_on(async {
        let (intents, intents_rx) = mpsc::unbounded_channel();
        let _signals = primary::forward_signals(intents.clone()).map_err(RunError::Setup)?;
        primary::run(config, intents_rx, intents, reread).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("herdsman: error: {}", error_chain(&error));
            ExitCode::from(match error {
                RunError::Bind(_) | RunError::Control(ControlError::NameTaken { .. }) => EXIT_BIND,
                RunError::Control(ControlError::Io { .. }) => EXIT_FAILED,
                RunError::StartupFailed(_) => EXIT_NO_WORKER_READY,
                RunError::Setup(_) => EXIT_FAILED,
                RunError::State(StateError::Listen { .. }) => EXIT_BIND,
                RunError::State(StateError::File(_)) => EXIT_USAGE,
                RunError::State(StateError::Thread(_)) => EXIT_FAILED,
            })
        }
    }
}

/// The error and its causes, `: `-separated, skipping causes its message already includes.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
