//! The namespace options a user asks for, and their checked, resolved form.
//!
//! Everything here is pure: it decides what the child will do, so it can be tested without privileges.

use std::ffi::CString;
use std::fmt::Write as _;

use crate::capabilities::CapSet;
use crate::cgroup::{Limits, SizeArg};
use crate::errors::{quoted, Error};
use crate::idmap::{IdMap, IdRange};
use crate::mounts::{Filesystem, MountOption};
use crate::namespace::{Namespace, Namespaces};
use crate::rlimits::Rlimit;
use crate::seccomp::{Filter, SeccompOptions};
use crate::tty::Terminal;

/// `HOST_NAME_MAX` on Linux.
pub const HOSTNAME_MAX: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Propagation {
    #[default]
    Private,
    Slave,
    Shared,
    Unchanged,
}

impl Propagation {
    pub fn parse(text: &str) -> Result<Propagation, Error> {
        match text {
            "private" => Ok(Propagation::Private),
            "slave" => Ok(Propagation::Slave),
            "shared" => Ok(Propagation::Shared),
            "unchanged" => Ok(Propagation::Unchanged),
            other => Err(Error::bad_option(
                "propagation",
                format_args!("must be 'private', 'slave', 'shared' or 'unchanged', not {}", quoted(other)),
            )),
        }
    }

    /// The `mount(2)` flag applied recursively to `/`, or `None` to leave it as it is.
    #[must_use]
    pub fn mount_flag(self) -> Option<libc::c_ulong> {
        match self {
            Propagation::Private => Some(libc::MS_PRIVATE),
            Propagation::Slave => Some(libc::MS_SLAVE),
            Propagation::Shared => Some(libc::MS_SHARED),
            Propagation::Unchanged => None,
        }
    }

    /// Whether nothing mounted in the box's new mount namespace can propagate to the caller's: `/` is made
    /// private or slave, recursively, before anything is mounted.
    #[must_use]
    pub fn stops_propagation_out(self) -> bool {
        matches!(self, Propagation::Private | Propagation::Slave)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Setgroups {
    #[default]
    Deny,
    Allow,
}

impl Setgroups {
    pub fn parse(text: &str) -> Result<Setgroups, Error> {
        match text {
            "deny" => Ok(Setgroups::Deny),
            "allow" => Ok(Setgroups::Allow),
            other => {
                Err(Error::bad_option("setgroups", format_args!("must be 'allow' or 'deny', not {}", quoted(other))))
            }
        }
    }
}

/// A clock offset in seconds and nanoseconds, as `/proc/PID/timens_offsets` takes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offset {
    pub secs: i64,
    pub nanos: u32,
}

impl Offset {
    pub fn from_secs_f64(option: &'static str, secs: f64) -> Result<Offset, Error> {
        // The kernel keeps offsets as timespec64; stay far inside it and reject NaN/inf.
        if !secs.is_finite() || secs.abs() > 1e15 {
            return Err(Error::bad_option(option, format_args!("must be a finite number of seconds, not {secs}")));
        }
        let whole = secs.floor();
        let nanos = ((secs - whole) * 1e9).round() as u32;
        let (whole, nanos) = if nanos >= 1_000_000_000 { (whole + 1.0, 0) } else { (whole, nanos) };
        Ok(Offset { secs: whole as i64, nanos })
    }
}

/// What the caller asked for, as given (before implications and defaults): the core's one declaration of
/// the options. The Python glue fills it from a dict with every one of these names (the Python layer's
/// declaration, `_options.py`, gives each a default).
#[allow(clippy::struct_excessive_bools)] // one flag per namespace kind, as unshare(1) has
#[derive(Clone, Debug, Default)]
#[cfg_attr(feature = "python", derive(pyo3::FromPyObject))]
#[cfg_attr(feature = "python", pyo3(from_item_all))]
pub struct Options {
    pub pid: bool,
    pub mount: bool,
    pub uts: bool,
    pub ipc: bool,
    pub net: bool,
    /// `None`: a user namespace exactly when the caller is not root and another namespace is asked for.
    pub user: Option<bool>,
    pub cgroup: bool,
    pub time: bool,
    pub mount_proc: bool,
    pub propagation: Option<String>,
    pub hostname: Option<Vec<u8>>,
    pub uid_map: Option<Vec<IdRange>>,
    pub gid_map: Option<Vec<IdRange>>,
    pub setgroups: Option<String>,
    pub monotonic_offset: Option<f64>,
    pub boottime_offset: Option<f64>,
    /// Run a small init as PID 1 that starts the command as PID 2 (implies `pid`).
    pub init: bool,
    /// Where `mount_proc` mounts proc (`unshare --mount-proc=DIR`); `/proc` when `None`.
    pub proc_dir: Option<Vec<u8>>,
    /// The box's root (`root=`: a directory is a bind of it), switched to with `pivot_root`.
    pub root: Option<MountOption>,
    /// Mounts made in the box's root, in order, after proc.
    pub mounts: Vec<MountOption>,
    /// `PR_SET_NO_NEW_PRIVS` before exec.
    pub no_new_privs: bool,
    /// The capabilities the box keeps, by name; `None` leaves them as they are.
    pub capabilities: Option<Vec<String>>,
    /// (name, soft, hard), `RLIM_INFINITY` as `u64::MAX`.
    pub rlimits: Vec<(String, u64, u64)>,
    /// The box joins existing namespaces (`target`), whose user namespace, if any, makes it root there.
    pub joins: bool,
    /// A seccomp filter to install last, before the exec (`None`: none).
    pub seccomp: Option<SeccompOptions>,
    /// cgroup limits: bytes of memory (or a size such as `"256M"`), processes, CPUs (see [`crate::cgroup`]).
    pub memory_limit: Option<SizeArg>,
    pub pids_limit: Option<i64>,
    pub cpu_limit: Option<f64>,
    /// A new session with a pseudo-terminal of its own as its controlling terminal (see [`crate::tty`]).
    pub tty: bool,
    /// The terminal's size from the start, `(rows, columns)` (`tty=(rows, cols)`); `None`: 24x80.
    pub tty_size: Option<(u16, u16)>,
}

/// The caller's effective ids, which the defaults depend on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    pub euid: u32,
    pub egid: u32,
    /// The caller has supplementary groups and may drop them (`CAP_SETGID`): a box in a user namespace
    /// must not keep them (see [`UserNs::drop_groups_first`]).
    pub may_drop_groups: bool,
}

