//! What the child does between `clone` and `execve`.
//!
//! The child shares the caller's memory (`CLONE_VM`) while other threads of the caller keep running, so
//! it may only make raw, async-signal-safe system calls on data the parent prepared: no allocation, no
//! locks, no panics (so no indexing or unwrap), no Python. Each failure is written to the CLOEXEC error
//! pipe as a (stage, errno) record and the child `_exit`s.
//!
//! The namespace steps ([`set_parent_death_signal`], [`configure_namespaces`], [`mount_proc`]) take a
//! [`Setup`] rather than the whole [`Plan`]: `nsbox.call` runs the same steps in a forked copy of the
//! interpreter (see [`crate::fork`]).

use std::ffi::c_void;
use std::ptr;
use std::sync::atomic::{AtomicI32, Ordering};

use libc::{c_char, c_int};

use crate::errors::Step;
use crate::namespace::Namespace;
use crate::netlink::{Eth0, INDEX_OFFSET};
use crate::protocol::Message;
use crate::spec::{Setgroups, Spec};

extern "C" {
    static environ: *const *const c_char;
}

/// What the namespace steps need, prepared by the parent: the config, the error pipe, the id-map
/// handshake and the map texts (pointers into `CString`s the parent keeps alive).
pub struct Setup<'a> {
    pub config: &'a Spec,
    pub err_fd: c_int,
    /// The parent's read end of the error pipe: the child closes its copy first, so that the parent's
    /// death leaves the pipe without a reader ([`die_with_parent_from_now_on`]).
    pub err_read_fd: c_int,
    /// The caller's `PR_GET_DUMPABLE`: a change of ids clears it on the memory the child may share with the
    /// caller (and hides `/proc/self` files from the new ids), so it is put back after each.
    pub dumpable: c_int,
    /// The read end on which the child waits for the parent to write its id maps, or -1.
    pub go_fd: c_int,
    /// The child's copy of the go pipe's write end: closed first, or the parent closing its own would
    /// never give us EOF.
    pub go_write_fd: c_int,
    /// `uid_map`/`gid_map` text when the child writes its own maps.
    pub uid_map: *const c_char,
    pub gid_map: *const c_char,
    /// The messages that configure `eth0` once the parent has made it (the box is on a network).
    pub eth0: Option<&'a Eth0>,
}

/// Everything the child needs, prepared by the parent: pointers into `CString`s the parent owns and
/// keeps alive until the child has exec'd or exited.
pub struct Plan<'a> {
    pub setup: Setup<'a>,
    /// Candidate paths for the program (the `PATH` search is done by the parent, tried here in order).
    pub exec_paths: &'a [*const c_char],
    /// NULL-terminated.
    pub argv: &'a [*const c_char],
    /// NULL-terminated; `None` keeps the caller's `environ`.
    pub envp: Option<&'a [*const c_char]>,
    pub cwd: *const c_char,
    /// The fds to become 0, 1 and 2 (-1: inherit). The parent made sure none lies below 3 unless it is
    /// already its own target, so the `dup2`s cannot clobber one another.
    pub stdio: [c_int; 3],
    /// Sorted, each at least 3.
    pub pass_fds: &'a [c_int],
    /// Sorted, each at least 3: every fd the child still needs (`pass_fds`, stdio sources, pipes, the
    /// helper's fds); all others are closed before the working directory is resolved.
    pub keep_fds: &'a [c_int],
    pub new_session: bool,
    pub process_group: c_int,
    /// Drop the caller's supplementary groups before a user namespace is made or joined: once in it,
    /// `setgroups` is denied (`/proc/PID/setgroups`), and host groups such as root's would stay.
    pub drop_groups: bool,
    /// Namespaces to join first, as (fd, nstype, stage), user first.
    pub join: &'a [(c_int, c_int, Step)],
    /// Namespaces the child makes itself with `unshare(2)` (after dropping groups) rather than the clone
    /// making them; 0 for none. The child then sets them up before any second clone.
    pub unshare_flags: c_int,
    /// Clone once more (on `inner_stack`) after joining or unsharing: a PID namespace applies to
    /// children only.
    pub fork_again: bool,
    /// The namespaces that second clone creates (a box on a private network: its user namespace is
    /// joined first, the rest are new).
    pub inner_flags: c_int,
    pub inner_stack: *mut c_void,
    /// Where the first child leaves the PID of the second for the parent.
    pub inner_pid: &'a AtomicI32,
    /// The joined box's root and working directory (`O_PATH`), or -1.
    pub root_fd: c_int,
    pub cwd_fd: c_int,
    /// When not -1: exec this memfd (`nsbox-helper`) with `helper_argv`; it runs the command.
    pub helper_fd: c_int,
    /// NULL-terminated.
    pub helper_argv: &'a [*const c_char],
    /// Fds the helper inherits (error pipe, time namespace; -1 for none): their CLOEXEC is cleared last.
    pub helper_fds: [c_int; 2],
    /// `subprocess`'s `umask`, `extra_groups`, `group` and `user`, applied last, in that order (-1 or
    /// `None`: unchanged).
    pub umask: c_int,
    pub extra_groups: Option<&'a [libc::gid_t]>,
    pub gid: Option<libc::gid_t>,
    pub uid: Option<libc::uid_t>,
}

