r"""Boxes for asyncio programs: ``await`` a box as you would a subprocess, on the running loop.

``import nsbox.asyncio``, then in a coroutine (or a notebook cell, which may ``await`` at top level)::

    r = await nsbox.asyncio.run(["sh", "-c", "echo $$"], pid=True, capture_output=True, text=True)
    r.stdout          # '1\n': PID 1 of the box's own PID namespace

- :func:`create_subprocess_exec` and :func:`create_subprocess_shell` are :mod:`asyncio`'s, with every option
  of :class:`nsbox.Popen`; they return the standard :class:`asyncio.subprocess.Process`.
- :func:`run` is :func:`nsbox.run` as a coroutine: a :class:`subprocess.CompletedProcess`, the same options,
  the same exceptions.
- :func:`call` is :func:`nsbox.call` as a coroutine.

The loop learns that a box has ended from the box's pidfd (``loop.add_reader``): no thread per box, no
``SIGCHLD`` handler, no child watcher, so any number of boxes can run from one loop, with asyncio's own loop or
uvloop. Starting a box is a blocking call of about a millisecond, made on the loop as asyncio's own fork is,
or, while other boxes of the loop are starting or running, in the loop's default executor (see ``_spawn``).

Cancelling the task that awaits :func:`run` or :func:`call` (or an ``asyncio.timeout`` around it) kills the box
and reaps it before the ``CancelledError`` goes on: with ``pid=True`` every process in it ends, and a box with
cgroup limits has what is left in its cgroup killed. A :class:`~asyncio.subprocess.Process` from
:func:`create_subprocess_exec` is asyncio's: its box runs until it exits or is killed (``proc.kill()``), and
its transport, closed or collected while the box runs, kills and reaps it.
"""

from __future__ import annotations

# Absolute imports: `asyncio` here is the standard library's, not this module.
import asyncio
import contextlib
import functools
import io
import os
import subprocess
import weakref
from asyncio.subprocess import Process, SubprocessStreamProtocol
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from nsbox import _call, _nsbox
from nsbox._options import CALL_OPTIONS, Args, BoxOptions, File, ProcessArgs, StrOrBytesPath, check_names, prepare
from nsbox._pidfd_transport import PidfdTransport, boxes_running
from nsbox._popen import Popen
from nsbox._run import completed, pipes_for

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack for **kwargs from Python 3.12

    from nsbox._options import NamespaceOptions, RunOptions

__all__ = ["call", "create_subprocess_exec", "create_subprocess_shell", "run"]

T = TypeVar("T")

#: asyncio's default line limit of a stream (``asyncio.streams._DEFAULT_LIMIT``).
DEFAULT_LIMIT = 2**16


class ProcessOptions(ProcessArgs, BoxOptions, total=False):
    """What :func:`create_subprocess_exec` takes besides stdio and ``limit``: every option of :class:`nsbox.Popen`.

    :mod:`subprocess`'s own, but for those asyncio's pipes do not allow (``text``, ``encoding``, ``errors``,
    ``universal_newlines``, ``bufsize`` other than 0), and the namespace options.
    """


async def create_subprocess_exec(
    program: StrOrBytesPath,
    *args: StrOrBytesPath,
    stdin: File = None,
    stdout: File = None,
    stderr: File = None,
    limit: int = DEFAULT_LIMIT,
    **options: Unpack[ProcessOptions],
) -> Process:
    r""":func:`asyncio.create_subprocess_exec` in a box: ``program``, ``args`` and every :class:`nsbox.Popen` option.

    Returns the standard :class:`asyncio.subprocess.Process` (``pid`` is the box's first process, seen from the
    host; ``communicate``, ``wait``, ``kill`` ... as asyncio's). Waiting uses the box's pidfd on the running loop.

    For example (in a coroutine)::

        proc = await create_subprocess_exec("hostname", hostname="box", stdout=asyncio.subprocess.PIPE)
        await proc.communicate()  # (b'box\n', None)

    Raises:
        ValueError, TypeError: as :class:`nsbox.Popen` (a bad option, before anything is started), or as asyncio
            (``text``, ``encoding``, ``errors``, ``universal_newlines``, ``bufsize``, ``shell``).
        OSError: the box could not be started, as for :class:`nsbox.Popen` (``FileNotFoundError`` ...).
    """
    if options.get("shell"):
        raise ValueError("shell must be False")
    options.pop("shell", None)  # type: ignore[typeddict-item]
    return await _process((program, *args), False, stdin, stdout, stderr, limit, options)


