//! The snapshot `herdsman status` shows: the cluster line and one row per worker or empty slot,
//! with CPU and memory read from `/proc`.

use std::time::Duration;

use tokio::time::Instant;

use super::executor::Executor;
use super::lifecycle::StopReason;
use crate::domain::{
    ClusterStatus, LastExit, LastReplacement, Occupant, SlotState, SlotStatus, StateStatus,
    WorkerStatus,
};

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
            let last_exit = history.last_exit.as_ref().map(|exit| LastExit {
                pid: exit.pid,
                reason: exit.reason,
                not_accepting: exit.stop_reason == Some(StopReason::NotAccepting),
                at: exit.at,
            });
            let restarts = history.restarts;
            let last_replacement =
                history
                    .last_replacement
                    .as_ref()
                    .map(|replaced| LastReplacement {
                        pid: replaced.pid,
                        kind: replaced.reason.kind(),
                        reason: replaced.reason.to_string(),
                        at: replaced.at,
                    });
            let replacements: Vec<(&'static str, u32)> = history
                .replacements
                .iter()
                .map(|(kind, count)| (*kind, *count))
                .collect();
            let restart_reasons: Vec<(&'static str, u32)> = history
                .restart_reasons
                .iter()
                .map(|(kind, count)| (*kind, *count))
                .collect();
            let mut any = false;
            let in_slot = machine
                .workers()
                .iter()
                .filter(|worker| worker.slot == slot);
            for worker in in_slot {
                any = true;
                let Some(process) = self.processes.get_mut(&worker.id) else {
                    continue;
                };
                let usage = ProcessUsage::read(worker.pid);
                let now = Instant::now().into_std();
                // The lifecycle's start time, on the executor's clock (see `executor::now`).
                let since = process
                    .cpu_sample
                    .unwrap_or((Duration::ZERO, worker.started_at));
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
                    occupant: Occupant::Worker(WorkerStatus {
                        pid: worker.pid,
                        generation: worker.generation,
                        phase: worker.phase(),
                        not_accepting: worker.stop_reason() == Some(StopReason::NotAccepting),
                        uptime: now.saturating_duration_since(worker.started_at),
                        cpu_percent,
                        rss_bytes: usage.map(|usage| usage.rss_bytes),
                        connections: self
                            .proxy
                            .as_ref()
                            .map(|proxy| proxy.open_connections(worker.id.0) as u64)
                            .or_else(|| self.handed_open(worker.id)),
                        accept_queue: self
                            .listeners
                            .queued(worker.slot, worker.side)
                            .map(u64::from),
                    }),
                    restarts,
                    last_exit: last_exit.clone(),
                    last_replacement: last_replacement.clone(),
                    replacements: replacements.clone(),
                    restart_reasons: restart_reasons.clone(),
                });
            }
            if !any && slot <= config.workers {
                let errored = machine.slot_state(slot) == Some(SlotState::Errored);
                rows.push(SlotStatus {
                    slot,
                    occupant: if errored {
                        Occupant::Errored
                    } else {
                        Occupant::Backoff
                    },
                    restarts,
                    last_exit,
                    last_replacement,
                    replacements,
                    restart_reasons,
                });
            }
        }
        ClusterStatus {
            degraded: machine.is_degraded(),
            name: config.name.clone(),
            pid: std::process::id(),
            address: self.listeners.local_addr(),
            balance: config.balance,
            sticky: config.sticky,
            proxy_protocol: config.proxy_protocol,
            phase: *self.phase.borrow(),
            workers: config.workers,
            generation: machine.generation(),
            reloads: machine.reloads(),
            reloads_aborted: machine.reloads_aborted(),
            accept_queue: self.listeners.shared_queued().map(u64::from),
            uptime: machine.started_at().elapsed(),
            command: config.command.clone(),
            slots: rows,
            foreign_listeners: self.foreign_status(),
            also_serving: self
                .node_sockets
                .iter()
                .map(|(address, _)| *address)
                .collect(),
            shared_state: self.shared_state.url.as_ref().map(|url| StateStatus {
                url: url.clone(),
                tcp: self.shared_state.tcp,
                embedded: self
                    .shared_state
                    .monitor
                    .as_ref()
                    .map(|monitor| monitor.figures()),
            }),
        }
    }
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

/// CPU time (user and system) `pid` has used, for `/metrics`.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    ProcessUsage::read(pid).map(|usage| usage.cpu)
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
