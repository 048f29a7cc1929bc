//! The most recent log lines, bounded in lines and bytes, for `herdsman logs`, and the stream of
//! new ones for the clients following them (`herdsman logs -f`).

use std::collections::VecDeque;
use std::sync::Mutex;
use tokio::sync::broadcast;

use crate::domain::LogEntry;

/// How many recent lines the hub keeps, at most…
const RING_LINES: usize = 5000;
/// …and how many bytes of line text, so that a chatty worker cannot grow the primary.
const RING_BYTES: usize = 2 * 1024 * 1024;
/// New lines a slow follower may fall behind by before it misses some. One queue for every
/// follower, which keeps its last lines even when nobody follows any more: 16 MiB at most, at
/// 16 KiB a line.
pub const FOLLOW_QUEUE: usize = 1024;

/// Recent log lines, for `herdsman logs`, and the stream of new ones, for `herdsman logs -f`.
/// Lines are numbered, so that a follower that read the recent lines can skip the new lines it
/// has already seen.
pub struct LogHub {
    ring: Mutex<Ring>,
    follow: broadcast::Sender<(u64, LogEntry)>,
}

#[derive(Default)]
struct Ring {
    lines: VecDeque<(u64, LogEntry)>,
    bytes: usize,
    next: u64,
}

impl Default for LogHub {
    fn default() -> Self {
        Self::new()
    }
}

impl LogHub {
    pub fn new() -> Self {
        LogHub {
            ring: Mutex::new(Ring::default()),
            follow: broadcast::channel(FOLLOW_QUEUE).0,
        }
    }

    /// Keeps `entry`, and hands it to the clients following, if any. On the path of every log
    /// line: it copies nothing unless someone follows, and formats nothing.
    pub fn push(&self, entry: LogEntry) {
        let mut ring = self
            .ring
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let number = ring.next;
        ring.next += 1;
        ring.bytes += entry.line.len();
        if self.follow.receiver_count() > 0 {
            // A follower that went away meanwhile is fine.
            let _ = self.follow.send((number, entry.clone()));
        }
        ring.lines.push_back((number, entry));
        while ring.lines.len() > RING_LINES || ring.bytes > RING_BYTES {
            let Some((_, old)) = ring.lines.pop_front() else {
                break;
            };
            ring.bytes -= old.line.len();
        }
    }

    /// The last `count` lines (of `slot`'s workers only, when given), oldest first, and the
    /// number of the last line seen.
    pub fn recent(&self, slot: Option<usize>, count: usize) -> (Vec<LogEntry>, Option<u64>) {
        let ring = self
            .ring
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let last = ring.lines.back().map(|(number, _)| *number);
        let mut lines: Vec<LogEntry> = ring
            .lines
            .iter()
            .rev()
            .filter(|(_, entry)| slot.is_none() || entry.slot == slot)
            .take(count)
            .map(|(_, entry)| entry.clone())
            .collect();
        lines.reverse();
        (lines, last)
    }

    /// New lines from now on, numbered. Subscribe before reading [`LogHub::recent`] so that no
    /// line falls between the two.
    pub fn subscribe(&self) -> broadcast::Receiver<(u64, LogEntry)> {
        self.follow.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;

    fn line(slot: usize, text: &str) -> LogEntry {
        LogEntry {
            time: SystemTime::UNIX_EPOCH,
            slot: Some(slot),
            pid: 1,
            stream: "stdout",
            line: text.into(),
        }
    }

    #[test]
    fn hub_keeps_recent_lines_per_slot_and_numbers_them() {
        let hub = LogHub::new();
        let mut follower = hub.subscribe();
        for index in 0..10 {
            hub.push(line(index % 2 + 1, &format!("line {index}")));
        }
        let (all, last) = hub.recent(None, 3);
        assert_eq!(
            all.iter().map(|l| l.line.as_str()).collect::<Vec<_>>(),
            ["line 7", "line 8", "line 9"]
        );
        assert_eq!(last, Some(9));
        let (slot_two, _) = hub.recent(Some(2), 2);
        assert_eq!(
            slot_two.iter().map(|l| l.line.as_str()).collect::<Vec<_>>(),
            ["line 7", "line 9"]
        );
        assert_eq!(follower.try_recv().unwrap().0, 0);
    }

    #[test]
    fn hub_is_bounded_in_lines() {
        let hub = LogHub::new();
        for index in 0..RING_LINES + 10 {
            hub.push(line(1, &format!("{index}")));
        }
        let (lines, _) = hub.recent(None, usize::MAX);
        assert_eq!(lines.len(), RING_LINES);
        assert_eq!(lines[0].line, "10");
    }
}
