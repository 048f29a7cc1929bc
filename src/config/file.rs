//! `herdsman.toml`: every flag of `herdsman run`, spelled as the flag (`ready-delay`), plus
//! `[env]` for the workers' environment; and [`RunFlags`], the flags over the file.
//!
//! ```toml
//! command = ["node", "server.js"]   # or "node server.js" (split on spaces)
//! workers = "max"                   # or a number
//! port = 8000
//! ready-delay = "2s"
//!
//! [env]
//! NODE_ENV = "production"
//! ```
//!
//! The keys are the rows of `schema` (serde derive on its `Settings`); this file turns toml's
//! errors into messages that name the file, the line and the key, and holds the deserializers
//! of the values that toml does not spell as Rust does (durations, signals, sizes).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};

use super::values::{
    parse_client_count, parse_duration, parse_keep, parse_log_size, parse_max_pending,
    parse_request_count, parse_signal, parse_size, parse_state, parse_watchdog, ByteSize,
    WorkerCount,
};
use super::{Config, ConfigError, Settings};
use crate::state::StateMode;

/// The file `herdsman run` reads when given no command and no `--config`.
pub const DEFAULT_FILE: &str = "herdsman.toml";

/// The flags of `herdsman run` as given: `--config`, and the settings' layer.
#[derive(Clone, Debug, Default)]
pub struct RunFlags {
    pub config: Option<PathBuf>,
    pub settings: Settings,
}

impl RunFlags {
    /// The configuration file these flags use: `--config`, or `./herdsman.toml` when no command
    /// was given and the file exists.
    pub fn file(&self) -> Option<PathBuf> {
        match &self.config {
            Some(path) => Some(path.clone()),
            None if self.settings.command.is_none() && Path::new(DEFAULT_FILE).exists() => {
                Some(PathBuf::from(DEFAULT_FILE))
            }
            None => None,
        }
    }

    /// Reads the configuration file (if any), lays the flags over it, and validates.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let file = match self.file() {
            Some(path) => read(&path)?,
            None => Settings::default(),
        };
        self.settings.clone().or(file).resolve().validate()
    }
}

/// Reads herdsman.toml at `path`; errors name the file.
pub fn read(path: &Path) -> Result<Settings, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::File {
        path: path.to_path_buf(),
        message: error.to_string(),
    })?;
    parse(&text).map_err(|message| ConfigError::File {
        path: path.to_path_buf(),
        message,
    })
}

/// Parses herdsman.toml text; the error says `line N, `key`: what is wrong`.
pub fn parse(text: &str) -> Result<Settings, String> {
    toml::from_str(text).map_err(|error| {
        let message = error.message().trim_end();
        let message = suggest_key(message).unwrap_or_else(|| message.to_string());
        let Some(span) = error.span() else {
            return message;
        };
        // A value that goes on over lines (an array) is blamed where it starts, not on the
        // line where the parser gave up on it.
        let (at, note) = match unclosed_bracket(&text[..span.start]) {
            Some(open) if text[open..span.start].contains('\n') => (
                open,
                format!(
                    " (the `[` here is not closed before line {})",
                    line_of(text, span.start)
                ),
            ),
            _ => (span.start, String::new()),
        };
        let line_start = text[..at].rfind('\n').map_or(0, |at| at + 1);
        let line = text[line_start..].lines().next().unwrap_or("");
        let line_number = line_of(text, at);
        match line.split_once('=') {
            Some((key, _)) if !key.trim().starts_with('[') => {
                format!("line {line_number}, `{}`: {message}{note}", key.trim())
            }
            // A table's header names the table.
            _ if line.trim().starts_with('[') => {
                format!("line {line_number}, `{}`: {message}{note}", line.trim())
            }
            _ => format!("line {line_number}: {message}{note}"),
        }
    })
}

/// The line (from 1) that byte `at` of `text` is on.
fn line_of(text: &str, at: usize) -> usize {
    text[..at].matches('\n').count() + 1
}

