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

use std::io;
use std::os::fd::RawFd;

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

/// Sends new connections of the group that `fd` belongs to only to `indexes`; all when empty.
pub fn steer(fd: RawFd, indexes: &[u32]) -> io::Result<()> {
    if indexes.is_empty() {
        return sys::detach_reuseport_bpf(fd);
    }
    sys::attach_reuseport_cbpf(fd, &program(indexes))
}
