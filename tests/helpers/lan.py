"""A network on the host (a LAN) and its boxes as the host and the boxes see them: links, ports, addresses, HTTP."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import textwrap
import urllib.request
from typing import Any

import pytest

import nsbox
from helpers.procs import kill_and_reap
from helpers.rootless import ROOTLESS_PYTHON

#: An HTTP server that answers every GET with "NAME PID", bound to ADDRESS:PORT; prints "ready" once bound.
SERVER = textwrap.dedent(
    """
    import http.server, os, socketserver, sys
    address, port, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = f"{name} {os.getpid()}".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def log_message(self, *args):
            pass
    class Server(http.server.HTTPServer):
        def server_bind(self):  # without HTTPServer's getfqdn(): no DNS server is reachable from a LAN
            socketserver.TCPServer.server_bind(self)
            self.server_name, self.server_port = self.server_address[:2]
    server = Server((address, port), Handler)
    print("ready", flush=True)
    server.serve_forever()
    """
)


#: Prints, as JSON, the interfaces and routes this process sees and the answer (or error) of each URL.
CLIENT = textwrap.dedent(
    """
    import json, os, sys, urllib.request
    answers = []
    for url in sys.argv[1:]:
        try:
            answers.append(urllib.request.urlopen(url, timeout=5).read().decode())
        except OSError as exc:
            answers.append(f"error: {exc}")
    devs = [line.split(":")[0].strip() for line in open("/proc/net/dev").read().splitlines()[2:]]
    routes = [line.split()[:3] for line in open("/proc/net/route").read().splitlines()[1:]]
    net = os.readlink("/proc/self/ns/net")
    print(json.dumps({"devs": sorted(devs), "routes": routes, "answers": answers, "net": net}))
    """
)


def host_links() -> set[str]:
    """The interfaces of the host's network namespace (ours among others': look for ours by name)."""
    return set(os.listdir("/sys/class/net"))


def ports(lan: nsbox.Network) -> list[str]:
    """The ports of a host LAN's bridge: the veth of each box nsbox made for it (each is made a port at once)."""
    try:
        return sorted(os.listdir(f"/sys/class/net/{lan.bridge}/brif"))
    except FileNotFoundError:
        return []


def at(lan: nsbox.Network, n: int) -> str:
    """The address ``n`` of the LAN's subnet (``at(lan, 1)`` is the gateway)."""
    return str(lan.subnet.network_address + n)


def holders(address: str) -> set[str]:
    """The host's interfaces that hold the IPv4 ``address`` (what a bridge made for a subnet would hold)."""
    out = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, check=True).stdout
    return {fields[1] for fields in map(str.split, out.splitlines()) if fields[3].split("/")[0] == address}


def gateway_of(subnet: Any) -> str | None:
    """The gateway a Network for ``subnet`` would have, if ``subnet`` reads as an IPv4 network at all."""
    try:
        return str(ipaddress.IPv4Network(subnet, strict=False).network_address + 1)
    except (ValueError, TypeError):
        return None


def route_hex(addr: str) -> str:
    """An IPv4 address as /proc/net/route writes it (little-endian hex)."""
    return f"{int.from_bytes(ipaddress.IPv4Address(addr).packed, 'little'):08X}"


def start_server(lan: nsbox.Network, ip: str, name: str, port: int = 8000, **options: Any) -> nsbox.Popen:
    box = nsbox.Popen(
        [sys.executable, "-c", SERVER, ip, str(port), name],
        network=lan,
        ip=ip,
        pid=True,
        stdout=subprocess.PIPE,
        text=True,
        **options,
    )
    assert box.stdout is not None
    line = box.stdout.readline()
    if line != "ready\n":
        kill_and_reap(box)
        pytest.fail(f"the server box printed {line!r}")
    return box


def client(*urls: str, **options: Any) -> dict[str, Any]:
    # The world-readable interpreter: a box whose uid 0 is not host root may not read the suite's.
    r = nsbox.run([ROOTLESS_PYTHON, "-c", CLIENT, *urls], capture_output=True, text=True, timeout=30, **options)
    assert r.returncode == 0, r.stderr
    result: dict[str, Any] = json.loads(r.stdout)
    return result


def fetch_from_host(url: str) -> str:
    try:
        return str(urllib.request.urlopen(url, timeout=3).read().decode())
    except OSError as exc:
        return f"error: {exc}"


#: Addresses that cannot work on a LAN, as a function of its subnet.
BAD_ADDRESSES = {
    "outside": lambda net: str(net.network_address - 1),
    "gateway": lambda net: str(net.network_address + 1),
    "network": lambda net: str(net.network_address),
    "broadcast": lambda net: str(net.broadcast_address),
    "not-an-address": lambda net: str(net.network_address).rsplit(".", 1)[0] + ".300",
}
