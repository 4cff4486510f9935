//! The error pipe (or the helper's socket), read without ever waiting for an EOF that a process forked
//! meanwhile could hold back: records, the helper's handed-over pipe, and a pidfd for the child's death.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use libc::{c_int, pid_t};

use super::failure::failure;
use crate::child::Setup;
use crate::errors::{Error, OsFailure};
use crate::net::Eth0;
use crate::protocol::{self, Message};
use crate::spec::Spec;
use crate::sys::last_errno;

#[derive(Clone, Copy)]
pub(crate) enum Read {
    Message(Message),
    Eof,
    Nothing,
}

/// Reads one record from the error pipe (or socket).
pub(crate) fn read_record(fd: RawFd) -> Result<Read, Error> {
    let mut buf = [0u8; protocol::SIZE];
    loop {
        // SAFETY: reading into a stack buffer of that size.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            if n == 0 {
                return Ok(Read::Eof);
            }
            // A record is written with one write(2) of 8 bytes, which a pipe delivers whole: anything
            // shorter is corrupt (and waiting for the rest could wait for ever).
            return Ok(Read::Message(Message::decode(&buf[..n as usize])?));
        }
        match last_errno() {
            libc::EINTR => {}
            libc::EAGAIN => return Ok(Read::Nothing),
            e => return Err(Error::Internal(format!("cannot read the error pipe: errno {e}"))),
        }
    }
}

/// One `recvmsg` on `sock` into `buf`, without waiting: the bytes received and the fd passed with them (CLOEXEC,
/// at 3 or above), or `None` when nothing is there. `what` names the socket in errors.
fn receive_with_fd(sock: RawFd, buf: &mut [u8], what: &str) -> Result<Option<(usize, Option<OwnedFd>)>, Error> {
    // Room for one fd, aligned as a cmsghdr.
    let mut control = [0u64; 4];
    loop {
        let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
        // SAFETY: a zeroed msghdr is valid; it points at our buffers.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &raw mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control);
        // SAFETY: recvmsg into the buffers above; MSG_CMSG_CLOEXEC makes a passed fd close-on-exec.
        let n = unsafe { libc::recvmsg(sock, &raw mut msg, libc::MSG_CMSG_CLOEXEC | libc::MSG_DONTWAIT) };
        if n < 0 {
            match last_errno() {
                libc::EINTR => continue,
                libc::EAGAIN => return Ok(None),
                e => return Err(Error::Internal(format!("cannot read {what}: errno {e}"))),
            }
        }
        let passed = passed_fd(&msg)
            .map(|fd| crate::sys::own_fd(fd).map_err(|e| Error::Internal(format!("cannot keep {what}'s fd: {e}"))))
            .transpose()?;
        return Ok(Some((n as usize, passed)));
    }
}

/// Receives one record from the helper's socket, with the fd it hands over, if any.
pub(crate) fn receive_record(sock: RawFd) -> Result<(Read, Option<OwnedFd>), Error> {
    let mut buf = [0u8; protocol::SIZE];
    match receive_with_fd(sock, &mut buf, "the helper's socket")? {
        None => Ok((Read::Nothing, None)),
        Some((0, passed)) => Ok((Read::Eof, passed)),
        Some((n, passed)) => Ok((Read::Message(Message::decode(&buf[..n])?), passed)),
    }
}

/// Receives an fd sent on `sock` (`tty=True`'s master, see [`crate::tty`]), without waiting: `None` when
/// nothing was sent. CLOEXEC, at 3 or above.
pub(crate) fn receive_fd(sock: RawFd) -> Result<Option<OwnedFd>, Error> {
    let mut byte = [0u8; 1];
    Ok(receive_with_fd(sock, &mut byte, "the box's terminal socket")?.and_then(|(_, passed)| passed))
}

