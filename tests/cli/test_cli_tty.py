"""``nsbox -t``: the program on a pty of its own, relayed to the caller's terminal, as ``docker run -it``.

The caller's terminal is a tmux pane on a private tmux server (``-L``, a socket name of the test's own, no
config file), running an outer ``sh`` as root or as uid 65534; keys go in with ``send-keys``, the screen comes
back with ``capture-pane``. Every wait is for text on the screen (or a process) with a deadline. Markers are
printed as ``name""=value`` so that the typed line (echoed by the terminal) never matches ``name=value``.
"""

from __future__ import annotations

import fcntl
import os
import re
import shlex
import signal
import struct
import subprocess
import termios
import uuid
from collections.abc import Iterator
from contextlib import suppress

import pytest

from helpers.cli import Runner, descendants, is_gone, stop, wait_for_descendant
from helpers.procs import proc_comm, proc_status, wait_until
from nsbox.cli import terminal
from nsbox.cli.terminal import raw_mode

WAIT = 20.0
OUTER_PROMPT = "outer$ "
BOX_PROMPT = "box$ "


class Pane:
    """One tmux pane of a private tmux server, running ``sh`` as ``runner`` runs things, in a 100x30 window."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.server = f"nsbox-test-{uuid.uuid4().hex[:12]}"
        env = [f"{name}={value}" for name, value in runner.env.items()]
        shell = runner.argv(["env", "-i", *env, f"PS1={OUTER_PROMPT}", "TERM=screen", "sh"])
        self.tmux("new-session", "-d", "-x", "100", "-y", "30", "-c", "/tmp", *shell)
        shell, self.socket = self.tmux("display-message", "-p", "#{pane_pid} #{socket_path}").split()
        self.shell = int(shell)
        self.wait_for(re.escape(OUTER_PROMPT.strip()))

    def tmux(self, *args: str) -> str:
        r = subprocess.run(["tmux", "-L", self.server, "-f", "/dev/null", *args], capture_output=True, text=True)
        assert r.returncode == 0, (args, r.stderr)
        return r.stdout

    def type(self, text: str, enter: bool = True) -> None:
        self.tmux("send-keys", "-l", text)
        if enter:
            self.tmux("send-keys", "Enter")

    def key(self, name: str) -> None:
        self.tmux("send-keys", name)

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-J")

    def wait_for(self, pattern: str) -> re.Match[str]:
        """The first line of the screen ``pattern`` matches in full, once there is one."""
        found: list[re.Match[str]] = []

        def shown() -> bool:
            found[:] = [m for line in self.screen().splitlines() if (m := re.fullmatch(pattern, line.rstrip()))]
            return bool(found)

        if not wait_until(shown, timeout=WAIT, interval=0.05):
            pytest.fail(f"no line matches {pattern!r} on the screen:\n{self.screen()}")
        return found[0]

    def value(self, name: str, command: str) -> str:
        """Run ``echo name=$(command)`` (with a fresh ``name``) and read the value off the screen."""
        marker = f"{name}{uuid.uuid4().hex[:6]}"
        self.type(f'echo "{marker}""=$({command})"')
        # Typed ahead of a prompt (right after a Ctrl-C), the answer follows that prompt on its line.
        return self.wait_for(rf"(?:\S*\$ )?{marker}=(.*)").group(1)

    def process(self, comm: str) -> int:
        """A process running ``comm`` under the pane's shell, once there is one."""
        found: list[int] = []

        def running() -> bool:
            found[:] = [pid for pid in descendants(self.shell) if proc_comm(pid) == comm]
            return bool(found)

        if not wait_until(running, timeout=WAIT):
            pytest.fail(f"no {comm} under the pane's shell:\n{self.screen()}")
        return found[0]

    def close(self) -> None:
        """Kill the server, and check that nothing that ran in the pane outlives it."""
        ran = [self.shell, *descendants(self.shell)]
        with suppress(AssertionError):
            self.tmux("kill-server")
        with suppress(FileNotFoundError):
            os.unlink(self.socket)  # tmux leaves it behind
        if not wait_until(lambda: all(is_gone(pid) for pid in ran), timeout=10):
            left = [pid for pid in ran if not is_gone(pid)]
            for pid in left:
                with suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            pytest.fail(f"processes outlived the tmux server: {left}")


@pytest.fixture
def pane(runner: Runner) -> Iterator[Pane]:
    made = Pane(runner)
    try:
        yield made
    finally:
        made.close()


def outer_terminal(pane: Pane) -> tuple[str, str]:
    """The outer shell's terminal and its settings (``stty -g``)."""
    return pane.value("tty", "tty"), pane.value("settings", "stty -g")


def assert_terminal_as_it_was(pane: Pane, before: tuple[str, str]) -> None:
    """Back at the outer shell's prompt, with the same settings, and typed keys are echoed (not raw)."""
    assert outer_terminal(pane) == before
    typed = f": echoed-{uuid.uuid4().hex[:8]}"
    pane.type(typed, enter=False)
    pane.wait_for(re.escape(f"{OUTER_PROMPT}{typed}"))
    pane.key("Enter")


