"""Where a rootless pooled box's time goes: the same box with the filler kept idle, against the floor box.

A rootless pooled box joins its set's user namespace in a first child and clones the box from there (its PID
namespace must belong to that user namespace): two new processes per box where a box without a pool has one. This
probe takes the filler's work out of the picture (the pool is filled first, then the soft ``RLIMIT_NOFILE`` is
lowered so that the pool, which keeps within half of it, makes no more sets) and times, interleaved, one spawn
every ``--pace`` ms:

- ``pool.run(["true"])`` with ``pid, mount_proc, net, uts, ipc`` (the set gives net, uts, ipc);
- ``nsbox.run(["true"], pid=True, mount_proc=True)``: the floor a pooled box can reach.

Run it as the user and under the scheduling policy to compare, for example (as root)::

    setpriv --reuid=65534 --regid=65534 --clear-groups python3 bench/pool_sched_probe.py
    chrt -f 10 setpriv --reuid=65534 --regid=65534 --clear-groups python3 bench/pool_sched_probe.py

Not a test: it prints Markdown on stdout.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pool_bench  # paced()
import run as bench  # the interleaving, medians and machine line of bench/run.py

import nsbox

OPTIONS = {"pid": True, "mount_proc": True, "net": True, "uts": True, "ipc": True}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=15)
    parser.add_argument("--pace", type=float, default=10.0, help="ms between spawns (untimed)")
    args = parser.parse_args()
    size = 3 * args.rounds * args.iterations + 10  # never emptied, and never below the budget (see below)
    with nsbox.Pool(size=size, **OPTIONS) as pool:
        deadline = time.monotonic() + 120
        while pool.stats().ready < size:
            if time.monotonic() > deadline:
                print(f"the pool did not fill: {pool.stats()}", file=sys.stderr)
                return 1
            time.sleep(0.02)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        # Half of this is below what the sets left at the end hold: the filler makes no set while the probe runs.
        resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 40, hard))
        made = pool.stats().made
        tools = {
            "pool.run": pool_bench.paced(lambda: pool.run(["true"]).returncode, args.pace, "pool.run"),
            "floor": pool_bench.paced(
                lambda: nsbox.run(["true"], pid=True, mount_proc=True).returncode, args.pace, "floor"
            ),
        }
        medians = bench.side_by_side(tools, args.rounds, args.iterations)
        idle = pool.stats().made == made
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    if medians is None:
        return 1
    policy = {os.SCHED_OTHER: "SCHED_OTHER", os.SCHED_FIFO: "SCHED_FIFO", os.SCHED_RR: "SCHED_RR"}
    print(bench.ran_on(args.rounds, args.iterations))
    print(f"Scheduling policy: {policy.get(os.sched_getscheduler(0), 'other')}; filler idle: {idle}.\n")
    print("| case | median | x floor |\n|---|---|---|")
    floor = bench.median_of(medians["floor"])
    for name, values in medians.items():
        median = bench.median_of(values)
        print(f"| `{name}` | {median:.3f} ms | {median / floor:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
