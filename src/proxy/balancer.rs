//! Which worker gets the next connection: plain state, no I/O.
//!
//! Least-connections counts the connections each worker holds open through the proxy now
//! (exact: the proxy opened every one of them); ties go in turn, from the worker after the last
//! one picked, so that fresh connections one after another spread as evenly as round-robin.
//!
//! Sticky (`--sticky ip`): a connection whose client address is known goes to the worker its
//! address sticks to among those that may get it (`balance::sticky`: rendezvous over the
//! workers' slots), whatever the policy; the count of open connections is kept all the same.

use std::net::{IpAddr, SocketAddr};

use crate::balance::sticky;

/// How the proxy picks (`--balance proxy`, `--balance proxy-rr`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    LeastConnections,
    RoundRobin,
}

/// A worker the proxy may relay to: its id (the lifecycle's, never reused), its slot (what a
/// sticky client sticks to) and private port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Upstream {
    pub id: u64,
    pub slot: usize,
    pub address: SocketAddr,
}

#[derive(Debug)]
struct Entry {
    upstream: Upstream,
    open: usize,
}

#[derive(Debug)]
pub struct Balancer {
    policy: Policy,
    /// `--sticky ip`: a client's address picks its worker.
    sticky: bool,
    /// Sorted by id: the turn goes in the order the workers started.
    entries: Vec<Entry>,
    /// Workers no longer picked that still have connections open, counted until they close.
    leaving: Vec<Entry>,
    /// Where the next turn starts looking.
    next: usize,
}

impl Balancer {
    pub fn new(policy: Policy, sticky: bool) -> Self {
        Balancer {
            policy,
            sticky,
            entries: Vec::new(),
            leaving: Vec::new(),
            next: 0,
        }
    }

    /// The workers that get new connections from now on; those that stay keep their counts.
    pub fn set(&mut self, upstreams: &[Upstream]) {
        let mut old = std::mem::take(&mut self.entries);
        old.append(&mut self.leaving);
        let mut entries: Vec<Entry> = upstreams
            .iter()
            .map(|upstream| Entry {
                upstream: *upstream,
                open: old
                    .iter()
                    .find(|entry| entry.upstream.id == upstream.id)
                    .map_or(0, |entry| entry.open),
            })
            .collect();
        self.leaving = old
            .into_iter()
            .filter(|entry| entry.open > 0)
            .filter(|entry| {
                !upstreams
                    .iter()
                    .any(|upstream| upstream.id == entry.upstream.id)
            })
            .collect();
        entries.sort_by_key(|entry| entry.upstream.id);
        self.entries = entries;
        if self.next >= self.entries.len() {
            self.next = 0;
        }
    }

    /// Picks a worker for a new upstream connection from `client`, not one of `except`, and
    /// counts it open.
    pub fn pick(&mut self, except: &[u64], client: Option<IpAddr>) -> Option<Upstream> {
        if let Some(client) = client.filter(|_| self.sticky) {
            return self.pick_sticky(except, client);
        }
        let count = self.entries.len();
        let in_turn = (0..count).map(|offset| (self.next + offset) % count);
        let mut eligible =
            in_turn.filter(|&index| !except.contains(&self.entries[index].upstream.id));
        let index = match self.policy {
            Policy::RoundRobin => eligible.next()?,
            // `min_by_key` keeps the first of equals: the first in turn.
            Policy::LeastConnections => eligible.min_by_key(|&index| self.entries[index].open)?,
        };
        self.next = (index + 1) % count;
        let entry = &mut self.entries[index];
        entry.open += 1;
        Some(entry.upstream)
    }

    /// The worker `client` sticks to, of those not in `except`. A slot listed twice (a
    /// moment of a replacement) is its newer worker.
    fn pick_sticky(&mut self, except: &[u64], client: IpAddr) -> Option<Upstream> {
        let eligible = |entry: &&Entry| !except.contains(&entry.upstream.id);
        let newest_of_slot = |index: &usize| {
            let entry = &self.entries[*index];
            !self.entries.iter().filter(eligible).any(|other| {
                other.upstream.slot == entry.upstream.slot && other.upstream.id > entry.upstream.id
            })
        };
        let candidates = (0..self.entries.len())
            .filter(|&index| eligible(&&self.entries[index]))
            .filter(newest_of_slot)
            .map(|index| (self.entries[index].upstream.slot as u64, index));
        let index = sticky::choose(sticky::address_hash(client), candidates)?;
        let entry = &mut self.entries[index];
        entry.open += 1;
        Some(entry.upstream)
    }

    /// A connection to worker `id` closed (or it was never made).
    pub fn release(&mut self, id: u64) {
        if let Some(entry) = self
            .entries
            .iter_mut()
            .chain(self.leaving.iter_mut())
            .find(|entry| entry.upstream.id == id)
        {
            entry.open = entry.open.saturating_sub(1);
        }
        self.leaving.retain(|entry| entry.open > 0);
    }

    /// Whether worker `id` is one that gets new connections.
    pub fn is_routed(&self, id: u64) -> bool {
        self.entries.iter().any(|entry| entry.upstream.id == id)
    }

