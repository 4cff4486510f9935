//! The child's last step before `execve`: installing the seccomp filter the parent compiled
//! ([`crate::seccomp`]). One system call on a `sock_fprog` on the stack that points into the parent's program.

use std::ptr;

use libc::c_int;

use super::sys::{check, errno, fail, prctl};
use super::Setup;
use crate::errors::Step;

/// Installs `seccomp=`'s filter, if there is one.
///
/// The kernel takes a filter from a process that holds `CAP_SYS_ADMIN` in its user namespace (root, or root
/// in the box's user namespace), or else only with `no_new_privs` set, lest the filter fool a setuid program
/// it runs (denying its `setuid` so that it keeps root). A box without that capability (`user=` another id,
/// or capabilities dropped) gets `no_new_privs` first: its setuid programs then gain nothing, which is the
/// safe side of what it asked for.
pub fn install_seccomp(s: &Setup<'_>) {
    let Some(filter) = &s.config.seccomp else { return };
    let program = filter.instructions();
    // At most BPF_MAXINSNS (4096) instructions: the parent checked.
    let fprog = libc::sock_fprog { len: program.len() as u16, filter: program.as_ptr().cast_mut().cast() };
    if set_filter(&fprog) == 0 {
        return;
    }
    if errno() != libc::EACCES {
        fail(s, Step::Seccomp);
    }
    check(s, Step::Seccomp, prctl(libc::PR_SET_NO_NEW_PRIVS, 1));
    check(s, Step::Seccomp, set_filter(&fprog));
}

fn set_filter(fprog: &libc::sock_fprog) -> c_int {
    // SAFETY: seccomp(2) copies the program, which the parent keeps alive (seccompiler's `sock_filter` has
    // the kernel's layout), and reads the `sock_fprog` on our stack.
    unsafe { libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, 0, ptr::from_ref(fprog)) as c_int }
}
