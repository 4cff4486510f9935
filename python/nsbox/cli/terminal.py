r"""``nsbox -t``: the box's own pty relayed to the caller's terminal, as ``docker run -it`` and ``script`` do.

While the box runs, the caller's terminal (nsbox's stdin, if it is one) is in raw mode, so that every key,
Ctrl-C included, goes to the box's pty, whose line discipline then does what a terminal does (echo, line
editing, SIGINT to the box's foreground job). The window size is copied to the pty at the start and on every
SIGWINCH. What nsbox reads on stdin is written to the pty and what the box writes to it is copied to stdout,
until the box's first process exits; then the terminal's settings are put back, whatever ended the relay.

When stdin is not a terminal (a pipe, a file, ``/dev/null``), it is relayed all the same, as ``script`` does,
and its end becomes the pty's end-of-file character (Ctrl-D), so ``printf 'ls\nexit\n' | nsbox -t sh`` works;
the box's terminal echoes that input as any terminal would. A SIGINT or SIGQUIT that reaches nsbox itself
(Ctrl-C on a terminal nsbox is not reading, ``kill -INT``) is typed into the pty as its interrupt or quit
character: the box's foreground job gets it, as it would from its own terminal. When the caller's terminal hangs
up (its reads end, or nsbox gets SIGHUP), the relay hangs up the box's terminal in turn by closing the master, as
sshd does: the box's shell reads the end of its terminal and exits, even as PID 1 (which ignores a SIGHUP passed
on from outside).
"""

from __future__ import annotations

import errno
import os
import select
import signal
import termios
import time
import tty
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from typing import Any, Protocol

#: Signals the relay turns into something for the box: a new window size, or a key typed into the pty.
_SIGNALS = (signal.SIGWINCH, signal.SIGINT, signal.SIGQUIT)
#: The pty's special characters that stand for the signals nsbox receives (indexes into termios' cc).
_KEYS: dict[int, int] = {signal.SIGINT: termios.VINTR, signal.SIGQUIT: termios.VQUIT}
#: How long the relay keeps reading after the box's first process exited while something else still holds
#: the pty open (a background job of a box without -p): what it wrote before is copied, then nsbox ends.
_LINGER = 0.1
_CHUNK = 65536
#: How long a box has to end after the caller's terminal hung up (it got SIGHUP, as a login session does), before
#: it is killed: a box's PID 1 ignores a signal it has no handler for, and nobody can reach the box any more.
_HANGUP_GRACE = 1.0


class Box(Protocol):
    """What the relay needs of a box started with ``tty=True`` (:class:`nsbox.Popen`)."""

    @property
    def pty(self) -> Any:
        """The pty's master, a binary file object."""

    @property
    def pidfd(self) -> int:
        """A pidfd of the box's first process: readable once it exits."""

    def resize(self, rows: int, cols: int) -> None:
        """Set the pty's window size."""

    def send_signal(self, sig: int) -> None:
        """Signal the box's first process."""

    def kill(self) -> None:
        """SIGKILL the box's first process."""

    def wait(self, timeout: float | None = None) -> int:
        """Reap the box's first process; its return code."""


def window_size(fds: tuple[int, ...] = (0, 1, 2)) -> tuple[int, int] | None:
    """(rows, cols) of the first of ``fds`` that is a terminal with a size, or None if none is.

    A terminal nobody sized (a serial line, a bare pty) says 0 by 0: the box's keeps its own.
    """
    for fd in fds:
        with suppress(OSError):
            columns, lines = os.get_terminal_size(fd)
            if lines and columns:
                return lines, columns
    return None


@contextmanager
def raw_mode(fd: int) -> Iterator[None]:
    """The terminal ``fd`` in raw mode, its settings put back on the way out (after the output is written).

    The settings are changed with ``TCSANOW``, not ``TCSAFLUSH``: keys typed before, still unread, go to
    the box.
    """
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd, termios.TCSANOW)
        yield
    finally:
        try:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        except termios.error as exc:
            if exc.args[0] != errno.EIO:  # EIO: the terminal hung up, there is nothing left to put back
                raise


@contextmanager
def _signals_to_pipe() -> Iterator[int]:
    """A pipe (its read end) that gets the number of each of :data:`_SIGNALS` that arrives, as a byte.

    Other signals with a Python handler (those :mod:`nsbox.cli.run` forwards) write theirs too; they are skipped.
    """
    read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    with ExitStack() as stack:
        stack.callback(os.close, read_end)
        stack.callback(os.close, write_end)
        for sig in _SIGNALS:
            stack.callback(signal.signal, sig, signal.signal(sig, lambda signum, frame: None))
        stack.callback(signal.set_wakeup_fd, signal.set_wakeup_fd(write_end, warn_on_full_buffer=False))
        yield read_end


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]


