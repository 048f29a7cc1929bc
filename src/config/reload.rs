//! What a reload takes from a re-read configuration: [`reloaded`], a pure function of the
//! running [`Config`] and the new one, driven by the schema's rows (`schema::reload_each`): each
//! row says whether its setting is applied, scaled to, or needs herdsman to restart, and how a
//! change is shown (as herdsman.toml spells the value).

use super::schema::reload_each;
use super::Config;

/// What a re-read configuration changes.
#[derive(Clone, Debug)]
pub struct Reloaded {
    /// The running configuration with the settings a reload applies taken from the new one.
    pub config: Config,
    /// A new worker count, applied (by scaling) once the reload is done.
    pub workers: Option<usize>,
    /// `key: before → after`, and `[env] NAME added|changed|removed`, in the schema's order.
    pub changes: Vec<String>,
    /// The settings that changed but take effect only when herdsman itself restarts.
    pub ignored: Vec<String>,
}

impl Reloaded {
    pub(super) fn change(&mut self, field: &str, before: String, after: String) {
        if before != after {
            let key = field.replace('_', "-");
            self.changes.push(format!("{key}: {before} → {after}"));
        }
    }

    /// Notes that `what` changed and needs a restart, once however many rows it stands for.
    pub(super) fn needs_restart(&mut self, what: &str, differs: bool) {
        let line = format!(
            "{} changed, but takes effect only when herdsman itself restarts",
            what.replace('_', "-")
        );
        if differs && !self.ignored.contains(&line) {
            self.ignored.push(line);
        }
    }
}

/// `old` with the settings a reload applies taken from `new`, and what changed.
pub fn reloaded(old: &Config, new: Config) -> Reloaded {
    let mut out = Reloaded {
        config: old.clone(),
        workers: None,
        changes: Vec::new(),
        ignored: Vec::new(),
    };
    reload_each(old, &new, &mut out);
    out
}

/// `[env] NAME added`, `… changed`, `… removed`: the names only, never the values.
pub(super) fn env_changes(old: &[(String, String)], new: &[(String, String)]) -> Vec<String> {
    let value = |env: &[(String, String)], name: &str| {
        env.iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    };
    let mut changes = Vec::new();
    for (name, after) in new {
        match value(old, name) {
            None => changes.push(format!("[env] {name} added")),
            Some(before) if &before != after => changes.push(format!("[env] {name} changed")),
            Some(_) => {}
        }
    }
    for (name, _) in old {
        if value(new, name).is_none() {
            changes.push(format!("[env] {name} removed"));
        }
    }
    changes
}
