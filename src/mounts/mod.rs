//! A box's own filesystem, planned by the parent: its root and mounts become a list of small steps that
//! the child runs with raw system calls ([`crate::child`]'s `mounts`), in bubblewrap's order: the root,
//! proc, then the mounts in the order given, each target resolved inside the new root
//! (`openat2(RESOLVE_IN_ROOT)`: the root's own symlinks cannot lead out), and last `pivot_root(".", ".")`
//! with the caller's root detached, so that nothing of it is left to climb back to.
//!
//! A root from the caller's files (a directory, a `Bind`), or none (mounts on the caller's root, which
//! needs no `pivot_root`), is mounted in place, where the caller's paths still lead. A root of new files
//! (a `Tmpfs`, an `Overlay`) needs somewhere to be built first, and so does an overlay's private upper
//! directory: then, as bubblewrap does, a staging tmpfs on `/tmp` becomes the root, the caller's root is
//! reached under `/oldroot` and the box's is built on `/newroot`.
//!
//! Paths from the caller (bind sources, overlay layers) were made absolute and checked by the Python layer;
//! when staging, the planner resolves their symlinks as the caller sees them (`/oldroot` is that view).

use std::ffi::CString;

use libc::c_ulong;

mod planner;

use crate::errors::Step;

/// One mount as the Python layer gives it (`nsbox.Bind`, `Tmpfs`, `Overlay`, `Dev`), its types checked.
#[cfg_attr(feature = "python", derive(pyo3::FromPyObject))]
#[cfg_attr(feature = "python", pyo3(from_item_all))]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MountOption {
    /// `bind`, `tmpfs`, `overlay` or `dev`.
    pub kind: String,
    /// Absolute and normalized; `/` for the root.
    pub target: Vec<u8>,
    /// `bind`: the source, absolute and resolved.
    pub source: Vec<u8>,
    /// `bind`: the source is a directory (the mount point is made as one).
    pub dir: bool,
    pub readonly: bool,
    /// `tmpfs`: bytes.
    pub size: Option<u64>,
    pub mode: u32,
    /// `overlay`: the lower directories, topmost first, absolute and resolved.
    pub lower: Vec<Vec<u8>>,
    /// `overlay`: where changes are kept (with `work`, made beside it), or `None` for a private tmpfs.
    pub upper: Option<Vec<u8>>,
    pub work: Option<Vec<u8>>,
    /// How the caller wrote it (`Tmpfs('/tmp', size=1048576)`), for messages.
    pub described: String,
}

/// Where a step acts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// An absolute path as the child sees it before the box's root is entered: the root's mount point
    /// (`/newroot`, or the caller's directory), a staging directory.
    Path(CString),
    /// A path inside the box's root.
    InRoot(InRoot),
}

/// A path inside the box's root, as the child walks it: each prefix is resolved from the root with
/// `RESOLVE_IN_ROOT`, and made (`mkdirat` of its last name in the prefix before) when missing, where the box
/// may make it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InRoot {
    /// `a`, `a/b`, `a/b/c` for `/a/b/c`.
    pub prefixes: Vec<CString>,
    /// `a`, `b`, `c`.
    pub names: Vec<CString>,
    /// For each name, the filesystem of the box's own its directory must be on for the name to be made
    /// there: the caller's files (a directory root, binds, the caller's root itself) are never written.
    pub owners: Vec<Owner>,
    /// The last name is a file (the mount point of a file's bind), not a directory.
    pub file: bool,
    /// The path without its leading `/` (`a/b/c`), to find owners.
    path: Vec<u8>,
}

/// Which mount of the box's own holds a directory, so that the child may make a mount point in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// None: the directory is the caller's; a missing mount point there is an error.
    Caller,
    /// The box's root, a `Tmpfs` or an `Overlay`.
    Root,
    /// The mount made by this step (a `Tmpfs`, an `Overlay`, a `Dev`'s tmpfs).
    Step(usize),
}