/// Where the last `[` still open at the end of `text` is, outside strings and comments.
fn unclosed_bracket(text: &str) -> Option<usize> {
    let mut open = Vec::new();
    let mut quote = None;
    let mut comment = false;
    for (at, c) in text.char_indices() {
        match (quote, c) {
            _ if comment => comment = c != '\n',
            (Some(q), c) if c == q || c == '\n' => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '#') => comment = true,
            (None, '[') => open.push(at),
            (None, ']') => {
                open.pop();
            }
            (None, _) => {}
        }
    }
    open.pop()
}

/// serde's "unknown field `wrkers`, expected one of `command`, `workers`, …" as
/// "unknown key; did you mean `workers`?", the nearest key spelled as in the README.
fn suggest_key(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    let (unknown, rest) = rest.split_once('`')?;
    let known: Vec<&str> = rest
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|key| !key.contains('_'))
        .collect();
    let wanted = unknown.replace('_', "-").to_ascii_lowercase();
    let nearest = known
        .iter()
        .map(|key| (strsim::damerau_levenshtein(&wanted, key), *key))
        .min()
        .filter(|(distance, key)| *distance <= 2.max(key.len() / 3));
    Some(match nearest {
        Some((_, key)) => format!("unknown key; did you mean `{key}`?"),
        None => "unknown key; herdsman.toml takes the flags of `herdsman run` (see \
                 `herdsman run --help`), spelled as flags (`ready-delay`), and an [env] table"
            .to_string(),
    })
}

pub(super) fn command<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Vec<OsString>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Line(String),
        Parts(Vec<String>),
    }
    let parts: Vec<OsString> =
        match Raw::deserialize(deserializer).map_err(|_| {
            D::Error::custom("expected the command as a string or a list of strings")
        })? {
            // Split on spaces, no shell: quotes would reach the program as part of its arguments.
            Raw::Line(line) if line.contains(['"', '\'']) => return Err(D::Error::custom(
                "a command written as one string is split on spaces, with no shell to read its \
                 quotes: write it as a list, e.g. command = [\"sh\", \"-c\", \"echo hi; sleep 1\"]",
            )),
            Raw::Line(line) => line.split_whitespace().map(OsString::from).collect(),
            Raw::Parts(parts) => parts.into_iter().map(OsString::from).collect(),
        };
    if parts.is_empty() {
        return Err(D::Error::custom("the command is empty"));
    }
    Ok(Some(parts))
}

/// A string, or a number written as a TOML integer.
#[derive(Deserialize)]
#[serde(untagged)]
enum TextOrNumber {
    Number(i64),
    Text(String),
}

impl TextOrNumber {
    fn into_text(self) -> String {
        match self {
            TextOrNumber::Number(number) => number.to_string(),
            TextOrNumber::Text(text) => text,
        }
    }
}

/// A value written as text or as a number (`workers = 3`, `workers = "max"`), read by
/// `parse`; `expected` is the error for anything else.
fn text_or_number<'de, D: Deserializer<'de>, T, E: std::fmt::Display>(
    deserializer: D,
    expected: &str,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Result<Option<T>, D::Error> {
    let text = TextOrNumber::deserialize(deserializer)
        .map_err(|_| D::Error::custom(expected))?
        .into_text();
    parse(&text).map(Some).map_err(D::Error::custom)
}

/// A value written in quotes, read by `parse`; `expected` is the error for anything else.
fn quoted<'de, D: Deserializer<'de>, T, E: std::fmt::Display>(
    deserializer: D,
    expected: &str,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Result<Option<T>, D::Error> {
    let text = String::deserialize(deserializer).map_err(|_| D::Error::custom(expected))?;
    parse(&text).map(Some).map_err(D::Error::custom)
}

pub(super) fn workers<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<WorkerCount>, D::Error> {
    let expected = "expected a number of workers or \"max\"";
    text_or_number(deserializer, expected, str::parse::<WorkerCount>)
}

pub(super) fn state<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<StateMode>, D::Error> {
    let expected = "expected \"embedded\", \"off\" or a Redis URL in quotes";
    quoted(deserializer, expected, parse_state)
}

pub(super) fn loopback_address<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<std::net::SocketAddr>, D::Error> {
    let expected = "expected an address in quotes, e.g. \"127.0.0.1:6380\"";
    quoted(deserializer, expected, |text| {
        text.parse()
            .map_err(|_| format!("`{text}` is not an address like 127.0.0.1:6380"))
    })
}

/// One of a flag's values, in quotes (`balance = "proxy"`), read as the flag reads it; an
/// error lists the values.
pub(super) fn choice<'de, D: Deserializer<'de>, T: clap::ValueEnum>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    let names: Vec<String> = T::value_variants()
        .iter()
        .filter_map(|value| Some(format!("\"{}\"", value.to_possible_value()?.get_name())))
        .collect();
    let names = names.join(", ");
    let expected = format!("expected one of {names} (in quotes)");
    quoted(deserializer, &expected, |text| {
        T::from_str(text, false).map_err(|_| format!("`{text}` is not one of {names}"))
    })
}

pub(super) fn port<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u16>, D::Error> {
    text_or_number(deserializer, "expected a port number, e.g. 8000", |text| {
        text.parse::<u16>()
            .map_err(|_| format!("`{text}` is not a port number (0 to 65535; 0 picks a free one)"))
    })
}

pub(super) fn size<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    text_or_number(deserializer, "expected a size, e.g. \"100mb\"", parse_size)
}