fn errno() -> c_int {
    // SAFETY: reading the calling thread's errno is always allowed.
    unsafe { *libc::__errno_location() }
}

/// Reports `stage` with the current errno and exits. Never returns.
fn fail(s: &Setup<'_>, stage: Step) -> ! {
    report(s, stage, errno())
}

/// Writes the failure of `step` with `errno` to the error pipe and exits. Never returns.
pub fn report(s: &Setup<'_>, step: Step, errno: c_int) -> ! {
    send(s, Message::Failed(step, errno));
    // SAFETY: leaving without running anything of the parent's.
    unsafe { libc::_exit(127) }
}

/// Writes one record to the error pipe. A record is 8 bytes, written with one `write(2)`: pipes deliver it
/// whole. A failed or short write is seen by the parent as a child that died or sent a corrupt record.
pub fn send(s: &Setup<'_>, message: Message) {
    send_to(s.err_fd, message);
}

/// [`send`] to an fd held on its own (by a process that may not read its [`Setup`] any more).
pub fn send_to(err_fd: c_int, message: Message) {
    let rec = message.encode();
    // SAFETY: a plain syscall on a buffer on our stack.
    unsafe { libc::write(err_fd, rec.as_ptr().cast::<c_void>(), rec.len()) };
}

/// Reports `stage` with errno and exits when `ret` is negative.
pub fn check(s: &Setup<'_>, stage: Step, ret: c_int) {
    if ret < 0 {
        fail(s, stage);
    }
}

/// Writes `text` (NUL-terminated) to `path` in one `write`, as procfs files want it.
fn write_file(s: &Setup<'_>, stage: Step, path: &core::ffi::CStr, text: *const c_char) {
    // SAFETY: both pointers are valid NUL-terminated strings owned by the parent.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        check(s, stage, fd);
        let len = libc::strlen(text);
        let n = libc::write(fd, text.cast::<c_void>(), len);
        if n < 0 || n as usize != len {
            // A short write to a procfs map file means the kernel refused part of it.
            let e = if n < 0 { errno() } else { libc::EIO };
            report(s, stage, e);
        }
        libc::close(fd);
    }
}

fn write_id_maps(s: &Setup<'_>, setgroups: Setgroups) {
    if setgroups == Setgroups::Deny {
        write_file(s, Step::Setgroups, c"/proc/self/setgroups", c"deny".as_ptr());
    }
    write_file(s, Step::UidMap, c"/proc/self/uid_map", s.uid_map);
    write_file(s, Step::GidMap, c"/proc/self/gid_map", s.gid_map);
}

/// Tells the parent we are ready for our id maps and our network and waits until it has made them.
fn wait_for_parent(s: &Setup<'_>) {
    let mut go = 0u8;
    // SAFETY: plain syscalls on stack buffers.
    unsafe {
        libc::close(s.go_write_fd);
        send(s, Message::Ready);
        loop {
            let n = libc::read(s.go_fd, ptr::addr_of_mut!(go).cast::<c_void>(), 1);
            if n < 0 && errno() == libc::EINTR {
                continue;
            }
            if n != 1 || go != 1 {
                // The parent gave up (and already knows why): leave quietly.
                libc::_exit(127);
            }
            break;
        }
        libc::close(s.go_fd);
    }
}

