//! Which copy of the process this is: `fork()` copies everything nsbox holds (fds, locks, "I made this"
//! marks), and a copy must not act as the original.
//!
//! The PID alone cannot tell: the process `nsbox.call(pid=True)` forks is PID 1 of a new PID namespace,
//! and so may the original be (PID 1 of its own). So [`process_generation`] pairs the PID with a counter
//! that a `pthread_atfork` child handler bumps in every child of the C library's `fork()` (`os.fork`,
//! multiprocessing, `nsbox.call`; its `CLONE_VM` second child runs in the memory of the first, which the
//! handler already bumped).
//!
//! The handler is registered when the library is loaded (an `.init_array` entry, as the `ctor` crate
//! makes), not on first use: a fork while another thread ran a lazy `Once` would leave the child's copy
//! "running" forever, and a fork between first use and registration would go unseen.

use std::sync::atomic::{AtomicU32, Ordering};

/// Bumped in the child of every `fork()`.
static FORKS: AtomicU32 = AtomicU32::new(0);

extern "C" fn forked_child() {
    // Async-signal-safe: one atomic add, in the only thread of the new process.
    FORKS.fetch_add(1, Ordering::Relaxed);
}

extern "C" fn register() {
    // SAFETY: registers a handler that only touches an atomic. It cannot fail but for ENOMEM, which at
    // load time leaves copies told apart by their PIDs alone.
    unsafe { libc::pthread_atfork(None, None, Some(forked_child)) };
}

#[used]
#[link_section = ".init_array"]
static REGISTER: extern "C" fn() = register;

/// This process, as distinct from any `fork()`ed copy of it (or copy of a copy): equal values in two
/// processes mean the same process.
#[must_use]
pub fn process_generation() -> u64 {
    u64::from(FORKS.load(Ordering::Relaxed)) << 32 | u64::from(std::process::id())
}

#[cfg(test)]
mod tests {
    // Tests fork and poke at fds in ways the library's own rules need not govern.
    #![allow(clippy::multiple_unsafe_ops_per_block)]

    use super::*;

    #[test]
    fn a_forked_child_is_another_generation_even_with_the_same_pid() {
        let parent = process_generation();
        let mut pipe = [0; 2];
        // SAFETY: a pipe into a stack array.
        assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
        // SAFETY: the child only reads atomics, writes to the pipe and _exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // Compare the counter alone: the PID differs anyway, and the PID 1 case is what the counter is for.
            let child = process_generation();
            let same_counter = u8::from(child >> 32 == parent >> 32);
            // SAFETY: one byte to our pipe, then leave at once.
            unsafe {
                libc::write(pipe[1], (&raw const same_counter).cast(), 1);
                libc::_exit(0);
            }
        }
        let mut answer = 2u8;
        // SAFETY: one byte into a stack variable; then reap our child and close the pipe.
        unsafe {
            libc::close(pipe[1]);
            assert_eq!(libc::read(pipe[0], (&raw mut answer).cast(), 1), 1);
            libc::close(pipe[0]);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        assert_eq!(answer, 0, "the child's counter was not bumped");
        assert_eq!(process_generation(), parent, "the parent's generation changed");
    }
}
