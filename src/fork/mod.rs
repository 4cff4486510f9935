//! `nsbox.call`: fork the calling process into new namespaces; the copy goes back to the caller's code
//! (the Python glue runs the function there) instead of executing a program.
//!
//! How, and why so:
//!
//! - The fork is the C library's `fork()`, which the glue wraps in Python's own `PyOS_BeforeFork` /
//!   `PyOS_AfterFork_Parent` / `PyOS_AfterFork_Child`: exactly what `os.fork()` does. glibc's `fork()` also
//!   takes its own locks (malloc arenas, stdio, the dynamic loader) around the fork and runs the
//!   `pthread_atfork` handlers, so the child of a threaded caller finds them usable. A raw `clone(2)` with
//!   namespace flags from the caller would skip that: a thread inside `malloc` at that instant would leave
//!   the child deadlocked on its first allocation.
//! - The child, now single-threaded, `unshare`s the namespaces of [`Config::clone_flags`] (the set the
//!   exec path clones with) and runs the exec path's own steps on them ([`child::configure_namespaces`],
//!   [`child::filesystem`]): id maps (or the handshake with the parent), time offsets, hostname, loopback,
//!   propagation before any mount, proc.
//! - A new time namespace applies to the children of the process that made it (the exec path relies on
//!   `execve` switching to it). This child joins it with `setns(time_for_children)`, which a
//!   single-threaded process that shares its memory with no other may do, so the function sees the
//!   offsets.
//! - A new PID namespace also applies only to children, and the function must be its PID 1. So with
//!   `pid` the first child clones once more: `CLONE_PARENT`, so that the second child, PID 1, is the
//!   caller's child (which waits for it, and which it dies with); and `CLONE_VM`: the second child runs
//!   in the first one's memory, itself already a private copy of the caller's, so no page table is copied
//!   twice. The first child clones from a stack of its own (`swapcontext`) and leaves at once, touching
//!   nothing the second uses (it unregisters its robust-futex list and TID address, which are the
//!   second's too), while the second carries on with the frames of the main stack (`setcontext`) up into
//!   the caller's code. The clone is set up as glibc's own fork sets up its child: the kernel writes the
//!   new TID into glibc's thread descriptor, and the robust-futex list and the restartable-sequences
//!   area (`rseq`, which the kernel does not carry over a `CLONE_VM` clone) are registered again.
//!
//! Between the fork and the return to Python the child makes only raw system calls, as the exec path
//! does. It reports on the exec path's error pipe ([`crate::protocol::Message`]s: failures, plus
//! [`Message::Forked`] with the second child's PID and [`Message::Running`] when the function runs). The
//! parent does not wait for EOF on that pipe, since a process forked meanwhile by another thread may hold
//! a copy of the write end for as long as it lives: it watches the child through a pidfd instead.

mod pid1;

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use libc::pid_t;

use crate::child::{self, Setup};
use crate::enter::Join;
use crate::errors::{Error, Step};
use crate::namespace::Namespace;
use crate::net::Link;
use crate::pool::Taken;
use crate::protocol::Message;
use crate::spawn::{
    failure, kill_and_reap, last_errno, read_record, reap, wait_or_read_what_is_there, watch, write_maps_for, Channels,
    Read,
};
use crate::spec::Spec;
use pid1::{become_pid_1, Rseq};

/// Which side of the fork returned.
#[allow(clippy::large_enum_variant)] // made once per call, moved at once
pub enum Forked<'a> {
    /// The caller, with the PID of the first child; call [`Fork::finish`].
    Parent(Fork<'a>, pid_t),
    /// The process that runs the function, in its namespaces (PID 1 of a new PID namespace with `pid`).
    Child,
}

/// A fork into the namespaces of a config: prepared in the parent ([`Fork::new`]), then [`Fork::fork`],
/// then [`Fork::finish`] in the parent.
pub struct Fork<'a> {
    config: &'a Spec,
    channels: Channels,
    caller: pid_t,
    link: Option<Link<'a>>,
    /// Drop the caller's supplementary groups before making or joining a user namespace.
    drop_groups: bool,
    rseq: Option<Rseq>,
    /// The box's `cgroup.procs` files (see [`crate::cgroup`]), entered first.
    cgroup_procs: Vec<RawFd>,
    /// A pool's set of namespaces to join before making the config's own (see [`crate::pool`]).
    set: Option<Taken>,
}