/// An `AF_INET` socket for interface ioctls, and a zeroed `ifreq` naming `name` (NUL-terminated).
fn interface_request(s: &Setup<'_>, stage: Step, name: &[u8]) -> (c_int, libc::ifreq) {
    // SAFETY: a socket; a zeroed ifreq is a valid value.
    unsafe {
        let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        check(s, stage, sock);
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (dst, src) in ifr.ifr_name.iter_mut().zip(name) {
            *dst = *src as c_char;
        }
        (sock, ifr)
    }
}

fn bring_up_loopback(s: &Setup<'_>) {
    let (sock, mut ifr) = interface_request(s, Step::Loopback, b"lo\0");
    // SAFETY: two ioctls on a stack-allocated ifreq.
    unsafe {
        check(s, Step::Loopback, libc::ioctl(sock, libc::SIOCGIFFLAGS, ptr::addr_of_mut!(ifr)));
        ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        check(s, Step::Loopback, libc::ioctl(sock, libc::SIOCSIFFLAGS, ptr::addr_of_mut!(ifr)));
        libc::close(sock);
    }
}

/// Sends one netlink request from a copy on our stack, with `index` written at [`INDEX_OFFSET`] unless
/// it is 0, and reads the kernel's acknowledgement.
fn netlink_request(s: &Setup<'_>, sock: c_int, msg: &[u8], index: c_int) {
    let mut buf = [0u8; 256];
    let Some(copy) = buf.get_mut(..msg.len()) else { report(s, Step::Network, libc::EMSGSIZE) };
    copy.copy_from_slice(msg);
    if index != 0 {
        if let Some(at) = copy.get_mut(INDEX_OFFSET..INDEX_OFFSET + 4) {
            at.copy_from_slice(&index.to_ne_bytes());
        }
    }
    // SAFETY: send/recv on stack buffers.
    unsafe {
        let n = libc::send(sock, copy.as_ptr().cast(), copy.len(), 0);
        if n < 0 {
            fail(s, Step::Network);
        }
        let mut ack = [0u8; 512];
        let n = loop {
            let n = libc::recv(sock, ack.as_mut_ptr().cast(), ack.len(), 0);
            if n >= 0 || errno() != libc::EINTR {
                break n;
            }
        };
        if n < 0 {
            fail(s, Step::Network);
        }
        // nlmsghdr (16 bytes, type at 4) then nlmsgerr's error (negative errno, 0 for an ACK).
        let kind = ack.get(4..6).map_or(0, |b| u16::from_ne_bytes([b[0], b[1]]));
        let error = ack.get(16..20).map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
        if n < 20 || kind != libc::NLMSG_ERROR as u16 {
            report(s, Step::Network, libc::EPROTO);
        }
        if error != 0 {
            report(s, Step::Network, -error);
        }
    }
}

/// Gives `eth0` (made by the parent in our network namespace) its address, brings it up and routes
/// through the gateway, with messages the parent serialized.
fn configure_eth0(s: &Setup<'_>, eth0: &Eth0) {
    let (inet, mut ifr) = interface_request(s, Step::Network, b"eth0\0");
    // SAFETY: an ioctl on a stack-allocated ifreq; a socket and sends of stack copies.
    unsafe {
        check(s, Step::Network, libc::ioctl(inet, libc::SIOCGIFINDEX, ptr::addr_of_mut!(ifr)));
        libc::close(inet);
        let index = ifr.ifr_ifru.ifru_ifindex;
        let sock = libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE);
        check(s, Step::Network, sock);
        netlink_request(s, sock, &eth0.address, index);
        netlink_request(s, sock, &eth0.up, index);
        netlink_request(s, sock, &eth0.route, 0);
        libc::close(sock);
    }
}

/// Dies with the thread that made us (see spawner.rs for the exec path; `nsbox.call` waits on its thread).
///
/// The kernel clears the parent-death signal on any change of credentials (ids or capabilities), so it
/// is set once at the start and again by [`die_with_parent_from_now_on`] after the last such change.
pub fn set_parent_death_signal(s: &Setup<'_>) {
    // SAFETY: a single syscall.
    check(s, Step::ParentDeath, unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) });
}

/// Sets the parent-death signal for good, after the last credential change, and leaves at once if the
/// caller already died (then no signal would come). The caller's death shows as an error pipe without
/// a reader, which also holds where `getppid()` cannot tell (0 for PID 1 of a new PID namespace).
pub fn die_with_parent_from_now_on(s: &Setup<'_>) {
    set_parent_death_signal(s);
    let mut pfd = libc::pollfd { fd: s.err_fd, events: libc::POLLOUT, revents: 0 };
    // SAFETY: poll on a stack struct, without waiting.
    let n = unsafe { libc::poll(&raw mut pfd, 1, 0) };
    // A pipe without a reader polls POLLERR; a socket whose peer is closed, POLLHUP.
    if n > 0 && pfd.revents & (libc::POLLERR | libc::POLLHUP) != 0 {
        // SAFETY: nobody is waiting for us.
        unsafe { libc::_exit(127) }
    }
}