async def create_subprocess_shell(
    cmd: str | bytes,
    stdin: File = None,
    stdout: File = None,
    stderr: File = None,
    limit: int = DEFAULT_LIMIT,
    **options: Unpack[ProcessOptions],
) -> Process:
    """:func:`asyncio.create_subprocess_shell`, in a box: ``/bin/sh -c cmd`` with any option of :class:`nsbox.Popen`.

    Raises:
        ValueError, TypeError, OSError: as :func:`create_subprocess_exec`.
    """
    if not isinstance(cmd, (bytes, str)):
        raise ValueError("cmd must be a string")
    if not options.pop("shell", True):  # type: ignore[typeddict-item]
        raise ValueError("shell must be True")
    return await _process(cmd, True, stdin, stdout, stderr, limit, options)


async def _process(
    args: Args, shell: bool, stdin: File, stdout: File, stderr: File, limit: int, options: Mapping[str, Any]
) -> Process:
    """What asyncio's ``subprocess_exec`` and ``_make_subprocess_transport`` do, with a :class:`PidfdTransport`."""
    options = dict(options)
    # asyncio's checks (base_events.subprocess_exec): the pipes carry bytes, unbuffered.
    if options.pop("universal_newlines", False):
        raise ValueError("universal_newlines must be False")
    if options.pop("bufsize", 0) != 0:
        raise ValueError("bufsize must be 0")
    if options.pop("text", None):
        raise ValueError("text must be False")
    if options.pop("encoding", None) is not None:
        raise ValueError("encoding must be None")
    if options.pop("errors", None) is not None:
        raise ValueError("errors must be None")
    loop = asyncio.get_running_loop()
    start = functools.partial(
        Popen, args, shell=shell, stdin=stdin, stdout=stdout, stderr=stderr, universal_newlines=False, bufsize=0
    )
    popen = await _spawn(loop, functools.partial(start, **options))
    protocol = SubprocessStreamProtocol(limit=limit, loop=loop)
    waiter = loop.create_future()
    how: Any = args  # typeshed's transport takes str | bytes | their sequences; Popen also takes paths
    transport = PidfdTransport(loop, protocol, how, shell, stdin, stdout, stderr, 0, waiter=waiter, popen=popen)
    try:
        await waiter  # the pipes are connected to the loop
    except BaseException:
        transport.close()  # kills and reaps the box
        await _finished(transport)
        raise
    return Process(transport, protocol, loop)


#: Spawns in the executor, per loop.
_spawning: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, int] = weakref.WeakKeyDictionary()


async def _spawn(loop: asyncio.AbstractEventLoop, start: Callable[[], Popen]) -> Popen:
    """Start a box: at once when it is the loop's only one, else in the loop's executor (asyncio's getaddrinfo's).

    A spawn is a blocking call of about a millisecond, mostly the kernel's work. A box started alone is started
    at once, as asyncio forks its subprocesses. When other boxes of the loop are starting or running (``gather``),
    spawning in the executor lets the loop go on, and the spawns run side by side on the CPUs there are: a bounded
    pool, not a thread per box; the boxes are still waited for on the loop. Either way, ``Popen`` checks the options
    first and raises as it does. Only asyncio's own loops spawn in the executor (see below).
    """
    if not isinstance(loop, asyncio.BaseEventLoop) or (not boxes_running(loop) and not _spawning.get(loop)):
        # Other loops (uvloop) close a pipe's fd twice (libuv's close, then the file object's, which expects EBADF):
        # a pidfd or pipe another thread opened in between would be closed too. Their spawns stay on the loop.
        return start()
    _spawning[loop] = _spawning.get(loop, 0) + 1
    try:
        future = loop.run_in_executor(None, start)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            # It is being started all the same: wait for it (a millisecond, whatever else is cancelled meanwhile),
            # then kill and reap it, before the cancellation goes on.
            while not future.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.shield(future)
            if not future.cancelled() and future.exception() is None:
                _discard(future.result())
            raise
    finally:
        _spawning[loop] -= 1


