"""Fixtures and hooks of the nsbox test suite (the helpers they share with the tests are in ``helpers/``).

The suite runs as root. Rootless behaviour is checked by running Python as the unprivileged user 65534 through
the ``rootless`` fixture (``setpriv`` + Debian's world-readable ``/usr/bin/python3`` + a world-readable copy of
the installed package).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

import bodies
import nsbox
from helpers.drivers import drive_watched, drive_watched_rootless
from helpers.lan import host_links, ports
from helpers.nets import free_network
from helpers.procs import children_of, kill_pid, proc_comm, proc_state, wait_until
from helpers.rootless import NOBODY, ROOTLESS_PYTHON, Body, Rootless, make_world_readable, run_as_nobody

# A suite started in the background by a shell without job control inherits SIGINT and SIGQUIT ignored
# (POSIX), and so would every box and program it starts: the tests of Ctrl-C need them as a terminal gives
# them. (Seen: two copies of .ci/run started with `(... &)` failed exactly those tests.)
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
if signal.getsignal(signal.SIGQUIT) is signal.SIG_IGN:
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)

TESTS = Path(__file__).parent


@pytest.fixture(autouse=True)
def no_leftover_children() -> Iterator[None]:
    """Every test must reap what it starts: no child process of the test runner may be left behind."""
    yield
    leftover = children_of(os.getpid())
    if leftover and not wait_until(lambda: not children_of(os.getpid()), timeout=10):
        details = {pid: (proc_comm(pid), proc_state(pid)) for pid in children_of(os.getpid())}
        for pid in details:
            kill_pid(pid)
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        pytest.fail(f"the test left child processes behind: {details}")


@pytest.fixture
def world_tmp() -> Iterator[Path]:
    """A fresh directory under /tmp that every user (and every box) can write to."""
    path = Path(tempfile.mkdtemp(prefix="nsbox-test-", dir="/tmp"))
    path.chmod(0o777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def python() -> str:
    """The interpreter that runs the test suite (root can read it; boxes run as root can too)."""
    return sys.executable


@pytest.fixture(scope="session")
def rootless_dir() -> Iterator[Path]:
    """A world-readable copy of the installed nsbox package, for the unprivileged interpreter."""
    if os.geteuid() != 0:
        pytest.fail("the test suite runs as root; it drops to uid 65534 itself for the rootless tests")
    if shutil.which("setpriv") is None:
        pytest.fail("setpriv (util-linux) is needed to run the rootless tests: apt-get install util-linux")
    if not os.access(ROOTLESS_PYTHON, os.X_OK):
        pytest.fail(f"{ROOTLESS_PYTHON} is needed for the rootless tests (world-readable): apt-get install python3")
    base = Path(tempfile.mkdtemp(prefix="nsbox-rootless-", dir="/tmp"))
    try:
        base.chmod(0o755)
        shutil.copytree(os.path.dirname(nsbox.__file__), base / "nsbox", ignore=shutil.ignore_patterns("__pycache__"))
        # The bodies that run alike as root and rootless, and the helpers they may import (nsbox and stdlib only).
        shutil.copytree(TESTS / "helpers", base / "helpers", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copyfile(TESTS / "bodies.py", base / "bodies.py")
        make_world_readable(base)
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def rootless(rootless_dir: Path) -> Rootless:
    """``rootless(code)`` runs a Python snippet as uid/gid 65534 and returns the JSON its last line prints.

    The snippet starts with ``json, os, socket, subprocess, sys, time, nsbox`` imported and ``emit(value)``
    (print as JSON) defined. A snippet that fails, or an interpreter that cannot import nsbox as that
    user, fails the test: rootless tests must run, never skip.
    """
    probe = run_as_nobody(
        rootless_dir,
        "emit({'euid': os.geteuid(), 'egid': os.getegid(), 'groups': os.getgroups(),"
        " 'version': list(sys.version_info[:2]), 'nsbox': nsbox.__file__})",
    )
    if probe["euid"] != NOBODY or probe["egid"] != NOBODY or probe["groups"]:
        pytest.fail(f"the rootless interpreter does not run as {NOBODY}:{NOBODY} without groups: {probe}")
    if tuple(probe["version"]) < (3, 11):
        pytest.fail(f"{ROOTLESS_PYTHON} is Python {probe['version']}; nsbox needs 3.11 or newer")
    if not probe["nsbox"].startswith(str(rootless_dir)):
        pytest.fail(f"the rootless interpreter imported nsbox from {probe['nsbox']}, not the copy in {rootless_dir}")

    def run(code: str) -> Any:
        return run_as_nobody(rootless_dir, code)

    return run


@pytest.fixture(scope="session")
def rootless_hypothesis(rootless_dir: Path, rootless: Rootless) -> Rootless:
    """``rootless``, with Hypothesis (and what it needs) importable by the unprivileged interpreter."""
    for dist in ("hypothesis", "sortedcontainers"):
        for file in metadata.files(dist) or []:
            if file.parts[0] == ".." or "__pycache__" in file.parts:
                continue
            target = rootless_dir / file
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(file.locate(), target)
    make_world_readable(rootless_dir)
    return rootless


@pytest.fixture(scope="session")
def tiny_root() -> Iterator[Path]:
    """A world-readable directory to chroot into: /bin/sh and the libraries it links, /proc and /mnt."""
    path = Path(tempfile.mkdtemp(prefix="nsbox-root-", dir="/tmp"))
    sh = Path(os.path.realpath("/bin/sh"))
    libs = re.findall(r"(/\S+) \(0x", subprocess.run(["ldd", str(sh)], capture_output=True, text=True).stdout)
    for source in [str(sh), *libs]:
        target = path / source.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.realpath(source), target)
    (path / "bin").mkdir(exist_ok=True)
    if not (path / "bin" / "sh").exists():
        (path / "bin" / "sh").symlink_to(sh)
    (path / "proc").mkdir()
    (path / "mnt").mkdir()
    subprocess.run(["chmod", "-R", "a+rX", str(path)], check=True)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def body(request: pytest.FixtureRequest) -> Body:
    """``body(side, NAME, **kwargs)`` runs ``bodies.NAME(**kwargs)`` and returns its result, through JSON.

    ``side`` is ``"root"`` (here, in the test runner) or ``"rootless"`` (in the interpreter of the ``rootless``
    fixture, as 65534:65534), so that a test parametrized with ``side`` checks one body both ways.
    """

    def run(side: str, name: str, **kwargs: Any) -> Any:
        if side == "root":
            return json.loads(json.dumps(getattr(bodies, name)(**kwargs)))
        if side == "rootless":
            rootless: Rootless = request.getfixturevalue("rootless")
            return rootless(f"import bodies\nemit(bodies.{name}(**json.loads({json.dumps(kwargs)!r})))")
        raise ValueError(f"side is root or rootless, not {side!r}")

    return run


@pytest.fixture
def drive_as(request: pytest.FixtureRequest, python: str) -> Callable[..., Any]:
    """``drive_as(side, code, *args)``: ``helpers.drivers``' watched driver, as root or as 65534:65534."""

    def run(side: str, code: str, *args: str) -> Any:
        if side == "root":
            return drive_watched(python, code, *args)
        if side == "rootless":
            return drive_watched_rootless(request.getfixturevalue("rootless"), code, *args)
        raise ValueError(f"side is root or rootless, not {side!r}")

    return run


@pytest.fixture
def lan() -> Iterator[nsbox.Network]:
    """A network on the host on a free /24, closed afterwards; its bridge and veths must be gone then."""
    network = free_network()
    try:
        yield network
    finally:
        made = {network.bridge, *ports(network)}
        network.close()
        assert not made & host_links(), "closing the network left its interfaces on the host"
