//! The syscalls herdsman needs that have no safe wrapper (in `nix` or `socket2`), kept in one
//! place. Each `unsafe` block here says why it is sound. By who calls them:
//!
//! - between `fork` and `exec`, so only async-signal-safe calls (no allocation, no locks):
//!   [`arm_child`];
//! - the exec shim, single-threaded, just before the final `exec`: [`move_fds_into_place`] (the
//!   inherited listening sockets at fds 3, 4, … as socket activation expects);
//! - the worker's keeper: [`adopt_inherited_socket`], [`close_inherited`], [`die_by_signal`];
//! - the worker library: [`take_inherited_listener`], [`take_ipc_channel`] (fds it inherited,
//!   each taken once), [`cpu_seconds`], and the channel's reader, which takes handed
//!   connections with their frames ([`recv_with_fds`]);
//! - the primary: [`raise_fd_limit`] at start; the reuseport steering program
//!   ([`attach_reuseport_cbpf`], [`detach_reuseport_bpf`]); queue lengths for readiness,
//!   retiring and the rescue ([`listen_queue_length`]); [`own_children`] for the reaper;
//!   the round-robin port, watched for connections to accept ([`watch_listener`]);
//! - the state store: [`release_free_memory`]; and, while a Lua script runs past its time
//!   limit, answering other clients `BUSY` without taking their requests
//!   ([`peek_nowait`], [`consume_and_reply`], [`accept_nowait`]).
//!
//! The only other `unsafe` in the crate is the store's Lua state
//! (`state::commands::script`): `mlua` needs `unsafe` to load the C libraries Redis gives
//! scripts (cjson, cmsgpack, bit), and a C trampoline calls back into Rust; both say why there.
//! The binary (`main.rs`) forbids `unsafe` outright.

#![allow(unsafe_code)]

use std::io;
use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// The first fd of socket activation (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: RawFd = 3;

/// Arms `command` so that the child it forks
/// - with `die_with_parent` (the pid of the spawning process, read before the fork): dies with
///   SIGKILL when the thread that spawned it exits (`PR_SET_PDEATHSIG`), and exits at once if
///   that process is already gone by the time the child runs;
/// - keeps `inherit` open across `exec` (they are close-on-exec in the parent, so that no other
///   child leaks them);
/// - starts with no signal blocked (the keeper blocks the signals it reads from a signalfd, and
///   a blocked mask survives `exec`).
pub fn arm_child(command: &mut Command, die_with_parent: Option<libc::pid_t>, inherit: Vec<RawFd>) {
    let pre_exec = move || -> io::Result<()> {
        // SAFETY: sigemptyset, sigprocmask, prctl, getppid, fcntl and _exit are
        // async-signal-safe and touch only this process; `inherit` was allocated before the
        // fork and is only read here.
        unsafe {
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            if libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
            if let Some(parent) = die_with_parent {
                if libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                ) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                // The parent may have died between fork and prctl; then nothing would kill us.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
            }
            for &fd in &inherit {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
        }
        Ok(())
    };
    // SAFETY: the closure only makes async-signal-safe calls (see above).
    unsafe {
        command.pre_exec(pre_exec);
    }
}

/// Takes ownership of the inherited fd `fd` if it is a socket (close-on-exec from now on, so
/// the keeper's worker does not inherit it); `None` when it is not open or not a socket.
pub fn adopt_inherited_socket(fd: RawFd) -> Option<std::os::unix::net::UnixStream> {
    use std::os::fd::FromRawFd;
    if fd <= 2 {
        return None;
    }
    // SAFETY: fstat on a number only reads metadata; it fails harmlessly if `fd` is not open.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut stat) } != 0 || stat.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return None;
    }
    // SAFETY: the primary passed `fd` to this process (the keeper) as its end of the control
    // socket, it is a socket (checked above), and the keeper calls this once.
    let socket = unsafe { std::os::unix::net::UnixStream::from_raw_fd(fd) };
    nix::fcntl::fcntl(
        &socket,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .ok()?;
    Some(socket)
}

/// Closes inherited fds this process passed on and no longer uses (the keeper's copies of the
/// worker's sockets, so that the worker's exit closes them).
pub fn close_inherited(fds: &[RawFd]) {
    for &fd in fds {
        if fd > 2 {
            // SAFETY: `fd` was inherited for the worker, which has its own copy by now; nothing
            // in this process wraps or uses it.
            unsafe { libc::close(fd) };
        }
    }
}