class _Relay:
    """The copy loop: stdin → master (buffered, the master is non-blocking), master → stdout, signals, exit."""

    def __init__(self, box: Box, master: int, stdin: int, stdout: int, size_from: tuple[int, ...]) -> None:
        self.box = box
        self.master = master
        self.stdin: int | None = stdin
        self.stdout: int | None = stdout
        self.size_from = size_from
        self.stdin_is_terminal = os.isatty(stdin)
        self.to_box = b""
        #: False once the box's side of the pty is closed (EIO), or the relay hung it up (:meth:`hang_up`).
        self.master_open = True
        #: The last byte read from stdin: after an unfinished line its end takes two end-of-file characters.
        self.last_input = b"\n"
        #: When the box is killed, once the caller's terminal hung up.
        self.kill_at: float | None = None

    def resize(self) -> None:
        size = window_size(self.size_from)
        if size is not None:
            self.box.resize(*size)

    def key(self, index: int) -> bytes:
        """One of the pty's special characters (the box may have changed them), as bytes."""
        value = termios.tcgetattr(self.master)[6][index]
        return value if isinstance(value, bytes) else bytes([value])

    def run(self, wakeup: int) -> None:
        poller = select.poll()
        poller.register(self.box.pidfd, select.POLLIN)
        poller.register(wakeup, select.POLLIN)
        while True:
            master_events = select.POLLIN | (select.POLLOUT if self.to_box else 0)
            if self.master_open:
                poller.register(self.master, master_events)
            if self.stdin is not None and not self.to_box:  # read more only once the box took the last
                poller.register(self.stdin, select.POLLIN)
            timeout = None if self.kill_at is None else max(0.0, self.kill_at - time.monotonic()) * 1000
            ready = dict(poller.poll(timeout))
            for fd in (self.master, self.stdin):
                if fd is not None:
                    with suppress(KeyError):
                        poller.unregister(fd)
            if wakeup in ready:
                self.signals(wakeup)
            if self.master_open and ready.get(self.master, 0) & (select.POLLIN | select.POLLERR | select.POLLHUP):
                self.master_open = self.copy_output()
            if self.master_open and self.to_box and ready.get(self.master, 0) & select.POLLOUT:
                self.copy_input()
            if self.stdin is not None and self.stdin in ready:
                self.read_input()
            if self.box.pidfd in ready:
                break
            if self.kill_at is not None and time.monotonic() >= self.kill_at:
                self.box.kill()  # its first process: with a PID namespace, the whole box
        if self.master_open:
            self.drain()

    def signals(self, wakeup: int) -> None:
        with suppress(BlockingIOError):
            for signum in os.read(wakeup, 256):
                if not self.master_open:
                    continue  # no terminal left to size or type into
                if signum == signal.SIGWINCH:
                    self.resize()
                elif signum == signal.SIGHUP:  # passed on to the box too (cli.run), which PID 1 ignores
                    self.hang_up()
                elif signum in _KEYS and (key := self.key(_KEYS[signum])) != b"\0":  # 0: the box disabled it
                    self.to_box += key

    def copy_output(self) -> bool:
        """Copy what the box wrote; False once the pty is closed on the box's side (EIO)."""
        try:
            data = os.read(self.master, _CHUNK)
        except BlockingIOError:
            return True
        except OSError as exc:
            if exc.errno != errno.EIO:
                raise
            return False
        if not data:
            return False
        if self.stdout is not None:
            try:
                _write_all(self.stdout, data)
            except OSError as exc:
                # Nobody reads any more (EPIPE), or the terminal hung up (EIO): the rest goes nowhere.
                if exc.errno not in (errno.EPIPE, errno.EIO):
                    raise
                self.stdout = None
        return True

    def copy_input(self) -> None:
        try:
            written = os.write(self.master, self.to_box)
        except BlockingIOError:
            return
        self.to_box = self.to_box[written:]

    def read_input(self) -> None:
        assert self.stdin is not None
        try:
            data = os.read(self.stdin, _CHUNK)
        except OSError as exc:
            if exc.errno != errno.EIO:  # a terminal hung up reads as EIO
                raise
            data = b""
        if data:
            self.to_box += data
            self.last_input = data[-1:]
            return
        self.stdin = None
        if self.stdin_is_terminal:
            # A terminal in raw mode reads nothing only once it has hung up (a closed window, a dropped ssh): the
            # box's terminal hangs up too, and the box is killed if it is still there after a grace period.
            self.hang_up()
        else:
            # The end of the input is the end of a line of the box's terminal: Ctrl-D there, twice after an
            # unfinished line (the first ends the line, the second is the end of file).
            eof = self.key(termios.VEOF)
            self.to_box += eof if self.last_input == b"\n" else eof + eof

    def hang_up(self) -> None:
        """Close the pty's master, as sshd does: the box's terminal hangs up.

        Its reads end and its session gets SIGHUP; a box that ignores both (PID 1 waiting for a job) is killed
        after :data:`_HANGUP_GRACE`.
        """
        if self.master_open:
            self.master_open = False
            self.to_box = b""
            self.box.pty.close()
        if self.kill_at is None:
            self.kill_at = time.monotonic() + _HANGUP_GRACE

    def drain(self) -> None:
        """After the box's first process exited: copy what is left.

        Up to the pty's close (EIO), or until it has been quiet for :data:`_LINGER` while something else in the
        box still holds it open.
        """
        poller = select.poll()
        poller.register(self.master, select.POLLIN)
        while poller.poll(_LINGER * 1000) and self.copy_output():
            pass


def relay(box: Box, stdin: int = 0, stdout: int = 1, size_from: tuple[int, ...] = (0, 1, 2)) -> int:
    """Relay between the caller's ``stdin``/``stdout`` and ``box.pty`` until the box's first process exits.

    The window size comes from the first of ``size_from`` that is a terminal. ``stdin``, if a terminal, is in
    raw mode meanwhile. Returns the box's return code (negative: the signal that killed it).
    """
    master = box.pty.fileno()
    relay = _Relay(box, master, stdin, stdout, size_from)
    was_blocking = os.get_blocking(master)

    def put_back() -> None:
        if not box.pty.closed:  # closed: the relay hung it up
            os.set_blocking(master, was_blocking)

    with ExitStack() as stack:
        stack.callback(put_back)
        os.set_blocking(master, False)
        wakeup = stack.enter_context(_signals_to_pipe())
        relay.resize()
        if relay.stdin_is_terminal:
            stack.enter_context(raw_mode(stdin))
        relay.run(wakeup)
    return box.wait()
