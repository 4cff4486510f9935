"""A box that reaches out: ``egress=True`` (outbound NAT and DNS), ``publish=`` (host ports into the box).

The engine is ``slirp4netns``, started by the core on the box's network namespace while the box waits
(``src/net/egress.rs`` says why that engine, with figures). This module checks the options, finds the
engine, writes the box's ``/etc/resolv.conf`` (bind-mounted in the box's mount namespace only, never the
host's file) and describes what is in place (:class:`EgressInfo`, ``box.egress``).
"""

from __future__ import annotations

import errno
import html
import ipaddress
import os
import shutil
import socket
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from nsbox import _nsbox

#: The addresses the engine gives the box (slirp4netns's plan): the box's own, the host's loopback, DNS.
BOX_ADDRESS: str = _nsbox.Egress.BOX_ADDRESS
HOST_ADDRESS: str = _nsbox.Egress.HOST_ADDRESS
DNS_ADDRESS: str = _nsbox.Egress.DNS_ADDRESS

#: What ``publish`` takes, as the README says.
PublishSpec = Mapping[int | str, int] | Iterable[tuple[str, int | str, int]]


@dataclass(frozen=True)
class Published:
    """A host port forwarded to a port in the box."""

    host_address: str
    host_port: int
    box_port: int
    protocol: str = "tcp"

    def __str__(self) -> str:
        return f"{self.host_address}:{self.host_port}/{self.protocol} -> {self.box_port}"


def _port(what: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"publish: {what} must be a port number, not {value!r}")
    if not 1 <= value <= 65535:
        raise ValueError(f"publish: {what} {value} is not a port (1 to 65535)")
    return value


def _host_port(value: object) -> tuple[int, str]:
    """``8080``, ``"8080"``, ``"8080/tcp"`` or ``"8053/udp"``: the port and the protocol."""
    if isinstance(value, str):
        number, _, protocol = value.partition("/")
        protocol = protocol or "tcp"
        if protocol not in ("tcp", "udp") or not number.isdigit():
            raise ValueError(f"publish: {value!r} is not a host port such as 8080, '8080/tcp' or '8053/udp'")
        return _port("host port", int(number)), protocol
    return _port("host port", value), "tcp"


def _host_address(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"publish: the host address must be a string such as '127.0.0.1', not {value!r}")
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        raise ValueError(f"publish: {value!r} is not an IPv4 address of the host") from None


def parse_publish(value: object) -> list[Published]:
    """``{8080: 80}``, ``{"8053/udp": 53}`` or ``[("127.0.0.1", 8080, 80), ...]``, checked."""
    if value is None:
        return []
    if isinstance(value, Mapping):
        items = [("127.0.0.1", host, box) for host, box in value.items()]
    elif isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(
            f"publish must be a dict {{8080: 80}} or a list of (address, host port, box port), not {value!r}"
        )
    else:
        items = []
        for item in value:
            if not isinstance(item, tuple) or len(item) != 3:
                raise TypeError(f"publish: each item must be an (address, host port, box port) tuple, not {item!r}")
            items.append(item)
    out: list[Published] = []
    for address, host, box in items:
        port, protocol = _host_port(host)
        entry = Published(_host_address(address), port, _port("box port", box), protocol)
        if any((p.host_address, p.host_port, p.protocol) == (entry.host_address, port, protocol) for p in out):
            raise ValueError(f"publish: {entry.host_address}:{port}/{protocol} is given twice")
        out.append(entry)
    return out


def parse_dns(value: object) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"dns must be a list of IPv4 addresses, not {value!r}")
    out = []
    for item in value:
        try:
            out.append(str(ipaddress.IPv4Address(item)))
        except ValueError:
            raise ValueError(f"dns: {item!r} is not an IPv4 address") from None
    if not out:
        raise ValueError("dns must name at least one resolver")
    return out


def check_free(published: list[Published]) -> None:
    """A clear error for a host port already taken, before anything is forked (the engine says only 'failed')."""
    for p in published:
        kind = socket.SOCK_DGRAM if p.protocol == "udp" else socket.SOCK_STREAM
        with socket.socket(socket.AF_INET, kind) as probe:
            try:
                probe.bind((p.host_address, p.host_port))
            except OSError as exc:
                reason = "in use" if exc.errno == errno.EADDRINUSE else os.strerror(exc.errno or errno.EINVAL)
                err = OSError(exc.errno, f"publish: the host's {p.host_address}:{p.host_port}/{p.protocol} is {reason}")
                err.step = "publish"  # type: ignore[attr-defined]
                raise err from None


