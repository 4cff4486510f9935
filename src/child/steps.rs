//! The steps of the child between `clone` and `execve`, each a few raw system calls on prepared data.

use std::ffi::CStr;
use std::ptr;

use libc::{c_char, c_int};

use super::net::{bring_up_loopback, configure_eth0};
use super::sys::{check, close, close_all_but, errno, exit, fail, fcntl, prctl, read, report, send, write_file};
use super::{Plan, Setup};
use crate::errors::Step;
use crate::namespace::Namespace;
use crate::protocol::Message;
use crate::spec::Setgroups;

extern "C" {
    static environ: *const *const c_char;
}

pub(crate) fn write_id_maps(s: &Setup<'_>, setgroups: Setgroups) {
    if setgroups == Setgroups::Deny {
        write_file(s, Step::Setgroups, c"/proc/self/setgroups", c"deny");
    }
    write_file(s, Step::UidMap, c"/proc/self/uid_map", s.uid_map);
    write_file(s, Step::GidMap, c"/proc/self/gid_map", s.gid_map);
}

/// Tells the parent we are ready for our id maps and our network and waits until it has made them.
pub(crate) fn wait_for_parent(s: &Setup<'_>) {
    close(s.go_write_fd);
    send(s, Message::Ready);
    let mut go = [0u8];
    if read(s.go_fd, &mut go) != 1 || go[0] != 1 {
        // The parent gave up (and already knows why): leave quietly.
        exit(127);
    }
    close(s.go_fd);
}

/// Dies with the thread that made us (see `spawn::threads` for the exec path; `nsbox.call` waits on its
/// thread).
///
/// The kernel clears the parent-death signal on any change of credentials (ids or capabilities), so it
/// is set once at the start and again by [`die_with_parent_from_now_on`] after the last such change.
pub fn set_parent_death_signal(s: &Setup<'_>) {
    check(s, Step::ParentDeath, prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong));
}

/// Sets the parent-death signal for good, after the last credential change, and leaves at once if the
/// caller already died (then no signal would come). The caller's death shows as an error pipe without
/// a reader, which also holds where `getppid()` cannot tell (0 for PID 1 of a new PID namespace).
pub fn die_with_parent_from_now_on(s: &Setup<'_>) {
    set_parent_death_signal(s);
    let mut pfd = libc::pollfd { fd: s.err_fd, events: libc::POLLOUT, revents: 0 };
    // SAFETY: poll on a stack struct, without waiting.
    let n = unsafe { libc::poll(&raw mut pfd, 1, 0) };
    // A pipe without a reader polls POLLERR; a socket whose peer is closed, POLLHUP.
    if n > 0 && pfd.revents & (libc::POLLERR | libc::POLLHUP) != 0 {
        exit(127); // nobody is waiting for us
    }
}

/// `mount(2)`; `source` and `fstype` may be null.
fn mount(source: Option<&CStr>, target: &CStr, fstype: Option<&CStr>, flags: libc::c_ulong) -> c_int {
    let or_null = |c: Option<&CStr>| c.map_or(ptr::null(), CStr::as_ptr);
    // SAFETY: valid NUL-terminated strings or null, no data argument.
    unsafe { libc::mount(or_null(source), target.as_ptr(), or_null(fstype), flags, ptr::null()) }
}

/// A raw credential system call, `SYS_setresuid` and the like (see [`drop_supplementary_groups`]).
fn credentials(number: libc::c_long, a: libc::c_ulong, b: libc::c_ulong, c: libc::c_ulong) -> c_int {
    // SAFETY: the id calls take integers, and change only this task's credentials.
    unsafe { libc::syscall(number, a, b, c) as c_int }
}

