//! Route netlink: the messages that make a network's bridge and a box's veth pair, and a small blocking
//! client to send them.
//!
//! Messages are built with `netlink-packet-route` and sent over a `netlink-sys` socket. A socket acts in
//! the network namespace it was created in, with the capabilities of whoever created it, so a [`Netlink`]
//! made inside a user-owned namespace (see [`crate::network`]) keeps acting there.
//!
//! The few messages a box sends itself, to configure its `eth0` between `clone` and `execve`, are
//! serialized here in the parent ([`Eth0`]); the child only copies them, fills in the interface index and
//! sends them with raw system calls.

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol};
use netlink_packet_route::route::{RouteScope, RouteType};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket};

/// The name of a box's end of its veth pair.
pub const BOX_IFNAME: &str = "eth0";

/// Offset of the interface index in an `RTM_NEWLINK` (`ifinfomsg.ifi_index`) or `RTM_NEWADDR`
/// (`ifaddrmsg.ifa_index`) message: both follow the 16-byte `nlmsghdr` and start 4 bytes in.
pub const INDEX_OFFSET: usize = 20;

/// Serializes `msg` as a request that wants an acknowledgement.
fn serialize(msg: RouteNetlinkMessage, flags: u16, seq: u32) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | flags;
    header.sequence_number = seq;
    let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    buf
}

fn link_up(index: u32) -> LinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg.header.flags = LinkFlags::Up;
    msg.header.change_mask = LinkFlags::Up;
    msg
}

fn ipv4_address(index: u32, addr: Ipv4Addr, prefix: u8) -> AddressMessage {
    let mut msg = AddressMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.prefix_len = prefix;
    msg.header.index = index;
    msg.attributes = vec![AddressAttribute::Local(IpAddr::V4(addr)), AddressAttribute::Address(IpAddr::V4(addr))];
    msg
}

fn default_route(gateway: Ipv4Addr) -> RouteMessage {
    let mut msg = RouteMessage::default();
    msg.header.address_family = AddressFamily::Inet;
    msg.header.table = RouteHeader::RT_TABLE_MAIN;
    msg.header.protocol = RouteProtocol::Boot;
    msg.header.scope = RouteScope::Universe;
    msg.header.kind = RouteType::Unicast;
    msg.attributes = vec![RouteAttribute::Gateway(RouteAddress::Inet(gateway))];
    msg
}

fn delete_by_name(name: &str) -> LinkMessage {
    let mut msg = LinkMessage::default();
    msg.attributes = vec![LinkAttribute::IfName(name.to_owned())];
    msg
}

/// `RTM_DELLINK` of the interface `name`, as raw bytes (for the janitor, which sends it after we are gone).
#[must_use]
pub fn delete_link_message(name: &str) -> Vec<u8> {
    serialize(RouteNetlinkMessage::DelLink(delete_by_name(name)), NLM_F_ACK, 1)
}

