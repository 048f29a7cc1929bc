//! `herdsman monit [NAME]`: a live terminal monitor of one cluster, over its control socket
//! like `status` and `logs` (no `--admin` needed).
//!
//! - `model`: what is known and shown (status, each worker's history, the selected slot, its
//!   log tail, the last action) and what each key does; no terminal, no socket.
//! - `view`: draws a model with ratatui.
//! - `feed`: the threads that poll the status once a second, follow the selected slot's log,
//!   carry out actions and wait for signals, all sending [`feed::Event`]s into one channel.
//!
//! This file is the loop: it reads keys (crossterm, through ratatui), drains the channel into
//! the model, redraws, and restores the terminal however monit ends: `q`, Esc, Ctrl-C, a
//! signal, the cluster going away (then exit 5, [`crate::exit::NOT_RUNNING`]) or a panic
//! (ratatui's panic hook).

mod feed;
mod model;
#[cfg(test)]
mod tests;
mod view;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::time::Duration;

use ratatui::crossterm::event::{self, Event as TermEvent, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::DefaultTerminal;

use super::commands::{usage, Failure};
use crate::control::client;
use crate::exit::{FAILED as EXIT_FAILED, NOT_RUNNING as EXIT_NOT_RUNNING};
use feed::{Event, Follower};
use model::{Key, Model, Order};

/// How long one wait for a key lasts before the channel is drained again.
const TICK: Duration = Duration::from_millis(50);
/// Events handed to the model between two draws, at most.
const DRAIN_AT_ONCE: usize = 10_000;

pub(super) fn run(name: Option<&str>) -> Result<ExitCode, Failure> {
    let name = client::resolve(name)?;
    if !std::io::stdin().is_terminal() || !std::io::stdout().is_terminal() {
        return Err(usage(format!(
            "herdsman monit needs a terminal (its stdin and stdout are not one); in a script \
             use `herdsman status {name} --json` or `herdsman logs {name} -f`"
        )));
    }
    let (sender, events) = mpsc::channel();
    // Before any other thread starts, so that every thread has the signals blocked.
    feed::watch_signals(sender.clone()).map_err(|error| Failure {
        code: EXIT_FAILED,
        message: format!("cannot set up signal handling: {error}"),
    })?;
    feed::poll_status(name.clone(), sender.clone());
    let mut terminal = ratatui::try_init().map_err(|error| Failure {
        code: EXIT_FAILED,
        message: format!("cannot set up the terminal: {error}"),
    })?;
    let end = Monitor {
        model: Model::new(&name),
        events,
        sender,
        follower: None,
    }
    .run(&mut terminal);
    ratatui::restore();
    match end {
        End::Quit => Ok(ExitCode::SUCCESS),
        End::Signal(signal) => Ok(ExitCode::from(128 + signal as i32 as u8)),
        End::Gone(reason) => Err(Failure {
            code: EXIT_NOT_RUNNING,
            message: format!("cluster `{name}` went away ({reason}); monit stopped"),
        }),
        End::Terminal(error) => Err(Failure {
            code: EXIT_FAILED,
            message: format!("the terminal failed: {error}"),
        }),
    }
}

/// How the loop ended.
enum End {
    Quit,
    Signal(nix::sys::signal::Signal),
    Gone(String),
    Terminal(std::io::Error),
}

struct Monitor {
    model: Model,
    events: Receiver<Event>,
    /// Handed to the threads the loop starts (log followers, actions).
    sender: mpsc::Sender<Event>,
    follower: Option<Follower>,
}

impl Monitor {
    fn run(mut self, terminal: &mut DefaultTerminal) -> End {
        let mut dirty = true;
        loop {
            if let Some(end) = self.drain(&mut dirty) {
                return end;
            }
            if let Some(slot) = self.model.wanted_log_slot() {
                let id = self.model.follow(slot);
                // The old follower's stream is shut down as it is replaced.
                self.follower = Some(Follower::start(
                    &self.model.name,
                    slot,
                    id,
                    self.sender.clone(),
                ));
                dirty = true;
            }
            if dirty {
                if let Err(error) = terminal.draw(|frame| view::draw(frame, &self.model)) {
                    return End::Terminal(error);
                }
                dirty = false;
            }
            match read_key() {
                Ok(Some(Input::Key(key))) => {
                    dirty = true;
                    match self.model.on_key(key) {
                        Some(Order::Quit) => return End::Quit,
                        Some(Order::Act { id, action }) => {
                            feed::act(&self.model.name, id, action, self.sender.clone())
                        }
                        None => {}
                    }
                }
                Ok(Some(Input::Resize)) => dirty = true,
                Ok(None) => {}
                Err(error) => return End::Terminal(error),
            }
        }
    }

    /// Hands the waiting events to the model (at most [`DRAIN_AT_ONCE`], so that a flood of
    /// log lines cannot keep the screen from being drawn); an end if one ends monit.
    fn drain(&mut self, dirty: &mut bool) -> Option<End> {
        for _ in 0..DRAIN_AT_ONCE {
            let event = match self.events.try_recv() {
                Ok(event) => event,
                // `self.sender` keeps the channel open.
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return None,
            };
            *dirty = true;
            match event {
                Event::Status(status) => self.model.on_status(*status),
                Event::PollFailed(message) => self.model.on_poll_failed(message),
                Event::Gone(reason) => return Some(End::Gone(reason)),
                Event::Log { follower, line } => self.model.on_log(follower, line),
                Event::LogEnded { follower, reason } => self.model.on_log_ended(follower, reason),
                Event::Progress { action, message } => self.model.on_progress(action, message),
                Event::Done {
                    action,
                    ok,
                    message,
                } => self.model.on_done(action, ok, message),
                Event::Signal(signal) => return Some(End::Signal(signal)),
            }
        }
        None
    }
}

enum Input {
    Key(Key),
    Resize,
}

/// Waits up to [`TICK`] for a key (or a resize).
fn read_key() -> std::io::Result<Option<Input>> {
    if !event::poll(TICK)? {
        return Ok(None);
    }
    let key = match event::read()? {
        TermEvent::Key(key) if key.kind != KeyEventKind::Release => key,
        TermEvent::Resize(..) => return Ok(Some(Input::Resize)),
        _ => return Ok(None),
    };
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    Ok(match key.code {
        KeyCode::Char('c') if ctrl => Some(Input::Key(Key::CtrlC)),
        KeyCode::Char(_) if ctrl => None,
        KeyCode::Char(char) => Some(Input::Key(Key::Char(char))),
        KeyCode::Up => Some(Input::Key(Key::Up)),
        KeyCode::Down => Some(Input::Key(Key::Down)),
        KeyCode::Home => Some(Input::Key(Key::Home)),
        KeyCode::End => Some(Input::Key(Key::End)),
        KeyCode::Esc => Some(Input::Key(Key::Esc)),
        _ => None,
    })
}
