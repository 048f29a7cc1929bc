//! A line of the primary's log: its own messages and its workers' output.

use std::time::SystemTime;

/// One line as the hub keeps it: nothing is formatted until someone reads it.
#[derive(Clone, Debug)]
pub struct LogEntry {
    pub time: SystemTime,
    /// The worker's slot; `None` for the primary's own messages.
    pub slot: Option<usize>,
    pub pid: u32,
    /// `stdout`, `stderr` or `herdsman`.
    pub stream: &'static str,
    pub line: String,
}
