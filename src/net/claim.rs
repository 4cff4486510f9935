//! nsbox's claim on a subnet of a network namespace: reading the routes and making the bridge are one step,
//! across threads and processes.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::{Duration, Instant};

use libc::c_int;

use crate::errors::{Error, Step};

/// The network address of `addr/prefix`.
pub(crate) fn network_address(addr: Ipv4Addr, prefix: u8) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(addr) & mask(prefix))
}

fn mask(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix.min(32))).unwrap_or(0)
}

/// Whether two networks (address, prefix length) share an address: the shorter prefix decides.
pub(crate) fn overlaps(a: (Ipv4Addr, u8), b: (Ipv4Addr, u8)) -> bool {
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
pub(crate) struct Claim;

impl Claim {
    /// Waits (up to [`CLAIM_PATIENCE`]) for the claim; `subnet` is for the error message.
    pub(crate) fn take(subnet: (Ipv4Addr, u8)) -> Result<Claim, Error> {
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
            // SAFETY: bind(2) of our socket to a valid address of that length.
            let bound = unsafe { libc::bind(socket.as_raw_fd(), (&raw const addr).cast(), len) } == 0
                // SAFETY: listen(2) on our socket.
                && unsafe { libc::listen(socket.as_raw_fd(), 1) } == 0;
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
pub(crate) fn claim_holder() -> Option<u32> {
    let socket = unix_socket(libc::SOCK_NONBLOCK).ok()?;
    let (addr, len) = claim_address();
    let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut size = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: connect(2) of our socket to a valid address of that length.
    let connected = unsafe { libc::connect(socket.as_raw_fd(), (&raw const addr).cast(), len) } == 0;
    let (fd, peer) = (socket.as_raw_fd(), libc::SO_PEERCRED);
    // SAFETY: getsockopt(2) into a stack ucred of the size given.
    let known = connected
        && unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, peer, (&raw mut cred).cast(), &raw mut size) } == 0;
    (known && cred.pid > 0).then_some(cred.pid as u32)
}

#[cfg(test)]
mod tests {
    // Tests fork and poke at fds in ways the library's own rules need not govern.
    #![allow(clippy::multiple_unsafe_ops_per_block)]

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
