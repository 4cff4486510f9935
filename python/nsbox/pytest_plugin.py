"""The nsbox pytest plugin: tests inside new namespaces, and boxes that are cleaned up after each test.

Registered through the ``pytest11`` entry point, so installing nsbox is enough (``-p nsbox.pytest_plugin``
loads it where entry points are not seen, e.g. from a plain ``PYTHONPATH``).

- ``@pytest.mark.nsbox(**options)`` runs the test function with :func:`nsbox.call`: in a forked copy of
  the test process inside the namespaces that ``options`` ask for (those of :func:`nsbox.run`, plus
  ``timeout``). Fixtures are set up and torn down in the test process as usual; their values are passed
  to the function in the box. Failures, with pytest's assertion messages, are reported as usual. A test
  whose namespaces cannot be made on this machine (or whose options are wrong) is an error, with the
  reason: never silently passed or skipped.
- The ``nsbox_box`` fixture is a factory: ``nsbox_box(["sleep", "100"], pid=True)`` starts and returns an
  :class:`nsbox.Popen`, killed and reaped when the test ends, however it ends.
"""

from __future__ import annotations

import copyreg
import functools
import inspect
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from nsbox._call import call
from nsbox._popen import Args, Popen

_PROBES = pytest.StashKey[dict[str, str | None]]()


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


def _probe() -> None:
    """The function run once per set of options to see whether the machine can make those namespaces."""


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Make sure the marker's namespaces can be made here; if not, the test errors with the reason."""
    options = _marker_options(item)
    if options is None:
        return
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


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run a test marked ``nsbox`` inside its namespaces; other tests are left to pytest."""
    __tracebackhide__ = True
    options = _marker_options(pyfuncitem)
    if options is None:
        return None
    function = pyfuncitem.obj
    if inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function):
        raise TypeError(f"@pytest.mark.nsbox cannot run the async test function {pyfuncitem.name}")
    # As pytest's own pytest_pyfunc_call: the fixture values the function asks for.
    funcargs = pyfuncitem.funcargs
    testargs = {arg: funcargs[arg] for arg in pyfuncitem._fixtureinfo.argnames}
    result = _call_in_box(function, testargs, options)
    if result is not None:
        warnings.warn(
            pytest.PytestReturnNotNoneWarning(
                f"Expected None, but {pyfuncitem.nodeid} returned {result!r} from its box."
                " Did you mean to use `assert` instead of `return`?"
            ),
            stacklevel=1,
        )
    return True


def _call_in_box(function: Callable[..., Any], kwargs: dict[str, Any], options: dict[str, Any]) -> Any:
    # The frame a failure report shows last, under the traceback from the box (its ``__cause__``).
    return call(_in_box(function), kwargs=kwargs, **options)


def _in_box(function: Callable[..., Any]) -> Callable[..., Any]:
    """The test function, with pytest's skip and fail exceptions made picklable where it runs (the box)."""

    @functools.wraps(function)  # errors name the test
    def run_test(**kwargs: Any) -> Any:
        __tracebackhide__ = True
        for outcome in (pytest.skip.Exception, pytest.fail.Exception):
            copyreg.pickle(outcome, _reduce_outcome)
        return function(**kwargs)

    return run_test


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
