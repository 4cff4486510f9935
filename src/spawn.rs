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
//! an `exec` into a PID namespace. With `init=True` the init says "running" once the command has
//! exec'd. Only an `exec` into a box with a time namespace, whose helper program execs the command itself,
//! still learns of that exec from EOF on the pipe.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use std::sync::atomic::{AtomicI32, Ordering};

use libc::{c_char, c_int, pid_t};

use crate::child::{self, Plan, Setup};
use crate::enter::Join;
use crate::errors::{Record, SpawnError, Stage};
use crate::netlink::Eth0;
use crate::network::Lan;
use crate::spec::{Config, Setgroups};
use crate::stack::ChildStack;

/// The command and the process-level settings of a spawn (the namespaces are in [`Config`]).
#[derive(Debug, Default, Clone)]
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
}

impl Command {
    /// Checks what can be checked without forking.
    pub fn validate(&self) -> Result<(), SpawnError> {
        if self.argv.is_empty() {
            return Err(SpawnError::Invalid("args must not be empty".into()));
        }
        if self.exec_paths.is_empty() {
            return Err(SpawnError::Invalid("no path to execute".into()));
        }
        if let Some(&fd) = self.pass_fds.iter().find(|&&fd| fd < 0) {
            return Err(SpawnError::Invalid(format!("pass_fds: {fd} is not a file descriptor")));
        }
        Ok(())
    }
}

pub(crate) fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
}

/// A CLOEXEC pipe whose both ends are at 3 or above, so the child's `dup2` onto 0-2 cannot hit them
/// (they would land below 3 when the caller has closed its standard fds).
fn pipe_above_stdio() -> Result<(OwnedFd, OwnedFd), SpawnError> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| SpawnError::os(Stage::Clone, e as i32).with_what("create a pipe"))?;
    Ok((lift(r)?, lift(w)?))
}

/// Moves an fd to 3 or above (keeping it CLOEXEC).
fn lift(fd: OwnedFd) -> Result<OwnedFd, SpawnError> {
    if fd.as_raw_fd() >= 3 {
        return Ok(fd);
    }
    // SAFETY: F_DUPFD_CLOEXEC returns a new fd we then own.
    let new = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if new < 0 {
        return Err(SpawnError::os(Stage::Stdio, last_errno()).with_what("duplicate a file descriptor"));
    }
    // SAFETY: `new` is a fresh fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// Kills (a zombie ignores it) and reaps a child of ours.
pub(crate) fn kill_and_reap(pid: pid_t) {
    // SAFETY: signalling our own child (or zombie), which has not been reaped.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    reap(pid);
}

pub(crate) fn reap(pid: pid_t) {
    loop {
        // SAFETY: waiting for our own child.
        let r = unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::__WALL) };
        if r >= 0 || last_errno() != libc::EINTR {
            return;
        }
    }
}

#[derive(Clone, Copy)]
pub(crate) enum Read {
    Record(Stage, i32),
    Eof,
    Nothing,
}

pub(crate) fn read_record(fd: RawFd) -> Result<Read, SpawnError> {
    let mut buf = [0u8; Record::SIZE];
    loop {
        // SAFETY: reading into a stack buffer of that size.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            if n == 0 {
                return Ok(Read::Eof);
            }
            // A record is written with one write(2) of 8 bytes, which a pipe delivers whole: anything
            // shorter is corrupt (and waiting for the rest could wait for ever).
            let (stage, errno) = Record::decode(&buf[..n as usize])?;
            return Ok(Read::Record(stage, errno));
        }
        match last_errno() {
            libc::EINTR => {}
            libc::EAGAIN => return Ok(Read::Nothing),
            e => return Err(SpawnError::Internal(format!("cannot read the error pipe: errno {e}"))),
        }
    }
}

fn write_proc(config: &Config, pid: pid_t, file: &str, text: &[u8], stage: Stage) -> Result<(), SpawnError> {
    std::fs::write(format!("/proc/{pid}/{file}"), text)
        .map_err(|e| failure(config, stage, e.raw_os_error().unwrap_or(libc::EIO)))
}

/// Writes the child's id maps from the parent (which must hold `CAP_SETUID`/`CAP_SETGID` for such maps).
pub(crate) fn write_maps_for(pid: pid_t, config: &Config) -> Result<(), SpawnError> {
    let user = config.user.as_ref().expect("only called with a user namespace");
    if user.setgroups == Setgroups::Deny {
        write_proc(config, pid, "setgroups", b"deny", Stage::Setgroups)?;
    }
    write_proc(config, pid, "uid_map", &user.uid_map.to_proc_text(), Stage::UidMap)?;
    write_proc(config, pid, "gid_map", &user.gid_map.to_proc_text(), Stage::GidMap)
}

