//! `nsbox.call`: fork the calling process into new namespaces; the copy goes back to the caller's code
//! (the Python glue runs the function there) instead of executing a program.
//!
//! How, and why so:
//!
//! - The fork is the C library's `fork()`, which the glue wraps in Python's own `PyOS_BeforeFork` /
//!   `PyOS_AfterFork_Parent` / `PyOS_AfterFork_Child`: exactly what `os.fork()` does. glibc's `fork()` also
//!   takes its own locks (malloc arenas, stdio, the dynamic loader) around the fork and runs the
//!   `pthread_atfork` handlers, so the child of a threaded caller finds them usable. A raw `clone(2)` with
//!   namespace flags from the caller would skip that: a thread inside `malloc` at that instant would leave
//!   the child deadlocked on its first allocation.
//! - The child, now single-threaded, `unshare`s the namespaces of [`Config::clone_flags`] (the set the
//!   exec path clones with) and runs the exec path's own steps on them ([`child::configure_namespaces`],
//!   [`child::mount_proc`]): id maps (or the handshake with the parent), time offsets, hostname, loopback,
//!   propagation before any mount, proc.
//! - A new time namespace applies to the children of the process that made it (the exec path relies on
//!   `execve` switching to it). This child joins it with `setns(time_for_children)`, which a
//!   single-threaded process that shares its memory with no other may do, so the function sees the
//!   offsets.
//! - A new PID namespace also applies only to children, and the function must be its PID 1. So with
//!   `pid` the first child clones once more: `CLONE_PARENT`, so that the second child, PID 1, is the
//!   caller's child (which waits for it, and which it dies with); and `CLONE_VM`: the second child runs
//!   in the first one's memory, itself already a private copy of the caller's, so no page table is copied
//!   twice. The first child clones from a stack of its own (`swapcontext`) and leaves at once, touching
//!   nothing the second uses (it unregisters its robust-futex list and TID address, which are the
//!   second's too), while the second carries on with the frames of the main stack (`setcontext`) up into
//!   the caller's code. The clone is set up as glibc's own fork sets up its child: the kernel writes the
//!   new TID into glibc's thread descriptor, and the robust-futex list and the restartable-sequences
//!   area (`rseq`, which the kernel does not carry over a `CLONE_VM` clone) are registered again.
//!
//! Between the fork and the return to Python the child makes only raw system calls, as the exec path
//! does. It reports on the exec path's error pipe ([`crate::protocol::Message`]s: failures, plus
//! [`Message::Forked`] with the second child's PID and [`Message::Running`] when the function runs). The
//! parent does not wait for EOF on that pipe, since a process forked meanwhile by another thread may hold
//! a copy of the write end for as long as it lives: it watches the child through a pidfd instead.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

use libc::{c_int, c_void, pid_t};

use crate::child::{self, Setup};
use crate::errors::{Error, Step};
use crate::namespace::Namespace;
use crate::netlink::Eth0;
use crate::network::Lan;
use crate::protocol::Message;
use crate::spawn::{
    failure, kill_and_reap, last_errno, read_record, reap, wait_or_read_what_is_there, watch, write_maps_for, Channels,
    Read,
};
use crate::spec::Spec;

/// Which side of the fork returned.
#[allow(clippy::large_enum_variant)] // made once per call, moved at once
pub enum Forked<'a> {
    /// The caller, with the PID of the first child; call [`Fork::finish`].
    Parent(Fork<'a>, pid_t),
    /// The process that runs the function, in its namespaces (PID 1 of a new PID namespace with `pid`).
    Child,
}

/// A forked box's place on a network (see [`crate::spawn::Link`]).
pub struct ForkLink<'a> {
    pub lan: &'a Lan,
    pub host_name: String,
    pub eth0: Eth0,
    /// A private network's user namespace, joined before the new namespaces are made.
    pub userns: Option<OwnedFd>,
}

