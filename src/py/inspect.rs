//! Looking at boxes from Python: namespace ids, `NSpid`, process lists, persisted namespaces.

use std::path::PathBuf;

use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;

use super::to_pyerr;
use crate::errors::strerror;

pub(crate) fn io_err(err: &std::io::Error, what: &str) -> PyErr {
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
pub(crate) fn namespaces(pid: Option<i32>) -> PyResult<Vec<(&'static str, u64)>> {
    crate::procfs::namespaces(pid).map_err(|e| {
        let who = pid.map_or_else(|| "this process".to_owned(), |p| format!("process {p}"));
        io_err(&e, &format!("cannot read the namespaces of {who}"))
    })
}

/// `NSpid` of a process: its PID in each PID namespace from the caller's down to its own.
#[pyfunction]
pub(crate) fn nspid(pid: i32) -> PyResult<Vec<i32>> {
    crate::procfs::status(pid).map(|s| s.nspid).map_err(|e| io_err(&e, &format!("cannot read process {pid}")))
}

/// `(host_pid, host_ppid, pid, ppid, command)`, as `nsbox.ProcessInfo` takes it.
type ProcessRow = (i32, i32, i32, i32, String);

/// `(host_pid, host_ppid, pid, ppid, command)` of every process in the PID namespace of `pid`.
#[pyfunction]
pub(crate) fn processes(pid: i32) -> PyResult<Vec<ProcessRow>> {
    let list =
        crate::procfs::processes(pid).map_err(|e| io_err(&e, &format!("cannot list the box of process {pid}")))?;
    Ok(list.into_iter().map(|p| (p.host_pid, p.host_ppid, p.pid, p.ppid, p.command)).collect())
}

/// Bind-mounts the namespaces of `pid` that differ from ours onto files in `dir`; returns their kinds.
#[pyfunction]
#[allow(clippy::needless_pass_by_value)]
pub(crate) fn persist(pid: i32, dir: PathBuf) -> PyResult<Vec<&'static str>> {
    crate::persist::persist(pid, &dir).map_err(|e| to_pyerr(e, None, None))
}

/// Undoes `persist`: unmounts and removes the namespace files in `dir`; returns their kinds.
#[pyfunction]
#[allow(clippy::needless_pass_by_value)]
pub(crate) fn release(dir: PathBuf) -> PyResult<Vec<&'static str>> {
    crate::persist::release(&dir).map_err(|e| to_pyerr(e, None, None))
}
