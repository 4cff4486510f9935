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

use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;

use libc::c_ulong;

use crate::errors::{quoted_bytes, Error, Step};

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

/// The device nodes of [`Dev`](MountOption), bind-mounted from the caller's `/dev` (rootless boxes cannot
/// make device nodes).
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];
/// `/dev`'s links to the process's own fds.
const DEV_LINKS: [(&str, &str); 5] = [
    ("ptmx", "pts/ptmx"),
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
];
/// The caller's root, and the box's, as the child sees them while the box's root is built on staging.
const OLD_ROOT: &[u8] = b"/oldroot";
const NEW_ROOT: &[u8] = b"/newroot";

fn cstring(option: &'static str, bytes: Vec<u8>) -> Result<CString, Error> {
    CString::new(bytes).map_err(|_| Error::bad_option(option, "paths must not contain NUL bytes"))
}

fn path(option: &'static str, path: &[u8]) -> Result<Target, Error> {
    cstring(option, path.to_vec()).map(Target::Path)
}

fn in_root(option: &'static str, path: &[u8], file: bool) -> Result<InRoot, Error> {
    if path.first() != Some(&b'/') {
        return Err(Error::bad_option(option, format_args!("targets must be absolute, not {}", quoted_bytes(path))));
    }
    let mut prefixes = Vec::new();
    let mut names = Vec::new();
    let mut prefix = Vec::new();
    for name in path.split(|&b| b == b'/').filter(|n| !n.is_empty()) {
        if name == b".." || name == b"." {
            return Err(Error::bad_option(option, format_args!("targets must be normalized: {}", quoted_bytes(path))));
        }
        if !prefix.is_empty() {
            prefix.push(b'/');
        }
        prefix.extend_from_slice(name);
        prefixes.push(cstring(option, prefix.clone())?);
        names.push(cstring(option, name.to_vec())?);
    }
    Ok(InRoot { prefixes, names, owners: Vec::new(), file, path: prefix })
}

/// `dir` is `path` or below it (both without their leading `/`; `""` is the root).
fn is_under(dir: &[u8], path: &[u8]) -> bool {
    path.is_empty() || dir == path || (dir.starts_with(path) && dir.get(path.len()) == Some(&b'/'))
}

fn join(dir: &[u8], name: &str) -> Vec<u8> {
    let mut path = dir.to_vec();
    if path.last() != Some(&b'/') {
        path.push(b'/');
    }
    path.extend_from_slice(name.as_bytes());
    path
}

/// Options for the mount's data argument: a path in it must not hold the separators.
fn data_path<'p>(option: &'static str, path: &'p [u8]) -> Result<&'p [u8], Error> {
    if path.iter().any(|b| matches!(b, b',' | b':' | b'\\')) {
        let message =
            format_args!("paths with ',', ':' or '\\\\' cannot be given to overlayfs: {}", quoted_bytes(path));
        return Err(Error::bad_option(option, message));
    }
    Ok(path)
}

struct Planner {
    steps: Vec<MountStep>,
    at: u16,
    /// Where the caller's root is: `/oldroot` when staging, else `/`.
    old_root: &'static [u8],
    /// The box has a user namespace: overlayfs keeps its own attributes in `user.*` xattrs.
    user_namespace: bool,
    /// The box's root is a filesystem of its own (a `Tmpfs`, an `Overlay`).
    root_owned: bool,
}

impl Planner {
    /// A caller's path as the child reaches it. Under `/oldroot` (staging) its symlinks are resolved here, as
    /// the caller sees them: an absolute one would lead into the staging root.
    fn old(&self, option: &'static str, path: &[u8]) -> Result<CString, Error> {
        if self.old_root.is_empty() {
            return cstring(option, path.to_vec());
        }
        let resolved = std::fs::canonicalize(OsStr::from_bytes(path))
            .map_err(|e| Error::bad_option(option, format_args!("cannot resolve {}: {e}", quoted_bytes(path))))?;
        let mut full = self.old_root.to_vec();
        if resolved.as_os_str() != "/" {
            full.extend_from_slice(resolved.as_os_str().as_bytes());
        }
        cstring(option, full)
    }

    fn push(&mut self, target: Target, action: Action) {
        let owns = matches!(&action, Action::Mount { fstype: Some(f), .. } if f.as_c_str() == c"tmpfs" || f.as_c_str() == c"overlay");
        self.steps.push(MountStep { at: self.at, target, action, owns });
    }