/// The steps that make new namespaces what `config` asks, in the order that works: id maps first (they give
/// us the capabilities for the rest), a new time namespace with its offsets (it applies to our children,
/// or after `execve`), the hostname, loopback up, and the propagation of `/` before anything is mounted.
/// The filesystem is separate ([`filesystem`]): proc must be mounted by a process in the new PID namespace.
pub fn configure_namespaces(s: &Setup<'_>) {
    let cfg = s.config;
    if let Some(user) = &cfg.user {
        if user.child_writes_maps {
            write_id_maps(s, user.setgroups);
        }
    }
    if s.go_fd >= 0 {
        // The parent writes the maps we may not write, and connects our network namespace.
        wait_for_parent(s);
    }
    if let Some(user) = &cfg.user {
        become_root_inside(s, user.setgroups == Setgroups::Allow);
    }
    if cfg.cgroup_namespace_after_entry() {
        // Now that we are in the box's cgroup (the first step), it becomes the namespace's root.
        // SAFETY: unshare(2) takes flags only.
        check(s, Step::CgroupNamespace, unsafe { libc::unshare(libc::CLONE_NEWCGROUP) });
    }
    if cfg.has(Namespace::Time) {
        // SAFETY: unshare(2) takes flags only.
        check(s, Step::TimeNamespace, unsafe { libc::unshare(libc::CLONE_NEWTIME) });
        if let Some(offsets) = &cfg.time_offsets {
            write_file(s, Step::TimeOffsets, c"/proc/self/timens_offsets", offsets);
        }
    }
    if let Some(name) = &cfg.hostname {
        // SAFETY: a valid buffer of that length.
        check(s, Step::Hostname, unsafe { libc::sethostname(name.as_ptr(), name.as_bytes().len()) });
    }
    if cfg.has(Namespace::Net) {
        bring_up_loopback(s);
    }
    if let Some(eth0) = s.eth0 {
        configure_eth0(s, eth0);
    }
    if let (true, Some(flag)) = (cfg.has(Namespace::Mount), cfg.propagation.mount_flag()) {
        check(s, Step::Propagation, mount(None, c"/", None, libc::MS_REC | flag));
    }
}

/// `setgroups(0, NULL)`: no supplementary groups. Raw, as every credential call here: the C library's
/// wrappers signal every thread of the caller (whose memory we may share) to change their ids too.
pub fn drop_supplementary_groups(s: &Setup<'_>) {
    check(s, Step::Groups, credentials(libc::SYS_setgroups, 0, 0, 0));
}

/// Switches to uid and gid 0 of the user namespace we are in, when they are mapped (as `nsenter`, bwrap
/// and runc do). Without it a caller whose own ids are not in the maps (root with
/// `uid_map=[(0, 100000, 65536)]`) would keep its host ids: unmapped ("nobody") inside, yet still the
/// owner of the host's root files. `drop_groups` (setgroups allowed) also drops the supplementary groups;
/// with setgroups denied they were dropped before the namespace was made, when the caller may.
pub fn become_root_inside(s: &Setup<'_>, drop_groups: bool) {
    // EINVAL: 0 is not mapped; the ids stay as the maps translate them.
    if credentials(libc::SYS_setresgid, 0, 0, 0) < 0 && errno() != libc::EINVAL {
        fail(s, Step::GidMap);
    }
    if drop_groups {
        drop_supplementary_groups(s);
    }
    if credentials(libc::SYS_setresuid, 0, 0, 0) < 0 && errno() != libc::EINVAL {
        fail(s, Step::UidMap);
    }
    restore_dumpable(s);
}

/// Puts back the caller's dumpable flag, which a change of ids cleared.
pub(crate) fn restore_dumpable(s: &Setup<'_>) {
    prctl(libc::PR_SET_DUMPABLE, s.dumpable as libc::c_ulong);
}

/// `subprocess`'s `extra_groups`, `group` and `user`, in its order, after every step that needs root.
pub(crate) fn switch_credentials(plan: &Plan<'_>) {
    let s = &plan.setup;
    if let Some(groups) = plan.extra_groups {
        let list = groups.as_ptr() as libc::c_ulong;
        check(s, Step::Groups, credentials(libc::SYS_setgroups, groups.len() as libc::c_ulong, list, 0));
    }
    if let Some(gid) = plan.gid {
        let gid = libc::c_ulong::from(gid);
        check(s, Step::SetGid, credentials(libc::SYS_setresgid, gid, gid, gid));
    }
    if let Some(uid) = plan.uid {
        let uid = libc::c_ulong::from(uid);
        check(s, Step::SetUid, credentials(libc::SYS_setresuid, uid, uid, uid));
    }
    if plan.extra_groups.is_some() || plan.gid.is_some() || plan.uid.is_some() {
        restore_dumpable(s);
    }
}

/// The box's filesystem: its own root and mounts, with proc in them ([`super::mounts`]), or else a fresh
/// proc on the caller's root when the config asks for one. Done by a process in the new PID namespace.
pub fn filesystem(s: &Setup<'_>) {
    if let Some(fs) = &s.config.filesystem {
        super::mounts::build(s, fs);
    } else {
        mount_proc(s);
    }
}

