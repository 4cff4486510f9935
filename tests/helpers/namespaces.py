"""The namespace kinds, and the namespace links of the caller and of a box."""

from __future__ import annotations

import os
from typing import Any

import nsbox

#: The namespace names of /proc/PID/ns, and the nsbox option that asks for each.
NAMESPACES = ("pid", "mnt", "uts", "ipc", "net", "user", "cgroup", "time")
OPTION_FOR = {"pid": "pid", "mnt": "mount", "uts": "uts", "ipc": "ipc", "net": "net", "user": "user"}
OPTION_FOR |= {"cgroup": "cgroup", "time": "time"}
#: The files of /proc/PID/ns (what ``nsbox.namespaces`` lists).
KINDS = {"cgroup", "ipc", "mnt", "net", "pid", "pid_for_children", "time", "time_for_children", "user", "uts"}


def host_ns(name: str) -> str:
    """The caller's namespace link, e.g. ``'net:[4026531833]'``."""
    return os.readlink(f"/proc/self/ns/{name}")


def box_ns_links(run: Any = nsbox.run, **options: Any) -> dict[str, str]:
    """The box's own command (``readlink``, PID 1 with ``pid=True``) reads every ``/proc/self/ns/X``.

    ``run`` makes the box: ``nsbox.run``, or another way with its signature (``helpers.pooling.pooled_run``).
    """
    names = (*NAMESPACES, "time_for_children")
    r = run(["readlink", *(f"/proc/self/ns/{n}" for n in names)], capture_output=True, text=True, check=True, **options)
    links = r.stdout.split()
    assert len(links) == len(names), r.stdout
    return dict(zip(names, links, strict=True))
