//! Long-lived threads that do the spawning.
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that created the child exits, not the process. A box
//! started from a short-lived thread (a thread pool, a Jupyter comm handler) would be killed with that
//! thread. So spawns run on threads of our own that never exit: the box then dies exactly when the
//! process does. Idle threads are kept for reuse; concurrent callers each get one, so spawns run in
//! parallel. The threads block every signal, which the child inherits until it resets its dispositions.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Mutex, MutexGuard, PoisonError, TryLockError};

use crate::errors::{SpawnError, Stage};

type Job = Box<dyn FnOnce() + Send>;

struct Pool {
    /// The process the threads belong to ([`process`]): after `fork()` the child has none of them.
    owner: u64,
    idle: Vec<Sender<Job>>,
}

static POOL: Mutex<Pool> = Mutex::new(Pool { owner: 0, idle: Vec::new() });
/// The process that owns `POOL`'s threads ([`process`]; 0: none yet). Read without the lock to notice a fork.
static OWNER: AtomicU64 = AtomicU64::new(0);
/// Counted up by [`forked`] in the process `nsbox.call` forks. With a PID namespace its PID is 1, which
/// its parent's may be too (a parent that is PID 1 of its own namespace), so the PID alone cannot tell.
static FORKS: AtomicU32 = AtomicU32::new(0);
/// Set in a forked child that inherited `POOL` locked (by a thread that does not exist there): that
/// process spawns from fresh threads that are not pooled.
static UNPOOLED: AtomicBool = AtomicBool::new(false);

/// Called in a process forked by `nsbox.call`: the pool's threads are not there.
pub fn forked() {
    FORKS.fetch_add(1, Ordering::Relaxed);
}

/// This process, as the pool's owner: its PID and [`FORKS`].
fn process() -> u64 {
    u64::from(FORKS.load(Ordering::Relaxed)) << 32 | u64::from(std::process::id())
}

/// Locks the pool, or `None` in a forked child whose copy of the lock can never be released.
fn lock_pool() -> Option<MutexGuard<'static, Pool>> {
    let me = process();
    if UNPOOLED.load(Ordering::Relaxed) {
        return None;
    }
    if OWNER.load(Ordering::Acquire) == me {
        return Some(POOL.lock().unwrap_or_else(PoisonError::into_inner));
    }
    // First use in this process, or first after a fork(). Before any spawn a held lock is just another
    // thread's first use; after a fork it was copied locked and will never be released here.
    let mut pool = match POOL.try_lock() {
        Ok(pool) => pool,
        Err(TryLockError::Poisoned(p)) => p.into_inner(),
        Err(TryLockError::WouldBlock) if OWNER.load(Ordering::Acquire) == 0 => {
            POOL.lock().unwrap_or_else(PoisonError::into_inner)
        }
        Err(TryLockError::WouldBlock) => {
            UNPOOLED.store(true, Ordering::Relaxed);
            return None;
        }
    };
    if pool.owner != me {
        // Inherited through fork(): those threads do not exist here. Forget (not drop) their channels.
        std::mem::forget(std::mem::take(&mut pool.idle));
        pool.owner = me;
        OWNER.store(me, Ordering::Release);
    }
    Some(pool)
}

fn take() -> Result<Sender<Job>, SpawnError> {
    let idle = lock_pool().and_then(|mut pool| pool.idle.pop());
    match idle {
        Some(worker) => Ok(worker),
        None => start(),
    }
}

fn give_back(worker: Sender<Job>) {
    if let Some(mut pool) = lock_pool() {
        pool.idle.push(worker);
    }
}

fn start() -> Result<Sender<Job>, SpawnError> {
    let (tx, rx) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("nsbox-spawner".into())
        .spawn(move || {
            block_all_signals();
            for job in rx {
                // A panic must not take the thread (and the boxes tied to it) down.
                let _ = catch_unwind(AssertUnwindSafe(job));
            }
        })
        .map_err(|e| {
            SpawnError::os(Stage::Clone, e.raw_os_error().unwrap_or(libc::EAGAIN)).with_what("start a spawner thread")
        })?;
    Ok(tx)
}

fn block_all_signals() {
    // SAFETY: changes only this thread's signal mask.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&raw mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &raw const all, std::ptr::null_mut());
    }
}

/// Runs `job` on a spawner thread and returns its result.
pub fn run<R: Send + 'static>(job: impl FnOnce() -> R + Send + 'static) -> Result<R, SpawnError> {
    let worker = take()?;
    let (tx, rx) = mpsc::sync_channel(1);
    let sent = worker.send(Box::new(move || {
        let _ = tx.send(job());
    }));
    if sent.is_err() {
        return Err(SpawnError::Internal("a spawner thread is gone".into()));
    }
    let out = rx.recv().map_err(|_| SpawnError::Internal("the spawn panicked".into()));
    give_back(worker);
    out
}
