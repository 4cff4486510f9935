"""``nsbox.call``: run a Python function in a forked copy of the interpreter inside new namespaces."""

from __future__ import annotations

import builtins
import contextlib
import contextvars
import fcntl
import functools
import io
import math
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from nsbox import _nsbox
from nsbox._options import CALL_OPTIONS, POOL, NamespaceOptions, Prepared, check_names, prepare

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack from Python 3.12

T = TypeVar("T")

#: Every message from the box is this length header (native byte order) and a pickle.
_HEADER = struct.Struct("=Q")


class RemoteTraceback(Exception):
    """The traceback of an exception raised inside the box, as text.

    :func:`call` sets it as the ``__cause__`` of the exception it re-raises, so the traceback shows where
    in the function the error happened, as :mod:`concurrent.futures` does for process pools.
    """

    __module__ = "nsbox"

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return self.text


class BoxCrashed(ChildProcessError):
    """The function's process ended without returning: killed by a signal (``os.abort()``, a segfault) or exited.

    ``returncode`` is as in :mod:`subprocess` (``-N`` for signal N); ``signal`` names the signal, if any;
    ``oom_killed`` tells whether the OOM killer of ``memory_limit`` killed a process of the box.
    """

    __module__ = "nsbox"

    def __init__(self, message: str, *, returncode: int, pid: int, oom_killed: bool = False) -> None:
        super().__init__(message)
        self.returncode = returncode
        self.pid = pid
        self.oom_killed = oom_killed

    @property
    def signal(self) -> signal.Signals | None:
        """The signal that killed the function's process, or ``None`` if it exited."""
        return signal.Signals(-self.returncode) if self.returncode < 0 else None


#: Set by the pytest plugin, whose boxed tests are the suite's own code: with ``sandbox=True`` such a test keeps its
#: fds (pytest's capture) and may return pytest's own outcomes.
TRUSTED: contextvars.ContextVar[bool] = contextvars.ContextVar("nsbox_trusted_call", default=False)


