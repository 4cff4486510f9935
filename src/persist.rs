//! Keeping namespaces alive without their processes: bind-mount `/proc/PID/ns/KIND` onto files, as
//! `unshare --net=FILE` does, and undo it.

use std::ffi::CString;
use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::errors::{Error, Hint, Step};
use crate::namespace::Namespace;
use crate::sys::{errno_of, last_errno};

/// Marks a directory that `persist` bind-mounted onto itself (to make it private), for `release`.
const MARKER: &str = ".nsbox-self-bind";

fn cstr(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).expect("paths from Python have no NUL")
}

fn mount(src: &Path, target: &Path, flags: libc::c_ulong) -> Result<(), i32> {
    let (src, target) = (cstr(src), cstr(target));
    // SAFETY: mount(2) with valid C strings.
    let ret = unsafe { libc::mount(src.as_ptr(), target.as_ptr(), std::ptr::null(), flags, std::ptr::null()) };
    if ret < 0 {
        Err(last_errno())
    } else {
        Ok(())
    }
}

fn is_mountpoint(path: &Path) -> bool {
    let (Ok(me), Some(Ok(parent))) = (fs::metadata(path), path.parent().map(fs::metadata)) else {
        return false;
    };
    // A bind mount of a file or of a directory onto itself keeps the device; mountinfo is the sure test.
    if me.dev() != parent.dev() {
        return true;
    }
    let Ok(canon) = fs::canonicalize(path) else {
        return false;
    };
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = canon.to_string_lossy().replace(' ', "\\040");
    info.lines().any(|l| l.split(' ').nth(4) == Some(want.as_str()))
}

fn persist_error(what: String, errno: i32) -> Error {
    let hint = (errno == libc::EPERM).then_some(Hint::PersistNeedsRoot);
    Error::os(Step::Persist, errno).with_what(what).with_hint(hint)
}

/// Bind-mounts each namespace of `pid` that differs from the caller's onto `dir/KIND` (made if missing).
/// Returns the kinds persisted. On failure, undoes what this call made and nothing else: namespaces that
/// an earlier call persisted into `dir` stay.
pub fn persist(pid: i32, dir: &Path) -> Result<Vec<&'static str>, Error> {
    let mut made = Made::default();
    let result = persist_into(pid, dir, &mut made);
    if result.is_err() {
        made.undo(dir);
    }
    result
}

/// What one [`persist`] call made, newest last, for it to undo on failure.
#[derive(Default)]
struct Made {
    /// Directories it created: `dir` and any missing parents, innermost first.
    dirs: Vec<PathBuf>,
    /// Whether it bind-mounted `dir` onto itself, and whether it wrote the marker that says so.
    self_bind: bool,
    marker: bool,
    /// Files it created in `dir`.
    files: Vec<PathBuf>,
    /// Its bind mounts: the target, and the (device, inode) of the namespace mounted there.
    mounts: Vec<(PathBuf, (u64, u64))>,
}

impl Made {
    fn undo(self, dir: &Path) {
        for (target, ns) in self.mounts.iter().rev() {
            // Only if ours is still what the path shows (nothing was mounted over it since).
            if fs::metadata(target).is_ok_and(|m| (m.dev(), m.ino()) == *ns) {
                let _ = unmount(target);
            }
        }
        for file in self.files.iter().rev() {
            let _ = fs::remove_file(file);
        }
        if self.marker {
            let _ = fs::remove_file(dir.join(MARKER));
        }
        if self.self_bind {
            let _ = unmount(dir);
        }
        for made in &self.dirs {
            let _ = fs::remove_dir(made);
        }
    }
}

/// `umount2(path, MNT_DETACH)`, never through a symlink.
fn unmount(path: &Path) -> Result<(), i32> {
    let c = cstr(path);
    // SAFETY: umount2(2) with a valid C string.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH | libc::UMOUNT_NOFOLLOW) } < 0 {
        return Err(last_errno());
    }
    Ok(())
}

/// Opens `path` without following a symlink in its last component (`O_PATH | O_NOFOLLOW`), so that the
/// mount made through `/proc/self/fd/N` lands on exactly what was checked: a box that can write to the
/// directory cannot redirect root's bind mounts onto files of its choosing.
fn open_nofollow(path: &Path, extra: libc::c_int) -> Result<OwnedFd, i32> {
    let c = cstr(path);
    // SAFETY: open(2) with a valid C string; we own the result.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC | extra) };
    if fd < 0 {
        return Err(last_errno());
    }
    // SAFETY: a fresh fd.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let meta = fs::metadata(fd_path(&fd)).map_err(|e| errno_of(&e))?;
    if meta.file_type().is_symlink() {
        return Err(libc::ELOOP);
    }
    Ok(fd)
}

fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

