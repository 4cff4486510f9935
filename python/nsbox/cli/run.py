"""Starting a box for ``nsbox`` and ``nsbox exec``, passing signals on while it runs, and its exit status."""

from __future__ import annotations

import errno
import os
import signal
from collections.abc import Sequence
from contextlib import suppress
from types import FrameType
from typing import Any

import nsbox
from nsbox.cli import terminal
from nsbox.cli.words import EXIT_CANNOT_EXECUTE, EXIT_NOT_FOUND, Failure, UsageError, invalid, os_failure

#: Signals the terminal sends to the whole foreground process group, box included: nsbox ignores them.
_IGNORED_SIGNALS = (signal.SIGINT, signal.SIGQUIT)
#: Signals sent to nsbox alone (by ``kill``, ``timeout``, a service manager): passed on to the box.
_FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


class _ForwardSignals:
    """While nsbox waits for the box: ignore what the terminal also sends the box, pass the rest on.

    SIGINT and SIGQUIT from the terminal reach the whole foreground process group, the box included
    (unshare blocks them too). SIGTERM, SIGHUP, SIGUSR1 and SIGUSR2 are more likely meant for nsbox
    alone (``kill``, ``timeout``, a service manager) and are passed on to the box, whose exit then ends
    nsbox; one that nsbox inherited as ignored (``nohup``) stays ignored. The box starts with default
    dispositions whatever nsbox's are.
    """

    def __init__(self) -> None:
        self._box: nsbox.Popen | None = None
        self._pending: list[int] = []
        self._saved: dict[int, Any] = {}

    def __enter__(self) -> _ForwardSignals:
        for sig in _IGNORED_SIGNALS:
            self._saved[sig] = signal.signal(sig, signal.SIG_IGN)
        for sig in _FORWARDED_SIGNALS:
            if signal.getsignal(sig) != signal.SIG_IGN:
                self._saved[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)

    def to(self, box: nsbox.Popen) -> None:
        """Forward from now on to ``box``, and what came while it was being started."""
        self._box = box
        while self._pending:
            self._send(self._pending.pop(0))

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._box is None:
            self._pending.append(signum)
        else:
            self._send(signum)

    def _send(self, signum: int) -> None:
        if self._box is not None:
            with suppress(ProcessLookupError):
                self._box.send_signal(signum)


def _program(program: Sequence[str]) -> tuple[list[str], str]:
    """The argv and the file to execute: PROGRAM, or else ``$SHELL`` as a login shell (``-sh``), as unshare does."""
    if program:
        return list(program), program[0]
    shell = os.environ.get("SHELL") or "/bin/sh"
    return [f"-{os.path.basename(shell)}"], shell


def _spawn_failure(exc: OSError) -> Failure:
    """What failed, with the words and exit statuses unshare has for a program that could not start.

    The core's exceptions name the step that failed (``OSError.step``: the ``steps!`` table in src/errors.rs);
    those of the working directory and of the exec name the directory or the program as ``filename``.
    """
    step = getattr(exc, "step", None)
    if step == "cwd" and exc.filename is not None:
        return Failure(f"cannot chdir to '{os.fsdecode(exc.filename)}': {exc.strerror}")
    if step == "exec" and exc.filename is not None:
        status = EXIT_NOT_FOUND if exc.errno == errno.ENOENT else EXIT_CANNOT_EXECUTE
        return Failure(f"failed to execute {os.fsdecode(exc.filename)}: {exc.strerror}", status)
    return Failure(os_failure(exc))


def _start(program: Sequence[str], options: dict[str, Any]) -> nsbox.Popen:
    argv, executable = _program(program)
    try:
        return nsbox.Popen(argv, executable=executable, **options)
    except OSError as exc:
        raise _spawn_failure(exc) from None
    except ValueError as exc:
        raise UsageError(invalid(exc)) from None


def _exit_status(returncode: int) -> int:
    """The program's exit status, or 128+N when signal N killed it, as a shell reports it."""
    return 128 - returncode if returncode < 0 else returncode


def run_box(program: Sequence[str], options: dict[str, Any]) -> int:
    """Run ``program`` (default: ``$SHELL``) in a box with :class:`nsbox.Popen`'s ``options``; its exit status."""
    with _ForwardSignals() as forward:
        box = _start(program, options)
        forward.to(box)
        if options.get("tty"):
            return _exit_status(terminal.relay(box))
        return _exit_status(box.wait())
