//! Outbound NAT, DNS and published ports for a box (`egress=True`, `publish=`): `slirp4netns` beside it.
//!
//! The box keeps its own network namespace; while it waits before its command runs (the handshake of
//! [`crate::spawn`]), nsbox starts `slirp4netns` on it. The engine puts a tap device in the box's
//! namespace (`tap0`, 10.0.2.100/24, default route through 10.0.2.2), and relays what the box sends with
//! ordinary sockets of its own on the host: outbound connections are translated by construction (the far end
//! sees the engine's socket, from the host's address), 10.0.2.2 reaches the host's loopback, 10.0.2.3 is a
//! DNS forwarder to the host's resolvers, and host ports are forwarded into the box through its API socket.
//!
//! Why `slirp4netns`, of the three engines the issue names. Measured (`bench/egress_bench.py`, 2-core VM, one
//! TCP stream of 256 MiB box → host loopback, and 1-byte round trips; host → host is 3,311 MB/s and 15 µs):
//! slirp4netns 445 MB/s (0.13×) and 60 µs as root, 312 MB/s and 64 µs rootless; pasta (rootless) 410 MB/s
//! (0.12×) and 38 µs; a veth to the host (what an in-process engine as root would use) 1,499 MB/s (0.45×), 17 µs.
//! - **In-process, as root** (a veth to the host, nftables masquerade, `ip_forward`): 3× the throughput, but
//!   root only, and it changes the host (a rule, a route, a sysctl) that a killed caller would leave behind.
//!   Rootless boxes would need a second engine anyway.
//! - **`pasta`** (Debian's `passt`, 2023-03): the same throughput, a lower latency; but that build refuses to
//!   run as root (it switches to `nobody` and cannot map ids), drops the reply to a UDP port forwarded from
//!   the host's loopback (UDP `publish` would not work), copies the host's addresses and routes into the box
//!   (on a host without a default route the box gets none), and takes its forwards only on its command line.
//! - **`slirp4netns` 1.2.0**: one engine for root and rootless, TCP and UDP both ways, a fixed small address
//!   plan (the box never sees the host's addresses), a ready fd, an exit fd, and an API that adds forwards
//!   after start. Its cost, one user-space copy per packet, is pasta's too: ample for a box's outbound traffic.
//!
//! The leash (`allow=`). The rule must live where the box holds no capability, and be enforced by the kernel,
//! not by the engine (slirp4netns and pasta filter nothing). nsbox makes a user namespace of its own (the
//! caller is its root) and a network namespace it owns; loopback goes up there, the engine's tap goes there,
//! and so do the nftables rules (an `output` chain: loopback and established flows pass, then the allowed
//! destinations, then a TCP reset or an ICMP "prohibited" for the rest, so a refusal is immediate). The box
//! joins that network namespace and runs as root of a user namespace of its own *below* nsbox's: it holds
//! `CAP_NET_ADMIN` over nothing there, so `nft flush ruleset`, `iptables -F`, `ip link`/`ip route` fail with
//! `EPERM`; nor may it ptrace or open the memory of the engine (its user namespace is above the box's, and
//! the kernel grants that only with `CAP_SYS_PTRACE` there). An intermediate namespace between the box's and
//! the engine's (veth, forwarding) would do the same with one more hop for every packet.
//!
//! Lifetime: the engine is spawned like a box, from a spawner thread, so its parent-death signal fires if
//! the caller dies; it also holds the read end of an exit pipe whose write end only we hold. [`Egress::stop`]
//! (when the box is reaped, or the `Egress` dropped) kills and reaps it. It makes nothing on the host but
//! its sockets: no interface, rule or route (its tap is in the box's namespace and goes with it).

use std::ffi::CString;
use std::io::{Read as _, Write as _};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::net::UnixStream;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use libc::pid_t;

use crate::enter::{Join, Joined};
use crate::errors::{Error, Hint, Step};
use crate::idmap::IdMap;
use crate::namespace::{Namespace, Namespaces};
use crate::spawn::Command;
use crate::spec::{Setgroups, Spec, UserNs};

/// The engine's fixed address plan (slirp4netns's defaults).
pub const BOX_ADDRESS: &str = "10.0.2.100";
pub const HOST_ADDRESS: &str = "10.0.2.2";
pub const DNS_ADDRESS: &str = "10.0.2.3";
/// The tap's MTU: slirp4netns's largest (its default, 1500, costs most of the throughput).
const MTU: &str = "65520";
/// How long the engine may take to configure the box's network.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A host port forwarded to a port in the box.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub udp: bool,
    pub host_address: String,
    pub host_port: u16,
    pub box_port: u16,
}

impl Publish {
    fn describe(&self) -> String {
        let proto = if self.udp { "udp" } else { "tcp" };
        format!("{}:{}/{proto} to the box's port {}", self.host_address, self.host_port, self.box_port)
    }
}