/// The steps that make new namespaces what `config` asks, in the order that works: id maps first (they give
/// us the capabilities for the rest), a new time namespace with its offsets (it applies to our children,
/// or after `execve`), the hostname, loopback up, and the propagation of `/` before anything is mounted.
/// Mounting proc is separate ([`mount_proc`]): it must be done by a process in the new PID namespace.
pub fn configure_namespaces(s: &Setup<'_>) {
    let cfg = s.config;
    if let Some(user) = &cfg.user {
        if user.child_writes_maps {
            write_id_maps(s, user.setgroups);
        }
    }
    if s.go_fd >= 0 {
        // The parent writes the maps we may not write, and connects our network namespace.
        wait_for_parent(s);
    }
    if let Some(user) = &cfg.user {
        become_root_inside(s, user.setgroups == Setgroups::Allow);
    }
    if cfg.has(Namespace::Time) {
        // SAFETY: a single syscall.
        check(s, Step::TimeNamespace, unsafe { libc::unshare(libc::CLONE_NEWTIME) });
        if let Some(offsets) = &cfg.time_offsets {
            write_file(s, Step::TimeOffsets, c"/proc/self/timens_offsets", offsets.as_ptr());
        }
    }
    if let Some(name) = &cfg.hostname {
        // SAFETY: a valid buffer of that length.
        check(s, Step::Hostname, unsafe { libc::sethostname(name.as_ptr(), name.as_bytes().len()) });
    }
    if cfg.has(Namespace::Net) {
        bring_up_loopback(s);
    }
    if let Some(eth0) = s.eth0 {
        configure_eth0(s, eth0);
    }
    if let (true, Some(flag)) = (cfg.has(Namespace::Mount), cfg.propagation.mount_flag()) {
        // SAFETY: mount(2) with static strings.
        let ret = unsafe { libc::mount(ptr::null(), c"/".as_ptr(), ptr::null(), libc::MS_REC | flag, ptr::null()) };
        check(s, Step::Propagation, ret);
    }
}

/// `setgroups(0, NULL)`: no supplementary groups. Raw, as every credential call here: the C library's
/// wrappers signal every thread of the caller (whose memory we may share) to change their ids too.
pub fn drop_supplementary_groups(s: &Setup<'_>) {
    // SAFETY: a plain syscall that changes only this task's credentials.
    let ret = unsafe { libc::syscall(libc::SYS_setgroups, 0, ptr::null::<libc::gid_t>()) };
    check(s, Step::Groups, ret as c_int);
}

/// Switches to uid and gid 0 of the user namespace we are in, when they are mapped (as `nsenter`, bwrap
/// and runc do). Without it a caller whose own ids are not in the maps (root with
/// `uid_map=[(0, 100000, 65536)]`) would keep its host ids: unmapped ("nobody") inside, yet still the
/// owner of the host's root files. `drop_groups` (setgroups allowed) also drops the supplementary groups;
/// with setgroups denied they were dropped before the namespace was made, when the caller may.
pub fn become_root_inside(s: &Setup<'_>, drop_groups: bool) {
    // SAFETY: plain syscalls that change only this task's credentials.
    unsafe {
        let ret = libc::syscall(libc::SYS_setresgid, 0, 0, 0);
        // EINVAL: 0 is not mapped; the ids stay as the maps translate them.
        if ret < 0 && errno() != libc::EINVAL {
            fail(s, Step::GidMap);
        }
        if drop_groups {
            drop_supplementary_groups(s);
        }
        let ret = libc::syscall(libc::SYS_setresuid, 0, 0, 0);
        if ret < 0 && errno() != libc::EINVAL {
            fail(s, Step::UidMap);
        }
        restore_dumpable(s);
    }
}

/// Puts back the caller's dumpable flag, which a change of ids cleared.
fn restore_dumpable(s: &Setup<'_>) {
    // SAFETY: a single prctl on this process's memory flags, with the value the caller had.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, s.dumpable, 0, 0, 0) };
}

