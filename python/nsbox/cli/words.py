"""What the ``nsbox`` command says: its output, its one-line complaints and their exit statuses.

A failure is one line on stderr, ``nsbox: <what failed>: <why>``, and an exit status: 1 when nsbox fails,
2 for a command line that cannot work, 126 or 127 when the program cannot be executed or found.
"""

from __future__ import annotations

import os
import signal
import sys
from contextlib import suppress

PROG = "nsbox"
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_CANNOT_EXECUTE = 126
EXIT_NOT_FOUND = 127


class UsageError(Exception):
    """A command line that cannot work: printed as ``nsbox: <message>``, exit status 2."""


class Failure(Exception):
    """Something nsbox tried failed: printed as ``nsbox: <message>``, exit status ``status``."""

    def __init__(self, message: str, status: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.status = status


#: The core's hints (``OSError.hint``: ``Hint`` in src/errors.rs) whose advice names options of the Python API,
#: in the command line's words. The other hints name no option, or come from options the command line has not.
HINTS = {
    "needs_user_namespace": "unprivileged callers need a user namespace: add -U or -r",
    "maps_need_privilege": (
        "without root only your own uid and gid can be mapped, with --setgroups deny; "
        "other maps need CAP_SETUID and CAP_SETGID"
    ),
    "proc_needs_pid_namespace": "a new proc can only be mounted for a PID namespace this box owns: add -p",
    "cgroup_needs_delegation": (
        "--memory, --pids and --cpus need root, or a cgroup v2 subtree delegated to you: "
        "run nsbox under `systemd-run --user --scope -p Delegate=yes nsbox ...`"
    ),
    "cgroup_has_processes": (
        "cgroup v2 gives controllers to child cgroups only while no process is in the parent: run nsbox in a "
        "cgroup of its own, such as `systemd-run --user --scope -p Delegate=yes nsbox ...` makes"
    ),
}

#: The core's options that the command line gives a value (``ValueError.option``), as the command line names
#: that value.
OPTIONS = {
    "hostname": "--hostname: the name",
    "mount_proc": "--mount-proc: the directory",
    "root": "--root: the directory",
    "propagation": "--propagation: the mode",
    "setgroups": "--setgroups: the value",
    "monotonic_offset": "--monotonic: the offset",
    "boottime_offset": "--boottime: the offset",
    "capabilities": "--caps:",
    "rlimits": "--rlimit:",
    "memory_limit": "--memory: the size",
    "pids_limit": "--pids: the number",
    "cpu_limit": "--cpus: the number",
}


def os_failure(exc: OSError) -> str:
    """An ``OSError``'s message in the command line's words: its hint said as :data:`HINTS` says it."""
    message = exc.strerror or str(exc)
    words = HINTS.get(getattr(exc, "hint", None) or "")
    what = getattr(exc, "what", None)
    if words is not None and what is not None and exc.errno is not None:
        # The core says "cannot <what>: <reason> (<hint>)"; the command line says the same with its own hint.
        message = f"cannot {what}: {os.strerror(exc.errno)} ({words})"
    if exc.filename is not None:
        message = f"{os.fsdecode(exc.filename)}: {message}"
    return message


def invalid(exc: ValueError) -> str:
    """A ``ValueError``'s message in the command line's words: the option at fault named as :data:`OPTIONS` does."""
    message = str(exc)
    option = getattr(exc, "option", None)
    said = OPTIONS.get(option or "")
    # A bad value's message starts with the option's name (Error::bad_option in src/errors.rs); a rule's
    # message (Error::rule) names the option somewhere in its sentence and is kept as it is.
    if said is None or not message.startswith(f"{option} "):
        return message
    return f"{said} {message.removeprefix(f'{option} ')}"


def write(text: str) -> int:
    """Write to stdout; a reader that went away (``nsbox ps 42 | head -1``) ends nsbox quietly, as SIGPIPE would."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        with suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    return 0


def complain(message: str, status: int) -> int:
    """Print ``nsbox: <message>`` as one line to stderr; return ``status``."""
    line = " ".join(f"{PROG}: {message}".split("\n"))
    with suppress(OSError):
        print(line, file=sys.stderr, flush=True)
    return status
