"""Driver programs: a test's Python source run in a fresh interpreter, which prints its findings as JSON.

A fresh interpreter is a process of its own to kill, to close fds in or to trace, whose state (its threads, fds
and children) a test may look at without the test runner's own in the way.
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import textwrap
from typing import Any

from helpers.mounts import host_mounts
from helpers.rootless import Rootless

#: Prepended to every driver program.
PRELUDE = """\
import ctypes, json, os, signal, subprocess, sys, threading, time
import nsbox

def emit(value):
    print(json.dumps(value), flush=True)

def spawner_threads():
    names = []
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                names.append(f.read().strip())
        except OSError:
            pass
    return names.count("nsbox-spawner")
"""


def drive(code: str, *args: str, timeout: float = 120, env: dict[str, str] | None = None) -> Any:
    """Runs a driver program as root and returns the JSON its last line printed."""
    r = subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    assert r.returncode == 0, f"driver failed ({r.returncode}):\n{r.stderr}"
    return json.loads(r.stdout.strip().splitlines()[-1])


#: Prepended to every driver: what a leak would change in the driver's own process.
WATCH = r"""
import json, os, signal, subprocess, sys, threading, time
import nsbox


def children():
    # PIDs whose parent is this process (zombies included), whichever of its threads started them.
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) == os.getpid():
                    found.append(int(pid))
        except OSError:
            pass
    return found


def fds():
    # fd -> what it points to.
    found = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            found[name] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            pass  # the listing's own fd, closed by now
    return found
"""


#: What a root driver has on top (the rootless prelude has the same): ``host_mounts()``.
ROOT_WATCH = "from __future__ import annotations\n" + inspect.getsource(host_mounts)


def drive_watched(python: str, code: str, *args: str, timeout: float = 120, env: dict[str, str] | None = None) -> Any:
    """Runs a driver as root in a fresh interpreter; returns the JSON of its last line."""
    cmd = [python, "-c", ROOT_WATCH + WATCH + code, *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    assert r.returncode == 0, f"the driver failed ({r.returncode}):\n{r.stderr}"
    return json.loads(r.stdout.strip().splitlines()[-1])


def drive_watched_rootless(rootless: Rootless, code: str, *args: str) -> Any:
    """The same driver as the unprivileged user 65534 (``rootless`` defines ``host_mounts`` too)."""
    return rootless(f"sys.argv[1:] = {list(args)!r}\n{WATCH}{code}")
