//! `nsbox.call(pid=True)`: the process that is PID 1 of the new PID namespace, made vfork-style in the
//! first child's memory (see the module above for why and how).

use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

use libc::{c_int, c_void, pid_t};

use crate::child::{self, Setup};
use crate::errors::Step;
use crate::protocol::Message;
use crate::spawn::last_errno;

/// glibc's restartable-sequences area of this thread (`__rseq_offset`/`__rseq_size`, glibc 2.35+),
/// found in the parent with `dlsym` so that an older C library simply has none.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rseq {
    offset: isize,
    size: u32,
}

#[cfg(target_arch = "x86_64")]
const RSEQ_SIG: u32 = 0x5305_3053;

#[cfg(target_arch = "aarch64")]
const RSEQ_SIG: u32 = 0xd428_bc00;

impl Rseq {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    pub(crate) fn of_this_thread() -> Option<Rseq> {
        // SAFETY: dlsym lookups with static names.
        let offset = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"__rseq_offset".as_ptr()) }.cast::<isize>();
        // SAFETY: as above.
        let size = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"__rseq_size".as_ptr()) }.cast::<u32>();
        if offset.is_null() || size.is_null() {
            return None;
        }
        // SAFETY: glibc's exported `const ptrdiff_t __rseq_offset` and `const unsigned int __rseq_size`.
        let (offset, size) = (unsafe { *offset }, unsafe { *size });
        (size > 0).then_some(Rseq { offset, size })
    }

    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    pub(crate) fn of_this_thread() -> Option<Rseq> {
        None
    }

    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    fn area(self) -> *mut c_void {
        let tp: usize;
        // SAFETY: reads the thread pointer register, which glibc's TLS (and its rseq area) hangs off.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            std::arch::asm!("mov {}, fs:0", out(reg) tp, options(nostack, readonly, preserves_flags));
        }
        // SAFETY: as above.
        #[cfg(target_arch = "aarch64")]
        unsafe {
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
///
/// The unsafe blocks here that switch stacks do several things that only make sense together (a context
/// saved, then resumed, in memory two processes share): they are kept whole, each with why it holds.
#[allow(clippy::multiple_unsafe_ops_per_block)]
pub(crate) fn become_pid_1(s: &Setup<'_>, rseq: Option<Rseq>) {
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
#[allow(clippy::multiple_unsafe_ops_per_block)] // as in `become_pid_1`
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
    // SAFETY: the second child starts on the lower half of the stack and switches to `main`; the kernel
    // stores its PID in the handoff before it runs.
    let pid = unsafe {
        child::sys::clone(second_child_entry, stack, flags, ptr::null_mut(), ptr::addr_of_mut!((*h).pid), tid_address)
    };
    if pid < 0 {
        // SAFETY: no second child: the Setup below on the main stack is still intact.
        child::report(unsafe { &*(*h).setup }, Step::Clone, last_errno());
    }
    // From here the memory is the second child's too: only syscalls on values held in registers or on
    // this stack. The caller learns its PID (in the caller's namespace) before we are gone.
    child::send_to(err_fd, Message::Forked(pid));
    child::sys::exit(0)
}

/// `sizeof(struct robust_list_head)`: three pointer-sized fields.
const ROBUST_LIST_HEAD_SIZE: usize = 3 * std::mem::size_of::<usize>();

/// The second child, on the lower half of the stack: go on where the first child left the main
/// stack. Never returns.
#[allow(clippy::multiple_unsafe_ops_per_block)] // as in `become_pid_1`
extern "C" fn second_child_entry(_: *mut c_void) -> c_int {
    let h = HANDOFF.load(Ordering::SeqCst);
    // SAFETY: `main` was saved by swapcontext in become_pid_1, whose frame is intact.
    unsafe {
        libc::setcontext(ptr::addr_of!((*h).main));
        libc::_exit(127)
    }
}
