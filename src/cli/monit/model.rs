//! What `herdsman monit` knows and shows, with no terminal and no socket: the last status, each
//! worker's CPU and memory history (one sample per status poll, the last 10 minutes), the
//! selected slot, the log tail of that slot, and how the last action went. Keys come in as
//! [`Key`] and leave as the [`Order`] to carry out; `view` draws a `Model`, `mod.rs` feeds it.

use std::collections::{BTreeSet, HashMap, VecDeque};

use crate::control::protocol::{ClusterStatus, LogLine, ScaleTarget};

/// Samples kept per worker: one a second (the poll), 10 minutes.
pub const HISTORY: usize = 600;
/// Log lines kept for the pane (it shows the last that fit).
pub const LOG_LINES: usize = 500;

/// A key, as monit reads it (the terminal's key events mapped in `mod.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    Up,
    Down,
    Home,
    End,
    Esc,
    CtrlC,
    Char(char),
}

/// What a key asks monit to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Order {
    Quit,
    /// Send this request and show how it goes as action `id`.
    Act {
        id: u64,
        action: Action,
    },
}

/// The requests monit sends for the keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Reload,
    Scale(ScaleTarget),
    Restart(usize),
}

impl Action {
    /// How the action line names it: `reload`, `scale +1`, `restart slot 2`.
    pub fn label(&self) -> String {
        match self {
            Action::Reload => "reload".into(),
            Action::Scale(ScaleTarget::Add(count)) => format!("scale +{count}"),
            Action::Scale(ScaleTarget::Remove(count)) => format!("scale -{count}"),
            Action::Scale(ScaleTarget::To(count)) => format!("scale {count}"),
            Action::Restart(slot) => format!("restart slot {slot}"),
        }
    }
}

/// How the last action goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Running; the primary's latest progress line.
    Running(String),
    Done(String),
    Failed(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActionState {
    pub id: u64,
    pub label: String,
    pub outcome: Outcome,
}

/// One worker's samples, oldest first: CPU in tenths of a percent of one core, RSS in bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    pub cpu_tenths: VecDeque<u64>,
    pub rss_bytes: VecDeque<u64>,
}

impl History {
    fn push(&mut self, cpu_percent: Option<f64>, rss_bytes: Option<u64>) {
        if self.cpu_tenths.len() == HISTORY {
            self.cpu_tenths.pop_front();
            self.rss_bytes.pop_front();
        }
        let cpu = cpu_percent.map_or(0, |cpu| (cpu * 10.0).round().max(0.0) as u64);
        self.cpu_tenths.push_back(cpu);
        self.rss_bytes.push_back(rss_bytes.unwrap_or(0));
    }
}

#[derive(Debug, Default)]
pub struct Model {
    /// The cluster's name, known before its first status.
    pub name: String,
    pub status: Option<ClusterStatus>,
    /// By worker pid: a replaced worker's history goes with it.
    pub history: HashMap<u32, History>,
    /// The selected slot (its rows are highlighted; its log is shown).
    pub selected: Option<usize>,
    /// The log tail of [`Model::log_slot`], oldest first.
    pub logs: VecDeque<LogLine>,
    /// The slot whose log is followed, and which follower's lines count.
    pub log_slot: Option<usize>,
    pub log_follower: u64,
    /// Why the log follow ended, when it did.
    pub log_ended: Option<String>,
    pub action: Option<ActionState>,
    next_action: u64,
    /// A line for people about the last poll, when it failed (the cluster still runs).
    pub notice: Option<String>,
}

impl Model {
    pub fn new(name: &str) -> Model {
        Model {
            name: name.to_string(),
            ..Model::default()
        }
    }

    /// A fresh status: a sample for every worker's history, the histories of workers gone
    /// dropped, and a selection that still exists.
    pub fn on_status(&mut self, status: ClusterStatus) {
        let mut live = BTreeSet::new();
        for row in &status.slots {
            if let Some(pid) = row.pid {
                live.insert(pid);
                self.history
                    .entry(pid)
                    .or_default()
                    .push(row.cpu_percent, row.rss_bytes);
            }
        }
        self.history.retain(|pid, _| live.contains(pid));
        self.notice = None;
        self.status = Some(status);
        let slots = self.slots();
        if !self.selected.is_some_and(|slot| slots.contains(&slot)) {
            self.selected = slots.first().copied();
        }
    }

    pub fn on_poll_failed(&mut self, message: String) {
        self.notice = Some(message);
    }

    /// The cluster's slots, each once, in order (a slot being replaced has two rows).
    pub fn slots(&self) -> Vec<usize> {
        let Some(status) = &self.status else {
            return Vec::new();
        };
        let slots: BTreeSet<usize> = status.slots.iter().map(|row| row.slot).collect();
        slots.into_iter().collect()
    }

    /// What `key` does: moves the selection here, or an order for the caller.
    pub fn on_key(&mut self, key: Key) -> Option<Order> {
        match key {
            Key::Char('q') | Key::Esc | Key::CtrlC => Some(Order::Quit),
            Key::Up => self.move_selection(-1),
            Key::Down | Key::Char('j') => self.move_selection(1),
            Key::Home => self.move_selection(isize::MIN),
            Key::End => self.move_selection(isize::MAX),
            Key::Char('r') => Some(self.start(Action::Reload)),
            Key::Char('+') | Key::Char('=') => self.scale(ScaleTarget::Add(1)),
            Key::Char('-') => self.scale(ScaleTarget::Remove(1)),
            Key::Char('k') => self.selected.map(|slot| self.start(Action::Restart(slot))),
            Key::Char(_) => None,
        }
    }

