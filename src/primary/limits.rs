//! The executor's readings for the lifecycle's limits (`lifecycle::limits`): the resident
//! memory of each worker's process tree (`--max-memory`) and the connections each worker has
//! served (`--max-requests`). The lifecycle decides; this only reads.

use super::executor::Executor;
use super::lifecycle::WorkerId;

impl Executor {
    /// The RSS of every serving worker's process tree.
    pub fn memory_sample(&self) -> Vec<(WorkerId, u64)> {
        let serving = self.machine.workers().iter().filter(|w| w.is_serving());
        serving
            .filter_map(|worker| {
                let process = self.processes.get(&worker.id)?;
                Some((worker.id, tree_rss(process.keeper_pid, process.pid)))
            })
            .collect()
    }

    /// The connections every serving worker has served: as many as the primary handed it
    /// (proxy, round-robin) or as it reported (`REQUESTS=n`), whichever is more.
    pub fn served_sample(&self) -> Vec<(WorkerId, u64)> {
        let serving = self.machine.workers().iter().filter(|w| w.is_serving());
        serving
            .filter_map(|worker| {
                let process = self.processes.get(&worker.id)?;
                let proxied = self
                    .proxy
                    .as_ref()
                    .map_or(0, |proxy| proxy.served(worker.id.0));
                let handed = self.round_robin_served(worker.id);
                Some((worker.id, process.reported_served.max(proxied).max(handed)))
            })
            .collect()
    }
}

/// The resident memory of a worker and everything it started: every descendant of its keeper
/// (which adopts the worker's orphans, `setsid` daemons included) but the keeper itself, or
/// the worker's own when the keeper cannot be read. Shared pages count once per process, as
/// `ps` and PM2 count them.
pub fn tree_rss(keeper: u32, worker: u32) -> u64 {
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .map_or(4096, |size| size as u64);
    let mut pids = descendants(keeper);
    if !pids.contains(&worker) {
        pids.push(worker);
    }
    pids.iter()
        .filter_map(|pid| resident_pages(*pid))
        .sum::<u64>()
        * page
}

/// Every descendant of `root` (not `root`), from `/proc/PID/task/*/children`; bounded, so a
/// fork bomb cannot keep the primary reading.
fn descendants(root: u32) -> Vec<u32> {
    const MOST: usize = 4096;
    let mut found = Vec::new();
    let mut next = vec![root];
    while let Some(pid) = next.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let Ok(list) = std::fs::read_to_string(task.path().join("children")) else {
                continue;
            };
            for child in list.split_whitespace().filter_map(|pid| pid.parse().ok()) {
                if found.len() < MOST && !found.contains(&child) {
                    found.push(child);
                    next.push(child);
                }
            }
        }
    }
    found
}

/// The resident pages of `pid` (`/proc/PID/statm`, its second field).
fn resident_pages(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    statm.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_counts_its_children() {
        let own = tree_rss(u32::MAX, std::process::id());
        assert!(own > 0);
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let with_child = tree_rss(std::process::id(), std::process::id());
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(with_child > own, "{with_child} > {own}");
        assert_eq!(resident_pages(u32::MAX), None);
    }
}