impl<'a> Fork<'a> {
    /// Makes the pipes and texts the child will use; nothing is forked yet.
    pub fn new(config: &'a Spec, link: Option<Link<'a>>) -> Result<Fork<'a>, Error> {
        if config.init {
            return Err(Error::rule(
                "init",
                "init=True starts a command under an init process; a function called in a box is PID 1 itself",
            ));
        }
        let joins_user = link.as_ref().is_some_and(|l| l.userns.is_some());
        let drop_groups =
            config.user.as_ref().is_some_and(|u| u.drop_groups_first) || (joins_user && crate::sys::may_drop_groups());
        Ok(Fork {
            config,
            channels: Channels::new(config, link.is_some(), false)?,
            // SAFETY: getpid has no preconditions.
            caller: unsafe { libc::getpid() },
            link,
            drop_groups,
            rseq: config.has(Namespace::Pid).then(Rseq::of_this_thread).flatten(),
            cgroup_procs: Vec::new(),
            set: None,
        })
    }

    /// The child enters the cgroup of these `cgroup.procs` files (which must stay open until the fork)
    /// first thing.
    #[must_use]
    pub fn into_cgroup(self, procs: Vec<RawFd>) -> Fork<'a> {
        Fork { cgroup_procs: procs, ..self }
    }

    /// The child joins `set` (a pool's namespaces, user first) before it makes the config's own.
    #[must_use]
    pub fn joining(self, set: Option<Taken>) -> Fork<'a> {
        let joins_user = set.as_ref().is_some_and(|t| t.join().namespaces.iter().any(|n| n.kind == Namespace::User));
        let drop_groups = self.drop_groups || (joins_user && crate::sys::may_drop_groups());
        Fork { drop_groups, set, ..self }
    }

    /// Forks. The parent gets [`Forked::Parent`] at once. The child makes and enters the namespaces and
    /// gets [`Forked::Child`]: only the process that will run the function returns, and only when every
    /// step worked (otherwise it has reported the failure to the parent and exited).
    ///
    /// # Safety
    ///
    /// As for `fork(2)` in a process that may have threads: the child is a copy of the caller with one
    /// thread, in which locks held by the caller's other threads stay held. The caller must restore what
    /// it owns in the child (Python: `PyOS_AfterFork_Child`) and must not let the child return into code
    /// that expects to be the original process.
    pub unsafe fn fork(mut self) -> Result<Forked<'a>, Error> {
        // A pool's set stays recorded until now: the registry's fork handler must not close it in our child, but
        // must in any other (a Python fork hook that runs before this, `logging`'s, may let another thread fork).
        let set = self.set.take().map(Taken::into_join);
        // SAFETY: see the function's contract.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(Error::os(Step::Clone, last_errno()).with_what("fork the interpreter"));
        }
        if pid > 0 {
            // The child has its own copy of a pool's set: ours closes now, before any other thread can fork.
            drop(set);
            return Ok(Forked::Parent(self, pid));
        }
        // SAFETY: our copy of the parent's read end: the caller's death must leave the pipe without a reader
        // (`child::die_with_parent_from_now_on`).
        unsafe { libc::close(self.channels.err_r.as_raw_fd()) };
        self.enter_namespaces(set.as_ref());
        drop(set);
        let Channels { err_r, err_w, go, .. } = self.channels;
        std::mem::forget(err_r); // closed above
        drop(err_w);
        if let Some(go) = go {
            // The handshake closed both ends already (`child::configure_namespaces`).
            std::mem::forget(go);
        }
        Ok(Forked::Child)
    }

    /// The child's side: raw system calls only; any failure is reported and ends the process.
    fn enter_namespaces(&self, set: Option<&Join>) {
        let s = self.channels.setup(self.config, self.link.as_ref().map(|l| &l.eth0));
        let cfg = self.config;
        // Set now for the steps below, and again after the last change of credentials (which clears it).
        child::set_parent_death_signal(&s);
        // SAFETY: getppid has no preconditions.
        if unsafe { libc::getppid() } != self.caller {
            // The caller died before the death signal was set: nobody is waiting for us.
            child::sys::exit(127);
        }
        child::enter_cgroup(&s, &self.cgroup_procs);
        if self.drop_groups {
            child::drop_supplementary_groups(&s);
        }
        if let Some(userns) = self.link.as_ref().and_then(|l| l.userns.as_ref()) {
            // A private network's boxes live in its user namespace (see crate::net).
            // SAFETY: setns(2) on a namespace fd we own.
            child::check(&s, Step::JoinUser, unsafe { libc::setns(userns.as_raw_fd(), libc::CLONE_NEWUSER) });
            child::become_root_inside(&s, false);
        }
        for joined in set.iter().flat_map(|set| &set.namespaces) {
            // SAFETY: setns(2) on a namespace fd we own.
            child::check(&s, Step::join(joined.kind), unsafe {
                libc::setns(joined.fd.as_raw_fd(), joined.kind.flag())
            });
            if joined.kind == Namespace::User {
                child::become_root_inside(&s, false);
            }
        }
        let flags = cfg.clone_flags();
        if flags != 0 {
            // SAFETY: unshare(2) takes flags only.
            child::check(&s, Step::Clone, unsafe { libc::unshare(flags) });
        }
        child::configure_namespaces(&s);
        if cfg.has(Namespace::Time) {
            // Before a PID-1 process is made: it shares our memory, and a time namespace is the memory's
            // (the kernel switches the vDSO's clock page; a CLONE_VM child stays in its parent's).
            enter_time_namespace(&s);
        }
        if cfg.has(Namespace::Pid) {
            become_pid_1(&s, self.rseq);
        }
        child::filesystem(&s);
        child::set_rlimits(&s);
        child::drop_bounding_set(&s, false);
        child::keep_capabilities(&s);
        child::set_no_new_privs(&s);
        child::die_with_parent_from_now_on(&s);
        // SAFETY: getppid has no preconditions.
        if !cfg.has(Namespace::Pid) && unsafe { libc::getppid() } != self.caller {
            // Reparented: the caller died before the signal was set again (PID 1 of a new PID namespace
            // sees 0 here, and relies on the error pipe's check alone).
            // SAFETY: nobody is waiting for us.
            unsafe { libc::_exit(127) };
        }
        // Last, as before an exec: the function runs under it.
        child::install_seccomp(&s);
        child::send(&s, Message::Running);
    }

    /// The parent's side, after the fork: writes the id maps when the parent must, waits until the
    /// namespaces are ready, and returns the process that runs the function. On failure every child has
    /// been reaped.
    pub fn finish(self, first: pid_t) -> Result<Started, Error> {
        let link = self.link;
        let Channels { err_r, err_w, go, .. } = self.channels;
        drop(err_w);
        let mut go_w = go.map(|(go_r, go_w)| {
            drop(go_r);
            go_w
        });
        let mut second = None;
        let outcome = wait_until_running(self.config, link.as_ref(), first, err_r.as_raw_fd(), &mut go_w, &mut second);
        // Closing the go pipe (if still open) lets a waiting child leave.
        drop(go_w);
        if outcome.is_err() {
            match second {
                // The first was reaped when it named the second: its PID may be another process's now.
                Some(second) => kill_and_reap(second),
                None => kill_and_reap(first),
            }
        }
        outcome
    }
}