/// `allow=`: the network namespace the box joins, owned by a user namespace of nsbox's (the caller is its
/// root); the box runs in a user namespace of its own below that one. The engine's tap and the allowlist's
/// nftables rules live in this network namespace, over which the box, root only in its own user namespace,
/// holds no capability: it cannot change a rule, a route or an address there.
struct Leash {
    userns: OwnedFd,
    netns: OwnedFd,
}

struct Running {
    pid: pid_t,
    pidfd: OwnedFd,
    /// Our end of the exit pipe: the engine leaves when it closes.
    _exit: OwnedFd,
}

/// What a box's egress needs, and the engine once it runs.
pub struct Egress {
    engine: CString,
    publish: Vec<Publish>,
    /// Where the engine's API socket goes (a directory of the caller's); needed only to publish.
    api_socket: Option<CString>,
    running: Mutex<Option<Running>>,
    leash: Mutex<Option<Leash>>,
}

fn os_failure(step: Step, errno: i32, what: impl Into<String>) -> Error {
    Error::os(step, errno).with_what(what.into())
}

/// An fd we own from a raw syscall's result.
fn owned(fd: RawFd, what: &str) -> Result<OwnedFd, Error> {
    crate::sys::own_fd(fd).map_err(|e| os_failure(Step::Egress, e.raw_os_error().unwrap_or(libc::EIO), what))
}

impl Egress {
    #[must_use]
    pub fn new(engine: CString, publish: Vec<Publish>, api_socket: Option<CString>) -> Egress {
        Egress { engine, publish, api_socket, running: Mutex::new(None), leash: Mutex::new(None) }
    }

    fn leash(&self) -> std::sync::MutexGuard<'_, Option<Leash>> {
        self.leash.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes the leash's namespaces (see [`Leash`]), before the box; the engine and the rules go there next.
    pub fn make_leash(&self) -> Result<(), Error> {
        let (userns, netns, socket) =
            crate::spawn::threads::run(super::private::make_private_namespaces).and_then(|r| r)?;
        drop(socket);
        *self.leash() = Some(Leash { userns, netns });
        Ok(())
    }

    /// A new fd of the leash's `"user"` or `"net"` namespace (to close after use), or `None` without a leash.
    pub fn leash_fd(&self, kind: Namespace) -> Result<Option<OwnedFd>, Error> {
        let leash = self.leash();
        let Some(leash) = leash.as_ref() else { return Ok(None) };
        let fd = if kind == Namespace::User { &leash.userns } else { &leash.netns };
        fd.try_clone().map(Some).map_err(|e| os_failure(Step::Egress, e.raw_os_error().unwrap_or(libc::EIO), "dup"))
    }

    /// Runs the engine on namespaces made elsewhere (a private `Network`'s: `userns` owns `netns`) rather than a
    /// box's: [`Egress::attach_to_leash`] then starts it there; no box is spawned with this `Egress`.
    pub fn use_namespaces(&self, userns: OwnedFd, netns: OwnedFd) {
        *self.leash() = Some(Leash { userns, netns });
    }

    /// Whether the box joins the leash's namespaces rather than having the engine attached to its own.
    pub fn is_leashed(&self) -> bool {
        self.leash().is_some()
    }

    /// Starts the engine on the leash's network namespace (before the box), and publishes the ports.
    pub fn attach_to_leash(&self) -> Result<(), Error> {
        self.attach(0)
    }

    /// The spec and the namespaces to join for a box on the leash: the leash's user and network namespaces,
    /// then a new user namespace (and the others `config` asks, but the network) in which the box is root:
    /// uid and gid 0 of the leash's, which are the caller's own (so the child writes its maps itself).
    pub fn leashed_box(&self, config: &Spec) -> Result<(Spec, Join), Error> {
        let join = Join {
            namespaces: vec![
                Joined { fd: self.leash_fd(Namespace::User)?.ok_or_else(no_leash)?, kind: Namespace::User },
                Joined { fd: self.leash_fd(Namespace::Net)?.ok_or_else(no_leash)?, kind: Namespace::Net },
            ],
            ..Join::default()
        };
        let mut kinds = Namespaces::empty();
        for kind in config.kinds.iter().filter(|&k| k != Namespace::Net && k != Namespace::User) {
            kinds.insert(kind);
        }
        let user = UserNs {
            uid_map: IdMap::root_of(0),
            gid_map: IdMap::root_of(0),
            setgroups: Setgroups::Deny,
            child_writes_maps: true,
            drop_groups_first: false,
        };
        Ok((Spec { kinds, user: Some(user), ..config.clone() }, join))
    }

