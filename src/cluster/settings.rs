//! The settings a [`Cluster`] program's primary runs with: `herdsman run`'s schema
//! (`config::Settings`), in layers over the builder's.

use std::ffi::OsString;
use std::time::Duration;

use super::{Cluster, ClusterError};
use crate::config::{ReadyMode, Settings};
use crate::ipc::IpcSetting;

impl Cluster {
    /// The settings the primary runs with, highest first: what a `Cluster` program always is
    /// (its own binary as the command, workers that speak IPC and say when they are ready),
    /// the `HERDSMAN_*` variables, `$PORT` and `$HOST`, the builder, the defaults.
    pub(super) fn settings(
        &self,
        command: Vec<OsString>,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Settings, ClusterError> {
        let fixed = Settings {
            command: Some(command),
            ready: Some(ReadyMode::Notify),
            // No probation after a worker's `ready`: it is this program's own code, saying so
            // once it holds its listener, not a server's arbiter speaking before its app loads.
            ready_delay: Some(Duration::ZERO),
            ipc: Some(IpcSetting::On),
            ..Settings::default()
        };
        // `$PORT` and `$HOST` are the app's own, as for any server a platform runs; `herdsman
        // run` leaves them to its workers.
        let var = |name: &str| var(name).filter(|value| !value.is_empty());
        let app = Settings {
            port: match var("PORT").map(|text| text.parse::<u16>()) {
                Some(Ok(port)) => Some(port),
                Some(Err(_)) => return Err(ClusterError::Port),
                None => None,
            },
            host: var("HOST"),
            ..Settings::default()
        };
        let env = Settings::from_env(var)?;
        Ok(fixed.or(env).or(app).or(self.settings.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Balance, RunSettings, WorkerCount};

    fn resolved(cluster: &Cluster, env: &[(&str, &str)]) -> Result<RunSettings, String> {
        let var = |name: &str| {
            env.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.to_string())
        };
        match cluster.settings(vec!["exe".into()], var) {
            Ok(settings) => Ok(settings.resolve()),
            Err(error) => Err(error.to_string()),
        }
    }

    /// What a `Cluster` program always is; everything else is `herdsman run`'s default.
    fn library_defaults() -> RunSettings {
        RunSettings {
            command: Some(vec!["exe".into()]),
            ready: ReadyMode::Notify,
            ready_delay: Duration::ZERO,
            ipc: IpcSetting::On,
            ..RunSettings::default()
        }
    }

    #[test]
    fn the_builder_starts_from_the_clis_defaults() {
        assert_eq!(resolved(&Cluster::new(), &[]), Ok(library_defaults()));
    }

    #[test]
    fn the_environment_overrides_the_builder() {
        let cluster = Cluster::new()
            .workers(5)
            .port(1)
            .host("127.0.0.1")
            .balance(Balance::Reuseport)
            .kill_timeout(Duration::from_secs(3));
        let settings = resolved(
            &cluster,
            &[
                ("HERDSMAN_WORKERS", "3"),
                ("HERDSMAN_BALANCE", "shared"),
                ("PORT", "2"),
                ("HOST", ""),
            ],
        );
        assert_eq!(
            settings,
            Ok(RunSettings {
                workers: WorkerCount::Exactly(3),
                balance: Balance::Shared,
                port: 2,
                host: "127.0.0.1".into(),
                kill_timeout: Duration::from_secs(3),
                ..library_defaults()
            })
        );
        assert_eq!(
            resolved(&cluster, &[("HERDSMAN_WORKERS", "0")]),
            Err("$HERDSMAN_WORKERS: the cluster needs at least 1 worker".into())
        );
        assert_eq!(
            resolved(&cluster, &[("HERDSMAN_BALANCE", "random")]),
            Err("$HERDSMAN_BALANCE: `random` is not `shared`, `reuseport`, `round-robin`, `least-conn`, `proxy` or `proxy-rr`".into())
        );
        assert_eq!(
            resolved(&cluster, &[("PORT", "http")]),
            Err("$PORT is not a port number".into())
        );
    }

    #[test]
    fn the_builder_sets_the_admin_server_and_the_log_files() {
        let cluster = Cluster::new()
            .admin("127.0.0.1:9100".parse().unwrap())
            .admin_token("builder")
            .log_dir("/var/log/api");
        let settings = resolved(&cluster, &[("HERDSMAN_ADMIN_TOKEN", "env")]).unwrap();
        assert_eq!(settings.admin, Some("127.0.0.1:9100".parse().unwrap()));
        assert_eq!(settings.admin_token.as_deref(), Some("env"));
        assert_eq!(settings.log_dir, Some("/var/log/api".into()));
    }
}