/// A fork into the namespaces of a config: prepared in the parent ([`Fork::new`]), then [`Fork::fork`],
/// then [`Fork::finish`] in the parent.
pub struct Fork<'a> {
    config: &'a Spec,
    channels: Channels,
    caller: pid_t,
    link: Option<ForkLink<'a>>,
    /// Drop the caller's supplementary groups before making or joining a user namespace.
    drop_groups: bool,
    rseq: Option<Rseq>,
}

impl<'a> Fork<'a> {
    /// Makes the pipes and texts the child will use; nothing is forked yet.
    pub fn new(config: &'a Spec, link: Option<ForkLink<'a>>) -> Result<Fork<'a>, Error> {
        if config.init {
            return Err(Error::invalid(
                "init=True starts a command under an init process; a function called in a box is PID 1 itself",
            ));
        }
        if config.root.is_some() {
            return Err(Error::invalid(
                "root= changes the root directory of a command; a function called in a box keeps the caller's",
            ));
        }
        let joins_user = link.as_ref().is_some_and(|l| l.userns.is_some());
        let drop_groups =
            config.user.as_ref().is_some_and(|u| u.drop_groups_first) || (joins_user && crate::sys::may_drop_groups());
        Ok(Fork {
            config,
            channels: Channels::new(config, link.is_some(), false)?,
            // SAFETY: getpid has no preconditions.
            caller: unsafe { libc::getpid() },
            link,
            drop_groups,
            rseq: config.has(Namespace::Pid).then(Rseq::of_this_thread).flatten(),
        })
    }

    /// Forks. The parent gets [`Forked::Parent`] at once. The child makes and enters the namespaces and
    /// gets [`Forked::Child`]: only the process that will run the function returns, and only when every
    /// step worked (otherwise it has reported the failure to the parent and exited).
    ///
    /// # Safety
    ///
    /// As for `fork(2)` in a process that may have threads: the child is a copy of the caller with one
    /// thread, in which locks held by the caller's other threads stay held. The caller must restore what
    /// it owns in the child (Python: `PyOS_AfterFork_Child`) and must not let the child return into code
    /// that expects to be the original process.
    pub unsafe fn fork(self) -> Result<Forked<'a>, Error> {
        // SAFETY: see the function's contract.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(Error::os(Step::Clone, last_errno()).with_what("fork the interpreter"));
        }
        if pid > 0 {
            return Ok(Forked::Parent(self, pid));
        }
        // SAFETY: our copy of the parent's read end: the caller's death must leave the pipe without a reader
        // (`child::die_with_parent_from_now_on`).
        unsafe { libc::close(self.channels.err_r.as_raw_fd()) };
        self.enter_namespaces();
        let Channels { err_r, err_w, go, .. } = self.channels;
        std::mem::forget(err_r); // closed above
        drop(err_w);
        if let Some(go) = go {
            // The handshake closed both ends already (`child::configure_namespaces`).
            std::mem::forget(go);
        }
        Ok(Forked::Child)
    }

    /// The child's side: raw system calls only; any failure is reported and ends the process.
    fn enter_namespaces(&self) {
        let s = self.channels.setup(self.config, self.link.as_ref().map(|l| &l.eth0));
        let cfg = self.config;
        // Set now for the steps below, and again after the last change of credentials (which clears it).
        child::set_parent_death_signal(&s);
        // SAFETY: plain syscalls.
        unsafe {
            if libc::getppid() != self.caller {
                // The caller died before the death signal was set: nobody is waiting for us.
                libc::_exit(127);
            }
            if self.drop_groups {
                child::drop_supplementary_groups(&s);
            }
            if let Some(userns) = self.link.as_ref().and_then(|l| l.userns.as_ref()) {
                // A private network's boxes live in its user namespace (see crate::network).
                child::check(&s, Step::JoinUser, libc::setns(userns.as_raw_fd(), libc::CLONE_NEWUSER));
                child::become_root_inside(&s, false);
            }
            let flags = cfg.clone_flags();
            if flags != 0 {
                child::check(&s, Step::Clone, libc::unshare(flags));
            }
        }
        child::configure_namespaces(&s);
        if cfg.has(Namespace::Time) {
            // Before a PID-1 process is made: it shares our memory, and a time namespace is the memory's
            // (the kernel switches the vDSO's clock page; a CLONE_VM child stays in its parent's).
            enter_time_namespace(&s);
        }
        if cfg.has(Namespace::Pid) {
            become_pid_1(&s, self.rseq);
        }
        child::mount_proc(&s);
        child::die_with_parent_from_now_on(&s);
        // SAFETY: getppid has no preconditions.
        if !cfg.has(Namespace::Pid) && unsafe { libc::getppid() } != self.caller {
            // Reparented: the caller died before the signal was set again (PID 1 of a new PID namespace
            // sees 0 here, and relies on the error pipe's check alone).
            // SAFETY: nobody is waiting for us.
            unsafe { libc::_exit(127) };
        }
        child::send(&s, Message::Running);
    }

    /// The parent's side, after the fork: writes the id maps when the parent must, waits until the
    /// namespaces are ready, and returns the process that runs the function. On failure every child has
    /// been reaped.
    pub fn finish(self, first: pid_t) -> Result<Started, Error> {
        let link = self.link;
        let Channels { err_r, err_w, go, .. } = self.channels;
        drop(err_w);
        let mut go_w = go.map(|(go_r, go_w)| {
            drop(go_r);
            go_w
        });
        let mut second = None;
        let outcome = wait_until_running(self.config, link.as_ref(), first, err_r.as_raw_fd(), &mut go_w, &mut second);
        // Closing the go pipe (if still open) lets a waiting child leave.
        drop(go_w);
        if outcome.is_err() {
            match second {
                // The first was reaped when it named the second: its PID may be another process's now.
                Some(second) => kill_and_reap(second),
                None => kill_and_reap(first),
            }
        }
        outcome
    }
}

