//! The network itself: its bridge, where it lives, and each box's veth pair.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Mutex, MutexGuard, PoisonError, TryLockError};

use libc::pid_t;

use super::claim::{network_address, overlaps, Claim};
use super::janitor::start_janitor;
use super::netlink::{self, Eth0, Netlink};
use super::private::make_private_namespaces;
use crate::errors::{Error, Hint, Step};
use crate::fork_id::process_generation;
use crate::namespace::Namespace;
use crate::spawn::reap;
use crate::spec::Spec;

/// A box's place on a network: the veth the parent makes for it, the messages with which the child then
/// configures `eth0`, and (a private network) the network's user namespace, which the box joins first.
pub struct Link<'a> {
    pub network: &'a Network,
    /// The name of the veth's end on the bridge.
    pub veth: String,
    pub eth0: Eth0,
    pub userns: Option<OwnedFd>,
    /// The box's address (its `eth0`'s MAC is made of it: [`netlink::box_mac`]).
    pub address: Ipv4Addr,
}

enum Home {
    Host { janitor: pid_t, line: OwnedFd },
    Private { userns: OwnedFd, netns: OwnedFd },
}

/// A bridge with the gateway address, and the means to connect boxes to it.
pub struct Network {
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

pub(crate) fn os_err(stage: Step, what: &str, err: &std::io::Error) -> Error {
    Error::os(stage, err.raw_os_error().unwrap_or(libc::EIO)).with_what(what.to_owned())
}

impl Network {
    /// A bridge in the caller's network namespace (needs `CAP_NET_ADMIN`), removed by a janitor process
    /// if the caller dies before [`Network::close`]. Refuses (`Invalid`) a subnet that overlaps a route of
    /// the namespace, checked under the [`Claim`] that lasts until the bridge's own route is there.
    pub fn host(bridge_name: &str, gateway: Ipv4Addr, prefix: u8) -> Result<Network, Error> {
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
        let mut lan = Network {
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
    pub fn private(bridge_name: &str, gateway: Ipv4Addr, prefix: u8) -> Result<Network, Error> {
        let (userns, netns, socket) = crate::spawn::threads::run(make_private_namespaces).and_then(|r| r)?;
        let mut nl = Netlink::from_fd(socket);
        let bridge = nl
            .create_bridge(bridge_name, gateway, prefix)
            .map_err(|e| os_err(Step::Network, &format!("create the bridge {bridge_name}"), &e))?;
        Ok(Network {
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

    /// What a box's spawn (or fork) needs to be on this network at `address`, with `veth` as the name of
    /// its veth's end on the bridge: the spec to spawn with (a box on a private network is started inside
    /// the network's user namespace rather than in one of its own) and the box's [`Link`].
    pub fn link(&self, config: &Spec, veth: String, address: Ipv4Addr) -> Result<(Spec, Link<'_>), Error> {
        let (config, userns) = self.box_spec(config)?;
        Ok((config, Link { network: self, veth, eth0: self.eth0(address), userns, address }))
    }

    /// The spec a box of `config` is spawned with on this network, and (a private network) the network's user
    /// namespace, which the box joins first and in which it makes its own (so it takes none of `config`'s).
    pub fn box_spec(&self, config: &Spec) -> Result<(Spec, Option<OwnedFd>), Error> {
        if !config.has(Namespace::Net) {
            return Err(Error::invalid("a box on a network needs its own network namespace (net=True)"));
        }
        self.owned()?;
        match self.namespace_fd("user")? {
            None => Ok((config.clone(), None)),
            Some(userns) => Ok((Spec { user: None, ..config.clone() }, Some(userns))),
        }
    }

    /// The messages that give a box's `eth0` `address` on this network, bring it up and route through the
    /// gateway.
    #[must_use]
    pub fn eth0(&self, address: Ipv4Addr) -> Eth0 {
        Eth0::new(address, self.prefix, self.gateway)
    }

    /// Connects the box `pid` (waiting in its new network namespace) through a new veth pair: `host_name`
    /// on the bridge, `eth0` in the box with the MAC address of `address` ([`netlink::box_mac`]).
    pub fn attach(&self, host_name: &str, address: Ipv4Addr, pid: pid_t) -> Result<(), Error> {
        self.with_netlink(|nl| {
            nl.create_veth(host_name, self.bridge, netlink::box_mac(address), pid as u32).map_err(|e| {
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

impl Drop for Network {
    fn drop(&mut self) {
        let _ = self.close();
    }
}
