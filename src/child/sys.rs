//! The async-signal-safe primitives of the child: errno, reporting a failure on the error pipe, one write to
//! a procfs file, closing fds, and the one `clone` call every path makes. Raw system calls only, on data the
//! parent prepared: no allocation, no locks, no panics.

use std::ffi::c_void;

use libc::{c_char, c_int};

use super::{Plan, Setup};
use crate::errors::Step;
use crate::protocol::Message;

pub(crate) fn errno() -> c_int {
    // SAFETY: reading the calling thread's errno is always allowed.
    unsafe { *libc::__errno_location() }
}

/// Reports `stage` with the current errno and exits. Never returns.
pub(crate) fn fail(s: &Setup<'_>, stage: Step) -> ! {
    report(s, stage, errno())
}

/// Writes the failure of `step` with `errno` to the error pipe and exits. Never returns.
pub fn report(s: &Setup<'_>, step: Step, errno: c_int) -> ! {
    send(s, Message::Failed(step, errno));
    // SAFETY: leaving without running anything of the parent's.
    unsafe { libc::_exit(127) }
}

/// Writes one record to the error pipe. A record is 8 bytes, written with one `write(2)`: pipes deliver it
/// whole. A failed or short write is seen by the parent as a child that died or sent a corrupt record.
pub fn send(s: &Setup<'_>, message: Message) {
    send_to(s.err_fd, message);
}

/// [`send`] to an fd held on its own (by a process that may not read its [`Setup`] any more).
pub fn send_to(err_fd: c_int, message: Message) {
    let rec = message.encode();
    // SAFETY: a plain syscall on a buffer on our stack.
    unsafe { libc::write(err_fd, rec.as_ptr().cast::<c_void>(), rec.len()) };
}

/// Reports `stage` with errno and exits when `ret` is negative.
pub fn check(s: &Setup<'_>, stage: Step, ret: c_int) {
    if ret < 0 {
        fail(s, stage);
    }
}

/// Writes `text` (NUL-terminated) to `path` in one `write`, as procfs files want it.
pub(crate) fn write_file(s: &Setup<'_>, stage: Step, path: &core::ffi::CStr, text: *const c_char) {
    // SAFETY: both pointers are valid NUL-terminated strings owned by the parent.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        check(s, stage, fd);
        let len = libc::strlen(text);
        let n = libc::write(fd, text.cast::<c_void>(), len);
        if n < 0 || n as usize != len {
            // A short write to a procfs map file means the kernel refused part of it.
            let e = if n < 0 { errno() } else { libc::EIO };
            report(s, stage, e);
        }
        libc::close(fd);
    }
}

/// Closes (or, with `CLOSE_RANGE_CLOEXEC`, marks close-on-exec) every fd from 3 up except `keep`
/// (sorted, each at least 3). Only the child's fd table is touched (no `CLONE_FILES`).
///
/// `close_range(2)` does it in one call per gap; where it fails (before Linux 5.9, `CLOSE_RANGE_CLOEXEC`
/// before 5.11, or refused by a seccomp profile) the open fds are walked instead, as Python's `subprocess` and glibc do.
pub(crate) fn close_all_but(plan: &Plan<'_>, keep: &[c_int], flags: libc::c_uint) {
    let mut next: libc::c_uint = 3;
    for &fd in keep.iter().chain(&[c_int::MAX]) {
        let fd = fd as libc::c_uint;
        if fd > next {
            let last = if fd == c_int::MAX as libc::c_uint { libc::c_uint::MAX } else { fd - 1 };
            // SAFETY: close_range(2) on the child's own fd table.
            if unsafe { libc::syscall(libc::SYS_close_range, next, last, flags) } < 0 {
                return walk_fds(plan, keep, flags);
            }
        }
        next = next.max(fd.saturating_add(1));
    }
}

/// The fallback of [`close_all_but`]: the fds listed in `/proc/self/fd` (read with `getdents64` into a
/// stack buffer), or every number up to `RLIMIT_NOFILE` where `/proc` is not mounted.
pub(crate) fn walk_fds(plan: &Plan<'_>, keep: &[c_int], flags: libc::c_uint) {
    let cloexec = flags & libc::CLOSE_RANGE_CLOEXEC != 0;
    let act = |fd: c_int| {
        if fd >= 3 && keep.binary_search(&fd).is_err() {
            // SAFETY: fd syscalls on our own table; an fd already gone answers EBADF, which is fine.
            unsafe {
                if cloexec {
                    libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
                } else {
                    libc::close(fd);
                }
            }
        }
    };
    // SAFETY: open/getdents64/close with a stack buffer.
    unsafe {
        let dir = libc::open(c"/proc/self/fd".as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC);
        if dir < 0 {
            let mut limit: libc::rlimit = std::mem::zeroed();
            if libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) < 0 {
                fail(&plan.setup, Step::CloseFds);
            }
            let top = limit.rlim_cur.min(1 << 20) as c_int;
            for fd in 3..top {
                act(fd);
            }
            return;
        }
        let mut buf = [0u8; 2048];
        loop {
            let n = libc::syscall(libc::SYS_getdents64, dir, buf.as_mut_ptr(), buf.len());
            if n < 0 {
                fail(&plan.setup, Step::CloseFds);
            }
            if n == 0 {
                break;
            }
            let mut at = 0usize;
            while at + 19 < n as usize {
                // linux_dirent64: d_ino (8), d_off (8), d_reclen (2), d_type (1), d_name (NUL-terminated).
                let Some(&[lo, hi]) = buf.get(at + 16..at + 18) else { break };
                let reclen = usize::from(u16::from_ne_bytes([lo, hi]));
                let mut fd: c_int = 0;
                let mut digits = 0;
                for &b in buf.get(at + 19..at + reclen).unwrap_or_default() {
                    if !b.is_ascii_digit() {
                        break;
                    }
                    fd = fd.saturating_mul(10).saturating_add(c_int::from(b - b'0'));
                    digits += 1;
                }
                if digits > 0 && fd != dir {
                    act(fd);
                }
                if reclen == 0 {
                    break;
                }
                at += reclen;
            }
        }
        libc::close(dir);
    }
}