pub(super) fn request_count<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<u64>, D::Error> {
    let expected = "expected a number of requests, e.g. 1000";
    text_or_number(deserializer, expected, parse_request_count)
}

pub(super) fn watchdog<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    let expected = "expected a duration in quotes, e.g. \"30s\"";
    quoted(deserializer, expected, parse_watchdog)
}

pub(super) fn log_size<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<ByteSize>, D::Error> {
    text_or_number(
        deserializer,
        "expected a size, e.g. \"10mb\"",
        parse_log_size,
    )
}

pub(super) fn keep_count<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<usize>, D::Error> {
    text_or_number(
        deserializer,
        "expected a number of files, e.g. 5",
        parse_keep,
    )
}

pub(super) fn max_pending<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<usize>, D::Error> {
    let expected = "expected a number of connections, e.g. 1";
    text_or_number(deserializer, expected, parse_max_pending)
}

pub(super) fn client_count<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<usize>, D::Error> {
    let expected = "expected a number of clients, e.g. 10000";
    text_or_number(deserializer, expected, parse_client_count)
}

pub(super) fn duration<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    let expected = "expected a duration in quotes, e.g. \"10s\"";
    quoted(deserializer, expected, parse_duration)
}

pub(super) fn signal<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Signal>, D::Error> {
    text_or_number(
        deserializer,
        "expected a signal name, e.g. \"TERM\"",
        parse_signal,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Balance, LogFormat, ReadyMode};

    #[test]
    fn reads_every_key() {
        let settings = parse(
            r#"
command = "node server.js --flag"
workers = 3
host = "127.0.0.1"
port = 9000
balance = "shared"
ready = "notify"
ready-delay = "2s"
ready_timeout = "1m"
stop-signal = "INT"
kill-timeout = "500ms"
name = "api"
log-format = "json"

[env]
NODE_ENV = "production"
"#,
        )
        .unwrap();
        assert_eq!(settings.command.unwrap(), ["node", "server.js", "--flag"]);
        assert_eq!(settings.workers, Some(WorkerCount::Exactly(3)));
        assert_eq!(settings.port, Some(9000));
        assert_eq!(settings.balance, Some(Balance::Shared));
        assert_eq!(settings.ready, Some(ReadyMode::Notify));
        assert_eq!(settings.ready_delay, Some(Duration::from_secs(2)));
        assert_eq!(settings.ready_timeout, Some(Duration::from_secs(60)));
        assert_eq!(settings.stop_signal, Some(Signal::SIGINT));
        assert_eq!(settings.kill_timeout, Some(Duration::from_millis(500)));
        assert_eq!(settings.log_format, Some(LogFormat::Json));
        assert_eq!(settings.env.unwrap()["NODE_ENV"], "production");
        let list = parse(r#"command = ["python3", "app.py"]"#).unwrap();
        assert_eq!(list.command.unwrap(), ["python3", "app.py"]);
        assert_eq!(
            parse("workers = \"max\"").unwrap().workers,
            Some(WorkerCount::Max)
        );
    }

    #[test]
    fn errors_name_the_line_and_the_key() {
        let error = parse("port = 8000\nwrkers = 2\n").unwrap_err();
        assert_eq!(
            error,
            "line 2, `wrkers`: unknown key; did you mean `workers`?"
        );
        let error = parse("ready_dealy = \"2s\"\n").unwrap_err();
        assert_eq!(
            error,
            "line 1, `ready_dealy`: unknown key; did you mean `ready-delay`?"
        );
        let error = parse("[envv]\nA = \"1\"\n").unwrap_err();
        assert_eq!(error, "line 1, `[envv]`: unknown key; did you mean `env`?");
        let error = parse("colour = true\n").unwrap_err();
        assert!(
            error.starts_with("line 1, `colour`: unknown key; herdsman.toml takes the flags"),
            "{error}"
        );
        // An array left open on line 1 is blamed on line 1, where the `[` is.
        let error = parse("command = [\"node\", \"server.js\"\nport = 1\n").unwrap_err();
        assert_eq!(
            error,
            "line 1, `command`: missing comma between array elements, expected `,` \
             (the `[` here is not closed before line 2)"
        );
        // A `[` or `#` inside a string or a comment opens nothing.
        let error = parse("name = \"[x\" # [\nworkers = max\n").unwrap_err();
        assert!(error.starts_with("line 2, `workers`: "), "{error}");
        let error = parse("port = 1\nkill-timeout = \"soon\"").unwrap_err();
        assert!(
            error.starts_with("line 2, `kill-timeout`: `soon` is not a duration"),
            "{error}"
        );
        let error = parse("workers = 0").unwrap_err();
        assert_eq!(
            error,
            "line 1, `workers`: the cluster needs at least 1 worker"
        );
        let error = parse("balance = \"random\"").unwrap_err();
        assert_eq!(
            error,
            "line 1, `balance`: `random` is not one of \"shared\", \"reuseport\", \
             \"round-robin\", \"least-conn\", \"proxy\", \"proxy-rr\""
        );
        let error = parse("port = \"http\"").unwrap_err();
        assert!(error.starts_with("line 1, `port`: "), "{error}");
        let error = parse("command = []").unwrap_err();
        assert_eq!(error, "line 1, `command`: the command is empty");
        let error = parse("command = \"sh -c 'echo hi; sleep 1'\"").unwrap_err();
        assert!(
            error.starts_with(
                "line 1, `command`: a command written as one string is split on spaces"
            ),
            "{error}"
        );
    }

    /// A value of the wrong kind (a boolean for a number, a number for a duration) is named
    /// with what the key takes, by the helper its reader uses.
    #[test]
    fn a_value_of_the_wrong_kind_says_what_the_key_takes() {
        let cases = [
            (
                "workers = true",
                "line 1, `workers`: expected a number of workers or \"max\"",
            ),
            (
                "kill-timeout = 5",
                "line 1, `kill-timeout`: expected a duration in quotes, e.g. \"10s\"",
            ),
            (
                "max-requests = true",
                "line 1, `max-requests`: expected a number of requests, e.g. 1000",
            ),
            (
                "log-keep = \"all\"",
                "line 1, `log-keep`: `all` is not a number of files to keep (0 or more, e.g. 5)",
            ),
            (
                "admin = 9000",
                "line 1, `admin`: expected an address in quotes, e.g. \"127.0.0.1:6380\"",
            ),
            (
                "admin = \"here\"",
                "line 1, `admin`: `here` is not an address like 127.0.0.1:6380",
            ),
            (
                "port = 70000",
                "line 1, `port`: `70000` is not a port number (0 to 65535; 0 picks a free one)",
            ),
            (
                "port = true",
                "line 1, `port`: expected a port number, e.g. 8000",
            ),
            ("port = \"8080\"\nname = 1", "line 2, `name`: "),
            (
                "sticky = true",
                "line 1, `sticky`: expected one of \"off\", \"ip\" (in quotes)",
            ),
            (
                "ipc = \"yes\"",
                "line 1, `ipc`: `yes` is not one of \"auto\", \"off\", \"on\", \"node\"",
            ),
        ];
        for (text, expected) in cases {
            let error = parse(text).unwrap_err();
            assert!(error.starts_with(expected), "{text}: {error}");
        }
    }
}
