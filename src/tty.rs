//! `tty=True`: the box's first process starts a new session whose controlling terminal is a fresh
//! pseudo-terminal; the caller keeps the master (`Popen.pty`).
//!
//! Where the pair is made decides which devpts instance it belongs to, and so what `tty` prints inside:
//!
//! - A box with a `Dev()` mount has a devpts instance of its own (`newinstance`). A pty opened from the
//!   caller's `/dev/ptmx` would be the host's (`/dev/pts/7` on the host, a name the box's `/dev/pts` does
//!   not have), and the host's `/dev/pts` would list the box's terminal. So the child opens the box's own
//!   `ptmx` after its filesystem step, takes the slave with `TIOCGPTPEER` (no path lookup of the slave's
//!   name) and hands the master to the parent over a socket pair (`SCM_RIGHTS`, one `sendmsg` from a stack
//!   buffer: a raw, async-signal-safe call). Only the parent can keep the master: the box must never hold it.
//! - Otherwise the parent opens the pair from its own `/dev/ptmx` before the clone, as `openpty` does, and
//!   passes the slave like a stdio fd; its copy of the slave is closed as soon as the child has exec'd, so
//!   that the master reads EOF (`EIO`) once the box's last holder of the slave is gone.
//!
//! Either way the child then calls `setsid` and `ioctl(TIOCSCTTY)` on the slave, in the session step (before
//! the stdio step, which then puts the slave on 0-2 where stdio is not redirected: `TIOCSCTTY` takes any fd
//! of the terminal, so it needs no fd 0). The master is CLOEXEC and at fd 3 or above.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use crate::child::TerminalPlan;
use crate::errors::{Error, Step};
use crate::mounts::MountOption;
use crate::sys::{last_errno, own_fd};

/// The size (rows, columns) a new terminal starts with unless `tty=(rows, cols)` gives one: a VT100's, as
/// terminals default to.
pub const DEFAULT_SIZE: (u16, u16) = (24, 80);

/// `size` as `TIOCSWINSZ` takes it.
#[must_use]
pub const fn winsize((rows, cols): (u16, u16)) -> libc::winsize {
    libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 }
}

/// Where a box's pseudo-terminal comes from (the resolved form of `tty=True`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Terminal {
    /// The box's own `ptmx` (in the devpts of its last `Dev()` mount), opened by the child; `None`: the
    /// caller's `/dev/ptmx`, opened by the parent.
    pub box_ptmx: Option<CString>,
    /// Its size (rows, columns) from the start: a one-shot program (`stty size`, `ls`) sees it before any
    /// `resize` could come.
    pub size: (u16, u16),
}

impl Terminal {
    /// The terminal of a box with `mounts`: from the devpts of the last `Dev()` among them (it covers earlier
    /// ones at the same place), else the caller's.
    #[must_use]
    pub fn for_mounts(mounts: &[MountOption], size: (u16, u16)) -> Terminal {
        let dev = mounts.iter().rev().find(|m| m.kind == "dev");
        let box_ptmx = dev.and_then(|m| {
            let mut path = m.target.clone();
            if path.last() != Some(&b'/') {
                path.push(b'/');
            }
            path.extend_from_slice(b"pts/ptmx");
            CString::new(path).ok()
        });
        Terminal { box_ptmx, size }
    }
}

/// The parent's side of a spawn with a terminal, made before the clone and kept until it is done.
pub(crate) enum Prepared {
    /// The pair, from the caller's `/dev/ptmx`: the child gets `slave`.
    Pair { master: OwnedFd, slave: OwnedFd },
    /// The socket pair over which the child sends the master of the box's own pty (`ours`, `childs`).
    Handover { ours: OwnedFd, childs: OwnedFd },
}

fn pty_error(what: &'static str) -> Error {
    Error::os(Step::Pty, last_errno()).with_what(what)
}

/// `TIOCSWINSZ`: the terminal's size (the kernel sends `SIGWINCH` to its foreground process group).
pub(crate) fn set_size(master: RawFd, size: &libc::winsize) -> Result<(), Error> {
    // SAFETY: TIOCSWINSZ reads a winsize from the pointer.
    if unsafe { libc::ioctl(master, libc::TIOCSWINSZ, std::ptr::from_ref(size)) } < 0 {
        return Err(pty_error("set the terminal's size"));
    }
    Ok(())
}

