"""``tty=True``: a box with a pseudo-terminal of its own as its controlling terminal, driven through ``box.pty``."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from pexpect.fdpexpect import fdspawn

import nsbox
from helpers.procs import children_of, open_fds
from helpers.rootless import Rootless

PROMPT = "box$ "
#: An interactive shell with a prompt we can tell apart; dash (Debian's sh) does job control when interactive.
SHELL = ["sh", "-i"]
ENV = {"PS1": PROMPT, "PATH": os.environ["PATH"], "TERM": "dumb"}
#: The box's own /dev: it needs a root of its own to bind the host's devices from (see the report on Dev()).
OWN_DEVPTS: dict[str, Any] = {"root": nsbox.Bind("/"), "mounts": [nsbox.Dev()]}


def stat_fields(pid: int) -> list[str]:
    """``/proc/PID/stat`` after the command name: [state, ppid, pgrp, session, tty_nr, tpgid, ...]."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def our_pty_children() -> list[int]:
    return children_of(os.getpid())


@pytest.fixture
def nothing_left() -> Iterator[None]:
    """The test leaves no fd and no child process behind."""
    fds, children = open_fds(), set(our_pty_children())
    yield
    # nsbox's helper program (init=True) is loaded once per process, and kept.
    assert {fd: link for fd, link in open_fds().items() if "nsbox-helper" not in link} == {
        fd: link for fd, link in fds.items() if "nsbox-helper" not in link
    }
    assert set(our_pty_children()) <= children


@contextlib.contextmanager
def tty_box(args: list[str], **options: Any) -> Iterator[nsbox.Popen]:
    """``nsbox.Popen(args, tty=True, ...)``, killed if the test fails inside: the ``with`` block's hang-up would
    not end a shell that is PID 1 (it ignores ``SIGHUP``) waiting for a foreground job."""
    with nsbox.Popen(args, **options) as box:
        try:
            yield box
        except BaseException:
            box.kill()
            raise


def shell(box: nsbox.Popen) -> Any:
    """pexpect on the box's terminal, at the shell's first prompt."""
    assert box.pty is not None
    term = fdspawn(box.pty, timeout=20)
    term.expect_exact(PROMPT)
    return term


def run_line(term: Any, line: str) -> str:
    """Types ``line`` and returns what the shell printed before its next prompt (without the echo)."""
    term.sendline(line)
    term.expect_exact(PROMPT)
    shown: str = term.before.decode()
    return shown.split("\r\n", 1)[1] if "\r\n" in shown else ""


def leave(box: nsbox.Popen, term: Any) -> None:
    term.sendline("exit")
    assert box.wait(timeout=20) == 0


@pytest.mark.parametrize("pid", [True, False], ids=["pid", "no-pid"])
def test_an_interactive_shell_runs_on_its_own_terminal(pid: bool, nothing_left: None) -> None:
    sid, pgrp = os.getsid(0), os.getpgrp()
    with tty_box(SHELL, tty=True, pid=pid, mount_proc=pid, env=ENV) as box:
        term = shell(box)
        name = run_line(term, "tty").strip()
        assert re.fullmatch(r"/dev/pts/\d+", name), name
        # The box leads a session of its own, whose controlling terminal is the box's slave.
        state = stat_fields(box.pid)
        assert int(state[3]) == box.pid  # session id = the box's PID: it called setsid
        slave = os.stat(f"/proc/{box.pid}/fd/0")
        assert int(state[4]) == slave.st_rdev  # tty_nr: the controlling terminal is the slave on its fd 0
        assert os.path.samestat(os.stat(name), slave)  # the name it reports is the host's /dev/pts entry
        # The caller's session and process group are what they were.
        assert (os.getsid(0), os.getpgrp()) == (sid, pgrp)
        # Neither the master nor the caller's other fds reached the box.
        # (dash opens /dev/tty for job control: the same terminal.)
        links = {os.readlink(f"/proc/{box.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{box.pid}/fd")}
        assert links - {"/dev/tty"} == {name}, links
        assert box.pty is not None and box.pty.fileno() >= 3 and not os.get_inheritable(box.pty.fileno())
        leave(box, term)
    assert box.pty is not None and box.pty.closed


