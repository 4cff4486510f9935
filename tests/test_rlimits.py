"""``rlimits=``: resource limits set in the box before exec, each shown holding inside and, as control, not
holding in the same box without it (root and rootless)."""

from __future__ import annotations

import errno
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import nsbox
from helpers.procs import fd_count
from helpers.rootless import SIDES, Body, Rootless


@pytest.mark.parametrize("side", SIDES)
def test_fsize_stops_a_big_write(side: str, body: Body, world_tmp: Path) -> None:
    result = body(side, "files_written_under_fsize", path=str(world_tmp / "big"), limit=1 << 20, size=3 << 20)
    assert result["bare"] == {"status": "0", "size": 3 << 20}
    # The shell reports head's death by SIGXFSZ (128 + 25); the file stops at the limit.
    assert result["limited"] == {"status": str(128 + signal.SIGXFSZ), "size": 1 << 20}


@pytest.mark.parametrize("side", SIDES)
def test_nofile_limits_open_files(side: str, body: Body) -> None:
    result = body(side, "files_opened_under_nofile", limit=64)
    assert result["bare"]["opened"] > 64
    # 0-2 are open already.
    assert result["limited"] == {"opened": 61, "errno": errno.EMFILE}


@pytest.mark.parametrize("side", SIDES)
def test_nproc_contains_a_fork_bomb(side: str, body: Body, world_tmp: Path) -> None:
    log = world_tmp / "refused"
    log.touch()
    log.chmod(0o666)
    result = body(side, "fork_bomb_under_nproc", limit=24, log=str(log))
    # Forks failed inside with EAGAIN, the box never had more than its limit, the caller kept spawning, and
    # killing PID 1 ended every process.
    assert result["errnos"] == [errno.EAGAIN]
    assert 1 <= result["running"] <= 24
    assert result["host"] == 0
    assert result["left"] == 0


def test_a_soft_and_hard_pair_and_infinity() -> None:
    r = nsbox.run(
        ["sh", "-c", "ulimit -Sn; ulimit -Hn; ulimit -Hc"],
        rlimits={"nofile": (100, 200), "core": (0, resource.RLIM_INFINITY)},
        capture_output=True,
        text=True,
    )
    assert r.stdout.split() == ["100", "200", "unlimited"]


def test_raising_a_hard_limit_without_privilege_names_the_limit(rootless: Rootless) -> None:
    result = rootless(
        """
        import resource
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        try:
            nsbox.run(["true"], user=True, rlimits={"core": 0, "nofile": hard + 1})
        except OSError as e:
            emit([type(e).__name__, e.step, str(e)])
        """
    )
    assert result[0] == "PermissionError" and result[1] == "rlimits"
    assert "set the resource limit nofile" in result[2]


@pytest.mark.unit
@pytest.mark.parametrize(
    ("rlimits", "error", "needle"),
    [
        ({"files": 3}, ValueError, "rlimits names 'files', which is not a resource limit"),
        ({"nofile": -5}, ValueError, "must be 0 or more"),
        ({"nofile": (20, 10)}, ValueError, "soft limit 20 is above the hard limit 10"),
        ({"nofile": "12Q"}, TypeError, "must be an int"),
        ({"nofile": True}, TypeError, "must be an int"),
        ({1: 3}, TypeError, "in lower case"),
        ([("nofile", 3)], TypeError, "must be a mapping"),
    ],
)
def test_bad_limits_are_refused_before_anything_is_made(rlimits: object, error: type[Exception], needle: str) -> None:
    before = fd_count()
    with pytest.raises(error, match=needle):
        nsbox.run(["true"], pid=True, rlimits=rlimits)  # type: ignore[arg-type]
    assert fd_count() == before


def test_the_command_line_takes_them() -> None:
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "nsbox",
            "--rlimit",
            "nofile=50:60",
            "--rlimit=core=0",
            "--",
            "sh",
            "-c",
            "ulimit -Sn; ulimit -Hn; ulimit -c",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["50", "60", "0"]
