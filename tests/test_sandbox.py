"""``sandbox=True``: one switch for code you do not trust. Every attack is tried from inside a sandbox and, as
control, from a bare box where it works; the effects are checked on the host too. Root and rootless."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import nsbox
from helpers.rootless import SIDES, Body

ZERO = "0000000000000000"


@pytest.fixture
def host_dir() -> Iterator[Path]:
    """A directory every user may write to, outside /tmp (which a sandbox replaces with its own)."""
    path = Path(tempfile.mkdtemp(prefix="nsbox-sandbox-", dir="/var/tmp"))
    path.chmod(0o777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("side", SIDES)
def test_a_sandbox_refuses_the_attacks_a_bare_box_allows(side: str, body: Body, host_dir: Path) -> None:
    bare = body(side, "attacks_from_a_sandbox", directory=str(host_dir), bare=True)
    assert (bare["write_host"], bare["write_tmp"], bare["connect_host"], bare["signal_caller"]) == (0, 0, 0, 0)
    assert bare["host_saw_connection"] and bare["host_has_escaped"] and bare["host_has_tmp_file"]

    boxed = body(side, "attacks_from_a_sandbox", directory=str(host_dir))
    # The host's root is read-only; /tmp is the box's own, and gone with it.
    assert boxed["write_host"] == errno.EROFS and not boxed["host_has_escaped"]
    assert boxed["write_tmp"] == 0 and not boxed["host_has_tmp_file"]
    # Loopback only, its own: the host's listener is not there and saw nothing.
    assert boxed["connect_host"] == errno.ECONNREFUSED and not boxed["host_saw_connection"]
    # Its own PIDs: the caller cannot be named, let alone signalled.
    assert boxed["signal_caller"] == errno.ESRCH
    assert boxed["processes"] == [1]
    status = boxed["status"]
    assert {k: status[k] for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")} == dict.fromkeys(
        ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"), ZERO
    )
    assert status["NoNewPrivs"] == "1"
    assert status["Seccomp"] == "2"
    assert boxed["outlived_caller"] is False


def test_an_explicit_option_overrides_its_part() -> None:
    host_net = os.stat("/proc/self/ns/net").st_ino
    r = nsbox.run(["stat", "-Lc", "%i", "/proc/self/ns/net"], sandbox=True, net=False, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout) == host_net
    # Control: the sandbox's own part is a network namespace of its own.
    r = nsbox.run(["stat", "-Lc", "%i", "/proc/self/ns/net"], sandbox=True, capture_output=True, text=True)
    assert int(r.stdout) != host_net
    # A kept capability, and rlimits replace the sandbox's.
    r = nsbox.run(
        ["sh", "-c", "ulimit -n; grep CapEff /proc/self/status"],
        sandbox=True,
        capabilities=["net_raw"],
        rlimits={"nofile": 77},
        capture_output=True,
        text=True,
    )
    assert r.stdout.split() == ["77", "CapEff:", f"{1 << 13:016x}"]


def test_ordinary_programs_run_in_a_sandbox() -> None:
    r = nsbox.run(
        ["sh", "-c", "echo hello | tr a-z A-Z; ps -o comm= -p 1; python3 -c 'print(6*7)'; id -u"],
        sandbox=True,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["HELLO", "sh", "42", "0"]


def test_a_root_callers_sandbox_is_nobody_on_the_host() -> None:
    with nsbox.Popen(["sleep", "1000"], sandbox=True) as box:
        try:
            with open(f"/proc/{box.pid}/status") as f:
                uids = next(line.split()[1:] for line in f if line.startswith("Uid:"))
        finally:
            box.kill()
    assert uids == ["65534"] * 4


def test_a_sandboxed_function() -> None:
    def look() -> tuple[int, str]:
        with open("/proc/self/status") as f:
            nnp = next(line.split()[1] for line in f if line.startswith("NoNewPrivs:"))
        return os.getpid(), nnp

    assert nsbox.call(look, sandbox=True) == (1, "1")


def test_the_command_line_takes_it() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "nsbox", "--sandbox", "--", "sh", "-c", "id -u; touch /x"],
        capture_output=True,
        text=True,
    )
    assert r.stdout == "0\n"
    assert "Read-only file system" in r.stderr


@pytest.mark.nsbox(sandbox=True)
def test_the_pytest_marker_takes_it() -> None:
    # This test body runs in a sandbox: PID 1, no privileges, the host's files read-only.
    with open("/proc/self/status") as f:
        status = dict(line.split(":\t", 1) for line in f.read().splitlines() if ":\t" in line)
    assert os.getpid() == 1
    assert (status["NoNewPrivs"].strip(), status["CapEff"].strip()) == ("1", ZERO)
    with pytest.raises(OSError) as info:
        open("/var/nsbox-escaped", "w").close()  # the host's own files (/tmp is the box's)
    assert info.value.errno == errno.EROFS


@pytest.mark.parametrize("side", SIDES)
def test_the_hosts_unix_sockets_are_out_of_a_sandboxs_reach(side: str, body: Body, host_dir: Path) -> None:
    # A read-only mount does not stop connect(): the session's runtime directory and /run are hidden.
    result = body(side, "unix_socket_from_a_sandbox", directory=str(host_dir))
    assert result == {"bare": "hello from the host", "sandbox": str(errno.ENOENT)}


def test_the_hosts_run_directory_is_hidden() -> None:
    r = nsbox.run(["sh", "-c", "ls -A /run | wc -l; touch /run/x && echo writable"], sandbox=True, capture_output=True)
    assert r.stdout.split() == [b"0", b"writable"]
    assert not os.path.exists("/run/x")


def test_a_sandbox_as_host_root_is_refused() -> None:
    with pytest.raises(ValueError, match="would run the box as host root"):
        nsbox.run(["true"], sandbox=True, user=False)


def test_limits_given_add_to_the_sandboxs() -> None:
    r = nsbox.run(["sh", "-c", "ulimit -t; ulimit -n"], sandbox=True, rlimits={"cpu": 10}, capture_output=True)
    assert r.stdout.split() == [b"10", b"1024"]


class Gadget:
    """Unpickled, it calls ``os.getpid`` where it is unpickled."""

    def __reduce__(self) -> tuple[object, tuple[()]]:
        return (os.getpid, ())


def test_a_sandboxed_functions_result_cannot_run_code_in_the_caller() -> None:
    # Control: outside a sandbox what the function returns is unpickled as it says (here: a call of the caller's).
    assert nsbox.call(Gadget, pid=True) == os.getpid()
    with pytest.raises(TypeError, match=r"plain data only, not posix\.getpid"):
        nsbox.call(Gadget, sandbox=True)
    # Plain data and built-in exceptions still come back.
    assert nsbox.call(lambda: {"a": [1, 2.5, b"x", {3}], "b": complex(1, 2)}, sandbox=True) == {
        "a": [1, 2.5, b"x", {3}],
        "b": complex(1, 2),
    }
    with pytest.raises(KeyError):
        nsbox.call(dict().__getitem__, ("missing",), sandbox=True)


def test_a_sandboxed_function_has_none_of_the_callers_fds(tmp_path: Path) -> None:
    with open(tmp_path / "caller's", "w") as f:

        def write() -> str:
            try:
                os.write(f.fileno(), b"from the box")
                return "written"
            except OSError as e:
                return errno.errorcode[e.errno]

        assert nsbox.call(write, pid=True) == "written"  # control: a plain call has them
        assert nsbox.call(write, sandbox=True) == "EBADF"
    assert (tmp_path / "caller's").read_text() == "from the box"
