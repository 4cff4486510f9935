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

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use std::sync::atomic::{AtomicI32, Ordering};

use libc::{c_char, c_int, pid_t};

use crate::child::{self, Plan, Setup};
use crate::enter::Join;
use crate::errors::{quoted_bytes, Error, Hint, OsFailure, Step};
use crate::namespace::Namespace;
use crate::netlink::Eth0;
use crate::network::Lan;
use crate::protocol::{self, Message};
use crate::spec::{Setgroups, Spec};
use crate::stack::ChildStack;
pub(crate) use crate::sys::{kill_and_reap, last_errno, reap};

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

#[derive(Clone, Copy)]
pub(crate) enum Read {
    Message(Message),
    Eof,
    Nothing,
}

/// Reads one record from the error pipe (or socket).
pub(crate) fn read_record(fd: RawFd) -> Result<Read, Error> {
    let mut buf = [0u8; protocol::SIZE];
    loop {
        // SAFETY: reading into a stack buffer of that size.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            if n == 0 {
                return Ok(Read::Eof);
            }
            // A record is written with one write(2) of 8 bytes, which a pipe delivers whole: anything
            // shorter is corrupt (and waiting for the rest could wait for ever).
            return Ok(Read::Message(Message::decode(&buf[..n as usize])?));
        }
        match last_errno() {
            libc::EINTR => {}
            libc::EAGAIN => return Ok(Read::Nothing),
            e => return Err(Error::Internal(format!("cannot read the error pipe: errno {e}"))),
        }
    }
}

/// Receives one record from the helper's socket, with the fd it hands over, if any.
fn receive_record(sock: RawFd) -> Result<(Read, Option<OwnedFd>), Error> {
    let mut buf = [0u8; protocol::SIZE];
    // Room for one fd, aligned as a cmsghdr.
    let mut control = [0u64; 4];
    loop {
        let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
        // SAFETY: a zeroed msghdr is valid; it points at our stack buffers.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &raw mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control);
        // SAFETY: recvmsg into the buffers above; MSG_CMSG_CLOEXEC makes a passed fd close-on-exec.
        let n = unsafe { libc::recvmsg(sock, &raw mut msg, libc::MSG_CMSG_CLOEXEC | libc::MSG_DONTWAIT) };
        if n < 0 {
            match last_errno() {
                libc::EINTR => continue,
                libc::EAGAIN => return Ok((Read::Nothing, None)),
                e => return Err(Error::Internal(format!("cannot read the helper's socket: errno {e}"))),
            }
        }
        let mut passed = None;
        // SAFETY: walking the control messages the kernel wrote into `msg`.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                    let fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>());
                    passed = Some(
                        crate::sys::own_fd(fd)
                            .map_err(|e| Error::Internal(format!("cannot keep the helper's pipe: {e}")))?,
                    );
                }
                cmsg = libc::CMSG_NXTHDR(&raw const msg, cmsg);
            }
        }
        if n == 0 {
            return Ok((Read::Eof, passed));
        }
        return Ok((Read::Message(Message::decode(&buf[..n as usize])?), passed));
    }
}

/// Waits until `fd` is readable or the process behind `pidfd` has exited; true when `fd` is readable.
pub(crate) fn wait_readable(fd: RawFd, pidfd: &OwnedFd) -> Result<bool, Error> {
    let mut fds = [
        libc::pollfd { fd, events: libc::POLLIN, revents: 0 },
        libc::pollfd { fd: pidfd.as_raw_fd(), events: libc::POLLIN, revents: 0 },
    ];
    loop {
        // SAFETY: poll on our own array.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if n < 0 {
            match last_errno() {
                libc::EINTR => continue,
                e => return Err(Error::Internal(format!("cannot wait for the child: errno {e}"))),
            }
        }
        if fds[0].revents != 0 {
            return Ok(true);
        }
        if fds[1].revents != 0 {
            // It has exited. What it wrote before is there: the caller reads without blocking.
            // SAFETY: setting O_NONBLOCK on our own fd.
            unsafe { libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK) };
            return Ok(false);
        }
    }
}

