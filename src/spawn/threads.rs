//! Long-lived threads that do the spawning.
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that created the child exits, not the process. A box
//! started from a short-lived thread (a thread pool, a Jupyter comm handler) would be killed with that
//! thread. So spawns run on threads of our own, and a thread exits only once every child it started has
//! exited: the box then dies exactly when the process does. Idle threads are kept for reuse; concurrent
//! callers each get one, so spawns run in parallel; a thread idle for [`IDLE`] whose children are all gone
//! retires. The threads block every signal, which the child inherits until it resets its dispositions.
//! The main thread lives as long as the process, so a box it starts needs no spawner thread ([`run_box`]).
//!
//! After `fork()` the child has none of these threads, and a lock another thread held is copied locked:
//! each process generation ([`crate::fork_id::process_generation`]) has a pool of its own, and a forked child
//! never touches its parent's.

use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use libc::pid_t;

use crate::errors::{Error, Step};
use crate::sys;

type Job = Box<dyn FnOnce() + Send>;

/// How long a thread waits for work before it tries to retire.
const IDLE: Duration = Duration::from_secs(2);

struct Worker {
    id: u64,
    jobs: Sender<Job>,
}

/// The idle threads of one process generation.
struct Pool {
    generation: u64,
    idle: Mutex<Vec<Worker>>,
}

/// This generation's pool. Pools of earlier generations (the process this one was forked from) are
/// leaked: their threads do not exist here and their lock may be held for ever.
static POOL: AtomicPtr<Pool> = AtomicPtr::new(std::ptr::null_mut());
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// On a spawner thread: the children it started that may still be running.
    static CHILDREN: RefCell<Vec<pid_t>> = const { RefCell::new(Vec::new()) };
    /// Whether this thread is a spawner thread.
    static SPAWNER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn pool() -> &'static Pool {
    let generation = crate::fork_id::process_generation();
    loop {
        let current = POOL.load(Ordering::Acquire);
        // SAFETY: pools are never freed once published.
        if let Some(pool) = unsafe { current.as_ref() } {
            if pool.generation == generation {
                return pool;
            }
        }
        let fresh = Box::into_raw(Box::new(Pool { generation, idle: Mutex::new(Vec::new()) }));
        match POOL.compare_exchange(current, fresh, Ordering::AcqRel, Ordering::Acquire) {
            // SAFETY: just published, never freed.
            Ok(_) => return unsafe { &*fresh },
            // Another thread published one first: drop ours (never shared) and look again.
            // SAFETY: `fresh` came from Box::into_raw above and nobody else saw it.
            Err(_) => drop(unsafe { Box::from_raw(fresh) }),
        }
    }
}

impl Pool {
    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Worker>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Records a child started on this thread: the thread stays until it has exited. Call it on the
/// spawner thread that started `pid`, with `pid` a child whose parent-death signal is tied to it.
/// Elsewhere (the main thread, see [`run_box`]) nothing needs keeping.
pub fn adopt(pid: pid_t) {
    if SPAWNER.with(std::cell::Cell::get) {
        CHILDREN.with(|children| children.borrow_mut().push(pid));
    }
}

/// Whether every child this thread started has exited (forgetting those that have).
fn children_gone() -> bool {
    CHILDREN.with(|children| {
        let mut children = children.borrow_mut();
        children.retain(|&pid| sys::still_running(pid));
        children.is_empty()
    })
}

fn start(pool: &'static Pool) -> Result<Worker, Error> {
    let (jobs, rx) = mpsc::channel::<Job>();
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    std::thread::Builder::new()
        .name("nsbox-spawner".into())
        .spawn(move || {
            block_all_signals();
            SPAWNER.with(|s| s.set(true));
            loop {
                match rx.recv_timeout(IDLE) {
                    // A panic must not take the thread (and the boxes tied to it) down.
                    Ok(job) => drop(catch_unwind(AssertUnwindSafe(job))),
                    Err(RecvTimeoutError::Timeout) => {
                        if !children_gone() {
                            continue;
                        }
                        // Retire, unless a caller took this thread meanwhile (its job is on the way).
                        let mut idle = pool.idle();
                        if let Some(at) = idle.iter().position(|w| w.id == id) {
                            idle.swap_remove(at);
                            return;
                        }
                    }
                    Err(RecvTimeoutError::Disconnected) => {
                        if children_gone() {
                            return;
                        }
                        // Nobody can send any more, but the boxes need this thread: wait for them.
                        std::thread::sleep(IDLE);
                    }
                }
            }
        })
        .map_err(|e| {
            Error::os(Step::Clone, e.raw_os_error().unwrap_or(libc::EAGAIN)).with_what("start a spawner thread")
        })?;
    Ok(Worker { id, jobs })
}

pub(crate) fn block_all_signals() {
    // SAFETY: all-zero bytes are a valid sigset_t, which sigfillset then fills.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: fills our own set.
    unsafe { libc::sigfillset(&raw mut all) };
    // SAFETY: changes only this thread's signal mask.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &raw const all, std::ptr::null_mut()) };
}

/// Runs `job` on a spawner thread and returns its result.
pub fn run<R: Send + 'static>(job: impl FnOnce() -> R + Send + 'static) -> Result<R, Error> {
    let pool = pool();
    let taken = pool.idle().pop();
    let worker = match taken {
        Some(worker) => worker,
        None => start(pool)?,
    };
    let (tx, rx) = mpsc::sync_channel(1);
    let sent = worker.jobs.send(Box::new(move || {
        let _ = tx.send(job());
    }));
    if sent.is_err() {
        return Err(Error::Internal("a spawner thread is gone".into()));
    }
    let out = rx.recv().map_err(|_| Error::Internal("the spawn panicked".into()));
    pool.idle().push(worker);
    out
}

/// [`run`] for a box: on the process's main thread (its thread-group leader), `job` runs right here, with
/// every signal blocked (the child starts with this thread's mask, and must not run a handler of ours
/// before it has reset them): the main thread lives as long as the process (Python's joins the other
/// threads before it exits), so a box tied to it by its parent-death signal dies exactly with the process,
/// and the two hand-offs to a spawner thread and back are saved. Elsewhere, as [`run`].
pub fn run_box<R: Send + 'static>(job: impl FnOnce() -> R + Send + 'static) -> Result<R, Error> {
    if !on_main_thread() {
        return run(job);
    }
    // SAFETY: all-zero bytes are a valid sigset_t, which sigfillset then fills.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: fills our own set.
    unsafe { libc::sigfillset(&raw mut all) };
    // SAFETY: as above; the old mask is written into it.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: changes only this thread's signal mask, saving the old one.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &raw const all, &raw mut old) };
    let out = catch_unwind(AssertUnwindSafe(job)).map_err(|_| Error::Internal("the spawn panicked".into()));
    // SAFETY: puts back the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &raw const old, std::ptr::null_mut()) };
    out
}

/// Whether this is the process's main thread (its thread id is the process id; after `fork()`, the thread that
/// forked, the only one).
fn on_main_thread() -> bool {
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    // SAFETY: getpid has no preconditions.
    tid == unsafe { libc::getpid() }
}

/// The number of spawner threads of this process that are idle (for tests and benchmarks).
#[must_use]
pub fn idle_threads() -> usize {
    pool().idle().len()
}