/// Opens a pseudo-terminal pair from the caller's `/dev/ptmx` (both ends CLOEXEC, at 3 or above, neither
/// becoming our controlling terminal), unlocked and sized.
pub(crate) fn open_pair(size: (u16, u16)) -> Result<(OwnedFd, OwnedFd), Error> {
    let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: open(2) of a static path.
    let master = own_fd(unsafe { libc::open(c"/dev/ptmx".as_ptr(), flags) })
        .map_err(|_| pty_error("open a pseudo-terminal (/dev/ptmx)"))?;
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads an int from the pointer (unlockpt).
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &raw const unlock) } < 0 {
        return Err(pty_error("unlock the pseudo-terminal"));
    }
    // SAFETY: TIOCGPTPEER takes open flags and returns a new fd for the slave.
    let slave = own_fd(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, flags) })
        .map_err(|_| pty_error("open the pseudo-terminal's slave"))?;
    set_size(master.as_raw_fd(), &winsize(size))?;
    Ok((master, slave))
}

/// What the parent makes for `terminal` before the clone. `process_group` is the spawn's (-1 or `None`: none).
pub(crate) fn prepare(terminal: &Terminal, process_group: Option<libc::pid_t>) -> Result<Prepared, Error> {
    if process_group.is_some_and(|pgid| pgid >= 0) {
        let message = "tty=True makes the box the leader of a new session and of its process group: it cannot \
                       take process_group";
        return Err(Error::rule("process_group", message));
    }
    if terminal.box_ptmx.is_some() {
        let (ours, childs) = crate::sys::socketpair(libc::SOCK_SEQPACKET)?;
        return Ok(Prepared::Handover { ours, childs });
    }
    let (master, slave) = open_pair(terminal.size)?;
    Ok(Prepared::Pair { master, slave })
}

impl Prepared {
    /// What the child is given: the slave, or the box's `ptmx` and the socket for its master.
    pub(crate) fn plan<'a>(&'a self, terminal: &'a Terminal) -> TerminalPlan<'a> {
        match self {
            Prepared::Pair { slave, .. } => {
                TerminalPlan { slave: slave.as_raw_fd(), ptmx: None, sock: -1, size: winsize(terminal.size) }
            }
            Prepared::Handover { childs, .. } => TerminalPlan {
                slave: -1,
                ptmx: terminal.box_ptmx.as_deref(),
                sock: childs.as_raw_fd(),
                size: winsize(terminal.size),
            },
        }
    }

    /// The master, once the child has exec'd: ours, or the one the child sent (already queued on the
    /// socket: it was sent before the exec). Our copies of the slave and of the child's socket go with
    /// `self`.
    pub(crate) fn master(self) -> Result<OwnedFd, Error> {
        match self {
            Prepared::Pair { master, .. } => Ok(master),
            Prepared::Handover { ours, .. } => match crate::spawn::receive_fd(ours.as_raw_fd())? {
                Some(master) => Ok(master),
                None => Err(Error::Internal("the box's pseudo-terminal did not arrive".into())),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(target: &[u8]) -> MountOption {
        MountOption { kind: "dev".into(), target: target.to_vec(), ..MountOption::default() }
    }

    #[test]
    fn the_last_dev_mount_gives_the_box_its_terminal() {
        assert_eq!(Terminal::for_mounts(&[], DEFAULT_SIZE).box_ptmx, None);
        let tmp = MountOption { kind: "tmpfs".into(), target: b"/tmp".to_vec(), ..MountOption::default() };
        assert_eq!(Terminal::for_mounts(std::slice::from_ref(&tmp), DEFAULT_SIZE).box_ptmx, None);
        let ptmx = Terminal::for_mounts(&[dev(b"/dev"), tmp, dev(b"/box/dev")], DEFAULT_SIZE).box_ptmx.unwrap();
        assert_eq!(ptmx.as_bytes(), b"/box/dev/pts/ptmx");
    }

    #[test]
    fn a_pair_is_unlocked_sized_and_cloexec() {
        let (master, slave) = open_pair((50, 132)).unwrap();
        for fd in [&master, &slave] {
            assert!(fd.as_raw_fd() >= 3);
            // SAFETY: F_GETFD on our own fd.
            assert_ne!(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) } & libc::FD_CLOEXEC, 0);
        }
        let mut size = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: TIOCGWINSZ writes a winsize.
        assert_eq!(unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCGWINSZ, &raw mut size) }, 0);
        assert_eq!((size.ws_row, size.ws_col), (50, 132));
    }
}
