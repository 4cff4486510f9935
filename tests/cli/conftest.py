"""Fixtures of the command-line tests: a runner as root and as uid 65534, and a box started through ``nsbox``."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path

import pytest

import nsbox
from helpers.cli import Box, Runner, root_runner, rootless_runner, stop, wait_for_descendant
from helpers.procs import children_of, wait_until


@pytest.fixture(scope="module")
def rootless_package() -> Iterator[Path]:
    """A world-readable copy of the installed nsbox package, for the unprivileged interpreter."""
    if os.geteuid() != 0:
        pytest.fail("the CLI tests run as root; they drop to uid 65534 themselves for the rootless half")
    for tool in ("setpriv", "unshare", "nsenter", "setsid", "ps"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is needed (util-linux, procps)")
    base = Path(tempfile.mkdtemp(prefix="nsbox-cli-rootless-", dir="/tmp"))
    try:
        shutil.copytree(os.path.dirname(nsbox.__file__), base / "nsbox", ignore=shutil.ignore_patterns("__pycache__"))
        for root, dirs, files in os.walk(base):
            for name in [*dirs, *files, "."]:
                path = os.path.join(root, name)
                os.chmod(path, os.stat(path).st_mode | 0o444 | (0o111 if os.path.isdir(path) else 0))
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(params=["root", "rootless"])
def runner(request: pytest.FixtureRequest) -> Runner:
    if request.param == "root":
        return root_runner()
    return rootless_runner(request.getfixturevalue("rootless_package"))


@pytest.fixture
def root() -> Runner:
    return root_runner()


@pytest.fixture(autouse=True)
def no_leftover_children() -> Iterator[None]:
    """Every test reaps what it starts: no child of the test runner may be left behind."""
    yield
    if not wait_until(lambda: not children_of(os.getpid()), timeout=3):
        leftover = children_of(os.getpid())
        for pid in leftover:
            with suppress(OSError):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
        pytest.fail(f"the test left child processes behind: {leftover}")


@pytest.fixture
def start_box(runner: Runner) -> Iterator[Callable[..., Box]]:
    started: list[subprocess.Popen[str]] = []

    def start(*args: str, command: list[str] | None = None, comm: str = "sleep") -> Box:
        front = runner.popen(command or runner.nsbox_argv(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        started.append(front)
        return Box(front, wait_for_descendant(front, comm))

    yield start
    for front in started:
        stop(front)