/// The process that runs the function, once its namespaces are ready.
#[derive(Debug)]
pub struct Started {
    pub pid: pid_t,
    /// Readable once it has exited; kill and reap through it (it cannot name a reused PID). `None` when it
    /// had exited and been reaped by someone else (`SIGCHLD` ignored) before it could be watched: all it
    /// wrote is in the pipe already.
    pub pidfd: Option<OwnedFd>,
}

fn wait_until_running(
    config: &Spec,
    link: Option<&Link<'_>>,
    first: pid_t,
    err_r: RawFd,
    go_w: &mut Option<OwnedFd>,
    second: &mut Option<pid_t>,
) -> Result<Started, Error> {
    let mut watched = watch(first)?;
    // With a PID namespace two processes write: the first child sends the second's PID ("forked") right
    // after cloning it, and the second (running concurrently) its own records, in either order. Both
    // the outcome and that PID are needed (the PID to reap the second whatever happens).
    let mut running = false;
    let mut failed = None;
    loop {
        let settled = running || failed.is_some();
        if settled && (!config.has(Namespace::Pid) || second.is_some()) {
            break;
        }
        match next_record(err_r, watched.as_ref())? {
            Some(Message::Ready) if go_w.is_some() => {
                if config.parent_writes_maps() {
                    write_maps_for(first, config)?;
                }
                if let Some(link) = link {
                    link.network.attach(&link.veth, link.address, first)?;
                }
                // SAFETY: writing one byte from a stack variable to our own pipe.
                let n = unsafe { libc::write(go_w.as_ref().map_or(-1, AsRawFd::as_raw_fd), [1u8].as_ptr().cast(), 1) };
                if n != 1 {
                    return Err(Error::Internal("cannot wake the child".into()));
                }
                *go_w = None;
            }
            Some(Message::Forked(pid)) if config.has(Namespace::Pid) && second.is_none() && pid > 0 => {
                // From the first or the second child, whichever writes first (both do): from now on, watch
                // the second. The first leaves at once (it does not wait for the second): reap it now.
                *second = Some(pid);
                reap(first);
                watched = watch(pid)?;
            }
            Some(Message::Forked(pid)) if *second == Some(pid) => {}
            Some(Message::Running) => running = true,
            Some(Message::Failed(step, errno, at)) => failed = Some(failure(config, step, errno, at)),
            Some(message) => {
                return Err(Error::Internal(format!("unexpected {message:?} from the child")));
            }
            // The first child failed before it could clone the second.
            None if failed.is_some() => break,
            None if running => {
                // The first child died after the outcome without naming the second: it cannot be reaped.
                return Err(Error::Internal("the PID namespace's first process was not reported".into()));
            }
            None => return Err(Error::Internal("the child died while its namespaces were being made".into())),
        }
    }
    if let Some(err) = failed {
        return Err(err);
    }
    Ok(Started { pid: second.unwrap_or(first), pidfd: watched })
}

