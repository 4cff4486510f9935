//! The pyo3 module `nsbox._nsbox`: the core's types with plain arguments. The friendly API (`run`,
//! `Popen`, argument checking and docs) is Python, in `python/nsbox/`.

mod cgroup;
mod egress;
mod inspect;
mod network;
mod pool;
mod spawn;

use std::ffi::CString;
use std::sync::Arc;

use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;

use crate::errors::{strerror, Error, Hint, Step};
use crate::idmap::IdRange;
use crate::namespace::Namespace;
use crate::spec::{Caller, Options, Spec};

/// The Python exception for an error of the core: the errno's `OSError` subclass, `ValueError` or
/// `RuntimeError`, with the fields a front end with its own words (the CLI) keys on: `step` and `hint`
/// (stable names) on an `OSError`, `option` on a `ValueError`.
#[allow(clippy::needless_pass_by_value)] // taken by value: the `map_err` adapter everywhere
pub(crate) fn to_pyerr(err: Error, program: Option<&Bound<'_, PyAny>>, cwd: Option<&Bound<'_, PyAny>>) -> PyErr {
    Python::attach(|py| {
        let (exc, fields): (PyErr, Vec<(&str, Option<&str>)>) = match &err {
            // Exec and chdir failures read exactly as subprocess's: "[Errno 2] No such file or directory: 'x'".
            Error::Os(f) if f.step == Step::Exec && program.is_some() => (
                PyOSError::new_err((f.errno, strerror(f.errno), program.cloned().map(Bound::unbind))),
                vec![("step", Some(f.step.name())), ("hint", None), ("what", Some(&f.what))],
            ),
            Error::Os(f) if f.step == Step::Chdir && cwd.is_some() => (
                PyOSError::new_err((f.errno, strerror(f.errno), cwd.cloned().map(Bound::unbind))),
                vec![("step", Some(f.step.name())), ("hint", None), ("what", Some(&f.what))],
            ),
            Error::Os(f) => (
                PyOSError::new_err((f.errno, err.to_string())),
                vec![("step", Some(f.step.name())), ("hint", f.hint.map(Hint::name)), ("what", Some(&f.what))],
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

pub(crate) fn cstrings(what: &str, items: Vec<Vec<u8>>) -> PyResult<Vec<CString>> {
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
pub(crate) struct PySpec {
    pub(crate) inner: Arc<Spec>,
    /// The caller's ids it was resolved against.
    caller: Caller,
}

#[pymethods]
impl PySpec {
    #[new]
    fn new(options: Options) -> PyResult<Self> {
        let caller = Caller::current();
        let inner = options.resolve(caller).map_err(|e| to_pyerr(e, None, None))?;
        Ok(PySpec { inner: Arc::new(inner), caller })
    }

    /// Whether the caller's ids are still those it was resolved against: then a kept spec is what a new one
    /// from the same options would be.
    fn resolved_for_caller(&self) -> bool {
        Caller::current() == self.caller
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

#[pymodule]
fn _nsbox(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PySpec>()?;
    m.add_class::<network::PyNetwork>()?;
    m.add_class::<cgroup::PyCgroup>()?;
    m.add_class::<egress::PyEgress>()?;
    m.add_class::<pool::PyPool>()?;
    m.add_class::<pool::PyTaken>()?;
    m.add_function(wrap_pyfunction!(network::ipv4_routes, m)?)?;
    m.add_function(wrap_pyfunction!(spawn::spawn, m)?)?;
    m.add_function(wrap_pyfunction!(spawn::kill_and_reap, m)?)?;
    m.add_function(wrap_pyfunction!(spawn::kill_and_reap_pidfd, m)?)?;
    m.add_function(wrap_pyfunction!(spawn::spawner_threads, m)?)?;
    m.add_function(wrap_pyfunction!(spawn::fork, m)?)?;
    m.add_function(wrap_pyfunction!(inspect::namespaces, m)?)?;
    m.add_function(wrap_pyfunction!(inspect::nspid, m)?)?;
    m.add_function(wrap_pyfunction!(inspect::processes, m)?)?;
    m.add_function(wrap_pyfunction!(inspect::persist, m)?)?;
    m.add_function(wrap_pyfunction!(inspect::release, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("NAMESPACE_KINDS", Namespace::ALL.map(Namespace::proc_name).to_vec())?;
    m.add("STEPS", Step::ALL.iter().map(|s| s.name()).collect::<Vec<_>>())?;
    m.add("HINTS", Hint::ALL.iter().map(|h| h.name()).collect::<Vec<_>>())?;
    Ok(())
}