/// The process that runs the function, once its namespaces are ready.
#[derive(Debug)]
pub struct Started {
    pub pid: pid_t,
    /// Readable once it has exited; kill and reap through it (it cannot name a reused PID). `None` when it
    /// had exited and been reaped by someone else (`SIGCHLD` ignored) before it could be watched: all it
    /// wrote is in the pipe already.
    pub pidfd: Option<OwnedFd>,
}

fn wait_until_running(
    config: &Spec,
    link: Option<&ForkLink<'_>>,
    first: pid_t,
    err_r: RawFd,
    go_w: &mut Option<OwnedFd>,
    second: &mut Option<pid_t>,
) -> Result<Started, Error> {
    let mut watched = watch(first)?;
    // With a PID namespace two processes write: the first child sends the second's PID ("forked") right
    // after cloning it, and the second (running concurrently) its own records, in either order. Both
    // the outcome and that PID are needed (the PID to reap the second whatever happens).
    let mut running = false;
    let mut failed = None;
    loop {
        let settled = running || failed.is_some();
        if settled && (!config.has(Namespace::Pid) || second.is_some()) {
            break;
        }
        match next_record(err_r, watched.as_ref())? {
            Some(Message::Ready) if go_w.is_some() => {
                if config.parent_writes_maps() {
                    write_maps_for(first, config)?;
                }
                if let Some(link) = link {
                    link.lan.attach(&link.host_name, first)?;
                }
                // SAFETY: writing one byte from a stack variable to our own pipe.
                let n = unsafe { libc::write(go_w.as_ref().map_or(-1, AsRawFd::as_raw_fd), [1u8].as_ptr().cast(), 1) };
                if n != 1 {
                    return Err(Error::Internal("cannot wake the child".into()));
                }
                *go_w = None;
            }
            Some(Message::Forked(pid)) if config.has(Namespace::Pid) && second.is_none() && pid > 0 => {
                // From the first or the second child, whichever writes first (both do): from now on, watch
                // the second. The first leaves at once (it does not wait for the second): reap it now.
                *second = Some(pid);
                reap(first);
                watched = watch(pid)?;
            }
            Some(Message::Forked(pid)) if *second == Some(pid) => {}
            Some(Message::Running) => running = true,
            Some(Message::Failed(step, errno)) => failed = Some(failure(config, step, errno)),
            Some(message) => {
                return Err(Error::Internal(format!("unexpected {message:?} from the child")));
            }
            // The first child failed before it could clone the second.
            None if failed.is_some() => break,
            None if running => {
                // The first child died after the outcome without naming the second: it cannot be reaped.
                return Err(Error::Internal("the PID namespace's first process was not reported".into()));
            }
            None => return Err(Error::Internal("the child died while its namespaces were being made".into())),
        }
    }
    if let Some(err) = failed {
        return Err(err);
    }
    Ok(Started { pid: second.unwrap_or(first), pidfd: watched })
}

