//! Warm namespace sets (`nsbox.Pool`): the expensive namespaces (network above all: `copy_net_ns` is most of
//! a box's cost) made ahead on a thread of the pool's own, each set joined by exactly one box, which makes
//! the cheap ones (PID, mount, proc, root) itself.
//!
//! A set is the open fds of a user namespace (when the pool's boxes get one) and of the network, IPC, UTS
//! and cgroup namespaces the pool's options ask for, `lo` up ([`make`]). A box joins them as it would the
//! namespaces of a `target`, user first, and clones its new ones from there, as a box on a private network
//! does. Time namespaces are made by each box: joining one needs a process of its own (the helper's exec),
//! which costs more than making one.
//!
//! What a box needs that a set cannot give (another user namespace, other id maps) is refused by
//! [`Pool::take`]; kinds the set lacks the box makes itself. An empty pool never makes a spawn wait: the box
//! makes its own namespaces, as without a pool.
//!
//! Sets are fds and nothing else, CLOEXEC and at 3 or above: the caller's death frees them with it, and the
//! filling thread's one child (while a set is made) dies with that thread. After `fork()` the child has no
//! filling thread, and the lock may be held by the parent's: each process generation
//! ([`crate::fork_id::process_generation`]) has a state of its own, so a forked child never takes a set
//! of its parent's, and its copies of them are closed as it is forked ([`registry`]).

mod budget;
mod make;
mod registry;
mod wiring;

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, TryLockError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::enter::{Join, Joined};
use crate::errors::{Error, Step};
use crate::namespace::{Namespace, Namespaces};
use crate::net::Network;
use crate::spec::Spec;

pub(crate) use make::make_set;
pub use wiring::Ticket;
use wiring::Wiring;

/// The kinds a set may hold besides the user namespace.
const POOLED: [Namespace; 4] = [Namespace::Net, Namespace::Ipc, Namespace::Uts, Namespace::Cgroup];

/// How long the filler waits after a spawn's last sign of activity before it makes a set, while at least half of
/// the sets are ready: a set made while a box starts or exits competes with it for the CPUs and the kernel's
/// network locks, and slowed it down more than the set saved (measured on two CPUs: a pooled box took 3.0 ms,
/// 2.9 ms without a pool, 2.2 ms with the refill held back). Below half, the filler makes sets at once: a burst
/// must not empty the pool.
const QUIET: Duration = Duration::from_millis(2);

/// How long the filler waits after a failure before it tries again (a spawn meanwhile makes its own
/// namespaces, and names the problem).
const RETRY: Duration = Duration::from_secs(1);

/// One set of namespaces, in joining order (user first), and on a network its address and veth.
#[derive(Debug)]
pub struct Set {
    pub namespaces: Vec<Joined>,
    pub link: Option<Ticket>,
}

impl Set {
    /// Its namespaces, for a box: still recorded (see [`Taken`]).
    fn release(mut self) -> Vec<Joined> {
        std::mem::take(&mut self.namespaces)
    }
}

/// A set taken by a box, as the box joins it. Its fds stay recorded until it goes, so that a process forked
/// meanwhile by another thread (`os.fork`, multiprocessing) has its copies closed, as it would a ready set's:
/// the box is made by a raw clone, which runs no `pthread_atfork` handler, and joins them.
#[derive(Debug, Default)]
pub struct Taken(Join);

impl Taken {
    #[must_use]
    pub fn join(&self) -> &Join {
        &self.0
    }

    /// The set, forgotten by the registry, for a box made by the C library's `fork()` (whose child handler
    /// would close recorded fds before the box joins them). Call it right before that fork, and close it in
    /// the parent right after: a process forked meanwhile by another thread would keep it.
    #[must_use]
    pub fn into_join(mut self) -> Join {
        self.0.namespaces.iter().for_each(|j| registry::forget(j.fd.as_raw_fd()));
        std::mem::take(&mut self.0)
    }
}

impl Drop for Taken {
    fn drop(&mut self) {
        // As a ready set's.
        registry::close(std::mem::take(&mut self.0.namespaces));
    }
}

