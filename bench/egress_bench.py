"""One TCP stream out of a box to a server on the host, side by side with the same stream host to host.

Run it as root with any Python that has nsbox installed (``slirp4netns`` and ``passt`` from apt)::

    python bench/egress_bench.py           # about a minute
    python bench/egress_bench.py --quick   # a smoke run

The server runs in this process, on the host's loopback (and, for the veth case, on a bridge's address). The
client, the same code everywhere, sends ``MiB`` mebibytes over one connection (throughput), then makes
``ROUND_TRIPS`` one-byte round trips over another (latency, median). Cases:

- ``host → host``: the client on the host, to 127.0.0.1 (the baseline).
- ``slirp4netns`` (root) and ``slirp4netns`` (rootless, uid 65534): nsbox's ``egress=True``; the box reaches the
  host's loopback at 10.0.2.2.
- ``pasta`` (rootless: Debian's 2023 build refuses to run as root): ``pasta --config-net``, the box reaching the
  host's loopback at the gateway pasta copies from the host.
- ``veth`` (root): a box on an ``nsbox.Network`` bridge in the host's namespace, to the bridge's address: what
  an in-process engine as root (veth + nftables masquerade) would cost, minus the NAT rule.

Each case runs ``--rounds`` times, interleaved; a row is the median, with its ratio to host → host. Not a test:
it prints a Markdown table on stdout. Every box and engine it starts is gone when it returns.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
from collections.abc import Callable

import nsbox

#: The client: ``host port mib trips``; prints {"mbps": ..., "rtt_us": ...}.
CLIENT = r"""
import json, socket, sys, time
host, port, mib, trips = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
chunk = b"x" * 65536
with socket.create_connection((host, port)) as c:
    c.sendall(b"B")
    start = time.perf_counter()
    for _ in range(mib * 16):
        c.sendall(chunk)
    c.shutdown(socket.SHUT_WR)
    assert c.recv(2) == b"ok"
    mbps = mib * 1048576 / (time.perf_counter() - start) / 1e6
with socket.create_connection((host, port)) as c:
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    c.sendall(b"P")
    times = []
    for _ in range(trips):
        t = time.perf_counter()
        c.sendall(b"p")
        c.recv(1)
        times.append(time.perf_counter() - t)
times.sort()
print(json.dumps({"mbps": mbps, "rtt_us": times[len(times) // 2] * 1e6}))
"""

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def serve(sock: socket.socket) -> None:
    while True:
        try:
            conn, _ = sock.accept()
        except OSError:
            return
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


def handle(conn: socket.socket) -> None:
    with conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        mode = conn.recv(1)
        if mode == b"B":
            while conn.recv(1 << 20):
                pass
            conn.sendall(b"ok")
        elif mode == b"P":
            while data := conn.recv(1):
                conn.sendall(data)


def listen(address: str) -> socket.socket:
    sock = socket.create_server((address, 0))
    threading.Thread(target=serve, args=(sock,), daemon=True).start()
    return sock


def parse(out: str) -> dict[str, float]:
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def pasta_gateway() -> str:
    """The host's default gateway: what pasta gives the box as its gateway, mapped to the host's loopback."""
    with open("/proc/net/route") as routes:
        for line in routes.readlines()[1:]:
            fields = line.split()
            if fields[1] == "00000000":
                return socket.inet_ntoa(int(fields[2], 16).to_bytes(4, "little"))
    raise RuntimeError("no default route: pasta has no gateway to map to the host")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run it as root (the rootless cases drop to uid 65534 themselves)")
    mib, trips, rounds = (16, 200, 1) if args.quick else (256, 2000, args.rounds)
    loop = listen("127.0.0.1")
    port = loop.getsockname()[1]
    py, rootless_py = sys.executable, "/usr/bin/python3"
    client = [CLIENT, str(mib), str(trips)]

    def host() -> dict[str, float]:
        return parse(
            subprocess.run(
                [py, "-c", CLIENT, "127.0.0.1", str(port), *client[1:]], capture_output=True, text=True, check=True
            ).stdout
        )

    def slirp() -> dict[str, float]:
        r = nsbox.run(
            [py, "-c", CLIENT, "10.0.2.2", str(port), *client[1:]],
            egress=True,
            capture_output=True,
            text=True,
            check=True,
        )
        return parse(r.stdout)

    driver = f"""
import nsbox, sys
r = nsbox.run(["{rootless_py}", "-c", sys.argv[1], "10.0.2.2", "{port}", *sys.argv[2:]], egress=True,
              capture_output=True, text=True, check=True)
print(r.stdout)
"""
    nsbox_dir = os.path.dirname(os.path.dirname(nsbox.__file__))

    def slirp_rootless() -> dict[str, float]:
        env = {"PATH": os.environ["PATH"], "PYTHONPATH": nsbox_dir, "HOME": "/tmp"}
        r = subprocess.run(
            [*NOBODY, rootless_py, "-c", driver, *client],
            capture_output=True,
            text=True,
            env=env,
            check=True,
            cwd="/tmp",
        )
        return parse(r.stdout)

    def pasta() -> dict[str, float]:
        cmd = [
            *NOBODY,
            "env",
            "HOME=/tmp",
            "pasta",
            "--config-net",
            "--quiet",
            "--",
            rootless_py,
            "-c",
            CLIENT,
            pasta_gateway(),
            str(port),
            *client[1:],
        ]
        return parse(subprocess.run(cmd, capture_output=True, text=True, check=True, cwd="/tmp").stdout)

    lan = nsbox.Network("10.213.250.0/24")
    bridge = listen(lan.gateway)

    def veth() -> dict[str, float]:
        r = nsbox.run(
            [py, "-c", CLIENT, lan.gateway, str(bridge.getsockname()[1]), *client[1:]],
            network=lan,
            capture_output=True,
            text=True,
            check=True,
        )
        return parse(r.stdout)

    cases: dict[str, Callable[[], dict[str, float]]] = {"host → host (loopback)": host, "slirp4netns, root": slirp}
    cases["slirp4netns, rootless"] = slirp_rootless
    if shutil.which("pasta"):
        cases["pasta, rootless"] = pasta
    cases["veth to the host (root)"] = veth
    seen: dict[str, list[dict[str, float]]] = {name: [] for name in cases}
    try:
        for n in range(rounds):
            for name, case in cases.items():
                print(f"round {n + 1}/{rounds}: {name}", file=sys.stderr)
                seen[name].append(case())
    finally:
        lan.close()
        loop.close()
        bridge.close()
    base = {k: statistics.median(r[k] for r in seen["host → host (loopback)"]) for k in ("mbps", "rtt_us")}
    print(f"One TCP stream ({mib} MiB) and {trips} one-byte round trips, median of {rounds} rounds:\n")
    print("| path | throughput | x host→host | round trip | x host→host |")
    print("|---|---|---|---|---|")
    for name, results in seen.items():
        mbps = statistics.median(r["mbps"] for r in results)
        rtt = statistics.median(r["rtt_us"] for r in results)
        print(f"| {name} | {mbps:,.0f} MB/s | {mbps / base['mbps']:.2f} | {rtt:.0f} µs | {rtt / base['rtt_us']:.1f} |")


if __name__ == "__main__":
    main()
