//! The pyo3 module `nsbox._nsbox`: the core's types with plain arguments. The friendly API (`run`,
//! `Popen`, argument checking and docs) is Python, in `python/nsbox/`.

use std::ffi::CString;
use std::sync::Arc;

use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;

use crate::errors::{strerror, SpawnError, Stage};
use crate::idmap::{IdMap, IdRange};
use crate::spawn::Command;
use crate::spec::{Caller, Options};

fn to_pyerr(err: SpawnError, program: Option<&Bound<'_, PyAny>>, cwd: Option<&Bound<'_, PyAny>>) -> PyErr {
    match err {
        // Exec and chdir failures read exactly as subprocess's: "[Errno 2] No such file or directory: 'x'".
        SpawnError::Os {
            stage: Stage::Exec,
            errno,
            ..
        } if program.is_some() => PyOSError::new_err((errno, strerror(errno), program.cloned().map(Bound::unbind))),
        SpawnError::Os {
            stage: Stage::Chdir,
            errno,
            ..
        } if cwd.is_some() => PyOSError::new_err((errno, strerror(errno), cwd.cloned().map(Bound::unbind))),
        SpawnError::Os { errno, .. } => PyOSError::new_err((errno, err.to_string())),
        SpawnError::Invalid(msg) => PyValueError::new_err(msg),
        SpawnError::Internal(msg) => PyRuntimeError::new_err(format!("nsbox internal error: {msg}")),
    }
}

fn id_map(what: &str, ranges: Option<Vec<(u32, u32, u32)>>) -> PyResult<Option<IdMap>> {
    ranges
        .map(|r| {
            let ranges = r
                .into_iter()
                .map(|(inside, outside, count)| IdRange { inside, outside, count })
                .collect();
            IdMap::new(what, ranges).map_err(|e| to_pyerr(e, None, None))
        })
        .transpose()
}

fn cstrings(what: &str, items: Vec<Vec<u8>>) -> PyResult<Vec<CString>> {
    items
        .into_iter()
        .map(|b| CString::new(b).map_err(|_| PyValueError::new_err(format!("{what}: embedded null byte"))))
        .collect()
}

/// Checked namespace options, resolved against the caller's ids when made.
#[pyclass(frozen, module = "nsbox._nsbox")]
pub struct Config {
    inner: Arc<crate::spec::Config>,
}

#[pymethods]
impl Config {
    #[new]
    #[pyo3(signature = (*, pid=false, mount=false, uts=false, ipc=false, net=false, user=None, cgroup=false,
        time=false, mount_proc=false, propagation=None, hostname=None, uid_map=None, gid_map=None,
        setgroups=None, monotonic_offset=None, boottime_offset=None))]
    #[allow(clippy::too_many_arguments, clippy::fn_params_excessive_bools)]
    fn new(
        pid: bool,
        mount: bool,
        uts: bool,
        ipc: bool,
        net: bool,
        user: Option<bool>,
        cgroup: bool,
        time: bool,
        mount_proc: bool,
        propagation: Option<String>,
        hostname: Option<Vec<u8>>,
        uid_map: Option<Vec<(u32, u32, u32)>>,
        gid_map: Option<Vec<(u32, u32, u32)>>,
        setgroups: Option<String>,
        monotonic_offset: Option<f64>,
        boottime_offset: Option<f64>,
    ) -> PyResult<Self> {
        let options = Options {
            pid,
            mount,
            uts,
            ipc,
            net,
            user,
            cgroup,
            time,
            mount_proc,
            propagation,
            hostname,
            uid_map: id_map("uid_map", uid_map)?,
            gid_map: id_map("gid_map", gid_map)?,
            setgroups,
            monotonic_offset,
            boottime_offset,
        };
        let inner = options
            .resolve(Caller::current())
            .map_err(|e| to_pyerr(e, None, None))?;
        Ok(Config { inner: Arc::new(inner) })
    }

    /// The namespaces a spawn creates, by their `/proc/PID/ns` names.
    #[getter]
    fn namespaces(&self) -> Vec<&'static str> {
        self.inner.namespace_names()
    }

    fn __repr__(&self) -> String {
        format!("Config(namespaces={:?})", self.inner.namespace_names())
    }
}

/// Starts a process; returns its PID. See `nsbox._nsbox.pyi`.
#[pyfunction]
#[pyo3(signature = (config, exec_paths, argv, env, cwd, stdio, pass_fds, new_session, process_group,
    program=None, cwd_for_errors=None))]
#[allow(clippy::too_many_arguments, clippy::needless_pass_by_value)]
fn spawn(
    py: Python<'_>,
    config: &Config,
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
) -> PyResult<i32> {
    let command = Command {
        exec_paths: cstrings("executable", exec_paths)?,
        argv: cstrings("args", argv)?,
        env: env.map(|e| cstrings("env", e)).transpose()?,
        cwd: cwd
            .map(|c| cstrings("cwd", vec![c]))
            .transpose()?
            .and_then(|mut v| v.pop()),
        stdio: [stdio.0, stdio.1, stdio.2],
        pass_fds,
        new_session,
        process_group,
    };
    command.validate().map_err(|e| to_pyerr(e, None, None))?;
    let config = Arc::clone(&config.inner);
    // The spawn itself runs on a long-lived spawner thread; this thread waits without the GIL.
    let result = py.detach(move || crate::spawner::run(move || crate::spawn::spawn(&config, &command)).and_then(|r| r));
    result.map_err(|e| to_pyerr(e, program.as_ref(), cwd_for_errors.as_ref()))
}

#[pymodule]
fn _nsbox(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Config>()?;
    m.add_function(wrap_pyfunction!(spawn, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