/// Ends this process by `signal`, so that its parent sees the status its child had (the
/// keeper mirrors its worker's end). No core dump: the worker dumped its own, if any.
pub fn die_by_signal(signal: nix::sys::signal::Signal) -> ! {
    use nix::sys::signal::{sigprocmask, SigHandler, SigSet, SigmaskHow};
    let _ = nix::sys::prctl::set_dumpable(false);
    // SAFETY: restoring the default disposition installs no handler code.
    let _ = unsafe { nix::sys::signal::signal(signal, SigHandler::SigDfl) };
    let mut set = SigSet::empty();
    set.add(signal);
    let _ = sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&set), None);
    let _ = nix::sys::signal::raise(signal);
    // Only a signal whose default action is not to terminate gets here.
    std::process::exit(128 + signal as i32)
}

/// Moves the fds `from` to `3, 4, …` (in order), inheritable, and closes the originals.
///
/// Called by the exec shim, which is single-threaded and owns every fd involved. Works even when
/// some of `from` already sit in the target range, by first lifting all of them above it.
pub fn move_fds_into_place(from: &[RawFd]) -> io::Result<()> {
    let above = LISTEN_FDS_START + from.len() as RawFd;
    let mut lifted = Vec::with_capacity(from.len());
    for &fd in from {
        // SAFETY: F_DUPFD_CLOEXEC creates a new fd; `fd` is an fd this process inherited.
        let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, above) };
        if new < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: closing an fd we own and no longer use.
        unsafe { libc::close(fd) };
        lifted.push(new);
    }
    for (index, &fd) in lifted.iter().enumerate() {
        let target = LISTEN_FDS_START + index as RawFd;
        // SAFETY: dup2 onto a number in 3..; the new fd has no FD_CLOEXEC, so it survives exec.
        if unsafe { libc::dup2(fd, target) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the lifted copy is ours and replaced by `target`.
        unsafe { libc::close(fd) };
    }
    Ok(())
}

/// `SO_ATTACH_REUSEPORT_CBPF` and `SO_DETACH_REUSEPORT_BPF` from `asm-generic/socket.h`, shared
/// by x86, arm, aarch64 and riscv (libc does not export them for glibc targets).
const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;
const SO_DETACH_REUSEPORT_BPF: libc::c_int = 68;