impl Caller {
    #[must_use]
    pub fn current() -> Caller {
        let (uid, gid) = crate::sys::effective_ids();
        Caller { euid: uid, egid: gid, may_drop_groups: crate::sys::may_drop_groups() }
    }
}

/// A user namespace to create and how its ids are mapped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserNs {
    pub uid_map: IdMap,
    pub gid_map: IdMap,
    pub setgroups: Setgroups,
    /// The child can write these maps itself (a single own id, setgroups denied); otherwise the
    /// parent writes them while the child waits.
    pub child_writes_maps: bool,
    /// The caller's supplementary groups are dropped before the namespace is made: with setgroups
    /// denied they could not be dropped inside, and a box would keep (say) host root's group. So the
    /// child makes its namespaces with `unshare(2)` after `setgroups(0, NULL)` instead of in the clone.
    pub drop_groups_first: bool,
}

/// Checked options with every implication applied: what the spawn will do.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Spec {
    /// The namespaces to make besides a user namespace, which [`Spec::user`] describes (see
    /// [`Spec::namespaces`] for them all).
    pub kinds: Namespaces,
    pub user: Option<UserNs>,
    pub mount_proc: bool,
    pub propagation: Propagation,
    pub hostname: Option<CString>,
    /// The text for `/proc/self/timens_offsets`, when offsets were given.
    pub time_offsets: Option<CString>,
    pub init: bool,
    /// Where proc is mounted, inside `root` when there is one.
    pub proc_dir: CString,
    /// The box's own root and mounts (`root`, `mounts`), with proc in it: `None` keeps the caller's root,
    /// with proc mounted on it directly.
    pub filesystem: Option<Filesystem>,
    pub no_new_privs: bool,
    /// The capabilities kept: every other one leaves every set, the bounding set included.
    pub capabilities: Option<CapSet>,
    pub rlimits: Vec<Rlimit>,
    /// The seccomp filter, compiled for the box (its rules depend on its PID namespace).
    pub seccomp: Option<Filter>,
    /// The limits of the box's own cgroup, if it gets one.
    pub limits: Option<Limits>,
    /// `tty=True`: where the box's pseudo-terminal comes from.
    pub tty: Option<Terminal>,
}