/// The fd an `SCM_RIGHTS` control message of `msg` carries. The helper sends at most one.
#[allow(
    clippy::multiple_unsafe_ops_per_block,
    reason = "the CMSG_* macros are one walk over the buffer the kernel filled"
)]
fn passed_fd(msg: &libc::msghdr) -> Option<RawFd> {
    // SAFETY: `msg` was filled by recvmsg: its control buffer holds well-formed headers up to
    // msg_controllen, which is what CMSG_FIRSTHDR/NXTHDR walk; CMSG_DATA of SCM_RIGHTS holds an int.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                return Some(std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>()));
            }
            cmsg = libc::CMSG_NXTHDR(msg, cmsg);
        }
    }
    None
}

/// Waits until `fd` is readable or the process behind `pidfd` has exited; true when `fd` is readable.
pub(crate) fn wait_readable(fd: RawFd, pidfd: &OwnedFd) -> Result<bool, Error> {
    let mut fds = [
        libc::pollfd { fd, events: libc::POLLIN, revents: 0 },
        libc::pollfd { fd: pidfd.as_raw_fd(), events: libc::POLLIN, revents: 0 },
    ];
    loop {
        // SAFETY: poll on our own array.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if n < 0 {
            match last_errno() {
                libc::EINTR => continue,
                e => return Err(Error::Internal(format!("cannot wait for the child: errno {e}"))),
            }
        }
        if fds[0].revents != 0 {
            return Ok(true);
        }
        if fds[1].revents != 0 {
            // It has exited. What it wrote before is there: the caller reads without blocking.
            // SAFETY: setting O_NONBLOCK on our own fd.
            unsafe { libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK) };
            return Ok(false);
        }
    }
}

/// The error pipe, the go pipe of the id-map handshake and the id-map texts of a child's [`Setup`], made
/// in the parent before it clones (here) or forks (`nsbox.call`, see [`crate::fork`]).
pub(crate) struct Channels {
    pub err_r: OwnedFd,
    pub err_w: OwnedFd,
    /// The caller's dumpable flag, for the child to put back after changing ids.
    dumpable: c_int,
    /// (read, write) when the parent writes the id maps or makes the network while the child waits.
    pub go: Option<(OwnedFd, OwnedFd)>,
    uid_text: CString,
    gid_text: CString,
}

impl Channels {
    /// `socket`: the error channel is a socket pair, over which the helper program can hand over an fd.
    pub fn new(config: &Spec, network: bool, socket: bool) -> Result<Channels, Error> {
        let user = config.user.as_ref();
        let (err_r, err_w) = if socket { crate::sys::socketpair(libc::SOCK_SEQPACKET)? } else { crate::sys::pipe()? };
        let go = if config.parent_writes_maps() || network { Some(crate::sys::pipe()?) } else { None };
        let (uid_text, gid_text) = match user {
            Some(u) if u.child_writes_maps => (
                CString::new(u.uid_map.to_proc_text()).expect("digits"),
                CString::new(u.gid_map.to_proc_text()).expect("digits"),
            ),
            _ => (CString::default(), CString::default()),
        };
        // SAFETY: prctl(2) reading a flag.
        let dumpable = unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) }.max(0);
        Ok(Channels { err_r, err_w, dumpable, go, uid_text, gid_text })
    }

    /// What the child's namespace steps use; borrows `self`, which must outlive the child's use of it.
    pub fn setup<'a>(&'a self, config: &'a Spec, eth0: Option<&'a Eth0>) -> Setup<'a> {
        Setup {
            config,
            err_fd: self.err_w.as_raw_fd(),
            err_read_fd: self.err_r.as_raw_fd(),
            dumpable: self.dumpable,
            go_fd: self.go.as_ref().map_or(-1, |(r, _)| r.as_raw_fd()),
            go_write_fd: self.go.as_ref().map_or(-1, |(_, w)| w.as_raw_fd()),
            uid_map: &self.uid_text,
            gid_map: &self.gid_text,
            eth0,
        }
    }
}

