//! The clone, and the parent's side of the handshake while the spawning thread sleeps in `CLONE_VFORK`:
//! writing the id maps a child may not write itself, and making its network.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

use libc::{c_int, pid_t};

use super::failure::failure;
use super::pipe::{outcome_of, read_record, send_end_of_records, Channels, Read};
use super::stack::ChildStack;
use crate::child::{self, Plan};
use crate::errors::{Error, Step};
use crate::net::egress::Egress;
use crate::net::Link;
use crate::protocol::Message;
use crate::spec::{Setgroups, Spec};
use crate::sys::last_errno;

pub(crate) fn write_proc(config: &Spec, pid: pid_t, file: &str, text: &[u8], stage: Step) -> Result<(), Error> {
    std::fs::write(format!("/proc/{pid}/{file}"), text)
        .map_err(|e| failure(config, stage, e.raw_os_error().unwrap_or(libc::EIO), 0))
}

/// Writes the child's id maps from the parent (which must hold `CAP_SETUID`/`CAP_SETGID` for such maps).
pub(crate) fn write_maps_for(pid: pid_t, config: &Spec) -> Result<(), Error> {
    let user = config.user.as_ref().expect("only called with a user namespace");
    if user.setgroups == Setgroups::Deny {
        write_proc(config, pid, "setgroups", b"deny", Step::Setgroups)?;
    }
    write_proc(config, pid, "uid_map", &user.uid_map.to_proc_text(), Step::UidMap)?;
    write_proc(config, pid, "gid_map", &user.gid_map.to_proc_text(), Step::GidMap)
}

/// Clones the child on this thread's child stack and, when the parent must write the id maps or make
/// the network, runs the handshake on a scoped thread meanwhile (this thread sleeps in `CLONE_VFORK`
/// until the child has exec'd or exited). `pids` are where the kernel stores the first and second
/// child's PIDs (`CLONE_PARENT_SETTID`). With `into_cgroup`, `(cgroup v2 directory, cgroup.procs files)`, the
/// child starts in that cgroup (`clone3` with `CLONE_INTO_CGROUP`), or, where the kernel cannot, writes itself
/// into those files instead of the plan's. Returns the child's PID and the handshake's outcome.
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
pub(crate) fn clone_child<'p>(
    plan: &mut Plan<'p>,
    channels: &Channels,
    namespaces: c_int,
    config: &Spec,
    (link, egress): (Option<&Link>, Option<&Egress>),
    pids: (&AtomicI32, &AtomicI32),
    into_cgroup: Option<(c_int, &'p [c_int])>,
) -> Result<(pid_t, Result<(), Error>), Error> {
    let (child_pid, inner_pid) = pids;
    let mut flags = namespaces | libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD;
    if channels.go.is_some() {
        flags |= libc::CLONE_PARENT_SETTID;
    }
    let go_w = channels.go.as_ref().map(|(_, w)| w.as_raw_fd());
    let err_r = channels.err_r.as_raw_fd();
    // The process that sets up the namespaces (and so waits for the parent): the one that made them.
    let waiting = if plan.fork_again && plan.unshare_flags == 0 { inner_pid } else { child_pid };
    std::thread::scope(|scope| {
        let writer = match go_w {
            None => None,
            Some(go_w) => Some(
                std::thread::Builder::new()
                    .name("nsbox-handshake".into())
                    .spawn_scoped(scope, move || prepare_when_ready(config, (link, egress), waiting, err_r, go_w))
                    .map_err(|e| {
                        Error::os(Step::Clone, e.raw_os_error().unwrap_or(libc::EAGAIN))
                            .with_what("start a thread for the child's id maps or network")
                    })?,
            ),
        };
        let pid = ChildStack::with(|stack, inner_stack| {
            plan.inner_stack = inner_stack;
            #[cfg(target_arch = "x86_64")]
            if let Some((dir, entered_by_writing)) = into_cgroup {
                let arg = std::ptr::from_ref(&*plan).cast_mut().cast();
                let size = stack as usize - inner_stack as usize;
                // SAFETY: as below; the child's stack is the upper half, [inner_stack, stack).
                let pid = unsafe {
                    child::sys::clone_into_cgroup(child::entry, inner_stack, size, flags, arg, child_pid.as_ptr(), dir)
                };
                if pid >= 0 {
                    return pid;
                }
                // No clone3 or no CLONE_INTO_CGROUP here (or a refusal the write will name): the child writes.
                plan.cgroup_procs = entered_by_writing;
            }
            let arg = std::ptr::from_ref(&*plan).cast_mut().cast();
            // SAFETY: the child runs `child::entry` on its own stack and only reads `plan`, which lives
            // until the child has exec'd or exited: CLONE_VFORK returns only then.
            unsafe { child::sys::clone(child::entry, stack, flags, arg, child_pid.as_ptr(), std::ptr::null_mut()) }
        });
        let maps = writer.map(|writer| {
            // The child is gone (exec'd or exited): wake a writer still waiting for a "ready" that will
            // never come, then collect its result.
            send_end_of_records(&channels.err_w);
            writer.join().unwrap_or_else(|_| Err(Error::Internal("the id map writer panicked".into())))
        });
        match pid? {
            pid if pid < 0 => Err(failure(config, Step::Clone, last_errno(), 0)),
            pid => Ok((pid, maps.unwrap_or(Ok(())))),
        }
    })
}

/// The parent's side of the handshake, on its own thread while the spawning thread is suspended by
/// `CLONE_VFORK`: wait for "ready", write the maps, connect the network, let the child go on.
pub(crate) fn prepare_when_ready(
    config: &Spec,
    (link, egress): (Option<&Link>, Option<&Egress>),
    child: &AtomicI32,
    err_r: RawFd,
    go_w: RawFd,
) -> Result<(), Error> {
    let ready = match read_record(err_r) {
        Ok(Read::Message(Message::Ready)) => Ok(()),
        Ok(Read::Message(Message::End) | Read::Eof | Read::Nothing) => {
            Err(Error::Internal("the child died before it was ready".into()))
        }
        Ok(read @ Read::Message(_)) => {
            outcome_of(config, read).and(Err(Error::Internal("unexpected record on the error pipe".into())))
        }
        Err(e) => Err(e),
    };
    // Whatever happened, a child waiting for its maps must be told (or CLONE_VFORK never returns).
    let pid = child.load(Ordering::Acquire);
    let written = ready.and_then(|()| {
        if config.parent_writes_maps() {
            write_maps_for(pid, config)?;
        }
        link.map_or(Ok(()), |l| l.network.attach(&l.veth, l.address, pid))?;
        egress.map_or(Ok(()), |e| e.attach(pid))
    });
    // 1: go on; 0: the maps failed, leave (the child is reaped later).
    let go = [u8::from(written.is_ok())];
    // SAFETY: writing one byte from a stack buffer to our own pipe.
    let n = unsafe { libc::write(go_w, go.as_ptr().cast(), 1) };
    if n != 1 {
        return written.and(Err(Error::Internal("cannot wake the child".into())));
    }
    written
}
