//! Networks from Python: the bridge object `nsbox.Network` wraps, and the host's routes.

use std::net::Ipv4Addr;
use std::os::fd::IntoRawFd;
use std::sync::Arc;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use super::inspect::io_err;
use super::to_pyerr;
use crate::net::{Netlink, Network};

/// A bridge that boxes join: see `nsbox.Network`, which chooses the names and addresses.
#[pyclass(frozen, name = "Network", module = "nsbox._nsbox")]
pub(crate) struct PyNetwork {
    pub(crate) inner: Arc<Network>,
}

#[pymethods]
impl PyNetwork {
    #[new]
    #[allow(clippy::needless_pass_by_value)]
    fn new(py: Python<'_>, bridge: String, gateway: &str, prefix: u8, private: bool) -> PyResult<Self> {
        let gateway = ipv4(gateway)?;
        let made = py.detach(|| {
            if private {
                Network::private(&bridge, gateway, prefix)
            } else {
                Network::host(&bridge, gateway, prefix)
            }
        });
        Ok(PyNetwork { inner: Arc::new(made.map_err(|e| to_pyerr(e, None, None))?) })
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
pub(crate) fn ipv4_routes(py: Python<'_>) -> PyResult<Vec<(String, u8)>> {
    let routes = py
        .detach(|| Netlink::open().and_then(|mut nl| nl.ipv4_routes()))
        .map_err(|e| io_err(&e, "cannot read the routing table"))?;
    Ok(routes.into_iter().map(|(dst, prefix)| (dst.to_string(), prefix)).collect())
}

pub(crate) fn ipv4(text: &str) -> PyResult<Ipv4Addr> {
    text.parse().map_err(|_| PyValueError::new_err(format!("{text:?} is not an IPv4 address")))
}
