//! The stack the child runs on between `clone` and `execve`.
//!
//! With `CLONE_VM` the child cannot use the parent's stack (both would write to it), so each spawning
//! thread keeps one mapping, made on first use and reused: the child is gone (exec'd or exited) before
//! the thread can spawn again.

use std::cell::Cell;
use std::ffi::c_void;

use crate::errors::{Error, Step};

/// Generous: the child's frames are small, but debug builds are not.
const SIZE: usize = 256 * 1024;

pub struct ChildStack;

thread_local! {
    static BASE: Cell<*mut c_void> = const { Cell::new(std::ptr::null_mut()) };
}

impl ChildStack {
    /// Calls `f` with the tops of the two halves of this thread's child stack (stacks grow down on every
    /// Linux target we build for): the child runs on the upper half; a second child it clones (to enter
    /// a PID namespace) on the lower one. The lowest page is a guard.
    pub fn with<R>(f: impl FnOnce(*mut c_void, *mut c_void) -> R) -> Result<R, Error> {
        let base = BASE.with(|cell| {
            if cell.get().is_null() {
                // SAFETY: an anonymous private mapping owned by this thread for its lifetime.
                let p = unsafe {
                    libc::mmap(
                        std::ptr::null_mut(),
                        SIZE,
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                        -1,
                        0,
                    )
                };
                if p == libc::MAP_FAILED {
                    return Err(std::io::Error::last_os_error());
                }
                // SAFETY: protecting the first page of the mapping we just made.
                unsafe { libc::mprotect(p, page_size(), libc::PROT_NONE) };
                cell.set(p);
            }
            Ok(cell.get())
        });
        let base = base.map_err(|e| {
            Error::os(Step::Clone, e.raw_os_error().unwrap_or(libc::ENOMEM)).with_what("map the child's stack")
        })?;
        // Both offsets lie within (or one past) the mapping and are 16-byte aligned (mmap is page aligned).
        let (top, middle) = (base.cast::<u8>().wrapping_add(SIZE), base.cast::<u8>().wrapping_add(SIZE / 2));
        Ok(f(top.cast(), middle.cast()))
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096)
}
