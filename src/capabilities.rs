//! Capabilities by name, and the set a box keeps (`capabilities=`).
//!
//! The names are the kernel's (`include/uapi/linux/capability.h`), in the order of their numbers; a box
//! keeps a set given by name and everything else is dropped in the child (see `child::confine`).

use crate::errors::{quoted, Error};

/// Every capability the kernel knows, by number (`CAP_CHOWN` is 0). A name not here is refused; a kernel
/// older than the table answers `EINVAL` for the numbers it does not know, which the child skips.
pub const NAMES: [&str; 41] = [
    "chown",
    "dac_override",
    "dac_read_search",
    "fowner",
    "fsetid",
    "kill",
    "setgid",
    "setuid",
    "setpcap",
    "linux_immutable",
    "net_bind_service",
    "net_broadcast",
    "net_admin",
    "net_raw",
    "ipc_lock",
    "ipc_owner",
    "sys_module",
    "sys_rawio",
    "sys_chroot",
    "sys_ptrace",
    "sys_pacct",
    "sys_admin",
    "sys_boot",
    "sys_nice",
    "sys_resource",
    "sys_time",
    "sys_tty_config",
    "mknod",
    "lease",
    "audit_write",
    "audit_control",
    "setfcap",
    "mac_override",
    "mac_admin",
    "syslog",
    "wake_alarm",
    "block_suspend",
    "audit_read",
    "perfmon",
    "bpf",
    "checkpoint_restore",
];

/// The highest capability number any kernel may know: the child tries to drop up to here.
pub const LAST: u32 = 63;

/// A set of capabilities, one bit per number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct CapSet(pub u64);

impl CapSet {
    /// The set named by `names`: `"CAP_NET_RAW"`, `"cap_net_raw"` or `"net_raw"`, in any case.
    pub fn parse<S: AsRef<str>>(names: &[S]) -> Result<CapSet, Error> {
        let mut bits = 0u64;
        for name in names {
            let given = name.as_ref();
            let lower = given.to_ascii_lowercase();
            let short = lower.strip_prefix("cap_").unwrap_or(&lower);
            let Some(number) = NAMES.iter().position(|&n| n == short) else {
                return Err(Error::bad_option(
                    "capabilities",
                    format_args!("names {}, which is not a capability (see capabilities(7))", quoted(given)),
                ));
            };
            bits |= 1 << number;
        }
        Ok(CapSet(bits))
    }

    #[must_use]
    pub fn contains(self, number: u32) -> bool {
        number < 64 && self.0 & (1 << number) != 0
    }

    /// The low and high words, as `capset(2)`'s version 3 takes them.
    #[must_use]
    pub fn words(self) -> [u32; 2] {
        [self.0 as u32, (self.0 >> 32) as u32]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_in_any_spelling() {
        let set = CapSet::parse(&["CAP_NET_BIND_SERVICE", "net_raw", "Cap_Sys_Admin"]).unwrap();
        assert_eq!(set.0, (1 << 10) | (1 << 13) | (1 << 21));
        assert_eq!(CapSet::parse::<&str>(&[]).unwrap(), CapSet(0));
        assert_eq!(CapSet::parse(&["checkpoint_restore"]).unwrap().words(), [0, 1 << 8]);
    }

    #[test]
    fn unknown_names_are_refused() {
        for bad in ["net_bind", "CAP_", "", "cap_everything"] {
            let err = CapSet::parse(&[bad]).unwrap_err().to_string();
            assert!(err.contains("capabilities") && err.contains("which is not a capability"), "{err}");
        }
    }

    #[test]
    fn the_table_matches_the_kernel_headers() {
        // libc's constants are the headers' numbers.
        assert_eq!(NAMES.iter().position(|&n| n == "sys_admin"), Some(21));
        assert_eq!(NAMES.iter().position(|&n| n == "bpf"), Some(39));
        assert_eq!(NAMES.len(), 41);
    }
}
