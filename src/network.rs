//! A virtual LAN that boxes join: a bridge, and a veth pair per box.
//!
//! Where the bridge lives depends on the caller:
//! - **Host** (a caller with `CAP_NET_ADMIN`, i.e. root): in the caller's network namespace, with the
//!   first address, so the host reaches the boxes as it reaches Docker's. A bridge there outlives a
//!   killed caller, so a janitor (the helper program, in its own session) waits on a socket and deletes
//!   it when the caller is gone.
//! - **Private** (everyone else): in a network namespace owned by a user namespace of the caller's own.
//!   A short-lived child creates both and hands back, through the fd table it shares with us
//!   (`CLONE_FILES`), fds of the two namespaces and a netlink socket made inside. Nothing else keeps them:
//!   when the caller closes the fds (or dies), the namespaces and every interface in them go.
//!   Boxes on such a network are started inside that user namespace (see [`Lan::join`]), since a veth
//!   can only join two network namespaces whose owners the creator holds `CAP_NET_ADMIN` over.

use std::ffi::{c_void, CString};
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Mutex, PoisonError};

use libc::{c_int, pid_t};

use crate::errors::{SpawnError, Stage};
use crate::netlink::{self, Netlink};
use crate::spawn::{reap, Command};
use crate::spec::Config;
use crate::stack::ChildStack;

enum Home {
    Host { janitor: pid_t, line: OwnedFd },
    Private { userns: OwnedFd, netns: OwnedFd },
}

/// A bridge with the gateway address, and the means to connect boxes to it.
pub struct Lan {
    /// `None` once closed: for a private network this socket holds the namespace too.
    netlink: Mutex<Option<Netlink>>,
    bridge_name: String,
    bridge: u32,
    gateway: Ipv4Addr,
    prefix: u8,
    private: bool,
    /// The process that made it: a forked copy of the caller must not delete what the caller still uses.
    owner: u32,
    /// `None` once closed.
    home: Mutex<Option<Home>>,
}

fn os_err(stage: Stage, what: &str, err: &std::io::Error) -> SpawnError {
    SpawnError::os(stage, err.raw_os_error().unwrap_or(libc::EIO)).with_what(what.to_owned())
}

impl Lan {
    /// A bridge in the caller's network namespace (needs `CAP_NET_ADMIN`), removed by a janitor process
    /// if the caller dies before [`Lan::close`].
    pub fn host(bridge_name: &str, gateway: Ipv4Addr, prefix: u8) -> Result<Lan, SpawnError> {
        let mut nl = Netlink::open().map_err(|e| os_err(Stage::Network, "open a netlink socket", &e))?;
        let (janitor, line) = start_janitor(&netlink::delete_link_message(bridge_name))?;
        let made = nl.create_bridge(bridge_name, gateway, prefix);
        let mut lan = Lan {
            netlink: Mutex::new(Some(nl)),
            bridge_name: bridge_name.to_owned(),
            bridge: 0,
            gateway,
            prefix,
            private: false,
            owner: std::process::id(),
            home: Mutex::new(Some(Home::Host { janitor, line })),
        };
        // On failure, dropping `lan` lets the janitor go.
        lan.bridge = made.map_err(|e| {
            let err = os_err(Stage::Network, &format!("create the bridge {bridge_name}"), &e);
            err.with_hint((e.raw_os_error() == Some(libc::EPERM)).then_some(
                "a bridge in the host's network namespace needs CAP_NET_ADMIN (root); \
                 Network(private=True) keeps the LAN in namespaces of your own",
            ))
        })?;
        Ok(lan)
    }

    /// A bridge in a new network namespace owned by a new user namespace in which the caller is root.
    pub fn private(bridge_name: &str, gateway: Ipv4Addr, prefix: u8) -> Result<Lan, SpawnError> {
        let (userns, netns, socket) = crate::spawner::run(make_private_namespaces).and_then(|r| r)?;
        let mut nl = Netlink::from_fd(socket);
        let bridge = nl
            .create_bridge(bridge_name, gateway, prefix)
            .map_err(|e| os_err(Stage::Network, &format!("create the bridge {bridge_name}"), &e))?;
        Ok(Lan {
            netlink: Mutex::new(Some(nl)),
            bridge_name: bridge_name.to_owned(),
            bridge,
            gateway,
            prefix,
            private: true,
            owner: std::process::id(),
            home: Mutex::new(Some(Home::Private { userns, netns })),
        })
    }

