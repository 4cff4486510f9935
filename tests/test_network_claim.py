"""A host Network's subnet is checked and claimed in one step, across threads and processes (as root).

Two ``Network``s with overlapping subnets made at once must not both succeed: the second bridge would hold
the same gateway, and the host's connection to one box would be answered by the other's. The tests pick
free subnets at run time (another copy of the suite may be running) and look only at what they made.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import textwrap
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

import nsbox
from helpers.nets import free_subnet
from helpers.procs import kill_and_reap, open_fds, wait_until

CLAIM_NAME = "@nsbox-network-claim"


def fork_quietly() -> int:
    """``os.fork()`` in a process with threads, without Python 3.12's DeprecationWarning about it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "This process .* is multi-threaded", DeprecationWarning)
        return os.fork()


def routes_within(*subnets: ipaddress.IPv4Network) -> list[tuple[ipaddress.IPv4Network, str]]:
    """The host's main-table routes that overlap ``subnets``, with their device, as iproute2 shows them."""
    shown = json.loads(
        subprocess.run(
            ["ip", "-j", "-4", "route", "show", "table", "main"], capture_output=True, text=True, check=True
        ).stdout
    )
    found = []
    for route in shown:
        if route["dst"] == "default":
            continue
        dst = ipaddress.IPv4Network(route["dst"])
        if any(dst.overlaps(s) for s in subnets):
            found.append((dst, route["dev"]))
    return sorted(found)


def our_fds() -> dict[int, str]:
    """This process's fds, but for the helper program's memfd, which nsbox makes once and keeps."""
    return {fd: what for fd, what in open_fds().items() if "nsbox-helper" not in what}


def claim_is_free() -> bool:
    """Whether no socket of this network namespace holds nsbox's claim name (``/proc/net/unix``)."""
    with open("/proc/net/unix") as unix:
        return all(line.split()[-1] != CLAIM_NAME for line in unix.read().splitlines()[1:] if len(line.split()) > 7)


# ---------------------------------------------------------------------------------------------------------------
# Many claimants at once


#: Tries one Network (its bridge name recorded first), prints the outcome as JSON, holds a winner until stdin
#: closes. Started before the race; "go" on stdin starts it.
CLAIMANT = textwrap.dedent(
    """
    import json, secrets, sys, types
    import nsbox, nsbox._network
    names = []
    def token_hex(n):
        names.append(secrets.token_hex(n))
        return names[-1]
    nsbox._network.secrets = types.SimpleNamespace(token_hex=token_hex)
    print("ready", flush=True)
    sys.stdin.readline()
    try:
        lan = nsbox.Network(sys.argv[1])
    except ValueError as exc:
        tried = ["nsbr" + name for name in names]
        print(json.dumps({"subnet": sys.argv[1], "won": False, "error": str(exc), "tried": tried}))
        sys.exit(0)
    print(json.dumps({"subnet": sys.argv[1], "won": True, "bridge": lan.bridge}), flush=True)
    sys.stdin.read()
    lan.close()
    """
)


class Recorder:
    """Stands in for ``secrets`` in ``nsbox._network``: records every bridge name a Network tries."""

    def __init__(self) -> None:
        import secrets

        self._secrets = secrets
        self.names: list[str] = []
        self._lock = threading.Lock()

    def token_hex(self, nbytes: int) -> str:
        token = self._secrets.token_hex(nbytes)
        with self._lock:
            self.names.append(f"nsbr{token}")
        return token


@pytest.fixture
def claimants() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    try:
        yield started
    finally:
        for process in started:
            if process.stdin is not None and not process.stdin.closed:
                process.stdin.close()
        for process in started:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
            kill_and_reap(process)