impl Drop for Set {
    fn drop(&mut self) {
        // Forgotten before the fds close (a forked child must never close a number that is something else by
        // then), with no fork in between.
        registry::close(std::mem::take(&mut self.namespaces));
    }
}

/// A pool's counters, for tests and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Sets ready now.
    pub ready: usize,
    /// Sets made, sets taken by boxes, and spawns that found the pool empty.
    pub made: u64,
    pub taken: u64,
    pub missed: u64,
}

struct Inner {
    ready: VecDeque<Set>,
    closed: bool,
    /// When a spawn last took a set or finished: the filler keeps out of a spawn's way (see [`QUIET`]).
    active: Instant,
    counts: Counts,
    /// The last failure to make a set, until one is made.
    failure: Option<String>,
    /// On a network: the tickets given for sets to make, the one being made, and those of sets that will serve
    /// no box, for the caller to take back (see [`wiring`]).
    tickets: VecDeque<Ticket>,
    making: Option<Ticket>,
    spent: Vec<Ticket>,
}

impl Inner {
    /// Closes the pool: its ready sets (returned, to be freed without the lock) and tickets become spent.
    fn close(&mut self) -> VecDeque<Set> {
        self.closed = true;
        let mut sets = std::mem::take(&mut self.ready);
        self.spent.extend(sets.iter_mut().filter_map(|set| set.link.take()));
        self.spent.extend(self.tickets.drain(..));
        sets
    }
}

/// What one process generation's filler and spawns share.
struct Shared {
    inner: Mutex<Inner>,
    /// Signalled when a set is taken (room to fill) or the pool closes.
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One process generation's state: its sets and its filling thread.
struct State {
    generation: u64,
    shared: Arc<Shared>,
    filler: Mutex<Option<JoinHandle<()>>>,
}

/// A pool of namespace sets of one shape.
pub struct Pool {
    /// What the maker makes: the pooled kinds and the user namespace of the pool's options.
    shape: Arc<Spec>,
    size: usize,
    /// The network the sets are wired to, if any.
    wiring: Option<Arc<Wiring>>,
    /// This generation's state; those of earlier generations are leaked (their lock may be held for ever).
    state: AtomicPtr<State>,
}

impl Pool {
    /// A pool of up to `size` sets for boxes of `options` (resolved box options: the pool's shape is their
    /// user namespace and the kinds of [`POOLED`] they ask for). Starts filling at once. With `network`, every set
    /// is wired to it, once the caller gives it a [`Ticket`] ([`Pool::give`]).
    pub fn new(options: &Spec, size: usize, network: Option<Arc<Network>>) -> Result<Pool, Error> {
        if size == 0 {
            return Err(Error::bad_option("size", "must be at least 1"));
        }
        let wiring = network.map(|network| Arc::new(Wiring { network }));
        let on_network = wiring.as_deref().map(|w| w.box_spec(options)).transpose()?;
        let options = on_network.as_ref().unwrap_or(options);
        let kinds: Namespaces = POOLED.into_iter().filter(|&k| pooled_kind(options, k)).collect();
        if kinds.is_empty() {
            let message = "a pool keeps network, IPC, UTS and cgroup namespaces ready: ask for at least one \
                           (net=True, ipc=True, uts=True or cgroup=True)";
            return Err(Error::invalid(message));
        }
        let shape = Spec { kinds, user: options.user.clone(), ..Spec::default() };
        budget::check_size(size, shape.namespaces().iter().count())?;
        let pool = Pool { shape: Arc::new(shape), size, wiring, state: AtomicPtr::new(std::ptr::null_mut()) };
        pool.state()?;
        Ok(pool)
    }