def call(
    fn: Callable[..., T],
    args: Iterable[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    timeout: float | None = None,
    user: bool | None = None,
    **options: Unpack[NamespaceOptions],
) -> T:
    """Run ``fn(*args, **kwargs)`` in a forked copy of this interpreter inside new namespaces; return its result.

    Takes the namespace options of :func:`nsbox.run` (``pid``, ``net``, ``hostname``, ``mount_proc``,
    ``time`` and its offsets, ``user`` and the id maps ...) with the same meaning: without root a user
    namespace is added, with your uid and gid mapped to 0. With ``pid=True`` the function is PID 1 of the
    new PID namespace, so ``call(os.getpid, pid=True) == 1``, and every process it starts dies with it.
    ``network`` (an :class:`nsbox.Network`) and ``ip`` put the function on a network as they do a box
    (implies ``net``). With ``seccomp`` the function runs under that filter (see :class:`nsbox.Seccomp`).

    The function, its arguments and everything else are the forked copy's (nothing is pickled on the way
    in). The return value travels back pickled; so does an exception, which is re-raised here with its
    type and message, and its traceback in the box attached as ``__cause__`` (a :class:`RemoteTraceback`).
    The box ends with ``os._exit()``: no ``atexit`` handlers, and the buffers of files it inherited are
    not flushed a second time (``sys.stdout`` and ``sys.stderr`` are flushed here before the fork, and in
    the box after the function, so its prints are kept).

    With ``sandbox=True`` the function is taken for code you do not trust: in the box it has none of the
    caller's fds but 0-2 (the caller's files, sockets and pipes are closed there), and what it returns or
    raises is unpickled as plain data only (built-in types and exceptions: anything else is a
    ``TypeError``), so that its result cannot run code here. It is still a copy of the caller: whatever the
    caller holds in memory (keys, tokens) the function can read. Run code you do not trust with
    :func:`nsbox.run` rather than in a copy of a process that holds secrets.

    >>> import socket
    >>> call(socket.gethostname, hostname="box")
    'box'

    Raises:
        subprocess.TimeoutExpired: ``timeout`` seconds passed; the box was killed and reaped (on
            ``KeyboardInterrupt`` too, which is then re-raised).
        BoxCrashed: the function's process died without returning (``os.abort()``, a segfault,
            ``os._exit()``); the message names the signal.
        TypeError: the result cannot be pickled (the message names the function).
        OSError: the namespaces cannot be made, as for :func:`nsbox.run`.
    """
    __tracebackhide__ = True  # pytest: show the caller's frames, not these
    if not callable(fn):
        raise TypeError(f"fn must be callable, not {type(fn).__name__}")
    args = tuple(args)
    kwargs = {} if kwargs is None else dict(kwargs)
    check_timeout(timeout)
    check_names(options, CALL_OPTIONS, "call")
    prepared = prepare(options, user)
    untrusted = prepared.new_session and not TRUSTED.get()
    name = _describe(fn)
    outcome = call_in_box(fn, args, kwargs, prepared, timeout=timeout, close_fds=untrusted)
    result: T = _conclude(*outcome, name, plain=untrusted)
    return result


#: What :func:`call_in_box` collects: the box's message (``None`` if it sent none), its exit status, its host PID,
#: and whether the OOM killer of ``memory_limit`` struck; :func:`_conclude` makes the result or the error of it.
Outcome = tuple[bytes | None, int | None, int, bool]


class Cancelled(Exception):
    """One of the ``cancel`` fds of :func:`call_in_box` became readable (or hung up): the box was killed."""


def call_in_box(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    prepared: Prepared,
    *,
    timeout: float | None = None,
    close_fds: bool = False,
    cancel: Iterable[int] = (),
) -> Outcome:
    """Forks into the box of ``prepared``, runs ``fn`` there and collects its outcome, without unpickling it.

    The part of :func:`call` that :class:`nsbox.Zygote`'s server shares: it hands the outcome to its caller,
    which concludes it. ``close_fds``: the box keeps only fds 0-2. ``cancel``: fds whose readiness ends the
    wait (``Cancelled``), the box killed and reaped.
    """
    __tracebackhide__ = True
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        with forked(fn, args, kwargs, prepared, close_fds=close_fds, pool=POOL.get()) as box:
            box.message = _read_message(box.pidfd, box.read_end, deadline, tuple(cancel))
            box.returncode = _reap(box.pidfd)
    except _Timeout:
        raise subprocess.TimeoutExpired(_describe(fn), timeout or 0.0) from None  # killed and reaped
    return box.outcome()


@dataclass
class Forked:
    """A function's box, as :func:`forked` made it: what waiting for it needs, and what it gave."""

    #: The pipe the box sends its message on, and the box's pidfd (-1 if it was reaped before it could be watched).
    read_end: int
    pidfd: int
    #: The box's PID on the host.
    pid: int
    #: Set by the waiter: the box's message (``None`` if it sent none) and its exit status.
    message: bytes | None = None
    returncode: int | None = None
    #: Set as the box is freed: whether the OOM killer of ``memory_limit`` struck.
    oom_killed: bool = False

    def outcome(self) -> Outcome:
        return self.message, self.returncode, self.pid, self.oom_killed


@contextlib.contextmanager
def forked(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    prepared: Prepared,
    *,
    close_fds: bool = False,
    pool: _nsbox.Pool | None = None,
) -> Iterator[Forked]:
    """Forks into the box of ``prepared`` to run ``fn``; the ``with`` body waits for it, each caller its own way.

    :func:`call_in_box` waits with ``poll``, :func:`nsbox.asyncio.call` on its loop. An exception in the body (a
    timeout, a cancellation, an interrupt) kills and reaps the box before it goes on; either way the box's pipe
    and pidfd are closed at the end, its cgroup emptied and removed, and its place on a network given back.
    ``close_fds``: the box keeps only fds 0-2. ``pool``: the :class:`nsbox.Pool` whose sets the box may take.
    """
    __tracebackhide__ = True
    network = prepared.network
    # With a pool wired to the network, one of its ready sets (already on it).
    link, wired = (None, None) if network is None else network._place(prepared.ip, prepared.spec, pool)

    _flush_std_streams()
    # (PID, pidfd, cgroup) of the box, put here by _nsbox.fork before it returns: known even if an interrupt is
    # raised as it returns. Killing and reaping go through the pidfd, which cannot name a reused PID.
    started: list[tuple[int, int, _nsbox.Cgroup | None]] = []
    box = None
    read_end = write_end = -1
    try:
        read_end, write_end = _pipe()
        try:
            _nsbox.fork(
                prepared.spec,
                functools.partial(
                    _run_in_box,
                    fn,
                    args,
                    kwargs,
                    read_end,
                    write_end,
                    os.getcwd() if prepared.keeps_cwd else None,
                    close_fds,  # sandbox=True, a zygote's box: the caller's other fds are closed first
                ),
                started,
                link=None if network is None or link is None or wired is not None else (network._lan, *link),
                pool=pool,
                taken=wired,
            )
        finally:
            os.close(write_end)
        box = Forked(read_end, started[0][1], started[0][0])
        yield box
    except BaseException:
        if started:
            # One call that a second interrupt cannot cut short before the box is killed.
            _nsbox.kill_and_reap_pidfd(started[0][1])
        raise
    finally:
        wired = None  # a set the fork did not take is freed with it
        if read_end >= 0:
            os.close(read_end)
        for _, pidfd, cgroup in started:
            if pidfd >= 0:
                os.close(pidfd)
            if cgroup is not None:
                cgroup.finish()  # reaped: what the function left in its cgroup is killed, the cgroup removed
                if box is not None:
                    box.oom_killed = (cgroup.usage()[3] or 0) > 0
        if network is not None and link is not None:
            if started:
                network._release(link[1], link[0])  # exited and reaped: its veth goes with its namespace
            else:
                network._bind(link[1], None)


def check_timeout(timeout: object) -> None:
    """``timeout`` of a call: a number of seconds or ``None`` (``TypeError`` otherwise, before anything starts)."""
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))):
        raise TypeError(f"timeout must be a number of seconds or None, not {timeout!r}")


