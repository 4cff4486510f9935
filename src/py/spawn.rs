//! Starting boxes from Python: `spawn` (a command), `fork` (`nsbox.call`), and the uninterruptible cleanups.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, IntoRawFd};
use std::path::PathBuf;
use std::sync::Arc;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyList;

use super::cgroup::PyCgroup;
use super::egress::PyEgress;
use super::network::{ipv4, PyNetwork};
use super::pool::{PyPool, PyTaken};
use super::{cstrings, to_pyerr, PySpec};
use crate::enter::{Join, Target};
use crate::errors::quoted;
use crate::fork::{Fork, Forked};
use crate::namespace::Namespace;
use crate::net::Network;
use crate::spawn::{threads, Command};

/// A box's place on a network, as Python gives it: `(network, veth, address)`.
#[derive(FromPyObject)]
pub(crate) struct PyLink<'py>(Bound<'py, PyNetwork>, String, String);

impl PyLink<'_> {
    /// The network, and the box's veth name and address.
    fn parts(&self) -> PyResult<(Arc<Network>, String, Ipv4Addr)> {
        Ok((Arc::clone(&self.0.get().inner), self.1.clone(), ipv4(&self.2)?))
    }
}

/// What `target` may be: a PID, a directory of namespace files, or (kind, file) pairs.
#[derive(FromPyObject)]
pub(crate) enum PyTarget {
    Pid(i32),
    Dir(PathBuf),
    Files(Vec<(String, PathBuf)>),
}

impl PyTarget {
    fn into_target(self) -> PyResult<Target> {
        Ok(match self {
            PyTarget::Pid(pid) => Target::Pid(pid),
            PyTarget::Dir(dir) => Target::Dir(dir),
            PyTarget::Files(files) => Target::Files(
                files
                    .into_iter()
                    .map(|(kind, path)| match Namespace::from_proc_name(&kind) {
                        Some(ns) => Ok((ns, path)),
                        None => Err(PyValueError::new_err(format!(
                            "target: {} is not a namespace kind ({})",
                            quoted(&kind),
                            Namespace::ALL.map(Namespace::proc_name).join(", ")
                        ))),
                    })
                    .collect::<PyResult<_>>()?,
            ),
        })
    }
}

/// Starts a process; returns its PID. See `nsbox._nsbox.pyi`.
///
/// On success the PID is also stored on `popen` (`pid`, `_child_created`) before this returns, so that no
/// Python code runs between the spawn and the box being known: an interrupt raised as this returns leaves
/// a `Popen` that [`kill_and_reap`] can clean up.
#[pyfunction]
#[pyo3(signature = (config, exec_paths, argv, env, cwd, stdio, pass_fds, new_session, process_group,
    program=None, cwd_for_errors=None, target=None, link=None,
    umask=None, extra_groups=None, gid=None, uid=None, popen=None, join_cgroup=None, egress=None, pool=None,
    taken=None, pidfd=true))]
