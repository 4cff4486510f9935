"""What a warm ``nsbox.Pool`` saves, side by side with the same box made without one.

Run it with any Python that has nsbox installed (as root; as another user the boxes get a user namespace too)::

    python bench/pool_bench.py           # about a minute
    python bench/pool_bench.py --quick   # a smoke run

Every case runs ``/bin/true`` with ``pid=True, mount_proc=True, net=True, uts=True, ipc=True`` and waits for it:

- Steady rate: one spawn every ``--pace`` ms (the pause is not timed), a rate at which the pool refills between
  spawns. ``nsbox.run`` against ``pool.run`` (``Pool(size=8)`` with the same options), interleaved round by
  round; a row is the median of each round's median, with the spread of round medians. Also a box with no
  network, IPC or UTS namespace at all (``pid`` and ``mount_proc`` only): what a pooled box can at best reach.
- On a Network (``--network``, or alone with ``--network-only``): ``/bin/true`` with ``network=lan`` (a host bridge as
  root, a private network otherwise), ``nsbox.run`` against ``pool.run`` from ``Pool(size=8, network=lan)``, paced
  and interleaved the same way; the pooled box joins a network namespace already on the bridge, ``eth0`` configured.
  Beside them, a pool without a Network (``net=True``: ``lo`` only) and a box with no network namespace at all:
  what a pooled box on a Network can at best reach.
- Saturation: spawns back to back, one thread and two, for each way: spawns per second, and how many of the
  pooled boxes found the pool empty (they make their own namespaces, as without a pool). The pool moves the
  kernel's work off the caller's path, onto the machine's other CPUs; it does not remove it, so at saturation
  the gain is what those CPUs had to spare.

Not a test: it prints Markdown on stdout. The pools are closed when it returns.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as bench  # the interleaving, medians and machine line of bench/run.py

import nsbox

TRUE = "/bin/true"
OPTIONS = {"pid": True, "mount_proc": True, "net": True, "uts": True, "ipc": True}


def paced(spawn: Callable[[], int], pace_ms: float, what: str) -> bench.Tool:
    """A tool that times each spawn and then rests ``pace_ms`` (untimed), so that a pool can refill."""
    timed = bench.timed(spawn, what)

    def run(n: int) -> list[float]:
        times = []
        for _ in range(n):
            times += timed(1)
            time.sleep(pace_ms / 1000)
        return times

    return run


def saturation(spawn: Callable[[], int], threads: int, seconds: float, rounds: int) -> float:
    """The median over ``rounds`` of back-to-back spawns per second with ``threads`` threads."""
    rates = []
    for _ in range(rounds):
        per_thread = max(1, int(seconds * 400 / threads))
        rates.append(bench.throughput(spawn, threads, per_thread))
    return statistics.median(rates)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    parser.add_argument("--pace", type=float, default=10.0, help="ms between spawns at the steady rate (10)")
    parser.add_argument("--network", action="store_true", help="also a box on a Network, pooled and not")
    parser.add_argument("--network-only", action="store_true", help="only the Network cases")
    parser.add_argument("--with-pid", action="store_true", help="the Network cases with pid=True, mount_proc=True")
    parser.add_argument("--subnet", default="10.213.252.0/24", help="the Network's subnet (10.213.252.0/24)")
    args = parser.parse_args()
    rounds, iterations = (3, 5) if args.quick else (15, 20)
    sat_rounds, sat_seconds = (1, 0.3) if args.quick else (5, 1.0)
    if args.network or args.network_only:
        on_network(args, rounds, iterations)
        if args.network_only:
            return 0

    with nsbox.Pool(size=8, **OPTIONS) as pool:
        tools = {
            "nsbox.run": paced(lambda: nsbox.run([TRUE], **OPTIONS).returncode, args.pace, "run"),
            "pool.run": paced(lambda: pool.run([TRUE]).returncode, args.pace, "pool.run"),
            "nsbox.run, pid + mount_proc only": paced(
                lambda: nsbox.run([TRUE], pid=True, mount_proc=True).returncode, args.pace, "run"
            ),
        }
        medians = bench.side_by_side(tools, rounds, iterations)
        steady = pool.stats()
        if medians is None:
            return 1
        bench.settle("saturation", notes := [])
        sat: dict[str, dict[int, float]] = {}
        missed: dict[int, tuple[int, int]] = {}
        for threads in (1, 2):
            before = pool.stats()
            sat.setdefault("pool.run", {})[threads] = saturation(
                lambda: pool.run([TRUE]).returncode, threads, sat_seconds, sat_rounds
            )
            after = pool.stats()
            missed[threads] = (after.missed - before.missed, after.taken - before.taken + after.missed - before.missed)
            sat.setdefault("nsbox.run", {})[threads] = saturation(
                lambda: nsbox.run([TRUE], **OPTIONS).returncode,
                threads,
                sat_seconds,
                sat_rounds,
            )

    m = {name: bench.median_of(values) for name, values in medians.items()}
    base = m["nsbox.run"]
    print(bench.ran_on(rounds, iterations))
    print(f"Steady rate: one spawn every {args.pace:g} ms (untimed), `/bin/true` with {', '.join(OPTIONS)}.\n")
    print("| case | median | min-max | x nsbox.run |")
    print("|---|---|---|---|")
    for name, values in medians.items():
        print(f"| `{name}` | {m[name]:.3f} ms | {min(values):.3f}-{max(values):.3f} | {m[name] / base:.2f} |")
    print(f"\nPool at the steady rate: {steady.taken} boxes took a set, {steady.missed} found it empty.\n")
    print("Saturation (back to back; the pool refills on the other CPUs meanwhile):\n")
    print("| threads | `nsbox.run` | `pool.run` | x | pooled boxes that found the pool empty |")
    print("|---|---|---|---|---|")
    for threads in (1, 2):
        plain, pooled = sat["nsbox.run"][threads], sat["pool.run"][threads]
        empty, total = missed[threads]
        print(f"| {threads} | {plain:,.0f}/s | {pooled:,.0f}/s | {pooled / plain:.2f} | {empty} of {total} |")
    for note in notes:
        print(f"\nnote: {note}")
    return 0


def on_network(args: argparse.Namespace, rounds: int, iterations: int) -> None:
    """A box on a Network, with and without a pool of sets wired to it, paced and interleaved."""
    box: dict[str, bool] = {"pid": True, "mount_proc": True} if args.with_pid else {}
    with (
        nsbox.Network(args.subnet) as lan,
        nsbox.Pool(size=8, network=lan, **box) as pool,
        nsbox.Pool(size=8, net=True, **box) as unwired,
    ):
        tools = {
            "nsbox.run(network=lan)": paced(lambda: nsbox.run([TRUE], network=lan, **box).returncode, args.pace, "run"),
            "pool.run (Pool(network=lan))": paced(lambda: pool.run([TRUE]).returncode, args.pace, "pool.run"),
            "pool.run (Pool(net=True), no Network)": paced(
                lambda: unwired.run([TRUE]).returncode, args.pace, "pool.run"
            ),
            "nsbox.run, no network namespace": paced(lambda: nsbox.run([TRUE], **box).returncode, args.pace, "run"),
        }
        medians = bench.side_by_side(tools, rounds, iterations)
        stats = pool.stats()
        where = "a private network" if lan.private else "a host bridge"
    if medians is None:
        return
    m = {name: bench.median_of(values) for name, values in medians.items()}
    base = m["nsbox.run(network=lan)"]
    print(bench.ran_on(rounds, iterations))
    shape = f" with {', '.join(box)}" if box else ""
    print(f"On a Network ({where}): one spawn of `/bin/true`{shape} every {args.pace:g} ms (untimed).\n")
    print("| case | median | min-max | x nsbox.run(network=lan) |")
    print("|---|---|---|---|")
    for name, values in medians.items():
        print(f"| `{name}` | {m[name]:.3f} ms | {min(values):.3f}-{max(values):.3f} | {m[name] / base:.2f} |")
    print(f"\nPool on the network: {stats.taken} boxes took a set, {stats.missed} found it empty.\n")


if __name__ == "__main__":
    sys.exit(main())
