//! `nsbox.Pool`'s core, as Python holds it: made from a box's checked options, handed to spawns (`pool=`).

use std::sync::Arc;

use pyo3::prelude::*;

use super::{to_pyerr, PySpec};
use crate::pool::Pool;

/// Warm namespace sets for boxes of one shape. See `_nsbox.pyi`.
#[pyclass(frozen, name = "Pool", module = "nsbox._nsbox")]
pub(crate) struct PyPool {
    pub(crate) inner: Arc<Pool>,
}

#[pymethods]
impl PyPool {
    #[new]
    fn new(py: Python<'_>, spec: &PySpec, size: usize) -> PyResult<Self> {
        let spec = Arc::clone(&spec.inner);
        let pool = py.detach(move || Pool::new(&spec, size)).map_err(|e| to_pyerr(e, None, None))?;
        Ok(PyPool { inner: Arc::new(pool) })
    }

    /// `(ready, made, taken, missed, failure)`: sets ready now, sets made, sets taken by boxes, spawns that
    /// found the pool empty, and the last failure to make a set (until one is made), of this process.
    fn counts(&self, py: Python<'_>) -> PyResult<(usize, u64, u64, u64, Option<String>)> {
        let (counts, failure) = py.detach(|| self.inner.counts()).map_err(|e| to_pyerr(e, None, None))?;
        Ok((counts.ready, counts.made, counts.taken, counts.missed, failure))
    }

    /// The kinds a set holds besides the user namespace, by their `/proc/PID/ns` names.
    #[getter]
    fn kinds(&self) -> Vec<&'static str> {
        self.inner.kinds().proc_names()
    }

    /// Frees every unused set and stops filling (waits for a set being made). Idempotent.
    fn close(&self, py: Python<'_>) {
        py.detach(|| self.inner.close());
    }
}
