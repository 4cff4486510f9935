"""MAC addresses on a network stay what the ARP tables of the host and the boxes say as boxes come and go.

- A Linux bridge made without an address takes the lowest MAC of its ports, and changes it as ports come and go.
  A box that had resolved the gateway to the MAC of a port deleted since (another box's veth, which goes with that
  box's network namespace) sent into the void until its ARP entry expired, 25 s or more later: the server on the
  gateway had accepted its connection and then received nothing (test_network_fork's flake). nsbox gives its
  bridges an address of their own.
- A box that gets the address of one gone before gets its MAC too (02:6e and the address): with a random one, the
  host's ARP entry for the address, left by the previous box, sent the host's packets nowhere for as long.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import subprocess
import sys

import nsbox
from helpers.lan import at, host_links
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


#: A box's server on ADDRESS:7000 that answers NAME: prints its eth0's MAC (after setting it to MAC, if given).
SERVER = """
import json, socket, subprocess, sys
address, name, mac = sys.argv[1:4]
if mac:
    subprocess.run(["ip", "link", "set", "dev", "eth0", "address", mac], check=True)
link = subprocess.run(["ip", "-j", "link", "show", "dev", "eth0"], check=True, capture_output=True, text=True)
server = socket.create_server((address, 7000))
print(json.loads(link.stdout)[0]["address"], flush=True)
conn, _ = server.accept()
conn.sendall(name.encode())
conn.close()
"""


def host_arp_entry(address: str, bridge: str) -> str | None:
    shown = subprocess.run(["ip", "-j", "neigh", "show", address, "dev", bridge], capture_output=True, text=True)
    entries = json.loads(shown.stdout or "[]")
    return entries[0].get("lladdr") if entries else None


def two_boxes_at_one_address(
    lan: nsbox.Network, second_mac: str, deadline: float
) -> tuple[list[bytes], list[str | None]]:
    """Two boxes one after the other at one address, each answering the host: what the host read from each, and
    (for each) the MAC of its eth0 as it saw it and as the host's ARP table had it after the exchange."""
    address = at(lan, 2)
    said: list[bytes] = []
    macs: list[str | None] = []
    for name, mac in [("first", ""), ("second", second_mac)]:
        box = nsbox.Popen(
            [sys.executable, "-c", SERVER, address, name, mac],
            network=lan,
            ip=address,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert box.stdout is not None
            macs.append(box.stdout.readline().strip())
            try:
                with socket.create_connection((address, 7000), deadline) as conn:
                    conn.settimeout(deadline)
                    said.append(read(conn, 100))
            except TimeoutError:
                said.append(f"nothing within {deadline} s".encode())
            macs.append(host_arp_entry(address, lan.bridge))
        finally:
            kill_and_reap(box)
    return said, macs


def test_the_host_reaches_a_box_at_the_address_of_one_gone_before(lan: nsbox.Network) -> None:
    said, macs = two_boxes_at_one_address(lan, "", DELIVERY)
    mac = "02:6e:" + ":".join(f"{byte:02x}" for byte in ipaddress.IPv4Address(at(lan, 2)).packed)
    # Each box's eth0 (inside) and the host's ARP entry for it (host) are the address's own MAC.
    assert (said, macs) == ([b"first", b"second"], [mac] * 4)
