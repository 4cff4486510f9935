//! Making a box: prepare everything, `clone` once, and learn from the error pipe how it went.
//!
//! One `clone(CLONE_VM | CLONE_VFORK | namespaces)` does it: like `posix_spawn`, the child borrows the
//! caller's memory instead of copying its page tables, so the cost does not grow with the caller's size.
//! `CLONE_VFORK` suspends this thread until the child has exec'd or exited; the error pipe then holds a
//! record or nothing, and is read without blocking (a copy of its write end leaked into a process forked
//! concurrently by another thread cannot make us wait).
//!
//! Id maps the child may not write itself (several ranges, other ids, `setgroups` allowed) must be written
//! by a parent holding `CAP_SETUID`/`CAP_SETGID`. Then the child says "ready" on the error pipe and waits
//! on a second pipe while a scoped thread of ours writes `/proc/PID/{setgroups,uid_map,gid_map}` (this
//! thread is asleep in `CLONE_VFORK`). A box on a network waits the same way while that thread makes its
//! veth pair (the box then configures `eth0` itself, see [`crate::network`]); on a private network the
//! child first joins the network's user namespace and clones the box's new namespaces from there, like
//! an `exec` into a PID namespace. A caller that may drop its supplementary groups has the child drop
//! them and then make its namespaces with `unshare(2)` (inside a new user namespace with `setgroups`
//! denied it could not), cloning once more for a PID namespace.
//!
//! Programs that run the command from a process of their own never make us wait for EOF either: with
//! `init=True` the init says "running" once the command has exec'd; an `exec` into a box with a time
//! namespace goes through the helper program, which hands over a pipe only it holds (see
//! `nsbox-helper.c`). Both are watched through a pidfd while we wait, so a dead helper is noticed.

mod failure;
mod handshake;
mod pipe;
pub(crate) mod stack;
pub(crate) mod threads;

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

use libc::{c_char, c_int, pid_t};

use crate::child::Plan;
use crate::enter::Join;
use crate::errors::{Error, Hint, OsFailure, Step};
use crate::namespace::{Namespace, Namespaces};
use crate::net::egress::Egress;
use crate::net::Link;
use crate::spec::Spec;
pub(crate) use crate::sys::{kill_and_reap, last_errno, reap};
pub(crate) use failure::failure;
use handshake::clone_child;
pub(crate) use handshake::write_maps_for;
use pipe::{await_exec_handoff, await_init, next_record, outcome_of, receive_record};
pub(crate) use pipe::{read_record, receive_fd, wait_or_read_what_is_there, watch, Channels, Read};

/// The command and the process-level settings of a spawn (the namespaces are in [`Config`]).
#[derive(Debug, Clone)]
pub struct Command {
    /// Candidate paths of the program, tried in order (the caller did the `PATH` search).
    pub exec_paths: Vec<CString>,
    pub argv: Vec<CString>,
    /// `None`: inherit the caller's environment.
    pub env: Option<Vec<CString>>,
    pub cwd: Option<CString>,
    /// Fds to become the child's 0, 1 and 2; -1 inherits the caller's.
    pub stdio: [RawFd; 3],
    pub pass_fds: Vec<RawFd>,
    pub new_session: bool,
    /// `setpgid(0, pgid)` in the child when `Some`.
    pub process_group: Option<pid_t>,
    /// `subprocess`'s `umask` (-1: unchanged), `extra_groups`, `group` and `user`, applied inside the box
    /// after the namespaces are set up.
    pub umask: i32,
    pub extra_groups: Option<Vec<libc::gid_t>>,
    pub gid: Option<libc::gid_t>,
    pub uid: Option<libc::uid_t>,
    /// The box's `cgroup.procs` files, open (see [`crate::cgroup`]): the child enters them first.
    pub cgroup_procs: Vec<RawFd>,
    /// The box's cgroup v2 directory and its `cgroup.procs`: the clone starts the child there where it can,
    /// else the child enters that `cgroup.procs` too.
    pub cgroup_into: Option<(RawFd, RawFd)>,
}