@pytest.mark.parametrize("pid", [True, False], ids=["pid", "no-pid"])
def test_resize_sets_the_size_and_the_box_gets_sigwinch(pid: bool, nothing_left: None) -> None:
    with tty_box(SHELL, tty=True, pid=pid, env=ENV) as box:
        term = shell(box)
        assert run_line(term, "stty size").strip() == "24 80"  # a new terminal's size
        run_line(term, "trap 'echo WINCH-SEEN' WINCH")
        box.resize(30, 100)
        assert run_line(term, "stty size").split() == ["WINCH-SEEN", "30", "100"]
        box.resize(41, 132)
        assert run_line(term, "stty size").split() == ["WINCH-SEEN", "41", "132"]
        # Control: without a resize, no SIGWINCH.
        assert run_line(term, "stty size").split() == ["41", "132"]
        leave(box, term)


def test_job_control_and_ctrl_c_reach_the_boxs_foreground_job_never_the_caller(nothing_left: None) -> None:
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        with tty_box(SHELL, tty=True, pid=True, mount_proc=True, env=ENV) as box:
            term = shell(box)
            run_line(term, "sleep 100 &")
            assert "sleep 100" in run_line(term, "jobs")
            term.sendline("fg")
            term.expect_exact("sleep 100")  # fg names the job it brings to the foreground
            # The terminal's foreground process group is now the job's: wait for it, then type Ctrl-C.
            # (`&` gives the prompt back as soon as the job is forked, maybe before it has exec'd sleep.)
            assert _wait_for(lambda: any(p.command == "sleep 100" for p in box.processes()))
            sleeper = next(p for p in box.processes() if p.command == "sleep 100")
            assert _wait_for(lambda: int(stat_fields(box.pid)[5]) == sleeper.host_pid), "the job never came forward"
            box.pty.write(b"\x03")  # type: ignore[union-attr]
            term.expect_exact(PROMPT)  # the shell survived the interrupt
            assert run_line(term, "echo status $?").strip() == "status 130"  # 128 + SIGINT: the job was interrupted
            assert run_line(term, "jobs").strip() == ""
            leave(box, term)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert caught == []  # the caller, in another session, never got the terminal's SIGINT


def _wait_for(condition: Any, timeout: float = 20) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


def test_a_box_with_its_own_devpts_gets_its_terminal_there(nothing_left: None) -> None:
    host_pts = os.stat("/dev/pts")
    with tty_box(SHELL, tty=True, pid=True, mount_proc=True, env=ENV, **OWN_DEVPTS) as box:
        term = shell(box)
        assert run_line(term, "tty").strip() == "/dev/pts/0"  # the first terminal of a new devpts instance
        assert run_line(term, "ls /dev/pts").split() == ["0", "ptmx"]
        slave = os.stat(f"/proc/{box.pid}/fd/0")
        # The slave is on the box's devpts, not on the host's: no entry of the host's /dev/pts is it.
        assert slave.st_dev != host_pts.st_dev
        assert not any(os.path.samestat(os.stat(f"/dev/pts/{n}"), slave) for n in _host_pts())
        assert int(stat_fields(box.pid)[4]) == slave.st_rdev
        leave(box, term)


def test_control_without_its_own_devpts_the_terminal_is_the_hosts(nothing_left: None) -> None:
    host_pts = os.stat("/dev/pts")
    with tty_box(SHELL, tty=True, pid=True, mount_proc=True, env=ENV) as box:
        term = shell(box)
        name = run_line(term, "tty").strip()
        slave = os.stat(f"/proc/{box.pid}/fd/0")
        assert slave.st_dev == host_pts.st_dev
        assert os.path.basename(name) in _host_pts()  # the host lists it while the box runs
        leave(box, term)
    assert os.path.basename(name) not in _host_pts() or not os.path.samestat(os.stat(name), slave)


def _host_pts() -> list[str]:
    return [n for n in os.listdir("/dev/pts") if n.isdigit()]


