//! How a worker process ended.

use std::fmt;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use nix::sys::signal::Signal;

/// How a worker process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitReason {
    Code(i32),
    Signal(i32),
    /// The primary could not learn how it ended (a wait error).
    Unknown,
}

impl From<ExitStatus> for ExitReason {
    fn from(status: ExitStatus) -> Self {
        match (status.code(), status.signal()) {
            (Some(code), _) => ExitReason::Code(code),
            (None, Some(signal)) => ExitReason::Signal(signal),
            (None, None) => ExitReason::Unknown,
        }
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ExitReason::Code(code) => write!(f, "exited with code {code}"),
            ExitReason::Signal(number) => match Signal::try_from(number) {
                Ok(signal) => write!(f, "was killed by {}", signal.as_str()),
                Err(_) => write!(f, "was killed by signal {number}"),
            },
            ExitReason::Unknown => write!(f, "exited (status unknown)"),
        }
    }
}

impl ExitReason {
    /// The exit code, when it exited rather than being killed.
    pub fn code(self) -> Option<i32> {
        match self {
            ExitReason::Code(code) => Some(code),
            _ => None,
        }
    }

    /// The name of the signal that killed it (`SIGKILL`), or its number when it has no name.
    pub fn signal_name(self) -> Option<String> {
        match self {
            ExitReason::Signal(number) => Some(
                Signal::try_from(number)
                    .map_or(number.to_string(), |signal| signal.as_str().to_string()),
            ),
            _ => None,
        }
    }

    /// How `status` says a slot's last worker ended: `not accepting; ` first for one replaced
    /// for leaving connections unaccepted.
    pub fn shown(self, not_accepting: bool) -> String {
        match not_accepting {
            true => format!("not accepting; {self}"),
            false => self.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_reasons_read_well() {
        assert_eq!(ExitReason::Code(3).to_string(), "exited with code 3");
        assert_eq!(ExitReason::Signal(9).to_string(), "was killed by SIGKILL");
        assert_eq!(
            ExitReason::from(ExitStatus::from_raw(libc::SIGSEGV)),
            ExitReason::Signal(libc::SIGSEGV)
        );
        assert_eq!(
            ExitReason::from(ExitStatus::from_raw(2 << 8)),
            ExitReason::Code(2)
        );
    }
}