impl Default for Command {
    fn default() -> Self {
        Command {
            exec_paths: Vec::new(),
            argv: Vec::new(),
            env: None,
            cwd: None,
            stdio: [-1; 3],
            pass_fds: Vec::new(),
            new_session: false,
            process_group: None,
            umask: -1,
            extra_groups: None,
            gid: None,
            uid: None,
            cgroup_procs: Vec::new(),
            cgroup_into: None,
        }
    }
}

impl Command {
    /// Checks what can be checked without forking.
    pub fn validate(&self) -> Result<(), Error> {
        if self.argv.is_empty() {
            return Err(Error::invalid("args must not be empty"));
        }
        if self.exec_paths.is_empty() {
            return Err(Error::invalid("no path to execute"));
        }
        if let Some(&fd) = self.pass_fds.iter().find(|&&fd| fd < 0) {
            return Err(Error::invalid(format!("pass_fds: {fd} is not a file descriptor")));
        }
        Ok(())
    }
}

/// Pointers into `strings`, NULL-terminated.
fn c_array(strings: &[CString]) -> Vec<*const c_char> {
    strings.iter().map(|s| s.as_ptr()).chain(std::iter::once(std::ptr::null())).collect()
}

/// The fds of `groups` that are 3 or above, sorted and without repeats.
fn fds_at_or_above_3(groups: &[&[RawFd]]) -> Vec<RawFd> {
    let mut fds: Vec<RawFd> = groups.iter().flat_map(|g| g.iter().copied()).filter(|&fd| fd >= 3).collect();
    fds.sort_unstable();
    fds.dedup();
    fds
}

/// Moves sources of 0-2 that sit below 3, but elsewhere than their target, to 3 or above, so the
/// child's `dup2`s cannot clobber one another. The returned fds must live until the child has exec'd.
fn lift_stdio(mut stdio: [RawFd; 3]) -> Result<([RawFd; 3], Vec<OwnedFd>), Error> {
    let mut lifted = Vec::new();
    for (target, src) in (0..).zip(stdio.iter_mut()) {
        if *src >= 0 && *src < 3 && *src != target {
            // SAFETY: F_DUPFD_CLOEXEC makes a new fd that `lifted` owns and closes.
            let new = unsafe { libc::fcntl(*src, libc::F_DUPFD_CLOEXEC, 3) };
            if new < 0 {
                return Err(Error::os(Step::Stdio, last_errno()));
            }
            // SAFETY: a fresh fd.
            lifted.push(unsafe { OwnedFd::from_raw_fd(new) });
            *src = new;
        }
    }
    Ok((stdio, lifted))
}

/// The helper's argv: `nsbox-helper MODE ERRFD TIMEFD NPATHS PATH... ARGV...` (see nsbox-helper.c).
fn helper_argv(mode: &str, err_fd: RawFd, time_fd: RawFd, command: &Command) -> Vec<CString> {
    let mut out: Vec<CString> = ["nsbox-helper".to_owned(), mode.to_owned(), err_fd.to_string(), time_fd.to_string()]
        .into_iter()
        .chain([command.exec_paths.len().to_string()])
        .map(|s| CString::new(s).expect("no NUL"))
        .collect();
    out.extend(command.exec_paths.iter().cloned());
    out.extend(command.argv.iter().cloned());
    out
}

/// How the child comes by its namespaces: the shape of the clone(s).
struct Route {
    /// Namespaces the first clone makes.
    clone_flags: c_int,
    /// Namespaces the child makes itself with `unshare(2)` after dropping the caller's groups.
    unshare_flags: c_int,
    drop_groups: bool,
    /// A second clone (into a PID namespace joined or unshared), making `inner_flags`.
    fork_again: bool,
    inner_flags: c_int,
}

