"""Functions that ``tests/test_zygote.py`` sends to a zygote: they travel by reference, so they live in a module.

The tests preload this module; it imports only the standard library, so the rootless interpreter can load it.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

#: The namespace kinds of /proc/PID/ns that a box can have of its own.
KINDS = ("pid", "mnt", "uts", "ipc", "net", "user", "cgroup", "time")

#: Module state: each call starts from the zygote's copy (empty), whatever a call or the caller did to it.
STATE: list[object] = []


def ns_links() -> dict[str, str]:
    return {kind: os.readlink(f"/proc/self/ns/{kind}") for kind in KINDS}


def inside() -> dict[str, object]:
    """What the box sees of itself."""
    return {"pid": os.getpid(), "ns": ns_links(), "uid": os.getuid()}


def wait_for(path: str, timeout: float = 60.0) -> dict[str, object]:
    """Waits until ``path`` exists (the test made it), then reports what the box sees of itself."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear")
        time.sleep(0.005)
    return inside()


def both_at_once(mine: str, other: str, timeout: float = 60.0) -> str:
    """Makes ``mine``, then waits for ``other``: two such calls finish only if they run at the same time."""
    Path(mine).touch()
    deadline = time.monotonic() + timeout
    while not os.path.exists(other):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{other} did not appear: the calls did not run at the same time")
        time.sleep(0.005)
    return mine


def remember(value: object) -> list[object]:
    STATE.append(value)
    return list(STATE)


def loaded(name: str) -> bool:
    return name in sys.modules


def environment(name: str) -> tuple[str | None, str, list[str]]:
    return os.environ.get(name), os.getcwd(), list(sys.path)


def fd_targets() -> list[str]:
    """What every fd of the box but 0-2 points to (the listing's own fd is gone by the time it is read)."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        if int(name) > 2:
            try:
                found.append(os.readlink(f"/proc/self/fd/{name}"))
            except OSError:
                pass
    return found


def touch_then(path: str, _: object) -> None:
    Path(path).touch()


def make_lock() -> object:
    return threading.Lock()


class WorkError(Exception):
    pass


def fail_deeply(text: str) -> None:
    def inner() -> None:
        raise WorkError(text)

    inner()


class Point:
    """Not plain data: a sandboxed box may not return it."""

    def __init__(self, x: int) -> None:
        self.x = x


def point(x: int) -> Point:
    return Point(x)


def fork_and_wait(path: str) -> None:
    """Forks a child, writes the box's PID namespace to ``path`` (the test watches it from the host), and both
    processes wait for ever: only a kill ends this call."""
    if os.fork() == 0:
        while True:
            time.sleep(60)
    Path(path + ".tmp").write_text(os.readlink("/proc/self/ns/pid"))
    os.rename(path + ".tmp", path)
    while True:
        time.sleep(60)
