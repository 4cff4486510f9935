"""Driving the ``nsbox`` command line and util-linux's ``unshare`` and ``nsenter``, as root and as uid 65534."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from helpers.mounts import host_mounts
from helpers.procs import children_of, proc_comm, proc_state, wait_until
from helpers.rootless import NOBODY, ROOTLESS_PATH, ROOTLESS_PYTHON

NAMESPACES = ("cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts")
READ_NAMESPACES = ["readlink", *(f"/proc/self/ns/{kind}" for kind in NAMESPACES)]
SYSTEM_PATH = ROOTLESS_PATH
#: Options that make a user namespace themselves (nsbox without root adds one for any other option).
USER_OPTIONS = re.compile(r"^(-[a-zA-Z]*[Urc][a-zA-Z]*|--user|--map-.*)$")
#: unshare's options that take the next argument as their value.
VALUE_OPTIONS = {"-w", "--wd", "-R", "--root", "-S", "--setuid", "-G", "--setgid", "--propagation", "--setgroups"}
VALUE_OPTIONS |= {"--map-user", "--map-group", "--map-users", "--map-groups", "--monotonic", "--boottime"}


def leading_options(args: Sequence[str]) -> list[str]:
    """The options at the start of an unshare command line (up to ``--`` or the program)."""
    options: list[str] = []
    args = list(args)
    while args and args[0].startswith("-") and args[0] != "--":
        options.append(args.pop(0))
        if options[-1] in VALUE_OPTIONS and args:
            options.append(args.pop(0))
    return options


def host_namespaces() -> dict[str, str]:
    return {kind: os.readlink(f"/proc/self/ns/{kind}") for kind in NAMESPACES}


def is_gone(pid: int) -> bool:
    return proc_state(pid) in (None, "Z", "X")


def stop(process: subprocess.Popen[Any]) -> None:
    """Cleanup for a process a test started: SIGKILL if still running, reap, close its pipes."""
    if process.poll() is None:
        process.kill()
    process.wait(timeout=10)
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            stream.close()


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The single ``nsbox: ...`` line a failure prints (and nothing else, no traceback)."""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("nsbox: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def shell_status(command: Sequence[str], runner: Runner) -> int:
    """The exit status of ``command`` as a shell reports it (``$?``: 128+N when signal N killed it)."""
    r = runner.run(["sh", "-c", f"{shlex.join(command)}; echo status=$?"])
    match = re.search(r"status=(\d+)", r.stdout)
    assert match, (r.stdout, r.stderr)
    return int(match.group(1))


def mount_table(mountinfo: str) -> list[tuple[str, ...]]:
    """``/proc/self/mountinfo`` without ids: mount point, options, propagation kinds, type, source, super options.

    Without the mounts in the scratch directories, where other users of the machine mount and unmount meanwhile.
    """
    table = []
    for line in host_mounts(text=mountinfo):
        fields = line.split()
        dash = fields.index("-")
        propagation = ",".join(sorted(tag.split(":")[0] for tag in fields[6:dash]))
        table.append((fields[4], fields[5], propagation, *fields[dash + 1 : dash + 4]))
    return table


def ps_rows(output: str) -> list[tuple[str, ...]]:
    """``ps -ef`` without the times: (UID, PID, PPID, CMD) per process."""
    header, *rows = output.splitlines()
    assert header.split()[:3] == ["UID", "PID", "PPID"], output
    return [tuple([*(fields := row.split(None, 7))[:3], fields[7]]) for row in rows]


@dataclass
class Runner:
    """Runs commands as root or as uid 65534, and ``nsbox`` as ``python -m nsbox``."""

    name: str
    python: str
    env: dict[str, str]
    prefix: list[str] = field(default_factory=list)

    @property
    def rootless(self) -> bool:
        return bool(self.prefix)

    def argv(self, command: Sequence[str]) -> list[str]:
        return [*self.prefix, *command]

    def nsbox_argv(self, *args: str) -> list[str]:
        return [self.python, "-m", "nsbox", *args]

    def unshare_argv(self, *args: str) -> list[str]:
        """``unshare -f ARGS``, and ``-r`` without root when ARGS ask for namespaces but no user namespace."""
        options = leading_options(args)
        extra = ["-r"] if self.rootless and options and not any(USER_OPTIONS.match(a) for a in options) else []
        return ["unshare", "-f", *extra, *args]

    def run(self, command: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        kwargs.setdefault("timeout", 60)
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("env", self.env)
        return subprocess.run(self.argv(command), text=True, cwd="/tmp", check=False, **kwargs)

    def popen(self, command: Sequence[str], **kwargs: Any) -> subprocess.Popen[str]:
        return subprocess.Popen(self.argv(command), text=True, env=self.env, cwd="/tmp", **kwargs)

    def nsbox(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return self.run(self.nsbox_argv(*args), **kwargs)

    def unshare(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return self.run(self.unshare_argv(*args), **kwargs)


def root_runner() -> Runner:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    return Runner("root", sys.executable, env | {"PATH": SYSTEM_PATH, "SHELL": "/bin/sh"})


def rootless_runner(package: Path) -> Runner:
    env = {
        "PATH": SYSTEM_PATH,
        "PYTHONPATH": str(package),
        "PYTHONDONTWRITEBYTECODE": "1",
        "HOME": "/tmp",
        "LC_ALL": "C.UTF-8",
        "SHELL": "/bin/sh",
    }
    prefix = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    return Runner("rootless", ROOTLESS_PYTHON, env, prefix)


def descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        for child in children_of(todo.pop()):
            found.append(child)
            todo.append(child)
    return found


def wait_for_descendant(front: subprocess.Popen[str], comm: str) -> int:
    """The PID of the first descendant of ``front`` running ``comm``, once there is one."""
    found: list[int] = []

    def started() -> bool:
        found[:] = [c for c in descendants(front.pid) if proc_comm(c) == comm]
        return bool(found) or front.poll() is not None

    if not wait_until(started, timeout=10) or not found:
        stderr = front.stderr.read() if front.poll() is not None and front.stderr else ""
        pytest.fail(f"{comm} did not start under {front.args!r}: exit status {front.returncode}, {stderr}")
    return found[0]


@dataclass
class Box:
    """A box started with the CLI: ``front`` is the nsbox (or unshare) process, ``pid`` the box's first."""

    front: subprocess.Popen[str]
    pid: int