def test_of_networks_with_overlapping_subnets_made_at_once_exactly_one_per_set_wins(
    claimants: list[subprocess.Popen[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two sets, each pairwise overlapping: a /23, its lower /24, and that /24's lower /25.
    sets = []
    for _ in range(2):
        wide = free_subnet(23)
        while sets and wide.overlaps(sets[0][0]):
            wide = free_subnet(23)
        low = next(wide.subnets(new_prefix=24))
        sets.append((wide, low, next(low.subnets(new_prefix=25))))
    per_set = [0, 1, 1, 1, 1, 2, 2]  # index into a set, for each thread; processes take one of each
    thread_subnets = [str(s[i]) for s in sets for i in per_set]
    process_subnets = [str(s[i]) for s in sets for i in range(3)]

    recorder = Recorder()
    monkeypatch.setattr(nsbox._network, "secrets", recorder)
    fds = our_fds()
    for subnet in process_subnets:
        process = subprocess.Popen(
            [sys.executable, "-c", CLAIMANT, subnet], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        claimants.append(process)
    for process in claimants:
        assert process.stdout is not None and process.stdout.readline() == "ready\n"

    go = threading.Event()
    outcomes: list[dict[str, Any]] = []
    won: list[nsbox.Network] = []

    def claim(subnet: str) -> None:
        go.wait()
        try:
            lan = nsbox.Network(subnet)
        except ValueError as exc:
            outcomes.append({"subnet": subnet, "won": False, "error": str(exc)})
        else:
            won.append(lan)
            outcomes.append({"subnet": subnet, "won": True, "bridge": lan.bridge})

    threads = [threading.Thread(target=claim, args=(subnet,)) for subnet in thread_subnets]
    for thread in threads:
        thread.start()
    try:
        for process in claimants:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        go.set()
        for thread in threads:
            thread.join(timeout=60)
            assert not thread.is_alive()
        for process in claimants:
            assert process.stdout is not None
            outcomes.append(json.loads(process.stdout.readline()))
        assert len(outcomes) == len(thread_subnets) + len(process_subnets)

        for members in sets:
            mine = [o for o in outcomes if ipaddress.IPv4Network(o["subnet"]) in members]
            winners = [o for o in mine if o["won"]]
            assert len(winners) == 1, f"{len(winners)} Networks got overlapping subnets: {winners}"
            winner = ipaddress.IPv4Network(winners[0]["subnet"])
            # Every other one was told which route is in the way: the winner's bridge's.
            for loser in (o for o in mine if not o["won"]):
                assert loser["error"] == (
                    f"subnet '{loser['subnet']}' overlaps the host's route to {winner}: choose another"
                ), loser
            # The host's side: exactly one route in the set, on the winner's bridge, which has the gateway.
            assert routes_within(*members) == [(winner, winners[0]["bridge"])]
            shown = subprocess.run(
                ["ip", "-4", "-o", "addr", "show", "dev", winners[0]["bridge"]], capture_output=True, text=True
            )
            assert f"inet {winner.network_address + 1}/{winner.prefixlen} " in shown.stdout
        # Nothing of the losers' is there: no bridge of any name they tried.
        tried = {name for o in outcomes for name in o.get("tried", [])}
        tried |= set(recorder.names) - {lan.bridge for lan in won}
        assert not tried & set(os.listdir("/sys/class/net"))
    finally:
        go.set()
        for lan in won:
            lan.close()
        for process in claimants:
            assert process.stdin is not None
            process.stdin.close()
        for process in claimants:
            assert process.wait(timeout=30) == 0
            assert process.stdout is not None
            process.stdout.close()
    # The winners closed: nothing stays, here or in the processes' namespace (ours).
    assert routes_within(*(s[0] for s in sets)) == []
    assert not set(recorder.names) & set(os.listdir("/sys/class/net"))
    assert our_fds() == fds


def test_a_child_forked_while_a_network_is_made_does_not_keep_the_claim() -> None:
    subnet = str(free_subnet())
    done = threading.Event()
    failures: list[BaseException] = []

    def make_networks() -> None:
        try:
            for _ in range(40):
                nsbox.Network(subnet).close()
        except BaseException as exc:
            failures.append(exc)
        finally:
            done.set()

    children: list[int] = []
    release_r, release_w = os.pipe()
    thread = threading.Thread(target=make_networks)
    thread.start()
    try:
        while not done.is_set() and len(children) < 200:
            pid = fork_quietly()
            if pid == 0:  # lives on, as a multiprocessing worker would, until the test lets it go
                try:
                    os.close(release_w)
                    os.read(release_r, 1)
                finally:
                    os._exit(0)
            children.append(pid)
        thread.join(timeout=60)
        assert not thread.is_alive() and failures == []
        # With every child still alive, the claim is free again (another nsbox user may take it a moment).
        assert wait_until(claim_is_free, timeout=10)
        with nsbox.Network(subnet) as lan:
            assert lan.bridge in os.listdir("/sys/class/net")
    finally:
        os.close(release_w)
        os.close(release_r)
        for pid in children:
            os.waitpid(pid, 0)
    assert len(children) > 0


#: In a box of its own network namespace: takes the claim's name, says so, and on "go" makes a Network (in the
#: box's namespace) from a thread; reports whether that thread waited, then lets the claim go.
SQUATTER = textwrap.dedent(
    """
    import json, socket, sys, threading, time
    import nsbox
    squat = socket.socket(socket.AF_UNIX)
    squat.bind("\\0nsbox-network-claim")
    squat.listen(1)
    print("squatting", flush=True)
    sys.stdin.readline()
    made = []
    maker = threading.Thread(target=lambda: made.append(nsbox.Network(sys.argv[1], private=False)))
    maker.start()
    time.sleep(0.3)
    waited = maker.is_alive()
    squat.close()
    maker.join(timeout=30)
    print(json.dumps({"waited": waited, "made": [lan.bridge for lan in made], "routes": nsbox._nsbox.ipv4_routes()}))
    for lan in made:
        lan.close()
    """
)


def test_the_claim_is_per_network_namespace_and_a_claimant_waits_for_its_holder() -> None:
    subnet = free_subnet()
    box = nsbox.Popen(
        [sys.executable, "-c", SQUATTER, str(subnet)],
        net=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert box.stdin is not None and box.stdout is not None
        assert box.stdout.readline() == "squatting\n"
        # The box's namespace has a claim of its own: the host's is free, and a Network here does not wait.
        assert wait_until(claim_is_free, timeout=10)
        with nsbox.Network(subnet) as lan:
            assert routes_within(subnet) == [(subnet, lan.bridge)]
        box.stdin.write("go\n")
        box.stdin.close()
        seen = json.loads(box.stdout.readline())
        assert box.wait(timeout=30) == 0
    finally:
        kill_and_reap(box)
    # In the box, the Network waited for the squatter, then got the subnet there.
    assert seen["waited"] is True
    assert len(seen["made"]) == 1
    assert [str(subnet.network_address), subnet.prefixlen] in seen["routes"]


def test_the_overlap_error_is_raised_before_anything_is_made(monkeypatch: pytest.MonkeyPatch) -> None:
    wide = free_subnet(22)
    subnet = next(wide.subnets(new_prefix=24))
    recorder = Recorder()
    monkeypatch.setattr(nsbox._network, "secrets", recorder)
    fds = our_fds()
    with nsbox.Network(subnet) as lan:
        for overlapping in (subnet, next(subnet.subnets(new_prefix=26)), wide):
            with pytest.raises(ValueError) as info:
                nsbox.Network(overlapping)
            assert str(info.value) == f"subnet '{overlapping}' overlaps the host's route to {subnet}: choose another"
        assert recorder.names[0] == lan.bridge
        assert not set(recorder.names[1:]) & set(os.listdir("/sys/class/net"))
    assert our_fds() == fds
