"""Persistent namespaces: keep a box's namespaces after its processes are gone, and enter them again."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack for **kwargs from Python 3.12

from nsbox import _nsbox
from nsbox._options import Args, ExecArgs, StrOrBytesPath
from nsbox._run import run


def persist(host_pid: int, path: StrOrBytesPath) -> list[str]:
    """Bind-mount the namespaces of ``host_pid`` that differ from the caller's onto ``path/KIND``.

    ``path`` is created if missing and made a private mount of its own (a mount namespace may only be
    bound where propagation is private). Like ``unshare --net=FILE``, the namespaces then outlive their
    processes until :func:`release`. Needs root (bind mounts on the host). Returns the kinds persisted.
    """
    return _nsbox.persist(host_pid, os.fsdecode(path))


def release(path: StrOrBytesPath) -> list[str]:
    """Unmount and remove the namespace files :func:`persist` made under ``path``; nothing stays mounted."""
    return _nsbox.release(os.fsdecode(path))


def enter(target: int | StrOrBytesPath, args: Args, **run_options: Unpack[ExecArgs]) -> Any:
    """Run ``args`` in the namespaces of a process (a PID) or of persisted files (a directory).

    Like ``nsenter --target PID --all``: the user namespace is joined first, then the others, and the
    command forks after ``setns`` so it really is in the PID namespace; with a PID it also takes the
    process's root and working directory. Takes :func:`nsbox.run`'s options and returns a
    ``subprocess.CompletedProcess``.
    """
    return run(args, target=target, **run_options)
