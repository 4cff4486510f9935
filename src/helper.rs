//! The embedded `nsbox-helper` program, served from a sealed memfd so that a box can exec it whatever
//! its mount namespace or root directory looks like, and without files to install.
//!
//! The memfd is made once per process and kept, but its number is never trusted on its own: user code
//! may close "every other fd" (a daemon does) and have the number reused by a file of its own, which
//! nsbox would then exec as PID 1. Each spawn takes a duplicate of its own (at 3 or above) and checks
//! that it is the same memfd (device and inode) before using it; a stale number is forgotten, not closed.
//! No lock is held anywhere, so a `fork()` at any moment leaves nothing for the child to wait on.

use std::io::Write as _;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicPtr, Ordering};

use crate::errors::{Error, Step};
use crate::sys::{errno_of, own_fd};

static PROGRAM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/nsbox-helper"));

/// The kept memfd: its number and identity.
struct Kept {
    fd: RawFd,
    dev: u64,
    ino: u64,
}

/// Replaced (never freed: a concurrent reader may hold the old one) when the number goes stale.
static KEPT: AtomicPtr<Kept> = AtomicPtr::new(std::ptr::null_mut());

fn make() -> Result<OwnedFd, i32> {
    let create = |flags: libc::c_uint| {
        // SAFETY: memfd_create with a static name.
        own_fd(unsafe { libc::memfd_create(c"nsbox-helper".as_ptr(), flags) }).map_err(|e| errno_of(&e))
    };
    let base = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    // MFD_EXEC (Linux 6.3) says we mean to exec it; older kernels reject the flag.
    let fd = create(base | libc::MFD_EXEC).or_else(|e| if e == libc::EINVAL { create(base) } else { Err(e) })?;
    let mut file = std::fs::File::from(fd);
    file.write_all(PROGRAM).map_err(|e| errno_of(&e))?;
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: fcntl on our own fd; sealing is best effort (it only guards against later writes).
    unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) };
    Ok(OwnedFd::from(file))
}

/// (device, inode) of an open fd.
fn identity(fd: RawFd) -> Option<(u64, u64)> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat(2) fills the struct when it succeeds.
    if unsafe { libc::fstat(fd, st.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: initialised by the successful fstat above.
    let st = unsafe { st.assume_init() };
    Some((st.st_dev, st.st_ino))
}

/// A duplicate of `kept`'s fd, if that number still names the same memfd.
fn duplicate(kept: &Kept) -> Option<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC makes a new fd (or fails); we own it.
    let dup = own_fd(unsafe { libc::fcntl(kept.fd, libc::F_DUPFD_CLOEXEC, 3) }).ok()?;
    (identity(dup.as_raw_fd()) == Some((kept.dev, kept.ino))).then_some(dup)
}

fn fresh() -> Result<OwnedFd, Error> {
    let err = |errno: i32| Error::os(Step::Helper, errno).with_what("load nsbox's helper program into a memfd");
    let fd = make().map_err(err)?;
    let (dev, ino) = identity(fd.as_raw_fd()).ok_or_else(|| err(crate::sys::last_errno()))?;
    let dup = fd.try_clone().map_err(|e| err(errno_of(&e)))?;
    KEPT.store(Box::into_raw(Box::new(Kept { fd: fd.into_raw_fd(), dev, ino })), Ordering::Release);
    Ok(dup)
}

/// An fd of the helper program, owned by the caller (close it when the spawn is done), at 3 or above,
/// to `execveat(fd, "", ..., AT_EMPTY_PATH)`.
pub fn fd() -> Result<OwnedFd, Error> {
    // SAFETY: `Kept`s are never freed once published.
    if let Some(kept) = unsafe { KEPT.load(Ordering::Acquire).as_ref() } {
        if let Some(dup) = duplicate(kept) {
            return Ok(dup);
        }
    }
    // First use, or the number went stale: make another (two threads racing each keep theirs; the
    // loser's stays open, as a kept one does).
    fresh()
}
