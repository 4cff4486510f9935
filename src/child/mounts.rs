//! The child's side of a box's own filesystem: the steps [`crate::mounts`] planned, with raw system calls
//! on the parent's strings (no allocation), then the switch to the new root.

use std::ffi::CStr;
use std::ptr;

use libc::{c_int, c_uint, c_ulong};

use super::sys::{check, close, errno, report_at};
use super::Setup;
use crate::errors::Step;
use crate::mounts::{Action, Filesystem, InRoot, MountStep, Owner, Target};

/// `struct open_how` of `openat2(2)`.
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// `struct mount_attr` of `mount_setattr(2)`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_IN_ROOT: u64 = 0x10;
const MOUNT_ATTR_RDONLY: u64 = 0x1;

/// Where the caller's root is, then the box's, while it is built (in the staging tmpfs).
const OLD_ROOT: &CStr = c"/oldroot";
const NEW_ROOT: &CStr = c"/newroot";

fn mount(source: &CStr, target: &CStr, fstype: Option<&CStr>, flags: c_ulong, data: Option<&CStr>) -> c_int {
    let or_null = |c: Option<&CStr>| c.map_or(ptr::null(), CStr::as_ptr);
    // SAFETY: NUL-terminated strings the parent owns, or null.
    unsafe { libc::mount(source.as_ptr(), target.as_ptr(), or_null(fstype), flags, or_null(data).cast()) }
}

fn pivot_root(new_root: &CStr, put_old: &CStr) -> c_int {
    // SAFETY: pivot_root(2) takes two paths.
    unsafe { libc::syscall(libc::SYS_pivot_root, new_root.as_ptr(), put_old.as_ptr()) as c_int }
}

fn chdir(path: &CStr) -> c_int {
    // SAFETY: a NUL-terminated path.
    unsafe { libc::chdir(path.as_ptr()) }
}

fn mkdir(dirfd: c_int, name: &CStr, mode: libc::mode_t) -> c_int {
    // SAFETY: mkdirat(2) with a NUL-terminated name.
    unsafe { libc::mkdirat(dirfd, name.as_ptr(), mode) }
}

fn umount(target: &CStr) -> c_int {
    // SAFETY: umount2(2) with a NUL-terminated path.
    unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) }
}

fn open_path(dirfd: c_int, path: &CStr, flags: c_int) -> c_int {
    // SAFETY: openat(2) with a NUL-terminated path; O_PATH opens nothing but the name.
    unsafe { libc::openat(dirfd, path.as_ptr(), flags | libc::O_PATH | libc::O_CLOEXEC) }
}

/// `path` resolved inside the root `root_fd` (its symlinks, even absolute ones, stay inside), `O_PATH`.
fn open_in_root(root_fd: c_int, path: &CStr, directory: bool) -> c_int {
    let flags = libc::O_PATH | libc::O_CLOEXEC | if directory { libc::O_DIRECTORY } else { 0 };
    let how = OpenHow { flags: flags as u64, mode: 0, resolve: RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS };
    let size = std::mem::size_of::<OpenHow>();
    // SAFETY: openat2(2) reads `how`, a stack struct of the size given.
    unsafe { libc::syscall(libc::SYS_openat2, root_fd, path.as_ptr(), &raw const how, size) as c_int }
}

/// The mount id of what `fd` is on, or 0.
fn mount_id(fd: c_int) -> u64 {
    // SAFETY: an all-zero statx is a valid value.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: statx(2) of an fd, into a stack struct.
    let ret = unsafe { libc::statx(fd, c"".as_ptr(), libc::AT_EMPTY_PATH, libc::STATX_MNT_ID, &raw mut stx) };
    if ret < 0 || stx.stx_mask & libc::STATX_MNT_ID == 0 {
        return 0;
    }
    stx.stx_mnt_id
}

/// Whether a name may be made in the directory `dir`: it is on the filesystem of the box's own that the
/// planner expects there (never on the caller's files: a directory root, a bind, the caller's root).
fn may_make(fs: &Filesystem, root_fd: c_int, dir: c_int, owner: Owner) -> bool {
    let owner_fd = match owner {
        Owner::Caller => return false,
        Owner::Root => root_fd,
        Owner::Step(j) => match fs.steps.get(j).map(|step| &step.target) {
            Some(Target::InRoot(t)) => match t.prefixes.last() {
                Some(path) => open_in_root(root_fd, path, true),
                None => root_fd,
            },
            _ => return false,
        },
    };
    let id = mount_id(dir);
    let on_it = owner_fd >= 0 && id != 0 && id == mount_id(owner_fd);
    if owner_fd != root_fd {
        close(owner_fd);
    }
    on_it
}

/// The target resolved: the directory that holds it and itself (`O_PATH` fds; either may be `root_fd`).
struct Resolved {
    dir: c_int,
    fd: c_int,
}