/// glibc's restartable-sequences area of this thread (`__rseq_offset`/`__rseq_size`, glibc 2.35+),
/// found in the parent with `dlsym` so that an older C library simply has none.
#[derive(Clone, Copy, Debug)]
struct Rseq {
    offset: isize,
    size: u32,
}

#[cfg(target_arch = "x86_64")]
const RSEQ_SIG: u32 = 0x5305_3053;
#[cfg(target_arch = "aarch64")]
const RSEQ_SIG: u32 = 0xd428_bc00;

impl Rseq {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    fn of_this_thread() -> Option<Rseq> {
        // SAFETY: dlsym lookups of data symbols; read only if present.
        unsafe {
            let offset = libc::dlsym(libc::RTLD_DEFAULT, c"__rseq_offset".as_ptr()).cast::<isize>();
            let size = libc::dlsym(libc::RTLD_DEFAULT, c"__rseq_size".as_ptr()).cast::<u32>();
            if offset.is_null() || size.is_null() || *size == 0 {
                return None;
            }
            Some(Rseq { offset: *offset, size: *size })
        }
    }

    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    fn of_this_thread() -> Option<Rseq> {
        None
    }

    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    fn area(self) -> *mut c_void {
        let tp: usize;
        // SAFETY: reads the thread pointer register, which glibc's TLS (and its rseq area) hangs off.
        unsafe {
            #[cfg(target_arch = "x86_64")]
            std::arch::asm!("mov {}, fs:0", out(reg) tp, options(nostack, readonly, preserves_flags));
            #[cfg(target_arch = "aarch64")]
            std::arch::asm!("mrs {}, tpidr_el0", out(reg) tp, options(nostack, nomem, preserves_flags));
        }
        tp.wrapping_add_signed(self.offset) as *mut c_void
    }

    /// Unregisters the area from this task (the first child), trying the lengths glibc registers with;
    /// returns the one that worked.
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    fn unregister(self) -> Option<u32> {
        const UNREGISTER: libc::c_int = 1;
        let area = self.area();
        // glibc registers the original 32-byte struct, or more: its feature size, maybe rounded up.
        let rounded = self.size.div_ceil(32) * 32;
        [32, self.size.max(32), rounded].into_iter().find(|&len| {
            // SAFETY: rseq(2) on this task's own registration.
            unsafe { libc::syscall(libc::SYS_rseq, area, len, UNREGISTER, RSEQ_SIG) == 0 }
        })
    }

    /// Registers the area for this task (the second child, which the kernel gave none).
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    fn register(self, len: u32) {
        // SAFETY: rseq(2) with glibc's own area for this thread; the first child unregistered it.
        unsafe { libc::syscall(libc::SYS_rseq, self.area(), len, 0, RSEQ_SIG) };
    }

    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    fn unregister(self) -> Option<u32> {
        None
    }

    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    fn register(self, _len: u32) {}
}