/// `subprocess`'s `extra_groups`, `group` and `user`, in its order, after every step that needs root.
fn switch_credentials(plan: &Plan<'_>) {
    let s = &plan.setup;
    // SAFETY: plain syscalls on data the parent prepared.
    unsafe {
        if let Some(groups) = plan.extra_groups {
            check(s, Step::Groups, libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) as c_int);
        }
        if let Some(gid) = plan.gid {
            check(s, Step::SetGid, libc::syscall(libc::SYS_setresgid, gid, gid, gid) as c_int);
        }
        if let Some(uid) = plan.uid {
            check(s, Step::SetUid, libc::syscall(libc::SYS_setresuid, uid, uid, uid) as c_int);
        }
    }
    if plan.extra_groups.is_some() || plan.gid.is_some() || plan.uid.is_some() {
        restore_dumpable(s);
    }
}

/// Mounts a fresh proc on `/proc` when the config asks for it (nosuid, nodev, noexec, as bubblewrap does).
pub fn mount_proc(s: &Setup<'_>) {
    if !s.config.mount_proc {
        return;
    }
    let dir = s.config.proc_dir.as_ptr();
    // SAFETY: mount(2) with strings the parent owns.
    unsafe {
        // Whatever `propagation` says for `/`, the new proc must not propagate onto the caller's
        // /proc (a shared peer would be covered by it): make the mount there private first, as unshare does.
        let ret = libc::mount(c"none".as_ptr(), dir, ptr::null(), libc::MS_REC | libc::MS_PRIVATE, ptr::null());
        // EINVAL: nothing is mounted there yet (a new root, another directory): nothing can propagate.
        if ret < 0 && errno() != libc::EINVAL {
            fail(s, Step::MountProc);
        }
        let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        let ret = libc::mount(c"proc".as_ptr(), dir, c"proc".as_ptr(), flags, ptr::null());
        check(s, Step::MountProc, ret);
    }
}

fn setup_fds(plan: &Plan<'_>) {
    // SAFETY: fd syscalls only.
    unsafe {
        for (target, &src) in (0..).zip(plan.stdio.iter()) {
            if src < 0 {
                continue;
            }
            // dup2 onto itself is a no-op that would leave FD_CLOEXEC set: clear it instead.
            let ret = if src == target { libc::fcntl(src, libc::F_SETFD, 0) } else { libc::dup2(src, target) };
            check(&plan.setup, Step::Stdio, ret);
        }
        // Mark everything from 3 up close-on-exec except pass_fds. Marking rather than closing keeps the
        // error pipe (and the helper's fds) open until exec.
        close_all_but(plan, plan.pass_fds, libc::CLOSE_RANGE_CLOEXEC);
        for &fd in plan.pass_fds {
            check(&plan.setup, Step::CloseFds, libc::fcntl(fd, libc::F_SETFD, 0));
        }
    }
}

/// Closes (or, with `CLOSE_RANGE_CLOEXEC`, marks close-on-exec) every fd from 3 up except `keep`
/// (sorted, each at least 3). Only the child's fd table is touched (no `CLONE_FILES`).
///
/// `close_range(2)` does it in one call per gap; where it fails (before Linux 5.9, `CLOSE_RANGE_CLOEXEC`
/// before 5.11, or refused by a seccomp profile) the open fds are walked instead, as Python's `subprocess` and glibc do.
fn close_all_but(plan: &Plan<'_>, keep: &[c_int], flags: libc::c_uint) {
    let mut next: libc::c_uint = 3;
    for &fd in keep.iter().chain(&[c_int::MAX]) {
        let fd = fd as libc::c_uint;
        if fd > next {
            let last = if fd == c_int::MAX as libc::c_uint { libc::c_uint::MAX } else { fd - 1 };
            // SAFETY: close_range(2) on the child's own fd table.
            if unsafe { libc::syscall(libc::SYS_close_range, next, last, flags) } < 0 {
                return walk_fds(plan, keep, flags);
            }
        }
        next = next.max(fd.saturating_add(1));
    }
}

