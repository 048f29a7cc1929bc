//! The snapshot `herdsman status` shows: the cluster line and one row per worker or empty slot,
//! with CPU and memory read from `/proc`.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::executor::Executor;
use super::lifecycle::{ExitReason, StopReason};
use crate::control::protocol::{ClusterStatus, LastExitStatus, SlotStatus, StateStatus};
use crate::domain::{SlotState, WorkerPhase};

impl Executor {
    pub fn status(&mut self) -> ClusterStatus {
        let machine = &self.machine;
        let config = machine.config();
        let last_slot = machine
            .workers()
            .iter()
            .map(|worker| worker.slot)
            .max()
            .unwrap_or(0);
        let mut rows = Vec::new();
        for slot in 1..=config.workers.max(last_slot) {
            let Some(history) = machine.slot(slot) else {
                continue;
            };
            let last_exit = history.last_exit.as_ref().map(|exit| LastExitStatus {
                pid: exit.pid,
                reason: match exit.stop_reason {
                    Some(StopReason::NotAccepting) => format!("not accepting; {}", exit.reason),
                    _ => exit.reason.to_string(),
                },
                code: match exit.reason {
                    ExitReason::Code(code) => Some(code),
                    _ => None,
                },
                signal: match exit.reason {
                    ExitReason::Signal(number) => Some(
                        nix::sys::signal::Signal::try_from(number)
                            .map_or(number.to_string(), |signal| signal.as_str().to_string()),
                    ),
                    _ => None,
                },
                at: rfc3339(exit.at),
            });
            let restarts = history.restarts;
            let mut any = false;
            for worker in machine
                .workers()
                .iter()
                .filter(|worker| worker.slot == slot)
            {
                any = true;
                let Some(process) = self.processes.get_mut(&worker.id) else {
                    continue;
                };
                let usage = ProcessUsage::read(worker.pid);
                let now = Instant::now();
                let since = process
                    .cpu_sample
                    .unwrap_or((Duration::ZERO, process.started_at));
                let cpu_percent = usage.map(|usage| {
                    let elapsed = now.duration_since(since.1).as_secs_f64();
                    let used = usage.cpu.saturating_sub(since.0).as_secs_f64();
                    if elapsed > 0.0 {
                        (used / elapsed * 1000.0).round() / 10.0
                    } else {
                        0.0
                    }
                });
                if let Some(usage) = usage {
                    process.cpu_sample = Some((usage.cpu, now));
                }
                rows.push(SlotStatus {
                    slot,
                    pid: Some(worker.pid),
                    generation: Some(worker.generation),
                    state: match (worker.phase(), worker.stop_reason()) {
                        (WorkerPhase::Starting, _) => "starting",
                        (WorkerPhase::Ready, _) => "ready",
                        (WorkerPhase::Draining, Some(StopReason::NotAccepting)) => "not accepting",
                        (WorkerPhase::Retiring | WorkerPhase::Draining, _) => "draining",
                    }
                    .into(),
                    uptime_ms: Some(process.started_at.elapsed().as_millis() as u64),
                    restarts,
                    last_exit: last_exit.clone(),
                    cpu_percent,
                    rss_bytes: usage.map(|usage| usage.rss_bytes),
                });
            }
            if !any && slot <= config.workers {
                let errored = machine.slot_state(slot) == Some(SlotState::Errored);
                rows.push(SlotStatus {
                    slot,
                    pid: None,
                    generation: None,
                    state: if errored { "errored" } else { "backoff" }.into(),
                    uptime_ms: None,
                    restarts,
                    last_exit,
                    cpu_percent: None,
                    rss_bytes: None,
                });
            }
        }
        ClusterStatus {
            degraded: machine.is_degraded(),
            name: config.name.clone(),
            pid: std::process::id(),
            address: self.listeners.local_addr().to_string(),
            balance: config.balance.to_string(),
            state: machine.phase().to_string(),
            workers: config.workers,
            generation: machine.generation(),
            reloads: machine.reloads(),
            uptime_ms: machine.started_at().elapsed().as_millis() as u64,
            command: config
                .command
                .iter()
                .map(|part| part.to_string_lossy().into_owned())
                .collect(),
            slots: rows,
            foreign_listeners: self.foreign_status(),
            shared_state: self.shared_state.url.as_ref().map(|url| {
                let figures = self
                    .shared_state
                    .monitor
                    .as_ref()
                    .map(|monitor| monitor.figures());
                StateStatus {
                    url: url.clone(),
                    kind: if figures.is_some() {
                        "embedded"
                    } else {
                        "external"
                    }
                    .into(),
                    tcp: self.shared_state.tcp.map(|address| address.to_string()),
                    keys: figures.map(|figures| figures.keys),
                    used_memory: figures.map(|figures| figures.used_memory),
                    clients: figures.map(|figures| figures.clients),
                }
            }),
        }
    }
}

pub fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

/// CPU time used and resident memory of one process.
#[derive(Clone, Copy)]
struct ProcessUsage {
    cpu: Duration,
    rss_bytes: u64,
}

impl ProcessUsage {
    fn read(pid: u32) -> Option<ProcessUsage> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command name, which is in parentheses and may hold spaces.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks: u64 =
            fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        let rss_pages: u64 = fields.get(21)?.parse().ok()?;
        let ticks_per_second = clock_ticks_per_second();
        Some(ProcessUsage {
            cpu: Duration::from_secs_f64(ticks as f64 / ticks_per_second as f64),
            rss_bytes: rss_pages * page_size(),
        })
    }
}

fn clock_ticks_per_second() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map_or(100, |ticks| ticks as u64)
}

fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .map_or(4096, |size| size as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let usage = ProcessUsage::read(std::process::id()).expect("our own /proc entry");
        assert!(usage.rss_bytes > 0);
        assert!(ProcessUsage::read(u32::MAX).is_none());
    }
}
