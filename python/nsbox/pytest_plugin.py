"""The nsbox pytest plugin: tests inside new namespaces, and boxes that are cleaned up after each test.

Registered through the ``pytest11`` entry point, so installing nsbox is enough (``-p nsbox.pytest_plugin``
loads it where entry points are not seen, e.g. from a plain ``PYTHONPATH``).

- ``@pytest.mark.nsbox(**options)`` runs the test function, or the test method of a
  :class:`unittest.TestCase`, with :func:`nsbox.call`: in a forked copy of the test process inside the
  namespaces that ``options`` ask for (those of :func:`nsbox.run`, plus ``timeout``). Fixtures, and a
  ``TestCase``'s ``setUp`` and ``tearDown``, run in the test process as usual; fixture values are passed
  to the function in the box. Failures (with pytest's assertion messages), errors, skips, expected
  failures and unittest subtests are reported as usual, and warnings raised in the box go to pytest's
  warnings summary. A test whose namespaces cannot be made on this machine (or whose options are wrong),
  or a marked item that is not a test function or method (a doctest, another plugin's item, an async
  function), is an error, with the reason: never run outside its box, silently passed or skipped.
- ``--nsbox-pool=N``: boxed tests take their expensive namespaces (network, IPC, UTS, cgroup, with the user
  namespace) from warm :class:`nsbox.Pool` s of ``N`` sets, one pool per set of marker options, made on first
  use and closed when the session ends. Each test still gets namespaces no other test had.
- The ``nsbox_box`` fixture is a factory: ``nsbox_box(["sleep", "100"], pid=True)`` starts and returns an
  :class:`nsbox.Popen`, killed and reaped when the test ends, however it ends.
"""

from __future__ import annotations

import contextlib
import copyreg
import functools
import inspect
import os
import pickle
import struct
import traceback
import unittest
import warnings
from collections.abc import Callable, Generator, Iterator
from typing import Any, NoReturn

import pytest
from _pytest.unittest import TestCaseFunction

from nsbox._call import TRUSTED, RemoteTraceback, call
from nsbox._options import Args
from nsbox._popen import Popen

