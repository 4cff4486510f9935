//! The async-signal-safe primitives of the child: errno, reporting a failure on the error pipe, one write to
//! a procfs file, closing fds, and the one `clone` call every path makes. Raw system calls only, on data the
//! parent prepared: no allocation, no locks, no panics.

use std::ffi::{c_void, CStr};

use libc::c_int;

use super::{Plan, Setup};
use crate::errors::Step;
use crate::protocol::Message;

pub(crate) fn errno() -> c_int {
    // SAFETY: __errno_location has no preconditions; it points at this thread's errno.
    let location = unsafe { libc::__errno_location() };
    // SAFETY: a valid, aligned pointer to this thread's errno.
    unsafe { *location }
}

/// Leaves at once, running nothing of the parent's (no atexit handlers, no buffers flushed).
pub(crate) fn exit(code: c_int) -> ! {
    // SAFETY: _exit(2) has no preconditions.
    unsafe { libc::_exit(code) }
}

/// `close(2)`; the result does not matter (the fd is ours, and unused after).
pub(crate) fn close(fd: c_int) {
    // SAFETY: closing an fd of our own table.
    unsafe { libc::close(fd) };
}

/// `open(2)` of a path the parent prepared.
pub(crate) fn open(path: &CStr, flags: c_int) -> c_int {
    // SAFETY: a valid NUL-terminated path.
    unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC) }
}

/// `write(2)` of a buffer, once.
pub(crate) fn write(fd: c_int, bytes: &[u8]) -> isize {
    // SAFETY: the buffer is valid for its length.
    unsafe { libc::write(fd, bytes.as_ptr().cast::<c_void>(), bytes.len()) }
}

/// `read(2)` into a buffer, retried on `EINTR`.
pub(crate) fn read(fd: c_int, buf: &mut [u8]) -> isize {
    loop {
        // SAFETY: the buffer is valid and writable for its length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast::<c_void>(), buf.len()) };
        if n >= 0 || errno() != libc::EINTR {
            return n;
        }
    }
}

/// `fcntl(2)` with an integer argument.
pub(crate) fn fcntl(fd: c_int, cmd: c_int, arg: c_int) -> c_int {
    // SAFETY: the commands nsbox uses take an integer.
    unsafe { libc::fcntl(fd, cmd, arg) }
}

/// `prctl(2)` with integer arguments.
pub(crate) fn prctl(option: c_int, arg: libc::c_ulong) -> c_int {
    // SAFETY: the options nsbox uses take an integer and no pointer.
    unsafe { libc::prctl(option, arg, 0, 0, 0) }
}

/// The one `clone(2)` of every path: through the C library's wrapper, which switches to `stack` and calls
/// `entry(arg)` there. The kernel stores the new PID at `parent_tid` (`CLONE_PARENT_SETTID`) and the new
/// TID at `child_tid` (`CLONE_CHILD_SETTID`), when the flags ask.
///
/// # Safety
///
/// `stack` is the top of a mapping the child may use; `arg` (read by `entry`) and the tid pointers
/// outlive the child's use of them; with `CLONE_VM` the child shares the caller's memory and must follow
/// this module's rules (raw system calls only).
pub(crate) unsafe fn clone(
    entry: extern "C" fn(*mut c_void) -> c_int,
    stack: *mut c_void,
    flags: c_int,
    arg: *mut c_void,
    parent_tid: *mut libc::pid_t,
    child_tid: *mut c_int,
) -> libc::pid_t {
    // SAFETY: the caller's contract above.
    unsafe { libc::clone(entry, stack, flags, arg, parent_tid, std::ptr::null_mut::<c_void>(), child_tid) }
}

