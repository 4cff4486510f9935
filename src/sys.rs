//! Parent-side system-call helpers: errno, fds that stay clear of 0-2, reaping, pidfds, capabilities.
//!
//! Nothing here runs in the child between `clone` and `execve` (see [`crate::child`] for that side).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use libc::pid_t;

use crate::errors::{Error, Step};

/// The calling thread's errno.
#[must_use]
pub fn last_errno() -> i32 {
    errno_of(&std::io::Error::last_os_error())
}

/// The errno of an I/O error (EIO for one that has none).
#[must_use]
pub fn errno_of(err: &std::io::Error) -> i32 {
    err.raw_os_error().unwrap_or(libc::EIO)
}

/// This process's effective uid and gid.
#[must_use]
pub fn effective_ids() -> (u32, u32) {
    // SAFETY: geteuid and getegid cannot fail.
    let uid = unsafe { libc::geteuid() };
    // SAFETY: as above.
    (uid, unsafe { libc::getegid() })
}

/// Takes ownership of a fresh fd (`>= 0`), moved to 3 or above and close-on-exec.
///
/// An fd of nsbox's must never sit on 0, 1 or 2: a caller that closed its standard fds (a daemon) would
/// otherwise have the child's `dup2` onto 0-2 clobber it, or have its output land in nsbox's pipe.
pub fn own_fd(fd: RawFd) -> std::io::Result<OwnedFd> {
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh fd that nobody else owns.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    if fd >= 3 {
        return Ok(owned);
    }
    // SAFETY: F_DUPFD_CLOEXEC returns a new fd; `owned` (below 3) is closed when it goes.
    let lifted = unsafe { libc::fcntl(owned.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if lifted < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above.
    Ok(unsafe { OwnedFd::from_raw_fd(lifted) })
}

/// A CLOEXEC pipe, both ends at 3 or above.
pub fn pipe() -> Result<(OwnedFd, OwnedFd), Error> {
    let mut fds = [-1; 2];
    // SAFETY: pipe2 into a stack array.
    let ret = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    let err =
        |e: std::io::Error| Error::os(Step::Clone, e.raw_os_error().unwrap_or(libc::EMFILE)).with_what("create a pipe");
    if ret < 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    let r = own_fd(fds[0]);
    let w = own_fd(fds[1]);
    Ok((r.map_err(err)?, w.map_err(err)?))
}

/// A CLOEXEC `AF_UNIX` socket pair of `kind`, both ends at 3 or above.
pub fn socketpair(kind: libc::c_int) -> Result<(OwnedFd, OwnedFd), Error> {
    let mut fds = [-1; 2];
    // SAFETY: socketpair into a stack array.
    let ret = unsafe { libc::socketpair(libc::AF_UNIX, kind | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) };
    let err = |e: std::io::Error| {
        Error::os(Step::Clone, e.raw_os_error().unwrap_or(libc::EMFILE)).with_what("create a socket pair")
    };
    if ret < 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    let a = own_fd(fds[0]);
    let b = own_fd(fds[1]);
    Ok((a.map_err(err)?, b.map_err(err)?))
}

/// Kills (a zombie ignores it) and reaps a child of ours, unless someone reaped it already (`SIGCHLD`
/// ignored): then its PID may name another process, which must not be signalled.
pub fn kill_and_reap(pid: pid_t) {
    if unreaped_child(pid) {
        // SAFETY: signalling our own unreaped child (or zombie), whose PID cannot have been reused.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    reap(pid);
}

/// Kills (`pidfd_send_signal`) and reaps (`waitid(P_PIDFD)`) the process behind a pidfd of a child of
/// ours; a reaped one ignores the signal and the wait fails with ECHILD.
pub fn kill_and_reap_pidfd(pidfd: RawFd) {
    let nothing = std::ptr::null::<libc::siginfo_t>();
    // SAFETY: signalling through a pidfd the caller owns; a pidfd names one process for good.
    unsafe { libc::syscall(libc::SYS_pidfd_send_signal, pidfd, libc::SIGKILL, nothing, 0) };
    // SAFETY: all-zero bytes are a valid siginfo_t.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid writes into our siginfo_t.
    while unsafe { libc::waitid(libc::P_PIDFD, pidfd as libc::id_t, &raw mut info, libc::WEXITED) } < 0
        && last_errno() == libc::EINTR
    {}
}

/// Whether `pid` is a child of ours that has not been reaped (running or a zombie): only then may it be
/// signalled by PID (an unreaped child's PID cannot be reused).
#[must_use]
pub fn unreaped_child(pid: pid_t) -> bool {
    peek_exit(pid).is_ok()
}

/// Looks at a child of ours without reaping it: whether it has exited, or waitid's errno.
fn peek_exit(pid: pid_t) -> Result<bool, i32> {
    // SAFETY: all-zero bytes are a valid siginfo_t.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT | libc::__WALL;
    // SAFETY: waitid writes into our siginfo_t; WNOWAIT leaves the child as it is.
    if unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &raw mut info, flags) } < 0 {
        return Err(last_errno());
    }
    // SAFETY: with WNOHANG, waitid leaves si_pid zero when no child has exited, else fills the union.
    Ok(unsafe { info.si_pid() } != 0)
}

/// Waits for a child of ours. ECHILD (reaped already: `SIGCHLD` ignored, or a handler that reaps) is not
/// an error, as for `subprocess.Popen`.
pub fn reap(pid: pid_t) {
    loop {
        // SAFETY: waiting for our own child.
        let r = unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::__WALL) };
        if r >= 0 || last_errno() != libc::EINTR {
            return;
        }
    }
}

/// Whether a child of ours has not exited yet, without reaping it. A child that is gone (reaped by
/// someone, or never ours) counts as exited.
#[must_use]
pub fn still_running(pid: pid_t) -> bool {
    match peek_exit(pid) {
        Ok(exited) => !exited,
        Err(errno) => errno == libc::EINTR,
    }
}

/// A pidfd for `pid` (readable once it has exited), at 3 or above.
pub fn pidfd_open(pid: pid_t) -> Result<OwnedFd, Error> {
    // SAFETY: pidfd_open(2) returns a new fd that we then own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    own_fd(fd as RawFd).map_err(|e| {
        Error::os(Step::Clone, e.raw_os_error().unwrap_or(libc::EIO)).with_what("watch the child through a pidfd")
    })
}

/// Whether this thread has supplementary groups and `CAP_SETGID` to drop them.
#[must_use]
pub fn may_drop_groups() -> bool {
    // SAFETY: getgroups(0, NULL) only counts.
    if unsafe { libc::getgroups(0, std::ptr::null_mut()) } <= 0 {
        return false;
    }
    has_capability(CAP_SETGID)
}

/// `CAP_SETGID`'s number (`linux/capability.h`).
pub const CAP_SETGID: u32 = 6;

/// Whether `cap` is in this thread's effective set (`capget(2)`, version 3).
#[must_use]
pub fn has_capability(cap: u32) -> bool {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let mut header = Header { version: VERSION_3, pid: 0 };
    let mut data = [Data::default(); 2];
    // SAFETY: capget with a version-3 header and room for its two data structs.
    let ret = unsafe { libc::syscall(libc::SYS_capget, &raw mut header, data.as_mut_ptr()) };
    ret == 0 && data.get((cap / 32) as usize).is_some_and(|d| d.effective & (1 << (cap % 32)) != 0)
}
