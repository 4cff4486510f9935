//! What can fail, for the people who read the message: the steps of making and entering a box, and
//! the errors nsbox raises (the wire format the child uses to report a step is [`crate::protocol`]).

use std::borrow::Cow;
use std::fmt;

use crate::namespace::Namespace;

/// One table for every step: its wire code, its stable name (the Python exception's `step`), and what it
/// does, as the start of a message ("cannot ..."). `build.rs` reads the codes from here for the helper.
macro_rules! steps {
    ($($(#[$doc:meta])* $variant:ident = $code:literal, $name:literal, $action:literal;)*) => {
        /// A step of making, entering or keeping a box that can fail with an errno.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(u32)]
        pub enum Step {
            $($(#[$doc])* $variant = $code,)*
        }

        impl Step {
            pub const ALL: &'static [Step] = &[$(Step::$variant,)*];

            /// What the step does, as the start of a message ("cannot ...").
            #[must_use]
            pub const fn action(self) -> &'static str {
                match self {
                    $(Step::$variant => $action,)*
                }
            }

            /// A stable name for programs (the Python exception's `step`; the CLI's words key on it).
            #[must_use]
            pub const fn name(self) -> &'static str {
                match self {
                    $(Step::$variant => $name,)*
                }
            }
        }
    };
}

steps! {
    Clone = 1, "clone", "create the namespaces";
    Setgroups = 2, "setgroups", "write /proc/PID/setgroups";
    UidMap = 3, "uid_map", "write the uid map";
    GidMap = 4, "gid_map", "write the gid map";
    TimeNamespace = 5, "time", "create the time namespace";
    TimeOffsets = 6, "time_offsets", "write the clock offsets to /proc/self/timens_offsets";
    Hostname = 7, "hostname", "set the hostname";
    Loopback = 8, "loopback", "bring up the loopback interface";
    Propagation = 9, "propagation", "change the mount propagation of /";
    MountProc = 10, "mount_proc", "mount a new proc";
    Chdir = 11, "cwd", "change to the working directory";
    Session = 12, "session", "start a new session or process group";
    Stdio = 13, "stdio", "set up stdin, stdout and stderr";
    CloseFds = 14, "close_fds", "close the inherited file descriptors";
    Signals = 15, "signals", "reset the signal dispositions";
    ParentDeath = 16, "parent_death", "set the parent-death signal";
    Exec = 17, "exec", "execute the program";
    /// The init process (`init=True`) could not start the command.
    Init = 19, "init", "start the command from the init process";
    JoinUser = 20, "join_user", "join the user namespace";
    JoinMount = 21, "join_mnt", "join the mount namespace";
    JoinUts = 22, "join_uts", "join the UTS namespace";
    JoinIpc = 23, "join_ipc", "join the IPC namespace";
    JoinNet = 24, "join_net", "join the network namespace";
    JoinCgroup = 25, "join_cgroup", "join the cgroup namespace";
    JoinPid = 26, "join_pid", "join the PID namespace";
    JoinTime = 27, "join_time", "join the time namespace";
    Root = 28, "root", "change to the box's root directory";
    /// Loading or starting the helper program.
    Helper = 29, "helper", "start nsbox's helper program";
    /// Making the network's bridge or a box's veth pair (parent), or configuring `eth0` (child).
    Network = 32, "network", "set up the box's network interface";
    /// Dropping (or, with `extra_groups`, setting) the supplementary groups.
    Groups = 33, "extra_groups", "set the supplementary groups";
    SetGid = 34, "group", "switch to the group";
    SetUid = 35, "user", "switch to the user";
    /// The helper program could not make the pipe that tells whether the command's exec worked.
    ExecPipe = 36, "exec_pipe", "hand over the exec pipe";
    /// Opening the namespaces of a running box or of namespace files (`target`).
    Target = 40, "target", "open the namespaces of the target";
    /// Bind-mounting namespaces onto files, or undoing it.
    Persist = 41, "persist", "persist the namespaces";
    /// The parent's own plumbing: pipes, threads, stacks, pidfds.
    Spawn = 42, "spawn", "prepare the spawn";
    /// The staging of the box's own root, or switching to it (`pivot_root`).
    Filesystem = 43, "filesystem", "prepare the box's filesystem";
    /// Making or finding the mount point of one of the box's mounts (its root, proc, `mounts`).
    MountPoint = 44, "mount_point", "make the mount point";
    /// Mounting one of the box's mounts, or making it read-only.
    Mount = 45, "mount", "mount";
    /// Dropping the capabilities the box does not keep (`capabilities=`).
    Capabilities = 46, "capabilities", "drop the capabilities";
    NoNewPrivs = 47, "no_new_privs", "set no_new_privs";
    /// Setting one of `rlimits` (the failure's `at` says which, plus one).
    Rlimits = 48, "rlimits", "set the resource limit";
    /// Installing the seccomp filter (`seccomp=`), the last step before the exec.
    Seccomp = 49, "seccomp", "install the seccomp filter";
    /// Making the box's cgroup (parent), or entering it (the child's first step).
    Cgroup = 50, "cgroup", "enter the box's cgroup";
    /// A cgroup namespace made after entering the box's cgroup (it is the namespace's root).
    CgroupNamespace = 51, "cgroup_namespace", "create the cgroup namespace";
    /// Starting the engine beside the box (`egress=True`) or configuring the box's network through it.
    Egress = 60, "egress", "start the box's network engine";
    /// Forwarding a host port into the box (`publish=`).
    Publish = 61, "publish", "publish a port";
    /// `tty=True`: making the box's pseudo-terminal its controlling terminal (`TIOCSCTTY`).
    Terminal = 62, "terminal", "make the terminal the box's controlling terminal";
    /// `tty=True`: opening the pseudo-terminal (the caller's `/dev/ptmx`, or the box's own devpts), or handing
    /// its master to the caller.
    Pty = 63, "pty", "open the box's pseudo-terminal";
}

impl Step {
    /// The code the child writes on the error pipe.
    #[must_use]
    pub const fn code(self) -> u32 {
        self as u32
    }

    #[must_use]
    pub fn from_code(code: u32) -> Option<Step> {
        Step::ALL.iter().copied().find(|s| s.code() == code)
    }

    /// The step that joins a namespace of kind `ns`.
    #[must_use]
    pub const fn join(ns: Namespace) -> Step {
        match ns {
            Namespace::User => Step::JoinUser,
            Namespace::Mount => Step::JoinMount,
            Namespace::Uts => Step::JoinUts,
            Namespace::Ipc => Step::JoinIpc,
            Namespace::Net => Step::JoinNet,
            Namespace::Cgroup => Step::JoinCgroup,
            Namespace::Pid => Step::JoinPid,
            Namespace::Time => Step::JoinTime,
        }
    }
}

/// One table for every hint: its stable name (the Python exception's `hint`) and the advice in the Python
/// API's words.
macro_rules! hints {
    ($($variant:ident, $name:literal, $text:expr;)*) => {
        /// Advice added to a message, by a stable name that a front end with other words (the CLI) can key on.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Hint {
            $($variant,)*
        }

        impl Hint {
            pub const ALL: &'static [Hint] = &[$(Hint::$variant,)*];

            #[must_use]
            pub const fn name(self) -> &'static str {
                match self {
                    $(Hint::$variant => $name,)*
                }
            }

            /// The advice in the Python API's words.
            #[must_use]
            pub const fn text(self) -> &'static str {
                match self {
                    $(Hint::$variant => $text,)*
                }
            }
        }
    };
}