def _discard(popen: Popen) -> None:
    """Kill and reap a box nobody will use, and close its pipes and pidfd."""
    _nsbox.kill_and_reap(popen)
    for stream in (popen.stdin, popen.stdout, popen.stderr):
        if stream is not None:
            stream.close()
    popen.close_pidfd()


async def _finished(transport: PidfdTransport) -> None:
    """Wait until the transport has closed its pipes (its box is reaped already).

    Shielded: a cancellation meanwhile is raised here, and the pipes close on the loop's next turns all the same.
    """
    if not transport.is_finished():
        await asyncio.shield(transport.finished())


async def run(
    args: Args,
    *,
    input: Any = None,
    capture_output: bool = False,
    timeout: float | None = None,
    check: bool = False,
    **options: Unpack[RunOptions],
) -> subprocess.CompletedProcess[Any]:
    r""":func:`nsbox.run` as a coroutine: run ``args`` in a box, wait for it on the loop, return a ``CompletedProcess``.

    The same arguments (:func:`subprocess.run`'s and every option of :class:`nsbox.Popen`), the same result (an
    :class:`nsbox.CompletedBox` with cgroup limits) and the same exceptions (``subprocess.TimeoutExpired``,
    ``CalledProcessError``). ``text``, ``encoding``, ``errors`` decode the output as :mod:`subprocess` does.

    On a timeout, a cancellation (of the task, or by an ``asyncio.timeout`` around it) or any other exception while
    waiting, the box is killed and reaped, its pipes closed, before the exception goes on; with ``pid=True``
    that ends every process in it.

    ``tty=True`` is refused (``ValueError``, before anything is started): nothing here would read the box's
    terminal, so a box that writes more than the terminal holds would never end. Use :func:`nsbox.run` in
    ``loop.run_in_executor``, or :func:`create_subprocess_exec` and read its master
    (``proc._transport.get_extra_info("subprocess").pty``).

    For example (in a coroutine)::

        r = await run(["hostname"], hostname="box", capture_output=True, text=True)
        r.stdout  # 'box\n'
    """
    if options.get("tty"):
        raise ValueError(
            "nsbox.asyncio.run does not drive a terminal: tty=True is nsbox.run's (in an executor), or "
            "create_subprocess_exec's, whose terminal is get_extra_info('subprocess').pty"
        )
    pipes_for(options, input, capture_output)
    rest: dict[str, Any] = dict(options)
    text = bool(rest.pop("text", None)) | bool(rest.pop("universal_newlines", None))
    encoding, errors = rest.pop("encoding", None), rest.pop("errors", None)
    codec = _codec(encoding, errors) if text or encoding is not None or errors is not None else None
    rest.pop("bufsize", None)  # the loop's pipes are unbuffered
    shell = bool(rest.pop("shell", False))
    stdin, stdout, stderr = rest.pop("stdin", None), rest.pop("stdout", None), rest.pop("stderr", None)
    data = input.encode(*codec) if codec is not None and isinstance(input, str) else input

    process = await _process(args, shell, stdin, stdout, stderr, DEFAULT_LIMIT, rest)
    transport: PidfdTransport = process._transport  # type: ignore[attr-defined]
    popen = transport.get_extra_info("subprocess")
    try:
        if data is None and process.stdin is not None:
            process.stdin.close()  # as subprocess's communicate does (asyncio's of 3.11 would leave it open)
        try:
            async with asyncio.timeout(timeout):
                if process.stdin is None and process.stdout is None and process.stderr is None:
                    out = err = None  # nothing to read or write: just wait (communicate makes three tasks)
                    retcode = await process.wait()
                else:
                    out, err = await process.communicate(data)
                    retcode = await process.wait()
        except TimeoutError:
            raise subprocess.TimeoutExpired(popen.args, timeout or 0.0) from None
    except BaseException:
        transport.close()  # kills and reaps the box
        await _finished(transport)
        raise
    await _finished(transport)
    if codec is not None:
        out, err = _decode(out, *codec), _decode(err, *codec)
    return completed(popen, retcode, out, err, check=check)


def _codec(encoding: str | None, errors: str | None) -> tuple[str, str]:
    """The encoding and errors a text-mode :class:`subprocess.Popen` would use (a ``TextIOWrapper``'s)."""
    wrapper = io.TextIOWrapper(io.BytesIO(), encoding=encoding, errors=errors)
    return wrapper.encoding, wrapper.errors or "strict"


