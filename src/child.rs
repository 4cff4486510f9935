//! What the child does between `clone` and `execve`.
//!
//! The child shares the caller's memory (`CLONE_VM`) while other threads of the caller keep running, so
//! it may only make raw, async-signal-safe system calls on data the parent prepared: no allocation, no
//! locks, no panics (so no indexing or unwrap), no Python. Each failure is written to the CLOEXEC error
//! pipe as a (stage, errno) record and the child `_exit`s.

use std::ffi::c_void;
use std::ptr;
use std::sync::atomic::{AtomicI32, Ordering};

use libc::{c_char, c_int};

use crate::errors::{Record, Stage};
use crate::spec::{Config, Setgroups};

extern "C" {
    static environ: *const *const c_char;
}

/// Everything the child needs, prepared by the parent: pointers into `CString`s the parent owns and
/// keeps alive until the child has exec'd or exited.
pub struct Plan<'a> {
    pub config: &'a Config,
    /// Candidate paths for the program (the `PATH` search is done by the parent, tried here in order).
    pub exec_paths: &'a [*const c_char],
    /// NULL-terminated.
    pub argv: &'a [*const c_char],
    /// NULL-terminated; `None` keeps the caller's `environ`.
    pub envp: Option<&'a [*const c_char]>,
    pub cwd: *const c_char,
    /// The fds to become 0, 1 and 2 (-1: inherit). The parent made sure none lies below 3 unless it is
    /// already its own target, so the `dup2`s cannot clobber one another.
    pub stdio: [c_int; 3],
    /// Sorted, each at least 3.
    pub pass_fds: &'a [c_int],
    /// Sorted, each at least 3: every fd the child still needs (`pass_fds`, stdio sources, pipes, the
    /// helper's fds); all others are closed before the working directory is resolved.
    pub keep_fds: &'a [c_int],
    pub new_session: bool,
    pub process_group: c_int,
    pub err_fd: c_int,
    /// The read end on which the child waits for the parent to write its id maps, or -1.
    pub go_fd: c_int,
    /// The child's copy of the go pipe's write end: closed first, or the parent closing its own would
    /// never give us EOF.
    pub go_write_fd: c_int,
    /// `uid_map`/`gid_map` text when the child writes its own maps.
    pub uid_map: *const c_char,
    pub gid_map: *const c_char,
    /// Namespaces to join first, as (fd, nstype, stage), user first.
    pub join: &'a [(c_int, c_int, Stage)],
    /// After joining a PID namespace, clone once more (on `inner_stack`): only children enter it.
    pub fork_after_join: bool,
    pub inner_stack: *mut c_void,
    /// Where the first child leaves the PID of the second for the parent.
    pub inner_pid: &'a AtomicI32,
    /// The joined box's root and working directory (`O_PATH`), or -1.
    pub root_fd: c_int,
    pub cwd_fd: c_int,
    /// When not -1: exec this memfd (`nsbox-helper`) with `helper_argv`; it runs the command.
    pub helper_fd: c_int,
    /// NULL-terminated.
    pub helper_argv: &'a [*const c_char],
    /// Fds the helper inherits (error pipe, time namespace; -1 for none): their CLOEXEC is cleared last.
    pub helper_fds: [c_int; 2],
}

fn errno() -> c_int {
    // SAFETY: reading the calling thread's errno is always allowed.
    unsafe { *libc::__errno_location() }
}

/// Reports `stage` with the current errno and exits. Never returns.
fn fail(plan: &Plan<'_>, stage: Stage) -> ! {
    report(plan, stage, errno())
}

fn report(plan: &Plan<'_>, stage: Stage, errno: c_int) -> ! {
    let rec = Record { stage: stage as u32, errno }.encode();
    // SAFETY: plain syscalls on a buffer on our stack. A short write is seen by the parent as corrupt.
    unsafe {
        libc::write(plan.err_fd, rec.as_ptr().cast::<c_void>(), rec.len());
        libc::_exit(127)
    }
}

fn check(plan: &Plan<'_>, stage: Stage, ret: c_int) {
    if ret < 0 {
        fail(plan, stage);
    }
}

/// Writes `text` (NUL-terminated) to `path` in one `write`, as procfs files want it.
fn write_file(plan: &Plan<'_>, stage: Stage, path: &core::ffi::CStr, text: *const c_char) {
    // SAFETY: both pointers are valid NUL-terminated strings owned by the parent.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        check(plan, stage, fd);
        let len = libc::strlen(text);
        let n = libc::write(fd, text.cast::<c_void>(), len);
        if n < 0 || n as usize != len {
            // A short write to a procfs map file means the kernel refused part of it.
            let e = if n < 0 { errno() } else { libc::EIO };
            report(plan, stage, e);
        }
        libc::close(fd);
    }
}

fn write_id_maps(plan: &Plan<'_>, setgroups: Setgroups) {
    if setgroups == Setgroups::Deny {
        write_file(plan, Stage::Setgroups, c"/proc/self/setgroups", c"deny".as_ptr());
    }
    write_file(plan, Stage::UidMap, c"/proc/self/uid_map", plan.uid_map);
    write_file(plan, Stage::GidMap, c"/proc/self/gid_map", plan.gid_map);
}