#[allow(clippy::too_many_arguments, clippy::needless_pass_by_value)]
pub(crate) fn spawn(
    py: Python<'_>,
    config: &PySpec,
    exec_paths: Vec<Vec<u8>>,
    argv: Vec<Vec<u8>>,
    env: Option<Vec<Vec<u8>>>,
    cwd: Option<Vec<u8>>,
    stdio: (i32, i32, i32),
    pass_fds: Vec<i32>,
    new_session: bool,
    process_group: Option<i32>,
    program: Option<Bound<'_, PyAny>>,
    cwd_for_errors: Option<Bound<'_, PyAny>>,
    target: Option<PyTarget>,
    link: Option<PyLink<'_>>,
    umask: Option<i32>,
    extra_groups: Option<Vec<u32>>,
    gid: Option<u32>,
    uid: Option<u32>,
    popen: Option<Bound<'_, PyAny>>,
    join_cgroup: Option<Bound<'_, PyCgroup>>,
    egress: Option<Bound<'_, PyEgress>>,
    pool: Option<Bound<'_, PyPool>>,
    taken: Option<Bound<'_, PyTaken>>,
    pidfd: bool,
) -> PyResult<i32> {
    let command = Command {
        exec_paths: cstrings("executable", exec_paths)?,
        argv: cstrings("args", argv)?,
        env: env.map(|e| cstrings("env", e)).transpose()?,
        cwd: cwd.map(|c| cstrings("cwd", vec![c])).transpose()?.and_then(|mut v| v.pop()),
        stdio: [stdio.0, stdio.1, stdio.2],
        pass_fds,
        new_session,
        process_group,
        umask: umask.unwrap_or(-1),
        extra_groups,
        gid,
        uid,
        cgroup_procs: Vec::new(),
        cgroup_into: None,
    };
    let config = Arc::clone(&config.inner);
    if config.limits.is_some() && popen.is_none() {
        return Err(PyValueError::new_err("a box with cgroup limits needs popen= to keep its cgroup"));
    }
    // An exec into a box with limits enters the box's cgroup (its files stay open until the spawn is done).
    let joined_cgroup = join_cgroup.map(|c| c.get().open_procs()).transpose().map_err(|e| to_pyerr(e, None, None))?;
    let target = target.map(PyTarget::into_target).transpose()?;
    let network = link.as_ref().map(PyLink::parts).transpose()?;
    let egress = egress.map(|e| Arc::clone(&e.get().inner));
    // A box with a target, a network or egress makes (or joins) its namespaces as without a pool.
    let pool =
        pool.filter(|_| target.is_none() && network.is_none() && egress.is_none()).map(|p| Arc::clone(&p.get().inner));
    // A set wired to the box's network, taken by `Pool.take_wired` (the box is then given no link: it is wired).
    let wired = match taken {
        None => None,
        Some(t) => match t.get().take() {
            Some((own, set, pool)) => Some(((own, set), pool)),
            // Without it the box would have a network namespace and no eth0.
            None => return Err(PyValueError::new_err("this set of the pool was joined by a box already")),
        },
    };
    let (wired, refill) = match wired {
        Some((set, wired_pool)) => (Some(set), Some(wired_pool)),
        None => (None, pool.clone()),
    };
    // The spawn runs on a spawner thread, or here on the main thread (see spawn::threads), without the GIL.
    let job = move || {
        // The box's cgroup, if it has limits: on a failed spawn it is removed as it is dropped.
        let cgroup = config.limits.as_ref().map(crate::cgroup::create).transpose()?;
        let mut command = command;
        if let Some((_, entry)) = &cgroup {
            (command.cgroup_procs, command.cgroup_into) = entry.split();
        } else if let Some(procs) = &joined_cgroup {
            command.cgroup_procs = procs.iter().map(AsRawFd::as_raw_fd).collect();
        }
        let spawned = if let Some((own, set)) = wired {
            // A set wired to the box's network: joined as a target's namespaces are; the box makes the rest.
            crate::spawn::spawn_box(&own, &command, Some(set.join()), None, None)?
        } else if let Some(egress) = egress.as_deref().filter(|e| e.is_leashed()) {
            // allow=: the box joins the leash's namespaces, where the engine already runs.
            let (config, join) = egress.leashed_box(&config)?;
            crate::spawn::spawn_box(&config, &command, Some(&join), None, None)?
        } else if let Some((network, veth, address)) = network {
            let (config, link) = network.link(&config, veth, address)?;
            crate::spawn::spawn_box(&config, &command, None, Some(&link), egress.as_deref())?
        } else if let Some((own, set)) = pool.as_deref().map(|p| p.take(&config)).transpose()?.flatten() {
            // A set from the pool: joined as a target's namespaces are; the box makes the rest.
            crate::spawn::spawn_box(&own, &command, Some(set.join()), None, None)?
        } else {
            let join = target.as_ref().map(Join::open).transpose()?;
            crate::spawn::spawn_box(&config, &command, join.as_ref(), None, egress.as_deref())?
        };
        Ok((spawned, cgroup.map(|(cgroup, _entry)| cgroup)))
    };
    let outcome = py.detach(move || threads::run_box(job).and_then(|r| r));
    if let Some(pool) = refill {
        pool.refill();
    }
    let (spawned, cgroup) = outcome.map_err(|e| to_pyerr(e, program.as_ref(), cwd_for_errors.as_ref()))?;
    let pid = spawned.pid;
    // tty=True: the master, recorded as `_pty_fd` (closed here when there is no Popen to keep it).
    let pty = spawned.pty.map(IntoRawFd::into_raw_fd);
    if let Some(popen) = popen {
        let cgroup = cgroup.map(PyCgroup::new);
        // The pidfd is opened while the box is our unreaped child, so it cannot name another process; at 3 or
        // above and CLOEXEC. `None` only if someone else reaped it already (it exited at once).
        let pidfd = if pidfd { crate::sys::pidfd_open(pid).ok().map(IntoRawFd::into_raw_fd) } else { None };
        let recorded = popen
            .setattr("_cgroup", cgroup)
            .and_then(|()| popen.setattr("pid", pid))
            .and_then(|()| popen.setattr("_child_created", true))
            .and_then(|()| popen.setattr("_pidfd", pidfd))
            .and_then(|()| popen.setattr("_pty_fd", pty));
        if let Err(err) = recorded {
            crate::sys::kill_and_reap(pid);
            for fd in [pidfd, pty].into_iter().flatten() {
                // SAFETY: ours: recording them was the last step, and it failed.
                unsafe { libc::close(fd) };
            }
            super::cgroup::finish_of(py, &popen);
            return Err(err);
        }
    } else if let Some(fd) = pty {
        // SAFETY: ours, and nobody asked to keep it.
        unsafe { libc::close(fd) };
    }
    Ok(pid)
}