hints! {
    NeedsUserNamespace, "needs_user_namespace",
        "unprivileged callers need a user namespace: leave user=None or pass user=True";
    UserNamespacesDisabled, "user_namespaces_disabled",
        "unprivileged user namespaces may be disabled: see /proc/sys/user/max_user_namespaces \
         and kernel.apparmor_restrict_unprivileged_userns";
    NamespaceLimit, "namespace_limit", "a limit in /proc/sys/user/max_*_namespaces is reached";
    NestedTooDeep, "nested_too_deep", "user namespaces are nested too deeply";
    UnsupportedCombination, "unsupported_combination", "the kernel does not support this combination of namespaces";
    MapsNeedPrivilege, "maps_need_privilege",
        "without root only your own uid and gid can be mapped, with setgroups='deny'; \
         other maps need CAP_SETUID and CAP_SETGID";
    ProcNeedsPidNamespace, "proc_needs_pid_namespace",
        "a new proc can only be mounted for a PID namespace this box owns: add pid=True";
    NotMapped, "not_mapped", "it is not mapped in the box's user namespace: add it to uid_map or gid_map";
    SetgroupsDenied, "setgroups_denied",
        "setgroups is denied in the box's user namespace: pass setgroups='allow' (as root)";
    BridgeNeedsRoot, "bridge_needs_root",
        "a bridge in the host's network namespace needs CAP_NET_ADMIN (root); \
         Network(private=True) keeps the LAN in namespaces of your own";
    PersistNeedsRoot, "persist_needs_root", "bind mounts on the host need root (CAP_SYS_ADMIN)";
    PidNamespaceEnded, "pid_namespace_ended", "its PID 1 has exited, so nothing can start in it any more";
    OverlayLowerHasMounts, "overlay_lower_has_mounts",
        "without root, an overlay's lower directories must have nothing mounted under them: the kernel \
         locks the host's mounts in a user namespace";
    TunNotOpen, "tun_not_open",
        "without root, egress needs /dev/net/tun open to everyone (mode 0666, most distributions' default): \
         as root, chmod 0666 /dev/net/tun";
    PortInUse, "port_in_use", "the host's port is taken (or the address is not the host's): pick another";
    ParentNotWritable, "parent_not_writable", "the mount point's directory is not writable";
    NoMountPoint, "no_mount_point",
        "a missing mount point is made only on the box's own filesystems (a Tmpfs or Overlay root, or under \
         a Tmpfs, Overlay or Dev mount), never in the caller's files: make it, or mount a Tmpfs over its \
         directory first";
    CgroupNeedsDelegation, "cgroup_needs_delegation",
        "cgroup limits need root, or a cgroup v2 subtree delegated to you: run Python under \
         `systemd-run --user --scope -p Delegate=yes python ...`; rlimits need no root";
    CgroupHasProcesses, "cgroup_has_processes",
        "cgroup v2 gives controllers to child cgroups only while no process is in the parent: run Python in a \
         cgroup of its own, such as `systemd-run --user --scope -p Delegate=yes python ...` makes";
    PidsLimitReached, "pids_limit_reached",
        "pids_limit counts every process and thread of the box, nsbox's own short-lived setup process included";
    ControllerNotDelegated, "controller_not_delegated",
        "the parent cgroup does not give it to this one: systemd gives controllers to a unit with Delegate=yes \
         (`systemd-run --user --scope -p Delegate=yes python ...`)";
}

