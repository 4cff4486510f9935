"""Running Python as the unprivileged user 65534: ``setpriv`` + Debian's world-readable ``/usr/bin/python3``.

The interpreter imports a world-readable copy of the installed nsbox package (and of ``tests/helpers`` and
``tests/bodies.py``), made once per session by the ``rootless_dir`` fixture.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from helpers.mounts import host_mounts

NOBODY = 65534
#: A world-readable interpreter (the dev venv's python lives under /root, mode 0700).
ROOTLESS_PYTHON = "/usr/bin/python3"
ROOTLESS_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: The two sides of a test parametrized with ``side`` (for the ``body`` and ``drive_as`` fixtures).
SIDES = ["root", "rootless"]

#: Prepended to every rootless snippet (with ``host_mounts``, added below).
ROOTLESS_PRELUDE = """\
from __future__ import annotations
import json, os, socket, subprocess, sys, time
import nsbox

def emit(value):
    print(json.dumps(value))
"""
ROOTLESS_PRELUDE += "\n\n" + inspect.getsource(host_mounts)

Rootless = Callable[[str], Any]
#: ``body(side, NAME, **kwargs)``: the ``body`` fixture, running ``bodies.NAME`` as root or rootless.
Body = Callable[..., Any]


def make_world_readable(base: Path) -> None:
    """Every file under ``base`` readable, every directory searchable, by every user."""
    for root, dirs, files in os.walk(base):
        for name in dirs + files:
            path = os.path.join(root, name)
            os.chmod(path, os.stat(path).st_mode | 0o444 | (0o111 if os.path.isdir(path) else 0))


def run_as_nobody(package_dir: Path, code: str, timeout: float = 60) -> Any:
    """Runs ``code`` (after ``ROOTLESS_PRELUDE``) as 65534:65534 and returns the JSON of its last printed line."""
    source = ROOTLESS_PRELUDE + textwrap.dedent(code)
    env = {
        "PATH": ROOTLESS_PATH,
        "PYTHONPATH": str(package_dir),
        "PYTHONDONTWRITEBYTECODE": "1",
        "HOME": "/tmp",
        "LC_ALL": "C.UTF-8",
    }
    cmd = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", ROOTLESS_PYTHON, "-c", source]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd="/tmp", timeout=timeout)
    if r.returncode != 0:
        pytest.fail(f"rootless snippet exited with {r.returncode}\n--- code\n{source}\n--- stderr\n{r.stderr}")
    lines = r.stdout.strip().splitlines()
    if not lines:
        pytest.fail(f"rootless snippet printed nothing\n--- code\n{source}\n--- stderr\n{r.stderr}")
    return json.loads(lines[-1])


#: For rootless snippets: ``attempt(name, call)`` notes in ``out`` None or the OSError ``[type, errno, message]``;
#: ``emit_attempts()`` adds whether any child process is left, and emits ``out``.
ATTEMPTS = """
out = {}


def attempt(name, call):
    try:
        call()
        out[name] = None
    except OSError as e:
        out[name] = [type(e).__name__, e.errno, str(e)]


def emit_attempts():
    try:
        os.waitpid(-1, os.WNOHANG)
        out["children"] = True
    except ChildProcessError:
        out["children"] = False
    emit(out)
"""
