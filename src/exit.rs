//! How a failure ends the process: the exit codes of `herdsman` and of programs built on
//! [`crate::Cluster`] (README, "Exit codes"), and [`report`], the one place where a failure is
//! printed (`herdsman: error: …`, with its causes) and becomes an exit code. The library's
//! functions return errors; only the binary and [`crate::Cluster::run`] come here.

use std::error::Error;
use std::process::ExitCode;

/// A runtime failure: the primary could not keep running; or a requested operation failed.
pub const FAILED: u8 = 1;
/// A usage or configuration error (clap uses 2 for usage errors too).
pub const USAGE: u8 = 2;
/// Start-up failed: the listening address (or the cluster's name) is taken or unusable.
pub const BIND: u8 = 3;
/// Start-up failed: no worker became ready.
pub const NO_WORKER_READY: u8 = 4;
/// No such cluster is running, or its control socket cannot be reached.
pub const NOT_RUNNING: u8 = 5;
/// A control command's reader went away (`herdsman logs -f | head`): 128 + SIGPIPE, the code a
/// shell shows for `cat` ended by its pipe.
pub const READER_GONE: u8 = 141;

/// A failure that ends the process, and the exit code it ends it with.
pub trait Failure: Error {
    fn exit_code(&self) -> u8;
}

/// Success, or the failure printed and its exit code.
pub fn exit_code<E: Failure>(result: Result<(), E>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => report(&error, error.exit_code()),
    }
}

/// Prints `error` and its causes as `herdsman: error: …` on stderr; returns `code`.
pub fn report(error: &dyn Error, code: u8) -> ExitCode {
    eprintln!("herdsman: error: {}", error_chain(error));
    ExitCode::from(code)
}

/// The error and its causes, `: `-separated, skipping causes its message already includes.
fn error_chain(error: &dyn Error) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer: {0}")]
    struct Outer(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("inner")]
    struct Inner(#[source] std::io::Error);

    #[test]
    fn causes_are_listed_once() {
        let error = Outer(Inner(std::io::Error::other("deepest")));
        assert_eq!(error_chain(&error), "outer: inner: deepest");
    }
}
