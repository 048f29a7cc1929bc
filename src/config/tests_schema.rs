//! What the one schema guarantees, setting by setting: a flag and a herdsman.toml key that give
//! the same value, one default that `--help` shows, and a reload that applies the setting or
//! names it as needing a restart, in exactly the lines `herdsman reload` prints.

use clap::{Args, FromArgMatches};

use super::*;

/// One setting changed both ways, and what a reload says about the change (from the defaults,
/// with `command = "server"`).
struct Case {
    field: &'static str,
    /// The flags of `herdsman run` that set it (`None`: herdsman.toml only).
    flags: Option<&'static [&'static str]>,
    toml: &'static str,
    /// The lines a reload prints, `{cpus}` for the number of CPUs.
    line: &'static str,
}

const RESTART: &str = "changed, but takes effect only when herdsman itself restarts";

fn cases() -> Vec<Case> {
    let case = |field, flags, toml, line| Case {
        field,
        flags,
        toml,
        line,
    };
    vec![
        case(
            "command",
            Some(&["--", "app", "--serve"][..]),
            "command = \"app --serve\"",
            "command: server → app --serve",
        ),
        case("env", None, "[env]\nA = \"1\"", "[env] A added"),
        case(
            "workers",
            Some(&["--workers", "1000"]),
            "workers = 1000",
            "workers: {cpus} → 1000",
        ),
        case(
            "host",
            Some(&["--host", "127.0.0.2"]),
            "host = \"127.0.0.2\"",
            "host/port",
        ),
        case("port", Some(&["-p", "9000"]), "port = 9000", "host/port"),
        case(
            "balance",
            Some(&["--balance", "shared"]),
            "balance = \"shared\"",
            "balance",
        ),
        case(
            "sticky",
            Some(&["--sticky", "ip"]),
            "sticky = \"ip\"",
            "sticky",
        ),
        case(
            "proxy_protocol",
            Some(&["--balance", "proxy", "--proxy-protocol", "v2"]),
            "balance = \"proxy\"\nproxy_protocol = \"v2\"",
            "proxy-protocol",
        ),
        case(
            "max_pending",
            Some(&["--max-pending", "4"]),
            "max-pending = 4",
            "max-pending",
        ),
        case(
            "ready",
            Some(&["--ready", "notify"]),
            "ready = \"notify\"",
            "ready: delay → notify",
        ),
        case(
            "ready_delay",
            Some(&["--ready-delay", "2s"]),
            "ready-delay = \"2s\"",
            "ready-delay: 1s → 2s",
        ),
        case(
            "ready_timeout",
            Some(&["--ready-timeout", "1m"]),
            "ready_timeout = \"1m\"",
            "ready-timeout: 30s → 1m",
        ),
        case(
            "kill_timeout",
            Some(&["--kill-timeout", "500ms"]),
            "kill-timeout = \"500ms\"",
            "kill-timeout: 10s → 500ms",
        ),
        case(
            "accept_timeout",
            Some(&["--accept-timeout", "2s"]),
            "accept-timeout = \"2s\"",
            "accept-timeout: 5s → 2s",
        ),
        case(
            "watchdog",
            Some(&["--watchdog", "10s"]),
            "watchdog = \"10s\"",
            "watchdog: off → 10s",
        ),
        case(
            "max_memory",
            Some(&["--max-memory", "256mb"]),
            "max-memory = \"256mb\"",
            "max-memory: off → 256mb",
        ),
        case(
            "max_requests",
            Some(&["--max-requests", "1000"]),
            "max-requests = 1000",
            "max-requests: off → 1000",
        ),
        case(
            "max_requests_jitter",
            Some(&["--max-requests", "1000", "--max-requests-jitter", "50"]),
            "max-requests = 1000\nmax-requests-jitter = 50",
            "max-requests: off → 1000\nmax-requests-jitter: 0 → 50",
        ),
        case(
            "stop_signal",
            Some(&["--stop-signal", "INT"]),
            "stop-signal = \"INT\"",
            "stop-signal: TERM → INT",
        ),
        case(
            "log_format",
            Some(&["--log-format", "json"]),
            "log-format = \"json\"",
            "log-format",
        ),
        case(
            "log_dir",
            Some(&["--log-dir", "/var/log/api"]),
            "log-dir = \"/var/log/api\"",
            "log files",
        ),
        case(
            "log_max_size",
            Some(&["--log-max-size", "1mb"]),
            "log-max-size = \"1mb\"",
            "log files",
        ),
        case(
            "log_keep",
            Some(&["--log-keep", "0"]),
            "log-keep = 0",
            "log files",
        ),
        case("name", Some(&["--name", "api"]), "name = \"api\"", "name"),
        case(
            "state",
            Some(&["--state", "off"]),
            "state = \"off\"",
            "state",
        ),
        case(
            "state_listen",
            Some(&["--state-listen", "127.0.0.1:6380"]),
            "state-listen = \"127.0.0.1:6380\"",
            "state",
        ),
        case(
            "state_file",
            Some(&["--state-file", "state.aof"]),
            "state-file = \"state.aof\"",
            "state",
        ),
        case(
            "state_max_memory",
            Some(&["--state-max-memory", "100mb"]),
            "state-max-memory = \"100mb\"",
            "state",
        ),
        case(
            "state_max_clients",
            Some(&["--state-max-clients", "500"]),
            "state-max-clients = 500",
            "state",
        ),
        case(
            "admin",
            Some(&["--admin", "127.0.0.1:9090"]),
            "admin = \"127.0.0.1:9090\"",
            "admin",
        ),
        case(
            "admin_token",
            Some(&["--admin-token", "secret"]),
            "admin-token = \"secret\"",
            "admin-token",
        ),
        case("ipc", Some(&["--ipc", "node"]), "ipc = \"node\"", "ipc"),
    ]
}

