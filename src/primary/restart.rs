//! When a crashed worker comes back: at once the first time, then with exponential backoff.
//!
//! A slot's failures count up while its workers keep dying young: before they are ready, or
//! within [`RestartPolicy::healthy_uptime`] of it. A worker that was ready for longer was
//! healthy: its death (the OOM killer, an operator's `kill -9`) starts the count over, so it is
//! restarted at once and a slot whose workers get killed now and then never backs off nor shows
//! as `errored`. The time is counted per worker from its readiness, so reloads (which replace
//! workers) do not keep the count from resetting.

use std::time::Duration;

#[derive(Clone, Debug)]
pub struct RestartPolicy {
    /// The wait before the second restart in a row; doubled for each one after.
    pub first_delay: Duration,
    /// The longest wait between restarts.
    pub max_delay: Duration,
    /// A worker that was ready this long was healthy: when it dies, its slot's failure count
    /// starts over.
    pub healthy_uptime: Duration,
    /// After this many failures in a row the slot is `errored` (a crash loop); it keeps retrying.
    pub errored_after: u32,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(30),
            healthy_uptime: Duration::from_secs(1),
            errored_after: 5,
        }
    }
}

impl RestartPolicy {
    /// The wait before restarting after `failures` failures in a row (1 = the first).
    pub fn delay(&self, failures: u32) -> Duration {
        if failures <= 1 {
            return Duration::ZERO;
        }
        let doublings = (failures - 2).min(20);
        self.first_delay
            .saturating_mul(1 << doublings)
            .min(self.max_delay)
    }
}

pub use crate::domain::ExitReason;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_starts_at_zero_doubles_and_caps() {
        let policy = RestartPolicy::default();
        let delays: Vec<u64> = (1..=12)
            .map(|n| policy.delay(n).as_millis() as u64)
            .collect();
        assert_eq!(
            delays,
            [0, 100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000]
        );
        assert_eq!(policy.delay(u32::MAX), Duration::from_secs(30));
    }
}
