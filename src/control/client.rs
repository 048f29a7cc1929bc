//! The CLI's end of the control socket: find a running cluster, send one request, read replies.
//!
//! Blocking I/O: each command sends one request and reads its answer, nothing to overlap.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use super::protocol::{Reply, Request};
pub use super::socket::is_running;
use crate::runtime_dir;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no cluster named `{0}` is running for this user (see `herdsman ls`)")]
    NotRunning(String),
    #[error("no cluster is running for this user; start one with `herdsman run`")]
    NoneRunning,
    #[error("{} clusters are running ({}); name the one you mean", .0.len(), .0.join(", "))]
    Ambiguous(Vec<String>),
    #[error("cannot reach the control socket {}: {source}", path.display())]
    Connect { path: PathBuf, source: io::Error },
    #[error("the primary answered something unreadable: {0}")]
    BadReply(String),
    #[error("lost the connection to the primary: {0}")]
    Io(#[from] io::Error),
}

pub fn socket_path(name: &str) -> PathBuf {
    runtime_dir::base().join(format!("{name}.sock"))
}

/// The names of the clusters running for this user, sorted.
pub fn running_clusters() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(runtime_dir::base()) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|entry| {
            entry
                .file_name()
                .to_str()?
                .strip_suffix(".sock")
                .map(String::from)
        })
        .filter(|name| is_running(name))
        .collect();
    names.sort();
    names
}

/// The cluster a command is about: the one named, or the only one running.
pub fn resolve(name: Option<&str>) -> Result<String, ClientError> {
    match name {
        Some(name) if is_running(name) => Ok(name.to_string()),
        Some(name) => Err(ClientError::NotRunning(name.to_string())),
        None => {
            let mut running = running_clusters();
            match running.len() {
                0 => Err(ClientError::NoneRunning),
                1 => Ok(running.remove(0)),
                _ => Err(ClientError::Ambiguous(running)),
            }
        }
    }
}

/// Sends `request` to cluster `name` and hands every reply to `each` until the primary closes
/// the connection. Returns the final result (`None` if the connection closed without one, as
/// after `stop`).
pub fn request(
    name: &str,
    request: &Request,
    each: impl FnMut(&Reply),
) -> Result<Option<(bool, String)>, ClientError> {
    replies(send(name, request)?, each)
}

/// Connects to cluster `name` and sends `request`; read the answer with [`replies`]. A clone of
/// the stream (`try_clone`) shut down from another thread ends a reader that follows logs.
pub fn send(name: &str, request: &Request) -> Result<UnixStream, ClientError> {
    let path = socket_path(name);
    let mut stream =
        UnixStream::connect(&path).map_err(|source| ClientError::Connect { path, source })?;
    let mut line =
        serde_json::to_string(request).map_err(|error| ClientError::BadReply(error.to_string()))?;
    line.push('\n');
    stream.write_all(line.as_bytes())?;
    Ok(stream)
}

/// Hands every reply on `stream` to `each` until the primary closes the connection; returns
/// the final result, as [`request`] does.
pub fn replies(
    stream: UnixStream,
    mut each: impl FnMut(&Reply),
) -> Result<Option<(bool, String)>, ClientError> {
    let mut result = None;
    for line in BufReader::new(stream).lines() {
        let line = line?;
        let reply: Reply = serde_json::from_str(&line)
            .map_err(|error| ClientError::BadReply(format!("{error}: {line}")))?;
        if let Reply::Result { ok, message } = &reply {
            result = Some((*ok, message.clone()));
        }
        each(&reply);
    }
    Ok(result)
}
