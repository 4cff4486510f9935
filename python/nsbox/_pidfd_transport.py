"""An asyncio subprocess transport for a box, which learns of the box's end from its pidfd on the running loop.

asyncio's own transports learn of a child's end from a child watcher: on 3.11 by default a thread per process
(``ThreadedChildWatcher``), elsewhere a ``SIGCHLD`` handler or a pidfd watcher that must be attached to the loop.
A box has a pidfd already (:attr:`nsbox.Popen.pidfd`), so the loop watches it directly (``add_reader``: it is
readable once the box's first process has exited) and :meth:`nsbox.Popen.poll` reaps it, which also finishes the
box's cgroup and its ``exec`` children. No thread, no signal handler, no watcher; any loop with ``add_reader``
and pipes (asyncio's, uvloop) will do. The rest is ``asyncio.base_subprocess``'s, as for ``asyncio``'s
transports (CPython 3.11 to 3.13 alike).
"""

from __future__ import annotations

import asyncio
import signal as _signal  # send_signal's parameter is `signal`, as in asyncio
import warnings
import weakref
from asyncio import base_subprocess
from typing import Any

from nsbox import _nsbox
from nsbox._popen import Popen

#: Boxes running per loop, from the start of their transport until they are reaped.
_running: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, int] = weakref.WeakKeyDictionary()


def boxes_running(loop: asyncio.AbstractEventLoop) -> int:
    """How many boxes started through a :class:`PidfdTransport` on ``loop`` have not been reaped yet."""
    return _running.get(loop, 0)


class PidfdTransport(base_subprocess.BaseSubprocessTransport):
    """``BaseSubprocessTransport`` around an :class:`nsbox.Popen`, watched through its pidfd.

    Closing it (or its collection) while the box runs kills and reaps the box at once, as
    :func:`nsbox.run` does on an interrupt: with ``pid=True`` every process in it ends; with a cgroup, what is
    left in it is killed. Nothing is left for a later reaper, even if the loop is closed meanwhile.
    """

    _proc: Popen | None

    def _start(self, args: Any, shell: bool, stdin: Any, stdout: Any, stderr: Any, bufsize: int, **kwargs: Any) -> None:
        # The box is started already (`popen`, by nsbox.asyncio): byte pipes, unbuffered, as the loop's pipes need.
        popen: Popen = kwargs["popen"]
        self._proc = popen
        _running[self._loop] = _running.get(self._loop, 0) + 1
        try:
            self._loop.add_reader(popen.pidfd, self._box_exited)
        except ValueError:  # no pidfd: reaped by someone else already (SIGCHLD ignored); poll() says 0
            self._loop.call_soon(self._box_exited)

    def _box_exited(self) -> None:
        proc = self._proc
        if proc is None or self._returncode is not None:
            return
        code = proc.poll()  # readable: it has exited, so this reaps it (unless another thread is reaping it)
        if code is not None:
            self._reaped(code)

    def _reaped(self, code: int) -> None:
        """Stop watching, close the pidfd, and tell the protocol (unless the loop is closed)."""
        proc = self._proc
        assert proc is not None
        fd = proc.__dict__.get("_pidfd")
        if fd is not None and not self._loop.is_closed():
            self._loop.remove_reader(fd)
        proc.close_pidfd()  # after remove_reader: a closed fd cannot be taken off an epoll set
        _running[self._loop] = _running.get(self._loop, 1) - 1
        if self._loop.is_closed():
            self._returncode = code  # nobody is left to tell
        else:
            self._process_exited(code)

    def close(self) -> None:
        """Close the pipes; kill and reap the box if it is still running (at once, not later)."""
        proc = self._proc
        if proc is not None and self._returncode is None:
            if proc.returncode is None:
                _nsbox.kill_and_reap(proc)  # one call: SIGKILL, waitpid, the cgroup emptied and removed
            self._reaped(proc.returncode)
        if self._loop is not None and self._loop.is_closed():
            # Collected after its loop was closed: the pipe transports cannot close through it; they close
            # their files as they are collected themselves (asyncio's) or closed the loop's handles (uvloop).
            self._closed = True
            return
        super().close()

    def __del__(self, _warn: Any = warnings.warn) -> None:
        # Close first, then warn as asyncio does: under warnings-as-errors the warning would end __del__.
        if not self._closed:
            self.close()
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)

    # Signals go through the pidfd, which cannot reach another process that took over the PID once the box
    # was reaped; a box that has exited gets none (no error), as with subprocess.Popen.
    def send_signal(self, signal: int) -> None:
        """Send ``signal`` to the box's first process through its pidfd (nothing once the box has exited)."""
        self._check_proc()
        proc = self._proc
        assert proc is not None
        fd = proc.__dict__.get("_pidfd")
        if fd is None or proc.returncode is not None:
            return
        try:
            _signal.pidfd_send_signal(fd, signal)
        except ProcessLookupError:
            pass

    def terminate(self) -> None:
        """``SIGTERM`` (which PID 1 of a box ignores unless it handles it, or ``init=True`` passes it on)."""
        self.send_signal(_signal.SIGTERM)

    def kill(self) -> None:
        """``SIGKILL``: with ``pid=True`` it ends every process of the box."""
        self.send_signal(_signal.SIGKILL)

    # Set once the protocol's connection_lost has run: the box reaped, every pipe closed.
    _lost = False
    _lost_waiter: asyncio.Future[None] | None = None

    def _call_connection_lost(self, exc: BaseException | None) -> None:
        try:
            super()._call_connection_lost(exc)
        finally:
            self._lost = True
            if self._lost_waiter is not None and not self._lost_waiter.done():
                self._lost_waiter.set_result(None)

    def is_finished(self) -> bool:
        """Whether the box is reaped and every pipe closed (the protocol's ``connection_lost`` has run)."""
        return self._lost

    def finished(self) -> asyncio.Future[None]:
        """A future done once :meth:`is_finished`."""
        if self._lost_waiter is None or self._lost_waiter.cancelled():
            self._lost_waiter = asyncio.get_running_loop().create_future()
            if self._lost:
                self._lost_waiter.set_result(None)
        return self._lost_waiter
