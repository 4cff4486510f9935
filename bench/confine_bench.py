"""What confinement costs: ``sandbox=True`` and its parts, side by side with ``pid=True, mount_proc=True``.

Run it with any Python that has nsbox installed (root, or any user for the rootless rows)::

    python bench/confine_bench.py           # about a minute
    python bench/confine_bench.py --quick   # a smoke run

Every case starts ``/usr/bin/true`` and waits for it:

- ``pid + mount_proc``: the baseline issue 16 compares with (a PID namespace, its own /proc).
- ``+ no_new_privs``, ``+ capabilities=()``, ``+ rlimits (3)``, ``+ seccomp="default"``: the baseline with one
  confinement step (in a user namespace for the capabilities, which need one without root).
- ``+ net``, ``+ user, uts, ipc, cgroup``, ``+ root=/ read-only, Tmpfs /tmp, Dev()``: the baseline with one of the
  sandbox's other parts, to show where its cost goes.
- ``sandbox=True``: every namespace, the host's root read-only with a tmpfs ``/tmp`` and ``Dev()``, no
  capabilities, ``no_new_privs``, the default seccomp filter and three limits.
- ``sandbox=True`` broken down: the same namespaces and filesystem without the confinement steps (what the
  namespaces and mounts cost alone).
- ``sandbox + memory_limit``: a cgroup per box (created, entered, removed at reaping), as root.

The cases are interleaved round by round; a row is the median over rounds of each round's median, with the
spread of round medians, and its ratio to the baseline (issue 16 asks ``sandbox=True`` within 1.5x).
Not a test: it prints a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as bench  # the interleaving and timing of bench/run.py

import nsbox
from nsbox._options import OPTIONS

TRUE = "/usr/bin/true"


def cases() -> dict[str, dict[str, Any]]:
    """Each case's options, the ones this build of nsbox has."""
    base: dict[str, Any] = {"pid": True, "mount_proc": True}
    user = {"user": True} if os.geteuid() != 0 else {}
    out: dict[str, dict[str, Any]] = {
        "pid + mount_proc": base,
        "+ no_new_privs": {**base, "no_new_privs": True},
        "+ capabilities=()": {**base, "user": True, "capabilities": ()},
        "+ rlimits (3)": {**base, "rlimits": {"core": 0, "nofile": 1024, "nproc": 512}},
    }
    if "seccomp" in OPTIONS:
        out['+ seccomp="default"'] = {**base, **user, "no_new_privs": True, "seccomp": "default"}
    out["+ net"] = {**base, "net": True}
    out["+ user, uts, ipc, cgroup (maps as a sandbox's)"] = {
        **base,
        "user": True,
        "uts": True,
        "ipc": True,
        "cgroup": True,
    }
    if os.geteuid() == 0:
        out["+ user, uts, ipc, cgroup (maps as a sandbox's)"].update(uid_map=[(0, 65534, 1)], gid_map=[(0, 65534, 1)])
    out["+ root=/ read-only, Tmpfs /tmp, Dev()"] = {
        **base,
        "root": nsbox.Bind("/", readonly=True),
        "mounts": [nsbox.Tmpfs("/tmp"), nsbox.Dev()],
    }
    out["sandbox=True"] = {"sandbox": True}
    parts, _ = nsbox._options.sandbox_parts(None)
    bare = {k: v for k, v in parts.items() if k not in ("no_new_privs", "capabilities", "seccomp", "rlimits")}
    out["sandbox's namespaces and mounts only"] = {"user": True, **bare}
    if "memory_limit" in OPTIONS and os.geteuid() == 0:
        out["sandbox + memory_limit"] = {"sandbox": True, "memory_limit": "256M"}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    args = parser.parse_args()
    rounds, iterations = (3, 10) if args.quick else (15, 40)
    tools: dict[str, Callable[[int], list[float]]] = {}
    for name, options in cases().items():
        tools[name] = bench.timed(lambda options=options: nsbox.run([TRUE], **options).returncode, name)
    print(f"{rounds} rounds x {iterations} spawns, interleaved", file=sys.stderr)
    result = bench.measure(tools, rounds, iterations)
    if result["errors"]:
        print(result["errors"], file=sys.stderr)
        return 1
    medians = {name: sorted(values)[len(values) // 2] for name, values in result["medians"].items()}
    base = medians["pid + mount_proc"]
    who = "root" if os.geteuid() == 0 else f"uid {os.geteuid()} (rootless)"
    print(f"{platform.node()} · Linux {platform.release()} · {os.cpu_count()} CPUs · {who} · {rounds}x{iterations}\n")
    print("| case | median | min-max | x pid + mount_proc |")
    print("|---|---|---|---|")
    for name, values in result["medians"].items():
        m = medians[name]
        print(f"| {name} | {m:.3f} ms | {min(values):.3f}-{max(values):.3f} | {m / base:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