impl Resolved {
    fn close(&self, root_fd: c_int) {
        if self.dir != root_fd && self.dir != self.fd {
            close(self.dir);
        }
        if self.fd != root_fd {
            close(self.fd);
        }
    }
}

/// How much of a target [`resolve`] walks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Walk {
    /// All of it, making what is missing.
    Create,
    /// All of it, which must be there.
    Existing,
    /// Its directory (for a symlink to be made in).
    Directory,
}

/// Resolves the target inside the root; with [`Walk::Create`], each missing name on the way (and the last,
/// a file or a directory) is made where [`may_make`] allows. Fails the step `at` naming the mount point.
fn resolve(s: &Setup<'_>, fs: &Filesystem, root_fd: c_int, target: &InRoot, walk: Walk, at: u16) -> Resolved {
    let mut dir = root_fd;
    let mut fd = root_fd;
    let last = target.prefixes.len().saturating_sub(1);
    let names = target.prefixes.len() - usize::from(walk == Walk::Directory && !target.prefixes.is_empty());
    let create = walk == Walk::Create;
    for (i, (prefix, name)) in target.prefixes.iter().zip(&target.names).enumerate().take(names) {
        let is_file = i == last && target.file;
        if fd != dir && dir != root_fd {
            close(dir);
        }
        dir = fd;
        fd = open_in_root(root_fd, prefix, !is_file);
        if fd < 0 && errno() == libc::ENOENT && create {
            if !may_make(fs, root_fd, dir, target.owners.get(i).copied().unwrap_or(Owner::Caller)) {
                report_at(s, Step::MountPoint, libc::ENOENT, at);
            }
            let made = if is_file {
                let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
                // SAFETY: openat(2) with a NUL-terminated name; O_NOFOLLOW: never through a symlink.
                let file = unsafe { libc::openat(dir, name.as_ptr(), flags, 0o644) };
                let failed = (file < 0).then(errno);
                close(file);
                failed
            } else {
                (mkdir(dir, name, 0o755) < 0).then(errno)
            };
            if let Some(e) = made.filter(|&e| e != libc::EEXIST) {
                report_at(s, Step::MountPoint, e, at);
            }
            fd = open_in_root(root_fd, prefix, !is_file);
        }
        if fd < 0 {
            report_at(s, Step::MountPoint, errno(), at);
        }
    }
    if walk == Walk::Directory {
        if dir != root_fd && dir != fd {
            close(dir);
        }
        return Resolved { dir: fd, fd };
    }
    Resolved { dir, fd }
}

/// Mounts on the resolved target, with no second lookup of its path: on the directory itself as the
/// working directory, or on a file by its name in its directory. The errno of a failure.
fn mount_on(
    target: &InRoot,
    resolved: &Resolved,
    source: &CStr,
    fstype: Option<&CStr>,
    flags: c_ulong,
    data: Option<&CStr>,
) -> Result<(), c_int> {
    let (cwd, name) = match (target.file, target.names.last()) {
        (true, Some(name)) => (resolved.dir, name.as_c_str()),
        _ => (resolved.fd, c"."),
    };
    // SAFETY: fchdir(2) to a directory fd of ours.
    if unsafe { libc::fchdir(cwd) } < 0 {
        return Err(errno());
    }
    if target.file {
        // mount(2) would follow a symlink there by the process's root, not the box's: refuse one.
        // SAFETY: an all-zero stat is a valid value.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstatat(2) of a name in the working directory, into a stack struct, not following it.
        if unsafe { libc::fstatat(libc::AT_FDCWD, name.as_ptr(), &raw mut st, libc::AT_SYMLINK_NOFOLLOW) } < 0 {
            return Err(errno());
        }
        if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
            return Err(libc::ELOOP);
        }
    }
    if mount(source, name, fstype, flags, data) < 0 {
        return Err(errno());
    }
    Ok(())
}

