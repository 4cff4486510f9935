"""nsbox.run / nsbox.Popen behave like subprocess.run / subprocess.Popen."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

import nsbox
from helpers.alike import both, same
from helpers.procs import kill_and_reap, kill_pid, proc_comm, wait_gone
from helpers.rootless import Rootless


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        (["echo", "hello", "world"], {}),
        (["sh", "-c", "echo out; echo err >&2; exit 3"], {}),
        (["false"], {}),
        (["sh", "-c", "kill -TERM $$"], {}),
        (["cat"], {"input": b"some\x00bytes\n"}),
        (["printf", "%s|", "a b", "", "c"], {}),
        (["sh", "-c", 'printf "%s\\n" "$0" "$@"', "zero", "one", "two"], {}),
        ("echo $((6 * 7)) $0", {"shell": True}),
    ],
)
def test_no_namespace_option_gives_the_same_result_as_subprocess_run(args: Any, kwargs: dict[str, Any]) -> None:
    a, b = both(args, capture_output=True, **kwargs)
    same(a, b)


def test_stdout_and_stderr_pipes_are_separate() -> None:
    r = nsbox.run(
        ["sh", "-c", "echo to-out; echo to-err >&2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, pid=True
    )
    assert (r.stdout, r.stderr) == (b"to-out\n", b"to-err\n")


def test_stdin_pipe_with_popen_communicate() -> None:
    with nsbox.Popen(["tr", "a-z", "A-Z"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, pid=True) as p:
        out, err = p.communicate(b"shout\n", timeout=10)
    assert (out, err, p.returncode) == (b"SHOUT\n", None, 0)


@pytest.mark.parametrize("value", [b"bytes in\n", "text in\n"])
def test_input_is_fed_to_stdin(value: bytes | str) -> None:
    text = isinstance(value, str)
    a, b = both(["cat"], input=value, capture_output=True, text=text)
    same(a, b)
    assert a.stdout == value


def test_devnull_for_stdin_stdout_and_stderr() -> None:
    r = nsbox.run(["sh", "-c", "cat; echo gone; echo gone >&2"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    assert (r.returncode, r.stdout, r.stderr) == (0, None, None)
    r = nsbox.run(
        ["sh", "-c", "wc -c; ls -l /proc/self/fd/0"], stdin=subprocess.DEVNULL, capture_output=True, text=True
    )
    count, listing = r.stdout.splitlines()
    assert count.strip() == "0"
    assert listing.endswith("-> /dev/null")
    r = nsbox.run(["sh", "-c", "echo kept; echo dropped >&2"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert (r.stdout, r.stderr) == (b"kept\n", None)


def test_file_objects_as_stdin_stdout_and_stderr(tmp_path: Path) -> None:
    (tmp_path / "in").write_text("from a file\n")
    with (
        open(tmp_path / "in") as fin,
        open(tmp_path / "out", "w") as fout,
        open(tmp_path / "err", "w") as ferr,
    ):
        r = nsbox.run(["sh", "-c", "cat; echo oops >&2"], stdin=fin, stdout=fout, stderr=ferr, pid=True)
    assert r.returncode == 0
    assert (tmp_path / "out").read_text() == "from a file\n"
    assert (tmp_path / "err").read_text() == "oops\n"


def test_raw_fds_as_stdin_stdout_and_stderr(tmp_path: Path) -> None:
    (tmp_path / "in").write_bytes(b"raw\n")
    fin = os.open(tmp_path / "in", os.O_RDONLY)
    fout = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT, 0o644)
    ferr = os.open(tmp_path / "err", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        r = nsbox.run(["sh", "-c", "cat; echo e >&2"], stdin=fin, stdout=fout, stderr=ferr, net=True)
    finally:
        for fd in (fin, fout, ferr):
            os.close(fd)
    assert r.returncode == 0
    assert (tmp_path / "out").read_bytes() == b"raw\n"
    assert (tmp_path / "err").read_bytes() == b"e\n"


def test_stderr_to_stdout_keeps_the_order() -> None:
    script = "echo 1; echo 2 >&2; echo 3; echo 4 >&2"
    a, b = both(["sh", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    same(a, b)
    assert a.stdout == b"1\n2\n3\n4\n" and a.stderr is None


def test_standard_fds_can_be_swapped(capfd: pytest.CaptureFixture[str]) -> None:
    script = "echo written-to-1; echo written-to-2 >&2"
    r = nsbox.run(["sh", "-c", script], stdout=2, stderr=1, pid=True)
    assert r.returncode == 0
    boxed = capfd.readouterr()
    subprocess.run(["sh", "-c", script], stdout=2, stderr=1, check=True)
    plain = capfd.readouterr()
    assert (boxed.out, boxed.err) == (plain.out, plain.err) == ("written-to-2\n", "written-to-1\n")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"text": True},
        {"universal_newlines": True},
        {"encoding": "latin-1"},
        {"text": True, "errors": "replace"},
        {"encoding": "utf-8", "errors": "backslashreplace"},
        {"encoding": "ascii", "errors": "ignore"},
    ],
)
def test_text_encoding_and_errors_decode_like_subprocess(kwargs: dict[str, Any]) -> None:
    args = ["printf", "caf\\303\\251 \\377\\r\\nline2\\n"]
    if kwargs in ({"text": True}, {"universal_newlines": True}):
        args = ["printf", "caf\\303\\251\\r\\nline2\\n"]  # valid UTF-8: strict decoding works
    a, b = both(args, capture_output=True, **kwargs)
    same(a, b)
    assert isinstance(a.stdout, str)


def test_text_mode_decoding_error_raises_like_subprocess() -> None:
    with pytest.raises(UnicodeDecodeError):
        nsbox.run(["printf", "\\377"], capture_output=True, encoding="utf-8")


def test_timeout_raises_timeout_expired() -> None:
    start = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired) as info:
        nsbox.run(["sleep", "30"], timeout=0.3)
    assert time.monotonic() - start < 5
    assert info.value.timeout == pytest.approx(0.3, abs=0.05)
    assert info.value.cmd == ["sleep", "30"]


def test_timeout_kills_the_whole_box_grandchildren_included(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild"
    # The grandchild learns its host PID from the host's /proc (no mount_proc), then becomes `sleep`.
    script = (
        f"(read p rest </proc/self/stat; echo $p >{pidfile}.tmp; mv {pidfile}.tmp {pidfile}; exec sleep 1000) & wait"
    )
    with pytest.raises(subprocess.TimeoutExpired):
        nsbox.run(["sh", "-c", script], pid=True, timeout=1.5)
    assert pidfile.exists(), "the grandchild never started"
    grandchild = int(pidfile.read_text())
    try:
        assert wait_gone(grandchild, "sleep"), "the grandchild survived the timeout"
    finally:
        if proc_comm(grandchild) == "sleep":
            kill_pid(grandchild)


def test_check_raises_called_process_error_with_output() -> None:
    with pytest.raises(subprocess.CalledProcessError) as info:
        nsbox.run(["sh", "-c", "echo out; echo err >&2; exit 7"], check=True, capture_output=True, pid=True)
    assert info.value.returncode == 7
    assert info.value.cmd == ["sh", "-c", "echo out; echo err >&2; exit 7"]
    assert (info.value.stdout, info.value.stderr) == (b"out\n", b"err\n")
    assert nsbox.run(["true"], check=True, pid=True).returncode == 0


def test_env_replaces_the_environment() -> None:
    a, b = both(["env"], env={"FOO": "bar", "EMPTY": ""}, capture_output=True, text=True)
    same(a, b)
    assert sorted(a.stdout.splitlines()) == ["EMPTY=", "FOO=bar"]


def test_env_none_inherits_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NSBOX_TEST_INHERITED", "yes")
    r = nsbox.run(["sh", "-c", "echo $NSBOX_TEST_INHERITED"], capture_output=True, text=True, pid=True)
    assert r.stdout == "yes\n"


@pytest.mark.parametrize("as_path", [False, True])
def test_cwd_sets_the_working_directory(tmp_path: Path, as_path: bool) -> None:
    cwd: Any = tmp_path if as_path else str(tmp_path)
    a, b = both(["pwd"], cwd=cwd, capture_output=True, text=True)
    same(a, b)
    assert a.stdout == f"{tmp_path}\n"


@pytest.mark.parametrize("options", [{}, {"net": True}])
def test_returncode_is_negative_for_a_signal(options: dict[str, bool]) -> None:
    r = nsbox.run(["sh", "-c", "kill -9 $$"], **options)
    assert r.returncode == -signal.SIGKILL
    assert subprocess.run(["sh", "-c", "kill -9 $$"]).returncode == r.returncode


def test_killing_pid_1_from_the_host_gives_a_negative_returncode() -> None:
    p = nsbox.Popen(["sleep", "1000"], pid=True, mount_proc=True)
    try:
        assert p.poll() is None
        p.kill()
        assert p.wait(timeout=10) == -signal.SIGKILL
    finally:
        kill_and_reap(p)


def test_shell_true_runs_through_bin_sh() -> None:
    a, b = both("echo $((1 + 2)); echo $0", shell=True, capture_output=True, text=True)
    same(a, b)
    assert a.stdout == "3\n/bin/sh\n"
    r = nsbox.run("hostname", shell=True, hostname="shellbox", capture_output=True, text=True)
    assert r.stdout == "shellbox\n"


def test_popen_poll_wait_terminate_and_context_manager() -> None:
    p = nsbox.Popen(["sleep", "1000"])
    try:
        assert isinstance(p, subprocess.Popen)
        assert p.args == ["sleep", "1000"]
        assert p.poll() is None and p.returncode is None
        with pytest.raises(subprocess.TimeoutExpired):
            p.wait(timeout=0.1)
        p.terminate()
        assert p.wait(timeout=10) == -signal.SIGTERM
    finally:
        kill_and_reap(p)
    with nsbox.Popen(["sh", "-c", "exit 5"], uts=True) as q:
        pass
    assert q.returncode == 5


def test_popen_send_signal_reaches_a_command_with_a_handler_in_a_pid_namespace() -> None:
    # PID 1 only gets the signals it handles; sh with a trap handles SIGUSR1.
    p = nsbox.Popen(
        ["sh", "-c", "trap 'echo got-usr1; exit 0' USR1; echo ready; while :; do sleep 0.05; done"],
        pid=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert p.stdout is not None
        assert p.stdout.readline() == "ready\n"
        p.send_signal(signal.SIGUSR1)
        out, _ = p.communicate(timeout=10)
        assert (out, p.returncode) == ("got-usr1\n", 0)
    finally:
        kill_and_reap(p)


def test_popen_communicate_timeout_then_kill() -> None:
    with nsbox.Popen(["sleep", "1000"], pid=True, stdout=subprocess.PIPE) as p:
        try:
            with pytest.raises(subprocess.TimeoutExpired):
                p.communicate(timeout=0.2)
        finally:
            p.kill()
            p.communicate()
    assert p.returncode == -signal.SIGKILL


def test_start_new_session_like_subprocess() -> None:
    script = "read -r line </proc/self/stat; set -- ${line##*) }; echo $4"  # the session id field
    a = nsbox.run(["sh", "-c", script], start_new_session=True, capture_output=True, text=True)
    b = nsbox.run(["sh", "-c", script], capture_output=True, text=True)
    assert int(b.stdout) == os.getsid(0)
    assert int(a.stdout) != os.getsid(0)


def test_bufsize_and_pipes_for_line_by_line_reading() -> None:
    p = nsbox.Popen(
        ["sh", "-c", "for i in 1 2 3; do echo line$i; sleep 0.05; done"],
        stdout=subprocess.PIPE,
        text=True,
        bufsize=1,
        pid=True,
    )
    try:
        assert p.stdout is not None
        assert [line for line in p.stdout] == ["line1\n", "line2\n", "line3\n"]
        assert p.wait(timeout=10) == 0
    finally:
        kill_and_reap(p)


def test_process_group_like_subprocess() -> None:
    script = "read -r line </proc/self/stat; set -- ${line##*) }; echo $3 $$"  # the process group, the pid
    for runner in (subprocess.run, nsbox.run):
        pgid, pid = runner(["sh", "-c", script], process_group=0, capture_output=True, text=True).stdout.split()
        assert pgid == pid != str(os.getpgid(0))


# ---------------------------------------------------------------------------------------------------------------
# subprocess's credentials and umask, applied inside the box


def status_field(pid: int, field: str) -> str:
    with open(f"/proc/{pid}/status") as f:
        return next(line for line in f if line.startswith(field + ":")).split(":", 1)[1].split("\t")[1].strip()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"umask": 0o077},
        {"umask": 0o027},
        {"user": 65534},
        {"user": "nobody"},
        {"group": 65534},
        {"group": "nogroup", "extra_groups": [4242, "nogroup"]},
        {"user": "nobody", "group": "nogroup", "extra_groups": [], "umask": 0o002},
    ],
    ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()),
)
def test_umask_user_group_and_extra_groups_do_what_subprocess_does(kwargs: dict[str, Any], world_tmp: Path) -> None:
    script = f"umask; id -u; id -g; id -G; touch {world_tmp}/$1"
    ours = nsbox.run(["sh", "-c", script, "sh", "ours"], uts=True, capture_output=True, text=True, **kwargs)
    theirs = subprocess.run(["sh", "-c", script, "sh", "theirs"], capture_output=True, text=True, **kwargs)
    assert (ours.returncode, ours.stdout, ours.stderr) == (theirs.returncode, theirs.stdout, theirs.stderr)
    # Host side: the file the box made has the same mode and owner as subprocess's.
    a, b = (os.stat(world_tmp / name) for name in ("ours", "theirs"))
    assert (a.st_mode, a.st_uid, a.st_gid) == (b.st_mode, b.st_uid, b.st_gid)


def test_user_and_group_apply_inside_the_box_after_its_namespaces() -> None:
    maps = {"uid_map": [(0, 100_000, 65536)], "gid_map": [(0, 100_000, 65536)], "setgroups": "allow"}
    with nsbox.Popen(
        ["sh", "-c", "id -u; id -g; id -G; hostname; exec sleep 60"],
        user=1000,
        group=1001,
        extra_groups=[1002, 1003],
        hostname="creds",
        stdout=subprocess.PIPE,
        text=True,
        **maps,
    ) as box:
        try:
            assert box.stdout is not None
            inside = [box.stdout.readline().strip() for _ in range(4)]
            # Inside: the ids asked for, in the box's user namespace, after its hostname was set as root.
            assert inside[:2] == ["1000", "1001"]
            assert sorted(inside[2].split()) == ["1001", "1002", "1003"]
            assert inside[3] == "creds"
            # On the host: the same ids through the maps.
            assert wait_until_exec(box.pid, "sleep")
            assert status_field(box.pid, "Uid") == "101000"
            assert status_field(box.pid, "Gid") == "101001"
        finally:
            box.kill()


def wait_until_exec(pid: int, comm: str) -> bool:
    from helpers.procs import wait_until

    return wait_until(lambda: proc_comm(pid) == comm)


def test_user_true_is_still_the_user_namespace_and_a_uid_runs_as_that_uid() -> None:
    r = nsbox.run(["id", "-u"], user=True, capture_output=True, text=True)
    assert r.stdout == "0\n"
    assert nsbox.run(["readlink", "/proc/self/ns/user"], user=True, capture_output=True, text=True).stdout != (
        f"{os.readlink('/proc/self/ns/user')}\n"
    )
    # user=0 is uid 0 (subprocess's meaning), not "no user namespace": no new user namespace is made.
    r = nsbox.run(["readlink", "/proc/self/ns/user"], user=0, uts=True, capture_output=True, text=True)
    assert r.stdout == f"{os.readlink('/proc/self/ns/user')}\n"


def test_a_uid_the_box_does_not_map_is_refused_with_a_message_naming_it() -> None:
    with pytest.raises(OSError) as info:
        nsbox.run(["true"], user=5000, uid_map=[(0, 100_000, 10)], gid_map=[(0, 100_000, 10)])
    assert info.value.errno == errno.EINVAL
    assert "cannot switch to user 5000" in str(info.value)
    assert "not mapped" in str(info.value)
    with pytest.raises(PermissionError, match=r"set the supplementary groups \[5\].*setgroups='allow'"):
        nsbox.run(["true"], extra_groups=[5], uid_map=[(0, 100_000, 10)], gid_map=[(0, 100_000, 10)])


@pytest.mark.unit
@pytest.mark.parametrize(("kwargs"), [{"startupinfo": object()}, {"creationflags": 1}])
def test_windows_only_arguments_raise_subprocess_s_value_error(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError) as theirs:
        subprocess.Popen(["true"], **kwargs)
    with pytest.raises(ValueError) as ours:
        nsbox.Popen(["true"], **kwargs)
    assert str(ours.value) == str(theirs.value)


@pytest.mark.unit
def test_every_positional_parameter_of_subprocess_popen_is_accepted_in_its_position() -> None:
    import inspect

    def positional(cls: type) -> list[str]:
        params = list(inspect.signature(cls.__init__).parameters.values())[1:]
        return [p.name for p in params if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]

    assert positional(nsbox.Popen) == positional(subprocess.Popen)
    keyword_only = {
        p.name for p in inspect.signature(subprocess.Popen.__init__).parameters.values() if p.kind is p.KEYWORD_ONLY
    }
    assert keyword_only <= set(inspect.signature(nsbox.Popen.__init__).parameters)
    # The same positional call through both: args, bufsize, executable, stdin, stdout, stderr, preexec_fn,
    # close_fds, shell, cwd, env, universal_newlines, startupinfo, creationflags, restore_signals,
    # start_new_session, pass_fds.
    values = (["echo", "hi"], -1, None, None, subprocess.PIPE, None, None, True, False, "/", None, True, None, 0)
    values += (True, False, ())
    with nsbox.Popen(*values) as ours, subprocess.Popen(*values) as theirs:
        assert ours.communicate() == theirs.communicate() == ("hi\n", None)


@pytest.mark.unit
def test_preexec_fn_is_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="preexec_fn"):
        nsbox.Popen(["true"], preexec_fn=lambda: None)


def test_rootless_umask_and_user_apply_inside_the_box(rootless: Rootless) -> None:
    seen = rootless(
        """
        r = nsbox.run(["sh", "-c", "umask; id -u"], user=0, umask=0o027, net=True, capture_output=True, text=True)
        try:
            nsbox.run(["true"], user=1, net=True)
            unmapped = "ran"
        except OSError as e:
            unmapped = [e.errno, str(e)]
        emit({"out": r.stdout, "unmapped": unmapped, "host_uid": os.getuid()})
        """
    )
    assert seen["out"] == "0027\n0\n"  # uid 0 inside: the caller's own uid, mapped
    assert seen["host_uid"] == 65534
    assert seen["unmapped"][0] == errno.EINVAL and "cannot switch to user 1" in seen["unmapped"][1]