@dataclass(frozen=True)
class Allowed:
    """A destination a box on a leash may reach: a network, and a port (TCP and UDP) or every port."""

    network: ipaddress.IPv4Network
    port: int | None = None
    #: What was given, when it was a host name (resolved when the box starts).
    name: str | None = None

    def __str__(self) -> str:
        where = str(self.network.network_address) if self.network.prefixlen == 32 else str(self.network)
        named = f" ({self.name})" if self.name else ""
        return f"{where}{named}" + ("" if self.port is None else f":{self.port}")

    def rule(self) -> str:
        port = "" if self.port is None else f"meta l4proto {{ tcp, udp }} th dport {self.port} "
        return f"ip daddr {self.network} {port}accept"


#: The host's loopback, which the engine maps to HOST_ADDRESS: an allowlist names either.
_LOOPBACK = ipaddress.IPv4Network("127.0.0.1/32")


def _allowed_networks(host: str, entry: str) -> list[tuple[ipaddress.IPv4Network, str | None]]:
    try:
        return [(ipaddress.IPv4Network(host), None)]
    except ValueError:
        pass
    if not host or "/" in host:
        raise ValueError(f"allow: {entry!r} is not a CIDR, an address or a host name")
    try:
        infos = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ValueError(f"allow: cannot resolve {host!r} (names are resolved when the box starts): {exc}") from None
    addresses = sorted({str(info[4][0]) for info in infos})
    return [(ipaddress.IPv4Network(a), host) for a in addresses]