/// What the first child hands to the code it runs on other stacks ([`become_pid_1`]).
struct Handoff {
    setup: *const Setup<'static>,
    /// Where the second child resumes: in [`become_pid_1`], on the main stack.
    main: libc::ucontext_t,
    /// Where the first child goes to clone the second: the upper half of a stack of its own.
    aux: libc::ucontext_t,
    /// The second child's stack until it switches to `main`: the lower half.
    clone_stack: *mut c_void,
    flags: c_int,
    /// glibc's TID field of this thread (`PR_GET_TID_ADDRESS`), or null.
    tid_address: *mut c_int,
    /// The second child's PID as the caller sees it, stored by the kernel (`CLONE_PARENT_SETTID`).
    pid: pid_t,
    rseq: Option<Rseq>,
    /// The length the first child unregistered the rseq area with (0: none), for the second.
    rseq_len: u32,
}

/// The first child's [`Handoff`], for the functions that run on other stacks (it is single-threaded).
static HANDOFF: AtomicPtr<Handoff> = AtomicPtr::new(ptr::null_mut());

/// The size of the stack the first child clones from and the second starts on: a mapping of its own,
/// never reused (a `ChildStack` would be, by the function's own spawns, while the first child may still
/// be leaving).
const AUX_STACK: usize = 128 * 1024;

/// With a PID namespace (unshared, so it applies to our children): make the process that will be its
/// PID 1, as a child of the caller, and leave. Only the new process returns.
///
/// The new process shares our memory (`CLONE_VM`), so no page table is copied a second time: our memory
/// is already a private copy of the caller's. For that, we switch to another stack (`swapcontext`)
/// before cloning, and the new process switches back to ours (`setcontext`): it carries on with the
/// frames of this stack, up into the caller's code, while we leave from a stack it never touches.
fn become_pid_1(s: &Setup<'_>, rseq: Option<Rseq>) {
    let mut robust_head: *mut c_void = ptr::null_mut();
    let mut robust_len: usize = 0;
    // SAFETY: a zeroed ucontext_t is a valid value to fill in; plain data otherwise.
    let mut handoff: Handoff = unsafe { std::mem::zeroed() };
    handoff.setup = ptr::from_ref(s).cast();
    handoff.flags = libc::CLONE_VM | libc::CLONE_PARENT | libc::CLONE_PARENT_SETTID | libc::SIGCHLD;
    handoff.rseq = rseq;
    // SAFETY: both calls store into our variables. glibc registered this thread's `clear_child_tid` (its
    // descriptor's TID field) and robust-futex list; the kernel gives their addresses back.
    let have_robust = unsafe {
        if libc::prctl(libc::PR_GET_TID_ADDRESS, ptr::addr_of_mut!(handoff.tid_address)) == 0
            && !handoff.tid_address.is_null()
        {
            // As glibc's fork: the kernel writes the child's TID (1 in its namespace) into glibc's descriptor.
            handoff.flags |= libc::CLONE_CHILD_SETTID | libc::CLONE_CHILD_CLEARTID;
        }
        libc::syscall(libc::SYS_get_robust_list, 0, ptr::addr_of_mut!(robust_head), ptr::addr_of_mut!(robust_len)) == 0
            && !robust_head.is_null()
    };
    // SAFETY: an anonymous private mapping, left mapped for the life of the process (a few pages).
    let stack = unsafe {
        libc::mmap(
            ptr::null_mut(),
            AUX_STACK,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
            -1,
            0,
        )
    };
    if stack == libc::MAP_FAILED {
        child::report(s, Step::Clone, last_errno());
    }
    let h = ptr::addr_of_mut!(handoff);
    // SAFETY: `h` lives in this frame, which both children see (shared memory) until the second one has
    // switched back here; the stacks are the two halves of the mapping above.
    let switched = unsafe {
        let (top, middle) = (stack.cast::<u8>().add(AUX_STACK).cast::<c_void>(), stack.cast::<u8>().add(AUX_STACK / 2));
        (*h).clone_stack = middle.cast();
        if libc::getcontext(ptr::addr_of_mut!((*h).aux)) < 0 {
            -1
        } else {
            (*h).aux.uc_stack.ss_sp = middle.cast();
            (*h).aux.uc_stack.ss_size = top as usize - middle as usize;
            (*h).aux.uc_link = ptr::null_mut();
            libc::makecontext(ptr::addr_of_mut!((*h).aux), first_child_on_aux_stack, 0);
            HANDOFF.store(h, Ordering::SeqCst);
            // Returns only in the second child (and on failure).
            libc::swapcontext(ptr::addr_of_mut!((*h).main), ptr::addr_of!((*h).aux))
        }
    };
    if switched != 0 {
        child::report(s, Step::Clone, last_errno());
    }
    // The second child: PID 1 of the new namespace, a child of the caller. It names itself too (the
    // kernel stored its PID before it ran: CLONE_PARENT_SETTID), in case the first child dies before it can.
    // SAFETY: plain data in this frame, ours now.
    child::send(s, Message::Forked(unsafe { ptr::read_volatile(ptr::addr_of!(handoff.pid)) }));
    // SAFETY: as above.
    unsafe {
        if have_robust {
            // Registering the list glibc keeps in this thread's descriptor, as its _Fork does.
            libc::syscall(libc::SYS_set_robust_list, robust_head, robust_len);
        }
        if let (Some(rseq), len @ 1..) = (handoff.rseq, ptr::read_volatile(ptr::addr_of!(handoff.rseq_len))) {
            rseq.register(len);
        }
    }
    child::set_parent_death_signal(s);
}