/// Tells the parent we are ready for our id maps and waits until it has written them.
fn wait_for_maps(plan: &Plan<'_>) {
    let rec = Record { stage: Stage::Ready as u32, errno: 0 }.encode();
    let mut go = 0u8;
    // SAFETY: plain syscalls on stack buffers.
    unsafe {
        libc::close(plan.go_write_fd);
        libc::write(plan.err_fd, rec.as_ptr().cast::<c_void>(), rec.len());
        loop {
            let n = libc::read(plan.go_fd, ptr::addr_of_mut!(go).cast::<c_void>(), 1);
            if n < 0 && errno() == libc::EINTR {
                continue;
            }
            if n != 1 {
                // The parent gave up (and already knows why): leave quietly.
                libc::_exit(127);
            }
            break;
        }
        libc::close(plan.go_fd);
    }
}

fn bring_up_loopback(plan: &Plan<'_>) {
    // SAFETY: a socket and two ioctls on a zeroed, stack-allocated ifreq.
    unsafe {
        let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        check(plan, Stage::Loopback, sock);
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as c_char;
        }
        check(plan, Stage::Loopback, libc::ioctl(sock, libc::SIOCGIFFLAGS, ptr::addr_of_mut!(ifr)));
        ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        check(plan, Stage::Loopback, libc::ioctl(sock, libc::SIOCSIFFLAGS, ptr::addr_of_mut!(ifr)));
        libc::close(sock);
    }
}

fn setup_mounts(plan: &Plan<'_>) {
    let cfg = plan.config;
    // SAFETY: mount(2) with static strings.
    unsafe {
        if let Some(flag) = cfg.propagation.mount_flag() {
            let ret = libc::mount(ptr::null(), c"/".as_ptr(), ptr::null(), libc::MS_REC | flag, ptr::null());
            check(plan, Stage::Propagation, ret);
        }
        if cfg.mount_proc {
            // Whatever `propagation` says for `/`, the new proc must not propagate onto the caller's
            // /proc (a shared peer would be covered by it): make /proc private first, as unshare does.
            let ret = libc::mount(
                c"none".as_ptr(),
                c"/proc".as_ptr(),
                ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                ptr::null(),
            );
            check(plan, Stage::MountProc, ret);
            let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
            let ret = libc::mount(c"proc".as_ptr(), c"/proc".as_ptr(), c"proc".as_ptr(), flags, ptr::null());
            check(plan, Stage::MountProc, ret);
        }
    }
}

fn setup_fds(plan: &Plan<'_>) {
    // SAFETY: fd syscalls only.
    unsafe {
        for (target, &src) in (0..).zip(plan.stdio.iter()) {
            if src < 0 {
                continue;
            }
            // dup2 onto itself is a no-op that would leave FD_CLOEXEC set: clear it instead.
            let ret = if src == target { libc::fcntl(src, libc::F_SETFD, 0) } else { libc::dup2(src, target) };
            check(plan, Stage::Stdio, ret);
        }
        // Mark everything from 3 up close-on-exec except pass_fds. Marking rather than closing keeps the
        // error pipe (and the helper's fds) open until exec.
        close_all_but(plan, plan.pass_fds, libc::CLOSE_RANGE_CLOEXEC);
        for &fd in plan.pass_fds {
            check(plan, Stage::CloseFds, libc::fcntl(fd, libc::F_SETFD, 0));
        }
    }
}

/// `close_range(2)` with `flags` over every fd from 3 up except `keep` (sorted, each at least 3). Only
/// the child's fd table is touched (no `CLONE_FILES`).
fn close_all_but(plan: &Plan<'_>, keep: &[c_int], flags: libc::c_uint) {
    let mut next: libc::c_uint = 3;
    for &fd in keep {
        let fd = fd as libc::c_uint;
        if fd > next {
            close_range(plan, next, fd - 1, flags);
        }
        next = next.max(fd + 1);
    }
    close_range(plan, next, libc::c_uint::MAX, flags);
}

fn close_range(plan: &Plan<'_>, first: libc::c_uint, last: libc::c_uint, flags: libc::c_uint) {
    // SAFETY: close_range(2) on the child's own fd table.
    let ret = unsafe { libc::syscall(libc::SYS_close_range, first, last, flags) };
    if ret < 0 {
        fail(plan, Stage::CloseFds);
    }
}

/// Default dispositions for every signal, then an empty mask. The order matters: the parent's
/// handlers (Python's among them) must be gone before a pending signal can be delivered here.
fn reset_signals(plan: &Plan<'_>) {
    // SAFETY: sigaction/sigprocmask on zeroed stack structs.
    unsafe {
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        for sig in 1..=libc::SIGRTMAX() {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                // Signals reserved by the C library answer EINVAL; they cannot be handled anyway.
                libc::sigaction(sig, &raw const dfl, ptr::null_mut());
            }
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&raw mut empty);
        check(plan, Stage::Signals, libc::sigprocmask(libc::SIG_SETMASK, &raw const empty, ptr::null_mut()));
    }
}

