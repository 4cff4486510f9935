//! What can fail while a box is made, and how the child reports it.
//!
//! The child writes one fixed-size [`Record`] (stage, errno) to a CLOEXEC pipe and exits; the parent
//! decodes it into a [`SpawnError`] whose message names the step, as `tailhook/unshare` does.

use std::borrow::Cow;
use std::fmt;

/// A step of making a box. The numbers travel through the pipe, so they never change meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Stage {
    /// Not an error: the child waits for the parent to write its id maps.
    Ready = 0,
    Clone = 1,
    Setgroups = 2,
    UidMap = 3,
    GidMap = 4,
    TimeNamespace = 5,
    TimeOffsets = 6,
    Hostname = 7,
    Loopback = 8,
    Propagation = 9,
    MountProc = 10,
    Chdir = 11,
    Session = 12,
    Stdio = 13,
    CloseFds = 14,
    Signals = 15,
    ParentDeath = 16,
    Exec = 17,
    /// The parent went away (or refused to go on) while the child waited for its id maps.
    Handshake = 18,
    /// The init process (`init=True`) could not start the command.
    Init = 19,
    JoinUser = 20,
    JoinMount = 21,
    JoinUts = 22,
    JoinIpc = 23,
    JoinNet = 24,
    JoinCgroup = 25,
    JoinPid = 26,
    JoinTime = 27,
    Chroot = 28,
    /// Clearing close-on-exec on the error pipe for the helper program.
    Helper = 29,
    /// Not an error (`nsbox.call` with a PID namespace): the errno field is the PID, in the caller's PID
    /// namespace, of the process that runs the function (PID 1 inside), sent by that process itself.
    Forked = 30,
    /// Not an error (`nsbox.call`): the namespaces are ready and the function is about to run.
    Running = 31,
    /// Making the network's bridge or a box's veth pair (parent), or configuring `eth0` (child).
    Network = 32,
    /// Dropping (or, with `extra_groups`, setting) the supplementary groups.
    Groups = 33,
    /// `subprocess`'s `group`: switching to that gid.
    SetGid = 34,
    /// `subprocess`'s `user`: switching to that uid.
    SetUid = 35,
    /// Not an error: the helper program hands over the pipe that tells whether the command's exec worked.
    Handoff = 36,
}

impl Stage {
    const ALL: [Stage; 37] = [
        Stage::Ready,
        Stage::Clone,
        Stage::Setgroups,
        Stage::UidMap,
        Stage::GidMap,
        Stage::TimeNamespace,
        Stage::TimeOffsets,
        Stage::Hostname,
        Stage::Loopback,
        Stage::Propagation,
        Stage::MountProc,
        Stage::Chdir,
        Stage::Session,
        Stage::Stdio,
        Stage::CloseFds,
        Stage::Signals,
        Stage::ParentDeath,
        Stage::Exec,
        Stage::Handshake,
        Stage::Init,
        Stage::JoinUser,
        Stage::JoinMount,
        Stage::JoinUts,
        Stage::JoinIpc,
        Stage::JoinNet,
        Stage::JoinCgroup,
        Stage::JoinPid,
        Stage::JoinTime,
        Stage::Chroot,
        Stage::Helper,
        Stage::Forked,
        Stage::Running,
        Stage::Network,
        Stage::Groups,
        Stage::SetGid,
        Stage::SetUid,
        Stage::Handoff,
    ];

    #[must_use]
    pub fn from_code(code: u32) -> Option<Stage> {
        Stage::ALL.iter().copied().find(|s| *s as u32 == code)
    }

    /// What the step was, as the start of an error message ("cannot ...").
    #[must_use]
    pub fn action(self) -> &'static str {
        match self {
            Stage::Ready => "wait for the id maps",
            Stage::Clone => "create the namespaces",
            Stage::Setgroups => "write /proc/PID/setgroups",
            Stage::UidMap => "write the uid map",
            Stage::GidMap => "write the gid map",
            Stage::TimeNamespace => "create the time namespace",
            Stage::TimeOffsets => "write the clock offsets to /proc/self/timens_offsets",
            Stage::Hostname => "set the hostname",
            Stage::Loopback => "bring up the loopback interface",
            Stage::Propagation => "change the mount propagation of /",
            Stage::MountProc => "mount a new proc on /proc",
            Stage::Chdir => "change to the working directory",
            Stage::Session => "start a new session or process group",
            Stage::Stdio => "set up stdin, stdout and stderr",
            Stage::CloseFds => "close the inherited file descriptors",
            Stage::Signals => "reset the signal dispositions",
            Stage::ParentDeath => "set the parent-death signal",
            Stage::Exec => "execute the program",
            Stage::Handshake => "hand the id maps to the child",
            Stage::Init => "start the command from the init process",
            Stage::JoinUser => "join the user namespace",
            Stage::JoinMount => "join the mount namespace",
            Stage::JoinUts => "join the UTS namespace",
            Stage::JoinIpc => "join the IPC namespace",
            Stage::JoinNet => "join the network namespace",
            Stage::JoinCgroup => "join the cgroup namespace",
            Stage::JoinPid => "join the PID namespace",
            Stage::JoinTime => "join the time namespace",
            Stage::Chroot => "change to the box's root directory",
            Stage::Helper => "start nsbox's helper program",
            Stage::Forked => "start the process that runs the function",
            Stage::Running => "run the function",
            Stage::Network => "set up the box's network interface",
            Stage::Groups => "set the supplementary groups",
            Stage::SetGid => "switch to the group",
            Stage::SetUid => "switch to the user",
            Stage::Handoff => "hand over the exec pipe",
        }
    }
}