    fn running(&self) -> std::sync::MutexGuard<'_, Option<Running>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The engine's PID while it runs.
    pub fn pid(&self) -> Option<pid_t> {
        self.running().as_ref().map(|r| r.pid)
    }

    /// Starts the engine on the network namespace of `box_pid` (which waits meanwhile), waits until it has
    /// configured the box's `tap0`, and publishes the ports. On failure nothing of it is left.
    /// `box_pid` 0: on the leash's namespaces instead.
    pub fn attach(&self, box_pid: pid_t) -> Result<(), Error> {
        let started = self.start(box_pid)?;
        let pid = started.pid;
        *self.running() = Some(started);
        let published = self.publish.iter().try_for_each(|p| self.forward(p));
        if let Some(sock) = &self.api_socket {
            // Nothing more is published: the socket file goes now, so a killed caller leaves none.
            // SAFETY: a NUL-terminated path.
            unsafe { libc::unlink(sock.as_ptr()) };
        }
        if let Err(e) = published {
            self.stop();
            return Err(e);
        }
        debug_assert_eq!(self.pid(), Some(pid));
        Ok(())
    }

    fn start(&self, box_pid: pid_t) -> Result<Running, Error> {
        let (ready_r, ready_w) = crate::sys::pipe()?;
        let (exit_r, exit_w) = crate::sys::pipe()?;
        // The engine's messages, kept for an error; a memfd never blocks the engine however much it writes.
        // SAFETY: memfd_create(2) with a static name; the fd is then ours.
        let log = owned(unsafe { libc::memfd_create(c"nsbox-egress-log".as_ptr(), libc::MFD_CLOEXEC) }, "log")?;
        let null = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
            .map_err(|e| os_failure(Step::Egress, e.raw_os_error().unwrap_or(libc::EIO), "open /dev/null"))?;
        let cs = |s: &str| CString::new(s).expect("no NUL");
        let mut argv = vec![
            cs("slirp4netns"),
            cs("--configure"),
            cs(&format!("--mtu={MTU}")),
            cs(&format!("--ready-fd={}", ready_w.as_raw_fd())),
            cs(&format!("--exit-fd={}", exit_r.as_raw_fd())),
        ];
        if let Some(sock) = &self.api_socket {
            let mut arg = b"--api-socket=".to_vec();
            arg.extend_from_slice(sock.as_bytes());
            argv.push(CString::new(arg).expect("no NUL"));
        }
        let mut pass_fds = vec![ready_w.as_raw_fd(), exit_r.as_raw_fd()];
        // On the leash: its namespaces by path, through fds the engine inherits.
        let leash = if box_pid == 0 {
            let fds = (self.leash_fd(Namespace::User)?, self.leash_fd(Namespace::Net)?);
            let (Some(userns), Some(netns)) = fds else { return Err(no_leash()) };
            argv.push(cs(&format!("--userns-path=/proc/self/fd/{}", userns.as_raw_fd())));
            argv.push(cs("--netns-type=path"));
            argv.push(cs(&format!("/proc/self/fd/{}", netns.as_raw_fd())));
            pass_fds.extend([userns.as_raw_fd(), netns.as_raw_fd()]);
            Some((userns, netns))
        } else {
            argv.push(cs(&box_pid.to_string()));
            None
        };
        argv.push(cs("tap0"));
        let command = Command {
            exec_paths: vec![self.engine.clone()],
            argv,
            env: Some(Vec::new()),
            cwd: Some(cs("/")),
            stdio: [null.as_raw_fd(), null.as_raw_fd(), log.as_raw_fd()],
            pass_fds,
            ..Command::default()
        };
        // From a spawner thread, as a box: its parent-death signal is tied to a thread that outlives it.
        let pid = crate::spawn::threads::run(move || crate::spawn::spawn(&Spec::default(), &command, None, None, None))
            .and_then(|r| r)
            .map_err(|e| e.with_what(format!("start {}", self.engine.to_string_lossy())))?;
        drop((ready_w, exit_r, leash));
        let pidfd = match crate::sys::pidfd_open(pid) {
            Ok(fd) => fd,
            Err(e) => {
                crate::sys::kill_and_reap(pid);
                return Err(e);
            }
        };
        let running = Running { pid, pidfd, _exit: exit_w };
        match wait_ready(&ready_r, &running.pidfd) {
            Ok(()) => Ok(running),
            Err(errno) => {
                crate::sys::kill_and_reap_pidfd(running.pidfd.as_raw_fd());
                Err(start_failure(errno, &read_log(&log)))
            }
        }
    }