    #[must_use]
    pub fn is_private(&self) -> bool {
        self.private
    }

    #[must_use]
    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    #[must_use]
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Runs `f` with the netlink socket, unless the network is closed.
    fn with_netlink<R>(&self, f: impl FnOnce(&mut Netlink) -> Result<R, SpawnError>) -> Result<R, SpawnError> {
        let mut nl = self.netlink.lock().unwrap_or_else(PoisonError::into_inner);
        match nl.as_mut() {
            Some(nl) => f(nl),
            None => Err(SpawnError::Invalid("the network is closed".into())),
        }
    }

    fn home(&self) -> std::sync::MutexGuard<'_, Option<Home>> {
        self.home.lock().unwrap_or_else(PoisonError::into_inner)
    }

    #[must_use]
    pub fn bridge_name(&self) -> &str {
        &self.bridge_name
    }

    /// A new fd of the namespace `kind` ("user" or "net") the network lives in (private networks only).
    pub fn namespace_fd(&self, kind: &str) -> Result<Option<OwnedFd>, SpawnError> {
        let home = self.home();
        let fd = match (&*home, kind) {
            (None, _) => return Err(SpawnError::Invalid("the network is closed".into())),
            (Some(Home::Private { userns, .. }), "user") => userns,
            (Some(Home::Private { netns, .. }), "net") => netns,
            _ => return Ok(None),
        };
        fd.try_clone().map(Some).map_err(|e| os_err(Stage::JoinUser, "duplicate a namespace fd", &e))
    }

    /// What a box's spawn needs: the config to spawn with (a box on a private network is started inside
    /// its user namespace rather than in one of its own), and that namespace to join first.
    pub fn join(&self, config: &Config) -> Result<(Config, Option<OwnedFd>), SpawnError> {
        if !config.net {
            return Err(SpawnError::Invalid("a box on a network needs its own network namespace (net=True)".into()));
        }
        let Some(fd) = self.namespace_fd("user")? else {
            return Ok((config.clone(), None));
        };
        if config.parent_writes_maps() {
            return Err(SpawnError::Invalid(
                "a box on a network made without root lives in the network's user namespace, where you are \
                 root: it takes no uid_map, gid_map or setgroups"
                    .into(),
            ));
        }
        Ok((Config { user: None, ..config.clone() }, Some(fd)))
    }

    /// Connects the box `pid` (waiting in its new network namespace) through a new veth pair: `host_name`
    /// on the bridge, `eth0` in the box.
    pub fn attach(&self, host_name: &str, pid: pid_t) -> Result<(), SpawnError> {
        self.with_netlink(|nl| {
            nl.create_veth(host_name, self.bridge, pid as u32).map_err(|e| {
                // The kernel answers EINVAL for a master that is gone (deleted behind our back): say so.
                if matches!(nl.index_of(&self.bridge_name), Err(gone) if gone.raw_os_error() == Some(libc::ENODEV)) {
                    let what = format!("connect the box to {}, which no longer exists", self.bridge_name);
                    return SpawnError::os(Stage::Network, libc::ENODEV).with_what(what);
                }
                os_err(Stage::Network, &format!("connect the box to {}", self.bridge_name), &e)
            })
        })
    }

    /// Removes a box's veth pair, if it is still there.
    pub fn detach(&self, host_name: &str) -> Result<(), SpawnError> {
        self.with_netlink(|nl| match nl.delete_link(host_name) {
            Err(e) if e.raw_os_error() != Some(libc::ENODEV) => Err(os_err(Stage::Network, "delete a veth", &e)),
            _ => Ok(()),
        })
    }

    /// Whether the interface `name` exists in the bridge's network namespace.
    pub fn has_link(&self, name: &str) -> Result<bool, SpawnError> {
        self.with_netlink(|nl| match nl.index_of(name) {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(false),
            Err(e) => Err(os_err(Stage::Network, "look up an interface", &e)),
        })
    }

    /// The interfaces in the bridge's network namespace.
    pub fn link_names(&self) -> Result<Vec<String>, SpawnError> {
        self.with_netlink(|nl| nl.link_names().map_err(|e| os_err(Stage::Network, "list the interfaces", &e)))
    }

    /// Deletes the bridge and lets go of the janitor or the namespaces. Idempotent. In a forked copy of
    /// the process that made it, only lets go of this copy's fds.
    pub fn close(&self) -> Result<(), SpawnError> {
        let Some(home) = self.home().take() else { return Ok(()) };
        let nl = self.netlink.lock().unwrap_or_else(PoisonError::into_inner).take();
        if std::process::id() != self.owner {
            return Ok(());
        }
        let deleted = match nl.map(|mut nl| nl.delete_link(&self.bridge_name)) {
            Some(Err(e)) if e.raw_os_error() != Some(libc::ENODEV) => {
                Err(os_err(Stage::Network, &format!("delete the bridge {}", self.bridge_name), &e))
            }
            _ => Ok(()),
        };
        if let Home::Host { janitor, line } = home {
            // Done: the janitor leaves without deleting anything (a later bridge may reuse the name).
            // SAFETY: one byte from a static buffer to our own socket.
            unsafe { libc::write(line.as_raw_fd(), b"x".as_ptr().cast(), 1) };
            drop(line);
            reap(janitor);
        }
        deleted
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// Starts the helper as a janitor that deletes the interface when our end of `line` closes without a
/// "done"; returns once it is armed (its parent-death signal cleared, in a session of its own).
fn start_janitor(delete: &[u8]) -> Result<(pid_t, OwnedFd), SpawnError> {
    let mut fds = [0; 2];
    // SAFETY: socketpair into a stack array.
    let ret = unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) };
    if ret < 0 {
        return Err(SpawnError::os(Stage::Network, crate::spawn::last_errno()).with_what("create a socket pair"));
    }
    // SAFETY: two fresh fds we own.
    let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| os_err(Stage::Stdio, "open /dev/null", &e))?;
    // Kept open until the janitor has exec'd it.
    let helper_file = crate::helper::fd()?;
    let helper = helper_file.as_raw_fd();
    let hex = delete.iter().fold(String::new(), |mut hex, b| {
        let _ = write!(hex, "{b:02x}");
        hex
    });
    let cs = |s: String| CString::new(s).expect("no NUL");
    let command = Command {
        exec_paths: vec![cs(format!("/proc/self/fd/{helper}"))],
        argv: vec![cs("nsbox-janitor".into()), cs("janitor".into()), cs(theirs.as_raw_fd().to_string()), cs(hex)],
        env: Some(Vec::new()),
        cwd: Some(cs("/".into())),
        stdio: [null.as_raw_fd(); 3],
        pass_fds: vec![theirs.as_raw_fd(), helper],
        ..Command::default()
    };
    let pid =
        crate::spawner::run(move || crate::spawn::spawn(&Config::default(), &command, None, None)).and_then(|r| r)?;
    drop(theirs);
    let mut armed = [0u8; 1];
    // SAFETY: reading one byte into a stack buffer.
    let n = unsafe { libc::read(ours.as_raw_fd(), armed.as_mut_ptr().cast(), 1) };
    if n != 1 || armed[0] != b'a' {
        crate::spawn::kill_and_reap(pid);
        return Err(SpawnError::Internal("the network's janitor did not start".into()));
    }
    Ok((pid, ours))
}

