//! The pyo3 module `nsbox._nsbox`: the core's types with plain arguments. The friendly API (`run`,
//! `Popen`, argument checking and docs) is Python, in `python/nsbox/`.

use std::ffi::CString;
use std::os::fd::{AsRawFd, IntoRawFd};
use std::path::PathBuf;
use std::sync::Arc;

use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyList;

use crate::enter::{Join, Joined, Target};
use crate::errors::{quoted, strerror, Error, Hint, Step};
use crate::idmap::IdRange;
use crate::namespace::Namespace;
use crate::netlink::Eth0;
use crate::spawn::{Command, Link};
use crate::spec::{Caller, Options, Spec};

/// The Python exception for an error of the core: the errno's `OSError` subclass, `ValueError` or
/// `RuntimeError`, with the fields a front end with its own words (the CLI) keys on: `step` and `hint`
/// (stable names) on an `OSError`, `option` on a `ValueError`.
#[allow(clippy::needless_pass_by_value)] // taken by value: the `map_err` adapter everywhere
fn to_pyerr(err: Error, program: Option<&Bound<'_, PyAny>>, cwd: Option<&Bound<'_, PyAny>>) -> PyErr {
    Python::attach(|py| {
        let (exc, fields): (PyErr, Vec<(&str, Option<&str>)>) = match &err {
            // Exec and chdir failures read exactly as subprocess's: "[Errno 2] No such file or directory: 'x'".
            Error::Os(f) if f.step == Step::Exec && program.is_some() => (
                PyOSError::new_err((f.errno, strerror(f.errno), program.cloned().map(Bound::unbind))),
                vec![("step", Some(f.step.name())), ("hint", None)],
            ),
            Error::Os(f) if f.step == Step::Chdir && cwd.is_some() => (
                PyOSError::new_err((f.errno, strerror(f.errno), cwd.cloned().map(Bound::unbind))),
                vec![("step", Some(f.step.name())), ("hint", None)],
            ),
            Error::Os(f) => (
                PyOSError::new_err((f.errno, err.to_string())),
                vec![("step", Some(f.step.name())), ("hint", f.hint.map(Hint::name))],
            ),
            Error::Invalid(invalid) => {
                (PyValueError::new_err(invalid.message.clone()), vec![("option", invalid.option)])
            }
            Error::Internal(msg) => (PyRuntimeError::new_err(format!("nsbox internal error: {msg}")), vec![]),
        };
        let value = exc.value(py);
        for (name, field) in fields {
            // Plain attributes on a new exception object: this cannot fail but for memory.
            let _ = value.setattr(name, field);
        }
        exc
    })
}

fn cstrings(what: &str, items: Vec<Vec<u8>>) -> PyResult<Vec<CString>> {
    items
        .into_iter()
        .map(|b| CString::new(b).map_err(|_| PyValueError::new_err(format!("{what}: embedded null byte"))))
        .collect()
}

/// An id map's `(inside, outside, count)` as Python gives it.
impl<'a, 'py> FromPyObject<'a, 'py> for IdRange {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        let (inside, outside, count) = obj.extract::<(u32, u32, u32)>()?;
        Ok(IdRange { inside, outside, count })
    }
}

/// Checked options (the dict `nsbox._options` makes, with every name of [`Options`]), resolved against the
/// caller's ids when made.
#[pyclass(frozen, name = "Spec", module = "nsbox._nsbox")]
pub struct PySpec {
    inner: Arc<Spec>,
}

#[pymethods]
impl PySpec {
    #[new]
    fn new(options: Options) -> PyResult<Self> {
        let inner = options.resolve(Caller::current()).map_err(|e| to_pyerr(e, None, None))?;
        Ok(PySpec { inner: Arc::new(inner) })
    }

    /// The namespaces a spawn creates, by their `/proc/PID/ns` names.
    #[getter]
    fn namespaces(&self) -> Vec<&'static str> {
        self.inner.namespaces().proc_names()
    }

    fn __repr__(&self) -> String {
        format!("Spec(namespaces={:?})", self.inner.namespaces().proc_names())
    }
}

/// What `target` may be: a PID, a directory of namespace files, or (kind, file) pairs.
#[derive(FromPyObject)]
enum PyTarget {
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
    program=None, cwd_for_errors=None, target=None, lan=None, veth=None, address=None,
    umask=None, extra_groups=None, gid=None, uid=None, popen=None))]