fn exec(plan: &Plan<'_>) -> ! {
    // SAFETY: argv/envp are NULL-terminated arrays of valid C strings kept alive by the parent.
    unsafe {
        let envp = match plan.envp {
            Some(envp) => envp.as_ptr(),
            None => environ,
        };
        if plan.helper_fd >= 0 {
            for fd in plan.helper_fds {
                if fd >= 0 {
                    check(plan, Stage::Helper, libc::fcntl(fd, libc::F_SETFD, 0));
                }
            }
            libc::syscall(
                libc::SYS_execveat,
                plan.helper_fd,
                c"".as_ptr(),
                plan.helper_argv.as_ptr(),
                envp,
                libc::AT_EMPTY_PATH,
            );
            fail(plan, Stage::Helper);
        }
        let mut saved = 0;
        let mut last = libc::ENOENT;
        for &path in plan.exec_paths {
            libc::execve(path, plan.argv.as_ptr(), envp);
            last = errno();
            // As execvpe and CPython do: keep looking past "not here", remember the first real error.
            if last != libc::ENOENT && last != libc::ENOTDIR && saved == 0 {
                saved = last;
            }
        }
        report(plan, Stage::Exec, if saved != 0 { saved } else { last })
    }
}

/// The child's whole life. Entered through [`entry`] on its own stack.
fn run(plan: &Plan<'_>) -> ! {
    let cfg = plan.config;
    // SAFETY: each call below is a single async-signal-safe syscall wrapper.
    unsafe {
        // Die with the spawning thread; spawner threads live as long as the process (see spawner.rs).
        check(plan, Stage::ParentDeath, libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0));
        if let Some(user) = &cfg.user {
            if user.child_writes_maps {
                write_id_maps(plan, user.setgroups);
            } else {
                wait_for_maps(plan);
            }
        }
        if cfg.time {
            check(plan, Stage::TimeNamespace, libc::unshare(libc::CLONE_NEWTIME));
            if let Some(offsets) = &cfg.time_offsets {
                write_file(plan, Stage::TimeOffsets, c"/proc/self/timens_offsets", offsets.as_ptr());
            }
        }
        if let Some(name) = &cfg.hostname {
            check(plan, Stage::Hostname, libc::sethostname(name.as_ptr(), name.as_bytes().len()));
        }
        if cfg.net {
            bring_up_loopback(plan);
        }
        if cfg.mount {
            setup_mounts(plan);
        }
        // The caller's other fds go before any path is resolved: none of them, not even a directory fd
        // reached through /proc/self/fd, can serve as the box's root or working directory.
        close_all_but(plan, plan.keep_fds, 0);
        if plan.root_fd >= 0 {
            check(plan, Stage::Chroot, libc::fchdir(plan.root_fd));
            check(plan, Stage::Chroot, libc::chroot(c".".as_ptr()));
        }
        if !plan.cwd.is_null() {
            check(plan, Stage::Chdir, libc::chdir(plan.cwd));
        } else if plan.cwd_fd >= 0 {
            check(plan, Stage::Chdir, libc::fchdir(plan.cwd_fd));
        }
        if plan.new_session {
            check(plan, Stage::Session, libc::setsid());
        }
        if plan.process_group >= 0 {
            check(plan, Stage::Session, libc::setpgid(0, plan.process_group));
        }
    }
    setup_fds(plan);
    reset_signals(plan);
    exec(plan)
}

/// Joins the namespaces of `plan.join`; then either goes on, or (for a PID namespace, which only
/// children enter) clones the process that will run the command and leaves.
fn join_then_run(plan: &Plan<'_>) -> ! {
    for &(fd, nstype, stage) in plan.join {
        // SAFETY: setns(2) on an fd the parent opened.
        check(plan, stage, unsafe { libc::setns(fd, nstype) });
    }
    if !plan.fork_after_join {
        run(plan)
    }
    // CLONE_PARENT makes the second child the caller's own child (it can wait for it) and ties its
    // parent-death signal to the spawner thread, like any box. CLONE_VFORK: we leave after its exec.
    let flags = libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PARENT | libc::SIGCHLD;
    // SAFETY: the second child runs on the other half of the stack and reads the same Plan.
    let pid = unsafe { libc::clone(inner_entry, plan.inner_stack, flags, ptr::from_ref(plan).cast_mut().cast()) };
    if pid < 0 {
        fail(plan, Stage::Clone);
    }
    plan.inner_pid.store(pid, Ordering::Release);
    // SAFETY: leaving without running anything of the parent's.
    unsafe { libc::_exit(0) }
}

extern "C" fn inner_entry(arg: *mut c_void) -> c_int {
    // SAFETY: as for `entry`.
    let plan = unsafe { &*arg.cast::<Plan<'_>>() };
    run(plan)
}

/// The `clone(2)` entry point; `arg` is a `*const Plan`.
pub extern "C" fn entry(arg: *mut c_void) -> c_int {
    // SAFETY: the parent passes a pointer to a Plan that outlives the child's use of it.
    let plan = unsafe { &*arg.cast::<Plan<'_>>() };
    if plan.join.is_empty() {
        run(plan)
    }
    join_then_run(plan)
}