/// Filled by the child of [`make_private_namespaces`]: fds in the table it shares with us, or an error.
struct Private {
    uid_map: CString,
    gid_map: CString,
    userns: AtomicI32,
    netns: AtomicI32,
    socket: AtomicI32,
    /// (stage, errno) of a failure, or 0.
    stage: AtomicI32,
    errno: AtomicI32,
}

fn make_private_namespaces() -> Result<(OwnedFd, OwnedFd, OwnedFd), SpawnError> {
    let (uid, gid) = (nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw());
    let plan = Private {
        uid_map: CString::new(format!("0 {uid} 1")).expect("digits"),
        gid_map: CString::new(format!("0 {gid} 1")).expect("digits"),
        userns: AtomicI32::new(-1),
        netns: AtomicI32::new(-1),
        socket: AtomicI32::new(-1),
        stage: AtomicI32::new(0),
        errno: AtomicI32::new(0),
    };
    let flags = libc::CLONE_NEWUSER | libc::CLONE_NEWNET | libc::CLONE_FILES | libc::CLONE_VM | libc::CLONE_VFORK;
    let pid = ChildStack::with(|stack, _| {
        let arg = std::ptr::from_ref(&plan).cast_mut().cast();
        // SAFETY: the child runs `private_child` on its own stack, reads `plan` and writes only its atomics;
        // CLONE_VFORK returns once it has exited.
        unsafe { libc::clone(private_child, stack, flags | libc::SIGCHLD, arg) }
    })?;
    if pid < 0 {
        let err = SpawnError::os(Stage::Clone, crate::spawn::last_errno());
        return Err(err.with_what("create the network's user and network namespaces".to_owned()));
    }
    reap(pid);
    // SAFETY: fds the child opened in our shared table (or -1); each is taken once.
    let take = |fd: &AtomicI32| {
        let fd = fd.load(Ordering::Acquire);
        (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
    };
    let (userns, netns, socket) = (take(&plan.userns), take(&plan.netns), take(&plan.socket));
    let stage = plan.stage.load(Ordering::Acquire);
    if stage != 0 {
        let stage = Stage::from_code(stage as u32).unwrap_or(Stage::Network);
        return Err(SpawnError::os(stage, plan.errno.load(Ordering::Acquire))
            .with_what(format!("make the network's namespaces: cannot {}", stage.action())));
    }
    match (userns, netns, socket) {
        (Some(u), Some(n), Some(s)) => Ok((u, n, s)),
        _ => Err(SpawnError::Internal("the network's namespaces were not handed back".into())),
    }
}

/// Writes `text` to `path` in one `write`. Raw syscalls only: we share the caller's memory.
fn write_file(path: &core::ffi::CStr, text: &core::ffi::CStr) -> bool {
    // SAFETY: valid C strings; plain syscalls.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return false;
        }
        let len = text.count_bytes();
        let ok = libc::write(fd, text.as_ptr().cast(), len) == len as isize;
        libc::close(fd);
        ok
    }
}