/// What a step does at its target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Make the directory (a staging target).
    Mkdir,
    /// From here on, targets are resolved inside this directory: the box's root.
    Enter,
    /// `mount(2)` on the target, made if missing.
    Mount { source: CString, fstype: Option<CString>, flags: c_ulong, data: Option<CString> },
    /// Make what is mounted at the target read-only, with everything under it (`mount_setattr`).
    ReadOnly,
    /// A symlink at the target, pointing at `to`.
    Symlink { to: CString },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountStep {
    /// Which mount the step belongs to, for messages: 0 is the root, 1 proc, then `mounts[at - 2]`.
    pub at: u16,
    pub target: Target,
    pub action: Action,
    /// It mounts a filesystem of the box's own (tmpfs, overlay), where mount points may be made.
    owns: bool,
}

/// The steps, and what each mount was (its kind and how the caller wrote it), for messages.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Filesystem {
    pub steps: Vec<MountStep>,
    /// The root is built on a staging tmpfs (see the module's documentation).
    pub staging: bool,
    /// The box gets a root of its own (`pivot_root`); without, the mounts are on the caller's.
    pub pivot: bool,
    described: Vec<(String, String)>,
}

impl Filesystem {
    /// What failed, for a message: "mount Tmpfs('/tmp')", "make the mount point for Bind('/a', '/b')".
    #[must_use]
    pub fn describe(&self, at: u16, step: Step) -> Option<String> {
        let (_, what) = self.described.get(usize::from(at))?;
        let what = if at == 0 { format!("the box's root, {what}") } else { what.clone() };
        match step {
            Step::Mount => Some(format!("mount {what}")),
            Step::MountPoint => Some(format!("make the mount point for {what}")),
            _ => None,
        }
    }

