//! A pool's sets on a `Network` (`nsbox.Pool(network=...)`): each set's network namespace is made already wired,
//! its veth on the network's bridge and its `eth0` given an address, brought up and routed through the gateway,
//! by the very steps a box on the network takes (the parent's `attach`, the child's `configure_eth0`). A box that
//! takes the set joins it and has nothing of its network left to do.
//!
//! The addresses are the caller's `nsbox.Network`'s, which alone hands them out: the caller gives the pool a
//! [`Ticket`] (an address and the name of its veth on the bridge) for each set it may make, up to the pool's size,
//! and takes back as spent the tickets of sets that will never serve a box (a making that failed, a set freed by
//! `close`), to hand their addresses out again once their veth is gone. A set's ticket goes with it to the box
//! that takes it.
//!
//! On a private network (a caller without root) the set's maker first joins the network's user namespace and makes
//! the set's namespaces there, as a box on that network does; the set then holds that user namespace too, joined
//! first by its box.

use std::net::Ipv4Addr;
use std::sync::Arc;

use crate::errors::Error;
use crate::net::Network;
use crate::spec::Spec;

/// An address of the network reserved for one set, and the name of the set's veth on the bridge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ticket {
    pub veth: String,
    pub address: Ipv4Addr,
}

/// The network a pool's sets are wired to.
pub(crate) struct Wiring {
    pub(crate) network: Arc<Network>,
}

impl Wiring {
    /// The pool's box options as its boxes are spawned on the network (see [`Network::box_spec`]).
    pub(crate) fn box_spec(&self, options: &Spec) -> Result<Spec, Error> {
        self.network.box_spec(options).map(|(spec, _userns)| spec)
    }
}
