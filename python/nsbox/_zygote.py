"""``nsbox.Zygote``: a small server, started from a fresh interpreter, that forks a box per call.

Why a zygote. :func:`nsbox.call` forks the caller, and a fork copies the caller's page tables: in a process
holding gigabytes (a Jupyter kernel) each call costs ~100 ms, as ``multiprocessing``'s fork does. A
``start="forkserver"`` option on ``call`` would have to carry the function and its arguments to a server
anyway, and start (or find) that server per call, with options fixed per call; a zygote makes that explicit
and keeps one thing per object: a server started once, with its namespace options checked once and its
``preload`` imported once, which then forks itself, small, for every call. The server is a fresh
interpreter (``sys.executable -c ...``), never a fork of the caller: it holds none of the caller's memory,
threads or locks, so the cost of a call does not grow with the caller's memory.

What is shared between calls: the modules the zygote imported (``preload``, nsbox, the standard library),
as they were when it started. Each call runs in a fresh fork of the zygote, inside fresh namespaces (the
options given to ``Zygote`` are ``nsbox.call``'s, with the same meaning), so whatever a call changes
(module state, files it opens, modules it imports) is gone with its box; the next call starts from the
zygote again. A function whose module is not in ``preload`` is imported in the box, on every call: preload
the modules your functions live in.

What travels, and how. The function and its arguments are pickled in the caller and unpickled in the box;
the result or exception travels back pickled and is unpickled in the caller only, exactly as for
:func:`nsbox.call` (the same message, the same :class:`nsbox.RemoteTraceback`, :class:`nsbox.BoxCrashed` and,
with ``sandbox=True``, the same plain-data unpickling: :mod:`nsbox._call` does it, for both). The zygote
itself never unpickles what a call sends or returns. Functions travel by reference (module and name), as
pickle does: a lambda, a function defined inside another (a closure), and a function or class defined in
``__main__`` (a script, a notebook), which the zygote's fresh interpreter does not have, cannot travel.
They are refused in the caller, before anything is sent, with a ``TypeError`` naming the object and why;
so are arguments pickle refuses (locks, open files, generators). cloudpickle would carry such functions by
value, with whatever their globals and closures reach: a silent copy of caller state that this design
exists to avoid, and a dependency; use :func:`nsbox.call` for those, which forks and pickles nothing on the
way in.

The caller's context. The zygote starts with the caller's interpreter flags, environment, working directory
and ``sys.path`` (the environment and flags as they were then). Each call carries the caller's ``sys.path``
and working directory of the moment: the box sets them before it unpickles the function (the directory only
when the box's root is the caller's, that is without ``root`` and ``sandbox``).

Lifetime. The zygote watches its connection to the caller and the caller itself (a pidfd): ``close()``, the
caller's exit or death (even a ``SIGKILL``, even when a forked child of the caller still holds a copy of the
connection) ends it, and it kills and reaps every box it started before it exits. ``close()`` returns once
the zygote has exited. (A parent-death signal would fire when the *thread* that made the zygote exits, so the
zygote does not rely on one; its boxes do, as every box does, so they die with it even if it is killed.) A
call interrupted in the caller (``KeyboardInterrupt``) closes its connection, and the zygote kills that box.
The zygote runs in a process group of its own, so a terminal's Ctrl-C reaches the caller, not the zygote.

Concurrency. Every call has a connection of its own: a socketpair whose one end goes to the zygote over its
control socket (``SCM_RIGHTS``), under a lock held only for that send. The zygote serves each connection on a
thread of its own, so calls from several threads of the caller run at once, each in its own box, and one
call's end (or cancellation: closing the connection) is independent of the others'. One connection with a
lock would run one call at a time; a pool of connections would need the same bookkeeping plus a size.

Security. The zygote runs the caller's code with the caller's privileges: ``preload`` is imported in it,
outside any box, and it is as trusted as the caller. The functions run in boxes made by :func:`nsbox.call`
inside the zygote; with ``sandbox=True`` a box is sandboxed exactly as ``nsbox.call``'s is, and what it returns
is unpickled as plain data only. A box never has the zygote's fds (its connections): it keeps 0-2 only, which
are the caller's as they were when the zygote started (so the function's prints reach the caller's stdout).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import pickle
import select
import socket
import subprocess
import sys
import threading
import time
import types
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, NoReturn, Self, TypeVar

from nsbox._call import (
    _HEADER,
    TRUSTED,
    Cancelled,
    RemoteTraceback,
    _conclude,
    _describe,
    _format,
    call_in_box,
    check_timeout,
)
from nsbox._options import CALL_OPTIONS, NamespaceOptions, check_names, prepare

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack from Python 3.12

T = TypeVar("T")

#: The zygote's program: the caller's ``sys.path`` first, so that it imports the caller's nsbox.
_BOOT = "import sys, json; sys.path[:] = json.loads(sys.argv[3]); from nsbox._zygote import serve; serve()"
#: How long ``close()`` waits for the zygote to kill its boxes and exit before it kills the zygote.
_CLOSE_WAIT = 10.0


class Zygote:
    """A small server that runs functions in fresh namespaces at a cost that does not grow with your memory.

    ``Zygote(preload=("numpy",), **options)`` starts a fresh interpreter (``sys.executable``) that imports the
    modules of ``preload`` once, then forks for every :meth:`call`, into new namespaces made with ``options``
    (those of :func:`nsbox.call`, with the same meaning, and its ``user``; not ``network`` or ``ip``: a
    :class:`nsbox.Network` belongs to the process that made it). Use it as a context manager, or
    :meth:`close` it: the zygote and every box it started are gone when ``close()`` returns, and when this
    process dies.

    >>> import os
    >>> with Zygote(pid=True) as zygote:
    ...     zygote.call(os.getpid)
    1

    Functions and arguments travel pickled, by reference: lambdas, closures and what is defined in
    ``__main__`` (a script, a notebook) cannot (a ``TypeError`` before anything runs). The design, what calls
    share and what travels: see the module :mod:`nsbox._zygote`.

    Raises:
        TypeError, ValueError: ``preload`` or an option is wrong (before anything is started).
        ImportError: a module of ``preload`` cannot be imported in the zygote, with its traceback there as the
            ``__cause__`` (any other exception raised there as it starts is raised the same way).
        OSError: the zygote cannot be started.
    """

    def __init__(
        self,
        preload: Iterable[str] = (),
        *,
        user: bool | None = None,
        **options: Unpack[NamespaceOptions],
    ) -> None:
        __tracebackhide__ = True
        self._closed = True  # until started: close() and __del__ have nothing to do
        if isinstance(preload, (str, bytes)) or not isinstance(preload, Iterable):
            raise TypeError(f"preload must be a collection of module names, not {preload!r}")
        modules = tuple(preload)
        for name in modules:
            if not isinstance(name, str):
                raise TypeError(f"preload: modules are named by strings like 'numpy', not {name!r}")
        check_names(options, CALL_OPTIONS, "Zygote")
        for name in ("network", "ip"):
            if options.get(name) is not None:
                raise ValueError(
                    f"{name}: a Zygote's boxes cannot join an nsbox.Network, which belongs to the process that "
                    "made it: use nsbox.call"
                )
        prepared = prepare(options, user)  # every check, here and now; the zygote prepares its own
        #: ``sandbox=True``: what a box returns is unpickled as plain data (unless the call is TRUSTED).
        self._sandbox = prepared.new_session
        #: The box's ``/`` is the caller's: it starts in the caller's working directory.
        self._same_root = options.get("root") is None and not self._sandbox
        self.preload = modules
        try:
            hello = pickle.dumps((dict(options), user, modules), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as err:
            raise TypeError(f"the options cannot be pickled to send them to the zygote: {err}") from err

        self._lock = threading.Lock()
        self._calls: set[socket.socket] = set()
        self._owner = os.getpid()
        self._control, theirs = socket.socketpair()
        try:
            with theirs:
                argv = [sys.executable, *subprocess._args_from_interpreter_flags(), "-c", _BOOT]  # type: ignore[attr-defined]
                argv += [str(theirs.fileno()), str(self._owner), json.dumps(sys.path)]
                self._process = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, pass_fds=(theirs.fileno(),), process_group=0
                )
        except BaseException:
            self._control.close()
            raise
        self._closed = False
        try:
            try:
                _send(self._control, hello)
                reply = _recv(self._control)
            except OSError:
                reply = None
            if reply is None:
                raise RuntimeError(f"the zygote (PID {self.pid}) exited as it started: {self._ended()}")
            kind, *rest = pickle.loads(reply)
            if kind == "raised":
                exc, tb = rest
                raise exc from RemoteTraceback(tb)
        except BaseException:
            self.close()
            raise

    @property
    def pid(self) -> int:
        """The zygote's process ID."""
        return self._process.pid

    def call(self, fn: Callable[..., T], /, *args: Any, timeout: float | None = None, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` in a fork of the zygote, inside fresh namespaces; return its result.

        As :func:`nsbox.call` does, with the zygote's options: an exception is re-raised here with its type
        and message, and its traceback in the box as ``__cause__`` (a :class:`nsbox.RemoteTraceback`); a box
        that dies raises :class:`nsbox.BoxCrashed`. Safe to call from several threads at once.

        ``timeout`` is the call's, as :func:`nsbox.call`'s is: after that many seconds the box is killed and
        reaped (with ``pid=True``, every process in it) before ``subprocess.TimeoutExpired`` is raised here,
        and the zygote serves the next call. A keyword argument of ``fn`` named ``timeout`` goes in a
        :func:`functools.partial` (``zygote.call(functools.partial(fn, timeout=5))``), as with
        :func:`nsbox.asyncio.call`.

        Raises:
            subprocess.TimeoutExpired: ``timeout`` seconds passed; the box was killed and reaped.
            TypeError: ``fn`` or an argument cannot travel to the zygote (a lambda, a closure, something
                defined in ``__main__``, an object pickle refuses), or ``timeout`` is not a number: nothing
                was sent; or the result cannot be pickled (the message names the function).
            BoxCrashed: the function's process died without returning.
            OSError: the namespaces cannot be made, as for :func:`nsbox.call`.
            ValueError: the zygote is closed.
            RuntimeError: the zygote was closed, or died, during the call.
        """
        __tracebackhide__ = True
        if not callable(fn):
            raise TypeError(f"fn must be callable, not {type(fn).__name__}")
        check_timeout(timeout)
        name = _describe(fn)
        payload = _pickle_call(fn, args, kwargs, name)
        plain = self._sandbox and not TRUSTED.get()
        try:
            cwd = os.getcwd() if self._same_root else None
        except OSError:
            cwd = None  # deleted: the box starts where the zygote is
        head = (getattr(fn, "__qualname__", None), sys.path, cwd, timeout)
        head_bytes = pickle.dumps(head, protocol=pickle.HIGHEST_PROTOCOL)
        connection = self._connect(name)
        try:
            _send(connection, head_bytes)
            _send(connection, payload)
            reply = _recv(connection)
            message = _recv(connection)
        except OSError:
            reply = None
        finally:
            # Closing it before the box is done (KeyboardInterrupt) is what tells the zygote to kill the box.
            with self._lock:
                self._calls.discard(connection)
            connection.close()
        if reply is None or message is None:
            if self._closed:
                raise RuntimeError(f"the Zygote was closed while {name} ran")
            raise RuntimeError(f"the zygote (PID {self.pid}) ended while {name} ran: {self._ended()}")
        kind, *rest = pickle.loads(reply)
        if kind == "done":
            returncode, worker, oom_killed = rest
            result: T = _conclude(message or None, returncode, worker, oom_killed, name, plain=plain)
            return result
        if kind == "timeout":
            raise subprocess.TimeoutExpired(name, timeout or 0.0)  # the box is reaped: as nsbox.call raises it
        exc, tb = rest
        if isinstance(exc, OSError):
            raise exc  # the namespaces could not be made: as nsbox.call raises it
        raise exc from RemoteTraceback(tb)

    def _connect(self, name: str) -> socket.socket:
        """A connection of its own for one call: one end of a socketpair, the other sent to the zygote."""
        with self._lock:
            if self._closed:
                raise ValueError("call on a closed Zygote")
            if os.getpid() != self._owner:
                raise RuntimeError(
                    f"this Zygote belongs to the process that made it (PID {self._owner}), not to a forked copy: "
                    "make a Zygote in this process"
                )
            mine, theirs = socket.socketpair()
            with theirs:
                try:
                    socket.send_fds(self._control, [b"c"], [theirs.fileno()], socket.MSG_NOSIGNAL)
                except OSError as err:
                    mine.close()
                    raise RuntimeError(f"the zygote (PID {self.pid}) ended before {name} ran: {self._ended()}") from err
            self._calls.add(mine)
        return mine

    def _ended(self) -> str:
        try:
            code = self._process.wait(timeout=1)
        except subprocess.TimeoutExpired:
            return "it still runs, but closed its connection"
        return f"killed by signal {-code}" if code < 0 else f"exit status {code}"

    def close(self) -> None:
        """End the zygote: calls in progress are cancelled (their boxes killed), and every box is reaped.

        Returns once the zygote has exited. Closing twice does nothing. In a forked copy of the process that
        made the zygote, only the copy's ends of the connections are closed.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            calls = list(self._calls)
        if os.getpid() != self._owner:
            self._control.close()
            return
        for connection in calls:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)  # wakes its caller; the zygote kills that box
        self._control.close()
        try:
            self._process.wait(timeout=_CLOSE_WAIT)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        except BaseException:
            self._process.kill()
            self._process.wait()
            raise

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running"
        return f"<nsbox.Zygote pid={self.pid} preload={self.preload!r} {state}>"


# -- What travels ------------------------------------------------------------------------------------------


class _CannotTravel(Exception):
    def __init__(self, obj: Any, why: str) -> None:
        super().__init__(why)
        self.obj = obj
        self.why = why


def _why_not(obj: types.FunctionType | type) -> str | None:
    """Why the zygote could not load a function or class by reference, or ``None`` if it can."""
    qualname = getattr(obj, "__qualname__", "")
    if "<lambda>" in qualname:
        return "it is a lambda, and functions travel by module and name: a lambda has no name to look up"
    if "<locals>" in qualname:
        return "it is defined inside a function (a closure or nested definition), where the zygote cannot look it up"
    if getattr(obj, "__module__", None) == "__main__":
        return "it is defined in __main__ (a script or notebook), which the zygote, a fresh interpreter, does not have"
    return None


class _ByReference(pickle.Pickler):
    """pickle's own pickler, which refuses at once, with the reason, the functions and classes the zygote lacks."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, (types.FunctionType, type)):
            why = _why_not(obj)
            if why is not None:
                raise _CannotTravel(obj, why)
        return NotImplemented


def _dumps_by_reference(obj: Any) -> bytes:
    import io

    buffer = io.BytesIO()
    _ByReference(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return buffer.getvalue()


def _pickle_call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], name: str) -> bytes:
    """``(fn, args, kwargs)`` pickled, or a ``TypeError`` that says what cannot travel and why."""
    try:
        return _dumps_by_reference((fn, args, kwargs))
    except (_CannotTravel, pickle.PicklingError, TypeError, AttributeError, RecursionError) as err:
        error = err
    try:
        _dumps_by_reference(fn)
        culprit = "its arguments hold"
    except Exception:
        culprit = "the function refers to"
    if isinstance(error, _CannotTravel) and error.obj is fn:
        text = error.why
    elif isinstance(error, _CannotTravel):
        kind = "class" if isinstance(error.obj, type) else "function"
        text = f"{culprit} the {kind} {error.obj.__module__}.{error.obj.__qualname__}, and {error.why}"
    else:
        text = f"{culprit} what pickle refuses: {type(error).__name__}: {error}"
    raise TypeError(
        f"{name} cannot be sent to the zygote: {text}. A Zygote runs functions by reference: define them at the "
        "top level of a module the zygote can import (on sys.path; preload it), or use nsbox.call, which forks "
        "this process and pickles nothing on the way in"
    ) from (None if isinstance(error, _CannotTravel) else error)


# -- The wire: length-prefixed frames ------------------------------------------------------------------------


def _send(sock: socket.socket, data: bytes) -> None:
    sock.sendall(_HEADER.pack(len(data)))
    sock.sendall(data)


def _recv(sock: socket.socket) -> bytearray | None:
    """One frame, or ``None`` at the end of the connection."""
    header = _recv_exactly(sock, _HEADER.size)
    if header is None:
        return None
    return _recv_exactly(sock, _HEADER.unpack(header)[0])


def _recv_exactly(sock: socket.socket, size: int) -> bytearray | None:
    data = bytearray(size)
    view = memoryview(data)
    while view:
        got = sock.recv_into(view)
        if got == 0:
            return None
        view = view[got:]
    return data  # not copied: pickle reads a bytearray as well


# -- In the zygote -------------------------------------------------------------------------------------------


def serve() -> NoReturn:
    """The zygote's main loop (``_BOOT`` runs it): argv is the control fd, the caller's PID and its sys.path."""
    control = socket.socket(fileno=int(sys.argv[1]))
    caller_pid = int(sys.argv[2])
    try:
        caller = os.pidfd_open(caller_pid)
    except ProcessLookupError:
        os._exit(0)
    if os.getppid() != caller_pid:
        os._exit(0)  # the caller died before we could watch it
    hello = _recv(control)
    if hello is None:
        os._exit(0)
    options, user, preload = pickle.loads(hello)
    try:
        for module in preload:
            importlib.import_module(module)
        prepared = prepare(options, user)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            _send(control, _pickled_error(exc))
        os._exit(1)
    _send(control, pickle.dumps(("ready",)))

    stop_r, stop_w = os.pipe()
    handlers: list[threading.Thread] = []
    poller = select.poll()
    poller.register(control, select.POLLIN)
    poller.register(caller, select.POLLIN)
    while True:
        ready = {fd for fd, _ in poller.poll()}
        if caller in ready:
            break  # the caller died (its forked children may still hold the connection)
        try:
            data, fds, _, _ = socket.recv_fds(control, 1, 1, socket.MSG_CMSG_CLOEXEC)
        except OSError:
            break
        if not data:
            break  # closed
        for fd in fds:
            handler = threading.Thread(target=_handle, args=(fd, prepared, stop_r), daemon=True)
            handler.start()
            handlers.append(handler)
        handlers = [h for h in handlers if h.is_alive()]
    os.write(stop_w, b"x")  # every handler cancels its call: its box is killed and reaped
    # Each does so at once. One still reading a request or sending a reply has no box: it is not waited for long
    # (its peer may be a copy of the caller's end, kept by a fork of the caller that outlives it).
    deadline = time.monotonic() + _CLOSE_WAIT / 2
    for handler in handlers:
        handler.join(max(0.0, deadline - time.monotonic()))
    os._exit(0)


def _handle(fd: int, prepared: Any, stop: int) -> None:
    """One call, on its own connection: read it, run it in a box, send the outcome back unopened."""
    with socket.socket(fileno=fd) as connection:
        head = _recv(connection)
        payload = _recv(connection)
        if head is None or payload is None:
            return
        qualname, path, cwd, timeout = pickle.loads(head)
        try:
            message, returncode, worker, oom_killed = call_in_box(
                _unpickled_call(qualname, path, cwd, payload),
                (),
                {},
                prepared,
                timeout=timeout,
                close_fds=True,  # the zygote's connections are not the function's
                cancel=(connection.fileno(), stop),
            )
            reply = pickle.dumps(("done", returncode, worker, oom_killed))
        except Cancelled:
            return
        except subprocess.TimeoutExpired:
            reply, message = pickle.dumps(("timeout",)), None  # killed and reaped by call_in_box
        except BaseException as exc:
            reply, message = _pickled_error(exc), None
        with contextlib.suppress(OSError):  # the caller may have gone
            _send(connection, reply)
            _send(connection, message or b"")


def _unpickled_call(qualname: str | None, path: list[str], cwd: str | None, payload: bytearray) -> Callable[[], Any]:
    """The function the box runs: the caller's sys.path and directory, then the call it sent."""

    def run() -> Any:
        __tracebackhide__ = True  # the traceback starts in the caller's function
        sys.path[:] = path
        if cwd is not None:
            with contextlib.suppress(OSError):
                os.chdir(cwd)
        fn, args, kwargs = pickle.loads(payload)
        return fn(*args, **kwargs)

    if isinstance(qualname, str):
        run.__qualname__ = qualname  # messages made in the box name the caller's function
    return run


def _pickled_error(exc: BaseException) -> bytes:
    try:
        return pickle.dumps(("raised", exc, _format(exc)))
    except Exception:
        return pickle.dumps(("raised", RuntimeError(f"{type(exc).__name__}: {exc}"), _format(exc)))