@pytest.mark.parametrize("redirected", ["stdin", "stdout", "stderr"])
def test_the_slave_is_only_where_stdio_is_not_redirected(redirected: str, nothing_left: None) -> None:
    r, w = os.pipe()
    report = f'for fd in 0 1 2; do echo "$fd $(readlink /proc/$$/fd/$fd)" > /proc/$$/fd/{w}; done'
    try:
        with nsbox.Popen(["sh", "-c", report], tty=True, pass_fds=(w,), **{redirected: subprocess.DEVNULL}) as box:
            os.close(w)
            w = -1
            assert box.wait(timeout=20) == 0
            where = dict(line.split(" ", 1) for line in os.read(r, 4096).decode().splitlines())
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
    for fd, name in enumerate(["stdin", "stdout", "stderr"]):
        if name == redirected:
            assert where[str(fd)] == "/dev/null"
        else:
            assert re.fullmatch(r"/dev/pts/\d+", where[str(fd)]), where


def test_stderr_to_stdout_puts_both_on_the_terminal(nothing_left: None) -> None:
    with nsbox.Popen(["sh", "-c", "echo out; echo err >&2"], tty=True, stderr=subprocess.STDOUT) as box:
        assert box.wait(timeout=20) == 0
        assert box.pty is not None and box.pty.read() == b"out\r\nerr\r\n"


def test_the_master_reads_eof_once_the_box_is_gone(nothing_left: None) -> None:
    with nsbox.Popen(["echo", "bye"], tty=True) as box:
        assert box.wait(timeout=20) == 0
        assert box.pty is not None
        assert box.pty.read() == b"bye\r\n"  # what was left, then EOF (Linux says EIO) rather than an error
        assert box.pty.read() == b""
        assert box.pty.read(10) == b""
        assert box.pty.readinto(bytearray(10)) == 0


def test_run_types_input_on_the_terminal_and_captures_what_it_showed(nothing_left: None) -> None:
    r = nsbox.run(
        ["sh", "-c", "read x; echo got $x; echo oops >&2; tty"], tty=True, input=b"hello\n", capture_output=True
    )
    assert r.returncode == 0 and r.stderr is None
    lines = r.stdout.split(b"\r\n")
    # The terminal's echo of the input, then the program's output and errors as they came.
    assert lines[:3] == [b"hello", b"got hello", b"oops"]
    assert re.fullmatch(rb"/dev/pts/\d+", lines[3])
    text = nsbox.run(["cat"], tty=True, input="no newline", capture_output=True, text=True, pid=True)
    assert text.stdout == "no newlineno newline"  # echo, then cat's copy after the first Ctrl-D


def test_run_without_capture_relays_the_terminal_to_stdout(capfd: pytest.CaptureFixture[str]) -> None:
    r = nsbox.run(["sh", "-c", "echo shown on the terminal >&2"], tty=True)
    assert r.returncode == 0 and r.stdout is None
    assert capfd.readouterr().out == "shown on the terminal\r\n"


def test_run_with_a_timeout_kills_the_whole_box(nothing_left: None) -> None:
    with pytest.raises(subprocess.TimeoutExpired) as info:
        nsbox.run(
            ["sh", "-c", "echo started; sleep 100 & sleep 100"], tty=True, pid=True, timeout=1, capture_output=True
        )
    assert info.value.output is not None and b"started" in info.value.output
    assert not [p for p in our_pty_children() if (proc_cmd(p) or "").startswith("sleep")]


def proc_cmd(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode()
    except OSError:
        return None


def test_with_init_the_command_gets_the_terminal(nothing_left: None) -> None:
    r = nsbox.run(["sh", "-c", "tty; stty size"], tty=True, init=True, capture_output=True, text=True)
    name, size = r.stdout.splitlines()
    assert re.fullmatch(r"/dev/pts/\d+", name) and size == "24 80"


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"start_new_session": False}, ValueError, "start_new_session=False"),
        ({"process_group": 0}, ValueError, "process_group"),
        ({"tty": "yes"}, TypeError, "tty must be True, False or a size (rows, cols)"),
        ({"tty": (24, 80.0)}, TypeError, "tty must be True, False or a size (rows, cols)"),
        ({"tty": (0, 80)}, ValueError, "rows and columns are 1 to 65535"),
    ],
)
def test_contradictions_are_refused_before_anything_is_made(
    options: dict[str, Any], error: type[Exception], message: str, nothing_left: None
) -> None:
    options = {"tty": True, **options}
    with pytest.raises(error, match=re.escape(message)):
        nsbox.Popen(["true"], pid=True, **options)
    with pytest.raises(error, match=re.escape(message)):
        nsbox.run(["true"], **options)


