"""Subnets and networks that no route of the host (nor another user of the machine) has taken."""

from __future__ import annotations

from typing import Any

import nsbox


def free_subnet(prefix: int = 24) -> Any:
    """A random ``IPv4Network`` of the private ranges that no route of this network namespace overlaps.

    From the system's random source: pytest-randomly seeds ``random`` alike in every xdist worker. 10.213.0.0/16
    is left to the README and the notebooks. Another user may claim the subnet first (``free_network`` retries).
    Self-contained, so that driver scripts can carry its source (``inspect.getsource``).
    """
    import ipaddress
    import random

    from nsbox import _nsbox

    pick = random.SystemRandom()
    pools = [ipaddress.IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")]
    routes = [ipaddress.IPv4Network((dst, length)) for dst, length in _nsbox.ipv4_routes()]
    for _ in range(1000):
        pool = pick.choices(pools, weights=[p.num_addresses for p in pools])[0]
        size = 1 << (32 - prefix)
        subnet = ipaddress.IPv4Network(
            (int(pool.network_address) + size * pick.randrange(pool.num_addresses // size), prefix)
        )
        if not subnet.overlaps(ipaddress.IPv4Network("10.213.0.0/16")) and not any(subnet.overlaps(r) for r in routes):
            return subnet
    raise RuntimeError("no subnet of the private ranges is free of this namespace's routes")


def free_network(**options: Any) -> nsbox.Network:
    """A ``nsbox.Network`` on a ``free_subnet()``, retrying while other users claim the subnets picked first.

    Self-contained but for ``free_subnet`` (drivers carry both sources).
    """
    import time

    import nsbox

    for _ in range(500):
        try:
            return nsbox.Network(free_subnet(), **options)
        except ValueError as exc:
            if "overlaps the host's route" not in str(exc):
                raise
            time.sleep(0.01)  # a wide network that someone holds for a moment (a property test's) may cover many
    raise RuntimeError("no /24 of the private ranges is free of the host's routes")
