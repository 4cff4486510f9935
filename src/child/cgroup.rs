//! The child's first step: into the box's cgroup, before anything else runs or is cloned.

use libc::c_int;

use super::sys::{close, errno, report, write};
use super::Setup;
use crate::errors::Step;

/// Writes `0` (the writer itself) to each of the box's `cgroup.procs` files, which the parent opened, and
/// closes them. The kernel checks the credentials (and on cgroup v2 the cgroup namespace) of the opener,
/// the caller: a user namespace the clone made changes nothing.
pub fn enter_cgroup(s: &Setup<'_>, procs: &[c_int]) {
    for &fd in procs {
        let n = write(fd, b"0");
        if n != 1 {
            report(s, Step::Cgroup, if n < 0 { errno() } else { libc::EIO });
        }
        close(fd);
    }
}
