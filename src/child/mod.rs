//! What the child does between `clone` and `execve`.
//!
//! The child shares the caller's memory (`CLONE_VM`) while other threads of the caller keep running, so
//! it may only make raw, async-signal-safe system calls on data the parent prepared: no allocation, no
//! locks, no panics (so no indexing or unwrap), no Python. Each failure is written to the CLOEXEC error
//! pipe as a (stage, errno) record and the child `_exit`s.
//!
//! The namespace steps ([`set_parent_death_signal`], [`configure_namespaces`], [`filesystem`]) take a
//! [`Setup`] rather than the whole [`Plan`]: `nsbox.call` runs the same steps in a forked copy of the
//! interpreter (see [`crate::fork`]).

mod cgroup;
mod confine;
mod mounts;
mod net;
mod seccomp;
mod steps;
pub(crate) mod sys;
mod tty;

use std::ffi::{c_void, CStr};
use std::ptr;
use std::sync::atomic::{AtomicI32, Ordering};

use libc::{c_char, c_int};

use crate::errors::Step;
use crate::net::Eth0;
use crate::spec::Spec;

pub(crate) use cgroup::enter_cgroup;
pub(crate) use confine::{drop_bounding_set, keep_capabilities, set_no_new_privs, set_rlimits};
pub(crate) use seccomp::install_seccomp;
pub(crate) use steps::{
    become_root_inside, configure_namespaces, die_with_parent_from_now_on, drop_supplementary_groups, filesystem,
    set_parent_death_signal,
};
use steps::{exec, reset_signals, setup_fds, switch_credentials};
pub(crate) use sys::{check, report, send, send_to};
use sys::{close_all_but, fail};
use tty::take_terminal;
pub(crate) use tty::TerminalPlan;

/// What the namespace steps need, prepared by the parent: the config, the error pipe, the id-map
/// handshake and the map texts (pointers into `CString`s the parent keeps alive).
pub struct Setup<'a> {
    pub config: &'a Spec,
    pub err_fd: c_int,
    /// The parent's read end of the error pipe: the child closes its copy first, so that the parent's
    /// death leaves the pipe without a reader ([`die_with_parent_from_now_on`]).
    pub err_read_fd: c_int,
    /// The caller's `PR_GET_DUMPABLE`: a change of ids clears it on the memory the child may share with the
    /// caller (and hides `/proc/self` files from the new ids), so it is put back after each.
    pub dumpable: c_int,
    /// The read end on which the child waits for the parent to write its id maps, or -1.
    pub go_fd: c_int,
    /// The child's copy of the go pipe's write end: closed first, or the parent closing its own would
    /// never give us EOF.
    pub go_write_fd: c_int,
    /// `uid_map`/`gid_map` text when the child writes its own maps.
    pub uid_map: &'a CStr,
    pub gid_map: &'a CStr,
    /// The messages that configure `eth0` once the parent has made it (the box is on a network).
    pub eth0: Option<&'a Eth0>,
}

/// Everything the child needs, prepared by the parent: pointers into `CString`s the parent owns and
/// keeps alive until the child has exec'd or exited.
pub struct Plan<'a> {
    pub setup: Setup<'a>,
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
    /// Drop the caller's supplementary groups before a user namespace is made or joined: once in it,
    /// `setgroups` is denied (`/proc/PID/setgroups`), and host groups such as root's would stay.
    pub drop_groups: bool,
    /// Namespaces to join first, as (fd, nstype, stage), user first.
    pub join: &'a [(c_int, c_int, Step)],
    /// Namespaces the child makes itself with `unshare(2)` (after dropping groups) rather than the clone
    /// making them; 0 for none. The child then sets them up before any second clone.
    pub unshare_flags: c_int,
    /// Clone once more (on `inner_stack`) after joining or unsharing: a PID namespace applies to
    /// children only.
    pub fork_again: bool,
    /// The namespaces that second clone creates (a box on a private network: its user namespace is
    /// joined first, the rest are new).
    pub inner_flags: c_int,
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
    /// `subprocess`'s `umask`, `extra_groups`, `group` and `user`, applied last, in that order (-1 or
    /// `None`: unchanged).
    pub umask: c_int,
    pub extra_groups: Option<&'a [libc::gid_t]>,
    pub gid: Option<libc::gid_t>,
    pub uid: Option<libc::uid_t>,
    /// The box's `cgroup.procs` files (one per hierarchy), entered first and closed ([`enter_cgroup`]).
    pub cgroup_procs: &'a [c_int],
    /// `tty=True`: the pseudo-terminal that becomes the controlling terminal of a new session, and 0-2 where
    /// `stdio` has -1.
    pub terminal: Option<TerminalPlan<'a>>,
}

