//! Confinement, the child's last steps before exec (the order of bubblewrap and crun): resource limits,
//! the bounding set, the change of ids, the capabilities kept, `no_new_privs`. Seccomp comes after all
//! of them, right before `execve`.

use libc::{c_int, c_ulong};

use super::sys::{check, errno, fail, prctl, report_at};
use super::Setup;
use crate::capabilities;
use crate::errors::Step;

/// `capset(2)`'s header and data (`linux/capability.h`; not in the libc crate). The `caps` crate has them
/// but builds sets in hash maps: nothing the child may allocate.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: c_int,
}

#[repr(C)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// `prctl(2)` with two integer arguments.
fn prctl2(option: c_int, arg2: c_ulong, arg3: c_ulong) -> c_int {
    // SAFETY: the options used here take integers and no pointer.
    unsafe { libc::prctl(option, arg2, arg3, 0, 0) }
}

/// Sets `rlimits`; a failure names the limit (its index rides in the record's `at`).
pub(crate) fn set_rlimits(s: &Setup<'_>) {
    for (at, limit) in (0u16..).zip(s.config.rlimits.iter()) {
        let value = libc::rlimit64 { rlim_cur: limit.soft, rlim_max: limit.hard };
        // SAFETY: prlimit64(2) on this process with a stack struct and no old value.
        let ret = unsafe { libc::prlimit64(0, limit.resource, &raw const value, std::ptr::null_mut()) };
        if ret < 0 {
            report_at(s, Step::Rlimits, errno(), at);
        }
    }
}

/// Before the ids change: drops every capability not kept from the bounding set (which takes
/// `CAP_SETPCAP`, so while we are still root) and, when ids will change, asks to keep the permitted set
/// across the change (`capset` then trims it to what is kept).
pub(crate) fn drop_bounding_set(s: &Setup<'_>, ids_change: bool) {
    let Some(keep) = s.config.capabilities else { return };
    for number in 0..=capabilities::LAST {
        if keep.contains(number) {
            continue;
        }
        if prctl(libc::PR_CAPBSET_DROP, c_ulong::from(number)) < 0 {
            if errno() == libc::EINVAL {
                break; // past the kernel's last capability
            }
            fail(s, Step::Capabilities);
        }
    }
    if ids_change {
        check(s, Step::Capabilities, prctl(libc::PR_SET_KEEPCAPS, 1));
    }
}

/// After the ids change: the kept set becomes the effective, permitted and inheritable sets, and the
/// ambient set, so that a program run as a user other than root keeps it across `execve` too.
pub(crate) fn keep_capabilities(s: &Setup<'_>) {
    let Some(keep) = s.config.capabilities else { return };
    let [low, high] = keep.words();
    let mut header = CapHeader { version: CAPABILITY_VERSION_3, pid: 0 };
    let data = [
        CapData { effective: low, permitted: low, inheritable: low },
        CapData { effective: high, permitted: high, inheritable: high },
    ];
    // SAFETY: capset(2) on this thread, with a version-3 header and its two data words on the stack.
    let ret = unsafe { libc::syscall(libc::SYS_capset, &raw mut header, data.as_ptr()) } as c_int;
    check(s, Step::Capabilities, ret);
    check(s, Step::Capabilities, prctl2(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL as c_ulong, 0));
    for number in (0..=capabilities::LAST).filter(|&n| keep.contains(n)) {
        let raise = libc::PR_CAP_AMBIENT_RAISE as c_ulong;
        check(s, Step::Capabilities, prctl2(libc::PR_CAP_AMBIENT, raise, c_ulong::from(number)));
    }
}

/// `PR_SET_NO_NEW_PRIVS`: from here on, `execve` grants nothing (setuid bits and file capabilities are
/// ignored), for this process and all it starts.
pub(crate) fn set_no_new_privs(s: &Setup<'_>) {
    if s.config.no_new_privs {
        check(s, Step::NoNewPrivs, prctl2(libc::PR_SET_NO_NEW_PRIVS, 1, 0));
    }
}
