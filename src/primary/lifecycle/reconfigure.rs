//! A re-read configuration taken on reload: what changes at once, and what needs the primary
//! itself restarted, as the settings schema says (`config::reloaded`).

use super::Machine;
use crate::config::{reloaded, Config, Reloaded};

impl Machine {
    /// Takes the settings of a re-read configuration that a reload applies, and returns what
    /// changed.
    pub(super) fn apply_config(&mut self, new: Config) -> Reloaded {
        if new.command != self.config.command {
            // Whether the new command signals readiness is for its own workers to show.
            self.command_signals_ready = false;
            self.command_listens = false;
        }
        let reloaded = reloaded(&self.config, new);
        self.config = reloaded.config.clone();
        // A limit the file turned on starts being read now (one already read just goes on).
        self.schedule_limit_checks();
        reloaded
    }
}
