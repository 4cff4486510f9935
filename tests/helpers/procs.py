"""Processes of the host: /proc fields, waiting for a state, and cleaning up what a test started."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest

import nsbox


def settle() -> None:
    """Free what earlier tests left in reference cycles (a ``Popen`` held by a frame that a ``pytest.raises``
    keeps): the collector would close its pidfd whenever it runs, maybe between a test's two snapshots."""
    gc.collect()


def fd_count(*, settled: bool = True) -> int:
    """How many fds this process has; ``settled``: after :func:`settle`."""
    if settled:
        settle()
    return len(os.listdir("/proc/self/fd"))


def open_fds(*, settled: bool = True) -> dict[int, str]:
    """fd -> what it points to, for every fd of this process (without the one the listing itself uses);
    ``settled``: after :func:`settle` (a full collection: pass ``False`` where it runs per example)."""
    if settled:
        settle()
    fds = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            fds[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except FileNotFoundError:
            continue  # the directory fd listdir used, closed by now
    return fds


def proc_status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def proc_state(pid: int) -> str | None:
    """The one-letter state of ``pid`` (``'Z'`` for a zombie), or None if it does not exist."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def proc_comm(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except (FileNotFoundError, ProcessLookupError):
        return None


def children_of(pid: int) -> list[int]:
    """Host PIDs whose parent is ``pid`` (zombies included)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry))
    return found


def wait_until(predicate: Callable[[], bool], timeout: float = 30.0, interval: float = 0.02) -> bool:
    """Polls ``predicate`` until it holds (True) or ``timeout`` seconds have passed (False).

    The deadline is generous on purpose: it only matters when the condition never comes, and a machine busy with
    other test runs may take seconds to do what takes milliseconds when it is idle (a network namespace, say,
    is freed by a kernel worker that runs when it can).
    """
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


def wait_gone(pid: int, comm: str, timeout: float = 30.0) -> bool:
    """True once ``pid`` no longer runs ``comm`` (gone, or reused by something else)."""
    return wait_until(lambda: proc_comm(pid) != comm or proc_state(pid) in (None, "Z", "X"), timeout)


def kill_and_reap(process: subprocess.Popen[Any]) -> None:
    """Cleanup for a Popen a test started: SIGKILL (if still running), wait, and close what it holds (its pipes, and
    a box's pidfd: a test that keeps the Popen in a cycle, through ``pytest.raises(...) as info``, would hold the
    pidfd until the collector runs, in a later test)."""
    if process.poll() is None:
        try:
            process.kill()
        except ProcessLookupError:
            pass
    process.wait(timeout=10)
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            stream.close()
    if isinstance(process, nsbox.Popen):
        process.close_pidfd()


def kill_pid(pid: int) -> None:
    """Cleanup for a process we know only by PID (SIGKILL; ignore if gone)."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def start_box(args: list[str], ready: str = "ready\n", **options: Any) -> nsbox.Popen:
    """Starts a box (stdout a text pipe) whose command prints ``ready`` once it is set up, and waits for that line."""
    box = nsbox.Popen(args, stdout=subprocess.PIPE, text=True, **options)
    assert box.stdout is not None
    line = box.stdout.readline()
    if line != ready:
        kill_and_reap(box)
        pytest.fail(f"the box printed {line!r} instead of {ready!r}")
    return box


def started(box: subprocess.Popen[Any], comm: str) -> None:
    """Waits until the box's first process runs ``comm`` (the kernel renames it just after exec)."""
    assert wait_until(lambda: proc_comm(box.pid) == comm), f"the box runs {proc_comm(box.pid)!r}, not {comm!r}"
