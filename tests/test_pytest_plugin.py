"""The pytest plugin (``@pytest.mark.nsbox``, ``nsbox_box``), run by pytest's own ``pytester``: root and rootless.

The rootless run is pytest itself as uid 65534: Debian's ``/usr/bin/python3`` with ``PYTHONPATH`` on
world-readable copies of nsbox (conftest's ``rootless_dir``) and of pytest with its dependencies. nsbox's
metadata is not copied, so pytest's entry points do not see it there: the plugin is loaded with
``-p nsbox.pytest_plugin``.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from helpers.namespaces import host_ns
from helpers.rootless import NOBODY, ROOTLESS_PATH, ROOTLESS_PYTHON

pytest_plugins = ["pytester"]

#: One test module with passing, failing and erroring tests in boxes, for both runs.
INNER = """\
import ctypes, os, socket, subprocess, time
import pytest

# Namespaces this machine cannot make for this user: an error, with the reason.
CANNOT = {"user": True, "mount_proc": True} if os.geteuid() == 0 else {"net": True, "user": False}


@pytest.fixture
def caller_pid():
    yield os.getpid()
    with open("teardown.log", "a") as f:
        f.write(f"{os.getpid()}\\n")


@pytest.mark.nsbox(pid=True, hostname="t1", net=True, mount_proc=True)
def test_passes_in_a_box(caller_pid):
    assert os.getpid() == 1 and caller_pid not in (1, os.getpid())
    assert socket.gethostname() == "t1"
    assert sorted(p for p in os.listdir("/proc") if p.isdigit()) == ["1"]
    socket.create_server(("127.0.0.1", 80)).close()
    print("printed in the box, uid", os.getuid())


@pytest.mark.nsbox(pid=True)
def test_fails_in_a_box(caller_pid):
    numbers = [1, 2, 3]
    assert sum(numbers) == 7


@pytest.mark.nsbox(hostname="x" * 100)
def test_bad_options():
    pass


@pytest.mark.nsbox(**CANNOT)
def test_namespaces_cannot_be_made():
    pass


@pytest.mark.nsbox(pid=True, timeout=0.5)
def test_times_out():
    time.sleep(30)


@pytest.mark.nsbox(pid=True)
def test_crashes():
    import faulthandler
    faulthandler.disable()
    ctypes.string_at(0)


@pytest.mark.nsbox(net=True)
def test_skips_in_a_box():
    pytest.skip("skipped in the box")


def test_not_in_a_box():
    assert os.getpid() != 1


def test_box_fixture_kills_the_box_even_when_the_test_fails(nsbox_box):
    box = nsbox_box(["sleep", "1000.25"], pid=True)
    piped = nsbox_box(["sleep", "1000.5"], net=True, stdout=subprocess.PIPE)
    with open("boxes.pid", "w") as f:
        f.write(f"{box.pid} {piped.pid}")
    assert box.poll() is None and piped.poll() is None
    raise AssertionError("fails with two boxes running")
