//! `herdsman.toml`: every flag of `herdsman run`, spelled as the flag (`ready-delay`), plus
//! `[env]` for the workers' environment.
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
//! Unknown keys and bad values are errors that name the file, the line and the key.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};

use super::{
    parse_client_count, parse_duration, parse_signal, parse_size, parse_state, Balance,
    ConfigError, LogFormat, ReadyMode, WorkerCount,
};
use crate::state::StateMode;

/// The settings a herdsman.toml gives; `None` where it is silent.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileSettings {
    #[serde(default, deserialize_with = "command")]
    pub command: Option<Vec<OsString>>,
    #[serde(default, deserialize_with = "workers")]
    pub workers: Option<WorkerCount>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub balance: Option<Balance>,
    pub ready: Option<ReadyMode>,
    #[serde(default, deserialize_with = "duration", alias = "ready_delay")]
    pub ready_delay: Option<Duration>,
    #[serde(default, deserialize_with = "duration", alias = "ready_timeout")]
    pub ready_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "signal", alias = "stop_signal")]
    pub stop_signal: Option<Signal>,
    #[serde(default, deserialize_with = "duration", alias = "kill_timeout")]
    pub kill_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration", alias = "accept_timeout")]
    pub accept_timeout: Option<Duration>,
    pub name: Option<String>,
    #[serde(alias = "log_format")]
    pub log_format: Option<LogFormat>,
    #[serde(default, deserialize_with = "state")]
    pub state: Option<StateMode>,
    #[serde(default, deserialize_with = "loopback_address", alias = "state_listen")]
    pub state_listen: Option<std::net::SocketAddr>,
    #[serde(alias = "state_file")]
    pub state_file: Option<std::path::PathBuf>,
    #[serde(default, deserialize_with = "size", alias = "state_max_memory")]
    pub state_max_memory: Option<u64>,
    #[serde(
        default,
        deserialize_with = "client_count",
        alias = "state_max_clients"
    )]
    pub state_max_clients: Option<usize>,
    pub ipc: Option<crate::ipc::IpcMode>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

impl FileSettings {
    pub fn read(path: &Path) -> Result<FileSettings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::File {
            path: path.to_path_buf(),
            message: error.to_string(),
        })?;
        Self::parse(&text).map_err(|message| ConfigError::File {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parses herdsman.toml text; the error says `line N, `key`: what is wrong`.
    pub fn parse(text: &str) -> Result<FileSettings, String> {
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
                _ => format!("line {line_number}: {message}{note}"),
            }
        })
    }
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

fn command<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Vec<OsString>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Line(String),
        Parts(Vec<String>),
    }
    let parts: Vec<OsString> = match Raw::deserialize(deserializer)
        .map_err(|_| D::Error::custom("expected the command as a string or a list of strings"))?
    {
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

fn workers<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<WorkerCount>, D::Error> {
    let text = TextOrNumber::deserialize(deserializer)
        .map_err(|_| D::Error::custom("expected a number of workers or \"max\""))?
        .into_text();
    text.parse().map(Some).map_err(D::Error::custom)
}

fn state<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<StateMode>, D::Error> {
    let text = String::deserialize(deserializer)
        .map_err(|_| D::Error::custom("expected \"embedded\", \"off\" or a Redis URL in quotes"))?;
    parse_state(&text).map(Some).map_err(D::Error::custom)
}

fn loopback_address<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<std::net::SocketAddr>, D::Error> {
    let text = String::deserialize(deserializer)
        .map_err(|_| D::Error::custom("expected an address in quotes, e.g. \"127.0.0.1:6380\""))?;
    text.parse()
        .map(Some)
        .map_err(|_| D::Error::custom(format!("`{text}` is not an address like 127.0.0.1:6380")))
}

fn size<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    let text = TextOrNumber::deserialize(deserializer)
        .map_err(|_| D::Error::custom("expected a size, e.g. \"100mb\""))?
        .into_text();
    parse_size(&text).map(Some).map_err(D::Error::custom)
}

fn client_count<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<usize>, D::Error> {
    let text = TextOrNumber::deserialize(deserializer)
        .map_err(|_| D::Error::custom("expected a number of clients, e.g. 10000"))?
        .into_text();
    parse_client_count(&text)
        .map(Some)
        .map_err(D::Error::custom)
}

fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(deserializer)
        .map_err(|_| D::Error::custom("expected a duration in quotes, e.g. \"10s\""))?;
    parse_duration(&text).map(Some).map_err(D::Error::custom)
}

fn signal<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Signal>, D::Error> {
    let text = TextOrNumber::deserialize(deserializer)
        .map_err(|_| D::Error::custom("expected a signal name, e.g. \"TERM\""))?
        .into_text();
    parse_signal(&text).map(Some).map_err(D::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_key() {
        let settings = FileSettings::parse(
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
        assert_eq!(settings.env["NODE_ENV"], "production");
        let list = FileSettings::parse(r#"command = ["python3", "app.py"]"#).unwrap();
        assert_eq!(list.command.unwrap(), ["python3", "app.py"]);
        assert_eq!(
            FileSettings::parse("workers = \"max\"").unwrap().workers,
            Some(WorkerCount::Max)
        );
    }

    #[test]
    fn errors_name_the_line_and_the_key() {
        let error = FileSettings::parse("port = 8000\nwrkers = 2\n").unwrap_err();
        assert_eq!(
            error,
            "line 2, `wrkers`: unknown key; did you mean `workers`?"
        );
        let error = FileSettings::parse("ready_dealy = \"2s\"\n").unwrap_err();
        assert_eq!(
            error,
            "line 1, `ready_dealy`: unknown key; did you mean `ready-delay`?"
        );
        let error = FileSettings::parse("[envv]\nA = \"1\"\n").unwrap_err();
        assert!(
            error.ends_with("unknown key; did you mean `env`?"),
            "{error}"
        );
        let error = FileSettings::parse("colour = true\n").unwrap_err();
        assert!(
            error.starts_with("line 1, `colour`: unknown key; herdsman.toml takes the flags"),
            "{error}"
        );
        // An array left open on line 1 is blamed on line 1, where the `[` is.
        let error =
            FileSettings::parse("command = [\"node\", \"server.js\"\nport = 1\n").unwrap_err();
        assert_eq!(
            error,
            "line 1, `command`: missing comma between array elements, expected `,` \
             (the `[` here is not closed before line 2)"
        );
        // A `[` or `#` inside a string or a comment opens nothing.
        let error = FileSettings::parse("name = \"[x\" # [\nworkers = max\n").unwrap_err();
        assert!(error.starts_with("line 2, `workers`: "), "{error}");
        let error = FileSettings::parse("port = 1\nkill-timeout = \"soon\"").unwrap_err();
        assert!(
            error.starts_with("line 2, `kill-timeout`: `soon` is not a duration"),
            "{error}"
        );
        let error = FileSettings::parse("workers = 0").unwrap_err();
        assert_eq!(
            error,
            "line 1, `workers`: the cluster needs at least 1 worker"
        );
        let error = FileSettings::parse("balance = \"random\"").unwrap_err();
        assert!(
            error.starts_with("line 1, `balance`: unknown variant `random`"),
            "{error}"
        );
        let error = FileSettings::parse("port = \"http\"").unwrap_err();
        assert!(error.starts_with("line 1, `port`: "), "{error}");
        let error = FileSettings::parse("command = []").unwrap_err();
        assert_eq!(error, "line 1, `command`: the command is empty");
    }
}