/// The rest of the child's life once its namespaces are set up: files, root, proc, directory, session,
/// stdio, signals, credentials, seccomp, exec.
fn run(plan: &Plan<'_>) -> ! {
    let s = &plan.setup;
    // The caller's other fds go before any path is resolved: none of them, not even a directory fd
    // reached through /proc/self/fd, can serve as the box's root or working directory.
    close_all_but(plan, plan.keep_fds, 0);
    filesystem(s);
    if plan.root_fd >= 0 {
        // SAFETY: fchdir(2) to a directory fd the parent opened.
        check(s, Step::Root, unsafe { libc::fchdir(plan.root_fd) });
        // SAFETY: a static path.
        check(s, Step::Root, unsafe { libc::chroot(c".".as_ptr()) });
    }
    if !plan.cwd.is_null() {
        // SAFETY: a valid NUL-terminated path the parent owns.
        check(s, Step::Chdir, unsafe { libc::chdir(plan.cwd) });
    } else if plan.cwd_fd >= 0 {
        // SAFETY: fchdir(2) to a directory fd the parent opened.
        check(s, Step::Chdir, unsafe { libc::fchdir(plan.cwd_fd) });
    }
    // The terminal's slave, or -1. Taken here, where the session starts: after the filesystem step (a box's
    // own devpts is in it), before the stdio step puts the slave on 0-2.
    let mut terminal = -1;
    if let Some(plan_terminal) = &plan.terminal {
        terminal = take_terminal(s, plan_terminal);
    } else if plan.new_session {
        // SAFETY: setsid(2) has no arguments.
        check(s, Step::Session, unsafe { libc::setsid() });
    }
    if plan.process_group >= 0 {
        // SAFETY: setpgid(2) takes integers.
        check(s, Step::Session, unsafe { libc::setpgid(0, plan.process_group) });
    }
    if plan.umask >= 0 {
        // SAFETY: umask(2) takes an integer.
        unsafe { libc::umask(plan.umask as libc::mode_t) };
    }
    setup_fds(plan, terminal);
    reset_signals(plan);
    set_rlimits(s);
    drop_bounding_set(s, plan.uid.is_some());
    switch_credentials(plan);
    keep_capabilities(s);
    set_no_new_privs(s);
    // Die with the spawning thread; spawner threads outlive their boxes (see spawner.rs).
    die_with_parent_from_now_on(s);
    install_seccomp(s);
    exec(plan)
}

/// The `clone(2)` entry point; `arg` is a `*const Plan`.
///
/// Drops the caller's groups and joins namespaces (or makes them with `unshare`) where the plan says so;
/// then either sets up the namespaces and goes on, or (a PID namespace applies to children only) clones
/// the process that will run the command and leaves.
pub extern "C" fn entry(arg: *mut c_void) -> c_int {
    // SAFETY: the parent passes a pointer to a Plan that outlives the child's use of it.
    let plan = unsafe { &*arg.cast::<Plan<'_>>() };
    let s = &plan.setup;
    // Our own copy of the parent's read end (the fd table is a copy, not shared).
    sys::close(s.err_read_fd);
    set_parent_death_signal(s);
    // First, so that every process of the box (a second clone, the helper) starts in its cgroup.
    enter_cgroup(s, plan.cgroup_procs);
    if plan.drop_groups {
        drop_supplementary_groups(s);
    }
    for &(fd, nstype, stage) in plan.join {
        // SAFETY: setns(2) on an fd the parent opened.
        check(s, stage, unsafe { libc::setns(fd, nstype) });
        if nstype == libc::CLONE_NEWUSER {
            become_root_inside(s, false);
        }
    }
    if plan.unshare_flags != 0 {
        // SAFETY: a single syscall.
        check(s, Step::Clone, unsafe { libc::unshare(plan.unshare_flags) });
    }
    if !plan.fork_again {
        configure_namespaces(s);
        run(plan)
    }
    if plan.unshare_flags != 0 {
        configure_namespaces(s);
    }
    // CLONE_PARENT makes the second child the caller's own child (it can wait for it) and ties its
    // parent-death signal to the spawner thread, like any box. CLONE_VFORK: we leave after its exec.
    // CLONE_PARENT_SETTID: the parent's map and network thread learns the PID before the second child
    // waits for it.
    let flags = plan.inner_flags
        | libc::CLONE_VM
        | libc::CLONE_VFORK
        | libc::CLONE_PARENT
        | libc::CLONE_PARENT_SETTID
        | libc::SIGCHLD;
    let arg = ptr::from_ref(plan).cast_mut().cast();
    // SAFETY: the second child runs on the other half of the stack and reads the same Plan, which outlives
    // it (CLONE_VFORK: this process, and so the spawn, waits for its exec).
    let pid =
        unsafe { sys::clone(inner_entry, plan.inner_stack, flags, arg, plan.inner_pid.as_ptr(), ptr::null_mut()) };
    if pid < 0 {
        fail(s, Step::Clone);
    }
    plan.inner_pid.store(pid, Ordering::Release);
    sys::exit(0)
}

extern "C" fn inner_entry(arg: *mut c_void) -> c_int {
    // SAFETY: as for `entry`.
    let plan = unsafe { &*arg.cast::<Plan<'_>>() };
    set_parent_death_signal(&plan.setup);
    if plan.unshare_flags == 0 {
        // Namespaces made by this clone (a box on a private network) are set up here.
        configure_namespaces(&plan.setup);
    }
    run(plan)
}