impl Route {
    /// `joins`: the kinds of the namespaces joined first, if any are.
    fn new(config: &Spec, joins: Option<Namespaces>) -> Route {
        let flags = config.clone_flags();
        if let Some(joins) = joins {
            // Joining: the namespaces that are new (a box on a private network) are made by the second clone.
            return Route {
                clone_flags: 0,
                unshare_flags: 0,
                drop_groups: joins.contains(Namespace::User) && crate::sys::may_drop_groups(),
                fork_again: joins.contains(Namespace::Pid) || flags != 0,
                inner_flags: flags,
            };
        }
        if config.user.as_ref().is_some_and(|u| u.drop_groups_first) {
            return Route {
                clone_flags: 0,
                unshare_flags: flags,
                drop_groups: true,
                fork_again: config.has(Namespace::Pid),
                inner_flags: 0,
            };
        }
        Route { clone_flags: flags, unshare_flags: 0, drop_groups: false, fork_again: false, inner_flags: 0 }
    }
}

/// Starts `command` in the namespaces of `config`, or in those of `join`, and returns its PID (in the
/// caller's PID namespace). With `link`, the box gets an `eth0` on that network before the command runs;
/// on a private network the box joins the network's user namespace first, and `config` holds the new ones.
///
/// The child's parent-death signal is tied to the calling thread: call this from a spawner thread (see
/// [`crate::spawner`]), which then stays until the box has exited.
///
/// With `egress`, the box waits likewise while its engine starts on its network namespace ([`Egress`]).
pub fn spawn(
    config: &Spec,
    command: &Command,
    join: Option<&Join>,
    link: Option<&Link>,
    egress: Option<&Egress>,
) -> Result<pid_t, Error> {
    spawn_box(config, command, join, link, egress).map(|spawned| spawned.pid)
}

/// A started box: its PID, and with `tty=True` the master of its pseudo-terminal.
pub struct Spawned {
    pub pid: pid_t,
    /// CLOEXEC, at 3 or above.
    pub pty: Option<OwnedFd>,
}

