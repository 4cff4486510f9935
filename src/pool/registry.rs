//! The fds of every ready set of this process, kept where a forked child can close them without a lock.
//!
//! `fork()` copies the fd table: without this, a child (`os.fork`, multiprocessing, the function process of
//! `nsbox.call`) would hold the parent's unused sets open for as long as it lives, and could join them. A
//! `pthread_atfork` child handler, registered at load time as [`crate::fork_id`]'s is, closes them in the child
//! at once: `close(2)` on fds read from atomics, all it may do there. The child's copy of the pool's queue
//! then names closed fds, and is never dropped (see `Pool::state`).

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use crate::enter::Joined;

/// Room for this many fds of ready sets' namespaces (up to five a set), in all of this process's pools; beyond it
/// no set is made (a forked child would keep an unrecorded one) until some go.
pub(crate) const SLOTS: usize = 2048;

static FDS: [AtomicI32; SLOTS] = [const { AtomicI32::new(-1) }; SLOTS];

/// Held while a set's fds are opened and recorded, and by `fork()` (a prepare handler): a child is never forked
/// between a set's `open` and its record, which would leave it a copy nobody closes.
static OPENING: AtomicBool = AtomicBool::new(false);

fn lock() {
    while OPENING.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
        // The holder may be off the CPU (two CPUs, busy): let it run rather than spin against it.
        std::thread::yield_now();
    }
}

extern "C" fn unlock() {
    OPENING.store(false, Ordering::Release);
}

extern "C" fn before_fork() {
    lock();
}

/// Runs `open` (which opens a set's fds and records them, or forgets and closes them) so that no fork comes in
/// between.
pub(crate) fn opening<R>(open: impl FnOnce() -> R) -> R {
    struct Held;
    impl Drop for Held {
        fn drop(&mut self) {
            unlock(); // on a panic too: a lock left held would hang every later fork
        }
    }
    lock();
    let _held = Held;
    open()
}

/// Records `fd`, an fd of a ready set; `false` when every slot is taken.
#[must_use]
pub(crate) fn record(fd: i32) -> bool {
    FDS.iter().any(|slot| {
        slot.load(Ordering::Relaxed) == -1 && slot.compare_exchange(-1, fd, Ordering::AcqRel, Ordering::Relaxed).is_ok()
    })
}

/// Forgets `fd`, before it is closed or handed to a box.
pub(crate) fn forget(fd: i32) {
    let _ = FDS.iter().find(|slot| {
        slot.load(Ordering::Relaxed) == fd && slot.compare_exchange(fd, -1, Ordering::AcqRel, Ordering::Relaxed).is_ok()
    });
}

/// Forgets the fds of `namespaces` and closes them, with no fork in between: a child forked after the forget
/// and before the close would keep copies that nothing closes (and could join them).
pub(crate) fn close(namespaces: Vec<Joined>) {
    if namespaces.is_empty() {
        return;
    }
    opening(|| {
        for joined in &namespaces {
            forget(joined.fd.as_raw_fd());
        }
        drop(namespaces);
    });
}

extern "C" fn forked_child() {
    unlock();
    // Async-signal-safe: atomics and close(2), in the only thread of the new process.
    for slot in &FDS {
        let fd = slot.swap(-1, Ordering::Relaxed);
        if fd >= 0 {
            // SAFETY: an fd of a set, a copy of the parent's, which nothing in this process uses.
            unsafe { libc::close(fd) };
        }
    }
}

extern "C" fn register() {
    // SAFETY: registers handlers that only touch atomics and close fds. It cannot fail but for ENOMEM,
    // which at load time leaves a forked child its copies of the sets until it exits or execs.
    unsafe { libc::pthread_atfork(Some(before_fork), Some(unlock), Some(forked_child)) };
}

#[used]
#[link_section = ".init_array"]
static REGISTER: extern "C" fn() = register;

#[cfg(test)]
mod tests {
    // Tests fork and poke at fds in ways the library's own rules need not govern.
    #![allow(clippy::multiple_unsafe_ops_per_block)]

    use super::*;

    #[test]
    fn a_forked_child_has_the_recorded_fds_closed_and_the_parent_keeps_them() {
        let mut pipe = [0; 2];
        let mut other = [0; 2];
        // SAFETY: pipes into stack arrays.
        assert_eq!(unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: as above.
        assert_eq!(unsafe { libc::pipe2(other.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // The recorded fd stands for a set's; `other[0]` is not recorded.
        assert!(record(other[1]));
        // SAFETY: the child only checks fds with fcntl, writes to the pipe and _exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // SAFETY: fcntl on fd numbers; one byte to our pipe, then leave at once.
            unsafe {
                let closed = libc::fcntl(other[1], libc::F_GETFD) < 0;
                let kept = libc::fcntl(other[0], libc::F_GETFD) >= 0;
                let answer = [u8::from(closed) | u8::from(kept) << 1];
                libc::write(pipe[1], answer.as_ptr().cast(), 1);
                libc::_exit(0);
            }
        }
        let mut answer = [0u8];
        // SAFETY: one byte into a stack buffer; then reap the child and close our fds.
        unsafe {
            libc::close(pipe[1]);
            assert_eq!(libc::read(pipe[0], answer.as_mut_ptr().cast(), 1), 1);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
            assert!(libc::fcntl(other[1], libc::F_GETFD) >= 0, "the parent's fd was closed");
            forget(other[1]);
            for fd in [pipe[0], other[0], other[1]] {
                libc::close(fd);
            }
        }
        assert_eq!(answer[0], 3, "the child kept a recorded fd (bit 0) or lost another (bit 1)");
    }
}
