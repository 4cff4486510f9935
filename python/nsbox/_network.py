"""``nsbox.Network``: a virtual LAN (a bridge) that boxes join with ``network=``."""

from __future__ import annotations

import html
import ipaddress
import os
import secrets
import threading
import weakref
from typing import TYPE_CHECKING, Any

from nsbox import _nsbox

if TYPE_CHECKING:
    from nsbox._popen import Popen

#: CAP_NET_ADMIN's bit in /proc/self/status's CapEff.
_CAP_NET_ADMIN = 12


def _has_net_admin() -> bool:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> _CAP_NET_ADMIN & 1)
    return False


def _subnet(value: object) -> ipaddress.IPv4Network:
    if isinstance(value, ipaddress.IPv4Network):
        net = value
    elif isinstance(value, str):
        try:
            net = ipaddress.IPv4Network(value)
        except ipaddress.AddressValueError:
            raise ValueError(f"subnet {value!r} is not an IPv4 network such as '10.213.0.0/24'") from None
        except ipaddress.NetmaskValueError:
            raise ValueError(f"subnet {value!r} has no valid prefix length") from None
        except ValueError:
            fixed = ipaddress.IPv4Network(value, strict=False)
            hint = f"did you mean '{fixed}'?"
            raise ValueError(f"subnet {value!r} is not a network (host bits are set): {hint}") from None
    else:
        raise TypeError(f"subnet must be a string such as '10.213.0.0/24', not {type(value).__name__}")
    for kind, test in [
        ("a loopback", net.is_loopback),
        ("a multicast", net.is_multicast),
        ("a link-local", net.is_link_local),
        ("a reserved", net.is_reserved or net.overlaps(ipaddress.IPv4Network("0.0.0.0/8"))),
    ]:
        if test:
            raise ValueError(f"subnet {str(net)!r} is {kind} range: use a private one such as '10.213.0.0/24'")
    if net.prefixlen > 30:
        raise ValueError(
            f"subnet {str(net)!r} is too small: a network needs room for the gateway and a box (/30 or larger)"
        )
    return net


#: Every live Network of this process, for :func:`_after_fork_in_child`.
_networks: weakref.WeakSet[Network] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """A forked child's copy of a Network gets a new lock: another thread may have held the old one."""
    for network in list(_networks):
        network._lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _command(args: object) -> str:
    if isinstance(args, (list, tuple)):
        return " ".join(map(str, args))
    return str(args)


