"""What cgroup limits cost per box: a box with memory, pids and CPU limits, side by side with the same box without.

Run it as root with any Python that has nsbox installed::

    python bench/cgroup_bench.py           # about a minute
    python bench/cgroup_bench.py --quick   # a smoke run

Every case starts ``/bin/true`` with ``pid=True, mount_proc=True`` and waits for it (``nsbox.run``), interleaved
round by round as ``bench/run.py`` does; a row is the median over rounds of each round's median, with the spread
of round medians and the ratio to ``plain`` (the box without limits). A limit makes the box a cgroup in each
hierarchy it needs (on cgroup v1 one per controller, plus ``cpuacct`` for the CPU time of ``usage()``): made,
its limit written and its ``cgroup.procs`` opened before the clone, entered by the child, and emptied and
removed after the box is reaped.

Then where that time goes: the same steps done by hand from Python, per hierarchy (``mkdir``, one write,
``open`` of ``cgroup.procs``, ``rmdir``), timed one by one; and what it costs a new process to get into a
fresh cgroup (``bench/cgroup_entry.c``, built with ``cc``): a ``fork`` and a write of ``0`` to ``cgroup.procs``
(v1, and ``nsbox.call``) against ``clone3`` with ``CLONE_INTO_CGROUP`` (cgroup v2: nsbox's exec path), back to
back and 50 ms apart. Not a test: it prints Markdown.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as bench  # the interleaving and timing of bench/run.py

import nsbox

TRUE = "/usr/bin/true"
#: The hierarchies a limit puts a box in here, and the file each limit writes.
STEPS = {
    "memory": ("memory.limit_in_bytes", str(256 << 20)),
    "pids": ("pids.max", "64"),
    "cpu": ("cpu.cfs_quota_us", "100000"),
    "cpuacct": (None, None),
}


def parents() -> dict[str, Path]:
    """Where nsbox makes a box's cgroups, by controller: the parents of a box's directories."""
    found = {}
    with nsbox.Popen(["sleep", "60"], pids_limit=64, memory_limit="256M", cpu_limit=1.0) as box:
        assert box._cgroup is not None
        for path in map(Path, box._cgroup.paths):
            kind = next((c for c, (file, _) in STEPS.items() if file and (path / file).exists()), "cpuacct")
            found[kind] = path.parent
        box.kill()
    return found


def by_hand(rounds: int) -> dict[str, dict[str, float]]:
    """Median microseconds of each step of a box's cgroup, per hierarchy, done from Python."""
    dirs = parents()
    out: dict[str, dict[str, float]] = {}
    for controller, (file, value) in STEPS.items():
        if controller not in dirs:
            continue
        path = dirs[controller] / f"nsbox-bench-{os.getpid()}"
        times: dict[str, list[float]] = {"mkdir": [], "limit": [], "open": [], "rmdir": []}
        for _ in range(rounds):
            t = time.perf_counter_ns()
            os.mkdir(path)
            times["mkdir"].append(time.perf_counter_ns() - t)
            if file is not None and value is not None:
                t = time.perf_counter_ns()
                limit_fd = os.open(path / file, os.O_WRONLY | os.O_CLOEXEC)
                os.write(limit_fd, value.encode())
                os.close(limit_fd)
                times["limit"].append(time.perf_counter_ns() - t)
            t = time.perf_counter_ns()
            fd = os.open(path / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)
            times["open"].append(time.perf_counter_ns() - t)
            # A child enters (as a box does first thing), and leaves: the rmdir needs it gone.
            pid = os.fork()
            if pid == 0:
                os.write(fd, b"0")
                os._exit(0)
            os.waitpid(pid, 0)
            os.close(fd)
            t = time.perf_counter_ns()
            os.rmdir(path)
            times["rmdir"].append(time.perf_counter_ns() - t)
        out[controller] = {step: statistics.median(v) / 1000 for step, v in times.items() if v}
    return out


