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
    let cli = Cli::try_parse().unwrap_or_else(|error| with_tips(error).exit());
    match cli.command {
        Command::ExecShim { command } => ExitCode::from(crate::shim::exec(&command) as u8),
        Command::Run(args) => run(*args),
        command => commands::run(command),
    }
}

/// clap's error, with a tip where a newcomer's slip is plain: `herdsman run node app.js` (the
/// server command without the `--` before it).
fn with_tips(mut error: clap::Error) -> clap::Error {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let in_run = std::env::args().nth(1).as_deref() == Some("run");
    let word = match error.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(word)) => Some(word.clone()),
        _ => None,
    };
    if let (ErrorKind::UnknownArgument, true, Some(word)) = (error.kind(), in_run, word) {
        if !word.starts_with('-') {
            let tip =
                format!("the server command goes after `--`: herdsman run [OPTIONS] -- {word} …");
            error.insert(
                ContextKind::Suggested,
                ContextValue::StyledStrs(vec![tip.into()]),
            );
        }
    }
    error
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
