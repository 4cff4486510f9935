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
//!
//! A host bridge's subnet must not overlap a route of the host. Checking the routes and then making the
//! bridge are one step ([`Claim`]): two processes making `10.84.0.0/24` at once would otherwise both find
//! it free, and two bridges would hold the same gateway.
//!
//! A `fork()`ed copy of the process that made a `Lan` ([`crate::fork_id`]) only lets go of its copies of
//! the fds: it deletes nothing, waits for no lock (another thread may have held one at the fork), and adds
//! no box (the netlink socket is the original's too: their answers would mix).

use std::ffi::{c_void, CString};
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::{Duration, Instant};

use libc::{c_int, pid_t};

use crate::errors::{Error, Hint, Step};
use crate::fork_id::process_generation;
use crate::namespace::Namespace;
use crate::netlink::{self, Netlink};
use crate::spawn::{reap, Command};
use crate::spec::Spec;
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
    /// The process that made it ([`process_generation`]): a forked copy of the caller must not delete
    /// what the caller still uses.
    owner: u64,
    owner_pid: u32,
    /// `None` once closed.
    home: Mutex<Option<Home>>,
}

fn os_err(stage: Step, what: &str, err: &std::io::Error) -> Error {
    Error::os(stage, err.raw_os_error().unwrap_or(libc::EIO)).with_what(what.to_owned())
}

impl Lan {
    /// A bridge in the caller's network namespace (needs `CAP_NET_ADMIN`), removed by a janitor process
    /// if the caller dies before [`Lan::close`]. Refuses (`Invalid`) a subnet that overlaps a route of
    /// the namespace, checked under the [`Claim`] that lasts until the bridge's own route is there.
    pub fn host(bridge_name: &str, gateway: Ipv4Addr, prefix: u8) -> Result<Lan, Error> {
        let mut nl = Netlink::open().map_err(|e| os_err(Step::Network, "open a netlink socket", &e))?;
        let subnet = (network_address(gateway, prefix), prefix);
        let claim = Claim::take(subnet)?;
        let routes = nl.ipv4_routes().map_err(|e| os_err(Step::Network, "read the routing table", &e))?;
        if let Some((dst, len)) = routes.into_iter().find(|&route| overlaps(route, subnet)) {
            return Err(Error::invalid(format!(
                "subnet '{}/{prefix}' overlaps the host's route to {dst}/{len}: choose another",
                subnet.0
            )));
        }
        let (janitor, line) = start_janitor(&netlink::delete_link_message(bridge_name))?;
        // Up, then the address: the kernel adds the bridge's route with it, and from then on the next
        // claimant sees the subnet taken.
        let made = nl.create_bridge(bridge_name, gateway, prefix);
        drop(claim);
        let mut lan = Lan {
            netlink: Mutex::new(Some(nl)),
            bridge_name: bridge_name.to_owned(),
            bridge: 0,
            gateway,
            prefix,
            private: false,
            owner: process_generation(),
            owner_pid: std::process::id(),
            home: Mutex::new(Some(Home::Host { janitor, line })),
        };
        // On failure, dropping `lan` lets the janitor go.
        lan.bridge = made.map_err(|e| {
            let err = os_err(Step::Network, &format!("create the bridge {bridge_name}"), &e);
            err.with_hint((e.raw_os_error() == Some(libc::EPERM)).then_some(Hint::BridgeNeedsRoot))
        })?;
        Ok(lan)
    }