/// A host name as the kernel takes it: not empty, at most 64 bytes, no NUL.
fn uts_name(option: &'static str, name: Option<Vec<u8>>) -> Result<Option<CString>, Error> {
    match name {
        None => Ok(None),
        Some(name) if name.is_empty() => Err(Error::bad_option(option, "must not be empty")),
        Some(name) if name.len() > HOSTNAME_MAX => {
            let len = name.len();
            Err(Error::bad_option(option, format_args!("is {len} bytes long; the limit is {HOSTNAME_MAX}")))
        }
        Some(name) => CString::new(name).map(Some).map_err(|_| Error::bad_option(option, "must not contain NUL bytes")),
    }
}

/// A path argument as a C string: not empty, no NUL.
fn path(option: &'static str, bytes: Vec<u8>) -> Result<CString, Error> {
    if bytes.is_empty() {
        return Err(Error::bad_option(option, "must not be empty"));
    }
    CString::new(bytes).map_err(|_| Error::bad_option(option, "must not contain NUL bytes"))
}

/// The capabilities kept and the resource limits, checked.
fn confinement(
    capabilities: Option<&[String]>,
    rlimits: &[(String, u64, u64)],
    userns: bool,
    caller: Caller,
) -> Result<(Option<CapSet>, Vec<Rlimit>), Error> {
    let capabilities = capabilities.map(CapSet::parse).transpose()?;
    if capabilities.is_some() && !userns && caller.euid != 0 {
        // Without CAP_SETPCAP the bounding set cannot shrink, and a setuid program could win back what the
        // box was meant to lose.
        let message = "dropping capabilities needs root or a user namespace: pass user=True (or any namespace)";
        return Err(Error::rule("capabilities", message));
    }
    let rlimits = rlimits.iter().map(|(name, soft, hard)| Rlimit::new(name, *soft, *hard)).collect::<Result<_, _>>()?;
    Ok((capabilities, rlimits))
}