#[allow(clippy::too_many_arguments, clippy::needless_pass_by_value)]
fn spawn(
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
    lan: Option<&Lan>,
    veth: Option<String>,
    address: Option<String>,
    umask: Option<i32>,
    extra_groups: Option<Vec<u32>>,
    gid: Option<u32>,
    uid: Option<u32>,
    popen: Option<Bound<'_, PyAny>>,
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
    };
    command.validate().map_err(|e| to_pyerr(e, None, None))?;
    let config = Arc::clone(&config.inner);
    // The spawn itself runs on a long-lived spawner thread; this thread waits without the GIL.
    let target = target.map(PyTarget::into_target).transpose()?;
    let network = match (lan, veth, address) {
        (Some(lan), Some(veth), Some(address)) => Some((Arc::clone(&lan.inner), veth, ipv4(&address)?)),
        (None, None, None) => None,
        _ => return Err(PyValueError::new_err("lan, veth and address go together")),
    };
    let job = move || {
        let Some((lan, host_name, address)) = network else {
            let join = target.as_ref().map(Join::open).transpose()?;
            return crate::spawn::spawn(&config, &command, join.as_ref(), None);
        };
        let (config, userns) = lan.join(&config)?;
        let join = userns.map(|fd| Join { namespaces: vec![Joined { fd, kind: Namespace::User }], ..Join::default() });
        let link = Link { lan: &lan, host_name, eth0: Eth0::new(address, lan.prefix(), lan.gateway()) };
        crate::spawn::spawn(&config, &command, join.as_ref(), Some(&link))
    };
    let pid = py
        .detach(move || crate::spawner::run(job).and_then(|r| r))
        .map_err(|e| to_pyerr(e, program.as_ref(), cwd_for_errors.as_ref()))?;
    if let Some(popen) = popen {
        let recorded = popen.setattr("pid", pid).and_then(|()| popen.setattr("_child_created", true));
        if let Err(err) = recorded {
            crate::sys::kill_and_reap(pid);
            return Err(err);
        }
    }
    Ok(pid)
}

/// Kills and reaps a `Popen`'s process, if it started and has not been reaped, and sets its
/// `returncode` (as `subprocess` would: `-9`; 0 when someone else reaped it). One call, which Python
/// signal handlers cannot interrupt: the cleanup path of an interrupted spawn or wait.
#[pyfunction]
fn kill_and_reap(py: Python<'_>, popen: &Bound<'_, PyAny>) -> PyResult<()> {
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
fn kill_and_reap_pidfd(py: Python<'_>, pidfd: i32) {
    if pidfd < 0 {
        return; // exited and reaped before it could be watched
    }
    py.detach(|| {
        // SAFETY: signalling and waiting through a pidfd the caller owns.
        unsafe {
            libc::syscall(libc::SYS_pidfd_send_signal, pidfd, libc::SIGKILL, std::ptr::null::<libc::siginfo_t>(), 0);
            let mut info: libc::siginfo_t = std::mem::zeroed();
            while libc::waitid(libc::P_PIDFD, pidfd as libc::id_t, &raw mut info, libc::WEXITED) < 0
                && crate::sys::last_errno() == libc::EINTR
            {}
        }
    });
}

/// A bridge that boxes join: see `nsbox.Network`, which chooses the names and addresses.
#[pyclass(frozen, module = "nsbox._nsbox")]
pub struct Lan {
    inner: Arc<crate::network::Lan>,
}

#[pymethods]
impl Lan {
    #[new]
    #[allow(clippy::needless_pass_by_value)]
    fn new(py: Python<'_>, bridge: String, gateway: &str, prefix: u8, private: bool) -> PyResult<Self> {
        let gateway = ipv4(gateway)?;
        let made = py.detach(|| {
            if private {
                crate::network::Lan::private(&bridge, gateway, prefix)
            } else {
                crate::network::Lan::host(&bridge, gateway, prefix)
            }
        });
        Ok(Lan { inner: Arc::new(made.map_err(|e| to_pyerr(e, None, None))?) })
    }

    #[getter]
    fn bridge(&self) -> &str {
        self.inner.bridge_name()
    }

    #[getter]
    fn private(&self) -> bool {
        self.inner.is_private()
    }

    /// Whether this process is a `fork()`ed copy of the one that made the network.
    #[getter]
    fn forked_copy(&self) -> bool {
        self.inner.is_forked_copy()
    }

    /// Deletes a box's veth pair (nothing if it is gone already).
    fn detach(&self, py: Python<'_>, veth: &str) -> PyResult<()> {
        py.detach(|| self.inner.detach(veth)).map_err(|e| to_pyerr(e, None, None))
    }

    /// Whether the interface exists in the bridge's network namespace.
    fn has_link(&self, py: Python<'_>, name: &str) -> PyResult<bool> {
        py.detach(|| self.inner.has_link(name)).map_err(|e| to_pyerr(e, None, None))
    }

    /// The interfaces in the bridge's network namespace.
    fn link_names(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        py.detach(|| self.inner.link_names()).map_err(|e| to_pyerr(e, None, None))
    }

    /// An fd of the network's user or network namespace (private networks only), for the caller to close.
    fn namespace_fd(&self, kind: &str) -> PyResult<Option<i32>> {
        let fd = self.inner.namespace_fd(kind).map_err(|e| to_pyerr(e, None, None))?;
        Ok(fd.map(IntoRawFd::into_raw_fd))
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.inner.close()).map_err(|e| to_pyerr(e, None, None))
    }
}