    /// Moves the selection by `step` slots, stopping at the first and the last.
    fn move_selection(&mut self, step: isize) -> Option<Order> {
        let slots = self.slots();
        if slots.is_empty() {
            return None;
        }
        let at = self
            .selected
            .and_then(|slot| slots.iter().position(|&each| each == slot))
            .unwrap_or(0);
        let to = at.saturating_add_signed(step).min(slots.len() - 1);
        self.selected = Some(slots[to]);
        None
    }

    /// `+` and `-`: refused here, as `herdsman scale` refuses it, when it would leave no worker.
    fn scale(&mut self, target: ScaleTarget) -> Option<Order> {
        let workers = self.status.as_ref().map(|status| status.workers)?;
        let order = self.start(Action::Scale(target));
        if let Err(refused) = target.resolve(workers) {
            self.on_done(self.next_action, false, refused.to_string());
            return None;
        }
        Some(order)
    }

    /// Makes `action` the one the action line shows, running.
    fn start(&mut self, action: Action) -> Order {
        self.next_action += 1;
        let id = self.next_action;
        self.action = Some(ActionState {
            id,
            label: action.label(),
            outcome: Outcome::Running("sent".into()),
        });
        Order::Act { id, action }
    }

    /// A progress line of action `id` (ignored once a later action replaced it).
    pub fn on_progress(&mut self, id: u64, message: String) {
        if let Some(action) = self.action.as_mut().filter(|action| action.id == id) {
            action.outcome = Outcome::Running(message);
        }
    }

    /// The end of action `id`.
    pub fn on_done(&mut self, id: u64, ok: bool, message: String) {
        if let Some(action) = self.action.as_mut().filter(|action| action.id == id) {
            action.outcome = if ok {
                Outcome::Done(message)
            } else {
                Outcome::Failed(message)
            };
        }
    }

    /// The slot whose log should be followed, when it is not the one followed: the caller then
    /// starts a follower with the id [`Model::follow`] returns.
    pub fn wanted_log_slot(&self) -> Option<usize> {
        self.selected.filter(|&slot| self.log_slot != Some(slot))
    }

    /// Starts showing `slot`'s log: the pane is emptied; returns the new follower's id.
    pub fn follow(&mut self, slot: usize) -> u64 {
        self.log_slot = Some(slot);
        self.log_follower += 1;
        self.logs.clear();
        self.log_ended = None;
        self.log_follower
    }

    pub fn on_log(&mut self, follower: u64, line: LogLine) {
        if follower != self.log_follower {
            return;
        }
        if self.logs.len() == LOG_LINES {
            self.logs.pop_front();
        }
        self.logs.push_back(line);
    }

    pub fn on_log_ended(&mut self, follower: u64, reason: String) {
        if follower == self.log_follower {
            self.log_ended = Some(reason);
        }
    }

    /// The phase line: `running`, `running (degraded)`, `reloading`, … (`starting` before the
    /// first status).
    pub fn phase(&self) -> String {
        match &self.status {
            None => "connecting".into(),
            Some(status) if status.degraded => format!("{} (degraded)", status.state),
            Some(status) => status.state.clone(),
        }
    }

    /// The action line: `reload: running — …`, `reload: done — …`, `reload: failed — …`.
    pub fn action_line(&self) -> String {
        match &self.action {
            None => "none yet".into(),
            Some(ActionState { label, outcome, .. }) => match outcome {
                Outcome::Running(message) => format!("{label}: running — {message}"),
                Outcome::Done(message) if message.is_empty() => format!("{label}: done"),
                Outcome::Done(message) => format!("{label}: done — {message}"),
                Outcome::Failed(message) => format!("{label}: failed — {message}"),
            },
        }
    }

    /// The highest CPU sample of any worker, in tenths of a percent, and at least 100%: the
    /// sparklines' common scale, so that rows compare.
    pub fn cpu_scale(&self) -> u64 {
        self.history
            .values()
            .flat_map(|history| history.cpu_tenths.iter().copied())
            .max()
            .unwrap_or(0)
            .max(1000)
    }

    /// The highest RSS sample of any worker (at least 1 byte).
    pub fn rss_scale(&self) -> u64 {
        self.history
            .values()
            .flat_map(|history| history.rss_bytes.iter().copied())
            .max()
            .unwrap_or(0)
            .max(1)
    }
}

/// `samples` fitted into `width` columns: all of them when they fit, else the most recent
/// whole history in buckets of equal size, each its highest sample (a peak never disappears).
pub fn fit(samples: &VecDeque<u64>, width: usize) -> Vec<u64> {
    if width == 0 {
        return Vec::new();
    }
    if samples.len() <= width {
        return samples.iter().copied().collect();
    }
    let bucket = samples.len().div_ceil(width);
    let samples: Vec<u64> = samples.iter().copied().collect();
    // Buckets are counted from the newest sample, so the last column is always the latest.
    let mut columns: Vec<u64> = samples
        .rchunks(bucket)
        .map(|chunk| chunk.iter().copied().max().unwrap_or(0))
        .collect();
    columns.reverse();
    columns
}
