"""A process's cgroups on disk, and the box cgroups nsbox made there (``nsbox-<caller's PID>-<n>``)."""

from __future__ import annotations

import os
from pathlib import Path


def cgroup_lines(pid: int | str = "self") -> dict[str, str]:
    """``/proc/PID/cgroup`` as controllers (``"memory"``, ``"cpu,cpuacct"``, ``""`` for v2) → path."""
    with open(f"/proc/{pid}/cgroup") as f:
        lines = [line.rstrip("\n").split(":", 2) for line in f]
    return {controllers: path for _, controllers, path in lines if not controllers.startswith("name=")}


def cgroup_dirs(pid: int | str = "self") -> dict[str, Path]:
    """The directories of the cgroups of ``pid``, by controllers, from ``/proc/PID/cgroup`` and our mountinfo."""
    mounts: dict[str, tuple[str, str]] = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            before, _, after = line.rstrip("\n").partition(" - ")
            fields, (fstype, _, options) = before.split(" "), after.split(" ", 2)
            if fstype == "cgroup2":
                mounts.setdefault("", (fields[3], fields[4]))
            elif fstype == "cgroup":
                controllers = ",".join(o for o in options.split(",") if o not in ("rw", "ro"))
                mounts.setdefault(controllers, (fields[3], fields[4]))
    dirs = {}
    for controllers, path in cgroup_lines(pid).items():
        if controllers in mounts:
            root, point = mounts[controllers]
            dirs[controllers] = Path(point) / os.path.relpath(path, root)
    return dirs


def box_cgroups(caller: int | None = None) -> list[Path]:
    """The box cgroups that ``caller`` (default: this process) has made and not removed."""
    caller = os.getpid() if caller is None else caller
    return sorted(p for d in set(cgroup_dirs().values()) for p in d.glob(f"nsbox-{caller}-*"))
