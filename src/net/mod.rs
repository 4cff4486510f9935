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
//!   Boxes on such a network are started inside that user namespace (see [`Network::link`]), since a veth
//!   can only join two network namespaces whose owners the creator holds `CAP_NET_ADMIN` over.
//!
//! A host bridge's subnet must not overlap a route of the host. Checking the routes and then making the
//! bridge are one step ([`Claim`]): two processes making `10.84.0.0/24` at once would otherwise both find
//! it free, and two bridges would hold the same gateway.
//!
//! A `fork()`ed copy of the process that made a [`Network`] ([`crate::fork_id`]) only lets go of its copies of
//! the fds: it deletes nothing, waits for no lock (another thread may have held one at the fork), and adds
//! no box (the netlink socket is the original's too: their answers would mix).

mod claim;
pub(crate) mod egress;
mod janitor;
mod netlink;
mod network;
mod private;

pub(crate) use netlink::{Eth0, Netlink, INDEX_OFFSET};
pub(crate) use network::{Link, Network};
