//! A box's cgroup as Python holds it: on the `Popen` (`_cgroup`) or beside `nsbox.call`'s box.

use std::sync::{Mutex, MutexGuard, PoisonError};

use pyo3::prelude::*;

use crate::cgroup::BoxCgroup;

/// A box's cgroup: read its figures, and remove it once the box is reaped. See `_nsbox.pyi`.
#[pyclass(frozen, name = "Cgroup", module = "nsbox._nsbox")]
pub(crate) struct PyCgroup {
    inner: Mutex<BoxCgroup>,
}

impl PyCgroup {
    pub(crate) fn new(cgroup: BoxCgroup) -> PyCgroup {
        PyCgroup { inner: Mutex::new(cgroup) }
    }

    /// Its `cgroup.procs` files, open, for an exec into the box to enter.
    pub(crate) fn open_procs(&self) -> Result<Vec<std::os::fd::OwnedFd>, crate::errors::Error> {
        self.lock().open_procs()
    }

    fn lock(&self) -> MutexGuard<'_, BoxCgroup> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[pymethods]
impl PyCgroup {
    /// Kills what is left in the cgroup, keeps its final figures, and removes it; later calls do nothing.
    fn finish(&self, py: Python<'_>) {
        py.detach(|| self.lock().finish());
    }

    /// `(memory_peak, cpu_time, processes, oom_kills)`: now, or as they were when it was finished.
    fn usage(&self, py: Python<'_>) -> (Option<u64>, Option<f64>, Option<u64>, Option<u64>) {
        let usage = py.detach(|| self.lock().usage());
        (usage.memory_peak, usage.cpu_time, usage.processes, usage.oom_kills)
    }

    /// The cgroup's directories, one per hierarchy.
    #[getter]
    fn paths(&self) -> Vec<String> {
        self.lock().paths().iter().map(|p| p.to_string_lossy().into_owned()).collect()
    }
}

/// Finishes the cgroup of a `Popen` (its `_cgroup`), if it has one: after it was reaped.
pub(crate) fn finish_of(py: Python<'_>, popen: &Bound<'_, PyAny>) {
    if let Ok(cgroup) = popen.getattr("_cgroup") {
        if let Ok(cgroup) = cgroup.cast::<PyCgroup>() {
            cgroup.get().finish(py);
        }
    }
}