def _describe(fn: Callable[..., Any]) -> str:
    qualname = getattr(fn, "__qualname__", None)
    return f"{qualname}()" if isinstance(qualname, str) else repr(fn)


def _flush_std_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):  # closed, or a broken pipe: nothing to keep
            pass


# -- In the box ---------------------------------------------------------------------------------------


def _run_in_box(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    read_end: int,
    write_end: int,
    cwd: str | None,
    sandboxed: bool = False,
) -> NoReturn:
    """Runs in the forked process: call, send the outcome, ``os._exit``. Never returns."""
    __tracebackhide__ = True
    code = 70
    try:
        os.close(read_end)
        if sandboxed:
            # The function is not trusted: it gets none of the caller's files, sockets or pipes.
            os.closerange(3, write_end)
            os.closerange(write_end + 1, os.sysconf("SC_OPEN_MAX"))
        if cwd is not None:
            # Mounts on the caller's root: the function starts where the caller is, as without them.
            with contextlib.suppress(OSError):
                os.chdir(cwd)
        me = os.getpid()
        try:
            message: tuple[Any, ...] = ("ok", fn(*args, **kwargs))
        except BaseException as exc:  # SystemExit and KeyboardInterrupt too: they are the function's outcome
            message = ("raised", exc, _format(exc))
        # If the function forked, only its own process answers; a copy returning here just leaves.
        if os.getpid() == me:
            _flush_std_streams()
            payload = _dumps(message, fn)
            view = memoryview(_HEADER.pack(len(payload)) + payload)
            while view:
                view = view[os.write(write_end, view) :]
        code = 0
    finally:
        os._exit(code)


def _format(exc: BaseException) -> str:
    # Leave out the frames that hide themselves (ours, pytest's convention): the traceback starts in the function.
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_locals.get("__tracebackhide__"):
        tb = tb.tb_next
    return "".join(traceback.format_exception(exc.with_traceback(tb)))


def _dumps(message: tuple[Any, ...], fn: Callable[..., Any]) -> bytes:
    try:
        payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        if message[0] == "raised":
            pickle.loads(payload)  # exceptions with their own __init__ often pickle but do not unpickle
        return payload
    except Exception as err:
        why = f"{type(err).__name__}: {_safe_str(err)}"
    if message[0] == "ok":
        text = f"the result of {_describe(fn)} cannot be pickled to return it from the box: {why}"
        return pickle.dumps(("unpicklable-result", text))
    exc, tb = message[1], message[2]
    kind = f"{type(exc).__module__}.{type(exc).__qualname__}"
    text = f"{_describe(fn)} raised {kind}: {_safe_str(exc)} (the exception cannot be pickled: {why})"
    return pickle.dumps(("unpicklable-exception", text, tb))


def _safe_str(obj: object) -> str:
    try:
        return str(obj)
    except Exception:
        return f"<{type(obj).__name__} that cannot be shown>"


# -- In the caller -------------------------------------------------------------------------------------


class _Timeout(Exception):
    """The deadline passed while waiting for the box."""