/// `herdsman run`'s settings flags, with no environment (so that the test's own cannot leak in).
fn run_command() -> clap::Command {
    Settings::augment_args(clap::Command::new("run")).mut_args(|arg| arg.env(None::<&str>))
}

fn flags(args: &[&str]) -> Settings {
    let matches = run_command()
        .try_get_matches_from(std::iter::once("run").chain(args.iter().copied()))
        .unwrap();
    Settings::from_arg_matches(&matches).unwrap()
}

/// The configuration of herdsman.toml `text`, with `command = "server"` unless it says another.
fn config(text: &str) -> Config {
    let settings = file::parse(text).unwrap();
    let base = Settings {
        command: Some(vec!["server".into()]),
        ..Settings::default()
    };
    settings.or(base).resolve().validate().unwrap()
}

fn cpus() -> String {
    WorkerCount::Max.resolve().to_string()
}

#[test]
fn the_cases_cover_every_setting_in_order() {
    let fields: Vec<&str> = SETTINGS.iter().map(|setting| setting.field).collect();
    let cases: Vec<&str> = cases().iter().map(|case| case.field).collect();
    assert_eq!(cases, fields);
}

#[test]
fn a_flag_and_its_herdsman_toml_key_give_the_same_setting() {
    for case in cases() {
        let Some(args) = case.flags else { continue };
        assert_eq!(
            flags(args),
            file::parse(case.toml).unwrap(),
            "{}",
            case.field
        );
        assert_ne!(flags(args), Settings::default(), "{}", case.field);
    }
}

#[test]
fn every_source_gives_the_same_defaults() {
    assert_eq!(flags(&[]), Settings::default());
    assert_eq!(file::parse("").unwrap(), Settings::default());
    assert_eq!(Settings::from_env(|_| None).unwrap(), Settings::default());
    let defaults = RunSettings::default();
    assert_eq!(defaults.port, 8000);
    assert_eq!(defaults.host, "0.0.0.0");
    assert_eq!(defaults.ready_delay, Duration::from_secs(1));
    assert_eq!(defaults.ipc, crate::ipc::IpcSetting::Auto);
}

#[test]
fn help_shows_each_default() {
    let command = run_command();
    for setting in SETTINGS {
        let Some(default) = setting.default else {
            continue;
        };
        let Some(arg) = command
            .get_arguments()
            .find(|arg| arg.get_id() == setting.field)
        else {
            assert_eq!(setting.field, "env", "only [env] has no flag");
            continue;
        };
        let help = arg.get_long_help().or(arg.get_help()).unwrap().to_string();
        let shown = format!("[default: {}", default());
        assert!(
            help.contains(&shown),
            "{}: {help:?} lacks {shown}",
            setting.field
        );
    }
}

/// The herdsman.toml a case's change is made from: the defaults, but for a setting that only
/// goes with another (`proxy-protocol` with `balance = "proxy"`).
fn base(field: &str) -> &'static str {
    match field {
        "proxy_protocol" => "balance = \"proxy\"",
        _ => "",
    }
}