    /// This generation's state, started (with its filler) on first use in a forked child.
    fn state(&self) -> Result<&State, Error> {
        let generation = crate::fork_id::process_generation();
        let current = self.state.load(Ordering::Acquire);
        // SAFETY: states are freed only by `Drop` (which has `&mut self`), never while borrowed.
        if let Some(state) = unsafe { current.as_ref() } {
            if state.generation == generation {
                return Ok(state);
            }
            // A copy of the parent's: its sets' fds were closed here at the fork (`registry`), so the copy of its
            // queue is forgotten, never dropped, if nobody holds the lock (a lock held at the fork is held for
            // ever here); never used.
            let inner = match state.shared.inner.try_lock() {
                Ok(guard) => Some(guard),
                Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
                Err(TryLockError::WouldBlock) => None,
            };
            if let Some(mut inner) = inner {
                std::mem::forget(std::mem::take(&mut inner.ready));
                inner.closed = true;
            }
        }
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                ready: VecDeque::new(),
                closed: false,
                active: Instant::now(),
                counts: Counts::default(),
                failure: None,
                tickets: VecDeque::new(),
                making: None,
                spent: Vec::new(),
            }),
            wake: Condvar::new(),
        });
        let filler = start_filler(Arc::clone(&shared), Arc::clone(&self.shape), self.wiring.clone(), self.size)?;
        let fresh = Box::into_raw(Box::new(State { generation, shared, filler: Mutex::new(Some(filler)) }));
        if self.state.compare_exchange(current, fresh, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            // SAFETY: just published; freed only by Drop.
            return Ok(unsafe { &*fresh });
        }
        // Another thread of this generation published one first: stop ours, use theirs.
        // SAFETY: `fresh` came from Box::into_raw above and nobody else saw it.
        let ours = unsafe { Box::from_raw(fresh) };
        ours.close();
        self.state()
    }

    /// A set for a box of `config`, and the box's own part of the config (the namespaces it still makes), or
    /// `None` when the pool is empty, closed, or holds nothing the box asks for (it then makes its own).
    /// Refused: a box whose user namespace is not the pool's. A pool on a network gives its sets only through
    /// [`Pool::take_wired`].
    pub fn take(&self, config: &Spec) -> Result<Option<(Spec, Taken)>, Error> {
        if self.wiring.is_some() {
            return Ok(None);
        }
        Ok(self.take_set(config)?.map(|(own, taken, _)| (own, taken)))
    }

    /// A set for a box of `config` on `network` (the options it would be spawned with without a pool), with the
    /// address and veth the set has there, or `None` when the pool is not wired to that network or has no set.
    pub fn take_wired(&self, network: &Arc<Network>, config: &Spec) -> Result<Option<(Spec, Taken, Ticket)>, Error> {
        let Some(wiring) = self.wiring.as_deref().filter(|w| Arc::ptr_eq(&w.network, network)) else {
            return Ok(None);
        };
        let config = wiring.box_spec(config)?;
        Ok(self.take_set(&config)?.and_then(|(own, taken, link)| link.map(|link| (own, taken, link))))
    }

    fn take_set(&self, config: &Spec) -> Result<Option<(Spec, Taken, Option<Ticket>)>, Error> {
        let joined: Namespaces =
            POOLED.into_iter().filter(|&k| self.shape.kinds.contains(k) && pooled_kind(config, k)).collect();
        if joined.is_empty() {
            return Ok(None);
        }
        if config.user != self.shape.user {
            let message = match (&config.user, &self.shape.user) {
                (None, Some(_)) => {
                    "the pool's boxes get a user namespace (its options ask for one, or you are not root); this box \
                     asks for none (user=False): give a Pool the options of its boxes (uid_map, gid_map, user)"
                }
                (Some(_), None) => {
                    "the pool's boxes share the caller's user namespace; this box asks for one (uid_map, gid_map \
                     or user=True): give a Pool the options of its boxes"
                }
                _ => {
                    "the pool's user namespace maps ids as the pool's options say (uid_map, gid_map, setgroups); \
                     this box asks for other maps: give them to the Pool, or use nsbox.run"
                }
            };
            return Err(Error::rule("uid_map", message));
        }
        let state = self.state()?;
        let set = {
            let mut inner = state.shared.lock();
            inner.active = Instant::now();
            let set = inner.ready.pop_front();
            if set.is_some() {
                inner.counts.taken += 1;
            } else {
                inner.counts.missed += 1;
            }
            set
        };
        // The filler is woken by `refill`, once the spawn is done (see `QUIET`).
        let Some(mut set) = set else { return Ok(None) };
        let link = set.link.take();
        // The set's kinds the box does not ask for are left out (forgotten, then freed as the set goes).
        let (namespaces, unused): (Vec<Joined>, Vec<Joined>) =
            set.release().into_iter().partition(|j| j.kind == Namespace::User || joined.contains(j.kind));
        drop(Taken(Join { namespaces: unused, ..Join::default() }));
        let kinds: Namespaces = config.kinds.iter().filter(|&k| !joined.contains(k)).collect();
        let own = Spec { kinds, user: None, ..config.clone() };
        Ok(Some((own, Taken(Join { namespaces, time: None, root: None, cwd: None }), link)))
    }

    /// Gives a wired pool the address and veth name of a set to make; `false` (the ticket stays the caller's) when
    /// the pool is not wired or is closed.
    pub fn give(&self, ticket: Ticket) -> Result<bool, Error> {
        if self.wiring.is_none() {
            return Ok(false);
        }
        let state = self.state()?;
        let mut inner = state.shared.lock();
        if inner.closed {
            return Ok(false);
        }
        inner.tickets.push_back(ticket);
        drop(inner);
        state.shared.wake.notify_one();
        Ok(true)
    }

    /// How many tickets a wired pool wants, to hold `size` sets made or to make.
    pub fn wanted(&self) -> Result<usize, Error> {
        if self.wiring.is_none() {
            return Ok(0);
        }
        let state = self.state()?;
        let inner = state.shared.lock();
        if inner.closed {
            return Ok(0);
        }
        let held = inner.ready.len() + inner.tickets.len() + usize::from(inner.making.is_some());
        Ok(self.size.saturating_sub(held))
    }

    /// Gives up the ready set (or the ticket not yet used) that holds `address`, for a box that asks for that address
    /// by name: the set is freed and its ticket spent; whether the pool held it. A set being made keeps its own.
    pub fn discard(&self, address: Ipv4Addr) -> bool {
        let current = self.state.load(Ordering::Acquire);
        // SAFETY: as in `state`.
        let state = unsafe { current.as_ref() };
        let Some(state) = state.filter(|s| s.generation == crate::fork_id::process_generation()) else {
            return false;
        };
        let holds = |ticket: &Ticket| ticket.address == address;
        let freed = {
            let mut inner = state.shared.lock();
            if let Some(at) = inner.ready.iter().position(|set| set.link.as_ref().is_some_and(holds)) {
                let mut set = inner.ready.remove(at);
                let ticket = set.as_mut().and_then(|set| set.link.take());
                inner.spent.extend(ticket);
                set
            } else if let Some(at) = inner.tickets.iter().position(holds) {
                let ticket = inner.tickets.remove(at);
                inner.spent.extend(ticket);
                None
            } else {
                return false;
            }
        };
        // Freed without the lock, as `close` frees them.
        drop(freed);
        true
    }

    /// The tickets of sets that will serve no box, for the caller to take back (each once).
    pub fn spent(&self) -> Vec<Ticket> {
        let current = self.state.load(Ordering::Acquire);
        // SAFETY: as in `state`.
        let state = unsafe { current.as_ref() };
        match state.filter(|s| s.generation == crate::fork_id::process_generation()) {
            Some(state) => std::mem::take(&mut state.shared.lock().spent),
            None => Vec::new(),
        }
    }

    /// Wakes the filler to replace the sets taken: call it once the spawn that took one is done.
    pub fn refill(&self) {
        let current = self.state.load(Ordering::Acquire);
        // SAFETY: as in `state`.
        let state = unsafe { current.as_ref() };
        if let Some(state) = state.filter(|s| s.generation == crate::fork_id::process_generation()) {
            state.shared.lock().active = Instant::now();
            state.shared.wake.notify_one();
        }
    }

    /// Counters of this generation (a forked child's start from zero).
    pub fn counts(&self) -> Result<(Counts, Option<String>), Error> {
        let state = self.state()?;
        let inner = state.shared.lock();
        Ok((Counts { ready: inner.ready.len(), ..inner.counts }, inner.failure.clone()))
    }

    /// Frees every unused set and stops the filler (waiting for a set being made). Idempotent; later
    /// spawns make their own namespaces.
    pub fn close(&self) {
        let current = self.state.load(Ordering::Acquire);
        // SAFETY: as in `state`.
        let Some(state) = (unsafe { current.as_ref() }) else { return };
        if state.generation == crate::fork_id::process_generation() {
            state.close();
        } else if let Ok(mut inner) = state.shared.inner.try_lock() {
            // A forked copy: the parent's sets were closed here at the fork (`registry`): forget the queue.
            std::mem::forget(std::mem::take(&mut inner.ready));
            inner.closed = true;
        }
    }

    /// The kinds a set holds besides the user namespace.
    #[must_use]
    pub fn kinds(&self) -> Namespaces {
        self.shape.kinds
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let current = *self.state.get_mut();
        if current.is_null() {
            return;
        }
        // SAFETY: ours alone now (`&mut self`).
        let state = unsafe { Box::from_raw(current) };
        if state.generation == crate::fork_id::process_generation() {
            state.close();
            drop(state);
        } else {
            // A parent's state in a forked child: its lock may be held for ever; leak it.
            std::mem::forget(state);
        }
    }
}