def _decode(data: bytes | None, encoding: str, errors: str) -> Any:
    # As subprocess's communicate: decoded, with universal newlines.
    return None if data is None else data.decode(encoding, errors).replace("\r\n", "\n").replace("\r", "\n")


async def call(
    fn: Callable[..., T],
    /,
    *args: Any,
    timeout: float | None = None,
    user: bool | None = None,
    **options: Unpack[NamespaceOptions],
) -> T:
    """:func:`nsbox.call` as a coroutine: ``fn(*args)`` in a forked copy of this interpreter in new namespaces.

    The same options (``pid``, ``net``, ``hostname``, ``sandbox`` ...), result and exceptions as
    :func:`nsbox.call`; keyword arguments of ``fn`` go in a :func:`functools.partial`, as with
    ``loop.run_in_executor``. The fork itself is a short blocking call on the loop (see :func:`nsbox.call` on
    what it costs in a large process); the result is read, and the box waited for, on the loop.

    For example (in a coroutine)::

        await call(socket.gethostname, hostname="box")  # 'box'

    Raises:
        subprocess.TimeoutExpired: ``timeout`` seconds passed; the box was killed and reaped (as it is when the
            task is cancelled, before the ``CancelledError`` goes on).
        BoxCrashed: the function's process died without returning.
        TypeError, OSError: as :func:`nsbox.call`.
    """
    __tracebackhide__ = True  # pytest: show the caller's frames, not these
    if not callable(fn):
        raise TypeError(f"fn must be callable, not {type(fn).__name__}")
    _call.check_timeout(timeout)
    check_names(options, CALL_OPTIONS, "call")
    prepared = prepare(options, user)
    untrusted = prepared.new_session and not _call.TRUSTED.get()
    name = _call._describe(fn)
    loop = asyncio.get_running_loop()
    # nsbox.call's fork and clean-up; the box is waited for here, on the loop.
    with _call.forked(fn, args, {}, prepared, close_fds=untrusted) as box:
        try:
            async with asyncio.timeout(timeout):
                box.message = await _read_message(loop, box.pidfd, box.read_end)
                if box.pidfd >= 0:
                    await _readable(loop, (box.pidfd,))  # the box has exited: waitid returns at once
        except TimeoutError:
            raise subprocess.TimeoutExpired(name, timeout or 0.0) from None
        box.returncode = _call._reap(box.pidfd)
    result: T = _call._conclude(*box.outcome(), name, plain=untrusted)
    return result


async def _readable(loop: asyncio.AbstractEventLoop, fds: tuple[int, ...]) -> set[int]:
    """Wait until one of ``fds`` is readable; return those that are."""
    ready: set[int] = set()
    woken = loop.create_future()

    def on_readable(fd: int) -> None:
        ready.add(fd)
        if not woken.done():
            woken.set_result(None)

    # uvloop (libuv) makes an fd it watches non-blocking, and leaves it so: a pidfd that is non-blocking makes
    # waitid(P_PIDFD) fail with EAGAIN while the process runs, so each fd gets its mode back.
    blocking = {fd: os.get_blocking(fd) for fd in fds}
    for fd in fds:
        loop.add_reader(fd, on_readable, fd)
    try:
        await woken
    finally:
        for fd in fds:
            loop.remove_reader(fd)
            os.set_blocking(fd, blocking[fd])
    return ready


async def _read_message(loop: asyncio.AbstractEventLoop, pidfd: int, fd: int) -> bytes | None:
    """``_call._read_message`` on the loop: the box's message, or ``None`` when it died without sending a whole one.

    Watches the pipe and the pidfd, so that a box that died is noticed even when a process holds a copy of the
    pipe (one the box forked, or one forked meanwhile from this process).
    """
    os.set_blocking(fd, False)
    data = bytearray()
    while True:
        if (whole := _call._whole(data)) is not None:
            return whole
        # Without a pidfd the box has exited already (and was reaped elsewhere): read what is there.
        ready = await _readable(loop, (fd, pidfd)) if pidfd >= 0 else {pidfd}
        if fd in ready:
            try:
                chunk = os.read(fd, 1 << 20)
            except BlockingIOError:
                continue
            if not chunk:
                return None
            data += chunk
        elif pidfd in ready:
            return _call._rest(fd, data)