/// A random, locally administered unicast MAC address for a bridge. A bridge made without one takes the
/// lowest MAC of its ports, and changes it as ports come and go: a box that had resolved the gateway to the
/// MAC of a port deleted since (another box's veth, which the kernel deletes whenever it frees that box's
/// network namespace) sends into the void until its ARP entry expires, tens of seconds later. A bridge given
/// an address keeps it.
fn bridge_mac() -> io::Result<[u8; 6]> {
    let mut mac = [0u8; 6];
    // SAFETY: fills a stack buffer of the length given.
    let n = unsafe { libc::getrandom(mac.as_mut_ptr().cast(), mac.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if n as usize != mac.len() {
        return Err(io::Error::from_raw_os_error(libc::EIO)); // the kernel fills up to 256 bytes at once
    }
    mac[0] = (mac[0] & !0x01) | 0x02; // unicast, locally administered
    Ok(mac)
}

/// The MAC address of the `eth0` of a box at `addr`: `02:6e` (locally administered, "n") and the address. A box
/// given the address of one gone before gets its MAC too, so the ARP entries kept for that address (the host's,
/// other boxes') stay right, where a random MAC would leave them pointing nowhere for tens of seconds. No two
/// ports carry it at once: a network hands an address out again only once its last holder's veth is gone.
#[must_use]
pub fn box_mac(addr: Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = addr.octets();
    [0x02, 0x6e, a, b, c, d]
}

/// What a box sends to configure its end of the veth pair, serialized in the parent: the address, the
/// link up (both with index 0, which the child replaces with `eth0`'s at [`INDEX_OFFSET`]), then the
/// default route through the network's gateway.
#[derive(Debug, Clone)]
pub struct Eth0 {
    pub address: Vec<u8>,
    pub up: Vec<u8>,
    pub route: Vec<u8>,
}

impl Eth0 {
    #[must_use]
    pub fn new(addr: Ipv4Addr, prefix: u8, gateway: Ipv4Addr) -> Eth0 {
        let flags = NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
        Eth0 {
            address: serialize(RouteNetlinkMessage::NewAddress(ipv4_address(0, addr, prefix)), flags, 1),
            up: serialize(RouteNetlinkMessage::SetLink(link_up(0)), NLM_F_ACK, 2),
            route: serialize(RouteNetlinkMessage::NewRoute(default_route(gateway)), flags, 3),
        }
    }
}

/// A route netlink socket, in the network namespace where it was created.
#[derive(Debug)]
pub struct Netlink {
    socket: Socket,
    seq: u32,
}

impl Netlink {
    /// A socket in the caller's network namespace.
    pub fn open() -> io::Result<Netlink> {
        let socket = Socket::new(NETLINK_ROUTE)?;
        // Kept for the network's life: never on 0-2, where a caller's closed standard fds would be reopened.
        Ok(Netlink::from_fd(crate::sys::own_fd(socket.into_raw_fd())?))
    }

    /// Takes over a route netlink socket made elsewhere (in another network namespace).
    #[must_use]
    pub fn from_fd(fd: OwnedFd) -> Netlink {
        // SAFETY: `fd` is an owned socket, handed over.
        Netlink { socket: unsafe { Socket::from_raw_fd(fd.into_raw_fd()) }, seq: 0 }
    }

    /// Sends `msg` and collects the answers up to the acknowledgement (or the end of a dump).
    fn exchange(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let request = serialize(msg, flags, seq);
        self.socket.send(&request, 0)?;
        let mut answers = Vec::new();
        loop {
            let (buf, _) = self.socket.recv_from_full()?;
            let mut at = 0;
            while at < buf.len() {
                let packet = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[at..])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let len = packet.header.length as usize;
                if len == 0 {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "empty netlink message"));
                }
                at += (len + 3) & !3;
                if packet.header.sequence_number != seq {
                    continue;
                }
                match packet.payload {
                    NetlinkPayload::Error(err) => {
                        return match err.code {
                            None => Ok(answers),
                            Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
                        }
                    }
                    NetlinkPayload::Done(_) => return Ok(answers),
                    NetlinkPayload::InnerMessage(inner) => answers.push(inner),
                    _ => {}
                }
            }
        }
    }

    fn request(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
        self.exchange(msg, NLM_F_ACK | flags).map(drop)
    }

    /// The index of the interface `name`.
    pub fn index_of(&mut self, name: &str) -> io::Result<u32> {
        let answers = self.exchange(RouteNetlinkMessage::GetLink(delete_by_name(name)), NLM_F_ACK)?;
        answers
            .into_iter()
            .find_map(|m| match m {
                RouteNetlinkMessage::NewLink(link) => Some(link.header.index),
                _ => None,
            })
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENODEV))
    }

    /// Creates the bridge `name` with `addr/prefix` and a MAC address of its own ([`bridge_mac`]), up;
    /// returns its index.
    pub fn create_bridge(&mut self, name: &str, addr: Ipv4Addr, prefix: u8) -> io::Result<u32> {
        let mut msg = link_up(0);
        msg.attributes = vec![
            LinkAttribute::IfName(name.to_owned()),
            LinkAttribute::Address(bridge_mac()?.to_vec()),
            LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Bridge)]),
        ];
        self.request(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)?;
        let made = self.index_of(name).and_then(|index| {
            let flags = NLM_F_CREATE | NLM_F_EXCL;
            self.request(RouteNetlinkMessage::NewAddress(ipv4_address(index, addr, prefix)), flags)?;
            Ok(index)
        });
        if made.is_err() {
            let _ = self.delete_link(name);
        }
        made
    }

    /// Creates a veth pair: `host_name`, up and a port of the bridge `bridge`, here; its peer
    /// [`BOX_IFNAME`] with the MAC address `mac` (down, for the box to configure) in the network namespace of
    /// process `pid`.
    pub fn create_veth(&mut self, host_name: &str, bridge: u32, mac: [u8; 6], pid: u32) -> io::Result<()> {
        let mut peer = LinkMessage::default();
        peer.attributes = vec![
            LinkAttribute::IfName(BOX_IFNAME.to_owned()),
            LinkAttribute::Address(mac.to_vec()),
            LinkAttribute::NetNsPid(pid),
        ];
        let mut msg = link_up(0);
        msg.attributes = vec![
            LinkAttribute::IfName(host_name.to_owned()),
            LinkAttribute::Controller(bridge),
            LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Veth),
                LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
            ]),
        ];
        self.request(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
    }

    /// Deletes the interface `name` (for a veth, both ends go).
    pub fn delete_link(&mut self, name: &str) -> io::Result<()> {
        self.request(RouteNetlinkMessage::DelLink(delete_by_name(name)), 0)
    }

    /// The names of the interfaces in this socket's namespace.
    pub fn link_names(&mut self) -> io::Result<Vec<String>> {
        let answers = self.exchange(RouteNetlinkMessage::GetLink(LinkMessage::default()), NLM_F_DUMP)?;
        Ok(answers
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(link) => link.attributes.into_iter().find_map(|a| match a {
                    LinkAttribute::IfName(name) => Some(name),
                    _ => None,
                }),
                _ => None,
            })
            .collect())
    }

    /// The IPv4 destinations (address, prefix length) of the main routing table, the default route aside.
    pub fn ipv4_routes(&mut self) -> io::Result<Vec<(Ipv4Addr, u8)>> {
        let mut query = RouteMessage::default();
        query.header.address_family = AddressFamily::Inet;
        let answers = self.exchange(RouteNetlinkMessage::GetRoute(query), NLM_F_DUMP)?;
        Ok(answers
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(route) => Some(route),
                _ => None,
            })
            .filter(|r| r.header.destination_prefix_length > 0)
            .filter(|r| {
                let table = r.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Table(t) => Some(*t),
                    _ => None,
                });
                table.unwrap_or(u32::from(r.header.table)) == u32::from(RouteHeader::RT_TABLE_MAIN)
            })
            .filter_map(|r| {
                let prefix = r.header.destination_prefix_length;
                r.attributes.into_iter().find_map(|a| match a {
                    RouteAttribute::Destination(RouteAddress::Inet(dst)) => Some((dst, prefix)),
                    _ => None,
                })
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eth0_messages_carry_the_index_where_the_child_writes_it() {
        let eth0 = Eth0::new(Ipv4Addr::new(10, 1, 2, 5), 24, Ipv4Addr::new(10, 1, 2, 1));
        for msg in [&eth0.address, &eth0.up] {
            assert_eq!(&msg[INDEX_OFFSET..INDEX_OFFSET + 4], &[0, 0, 0, 0]);
            assert_eq!(u32::from_ne_bytes(msg[0..4].try_into().unwrap()) as usize, msg.len());
        }
        let mut patched = eth0.address.clone();
        patched[INDEX_OFFSET..INDEX_OFFSET + 4].copy_from_slice(&7u32.to_ne_bytes());
        let packet = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&patched).unwrap();
        let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewAddress(addr)) = packet.payload else {
            panic!("not an address message")
        };
        assert_eq!((addr.header.index, addr.header.prefix_len), (7, 24));
        let mut up = eth0.up.clone();
        up[INDEX_OFFSET..INDEX_OFFSET + 4].copy_from_slice(&9u32.to_ne_bytes());
        let packet = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&up).unwrap();
        let NetlinkPayload::InnerMessage(RouteNetlinkMessage::SetLink(link)) = packet.payload else {
            panic!("not a link message")
        };
        assert_eq!(link.header.index, 9);
    }

    #[test]
    fn a_bridge_mac_is_unicast_locally_administered_and_random() {
        let (a, b) = (bridge_mac().unwrap(), bridge_mac().unwrap());
        assert_eq!((a[0] & 0x01, a[0] & 0x02), (0, 0x02));
        assert_ne!(a, b);
    }

    #[test]
    fn a_boxs_mac_is_unicast_locally_administered_and_carries_its_address() {
        assert_eq!(box_mac(Ipv4Addr::new(10, 1, 2, 5)), [0x02, 0x6e, 10, 1, 2, 5]);
    }

    #[test]
    fn the_janitors_message_deletes_the_link_by_name() {
        let msg = delete_link_message("nsbr0011aabb");
        let packet = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&msg).unwrap();
        assert_eq!(packet.header.flags, NLM_F_REQUEST | NLM_F_ACK);
        let NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(link)) = packet.payload else {
            panic!("not a delete")
        };
        assert_eq!(link.header.index, 0);
        assert_eq!(link.attributes, vec![LinkAttribute::IfName("nsbr0011aabb".into())]);
    }

    #[test]
    fn the_route_message_names_the_gateway_and_no_interface() {
        let eth0 = Eth0::new(Ipv4Addr::new(10, 1, 2, 5), 24, Ipv4Addr::new(10, 1, 2, 1));
        let packet = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&eth0.route).unwrap();
        let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(route)) = packet.payload else {
            panic!("not a route message")
        };
        assert_eq!(route.attributes, vec![RouteAttribute::Gateway(RouteAddress::Inet(Ipv4Addr::new(10, 1, 2, 1)))]);
        assert_eq!(route.header.destination_prefix_length, 0);
    }
}
