//! The child's side of a box's own filesystem: the steps [`crate::mounts`] planned, with raw system calls
//! on the parent's strings (no allocation), then the switch to the new root.

use std::ffi::CStr;
use std::ptr;

use libc::{c_int, c_uint, c_ulong};

use super::sys::{check, close, errno, report_at};
use super::Setup;
use crate::errors::Step;
use crate::mounts::{Action, Filesystem, InRoot, MountStep, Target};

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

/// `/proc/self/fd/N` (under `/oldroot` when staging), in `buf`: mount(2) reaches the very file an
/// `O_PATH` fd holds through it, with no second lookup of its name.
fn fd_path(buf: &mut [u8; 48], fd: c_int, staging: bool) -> &CStr {
    let prefix: &[u8] = if staging { b"/oldroot/proc/self/fd/" } else { b"/proc/self/fd/" };
    let mut digits = [0u8; 10];
    let mut n = fd.unsigned_abs();
    let mut len = 0;
    loop {
        if let Some(d) = digits.get_mut(len) {
            *d = b'0' + (n % 10) as u8;
        }
        len += 1;
        n /= 10;
        if n == 0 || len == digits.len() {
            break;
        }
    }
    let mut at = 0;
    for &b in prefix.iter().chain(digits.iter().take(len).rev()) {
        if let Some(slot) = buf.get_mut(at) {
            *slot = b;
        }
        at += 1;
    }
    if let Some(slot) = buf.get_mut(at) {
        *slot = 0;
    }
    // The buffer holds the prefix, at most 10 digits and a NUL: 33 bytes of 48.
    CStr::from_bytes_until_nul(buf).unwrap_or(c"")
}

/// The target's fd (`O_PATH`), each missing directory on the way made (and the last name, a file or a
/// directory, when `create` is set). Fails the step `at` naming the mount point.
fn resolve(s: &Setup<'_>, root_fd: c_int, target: &InRoot, create: bool, at: u16) -> c_int {
    let mut parent = root_fd;
    let last = target.prefixes.len().saturating_sub(1);
    for (i, (prefix, name)) in target.prefixes.iter().zip(&target.names).enumerate() {
        let is_file = i == last && target.file;
        let mut fd = open_in_root(root_fd, prefix, !is_file);
        if fd < 0 && errno() == libc::ENOENT && (create || i < last) {
            let made = if is_file {
                // SAFETY: openat(2) with a NUL-terminated name; O_NOFOLLOW: never through a symlink.
                let file = unsafe {
                    libc::openat(
                        parent,
                        name.as_ptr(),
                        libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                        0o644,
                    )
                };
                close(file);
                file
            } else {
                mkdir(parent, name, 0o755)
            };
            if made < 0 && errno() != libc::EEXIST {
                report_at(s, Step::MountPoint, errno(), at);
            }
            fd = open_in_root(root_fd, prefix, !is_file);
        }
        if fd < 0 {
            report_at(s, Step::MountPoint, errno(), at);
        }
        if parent != root_fd {
            close(parent);
        }
        parent = fd;
    }
    parent
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
            let fd = resolve(s, *root_fd, target, true, at);
            let mut buf = [0u8; 48];
            if mount(source, fd_path(&mut buf, fd, fs.staging), fstype.as_deref(), *flags, data.as_deref()) < 0 {
                fail(Step::Mount);
            }
            close_unless(fd, *root_fd);
        }
        (Target::InRoot(target), Action::ReadOnly) => {
            // Resolved again: the name now leads to what was mounted on it.
            let fd = resolve(s, *root_fd, target, false, at);
            read_only(s, fd, at);
            close_unless(fd, *root_fd);
        }
        (Target::InRoot(target), Action::Symlink { to }) => {
            let (Some(name), Some(parents)) = (target.names.last(), target.prefixes.len().checked_sub(1)) else {
                report_at(s, Step::MountPoint, libc::EINVAL, at)
            };
            // The parent directory: the target's prefixes but the last (made by the mounts before).
            let fd = if parents == 0 { *root_fd } else { resolve_prefix(s, *root_fd, target, parents, at) };
            // SAFETY: symlinkat(2) with NUL-terminated strings.
            if unsafe { libc::symlinkat(to.as_ptr(), fd, name.as_ptr()) } < 0 {
                fail(Step::MountPoint);
            }
            close_unless(fd, *root_fd);
        }
        _ => report_at(s, Step::Mount, libc::EINVAL, at),
    }
}

/// Closes a target's fd, unless it is the root's (a target of no names).
fn close_unless(fd: c_int, root_fd: c_int) {
    if fd != root_fd {
        close(fd);
    }
}

/// The directory of the target's first `count` names, resolved inside the root.
fn resolve_prefix(s: &Setup<'_>, root_fd: c_int, target: &InRoot, count: usize, at: u16) -> c_int {
    let Some(prefix) = target.prefixes.get(count - 1) else { report_at(s, Step::MountPoint, libc::EINVAL, at) };
    let fd = open_in_root(root_fd, prefix, true);
    if fd < 0 {
        report_at(s, Step::MountPoint, errno(), at);
    }
    fd
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
    let mut root_fd = -1;
    for step in &fs.steps {
        run_step(s, fs, &mut root_fd, step);
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