    /// A bridge in a new network namespace owned by a new user namespace in which the caller is root.
    pub fn private(bridge_name: &str, gateway: Ipv4Addr, prefix: u8) -> Result<Lan, Error> {
        let (userns, netns, socket) = crate::spawner::run(make_private_namespaces).and_then(|r| r)?;
        let mut nl = Netlink::from_fd(socket);
        let bridge = nl
            .create_bridge(bridge_name, gateway, prefix)
            .map_err(|e| os_err(Step::Network, &format!("create the bridge {bridge_name}"), &e))?;
        Ok(Lan {
            netlink: Mutex::new(Some(nl)),
            bridge_name: bridge_name.to_owned(),
            bridge,
            gateway,
            prefix,
            private: true,
            owner: process_generation(),
            owner_pid: std::process::id(),
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

    /// Whether this process is a `fork()`ed copy of the one that made the network.
    #[must_use]
    pub fn is_forked_copy(&self) -> bool {
        process_generation() != self.owner
    }

    /// Refuses to act on the network from a forked copy of its maker.
    fn owned(&self) -> Result<(), Error> {
        if self.is_forked_copy() {
            return Err(Error::invalid(format!(
                "the network {} belongs to process {}, of which this process is a forked copy: use it \
                 there, or make a Network in this process",
                self.bridge_name, self.owner_pid
            )));
        }
        Ok(())
    }

    /// Runs `f` with the netlink socket, unless the network is closed (or this is a forked copy).
    fn with_netlink<R>(&self, f: impl FnOnce(&mut Netlink) -> Result<R, Error>) -> Result<R, Error> {
        self.owned()?;
        let mut nl = self.netlink.lock().unwrap_or_else(PoisonError::into_inner);
        match nl.as_mut() {
            Some(nl) => f(nl),
            None => Err(Error::invalid("the network is closed")),
        }
    }

    #[must_use]
    pub fn bridge_name(&self) -> &str {
        &self.bridge_name
    }

    /// A new fd of the namespace `kind` ("user" or "net") the network lives in (private networks only).
    pub fn namespace_fd(&self, kind: &str) -> Result<Option<OwnedFd>, Error> {
        let Some(home) = lock_unless_copied(&self.home, self.is_forked_copy()) else {
            return Err(Error::invalid(format!(
                "the network {} was busy in process {} when this process was forked from it: its \
                 namespaces cannot be reached from here",
                self.bridge_name, self.owner_pid
            )));
        };
        let fd = match (&*home, kind) {
            (None, _) => return Err(Error::invalid("the network is closed")),
            (Some(Home::Private { userns, .. }), "user") => userns,
            (Some(Home::Private { netns, .. }), "net") => netns,
            _ => return Ok(None),
        };
        fd.try_clone().map(Some).map_err(|e| os_err(Step::JoinUser, "duplicate a namespace fd", &e))
    }

    /// What a box's spawn needs: the config to spawn with (a box on a private network is started inside
    /// its user namespace rather than in one of its own), and that namespace to join first.
    pub fn join(&self, config: &Spec) -> Result<(Spec, Option<OwnedFd>), Error> {
        if !config.has(Namespace::Net) {
            return Err(Error::invalid("a box on a network needs its own network namespace (net=True)"));
        }
        self.owned()?;
        let Some(fd) = self.namespace_fd("user")? else {
            return Ok((config.clone(), None));
        };
        if config.parent_writes_maps() {
            return Err(Error::invalid(
                "a box on a network made without root lives in the network's user namespace, where you are \
                 root: it takes no uid_map, gid_map or setgroups",
            ));
        }
        Ok((Spec { user: None, ..config.clone() }, Some(fd)))
    }

    /// Connects the box `pid` (waiting in its new network namespace) through a new veth pair: `host_name`
    /// on the bridge, `eth0` in the box.
    pub fn attach(&self, host_name: &str, pid: pid_t) -> Result<(), Error> {
        self.with_netlink(|nl| {
            nl.create_veth(host_name, self.bridge, pid as u32).map_err(|e| {
                // The kernel answers EINVAL for a master that is gone (deleted behind our back): say so.
                if matches!(nl.index_of(&self.bridge_name), Err(gone) if gone.raw_os_error() == Some(libc::ENODEV)) {
                    let what = format!("connect the box to {}, which no longer exists", self.bridge_name);
                    return Error::os(Step::Network, libc::ENODEV).with_what(what);
                }
                os_err(Step::Network, &format!("connect the box to {}", self.bridge_name), &e)
            })
        })
    }

    /// Removes a box's veth pair, if it is still there.
    pub fn detach(&self, host_name: &str) -> Result<(), Error> {
        self.with_netlink(|nl| match nl.delete_link(host_name) {
            Err(e) if e.raw_os_error() != Some(libc::ENODEV) => Err(os_err(Step::Network, "delete a veth", &e)),
            _ => Ok(()),
        })
    }

    /// Whether the interface `name` exists in the bridge's network namespace.
    pub fn has_link(&self, name: &str) -> Result<bool, Error> {
        self.with_netlink(|nl| match nl.index_of(name) {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(false),
            Err(e) => Err(os_err(Step::Network, "look up an interface", &e)),
        })
    }

    /// The interfaces in the bridge's network namespace.
    pub fn link_names(&self) -> Result<Vec<String>, Error> {
        self.with_netlink(|nl| nl.link_names().map_err(|e| os_err(Step::Network, "list the interfaces", &e)))
    }

    /// Deletes the bridge and lets go of the janitor or the namespaces. Idempotent. In a forked copy of
    /// the process that made it, only lets go of this copy's fds, and never waits: a lock another thread
    /// held at the fork stays held here, and what it guards is left to close when this process exits.
    pub fn close(&self) -> Result<(), Error> {
        if self.is_forked_copy() {
            if let Some(mut home) = lock_unless_copied(&self.home, true) {
                drop(home.take());
            }
            if let Some(mut nl) = lock_unless_copied(&self.netlink, true) {
                drop(nl.take());
            }
            return Ok(());
        }
        let Some(home) = self.home.lock().unwrap_or_else(PoisonError::into_inner).take() else { return Ok(()) };
        let nl = self.netlink.lock().unwrap_or_else(PoisonError::into_inner).take();
        let deleted = match nl.map(|mut nl| nl.delete_link(&self.bridge_name)) {
            Some(Err(e)) if e.raw_os_error() != Some(libc::ENODEV) => {
                Err(os_err(Step::Network, &format!("delete the bridge {}", self.bridge_name), &e))
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

/// Locks `mutex`; in a forked copy (`copied`) only if it is free, since a copy of a lock that another
/// thread held at the fork is never released.
fn lock_unless_copied<T>(mutex: &Mutex<T>, copied: bool) -> Option<MutexGuard<'_, T>> {
    if !copied {
        return Some(mutex.lock().unwrap_or_else(PoisonError::into_inner));
    }
    match mutex.try_lock() {
        Ok(guard) => Some(guard),
        Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
        Err(TryLockError::WouldBlock) => None,
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// The network address of `addr/prefix`.
fn network_address(addr: Ipv4Addr, prefix: u8) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(addr) & mask(prefix))
}

fn mask(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix.min(32))).unwrap_or(0)
}

/// Whether two networks (address, prefix length) share an address: the shorter prefix decides.
fn overlaps(a: (Ipv4Addr, u8), b: (Ipv4Addr, u8)) -> bool {
    let m = mask(a.1.min(b.1));
    u32::from(a.0) & m == u32::from(b.0) & m
}

/// The abstract unix socket whose binding is nsbox's lock on claiming a subnet. Abstract names belong to
/// the network namespace, as routes do, and the kernel drops the name when its socket closes, so the
/// lock goes with a holder that dies. (A `flock` would follow the filesystem instead: shared with other
/// network namespaces, and missed by a process with a `/run` or `/tmp` of its own.)
const CLAIM_NAME: &[u8] = b"\0nsbox-network-claim";
/// How long [`Claim::take`] waits: a holder keeps the claim for a few netlink requests and a spawn.
const CLAIM_PATIENCE: Duration = Duration::from_secs(20);

/// The socket of the claim this process holds, or -1.
static CLAIM_FD: AtomicI32 = AtomicI32::new(-1);
/// A spin lock held while [`CLAIM_FD`] changes (its socket is bound, or closed) and across a `fork()`,
/// so that a child's copy of [`CLAIM_FD`] names exactly the socket it holds a copy of. The child closes
/// that copy: a child that lives on (a multiprocessing worker) would otherwise keep the name bound.
static CLAIM_BUSY: AtomicBool = AtomicBool::new(false);

fn claim_busy() {
    while CLAIM_BUSY.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
        std::thread::yield_now();
    }
}

fn claim_done() {
    CLAIM_BUSY.store(false, Ordering::Release);
}

extern "C" fn claim_before_fork() {
    // Waits for a socket/bind/close of another thread at most.
    claim_busy();
}

extern "C" fn claim_after_fork_in_parent() {
    claim_done();
}

extern "C" fn claim_after_fork_in_child() {
    let fd = CLAIM_FD.swap(-1, Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: our copy of the claim's socket, which nothing else in this process uses.
        unsafe { libc::close(fd) };
    }
    claim_done();
}

extern "C" fn register_claim_fork_handlers() {
    // SAFETY: handlers that touch only the atomics above and close one fd. Registered at load time
    // (see `crate::fork_id`) so that no fork can come before them.
    unsafe {
        libc::pthread_atfork(Some(claim_before_fork), Some(claim_after_fork_in_parent), Some(claim_after_fork_in_child))
    };
}

#[used]
#[link_section = ".init_array"]
static REGISTER_CLAIM_FORK_HANDLERS: extern "C" fn() = register_claim_fork_handlers;

/// The claim's address: `sockaddr_un` with the abstract name, and its length.
fn claim_address() -> (libc::sockaddr_un, libc::socklen_t) {
    // SAFETY: all zeroes is a valid sockaddr_un.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (to, &from) in addr.sun_path.iter_mut().zip(CLAIM_NAME) {
        *to = from as libc::c_char;
    }
    let len = std::mem::offset_of!(libc::sockaddr_un, sun_path) + CLAIM_NAME.len();
    (addr, len as libc::socklen_t)
}

fn unix_socket(flags: c_int) -> Result<OwnedFd, i32> {
    // SAFETY: socket(2); `own_fd` takes the result.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC | flags, 0) };
    crate::sys::own_fd(fd).map_err(|e| e.raw_os_error().unwrap_or(libc::EMFILE))
}

/// nsbox's claim on subnets in this network namespace, held from before reading the routes until the
/// new bridge's route is there; let go when dropped (or when the process dies).
struct Claim;

impl Claim {
    /// Waits (up to [`CLAIM_PATIENCE`]) for the claim; `subnet` is for the error message.
    fn take(subnet: (Ipv4Addr, u8)) -> Result<Claim, Error> {
        let deadline = Instant::now() + CLAIM_PATIENCE;
        let mut pause = Duration::from_millis(1);
        loop {
            match Claim::try_take() {
                Ok(claim) => return Ok(claim),
                Err(libc::EADDRINUSE) if Instant::now() < deadline => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(32));
                }
                Err(libc::EADDRINUSE) => {
                    let holder = claim_holder().map_or_else(String::new, |pid| format!(" (bound by process {pid})"));
                    let what = format!(
                        "claim the subnet {}/{}: nsbox's lock on claiming subnets, the abstract unix socket \
                         @{} of this network namespace, stayed taken for {} s{holder}",
                        subnet.0,
                        subnet.1,
                        String::from_utf8_lossy(&CLAIM_NAME[1..]),
                        CLAIM_PATIENCE.as_secs(),
                    );
                    return Err(Error::os(Step::Network, libc::ETIMEDOUT).with_what(what));
                }
                Err(errno) => {
                    let what = format!("take nsbox's lock on claiming subnets (for {}/{})", subnet.0, subnet.1);
                    return Err(Error::os(Step::Network, errno).with_what(what));
                }
            }
        }
    }