def nsbox_command(runner: Runner, *args: str) -> str:
    return shlex.join(runner.nsbox_argv(*args))


@pytest.mark.parametrize("pid", [False, True], ids=["no-pid-ns", "pid-ns"])
def test_a_shell_on_its_own_pty_follows_the_window_and_gives_the_terminal_back(pane: Pane, pid: bool) -> None:
    before = outer_terminal(pane)
    flags = ["-t", "-p"] if pid else ["--tty"]
    pane.type(nsbox_command(pane.runner, *flags, "env", f"PS1={BOX_PROMPT}", "sh"))
    pane.wait_for(re.escape(BOX_PROMPT.strip()))

    assert re.fullmatch(r"/dev/pts/\d+", box_tty := pane.value("tty", "tty")) and box_tty != before[0]
    assert pane.value("size", "stty size") == "30 100"
    pane.tmux("resize-window", "-x", "90", "-y", "25")
    # The new size travels tmux -> SIGWINCH to nsbox -> the box's terminal: asked until it has arrived.
    assert wait_until(lambda: pane.value("size", "stty size") == "25 90", timeout=WAIT)
    shell_pid = pane.value("pid", "echo $$")
    assert shell_pid == "1" if pid else int(shell_pid) > 1
    if not pid:  # (ps reads the host's /proc: with -p, $$ is not the shell's PID there)
        # The box's shell leads a session of its own, on its pty.
        assert pane.value("session", "ps -o sid= -p $$ | tr -d ' '") == shell_pid

    pane.type("sleep 100")
    sleeper = pane.process("sleep")
    pane.key("C-c")
    assert wait_until(lambda: is_gone(sleeper))
    assert pane.value("interrupted", "echo $?") == "130"

    pane.type("exit 3")
    pane.wait_for(re.escape(OUTER_PROMPT.strip()))
    assert pane.value("status", "echo $?") == "3"
    assert_terminal_as_it_was(pane, before)


@pytest.mark.parametrize(
    ("target", "sig", "status"),
    [("box", signal.SIGKILL, 137), ("nsbox", signal.SIGTERM, 143), ("nsbox", signal.SIGHUP, 129)],
    ids=["box-killed", "nsbox-sigterm", "nsbox-sighup"],
)
def test_the_terminal_is_given_back_whatever_ends_the_box(pane: Pane, target: str, sig: int, status: int) -> None:
    before = outer_terminal(pane)
    pane.type(nsbox_command(pane.runner, "-t", "sleep", "1000"))
    sleeper = pane.process("sleep")
    # The box's first process is nsbox's child; nsbox passes SIGTERM and SIGHUP on.
    os.kill(sleeper if target == "box" else int(proc_status(sleeper)["PPid"]), sig)
    pane.wait_for(re.escape(OUTER_PROMPT.strip()))
    assert pane.value("status", "echo $?") == str(status)
    assert_terminal_as_it_was(pane, before)


@pytest.mark.parametrize("tty", [True, False], ids=["own-pty", "control-callers-terminal"])
def test_a_hangup_of_the_callers_terminal_ends_a_shell_that_is_pid_1(runner: Runner, tty: bool) -> None:
    # PID 1 ignores the SIGHUP nsbox passes on. Without -t (the control) the shell reads the hung-up terminal
    # itself and ends; with -t nsbox hangs up the box's pty in turn, and the shell ends the same way.
    pane = Pane(runner)
    try:
        pane.type(nsbox_command(runner, *(["-t"] if tty else []), "-p", "sh"))
        shell = pane.process("sh")
        ran = [pane.shell, *descendants(pane.shell)]
        assert shell in ran
        pane.tmux("kill-server")  # the terminal hangs up, as when an ssh connection drops
        assert wait_until(lambda: all(is_gone(pid) for pid in ran), timeout=WAIT), [p for p in ran if not is_gone(p)]
    finally:
        pane.close()


def test_input_that_is_not_a_terminal_is_relayed_and_its_end_is_ctrl_d(runner: Runner) -> None:
    r = runner.nsbox("-t", "-p", "sh", input='test -t 0 && test -t 1 && echo "on""=$(tty)"; echo "pid""=$$"\n')
    assert r.returncode == 0, r.stderr
    # The prompts and the echo of the input come in any order around the output (text mode reads \r\n as \n).
    assert re.search(r"\bon=/dev/pts/\d+$", r.stdout, flags=re.M), r.stdout
    assert re.search(r"\bpid=1$", r.stdout, flags=re.M), r.stdout
    unfinished = runner.nsbox("-t", "sh", input="exit 5")  # no newline: Ctrl-D ends the line, another the input
    nothing = runner.nsbox("-t", "sh", "-c", "exit 6", stdin=subprocess.DEVNULL)
    assert (unfinished.returncode, nothing.returncode) == (5, 6), (unfinished.stderr, nothing.stderr)


