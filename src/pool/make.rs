//! Making one set of a pool: a short-lived child clones into the new namespaces, sets them up with the
//! exec path's own steps (id maps, `lo` up), says so, and waits; we open its `/proc/PID/ns` files, then
//! kill and reap it. No process outlives the making: a set is only fds.
//!
//! Not `CLONE_FILES` (as a private network's namespaces are made, `crate::net::private`): the steps close
//! fds of their handshake, which would be ours then. Not `CLONE_VFORK`: we write maps the child may not
//! write itself while it waits, and open its files while it lives.

use std::os::fd::AsRawFd;

use libc::{c_int, c_void, pid_t};

use super::{registry, Set};
use crate::child::{self, Setup};
use crate::enter::Joined;
use crate::errors::{Error, Step};
use crate::namespace::Namespace;
use crate::protocol::Message;
use crate::spawn::stack::ChildStack;
use crate::spawn::{failure, kill_and_reap, last_errno, read_record, wait_or_read_what_is_there, watch};
use crate::spawn::{write_maps_for, Channels, Read};
use crate::spec::Spec;

/// Makes the namespaces of `shape` (a user namespace and kinds a box may join, none of them PID, mount or
/// time) and returns them open, in joining order.
pub(crate) fn make_set(shape: &Spec) -> Result<Set, Error> {
    let channels = Channels::new(shape, false, false)?;
    // SAFETY: getpid has no preconditions.
    let holder_of = Holder { setup: channels.setup(shape, None), parent: unsafe { libc::getpid() } };
    let flags = shape.clone_flags() | libc::CLONE_VM | libc::SIGCHLD;
    let pid = ChildStack::with(|stack, _| {
        let arg = std::ptr::from_ref(&holder_of).cast_mut().cast();
        // SAFETY: the child runs `holder` on its own stack and reads `holder_of`, which lives until it is reaped
        // below (every path kills and reaps it before `holder_of` goes).
        unsafe { child::sys::clone(holder, stack, flags, arg, std::ptr::null_mut(), std::ptr::null_mut()) }
    })?;
    if pid < 0 {
        return Err(failure(shape, Step::Clone, last_errno(), 0));
    }
    let opened = open_when_ready(shape, &channels, pid);
    kill_and_reap(pid);
    opened
}

/// Our side: the id-map handshake if we write the maps, then "running" (the namespaces are ready), then
/// the child's namespace files opened while it waits.
fn open_when_ready(shape: &Spec, channels: &Channels, pid: pid_t) -> Result<Set, Error> {
    let err_r = channels.err_r.as_raw_fd();
    let pidfd = watch(pid)?;
    loop {
        wait_or_read_what_is_there(err_r, pidfd.as_ref())?;
        match read_record(err_r)? {
            Read::Message(Message::Ready) => {
                write_maps_for(pid, shape)?;
                let go = channels.go.as_ref().map_or(-1, |(_, w)| w.as_raw_fd());
                // SAFETY: one byte from a stack buffer to our own pipe.
                if unsafe { libc::write(go, [1u8].as_ptr().cast(), 1) } != 1 {
                    return Err(Error::Internal("cannot wake the pool's namespace maker".into()));
                }
            }
            Read::Message(Message::Running) => break,
            Read::Message(Message::Failed(step, errno, at)) => return Err(failure(shape, step, errno, at)),
            _ => return Err(Error::Internal("the pool's namespace maker died before its namespaces were made".into())),
        }
    }
    // Opened and recorded with no fork in between (see `registry`). A set left incomplete by a failure is
    // dropped after: dropping one takes the registry's lock, which `opening` holds.
    let mut set = Set { namespaces: Vec::new() };
    registry::opening(|| {
        for kind in Namespace::JOIN_ORDER.into_iter().filter(|&k| shape.has(k)) {
            let path = format!("/proc/{pid}/ns/{}", kind.proc_name());
            let file = std::fs::File::open(&path).map_err(|e| {
                Error::os(Step::Pool, e.raw_os_error().unwrap_or(libc::EIO)).with_what(format!("open {path}"))
            })?;
            // std opens with O_CLOEXEC; `own_fd` keeps the fd off 0-2 (the box's dup2s there must not clobber it).
            let fd = crate::sys::own_fd(std::os::fd::IntoRawFd::into_raw_fd(file))
                .map_err(|e| Error::os(Step::Pool, crate::sys::errno_of(&e)).with_what("keep a namespace fd"))?;
            if !registry::record(fd.as_raw_fd()) {
                // Unrecorded, a forked child would keep it: no more sets until some go.
                return Err(Error::os(Step::Pool, libc::EMFILE).with_what(format!(
                    "keep more namespace fds in ready sets (this process's pools hold {} already)",
                    registry::SLOTS
                )));
            }
            set.namespaces.push(Joined { fd, kind });
        }
        Ok(())
    })?;
    Ok(set)
}

/// What the holder reads: its setup, and the PID of the process it must die with.
struct Holder<'a> {
    setup: Setup<'a>,
    parent: pid_t,
}

/// The child: raw system calls only (it shares our memory). Sets the namespaces up as a box would, says
/// "running", and waits (all signals blocked, as on the thread that cloned it) to be killed.
extern "C" fn holder(arg: *mut c_void) -> c_int {
    // SAFETY: `make_set` passes a `Holder` that outlives us.
    let h = unsafe { &*arg.cast::<Holder<'_>>() };
    let s = &h.setup;
    child::sys::close(s.err_read_fd);
    child::set_parent_death_signal(s);
    // Our copy of the caller's fd table: only the error and go pipes are ours to keep (a caller's pipe must
    // not wait for us to see its EOF).
    close_all_but([s.err_fd, s.go_fd]);
    child::configure_namespaces(s);
    // After the last change of ids (which clears it): we die with the filling thread, and so with the caller.
    child::die_with_parent_from_now_on(s);
    // SAFETY: getppid has no preconditions.
    if unsafe { libc::getppid() } != h.parent {
        // Our maker died before the signal was set again (the error pipe may have readers elsewhere: copies
        // in processes forked meanwhile).
        child::sys::exit(127);
    }
    child::send(s, Message::Running);
    loop {
        // SAFETY: pause(2) takes nothing; only SIGKILL ends it here.
        unsafe { libc::pause() };
    }
}

/// Closes every fd from 3 up but `keep` (-1 for none).
fn close_all_but(keep: [c_int; 2]) {
    let (a, b) = (keep[0].min(keep[1]), keep[0].max(keep[1]));
    let mut from: libc::c_uint = 3;
    for fd in [a, b] {
        if let Ok(fd) = libc::c_uint::try_from(fd) {
            if fd > from {
                // SAFETY: close_range(2) takes integers.
                unsafe { libc::syscall(libc::SYS_close_range, from, fd - 1, 0) };
            }
            from = from.max(fd + 1);
        }
    }
    // SAFETY: as above.
    unsafe { libc::syscall(libc::SYS_close_range, from, libc::c_uint::MAX, 0) };
}