/// [`spawn`], which also gives the master of the box's terminal (`tty=True`, see [`crate::tty`]).
#[allow(clippy::too_many_lines, reason = "one pass over what the child needs, each made before the clone")]
pub fn spawn_box(
    config: &Spec,
    command: &Command,
    join: Option<&Join>,
    link: Option<&Link>,
    egress: Option<&Egress>,
) -> Result<Spawned, Error> {
    command.validate()?;
    // Made first: the parent's pair, or the socket the child sends the box's own pty on (dropped at the end,
    // so that the master sees EOF once the box's last holder of the slave is gone).
    let terminal = config.tty.as_ref().map(|t| crate::tty::prepare(t, command.process_group)).transpose()?;
    let terminal_plan = terminal.as_ref().zip(config.tty.as_ref()).map(|(prepared, t)| prepared.plan(t));
    let terminal_fds = terminal_plan.map_or([-1, -1], |t| [t.slave, t.sock]);
    let argv = c_array(&command.argv);
    let envp = command.env.as_deref().map(c_array);
    let exec_paths: Vec<*const c_char> = command.exec_paths.iter().map(|p| p.as_ptr()).collect();
    let pass_fds = fds_at_or_above_3(&[&command.pass_fds]);

    let (stdio, _lifted) = lift_stdio(command.stdio)?;

    // The helper program runs the command when PID 1 must be an init, or a time namespace is joined.
    let time_fd = join.and_then(|j| j.time.as_ref()).map_or(-1, AsRawFd::as_raw_fd);
    if time_fd >= 0 && config.capabilities.is_some() {
        // The helper joins the time namespace after the child's last steps, and setns needs CAP_SYS_ADMIN.
        let message = "an exec into a box with a time namespace cannot drop capabilities (joining the time \
                       namespace needs CAP_SYS_ADMIN after the last step): pass capabilities=None";
        return Err(Error::rule("capabilities", message));
    }
    let helper_mode = if config.init {
        Some("init")
    } else if time_fd >= 0 {
        Some("exec")
    } else {
        None
    };
    let channels = Channels::new(config, link.is_some() || egress.is_some(), helper_mode == Some("exec"))?;
    let err_w = channels.err_w.as_raw_fd();
    let helper = helper_mode.map(|_| crate::helper::fd()).transpose()?;
    let helper_fd = helper.as_ref().map_or(-1, AsRawFd::as_raw_fd);
    let helper_strings = helper_mode.map(|mode| helper_argv(mode, err_w, time_fd, command));
    let helper_args = helper_strings.as_deref().map(c_array).unwrap_or_default();

    // What the child joins first: the target's namespaces, or a private network's user namespace.
    let joined: Option<Vec<(RawFd, Namespace)>> = match (join, link.and_then(|l| l.userns.as_ref())) {
        (Some(j), _) => Some(j.namespaces.iter().map(|n| (n.fd.as_raw_fd(), n.kind)).collect()),
        (None, Some(userns)) => Some(vec![(userns.as_raw_fd(), Namespace::User)]),
        (None, None) => None,
    };
    let join_fds: Vec<(c_int, c_int, Step)> =
        joined.iter().flatten().map(|&(fd, kind)| (fd, kind.flag(), Step::join(kind))).collect();
    let inner_pid = AtomicI32::new(0);
    let route = Route::new(config, joined.map(|j| j.into_iter().map(|(_, kind)| kind).collect()));
    let fd_of = |fd: Option<&OwnedFd>| fd.map_or(-1, AsRawFd::as_raw_fd);

    let go_fds = channels.go.as_ref().map_or([-1, -1], |(r, w)| [r.as_raw_fd(), w.as_raw_fd()]);
    let dir_fds = join.map_or([-1, -1], |j| [fd_of(j.root.as_ref()), fd_of(j.cwd.as_ref())]);
    let keep_fds =
        fds_at_or_above_3(&[&pass_fds, &stdio, &[err_w, helper_fd, time_fd], &go_fds, &dir_fds, &terminal_fds]);
    // The cgroup files the child writes itself into: all of them, or, when the clone can start it in the v2
    // cgroup, the others (those all with the v2 one are the fallback).
    let into = command.cgroup_into.filter(|_| crate::child::sys::CLONE_INTO_CGROUP);
    let every_procs: Vec<c_int> =
        command.cgroup_procs.iter().copied().chain(command.cgroup_into.map(|(_, p)| p)).collect();

    let mut plan = Plan {
        setup: channels.setup(config, link.map(|l| &l.eth0)),
        exec_paths: &exec_paths,
        argv: &argv,
        envp: envp.as_deref(),
        cwd: command.cwd.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
        stdio,
        pass_fds: &pass_fds,
        keep_fds: &keep_fds,
        new_session: command.new_session,
        process_group: command.process_group.unwrap_or(-1),
        drop_groups: route.drop_groups,
        join: &join_fds,
        unshare_flags: route.unshare_flags,
        fork_again: route.fork_again,
        inner_flags: route.inner_flags,
        inner_stack: std::ptr::null_mut(),
        inner_pid: &inner_pid,
        root_fd: dir_fds[0],
        cwd_fd: dir_fds[1],
        helper_fd,
        helper_argv: &helper_args,
        helper_fds: [if helper_fd >= 0 { err_w } else { -1 }, time_fd],
        umask: command.umask,
        extra_groups: command.extra_groups.as_deref(),
        gid: command.gid,
        uid: command.uid,
        cgroup_procs: if into.is_some() { &command.cgroup_procs } else { &every_procs },
        terminal: terminal_plan,
    };

    let child_pid = AtomicI32::new(0);
    let pids = (&child_pid, &inner_pid);
    let into = into.map(|(dir, _)| (dir, every_procs.as_slice()));
    let (pid, maps) = clone_child(&mut plan, &channels, route.clone_flags, config, (link, egress), pids, into)?;
    let err_r = channels.err_r.as_raw_fd();
    // `plan` (plain data the child may still read) and the map texts stay alive until we return.
    drop(channels.err_w);
    drop(channels.go);
    let inner = route.fork_again.then(|| inner_pid.load(Ordering::Acquire));
    // The process that runs the helper, if it was made (a failure may come before).
    let runner = inner.unwrap_or(pid);

    let outcome = if let Err(e) = maps {
        Err(e)
    } else if helper_mode.is_some() {
        // The helper may have exec'd (or the child failed before): it tells when the command has. Without
        // a pidfd the helper is gone already (reaped elsewhere): all it wrote is there.
        let watched = if runner > 0 { watch(runner) } else { Ok(None) };
        watched.and_then(|pidfd| match helper_mode {
            Some("init") => await_init(config, err_r, pidfd.as_ref()),
            _ => await_exec_handoff(config, err_r, pidfd.as_ref()),
        })
    } else {
        // SAFETY: setting O_NONBLOCK on our own fd.
        unsafe { libc::fcntl(err_r, libc::F_SETFL, libc::O_NONBLOCK) };
        if helper_mode == Some("exec") {
            receive_record(err_r).and_then(|(r, _)| outcome_of(config, r))
        } else {
            next_record(err_r).and_then(|r| outcome_of(config, r))
        }
    };
    let pid = conclude(outcome, pid, inner).map_err(|e| name_credentials(e, command))?;
    let pty = terminal.map(crate::tty::Prepared::master).transpose().inspect_err(|_| kill_and_reap(pid))?;
    threads::adopt(pid);
    Ok(Spawned { pid, pty })
}