    /// The connections open through the proxy to worker `id` now (0 for one it never had).
    pub fn open(&self, id: u64) -> usize {
        self.entries
            .iter()
            .chain(&self.leaving)
            .find(|entry| entry.upstream.id == id)
            .map_or(0, |entry| entry.open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstreams(ids: &[u64]) -> Vec<Upstream> {
        ids.iter()
            .map(|&id| Upstream {
                id,
                slot: id as usize,
                address: SocketAddr::from(([127, 0, 0, 1], 20000 + id as u16)),
            })
            .collect()
    }

    fn picks(balancer: &mut Balancer, times: usize, release: bool) -> Vec<u64> {
        (0..times)
            .map(|_| {
                let id = balancer.pick(&[], None).unwrap().id;
                if release {
                    balancer.release(id);
                }
                id
            })
            .collect()
    }

    #[test]
    fn a_worker_taken_off_the_list_is_counted_until_its_connections_close() {
        let mut balancer = Balancer::new(Policy::LeastConnections, false);
        balancer.set(&upstreams(&[1, 2]));
        assert_eq!(picks(&mut balancer, 3, false), [1, 2, 1]);
        balancer.set(&upstreams(&[2, 3]));
        assert_eq!(
            (balancer.open(1), balancer.open(2), balancer.open(3)),
            (2, 1, 0)
        );
        assert_eq!(
            picks(&mut balancer, 2, false),
            [3, 2],
            "1 is picked no more"
        );
        balancer.release(1);
        balancer.set(&upstreams(&[2, 3]));
        assert_eq!(balancer.open(1), 1);
        balancer.release(1);
        assert_eq!(balancer.open(1), 0);
        assert!(balancer.leaving.is_empty());
    }

    #[test]
    fn round_robin_goes_in_turn_whatever_is_open() {
        let mut balancer = Balancer::new(Policy::RoundRobin, false);
        balancer.set(&upstreams(&[3, 1, 2]));
        assert_eq!(picks(&mut balancer, 7, false), [1, 2, 3, 1, 2, 3, 1]);
    }

    #[test]
    fn least_connections_takes_the_least_busy_and_ties_in_turn() {
        let mut balancer = Balancer::new(Policy::LeastConnections, false);
        balancer.set(&upstreams(&[1, 2]));
        // Closed at once: every pick is a tie, so they alternate.
        assert_eq!(picks(&mut balancer, 4, true), [1, 2, 1, 2]);
        // Held open: ties alternate, and the one with fewer open wins.
        assert_eq!(picks(&mut balancer, 1, false), [1]);
        assert_eq!(picks(&mut balancer, 1, false), [2]);
        assert_eq!(picks(&mut balancer, 1, false), [1]);
        assert_eq!(picks(&mut balancer, 1, false), [2]);
        assert_eq!(picks(&mut balancer, 1, false), [1]);
        assert_eq!(picks(&mut balancer, 3, false), [2, 1, 2]);
        balancer.release(1);
        balancer.release(1);
        assert_eq!(picks(&mut balancer, 2, false), [1, 1]);
    }

    #[test]
    fn except_and_changes_of_workers() {
        let mut balancer = Balancer::new(Policy::LeastConnections, false);
        assert_eq!(balancer.pick(&[], None), None);
        balancer.set(&upstreams(&[1, 2]));
        assert_eq!(balancer.pick(&[1], None).unwrap().id, 2);
        assert_eq!(balancer.pick(&[1, 2], None), None);
        // Worker 2 keeps its open connection; worker 3 is new and idle.
        balancer.set(&upstreams(&[2, 3]));
        assert_eq!(picks(&mut balancer, 1, false), [3]);
        assert_eq!(picks(&mut balancer, 2, false), [2, 3]);
        // A connection to a worker no longer listed closes: nothing to count.
        balancer.release(1);
        assert_eq!(picks(&mut balancer, 2, false), [2, 3]);
        balancer.set(&[]);
        assert_eq!(balancer.pick(&[], None), None);
    }

    fn client(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([127, 0, 0, last]))
    }

    #[test]
    fn sticky_sends_a_client_to_its_slot_and_a_dead_workers_clients_elsewhere() {
        let mut balancer = Balancer::new(Policy::LeastConnections, true);
        balancer.set(&upstreams(&[1, 2, 3]));
        let owners: Vec<u64> = (1..=30)
            .map(|last| balancer.pick(&[], client(last)).unwrap().id)
            .collect();
        for (index, &owner) in owners.iter().enumerate() {
            for _ in 0..5 {
                let again = balancer.pick(&[], client(index as u8 + 1)).unwrap().id;
                assert_eq!(
                    again, owner,
                    "least-connections does not move a sticky client"
                );
            }
        }
        assert!((1..=3).all(|id| owners.contains(&id)), "{owners:?}");
        // Worker 2 failed (not taken off the list yet): its clients go elsewhere, no one else's.
        for (index, &owner) in owners.iter().enumerate() {
            let now = balancer.pick(&[2], client(index as u8 + 1)).unwrap().id;
            match owner {
                2 => assert_ne!(now, 2),
                _ => assert_eq!(now, owner),
            }
        }
        // Its replacement (id 4) serves slot 2, and gets slot 2's clients back.
        balancer.set(&[
            upstreams(&[1, 3])[0],
            upstreams(&[3])[0],
            Upstream {
                id: 4,
                slot: 2,
                ..upstreams(&[4])[0]
            },
        ]);
        for (index, &owner) in owners.iter().enumerate() {
            let now = balancer.pick(&[], client(index as u8 + 1)).unwrap().id;
            assert_eq!(now, if owner == 2 { 4 } else { owner });
        }
        // No address known (or not sticky): the policy.
        let mut plain = Balancer::new(Policy::RoundRobin, false);
        plain.set(&upstreams(&[1, 2]));
        let ids: Vec<u64> = (0..4)
            .map(|_| plain.pick(&[], client(1)).unwrap().id)
            .collect();
        assert_eq!(ids, [1, 2, 1, 2]);
    }
}
