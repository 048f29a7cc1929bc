//! Sticky sessions by client address (`--sticky ip`): which worker gets a client's connections.
//!
//! Every mode that chooses uses one scheme, rendezvous (highest random weight) hashing: each
//! candidate gets a weight from a hash of the client's address and the candidate's key, and
//! the heaviest wins. The key is the worker's *slot*, not its pid, so a worker's death moves
//! only its own clients (to the heaviest of the others), and its replacement in the same slot
//! gets them back; a scale-up takes from each worker only the clients the new slot wins. A
//! candidate no longer there never shifts anyone else, unlike `hash % count`.
//!
//! - reuseport: the kernel runs the steering program for each new connection, and a classic
//!   BPF program cannot loop over candidates, so the primary does the rendezvous for
//!   [`BUCKETS`] buckets of addresses ahead of time and the program only finds the bucket of
//!   the source address ([`bucket`], the same arithmetic in BPF) and its owner
//!   (`reuseport::sticky_program`).
//! - the proxy and round-robin: [`choose`] over the serving workers' slots, at each new
//!   connection, with the client address's [`address_hash`].

use std::net::IpAddr;

/// How many buckets of addresses the steering program knows the owner of (a power of two).
pub const BUCKETS: u32 = 256;
/// log2 of [`BUCKETS`]: the bucket is the top bits of the multiplied address.
pub const BUCKET_BITS: u32 = 8;
/// The multiplier of Knuth's multiplicative hash (2³² / φ), which spreads near addresses
/// (127.0.0.1, 127.0.0.2, …) over far buckets.
pub const MULTIPLIER: u32 = 0x9E37_79B1;

/// The 32 bits of an address that the steering program hashes (in Rust, for the tests): IPv4 as is; IPv6 as its four
/// words XORed (an IPv4-mapped IPv6 address as the IPv4 address, as the kernel sees its packet).
#[cfg(test)]
pub fn address_word(ip: IpAddr) -> u32 {
    match ip {
        IpAddr::V4(v4) => u32::from(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => u32::from(v4),
            None => {
                let bits = u128::from(v6);
                (0..4).fold(0, |word, index| word ^ (bits >> (32 * index)) as u32)
            }
        },
    }
}

/// The bucket of an address's word, as the steering program computes it.
#[cfg(test)]
pub fn bucket(word: u32) -> u32 {
    word.wrapping_mul(MULTIPLIER) >> (32 - BUCKET_BITS)
}

/// A hash of the client's address, for [`choose`].
pub fn address_hash(ip: IpAddr) -> u64 {
    let bits = match ip {
        IpAddr::V4(v4) => u32::from(v4) as u128,
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(u128::from(v6), |v4| u32::from(v4) as u128),
    };
    mix(bits as u64 ^ mix((bits >> 64) as u64))
}

/// SplitMix64's finalizer: every input bit changes about half the output bits.
fn mix(mut value: u64) -> u64 {
    value = value.wrapping_add(0x9E37_79B9_7F4A_7C15);
    value = (value ^ (value >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    value = (value ^ (value >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    value ^ (value >> 31)
}

/// The weight of candidate `key` for client `hash`.
fn weight(hash: u64, key: u64) -> u64 {
    mix(hash ^ mix(key))
}

/// The candidate that client `hash` sticks to: the heaviest of `candidates` (key, value); the
/// smaller key on a tie. `None` when there is none.
pub fn choose<T>(hash: u64, candidates: impl IntoIterator<Item = (u64, T)>) -> Option<T> {
    candidates
        .into_iter()
        .max_by_key(|(key, _)| (weight(hash, *key), std::cmp::Reverse(*key)))
        .map(|(_, value)| value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn owners(slots: &[u64], clients: u32) -> Vec<u64> {
        (0..clients)
            .map(|client| {
                let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + client));
                choose(address_hash(ip), slots.iter().map(|&slot| (slot, slot))).unwrap()
            })
            .collect()
    }

    #[test]
    fn a_departed_slot_moves_only_its_own_clients_and_gets_them_back() {
        let before = owners(&[1, 2, 3, 4], 4000);
        let without_two = owners(&[1, 3, 4], 4000);
        for (old, new) in before.iter().zip(&without_two) {
            if *old != 2 {
                assert_eq!(old, new, "a client of another slot moved");
            } else {
                assert_ne!(*new, 2);
            }
        }
        assert_eq!(
            owners(&[1, 3, 4, 2], 4000),
            before,
            "the order does not matter"
        );
        let mut counts: HashMap<u64, usize> = HashMap::new();
        for owner in &before {
            *counts.entry(*owner).or_default() += 1;
        }
        for slot in 1..=4 {
            let share = counts[&slot];
            assert!((800..1200).contains(&share), "slot {slot}: {share} of 4000");
        }
        assert_eq!(choose::<u64>(1, []), None);
    }

    #[test]
    fn buckets_spread_neighbouring_addresses_and_mapped_addresses_are_ipv4() {
        let v4 = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 7));
        let mapped = IpAddr::V6(Ipv4Addr::new(127, 0, 0, 7).to_ipv6_mapped());
        assert_eq!(address_word(v4), address_word(mapped));
        assert_eq!(address_hash(v4), address_hash(mapped));
        let buckets: std::collections::BTreeSet<u32> = (1..=9)
            .map(|last| bucket(address_word(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))))
            .collect();
        assert_eq!(buckets.len(), 9, "{buckets:?}");
        assert!(buckets.iter().all(|&bucket| bucket < BUCKETS));
        let v6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
        assert_eq!(address_word(v6), 0x2001_0db8 ^ 1);
    }
}