/// Names the user, group or groups a credential step failed to switch to.
fn name_credentials(err: Error, command: &Command) -> Error {
    let Error::Os(OsFailure { step: stage, errno, .. }) = &err else { return err };
    let (stage, errno) = (*stage, *errno);
    let what = match (stage, command) {
        (Step::SetUid, Command { uid: Some(uid), .. }) => format!("switch to user {uid}"),
        (Step::SetGid, Command { gid: Some(gid), .. }) => format!("switch to group {gid}"),
        (Step::Groups, Command { extra_groups: Some(groups), .. }) => {
            let list: Vec<String> = groups.iter().map(ToString::to_string).collect();
            format!("set the supplementary groups [{}]", list.join(", "))
        }
        _ => return err,
    };
    let hint = match (stage, errno) {
        (_, libc::EINVAL) => Some(Hint::NotMapped),
        (Step::Groups, libc::EPERM) => Some(Hint::SetgroupsDenied),
        _ => None,
    };
    err.with_what(what).with_hint(hint)
}

/// The command's PID, or the error after reaping what was started. `inner` is the second child's PID
/// when the first one cloned again to enter a PID namespace (the first has left by then).
fn conclude(outcome: Result<(), Error>, pid: pid_t, inner: Option<pid_t>) -> Result<pid_t, Error> {
    let Some(inner) = inner else {
        // Killed first: after a corrupt record the child may still be running (an init, say).
        return outcome.map(|()| pid).inspect_err(|_| kill_and_reap(pid));
    };
    reap(pid);
    let outcome = outcome.map_err(|e| match e {
        // The kernel answers ENOMEM when a PID namespace whose PID 1 has exited is asked for a new PID.
        Error::Os(OsFailure { step: Step::Clone, errno: libc::ENOMEM, .. }) => {
            Error::os(Step::JoinPid, libc::ESRCH).with_hint(Some(Hint::PidNamespaceEnded))
        }
        other => other,
    });
    match outcome {
        Ok(()) if inner > 0 => Ok(inner),
        Ok(()) => Err(Error::Internal("the child entering the PID namespace left no PID".into())),
        Err(e) => {
            if inner > 0 {
                kill_and_reap(inner);
            }
            Err(e)
        }
    }
}