/// The fallback of [`close_all_but`]: the fds listed in `/proc/self/fd` (read with `getdents64` into a
/// stack buffer), or every number up to `RLIMIT_NOFILE` where `/proc` is not mounted.
fn walk_fds(plan: &Plan<'_>, keep: &[c_int], flags: libc::c_uint) {
    let cloexec = flags & libc::CLOSE_RANGE_CLOEXEC != 0;
    let act = |fd: c_int| {
        if fd >= 3 && keep.binary_search(&fd).is_err() {
            // SAFETY: fd syscalls on our own table; an fd already gone answers EBADF, which is fine.
            unsafe {
                if cloexec {
                    libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
                } else {
                    libc::close(fd);
                }
            }
        }
    };
    // SAFETY: open/getdents64/close with a stack buffer.
    unsafe {
        let dir = libc::open(c"/proc/self/fd".as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC);
        if dir < 0 {
            let mut limit: libc::rlimit = std::mem::zeroed();
            if libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) < 0 {
                fail(&plan.setup, Step::CloseFds);
            }
            let top = limit.rlim_cur.min(1 << 20) as c_int;
            for fd in 3..top {
                act(fd);
            }
            return;
        }
        let mut buf = [0u8; 2048];
        loop {
            let n = libc::syscall(libc::SYS_getdents64, dir, buf.as_mut_ptr(), buf.len());
            if n < 0 {
                fail(&plan.setup, Step::CloseFds);
            }
            if n == 0 {
                break;
            }
            let mut at = 0usize;
            while at + 19 < n as usize {
                // linux_dirent64: d_ino (8), d_off (8), d_reclen (2), d_type (1), d_name (NUL-terminated).
                let Some(&[lo, hi]) = buf.get(at + 16..at + 18) else { break };
                let reclen = usize::from(u16::from_ne_bytes([lo, hi]));
                let mut fd: c_int = 0;
                let mut digits = 0;
                for &b in buf.get(at + 19..at + reclen).unwrap_or_default() {
                    if !b.is_ascii_digit() {
                        break;
                    }
                    fd = fd.saturating_mul(10).saturating_add(c_int::from(b - b'0'));
                    digits += 1;
                }
                if digits > 0 && fd != dir {
                    act(fd);
                }
                if reclen == 0 {
                    break;
                }
                at += reclen;
            }
        }
        libc::close(dir);
    }
}

/// Default dispositions for every signal, then an empty mask. The order matters: the parent's
/// handlers (Python's among them) must be gone before a pending signal can be delivered here.
fn reset_signals(plan: &Plan<'_>) {
    // SAFETY: sigaction/sigprocmask on zeroed stack structs.
    unsafe {
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        for sig in 1..=libc::SIGRTMAX() {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                // Signals reserved by the C library answer EINVAL; they cannot be handled anyway.
                libc::sigaction(sig, &raw const dfl, ptr::null_mut());
            }
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&raw mut empty);
        check(&plan.setup, Step::Signals, libc::sigprocmask(libc::SIG_SETMASK, &raw const empty, ptr::null_mut()));
    }
}

fn exec(plan: &Plan<'_>) -> ! {
    // SAFETY: argv/envp are NULL-terminated arrays of valid C strings kept alive by the parent.
    unsafe {
        let envp = match plan.envp {
            Some(envp) => envp.as_ptr(),
            None => environ,
        };
        if plan.helper_fd >= 0 {
            for fd in plan.helper_fds {
                if fd >= 0 {
                    check(&plan.setup, Step::Helper, libc::fcntl(fd, libc::F_SETFD, 0));
                }
            }
            libc::syscall(
                libc::SYS_execveat,
                plan.helper_fd,
                c"".as_ptr(),
                plan.helper_argv.as_ptr(),
                envp,
                libc::AT_EMPTY_PATH,
            );
            fail(&plan.setup, Step::Helper);
        }
        let mut saved = 0;
        let mut last = libc::ENOENT;
        for &path in plan.exec_paths {
            libc::execve(path, plan.argv.as_ptr(), envp);
            last = errno();
            // As execvpe and CPython do: keep looking past "not here", remember the first real error.
            if last != libc::ENOENT && last != libc::ENOTDIR && saved == 0 {
                saved = last;
            }
        }
        report(&plan.setup, Step::Exec, if saved != 0 { saved } else { last })
    }
}

