"""``nsbox.Zygote.call`` from a caller holding 4 GiB, side by side with ``nsbox.call`` and multiprocessing's fork.

Run it with any Python that has nsbox installed (as root; unprivileged, every box also makes a user namespace)::

    python bench/zygote_bench.py            # about a minute and a half (allocating 4 GiB takes a while)
    python bench/zygote_bench.py --quick    # a smoke run: 256 MiB, few rounds

Two callers, each a process of its own started by this script: a *big* one that allocates and touches 4 GiB
(``bytearray(4096)`` objects, a million of them, as ``bench/run.py``'s case (d)) and a *small* one topped up to
20 MiB. Each runs its cases on request, so that the cases of both are interleaved round by round (the order
rotating, ``bench/run.py``'s ``side_by_side``); a row is the median over rounds of each round's median call
time, with the spread of the round medians. Every case runs ``os.getpid`` in a fresh process with
``pid=True`` where nsbox makes it (so the function is PID 1 of a new PID namespace) and returns its result:

- ``zygote.call(os.getpid)`` on a ``nsbox.Zygote(pid=True)`` the caller started (warm: started before measuring);
- ``nsbox.call(os.getpid, pid=True)``: a fork of the caller;
- ``multiprocessing`` (``get_context("fork")``): a ``Process`` whose target sends the result on a ``Pipe``;
- for reference, ``nsbox.call`` from inside a zygote's box (a fork of the zygote, as big as it is): what the
  zygote pays per call to fork itself, of which the rest of ``zygote.call`` is the travel to and from it.

The targets (issue 19): the zygote call from the 4 GiB caller at most 5 ms, and at most 1.5x the same call
from the 20 MiB caller. Not a test: progress on stderr, a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as bench  # the interleaving and timing of bench/run.py

import nsbox

SMALL_MIB = 20
TARGET_MS = 5.0
TARGET_RATIO = 1.5


# --- in a caller (a worker process) ---------------------------------------------------------------------------


def _mp_target(conn: Connection) -> None:
    conn.send(os.getpid())
    conn.close()


def via_multiprocessing() -> int:
    ctx = multiprocessing.get_context("fork")
    receiver, sender = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_mp_target, args=(sender,))
    process.start()
    sender.close()
    try:
        pid: int = receiver.recv()
    finally:
        receiver.close()
        process.join()
    return pid


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def hold(mib: float) -> list[bytearray]:
    """Allocates (and so touches: bytearray zero-fills) small objects until this process holds ``mib`` MiB."""
    hoard = []
    while rss_mib() < mib:
        hoard.extend(bytearray(4096) for _ in range(256))  # 1 MiB at a time
    return hoard


def fork_times(n: int) -> list[float]:
    """``n`` times ``nsbox.call(os.getpid, pid=True)`` from where this runs (a zygote's box: a fork of the zygote)."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        nsbox.call(os.getpid, pid=True)
        times.append((time.perf_counter_ns() - t0) / 1e6)
    return times


def worker(mib: float) -> int:
    """A caller: holds ``mib`` MiB, then runs the cases the driver asks for, one JSON line each way."""
    hoard = hold(mib)
    # This script runs as __main__, which the zygote does not have: its functions travel under the module's name.
    from zygote_bench import fork_times

    with nsbox.Zygote(pid=True) as zygote:
        cases: dict[str, Callable[[], int]] = {
            "zygote": lambda: zygote.call(os.getpid),
            "call": lambda: nsbox.call(os.getpid, pid=True),
            "multiprocessing": via_multiprocessing,
        }
        print(json.dumps({"rss_mib": rss_mib(), "objects": len(hoard)}), flush=True)
        for line in sys.stdin:
            request = json.loads(line)
            if request["case"] == "inside":
                print(json.dumps(zygote.call(fork_times, request["n"])), flush=True)
                continue
            fn = cases[request["case"]]
            times = []
            for _ in range(request["n"]):
                t0 = time.perf_counter_ns()
                pid = fn()
                t1 = time.perf_counter_ns()
                if request["case"] != "multiprocessing" and pid != 1:
                    raise SystemExit(f"{request['case']} returned PID {pid}, not 1")
                times.append((t1 - t0) / 1e6)
            print(json.dumps(times), flush=True)
    return 0


# --- the driver ---------------------------------------------------------------------------------------------


class Caller:
    """A worker process, and a ``bench.Tool`` per case it runs."""

    def __init__(self, mib: float) -> None:
        argv = [sys.executable, __file__, "--worker", str(mib)]
        self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise bench.BenchError(f"the {mib:g} MiB caller failed to start")
        self.info: dict[str, Any] = json.loads(line)

    def tool(self, case: str) -> bench.Tool:
        def run(n: int) -> list[float]:
            assert self.process.stdin is not None and self.process.stdout is not None
            self.process.stdin.write(json.dumps({"case": case, "n": n}) + "\n")
            self.process.stdin.flush()
            line = self.process.stdout.readline()
            if not line:
                raise bench.BenchError(f"the caller running {case} ended")
            times: list[float] = json.loads(line)
            return times

        return run

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        assert self.process.stdout is not None
        self.process.stdout.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: 256 MiB, 3 rounds")
    parser.add_argument("--gib", type=float, default=4.0, help="what the big caller holds (GiB)")
    parser.add_argument("--worker", type=float, help=argparse.SUPPRESS)  # internal: a caller holding that many MiB
    args = parser.parse_args()
    if args.worker is not None:
        return worker(args.worker)
    gib = 0.25 if args.quick else args.gib
    rounds, iterations = (3, 5) if args.quick else (9, 15)

    print(f"starting the callers: {gib:g} GiB and {SMALL_MIB} MiB", file=sys.stderr)
    t0 = time.perf_counter()
    big = Caller(gib * 1024)
    small = Caller(SMALL_MIB)
    print(f"  ready in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    big_label = f"{gib:g} GiB caller ({big.info['rss_mib'] / 1024:.1f} GiB RSS, {big.info['objects']:,} bytearrays)"
    small_label = f"{SMALL_MIB} MiB caller ({small.info['rss_mib']:.0f} MiB RSS)"
    rows = {
        f"`zygote.call(os.getpid)`, {big_label}": big.tool("zygote"),
        f"`zygote.call(os.getpid)`, {small_label}": small.tool("zygote"),
        f"`nsbox.call(os.getpid, pid=True)`, {big_label}": big.tool("call"),
        f"multiprocessing (fork), {big_label}": big.tool("multiprocessing"),
        f"`nsbox.call(os.getpid, pid=True)`, {small_label}": small.tool("call"),
        "`nsbox.call(os.getpid, pid=True)` from inside a zygote's box (what forking the zygote costs)": small.tool(
            "inside"
        ),
    }
    try:
        measured = bench.side_by_side(rows, rounds, iterations)
    finally:
        big.close()
        small.close()
    if measured is None:
        return 1
    medians = {name: bench.median_of(values) for name, values in measured.items()}
    names = list(rows)
    zygote_big, zygote_small = medians[names[0]], medians[names[1]]
    print(bench.ran_on(rounds, iterations))
    print("| case | median | min-max | x zygote (big caller) |")
    print("|---|---|---|---|")
    for name, values in measured.items():
        m = medians[name]
        print(f"| {name} | {m:.2f} ms | {min(values):.2f}-{max(values):.2f} | {m / zygote_big:.2f} |")
    ratio = zygote_big / zygote_small
    verdict = "PASS" if zygote_big <= TARGET_MS and ratio <= TARGET_RATIO else "MISS"
    print(
        f"\ntarget: zygote.call from the big caller <= {TARGET_MS:g} ms and <= {TARGET_RATIO:g}x the small caller's: "
        f"{verdict} ({zygote_big:.2f} ms, {ratio:.2f}x)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
