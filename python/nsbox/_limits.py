"""cgroup limits: the options' types, what a box used (:class:`Usage`), and :func:`nsbox.run`'s :class:`CompletedBox`.

The values are checked by the core (``src/cgroup/``), which makes the box's cgroup; this module checks types.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from typing import Any


def memory_limit(name: str, value: object) -> dict[str, Any]:
    """``memory_limit``: bytes (an int) or a size such as ``"256M"``."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, str))):
        raise TypeError(f"{name} must be a number of bytes or a size such as '256M', not {type(value).__name__}")
    if isinstance(value, int) and value >= 2**63:
        raise ValueError(f"{name} must be a size the kernel can hold (below 8 EiB), not {value}")
    return {name: value}


def pids_limit(name: str, value: object) -> dict[str, Any]:
    """``pids_limit``: a number of processes."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise TypeError(f"{name} must be a number of processes, not {type(value).__name__}")
    if isinstance(value, int) and not -(2**63) <= value < 2**63:
        raise ValueError(f"{name} must be from 1 to 4194304, not {value}")
    return {name: value}


def cpu_limit(name: str, value: object) -> dict[str, Any]:
    """``cpu_limit``: a number of CPUs (``0.5`` is half of one)."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise TypeError(f"{name} must be a number of CPUs, not {type(value).__name__}")
    return {name: None if value is None else float(value)}


@dataclass(frozen=True)
class Usage:
    """What a box with cgroup limits used, from its cgroup's own counters; ``None`` where none was kept.

    Attributes:
        memory_peak: the most memory the box used at once, in bytes (with ``memory_limit``).
        cpu_time: CPU time of all its processes, user and system, in seconds.
        processes: the most processes (and threads) in it at once (with ``pids_limit``).
    """

    __module__ = "nsbox"

    memory_peak: int | None
    cpu_time: float | None
    processes: int | None


#: What :meth:`nsbox.Popen.usage` returns for a box without a cgroup.
NOTHING_MEASURED = Usage(None, None, None)


class CompletedBox(subprocess.CompletedProcess[Any]):
    """What :func:`nsbox.run` returns for a box with cgroup limits: a :class:`subprocess.CompletedProcess`, and more.

    ``oom_killed`` tells whether the OOM killer of ``memory_limit`` killed a process of the box; ``usage`` is what
    it used (a :class:`Usage`).
    """

    __module__ = "nsbox"

    def __init__(
        self,
        args: Any,
        returncode: int,
        stdout: Any = None,
        stderr: Any = None,
        *,
        oom_killed: bool = False,
        usage: Usage = NOTHING_MEASURED,
    ) -> None:
        super().__init__(args, returncode, stdout, stderr)
        self.oom_killed = oom_killed
        self.usage = usage