def parse_allow(value: object) -> list[Allowed] | None:
    """``["10.0.0.0/8", "127.0.0.1:8080", "10.1.0.0/16:443", "example.org:443"]``, checked; names resolved now."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"allow must be a list of CIDRs, host:port, cidr:port or host names, not {value!r}")
    out: list[Allowed] = []
    for entry in value:
        if not isinstance(entry, str):
            raise TypeError(f"allow: each entry must be a string such as '10.0.0.0/8' or 'host:443', not {entry!r}")
        host, colon, port_text = entry.rpartition(":")
        if not colon:
            host, port = entry, None
        elif port_text.isdigit() and 1 <= int(port_text) <= 65535:
            port = int(port_text)
        else:
            raise ValueError(f"allow: {entry!r} has no valid port after ':' (1 to 65535)")
        for network, name in _allowed_networks(host.strip(), entry):
            if network == _LOOPBACK:
                network = ipaddress.IPv4Network(f"{HOST_ADDRESS}/32")
            out.append(Allowed(network, port, name))
    return out


def nft_rules(allowed: list[Allowed]) -> str:
    """The leash: in the box's network namespace, which the box holds no capability over (see src/net/egress.rs).

    Loopback and the replies of connections already allowed (published ports too) pass; the allowed destinations
    pass; everything else is refused at once: TCP with a reset (connection refused), the rest with ICMP
    administratively prohibited (unreachable).
    """
    lines = [
        "table inet nsbox_leash {",
        "  chain out {",
        "    type filter hook output priority filter; policy accept;",
        '    oif "lo" accept',
        "    ct state established,related accept",
        *(f"    {a.rule()}" for a in allowed),
        "    meta l4proto tcp reject with tcp reset",
        "    reject with icmpx type admin-prohibited",
        "  }",
        "}",
    ]
    return "\n".join(lines) + "\n"


#: Before the rules, in the leash's network namespace: loopback up, and ports below 1024 open to the box (which is
#: root in its own user namespace only, so it would otherwise need CAP_NET_BIND_SERVICE in nsbox's).
_LEASH_SETUP = "ip link set lo up && echo 0 > /proc/sys/net/ipv4/ip_unprivileged_port_start"


#: A private network's NAT: what its boxes send out through the engine's tap leaves with the tap's address.
_NAT_RULES = """\
table ip nsbox_nat {
  chain post {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "tap0" masquerade
  }
}
"""

#: The engine's own network, which a network with egress must not overlap.
ENGINE_NETWORK = ipaddress.IPv4Network("10.0.2.0/24")


def network_plan(userns: int, netns: int) -> Plan:
    """A private network's egress: the engine on the LAN's namespace, forwarding and a masquerade rule there.

    ``userns`` and ``netns`` are fds of the network's namespaces (the caller closes them).
    """
    from nsbox._run import run

    check_tun()
    engine = _nsbox.Egress(os.fsencode(find_engine()), [], None)
    nft = find_tool("nft", "nftables")
    engine.use_namespaces(userns, netns)
    r = run(
        ["/bin/sh", "-c", f'echo 1 > /proc/sys/net/ipv4/ip_forward && exec "{nft}" -f -'],
        target={"user": f"/proc/self/fd/{userns}", "net": f"/proc/self/fd/{netns}"},
        input=_NAT_RULES,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )
    if r.returncode != 0:
        engine.stop()
        err = OSError(errno.EPERM, f"egress: cannot set up the network's NAT: {r.stderr.strip() or r.returncode}")
        err.step = "egress"  # type: ignore[attr-defined]
        raise err
    engine.attach_to_leash()
    return Plan([], [DNS_ADDRESS], engine=engine)


def find_tool(name: str, package: str) -> str:
    found = shutil.which(name, path=os.environ.get("PATH", os.defpath) + ":/usr/bin:/usr/sbin:/sbin")
    if found is None:
        raise FileNotFoundError(errno.ENOENT, f"{name} is needed here (apt install {package})", name)
    return found


def find_engine() -> str:
    return find_tool("slirp4netns", "slirp4netns")


def check_tun() -> None:
    """Without root the engine opens ``/dev/net/tun`` as the caller: say so before forking if it cannot."""
    if os.geteuid() == 0 or os.access("/dev/net/tun", os.R_OK | os.W_OK):
        return
    mode = ""
    try:
        mode = f" (it is {os.stat('/dev/net/tun').st_mode & 0o777:04o})"
    except OSError:
        pass
    err = PermissionError(
        errno.EACCES,
        f"egress without root needs /dev/net/tun open to everyone{mode}: as root, chmod 0666 /dev/net/tun "
        "(most distributions' default)",
        "/dev/net/tun",
    )
    err.step, err.hint = "egress", "tun_not_open"  # type: ignore[attr-defined]
    raise err


@dataclass
class Plan:
    """A box's egress, checked: made into files and the core's engine object by :meth:`make`."""

    publish: list[Published]
    dns: list[str]
    #: ``allow=``: the only destinations, or ``None`` for no leash.
    allow: list[Allowed] | None = None
    #: A box on a ``Network(egress=True)``: only its resolv.conf is its own; the engine is the network's.
    on_network: bool = False
    #: A directory of the caller's for the box's resolv.conf and the engine's API socket; removed after the spawn.
    workdir: str | None = None
    engine: _nsbox.Egress | None = field(default=None, repr=False)

    @property
    def resolv_conf(self) -> str:
        assert self.workdir is not None
        return os.path.join(self.workdir, "resolv.conf")

    @property
    def box_engine(self) -> _nsbox.Egress | None:
        """The engine the box's spawn starts (or joins, on a leash); ``None`` on a network (the network's runs)."""
        return None if self.on_network else self.engine

    def make(self) -> None:
        """The files the box and the engine need (before the spec is built), and the core's object."""
        if self.on_network:
            self._make_files()
            return
        check_tun()
        engine = find_engine()
        check_free(self.publish)
        self._make_files()
        api = os.path.join(self.workdir or "", "api.sock") if self.publish else None
        rows = [(p.protocol == "udp", p.host_address, p.host_port, p.box_port) for p in self.publish]
        self.engine = _nsbox.Egress(os.fsencode(engine), rows, None if api is None else os.fsencode(api))
        if self.allow is not None:
            try:
                self._leash(self.engine)
            except BaseException:
                self.stop()
                raise

    def _make_files(self) -> None:
        self.workdir = tempfile.mkdtemp(prefix="nsbox-egress-")
        # Traversable, so that a box whose root is another uid (uid_map) can still reach its resolv.conf.
        os.chmod(self.workdir, 0o711)
        with open(self.resolv_conf, "w") as conf:
            conf.write("".join(f"nameserver {a}\n" for a in self.dns))
        os.chmod(self.resolv_conf, 0o644)

    def _leash(self, engine: _nsbox.Egress) -> None:
        """The leash's namespaces, loopback up and the rules in them, then the engine there (before the box)."""
        from nsbox._run import run

        assert self.allow is not None
        nft = find_tool("nft", "nftables")
        engine.make_leash()
        fds = [engine.leash_fd("user"), engine.leash_fd("net")]
        try:
            user, net = (f"/proc/self/fd/{fd}" for fd in fds)
            r = run(
                ["/bin/sh", "-c", f'{_LEASH_SETUP} && exec "{nft}" -f -'],
                target={"user": user, "net": net},
                input=nft_rules(self.allow),
                capture_output=True,
                text=True,
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
            )
        finally:
            for fd in fds:
                if fd is not None:
                    os.close(fd)
        if r.returncode != 0:
            err = OSError(errno.EPERM, f"allow: cannot set up the leash's rules: {r.stderr.strip() or r.returncode}")
            err.step = "egress"  # type: ignore[attr-defined]
            raise err
        engine.attach_to_leash()

    def cleanup(self) -> None:
        """Removes the files once the box has its mount (the mount keeps the file)."""
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def stop(self) -> None:
        self.cleanup()
        if self.engine is not None and not self.on_network:
            self.engine.stop()


