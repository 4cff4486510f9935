"""What joining an ``nsbox.Network`` costs, side by side with a bare network namespace and with iproute2.

Run it as root with any Python that has nsbox installed::

    python bench/network_bench.py           # about half a minute
    python bench/network_bench.py --quick   # a smoke run

Every case starts ``/bin/true`` in a new network namespace and waits for it:

- ``net=True``: nsbox, loopback only (the baseline: the network namespace itself).
- ``network=lan``: nsbox on a bridge in the host's namespace: a veth pair made over netlink by the parent while
  the child waits, then ``eth0``'s address, link and default route sent by the child before ``execve``.
- ``network=private``: the same on a private network (a user-owned namespace), as an unprivileged caller gets.
- ``ip netns`` + ``ip link``: what people script today, with ``subprocess``: ``ip netns add``, a veth pair into
  it on the same bridge, address, links up, default route, ``ip netns exec … /bin/true``, ``ip netns del``.

The cases are interleaved round by round; a row is the median over rounds of each round's median, with the
spread of round medians, and its ratio to the ``net=True`` row and to the iproute2 row. Not a test: it prints a
Markdown table on stdout. Every interface and namespace it makes is gone when it returns.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as bench  # the interleaving and timing of bench/run.py

import nsbox

TRUE = "/bin/true"
IP_SCRIPT = """
set -e
ns=nsbench$$; v=nsbv$$
ip netns add $ns
trap 'ip netns del $ns 2>/dev/null || true' EXIT
ip link add $v type veth peer name eth0 netns $ns
ip link set $v master {bridge} up
ip -n $ns addr add {address}/{prefix} dev eth0
ip -n $ns link set lo up
ip -n $ns link set eth0 up
ip -n $ns route add default via {gateway}
ip netns exec $ns {true}
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run this as root: the host bridge and iproute2's `ip netns` need CAP_NET_ADMIN")
    if shutil.which("ip") is None:
        sys.exit("iproute2's `ip` is needed: apt-get install iproute2")
    rounds, iterations = (3, 5) if args.quick else (15, 20)

    with nsbox.Network("10.213.250.0/24") as lan, nsbox.Network("10.213.251.0/24", private=True) as private:
        script = IP_SCRIPT.format(
            bridge=lan.bridge, address="10.213.250.200", prefix=24, gateway=lan.gateway, true=TRUE
        )
        tools: dict[str, Callable[[int], list[float]]] = {
            "net=True": bench.timed(lambda: nsbox.run([TRUE], net=True).returncode, "net=True"),
            "network=lan": bench.timed(lambda: nsbox.run([TRUE], network=lan).returncode, "network=lan"),
            "network=private": bench.timed(lambda: nsbox.run([TRUE], network=private).returncode, "private"),
            "ip netns + ip link": bench.subprocess_tool(["sh", "-c", script]),
        }
        print(f"{rounds} rounds x {iterations} spawns, interleaved", file=sys.stderr)
        result = bench.measure(tools, rounds, iterations)
    # Veths go with their namespaces, which the kernel frees a little after each run.
    ours = ("nsv", "nsbv", "nsbr")
    for _ in range(200):
        left = sorted(name for name in os.listdir("/sys/class/net") if name.startswith(ours))
        if not left:
            break
        time.sleep(0.01)
    if result["errors"]:
        print(result["errors"], file=sys.stderr)
        return 1

    medians = {name: sorted(values)[len(values) // 2] for name, values in result["medians"].items()}
    print(f"{platform.node()} · Linux {platform.release()} · {os.cpu_count()} CPUs · {rounds}x{iterations}\n")
    print("| case | median | min-max | x net=True | x iproute2 |")
    print("|---|---|---|---|---|")
    for name, values in result["medians"].items():
        m = medians[name]
        print(
            f"| {name} | {m:.2f} ms | {min(values):.2f}-{max(values):.2f} | {m / medians['net=True']:.2f} "
            f"| {m / medians['ip netns + ip link']:.3f} |"
        )
    if left:
        print(f"\nnote: interfaces still on the host 2 s after the run: {left}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