_PROBES = pytest.StashKey[dict[str, str | None]]()
#: ``--nsbox-pool``'s pools by marker options (``None``: those options have nothing to pool).
_POOLS = pytest.StashKey[dict[str, Any]]()
#: What the box writes to the channel: this length header (native byte order), then a pickle.
_HEADER = struct.Struct("=Q")


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--nsbox-pool=N``."""
    parser.getgroup("nsbox").addoption(
        "--nsbox-pool",
        type=int,
        default=0,
        metavar="N",
        help="boxed tests (@pytest.mark.nsbox) take their network, IPC, UTS and cgroup namespaces from warm pools of "
        "N sets, one per set of marker options (default 0: no pools)",
    )


def _pool_for(config: pytest.Config, options: dict[str, Any]) -> Any:
    """The pool of ``--nsbox-pool`` for a test of these marker options, or ``None``."""
    size = config.getoption("nsbox_pool", 0) or 0
    if size <= 0:
        return None
    pools = config.stash.setdefault(_POOLS, {})
    key = repr(sorted(options.items()))
    if key not in pools:
        from nsbox._pool import Pool

        shape = {name: value for name, value in options.items() if name != "timeout"}
        try:
            pools[key] = Pool(size, **shape)
        except ValueError:
            pools[key] = None  # nothing to pool (a box of pid=True alone), or options the box itself reports
    return pools[key]


def pytest_unconfigure(config: pytest.Config) -> None:
    """Close ``--nsbox-pool``'s pools."""
    for pool in config.stash.get(_POOLS, {}).values():
        if pool is not None:
            pool.close()


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``nsbox`` marker."""
    config.addinivalue_line(
        "markers",
        "nsbox(**options): run the test function inside new Linux namespaces with nsbox.call "
        "(options of nsbox.run: pid, net, hostname, mount_proc, user, time ..., and timeout)",
    )


def _marker_options(item: pytest.Item) -> dict[str, Any] | None:
    marker = item.get_closest_marker("nsbox")
    if marker is None:
        return None
    if marker.args:
        raise TypeError(f"@pytest.mark.nsbox takes keyword options only, not {marker.args!r}")
    return dict(marker.kwargs)


def _why_not_boxable(item: pytest.Item) -> str | None:
    """Why the item's test cannot run in a box, or ``None`` when it can.

    A box runs what the item calls as its ``obj``: pytest's own ``Function.runtest`` (through
    ``pytest_pyfunc_call``) and ``TestCaseFunction.runtest`` (through the ``TestCase``) call that, and
    nothing else of the test. An item that runs its test some other way would run it on the host.
    """
    if isinstance(item, TestCaseFunction):
        known: Callable[..., None] = TestCaseFunction.runtest
    elif isinstance(item, pytest.Function):
        known = pytest.Function.runtest
    else:
        return (
            f"it is a {type(item).__qualname__}, not a test function or a unittest.TestCase test method, "
            "so nsbox has no function to run in the box"
        )
    if type(item).runtest is not known:
        return f"{type(item).__qualname__} has a runtest() of its own, which might run the test outside the box"
    if inspect.iscoroutinefunction(item.obj) or inspect.isasyncgenfunction(item.obj):
        return "it is an async function, and the box runs no event loop"
    return None


def _probe() -> None:
    """The function run once per set of options to see whether the machine can make those namespaces."""


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Make sure the marked test can run in a box here; if not, the test errors with the reason."""
    options = _marker_options(item)
    if options is None:
        return
    reason = _why_not_boxable(item)
    if reason is not None:
        pytest.fail(f"@pytest.mark.nsbox cannot run {item.nodeid} in a box: {reason}", pytrace=False)
    options.pop("timeout", None)
    probes = item.config.stash.setdefault(_PROBES, {})
    key = repr(sorted(options.items()))
    if key not in probes:
        try:
            call(_probe, **options)
        except (OSError, ValueError, TypeError) as exc:
            probes[key] = f"{type(exc).__name__}: {exc}"
        else:
            probes[key] = None
    reason = probes[key]
    if reason is not None:
        shown = ", ".join(f"{k}={v!r}" for k, v in options.items())
        pytest.fail(f"nsbox cannot make the namespaces of @pytest.mark.nsbox({shown}): {reason}", pytrace=False)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """Run a test marked ``nsbox`` inside its namespaces; other tests are left to pytest.

    The item's function is swapped for one that runs it in the box while pytest runs the test: pytest's
    ``pytest_pyfunc_call`` then calls that with the fixture values, and a ``TestCase`` calls it between
    ``setUp`` and ``tearDown``, both in this process.
    """
    options = _marker_options(item)
    if options is None:
        return (yield)
    reason = _why_not_boxable(item)
    if reason is not None or not isinstance(item, pytest.Function):  # refused at setup already
        pytest.fail(f"@pytest.mark.nsbox cannot run {item.nodeid} in a box: {reason}", pytrace=False)
    function = item.obj
    testcase = item.instance if isinstance(item, TestCaseFunction) else None
    item.obj = _boxed(function, testcase, options, _pool_for(item.config, options))
    try:
        return (yield)
    finally:
        item.obj = function


