"""Bad input to ``nsbox.Network`` and to a box on it (subnets, addresses, options that cannot go with a network):
refused with a clear error before anything is made or forked, whatever Hypothesis tries.
"""

from __future__ import annotations

import collections
import functools
import ipaddress
import os
import re
import socket
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nsbox
from helpers.lan import BAD_ADDRESSES, at, gateway_of, holders, ports
from helpers.nets import free_network
from helpers.procs import open_fds, settle, wait_until


@functools.cache
def _warmed_up() -> None:
    """What nsbox makes once per process, the first time it needs it (the helper's memfd, for a LAN's janitor)."""
    free_network().close()


@pytest.fixture(autouse=True)
def _settled() -> None:
    """Settled once per test, not per example: a full collection per example is too slow (in a fork of a big heap
    above all), and a test's examples leave no pidfd to the collector."""
    settle()


def _state(subnet: Any = None, lan: nsbox.Network | None = None) -> tuple[Any, ...]:
    """What a refusal leaves as it was: our fds, who holds the gateway a bridge for ``subnet`` would hold, and the
    ports of ``lan``'s bridge."""
    _warmed_up()
    gateway = gateway_of(subnet)
    fds = open_fds(settled=False)  # settled once per test (_settled)
    return fds, holders(gateway) if gateway is not None else set(), ports(lan) if lan is not None else []


def own_host_routes() -> list[ipaddress.IPv4Network]:
    """The host's routes that are no nsbox LAN's (those come and go with other users'), the default aside."""
    with open("/proc/net/route") as f:
        rows = [line.split() for line in f.read().splitlines()[1:]]
    decode = lambda hex_le: ipaddress.IPv4Address(int(hex_le, 16).to_bytes(4, "little"))  # noqa: E731
    return [
        ipaddress.IPv4Network(f"{decode(row[1])}/{decode(row[7])}")
        for row in rows
        if not row[0].startswith("nsbr") and int(row[7], 16) != 0
    ]


@pytest.mark.unit
@pytest.mark.parametrize(
    ("subnet", "message"),
    [
        ("10.213.12.5/24", "is not a network .*did you mean '10.213.12.0/24'"),
        ("10.213.12.0/31", "too small"),
        ("10.213.12.0/32", "too small"),
        ("10.213.12.0/33", "no valid prefix"),
        ("fd00::/64", "not an IPv4 network"),
        ("nonsense", "not an IPv4 network"),
    ],
)
def test_a_subnet_that_cannot_work_is_refused_with_a_value_error(subnet: str, message: str) -> None:
    before = _state(subnet)
    with pytest.raises(ValueError, match=message) as info:
        nsbox.Network(subnet)
    assert subnet in str(info.value)
    assert _state(subnet) == before


def test_a_subnet_overlapping_a_route_of_the_host_is_refused(lan: nsbox.Network) -> None:
    upper = list(lan.subnet.subnets(new_prefix=25))[1]
    before = _state(upper, lan)
    with pytest.raises(ValueError, match=re.escape(f"'{upper}' overlaps the host's route to {lan.subnet}")):
        nsbox.Network(str(upper))
    assert _state(upper, lan) == before
    # The host's own routes count too (not only nsbox's bridges): its interfaces' subnets, for one.
    own = [route for route in own_host_routes() if 8 <= route.prefixlen <= 30]
    assert own, "the host has no route of its own to try (an interface's subnet, say)"
    for route in own:
        before = _state(route, lan)
        with pytest.raises(ValueError, match="overlaps the host's route"):
            nsbox.Network(str(route))
        assert _state(route, lan) == before


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("outside", "outside the network's subnet {subnet}"),
        ("gateway", "gateway"),
        ("network", "network or broadcast"),
        ("broadcast", "network or broadcast"),
        ("not-an-address", "not an IPv4 address"),
    ],
)
def test_an_address_that_cannot_work_is_refused_before_forking(lan: nsbox.Network, where: str, message: str) -> None:
    before = _state(lan=lan)
    with pytest.raises(ValueError, match=re.escape(message.format(subnet=lan.subnet))):
        nsbox.Popen(["true"], network=lan, ip=BAD_ADDRESSES[where](lan.subnet))
    assert _state(lan=lan) == before
    assert lan.boxes == []