def test_sigint_to_nsbox_is_typed_into_the_pty_and_reaches_the_foreground_job(runner: Runner) -> None:
    front = runner.popen(
        runner.nsbox_argv("-t", "-p", "sh", "-c", "sleep 100; echo not-interrupted"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        sleeper = wait_for_descendant(front, "sleep")
        os.kill(front.pid, signal.SIGINT)
        assert wait_until(lambda: is_gone(sleeper))
        out, err = front.communicate(timeout=WAIT)
        # The terminal echoes the ^C; sh -c catches SIGINT, so it ends too, with 128+SIGINT.
        assert (front.returncode, out, err) == (128 + signal.SIGINT, "^C", "")
    finally:
        stop(front)


class _FailingBox:
    """A stand-in for a ``tty=True`` box whose second resize (the one a SIGWINCH asks for) fails."""

    def __init__(self, caller: int) -> None:
        self.caller = caller
        master, self.slave = os.openpty()
        self.pty = os.fdopen(master, "r+b", buffering=0)
        self.pidfd, self.exited = os.pipe()  # readable once the box "exits": never here
        self.sizes: list[tuple[int, int]] = []
        #: Whether the caller's terminal echoed, at each resize.
        self.echoing: list[bool] = []

    def resize(self, rows: int, cols: int) -> None:
        self.sizes.append((rows, cols))
        self.echoing.append(bool(termios.tcgetattr(self.caller)[3] & termios.ECHO))
        if len(self.sizes) > 1:
            raise RuntimeError("resize failed")
        os.kill(os.getpid(), signal.SIGWINCH)

    def wait(self, timeout: float | None = None) -> int:
        return 0

    def close(self) -> None:
        self.pty.close()
        for fd in (self.slave, self.pidfd, self.exited):
            os.close(fd)


@pytest.mark.unit
def test_the_callers_terminal_is_put_back_when_the_relay_fails() -> None:
    caller_master, caller = os.openpty()  # the caller's terminal: nsbox's stdin and stdout
    box = _FailingBox(caller)
    try:
        fcntl.ioctl(caller, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
        before = termios.tcgetattr(caller)
        handlers = [signal.getsignal(sig) for sig in (signal.SIGWINCH, signal.SIGINT, signal.SIGQUIT)]
        with pytest.raises(RuntimeError, match="resize failed"):
            terminal.relay(box, stdin=caller, stdout=caller, size_from=(caller,))
        assert box.sizes == [(30, 100), (30, 100)]
        assert box.echoing == [True, False]  # sized before raw mode; raw when the SIGWINCH came
        assert termios.tcgetattr(caller) == before
        assert [signal.getsignal(sig) for sig in (signal.SIGWINCH, signal.SIGINT, signal.SIGQUIT)] == handlers
        assert signal.set_wakeup_fd(-1) == -1
    finally:
        box.close()
        os.close(caller_master)
        os.close(caller)


@pytest.mark.unit
def test_raw_mode_is_undone_when_the_relay_fails() -> None:
    master, slave = os.openpty()
    try:
        before = termios.tcgetattr(slave)

        class Broken(Exception):
            pass

        with pytest.raises(Broken), raw_mode(slave):
            assert termios.tcgetattr(slave)[3] & termios.ECHO == 0
            raise Broken
        assert termios.tcgetattr(slave) == before
    finally:
        os.close(master)
        os.close(slave)


@pytest.mark.unit
def test_help_describes_tty(root: Runner) -> None:
    r = root.nsbox("--help", env=root.env | {"COLUMNS": "80"})
    assert re.search(r"^  -t, --tty +a new pty for PROGRAM, relayed to your terminal$", r.stdout, flags=re.M)
    assert "docker run -it" in r.stdout and "raw mode" in r.stdout


@pytest.mark.parametrize("pid", [False, True], ids=["no-pid-ns", "pid-ns"])
def test_a_box_does_not_outlive_the_terminal_it_was_given(pane: Pane, pid: bool) -> None:
    # The window closes (tmux killed, as a dropped ssh): the box's shell, PID 1 with -p (which ignores a SIGHUP it
    # has no handler for), must not stay behind with nsbox, unreachable (before the relay hung the box up, both
    # stayed for good).
    flags = ["-t", "-p"] if pid else ["-t"]
    pane.type(nsbox_command(pane.runner, *flags, "env", f"PS1={BOX_PROMPT}", "sh"))
    pane.wait_for(re.escape(BOX_PROMPT.strip()))
    ran = descendants(pane.shell)
    assert any(proc_comm(p) == "sh" for p in ran)  # the box's shell, below nsbox
    pane.close()  # kills the tmux server; fails if anything that ran in the pane outlives it (10 s)
    assert all(is_gone(p) for p in ran)
