//! Scaling: what is asked (`scale N`, `scale +K`, `scale -K`), what was done, and why not.

use serde::{Deserialize, Serialize};

use crate::balance::BindError;

/// `scale N`, `scale +K`, `scale -K`. Its serde form is the control protocol's `to` of a
/// `scale` request (`{"to": 4}`, `{"add": 1}`, `{"remove": 2}`; docs/control.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScaleTarget {
    To(usize),
    Add(usize),
    Remove(usize),
}

/// What a scale did (its `Display` is the line logged and answered).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scaled {
    /// The cluster already had that many workers.
    Already { workers: usize },
    /// Slots `from + 1 ..= to` started.
    Up { from: usize, to: usize },
    /// The workers of slots `to + 1 ..= from` are draining.
    Down { from: usize, to: usize },
}

/// Why a scale was refused, or its target not understood.
#[derive(Debug, thiserror::Error)]
pub enum ScaleError {
    #[error("`{text}` is not a worker count; write N, +K or -K (e.g. 4, +1, -2)")]
    NotACount { text: String },
    #[error("a cluster needs at least 1 worker; use `herdsman stop` to stop it")]
    NoWorkerLeft,
    #[error(
        "`scale -{fewer}` would leave no worker (the cluster has {current}); {}",
        keep_one(*current)
    )]
    RemovesAll { fewer: usize, current: usize },
    #[error("at most {max} workers are supported")]
    TooMany { max: usize },
    #[error("the cluster is stopping")]
    Stopping,
    #[error("a reload is in progress; scale when it ends")]
    Reloading,
    /// The sockets of the new slots could not be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
}

fn keep_one(current: usize) -> String {
    match current {
        1 => "a cluster needs at least 1: use `herdsman stop` to stop it".to_string(),
        _ => format!(
            "a cluster needs at least 1: `scale -{}` leaves 1, `herdsman stop` stops it",
            current - 1
        ),
    }
}

impl ScaleTarget {
    /// The worker count this asks for, starting from `current`; an error, saying what to do
    /// instead, when that would leave no worker (as `scale 0` is refused) or more than
    /// [`crate::config::MAX_WORKERS`].
    pub fn resolve(self, current: usize) -> Result<usize, ScaleError> {
        let to = match self {
            ScaleTarget::To(0) => return Err(ScaleError::NoWorkerLeft),
            ScaleTarget::To(count) => count,
            ScaleTarget::Add(more) => current.saturating_add(more),
            ScaleTarget::Remove(fewer) if fewer >= current => {
                return Err(ScaleError::RemovesAll { fewer, current })
            }
            ScaleTarget::Remove(fewer) => current - fewer,
        };
        let max = crate::config::MAX_WORKERS;
        match to > max {
            true => Err(ScaleError::TooMany { max }),
            false => Ok(to),
        }
    }
}

impl std::str::FromStr for ScaleTarget {
    type Err = ScaleError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let number = |digits: &str| {
            digits.parse::<usize>().map_err(|_| ScaleError::NotACount {
                text: text.to_string(),
            })
        };
        match text.as_bytes().first() {
            Some(b'+') => Ok(ScaleTarget::Add(number(&text[1..])?)),
            Some(b'-') => Ok(ScaleTarget::Remove(number(&text[1..])?)),
            _ => match number(text)? {
                0 => Err(ScaleError::NoWorkerLeft),
                count => Ok(ScaleTarget::To(count)),
            },
        }
    }
}

impl std::fmt::Display for Scaled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Scaled::Already { workers: 1 } => write!(f, "already at 1 worker"),
            Scaled::Already { workers } => write!(f, "already at {workers} workers"),
            Scaled::Up { from, to } => {
                write!(f, "scaled {from} → {to}: started {}", slots(from + 1, to))
            }
            Scaled::Down { from, to } => {
                write!(f, "scaled {from} → {to}: draining {}", slots(to + 1, from))
            }
        }
    }
}

/// `slot 3`, `slots 3 and 4`, `slots 3 to 6`.
fn slots(first: usize, last: usize) -> String {
    match last - first {
        0 => format!("slot {first}"),
        1 => format!("slots {first} and {last}"),
        _ => format!("slots {first} to {last}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_targets() {
        assert_eq!("4".parse::<ScaleTarget>().unwrap(), ScaleTarget::To(4));
        assert_eq!("+2".parse::<ScaleTarget>().unwrap(), ScaleTarget::Add(2));
        assert_eq!("-1".parse::<ScaleTarget>().unwrap(), ScaleTarget::Remove(1));
        assert!(matches!(
            "0".parse::<ScaleTarget>(),
            Err(ScaleError::NoWorkerLeft)
        ));
        assert_eq!(
            "x".parse::<ScaleTarget>().unwrap_err().to_string(),
            "`x` is not a worker count; write N, +K or -K (e.g. 4, +1, -2)"
        );
        assert_eq!(
            ScaleTarget::To(0).resolve(3).unwrap_err().to_string(),
            "a cluster needs at least 1 worker; use `herdsman stop` to stop it"
        );
        assert_eq!(
            ScaleTarget::Remove(5).resolve(2).unwrap_err().to_string(),
            "`scale -5` would leave no worker (the cluster has 2); a cluster needs at \
             least 1: `scale -1` leaves 1, `herdsman stop` stops it"
        );
        assert_eq!(
            ScaleTarget::Remove(1).resolve(1).unwrap_err().to_string(),
            "`scale -1` would leave no worker (the cluster has 1); a cluster needs at \
             least 1: use `herdsman stop` to stop it"
        );
        assert_eq!(ScaleTarget::Remove(2).resolve(3).unwrap(), 1);
        assert_eq!(ScaleTarget::Add(2).resolve(3).unwrap(), 5);
        assert_eq!(
            ScaleTarget::To(1_000_000)
                .resolve(2)
                .unwrap_err()
                .to_string(),
            "at most 1024 workers are supported"
        );
        assert!(ScaleTarget::Add(1023).resolve(2).is_err());
        assert_eq!(ScaleTarget::Add(1022).resolve(2).unwrap(), 1024);
    }

    #[test]
    fn what_a_scale_did_reads_as_before() {
        let lines: Vec<String> = [
            Scaled::Already { workers: 1 },
            Scaled::Already { workers: 3 },
            Scaled::Up { from: 1, to: 2 },
            Scaled::Up { from: 2, to: 4 },
            Scaled::Down { from: 6, to: 2 },
        ]
        .iter()
        .map(Scaled::to_string)
        .collect();
        assert_eq!(
            lines,
            [
                "already at 1 worker",
                "already at 3 workers",
                "scaled 1 → 2: started slot 2",
                "scaled 2 → 4: started slots 3 and 4",
                "scaled 6 → 2: draining slots 3 to 6",
            ]
        );
    }
}
