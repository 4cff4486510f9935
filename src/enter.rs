//! Joining the namespaces of a running box (or of persisted namespace files), as `nsenter` does.
//!
//! Everything is opened here, in the parent; the child only calls `setns` on the fds, user namespace
//! first so that it holds the capabilities to join the rest.

use std::ffi::CString;
use std::fs;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use libc::c_int;

use crate::errors::{Error, Step};

/// Whose namespaces to join.
#[derive(Debug, Clone)]
pub enum Target {
    /// A running process: its namespaces, root and working directory.
    Pid(i32),
    /// A directory of namespace files named by kind (`net`, `mnt`, ...), e.g. made by `persist`.
    Dir(PathBuf),
}

/// The order of joining: user first, then what it owns; pid last before time.
const ORDER: [(&str, c_int, Step); 7] = [
    ("user", libc::CLONE_NEWUSER, Step::JoinUser),
    ("mnt", libc::CLONE_NEWNS, Step::JoinMount),
    ("uts", libc::CLONE_NEWUTS, Step::JoinUts),
    ("ipc", libc::CLONE_NEWIPC, Step::JoinIpc),
    ("net", libc::CLONE_NEWNET, Step::JoinNet),
    ("cgroup", libc::CLONE_NEWCGROUP, Step::JoinCgroup),
    ("pid", libc::CLONE_NEWPID, Step::JoinPid),
];

/// Open fds for the child to join.
#[derive(Debug, Default)]
pub struct Join {
    /// (fd, nstype, stage), in joining order; only namespaces that differ from the caller's.
    pub namespaces: Vec<(OwnedFd, c_int, Step)>,
    /// A time namespace is joined by the helper program (setns needs a process with its own memory).
    pub time: Option<OwnedFd>,
    pub root: Option<OwnedFd>,
    pub cwd: Option<OwnedFd>,
}

fn open(path: &Path, flags: c_int) -> std::io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: open(2) on a valid C string; `own_fd` takes the result (at 3 or above: the child's dup2s
    // onto 0-2 must not clobber a namespace fd it has yet to join).
    crate::sys::own_fd(unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) })
}

fn describe(target: &Target) -> String {
    match target {
        Target::Pid(pid) => format!("process {pid}"),
        Target::Dir(dir) => dir.display().to_string(),
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
    Error::os(Step::JoinUser, errno).with_what(what)
}

impl Join {
    /// Opens the target's namespaces that differ from ours.
    pub fn open(target: &Target) -> Result<Join, Error> {
        let dir = match target {
            Target::Pid(pid) => PathBuf::from(format!("/proc/{pid}")),
            Target::Dir(dir) => dir.clone(),
        };
        let ns_path = |kind: &str| match target {
            Target::Pid(_) => dir.join("ns").join(kind),
            Target::Dir(_) => dir.join(kind),
        };
        fs::metadata(&dir).map_err(|e| open_error(target, &e))?;
        let mut join = Join::default();
        let kinds = ORDER.iter().map(|&(k, t, s)| (k, t, s)).chain([("time", libc::CLONE_NEWTIME, Step::JoinTime)]);
        for (kind, nstype, stage) in kinds {
            let path = ns_path(kind);
            let theirs = match fs::metadata(&path) {
                Ok(meta) => meta,
                // A directory holds only the kinds that were persisted.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && matches!(target, Target::Dir(_)) => continue,
                Err(e) => return Err(open_error(target, &e)),
            };
            let ours = fs::metadata(format!("/proc/self/ns/{kind}")).map_err(|e| open_error(target, &e))?;
            if theirs.ino() == ours.ino() && theirs.dev() == ours.dev() {
                continue;
            }
            let fd = open(&path, libc::O_RDONLY).map_err(|e| open_error(target, &e))?;
            if nstype == libc::CLONE_NEWTIME {
                join.time = Some(fd);
            } else {
                join.namespaces.push((fd, nstype, stage));
            }
        }
        if let Target::Dir(dir) = target {
            // A directory without a single namespace file (released, or never persisted) must not quietly
            // run the command in the caller's own namespaces.
            if !ORDER.iter().map(|(k, _, _)| *k).chain(["time"]).any(|k| dir.join(k).exists()) {
                return Err(Error::os(Step::JoinUser, libc::ENOENT)
                    .with_what(format!("enter {}: it holds no namespace files", dir.display())));
            }
        }
        if let Target::Pid(_) = target {
            let flags = libc::O_PATH | libc::O_DIRECTORY;
            join.root = Some(open(&dir.join("root"), flags).map_err(|e| open_error(target, &e))?);
            join.cwd = Some(open(&dir.join("cwd"), flags).map_err(|e| open_error(target, &e))?);
        }
        Ok(join)
    }

    /// Joining a PID namespace only affects children: the child must fork once more after `setns`.
    #[must_use]
    pub fn enters_pid_namespace(&self) -> bool {
        self.namespaces.iter().any(|(_, t, _)| *t == libc::CLONE_NEWPID)
    }
}