/// Kills and reaps a `Popen`'s process, if it started and has not been reaped, and sets its
/// `returncode` (as `subprocess` would: `-9`; 0 when someone else reaped it). One call, which Python
/// signal handlers cannot interrupt: the cleanup path of an interrupted spawn or wait.
/// Then its cgroup, if it has one, is emptied and removed.
#[pyfunction]
pub(crate) fn kill_and_reap(py: Python<'_>, popen: &Bound<'_, PyAny>) -> PyResult<()> {
    let outcome = kill_and_reap_process(py, popen);
    super::cgroup::finish_of(py, popen);
    outcome
}

fn kill_and_reap_process(py: Python<'_>, popen: &Bound<'_, PyAny>) -> PyResult<()> {
    // A Popen interrupted early in __init__ may lack these attributes: then nothing was started.
    let started = popen.getattr("_child_created").and_then(|c| c.is_truthy()).unwrap_or(false);
    let reaped = popen.getattr("returncode").is_ok_and(|r| !r.is_none());
    if !started || reaped {
        return Ok(());
    }
    let pid: i32 = popen.getattr("pid")?.extract()?;
    // Only while it is our unreaped child can the PID not name another process (SIGCHLD ignored).
    if !crate::sys::unreaped_child(pid) {
        return popen.setattr("returncode", 0);
    }
    let status = py.detach(|| {
        // SAFETY: signalling and waiting for our own child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let mut status = 0;
        loop {
            // SAFETY: as above.
            let r = unsafe { libc::waitpid(pid, &raw mut status, 0) };
            if r >= 0 {
                return Some(status);
            }
            if crate::sys::last_errno() != libc::EINTR {
                return None; // ECHILD: reaped by someone else (SIGCHLD ignored, or a handler)
            }
        }
    });
    let code = match status {
        Some(s) if libc::WIFSIGNALED(s) => -libc::WTERMSIG(s),
        Some(s) if libc::WIFEXITED(s) => libc::WEXITSTATUS(s),
        _ => 0,
    };
    popen.setattr("returncode", code)
}

/// Kills (`pidfd_send_signal`) and reaps (`waitid(P_PIDFD)`) the process behind a pidfd of a child of
/// ours; nothing if it was reaped already. One call that Python signal handlers cannot interrupt.
#[pyfunction]
pub(crate) fn kill_and_reap_pidfd(py: Python<'_>, pidfd: i32) {
    if pidfd < 0 {
        return; // exited and reaped before it could be watched
    }
    py.detach(|| crate::sys::kill_and_reap_pidfd(pidfd));
}