fn run_step(s: &Setup<'_>, fs: &Filesystem, root_fd: &mut c_int, step: &MountStep) {
    let at = step.at;
    let fail = |stage: Step| report_at(s, stage, errno(), at);
    match (&step.target, &step.action) {
        (Target::Path(path), Action::Mkdir) => {
            if mkdir(libc::AT_FDCWD, path, 0o700) < 0 {
                fail(Step::MountPoint);
            }
        }
        (Target::Path(path), Action::Mount { source, fstype, flags, data }) => {
            if mount(source, path, fstype.as_deref(), *flags, data.as_deref()) < 0 {
                fail(Step::Mount);
            }
        }
        (Target::Path(path), Action::Enter) => {
            // After the root's mount: the path now leads to it, and targets are resolved inside it.
            *root_fd = open_path(libc::AT_FDCWD, path, libc::O_DIRECTORY);
            if *root_fd < 0 {
                fail(Step::Mount);
            }
        }
        (Target::Path(path), Action::ReadOnly) => {
            // The path leads to what was just mounted on it.
            let fd = open_path(libc::AT_FDCWD, path, libc::O_DIRECTORY);
            if fd < 0 {
                fail(Step::Mount);
            }
            read_only(s, fd, at);
            close(fd);
        }
        (Target::InRoot(target), Action::Mount { source, fstype, flags, data }) => {
            let resolved = resolve(s, fs, *root_fd, target, Walk::Create, at);
            if let Err(e) = mount_on(target, &resolved, source, fstype.as_deref(), *flags, data.as_deref()) {
                report_at(s, Step::Mount, e, at);
            }
            resolved.close(*root_fd);
        }
        (Target::InRoot(target), Action::ReadOnly) => {
            // Resolved again: the name now leads to what was mounted on it.
            let resolved = resolve(s, fs, *root_fd, target, Walk::Existing, at);
            read_only(s, resolved.fd, at);
            resolved.close(*root_fd);
        }
        (Target::InRoot(target), Action::Symlink { to }) => {
            let resolved = resolve(s, fs, *root_fd, target, Walk::Directory, at);
            let Some(name) = target.names.last() else { report_at(s, Step::MountPoint, libc::EINVAL, at) };
            // SAFETY: symlinkat(2) with NUL-terminated strings, in the directory resolved.
            if unsafe { libc::symlinkat(to.as_ptr(), resolved.dir, name.as_ptr()) } < 0 {
                fail(Step::MountPoint);
            }
            resolved.close(*root_fd);
        }
        _ => report_at(s, Step::Mount, libc::EINVAL, at),
    }
}

/// Makes the mount at `fd` and everything under it read-only; only that flag changes (a remount would
/// have to repeat the flags the kernel locked on mounts from the caller's namespace).
fn read_only(s: &Setup<'_>, fd: c_int, at: u16) {
    let attr = MountAttr { attr_set: MOUNT_ATTR_RDONLY, attr_clr: 0, propagation: 0, userns_fd: 0 };
    let flags = (libc::AT_EMPTY_PATH | libc::AT_RECURSIVE) as c_uint;
    let size = std::mem::size_of::<MountAttr>();
    // SAFETY: mount_setattr(2) reads `attr`, a stack struct of the size given, for the mount at `fd`.
    let ret = unsafe { libc::syscall(libc::SYS_mount_setattr, fd, c"".as_ptr(), flags, &raw const attr, size) };
    if ret < 0 {
        report_at(s, Step::Mount, errno(), at);
    }
}

/// Builds the box's root and switches to it (the working directory is then its `/`), or makes the mounts on
/// the caller's root.
pub fn build(s: &Setup<'_>, fs: &Filesystem) {
    if fs.staging {
        // The staging root: a tmpfs on the caller's /tmp (any directory would do: pivot_root moves it away).
        let flags = libc::MS_NOSUID | libc::MS_NODEV;
        check(s, Step::Filesystem, mount(c"nsbox", c"/tmp", Some(c"tmpfs"), flags, Some(c"mode=0700")));
        check(s, Step::Filesystem, chdir(c"/tmp"));
        check(s, Step::Filesystem, mkdir(libc::AT_FDCWD, c"newroot", 0o755));
        check(s, Step::Filesystem, mkdir(libc::AT_FDCWD, c"oldroot", 0o755));
        check(s, Step::Filesystem, pivot_root(c".", c"oldroot"));
        check(s, Step::Filesystem, chdir(c"/"));
    }
    // Mounts are made from their directories (see `mount_on`): without a new root, the working directory
    // is put back after.
    let cwd = if fs.pivot { -1 } else { open_path(libc::AT_FDCWD, c".", libc::O_DIRECTORY) };
    let mut root_fd = -1;
    for step in &fs.steps {
        run_step(s, fs, &mut root_fd, step);
    }
    if cwd >= 0 {
        // SAFETY: fchdir(2) to the directory fd opened above.
        check(s, Step::Chdir, unsafe { libc::fchdir(cwd) });
        close(cwd);
    }
    if fs.staging {
        // The caller's root goes first (its mounts were copied where the box needs them), then the staging
        // root: `pivot_root(".", ".")` stacks it on the new root, where it is detached.
        check(s, Step::Filesystem, umount(OLD_ROOT));
        check(s, Step::Filesystem, chdir(NEW_ROOT));
    } else if fs.pivot {
        // SAFETY: fchdir(2) to the root's directory fd.
        check(s, Step::Root, unsafe { libc::fchdir(root_fd) });
    }
    close(root_fd);
    if fs.pivot {
        // The caller's root, stacked under the new one, is detached: nothing is left to climb back to.
        check(s, Step::Root, pivot_root(c".", c"."));
        check(s, Step::Root, umount(c"."));
        check(s, Step::Root, chdir(c"/"));
    }
}
