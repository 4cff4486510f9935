//! A private network's namespaces: a user namespace of the caller's own and a network namespace it owns,
//! made by a short-lived child that hands back their fds through the fd table it shares with us.

use std::ffi::{c_void, CString};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicI32, Ordering};

use libc::c_int;

use crate::child::sys;
use crate::errors::{Error, Step};
use crate::spawn::reap;
use crate::spawn::stack::ChildStack;

/// Filled by the child of [`make_private_namespaces`]: fds in the table it shares with us, or an error.
struct Private {
    uid_map: CString,
    gid_map: CString,
    userns: AtomicI32,
    netns: AtomicI32,
    socket: AtomicI32,
    /// (stage, errno) of a failure, or 0.
    stage: AtomicI32,
    errno: AtomicI32,
}

pub(crate) fn make_private_namespaces() -> Result<(OwnedFd, OwnedFd, OwnedFd), Error> {
    let (uid, gid) = crate::sys::effective_ids();
    let plan = Private {
        uid_map: CString::new(format!("0 {uid} 1")).expect("digits"),
        gid_map: CString::new(format!("0 {gid} 1")).expect("digits"),
        userns: AtomicI32::new(-1),
        netns: AtomicI32::new(-1),
        socket: AtomicI32::new(-1),
        stage: AtomicI32::new(0),
        errno: AtomicI32::new(0),
    };
    let flags = libc::CLONE_NEWUSER | libc::CLONE_NEWNET | libc::CLONE_FILES | libc::CLONE_VM | libc::CLONE_VFORK;
    let pid = ChildStack::with(|stack, _| {
        let arg = std::ptr::from_ref(&plan).cast_mut().cast();
        // SAFETY: the child runs `private_child` on its own stack, reads `plan` and writes only its atomics;
        // CLONE_VFORK returns once it has exited.
        unsafe {
            sys::clone(private_child, stack, flags | libc::SIGCHLD, arg, std::ptr::null_mut(), std::ptr::null_mut())
        }
    })?;
    if pid < 0 {
        let err = Error::os(Step::Clone, crate::spawn::last_errno());
        return Err(err.with_what("create the network's user and network namespaces".to_owned()));
    }
    reap(pid);
    // SAFETY: fds the child opened in our shared table (or -1); each is taken once.
    let take = |fd: &AtomicI32| {
        let fd = fd.load(Ordering::Acquire);
        (fd >= 0).then(|| crate::sys::own_fd(fd).ok()).flatten()
    };
    let (userns, netns, socket) = (take(&plan.userns), take(&plan.netns), take(&plan.socket));
    let stage = plan.stage.load(Ordering::Acquire);
    if stage != 0 {
        let stage = Step::from_code(stage as u32).unwrap_or(Step::Network);
        return Err(Error::os(stage, plan.errno.load(Ordering::Acquire))
            .with_what(format!("make the network's namespaces: cannot {}", stage.action())));
    }
    match (userns, netns, socket) {
        (Some(u), Some(n), Some(s)) => Ok((u, n, s)),
        _ => Err(Error::Internal("the network's namespaces were not handed back".into())),
    }
}

extern "C" fn private_child(arg: *mut c_void) -> c_int {
    // SAFETY: the parent passes a `Private` that outlives us (CLONE_VFORK).
    let plan = unsafe { &*arg.cast::<Private>() };
    let fail_with = |stage: Step, errno: c_int| {
        plan.errno.store(errno, Ordering::Release);
        plan.stage.store(stage as i32, Ordering::Release);
        1
    };
    let fail = |stage: Step| fail_with(stage, sys::errno());
    if let Err(errno) = sys::write_once(c"/proc/self/setgroups", c"deny") {
        return fail_with(Step::Setgroups, errno);
    }
    if let Err(errno) = sys::write_once(c"/proc/self/uid_map", &plan.uid_map) {
        return fail_with(Step::UidMap, errno);
    }
    if let Err(errno) = sys::write_once(c"/proc/self/gid_map", &plan.gid_map) {
        return fail_with(Step::GidMap, errno);
    }
    for (path, out) in [(c"/proc/self/ns/user", &plan.userns), (c"/proc/self/ns/net", &plan.netns)] {
        let fd = sys::open(path, libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return fail(Step::Network);
        }
        out.store(fd, Ordering::Release);
    }
    // SAFETY: a plain syscall; the socket lands in the table we share with the parent.
    let sock = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
    if sock < 0 {
        return fail(Step::Network);
    }
    plan.socket.store(sock, Ordering::Release);
    0
}
