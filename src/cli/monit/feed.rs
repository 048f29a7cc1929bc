//! Where monit's [`Event`]s come from: threads that talk to the control socket (blocking, as
//! the other commands do) and a thread that waits for SIGTERM, SIGHUP and SIGINT. Each sends
//! into one channel, which the terminal loop in `mod.rs` drains; each ends when the loop has
//! gone (its send fails) or, for a log follower, when [`Follower`] is dropped.

use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, Signal};

use super::model::Action;
use crate::control::client::{self, ClientError};
use crate::control::protocol::{ClusterStatus, LogLine, Reply, Request};

/// How often the status is polled: one history sample each.
pub const POLL_EVERY: Duration = Duration::from_secs(1);
/// How long the loop has to end monit after a signal before the signal thread does.
const SIGNAL_GRACE: Duration = Duration::from_secs(1);
/// Recent lines a new log follower asks for first.
const LOG_BACKLOG: usize = 100;

pub enum Event {
    Status(Box<ClusterStatus>),
    /// A poll failed, but the cluster still runs (it is stopping, say).
    PollFailed(String),
    /// The cluster is no longer there: monit ends.
    Gone(String),
    Log {
        follower: u64,
        line: LogLine,
    },
    LogEnded {
        follower: u64,
        reason: String,
    },
    Progress {
        action: u64,
        message: String,
    },
    Done {
        action: u64,
        ok: bool,
        message: String,
    },
    /// SIGTERM, SIGHUP or SIGINT came: monit ends.
    Signal(Signal),
}

/// Polls the status every [`POLL_EVERY`] until the receiver has gone or the cluster has.
pub fn poll_status(name: String, events: Sender<Event>) {
    std::thread::spawn(move || loop {
        let started = Instant::now();
        let event = match status(&name) {
            Ok(status) => Event::Status(Box::new(status)),
            Err(Poll::Failed(message)) => Event::PollFailed(message),
            Err(Poll::Gone(message)) => {
                let _ = events.send(Event::Gone(message));
                return;
            }
        };
        if events.send(event).is_err() {
            return;
        }
        std::thread::sleep(POLL_EVERY.saturating_sub(started.elapsed()));
    });
}

enum Poll {
    Failed(String),
    Gone(String),
}

fn status(name: &str) -> Result<ClusterStatus, Poll> {
    let mut found = None;
    let result = client::request(name, &Request::Status {}, |reply| {
        if let Reply::Status(status) = reply {
            found = Some(status.clone());
        }
    });
    match (result, found) {
        (Ok(_), Some(status)) => Ok(*status),
        (Ok(Some((_, message))), None) => Err(Poll::Failed(message)),
        (Ok(None), None) => Err(Poll::Failed("no status came back".into())),
        // The name's lock is free: the primary has exited, however it ended.
        (Err(_), _) if !client::is_running(name) => Err(Poll::Gone(
            "it is no longer running: it was stopped, or its primary exited".into(),
        )),
        // The socket is gone or refuses while the lock is still held: the primary is exiting.
        (Err(error @ ClientError::Connect { .. }), _) => Err(Poll::Gone(error.to_string())),
        (Err(error), _) => Err(Poll::Failed(error.to_string())),
    }
}

/// Follows one slot's log (as `herdsman logs -f --slot N`) until dropped.
pub struct Follower {
    stream: Option<UnixStream>,
}

impl Follower {
    pub fn start(name: &str, slot: usize, id: u64, events: Sender<Event>) -> Follower {
        let request = Request::Logs {
            slot: Some(slot),
            lines: LOG_BACKLOG,
            follow: true,
        };
        let stream = match client::send(name, &request) {
            Ok(stream) => stream,
            Err(error) => {
                let reason = error.to_string();
                let _ = events.send(Event::LogEnded {
                    follower: id,
                    reason,
                });
                return Follower { stream: None };
            }
        };
        let closer = stream.try_clone().ok();
        std::thread::spawn(move || {
            let result = client::replies(stream, |reply| {
                if let Reply::Log(line) = reply {
                    let line = line.clone();
                    let _ = events.send(Event::Log { follower: id, line });
                }
            });
            let reason = match result {
                Ok(Some((false, message))) => message,
                Ok(_) => "the primary closed the log stream".into(),
                Err(error) => error.to_string(),
            };
            let _ = events.send(Event::LogEnded {
                follower: id,
                reason,
            });
        });
        Follower { stream: closer }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        // Ends the reading thread: its next read sees the end of the stream.
        if let Some(stream) = &self.stream {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

/// Sends `action`'s request and reports its progress and result as action `id`.
pub fn act(name: &str, id: u64, action: Action, events: Sender<Event>) {
    let request = match action {
        Action::Reload => Request::Reload { parallel: 1 },
        Action::Scale(to) => Request::Scale { to },
        Action::Restart(slot) => Request::Restart { slot },
    };
    let name = name.to_string();
    std::thread::spawn(move || {
        let result = client::request(&name, &request, |reply| {
            if let Reply::Progress { message } = reply {
                let message = message.clone();
                let _ = events.send(Event::Progress {
                    action: id,
                    message,
                });
            }
        });
        let (ok, message) = match result {
            Ok(Some((ok, message))) => (ok, message),
            Ok(None) => (false, "the primary closed the connection".into()),
            Err(error) => (false, error.to_string()),
        };
        let _ = events.send(Event::Done {
            action: id,
            ok,
            message,
        });
    });
}

/// Blocks SIGTERM, SIGHUP and SIGINT in this thread (call it before starting any other, which
/// inherit the mask) and turns them into [`Event::Signal`], so the terminal is restored
/// whichever ends monit. Ctrl-C in the raw terminal is a key, not a signal.
pub fn watch_signals(events: Sender<Event>) -> nix::Result<()> {
    let mut signals = SigSet::empty();
    for signal in [Signal::SIGTERM, Signal::SIGHUP, Signal::SIGINT] {
        signals.add(signal);
    }
    signals.thread_block()?;
    std::thread::spawn(move || {
        let Ok(signal) = signals.wait() else { return };
        let _ = events.send(Event::Signal(signal));
        // The loop ends monit within a tick, unless it is stuck reading a terminal that hung up
        // (crossterm then reads end-of-file forever): end it from here.
        std::thread::sleep(SIGNAL_GRACE);
        ratatui::restore();
        std::process::exit(128 + signal as i32);
    });
    Ok(())
}
