//! Steering an `SO_REUSEPORT` group to the slots whose workers are ready.
//!
//! The kernel hashes each new connection to one socket of the group, whether or not a worker is
//! accepting on it: a slot that is starting, crash-looping or being replaced would collect its
//! share of connections and leave them waiting. So the primary attaches a classic BPF program to
//! the group that picks uniformly at random among the sockets of ready workers, and re-attaches
//! it whenever that set changes.
//!
//! The program, for socket indexes `[i0, i1, …]` (an index is the socket's place in the group:
//! the order in which the sockets started listening, which never changes because the primary
//! never closes one and no foreign socket is ever ahead of them, see `port_group`):
//!
//! ```text
//!     A = random()            ; SKF_AD_RANDOM
//!     A = A % count
//!     if A == 0 return i0
//!     if A == 1 return i1
//!     …
//!     return i0
//! ```
//!
//! With `--sticky ip`, [`sticky_program`] instead: the owner of each of `sticky::BUCKETS`
//! buckets of source addresses is worked out here (rendezvous hashing over the ready slots,
//! see `sticky`), and the program finds the bucket of the connection's source address in its
//! IP header (`SKF_NET_OFF`: the kernel has the network header of the SYN at hand) and returns
//! its owner: a few dozen instructions per new connection, in the kernel, nothing in user space.
//!
//! ```text
//!     A = ip[0] & 0xf0                ; the IP version, as the socket may be dual-stack
//!     A = IPv4: ip[12..16]            ; the source address
//!         IPv6: ip[8..12] ^ ip[12..16] ^ ip[16..20] ^ ip[20..24]
//!     M[0] = A * 0x9E3779B1 >> 24     ; the bucket, 0..255
//!     M[1] = 1 << (M[0] & 31)         ; its bit in a 32-bucket word
//!     goto word[M[0] >> 5]            ; 8 words
//!   word w:
//!     if M[1] & owned(w, i0) return i0 ; a mask per socket that owns a bucket of the word
//!     …
//! ```

use std::io;
use std::os::fd::RawFd;

use super::sticky::{BUCKETS, BUCKET_BITS, MULTIPLIER};
use crate::sys;

fn statement(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump_if_equal(k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    }
}

/// The program that spreads connections over `indexes` (not empty).
pub fn program(indexes: &[u32]) -> Vec<libc::sock_filter> {
    let random_offset = (libc::SKF_AD_OFF + libc::SKF_AD_RANDOM) as u32;
    let mut program = vec![
        statement(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, random_offset),
        statement(
            libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K,
            indexes.len() as u32,
        ),
    ];
    for (choice, &index) in indexes.iter().enumerate() {
        // Equal: fall through to the return below; not equal: skip it.
        program.push(jump_if_equal(choice as u32, 0, 1));
        program.push(statement(libc::BPF_RET | libc::BPF_K, index));
    }
    program.push(statement(libc::BPF_RET | libc::BPF_K, indexes[0]));
    program
}

/// A jump to `offset` instructions after the next (`BPF_JA`: a 32-bit offset).
fn jump(offset: usize) -> libc::sock_filter {
    statement(libc::BPF_JMP | libc::BPF_JA, offset as u32)
}

/// A load from the connection's IP header, `offset` bytes in (`size`: `BPF_W`, `BPF_B`).
fn load_ip(size: u32, offset: i32) -> libc::sock_filter {
    statement(
        libc::BPF_LD | size | libc::BPF_ABS,
        (libc::SKF_NET_OFF + offset) as u32,
    )
}

/// The program that sends each source address's connections to the owner of its bucket:
/// `owners[bucket]` is a socket's index (see the module doc).
pub fn sticky_program(owners: &[u32; BUCKETS as usize]) -> Vec<libc::sock_filter> {
    use libc::{BPF_ALU, BPF_B, BPF_K, BPF_LD, BPF_MEM, BPF_MISC, BPF_RET, BPF_ST, BPF_W, BPF_X};
    let alu = |op: u32, k: u32| statement(BPF_ALU | op | BPF_K, k);
    let xor_x = statement(BPF_ALU | libc::BPF_XOR | BPF_X, 0);
    let tax = statement(BPF_MISC | libc::BPF_TAX, 0);
    let fallback = statement(BPF_RET | BPF_K, owners[0]);
    let mut program = vec![
        load_ip(BPF_B, 0),
        alu(libc::BPF_AND, 0xf0),
        // IPv4: the next two; IPv6: past them.
        jump_if_equal(0x40, 0, 2),
        load_ip(BPF_W, 12),
        jump(10),
        load_ip(BPF_W, 8),
        tax,
        load_ip(BPF_W, 12),
        xor_x,
        tax,
        load_ip(BPF_W, 16),
        xor_x,
        tax,
        load_ip(BPF_W, 20),
        xor_x,
        alu(libc::BPF_MUL, MULTIPLIER),
        alu(libc::BPF_RSH, 32 - BUCKET_BITS),
        statement(BPF_ST, 0),
        alu(libc::BPF_AND, 31),
        tax,
        statement(BPF_LD | libc::BPF_IMM, 1),
        statement(BPF_ALU | libc::BPF_LSH | BPF_X, 0),
        statement(BPF_ST, 1),
        statement(BPF_LD | BPF_MEM, 0),
        alu(libc::BPF_RSH, 5),
    ];
    let words = (BUCKETS / 32) as usize;
    // Each word's block: load the bit, then a test and a return per owner of its buckets.
    let blocks: Vec<Vec<libc::sock_filter>> = owners
        .chunks(32)
        .map(|word| {
            let mut masks: Vec<(u32, u32)> = Vec::new();
            for (bit, &owner) in word.iter().enumerate() {
                match masks.iter_mut().find(|(index, _)| *index == owner) {
                    Some((_, mask)) => *mask |= 1 << bit,
                    None => masks.push((owner, 1 << bit)),
                }
            }
            let mut block = vec![statement(BPF_LD | BPF_MEM, 1)];
            for (index, mask) in masks {
                block.push(statement(libc::BPF_JMP | libc::BPF_JSET | BPF_K, mask));
                block.last_mut().expect("just pushed").jf = 1;
                block.push(statement(BPF_RET | BPF_K, index));
            }
            block.push(fallback);
            block
        })
        .collect();
    // The dispatch: per word a test and a jump to its block, then the fallback.
    let dispatch_end = program.len() + 2 * words + 1;
    let mut block_start = dispatch_end;
    for (word, block) in blocks.iter().enumerate() {
        program.push(jump_if_equal(word as u32, 0, 1));
        let next = program.len() + 1;
        program.push(jump(block_start - next));
        block_start += block.len();
    }
    program.push(fallback);
    program.extend(blocks.into_iter().flatten());
    program
}

/// Sends new connections of the group that `fd` belongs to only to `indexes`; all when empty.
pub fn steer(fd: RawFd, indexes: &[u32]) -> io::Result<()> {
    if indexes.is_empty() {
        return sys::detach_reuseport_bpf(fd);
    }
    sys::attach_reuseport_cbpf(fd, &program(indexes))
}

/// Sends each source address's new connections to the owner of its bucket (`owners`).
pub fn steer_sticky(fd: RawFd, owners: &[u32; BUCKETS as usize]) -> io::Result<()> {
    sys::attach_reuseport_cbpf(fd, &sticky_program(owners))
}