/// The first child, on the upper half of its own stack: clone the second, report its PID, and leave at
/// once, touching nothing the second child uses. Never returns.
extern "C" fn first_child_on_aux_stack() {
    // SAFETY: set by become_pid_1 before switching here; this process has one thread.
    let h = HANDOFF.load(Ordering::SeqCst);
    // SAFETY: all reads of the handoff happen before the clone, while the memory is ours alone.
    let (err_fd, flags, stack, tid_address) =
        unsafe { ((*(*h).setup).err_fd, (*h).flags, (*h).clone_stack, (*h).tid_address) };
    // The rseq area, robust-futex list and TID address are glibc's for this thread, which the second child
    // takes over: give them up first, so that nothing of ours (not even our death) touches them after the
    // clone. The second child registers its own.
    // SAFETY: as above.
    if let Some(rseq) = unsafe { (*h).rseq } {
        // SAFETY: as above.
        unsafe { (*h).rseq_len = rseq.unregister().unwrap_or(0) };
    }
    // SAFETY: plain syscalls on this task's own registrations and signal mask. With every signal
    // blocked, no handler of the caller's (Python's among them) can run here on memory the second child
    // uses; the second child gets its mask back from the saved context.
    unsafe {
        libc::syscall(libc::SYS_set_robust_list, ptr::null_mut::<c_void>(), ROBUST_LIST_HEAD_SIZE);
        libc::syscall(libc::SYS_set_tid_address, ptr::null_mut::<c_int>());
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&raw mut all);
        libc::syscall(libc::SYS_rt_sigprocmask, libc::SIG_SETMASK, &raw const all, ptr::null_mut::<c_void>(), 8);
    }
    // SAFETY: the second child starts on the lower half of the stack and switches to `main`.
    let pid = unsafe {
        libc::clone(
            second_child_entry,
            stack,
            flags,
            ptr::null_mut(),
            ptr::addr_of_mut!((*h).pid),
            ptr::null_mut::<c_void>(),
            tid_address,
        )
    };
    if pid < 0 {
        // SAFETY: no second child: the Setup below on the main stack is still intact.
        child::report(unsafe { &*(*h).setup }, Step::Clone, last_errno());
    }
    // From here the memory is the second child's too: only syscalls on values held in registers or on
    // this stack. The caller learns its PID (in the caller's namespace) before we are gone.
    child::send_to(err_fd, Message::Forked(pid));
    // SAFETY: leaving at once.
    unsafe { libc::_exit(0) }
}

