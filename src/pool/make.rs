//! Making one set of a pool: a short-lived child clones into the new namespaces, sets them up with the
//! exec path's own steps (id maps, `lo` up), says so, and waits; we open its `/proc/PID/ns` files, then
//! kill and reap it. No process outlives the making: a set is only fds.
//!
//! Not `CLONE_FILES` (as a private network's namespaces are made, `crate::net::private`): the steps close
//! fds of their handshake, which would be ours then. Not `CLONE_VFORK`: we write maps the child may not
//! write itself while it waits, and open its files while it lives.
//!
//! A set on a network (see [`super::wiring`]) is wired as a box is: the child says "ready" in its new network
//! namespace, we make its veth pair on the bridge, and the child configures `eth0` before it says "running". On
//! a private network the child first joins the network's user namespace and makes the set's namespaces there
//! with `unshare`, as a box on that network does; the set holds that user namespace first.

use std::os::fd::{AsRawFd, OwnedFd};

use libc::{c_int, c_void, pid_t};

use super::{registry, Set, Ticket};
use crate::child::{self, Setup};
use crate::enter::Joined;
use crate::errors::{Error, Step};
use crate::namespace::Namespace;
use crate::net::Network;
use crate::protocol::Message;
use crate::spawn::stack::ChildStack;
use crate::spawn::{failure, kill_and_reap, last_errno, read_record, wait_or_read_what_is_there, watch};
use crate::spawn::{write_maps_for, Channels, Read};
use crate::spec::Spec;

/// Makes the namespaces of `shape` (a user namespace and kinds a box may join, none of them PID, mount or
/// time) and returns them open, in joining order; with `wire`, wired to that network with that ticket.
pub(crate) fn make_set(shape: &Spec, wire: Option<(&Network, &Ticket)>) -> Result<Set, Error> {
    // A private network's user namespace, joined first.
    let userns = wire.map(|(network, _)| network.namespace_fd("user")).transpose()?.flatten();
    let eth0 = wire.map(|(network, ticket)| network.eth0(ticket.address));
    let channels = Channels::new(shape, wire.is_some(), false)?;
    let holder_of = Holder {
        setup: channels.setup(shape, eth0.as_ref()),
        // SAFETY: getpid has no preconditions.
        parent: unsafe { libc::getpid() },
        userns: userns.as_ref().map_or(-1, AsRawFd::as_raw_fd),
    };
    // Joining a user namespace first, the child makes the others there (`unshare`).
    let made_by_clone = if userns.is_some() { 0 } else { shape.clone_flags() };
    let flags = made_by_clone | libc::CLONE_VM | libc::SIGCHLD;
    let pid = ChildStack::with(|stack, _| {
        let arg = std::ptr::from_ref(&holder_of).cast_mut().cast();
        // SAFETY: the child runs `holder` on its own stack and reads `holder_of`, which lives until it is reaped
        // below (every path kills and reaps it before `holder_of` goes).
        unsafe { child::sys::clone(holder, stack, flags, arg, std::ptr::null_mut(), std::ptr::null_mut()) }
    })?;
    if pid < 0 {
        return Err(failure(shape, Step::Clone, last_errno(), 0));
    }
    let opened = open_when_ready(shape, &channels, pid, wire, userns.as_ref());
    kill_and_reap(pid);
    opened
}

/// Our side: the id-map handshake if we write the maps, then "running" (the namespaces are ready), then
/// the child's namespace files opened while it waits.
fn open_when_ready(
    shape: &Spec,
    channels: &Channels,
    pid: pid_t,
    wire: Option<(&Network, &Ticket)>,
    userns: Option<&OwnedFd>,
) -> Result<Set, Error> {
    let err_r = channels.err_r.as_raw_fd();
    let pidfd = watch(pid)?;
    loop {
        wait_or_read_what_is_there(err_r, pidfd.as_ref())?;
        match read_record(err_r)? {
            Read::Message(Message::Ready) => {
                if shape.parent_writes_maps() {
                    write_maps_for(pid, shape)?;
                }
                if let Some((network, ticket)) = wire {
                    network.attach(&ticket.veth, ticket.address, pid)?;
                }
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
    let mut set = Set { namespaces: Vec::new(), link: wire.map(|(_, ticket)| ticket.clone()) };
    registry::opening(|| {
        let joined_user = userns.map(|userns| (Namespace::User, userns.as_raw_fd()));
        let own = Namespace::JOIN_ORDER.into_iter().filter(|&k| shape.has(k)).map(|k| (k, -1));
        for (kind, from) in joined_user.into_iter().chain(own) {
            let path = format!("/proc/{pid}/ns/{}", kind.proc_name());
            let opened = if from >= 0 {
                // SAFETY: fcntl(2) duplicating an fd of ours (CLOEXEC, at 3 or above).
                Ok(unsafe { libc::fcntl(from, libc::F_DUPFD_CLOEXEC, 3) })
            } else {
                std::fs::File::open(&path).map(std::os::fd::IntoRawFd::into_raw_fd)
            };
            let raw = opened.map_err(|e| {
                Error::os(Step::Pool, e.raw_os_error().unwrap_or(libc::EIO)).with_what(format!("open {path}"))
            })?;
            // std opens with O_CLOEXEC; `own_fd` keeps the fd off 0-2 (the box's dup2s there must not clobber it).
            let fd = crate::sys::own_fd(raw)
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

/// What the holder reads: its setup, the PID of the process it must die with, and a user namespace to join
/// first (-1: none).
struct Holder<'a> {
    setup: Setup<'a>,
    parent: pid_t,
    userns: c_int,
}

/// The child: raw system calls only (it shares our memory). Sets the namespaces up as a box would, says
/// "running", and waits (all signals blocked, as on the thread that cloned it) to be killed.
extern "C" fn holder(arg: *mut c_void) -> c_int {
    // SAFETY: `make_set` passes a `Holder` that outlives us.
    let h = unsafe { &*arg.cast::<Holder<'_>>() };
    let s = &h.setup;
    child::sys::close(s.err_read_fd);
    child::set_parent_death_signal(s);
    if h.userns >= 0 {
        // SAFETY: setns(2) and unshare(2) take an fd and flags.
        child::check(s, Step::JoinUser, unsafe { libc::setns(h.userns, libc::CLONE_NEWUSER) });
        // SAFETY: as above.
        child::check(s, Step::Clone, unsafe { libc::unshare(s.config.clone_flags()) });
    }
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
