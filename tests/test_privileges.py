"""``no_new_privs`` and ``capabilities``: what root inside a box may still do, tried from inside, checked from the
host too, each against the same attempt in a box without the protection (root and rootless)."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import nsbox
from helpers.procs import fd_count
from helpers.rootless import SIDES, Body

ATTEMPTS = ("mount", "sethostname", "raw_socket")
ZERO = "0000000000000000"


@pytest.fixture
def setuid_id(world_tmp: Path) -> Iterator[str]:
    """A setuid-root copy of ``id``, in a directory every user can reach (on a mount without ``nosuid``)."""
    program = world_tmp / "suid-id"
    shutil.copy("/usr/bin/id", program)
    os.chown(program, 0, 0)
    program.chmod(0o4755)
    yield str(program)


@pytest.fixture
def victim(world_tmp: Path) -> str:
    """A file owned by the box's root for it to chown to another id."""
    path = world_tmp / "victim"
    path.write_text("mine")
    path.chmod(0o666)
    return str(path)


@pytest.mark.parametrize("side", SIDES)
def test_no_new_privs_makes_a_setuid_root_program_gain_nothing(side: str, body: Body, setuid_id: str) -> None:
    # As root the box runs as 65534 (subprocess's user=); rootless, the caller is 65534 already.
    run_as = 65534 if side == "root" else None
    result = body(side, "setuid_program_in_a_box", program=setuid_id, run_as=run_as)
    # Control: without no_new_privs the setuid bit makes it root.
    assert result["False"] == {"euid": "0", "rc": 0, "outside": "0"}
    # With it: the kernel ignores the bit; the host sees NoNewPrivs: 1 on the box's process.
    assert result["True"] == {"euid": "65534", "rc": 0, "outside": "1"}


@pytest.mark.parametrize("side", SIDES)
def test_no_capabilities_refuses_what_root_in_the_box_could_do(side: str, body: Body, victim: str) -> None:
    bare = body(side, "privileges_in_a_box", victim=victim)
    confined = body(side, "privileges_in_a_box", victim=victim, capabilities=())
    # Control: root in a bare box mounts, sets its hostname, opens raw sockets, with every capability.
    assert {name: bare["inside"][name] for name in ATTEMPTS} == dict.fromkeys(ATTEMPTS, 0)
    assert bare["inside"]["status"]["CapEff"] != ZERO and bare["outside"]["CapBnd"] != ZERO
    # Without capabilities each fails with EPERM, and both sides see every set empty.
    assert {name: confined["inside"][name] for name in ATTEMPTS} == dict.fromkeys(ATTEMPTS, errno.EPERM)
    for seen in (confined["inside"]["status"], confined["outside"]):
        assert {k: seen[k] for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")} == dict.fromkeys(
            ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"), ZERO
        )
    if side == "root":
        # Host root's box (no user namespace) may give its file away; without CAP_CHOWN it may not. (Rootless,
        # the box maps one id: there is no other id to give a file to.)
        assert bare["inside"]["chown"] == 0 and os.stat(victim).st_uid == 1234
        os.chown(victim, 0, 0)
        assert confined["inside"]["chown"] == errno.EPERM and os.stat(victim).st_uid == 0


def test_a_kept_capability_survives_the_switch_to_another_user() -> None:
    probe = "import socket; socket.create_server(('127.0.0.1', 80)).close(); print('bound')"
    options = {"net": True, "user": 1000}
    # Control: uid 1000 may not bind a port below 1024, even in a network namespace of its own.
    bare = nsbox.run(["python3", "-c", probe], capture_output=True, text=True, **options)
    assert bare.returncode != 0 and "Permission denied" in bare.stderr
    kept = nsbox.run(
        ["python3", "-c", probe], capture_output=True, text=True, capabilities=["CAP_NET_BIND_SERVICE"], **options
    )
    assert kept.stdout == "bound\n", kept.stderr
    with nsbox.Popen(["sleep", "1000"], capabilities=["net_bind_service"], **options) as box:
        try:
            with open(f"/proc/{box.pid}/status") as f:
                status = dict(line.split(":\t", 1) for line in f.read().splitlines() if ":\t" in line)
        finally:
            box.kill()
    bit = f"{1 << 10:016x}"  # CAP_NET_BIND_SERVICE is 10
    assert {k: status[k].strip() for k in ("CapEff", "CapPrm", "CapBnd", "CapAmb")} == dict.fromkeys(
        ("CapEff", "CapPrm", "CapBnd", "CapAmb"), bit
    )


