"""`import nsbox` stays cheap: the public names load on first use, and a plain run loads only what it needs."""

from __future__ import annotations

import subprocess
import sys

import pytest

import nsbox

#: Nothing here needs root: scripts/test runs this module once more as uid 65534.
pytestmark = pytest.mark.unit

#: What nsbox.call (pickle, traceback), nsbox.Network (secrets and hmac, ipaddress) and the HTML reprs need.
NOT_FOR_A_PLAIN_RUN = ("pickle", "traceback", "secrets", "hmac", "ipaddress", "html")


def _fresh(code: str) -> list[str]:
    """The lines ``code`` prints in a fresh interpreter (cwd /, so this checkout's files are not importable)."""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60, cwd="/"
    ).stdout.splitlines()


def test_import_nsbox_leaves_out_the_modules_a_plain_run_does_not_need() -> None:
    loaded = _fresh("import sys\nimport nsbox\nprint(*sys.modules, sep='\\n')")
    assert "nsbox" in loaded
    assert [m for m in NOT_FOR_A_PLAIN_RUN if m in loaded] == []


def test_a_plain_run_leaves_out_the_modules_it_does_not_need() -> None:
    loaded = _fresh(
        "import sys\nimport nsbox\n"
        "assert nsbox.run(['true'], capture_output=True).returncode == 0\n"
        "print(*sys.modules, sep='\\n')"
    )
    assert {"nsbox._run", "nsbox._popen"} <= set(loaded)
    assert [m for m in NOT_FOR_A_PLAIN_RUN if m in loaded] == []


# A thread loads every public name for the first time; the main thread forks meanwhile, and the child loads them
# too. A fork copies the import locks the thread holds, held: the child must not find a module half made.
FORK_WHILE_LOADING = """
import os, select, threading
import nsbox

def load_all():
    for name in nsbox.__all__:
        getattr(nsbox, name)

loader = threading.Thread(target=load_all)
loader.start()
pid = os.fork()
if pid == 0:
    load_all()
    os._exit(0)
loader.join()
pidfd = os.pidfd_open(pid)
if not select.select([pidfd], [], [], 20)[0]:
    os.kill(pid, 9)
    print("hung")
print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"""


def test_a_child_forked_while_a_thread_loads_nsbox_loads_it_too() -> None:
    for _ in range(10):
        assert _fresh(FORK_WHILE_LOADING) == ["0"]


@pytest.mark.parametrize("name", nsbox.__all__)
def test_each_public_name_is_listed_and_loads_on_its_own(name: str) -> None:
    # In a fresh interpreter, so that the name's submodule is not loaded already by another name or a test.
    value = getattr(nsbox, name)
    expected = value if isinstance(value, str) else f"{value.__module__}.{value.__qualname__}"
    got = _fresh(
        "import nsbox\n"
        f"assert {name!r} in dir(nsbox)\n"
        f"from nsbox import {name} as value\n"
        f"assert nsbox.{name} is value\n"
        "print(value if isinstance(value, str) else f'{value.__module__}.{value.__qualname__}')"
    )
    assert got == [expected]


def test_star_import_gives_every_public_name() -> None:
    names = _fresh("from nsbox import *\nprint(*sorted(n for n in globals() if not n.startswith('__')), sep='\\n')")
    assert names == sorted(n for n in nsbox.__all__ if not n.startswith("__"))


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match=r"^module 'nsbox' has no attribute 'rnu'$"):
        nsbox.rnu  # type: ignore[attr-defined]  # noqa: B018
    with pytest.raises(ImportError, match="cannot import name 'rnu' from 'nsbox'"):
        from nsbox import rnu  # type: ignore[attr-defined]  # noqa: F401


def test_the_pytest_plugin_is_loaded_through_its_entry_point(pytestconfig: pytest.Config) -> None:
    assert pytestconfig.pluginmanager.get_plugin("nsbox") is sys.modules["nsbox.pytest_plugin"]
