//! The `herdsman` command: parse the command line, run the library, map the outcome to an exit
//! code (documented in the README).

mod cli;
mod commands;

use std::process::ExitCode;

use clap::Parser;
use herdsman::primary::{self, ConfigReader, RunError};
use tokio::sync::mpsc;

use cli::{Cli, Command, RunArgs};

use herdsman::primary::exit::{
    FAILED as EXIT_FAILED, NOT_RUNNING as EXIT_NOT_RUNNING, USAGE as EXIT_USAGE,
};

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
            ExitCode::from(error.exit_code())
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