/// The fixed-size report a child writes before it exits: native-endian stage and errno.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    pub stage: u32,
    pub errno: i32,
}

impl Record {
    pub const SIZE: usize = 8;

    #[must_use]
    pub fn encode(self) -> [u8; Self::SIZE] {
        let mut out = [0u8; Self::SIZE];
        let (a, b) = out.split_at_mut(4);
        a.copy_from_slice(&self.stage.to_ne_bytes());
        b.copy_from_slice(&self.errno.to_ne_bytes());
        out
    }

    /// Decodes a record; anything but exactly [`Record::SIZE`] bytes with a known stage is corrupt.
    pub fn decode(bytes: &[u8]) -> Result<(Stage, i32), SpawnError> {
        let corrupt = || SpawnError::Internal(format!("corrupt error record from the child ({} bytes)", bytes.len()));
        let raw: [u8; Self::SIZE] = bytes.try_into().map_err(|_| corrupt())?;
        let stage = u32::from_ne_bytes([raw[0], raw[1], raw[2], raw[3]]);
        let errno = i32::from_ne_bytes([raw[4], raw[5], raw[6], raw[7]]);
        let stage = Stage::from_code(stage).ok_or_else(corrupt)?;
        Ok((stage, errno))
    }
}

/// Why a box could not be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpawnError {
    /// A step failed with an errno. `what` names the step ("create the network namespace").
    Os { stage: Stage, errno: i32, what: Cow<'static, str>, hint: Option<&'static str> },
    /// Input that cannot work, found before anything was forked.
    Invalid(String),
    /// nsbox itself misbehaved (e.g. a corrupt record); never the user's fault.
    Internal(String),
}

impl SpawnError {
    #[must_use]
    pub fn os(stage: Stage, errno: i32) -> SpawnError {
        SpawnError::Os { stage, errno, what: Cow::Borrowed(stage.action()), hint: None }
    }

    /// Replaces the description of the step.
    #[must_use]
    pub fn with_what(self, new_what: impl Into<Cow<'static, str>>) -> SpawnError {
        match self {
            SpawnError::Os { stage, errno, hint, .. } => SpawnError::Os { stage, errno, what: new_what.into(), hint },
            other => other,
        }
    }

    #[must_use]
    pub fn with_hint(self, new_hint: Option<&'static str>) -> SpawnError {
        match self {
            SpawnError::Os { stage, errno, what, .. } => SpawnError::Os { stage, errno, what, hint: new_hint },
            other => other,
        }
    }
}

/// The C library's text for an errno ("Operation not permitted").
#[must_use]
pub fn strerror(errno: i32) -> String {
    std::io::Error::from_raw_os_error(errno).to_string().split(" (os error").next().unwrap_or_default().to_owned()
}

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpawnError::Os { errno, what, hint, .. } => {
                write!(f, "cannot {what}: {}", strerror(*errno))?;
                if let Some(hint) = hint {
                    write!(f, " ({hint})")?;
                }
                Ok(())
            }
            SpawnError::Invalid(msg) | SpawnError::Internal(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for SpawnError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips() {
        let rec = Record { stage: Stage::MountProc as u32, errno: libc::EPERM };
        assert_eq!(Record::decode(&rec.encode()).unwrap(), (Stage::MountProc, libc::EPERM));
    }

    #[test]
    fn short_or_unknown_records_are_internal_errors() {
        assert!(matches!(Record::decode(&[1, 2, 3]), Err(SpawnError::Internal(_))));
        let rec = Record { stage: 999, errno: 1 };
        assert!(matches!(Record::decode(&rec.encode()), Err(SpawnError::Internal(_))));
    }

    #[test]
    fn every_stage_code_decodes_to_itself() {
        for stage in Stage::ALL {
            assert_eq!(Stage::from_code(stage as u32), Some(stage));
        }
    }

    #[test]
    fn message_names_the_step_and_the_reason() {
        let err = SpawnError::Os {
            stage: Stage::Hostname,
            errno: libc::EPERM,
            what: Stage::Hostname.action().into(),
            hint: Some("use uts=True"),
        };
        assert_eq!(err.to_string(), "cannot set the hostname: Operation not permitted (use uts=True)");
    }
}