/// Joins the time namespace just unshared (it applies to children only until joined).
fn enter_time_namespace(s: &Setup<'_>) {
    let fd = child::sys::open(c"/proc/self/ns/time_for_children", libc::O_RDONLY);
    child::check(s, Step::TimeNamespace, fd);
    // SAFETY: setns(2) on the fd just opened.
    child::check(s, Step::TimeNamespace, unsafe { libc::setns(fd, libc::CLONE_NEWTIME) });
    child::sys::close(fd);
}

/// Waits for the next record from the child, or for the child's death: `None` when it died (or closed the
/// pipe) without one. Without a pidfd (the child is gone already) reads what is there.
fn next_record(err_r: RawFd, watched: Option<&OwnedFd>) -> Result<Option<Message>, Error> {
    wait_or_read_what_is_there(err_r, watched)?;
    Ok(match read_record(err_r)? {
        Read::Message(message) => Some(message),
        Read::Eof | Read::Nothing => None,
    })
}

#[cfg(test)]
mod tests {
    // Tests fork and poke at fds in ways the library's own rules need not govern.
    #![allow(clippy::multiple_unsafe_ops_per_block)]

    use libc::c_int;

    use super::*;
    use crate::spec::{Caller, Options};

    /// Forks into the namespaces of `options`; the child `_exit`s 0 when `check` holds there. Returns the
    /// child's wait status.
    fn status_of(options: Options, check: impl FnOnce() -> bool) -> Result<c_int, Error> {
        let config = options.resolve(Caller::current())?;
        let fork = Fork::new(&config, None)?;
        // SAFETY: the child makes plain libc calls and _exits; it never returns into the test harness.
        match unsafe { fork.fork() }? {
            Forked::Child => {
                let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(check)).unwrap_or(false);
                // SAFETY: leaving at once.
                unsafe { libc::_exit(i32::from(!ok)) }
            }
            Forked::Parent(fork, first) => {
                let started = fork.finish(first)?;
                let mut status = -1;
                // SAFETY: waiting for our own children.
                unsafe { libc::waitpid(started.pid, &raw mut status, 0) };
                Ok(status)
            }
        }
    }

    fn hostname_is(expected: &[u8]) -> bool {
        let mut buf = [0u8; 65];
        // SAFETY: a stack buffer one byte longer than HOST_NAME_MAX.
        let ret = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), 64) };
        ret == 0 && buf.starts_with(expected) && buf.get(expected.len()) == Some(&0)
    }

    #[test]
    fn the_child_is_pid_1_of_its_namespace_with_its_hostname() {
        let options = Options { pid: true, hostname: Some(b"fork-test".to_vec()), ..Options::default() };
        // SAFETY: getpid has no preconditions.
        let status = status_of(options, || unsafe { libc::getpid() } == 1 && hostname_is(b"fork-test"));
        assert_eq!(status, Ok(0));
    }

    #[test]
    fn a_failed_step_is_reported_with_its_errno() {
        // Proc cannot be mounted for the caller's PID namespace from a new user namespace, even by root.
        let options = Options { user: Some(true), mount_proc: true, ..Options::default() };
        match status_of(options, || true) {
            Err(Error::Os(failure)) => assert_eq!((failure.step, failure.errno), (Step::MountProc, libc::EPERM)),
            other => panic!("expected an EPERM mounting proc, got {other:?}"),
        }
    }

    #[test]
    fn the_function_runs_under_the_seccomp_filter() {
        let options = Options { seccomp: Some(crate::seccomp::SeccompOptions::default()), ..Options::default() };
        let status = status_of(options, || {
            // SAFETY: keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0): integers only.
            let ret = unsafe { libc::syscall(libc::SYS_keyctl, 0, -3, 0) };
            ret == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
        });
        assert_eq!(status, Ok(0));
    }

    #[test]
    fn init_is_refused_before_forking() {
        let config = Options { init: true, ..Options::default() }.resolve(Caller::current()).unwrap();
        assert!(matches!(Fork::new(&config, None), Err(Error::Invalid(_))));
    }
}