/// A pidfd for a child of ours, or `None` if it has been reaped already (`SIGCHLD` ignored): then all it
/// wrote is in the pipe.
pub(crate) fn watch(pid: pid_t) -> Result<Option<OwnedFd>, Error> {
    match crate::sys::pidfd_open(pid) {
        Ok(fd) => Ok(Some(fd)),
        Err(Error::Os(OsFailure { errno: libc::ESRCH, .. })) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Waits until the error channel is readable or the process behind `pidfd` has exited; without a pidfd
/// (the process is gone) only reads what is there.
pub(crate) fn wait_or_read_what_is_there(err_r: RawFd, pidfd: Option<&OwnedFd>) -> Result<(), Error> {
    if let Some(pidfd) = pidfd {
        return wait_readable(err_r, pidfd).map(|_| ());
    }
    // SAFETY: setting O_NONBLOCK on our own fd.
    unsafe { libc::fcntl(err_r, libc::F_SETFL, libc::O_NONBLOCK) };
    Ok(())
}

/// With `init=True`: the init has exec'd; it says "running" once the command has, after the command's
/// own failure record if it failed. Watched through a pidfd, never waiting for EOF.
pub(crate) fn await_init(config: &Spec, err_r: RawFd, pidfd: Option<&OwnedFd>) -> Result<(), Error> {
    wait_or_read_what_is_there(err_r, pidfd)?;
    match next_record(err_r)? {
        Read::Message(Message::Running) => Ok(()),
        Read::Eof | Read::Nothing => Err(Error::Internal("the init process died before the command ran".into())),
        read @ Read::Message(_) => outcome_of(config, read),
    }
}

/// An `exec` into a time namespace: the helper hands over a pipe whose write end only it holds (see
/// nsbox-helper.c); EOF there means the command has exec'd.
pub(crate) fn await_exec_handoff(config: &Spec, err_r: RawFd, pidfd: Option<&OwnedFd>) -> Result<(), Error> {
    loop {
        wait_or_read_what_is_there(err_r, pidfd)?;
        match receive_record(err_r)? {
            (Read::Message(Message::Handoff), Some(pipe)) => {
                // Blocking: the helper, then the command, hold the only write end (close-on-exec).
                return read_record(pipe.as_raw_fd()).and_then(|r| outcome_of(config, r));
            }
            (Read::Message(Message::End), _) => {}
            (Read::Message(Message::Handoff), None) => {
                return Err(Error::Internal("the helper's exec pipe did not arrive".into()))
            }
            (Read::Eof | Read::Nothing, _) => {
                return Err(Error::Internal("the helper program died before the command ran".into()))
            }
            (record, _) => return outcome_of(config, record),
        }
    }
}

/// What a read of the error pipe means once only failures can come: nothing, or a failure with an errno.
pub(crate) fn outcome_of(config: &Spec, read: Read) -> Result<(), Error> {
    match read {
        Read::Eof | Read::Nothing => Ok(()),
        // Only failures can come now, and a failure has an errno.
        Read::Message(Message::Failed(step, errno, at)) => Err(failure(config, step, errno, at)),
        // Only failures can come now.
        Read::Message(_) => Err(Error::Internal("unexpected record on the error pipe".into())),
    }
}

/// The parent's marker after the child's records (see [`send_end_of_records`]); never sent by a child.
pub(crate) const END_OF_RECORDS: Message = Message::End;

/// Writes [`END_OF_RECORDS`] on our own copy of the error pipe's write end.
pub(crate) fn send_end_of_records(err_w: &OwnedFd) {
    let rec = END_OF_RECORDS.encode();
    // SAFETY: writing a stack buffer to our own pipe.
    unsafe { libc::write(err_w.as_raw_fd(), rec.as_ptr().cast(), rec.len()) };
}

/// The next record that is not our own end marker.
pub(crate) fn next_record(err_r: RawFd) -> Result<Read, Error> {
    loop {
        match read_record(err_r)? {
            Read::Message(Message::End) => {}
            other => return Ok(other),
        }
    }
}