def _boxed(
    function: Callable[..., Any], testcase: unittest.TestCase | None, options: dict[str, Any], pool: Any = None
) -> Callable[..., Any]:
    """``function`` made to run in a box, then to report here what it left (warnings, subtests ...)."""

    @functools.wraps(function)  # keeps what unittest and pytest read on it: its name, signature, unittest marks
    def boxed(*args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = True
        # What the box sends back besides the result: a memfd it writes before it ends (a pipe could fill up
        # while this process waits for the result).
        channel = os.memfd_create("nsbox-pytest", os.MFD_CLOEXEC)
        try:
            try:
                return _call_in_box(_in_box(function, testcase, channel), args, kwargs, options, pool)
            finally:
                _report(_receive(channel), testcase)
        finally:
            os.close(channel)

    return boxed


def _call_in_box(
    function: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    options: dict[str, Any],
    pool: Any = None,
) -> Any:
    # The frame a failure report shows last, under the traceback from the box (its ``__cause__``).
    token = TRUSTED.set(True)  # the suite's own test: it keeps pytest's fds and returns pytest's outcomes
    try:
        return (call if pool is None else pool.call)(function, args, kwargs, **options)
    finally:
        TRUSTED.reset(token)


# -- In the box ---------------------------------------------------------------------------------------


def _in_box(function: Callable[..., Any], testcase: unittest.TestCase | None, channel: int) -> Callable[..., Any]:
    """The test function as it runs in the box.

    pytest's skip and fail exceptions are made picklable there, and what the test leaves for the test
    process (warnings, subtests ...) is recorded, and written to ``channel`` when it ends.
    """

    @functools.wraps(function)  # errors name the test
    def run_test(*args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = True
        for outcome in (pytest.skip.Exception, pytest.fail.Exception):
            copyreg.pickle(outcome, _reduce_outcome)
        me = os.getpid()
        left = _Left(testcase)
        try:
            with left.recording():
                return function(*args, **kwargs)
        finally:
            if os.getpid() == me:  # not a copy the test forked, returning here
                _send(channel, left)

    return run_test


#: What a boxed test sends back besides its result: its warnings as (message, category, filename, lineno,
#: line); its subtests as (message given, message, params, outcome or None, traceback); the failures of the
#: cleanups it added, as (exception, traceback).
_Warning = tuple[Any, type[Warning], str, int, str | None]
_SubTestOutcome = tuple[bool, Any, dict[str, Any], BaseException | None, str]
_Sent = tuple[list[_Warning], list[_SubTestOutcome], list[tuple[BaseException, str]]]


class _Left:
    """What a boxed test leaves for the test process to report: warnings, and a ``TestCase``'s subtests.

    While the test runs, it is the result object of the ``TestCase`` (``addSubTest``, ``addSkip``,
    ``addFailure``, ``addError``), so that subtests, and failures of the cleanups the test added, are
    recorded here rather than reported by the box's copy of pytest, which nobody reads.
    """

    def __init__(self, testcase: unittest.TestCase | None) -> None:
        self.testcase = testcase
        self.failfast = False  # read by unittest's subTest
        self.warnings: list[_Warning] = []
        self.subtests: list[_SubTestOutcome] = []
        self.cleanups: list[tuple[BaseException, str]] = []

    @contextlib.contextmanager
    def recording(self) -> Iterator[None]:
        """Record the warnings shown and a ``TestCase``'s subtests while the test runs.

        The warnings are those that the filters in force in the box let through (``error`` raises them
        there). At the end, the cleanups the test added run here in the box, where what they undo lives.
        """
        show = warnings.showwarning

        def record(
            message: Warning | str,
            category: type[Warning],
            filename: str,
            lineno: int,
            file: Any = None,
            line: str | None = None,
        ) -> None:
            self.warnings.append((message, category, filename, lineno, line))
            show(message, category, filename, lineno, file, line)  # as before: the test's own recwarn sees it

        warnings.showwarning = record
        outcome = getattr(self.testcase, "_outcome", None)  # unittest's record of the running test
        cleanups: list[Any] = getattr(self.testcase, "_cleanups", [])
        before = len(cleanups)
        if outcome is not None:
            self.failfast = bool(getattr(outcome.result, "failfast", False))
            outcome.result = self
            # A failing subtest of an expected failure is recorded like any other: the test process decides.
            outcome.expecting_failure = False
        try:
            yield
        finally:
            if self.testcase is not None and len(cleanups) > before:
                del cleanups[:before]  # those of setUp are the test process's to run
                self.testcase.doCleanups()
            warnings.showwarning = show

    def addSubTest(self, test: Any, subtest: Any, exc_info: Any) -> None:
        """Unittest's report of a subtest that ended; ``exc_info`` is ``None`` when it passed."""
        exc = None if exc_info is None else exc_info[1]
        self._add_subtest(subtest, exc, _format(exc))

    def _add_subtest(self, subtest: Any, outcome: BaseException | None, tb: str) -> None:
        from unittest.case import _subtest_msg_sentinel  # type: ignore[attr-defined]

        message = getattr(subtest, "_message", _subtest_msg_sentinel)
        given = message is not _subtest_msg_sentinel
        self.subtests.append((given, message if given else None, dict(subtest.params), outcome, tb))

    def addSkip(self, test: Any, reason: str) -> None:
        """A subtest, or a cleanup, skipped."""
        if test is self.testcase:
            self.cleanups.append((unittest.SkipTest(reason), ""))
        else:
            self._add_subtest(test, unittest.SkipTest(reason), "")

    def addFailure(self, test: Any, exc_info: Any) -> None:
        """A cleanup failed."""
        self.cleanups.append((exc_info[1], _format(exc_info[1])))

    addError = addFailure

    def portable(self) -> _Sent:
        """What to send: everything that cannot travel back replaced by what can (its text)."""
        subtests: list[_SubTestOutcome] = []
        for given, message, params, outcome, tb in self.subtests:
            if _round_trips((message, params)) is not None:
                message, params = _safe_str(message), {k: _Shown(_safe_repr(v)) for k, v in params.items()}
            subtests.append((given, message, params, None if outcome is None else _portable_exception(outcome), tb))
        cleanups = [(_portable_exception(exc), tb) for exc, tb in self.cleanups]
        return [_portable_warning(*w) for w in self.warnings], subtests, cleanups


def _format(exc: BaseException | None) -> str:
    return "" if exc is None else "".join(traceback.format_exception(exc))


def _round_trips(value: object) -> str | None:
    """Why ``value`` cannot be pickled here and unpickled in the test process, or ``None``."""
    try:
        pickle.loads(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
    except Exception as err:
        return f"{type(err).__name__}: {err}"
    return None


def _portable_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, line: str | None
) -> tuple[Any, type[Warning], str, int, str | None]:
    line = line if isinstance(line, str) else None
    if _round_trips((message, category)) is None:
        return message, category, str(filename), int(lineno), line
    # The message as text, and the nearest category that travels (one defined in the test function does not).
    category = next(c for c in category.__mro__ if _round_trips(c) is None)
    return _safe_str(message), category, str(filename), int(lineno), line


def _portable_exception(exc: BaseException) -> BaseException:
    why = _round_trips(exc)
    if why is None:
        return exc
    kind = f"{type(exc).__module__}.{type(exc).__qualname__}"
    return RuntimeError(f"{kind}: {_safe_str(exc)} (the exception cannot be pickled: {why})")


class _Shown:
    """A subtest parameter that could not travel back: its ``repr``, shown as it was."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _safe_str(obj: object) -> str:
    try:
        return str(obj)
    except Exception:
        return f"<{type(obj).__name__} that cannot be shown>"


def _safe_repr(obj: object) -> str:
    try:
        return repr(obj)
    except Exception:
        return f"<{type(obj).__name__} that cannot be shown>"


def _send(channel: int, left: _Left) -> None:
    payload = pickle.dumps(left.portable(), protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(_HEADER.pack(len(payload)) + payload)
    while view:
        view = view[os.write(channel, view) :]


def _reduce_outcome(exc: BaseException) -> tuple[Any, ...]:
    # pytest's Skipped and Failed claim to live in ``builtins``, so pickle cannot find them by name.
    state = dict(exc.__dict__)
    if isinstance(exc, pytest.skip.Exception):
        state["_use_item_location"] = True  # report the skip at the test, not at the re-raise
    return (_rebuild_outcome, (isinstance(exc, pytest.skip.Exception), exc.args), state)


def _rebuild_outcome(skipped: bool, args: tuple[Any, ...]) -> BaseException:
    cls = pytest.skip.Exception if skipped else pytest.fail.Exception
    exc = cls.__new__(cls)
    exc.args = args
    return exc


# -- In the test process -------------------------------------------------------------------------------


def _receive(channel: int) -> _Sent | None:
    """What the box wrote to ``channel``; ``None`` if it did not write it all (it was killed, or crashed)."""
    size = os.fstat(channel).st_size
    data = b""
    while len(data) < size:
        data += os.pread(channel, size - len(data), len(data))
    if len(data) < _HEADER.size or len(data) != _HEADER.size + _HEADER.unpack_from(data)[0]:
        return None
    sent: _Sent = pickle.loads(data[_HEADER.size :])
    return sent


def _report(sent: _Sent | None, testcase: unittest.TestCase | None) -> None:
    """Shows the box's warnings here, and reports its subtests and failed cleanups through the ``TestCase``."""
    __tracebackhide__ = True
    if sent is None:
        return
    shown, subtests, cleanups = sent
    for message, category, filename, lineno, line in shown:
        # Shown, not warned: the filters in the box have passed it already (``error`` raised it there). This
        # reaches pytest's recorder, or the test's recwarn, as it would have without the box.
        warnings.showwarning(message, category, filename, lineno, None, line)
    if testcase is None:
        return
    for exc, tb in cleanups:
        testcase.addCleanup(_reraise, exc, tb)  # reported as a failed cleanup, after tearDown
    for given, message, params, outcome, tb in subtests:
        with testcase.subTest(message, **params) if given else testcase.subTest(**params):
            if outcome is not None:
                _reraise(outcome, tb)


def _reraise(exc: BaseException, tb: str) -> NoReturn:
    __tracebackhide__ = True
    if tb:
        raise exc from RemoteTraceback(tb)
    raise exc


@pytest.fixture
def nsbox_box() -> Iterator[Callable[..., Popen]]:
    """A factory of started boxes: ``nsbox_box(args, **popen_options)`` returns an :class:`nsbox.Popen`.

    Every box it started is killed (``SIGKILL``; with ``pid=True`` that ends every process in it) and
    reaped when the test ends, passed or failed, and its pipes are closed.
    """
    boxes: list[Popen] = []

    def start(args: Args, **options: Any) -> Popen:
        box = Popen(args, **options)
        boxes.append(box)
        return box

    yield start
    for box in reversed(boxes):
        _kill_and_reap(box)


def _kill_and_reap(box: Popen) -> None:
    try:
        if box.poll() is None:
            box.kill()
    finally:
        box.wait()
        for stream in (box.stdin, box.stdout, box.stderr):
            if stream is not None:
                try:
                    stream.close()
                except OSError:  # unflushed input to a box that is gone
                    pass