/// `sizeof(struct robust_list_head)`: three pointer-sized fields.
const ROBUST_LIST_HEAD_SIZE: usize = 3 * std::mem::size_of::<usize>();

/// The second child, on the lower half of the stack: go on where the first child left the main
/// stack. Never returns.
extern "C" fn second_child_entry(_: *mut c_void) -> c_int {
    let h = HANDOFF.load(Ordering::SeqCst);
    // SAFETY: `main` was saved by swapcontext in become_pid_1, whose frame is intact.
    unsafe {
        libc::setcontext(ptr::addr_of!((*h).main));
        libc::_exit(127)
    }
}

/// Joins the time namespace just unshared (it applies to children only until joined).
fn enter_time_namespace(s: &Setup<'_>) {
    // SAFETY: open/setns/close on a static path.
    unsafe {
        let fd = libc::open(c"/proc/self/ns/time_for_children".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        child::check(s, Step::TimeNamespace, fd);
        child::check(s, Step::TimeNamespace, libc::setns(fd, libc::CLONE_NEWTIME));
        libc::close(fd);
    }
}

/// Waits for the next record from the child, or for the child's death: `None` when it died (or closed the
/// pipe) without one. Without a pidfd (the child is gone already) reads what is there.
fn next_record(err_r: RawFd, watched: Option<&OwnedFd>) -> Result<Option<Message>, Error> {
    wait_or_read_what_is_there(err_r, watched)?;
    Ok(match read_record(err_r)? {
        Read::Message(message) => Some(message),
        Read::Eof | Read::Nothing => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Caller, Options};

    /// Forks into the namespaces of `options`; the child `_exit`s 0 when `check` holds there. Returns the
    /// child's wait status.
    fn status_of(options: Options, check: impl FnOnce() -> bool) -> Result<c_int, Error> {
        let config = options.resolve(Caller::current())?;
        let fork = Fork::new(&config, None)?;
        // SAFETY: the child makes plain libc calls and _exits; it never returns into the test harness.
        match unsafe { fork.fork() }? {
            Forked::Child => {
                let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(check)).unwrap_or(false);
                // SAFETY: leaving at once.
                unsafe { libc::_exit(i32::from(!ok)) }
            }
            Forked::Parent(fork, first) => {
                let started = fork.finish(first)?;
                let mut status = -1;
                // SAFETY: waiting for our own children.
                unsafe { libc::waitpid(started.pid, &raw mut status, 0) };
                Ok(status)
            }
        }
    }

    fn hostname_is(expected: &[u8]) -> bool {
        let mut buf = [0u8; 65];
        // SAFETY: a stack buffer one byte longer than HOST_NAME_MAX.
        let ret = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), 64) };
        ret == 0 && buf.starts_with(expected) && buf.get(expected.len()) == Some(&0)
    }

    #[test]
    fn the_child_is_pid_1_of_its_namespace_with_its_hostname() {
        let options = Options { pid: true, hostname: Some(b"fork-test".to_vec()), ..Options::default() };
        // SAFETY: getpid has no preconditions.
        let status = status_of(options, || unsafe { libc::getpid() } == 1 && hostname_is(b"fork-test"));
        assert_eq!(status, Ok(0));
    }

    #[test]
    fn a_failed_step_is_reported_with_its_errno() {
        // Proc cannot be mounted for the caller's PID namespace from a new user namespace, even by root.
        let options = Options { user: Some(true), mount_proc: true, ..Options::default() };
        match status_of(options, || true) {
            Err(Error::Os(failure)) => assert_eq!((failure.step, failure.errno), (Step::MountProc, libc::EPERM)),
            other => panic!("expected an EPERM mounting proc, got {other:?}"),
        }
    }

    #[test]
    fn init_is_refused_before_forking() {
        let config = Options { init: true, ..Options::default() }.resolve(Caller::current()).unwrap();
        assert!(matches!(Fork::new(&config, None), Err(Error::Invalid(_))));
    }
}
