//! A failed step as the error a person reads: what it was (the namespaces, the path) and what to do.

use crate::errors::{quoted_bytes, Error, Hint, Step};
use crate::namespace::Namespace;
use crate::spec::Spec;

fn hint(config: &Spec, step: Step, errno: i32, at: u16) -> Option<Hint> {
    let root = crate::sys::effective_ids().0 == 0;
    let kind = config.filesystem.as_ref().and_then(|fs| fs.kind(at.checked_sub(1)?));
    match (step, errno) {
        (Step::Mount, libc::EINVAL) if kind == Some("overlay") && config.user.is_some() => {
            Some(Hint::OverlayLowerHasMounts)
        }
        (Step::MountPoint, libc::ENOENT) => Some(Hint::NoMountPoint),
        (Step::MountPoint, libc::EROFS | libc::EACCES | libc::EPERM) => Some(Hint::ParentNotWritable),
        (Step::Clone, libc::EPERM) if config.user.is_none() && !root => Some(Hint::NeedsUserNamespace),
        (Step::Clone, libc::EPERM) if config.user.is_some() => Some(Hint::UserNamespacesDisabled),
        (Step::Clone, libc::ENOSPC) => Some(Hint::NamespaceLimit),
        (Step::Clone, libc::EUSERS) => Some(Hint::NestedTooDeep),
        (Step::Clone, libc::EINVAL) => Some(Hint::UnsupportedCombination),
        (Step::UidMap | Step::GidMap | Step::Setgroups, libc::EPERM) => Some(Hint::MapsNeedPrivilege),
        (Step::MountProc, libc::EPERM) if !config.has(Namespace::Pid) => Some(Hint::ProcNeedsPidNamespace),
        (Step::Cgroup, libc::EACCES | libc::EPERM) => Some(Hint::CgroupNeedsDelegation),
        (Step::Clone | Step::Init, libc::EAGAIN) if config.limits.is_some_and(|l| l.pids.is_some()) => {
            Some(Hint::PidsLimitReached)
        }
        _ => None,
    }
}

/// The error for `step` failing with `errno` in a box made from `config`: what the step was, naming the
/// namespaces, the path or the mount (`at`: which of the box's mounts, plus one; 0 for none) it concerned,
/// with advice where there is some.
pub(crate) fn failure(config: &Spec, step: Step, errno: i32, at: u16) -> Error {
    let err = Error::os(step, errno).with_hint(hint(config, step, errno, at));
    if let (Some(fs), Some(at)) = (&config.filesystem, at.checked_sub(1)) {
        if let Some(what) = fs.describe(at, step) {
            return err.with_what(what);
        }
    }
    match step {
        Step::Clone => {
            let kinds: Vec<&str> = config.namespaces().iter().map(Namespace::long_name).collect();
            err.with_what(match kinds.as_slice() {
                [] => "create the child process".to_owned(),
                [one] => format!("create the {one} namespace"),
                many => format!("create the {} namespaces", many.join(", ")),
            })
        }
        Step::Rlimits => match at.checked_sub(1).and_then(|i| config.rlimits.get(usize::from(i))) {
            Some(limit) => err.with_what(format!("set the resource limit {}", limit.name())),
            None => err,
        },
        Step::MountProc => err.with_what(format!("mount a new proc on {}", quoted_bytes(config.proc_dir.as_bytes()))),
        _ => err,
    }
}
