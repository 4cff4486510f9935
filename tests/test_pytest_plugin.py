"""The pytest plugin (``@pytest.mark.nsbox``, ``nsbox_box``), run by pytest's own ``pytester``: root and rootless.

The rootless run is pytest itself as uid 65534: Debian's ``/usr/bin/python3`` with ``PYTHONPATH`` on
world-readable copies of nsbox (conftest's ``rootless_dir``) and of pytest with its dependencies. nsbox's
metadata is not copied, so pytest's entry points do not see it there: the plugin is loaded with
``-p nsbox.pytest_plugin``.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from conftest import NOBODY, ROOTLESS_PATH, ROOTLESS_PYTHON

pytest_plugins = ["pytester"]

#: One test module with passing, failing and erroring tests in boxes, for both runs.
INNER = """\
import ctypes, os, socket, subprocess, time
import pytest

# Namespaces this machine cannot make for this user: an error, with the reason.
CANNOT = {"user": True, "mount_proc": True} if os.geteuid() == 0 else {"net": True, "user": False}


@pytest.fixture
def caller_pid():
    yield os.getpid()
    with open("teardown.log", "a") as f:
        f.write(f"{os.getpid()}\\n")


@pytest.mark.nsbox(pid=True, hostname="t1", net=True, mount_proc=True)
def test_passes_in_a_box(caller_pid):
    assert os.getpid() == 1 and caller_pid not in (1, os.getpid())
    assert socket.gethostname() == "t1"
    assert sorted(p for p in os.listdir("/proc") if p.isdigit()) == ["1"]
    socket.create_server(("127.0.0.1", 80)).close()
    print("printed in the box, uid", os.getuid())


@pytest.mark.nsbox(pid=True)
def test_fails_in_a_box(caller_pid):
    numbers = [1, 2, 3]
    assert sum(numbers) == 7


@pytest.mark.nsbox(hostname="x" * 100)
def test_bad_options():
    pass


@pytest.mark.nsbox(**CANNOT)
def test_namespaces_cannot_be_made():
    pass


@pytest.mark.nsbox(pid=True, timeout=0.5)
def test_times_out():
    time.sleep(30)


@pytest.mark.nsbox(pid=True)
def test_crashes():
    import faulthandler
    faulthandler.disable()
    ctypes.string_at(0)


@pytest.mark.nsbox(net=True)
def test_skips_in_a_box():
    pytest.skip("skipped in the box")


def test_not_in_a_box():
    assert os.getpid() != 1


def test_box_fixture_kills_the_box_even_when_the_test_fails(nsbox_box):
    box = nsbox_box(["sleep", "1000.25"], pid=True)
    piped = nsbox_box(["sleep", "1000.5"], net=True, stdout=subprocess.PIPE)
    with open("boxes.pid", "w") as f:
        f.write(f"{box.pid} {piped.pid}")
    assert box.poll() is None and piped.poll() is None
    raise AssertionError("fails with two boxes running")