    /// Binds the claim's name, or fails with its errno (`EADDRINUSE`: taken, here or elsewhere).
    fn try_take() -> Result<Claim, i32> {
        claim_busy();
        let taken = (|| {
            if CLAIM_FD.load(Ordering::Relaxed) >= 0 {
                return Err(libc::EADDRINUSE); // by another thread of ours
            }
            let socket = unix_socket(0)?;
            let (addr, len) = claim_address();
            // SAFETY: bind(2) and listen(2) on our socket with a valid address.
            let bound = unsafe {
                libc::bind(socket.as_raw_fd(), (&raw const addr).cast(), len) == 0
                    && libc::listen(socket.as_raw_fd(), 1) == 0
            };
            if !bound {
                return Err(crate::spawn::last_errno());
            }
            CLAIM_FD.store(socket.into_raw_fd(), Ordering::Relaxed);
            Ok(Claim)
        })();
        claim_done();
        taken
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        claim_busy();
        let fd = CLAIM_FD.swap(-1, Ordering::Relaxed);
        // SAFETY: the claim's socket, ours alone.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
        claim_done();
    }
}

/// The process that holds the claim, as the kernel tells whoever connects to its socket (if it listens).
fn claim_holder() -> Option<u32> {
    let socket = unix_socket(libc::SOCK_NONBLOCK).ok()?;
    let (addr, len) = claim_address();
    let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut size = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: connect(2) and getsockopt(2) on our socket, into stack variables of the right size.
    let known = unsafe {
        libc::connect(socket.as_raw_fd(), (&raw const addr).cast(), len) == 0
            && libc::getsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERCRED,
                (&raw mut cred).cast(),
                &raw mut size,
            ) == 0
    };
    (known && cred.pid > 0).then_some(cred.pid as u32)
}