class Network:
    """A virtual LAN that boxes join: ``nsbox.Popen(..., network=lan)`` gives the box an ``eth0`` on it.

    The LAN is a bridge with the subnet's first address (the boxes' gateway); each box gets a veth pair,
    ``eth0`` inside with the next free address (or ``ip=``) and a default route through the gateway, the
    other end on the bridge. Nothing is routed off the machine and no NAT is set up. A box's ``eth0`` has the
    MAC address ``02:6e`` followed by its IPv4 address, and the bridge a random one of its own, so the ARP
    entries of the host and the boxes stay right as boxes come and go.

    - **As root** (with ``CAP_NET_ADMIN``) the bridge lives in the caller's network namespace, so the host
      reaches the boxes through it, as with Docker's bridge. It is named ``nsbr`` plus 8 hex digits; a
      small janitor process deletes it should the caller die without :meth:`close`.
    - **Without root** (or with ``private=True``) the whole LAN lives in a network namespace owned by a new
      user namespace of the caller's: boxes reach each other, the host does not see them. Boxes on such a
      network are started inside that user namespace (uid 0 inside is the caller), so they take no
      ``uid_map``/``gid_map``/``setgroups``. The namespaces exist as long as the network or a box does.

    A context manager; :meth:`close` deletes every interface and namespace it made (boxes keep running,
    without their ``eth0``). A box's veth pair goes with its network namespace when it exits.

    Args:
        subnet: an IPv4 network, ``/30`` or larger. As root it must not overlap a route of the host: the
            check and the bridge are one step for every nsbox user of the network namespace, so of Networks
            with overlapping subnets made at once (by threads or processes) one gets it.
        private: ``None`` (default) chooses by privilege; ``True`` keeps the LAN in its own namespaces
            even for root; ``False`` insists on the host's namespace.

    Raises:
        ValueError: the subnet is not a network, too small, or overlaps a route of the host (as root);
            nothing is created then.
        TimeoutError: another process kept nsbox's lock on claiming subnets for 20 s.
    """

    def __init__(
        self,
        subnet: str | ipaddress.IPv4Network = "10.213.0.0/24",
        *,
        private: bool | None = None,
        egress: bool = False,
    ) -> None:
        net = _subnet(subnet)
        if private is not None and not isinstance(private, bool):
            raise TypeError(f"private must be None, True or False, not {private!r}")
        if not isinstance(egress, bool):
            raise TypeError(f"egress must be True or False, not {egress!r}")
        if egress:
            from nsbox import _egress

            if private is False:
                raise ValueError(
                    "egress on a Network needs the LAN in namespaces of its own (private=True): "
                    "a NAT in the host's namespace would change the host"
                )
            if net.overlaps(_egress.ENGINE_NETWORK):
                raise ValueError(f"subnet {str(net)!r} overlaps the egress engine's {_egress.ENGINE_NETWORK}")
            private = True
        if private is None:
            private = not _has_net_admin()
        self.subnet: ipaddress.IPv4Network = net
        #: The bridge's address: the boxes' gateway.
        self.gateway: str = str(net.network_address + 1)
        self._lock = threading.Lock()
        # address -> (box, or None while it is being started; its veth's name on the bridge)
        self._members: dict[ipaddress.IPv4Address, tuple[Popen | None, str]] = {}
        # address -> veth of a box that has exited: the kernel deletes the veth with the box's network
        # namespace, a little later (deleting it ourselves would cost ~20 ms); the address waits for that.
        self._draining: dict[ipaddress.IPv4Address, str] = {}
        self._closed = False
        #: The pools whose ready sets hold addresses here (see nsbox.Pool): closed first by close().
        self._pools: weakref.WeakSet[Any] = weakref.WeakSet()
        #: (veth, address) of sets of pools collected without close(): appended without the lock (by a
        #: finalizer, which may run while this thread holds it), freed under it by _forget_exited.
        self._returned: list[tuple[str, str]] = []
        #: Where the pools' next address is looked for (see _reserve_for_pool): an index into the subnet's hosts.
        self._cursor = 0
        # As root, refuses a subnet that overlaps a route of the host (see the class docstring).
        self._lan = _nsbox.Network(f"nsbr{secrets.token_hex(4)}", self.gateway, net.prefixlen, private)
        self._egress: Any = None
        if egress:
            self._egress = self._start_egress()
        _networks.add(self)

    def _start_egress(self) -> Any:
        from nsbox import _egress

        fds = [self._lan.namespace_fd("user"), self._lan.namespace_fd("net")]
        try:
            user, net = (fd for fd in fds if fd is not None)
            return _egress.network_plan(user, net)
        except BaseException:
            self._lan.close()
            raise
        finally:
            for fd in fds:
                if fd is not None:
                    os.close(fd)

    @property
    def egress(self) -> Any:
        """With ``egress=True``: the engine and addresses every box on the network shares (``box.egress``'s kind)."""
        if self._egress is None:
            return None
        from nsbox._egress import EgressInfo

        return EgressInfo(self._egress)

    @property
    def private(self) -> bool:
        """Whether the LAN lives in namespaces of its own rather than the host's."""
        return self._lan.private

    @property
    def bridge(self) -> str:
        """The bridge's interface name (in the host's network namespace unless :attr:`private`)."""
        return self._lan.bridge

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def boxes(self) -> list[Popen]:
        """The boxes on the network that are still running, in order of address."""
        with self._lock:
            self._forget_exited()
            return [box for box, _ in (self._members[a] for a in sorted(self._members)) if box is not None]

    def interfaces(self) -> list[str]:
        """The interfaces in the bridge's network namespace (the host's unless :attr:`private`).

        The veth of a box that has exited stays until the kernel has freed the box's network namespace,
        which it does a few milliseconds later.
        """
        return self._lan.link_names()

    def namespace_fd(self, kind: str) -> int | None:
        """A new fd of the network's ``"user"`` or ``"net"`` namespace (private networks), to close after use."""
        return self._lan.namespace_fd(kind)

    def close(self) -> None:
        """Delete every veth and the bridge, and let go of the namespaces. Idempotent.

        In a ``fork()``ed copy of the process that made the network, only let go of this copy's fds: the
        network is still the original's.
        """
        if self._lan.forked_copy:
            # Without the lock, which another thread may have held at the fork (should the fork have skipped
            # Python's at-fork hooks).
            self._closed = True
            self._lan.close()
            return
        # First the pools' ready sets, whose addresses come back as draining ones (the lock is not held: they
        # return them through _release).
        for pool in list(self._pools):
            pool.close()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            veths = [veth for _, veth in self._members.values()] + list(self._draining.values())
            self._members.clear()
            self._draining.clear()
        try:
            for veth in veths:
                if self._lan.has_link(veth):
                    self._lan.detach(veth)
        finally:
            if self._egress is not None:
                self._egress.engine.stop()
            self._lan.close()

    def __enter__(self) -> Network:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        lan = getattr(self, "_lan", None)
        if lan is not None:
            lan.close()

    def _repr_html_(self) -> str:
        # As __repr__: only what is known, without the lock.
        members = sorted(getattr(self, "_members", {}).items())
        running = [box for _, (box, _) in members if box is not None and box.poll() is None]
        rows = "".join(
            f"<tr><td><code>{html.escape(_command(b.args))}</code></td><td>{b.pid}</td>"
            f"<td>{b.ip}</td><td>{b.veth}</td></tr>"
            for b in ([] if getattr(self, "_closed", False) else running)
        )
        head = "<tr><th>box</th><th>host PID</th><th>eth0</th><th>veth on the bridge</th></tr>"
        return f"<p><code>{html.escape(repr(self))}</code></p><table>{head}{rows}</table>"

    def __repr__(self) -> str:
        # Only what is known: pytest and debuggers show the repr of a Network whose __init__ raised part way
        # (a refused subnet, a bridge that could not be made), so nothing here may assume that it finished.
        # Nor does it take the lock, which the thread asking may hold.
        subnet, lan = getattr(self, "subnet", None), getattr(self, "_lan", None)
        if subnet is None:
            return "<nsbox.Network, not made>"
        if lan is None:
            return f"<nsbox.Network {subnet} gateway={getattr(self, 'gateway', None)}, not made>"
        where = "private namespaces" if lan.private else "host"
        if getattr(self, "_egress", None) is not None:
            where += " with egress"
        if getattr(self, "_closed", False):
            state = "closed"
        else:
            members = list(getattr(self, "_members", {}).values())
            state = f"{sum(box is not None and box.poll() is None for box, _ in members)} boxes"
        return (
            f"<nsbox.Network {subnet} gateway={getattr(self, 'gateway', None)} bridge={lan.bridge} in {where}, {state}>"
        )

    # -- Used by Popen --------------------------------------------------------------------------

    def _forget_exited(self) -> None:
        """Moves the boxes that have exited, and the sets of pools collected unclosed, to the draining addresses."""
        while self._returned:
            veth, address = self._returned.pop()
            addr = ipaddress.IPv4Address(address)
            if self._members.get(addr) == (None, veth):
                del self._members[addr]
                self._draining[addr] = veth
        for addr, (box, veth) in list(self._members.items()):
            if box is not None and box.poll() is not None:
                del self._members[addr]
                self._draining[addr] = veth

    def _drained(self, addr: ipaddress.IPv4Address, wait: bool) -> bool:
        """Whether ``addr`` is free of an exited box's veth; with ``wait``, deletes that veth if need be."""
        veth = self._draining.get(addr)
        if veth is None:
            return True
        if self._lan.has_link(veth):
            if not wait:
                return False
            self._lan.detach(veth)
        del self._draining[addr]
        return True

    def _place(self, ip: Any, spec: Any, pool: Any) -> tuple[tuple[str, str], Any]:
        """A new box's (veth, address) and, when ``pool`` has a ready set wired to this network, that set.

        The set's address and veth, the pool's until now, become the box's (:meth:`_bind` them). A box with
        ``ip``, or on a network that is closed or a forked copy's, is placed as without a pool (refused then).
        """
        if pool is not None and ip is None and not self._closed and not self._lan.forked_copy:
            wired = pool.take_wired(self._lan, spec)
            if wired is not None:
                return (wired[0], wired[1]), wired[2]
        return self._reserve(ip), None

    def _reserve_for_pool(self) -> tuple[str, str] | None:
        """Picks an address for a pool's ready set and names its veth; returns (veth, address).

        Addresses are taken in turn through the subnet from the last one a pool took, skipping those in use
        and those of exited boxes whose veth may still be there (which a box's :meth:`_reserve` asks the kernel
        about, one request each: the pool's caller would wait for them). When only those are left, one listing
        of the links frees those whose veth is gone; ``None`` if none is.
        """
        self._check_usable()
        with self._lock:
            if self._closed:
                raise ValueError(f"{self!r} is closed")
            self._forget_exited()
            addr = self._next_fresh()
            if addr is None and self._sweep():
                addr = self._next_fresh()
            if addr is None:
                return None
            veth = f"nsv{secrets.token_hex(4)}"
            self._members[addr] = (None, veth)
            return veth, str(addr)

    def _next_fresh(self) -> ipaddress.IPv4Address | None:
        """The next address after the pools' cursor that is neither in use, draining nor the gateway."""
        first, count = int(self.subnet.network_address) + 1, self.subnet.num_addresses - 2
        for step in range(count):
            index = (self._cursor + step) % count
            addr = ipaddress.IPv4Address(first + index)
            if str(addr) != self.gateway and addr not in self._members and addr not in self._draining:
                self._cursor = index + 1
                return addr
        return None

    def _sweep(self) -> bool:
        """Frees every draining address whose veth is gone, from one listing of the links; whether any was."""
        if not self._draining:
            return False
        links = set(self._lan.link_names())
        gone = [addr for addr, veth in self._draining.items() if veth not in links]
        for addr in gone:
            del self._draining[addr]
        return bool(gone)

    def _check_usable(self) -> None:
        if self._lan.forked_copy:
            raise ValueError(
                f"the network {self.bridge} belongs to the process this one was forked from: add boxes to it "
                "there, or make a Network in this process"
            )

    def _reserve(self, ip: Any) -> tuple[str, str]:
        """Picks (or checks) an address for a new box and names its veth; returns (veth, address)."""
        self._check_usable()
        with self._lock:
            if self._closed:
                raise ValueError(f"{self!r} is closed")
            self._forget_exited()
            if ip is None:
                free = (a for a in self.subnet.hosts() if str(a) != self.gateway and a not in self._members)
                addr = next((a for a in free if self._drained(a, wait=False)), None)
                if addr is None:
                    # Only draining addresses are left: take the first, deleting its old veth now.
                    addr = next(iter(sorted(self._draining)), None)
                    if addr is None:
                        raise ValueError(f"network {self.subnet} has no free address left")
                self._drained(addr, wait=True)
            else:
                addr = self._check_ip(ip)
                self._drained(addr, wait=True)
            veth = f"nsv{secrets.token_hex(4)}"
            self._members[addr] = (None, veth)
            return veth, str(addr)

    def _check_ip(self, ip: Any) -> ipaddress.IPv4Address:
        if not isinstance(ip, (str, ipaddress.IPv4Address)):
            raise TypeError(f"ip must be an IPv4 address string, not {type(ip).__name__}")
        try:
            addr = ipaddress.IPv4Address(ip)
        except ValueError:
            raise ValueError(f"ip {ip!r} is not an IPv4 address") from None
        if addr not in self.subnet:
            raise ValueError(f"ip {str(addr)!r} is outside the network's subnet {self.subnet}")
        if addr in (self.subnet.network_address, self.subnet.broadcast_address):
            raise ValueError(f"ip {str(addr)!r} is the network or broadcast address of {self.subnet}")
        if str(addr) == self.gateway:
            raise ValueError(f"ip {str(addr)!r} is the network's gateway (the bridge's address)")
        if addr in self._members and not self._take_from_pools(addr):
            raise ValueError(f"ip {str(addr)!r} is already used by a box on {self.subnet}")
        return addr

    def _take_from_pools(self, addr: ipaddress.IPv4Address) -> bool:
        """Frees ``addr`` (for a box given it by ``ip=``) if an unused set of a pool holds it; whether it did.

        The set is freed, and its veth deleted now (the address is the box's at once). Called with the lock held.
        """
        box, veth = self._members[addr]
        if box is not None:
            return False
        for pool in list(self._pools):
            if pool._core.discard(str(addr)):
                del self._members[addr]
                if self._lan.has_link(veth):
                    self._lan.detach(veth)
                return True
        return False

    def _release(self, address: str, veth: str) -> None:
        """Frees the address of a box that has exited (``nsbox.call``): its veth goes with its namespace."""
        addr = ipaddress.IPv4Address(address)
        with self._lock:
            if self._members.get(addr, (None, None))[1] == veth:
                del self._members[addr]
                self._draining[addr] = veth

    def _bind(self, address: str, box: Popen | None) -> None:
        """Records the box started with a reserved address, or (``None``) frees the address."""
        addr = ipaddress.IPv4Address(address)
        with self._lock:
            if addr not in self._members:
                return
            if box is None:
                # Its veth goes with its network namespace, which the kernel frees later: delete it now.
                _, veth = self._members.pop(addr)
                self._lan.detach(veth)
            else:
                self._members[addr] = (box, self._members[addr][1])