def test_an_address_in_use_and_options_that_cannot_go_with_a_network_are_refused(lan: nsbox.Network) -> None:
    with nsbox.Popen(["sleep", "60"], network=lan, ip=at(lan, 9)) as box:
        try:
            with pytest.raises(ValueError, match="already used"):
                nsbox.Popen(["true"], network=lan, ip=at(lan, 9))
        finally:
            box.kill()
    with pytest.raises(ValueError, match="without a network"):
        nsbox.Popen(["true"], ip=at(lan, 9))
    with pytest.raises(TypeError, match=r"nsbox\.Network"):
        nsbox.Popen(["true"], network=str(lan.subnet))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="target"):
        nsbox.Popen(["true"], network=lan, target=os.getpid())
    with nsbox.Network("10.213.13.0/24", private=True) as private:
        with pytest.raises(ValueError, match="user namespace"):
            nsbox.Popen(["true"], network=private, uid_map=[(0, 0, 1)])
    with pytest.raises(TypeError, match="subnet"):
        nsbox.Network(24)  # type: ignore[arg-type]


class InSubnet(int):
    """An address given as its number in the LAN's subnet (which is picked at run time)."""


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    ip=st.one_of(
        st.none(),
        st.text(max_size=20),
        st.integers(),
        st.ip_addresses(v=4).map(str),
        st.integers(0, 255).map(InSubnet),
    )
)
def test_any_ip_runs_or_is_refused_before_forking_and_leaves_nothing(lan: nsbox.Network, ip: Any) -> None:
    if isinstance(ip, InSubnet):
        ip = at(lan, ip)
    try:
        with nsbox.Popen(["true"], network=lan, ip=ip) as box:
            pass
        assert box.returncode == 0 and box.ip is not None and ipaddress.IPv4Address(box.ip) in lan.subnet
    except (ValueError, TypeError) as exc:
        assert str(exc)
    assert lan.boxes == []
    assert wait_until(lambda: ports(lan) == [])  # a box's veth goes with its namespace, soon after it exits


def _any_subnet_property() -> dict[str, int]:
    """The property, in a network namespace of its own (``nsbox.call``): a LAN for any subnet at all (64.0.0.0/2,
    say) would take that traffic from the host, and from its other users, for as long as it exists."""
    outcomes: collections.Counter[str] = collections.Counter()
    settle()  # in this fork, whose copies of the caller's garbage the collector may free at any time

    def links_here() -> set[str]:
        return {name for _, name in socket.if_nameindex()}  # /sys/class/net would show the host's

    @settings(max_examples=200, deadline=None, database=None)
    @given(
        subnet=st.one_of(
            st.text(max_size=24),
            st.builds(lambda a, p: f"{a}/{p}", st.ip_addresses(v=4), st.integers(0, 34)),
            st.builds(
                lambda a, p: str(ipaddress.ip_network(f"{a}/{p}", strict=False)),
                st.ip_addresses(v=4),
                st.integers(8, 30),
            ),
            st.integers(),
        )
    )
    def works_or_is_refused_before_anything_is_made(subnet: Any) -> None:
        before = (*_state(subnet), links_here())
        try:
            network = nsbox.Network(subnet)
        except (ValueError, TypeError) as exc:
            assert str(exc)
            assert (*_state(subnet), links_here()) == before
            outcomes["refused"] += 1
            return
        try:
            assert network.bridge in links_here() and holders(network.gateway) == {network.bridge}
        finally:
            network.close()
        assert (*_state(subnet), links_here()) == before
        outcomes["made"] += 1

    works_or_is_refused_before_anything_is_made()
    return dict(outcomes)


def test_any_subnet_makes_a_network_or_is_refused_before_anything_is_made() -> None:
    outcomes = nsbox.call(_any_subnet_property, net=True, timeout=600)
    assert outcomes.get("made", 0) > 0 and outcomes.get("refused", 0) > 0, outcomes  # both sides were tried