/// The IPv4 routes of the main table of this network namespace, as (destination, prefix length).
#[pyfunction]
fn ipv4_routes(py: Python<'_>) -> PyResult<Vec<(String, u8)>> {
    let routes = py
        .detach(|| crate::netlink::Netlink::open().and_then(|mut nl| nl.ipv4_routes()))
        .map_err(|e| io_err(&e, "cannot read the routing table"))?;
    Ok(routes.into_iter().map(|(dst, prefix)| (dst.to_string(), prefix)).collect())
}

fn ipv4(text: &str) -> PyResult<std::net::Ipv4Addr> {
    text.parse().map_err(|_| PyValueError::new_err(format!("{text:?} is not an IPv4 address")))
}

/// Forks this interpreter into the namespaces of `config`. In the parent, appends (PID, pidfd, PID to reap
/// after it or 0) of the process that runs `child` to `started`; in that process, calls `child()` and
/// exits. See `_nsbox.pyi`.
#[pyfunction]
#[pyo3(signature = (config, child, started, lan=None, veth=None, address=None))]
fn fork(
    py: Python<'_>,
    config: &PySpec,
    child: &Bound<'_, PyAny>,
    started: &Bound<'_, PyList>,
    lan: Option<&Lan>,
    veth: Option<String>,
    address: Option<String>,
) -> PyResult<()> {
    use crate::fork::{Fork, ForkLink, Forked};

    let (config, link) = match (lan, veth, address) {
        (Some(lan), Some(host_name), Some(address)) => {
            let (config, userns) = lan.inner.join(&config.inner).map_err(|e| to_pyerr(e, None, None))?;
            let eth0 = Eth0::new(ipv4(&address)?, lan.inner.prefix(), lan.inner.gateway());
            (Arc::new(config), Some(ForkLink { lan: &lan.inner, host_name, eth0, userns }))
        }
        (None, None, None) => (Arc::clone(&config.inner), None),
        _ => return Err(PyValueError::new_err("lan, veth and address go together")),
    };
    let fork = Fork::new(&config, link).map_err(|e| to_pyerr(e, None, None))?;
    // CPython's fork protocol, as os.fork() follows it; we hold the GIL, as the hooks require.
    // SAFETY: the hooks around the fork; the child runs no code of the caller's (it exits below).
    let forked = unsafe {
        pyo3::ffi::PyOS_BeforeFork();
        let forked = fork.fork();
        if matches!(forked, Ok(Forked::Child)) {
            pyo3::ffi::PyOS_AfterFork_Child();
        } else {
            pyo3::ffi::PyOS_AfterFork_Parent();
        }
        forked
    };
    match forked.map_err(|e| to_pyerr(e, None, None))? {
        Forked::Parent(fork, first) => {
            let box_ = py.detach(move || fork.finish(first)).map_err(|e| to_pyerr(e, None, None))?;
            // A list rather than a return value: the caller learns the PID even if an interrupt that came
            // meanwhile is raised as we return, and can kill and reap the box.
            let pidfd = box_.pidfd.as_ref().map_or(-1, AsRawFd::as_raw_fd);
            if let Err(err) = started.append((box_.pid, pidfd)) {
                crate::sys::kill_and_reap(box_.pid);
                return Err(err);
            }
            let _ = box_.pidfd.map(IntoRawFd::into_raw_fd); // the caller closes it
            Ok(())
        }
        Forked::Child => {
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

fn io_err(err: &std::io::Error, what: &str) -> PyErr {
    // A process that is gone has no /proc/PID: say so as the kernel would (ProcessLookupError).
    let errno = match err.raw_os_error().unwrap_or(libc::EIO) {
        libc::ENOENT => libc::ESRCH,
        e => e,
    };
    PyOSError::new_err((errno, format!("{what}: {}", strerror(errno))))
}

/// Namespace kind → inode of `/proc/PID/ns/*` (of this process when `pid` is None).
#[pyfunction]
#[pyo3(signature = (pid=None))]
fn namespaces(pid: Option<i32>) -> PyResult<Vec<(&'static str, u64)>> {
    crate::procfs::namespaces(pid).map_err(|e| {
        let who = pid.map_or_else(|| "this process".to_owned(), |p| format!("process {p}"));
        io_err(&e, &format!("cannot read the namespaces of {who}"))
    })
}

/// `NSpid` of a process: its PID in each PID namespace from the caller's down to its own.
#[pyfunction]
fn nspid(pid: i32) -> PyResult<Vec<i32>> {
    crate::procfs::status(pid).map(|s| s.nspid).map_err(|e| io_err(&e, &format!("cannot read process {pid}")))
}

/// `(host_pid, host_ppid, pid, ppid, command)`, as `nsbox.ProcessInfo` takes it.
type ProcessRow = (i32, i32, i32, i32, String);

/// `(host_pid, host_ppid, pid, ppid, command)` of every process in the PID namespace of `pid`.
#[pyfunction]
fn processes(pid: i32) -> PyResult<Vec<ProcessRow>> {
    let list =
        crate::procfs::processes(pid).map_err(|e| io_err(&e, &format!("cannot list the box of process {pid}")))?;
    Ok(list.into_iter().map(|p| (p.host_pid, p.host_ppid, p.pid, p.ppid, p.command)).collect())
}

/// Bind-mounts the namespaces of `pid` that differ from ours onto files in `dir`; returns their kinds.
#[pyfunction]
#[allow(clippy::needless_pass_by_value)]
fn persist(pid: i32, dir: PathBuf) -> PyResult<Vec<&'static str>> {
    crate::persist::persist(pid, &dir).map_err(|e| to_pyerr(e, None, None))
}

/// Undoes `persist`: unmounts and removes the namespace files in `dir`; returns their kinds.
#[pyfunction]
#[allow(clippy::needless_pass_by_value)]
fn release(dir: PathBuf) -> PyResult<Vec<&'static str>> {
    crate::persist::release(&dir).map_err(|e| to_pyerr(e, None, None))
}

/// The number of idle spawner threads of this process.
#[pyfunction]
fn spawner_threads() -> usize {
    crate::spawner::idle_threads()
}

#[pymodule]
fn _nsbox(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PySpec>()?;
    m.add_class::<Lan>()?;
    m.add_function(wrap_pyfunction!(ipv4_routes, m)?)?;
    m.add_function(wrap_pyfunction!(spawn, m)?)?;
    m.add_function(wrap_pyfunction!(kill_and_reap, m)?)?;
    m.add_function(wrap_pyfunction!(kill_and_reap_pidfd, m)?)?;
    m.add_function(wrap_pyfunction!(spawner_threads, m)?)?;
    m.add_function(wrap_pyfunction!(fork, m)?)?;
    m.add_function(wrap_pyfunction!(namespaces, m)?)?;
    m.add_function(wrap_pyfunction!(nspid, m)?)?;
    m.add_function(wrap_pyfunction!(processes, m)?)?;
    m.add_function(wrap_pyfunction!(persist, m)?)?;
    m.add_function(wrap_pyfunction!(release, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("NAMESPACE_KINDS", Namespace::ALL.map(Namespace::proc_name).to_vec())?;
    Ok(())
}