    /// The kind of mount `at` (`bind`, `tmpfs`, `overlay`, `dev`, `proc`).
    #[must_use]
    pub fn kind(&self, at: u16) -> Option<&str> {
        self.described.get(usize::from(at)).map(|(kind, _)| kind.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::planner::in_root;
    use super::*;

    fn bind(source: &str, target: &str, readonly: bool) -> MountOption {
        MountOption {
            kind: "bind".into(),
            source: source.into(),
            target: target.into(),
            dir: true,
            readonly,
            described: format!("Bind({source:?}, {target:?})"),
            ..MountOption::default()
        }
    }

    fn c(s: &str) -> CString {
        CString::new(s).unwrap()
    }

    #[test]
    fn without_a_root_the_mounts_are_made_in_place() {
        let fs = Filesystem::plan(None, None, &[bind("/srv/data", "/data", true)], false).unwrap();
        assert!(!fs.staging && !fs.pivot);
        let [enter, data, readonly] = fs.steps.as_slice() else { panic!("{:?}", fs.steps) };
        assert_eq!((&enter.target, &enter.action), (&Target::Path(c("/")), &Action::Enter));
        let Target::InRoot(target) = &data.target else { panic!() };
        assert_eq!(target.prefixes, vec![c("data")]);
        assert!(matches!(&data.action, Action::Mount { source, flags, .. }
            if source.as_c_str() == c"/srv/data" && *flags == libc::MS_BIND | libc::MS_REC));
        assert_eq!((readonly.at, &readonly.action), (2, &Action::ReadOnly));
    }

    #[test]
    fn a_directory_root_is_bound_on_itself_and_a_bind_of_slash_is_staged() {
        let fs = Filesystem::plan(Some(&bind("/srv/img", "/", false)), None, &[], false).unwrap();
        assert!(!fs.staging && fs.pivot);
        assert_eq!(fs.steps[0].target, Target::Path(c("/srv/img")));
        assert!(matches!(&fs.steps[0].action, Action::Mount { source, .. } if source.as_c_str() == c"/srv/img"));
        let fs = Filesystem::plan(Some(&bind("/", "/", true)), None, &[], false).unwrap();
        assert!(fs.staging && fs.pivot);
        assert_eq!(fs.steps[0].target, Target::Path(c("/newroot")));
        assert!(matches!(&fs.steps[0].action, Action::Mount { source, .. } if source.as_c_str() == c"/oldroot"));
    }

    #[test]
    fn mount_points_are_made_only_on_the_boxs_own_filesystems() {
        let tmpfs = |target: &str| MountOption {
            kind: "tmpfs".into(),
            target: target.into(),
            described: "Tmpfs".into(),
            ..MountOption::default()
        };
        let mounts = [tmpfs("/a"), bind("/srv", "/a/b/c", false), bind("/srv", "/etc/x", false)];
        let fs = Filesystem::plan(Some(&bind("/img", "/", false)), None, &mounts, false).unwrap();
        let owners = |i: usize| match &fs.steps[i].target {
            Target::InRoot(t) => t.owners.clone(),
            Target::Path(_) => panic!(),
        };
        // [mount /img, enter, tmpfs /a, bind /a/b/c, bind /etc/x]
        assert_eq!(owners(2), vec![Owner::Caller]);
        assert_eq!(owners(3), vec![Owner::Caller, Owner::Step(2), Owner::Step(2)]);
        assert_eq!(owners(4), vec![Owner::Caller, Owner::Caller]);
        let fs = Filesystem::plan(Some(&tmpfs("/")), None, &[bind("/srv", "/x/y", false)], false).unwrap();
        let Target::InRoot(t) = &fs.steps.last().unwrap().target else { panic!() };
        assert_eq!(t.owners, vec![Owner::Root, Owner::Root]);
    }

    #[test]
    fn targets_are_walked_prefix_by_prefix() {
        let t = in_root("mounts", b"/a/b/c", true).unwrap();
        assert_eq!(t.prefixes, vec![c("a"), c("a/b"), c("a/b/c")]);
        assert_eq!(t.names, vec![c("a"), c("b"), c("c")]);
        assert!(in_root("mounts", b"a/b", false).is_err());
        assert!(in_root("mounts", b"/a/../b", false).is_err());
    }

    #[test]
    fn a_private_overlay_keeps_its_changes_in_the_staging_tmpfs() {
        let overlay = MountOption {
            kind: "overlay".into(),
            target: b"/".to_vec(),
            lower: vec![b"/usr".to_vec(), b"/etc".to_vec()],
            described: "Overlay(...)".into(),
            ..MountOption::default()
        };
        let fs = Filesystem::plan(Some(&overlay), Some(b"/proc"), &[], true).unwrap();
        let mkdirs: Vec<_> = fs.steps.iter().filter(|s| s.action == Action::Mkdir).collect();
        assert_eq!(mkdirs.len(), 3);
        assert!(fs.staging);
        let mount = fs.steps.iter().find(|s| s.target == Target::Path(c("/newroot"))).unwrap();
        let Action::Mount { data: Some(data), .. } = &mount.action else { panic!() };
        assert_eq!(
            data.to_str().unwrap(),
            "lowerdir=/oldroot/usr:/oldroot/etc,upperdir=/overlay-0/upper,workdir=/overlay-0/work,userxattr"
        );
        assert_eq!(fs.describe(1, Step::Mount).unwrap(), "mount a new proc on '/proc'");
        assert_eq!(fs.describe(0, Step::MountPoint).unwrap(), "make the mount point for the box's root, Overlay(...)");
        assert_eq!(fs.kind(0), Some("overlay"));
    }

    #[test]
    fn overlay_paths_with_separators_are_refused() {
        let overlay = MountOption {
            kind: "overlay".into(),
            target: b"/x".to_vec(),
            lower: vec![b"/a,b".to_vec()],
            ..MountOption::default()
        };
        let err = Filesystem::plan(None, None, &[overlay], false).unwrap_err();
        assert!(err.to_string().contains("'/a,b'"), "{err}");
    }

    #[test]
    fn dev_is_a_tmpfs_with_the_callers_devices_a_new_devpts_and_links() {
        let dev = MountOption { kind: "dev".into(), target: b"/dev".to_vec(), mode: 0o755, ..MountOption::default() };
        let fs = Filesystem::plan(None, None, &[dev], false).unwrap();
        let sources: Vec<_> = fs
            .steps
            .iter()
            .filter_map(|s| match &s.action {
                Action::Mount { source, .. } => Some(source.to_str().unwrap().to_owned()),
                _ => None,
            })
            .collect();
        // Staged: the devices are bound from the caller's /dev, reached under the old root, never from the
        // new /dev that the tmpfs covers.
        assert!(
            fs.staging && sources.contains(&"/oldroot/dev/null".to_owned()) && sources.contains(&"devpts".to_owned())
        );
        assert!(!sources.contains(&"/dev/null".to_owned()));
        assert!(!sources.iter().any(|s| s.contains("sda")));
        assert_eq!(fs.steps.iter().filter(|s| matches!(s.action, Action::Symlink { .. })).count(), 5);
    }
}
