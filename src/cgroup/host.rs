//! What the cgroup code asks of the machine: cgroupfs files and directories, the caller's own cgroups, and
//! processes. [`RealHost`] is the machine; the tests put a fake cgroupfs tree in its place.

use std::ffi::CString;
use std::io::{self, Write as _};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use libc::pid_t;

pub trait Host {
    /// `/proc/self/cgroup`.
    fn self_cgroup(&self) -> io::Result<String>;
    /// `/proc/self/mountinfo`.
    fn mountinfo(&self) -> io::Result<String>;
    fn read(&self, path: &Path) -> io::Result<String>;
    /// Writes `text` in one `write(2)`, as cgroupfs wants it.
    fn write(&self, path: &Path, text: &str) -> io::Result<()>;
    fn mkdir(&self, path: &Path) -> io::Result<()>;
    fn rmdir(&self, path: &Path) -> io::Result<()>;
    fn exists(&self, path: &Path) -> bool;
    /// Whether this process may write `path` (by its effective ids): why not, if not.
    fn may_write(&self, path: &Path) -> io::Result<()>;
    /// The names of the directories in `dir`.
    fn subdirs(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// `cgroup.procs` of `dir`, open for writing, close-on-exec, at 3 or above.
    fn open_procs(&self, dir: &Path) -> io::Result<OwnedFd>;
    /// The cgroup directory `dir` itself (`O_PATH`), close-on-exec, at 3 or above: what `CLONE_INTO_CGROUP` takes.
    fn open_dir(&self, dir: &Path) -> io::Result<OwnedFd>;
    /// This process's PID.
    fn pid(&self) -> pid_t;
    /// Whether a process `pid` exists.
    fn alive(&self, pid: pid_t) -> bool;
    /// SIGKILLs `pid` if it is (still) a member of the cgroup `dir`: a PID read from `cgroup.procs` may have
    /// exited and been reused by the time it is signalled.
    fn kill_member(&self, pid: pid_t, dir: &Path);
}

/// The machine itself.
#[derive(Clone, Copy, Debug, Default)]
pub struct RealHost;

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

impl Host for RealHost {
    fn self_cgroup(&self) -> io::Result<String> {
        std::fs::read_to_string("/proc/self/cgroup")
    }

    fn mountinfo(&self) -> io::Result<String> {
        std::fs::read_to_string("/proc/self/mountinfo")
    }

    fn read(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
    }

    fn write(&self, path: &Path, text: &str) -> io::Result<()> {
        let mut file = std::fs::OpenOptions::new().write(true).open(path)?;
        let n = file.write(text.as_bytes())?;
        if n == text.len() {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(libc::EIO))
        }
    }

    fn mkdir(&self, path: &Path) -> io::Result<()> {
        // 0755 as systemd and runc make them: the files' own modes say who may change a limit.
        std::fs::DirBuilder::new().create(path)
    }

    fn rmdir(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir(path)
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn may_write(&self, path: &Path) -> io::Result<()> {
        let path = c_path(path)?;
        // SAFETY: a valid NUL-terminated path; AT_EACCESS checks the effective ids, which the kernel uses.
        if unsafe { libc::faccessat(libc::AT_FDCWD, path.as_ptr(), libc::W_OK, libc::AT_EACCESS) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    fn subdirs(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        Ok(names)
    }

    fn open_procs(&self, dir: &Path) -> io::Result<OwnedFd> {
        let path = c_path(&dir.join("cgroup.procs"))?;
        // SAFETY: a valid NUL-terminated path; the new fd is ours.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
        crate::sys::own_fd(fd)
    }

    fn open_dir(&self, dir: &Path) -> io::Result<OwnedFd> {
        let path = c_path(dir)?;
        // SAFETY: a valid NUL-terminated path; the new fd is ours.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
        crate::sys::own_fd(fd)
    }

    fn pid(&self) -> pid_t {
        // SAFETY: getpid has no preconditions.
        unsafe { libc::getpid() }
    }

    fn alive(&self, pid: pid_t) -> bool {
        // SAFETY: signal 0 only checks that the process exists.
        let ret = unsafe { libc::kill(pid, 0) };
        ret == 0 || crate::sys::last_errno() == libc::EPERM
    }

    fn kill_member(&self, pid: pid_t, dir: &Path) {
        // A pidfd names one process for good: once it is open, the PID's holder is checked, then signalled.
        // SAFETY: pidfd_open(2) returns a new fd that we then own.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return; // gone already
        }
        // SAFETY: a fresh fd that nobody else owns.
        let pidfd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let Ok(cgroups) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) else { return };
        if !member_of(&cgroups, dir) {
            return;
        }
        let nothing = std::ptr::null::<libc::siginfo_t>();
        // SAFETY: signalling through the pidfd just opened.
        unsafe { libc::syscall(libc::SYS_pidfd_send_signal, pidfd.as_raw_fd(), libc::SIGKILL, nothing, 0) };
    }
}

/// Whether a `/proc/PID/cgroup` text puts the process in the cgroup directory `dir` (whose path ends with
/// the cgroup's path in its hierarchy).
pub(crate) fn member_of(cgroups: &str, dir: &Path) -> bool {
    cgroups.lines().filter_map(|line| line.splitn(3, ':').nth(2)).any(|path| path != "/" && dir.ends_with(&path[1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn membership_by_the_end_of_the_path() {
        let text = "4:memory:/a/nsbox-1-2\n1:cpu:/\n0::/\n";
        assert!(member_of(text, Path::new("/sys/fs/cgroup/memory/a/nsbox-1-2")));
        assert!(!member_of(text, Path::new("/sys/fs/cgroup/memory/a/nsbox-1-3")));
        assert!(!member_of(text, Path::new("/sys/fs/cgroup/cpu")));
    }
}