    /// The mount of the box's own that holds `dir` (a path without its leading `/`): the deepest, and of those
    /// the latest, made so far.
    fn owner_of(&self, dir: &[u8]) -> Owner {
        let mut best: Option<(usize, usize)> = None;
        for (j, step) in self.steps.iter().enumerate() {
            if let (true, Target::InRoot(t)) = (step.owns, &step.target) {
                if is_under(dir, &t.path) && best.is_none_or(|(len, _)| t.path.len() >= len) {
                    best = Some((t.path.len(), j));
                }
            }
        }
        match best {
            Some((_, j)) => Owner::Step(j),
            None if self.root_owned => Owner::Root,
            None => Owner::Caller,
        }
    }

    /// A target inside the box's root, with the owner of each directory a name of it may be made in.
    fn target(&self, option: &'static str, path: &[u8], file: bool) -> Result<Target, Error> {
        let mut t = in_root(option, path, file)?;
        let mut dir: &[u8] = b"";
        for prefix in &t.prefixes {
            t.owners.push(self.owner_of(dir));
            dir = prefix.as_bytes();
        }
        Ok(Target::InRoot(t))
    }

    fn mount(&mut self, target: Target, source: &[u8], fstype: Option<&str>, flags: c_ulong, data: Option<String>) {
        let c = |s: &[u8]| CString::new(s).expect("checked for NUL bytes");
        let action = Action::Mount {
            source: c(source),
            fstype: fstype.map(|f| c(f.as_bytes())),
            flags,
            data: data.map(|d| c(d.as_bytes())),
        };
        self.push(target, action);
    }

    /// The steps of one mount at `target` (the root's is a [`Target::Path`]).
    fn add(&mut self, option: &'static str, m: &MountOption, target: Target) -> Result<(), Error> {
        match m.kind.as_str() {
            "bind" => {
                let source = self.old(option, &m.source)?;
                self.mount(target.clone(), source.as_bytes(), None, libc::MS_BIND | libc::MS_REC, None);
                if m.readonly {
                    self.push(target, Action::ReadOnly);
                }
            }
            "tmpfs" => {
                let size = m.size.map(|s| format!(",size={s}")).unwrap_or_default();
                let data = format!("mode={:o}{size}", m.mode);
                self.mount(target, b"tmpfs", Some("tmpfs"), libc::MS_NOSUID | libc::MS_NODEV, Some(data));
            }
            "overlay" => {
                let (upper, work) = if let (Some(upper), Some(work)) = (&m.upper, &m.work) {
                    (self.old(option, upper)?, self.old(option, work)?)
                } else {
                    // Changes go to the staging tmpfs, detached (and so gone) with the box's last process.
                    let dir = format!("/overlay-{}", self.steps.len());
                    for path in [dir.clone(), format!("{dir}/upper"), format!("{dir}/work")] {
                        self.push(Target::Path(cstring(option, path.into_bytes())?), Action::Mkdir);
                    }
                    (cstring(option, format!("{dir}/upper").into())?, cstring(option, format!("{dir}/work").into())?)
                };
                let mut lower = Vec::new();
                for (i, layer) in m.lower.iter().enumerate() {
                    if i > 0 {
                        lower.push(b':');
                    }
                    lower.extend_from_slice(self.old(option, data_path(option, layer)?)?.as_bytes());
                }
                let mut data = b"lowerdir=".to_vec();
                data.extend_from_slice(&lower);
                for (key, path) in [(",upperdir=", &upper), (",workdir=", &work)] {
                    data.extend_from_slice(key.as_bytes());
                    data.extend_from_slice(data_path(option, path.as_bytes())?);
                }
                if self.user_namespace {
                    // A user namespace may not write `trusted.*` xattrs: without this, removing a directory of a
                    // lower layer fails with EIO.
                    data.extend_from_slice(b",userxattr");
                }
                let data = String::from_utf8(data)
                    .map_err(|_| Error::bad_option(option, "overlay paths must be UTF-8 for the kernel's options"))?;
                self.mount(target, b"overlay", Some("overlay"), 0, Some(data));
            }
            "dev" => {
                let Target::InRoot(_) = target else {
                    return Err(Error::rule(option, "Dev() is a /dev, not a root: give it a target"));
                };
                let dev = &m.target;
                let at = |planner: &Planner, name: &str, file: bool| planner.target(option, &join(dev, name), file);
                let flags = libc::MS_NOSUID | libc::MS_NOEXEC;
                self.mount(target, b"tmpfs", Some("tmpfs"), flags, Some(format!("mode={:o}", m.mode)));
                for name in DEVICES {
                    let device = self.old(option, format!("/dev/{name}").as_bytes())?;
                    self.mount(at(self, name, true)?, device.as_bytes(), None, libc::MS_BIND, None);
                }
                let pts = Some("newinstance,ptmxmode=0666,mode=620".to_owned());
                self.mount(at(self, "pts", false)?, b"devpts", Some("devpts"), flags, pts);
                let shm = Some("mode=1777".to_owned());
                self.mount(at(self, "shm", false)?, b"tmpfs", Some("tmpfs"), libc::MS_NOSUID | libc::MS_NODEV, shm);
                for (name, to) in DEV_LINKS {
                    self.push(at(self, name, true)?, Action::Symlink { to: cstring(option, to.into())? });
                }
            }
            other => return Err(Error::bad_option(option, format_args!("has an unknown kind of mount: {other}"))),
        }
        Ok(())
    }
}