class EgressInfo:
    """What is in place for a box with ``egress=True``: ``box.egress``."""

    def __init__(self, plan: Plan) -> None:
        self._plan = plan
        #: The engine.
        self.engine = "slirp4netns"
        #: The box's address on the engine's network (``tap0``).
        self.address = BOX_ADDRESS
        #: The address inside the box that reaches the host's loopback (127.0.0.1).
        self.host_address = HOST_ADDRESS
        #: The resolvers in the box's ``/etc/resolv.conf``.
        self.dns = list(plan.dns)
        #: The host ports forwarded into the box.
        self.published = list(plan.publish)
        #: ``allow=``: the only destinations the box may reach (names resolved when it started), or ``None``.
        self.allowed = None if plan.allow is None else list(plan.allow)

    @property
    def helper_pid(self) -> int | None:
        """The engine's PID on the host while it runs, else ``None``."""
        return None if self._plan.engine is None else self._plan.engine.pid

    def __repr__(self) -> str:
        ports = ", ".join(map(str, self.published)) or "none"
        leash = "" if self.allowed is None else f", allowed only: {', '.join(map(str, self.allowed)) or 'nothing'}"
        state = f"pid={self.helper_pid}" if self.helper_pid is not None else "stopped"
        return (
            f"<nsbox egress via {self.engine} ({state}): box {self.address}, host loopback at {self.host_address}, "
            f"dns {', '.join(self.dns)}, published: {ports}{leash}>"
        )

    def _repr_html_(self) -> str:
        rows = [
            ("engine", f"{self.engine} ({'pid ' + str(self.helper_pid) if self.helper_pid else 'stopped'})"),
            ("box address (tap0)", self.address),
            ("host loopback, from the box", self.host_address),
            ("DNS", ", ".join(self.dns)),
            *(
                (f"published {p.protocol}", f"{p.host_address}:{p.host_port} &rarr; box:{p.box_port}")
                for p in self.published
            ),
        ]
        body = "".join(
            f"<tr><th>{html.escape(k)}</th><td>{v if '&rarr;' in v else html.escape(v)}</td></tr>" for k, v in rows
        )
        return f"<table>{body}</table>"


def plan(values: Mapping[str, Any]) -> Plan | None:
    """The egress plan of a box's options, or ``None``; ``TypeError``/``ValueError`` for bad input."""
    egress, publish, dns, allow = values["egress"], values["publish"], values["dns"], values["allow"]
    if not isinstance(egress, bool):
        raise TypeError(f"egress must be True or False, not {egress!r}")
    published = parse_publish(publish)
    resolvers = parse_dns(dns)
    if not egress:
        given = [name for name, v in (("publish", publish), ("dns", dns), ("allow", allow)) if v is not None]
        if given:
            raise ValueError(f"{given[0]} needs egress=True")
        return None
    return Plan(published, resolvers or [DNS_ADDRESS], parse_allow(allow))
