"""The command: how it is found (``PATH``, ``cwd``, ``executable``), and how exec and chdir fail (subprocess's
exceptions, with errno and filename), on every spawn path.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import nsbox
from helpers.alike import both, same
from helpers.procs import children_of, fd_count

SPAWN_PATHS = [
    pytest.param({}, id="plain"),
    pytest.param({"pid": True, "mount_proc": True}, id="pid"),
    pytest.param({"user": True, "net": True, "uts": True, "ipc": True, "time": True}, id="user-ns-child-maps"),
    # Several ranges: the parent writes the maps. Root stays root (0 -> 0), so paths under /root still resolve.
    pytest.param(
        {"uid_map": [(0, 0, 1), (1, 100000, 65536)], "gid_map": [(0, 0, 1), (1, 100000, 65536)]},
        id="user-ns-parent-maps",
    ),
]


def expect_like_subprocess(args: Any, options: dict[str, Any], **kwargs: Any) -> OSError:
    """Runs ``args`` through subprocess and nsbox; both must fail the same way. Returns nsbox's error."""
    with pytest.raises(OSError) as expected:
        subprocess.run(args, capture_output=True, **kwargs)
    fds = fd_count()
    with pytest.raises(OSError) as actual:
        nsbox.run(args, capture_output=True, **kwargs, **options)
    assert fd_count() == fds
    assert children_of(os.getpid()) == []
    e, want = actual.value, expected.value
    assert (type(e), e.errno, e.strerror, e.filename) == (type(want), want.errno, want.strerror, want.filename)
    assert str(e) == str(want)
    return e


@pytest.mark.parametrize("options", SPAWN_PATHS)
@pytest.mark.parametrize("program", ["nsbox-no-such-program", "/nonexistent/dir/program"])
def test_missing_program_raises_file_not_found(program: str, options: dict[str, Any]) -> None:
    e = expect_like_subprocess([program, "arg"], options)
    assert type(e) is FileNotFoundError
    assert e.errno == errno.ENOENT
    assert e.filename == program


@pytest.mark.parametrize("options", SPAWN_PATHS)
def test_program_without_execute_permission_raises_permission_error(world_tmp: Path, options: dict[str, Any]) -> None:
    script = world_tmp / "not-executable"
    script.write_text("#!/bin/sh\necho should not run\n")
    script.chmod(0o644)
    e = expect_like_subprocess([str(script)], options)
    assert type(e) is PermissionError
    assert e.errno == errno.EACCES
    assert e.filename == str(script)


def test_directory_as_program_raises_permission_error(tmp_path: Path) -> None:
    e = expect_like_subprocess([str(tmp_path)], {"pid": True})
    assert type(e) is PermissionError


def test_file_that_is_not_a_program_raises_exec_format_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x00\x01\x02 not a program\n")
    junk.chmod(0o755)
    e = expect_like_subprocess([str(junk)], {"net": True})
    assert e.errno == errno.ENOEXEC


def test_program_missing_from_env_path_raises_file_not_found(tmp_path: Path) -> None:
    e = expect_like_subprocess(["ls"], {"pid": True}, env={"PATH": str(tmp_path)})
    assert type(e) is FileNotFoundError
    assert e.filename == "ls"


@pytest.mark.parametrize("options", SPAWN_PATHS)
def test_missing_cwd_raises_file_not_found(tmp_path: Path, options: dict[str, Any]) -> None:
    cwd = str(tmp_path / "missing")
    e = expect_like_subprocess(["true"], options, cwd=cwd)
    assert type(e) is FileNotFoundError
    assert e.filename == cwd


def test_file_as_cwd_raises_not_a_directory(tmp_path: Path) -> None:
    (tmp_path / "file").touch()
    e = expect_like_subprocess(["true"], {"pid": True}, cwd=tmp_path / "file")
    assert type(e) is NotADirectoryError
    assert e.errno == errno.ENOTDIR


def test_env_path_is_used_to_find_the_program(tmp_path: Path) -> None:
    prog = tmp_path / "nsbox-only-here"
    prog.write_text("#!/bin/sh\necho found me\n")
    prog.chmod(0o755)
    a, b = both(["nsbox-only-here"], env={"PATH": f"/nonexistent:{tmp_path}"}, capture_output=True)
    same(a, b)
    assert a.stdout == b"found me\n"


def test_relative_program_is_found_from_the_new_cwd(tmp_path: Path) -> None:
    (tmp_path / "prog").write_text("#!/bin/sh\necho relative\n")
    (tmp_path / "prog").chmod(0o755)
    a, b = both(["./prog"], cwd=tmp_path, capture_output=True)
    same(a, b)
    assert a.stdout == b"relative\n"


def test_executable_replaces_the_program_but_not_argv0() -> None:
    a, b = both(["custom-name", "-c", 'echo "$0"'], executable="/bin/sh", capture_output=True, text=True)
    same(a, b)
    assert a.stdout == "custom-name\n"


def test_run_passes_sys_executable_programs() -> None:
    a, b = both([sys.executable, "-c", "import sys; print(sys.argv[1:])", "x", "y"], capture_output=True, text=True)
    same(a, b)
    assert a.stdout == "['x', 'y']\n"


def test_path_search_goes_on_past_a_program_that_is_not_executable(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    for directory, mode in [(first, 0o644), (second, 0o755)]:
        directory.mkdir()
        (directory / "prog").write_text(f"#!/bin/sh\necho {directory.name}\n")
        (directory / "prog").chmod(mode)
    a, b = both(["prog"], env={"PATH": f"{first}:{second}"}, capture_output=True, text=True)
    same(a, b)
    assert a.stdout == "second\n"