def _read_message(pidfd: int, fd: int, deadline: float | None, cancel: tuple[int, ...] = ()) -> bytes | None:
    """The box's message, or ``None`` when it died without sending a whole one.

    Waits (without the GIL) on the pipe and on a pidfd, so that a box that died is noticed even when a
    process it forked, or one forked meanwhile by another thread of ours, holds a copy of the pipe.
    """
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    if pidfd >= 0:
        poller.register(pidfd, select.POLLIN)
    for other in cancel:
        poller.register(other, select.POLLIN)
    data = bytearray()
    while True:
        if (whole := _whole(data)) is not None:
            return whole
        wait_ms = None
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Timeout
            wait_ms = math.ceil(remaining * 1000)
        # Without a pidfd the box has exited already (and was reaped elsewhere): read what is there.
        ready = {ready_fd for ready_fd, _ in poller.poll(wait_ms)} if pidfd >= 0 else {pidfd}
        if not ready.isdisjoint(cancel):
            raise Cancelled
        if fd in ready:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return None
            data += chunk
        elif pidfd in ready:
            return _rest(fd, data)


def _whole(data: bytearray) -> bytes | None:
    """The message, once ``data`` holds all of it."""
    if len(data) >= _HEADER.size and len(data) >= _HEADER.size + _HEADER.unpack_from(data)[0]:
        return bytes(data[_HEADER.size :])
    return None


def _rest(fd: int, data: bytearray) -> bytes | None:
    """The message, once the box has exited: all it wrote is in the pipe, read without blocking.

    ``None`` if it is not whole (the box died as it wrote).
    """
    os.set_blocking(fd, False)
    try:
        while chunk := os.read(fd, 1 << 20):
            data += chunk
    except BlockingIOError:
        pass
    size = _HEADER.unpack_from(data)[0] if len(data) >= _HEADER.size else -1
    return bytes(data[_HEADER.size :]) if len(data) == _HEADER.size + size else None


def _reap(pidfd: int) -> int | None:
    """Waits for the box to exit and returns its status as :mod:`subprocess` does (``-N`` for signal N).

    ``None`` when it was reaped by someone else (``SIGCHLD`` ignored, or a handler that reaps), as
    :class:`subprocess.Popen` copes with it.
    """
    if pidfd < 0:
        return None  # exited, and reaped elsewhere, before it could be watched
    try:
        info = os.waitid(os.P_PIDFD, pidfd, os.WEXITED)
    except ChildProcessError:
        return None
    assert info is not None  # no WNOHANG
    return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status


def _pipe() -> tuple[int, int]:
    """A pipe whose ends are both 3 or above.

    In a caller with fds 0-2 closed, the box's prints to fd 1 must not land in the result pipe.
    """
    ends = []
    for fd in os.pipe():
        if fd < 3:
            lifted = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
            os.close(fd)
            fd = lifted
        ends.append(fd)
    return ends[0], ends[1]


#: What a sandboxed function may return or raise: plain data and the built-in exceptions, nothing whose unpickling
#: could run code in the caller.
_PLAIN = frozenset(
    ["complex", "bytearray", "set", "frozenset", "range", "slice"]
    + [name for name, value in vars(builtins).items() if isinstance(value, type) and issubclass(value, BaseException)]
)


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module == "builtins" and name in _PLAIN:
            return getattr(builtins, name)
        raise pickle.UnpicklingError(f"a sandboxed function returns plain data only, not {module}.{name}")


def _conclude(
    message: bytes | bytearray | None,
    returncode: int | None,
    worker: int,
    oom_killed: bool,
    name: str,
    *,
    plain: bool = False,
) -> Any:
    __tracebackhide__ = True
    if message is None:
        if returncode is None:
            raise BoxCrashed(
                f"{name} did not return: its process in the box (host PID {worker}) ended, and was reaped "
                "elsewhere (is SIGCHLD ignored?), so how is unknown",
                returncode=0,
                pid=worker,
            )
        if returncode < 0:
            try:
                what = f"was killed by {signal.Signals(-returncode).name}"
            except ValueError:
                what = f"was killed by signal {-returncode}"
            if oom_killed:
                what += " (the OOM killer of memory_limit)"
        else:
            what = f"exited with status {returncode}"
        raise BoxCrashed(
            f"{name} did not return: its process in the box (host PID {worker}) {what}",
            returncode=returncode,
            pid=worker,
            oom_killed=oom_killed,
        )
    try:
        kind, *rest = _PlainUnpickler(io.BytesIO(message)).load() if plain else pickle.loads(message)
    except Exception as err:
        raise TypeError(f"cannot unpickle what {name} returned from the box: {type(err).__name__}: {err}") from err
    if kind == "ok":
        return rest[0]
    if kind == "raised":
        exc, tb = rest
        raise exc from RemoteTraceback(tb)
    if kind == "unpicklable-result":
        raise TypeError(rest[0])
    text, tb = rest
    raise RuntimeError(text) from RemoteTraceback(tb)