fn open_ns(path: &core::ffi::CStr) -> c_int {
    // SAFETY: open(2) on a static path.
    unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) }
}

extern "C" fn private_child(arg: *mut c_void) -> c_int {
    // SAFETY: the parent passes a `Private` that outlives us (CLONE_VFORK).
    let plan = unsafe { &*arg.cast::<Private>() };
    let errno = || {
        // SAFETY: reading this thread's errno.
        unsafe { *libc::__errno_location() }
    };
    let fail = |stage: Stage| {
        plan.errno.store(errno(), Ordering::Release);
        plan.stage.store(stage as i32, Ordering::Release);
        1
    };
    if !write_file(c"/proc/self/setgroups", c"deny") {
        return fail(Stage::Setgroups);
    }
    if !write_file(c"/proc/self/uid_map", &plan.uid_map) {
        return fail(Stage::UidMap);
    }
    if !write_file(c"/proc/self/gid_map", &plan.gid_map) {
        return fail(Stage::GidMap);
    }
    for (path, out) in [(c"/proc/self/ns/user", &plan.userns), (c"/proc/self/ns/net", &plan.netns)] {
        let fd = open_ns(path);
        if fd < 0 {
            return fail(Stage::Network);
        }
        out.store(fd, Ordering::Release);
    }
    // SAFETY: a plain syscall; the socket lands in the table we share with the parent.
    let sock = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
    if sock < 0 {
        return fail(Stage::Network);
    }
    plan.socket.store(sock, Ordering::Release);
    0
}