impl Options {
    /// Applies the implications (`mount_proc` → mount, `hostname` → uts, maps → user) and defaults, and
    /// rejects what cannot work, before anything is forked.
    #[allow(clippy::too_many_lines, reason = "one pass over every option, each after those it depends on")]
    pub fn resolve(self, caller: Caller) -> Result<Spec, Error> {
        if self.proc_dir.is_some() && !self.mount_proc {
            return Err(Error::rule("mount_proc", "a proc directory is given, but mount_proc is not set"));
        }
        let proc_dir = path("mount_proc", self.proc_dir.unwrap_or_else(|| b"/proc".to_vec()))?;
        let limits = Limits::resolve(self.memory_limit, self.pids_limit, self.cpu_limit)?;
        let own_filesystem = self.root.is_some() || !self.mounts.is_empty();
        let kinds = Namespaces::empty()
            .with(Namespace::Pid, self.pid || self.init)
            .with(Namespace::Mount, self.mount || self.mount_proc || own_filesystem)
            .with(Namespace::Uts, self.uts || self.hostname.is_some())
            .with(Namespace::Ipc, self.ipc)
            .with(Namespace::Net, self.net)
            .with(Namespace::Cgroup, self.cgroup)
            .with(Namespace::Time, self.time);
        let others = !kinds.is_empty();
        let wants_maps = self.uid_map.is_some() || self.gid_map.is_some() || self.setgroups.is_some();
        let user = match self.user {
            Some(false) if wants_maps => {
                let option = [("uid_map", self.uid_map.is_some()), ("gid_map", self.gid_map.is_some())]
                    .into_iter()
                    .find_map(|(name, given)| given.then_some(name))
                    .unwrap_or("setgroups");
                let message = "uid_map, gid_map and setgroups need a user namespace, but user=False";
                return Err(Error::rule(option, message));
            }
            Some(explicit) => explicit,
            None => wants_maps || (caller.euid != 0 && others),
        };

        let propagation = match &self.propagation {
            None => Propagation::default(),
            Some(_) if !kinds.contains(Namespace::Mount) => {
                let message = "propagation applies to a new mount namespace: pass mount=True or mount_proc=True";
                return Err(Error::rule("propagation", message));
            }
            Some(text) => Propagation::parse(text)?,
        };
        if own_filesystem && matches!(propagation, Propagation::Shared | Propagation::Unchanged) {
            // The box's root is built on mounts of its own: they must not reach the caller's namespace.
            let message = "root and mounts need propagation 'private' or 'slave': the box's mounts must not \
                           propagate to the host";
            return Err(Error::rule("propagation", message));
        }

        let hostname = uts_name("hostname", self.hostname)?;

        let has_offsets = self.monotonic_offset.is_some() || self.boottime_offset.is_some();
        if has_offsets && !self.time {
            let option = if self.monotonic_offset.is_some() { "monotonic_offset" } else { "boottime_offset" };
            let message = "monotonic_offset and boottime_offset need a time namespace: pass time=True";
            return Err(Error::rule(option, message));
        }
        let time_offsets = if has_offsets {
            let mut text = String::new();
            for (clock, option, value) in [
                ("monotonic", "monotonic_offset", self.monotonic_offset),
                ("boottime", "boottime_offset", self.boottime_offset),
            ] {
                if let Some(secs) = value {
                    let off = Offset::from_secs_f64(option, secs)?;
                    let _ = writeln!(text, "{clock} {} {}", off.secs, off.nanos);
                }
            }
            Some(CString::new(text).expect("offsets are digits"))
        } else {
            None
        };

        let user = if user {
            let setgroups = match &self.setgroups {
                Some(text) => Setgroups::parse(text)?,
                None => Setgroups::Deny,
            };
            let uid_map = self.uid_map.map_or_else(|| Ok(IdMap::root_of(caller.euid)), |r| IdMap::new("uid_map", r))?;
            let gid_map = self.gid_map.map_or_else(|| Ok(IdMap::root_of(caller.egid)), |r| IdMap::new("gid_map", r))?;
            let child_writes_maps = uid_map.is_single_own_id(caller.euid)
                && gid_map.is_single_own_id(caller.egid)
                && setgroups == Setgroups::Deny;
            let drop_groups_first = setgroups == Setgroups::Deny && caller.may_drop_groups;
            Some(UserNs { uid_map, gid_map, setgroups, child_writes_maps, drop_groups_first })
        } else {
            None
        };

        let filesystem = if own_filesystem {
            let proc_dir = self.mount_proc.then_some(proc_dir.as_bytes());
            Some(Filesystem::plan(self.root.as_ref(), proc_dir, &self.mounts, user.is_some())?)
        } else {
            None
        };

        let (capabilities, rlimits) =
            confinement(self.capabilities.as_deref(), &self.rlimits, user.is_some() || self.joins, caller)?;

        Ok(Spec {
            kinds,
            no_new_privs: self.no_new_privs,
            capabilities,
            rlimits,
            init: self.init,
            user,
            mount_proc: self.mount_proc,
            propagation,
            hostname,
            time_offsets,
            proc_dir,
            filesystem,
            // Compiled for the box: what it may trace depends on its PID namespace.
            seccomp: self.seccomp.map(|s| s.compile(kinds.contains(Namespace::Pid))).transpose()?,
            limits,
            tty: self
                .tty
                .then(|| Terminal::for_mounts(&self.mounts, self.tty_size.unwrap_or(crate::tty::DEFAULT_SIZE))),
        })
    }
}

impl Spec {
    /// The namespaces the box gets, the user namespace included.
    #[must_use]
    pub fn namespaces(&self) -> Namespaces {
        self.kinds.with(Namespace::User, self.user.is_some())
    }

    /// Whether the box gets a new namespace of kind `ns`.
    #[must_use]
    pub fn has(&self, ns: Namespace) -> bool {
        self.namespaces().contains(ns)
    }

    /// The namespace flags for `clone(2)` (the time namespace is unshared on its own: see
    /// [`Namespaces::clone_flags`]).
    #[must_use]
    pub fn clone_flags(&self) -> libc::c_int {
        let flags = self.namespaces().clone_flags();
        if self.cgroup_namespace_after_entry() {
            flags & !libc::CLONE_NEWCGROUP
        } else {
            flags
        }
    }

    /// Whether the cgroup namespace is made by the child once it is in the box's own cgroup (rather than by
    /// the clone), so that this cgroup is the namespace's root.
    #[must_use]
    pub fn cgroup_namespace_after_entry(&self) -> bool {
        self.limits.is_some() && self.kinds.contains(Namespace::Cgroup)
    }

