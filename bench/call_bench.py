"""nsbox.call latency, side by side with multiprocessing's fork context running the same function.

Run it with any Python that has nsbox installed (as root; unprivileged, every nsbox case also makes a user
namespace)::

    python bench/call_bench.py                 # heaps of 0 and 256 MiB, a minute or so
    python bench/call_bench.py --quick         # a smoke run
    python bench/call_bench.py --heap-mb 0 1024 --calls 50 --rounds 7

Each case calls a small function in a forked copy of this process and gets its result back:

- ``multiprocessing``: ``get_context("fork")``, a ``Process`` whose target sends the result on a ``Pipe``;
  start, receive, join. What people write today to run a function in a fresh process.
- ``os.fork`` floor: ``os.fork()``, the result pickled on a pipe, ``os._exit``, ``waitpid``: the least a
  forked call can cost, without namespaces.
- ``nsbox.call`` with no namespace, and with the namespaces of a few typical boxes.

The cases are interleaved round by round (so that drift hits them alike); a row is the median over rounds of
each round's median call time, with the spread of the round medians. ``ratio`` is the row over the
multiprocessing row of the same heap. The heap is that many MiB of small Python objects, allocated before
measuring: forking copies the page tables, so every forked call costs more in a bigger process (with
``pid=True`` nsbox still copies them once: the PID-1 process shares the first child's memory, see
``src/fork.rs``). Not a test: it prints a Markdown table on stdout and progress on stderr.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import pickle
import platform
import statistics
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

try:
    import nsbox
except ImportError as error:
    sys.exit(f"{error}: run this with a Python that has nsbox installed (`pip install .` in the repository)")


def work(n: int) -> dict[str, int]:
    """The function every case runs: a little computation and a small result."""
    return {"pid": os.getpid(), "sum": sum(range(n))}


def _mp_target(conn: Connection, n: int) -> None:
    conn.send(work(n))
    conn.close()


def via_multiprocessing(n: int) -> dict[str, int]:
    ctx = multiprocessing.get_context("fork")
    receiver, sender = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_mp_target, args=(sender, n))
    process.start()
    sender.close()
    try:
        result: dict[str, int] = receiver.recv()
    finally:
        receiver.close()
        process.join()
    return result


def via_os_fork(n: int) -> dict[str, int]:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            os.write(write_end, pickle.dumps(work(n)))
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    result: dict[str, int] = pickle.loads(data)
    return result


def via_nsbox(**options: Any) -> Callable[[int], dict[str, int]]:
    def run(n: int) -> dict[str, int]:
        return nsbox.call(work, (n,), **options)

    return run


CASES: list[tuple[str, Callable[[int], dict[str, int]]]] = [
    ("multiprocessing (fork context)", via_multiprocessing),
    ("os.fork floor (no namespaces)", via_os_fork),
    ("nsbox.call()", via_nsbox()),
    ("nsbox.call(net=True)", via_nsbox(net=True)),
    ("nsbox.call(hostname=..., net=True, ipc=True)", via_nsbox(hostname="bench", net=True, ipc=True)),
    ("nsbox.call(pid=True)", via_nsbox(pid=True)),
    ("nsbox.call(pid=True, mount_proc=True, net=True)", via_nsbox(pid=True, mount_proc=True, net=True)),
]


def measure(calls: int, rounds: int) -> dict[str, list[float]]:
    """Per case, the median call time (seconds) of each round."""
    medians: dict[str, list[float]] = {name: [] for name, _ in CASES}
    for _, fn in CASES:  # warm up: imports, first-time page faults
        fn(10)
    for r in range(rounds):
        for name, fn in CASES:
            times = []
            for _ in range(calls):
                start = time.perf_counter()
                result = fn(1000)
                times.append(time.perf_counter() - start)
                assert result["sum"] == 499500, result
            medians[name].append(statistics.median(times))
        print(f"  round {r + 1}/{rounds}", file=sys.stderr)
    return medians


def make_heap(mib: int) -> list[Any]:
    """About ``mib`` MiB more resident memory in small objects (tuples of ints and strings), as a big interpreter."""
    heap: list[Any] = []
    start = rss_mib()
    while rss_mib() - start < mib:
        heap.append([(i, str(i)) for i in range(100_000)])
    return heap


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--heap-mb", type=int, nargs="+", default=[0, 256], help="heap sizes to measure with")
    parser.add_argument("--calls", type=int, default=30, help="calls per case per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (the cases are interleaved in each)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 5 calls, 2 rounds, heaps of 0 and 64")
    args = parser.parse_args()
    if args.quick:
        args.calls, args.rounds, args.heap_mb = 5, 2, [0, 64]

    print(
        f"nsbox {nsbox.__version__}, Python {platform.python_version()}, Linux {platform.release()}, "
        f"{os.cpu_count()} CPUs, euid {os.geteuid()}; {args.calls} calls x {args.rounds} rounds per case\n"
    )
    print("| heap | case | median ms | round medians (min-max) ms | ratio to multiprocessing |")
    print("|---|---|---:|---:|---:|")
    for mib in sorted(args.heap_mb):
        heap = make_heap(mib)
        label = f"{mib} MiB (RSS {rss_mib():.0f} MiB)"
        print(f"heap {label}", file=sys.stderr)
        medians = measure(args.calls, args.rounds)
        del heap
        baseline = statistics.median(medians[CASES[0][0]])
        for name, _ in CASES:
            med = statistics.median(medians[name])
            low, high = min(medians[name]), max(medians[name])
            print(f"| {label} | {name} | {med * 1e3:.2f} | {low * 1e3:.2f}-{high * 1e3:.2f} | {med / baseline:.2f} |")
    print(f"\n(children left: {len(multiprocessing.active_children())})")


if __name__ == "__main__":
    main()
