//! The planner: a box's root and mounts as the child's steps (see the parent module).

use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;

use libc::c_ulong;

use super::{Action, Filesystem, InRoot, MountOption, MountStep, Owner, Target};
use crate::errors::{quoted_bytes, Error};

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

pub(super) fn in_root(option: &'static str, path: &[u8], file: bool) -> Result<InRoot, Error> {
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
        // caller's `/` (a mount on `/` is not where `/` leads), and a `Dev()`: its devices are bound from the
        // caller's `/dev`, which in place its own tmpfs would already cover (empty files, not devices).
        let private = |m: &MountOption| (m.kind == "overlay" && m.upper.is_none()) || m.kind == "dev";
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
}