/// Mounts a fresh proc on `/proc` when the config asks for it (nosuid, nodev, noexec, as bubblewrap does).
fn mount_proc(s: &Setup<'_>) {
    if !s.config.mount_proc {
        return;
    }
    let dir = s.config.proc_dir.as_c_str();
    // Whatever `propagation` says for `/`, the new proc must not propagate onto the caller's /proc (a
    // shared peer would be covered by it): make the mount there private first, as unshare does, unless
    // `/` already was, recursively (a mount(2) saved: ~3.5 us).
    // EINVAL: nothing is mounted there yet (a new root, another directory): nothing can propagate.
    let propagates = !(s.config.has(Namespace::Mount) && s.config.propagation.stops_propagation_out());
    if propagates && mount(Some(c"none"), dir, None, libc::MS_REC | libc::MS_PRIVATE) < 0 && errno() != libc::EINVAL {
        fail(s, Step::MountProc);
    }
    let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    check(s, Step::MountProc, mount(Some(c"proc"), dir, Some(c"proc"), flags));
}

/// Puts the stdio fds on 0-2; where `stdio` has -1, `terminal` (the box's terminal's slave) if it is one.
pub(crate) fn setup_fds(plan: &Plan<'_>, terminal: c_int) {
    for (target, &src) in (0..).zip(plan.stdio.iter()) {
        let src = if src < 0 { terminal } else { src };
        if src < 0 {
            continue;
        }
        // dup2 onto itself is a no-op that would leave FD_CLOEXEC set: clear it instead.
        let ret = if src == target {
            fcntl(src, libc::F_SETFD, 0)
        } else {
            // SAFETY: dup2(2) on fds of our own table.
            unsafe { libc::dup2(src, target) }
        };
        check(&plan.setup, Step::Stdio, ret);
    }
    // Mark everything from 3 up close-on-exec except pass_fds. Marking rather than closing keeps the error
    // pipe (and the helper's fds) open until exec.
    close_all_but(plan, plan.pass_fds, libc::CLOSE_RANGE_CLOEXEC);
    for &fd in plan.pass_fds {
        check(&plan.setup, Step::CloseFds, fcntl(fd, libc::F_SETFD, 0));
    }
}

/// Default dispositions for every signal, then an empty mask. The order matters: the parent's
/// handlers (Python's among them) must be gone before a pending signal can be delivered here.
pub(crate) fn reset_signals(plan: &Plan<'_>) {
    // SAFETY: an all-zero sigaction is a valid value (no handler, no flags, an empty mask).
    let mut dfl: libc::sigaction = unsafe { std::mem::zeroed() };
    dfl.sa_sigaction = libc::SIG_DFL;
    for sig in 1..=libc::SIGRTMAX() {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            // Signals reserved by the C library answer EINVAL; they cannot be handled anyway.
            // SAFETY: sigaction from a stack struct, without the old one.
            unsafe { libc::sigaction(sig, &raw const dfl, ptr::null_mut()) };
        }
    }
    // SAFETY: an all-zero sigset_t is the empty set on Linux.
    let empty: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: sigprocmask from a stack struct, without the old one.
    let ret = unsafe { libc::sigprocmask(libc::SIG_SETMASK, &raw const empty, ptr::null_mut()) };
    check(&plan.setup, Step::Signals, ret);
}

pub(crate) fn exec(plan: &Plan<'_>) -> ! {
    let envp = match plan.envp {
        Some(envp) => envp.as_ptr(),
        // SAFETY: reading the C library's environment pointer (the caller's environment, inherited).
        None => unsafe { environ },
    };
    if plan.helper_fd >= 0 {
        for fd in plan.helper_fds {
            if fd >= 0 {
                check(&plan.setup, Step::Helper, fcntl(fd, libc::F_SETFD, 0));
            }
        }
        let (argv, empty) = (plan.helper_argv.as_ptr(), c"".as_ptr());
        // SAFETY: argv/envp are NULL-terminated arrays of valid C strings kept alive by the parent.
        unsafe { libc::syscall(libc::SYS_execveat, plan.helper_fd, empty, argv, envp, libc::AT_EMPTY_PATH) };
        fail(&plan.setup, Step::Helper);
    }
    let mut saved = 0;
    let mut last = libc::ENOENT;
    for &path in plan.exec_paths {
        // SAFETY: as above; execve returns only on failure.
        unsafe { libc::execve(path, plan.argv.as_ptr(), envp) };
        last = errno();
        // As execvpe and CPython do: keep looking past "not here", remember the first real error.
        if last != libc::ENOENT && last != libc::ENOTDIR && saved == 0 {
            saved = last;
        }
    }
    report(&plan.setup, Step::Exec, if saved != 0 { saved } else { last })
}