fn hint(config: &Config, stage: Stage, errno: i32) -> Option<&'static str> {
    let root = nix::unistd::geteuid().is_root();
    match (stage, errno) {
        (Stage::Clone, libc::EPERM) if config.user.is_none() && !root => {
            Some("unprivileged callers need a user namespace: leave user=None or pass user=True")
        }
        (Stage::Clone, libc::EPERM) if config.user.is_some() => Some(
            "unprivileged user namespaces may be disabled: see /proc/sys/user/max_user_namespaces \
             and kernel.apparmor_restrict_unprivileged_userns",
        ),
        (Stage::Clone, libc::ENOSPC) => Some("a limit in /proc/sys/user/max_*_namespaces is reached"),
        (Stage::Clone, libc::EUSERS) => Some("user namespaces are nested too deeply"),
        (Stage::Clone, libc::EINVAL) => Some("the kernel does not support this combination of namespaces"),
        (Stage::UidMap | Stage::GidMap | Stage::Setgroups, libc::EPERM) => Some(
            "without root only your own uid and gid can be mapped, with setgroups='deny'; \
             other maps need CAP_SETUID and CAP_SETGID",
        ),
        (Stage::MountProc, libc::EPERM) if !config.pid => {
            Some("a new proc can only be mounted for a PID namespace this box owns: add pid=True")
        }
        _ => None,
    }
}

pub(crate) fn failure(config: &Config, stage: Stage, errno: i32) -> SpawnError {
    let err = SpawnError::os(stage, errno).with_hint(hint(config, stage, errno));
    if stage != Stage::Clone {
        return err;
    }
    let names = config.namespace_names();
    let what = match names.as_slice() {
        [] => "create the child process".to_owned(),
        [one] => format!("create the {} namespace", long_name(one)),
        many => format!("create the {} namespaces", many.join(", ")),
    };
    err.with_what(what)
}