def test_resize_needs_a_terminal_and_a_size(nothing_left: None) -> None:
    with nsbox.Popen(["true"]) as plain:
        with pytest.raises(ValueError, match="tty=True"):
            plain.resize(24, 80)
    with nsbox.Popen(["sleep", "100"], tty=True, pid=True) as box:
        with pytest.raises(ValueError, match="1 to 65535"):
            box.resize(0, 80)
        with pytest.raises(TypeError, match="cols must be an int"):
            box.resize(24, 80.0)  # type: ignore[arg-type]
        box.kill()
    with pytest.raises(ValueError, match="closed"):
        box.resize(24, 80)


def test_rootless_shell_terminal_and_resize(rootless: Rootless) -> None:
    seen = rootless(
        r"""
        import re, select

        def until(box, marker, seen=b""):
            while marker not in seen:
                assert select.select([box.pty], [], [], 20)[0], seen
                chunk = box.pty.read(4096)
                assert chunk, seen
                seen += chunk
            return seen

        env = {"PS1": "box$ ", "PATH": os.environ["PATH"]}
        out = {}
        for name, extra in [("plain", {}), ("devpts", {"root": nsbox.Bind("/"), "mounts": [nsbox.Dev()]})]:
            with nsbox.Popen(["sh", "-i"], tty=True, pid=True, mount_proc=True, env=env, **extra) as box:
                until(box, b"box$ ")
                box.pty.write(b"tty; id -u\n")
                shown = until(box, b"box$ ").decode()
                box.resize(33, 99)
                box.pty.write(b"stty size\n")
                size = until(box, b"box$ ").decode()
                box.pty.write(b"exit\n")
                code = box.wait(20)
            out[name] = {"tty": re.findall(r"/dev/pts/\d+", shown), "size": "33 99" in size, "code": code}
        emit(out)
        """
    )
    assert seen["plain"]["tty"] and seen["plain"]["size"] and seen["plain"]["code"] == 0
    assert seen["devpts"] == {"tty": ["/dev/pts/0"], "size": True, "code": 0}


@pytest.mark.parametrize("init", [True, False], ids=["init", "control-pid-1-shell"])
def test_closing_the_terminal_hangs_up_the_box(init: bool, nothing_left: None) -> None:
    box = nsbox.Popen(SHELL, tty=True, pid=True, mount_proc=True, init=init, env=ENV)
    try:
        term = shell(box)
        term.sendline("sleep 100")
        assert _wait_for(lambda: any(p.command == "sleep 100" for p in box.processes()))
        assert box.pty is not None
        box.pty.close()  # a hang-up: the kernel sends SIGHUP to the session's leader
        if init:
            assert box.wait(timeout=20) == 128 + signal.SIGHUP  # the init forwarded it to the shell
        else:
            # PID 1 ignores a signal it has no handler for: the shell goes on waiting for its job.
            with pytest.raises(subprocess.TimeoutExpired):
                box.wait(timeout=0.5)
    finally:
        box.kill()
        box.wait()
        box.close_pidfd()


@pytest.mark.parametrize("dev", [False, True], ids=["callers-ptmx", "own-devpts"])
def test_a_size_given_is_the_terminals_from_the_start(dev: bool, nothing_left: None) -> None:
    # A one-shot program reads the size once, before any resize could reach it.
    mounts = {"mounts": [nsbox.Dev()]} if dev else {}
    shown = nsbox.run(["stty", "size"], tty=(50, 132), capture_output=True, text=True, **mounts)  # type: ignore[arg-type]
    assert (shown.returncode, shown.stdout.split()) == (0, ["50", "132"])
    # Control: without a size, a new terminal's.
    shown = nsbox.run(["stty", "size"], tty=True, capture_output=True, text=True, **mounts)  # type: ignore[arg-type]
    assert shown.stdout.split() == ["24", "80"]
