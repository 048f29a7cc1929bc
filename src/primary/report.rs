//! How exits and failures are described to people: one sentence for an exit, the worker's last
//! stderr lines, and a hint for start-up failures chosen from how the worker ended.

use std::time::Duration;

use super::lifecycle::{LastExit, StopReason};
use super::restart::ExitReason;
use crate::config::{Config, ReadyMode};

/// `1 worker`, `2 workers`.
pub fn workers(count: usize) -> String {
    match count {
        1 => "1 worker".into(),
        _ => format!("{count} workers"),
    }
}

/// `worker 2 (pid 4121) exited with code 1 after 80ms`.
pub fn describe_exit(slot: usize, exit: &LastExit) -> String {
    let uptime = humantime::format_duration(Duration::from_millis(exit.uptime.as_millis() as u64));
    match exit.stop_reason {
        Some(StopReason::NotReady) => format!(
            "worker {slot} (pid {}) was not ready in time and was stopped ({})",
            exit.pid, exit.reason
        ),
        Some(StopReason::NotAccepting) => format!(
            "worker {slot} (pid {}) was not accepting connections and was stopped ({})",
            exit.pid, exit.reason
        ),
        _ if exit.pid == 0 => format!("worker {slot} could not be started"),
        _ => {
            let mut text = format!(
                "worker {slot} (pid {}) {} after {uptime}",
                exit.pid, exit.reason
            );
            if let Some(before) = exit.said_ready_before {
                let before =
                    humantime::format_duration(Duration::from_millis(before.as_millis() as u64));
                text.push_str(&format!(
                    ", {before} after it said it was ready (not counted: a worker must stay up \
                     --ready-delay after saying so)"
                ));
            }
            text
        }
    }
}

/// The last stderr lines, one per line under the message, or nothing.
pub fn format_tail(tail: &[String]) -> String {
    if tail.is_empty() {
        return String::new();
    }
    let mut text = String::from("; its last stderr lines:");
    for line in tail {
        text.push_str("\n  | ");
        text.push_str(line);
    }
    text
}

/// What the user can do about a start-up failure, guessed from how the worker ended.
pub fn startup_hint(exit: &LastExit, config: &Config, port: u16) -> String {
    let tail = exit.tail.join("\n").to_ascii_lowercase();
    let program = config.command[0].to_string_lossy();
    let node = config.ipc == crate::ipc::IpcMode::Node;
    if exit.stop_reason == Some(StopReason::NotReady) && config.ready == ReadyMode::Notify {
        let or_node = match node {
            true => " or say process.send('ready')",
            false => "",
        };
        return format!(
            "with --ready notify a worker must send READY=1 to $NOTIFY_SOCKET (sd_notify){or_node} \
             within --ready-timeout; make the app notify, or use --ready delay"
        );
    }
    if exit.stop_reason == Some(StopReason::NotReady) {
        let why = match config.balance.is_proxy() {
            true => {
                "under the proxy its $PORT must accept: check that the app listens on \
                     $HOST:$PORT, not on a port or address of its own"
            }
            false => "it never sent the ready signal its command's other workers sent",
        };
        return format!(
            "the worker did not become ready within --ready-timeout ({}); {why}",
            humantime::format_duration(config.ready_timeout)
        );
    }
    if exit.stop_reason == Some(StopReason::NotAccepting) && node {
        return format!(
            "the worker listened on port {port} but never accepted a connection there: its event \
             loop may be blocked (CPU work, a synchronous call) from its start"
        );
    }
    if node && tail.contains("enotsup") {
        return "the app listens on a unix socket path or a UDP port, which herdsman does not \
                serve to Node workers: listen on a TCP port ($PORT)"
            .into();
    }
    if node && tail.contains("eaddrinuse") {
        return "the app's listen() failed because herdsman could not bind the address it asked \
                for (the warning above names who holds it): free it, or have the app listen on \
                another port"
            .into();
    }
    if exit.stop_reason == Some(StopReason::NotAccepting) {
        return format!(
            "the worker never accepted a connection on the socket it inherits (fd 3, LISTEN_FDS) \
             for port {port}; it may listen on a port of its own: make it use the inherited \
             socket as the README shows for your language"
        );
    }
    if exit.reason == ExitReason::Code(crate::shim::EXIT_NOT_FOUND) {
        return format!(
            "`{program}` was not found: check the spelling and $PATH, or give its path"
        );
    }
    if exit.reason == ExitReason::Code(crate::shim::EXIT_CANNOT_EXECUTE) {
        return format!(
            "`{program}` could not be executed: check that it is a program and executable"
        );
    }
    if tail.contains("eaddrinuse")
        || tail.contains("address already in use")
        || tail.contains("address in use")
    {
        return format!(
            "this app binds port {port} itself, but herdsman already listens there; run it with \
             --balance proxy (each worker gets a private $PORT, and the primary relays to it), or \
             make it use the inherited socket (fd 3, LISTEN_FDS) as the README shows for your \
             language"
        );
    }
    "the worker exits on its own before it is ready; run the command by hand to see why".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(reason: ExitReason, tail: &[&str]) -> LastExit {
        LastExit {
            pid: 42,
            reason,
            uptime: Duration::from_millis(80),
            at: std::time::SystemTime::now(),
            tail: tail.iter().map(|line| line.to_string()).collect(),
            ready_for: None,
            said_ready_before: None,
            stop_reason: None,
        }
    }

    /// The hint fits how the worker ended and what it is: a Node worker's listen() goes
    /// through herdsman, so its EADDRINUSE is not "binds $PORT itself".
    #[test]
    fn start_up_hints_fit_the_worker() {
        let mut config = crate::primary::lifecycle::world::config(1);
        config.ready = ReadyMode::Delay;
        let mut in_use = exit(
            ExitReason::Code(1),
            &["Error: listen EADDRINUSE 127.0.0.1:3000"],
        );
        assert!(startup_hint(&in_use, &config, 8000)
            .starts_with("this app binds port 8000 itself, but herdsman already listens there"));
        config.ipc = crate::ipc::IpcMode::Node;
        assert!(startup_hint(&in_use, &config, 8000)
            .starts_with("the app's listen() failed because herdsman could not bind"));
        in_use.tail = vec!["Error: listen ENOTSUP /tmp/app.sock".into()];
        assert!(startup_hint(&in_use, &config, 8000).starts_with(
            "the app listens on a unix socket path or a UDP port, which herdsman does not serve"
        ));
        let mut not_ready = exit(ExitReason::Signal(15), &[]);
        not_ready.stop_reason = Some(StopReason::NotReady);
        config.balance = crate::config::Balance::Proxy;
        assert_eq!(
            startup_hint(&not_ready, &config, 8000),
            "the worker did not become ready within --ready-timeout (30s); under the proxy its \
             $PORT must accept: check that the app listens on $HOST:$PORT, not on a port or \
             address of its own"
        );
        config.ready = ReadyMode::Notify;
        assert!(startup_hint(&not_ready, &config, 8000).contains("or say process.send('ready')"));
    }

    #[test]
    fn describes_exits() {
        assert_eq!(workers(1), "1 worker");
        assert_eq!(workers(3), "3 workers");
        let crash = exit(ExitReason::Code(1), &["boom"]);
        assert_eq!(
            describe_exit(2, &crash),
            "worker 2 (pid 42) exited with code 1 after 80ms"
        );
        assert_eq!(
            format_tail(&crash.tail),
            "; its last stderr lines:\n  | boom"
        );
        assert_eq!(format_tail(&[]), "");
    }
}
