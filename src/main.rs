//! The `herdsman` command: parse the command line, run the library, map the outcome to an exit
//! code (documented in the README).

mod cli;

use std::process::ExitCode;

use clap::Parser;
use herdsman::primary::{self, RunError};
use tokio::sync::mpsc;

use cli::{Cli, Command, RunArgs};

/// A runtime failure: the primary could not keep running.
const EXIT_RUNTIME: u8 = 1;
/// A usage or configuration error (clap uses 2 for usage errors too).
const EXIT_USAGE: u8 = 2;
/// Start-up failed: the listening address could not be bound.
const EXIT_BIND: u8 = 3;
/// Start-up failed: no worker became ready.
const EXIT_NO_WORKER_READY: u8 = 4;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::ExecShim { command } => ExitCode::from(herdsman::shim::exec(&command) as u8),
        Command::Run(args) => run(args),
    }
}

fn run(args: RunArgs) -> ExitCode {
    let config = match args.into_settings().validate() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("herdsman: error: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    // One thread is plenty: the primary never touches the data path in these balance modes.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("herdsman: error: cannot start the async runtime: {error}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    let result = runtime.block_on(async {
        let (intents, intents_rx) = mpsc::unbounded_channel();
        let _signals = primary::forward_signals(intents).map_err(RunError::Setup)?;
        primary::run(config, intents_rx).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("herdsman: error: {}", error_chain(&error));
            ExitCode::from(match error {
                RunError::Bind(_) => EXIT_BIND,
                RunError::StartupFailed(_) => EXIT_NO_WORKER_READY,
                RunError::Setup(_) => EXIT_RUNTIME,
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
