//! `tty=True` in the child: a new session whose controlling terminal is the box's pseudo-terminal (see
//! [`crate::tty`] for where the pair is made). Raw system calls on prepared data and stack buffers only.

use std::ffi::CStr;

use libc::c_int;

use super::sys::{check, close, fail, fcntl, open};
use super::Setup;
use crate::errors::Step;

/// The box's terminal, as the parent prepared it.
#[derive(Clone, Copy)]
pub struct TerminalPlan<'a> {
    /// The slave the parent opened from its own `/dev/ptmx`, or -1.
    pub slave: c_int,
    /// The box's own `ptmx`, opened here after the filesystem step, and the socket on which its master goes to
    /// the parent (-1 without).
    pub ptmx: Option<&'a CStr>,
    pub sock: c_int,
    /// The size the terminal starts with.
    pub size: libc::winsize,
}

/// Starts a new session with the box's terminal as its controlling terminal; returns the slave's fd (CLOEXEC,
/// at 3 or above: the stdio step puts it on 0-2).
pub(crate) fn take_terminal(s: &Setup<'_>, terminal: &TerminalPlan<'_>) -> c_int {
    let slave = match terminal.ptmx {
        Some(ptmx) => open_box_pty(s, ptmx, terminal),
        None => terminal.slave,
    };
    // SAFETY: setsid(2) has no arguments.
    check(s, Step::Session, unsafe { libc::setsid() });
    // 0: do not steal a terminal that is another session's (this one is new: nobody's).
    // SAFETY: TIOCSCTTY takes an integer.
    check(s, Step::Terminal, unsafe { libc::ioctl(slave, libc::TIOCSCTTY, 0) });
    slave
}

/// Opens a pty in the box's own devpts, sends its master to the parent and returns the slave.
fn open_box_pty(s: &Setup<'_>, ptmx: &CStr, terminal: &TerminalPlan<'_>) -> c_int {
    let master = open(ptmx, libc::O_RDWR | libc::O_NOCTTY);
    check(s, Step::Pty, master);
    let unlock: c_int = 0;
    // SAFETY: TIOCSPTLCK reads an int from a stack variable (unlockpt).
    check(s, Step::Pty, unsafe { libc::ioctl(master, libc::TIOCSPTLCK, &raw const unlock) });
    let size = terminal.size;
    // SAFETY: TIOCSWINSZ reads a winsize from a stack variable.
    check(s, Step::Pty, unsafe { libc::ioctl(master, libc::TIOCSWINSZ, &raw const size) });
    // SAFETY: TIOCGPTPEER takes open flags and returns a new fd for the slave of this very master.
    let slave = unsafe { libc::ioctl(master, libc::TIOCGPTPEER, libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    check(s, Step::Pty, slave);
    // Above 2 (the caller may have closed one of 0-2), so that the stdio step's dup2s cannot clobber it.
    let slave = if slave < 3 {
        let lifted = fcntl(slave, libc::F_DUPFD_CLOEXEC, 3);
        check(s, Step::Pty, lifted);
        close(slave);
        lifted
    } else {
        slave
    };
    if send_fd(terminal.sock, master) < 0 {
        fail(s, Step::Pty);
    }
    close(master);
    slave
}

/// One `sendmsg(2)` of a byte and `fd` (`SCM_RIGHTS`), from stack buffers.
fn send_fd(sock: c_int, fd: c_int) -> isize {
    let mut byte = [b't'];
    // Room for one fd, aligned as a cmsghdr (16 bytes of header and 4 of data, padded).
    let mut control = [0u64; 4];
    let mut iov = libc::iovec { iov_base: byte.as_mut_ptr().cast(), iov_len: 1 };
    // SAFETY: a zeroed msghdr is valid; we point it at the stack buffers above.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE is arithmetic.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(std::mem::size_of::<c_int>() as u32) } as usize;
    // SAFETY: the control buffer is larger than CMSG_SPACE(sizeof(int)) and aligned: its first header is
    // in it, and CMSG_DATA of that header has room for an int. Pointer arithmetic and stores only.
    #[allow(clippy::multiple_unsafe_ops_per_block, reason = "one header filled in place")]
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
        if cmsg.is_null() {
            return -1;
        }
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<c_int>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<c_int>(), fd);
    }
    // SAFETY: sendmsg from the buffers above.
    unsafe { libc::sendmsg(sock, &raw const msg, libc::MSG_NOSIGNAL) }
}
