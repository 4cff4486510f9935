//! The child's network steps: loopback up, and `eth0` configured with messages the parent serialized.

use std::ptr;

use libc::{c_char, c_int};

use super::sys::{check, close, fail, read, report, write};
use super::Setup;
use crate::errors::Step;
use crate::net::{Eth0, INDEX_OFFSET};

fn socket(s: &Setup<'_>, stage: Step, domain: c_int, kind: c_int, protocol: c_int) -> c_int {
    // SAFETY: socket(2) has no pointer arguments.
    let sock = unsafe { libc::socket(domain, kind | libc::SOCK_CLOEXEC, protocol) };
    check(s, stage, sock);
    sock
}

/// An interface ioctl on `ifr`.
fn ioctl(s: &Setup<'_>, stage: Step, sock: c_int, request: libc::Ioctl, ifr: &mut libc::ifreq) {
    // SAFETY: the interface requests nsbox makes read and write one ifreq.
    check(s, stage, unsafe { libc::ioctl(sock, request, ptr::from_mut(ifr)) });
}

/// An `AF_INET` socket for interface ioctls, and a zeroed `ifreq` naming `name` (NUL-terminated).
pub(crate) fn interface_request(s: &Setup<'_>, stage: Step, name: &[u8]) -> (c_int, libc::ifreq) {
    let sock = socket(s, stage, libc::AF_INET, libc::SOCK_DGRAM, 0);
    // SAFETY: an all-zero ifreq is a valid value (an empty name, a zero union).
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(name) {
        *dst = *src as c_char;
    }
    (sock, ifr)
}

pub(crate) fn bring_up_loopback(s: &Setup<'_>) {
    let (sock, mut ifr) = interface_request(s, Step::Loopback, b"lo\0");
    ioctl(s, Step::Loopback, sock, libc::SIOCGIFFLAGS, &mut ifr);
    // SAFETY: SIOCGIFFLAGS filled in the flags member of the union.
    let flags = unsafe { ifr.ifr_ifru.ifru_flags };
    ifr.ifr_ifru.ifru_flags = flags | (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    ioctl(s, Step::Loopback, sock, libc::SIOCSIFFLAGS, &mut ifr);
    close(sock);
}

/// Sends one netlink request from a copy on our stack, with `index` written at [`INDEX_OFFSET`] unless
/// it is 0, and reads the kernel's acknowledgement.
pub(crate) fn netlink_request(s: &Setup<'_>, sock: c_int, msg: &[u8], index: c_int) {
    let mut buf = [0u8; 256];
    let Some(copy) = buf.get_mut(..msg.len()) else { report(s, Step::Network, libc::EMSGSIZE) };
    copy.copy_from_slice(msg);
    if index != 0 {
        if let Some(at) = copy.get_mut(INDEX_OFFSET..INDEX_OFFSET + 4) {
            at.copy_from_slice(&index.to_ne_bytes());
        }
    }
    // A netlink socket takes a datagram per write.
    if write(sock, copy) < 0 {
        fail(s, Step::Network);
    }
    let mut ack = [0u8; 512];
    let n = read(sock, &mut ack);
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

/// Gives `eth0` (made by the parent in our network namespace) its address, brings it up and routes
/// through the gateway, with messages the parent serialized.
pub(crate) fn configure_eth0(s: &Setup<'_>, eth0: &Eth0) {
    let (inet, mut ifr) = interface_request(s, Step::Network, b"eth0\0");
    ioctl(s, Step::Network, inet, libc::SIOCGIFINDEX, &mut ifr);
    close(inet);
    // SAFETY: SIOCGIFINDEX filled in the index member of the union.
    let index = unsafe { ifr.ifr_ifru.ifru_ifindex };
    let sock = socket(s, Step::Network, libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE);
    netlink_request(s, sock, &eth0.address, index);
    netlink_request(s, sock, &eth0.up, index);
    netlink_request(s, sock, &eth0.route, 0);
    close(sock);
}