fn write_proc(config: &Spec, pid: pid_t, file: &str, text: &[u8], stage: Step) -> Result<(), Error> {
    std::fs::write(format!("/proc/{pid}/{file}"), text)
        .map_err(|e| failure(config, stage, e.raw_os_error().unwrap_or(libc::EIO)))
}

/// Writes the child's id maps from the parent (which must hold `CAP_SETUID`/`CAP_SETGID` for such maps).
pub(crate) fn write_maps_for(pid: pid_t, config: &Spec) -> Result<(), Error> {
    let user = config.user.as_ref().expect("only called with a user namespace");
    if user.setgroups == Setgroups::Deny {
        write_proc(config, pid, "setgroups", b"deny", Step::Setgroups)?;
    }
    write_proc(config, pid, "uid_map", &user.uid_map.to_proc_text(), Step::UidMap)?;
    write_proc(config, pid, "gid_map", &user.gid_map.to_proc_text(), Step::GidMap)
}

fn hint(config: &Spec, step: Step, errno: i32) -> Option<Hint> {
    let root = nix::unistd::geteuid().is_root();
    match (step, errno) {
        (Step::Clone, libc::EPERM) if config.user.is_none() && !root => Some(Hint::NeedsUserNamespace),
        (Step::Clone, libc::EPERM) if config.user.is_some() => Some(Hint::UserNamespacesDisabled),
        (Step::Clone, libc::ENOSPC) => Some(Hint::NamespaceLimit),
        (Step::Clone, libc::EUSERS) => Some(Hint::NestedTooDeep),
        (Step::Clone, libc::EINVAL) => Some(Hint::UnsupportedCombination),
        (Step::UidMap | Step::GidMap | Step::Setgroups, libc::EPERM) => Some(Hint::MapsNeedPrivilege),
        (Step::MountProc, libc::EPERM) if !config.has(Namespace::Pid) => Some(Hint::ProcNeedsPidNamespace),
        _ => None,
    }
}

/// The error for `step` failing with `errno` in a box made from `config`: what the step was, naming the
/// namespaces or the path it concerned, with advice where there is some.
pub(crate) fn failure(config: &Spec, step: Step, errno: i32) -> Error {
    let err = Error::os(step, errno).with_hint(hint(config, step, errno));
    match step {
        Step::Clone => {
            let kinds: Vec<&str> = config.namespaces().iter().map(Namespace::long_name).collect();
            err.with_what(match kinds.as_slice() {
                [] => "create the child process".to_owned(),
                [one] => format!("create the {one} namespace"),
                many => format!("create the {} namespaces", many.join(", ")),
            })
        }
        Step::MountProc => err.with_what(format!("mount a new proc on {}", quoted_bytes(config.proc_dir.as_bytes()))),
        Step::Root => match &config.root {
            Some(root) => err.with_what(format!("change the root to {}", quoted_bytes(root.as_bytes()))),
            None => err,
        },
        _ => err,
    }
}

/// A box's place on a network: the veth the parent makes for it, and what the child then sends.
pub struct Link<'a> {
    pub lan: &'a Lan,
    /// The name of the veth's end on the bridge.
    pub host_name: String,
    pub eth0: Eth0,
}

/// The error pipe, the go pipe of the id-map handshake and the id-map texts of a child's [`Setup`], made
/// in the parent before it clones (here) or forks (`nsbox.call`, see [`crate::fork`]).
pub(crate) struct Channels {
    pub err_r: OwnedFd,
    pub err_w: OwnedFd,
    /// The caller's dumpable flag, for the child to put back after changing ids.
    dumpable: c_int,
    /// (read, write) when the parent writes the id maps or makes the network while the child waits.
    pub go: Option<(OwnedFd, OwnedFd)>,
    uid_text: CString,
    gid_text: CString,
}

