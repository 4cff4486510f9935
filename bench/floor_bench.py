"""Plain ``nsbox.run(["/bin/true"], pid=True, mount_proc=True)`` side by side with the C floor (issue 19's target).

Run it as root with any Python that has nsbox installed::

    python bench/floor_bench.py           # 21 rounds x 40 spawns per tool: about a minute
    python bench/floor_bench.py --quick   # a smoke run

Case (a) of ``bench/run.py`` alone, with more rounds: the floor (``floor.c``: ``clone(CLONE_VM | CLONE_VFORK |
CLONE_NEWPID | CLONE_NEWNS)``, ``/`` private, proc mounted, exec, wait), ``nsbox.run`` and ``subprocess.run``
without namespaces, interleaved round by round. Besides the ratio of the medians it gives the spread of the
per-round ratios (each round has both tools, so a round disturbed by another process moves both).

Not a test: it prints Markdown on stdout.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as bench  # the interleaving, medians and machine line of bench/run.py

import nsbox
from nsbox import _nsbox, _options

TRUE = "/bin/true"


def core_alone() -> Callable[[], int]:
    """``_nsbox.spawn`` and ``os.waitpid`` with the options prepared once: the Rust core without the Popen layer."""
    spec = _options.prepare({"pid": True, "mount_proc": True}, None).spec
    true = os.fsencode(TRUE)

    def spawn() -> int:
        pid = _nsbox.spawn(spec, [true], [true], None, None, (-1, -1, -1), [], False, None)
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])

    return spawn


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--iterations", type=int, default=40)
    args = parser.parse_args()
    rounds, iterations = (3, 5) if args.quick else (args.rounds, args.iterations)
    with tempfile.TemporaryDirectory() as tmp:
        floor = bench.build_floor(Path(tmp))
        tools = {
            "floor": bench.floor_tool(floor, "pid,proc"),
            "nsbox.run": bench.timed(lambda: nsbox.run([TRUE], pid=True, mount_proc=True).returncode, "nsbox.run"),
            "core alone": bench.timed(core_alone(), "core"),
            "subprocess.run": bench.timed(lambda: subprocess.run([TRUE], check=False).returncode, "subprocess.run"),
        }
        medians = bench.side_by_side(tools, rounds, iterations)
    if medians is None:
        return 1
    m = {name: bench.median_of(values) for name, values in medians.items()}
    ratios = [n / f for n, f in zip(medians["nsbox.run"], medians["floor"], strict=True)]
    print(bench.ran_on(rounds, iterations))
    print("| tool | median | min-max of round medians | x floor |")
    print("|---|---|---|---|")
    for name, values in medians.items():
        print(f"| `{name}` | {m[name]:.3f} ms | {min(values):.3f}-{max(values):.3f} | {m[name] / m['floor']:.3f} |")
    spread = sorted(ratios)
    quart = spread[len(spread) // 4], spread[(3 * len(spread)) // 4]
    print(
        f"\n`nsbox.run` / floor per round: median {bench.median_of(ratios):.3f}, "
        f"quartiles {quart[0]:.3f}-{quart[1]:.3f}, min-max {spread[0]:.3f}-{spread[-1]:.3f}; "
        f"nsbox's own time {1000 * (m['nsbox.run'] - m['floor']):.0f} µs per spawn"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