#[test]
fn each_setting_reloads_as_its_row_says() {
    for case in cases() {
        let old = config(base(case.field));
        let new = config(case.toml);
        let setting = SETTINGS.iter().find(|s| s.field == case.field).unwrap();
        let reloaded = reloaded(&old, new.clone());
        let line = case.line.replace("{cpus}", &cpus());
        match setting.on_reload {
            OnReload::Applied => {
                // A setting that needs another (the jitter, --max-requests) changes both.
                let lines: Vec<String> = line.split('\n').map(String::from).collect();
                assert_eq!(
                    (reloaded.changes, reloaded.ignored),
                    (lines, vec![]),
                    "{}",
                    case.field
                );
                // Taken from the new configuration; the name stays the running cluster's.
                let expected = Config {
                    name: old.name.clone(),
                    ..new
                };
                assert_eq!(reloaded.config, expected, "{}", case.field);
            }
            OnReload::Scaled => {
                assert_eq!((reloaded.changes, reloaded.ignored), (vec![line], vec![]));
                assert_eq!(reloaded.workers, Some(1000));
                assert_eq!(reloaded.config, old, "scaled to once the reload is done");
            }
            OnReload::NeedsRestart => {
                assert_eq!(
                    (reloaded.changes, reloaded.ignored),
                    (vec![], vec![format!("{line} {RESTART}")]),
                    "{}",
                    case.field
                );
                assert_eq!(reloaded.config, old, "{}", case.field);
                assert_eq!(reloaded.workers, None);
            }
        }
    }
}

#[test]
fn a_reload_prints_every_change_in_the_order_of_the_schema() {
    let old = config("[env]\nKEPT = \"1\"\nGONE = \"1\"\n");
    let new = config(
        "command = \"app\"\nworkers = 1000\nhost = \"127.0.0.2\"\nport = 9000\n\
         balance = \"shared\"\nready = \"notify\"\nready-delay = \"2s\"\nready-timeout = \"1m\"\n\
         kill-timeout = \"1s\"\naccept-timeout = \"1s\"\nstop-signal = \"QUIT\"\n\
         log-format = \"json\"\nname = \"api\"\nstate-file = \"x.aof\"\nipc = \"on\"\n\
         [env]\nKEPT = \"2\"\nNEW = \"1\"\n",
    );
    let all = reloaded(&old, new);
    let restart = |what: &str| format!("{what} {RESTART}");
    assert_eq!(
        all.changes,
        [
            "command: server → app".to_string(),
            "[env] KEPT changed".into(),
            "[env] NEW added".into(),
            "[env] GONE removed".into(),
            format!("workers: {} → 1000", cpus()),
            "ready: delay → notify".into(),
            "ready-delay: 1s → 2s".into(),
            "ready-timeout: 30s → 1m".into(),
            "kill-timeout: 10s → 1s".into(),
            "accept-timeout: 5s → 1s".into(),
            "stop-signal: TERM → QUIT".into(),
        ]
    );
    assert_eq!(
        all.ignored,
        ["host/port", "balance", "log-format", "name", "state", "ipc"].map(restart)
    );
    // Nothing changed, nothing said.
    let same = reloaded(&old, old.clone());
    assert_eq!(
        (same.changes, same.ignored, same.workers),
        (vec![], vec![], None)
    );
    // A derived name follows the command and is not reported; a new port 0 keeps the port.
    let moved = reloaded(&config(""), config("command = \"other\"\nport = 0"));
    assert_eq!(moved.changes, ["command: server → other"]);
    assert_eq!(moved.ignored, Vec::<String>::new());
}

#[test]
fn the_flags_read_the_schemas_variables() {
    let command = Settings::augment_args(clap::Command::new("run"));
    for setting in SETTINGS {
        let Some(arg) = command
            .get_arguments()
            .find(|arg| arg.get_id() == setting.field)
        else {
            continue;
        };
        let env = arg.get_env().map(|env| env.to_str().unwrap());
        assert_eq!(env, setting.env, "{}", setting.field);
    }
    let variables: Vec<_> = SETTINGS.iter().filter_map(|setting| setting.env).collect();
    assert_eq!(
        variables,
        [
            "HERDSMAN_WORKERS",
            "HERDSMAN_BALANCE",
            "HERDSMAN_ADMIN_TOKEN"
        ]
    );
}

/// The README's table of `herdsman run`'s flags names every flag, with its default.
#[test]
fn the_readme_lists_every_flag_with_its_default() {
    let readme = include_str!("../../README.md");
    let rows: Vec<&str> = readme
        .lines()
        .skip_while(|line| !line.starts_with("| flag | default |"))
        .take_while(|line| line.starts_with('|'))
        .collect();
    for setting in SETTINGS {
        if matches!(setting.field, "command" | "env") {
            continue;
        }
        let flag = format!("`--{} ", setting.key());
        let flag_alone = format!("`--{}`", setting.key());
        let row = rows
            .iter()
            .find(|row| row.contains(&flag) || row.contains(&flag_alone))
            .unwrap_or_else(|| panic!("README lists no {flag}"));
        // A setting with no default value says in words what happens without it.
        if let Some(default) = setting.default {
            let default_column = row.split(" | ").nth(1).unwrap();
            let shown = format!("`{}`", default());
            assert!(default_column.starts_with(&shown), "{row} lacks {shown}");
        }
    }
}