impl State {
    fn close(&self) {
        let sets = self.shared.lock().close();
        self.shared.wake.notify_all();
        drop(sets);
        let filler = self.filler.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(filler) = filler {
            let _ = filler.join();
        }
    }
}

/// Whether a box of `config` makes a namespace of kind `kind` that a set may give it.
fn pooled_kind(config: &Spec, kind: Namespace) -> bool {
    // With cgroup limits the cgroup namespace is made once the box is in its own cgroup (its root).
    config.kinds.contains(kind) && !(kind == Namespace::Cgroup && config.cgroup_namespace_after_entry())
}

fn start_filler(
    shared: Arc<Shared>,
    shape: Arc<Spec>,
    wiring: Option<Arc<Wiring>>,
    size: usize,
) -> Result<JoinHandle<()>, Error> {
    let filler = move || fill(&shared, &shape, wiring.as_deref(), size);
    std::thread::Builder::new().name("nsbox-pool".into()).spawn(filler).map_err(|e| {
        Error::os(Step::Pool, e.raw_os_error().unwrap_or(libc::EAGAIN)).with_what("start the pool's filling thread")
    })
}

/// The filling thread: keeps `size` sets ready until the pool closes (wired to a network: one per ticket given).
/// It blocks every signal (its maker child inherits the mask, so only SIGKILL ends it) and holds the lock only to
/// count and queue.
fn fill(shared: &Shared, shape: &Spec, wiring: Option<&Wiring>, size: usize) {
    crate::spawn::threads::block_all_signals();
    let per_set = shape.namespaces().iter().count();
    loop {
        let ticket = {
            let mut inner = shared.lock();
            loop {
                if inner.closed {
                    return;
                }
                if inner.ready.len() >= size || (wiring.is_some() && inner.tickets.is_empty()) {
                    inner = shared.wake.wait(inner).unwrap_or_else(PoisonError::into_inner);
                    continue;
                }
                let quiet_for = inner.active.elapsed();
                if inner.ready.len() * 2 < size || quiet_for >= QUIET {
                    break;
                }
                inner = shared
                    .wake
                    .wait_timeout(inner, QUIET.saturating_sub(quiet_for))
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            inner.making = inner.tickets.pop_front();
            inner.making.clone()
        };
        let made =
            budget::room_for(per_set).and_then(|()| make_set(shape, wiring.map(|w| &*w.network).zip(ticket.as_ref())));
        let mut inner = shared.lock();
        inner.making = None;
        match made {
            Ok(set) if !inner.closed => {
                inner.ready.push_back(set);
                inner.counts.made += 1;
                inner.failure = None;
            }
            Ok(mut set) => {
                // Closed meanwhile: the set is freed as it goes.
                inner.spent.extend(set.link.take());
                return;
            }
            Err(e) => {
                // Its veth, if it was made, goes with its namespace: the address is handed out again after.
                inner.spent.extend(ticket);
                inner.failure = Some(e.to_string());
                // Until a spawn takes (or misses) or the pool closes, or a while.
                let (guard, _) = shared.wake.wait_timeout(inner, RETRY).unwrap_or_else(PoisonError::into_inner);
                if guard.closed {
                    return;
                }
            }
        }
    }
}