"""


def running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def check_report(result: pytest.RunResult, workdir: Path, uid_inside: int) -> None:
    result.assert_outcomes(passed=2, failed=4, errors=2, skipped=1)
    result.stdout.fnmatch_lines_random(
        [
            # pytest's rewritten assertion message, and the traceback from the box
            "E*assert 6 == 7",
            "E*+  where 6 = sum(*1, 2, 3*)",
            '*File "*test_inner.py", line *, in test_fails_in_a_box',
            "    assert sum(numbers) == 7",
            # the setup errors, with their reasons
            "*ERROR at setup of test_bad_options*",
            "nsbox cannot make the namespaces of @pytest.mark.nsbox(hostname='xxx*'): "
            "ValueError: hostname is 100 bytes long; the limit is 64",
            "*ERROR at setup of test_namespaces_cannot_be_made*",
            "E*subprocess.TimeoutExpired: Command 'test_times_out()' timed out after 0.5 seconds",
            "E*nsbox.BoxCrashed: test_crashes() did not return: * was killed by SIGSEGV",
            "SKIPPED [[]1[]] test_inner.py:*: skipped in the box",
            f"printed in the box, uid {uid_inside}",
            "E*AssertionError: fails with two boxes running",
        ]
    )
    # Fixtures run in the test process, not in the box.
    torn_down = (workdir / "teardown.log").read_text().split()
    assert len(torn_down) == 2 and len(set(torn_down)) == 1 and torn_down[0] != "1"
    # Boxes from nsbox_box are killed and reaped at teardown, the test having failed.
    for pid in map(int, (workdir / "boxes.pid").read_text().split()):
        assert not running(pid)


def test_plugin_as_root(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_inner=INNER)
    # Loaded through the pytest11 entry point: no -p needed.
    result = pytester.runpytest_subprocess("-rA", "-p", "no:cacheprovider", "--strict-markers")
    result.stdout.fnmatch_lines(["plugins:*nsbox-*"])
    check_report(result, pytester.path, uid_inside=0)
    result.stdout.fnmatch_lines(
        [
            "nsbox cannot make the namespaces of @pytest.mark.nsbox(user=True, mount_proc=True): "
            "PermissionError: [[]Errno 1[]] cannot mount a new proc on '/proc': Operation not permitted*"
        ]
    )


def _with_dependencies(name: str) -> list[importlib.metadata.Distribution]:
    found: dict[str, importlib.metadata.Distribution] = {}
    todo = [name]
    while todo:
        dist = importlib.metadata.distribution(todo.pop())
        if dist.metadata["Name"].lower() in found:
            continue
        found[dist.metadata["Name"].lower()] = dist
        for text in dist.requires or ():
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return list(found.values())


@pytest.fixture(autouse=True)
def inner_runs_in_file_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pytest runs these tests start see their tests in file order (pytest-randomly shuffles them)."""
    monkeypatch.setenv("PYTEST_ADDOPTS", "-p no:randomly")


@pytest.fixture(scope="session")
def rootless_pytest_dir() -> Iterator[Path]:
    """World-readable copies of the installed pytest and its dependencies, files and metadata."""
    base = Path(tempfile.mkdtemp(prefix="nsbox-rootless-pytest-", dir="/tmp"))
    try:
        for dist in _with_dependencies("pytest"):
            for file in dist.files or ():
                if file.parts[0] != ".." and "__pycache__" not in file.parts:
                    target = base / file
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(Path(str(dist.locate_file(file))), target)
        for root, dirs, files in os.walk(base):
            for name in dirs:
                os.chmod(os.path.join(root, name), 0o755)
            for name in files:
                os.chmod(os.path.join(root, name), 0o644)
        base.chmod(0o755)
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def run_rootless(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    world_tmp: Path,
    rootless_dir: Path,
    rootless_pytest_dir: Path,
) -> Callable[..., pytest.RunResult]:
    """``run_rootless(*args, test_x=SOURCE, ...)`` writes the test files in ``world_tmp`` and runs pytest on
    them there as uid 65534 (with ``-rA`` and ``args``), the plugin loaded with ``-p``."""
    monkeypatch.chdir(world_tmp)  # pytester runs its command in the current directory

    def run(*args: str, **files: str) -> pytest.RunResult:
        for name, source in files.items():
            (world_tmp / f"{name}.py").write_text(source)
            (world_tmp / f"{name}.py").chmod(0o644)
        env = ["env", "-i", f"PATH={ROOTLESS_PATH}", f"PYTHONPATH={rootless_dir}:{rootless_pytest_dir}", "HOME=/tmp"]
        drop = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
        pytest_args = ["-p", "nsbox.pytest_plugin", "-rA", "-p", "no:cacheprovider", "--strict-markers"]
        names = [f"{name}.py" for name in files]
        return pytester.run(*env, *drop, ROOTLESS_PYTHON, "-m", "pytest", *pytest_args, *args, *names, timeout=120)

    return run


