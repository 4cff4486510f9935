//! The child's network steps: loopback up, and `eth0` configured with messages the parent serialized.

use std::ptr;

use libc::{c_char, c_int};

use super::sys::{check, errno, fail, report};
use super::Setup;
use crate::errors::Step;
use crate::net::{Eth0, INDEX_OFFSET};

/// An `AF_INET` socket for interface ioctls, and a zeroed `ifreq` naming `name` (NUL-terminated).
pub(crate) fn interface_request(s: &Setup<'_>, stage: Step, name: &[u8]) -> (c_int, libc::ifreq) {
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

pub(crate) fn bring_up_loopback(s: &Setup<'_>) {
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
pub(crate) fn netlink_request(s: &Setup<'_>, sock: c_int, msg: &[u8], index: c_int) {
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
pub(crate) fn configure_eth0(s: &Setup<'_>, eth0: &Eth0) {
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
