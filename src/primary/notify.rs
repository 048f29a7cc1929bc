//! sd_notify, both ways.
//!
//! - From workers: each worker gets its own datagram socket as `NOTIFY_SOCKET`, so a `READY=1`
//!   is attributed to the worker that owns the socket, without trusting pids in credentials.
//! - To the primary's own service manager: when herdsman itself runs under systemd with
//!   `Type=notify`, it says `READY=1` once every worker is ready and `STOPPING=1` on stop.

use std::io;
use std::path::PathBuf;

use tokio::net::UnixDatagram;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::lifecycle::WorkerId;
use super::Event;

/// What a worker said on its notify socket.
#[derive(Debug, PartialEq, Eq)]
pub enum Notice {
    Ready,
    /// Not on the socket: the proxy's probe found the worker's private port accepting.
    Accepting,
    Stopping,
    Status(String),
    /// `WATCHDOG=1`: the worker's heartbeat (`--watchdog`).
    Watchdog,
    /// `REQUESTS=n`: the connections (or requests) it has served so far (`--max-requests`).
    Requests(u64),
}

/// Parses one sd_notify datagram: newline-separated `KEY=VALUE` assignments.
pub fn parse(datagram: &[u8]) -> Vec<Notice> {
    let text = String::from_utf8_lossy(datagram);
    text.lines()
        .filter_map(|line| match line.split_once('=') {
            Some(("READY", "1")) => Some(Notice::Ready),
            Some(("STOPPING", "1")) => Some(Notice::Stopping),
            Some(("STATUS", status)) => Some(Notice::Status(status.to_string())),
            Some(("WATCHDOG", "1")) => Some(Notice::Watchdog),
            Some(("REQUESTS", count)) => count.trim().parse().ok().map(Notice::Requests),
            _ => None,
        })
        .collect()
}

/// A bound notify socket and the task that reads it; both go away when this is dropped.
pub struct NotifySocket {
    path: PathBuf,
    task: JoinHandle<()>,
}

impl NotifySocket {
    /// Binds `path` and forwards `worker`'s notices as events.
    pub fn bind(
        path: PathBuf,
        worker: WorkerId,
        events: mpsc::UnboundedSender<Event>,
    ) -> io::Result<Self> {
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path)?;
        let task = tokio::spawn(async move {
            let mut buffer = vec![0u8; 4096];
            while let Ok(length) = socket.recv(&mut buffer).await {
                for notice in parse(&buffer[..length]) {
                    if events.send(Event::Notified { worker, notice }).is_err() {
                        return;
                    }
                }
            }
        });
        Ok(NotifySocket { path, task })
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The service manager that started the primary, if it asked for notifications.
pub struct ServiceManager {
    socket: std::os::unix::net::UnixDatagram,
    address: std::os::unix::net::SocketAddr,
}

impl ServiceManager {
    /// From `$NOTIFY_SOCKET` (a path, or `@name` in the abstract namespace), if set and usable.
    pub fn from_env() -> Option<ServiceManager> {
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::net::{SocketAddr, UnixDatagram};

        let target = std::env::var_os("NOTIFY_SOCKET")?;
        let bytes = std::os::unix::ffi::OsStrExt::as_bytes(target.as_os_str());
        let address = match bytes.strip_prefix(b"@") {
            Some(name) => SocketAddr::from_abstract_name(name).ok()?,
            None => SocketAddr::from_pathname(&target).ok()?,
        };
        Some(ServiceManager {
            socket: UnixDatagram::unbound().ok()?,
            address,
        })
    }

    /// Sends `state` (e.g. `READY=1`); best effort, as sd_notify is.
    pub fn notify(&self, state: &str) {
        let _ = self.socket.send_to_addr(state.as_bytes(), &self.address);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_assignments() {
        assert_eq!(parse(b"READY=1"), [Notice::Ready]);
        assert_eq!(
            parse(b"STATUS=warming up\nREADY=1\nMAINPID=7\n"),
            [Notice::Status("warming up".into()), Notice::Ready]
        );
        assert_eq!(parse(b"READY=0\nSTOPPING=1"), [Notice::Stopping]);
        assert_eq!(parse(b"garbage"), []);
        assert_eq!(
            parse(b"WATCHDOG=1\nREQUESTS=42\nREQUESTS=x\nWATCHDOG=trigger"),
            [Notice::Watchdog, Notice::Requests(42)]
        );
    }
}
