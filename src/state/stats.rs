//! The counters behind `INFO`'s stats, commandstats and errorstats sections.

use std::collections::{BTreeMap, HashMap};

/// One command's figures, as `cmdstat_NAME:calls=…,usec=…` reports them.
#[derive(Debug, Default, Clone, Copy)]
pub struct CommandStat {
    pub calls: u64,
    pub usec: u64,
    /// Refused before running (arity, memory, context).
    pub rejected: u64,
    /// Ran and replied with an error.
    pub failed: u64,
}

#[derive(Debug, Default)]
pub struct Stats {
    /// By Redis's full command name (`get`, `client|list`).
    pub commands: HashMap<String, CommandStat>,
    /// Error replies by their code (`ERR`, `WRONGTYPE`).
    pub errors: BTreeMap<String, u64>,
    pub error_replies: u64,
    pub connections_received: u64,
}

impl Stats {
    /// Counts an error reply by its code, the text before the first space.
    pub fn error(&mut self, text: &str) {
        let code = text.split(' ').next().unwrap_or("ERR");
        // Redis keeps at most 128 distinct codes; past that it counts them only in total.
        if self.errors.len() < 128 || self.errors.contains_key(code) {
            *self.errors.entry(code.to_string()).or_default() += 1;
        }
        self.error_replies += 1;
    }

    pub fn command(&mut self, name: &str) -> &mut CommandStat {
        if !self.commands.contains_key(name) {
            self.commands
                .insert(name.to_string(), CommandStat::default());
        }
        self.commands.get_mut(name).expect("just inserted")
    }

    /// `CONFIG RESETSTAT`.
    pub fn reset(&mut self) {
        self.commands.clear();
        self.errors.clear();
        self.error_replies = 0;
    }
}