/// `struct clone_args` of `clone3(2)`, as far as `cgroup` (Linux 5.7).
#[cfg(target_arch = "x86_64")]
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Whether [`clone_into_cgroup`] exists on this architecture (its few instructions are written for `x86_64`;
/// elsewhere the child enters its cgroup v2 by writing, as on v1).
pub(crate) const CLONE_INTO_CGROUP: bool = cfg!(target_arch = "x86_64");

/// [`clone`] through `clone3(2)` with `CLONE_INTO_CGROUP`: the child starts in the cgroup v2 directory
/// `cgroup_dir` (an fd), as the kernel places it at fork, without the migration a write to `cgroup.procs`
/// makes (which waits for an RCU grace period, milliseconds, when the cgroup lock is not already held for
/// writing). The child runs `entry(arg)` on `[stack_low, stack_low + stack_size)` and exits with its value, as
/// the C library's `clone` wrapper does; `flags` are [`clone`]'s, their low byte the exit signal. Returns
/// the PID, or -1 with errno (`ENOSYS`, `E2BIG` or `EINVAL` where the kernel lacks `clone3` or the flag).
///
/// # Safety
///
/// As for [`clone`]; the stack range is mapped, writable and 16-byte aligned at its top.
#[cfg(target_arch = "x86_64")]
pub(crate) unsafe fn clone_into_cgroup(
    entry: extern "C" fn(*mut c_void) -> c_int,
    stack_low: *mut c_void,
    stack_size: usize,
    flags: c_int,
    arg: *mut c_void,
    parent_tid: *mut libc::pid_t,
    cgroup_dir: c_int,
) -> libc::pid_t {
    let args = CloneArgs {
        flags: u64::from((flags & !libc::CSIGNAL) as u32) | CLONE_INTO_CGROUP_FLAG,
        parent_tid: parent_tid as u64,
        exit_signal: u64::from((flags & libc::CSIGNAL) as u32),
        stack: stack_low as u64,
        stack_size: stack_size as u64,
        cgroup: cgroup_dir as u64,
        ..CloneArgs::default()
    };
    let ret: i64;
    // SAFETY: clone3 on arguments of our stack frame. The parent goes on after the block with the PID in rax;
    // the child starts at the instruction after `syscall` on the new stack (its top, 16-byte aligned, as a
    // `call` wants it) with every other register as the parent had it: it calls entry(arg), kept in r12 and
    // r13 (which neither side of the syscall changes), and exits with its value, never coming back here.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "xor ebp, ebp",
            "mov rdi, r12",
            "call r13",
            "mov edi, eax",
            "mov eax, {exit}",
            "syscall",
            "ud2",
            "2:",
            exit = const libc::SYS_exit,
            inlateout("rax") libc::SYS_clone3 => ret,
            in("rdi") &raw const args,
            in("rsi") std::mem::size_of::<CloneArgs>(),
            in("r12") arg,
            in("r13") entry,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    if ret < 0 {
        // SAFETY: __errno_location has no preconditions; it points at this thread's errno.
        let errno = unsafe { libc::__errno_location() };
        // SAFETY: a valid, aligned pointer to this thread's errno.
        unsafe { *errno = (-ret) as c_int };
        return -1;
    }
    ret as libc::pid_t
}

/// `CLONE_INTO_CGROUP` (`linux/sched.h`; clone3 only).
#[cfg(target_arch = "x86_64")]
const CLONE_INTO_CGROUP_FLAG: u64 = 0x2_0000_0000;

/// Reports `stage` with the current errno and exits. Never returns.
pub(crate) fn fail(s: &Setup<'_>, stage: Step) -> ! {
    report(s, stage, errno())
}

/// Writes the failure of `step` with `errno` to the error pipe and exits. Never returns.
pub fn report(s: &Setup<'_>, step: Step, errno: c_int) -> ! {
    send(s, Message::Failed(step, errno, 0));
    exit(127)
}

/// [`report`] for a step of the box's mount `at` (see [`crate::mounts::MountStep::at`]).
pub fn report_at(s: &Setup<'_>, step: Step, errno: c_int, at: u16) -> ! {
    send(s, Message::Failed(step, errno, at.saturating_add(1)));
    exit(127)
}

/// Writes one record to the error pipe. A record is 8 bytes, written with one `write(2)`: pipes deliver it
/// whole. A failed or short write is seen by the parent as a child that died or sent a corrupt record.
pub fn send(s: &Setup<'_>, message: Message) {
    send_to(s.err_fd, message);
}

/// [`send`] to an fd held on its own (by a process that may not read its [`Setup`] any more).
pub fn send_to(err_fd: c_int, message: Message) {
    write(err_fd, &message.encode());
}

/// Reports `stage` with errno and exits when `ret` is negative.
pub fn check(s: &Setup<'_>, stage: Step, ret: c_int) {
    if ret < 0 {
        fail(s, stage);
    }
}

/// Writes `text` to `path` in one `write`, as procfs files want it; the errno of a failure (`EIO` for a
/// short write: the kernel refused part of it).
pub(crate) fn write_once(path: &CStr, text: &CStr) -> Result<(), c_int> {
    let fd = open(path, libc::O_WRONLY);
    if fd < 0 {
        return Err(errno());
    }
    let bytes = text.to_bytes();
    let n = write(fd, bytes);
    let outcome = match n {
        n if n < 0 => Err(errno()),
        n if n as usize != bytes.len() => Err(libc::EIO),
        _ => Ok(()),
    };
    close(fd);
    outcome
}

/// [`write_once`], reporting a failure as `stage`.
pub(crate) fn write_file(s: &Setup<'_>, stage: Step, path: &CStr, text: &CStr) {
    if let Err(errno) = write_once(path, text) {
        report(s, stage, errno);
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
    // An fd already gone answers EBADF, which is fine.
    let act = |fd: c_int| match (fd >= 3 && keep.binary_search(&fd).is_err(), cloexec) {
        (true, true) => drop(fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC)),
        (true, false) => close(fd),
        (false, _) => {}
    };
    let dir = open(c"/proc/self/fd", libc::O_RDONLY | libc::O_DIRECTORY);
    if dir < 0 {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit into a stack struct.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) } < 0 {
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
        // SAFETY: getdents64 into a stack buffer of that length.
        let n = unsafe { libc::syscall(libc::SYS_getdents64, dir, buf.as_mut_ptr(), buf.len()) };
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
    close(dir);
}