/// Forks this interpreter into the namespaces of `config`. In the parent, appends (PID, pidfd) of the
/// process that runs `child` to `started`; in that process, calls `child()` and exits. See `_nsbox.pyi`.
#[allow(clippy::needless_pass_by_value)] // pyo3 extracts arguments by value
#[pyfunction]
#[pyo3(signature = (config, child, started, link=None, pool=None, taken=None))]
pub(crate) fn fork(
    py: Python<'_>,
    config: &PySpec,
    child: &Bound<'_, PyAny>,
    started: &Bound<'_, PyList>,
    link: Option<PyLink<'_>>,
    pool: Option<Bound<'_, PyPool>>,
    taken: Option<Bound<'_, PyTaken>>,
) -> PyResult<()> {
    let network = link.as_ref().map(PyLink::parts).transpose()?;
    // A set from the pool (not for a box on a network): joined first; the box makes the rest. Or a set wired to
    // the box's network (`Pool.take_wired`; then no link).
    let mut pool = pool.filter(|_| network.is_none()).map(|p| Arc::clone(&p.get().inner));
    let taken = match (taken, &pool) {
        (Some(t), _) => match t.get().take() {
            Some((own, set, wired_pool)) => {
                pool = Some(wired_pool);
                Some((own, set))
            }
            None => return Err(PyValueError::new_err("this set of the pool was joined by a box already")),
        },
        (None, Some(pool)) => pool.take(&config.inner).map_err(|e| to_pyerr(e, None, None))?,
        (None, None) => None,
    };
    let (own, set) = taken.map_or((None, None), |(own, set)| (Some(Arc::new(own)), Some(set)));
    let (config, link) = match &network {
        Some((network, veth, address)) => {
            let (config, link) =
                network.link(&config.inner, veth.clone(), *address).map_err(|e| to_pyerr(e, None, None))?;
            (Arc::new(config), Some(link))
        }
        None => (own.unwrap_or_else(|| Arc::clone(&config.inner)), None),
    };
    // The box's cgroup, if it has limits: on a failure it is removed as it is dropped.
    let cgroup = config.limits.as_ref().map(crate::cgroup::create).transpose().map_err(|e| to_pyerr(e, None, None))?;
    let procs = cgroup.as_ref().map(|(_, entry)| entry.fds()).unwrap_or_default();
    let fork = Fork::new(&config, link).map_err(|e| to_pyerr(e, None, None))?.into_cgroup(procs).joining(set);
    // CPython's fork protocol, as os.fork() follows it; we hold the GIL, as the hooks require.
    // SAFETY: called with the GIL held, before a fork.
    unsafe { pyo3::ffi::PyOS_BeforeFork() };
    // SAFETY: between CPython's hooks, as `Fork::fork` requires; the child runs no code of the caller's
    // (it exits below).
    let forked = unsafe { fork.fork() };
    if matches!(forked, Ok(Forked::Child)) {
        // SAFETY: in the child, right after the fork.
        unsafe { pyo3::ffi::PyOS_AfterFork_Child() };
    } else {
        // SAFETY: in the parent, after the fork (or its failure), as PyOS_BeforeFork requires.
        unsafe { pyo3::ffi::PyOS_AfterFork_Parent() };
    }
    match forked.map_err(|e| to_pyerr(e, None, None))? {
        Forked::Parent(fork, first) => {
            let finished = py.detach(move || fork.finish(first));
            if let Some(pool) = &pool {
                pool.refill();
            }
            let box_ = finished.map_err(|e| to_pyerr(e, None, None))?;
            // A list rather than a return value: the caller learns the PID even if an interrupt that came
            // meanwhile is raised as we return, and can kill and reap the box.
            let pidfd = box_.pidfd.as_ref().map_or(-1, AsRawFd::as_raw_fd);
            let cgroup = cgroup.map(|(cgroup, _entry)| PyCgroup::new(cgroup));
            if let Err(err) = started.append((box_.pid, pidfd, cgroup)) {
                crate::sys::kill_and_reap(box_.pid);
                return Err(err);
            }
            let _ = box_.pidfd.map(IntoRawFd::into_raw_fd); // the caller closes it
            Ok(())
        }
        Forked::Child => {
            // The parent's to remove, not ours: dropping it here would kill this very process.
            std::mem::forget(cgroup);
            // `child` ends with os._exit(); an exception escaping it (an interrupt before its first line)
            // is shown, and the process still ends here: never in the caller's code, never through the
            // interpreter's exit (atexit, flushing the caller's buffers).
            let code = match child.call0() {
                Ok(_) => 0,
                Err(err) => {
                    err.display(py);
                    70
                }
            };
            // SAFETY: _exit(2) ends the process at once.
            unsafe { libc::_exit(code) }
        }
    }
}

/// The number of idle spawner threads of this process.
#[pyfunction]
pub(crate) fn spawner_threads() -> usize {
    threads::idle_threads()
}
