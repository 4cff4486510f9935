//! `nsbox.Pool`'s core, as Python holds it: made from a box's checked options, handed to spawns (`pool=`).

use std::sync::{Arc, Mutex, PoisonError};

use pyo3::prelude::*;

use super::network::{ipv4, PyNetwork};
use super::{to_pyerr, PySpec};
use crate::fork_id::process_generation;
use crate::pool::{Pool, Taken, Ticket};
use crate::spec::Spec;

/// Warm namespace sets for boxes of one shape. See `_nsbox.pyi`.
#[pyclass(frozen, name = "Pool", module = "nsbox._nsbox")]
pub(crate) struct PyPool {
    pub(crate) inner: Arc<Pool>,
}

/// A wired set taken for one box (`Pool.take_wired`), until the spawn joins it (`spawn(taken=)`).
#[pyclass(frozen, name = "TakenSet", module = "nsbox._nsbox")]
pub(crate) struct PyTaken {
    /// The box's own part of its options, the set, and its pool (to refill once the spawn is done).
    taken: Mutex<Option<(Spec, Taken, Arc<Pool>)>>,
    generation: u64,
}

impl PyTaken {
    /// The set, once: `None` if a spawn has it already, or in a forked copy of the process that took it (its fds
    /// were closed there at the fork).
    pub(crate) fn take(&self) -> Option<(Spec, Taken, Arc<Pool>)> {
        if self.generation != process_generation() {
            return None;
        }
        self.taken.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

impl Drop for PyTaken {
    fn drop(&mut self) {
        if self.generation != process_generation() {
            // Never close, in a forked copy, numbers that are something else by now.
            std::mem::forget(self.taken.get_mut().unwrap_or_else(PoisonError::into_inner).take());
        }
    }
}

#[pymethods]
impl PyPool {
    #[new]
    #[pyo3(signature = (spec, size, network=None))]
    fn new(py: Python<'_>, spec: &PySpec, size: usize, network: Option<&Bound<'_, PyNetwork>>) -> PyResult<Self> {
        let spec = Arc::clone(&spec.inner);
        let network = network.map(|n| Arc::clone(&n.get().inner));
        let pool = py.detach(move || Pool::new(&spec, size, network)).map_err(|e| to_pyerr(e, None, None))?;
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

    /// A ready set wired to `network` for a box of `spec`: `(veth, address, set)`, or `None`.
    fn take_wired(
        &self,
        py: Python<'_>,
        network: &Bound<'_, PyNetwork>,
        spec: &PySpec,
    ) -> PyResult<Option<(String, String, PyTaken)>> {
        let network = Arc::clone(&network.get().inner);
        let taken = py.detach(|| self.inner.take_wired(&network, &spec.inner)).map_err(|e| to_pyerr(e, None, None))?;
        Ok(taken.map(|(own, set, ticket)| {
            let taken = Mutex::new(Some((own, set, Arc::clone(&self.inner))));
            (ticket.veth, ticket.address.to_string(), PyTaken { taken, generation: process_generation() })
        }))
    }

    /// Gives a wired pool an address (and its veth's name) for a set; `False` if it takes none (closed).
    fn give(&self, py: Python<'_>, veth: String, address: &str) -> PyResult<bool> {
        let ticket = Ticket { veth, address: ipv4(address)? };
        py.detach(|| self.inner.give(ticket)).map_err(|e| to_pyerr(e, None, None))
    }

    /// How many addresses a wired pool wants given.
    fn wanted(&self, py: Python<'_>) -> PyResult<usize> {
        py.detach(|| self.inner.wanted()).map_err(|e| to_pyerr(e, None, None))
    }

    /// Frees the unused set (or unused address) of a wired pool that holds `address`, for a box given it by name;
    /// its `(veth, address)` is then spent. Whether the pool held it.
    fn discard(&self, py: Python<'_>, address: &str) -> PyResult<bool> {
        let address = ipv4(address)?;
        Ok(py.detach(|| self.inner.discard(address)))
    }

    /// `[(veth, address)]` given to sets that will serve no box, each returned once.
    fn spent(&self, py: Python<'_>) -> Vec<(String, String)> {
        py.detach(|| self.inner.spent()).into_iter().map(|t| (t.veth, t.address.to_string())).collect()
    }
}
