"""``tty=True``: the master of a box's pseudo-terminal (``Popen.pty``), and how :func:`nsbox.run` drives it.

The core makes the terminal (``src/tty.rs``): in the box's own devpts when it has a ``Dev()`` mount, else from
the caller's ``/dev/ptmx``. What is here is the caller's side: reading and writing the master, its size, and
:func:`nsbox.run`'s use of it.
"""

from __future__ import annotations

import errno
import fcntl
import io
import locale
import os
import selectors
import struct
import subprocess
import termios
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nsbox._popen import Popen

#: What one read takes at most.
_CHUNK = 65536


class Pty(io.FileIO):
    r"""The master of a box's pseudo-terminal: an unbuffered binary file (:class:`io.FileIO`, mode ``"r+"``).

    What the box writes to its terminal is read here; what is written here is typed on it (``b"\x03"`` is
    Ctrl-C when the terminal is in its usual mode). Reads return what is there, up to ``size``, blocking until
    something is (or ``None`` if made non-blocking with :func:`os.set_blocking`).

    End of file: once no process of the box holds the terminal any more, Linux answers reads of a master with
    ``EIO`` rather than EOF. Here that is EOF: :meth:`read` returns ``b""`` (and :meth:`readall`, ``read()``
    what was left before it), as for a pipe, so ``box.pty.read()`` ends cleanly when the box has exited. Its fd
    serves ``select``, event loops and ``pexpect.fdpexpect.fdspawn(box.pty)`` (pexpect reads ``EIO`` as EOF
    too).
    """

    def read(self, size: int | None = -1) -> bytes:
        """Up to ``size`` bytes (all until EOF for -1 or ``None``); ``b""`` at EOF (``EIO``, see the class)."""
        if size is None or size < 0:
            return self.readall()
        try:
            return super().read(size)
        except OSError as exc:
            if exc.errno == errno.EIO:
                return b""
            raise

    def readinto(self, buffer: Any) -> int | None:
        """As :meth:`io.FileIO.readinto`; 0 at EOF (``EIO``)."""
        try:
            return super().readinto(buffer)
        except OSError as exc:
            if exc.errno == errno.EIO:
                return 0
            raise

    def readall(self) -> bytes:
        """Everything until EOF (``EIO``); on a non-blocking master, what is there."""
        chunks: list[bytes] = []
        while True:
            chunk = self.read(_CHUNK)
            if not chunk:  # EOF, or None: nothing more for now
                if chunk is None and not chunks:
                    return None  # as FileIO.readall on a non-blocking fd
                return b"".join(chunks)
            chunks.append(chunk)


def set_size(fd: int, rows: int, cols: int) -> None:
    """``TIOCSWINSZ`` on the master: the kernel sends ``SIGWINCH`` to the terminal's foreground process group."""
    for name, value in (("rows", rows), ("cols", cols)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"resize: {name} must be an int, not {value!r}")
        if not 0 < value < 2**16:
            raise ValueError(f"resize: {name} must be from 1 to 65535, not {value}")
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def drive(process: Popen, input: Any, timeout: float | None, capture: bool) -> tuple[Any, Any]:
    r""":func:`nsbox.run`'s ``communicate`` for ``tty=True``: ``(stdout, stderr)``.

    ``input`` is typed on the terminal, then an end of file (the terminal's ``VEOF`` character, Ctrl-D; twice
    when the input's last line has no newline, as a person would type it). What the terminal shows (the
    program's output on it, and the terminal's echo of what was typed, with its ``\r\n`` line ends) is
    ``stdout`` when ``capture``, else relayed to the caller's fd 1 as it comes. Redirected ``stdout``/``stderr``
    pipes are read at the same time. Ends when the terminal's last holder is gone and the pipes are at EOF (as
    :meth:`subprocess.Popen.communicate` waits for a pipe that a grandchild still holds); ``TimeoutExpired``
    past ``timeout``, with what was captured so far.
    """
    pty = process.pty
    assert pty is not None
    deadline = None if timeout is None else time.monotonic() + timeout
    if process.stdin is not None:
        process.stdin.close()  # the input goes to the terminal
    if input is not None and not isinstance(input, (bytes, bytearray, memoryview)):
        if not process.text_mode:  # type: ignore[attr-defined]
            raise TypeError(f"input must be bytes, not {type(input).__name__} (or pass text=True)")
        input = input.encode(*_encoding(process))
    pending = b""
    if input is not None:
        veof = termios.tcgetattr(pty.fileno())[6][termios.VEOF]
        veof = veof if isinstance(veof, bytes) else bytes([veof])
        data = bytes(input)
        pending = data + (veof if data.endswith(b"\n") or not data else veof + veof)
    buffers: dict[int, list[bytes]] = {}

    def expired() -> subprocess.TimeoutExpired:
        shown = b"".join(buffers[pty.fileno()]) if capture else None
        return subprocess.TimeoutExpired(process.args, timeout or 0, output=shown)

    os.set_blocking(pty.fileno(), False)
    with selectors.DefaultSelector() as selector:
        selector.register(pty.fileno(), selectors.EVENT_READ | (selectors.EVENT_WRITE if pending else 0))
        buffers[pty.fileno()] = []
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                selector.register(stream.fileno(), selectors.EVENT_READ)
                buffers[stream.fileno()] = []
        while selector.get_map():
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise expired()
            for key, events in selector.select(remaining):
                fd = key.fd
                if events & selectors.EVENT_WRITE:
                    try:
                        pending = pending[os.write(fd, pending[:_CHUNK]) :]
                    except BlockingIOError:
                        pass
                    except OSError:
                        pending = b""  # the terminal is gone: nobody reads the rest
                    if not pending:
                        selector.modify(fd, selectors.EVENT_READ)
                if events & selectors.EVENT_READ:
                    try:
                        chunk = os.read(fd, _CHUNK)
                    except BlockingIOError:
                        continue
                    except OSError as exc:
                        if exc.errno != errno.EIO:
                            raise
                        chunk = b""  # the terminal's last holder is gone
                    if not chunk:
                        selector.unregister(fd)
                    elif fd == pty.fileno() and not capture:
                        _relay(chunk)
                    else:
                        buffers[fd].append(chunk)
    try:
        process.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        raise expired() from None
    results: list[Any] = []
    for stream in (process.stdout, process.stderr):
        if stream is None:
            results.append(None)
            continue
        data = b"".join(buffers[stream.fileno()])
        stream.close()
        results.append(_decoded(process, data))
    stdout, stderr = results
    if capture:
        stdout = _decoded(process, b"".join(buffers[pty.fileno()]))
    return stdout, stderr


def _relay(data: bytes) -> None:
    """Writes ``data`` to the caller's fd 1, where the box's output would go without a terminal."""
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(1, view) :]
    except OSError:
        pass  # no stdout to show it on (closed, or a reader gone)


def _decoded(process: Popen, data: bytes) -> Any:
    if not process.text_mode:  # type: ignore[attr-defined]
        return data
    return process._translate_newlines(data, *_encoding(process))  # type: ignore[attr-defined]


def _encoding(process: Popen) -> tuple[str, str]:
    """The encoding and errors of a text-mode ``process``, as :mod:`subprocess` picks them."""
    encoding, errors = getattr(process, "encoding", None), getattr(process, "errors", None)
    return encoding or locale.getpreferredencoding(False), errors or "strict"