def test_plugin_rootless(run_rootless: Callable[..., pytest.RunResult], world_tmp: Path) -> None:
    started = time.monotonic()
    result = run_rootless(test_inner=INNER)
    assert time.monotonic() - started < 120
    assert (world_tmp / "teardown.log").stat().st_uid == NOBODY
    # A user namespace is added for the unprivileged user, who is root inside.
    check_report(result, world_tmp, uid_inside=0)
    result.stdout.fnmatch_lines(
        [
            "nsbox cannot make the namespaces of @pytest.mark.nsbox(net=True, user=False): "
            "PermissionError: [[]Errno 1[]] cannot create the network namespace: Operation not permitted*"
        ]
    )


def test_marker_is_registered(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.nsbox(**options): run the test function inside new Linux namespaces*"])


def test_marker_takes_keyword_options_only(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.nsbox(True)
        def test_positional():
            pass
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*TypeError: @pytest.mark.nsbox takes keyword options only, not (True,)*"])


# -- unittest.TestCase methods -------------------------------------------------------------------------

#: A TestCase whose marked method records, from inside, where it runs; setUp and tearDown record it too.
UNITTEST_IN_A_BOX = """\
import os, socket, unittest
import pytest


def log(*fields):
    with open("unittest.log", "a") as f:
        f.write(" ".join(map(str, fields)) + "\\n")


class InABox(unittest.TestCase):
    def setUp(self):
        log("setUp", os.getpid(), socket.gethostname())

    def tearDown(self):
        log("tearDown", os.getpid(), socket.gethostname())

    @pytest.mark.nsbox(pid=True, hostname="ut-box")
    def test_runs_in_the_box(self):
        self.assertEqual(os.getpid(), 1)  # first: outside a box nothing below may run (it renames the host)
        uts, pid = os.readlink("/proc/self/ns/uts"), os.readlink("/proc/self/ns/pid")
        log("body", os.getpid(), socket.gethostname(), uts, pid)
        socket.sethostname("ut-box-renamed")
        log("renamed", socket.gethostname())
"""

#: Every outcome unittest reports, each naming where it happened. Unboxed (UNBOXED=1) the same tests run
#: on the host, for the reports to be compared.
UNITTEST_OUTCOMES = """\
import os, unittest, warnings
import pytest

BOX = (lambda f: f) if os.environ.get("UNBOXED") == "1" else pytest.mark.nsbox(pid=True)


def where():
    return "in the box" if os.getpid() == 1 else "on the host"


class Outcomes(unittest.TestCase):
    @BOX
    def test_passes(self):
        print("printed", where())

    @BOX
    def test_assertion_fails(self):
        numbers = [1, 2, 3]
        self.assertEqual(sum(numbers), 7, where())

    @BOX
    def test_errors(self):
        raise ValueError(f"raised {where()}")

    @BOX
    def test_skips(self):
        self.skipTest(f"skipTest {where()}")

    @BOX
    def test_raises_skiptest(self):
        raise unittest.SkipTest(f"SkipTest raised {where()}")

    @unittest.expectedFailure
    @BOX
    def test_expected_failure(self):
        raise AssertionError(f"failed as expected {where()}")

    @unittest.expectedFailure
    @BOX
    def test_unexpected_success(self):
        print("succeeded", where())

    @unittest.skip("skipped by the decorator")
    @BOX
    def test_skipped_by_decorator(self):
        raise AssertionError("ran")

    @BOX
    def test_subtests(self):
        for i in range(3):
            with self.subTest(i=i, where=where()):
                self.assertNotEqual(i, 1)
        with self.subTest("skipping"):
            self.skipTest(f"subtest skipped {where()}")

    @unittest.expectedFailure
    @BOX
    def test_expected_failure_of_a_subtest(self):
        for i in range(3):
            with self.subTest(i=i):
                self.assertNotEqual(i, 1)

    @BOX
    def test_cleanup_fails(self):
        here = where()

        def fail():
            raise OSError(f"cleanup added {here} failed {where()}")

        self.addCleanup(fail)

    @BOX
    def test_warns(self):
        warnings.warn(f"warned {where()}")
"""


def unittest_outcome_lines(where: str) -> list[str]:
    """The report lines of UNITTEST_OUTCOMES (``-rA``) whose tests ran ``where``."""
    return [
        "FAILED test_outcomes.py::Outcomes::test_assertion_fails - AssertionError: 6 != 7 : " + where,
        "FAILED test_outcomes.py::Outcomes::test_errors - ValueError: raised " + where,
        # pytest 9 labels some of these SUBSKIPPED[skipping] at random, boxed or not.
        "*SKIPPED* [[]1[]] test_outcomes.py:*: skipTest " + where,
        "*SKIPPED* [[]1[]] test_outcomes.py:*: SkipTest raised " + where,
        "XFAIL test_outcomes.py::Outcomes::test_expected_failure",
        "FAILED test_outcomes.py::Outcomes::test_unexpected_success - Failed: Unexpected success",
        "*SKIPPED* [[]1[]] test_outcomes.py:*: skipped by the decorator",
        f"SUBFAILED(i=1, where='{where}') test_outcomes.py::Outcomes::test_subtests - *",
        "*SKIPPED* [[]1[]] test_outcomes.py:*: subtest skipped " + where,
        "XFAIL test_outcomes.py::Outcomes::test_expected_failure_of_a_subtest",
        f"FAILED test_outcomes.py::Outcomes::test_cleanup_fails - OSError: cleanup added {where} failed {where}",
        f"*test_outcomes.py:*: UserWarning: warned {where}",
        "printed " + where,
        "succeeded " + where,
    ]


def summary(result: pytest.RunResult) -> list[str]:
    """The short test summary of a run, its lines sorted (pytest 9's random SUBSKIPPED label made SKIPPED)."""
    lines = result.stdout.lines
    start = next(i for i, line in enumerate(lines) if "short test summary info" in line)
    return sorted(line.replace("SUBSKIPPED[skipping]", "SKIPPED") for line in lines[start + 1 : -1])


def check_unittest_report(result: pytest.RunResult, workdir: Path) -> None:
    # The subtest that failed counts as a failure; the skipped one as a skip (with -vv, as outside a box).
    result.assert_outcomes(passed=4, failed=5, skipped=4, xfailed=2, warnings=1)
    result.stdout.fnmatch_lines(["*, 3 subtests passed in *"])
    result.stdout.fnmatch_lines_random(unittest_outcome_lines("in the box"))
    # The traceback from the box, under the one here.
    result.stdout.fnmatch_lines(
        ["*self.assertEqual(sum(numbers), 7, where())", "E*AssertionError: 6 != 7 : in the box"]
    )
    # Both sides of test_runs_in_the_box: setUp and tearDown in the test process, on the host; the body in
    # a box of its own, whose hostname change stays there.
    host_name = socket.gethostname()
    log = [line.split() for line in (workdir / "unittest.log").read_text().splitlines()]
    assert [fields[0] for fields in log] == ["setUp", "body", "renamed", "tearDown"], log
    (_, setup_pid, setup_name), body, renamed, (_, teardown_pid, teardown_name) = log
    assert setup_pid == teardown_pid != "1" and setup_name == teardown_name == host_name
    assert body[1:3] == ["1", "ut-box"] and renamed[1] == "ut-box-renamed"
    assert body[3] != host_ns("uts") and body[4] != host_ns("pid")
    assert socket.gethostname() == host_name


def test_unittest_methods_run_in_the_box_as_root(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_in_a_box=UNITTEST_IN_A_BOX, test_outcomes=UNITTEST_OUTCOMES)
    result = pytester.runpytest_subprocess("-rA", "-vv", "-p", "no:cacheprovider", "--strict-markers")
    check_unittest_report(result, pytester.path)


def test_unittest_methods_run_in_the_box_rootless(
    run_rootless: Callable[..., pytest.RunResult], world_tmp: Path
) -> None:
    result = run_rootless("-vv", test_in_a_box=UNITTEST_IN_A_BOX, test_outcomes=UNITTEST_OUTCOMES)
    check_unittest_report(result, world_tmp)
    assert (world_tmp / "unittest.log").stat().st_uid == NOBODY


def test_unittest_outcomes_in_a_box_are_reported_as_outside(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_outcomes=UNITTEST_OUTCOMES)
    boxed = pytester.runpytest_subprocess("-rA", "-vv", "-p", "no:cacheprovider")
    monkeypatch.setenv("UNBOXED", "1")
    unboxed = pytester.runpytest_subprocess("-rA", "-vv", "-p", "no:cacheprovider")
    unboxed.stdout.fnmatch_lines_random(unittest_outcome_lines("on the host"))
    assert boxed.parseoutcomes() == unboxed.parseoutcomes()
    assert summary(boxed) == [line.replace("on the host", "in the box") for line in summary(unboxed)]


def test_what_cannot_travel_back_from_a_unittest_box_is_reported_as_text(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_unpicklable="""
        import os, threading, unittest
        import pytest


        class Unpicklable(Exception):
            def __init__(self, lock, text):
                super().__init__(text)
                self.lock = lock


        class Case(unittest.TestCase):
            @pytest.mark.nsbox(pid=True)
            def test_subtest_and_cleanup(self):
                def cleanup():
                    raise Unpicklable(threading.Lock(), f"a cleanup failed, pid {os.getpid()}")

                self.addCleanup(cleanup)
                with self.subTest(lock=threading.Lock()):
                    raise Unpicklable(threading.Lock(), f"a subtest failed, pid {os.getpid()}")
        """
    )
    result = pytester.runpytest_subprocess("-rA", "-vv", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=2)
    cannot = "(the exception cannot be pickled: *)"
    result.stdout.fnmatch_lines_random(
        [
            "SUBFAILED(lock=<unlocked _thread.lock object at 0x*>) test_unpicklable.py::Case::test_subtest_and_cleanup"
            f" - RuntimeError: test_unpicklable.Unpicklable: a subtest failed, pid 1 {cannot}",
            "FAILED test_unpicklable.py::Case::test_subtest_and_cleanup"
            f" - RuntimeError: test_unpicklable.Unpicklable: a cleanup failed, pid 1 {cannot}",
        ]
    )


#: Items that cannot run in a box, all marked: each must error at setup, and never run.
NOT_BOXABLE_CONFTEST = """\
import pytest


class CheckItem(pytest.Item):
    def runtest(self):
        open("custom-item-ran", "w").close()


class CheckFile(pytest.File):
    def collect(self):
        yield CheckItem.from_parent(self, name="check")


class OwnFunction(pytest.Function):
    def runtest(self):
        open("own-runtest-ran", "w").close()


def pytest_collect_file(parent, file_path):
    if file_path.suffix == ".check":
        return CheckFile.from_parent(parent, path=file_path)


def pytest_pycollect_makeitem(collector, name, obj):
    if name == "check_own_runtest":
        return [OwnFunction.from_parent(collector, name=name)]


def pytest_collection_modifyitems(items):
    for item in items:
        item.add_marker(pytest.mark.nsbox(pid=True))
"""

NOT_BOXABLE_TESTS = """\
import os


def documented():
    '''
    >>> open("doctest-ran", "w").close()
    '''


async def test_async():
    open("async-ran", "w").close()


def check_own_runtest():
    pass


def test_plain_function():
    assert os.getpid() == 1
"""


def test_items_that_cannot_run_in_a_box_error_and_never_run(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(NOT_BOXABLE_CONFTEST)
    pytester.makepyfile(test_items=NOT_BOXABLE_TESTS)
    pytester.makefile(".check", a="")
    result = pytester.runpytest_subprocess("-rA", "-vv", "-p", "no:cacheprovider", "--doctest-modules")
    result.assert_outcomes(passed=1, errors=4)
    cannot = "@pytest.mark.nsbox cannot run"
    result.stdout.fnmatch_lines_random(
        [
            f"{cannot} a.check::check in a box: it is a CheckItem, not a test function or a unittest.TestCase "
            "test method, so nsbox has no function to run in the box",
            f"{cannot} test_items.py::test_items.documented in a box: it is a DoctestItem, *",
            f"{cannot} test_items.py::test_async in a box: it is an async function, and the box runs no event loop",
            f"{cannot} test_items.py::check_own_runtest in a box: OwnFunction has a runtest() of its own, "
            "which might run the test outside the box",
        ]
    )
    assert sorted(p.name for p in pytester.path.iterdir() if p.name.endswith("-ran")) == []


# -- Warnings ------------------------------------------------------------------------------------------

WARNINGS = """\
import os, threading, unittest, warnings
import pytest


def helper():
    warnings.warn(f"warned for the caller, pid {os.getpid()}", stacklevel=2)


@pytest.mark.nsbox(pid=True)
def test_warns():
    warnings.warn(f"warned in the box, pid {os.getpid()}", DeprecationWarning)
    helper()  # HELPER CALLED


@pytest.mark.nsbox(pid=True)
def test_warns_and_fails():
    warnings.warn(f"warned before failing, pid {os.getpid()}", FutureWarning)
    assert False


@pytest.mark.nsbox(pid=True)
@pytest.mark.filterwarnings("error")
def test_warning_made_an_error_in_the_box():
    warnings.warn(f"an error in the box, pid {os.getpid()}")
    open("went-on-after-the-error", "w").close()


@pytest.mark.nsbox(pid=True)
def test_unpicklable_warnings():
    class LocalWarning(RuntimeWarning):
        pass

    warnings.warn(f"of a local category, pid {os.getpid()}", LocalWarning)
    warnings.warn(UserWarning(threading.Lock()))


@pytest.mark.nsbox(pid=True)
def test_recwarn_in_the_box(recwarn):
    warnings.warn(f"recorded by recwarn, pid {os.getpid()}")
    assert [str(w.message) for w in recwarn] == ["recorded by recwarn, pid 1"]


class Methods(unittest.TestCase):
    @pytest.mark.nsbox(pid=True)
    def test_method_warns(self):
        warnings.warn(f"a method warned, pid {os.getpid()}", ResourceWarning)
"""


def line_of(source: str, text: str) -> int:
    [number] = [n for n, line in enumerate(source.splitlines(), 1) if text in line]
    return number


def test_warnings_in_a_box_reach_the_warnings_summary(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_warnings=WARNINGS)
    result = pytester.runpytest_subprocess("-rA", "-vv", "-p", "no:cacheprovider", "-W", "always::ResourceWarning")
    result.assert_outcomes(passed=4, failed=2, warnings=6)
    at = f"{pytester.path}/test_warnings.py"
    result.stdout.fnmatch_lines_random(
        [
            # each with its test, category, message and place (a helper's stacklevel too)
            "test_warnings.py::test_warns",
            f"  {at}:{line_of(WARNINGS, 'warned in the box')}: DeprecationWarning: warned in the box, pid 1",
            f"  {at}:{line_of(WARNINGS, 'HELPER CALLED')}: UserWarning: warned for the caller, pid 1",
            f"  {at}:{line_of(WARNINGS, 'warned before failing')}: FutureWarning: warned before failing, pid 1",
            # what cannot be pickled travels as text, under the nearest category that can
            f"  {at}:{line_of(WARNINGS, 'of a local category')}: RuntimeWarning: of a local category, pid 1",
            f"  {at}:{line_of(WARNINGS, 'threading.Lock()')}: UserWarning: <unlocked _thread.lock object at 0x*>",
            "test_warnings.py::Methods::test_method_warns",
            f"  {at}:{line_of(WARNINGS, 'a method warned')}: ResourceWarning: a method warned, pid 1",
            # the filter in force in the box made it an error there
            "FAILED test_warnings.py::test_warning_made_an_error_in_the_box - UserWarning: an error in the box, pid 1",
            "FAILED test_warnings.py::test_warns_and_fails - assert False",
            "PASSED test_warnings.py::test_recwarn_in_the_box",
        ]
    )
    # recwarn took its warning, as it does outside a box
    assert "recorded by recwarn" not in result.stdout.str()
    assert not (pytester.path / "went-on-after-the-error").exists()


def test_a_warnings_error_filter_of_the_configuration_applies_in_the_box(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nfilterwarnings = error\n")
    pytester.makepyfile(
        """
        import os, warnings
        import pytest

        @pytest.mark.nsbox(pid=True)
        def test_warns():
            warnings.warn(f"an error in the box, pid {os.getpid()}", DeprecationWarning)
        """
    )
    result = pytester.runpytest_subprocess("-rA", "-vv", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["FAILED *::test_warns - DeprecationWarning: an error in the box, pid 1"])


MARKED = """
import os, pytest, nsbox

@pytest.mark.nsbox(mounts=[nsbox.Tmpfs("/mnt")])
def test_a_private_mnt():
    open("/mnt/from-the-test", "w").write("x")
    assert os.listdir("/mnt") == ["from-the-test"]

@pytest.mark.nsbox(root=nsbox.Bind("/", readonly=True), mounts=[nsbox.Tmpfs("/tmp")])
def test_a_read_only_host():
    with pytest.raises(OSError, match="Read-only file system"):
        open("/etc/nsbox-from-the-test", "w")
"""


def test_the_pytest_marker_takes_root_and_mounts(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_marked=MARKED)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly")
    result.assert_outcomes(passed=2)
    # Host side: the test's writes stayed in its box.
    assert not Path("/mnt/from-the-test").exists() and not Path("/etc/nsbox-from-the-test").exists()


#: Six boxed tests of one marker, each noting its network namespace and its default TTL (a setting of the
#: namespace, which each then changes: a namespace used twice would show the change); the session notes its
#: pools' counters.
POOLED = """\
import os
import pytest

TTL = "/proc/sys/net/ipv4/ip_default_ttl"


@pytest.mark.nsbox(net=True, pid=True)
@pytest.mark.parametrize("i", range(6))
def test_boxed(i):
    assert os.getpid() == 1
    with open(TTL) as f:
        ttl = f.read().strip()
    with open(TTL, "w") as f:
        f.write(str(100 + i))
    with open(f"net-{i}.txt", "w") as f:
        f.write(f"{os.readlink('/proc/self/ns/net')} {ttl}")
    # The box holds no fd of the pool's other sets (closed as the box was forked).
    links = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            links.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            pass  # the listing's own fd
    assert not [link for link in links if link.startswith("net:")], links
"""
POOL_COUNTERS = """\
def pytest_sessionfinish(session):
    from nsbox.pytest_plugin import _POOLS

    pools = session.config.stash.get(_POOLS, {})
    with open("pools.txt", "w") as f:
        f.write(repr([None if p is None else p.stats()[:4] for p in pools.values()]))
"""


def _check_pooled(result: pytest.RunResult, workdir: Path, pooled: bool) -> None:
    result.assert_outcomes(passed=6)
    seen = [(workdir / f"net-{i}.txt").read_text().split() for i in range(6)]
    # Six fresh network namespaces: none the host's, each with the default TTL (none had been changed before).
    # Their ids may repeat: the kernel reuses the id of a namespace freed by an earlier test.
    with open("/proc/sys/net/ipv4/ip_default_ttl") as f:
        host_ttl = f.read().strip()
    assert all(net != host_ns("net") and ttl == host_ttl for net, ttl in seen), (seen, host_ttl)
    pools = eval((workdir / "pools.txt").read_text())  # a list of tuples the session wrote
    if not pooled:
        assert pools == []  # the control: without the option, no pool
        return
    ((_ready, _made, taken, missed),) = pools  # one pool for the one marker
    assert taken + missed == 6 and taken >= 1, pools


@pytest.mark.parametrize("pooled", [False, True])
def test_nsbox_pool_option_gives_boxed_tests_fresh_namespaces_from_a_pool(
    pytester: pytest.Pytester, pooled: bool
) -> None:
    pytester.makepyfile(test_pooled=POOLED)
    pytester.makeconftest(POOL_COUNTERS)
    args = ["--nsbox-pool=4"] if pooled else []
    result = pytester.runpytest_subprocess("-rA", "-p", "no:cacheprovider", *args)
    _check_pooled(result, pytester.path, pooled)


def test_nsbox_pool_option_rootless(run_rootless: Callable[..., pytest.RunResult], world_tmp: Path) -> None:
    result = run_rootless("--nsbox-pool=4", test_pooled=POOLED, conftest=POOL_COUNTERS)
    _check_pooled(result, world_tmp, pooled=True)