/// Attaches a classic BPF program that picks the socket of an `SO_REUSEPORT` group for each new
/// connection; `fd` is any socket of the group. The program's return value is an index into the
/// group (the order in which its sockets started listening); an index out of range falls back
/// to the kernel's hash.
pub fn attach_reuseport_cbpf(fd: RawFd, program: &[libc::sock_filter]) -> io::Result<()> {
    let fprog = libc::sock_fprog {
        len: program.len() as libc::c_ushort,
        filter: program.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: the kernel copies `program` (of `len` instructions, alive for the call) and
    // validates it; `fprog` is a correctly sized sock_fprog.
    let result = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_ATTACH_REUSEPORT_CBPF,
            (&fprog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if result < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Removes the program attached by [`attach_reuseport_cbpf`]; the kernel hashes again.
pub fn detach_reuseport_bpf(fd: RawFd) -> io::Result<()> {
    let unused: libc::c_int = 0;
    // SAFETY: SO_DETACH_REUSEPORT_BPF ignores its value; we pass a valid int anyway.
    let result = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_DETACH_REUSEPORT_BPF,
            (&unused as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if result < 0 {
        let error = io::Error::last_os_error();
        // ENOENT: no program was attached, which is what we wanted.
        if error.raw_os_error() != Some(libc::ENOENT) {
            return Err(error);
        }
    }
    Ok(())
}

/// How many connections wait in the accept queue of the listening TCP socket `fd`.
///
/// For a socket in the LISTEN state the kernel reports its accept backlog in `tcpi_unacked`.
pub fn listen_queue_length(fd: RawFd) -> io::Result<u32> {
    // SAFETY: tcp_info is plain old data; zeroed is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut length = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` and `length` are valid for writes of the size given.
    let result = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut length,
        )
    };
    if result < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(info.tcpi_unacked)
}

/// Gives memory the allocator holds but no longer uses back to the kernel (glibc keeps freed
/// memory for reuse; after the state store drops many keys that would show as resident memory
/// for the primary's life).
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; no pointers are passed.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The listening socket herdsman passed as fd 3 (`LISTEN_FDS=1`, `LISTEN_PID` = this process),
/// taken once; `None` when this process was not given one.
pub fn take_inherited_listener() -> io::Result<Option<std::net::TcpListener>> {
    use std::os::fd::FromRawFd;
    use std::sync::atomic::{AtomicBool, Ordering};
    static TAKEN: AtomicBool = AtomicBool::new(false);
    let ours = std::env::var("LISTEN_FDS").as_deref() == Ok("1")
        && std::env::var("LISTEN_PID").as_deref() == Ok(&std::process::id().to_string());
    if !ours || TAKEN.swap(true, Ordering::SeqCst) {
        return Ok(None);
    }
    // SAFETY: LISTEN_FDS/LISTEN_PID say fd 3 was passed to this very process as a listening
    // socket, and the flag above makes sure it is wrapped (owned) only once.
    let listener = unsafe { std::net::TcpListener::from_raw_fd(3) };
    // Not inherited further by whatever this process runs.
    nix::fcntl::fcntl(
        &listener,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )?;
    Ok(Some(listener))
}

/// The worker's end of the IPC channel (`HERDSMAN_IPC_FD`), taken once; `None` without one.
pub fn take_ipc_channel() -> io::Result<Option<std::os::unix::net::UnixStream>> {
    use std::os::fd::FromRawFd;
    use std::sync::atomic::{AtomicBool, Ordering};
    static TAKEN: AtomicBool = AtomicBool::new(false);
    let Some(fd) = std::env::var("HERDSMAN_IPC_FD")
        .ok()
        .and_then(|fd| fd.parse::<RawFd>().ok())
        .filter(|fd| *fd > 2)
    else {
        return Ok(None);
    };
    if TAKEN.swap(true, Ordering::SeqCst) {
        return Ok(None);
    }
    // Only an fd that really is a socket is wrapped (a stale variable must not adopt a file).
    // SAFETY: fstat on a number only reads metadata; it fails harmlessly if `fd` is not open.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut stat) } != 0 || stat.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Ok(None);
    }
    // SAFETY: herdsman passed `fd` to this process as its end of the channel, it is a socket
    // (checked above), and the flag makes sure it is owned only once.
    let channel = unsafe { std::os::unix::net::UnixStream::from_raw_fd(fd) };
    nix::fcntl::fcntl(
        &channel,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )?;
    Ok(Some(channel))
}

/// Which process or thread [`cpu_seconds`] measures.
#[derive(Debug, Clone, Copy)]
pub enum Usage {
    Process,
    Thread,
    Children,
}

/// CPU seconds used (system, user), as `getrusage(2)` reports them; zeros if it fails.
pub fn cpu_seconds(who: Usage) -> (f64, f64) {
    let who = match who {
        Usage::Process => libc::RUSAGE_SELF,
        Usage::Thread => libc::RUSAGE_THREAD,
        Usage::Children => libc::RUSAGE_CHILDREN,
    };
    // SAFETY: a zeroed rusage is a valid value of a plain C struct, and getrusage only writes
    // into the one it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a live, writable rusage.
    if unsafe { libc::getrusage(who, &mut usage) } != 0 {
        return (0.0, 0.0);
    }
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (seconds(usage.ru_stime), seconds(usage.ru_utime))
}

/// The children of this process (of all its threads), from `/proc/self/task/*/children`;
/// `None` when /proc cannot say (not mounted, or a kernel without `CONFIG_PROC_CHILDREN`).
pub fn own_children() -> Option<Vec<libc::pid_t>> {
    let tasks = std::fs::read_dir("/proc/self/task").ok()?;
    let mut children = Vec::new();
    for task in tasks.flatten() {
        let list = std::fs::read_to_string(task.path().join("children")).ok()?;
        children.extend(
            list.split_whitespace()
                .filter_map(|pid| pid.parse::<libc::pid_t>().ok()),
        );
    }
    Some(children)
}

/// The state store's busy-script loop (`state/commands/script/busy.rs`): the bytes waiting on
/// socket `fd`, without taking them off it (`MSG_PEEK`) and without waiting.
pub fn peek_nowait(fd: RawFd, buf: &mut [u8]) -> usize {
    // SAFETY: recv writes at most `buf.len()` bytes into `buf`; a bad fd is an error return.
    let read = unsafe {
        libc::recv(
            fd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    read.max(0) as usize
}

/// Takes `len` bytes (already peeked) off socket `fd` and sends `reply`, without waiting.
pub fn consume_and_reply(fd: RawFd, len: usize, reply: &[u8]) {
    let mut sink = vec![0u8; len];
    // SAFETY: recv writes at most `len` bytes into `sink`; send reads `reply.len()` bytes of
    // `reply`; neither blocks, and a closed peer is an error return (no SIGPIPE).
    unsafe {
        libc::recv(fd, sink.as_mut_ptr().cast(), len, libc::MSG_DONTWAIT);
        libc::send(
            fd,
            reply.as_ptr().cast(),
            reply.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        );
    }
}

/// One non-blocking `recvmsg` on the stream socket `fd` into `buf`: the bytes read (0 at end
/// of file), and the fds that came with them (SCM_RIGHTS, close-on-exec) pushed to `fds`. The
/// kernel ends a read after the bytes an fd came with, so each fd belongs to a frame whose
/// first bytes are in this read or were in an earlier one (herdsman's handed connections).
pub fn recv_with_fds(
    fd: RawFd,
    buf: &mut [u8],
    fds: &mut std::collections::VecDeque<std::os::fd::OwnedFd>,
) -> io::Result<usize> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::FromRawFd;
    let mut space = nix::cmsg_space!([RawFd; 8]);
    let mut iov = [io::IoSliceMut::new(buf)];
    let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC;
    let message = recvmsg::<()>(fd, &mut iov, Some(&mut space), flags).map_err(io::Error::from)?;
    for control in message.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(received) = control {
            // SAFETY: recvmsg just installed each of these descriptors in this process, and
            // nothing else owns them.
            fds.extend(
                received
                    .into_iter()
                    .map(|fd| unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    Ok(message.bytes)
}

/// Runs the non-blocking `io` through a tokio socket's `try_io` (the caller's, as `try_io`:
/// `|io| stream.try_io(Interest::READABLE, io)`), which clears the socket's readiness on
/// `WouldBlock`. `io` returns its result and whether the socket has nothing more for now (a
/// read that left room in its buffer took all there was): then the readiness is cleared as
/// well, so the next wait is for new bytes instead of a call that finds none. Bytes that come
/// meanwhile are a new edge for the reactor, which clearing does not lose (tokio's readiness
/// ticks).
pub fn try_io_clearing<T>(
    try_io: impl FnOnce(&mut dyn FnMut() -> io::Result<T>) -> io::Result<T>,
    mut io: impl FnMut() -> io::Result<(T, bool)>,
) -> io::Result<T> {
    let mut done = None;
    let outcome = try_io(&mut || {
        let (value, exhausted) = io()?;
        if !exhausted {
            return Ok(value);
        }
        done = Some(value);
        Err(io::ErrorKind::WouldBlock.into())
    });
    match done {
        Some(value) => Ok(value),
        None => outcome,
    }
}

/// One `recv` from socket `fd` (non-blocking) into the spare capacity of `buffer`, which grows
/// by what was read; no zeroing of the room first (a proxy's 64 KiB per read).
pub fn recv_appending(fd: RawFd, buffer: &mut Vec<u8>) -> io::Result<usize> {
    let spare = buffer.spare_capacity_mut();
    // SAFETY: recv writes at most `spare.len()` bytes into memory `buffer` owns.
    let read = unsafe {
        libc::recv(
            fd,
            spare.as_mut_ptr().cast(),
            spare.len(),
            libc::MSG_DONTWAIT,
        )
    };
    let read = usize::try_from(read).map_err(|_| io::Error::last_os_error())?;
    // SAFETY: recv initialized the first `read` bytes of the spare capacity.
    unsafe { buffer.set_len(buffer.len() + read) };
    Ok(read)
}

/// A connection waiting on listening socket `fd`, accepted non-blocking, if there is one.
pub fn accept_nowait(fd: RawFd) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: accept4 with null address pointers; it only returns a new descriptor or -1.
    let accepted = unsafe {
        libc::accept4(
            fd,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    };
    // SAFETY: accept4 just returned this descriptor and nothing else owns it.
    (accepted >= 0).then(|| unsafe { std::os::fd::OwnedFd::from_raw_fd(accepted) })
}

/// Raises the soft limit on open files to the hard limit, as Redis does at start (a primary
/// holds a few fds per worker and one per store client; distributions still default the soft
/// limit to 1024 for select()'s sake), and returns the soft limit now in force. Workers inherit
/// the raised limit.
pub fn raise_fd_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given, which lives on this stack frame.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct. It fails (and changes nothing) when the hard
        // limit is unlimited but the kernel's nr_open is not; the soft limit then stays.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return Ok(raised.rlim_cur);
        }
    }
    Ok(limit.rlim_cur)
}

/// Registers `listener` (non-blocking) with the current tokio runtime, to wait until it has a
/// connection and accept it with a plain `accept`: connections accepted so are not registered
/// with the runtime, as a `tokio::net::TcpListener`'s are (two `epoll_ctl` calls for each, which
/// the round-robin primary, passing every connection on at once, has no use for).
pub fn watch_listener(
    listener: std::net::TcpListener,
) -> io::Result<tokio::io::unix::AsyncFd<std::net::TcpListener>> {
    // SAFETY: the AsyncFd owns `listener`, so its fd stays open, and the same, until the AsyncFd
    // is dropped (which deregisters it first); `TcpListener::as_raw_fd` always returns it.
    unsafe { tokio::io::unix::AsyncFd::register(listener) }.map_err(io::Error::from)
}