impl Filesystem {
    /// The steps for `root` (`None`: the caller's root, so that `mounts` change only what they cover),
    /// proc at `proc_dir` when given, then `mounts` in order.
    pub fn plan(
        root: Option<&MountOption>,
        proc_dir: Option<&[u8]>,
        mounts: &[MountOption],
        user_namespace: bool,
    ) -> Result<Filesystem, Error> {
        if mounts.len() > usize::from(u16::MAX) - 2 {
            return Err(Error::bad_option("mounts", "has more mounts than nsbox can number"));
        }
        let whole = MountOption {
            kind: "bind".into(),
            target: b"/".to_vec(),
            source: b"/".to_vec(),
            dir: true,
            described: "the caller's root".into(),
            ..MountOption::default()
        };
        // A root of new files, or an overlay's private changes, need the staging tmpfs; so does a bind of the
        // caller's `/` (a mount on `/` is not where `/` leads).
        let private = |m: &MountOption| m.kind == "overlay" && m.upper.is_none();
        let staging = root.is_some_and(|r| r.kind != "bind" || r.source == b"/") || mounts.iter().any(private);
        let pivot = root.is_some() || staging;
        let root_owned = root.is_some_and(|r| r.kind == "tmpfs" || r.kind == "overlay");
        let old_root: &[u8] = if staging { OLD_ROOT } else { b"" };
        let mut planner = Planner { steps: Vec::new(), at: 0, old_root, user_namespace, root_owned };
        let root = match root {
            Some(root) => root,
            None if staging => &whole,
            None => {
                // Mounts on the caller's root, in place: no root to switch to.
                planner.push(path("root", b"/")?, Action::Enter);
                &whole
            }
        };
        if pivot {
            // A directory's bind is mounted on itself (a mount point to pivot to); the others on /newroot.
            let at = if staging { NEW_ROOT } else { &root.source };
            planner.add("root", root, path("root", at)?)?;
            planner.push(path("root", at)?, Action::Enter);
        }
        let mut described = vec![(root.kind.clone(), root.described.clone()), (String::new(), String::new())];
        if let Some(dir) = proc_dir {
            planner.at = 1;
            described[1] = ("proc".into(), format!("a new proc on {}", quoted_bytes(dir)));
            let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
            let target = planner.target("mount_proc", dir, false)?;
            planner.mount(target, b"proc", Some("proc"), flags, None);
        }
        for (i, m) in mounts.iter().enumerate() {
            planner.at = u16::try_from(i + 2).expect("counted above");
            let target = planner.target("mounts", &m.target, m.kind == "bind" && !m.dir)?;
            planner.add("mounts", m, target)?;
            described.push((m.kind.clone(), m.described.clone()));
        }
        Ok(Filesystem { steps: planner.steps, staging, pivot, described })
    }

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
        assert!(!fs.staging && sources.contains(&"/dev/null".to_owned()) && sources.contains(&"devpts".to_owned()));
        assert!(!sources.iter().any(|s| s.contains("sda")));
        assert_eq!(fs.steps.iter().filter(|s| matches!(s.action, Action::Symlink { .. })).count(), 5);
    }
}
