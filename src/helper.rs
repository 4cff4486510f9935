//! The embedded `nsbox-helper` program, served from a sealed memfd so that a box can exec it whatever
//! its mount namespace or root directory looks like, and without files to install.

use std::io::Write as _;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::OnceLock;

use crate::errors::{SpawnError, Stage};

static PROGRAM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/nsbox-helper"));

/// The memfd, made once per process. Kept open (and close-on-exec) for the life of the process.
static FD: OnceLock<Result<OwnedFd, i32>> = OnceLock::new();

fn make() -> Result<OwnedFd, i32> {
    let create = |flags: libc::c_uint| {
        // SAFETY: memfd_create with a static name.
        let fd = unsafe { libc::memfd_create(c"nsbox-helper".as_ptr(), flags) };
        if fd < 0 {
            Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO))
        } else {
            // SAFETY: a fresh fd we own.
            Ok(unsafe { OwnedFd::from_raw_fd(fd) })
        }
    };
    let base = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    // MFD_EXEC (Linux 6.3) says we mean to exec it; older kernels reject the flag.
    let fd = create(base | libc::MFD_EXEC).or_else(|e| if e == libc::EINVAL { create(base) } else { Err(e) })?;
    let mut file = std::fs::File::from(fd);
    file.write_all(PROGRAM).map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: fcntl on our own fd; sealing is best effort (it only guards against later writes).
    unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) };
    Ok(OwnedFd::from(file))
}

/// The fd to `execveat(fd, "", ..., AT_EMPTY_PATH)`.
pub fn fd() -> Result<RawFd, SpawnError> {
    match FD.get_or_init(make) {
        Ok(fd) => Ok(fd.as_raw_fd()),
        Err(errno) => Err(SpawnError::os(Stage::Helper, *errno).with_what("load nsbox's helper program into a memfd")),
    }
}
