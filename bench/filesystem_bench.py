"""What a box's own filesystem costs: ``root=`` a directory plus three mounts, side by side with the same box without.

Run it with any Python that has nsbox installed (root, or any user for the rootless rows)::

    python bench/filesystem_bench.py           # about half a minute
    python bench/filesystem_bench.py --quick   # a smoke run

Every case starts ``/bin/true`` with ``pid=True, mount=True`` (a new PID and mount namespace) and waits for it:

- ``plain``: the namespaces alone (the baseline).
- ``root=DIR + 3 mounts``: the same, with a root of its own (a directory that binds the host's ``/usr``, as an
  unpacked image would hold its files) and a ``Tmpfs("/tmp")``, a read-only ``Bind`` and a ``Dev()``: the
  staging ``pivot_root``, the root's bind, the mounts, and the final ``pivot_root``.
- ``root=Overlay + 3 mounts``: the same over a private overlay of that directory (a disposable writable root).
- ``bwrap``, when installed: bubblewrap doing the same (``--bind DIR / --tmpfs /tmp --ro-bind ... --dev /dev``).

The cases are interleaved round by round; a row is the median over rounds of each round's median, with the
spread of round medians, and its ratio to ``plain`` (issue 15 asks at most 1.3 for a directory and three mounts).
Not a test: it prints a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as bench  # the interleaving and timing of bench/run.py

import nsbox

TRUE = "/usr/bin/true"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    args = parser.parse_args()
    rounds, iterations = (3, 10) if args.quick else (15, 40)
    with tempfile.TemporaryDirectory(prefix="nsbox-bench-") as base:
        root = Path(base) / "root"
        for name in ("usr", "tmp", "dev", "data", "proc"):
            (root / name).mkdir(parents=True)
        for link in ("bin", "lib", "lib64"):
            if os.path.islink(f"/{link}"):
                (root / link).symlink_to(os.readlink(f"/{link}"))
        data = Path(base) / "data"
        data.mkdir()
        mounts = [nsbox.Bind("/usr", "/usr", readonly=True), nsbox.Tmpfs("/tmp"), nsbox.Bind(data, "/data")]
        mounts_dev = [*mounts[:2], nsbox.Dev()]
        plain = {"pid": True, "mount": True}
        tools: dict[str, Callable[[int], list[float]]] = {
            "plain": bench.timed(lambda: nsbox.run([TRUE], **plain).returncode, "plain"),
            "root=DIR + 3 mounts": bench.timed(
                lambda: nsbox.run([TRUE], root=root, mounts=mounts, **plain).returncode, "root=DIR"
            ),
            "root=DIR + Tmpfs, Bind, Dev": bench.timed(
                lambda: nsbox.run([TRUE], root=root, mounts=mounts_dev, **plain).returncode, "root=DIR + Dev"
            ),
            "root=Overlay + 3 mounts": bench.timed(
                lambda: nsbox.run([TRUE], root=nsbox.Overlay(lower=[str(root)]), mounts=mounts, **plain).returncode,
                "root=Overlay",
            ),
        }
        bwrap = shutil.which("bwrap")
        if bwrap is not None:
            argv = [bwrap, "--unshare-pid", "--bind", str(root), "/", "--ro-bind", "/usr", "/usr"]
            argv += ["--tmpfs", "/tmp", "--bind", str(data), "/data", TRUE]
            tools["bwrap, the same"] = bench.subprocess_tool(argv)
        rows = bench.side_by_side(tools, rounds, iterations)
    if rows is None:
        return 1
    plain = bench.median_of(rows["plain"])
    print(bench.ran_on(rounds, iterations))
    print("| case | median | min-max | x plain |")
    print("|---|---|---|---|")
    for name, values in rows.items():
        m = bench.median_of(values)
        print(f"| {name} | {m:.2f} ms | {min(values):.2f}-{max(values):.2f} | {m / plain:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