@pytest.mark.unit
@pytest.mark.parametrize(
    ("options", "error", "needle"),
    [
        ({"capabilities": ["net_bind"]}, ValueError, "'net_bind', which is not a capability"),
        ({"capabilities": "CAP_NET_RAW"}, TypeError, "collection of capability names"),
        ({"capabilities": [10]}, TypeError, "named by strings"),
        ({"no_new_privs": 1}, TypeError, "True or False"),
    ],
)
def test_bad_privilege_options_are_refused_before_anything_is_made(
    options: dict[str, object], error: type[Exception], needle: str
) -> None:
    before = fd_count()
    with pytest.raises(error, match=needle):
        nsbox.run(["true"], pid=True, **options)  # type: ignore[arg-type]
    assert fd_count() == before


def test_dropping_capabilities_without_a_user_namespace_needs_root(rootless: object) -> None:
    result = rootless(  # type: ignore[operator]
        """
        try:
            nsbox.run(["true"], capabilities=())
        except ValueError as e:
            emit(str(e))
        """
    )
    assert "needs root or a user namespace" in result
    # With one, it works rootless.
    assert rootless('emit(nsbox.run(["true"], user=True, capabilities=()).returncode)') == 0  # type: ignore[operator]


def test_capabilities_are_dropped_in_a_called_function_too() -> None:
    def status() -> dict[str, str]:
        with open("/proc/self/status") as f:
            lines = dict(line.split(":\t", 1) for line in f.read().splitlines() if ":\t" in line)
        return {k: lines[k].strip() for k in ("CapEff", "CapBnd", "NoNewPrivs")}

    assert nsbox.call(status, pid=True, user=True, capabilities=(), no_new_privs=True) == {
        "CapEff": ZERO,
        "CapBnd": ZERO,
        "NoNewPrivs": "1",
    }
    # Control: the same box keeps every capability of its user namespace.
    assert nsbox.call(status, pid=True, user=True)["CapEff"] != ZERO


def test_the_command_line_takes_them(tmp_path: Path) -> None:
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "nsbox",
            "--user",
            "--no-new-privs",
            "--caps=net_raw",
            "--",
            "grep",
            "-E",
            "^(CapEff|NoNewPrivs)",
            "/proc/self/status",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["CapEff:", f"{1 << 13:016x}", "NoNewPrivs:", "1"]


@pytest.mark.parametrize("side", SIDES)
def test_an_init_and_the_command_it_starts_are_both_confined(side: str, body: Body) -> None:
    result = body(side, "confined_init")
    assert result == {"command": [ZERO, "1"], "init": [ZERO, "1"]}


@pytest.mark.parametrize("side", SIDES)
def test_an_exec_into_a_box_is_confined_as_the_box(side: str, body: Body) -> None:
    result = body(side, "exec_into_a_confined_box")
    # Control: an exec into a bare box has its user namespace's capabilities.
    assert result["bare"] != [ZERO, "0"] and result["bare"][1] == "0"
    assert result["confined"] == [ZERO, "1"]
    assert result["exec_popen"] == [ZERO, "1"]


def test_an_exec_into_a_box_with_a_time_namespace_cannot_drop_capabilities_and_says_so() -> None:
    with nsbox.Popen(["sleep", "1000"], pid=True, time=True, capabilities=()) as box:
        try:
            with pytest.raises(ValueError, match="time namespace cannot drop capabilities"):
                box.exec(["true"])
            # Control: without capabilities= the same exec works.
            assert nsbox.run(["true"], target=box.pid).returncode == 0
        finally:
            box.kill()
