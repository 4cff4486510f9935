"""Boxes from an event loop: ``nsbox.asyncio.run`` side by side with ``nsbox.run`` in the loop's executor.

Run it as root with any Python that has nsbox installed::

    python bench/asyncio_bench.py            # 10 rounds x 100 boxes per case: 1,000 each, a minute or so
    python bench/asyncio_bench.py --quick    # a smoke run

Every case starts ``/bin/true`` and waits for it, from one loop (made once, kept for the whole run):

- ``nsbox.asyncio.run``: ``await nsbox.asyncio.run(["true"], pid=True)``, one after the other; the loop waits
  on the box's pidfd.
- ``executor``: ``await loop.run_in_executor(None, functools.partial(nsbox.run, ["true"], pid=True))``: what one
  writes without ``nsbox.asyncio`` (a pool thread waits for each box).
- ``asyncio, no box``: ``await (await asyncio.create_subprocess_exec("true")).wait()``: asyncio's own subprocess,
  without namespaces (on 3.11 its default child watcher starts a thread per process).
- the first two again ``gathered``, 10 at a time (``asyncio.gather``): a row is the batch's time over 10.
- ``on uvloop`` (if uvloop is installed): the first case on a uvloop loop.

The cases are interleaved round by round (``bench/run.py``'s ``side_by_side``); a row is the median over rounds
of each round's median time per box, with the spread of round medians, and its ratio to ``executor``. Not a
test: it prints a Markdown table on stdout and progress on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as bench  # the interleaving, medians and machine line of bench/run.py

import nsbox
import nsbox.asyncio

try:
    import uvloop
except ImportError:
    uvloop = None  # type: ignore[assignment]

TRUE = ["true"]
BATCH = 10


async def box() -> int:
    return (await nsbox.asyncio.run(TRUE, pid=True)).returncode


async def executor() -> int:
    loop = asyncio.get_running_loop()
    return (await loop.run_in_executor(None, functools.partial(nsbox.run, TRUE, pid=True))).returncode


async def plain() -> int:
    return await (await asyncio.create_subprocess_exec(*TRUE)).wait()


async def one_by_one(start: Callable[[], Awaitable[int]], n: int) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        status = await start()
        times.append((time.perf_counter_ns() - t0) / 1e6)
        if status != 0:
            raise bench.BenchError(f"exit status {status}")
    return times


async def gathered(start: Callable[[], Awaitable[int]], n: int) -> list[float]:
    times = []
    for _ in range(max(1, n // BATCH)):
        t0 = time.perf_counter_ns()
        statuses = await asyncio.gather(*(start() for _ in range(BATCH)))
        times.append((time.perf_counter_ns() - t0) / 1e6 / BATCH)
        if any(statuses):
            raise bench.BenchError(f"exit statuses {statuses}")
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: 3 rounds x 20 boxes")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=100, help="boxes per case per round")
    args = parser.parse_args()
    rounds, iterations = (3, 20) if args.quick else (args.rounds, args.iterations)

    runner = asyncio.Runner()
    runners = {"asyncio": runner}
    if uvloop is not None:
        runners["uvloop"] = asyncio.Runner(loop_factory=uvloop.new_event_loop)

    def on(kind: str, measure: Callable[[int], Awaitable[list[float]]]) -> bench.Tool:
        return lambda n: runners[kind].run(measure(n))  # type: ignore[arg-type]

    tools: dict[str, bench.Tool] = {
        "`nsbox.asyncio.run`": on("asyncio", functools.partial(one_by_one, box)),
        "executor (`run_in_executor(nsbox.run)`)": on("asyncio", functools.partial(one_by_one, executor)),
        "`asyncio.create_subprocess_exec`, no box": on("asyncio", functools.partial(one_by_one, plain)),
        f"`nsbox.asyncio.run`, gathered {BATCH} at a time": on("asyncio", functools.partial(gathered, box)),
        f"executor, gathered {BATCH} at a time": on("asyncio", functools.partial(gathered, executor)),
    }
    if uvloop is not None:
        tools["`nsbox.asyncio.run` on uvloop"] = on("uvloop", functools.partial(one_by_one, box))
    try:
        medians = bench.side_by_side(tools, rounds, iterations)
    finally:
        for each in runners.values():
            each.close()
    if medians is None:
        return 1
    base = bench.median_of(medians["executor (`run_in_executor(nsbox.run)`)"])
    base_gathered = bench.median_of(medians[f"executor, gathered {BATCH} at a time"])
    print(bench.ran_on(rounds, iterations))
    print(f"Python {sys.version.split()[0]}, nsbox {nsbox.__version__}, uvloop {getattr(uvloop, '__version__', '-')}\n")
    print("| case | median per box | min-max | x executor |")
    print("|---|---|---|---|")
    for name, values in medians.items():
        against = base_gathered if "gathered" in name else base
        print(
            f"| {name} | {bench.median_of(values):.2f} ms | {min(values):.2f}-{max(values):.2f} | "
            f"{bench.median_of(values) / against:.2f} |"
        )
    print(f"\n(`x executor`: over the executor row of the same kind, one by one or gathered {BATCH} at a time)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
