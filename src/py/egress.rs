//! A box's egress engine from Python: what `nsbox._egress` prepared, and the engine once the box runs.

use std::ffi::CString;
use std::os::fd::IntoRawFd;
use std::sync::Arc;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use super::to_pyerr;
use crate::namespace::Namespace;
use crate::net::egress::{Egress, Publish, BOX_ADDRESS, DNS_ADDRESS, HOST_ADDRESS};

/// The engine beside one box: see `nsbox._nsbox.pyi`.
#[pyclass(frozen, name = "Egress", module = "nsbox._nsbox")]
pub(crate) struct PyEgress {
    pub(crate) inner: Arc<Egress>,
}

#[pymethods]
impl PyEgress {
    #[new]
    #[pyo3(signature = (engine, publish, api_socket=None))]
    fn new(engine: Vec<u8>, publish: Vec<(bool, String, u16, u16)>, api_socket: Option<Vec<u8>>) -> PyResult<Self> {
        let c = |what: &str, b: Vec<u8>| {
            CString::new(b).map_err(|_| PyValueError::new_err(format!("{what}: embedded null byte")))
        };
        let publish = publish
            .into_iter()
            .map(|(udp, host_address, host_port, box_port)| Publish { udp, host_address, host_port, box_port })
            .collect::<Vec<_>>();
        if !publish.is_empty() && api_socket.is_none() {
            return Err(PyValueError::new_err("publishing ports needs an API socket path"));
        }
        let api_socket = api_socket.map(|p| c("api_socket", p)).transpose()?;
        Ok(PyEgress { inner: Arc::new(Egress::new(c("engine", engine)?, publish, api_socket)) })
    }

    /// The engine's PID while it runs.
    #[getter]
    fn pid(&self) -> Option<i32> {
        self.inner.pid()
    }

    /// Make the leash's namespaces (``allow=``): the box will join them, below a user namespace of its own.
    fn make_leash(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.inner.make_leash()).map_err(|e| to_pyerr(e, None, None))
    }

    /// A new fd of the leash's ``"user"`` or ``"net"`` namespace, to close after use (``None`` without one).
    fn leash_fd(&self, kind: &str) -> PyResult<Option<i32>> {
        let kind = match kind {
            "user" => Namespace::User,
            "net" => Namespace::Net,
            _ => return Err(PyValueError::new_err(format!("no {kind:?} namespace in the leash"))),
        };
        let fd = self.inner.leash_fd(kind).map_err(|e| to_pyerr(e, None, None))?;
        Ok(fd.map(IntoRawFd::into_raw_fd))
    }

    /// Run the engine on a private network's namespaces (fds of the caller's, duplicated here).
    fn use_namespaces(&self, userns: i32, netns: i32) -> PyResult<()> {
        let dup = |fd: i32| {
            // SAFETY: F_DUPFD_CLOEXEC on an fd the caller holds open; the new fd is then ours.
            crate::sys::own_fd(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) })
                .map_err(|e| PyValueError::new_err(format!("not a namespace fd: {e}")))
        };
        self.inner.use_namespaces(dup(userns)?, dup(netns)?);
        Ok(())
    }

    /// Start the engine on the leash's network namespace and publish the ports (before the box).
    fn attach_to_leash(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.inner.attach_to_leash()).map_err(|e| to_pyerr(e, None, None))
    }

    /// Kill and reap the engine. Idempotent.
    fn stop(&self, py: Python<'_>) {
        py.detach(|| self.inner.stop());
    }

    #[classattr]
    const BOX_ADDRESS: &'static str = BOX_ADDRESS;
    #[classattr]
    const HOST_ADDRESS: &'static str = HOST_ADDRESS;
    #[classattr]
    const DNS_ADDRESS: &'static str = DNS_ADDRESS;
}