impl Channels {
    /// `socket`: the error channel is a socket pair, over which the helper program can hand over an fd.
    pub fn new(config: &Spec, network: bool, socket: bool) -> Result<Channels, Error> {
        let user = config.user.as_ref();
        let (err_r, err_w) = if socket { crate::sys::socketpair(libc::SOCK_SEQPACKET)? } else { crate::sys::pipe()? };
        let go = if config.parent_writes_maps() || network { Some(crate::sys::pipe()?) } else { None };
        let (uid_text, gid_text) = match user {
            Some(u) if u.child_writes_maps => (
                CString::new(u.uid_map.to_proc_text()).expect("digits"),
                CString::new(u.gid_map.to_proc_text()).expect("digits"),
            ),
            _ => (CString::default(), CString::default()),
        };
        // SAFETY: prctl(2) reading a flag.
        let dumpable = unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) }.max(0);
        Ok(Channels { err_r, err_w, dumpable, go, uid_text, gid_text })
    }

    /// What the child's namespace steps use; borrows `self`, which must outlive the child's use of it.
    pub fn setup<'a>(&'a self, config: &'a Spec, eth0: Option<&'a Eth0>) -> Setup<'a> {
        Setup {
            config,
            err_fd: self.err_w.as_raw_fd(),
            err_read_fd: self.err_r.as_raw_fd(),
            dumpable: self.dumpable,
            go_fd: self.go.as_ref().map_or(-1, |(r, _)| r.as_raw_fd()),
            go_write_fd: self.go.as_ref().map_or(-1, |(_, w)| w.as_raw_fd()),
            uid_map: self.uid_text.as_ptr(),
            gid_map: self.gid_text.as_ptr(),
            eth0,
        }
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
    fn new(config: &Spec, join: Option<&Join>) -> Route {
        let flags = config.clone_flags();
        if let Some(join) = join {
            // Joining: the namespaces that are new (a box on a private network) are made by the second clone.
            let joins_user = join.enters_user_namespace();
            return Route {
                clone_flags: 0,
                unshare_flags: 0,
                drop_groups: joins_user && crate::sys::may_drop_groups(),
                fork_again: join.enters_pid_namespace() || flags != 0,
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
/// for a private network `join` holds the network's user namespace, and `config` the new namespaces.
///
/// The child's parent-death signal is tied to the calling thread: call this from a spawner thread (see
/// [`crate::spawner`]), which then stays until the box has exited.
pub fn spawn(config: &Spec, command: &Command, join: Option<&Join>, link: Option<&Link>) -> Result<pid_t, Error> {
    command.validate()?;
    let argv = c_array(&command.argv);
    let envp = command.env.as_deref().map(c_array);
    let exec_paths: Vec<*const c_char> = command.exec_paths.iter().map(|p| p.as_ptr()).collect();
    let pass_fds = fds_at_or_above_3(&[&command.pass_fds]);

    let (stdio, _lifted) = lift_stdio(command.stdio)?;

    // The helper program runs the command when PID 1 must be an init, or a time namespace is joined.
    let time_fd = join.and_then(|j| j.time.as_ref()).map_or(-1, AsRawFd::as_raw_fd);
    let helper_mode = if config.init {
        Some("init")
    } else if time_fd >= 0 {
        Some("exec")
    } else {
        None
    };
    let channels = Channels::new(config, link.is_some(), helper_mode == Some("exec"))?;
    let err_w = channels.err_w.as_raw_fd();
    let helper = helper_mode.map(|_| crate::helper::fd()).transpose()?;
    let helper_fd = helper.as_ref().map_or(-1, AsRawFd::as_raw_fd);
    let helper_strings = helper_mode.map(|mode| helper_argv(mode, err_w, time_fd, command));
    let helper_args = helper_strings.as_deref().map(c_array).unwrap_or_default();

    let join_fds: Vec<(c_int, c_int, Step)> = join
        .map(|j| j.namespaces.iter().map(|n| (n.fd.as_raw_fd(), n.kind.flag(), Step::join(n.kind))).collect())
        .unwrap_or_default();
    let inner_pid = AtomicI32::new(0);
    let route = Route::new(config, join);
    let fd_of = |fd: Option<&OwnedFd>| fd.map_or(-1, AsRawFd::as_raw_fd);

    let go_fds = channels.go.as_ref().map_or([-1, -1], |(r, w)| [r.as_raw_fd(), w.as_raw_fd()]);
    let dir_fds = join.map_or([-1, -1], |j| [fd_of(j.root.as_ref()), fd_of(j.cwd.as_ref())]);
    let keep_fds = fds_at_or_above_3(&[&pass_fds, &stdio, &[err_w, helper_fd, time_fd], &go_fds, &dir_fds]);

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
    };

    let child_pid = AtomicI32::new(0);
    let (pid, maps) = clone_child(&mut plan, &channels, route.clone_flags, config, link, (&child_pid, &inner_pid))?;
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
    crate::spawner::adopt(pid);
    Ok(pid)
}

/// Clones the child on this thread's child stack and, when the parent must write the id maps or make
/// the network, runs the handshake on a scoped thread meanwhile (this thread sleeps in `CLONE_VFORK`
/// until the child has exec'd or exited). `pids` are where the kernel stores the first and second
/// child's PIDs (`CLONE_PARENT_SETTID`). Returns the child's PID and the handshake's outcome.
fn clone_child(
    plan: &mut Plan<'_>,
    channels: &Channels,
    namespaces: c_int,
    config: &Spec,
    link: Option<&Link>,
    pids: (&AtomicI32, &AtomicI32),
) -> Result<(pid_t, Result<(), Error>), Error> {
    let (child_pid, inner_pid) = pids;
    let mut flags = namespaces | libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD;
    if channels.go.is_some() {
        flags |= libc::CLONE_PARENT_SETTID;
    }
    let go_w = channels.go.as_ref().map(|(_, w)| w.as_raw_fd());
    let err_r = channels.err_r.as_raw_fd();
    // The process that sets up the namespaces (and so waits for the parent): the one that made them.
    let waiting = if plan.fork_again && plan.unshare_flags == 0 { inner_pid } else { child_pid };
    std::thread::scope(|scope| {
        let writer = match go_w {
            None => None,
            Some(go_w) => Some(
                std::thread::Builder::new()
                    .name("nsbox-handshake".into())
                    .spawn_scoped(scope, move || prepare_when_ready(config, link, waiting, err_r, go_w))
                    .map_err(|e| {
                        Error::os(Step::Clone, e.raw_os_error().unwrap_or(libc::EAGAIN))
                            .with_what("start a thread for the child's id maps or network")
                    })?,
            ),
        };
        let pid = ChildStack::with(|stack, inner_stack| {
            plan.inner_stack = inner_stack;
            let arg = std::ptr::from_ref(&*plan).cast_mut().cast();
            // SAFETY: the child runs `child::entry` on its own stack and only reads `plan`, which lives
            // until the child has exec'd or exited: CLONE_VFORK returns only then.
            unsafe { libc::clone(child::entry, stack, flags, arg, child_pid.as_ptr()) }
        });
        let maps = writer.map(|writer| {
            // The child is gone (exec'd or exited): wake a writer still waiting for a "ready" that will
            // never come, then collect its result.
            send_end_of_records(&channels.err_w);
            writer.join().unwrap_or_else(|_| Err(Error::Internal("the id map writer panicked".into())))
        });
        match pid? {
            pid if pid < 0 => Err(failure(config, Step::Clone, last_errno())),
            pid => Ok((pid, maps.unwrap_or(Ok(())))),
        }
    })
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

/// A pidfd for a child of ours, or `None` if it has been reaped already (`SIGCHLD` ignored): then all it
/// wrote is in the pipe.
pub(crate) fn watch(pid: pid_t) -> Result<Option<OwnedFd>, Error> {
    match crate::sys::pidfd_open(pid) {
        Ok(fd) => Ok(Some(fd)),
        Err(Error::Os(OsFailure { errno: libc::ESRCH, .. })) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Waits until the error channel is readable or the process behind `pidfd` has exited; without a pidfd
/// (the process is gone) only reads what is there.
pub(crate) fn wait_or_read_what_is_there(err_r: RawFd, pidfd: Option<&OwnedFd>) -> Result<(), Error> {
    if let Some(pidfd) = pidfd {
        return wait_readable(err_r, pidfd).map(|_| ());
    }
    // SAFETY: setting O_NONBLOCK on our own fd.
    unsafe { libc::fcntl(err_r, libc::F_SETFL, libc::O_NONBLOCK) };
    Ok(())
}

/// With `init=True`: the init has exec'd; it says "running" once the command has, after the command's
/// own failure record if it failed. Watched through a pidfd, never waiting for EOF.
fn await_init(config: &Spec, err_r: RawFd, pidfd: Option<&OwnedFd>) -> Result<(), Error> {
    wait_or_read_what_is_there(err_r, pidfd)?;
    match next_record(err_r)? {
        Read::Message(Message::Running) => Ok(()),
        Read::Eof | Read::Nothing => Err(Error::Internal("the init process died before the command ran".into())),
        read @ Read::Message(_) => outcome_of(config, read),
    }
}

/// An `exec` into a time namespace: the helper hands over a pipe whose write end only it holds (see
/// nsbox-helper.c); EOF there means the command has exec'd.
fn await_exec_handoff(config: &Spec, err_r: RawFd, pidfd: Option<&OwnedFd>) -> Result<(), Error> {
    loop {
        wait_or_read_what_is_there(err_r, pidfd)?;
        match receive_record(err_r)? {
            (Read::Message(Message::Handoff), Some(pipe)) => {
                // Blocking: the helper, then the command, hold the only write end (close-on-exec).
                return read_record(pipe.as_raw_fd()).and_then(|r| outcome_of(config, r));
            }
            (Read::Message(Message::End), _) => {}
            (Read::Message(Message::Handoff), None) => {
                return Err(Error::Internal("the helper's exec pipe did not arrive".into()))
            }
            (Read::Eof | Read::Nothing, _) => {
                return Err(Error::Internal("the helper program died before the command ran".into()))
            }
            (record, _) => return outcome_of(config, record),
        }
    }
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

/// What a read of the error pipe means once only failures can come: nothing, or a failure with an errno.
fn outcome_of(config: &Spec, read: Read) -> Result<(), Error> {
    match read {
        Read::Eof | Read::Nothing => Ok(()),
        // Only failures can come now, and a failure has an errno.
        Read::Message(Message::Failed(step, errno)) => Err(failure(config, step, errno)),
        // Only failures can come now.
        Read::Message(_) => Err(Error::Internal("unexpected record on the error pipe".into())),
    }
}

/// The parent's marker after the child's records (see [`send_end_of_records`]); never sent by a child.
const END_OF_RECORDS: Message = Message::End;

/// Writes [`END_OF_RECORDS`] on our own copy of the error pipe's write end.
fn send_end_of_records(err_w: &OwnedFd) {
    let rec = END_OF_RECORDS.encode();
    // SAFETY: writing a stack buffer to our own pipe.
    unsafe { libc::write(err_w.as_raw_fd(), rec.as_ptr().cast(), rec.len()) };
}

/// The next record that is not our own end marker.
fn next_record(err_r: RawFd) -> Result<Read, Error> {
    loop {
        match read_record(err_r)? {
            Read::Message(Message::End) => {}
            other => return Ok(other),
        }
    }
}

/// The parent's side of the handshake, on its own thread while the spawning thread is suspended by
/// `CLONE_VFORK`: wait for "ready", write the maps, connect the network, let the child go on.
fn prepare_when_ready(
    config: &Spec,
    link: Option<&Link>,
    child: &AtomicI32,
    err_r: RawFd,
    go_w: RawFd,
) -> Result<(), Error> {
    let ready = match read_record(err_r) {
        Ok(Read::Message(Message::Ready)) => Ok(()),
        Ok(Read::Message(Message::End) | Read::Eof | Read::Nothing) => {
            Err(Error::Internal("the child died before it was ready".into()))
        }
        Ok(read @ Read::Message(_)) => {
            outcome_of(config, read).and(Err(Error::Internal("unexpected record on the error pipe".into())))
        }
        Err(e) => Err(e),
    };
    // Whatever happened, a child waiting for its maps must be told (or CLONE_VFORK never returns).
    let pid = child.load(Ordering::Acquire);
    let written = ready.and_then(|()| {
        if config.parent_writes_maps() {
            write_maps_for(pid, config)?;
        }
        link.map_or(Ok(()), |l| l.lan.attach(&l.host_name, pid))
    });
    // 1: go on; 0: the maps failed, leave (the child is reaped later).
    let go = [u8::from(written.is_ok())];
    // SAFETY: writing one byte from a stack buffer to our own pipe.
    let n = unsafe { libc::write(go_w, go.as_ptr().cast(), 1) };
    if n != 1 {
        return written.and(Err(Error::Internal("cannot wake the child".into())));
    }
    written
}
