//! Joining the namespaces of a running box, of persisted namespace files, or of any namespace files, as
//! `nsenter` does.
//!
//! Everything is opened here, in the parent; the child only calls `setns` on the fds, user namespace
//! first so that it holds the capabilities to join the rest.

use std::ffi::CString;
use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::errors::{quoted, Error, Step};
use crate::namespace::Namespace;

/// Whose namespaces to join.
#[derive(Debug, Clone)]
pub enum Target {
    /// A running process: its namespaces, root and working directory.
    Pid(i32),
    /// A directory of namespace files named by kind (`net`, `mnt`, ...), e.g. made by `persist`.
    Dir(PathBuf),
    /// Namespace files, each of a kind (`nsenter --net=FILE ...`).
    Files(Vec<(Namespace, PathBuf)>),
}

/// A namespace to join: the fd, and its kind.
#[derive(Debug)]
pub struct Joined {
    pub fd: OwnedFd,
    pub kind: Namespace,
}

/// Open fds for the child to join.
#[derive(Debug, Default)]
pub struct Join {
    /// In joining order ([`Namespace::JOIN_ORDER`]), the time namespace aside; only namespaces that differ
    /// from the caller's.
    pub namespaces: Vec<Joined>,
    /// A time namespace is joined by the helper program (setns needs a process with its own memory).
    pub time: Option<OwnedFd>,
    pub root: Option<OwnedFd>,
    pub cwd: Option<OwnedFd>,
}

fn open(path: &Path, flags: libc::c_int) -> std::io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: open(2) on a valid C string; `own_fd` takes the result (at 3 or above: the child's dup2s
    // onto 0-2 must not clobber a namespace fd it has yet to join).
    crate::sys::own_fd(unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) })
}

fn describe(target: &Target) -> String {
    match target {
        Target::Pid(pid) => format!("process {pid}"),
        Target::Dir(dir) => quoted(dir.to_string_lossy()),
        Target::Files(files) => {
            let names: Vec<String> = files.iter().map(|(_, path)| quoted(path.to_string_lossy())).collect();
            names.join(", ")
        }
    }
}

fn open_error(target: &Target, err: &std::io::Error) -> Error {
    let errno = err.raw_os_error().unwrap_or(libc::EIO);
    let (errno, what) = match (target, errno) {
        // The process is gone (or a zombie, whose namespace links are gone too).
        (Target::Pid(pid), libc::ENOENT | libc::ESRCH) => {
            (libc::ESRCH, format!("enter process {pid}: it does not exist or has exited"))
        }
        _ => (errno, format!("open the namespaces of {}", describe(target))),
    };
    Error::os(Step::Target, errno).with_what(what)
}

impl Target {
    /// Where the target's namespace of kind `ns` is, or `None` when it has none of that kind.
    fn path_of(&self, ns: Namespace) -> Option<PathBuf> {
        match self {
            Target::Pid(pid) => Some(PathBuf::from(format!("/proc/{pid}/ns/{}", ns.proc_name()))),
            Target::Dir(dir) => Some(dir.join(ns.proc_name())),
            Target::Files(files) => files.iter().find(|(kind, _)| *kind == ns).map(|(_, path)| path.clone()),
        }
    }
}

impl Join {
    /// Opens the target's namespaces that differ from ours.
    pub fn open(target: &Target) -> Result<Join, Error> {
        // The process, or the directory, must be there (each namespace file is checked below).
        let whole = match target {
            Target::Pid(pid) => Some(PathBuf::from(format!("/proc/{pid}"))),
            Target::Dir(dir) => Some(dir.clone()),
            Target::Files(_) => None,
        };
        if let Some(whole) = whole {
            fs::metadata(whole).map_err(|e| open_error(target, &e))?;
        }
        let mut join = Join::default();
        let mut found = 0;
        for kind in Namespace::JOIN_ORDER {
            let Some(path) = target.path_of(kind) else { continue };
            let theirs = match fs::metadata(&path) {
                Ok(meta) => meta,
                // A directory holds only the kinds that were persisted.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && matches!(target, Target::Dir(_)) => continue,
                Err(e) => return Err(open_error(target, &e)),
            };
            found += 1;
            let ours =
                fs::metadata(format!("/proc/self/ns/{}", kind.proc_name())).map_err(|e| open_error(target, &e))?;
            if theirs.ino() == ours.ino() && theirs.dev() == ours.dev() {
                continue;
            }
            let fd = open(&path, libc::O_RDONLY).map_err(|e| open_error(target, &e))?;
            if kind == Namespace::Time {
                join.time = Some(fd);
            } else {
                join.namespaces.push(Joined { fd, kind });
            }
        }
        if found == 0 {
            // No namespace file at all (released, or never persisted): the command must not quietly run in
            // the caller's own namespaces.
            return Err(Error::os(Step::Target, libc::ENOENT)
                .with_what(format!("enter {}: it holds no namespace files", describe(target))));
        }
        net_before_foreign_user(&mut join.namespaces);
        if let Target::Pid(pid) = target {
            let flags = libc::O_PATH | libc::O_DIRECTORY;
            join.root = Some(open(Path::new(&format!("/proc/{pid}/root")), flags).map_err(|e| open_error(target, &e))?);
            join.cwd = Some(open(Path::new(&format!("/proc/{pid}/cwd")), flags).map_err(|e| open_error(target, &e))?);
        }
        Ok(join)
    }
}

/// A box on a leash (`allow=`) is in a network namespace that its own user namespace does not own (nsbox's
/// does, the parent of the box's): join that owner and the network namespace first (`setns` to a network
/// namespace needs `CAP_SYS_ADMIN` over its owner and in our own user namespace), then the box's user
/// namespace, below; once in the box's we would hold no capability over the network namespace.
fn net_before_foreign_user(namespaces: &mut Vec<Joined>) {
    let at = |kind| namespaces.iter().position(|j: &Joined| j.kind == kind);
    let (Some(user), Some(net)) = (at(Namespace::User), at(Namespace::Net)) else { return };
    // SAFETY: NS_GET_USERNS on a namespace fd we own returns a new fd of its owner, which we then own.
    let owner = unsafe { libc::ioctl(namespaces[net].fd.as_raw_fd(), libc::NS_GET_USERNS) };
    let Ok(owner) = crate::sys::own_fd(owner) else { return };
    let same = |a: &OwnedFd, b: &OwnedFd| match (fs::metadata(fd_path(a)), fs::metadata(fd_path(b))) {
        (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
        _ => true,
    };
    if net > user && !same(&owner, &namespaces[user].fd) {
        let joined = namespaces.remove(net);
        namespaces.insert(user, joined);
        namespaces.insert(user, Joined { fd: owner, kind: Namespace::User });
    }
}

fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}