def entry_costs(rounds: int) -> list[tuple[str, str, int, str]]:
    """(hierarchy, way, gap in ms, "median / max µs") of a new process getting into a fresh cgroup."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        print("no C compiler: the entry costs are left out", file=sys.stderr)
        return []
    dirs = parents()
    with open("/proc/self/mountinfo") as f:
        v2 = next((line.split()[4] for line in f if " - cgroup2 " in line), None)
    rows = []
    with tempfile.TemporaryDirectory(prefix="nsbox-bench-") as tmp:
        binary = os.path.join(tmp, "cgroup_entry")
        subprocess.run([cc, "-O2", "-o", binary, str(Path(__file__).parent / "cgroup_entry.c")], check=True)
        cases = [("pids (v1)", dirs.get("pids"), "write")] + [("cgroup2", v2, way) for way in ("write", "into")]
        for name, base, way in cases:
            if base is None:
                continue
            for gap in (0, 50):
                out = subprocess.run([binary, str(base), way, str(gap), str(rounds)], capture_output=True, text=True)
                shown = "/".join(out.stdout.split()) if out.returncode == 0 else f"failed: {out.stderr.strip()}"
                rows.append((name, way, gap, shown))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("cgroup limits need root here (cgroup v1): run it as root", file=sys.stderr)
        return 1
    rounds, iterations = (3, 10) if args.quick else (15, 40)
    plain = {"pid": True, "mount_proc": True}
    cases = {
        "plain": {},
        "pids_limit=64": {"pids_limit": 64},
        "memory_limit='256M'": {"memory_limit": "256M"},
        "cpu_limit=1": {"cpu_limit": 1.0},
        "all three": {"pids_limit": 64, "memory_limit": "256M", "cpu_limit": 1.0},
    }

    def spawn(options: dict[str, object]) -> Callable[[], int]:
        return lambda: nsbox.run([TRUE], **plain, **options).returncode  # type: ignore[arg-type]

    tools = {name: bench.timed(spawn(options), name) for name, options in cases.items()}
    print(f"{rounds} rounds x {iterations} spawns, interleaved", file=sys.stderr)
    result = bench.measure(tools, rounds, iterations)
    if result["errors"]:
        print(result["errors"], file=sys.stderr)
        return 1
    medians = {name: sorted(values)[len(values) // 2] for name, values in result["medians"].items()}
    print(f"{platform.node()} · Linux {platform.release()} · {os.cpu_count()} CPUs · {rounds}x{iterations}\n")
    print("| case | hierarchies | median | min-max | x plain | + over plain |")
    print("|---|---|---|---|---|---|")
    made = {"plain": 0, "pids_limit=64": 2, "memory_limit='256M'": 2, "cpu_limit=1": 2, "all three": 4}
    for name, values in result["medians"].items():
        m = medians[name]
        extra = m - medians["plain"]
        print(
            f"| {name} | {made[name]} | {m:.2f} ms | {min(values):.2f}-{max(values):.2f} | "
            f"{m / medians['plain']:.2f} | {extra * 1000:+.0f} µs |"
        )
    steps = by_hand(50 if args.quick else 400)
    print("\nBy hand, per hierarchy (median µs): the steps of one box's cgroup\n")
    print("| hierarchy | mkdir | limit (open, write, close) | open cgroup.procs | rmdir (after the child left) | sum |")
    print("|---|---|---|---|---|---|")
    for controller, t in steps.items():
        cells = [t.get(s) for s in ("mkdir", "limit", "open", "rmdir")]
        shown = " | ".join("—" if c is None else f"{c:.0f}" for c in cells)
        print(f"| {controller} | {shown} | {sum(c for c in cells if c is not None):.0f} |")
    rows = entry_costs(20 if args.quick else 100)
    if rows:
        print("\nA new process into a fresh cgroup (bench/cgroup_entry.c): fork/clone to waitpid, median/max µs\n")
        print("| hierarchy | way | boxes back to back | 50 ms apart |")
        print("|---|---|---|---|")
        for i in range(0, len(rows), 2):
            (name, way, _, back), (_, _, _, apart) = rows[i], rows[i + 1]
            label = "fork + write 0 to cgroup.procs" if way == "write" else "clone3 + CLONE_INTO_CGROUP"
            print(f"| {name} | {label} | {back} | {apart} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