fn long_name(ns: &str) -> &str {
    match ns {
        "mnt" => "mount",
        "net" => "network",
        "pid" => "PID",
        "uts" => "UTS",
        "ipc" => "IPC",
        other => other,
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
    /// (read, write) when the parent writes the id maps or makes the network while the child waits.
    pub go: Option<(OwnedFd, OwnedFd)>,
    uid_text: CString,
    gid_text: CString,
}

impl Channels {
    pub fn new(config: &Config, network: bool) -> Result<Channels, SpawnError> {
        let user = config.user.as_ref();
        let (err_r, err_w) = pipe_above_stdio()?;
        let go = if config.parent_writes_maps() || network { Some(pipe_above_stdio()?) } else { None };
        let (uid_text, gid_text) = match user {
            Some(u) if u.child_writes_maps => (
                CString::new(u.uid_map.to_proc_text()).expect("digits"),
                CString::new(u.gid_map.to_proc_text()).expect("digits"),
            ),
            _ => (CString::default(), CString::default()),
        };
        Ok(Channels { err_r, err_w, go, uid_text, gid_text })
    }

    /// What the child's namespace steps use; borrows `self`, which must outlive the child's use of it.
    pub fn setup<'a>(&'a self, config: &'a Config, eth0: Option<&'a Eth0>) -> Setup<'a> {
        Setup {
            config,
            err_fd: self.err_w.as_raw_fd(),
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
fn lift_stdio(mut stdio: [RawFd; 3]) -> Result<([RawFd; 3], Vec<OwnedFd>), SpawnError> {
    let mut lifted = Vec::new();
    for (target, src) in (0..).zip(stdio.iter_mut()) {
        if *src >= 0 && *src < 3 && *src != target {
            // SAFETY: F_DUPFD_CLOEXEC makes a new fd that `lifted` owns and closes.
            let new = unsafe { libc::fcntl(*src, libc::F_DUPFD_CLOEXEC, 3) };
            if new < 0 {
                return Err(SpawnError::os(Stage::Stdio, last_errno()));
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

/// Starts `command` in the namespaces of `config`, or in those of `join`, and returns its PID (in the
/// caller's PID namespace). With `link`, the box gets an `eth0` on that network before the command runs;
/// for a private network `join` holds the network's user namespace, and `config` the new namespaces.
///
/// The child's parent-death signal is tied to the calling thread: call this from a thread that lives
/// as long as the process (see [`crate::spawner`]).
pub fn spawn(
    config: &Config,
    command: &Command,
    join: Option<&Join>,
    link: Option<&Link>,
) -> Result<pid_t, SpawnError> {
    command.validate()?;
    let argv = c_array(&command.argv);
    let envp = command.env.as_deref().map(c_array);
    let exec_paths: Vec<*const c_char> = command.exec_paths.iter().map(|p| p.as_ptr()).collect();
    let pass_fds = fds_at_or_above_3(&[&command.pass_fds]);

    let (stdio, _lifted) = lift_stdio(command.stdio)?;

    let channels = Channels::new(config, link.is_some())?;
    let err_w = channels.err_w.as_raw_fd();

    // The helper program runs the command when PID 1 must be an init, or a time namespace is joined.
    let time_fd = join.and_then(|j| j.time.as_ref()).map_or(-1, AsRawFd::as_raw_fd);
    let helper_mode = if config.init {
        Some("init")
    } else if time_fd >= 0 {
        Some("exec")
    } else {
        None
    };
    let helper_fd = if helper_mode.is_some() { crate::helper::fd()? } else { -1 };
    let helper_strings = helper_mode.map(|mode| helper_argv(mode, err_w, time_fd, command));
    let helper_args = helper_strings.as_deref().map(c_array).unwrap_or_default();

    let join_fds: Vec<(c_int, c_int, Stage)> =
        join.map(|j| j.namespaces.iter().map(|(fd, t, s)| (fd.as_raw_fd(), *t, *s)).collect()).unwrap_or_default();
    let inner_pid = AtomicI32::new(0);
    // Namespaces to create after joining some (a box on a private network) are made by the second clone.
    let fork_after_join = join.is_some_and(|j| j.enters_pid_namespace() || config.clone_flags() != 0);
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
        join: &join_fds,
        fork_after_join,
        inner_flags: config.clone_flags(),
        inner_stack: std::ptr::null_mut(),
        inner_pid: &inner_pid,
        root_fd: dir_fds[0],
        cwd_fd: dir_fds[1],
        helper_fd,
        helper_argv: &helper_args,
        helper_fds: [if helper_fd >= 0 { err_w } else { -1 }, time_fd],
    };

    // CLONE_VFORK: this thread sleeps until the child has exec'd or exited. When the parent must write
    // the id maps or make the network, a scoped thread does it meanwhile; CLONE_PARENT_SETTID gives it
    // the child's PID (the second child's comes the same way, see `child::join_then_run`).
    let namespaces = if join.is_some() { 0 } else { config.clone_flags() };
    let mut flags = namespaces | libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD;
    let child_pid = AtomicI32::new(0);
    if channels.go.is_some() {
        flags |= libc::CLONE_PARENT_SETTID;
    }
    let go_w = channels.go.as_ref().map(|(_, w)| w.as_raw_fd());
    let err_r = channels.err_r.as_raw_fd();
    let (pid, maps) = std::thread::scope(|scope| {
        let waiting = if fork_after_join { &inner_pid } else { &child_pid };
        let writer = go_w.map(|go_w| scope.spawn(move || prepare_when_ready(config, link, waiting, err_r, go_w)));
        let pid = ChildStack::with(|stack, inner_stack| {
            plan.inner_stack = inner_stack;
            let arg = std::ptr::from_ref(&plan).cast_mut().cast();
            // SAFETY: the child runs `child::entry` on its own stack and only reads `plan`, which lives
            // until the child has exec'd or exited: CLONE_VFORK returns only then.
            unsafe { libc::clone(child::entry, stack, flags, arg, child_pid.as_ptr()) }
        });
        let maps = writer.map(|writer| {
            // The child is gone (exec'd or exited): wake a writer still waiting for a "ready" that will
            // never come, then collect its result.
            send_end_of_records(&channels.err_w);
            writer.join().unwrap_or_else(|_| Err(SpawnError::Internal("the id map writer panicked".into())))
        });
        (pid, maps)
    });
    let pid = pid?;
    if pid < 0 {
        return Err(failure(config, Stage::Clone, last_errno()));
    }
    // `plan` (plain data the child may still read) and the map texts stay alive until we return.
    drop(channels.err_w);
    drop(channels.go);

    let outcome = if let Some(Err(e)) = maps {
        Err(e)
    } else if config.init {
        // The init has exec'd; it says "running" once the command has, after the command's own failure
        // record if it failed. No need to wait for EOF.
        match next_record(err_r) {
            Ok(Read::Record(Stage::Running, _)) => Ok(()),
            Ok(Read::Eof | Read::Nothing) => {
                Err(SpawnError::Internal("the init process died before the command ran".into()))
            }
            Ok(record @ Read::Record(..)) => outcome_of(config, record),
            Err(e) => Err(e),
        }
    } else if helper_fd >= 0 {
        // The helper has exec'd, the command not yet: EOF says it has (the helper closes its copy).
        next_record(err_r).and_then(|r| outcome_of(config, r))
    } else {
        // SAFETY: setting O_NONBLOCK on our own fd.
        unsafe { libc::fcntl(err_r, libc::F_SETFL, libc::O_NONBLOCK) };
        next_record(err_r).and_then(|r| outcome_of(config, r))
    };
    conclude(outcome, pid, fork_after_join.then(|| inner_pid.load(Ordering::Acquire)))
}

/// The command's PID, or the error after reaping what was started. `inner` is the second child's PID
/// when the first one forked to enter a PID namespace (the first has left by then).
fn conclude(outcome: Result<(), SpawnError>, pid: pid_t, inner: Option<pid_t>) -> Result<pid_t, SpawnError> {
    let Some(inner) = inner else {
        // Killed first: after a corrupt record the child may still be running (an init, say).
        return outcome.map(|()| pid).inspect_err(|_| kill_and_reap(pid));
    };
    reap(pid);
    let outcome = outcome.map_err(|e| match e {
        // The kernel answers ENOMEM when a PID namespace whose PID 1 has exited is asked for a new PID.
        SpawnError::Os { stage: Stage::Clone, errno: libc::ENOMEM, .. } => SpawnError::os(Stage::JoinPid, libc::ESRCH)
            .with_hint(Some("its PID 1 has exited, so nothing can start in it any more")),
        other => other,
    });
    match outcome {
        Ok(()) if inner > 0 => Ok(inner),
        Ok(()) => Err(SpawnError::Internal("the child entering the PID namespace left no PID".into())),
        Err(e) => {
            if inner > 0 {
                kill_and_reap(inner);
            }
            Err(e)
        }
    }
}

/// What a read of the error pipe means once only failures can come: nothing, or a failure with an errno.
fn outcome_of(config: &Config, read: Read) -> Result<(), SpawnError> {
    match read {
        Read::Eof | Read::Nothing => Ok(()),
        // Only failures can come now, and a failure has an errno.
        Read::Record(Stage::Ready | Stage::Forked | Stage::Running, _) | Read::Record(_, ..=0) => {
            Err(SpawnError::Internal("unexpected record on the error pipe".into()))
        }
        Read::Record(stage, errno) => Err(failure(config, stage, errno)),
    }
}

/// The parent's marker after the child's records (see [`send_end_of_records`]); never sent by a child.
const END_OF_RECORDS: Record = Record { stage: Stage::Handshake as u32, errno: 0 };

/// Writes [`END_OF_RECORDS`] on our own copy of the error pipe's write end.
fn send_end_of_records(err_w: &OwnedFd) {
    let rec = END_OF_RECORDS.encode();
    // SAFETY: writing a stack buffer to our own pipe.
    unsafe { libc::write(err_w.as_raw_fd(), rec.as_ptr().cast(), rec.len()) };
}

/// The next record that is not our own end marker.
fn next_record(err_r: RawFd) -> Result<Read, SpawnError> {
    loop {
        match read_record(err_r)? {
            Read::Record(Stage::Handshake, 0) => {}
            other => return Ok(other),
        }
    }
}

/// The parent's side of the handshake, on its own thread while the spawning thread is suspended by
/// `CLONE_VFORK`: wait for "ready", write the maps, connect the network, let the child go on.
fn prepare_when_ready(
    config: &Config,
    link: Option<&Link>,
    child: &AtomicI32,
    err_r: RawFd,
    go_w: RawFd,
) -> Result<(), SpawnError> {
    let ready = match read_record(err_r) {
        Ok(Read::Record(Stage::Ready, _)) => Ok(()),
        Ok(Read::Record(Stage::Handshake, 0) | Read::Eof | Read::Nothing) => {
            Err(SpawnError::Internal("the child died before it was ready".into()))
        }
        Ok(record @ Read::Record(..)) => {
            outcome_of(config, record).and(Err(SpawnError::Internal("unexpected record on the error pipe".into())))
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
        return written.and(Err(SpawnError::Internal("cannot wake the child".into())));
    }
    written
}
