//! The `herdsman` command line (feature `cli`): its flags (`args`), the commands that talk to a
//! running cluster (`commands`), the terminal monitor (`monit`), and `run`, which starts one. The binary (`src/main.rs`) only
//! calls [`main`]; the code lives here so that everything but the library's public API stays
//! private to the crate.

mod args;
mod commands;
mod monit;

use std::process::ExitCode;

use clap::Parser;

use crate::exit::USAGE as EXIT_USAGE;
use crate::primary::{self, ConfigReader};
use args::{Cli, Command, RunArgs};

/// What `herdsman` does with its command line; the exit code is documented in the README.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::ExecShim { command } => ExitCode::from(crate::shim::exec(&command) as u8),
        Command::Run(args) => run(*args),
        command => commands::run(command),
    }
}

fn run(args: RunArgs) -> ExitCode {
    let flags = args.into_flags();
    let config = match flags.load() {
        Ok(config) => config,
        Err(error) => return crate::exit::report(&error, EXIT_USAGE),
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
    crate::exit::exit_code(crate::launch::run_blocking(config, reread, |_| None))
}
