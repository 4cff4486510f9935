//! The namespace kinds: the one table every module iterates (as youki's `ORDERED_NAMESPACES`).

/// A kind of Linux namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Namespace {
    User,
    Mount,
    Uts,
    Ipc,
    Net,
    Cgroup,
    Pid,
    Time,
}

impl Namespace {
    /// Every kind, in the order nsbox lists them (as `unshare --help` does, user and PID first).
    pub const ALL: [Namespace; 8] = [
        Namespace::User,
        Namespace::Pid,
        Namespace::Mount,
        Namespace::Uts,
        Namespace::Ipc,
        Namespace::Net,
        Namespace::Cgroup,
        Namespace::Time,
    ];

    /// Every kind, in the order they are joined: user first (it grants the capabilities to join the
    /// rest), PID and time last (both apply to children, and a time namespace needs a process of its own).
    pub const JOIN_ORDER: [Namespace; 8] = [
        Namespace::User,
        Namespace::Mount,
        Namespace::Uts,
        Namespace::Ipc,
        Namespace::Net,
        Namespace::Cgroup,
        Namespace::Pid,
        Namespace::Time,
    ];

    /// The name under `/proc/PID/ns/` (and of a persisted namespace's file).
    #[must_use]
    pub const fn proc_name(self) -> &'static str {
        match self {
            Namespace::User => "user",
            Namespace::Mount => "mnt",
            Namespace::Uts => "uts",
            Namespace::Ipc => "ipc",
            Namespace::Net => "net",
            Namespace::Cgroup => "cgroup",
            Namespace::Pid => "pid",
            Namespace::Time => "time",
        }
    }

    /// How messages name it ("the network namespace").
    #[must_use]
    pub const fn long_name(self) -> &'static str {
        match self {
            Namespace::User => "user",
            Namespace::Mount => "mount",
            Namespace::Uts => "UTS",
            Namespace::Ipc => "IPC",
            Namespace::Net => "network",
            Namespace::Cgroup => "cgroup",
            Namespace::Pid => "PID",
            Namespace::Time => "time",
        }
    }

    /// The `CLONE_NEW*` flag (for `clone`, `unshare` and `setns`).
    #[must_use]
    pub const fn flag(self) -> libc::c_int {
        match self {
            Namespace::User => libc::CLONE_NEWUSER,
            Namespace::Mount => libc::CLONE_NEWNS,
            Namespace::Uts => libc::CLONE_NEWUTS,
            Namespace::Ipc => libc::CLONE_NEWIPC,
            Namespace::Net => libc::CLONE_NEWNET,
            Namespace::Cgroup => libc::CLONE_NEWCGROUP,
            Namespace::Pid => libc::CLONE_NEWPID,
            Namespace::Time => libc::CLONE_NEWTIME,
        }
    }

    /// The name of the link to the namespace this process's children get, for the kinds that have one.
    #[must_use]
    pub const fn for_children_name(self) -> Option<&'static str> {
        match self {
            Namespace::Pid => Some("pid_for_children"),
            Namespace::Time => Some("time_for_children"),
            _ => None,
        }
    }

    /// Every kind, in the order of their `/proc/PID/ns` names: how nsbox lists them to people.
    #[must_use]
    pub fn by_proc_name() -> [Namespace; 8] {
        let mut all = Namespace::ALL;
        all.sort_by_key(|ns| ns.proc_name());
        all
    }

    #[must_use]
    pub fn from_proc_name(name: &str) -> Option<Namespace> {
        Namespace::ALL.into_iter().find(|ns| ns.proc_name() == name)
    }

    const fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// A set of namespace kinds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Namespaces(u8);

impl Namespaces {
    #[must_use]
    pub const fn empty() -> Namespaces {
        Namespaces(0)
    }

    #[must_use]
    pub const fn contains(self, ns: Namespace) -> bool {
        self.0 & ns.bit() != 0
    }

    pub fn insert(&mut self, ns: Namespace) {
        self.0 |= ns.bit();
    }

    #[must_use]
    pub fn with(mut self, ns: Namespace, on: bool) -> Namespaces {
        if on {
            self.insert(ns);
        }
        self
    }

    #[must_use]
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The kinds in the set, in [`Namespace::ALL`]'s order.
    pub fn iter(self) -> impl Iterator<Item = Namespace> {
        Namespace::ALL.into_iter().filter(move |ns| self.contains(*ns))
    }

    /// The flags for `clone(2)`/`unshare(2)`, without the time namespace's: `CLONE_NEWTIME` shares its bit
    /// with the exit signal of legacy `clone`, so a time namespace is always unshared on its own.
    #[must_use]
    pub fn clone_flags(self) -> libc::c_int {
        self.iter().filter(|ns| *ns != Namespace::Time).fold(0, |flags, ns| flags | ns.flag())
    }

    /// Their `/proc/PID/ns` names, in order.
    #[must_use]
    pub fn proc_names(self) -> Vec<&'static str> {
        self.iter().map(Namespace::proc_name).collect()
    }
}

impl FromIterator<Namespace> for Namespaces {
    fn from_iter<I: IntoIterator<Item = Namespace>>(iter: I) -> Self {
        let mut set = Namespaces::empty();
        for ns in iter {
            set.insert(ns);
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_the_order_joins_user_first_and_time_last() {
        for ns in Namespace::ALL {
            assert_eq!(Namespace::from_proc_name(ns.proc_name()), Some(ns));
            assert!(Namespace::JOIN_ORDER.contains(&ns));
        }
        assert_eq!(Namespace::JOIN_ORDER.first(), Some(&Namespace::User));
        assert_eq!(Namespace::JOIN_ORDER[6..], [Namespace::Pid, Namespace::Time]);
    }

    #[test]
    fn clone_flags_leave_out_time() {
        let set: Namespaces = [Namespace::Pid, Namespace::Time, Namespace::Net].into_iter().collect();
        assert_eq!(set.clone_flags(), libc::CLONE_NEWPID | libc::CLONE_NEWNET);
        assert_eq!(set.proc_names(), ["pid", "net", "time"]);
    }
}