"""


def running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def check_report(result: pytest.RunResult, workdir: Path, uid_inside: int) -> None:
    result.assert_outcomes(passed=2, failed=4, errors=2, skipped=1)
    result.stdout.fnmatch_lines_random(
        [
            # pytest's rewritten assertion message, and the traceback from the box
            "E*assert 6 == 7",
            "E*+  where 6 = sum(*1, 2, 3*)",
            '*File "*test_inner.py", line *, in test_fails_in_a_box',
            "    assert sum(numbers) == 7",
            # the setup errors, with their reasons
            "*ERROR at setup of test_bad_options*",
            "nsbox cannot make the namespaces of @pytest.mark.nsbox(hostname='xxx*'): "
            "ValueError: hostname is 100 bytes long; the limit is 64",
            "*ERROR at setup of test_namespaces_cannot_be_made*",
            "E*subprocess.TimeoutExpired: Command 'test_times_out()' timed out after 0.5 seconds",
            "E*nsbox.BoxCrashed: test_crashes() did not return: * was killed by SIGSEGV",
            "SKIPPED [[]1[]] test_inner.py:*: skipped in the box",
            f"printed in the box, uid {uid_inside}",
            "E*AssertionError: fails with two boxes running",
        ]
    )
    # Fixtures run in the test process, not in the box.
    torn_down = (workdir / "teardown.log").read_text().split()
    assert len(torn_down) == 2 and len(set(torn_down)) == 1 and torn_down[0] != "1"
    # Boxes from nsbox_box are killed and reaped at teardown, the test having failed.
    for pid in map(int, (workdir / "boxes.pid").read_text().split()):
        assert not running(pid)


def test_plugin_as_root(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_inner=INNER)
    # Loaded through the pytest11 entry point: no -p needed.
    result = pytester.runpytest_subprocess("-rA", "-p", "no:cacheprovider", "--strict-markers")
    result.stdout.fnmatch_lines(["plugins:*nsbox-*"])
    check_report(result, pytester.path, uid_inside=0)
    result.stdout.fnmatch_lines(
        [
            "nsbox cannot make the namespaces of @pytest.mark.nsbox(user=True, mount_proc=True): "
            "PermissionError: [[]Errno 1[]] cannot mount a new proc on /proc: Operation not permitted*"
        ]
    )


def _with_dependencies(name: str) -> list[importlib.metadata.Distribution]:
    found: dict[str, importlib.metadata.Distribution] = {}
    todo = [name]
    while todo:
        dist = importlib.metadata.distribution(todo.pop())
        if dist.metadata["Name"].lower() in found:
            continue
        found[dist.metadata["Name"].lower()] = dist
        for text in dist.requires or ():
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return list(found.values())


@pytest.fixture(scope="session")
def rootless_pytest_dir() -> Iterator[Path]:
    """World-readable copies of the installed pytest and its dependencies, files and metadata."""
    base = Path(tempfile.mkdtemp(prefix="nsbox-rootless-pytest-", dir="/tmp"))
    try:
        for dist in _with_dependencies("pytest"):
            for file in dist.files or ():
                if file.parts[0] != ".." and "__pycache__" not in file.parts:
                    target = base / file
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(Path(str(dist.locate_file(file))), target)
        for root, dirs, files in os.walk(base):
            for name in dirs:
                os.chmod(os.path.join(root, name), 0o755)
            for name in files:
                os.chmod(os.path.join(root, name), 0o644)
        base.chmod(0o755)
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_plugin_rootless(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    world_tmp: Path,
    rootless_dir: Path,
    rootless_pytest_dir: Path,
) -> None:
    test_file = world_tmp / "test_inner.py"
    test_file.write_text(INNER)
    test_file.chmod(0o644)
    monkeypatch.chdir(world_tmp)  # pytester runs its command in the current directory
    env = ["env", "-i", f"PATH={ROOTLESS_PATH}", f"PYTHONPATH={rootless_dir}:{rootless_pytest_dir}", "HOME=/tmp"]
    drop = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    pytest_args = ["-p", "nsbox.pytest_plugin", "-rA", "-p", "no:cacheprovider", "--strict-markers"]
    started = time.monotonic()
    result = pytester.run(*env, *drop, ROOTLESS_PYTHON, "-m", "pytest", *pytest_args, test_file.name, timeout=120)
    assert time.monotonic() - started < 120
    assert (world_tmp / "teardown.log").stat().st_uid == NOBODY
    # A user namespace is added for the unprivileged user, who is root inside.
    check_report(result, world_tmp, uid_inside=0)
    result.stdout.fnmatch_lines(
        [
            "nsbox cannot make the namespaces of @pytest.mark.nsbox(net=True, user=False): "
            "PermissionError: [[]Errno 1[]] cannot create the network namespace: Operation not permitted*"
        ]
    )


def test_marker_is_registered(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.nsbox(**options): run the test function inside new Linux namespaces*"])


def test_marker_takes_keyword_options_only(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.nsbox(True)
        def test_positional():
            pass
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*TypeError: @pytest.mark.nsbox takes keyword options only, not (True,)*"])


def test_readme_pytest_example(pytester: pytest.Pytester) -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    [example] = [b for b in re.findall(r"```python\n(.*?)```", readme, flags=re.S) if "@pytest.mark.nsbox" in b]
    pytester.makepyfile(test_readme=example)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--strict-markers")
    result.assert_outcomes(passed=2)