    /// Forwards one host port through the engine's API socket.
    fn forward(&self, p: &Publish) -> Result<(), Error> {
        let what = format!("publish {}", p.describe());
        let Some(sock) = &self.api_socket else { return Err(Error::Internal("no API socket to publish with".into())) };
        let path = std::path::Path::new(std::ffi::OsStr::from_bytes(sock.as_bytes()));
        let io = |e: &std::io::Error| os_failure(Step::Publish, e.raw_os_error().unwrap_or(libc::EIO), what.clone());
        let mut stream = UnixStream::connect(path).map_err(|e| io(&e))?;
        stream.set_read_timeout(Some(READY_TIMEOUT)).map_err(|e| io(&e))?;
        let proto = if p.udp { "udp" } else { "tcp" };
        let request = format!(
            r#"{{"execute": "add_hostfwd", "arguments": {{"proto": "{proto}", "host_addr": "{}", "host_port": {}, "guest_port": {}}}}}"#,
            p.host_address, p.host_port, p.box_port
        );
        stream.write_all(request.as_bytes()).map_err(|e| io(&e))?;
        let mut reply = String::new();
        stream.read_to_string(&mut reply).map_err(|e| io(&e))?;
        if reply.contains("\"return\"") {
            return Ok(());
        }
        // slirp4netns says only that the forward failed: a bound port is the usual reason.
        Err(os_failure(Step::Publish, libc::EADDRINUSE, what).with_hint(Some(Hint::PortInUse)))
    }

    /// Kills and reaps the engine, if it runs, and lets go of the leash. Idempotent.
    pub fn stop(&self) {
        if let Some(running) = self.running().take() {
            crate::sys::kill_and_reap_pidfd(running.pidfd.as_raw_fd());
        }
        drop(self.leash().take());
    }
}

impl Drop for Egress {
    fn drop(&mut self) {
        self.stop();
    }
}

fn no_leash() -> Error {
    Error::Internal("the egress has no leash namespaces".into())
}

/// Waits for the engine's "1" on the ready pipe; an errno (ETIMEDOUT, or EPIPE when it left first).
fn wait_ready(ready: &OwnedFd, pidfd: &OwnedFd) -> Result<(), i32> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(libc::ETIMEDOUT);
        }
        let mut fds = [
            libc::pollfd { fd: ready.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: pidfd.as_raw_fd(), events: libc::POLLIN, revents: 0 },
        ];
        let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX).max(1);
        // SAFETY: poll on a stack array of two pollfds.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
        if n < 0 {
            if crate::sys::last_errno() == libc::EINTR {
                continue;
            }
            return Err(crate::sys::last_errno());
        }
        if fds[0].revents != 0 {
            let mut byte = [0u8; 1];
            // SAFETY: reading one byte into a stack buffer.
            let r = unsafe { libc::read(ready.as_raw_fd(), byte.as_mut_ptr().cast(), 1) };
            return if r == 1 && byte[0] == b'1' { Ok(()) } else { Err(libc::EPIPE) };
        }
        if fds[1].revents != 0 {
            return Err(libc::EPIPE);
        }
    }
}

fn read_log(log: &OwnedFd) -> String {
    let dup = owned(
        // SAFETY: F_DUPFD_CLOEXEC on our own fd.
        unsafe { libc::fcntl(log.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) },
        "log",
    );
    let Ok(dup) = dup else { return String::new() };
    // SAFETY: a fresh fd we own, given to the File.
    let mut file = unsafe { std::fs::File::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(dup)) };
    let mut text = String::new();
    let _ = std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(0));
    let _ = file.take(4096).read_to_string(&mut text);
    text
}

/// The error for an engine that did not get ready: its own last words, and the usual cause named.
fn start_failure(errno: i32, log: &str) -> Error {
    let last = log.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
    let tun = log.contains("/dev/net/tun") || log.contains("tun");
    let errno = if tun && log.contains("ermission denied") { libc::EACCES } else { errno };
    let said = if last.is_empty() { String::new() } else { format!(" (it said: {last})") };
    let err = os_failure(Step::Egress, errno, format!("start slirp4netns on the box's network namespace{said}"));
    if tun && errno == libc::EACCES {
        err.with_hint(Some(Hint::TunNotOpen))
    } else {
        err
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tun_refusal_names_the_fix() {
        let log = "open(\"/dev/net/tun\"): Permission denied\nchild failed(1)\n";
        let Error::Os(failure) = start_failure(libc::EPIPE, log) else { panic!("an OS failure") };
        assert_eq!((failure.step, failure.errno, failure.hint), (Step::Egress, libc::EACCES, Some(Hint::TunNotOpen)));
        assert!(failure.what.contains("child failed(1)"));
    }

    #[test]
    fn a_silent_engine_keeps_the_errno() {
        let Error::Os(failure) = start_failure(libc::ETIMEDOUT, "") else { panic!("an OS failure") };
        assert_eq!((failure.errno, failure.hint), (libc::ETIMEDOUT, None));
        assert!(!failure.what.contains("said"));
    }
}