    /// Whether the id maps need a privileged parent to write them while the child waits.
    #[must_use]
    pub fn parent_writes_maps(&self) -> bool {
        self.user.as_ref().is_some_and(|u| !u.child_writes_maps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: Caller = Caller { euid: 0, egid: 0, may_drop_groups: true };
    const USER: Caller = Caller { euid: 1000, egid: 100, may_drop_groups: false };

    #[test]
    fn user_namespace_is_automatic_only_for_unprivileged_callers() {
        let opts = Options { pid: true, ..Options::default() };
        assert!(opts.clone().resolve(ROOT).unwrap().user.is_none());
        let user = opts.resolve(USER).unwrap().user.unwrap();
        assert_eq!(user.uid_map, IdMap::root_of(1000));
        assert_eq!(user.gid_map, IdMap::root_of(100));
        assert!(user.child_writes_maps);
        assert!(!user.drop_groups_first);
        // Nothing asked: no namespace at all, even unprivileged.
        assert!(Options::default().resolve(USER).unwrap().user.is_none());
    }

    #[test]
    fn implications() {
        let cfg =
            Options { mount_proc: true, hostname: Some(b"box".to_vec()), ..Options::default() }.resolve(ROOT).unwrap();
        assert!(cfg.has(Namespace::Mount) && cfg.has(Namespace::Uts));
        assert_eq!(cfg.clone_flags(), libc::CLONE_NEWNS | libc::CLONE_NEWUTS);
        assert_eq!(cfg.namespaces().proc_names(), ["mnt", "uts"]);
    }

    #[test]
    fn explicit_maps_imply_a_user_namespace_written_by_the_parent() {
        let map = vec![IdRange { inside: 0, outside: 100_000, count: 65536 }];
        let cfg = Options { uid_map: Some(map), ..Options::default() }.resolve(ROOT).unwrap();
        assert!(!cfg.user.unwrap().child_writes_maps);
        let allow = Options { user: Some(true), setgroups: Some("allow".into()), ..Options::default() };
        assert!(!allow.resolve(ROOT).unwrap().user.unwrap().child_writes_maps);
        let contradiction = Options { user: Some(false), setgroups: Some("deny".into()), ..Options::default() };
        assert!(contradiction.resolve(ROOT).is_err());
    }

    #[test]
    fn rejects_bad_input_with_the_reason() {
        let cases = [
            (Options { hostname: Some(vec![b'a'; 65]), ..Options::default() }, "65 bytes"),
            (Options { hostname: Some(b"a\0b".to_vec()), ..Options::default() }, "NUL"),
            (Options { hostname: Some(vec![]), ..Options::default() }, "empty"),
            (Options { monotonic_offset: Some(5.0), ..Options::default() }, "time=True"),
            (Options { mount: true, propagation: Some("rprivate".into()), ..Options::default() }, "not 'rprivate'"),
            (Options { propagation: Some("slave".into()), ..Options::default() }, "mount=True"),
            (Options { user: Some(true), setgroups: Some("maybe".into()), ..Options::default() }, "not 'maybe'"),
            (Options { time: true, boottime_offset: Some(f64::NAN), ..Options::default() }, "finite"),
        ];
        for (opts, needle) in cases {
            let err = opts.resolve(ROOT).unwrap_err().to_string();
            assert!(err.contains(needle), "{err:?} should mention {needle:?}");
        }
    }

    #[test]
    fn with_limits_the_cgroup_namespace_is_made_after_entering_the_boxs_cgroup() {
        let opts = Options { cgroup: true, pid: true, ..Options::default() };
        let plain = opts.clone().resolve(ROOT).unwrap();
        assert_ne!(plain.clone_flags() & libc::CLONE_NEWCGROUP, 0);
        assert!(!plain.cgroup_namespace_after_entry());
        let limited = Options { pids_limit: Some(8), ..opts }.resolve(ROOT).unwrap();
        assert_eq!(limited.clone_flags(), libc::CLONE_NEWPID);
        assert!(limited.cgroup_namespace_after_entry() && limited.has(Namespace::Cgroup));
        // Limits alone make no namespace.
        let alone = Options { memory_limit: Some(SizeArg::Text("64M".into())), ..Options::default() };
        assert_eq!(alone.resolve(USER).unwrap().namespaces(), Namespaces::empty());
    }

    #[test]
    fn offsets_become_timens_text() {
        let cfg =
            Options { time: true, monotonic_offset: Some(-1.25), boottime_offset: Some(86400.0), ..Options::default() }
                .resolve(ROOT)
                .unwrap();
        assert_eq!(cfg.time_offsets.unwrap().as_bytes(), b"monotonic -2 750000000\nboottime 86400 0\n");
    }
}