/// The rest of the child's life once its namespaces are set up: files, root, proc, directory, session,
/// stdio, signals, credentials, exec.
fn run(plan: &Plan<'_>) -> ! {
    let s = &plan.setup;
    // The caller's other fds go before any path is resolved: none of them, not even a directory fd
    // reached through /proc/self/fd, can serve as the box's root or working directory.
    close_all_but(plan, plan.keep_fds, 0);
    // SAFETY: each call below is a single async-signal-safe syscall wrapper.
    unsafe {
        if let Some(root) = &s.config.root {
            // As `unshare --root`: chroot, then proc is mounted inside the new root.
            check(s, Step::Root, libc::chroot(root.as_ptr()));
            if plan.cwd.is_null() {
                check(s, Step::Chdir, libc::chdir(c"/".as_ptr()));
            }
        }
    }
    mount_proc(s);
    // SAFETY: each call below is a single async-signal-safe syscall wrapper.
    unsafe {
        if plan.root_fd >= 0 {
            check(s, Step::Root, libc::fchdir(plan.root_fd));
            check(s, Step::Root, libc::chroot(c".".as_ptr()));
        }
        if !plan.cwd.is_null() {
            check(s, Step::Chdir, libc::chdir(plan.cwd));
        } else if plan.cwd_fd >= 0 {
            check(s, Step::Chdir, libc::fchdir(plan.cwd_fd));
        }
        if plan.new_session {
            check(s, Step::Session, libc::setsid());
        }
        if plan.process_group >= 0 {
            check(s, Step::Session, libc::setpgid(0, plan.process_group));
        }
        if plan.umask >= 0 {
            libc::umask(plan.umask as libc::mode_t);
        }
    }
    setup_fds(plan);
    reset_signals(plan);
    switch_credentials(plan);
    // Die with the spawning thread; spawner threads outlive their boxes (see spawner.rs).
    die_with_parent_from_now_on(s);
    exec(plan)
}

/// The `clone(2)` entry point; `arg` is a `*const Plan`.
///
/// Drops the caller's groups and joins namespaces (or makes them with `unshare`) where the plan says so;
/// then either sets up the namespaces and goes on, or (a PID namespace applies to children only) clones
/// the process that will run the command and leaves.
pub extern "C" fn entry(arg: *mut c_void) -> c_int {
    // SAFETY: the parent passes a pointer to a Plan that outlives the child's use of it.
    let plan = unsafe { &*arg.cast::<Plan<'_>>() };
    let s = &plan.setup;
    // SAFETY: our own copy of the parent's read end (the fd table is a copy, not shared).
    unsafe { libc::close(s.err_read_fd) };
    set_parent_death_signal(s);
    if plan.drop_groups {
        drop_supplementary_groups(s);
    }
    for &(fd, nstype, stage) in plan.join {
        // SAFETY: setns(2) on an fd the parent opened.
        check(s, stage, unsafe { libc::setns(fd, nstype) });
        if nstype == libc::CLONE_NEWUSER {
            become_root_inside(s, false);
        }
    }
    if plan.unshare_flags != 0 {
        // SAFETY: a single syscall.
        check(s, Step::Clone, unsafe { libc::unshare(plan.unshare_flags) });
    }
    if !plan.fork_again {
        configure_namespaces(s);
        run(plan)
    }
    if plan.unshare_flags != 0 {
        configure_namespaces(s);
    }
    // CLONE_PARENT makes the second child the caller's own child (it can wait for it) and ties its
    // parent-death signal to the spawner thread, like any box. CLONE_VFORK: we leave after its exec.
    // CLONE_PARENT_SETTID: the parent's map and network thread learns the PID before the second child
    // waits for it.
    let flags = plan.inner_flags
        | libc::CLONE_VM
        | libc::CLONE_VFORK
        | libc::CLONE_PARENT
        | libc::CLONE_PARENT_SETTID
        | libc::SIGCHLD;
    // SAFETY: the second child runs on the other half of the stack and reads the same Plan.
    let arg = ptr::from_ref(plan).cast_mut().cast();
    let pid = unsafe { libc::clone(inner_entry, plan.inner_stack, flags, arg, plan.inner_pid.as_ptr()) };
    if pid < 0 {
        fail(s, Step::Clone);
    }
    plan.inner_pid.store(pid, Ordering::Release);
    // SAFETY: leaving without running anything of the parent's.
    unsafe { libc::_exit(0) }
}

extern "C" fn inner_entry(arg: *mut c_void) -> c_int {
    // SAFETY: as for `entry`.
    let plan = unsafe { &*arg.cast::<Plan<'_>>() };
    set_parent_death_signal(&plan.setup);
    if plan.unshare_flags == 0 {
        // Namespaces made by this clone (a box on a private network) are set up here.
        configure_namespaces(&plan.setup);
    }
    run(plan)
}
