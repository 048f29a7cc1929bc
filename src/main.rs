//! The `herdsman` command. Its code is the library's (`herdsman::cli`, feature `cli`), so that
//! the library keeps everything but its public API private; the exit codes are in the README.

#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    herdsman::cli::main()
}
