//! A re-read configuration taken on reload: what changes at once, and what needs the primary
//! itself restarted.

use super::Machine;
use crate::config::Config;

impl Machine {
    /// Takes the settings of a re-read configuration that can change without restarting the
    /// primary. Returns what changed and what changed but needs a restart (ignored).
    pub(super) fn apply_config(&mut self, new: Config) -> (Applied, Vec<String>) {
        let old = &self.config;
        let mut changes = Vec::new();
        let mut ignored = Vec::new();
        let mut change = |name: &str, before: String, after: String| {
            if before != after {
                changes.push(format!("{name}: {before} → {after}"));
            }
        };
        let shown = |command: &[std::ffi::OsString]| {
            command
                .iter()
                .map(|part| part.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
        };
        // Settings are named as herdsman.toml spells them; `[env]` values may be secrets, so
        // only the names of the variables that changed are shown.
        change("command", shown(&old.command), shown(&new.command));
        changes.extend(env_changes(&old.env, &new.env));
        let mut change = |name: &str, before: String, after: String| {
            if before != after {
                changes.push(format!("{name}: {before} → {after}"));
            }
        };
        change("workers", old.workers.to_string(), new.workers.to_string());
        let ready = |mode| match mode {
            crate::config::ReadyMode::Delay => "delay".to_string(),
            crate::config::ReadyMode::Notify => "notify".to_string(),
        };
        change("ready", ready(old.ready), ready(new.ready));
        let duration = |value| humantime::format_duration(value).to_string();
        change(
            "ready-delay",
            duration(old.ready_delay),
            duration(new.ready_delay),
        );
        change(
            "ready-timeout",
            duration(old.ready_timeout),
            duration(new.ready_timeout),
        );
        change(
            "kill-timeout",
            duration(old.kill_timeout),
            duration(new.kill_timeout),
        );
        let signal = |signal: nix::sys::signal::Signal| {
            signal.as_str().trim_start_matches("SIG").to_string()
        };
        change(
            "accept-timeout",
            duration(old.accept_timeout),
            duration(new.accept_timeout),
        );
        change(
            "stop-signal",
            signal(old.stop_signal),
            signal(new.stop_signal),
        );
        let mut needs_restart = |name: &str, differs: bool| {
            if differs {
                ignored.push(format!(
                    "{name} changed, but takes effect only when herdsman itself restarts"
                ));
            }
        };
        needs_restart(
            "host/port",
            old.address != new.address && new.address.port() != 0,
        );
        needs_restart("balance", old.balance != new.balance);
        needs_restart("log-format", old.log_format != new.log_format);
        needs_restart("name", new.name_is_explicit && new.name != old.name);
        needs_restart("state", old.state != new.state || old.store != new.store);
        needs_restart("ipc", old.ipc != new.ipc);
        let workers = (new.workers != old.workers).then_some(new.workers);
        if new.command != old.command {
            // Whether the new command signals readiness is for its own workers to show.
            self.command_signals_ready = false;
        }
        self.config = Config {
            command: new.command,
            env: new.env,
            ready: new.ready,
            ready_delay: new.ready_delay,
            ready_timeout: new.ready_timeout,
            kill_timeout: new.kill_timeout,
            accept_timeout: new.accept_timeout,
            stop_signal: new.stop_signal,
            ..self.config.clone()
        };
        (Applied { workers, changes }, ignored)
    }
}

/// `[env] NAME added`, `… changed`, `… removed`: the names only, never the values.
fn env_changes(old: &[(String, String)], new: &[(String, String)]) -> Vec<String> {
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

/// What a re-read configuration changed.
pub(super) struct Applied {
    /// A new worker count, applied (by scaling) once the reload is done.
    pub workers: Option<usize>,
    pub changes: Vec<String>,
}
