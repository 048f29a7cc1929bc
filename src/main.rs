//! The `herdsman` command: parse the command line, run the library, map the outcome to an exit
//! code (documented in the README).

#![forbid(unsafe_code)]

mod cli;
mod commands;

use std::process::ExitCode;

use clap::Parser;
use herdsman::primary::{self, ConfigReader};

use cli::{Cli, Command, RunArgs};

use herdsman::exit::{FAILED as EXIT_FAILED, NOT_RUNNING as EXIT_NOT_RUNNING, USAGE as EXIT_USAGE};

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
        Err(error) => return herdsman::exit::report(&error, EXIT_USAGE),
    };
    // `reload` reads herdsman.toml again, under the same flags.
    let reread: Option<ConfigReader> = flags.file().map(|_| {
        let flags = flags.clone();
        Box::new(move || flags.load()) as ConfigReader
    });
    // Orphans among the cluster's processes come to the primary, which reaps them; `herdsman
    // run` starts no other child whose exit status it could steal.
    if let Err(error) = primary::adopt_orphans() {
        eprintln!("herdsman: warning: cannot become a child subreaper: {error}");
    }
    herdsman::exit::exit_code(herdsman::launch::run_blocking(config, reread, |_| None))
}