fn persist_into(pid: i32, dir: &Path, made: &mut Made) -> Result<Vec<&'static str>, Error> {
    let refuse = |what: String, errno: i32| persist_error(what, errno);
    let missing: Vec<PathBuf> =
        dir.ancestors().take_while(|p| !p.as_os_str().is_empty() && !p.exists()).map(Path::to_path_buf).collect();
    let created = fs::create_dir_all(dir);
    made.dirs = missing.into_iter().filter(|p| p.is_dir()).collect();
    created.map_err(|e| refuse(format!("create {}", dir.display()), errno_of(&e)))?;
    let dir_fd = open_nofollow(dir, libc::O_DIRECTORY)
        .map_err(|e| refuse(format!("persist into {} (a directory, not a symlink)", dir.display()), e))?;
    // Which kinds, and that none is persisted there already (before making anything).
    let mut todo = Vec::new();
    // Every kind (the `*_for_children` links are views of these), by name.
    for kind in Namespace::by_proc_name().map(Namespace::proc_name) {
        let source = Path::new("/proc").join(pid.to_string()).join("ns").join(kind);
        let theirs = match fs::metadata(&source) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !Path::new("/proc/self/ns").join(kind).exists() => {
                continue
            }
            Err(e) => return Err(refuse(format!("read the namespaces of process {pid}"), errno_of(&e))),
        };
        let ours = fs::metadata(Path::new("/proc/self/ns").join(kind)).ok();
        if ours.is_some_and(|o| o.ino() == theirs.ino() && o.dev() == theirs.dev()) {
            continue;
        }
        let target = dir.join(kind);
        if is_mountpoint(&target) {
            return Err(refuse(format!("persist into {}", target.display()), libc::EBUSY));
        }
        todo.push((kind, source, (theirs.dev(), theirs.ino())));
    }
    // A mount namespace file may only be bound where propagation is private (or it could form a loop
    // through a peer group): make the directory its own private mount first, as `ip netns` does.
    let dir_fd = if dir.join(MARKER).exists() {
        dir_fd
    } else {
        let at = fd_path(&dir_fd);
        mount(&at, &at, libc::MS_BIND).map_err(|e| refuse(format!("make {} a private mount", dir.display()), e))?;
        made.self_bind = true;
        // The fd still names the directory under the new mount: open the mount itself.
        let fd =
            open_nofollow(dir, libc::O_DIRECTORY).map_err(|e| refuse(format!("persist into {}", dir.display()), e))?;
        mount(Path::new("none"), &fd_path(&fd), libc::MS_PRIVATE)
            .map_err(|e| refuse(format!("make {} a private mount", dir.display()), e))?;
        let (_, created) = create_in(&fd, MARKER).map_err(|e| refuse(format!("write into {}", dir.display()), e))?;
        made.marker = created;
        fd
    };
    let mut done = Vec::new();
    for (kind, source, ns) in todo {
        let target = dir.join(kind);
        let (file, created) =
            create_in(&dir_fd, kind).map_err(|e| refuse(format!("create {}", target.display()), e))?;
        if created {
            made.files.push(target.clone());
        }
        mount(&source, &fd_path(&file), libc::MS_BIND)
            .map_err(|e| refuse(format!("bind the {kind} namespace onto {}", target.display()), e))?;
        made.mounts.push((target, ns));
        done.push(kind);
    }
    Ok(done)
}

/// Creates (or opens) the empty regular file `name` in the directory `dir`, never through a symlink;
/// returns an fd of it, and whether this call created it.
fn create_in(dir: &OwnedFd, name: &str) -> Result<(OwnedFd, bool), i32> {
    let c = CString::new(name).expect("static names");
    let flags = libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK;
    // SAFETY: openat(2) on our directory fd with a valid C string.
    let mut fd = unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags | libc::O_CREAT | libc::O_EXCL, 0o444) };
    let created = fd >= 0;
    if !created && last_errno() == libc::EEXIST {
        // SAFETY: as above.
        fd = unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags) };
    }
    if fd < 0 {
        return Err(last_errno());
    }
    // SAFETY: a fresh fd.
    let file = unsafe { OwnedFd::from_raw_fd(fd) };
    let meta = fs::metadata(fd_path(&file)).map_err(|e| errno_of(&e))?;
    // Only a file of our own making: not a device, not a hard link to a file elsewhere.
    if !meta.file_type().is_file() || meta.nlink() != 1 || meta.len() != 0 {
        return Err(libc::EEXIST);
    }
    Ok((file, created))
}

/// Unmounts what `persist` mounted under `dir` and removes the files it made. Returns the kinds released.
pub fn release(dir: &Path) -> Result<Vec<&'static str>, Error> {
    let mut done = Vec::new();
    // Every kind (the `*_for_children` links are views of these), by name.
    for kind in Namespace::by_proc_name().map(Namespace::proc_name) {
        let target = dir.join(kind);
        if !target.exists() {
            continue;
        }
        if is_mountpoint(&target) {
            let c = cstr(&target);
            // SAFETY: umount2(2) with a valid C string; never through a symlink.
            if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH | libc::UMOUNT_NOFOLLOW) } < 0 {
                return Err(persist_error(format!("unmount {}", target.display()), last_errno()));
            }
            done.push(kind);
        }
        let _ = fs::remove_file(&target);
    }
    if dir.join(MARKER).exists() {
        let _ = fs::remove_file(dir.join(MARKER));
        let c = cstr(dir);
        // SAFETY: as above.
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH | libc::UMOUNT_NOFOLLOW) } < 0 {
            return Err(persist_error(format!("unmount {}", dir.display()), last_errno()));
        }
    }
    Ok(done)
}
