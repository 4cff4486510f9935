"""A network's bridge keeps its MAC address as boxes join and leave, so a box's ARP entry for the gateway stays right.

A Linux bridge made without an address takes the lowest MAC of its ports, and changes it as ports come and go.
A box that had resolved the gateway to the MAC of a port deleted since (another box's veth, which goes with that
box's network namespace) sent into the void until its ARP entry expired, 25 s or more later: the server on the
gateway had accepted its connection and then received nothing (test_network_fork's flake).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import nsbox
from helpers.lan import host_links
from helpers.procs import kill_and_reap, wait_until
from helpers.rootless import Rootless

#: Lower than any MAC the kernel gives a veth (a random one, locally administered: its first byte is 02 or more).
LOWEST_MAC = "02:00:00:00:00:01"

#: A box's client: connects to GATEWAY:PORT and sends "one"; at a line on stdin prints the gateway's MAC as its ARP
#: table has it, sends "two" and waits for the server to close.
CLIENT = """
import socket, sys
gateway, port = sys.argv[1], int(sys.argv[2])
c = socket.create_connection((gateway, port), 60)
c.settimeout(60)
c.sendall(b"one")
sys.stdin.readline()
rows = [row.split() for row in open("/proc/net/arp").read().splitlines()[1:]]
print(next(row[3] for row in rows if row[0] == gateway), flush=True)
c.sendall(b"two")
c.shutdown(socket.SHUT_WR)
c.recv(1)
"""

#: Longer than the packet takes (milliseconds), shorter than a stale ARP entry's way back (15 s reachable at least,
#: then 5 s of delay and 3 s of probes).
DELIVERY = 20.0


def mac_of(interface: str) -> str:
    with open(f"/sys/class/net/{interface}/address") as f:
        return f.read().strip()


def read(conn: socket.socket, size: int) -> bytes:
    """``size`` bytes from ``conn``, or fewer at its end of stream."""
    got = b""
    while len(got) < size:
        chunk = conn.recv(size - len(got))
        if not chunk:
            break
        got += chunk
    return got


def test_a_box_reaches_the_gateway_after_the_box_with_the_lowest_mac_has_left(lan: nsbox.Network) -> None:
    first = nsbox.Popen(["sleep", "60"], network=lan)
    try:
        # The lowest MAC on the bridge: a bridge without an address of its own would take it.
        subprocess.run(["ip", "link", "set", "dev", first.veth, "address", LOWEST_MAC], check=True)
        bridge_mac = mac_of(lan.bridge)
        with socket.create_server((lan.gateway, 0)) as server:
            port = str(server.getsockname()[1])
            box = nsbox.Popen(
                [sys.executable, "-c", CLIENT, lan.gateway, port],
                network=lan,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            try:
                server.settimeout(60)
                conn, _ = server.accept()
                with conn:
                    conn.settimeout(60)
                    assert read(conn, 3) == b"one"  # the box has resolved the gateway's MAC
                    kill_and_reap(first)
                    assert wait_until(lambda: first.veth not in host_links(), timeout=60)
                    assert box.stdin is not None and box.stdout is not None
                    box.stdin.write("\n")
                    box.stdin.flush()
                    in_the_box = box.stdout.readline().strip()  # the gateway's MAC in the box's ARP table
                    conn.settimeout(DELIVERY)
                    try:
                        said = read(conn, 100)  # to the box's end of stream
                    except TimeoutError:
                        said = f"nothing within {DELIVERY} s".encode()
                # Received; the box's ARP entry still names the bridge; the bridge kept its MAC.
                assert (said, in_the_box, mac_of(lan.bridge)) == (b"two", bridge_mac, bridge_mac)
            finally:
                kill_and_reap(box)
    finally:
        kill_and_reap(first)


#: Makes a bridge (ADDRESS: none, or one given at creation) with two ports, the first with the lowest MAC, then
#: deletes that port; prints the bridge's MAC before and after, as JSON.
BRIDGE_WITHOUT_NSBOX = """
import json, subprocess, sys
def ip(*args):
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True).stdout
def mac():
    return json.loads(ip("-j", "link", "show", "dev", "ctl0"))[0]["address"]
ip("link", "add", "ctl0", *(["address", sys.argv[1]] if sys.argv[1] else []), "type", "bridge")
ip("link", "add", "p1", "address", "02:00:00:00:00:01", "type", "veth", "peer", "name", "q1")
ip("link", "add", "p2", "address", "02:00:00:00:00:02", "type", "veth", "peer", "name", "q2")
ip("link", "set", "p1", "master", "ctl0")
ip("link", "set", "p2", "master", "ctl0")
before = mac()
ip("link", "del", "p1")
print(json.dumps([before, mac()]))
"""


def bridge_macs_in_a_box(address: str) -> list[str]:
    done = nsbox.run(
        [sys.executable, "-c", BRIDGE_WITHOUT_NSBOX, address], net=True, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_control_a_bridge_without_an_address_changes_it_when_its_lowest_port_leaves() -> None:
    # In a box's own network namespace: the kernel's rule, shown on a bridge the test makes as nsbox once did.
    assert bridge_macs_in_a_box("") == ["02:00:00:00:00:01", "02:00:00:00:00:02"]
    # Given an address when it is made, as nsbox now makes its bridges, the bridge keeps it.
    assert bridge_macs_in_a_box("02:00:00:00:00:99") == ["02:00:00:00:00:99", "02:00:00:00:00:99"]


def test_rootless_boxes_on_a_private_network_see_one_gateway_mac_as_boxes_come_and_go(rootless: Rootless) -> None:
    # Each box sends a datagram to the gateway (resolving its MAC) and reports its ARP entry; another box stays
    # throughout. The bridge's MAC would otherwise be the lowest of the staying box's and the newcomer's (and the
    # draining ones'), which differ from box to box.
    seen = rootless(
        """
        PROBE = '''
        import socket, sys, time
        gateway = sys.argv[1]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"?", (gateway, 9))
            rows = [row.split() for row in open("/proc/net/arp").read().splitlines()[1:]]
            found = [row[3] for row in rows if row[0] == gateway and row[2] == "0x2"]
            if found:
                print(found[0])
                break
            time.sleep(0.05)
        '''
        import textwrap
        macs = []
        with nsbox.Network("10.213.12.0/24") as lan:
            stays = nsbox.Popen(["sleep", "60"], network=lan)
            try:
                for _ in range(8):
                    done = nsbox.run(
                        [sys.executable, "-c", textwrap.dedent(PROBE), lan.gateway],
                        network=lan, capture_output=True, text=True, timeout=60,
                    )
                    macs.append([done.returncode, done.stdout.strip(), done.stderr[-300:]])
            finally:
                stays.kill()
                stays.wait()
                stays.close_pidfd()
        emit({"private": lan.private, "macs": macs})
        """
    )
    assert seen["private"] is True
    codes = [code for code, _, _ in seen["macs"]]
    macs = [mac for _, mac, _ in seen["macs"]]
    assert codes == [0] * 8 and all(macs), seen["macs"]
    assert len(set(macs)) == 1, macs