/// A step that failed with an errno.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsFailure {
    pub step: Step,
    pub errno: i32,
    /// What was being done ("create the network namespace", "mount a new proc on '/proc'").
    pub what: Cow<'static, str>,
    pub hint: Option<Hint>,
}

/// Input that cannot work, found before anything is forked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub message: String,
    /// The option at fault, if one is ("hostname"), for a front end that names options its own way.
    pub option: Option<&'static str>,
}

/// Why nsbox could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    Os(OsFailure),
    Invalid(Invalid),
    /// nsbox itself misbehaved (e.g. a corrupt record); never the user's fault.
    Internal(String),
}

impl Error {
    #[must_use]
    pub fn os(step: Step, errno: i32) -> Error {
        Error::Os(OsFailure { step, errno, what: Cow::Borrowed(step.action()), hint: None })
    }

    #[must_use]
    pub fn invalid(message: impl Into<String>) -> Error {
        Error::Invalid(Invalid { message: message.into(), option: None })
    }

    /// `option` cannot work as given (with the others given); the message says why in full.
    #[must_use]
    pub fn rule(option: &'static str, message: impl Into<String>) -> Error {
        Error::Invalid(Invalid { message: message.into(), option: Some(option) })
    }

    /// Bad input for `option`; the message starts with the option's name.
    #[must_use]
    pub fn bad_option(option: &'static str, message: impl fmt::Display) -> Error {
        Error::Invalid(Invalid { message: format!("{option} {message}"), option: Some(option) })
    }

    /// Replaces the description of the step.
    #[must_use]
    pub fn with_what(mut self, new_what: impl Into<Cow<'static, str>>) -> Error {
        if let Error::Os(failure) = &mut self {
            failure.what = new_what.into();
        }
        self
    }

    #[must_use]
    pub fn with_hint(mut self, new_hint: Option<Hint>) -> Error {
        if let Error::Os(failure) = &mut self {
            failure.hint = new_hint;
        }
        self
    }
}

/// The C library's text for an errno ("Operation not permitted").
#[must_use]
pub fn strerror(errno: i32) -> String {
    std::io::Error::from_raw_os_error(errno).to_string().split(" (os error").next().unwrap_or_default().to_owned()
}

/// A value as messages quote it: in single quotes, as Python's `repr` of a string shows it.
#[must_use]
pub fn quoted(text: impl AsRef<str>) -> String {
    let mut out = String::from("'");
    for c in text.as_ref().chars() {
        match c {
            '\'' => out.push_str("\\'"),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.extend(c.escape_default()),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// [`quoted`] for bytes (paths, hostnames): their UTF-8 text, with anything else escaped.
#[must_use]
pub fn quoted_bytes(bytes: &[u8]) -> String {
    quoted(String::from_utf8_lossy(bytes))
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Os(OsFailure { errno, what, hint, .. }) => {
                write!(f, "cannot {what}: {}", strerror(*errno))?;
                if let Some(hint) = hint {
                    write!(f, " ({})", hint.text())?;
                }
                Ok(())
            }
            Error::Invalid(Invalid { message, .. }) | Error::Internal(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_step_code_and_name_is_its_own() {
        for (i, a) in Step::ALL.iter().enumerate() {
            assert_eq!(Step::from_code(a.code()), Some(*a));
            for b in &Step::ALL[i + 1..] {
                assert!(a.code() != b.code() && a.name() != b.name(), "{a:?} and {b:?}");
            }
        }
    }

    #[test]
    fn message_names_the_step_and_the_reason() {
        let err = Error::os(Step::MountProc, libc::EPERM)
            .with_what(format!("mount a new proc on {}", quoted("/proc")))
            .with_hint(Some(Hint::ProcNeedsPidNamespace));
        assert_eq!(
            err.to_string(),
            "cannot mount a new proc on '/proc': Operation not permitted (a new proc can only be mounted for \
             a PID namespace this box owns: add pid=True)"
        );
    }

    #[test]
    fn values_are_quoted_one_way() {
        assert_eq!(quoted("rprivate"), "'rprivate'");
        assert_eq!(quoted("it's\n"), "'it\\'s\\n'");
        assert_eq!(quoted_bytes(b"a\xffb"), "'a\u{fffd}b'");
    }
}