/// Starts the helper as a janitor that deletes the interface when our end of `line` closes without a
/// "done"; returns once it is armed (its parent-death signal cleared, in a session of its own).
fn start_janitor(delete: &[u8]) -> Result<(pid_t, OwnedFd), Error> {
    // At 3 or above: the janitor gets its end through pass_fds, and ours is kept for the network's life.
    let (ours, theirs) = crate::sys::socketpair(libc::SOCK_STREAM)?;
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| os_err(Step::Stdio, "open /dev/null", &e))?;
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
        crate::spawner::run(move || crate::spawn::spawn(&Spec::default(), &command, None, None)).and_then(|r| r)?;
    drop(theirs);
    let mut armed = [0u8; 1];
    // SAFETY: reading one byte into a stack buffer.
    let n = unsafe { libc::read(ours.as_raw_fd(), armed.as_mut_ptr().cast(), 1) };
    if n != 1 || armed[0] != b'a' {
        crate::spawn::kill_and_reap(pid);
        return Err(Error::Internal("the network's janitor did not start".into()));
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

fn make_private_namespaces() -> Result<(OwnedFd, OwnedFd, OwnedFd), Error> {
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
        let err = Error::os(Step::Clone, crate::spawn::last_errno());
        return Err(err.with_what("create the network's user and network namespaces".to_owned()));
    }
    reap(pid);
    // SAFETY: fds the child opened in our shared table (or -1); each is taken once.
    let take = |fd: &AtomicI32| {
        let fd = fd.load(Ordering::Acquire);
        (fd >= 0).then(|| crate::sys::own_fd(fd).ok()).flatten()
    };
    let (userns, netns, socket) = (take(&plan.userns), take(&plan.netns), take(&plan.socket));
    let stage = plan.stage.load(Ordering::Acquire);
    if stage != 0 {
        let stage = Step::from_code(stage as u32).unwrap_or(Step::Network);
        return Err(Error::os(stage, plan.errno.load(Ordering::Acquire))
            .with_what(format!("make the network's namespaces: cannot {}", stage.action())));
    }
    match (userns, netns, socket) {
        (Some(u), Some(n), Some(s)) => Ok((u, n, s)),
        _ => Err(Error::Internal("the network's namespaces were not handed back".into())),
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
    let fail = |stage: Step| {
        plan.errno.store(errno(), Ordering::Release);
        plan.stage.store(stage as i32, Ordering::Release);
        1
    };
    if !write_file(c"/proc/self/setgroups", c"deny") {
        return fail(Step::Setgroups);
    }
    if !write_file(c"/proc/self/uid_map", &plan.uid_map) {
        return fail(Step::UidMap);
    }
    if !write_file(c"/proc/self/gid_map", &plan.gid_map) {
        return fail(Step::GidMap);
    }
    for (path, out) in [(c"/proc/self/ns/user", &plan.userns), (c"/proc/self/ns/net", &plan.netns)] {
        let fd = open_ns(path);
        if fd < 0 {
            return fail(Step::Network);
        }
        out.store(fd, Ordering::Release);
    }
    // SAFETY: a plain syscall; the socket lands in the table we share with the parent.
    let sock = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
    if sock < 0 {
        return fail(Step::Network);
    }
    plan.socket.store(sock, Ordering::Release);
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> (Ipv4Addr, u8) {
        let (addr, prefix) = text.split_once('/').unwrap();
        (addr.parse().unwrap(), prefix.parse().unwrap())
    }

    #[test]
    fn networks_overlap_when_the_shorter_prefix_covers_both() {
        for (a, b, expected) in [
            ("10.84.0.0/24", "10.84.0.0/24", true),
            ("10.84.0.0/24", "10.84.0.128/25", true),
            ("10.84.0.0/23", "10.84.1.0/24", true),
            ("10.84.0.0/24", "10.84.1.0/24", false),
            ("10.84.0.0/25", "10.84.0.128/25", false),
            ("0.0.0.0/0", "192.168.1.0/24", true),
            ("10.0.0.0/8", "11.0.0.0/8", false),
            ("10.84.0.2/32", "10.84.0.0/30", true),
            ("10.84.0.5/32", "10.84.0.0/30", false),
        ] {
            assert_eq!(overlaps(net(a), net(b)), expected, "{a} {b}");
            assert_eq!(overlaps(net(b), net(a)), expected, "{b} {a}");
        }
    }

    #[test]
    fn the_network_address_drops_the_host_bits() {
        assert_eq!(network_address(Ipv4Addr::new(10, 84, 3, 1), 22), Ipv4Addr::new(10, 84, 0, 0));
        assert_eq!(network_address(Ipv4Addr::new(10, 84, 3, 1), 32), Ipv4Addr::new(10, 84, 3, 1));
        assert_eq!(network_address(Ipv4Addr::new(10, 84, 3, 1), 0), Ipv4Addr::UNSPECIFIED);
    }

    #[test]
    fn a_forked_child_lets_go_of_its_copy_of_the_claim() {
        let claim = Claim::take(net("10.84.0.0/24")).unwrap();
        let fd = CLAIM_FD.load(Ordering::Relaxed);
        assert!(fd >= 0);
        let mut pipe = [0; 2];
        // SAFETY: a pipe into a stack array.
        assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
        // SAFETY: the child only reads an atomic, makes two syscalls and _exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // SAFETY: fcntl on a number; one byte to our pipe; leave at once.
            unsafe {
                let kept = u8::from(CLAIM_FD.load(Ordering::Relaxed) >= 0 || libc::fcntl(fd, libc::F_GETFD) >= 0);
                libc::write(pipe[1], (&raw const kept).cast(), 1);
                libc::_exit(0);
            }
        }
        let mut kept = 2u8;
        // SAFETY: one byte into a stack variable; then reap our child and close the pipe.
        unsafe {
            libc::close(pipe[1]);
            assert_eq!(libc::read(pipe[0], (&raw mut kept).cast(), 1), 1);
            libc::close(pipe[0]);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        assert_eq!(kept, 0, "the child kept the claim's socket");
        assert_eq!(CLAIM_FD.load(Ordering::Relaxed), fd, "the parent lost its claim");
        drop(claim);
        assert_eq!(CLAIM_FD.load(Ordering::Relaxed), -1);
    }
}
