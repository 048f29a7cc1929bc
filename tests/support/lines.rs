//! Lines read from the primary's output streams as they come, and waits on them with a deadline.

use std::io::{BufRead, BufReader, Read};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::DEADLINE;

/// Lines read from one of the primary's output streams, shared with the reading thread.
#[derive(Clone, Default)]
pub struct Lines(Arc<(Mutex<LinesState>, Condvar)>);

#[derive(Default)]
struct LinesState {
    lines: Vec<String>,
    closed: bool,
}

impl Lines {
    pub fn read_from(stream: impl Read + Send + 'static) -> Lines {
        let lines = Lines::default();
        let shared = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                let (state, changed) = &*shared.0;
                state.lock().unwrap().lines.push(line);
                changed.notify_all();
            }
            let (state, changed) = &*shared.0;
            state.lock().unwrap().closed = true;
            changed.notify_all();
        });
        lines
    }

    pub fn snapshot(&self) -> Vec<String> {
        self.0 .0.lock().unwrap().lines.clone()
    }

    /// Waits until `count` lines satisfy `matches`; returns them.
    pub fn wait_for_count(&self, count: usize, matches: impl Fn(&str) -> bool) -> Vec<String> {
        self.wait_for_count_within(DEADLINE, count, matches)
    }

    /// Waits for the first line containing `text`, for longer than [`DEADLINE`] (a test that
    /// pushes hundreds of megabytes through the primary).
    pub fn wait_for_within(&self, within: Duration, text: &str) -> String {
        self.wait_for_count_within(within, 1, |line| line.contains(text))
            .remove(0)
    }

    fn wait_for_count_within(
        &self,
        within: Duration,
        count: usize,
        matches: impl Fn(&str) -> bool,
    ) -> Vec<String> {
        let deadline = Instant::now() + within;
        let (state, changed) = &*self.0;
        let mut state = state.lock().unwrap();
        loop {
            let found: Vec<String> = state
                .lines
                .iter()
                .filter(|line| matches(line))
                .cloned()
                .collect();
            if found.len() >= count {
                return found;
            }
            let now = Instant::now();
            if now >= deadline || state.closed {
                panic!(
                    "waited for {count} matching lines, found {} ({}); output so far:\n{}",
                    found.len(),
                    if state.closed {
                        "stream closed"
                    } else {
                        "deadline passed"
                    },
                    state.lines.join("\n")
                );
            }
            state = changed.wait_timeout(state, deadline - now).unwrap().0;
        }
    }

    /// Waits for the first line containing `text`.
    pub fn wait_for(&self, text: &str) -> String {
        self.wait_for_count(1, |line| line.contains(text)).remove(0)
    }

    pub fn count(&self, matches: impl Fn(&str) -> bool) -> usize {
        self.0
             .0
            .lock()
            .unwrap()
            .lines
            .iter()
            .filter(|line| matches(line))
            .count()
    }

    /// Waits until the stream closes (the primary exited and nothing else holds it).
    pub fn wait_closed(&self) {
        let deadline = Instant::now() + DEADLINE;
        let (state, changed) = &*self.0;
        let mut state = state.lock().unwrap();
        while !state.closed {
            let now = Instant::now();
            assert!(now < deadline, "stream still open after {DEADLINE:?}");
            state = changed.wait_timeout(state, deadline - now).unwrap().0;
        }
    }
}
