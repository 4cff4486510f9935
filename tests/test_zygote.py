"""nsbox.Zygote: a server started from a fresh interpreter, which forks a box per call.

The functions the zygote runs travel by reference, so they live in ``helpers/zygote_work.py`` (preloaded).
Every test leaves nothing: no child of the test process, no new fd (the ``nothing_left`` fixture).
"""

from __future__ import annotations

import functools
import gc
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import nsbox
from helpers import zygote_work
from helpers.namespaces import NAMESPACES, OPTION_FOR
from helpers.procs import children_of, open_fds, proc_state, proc_status, wait_until
from helpers.rootless import NOBODY, Rootless
from nsbox._call import TRUSTED

WORK = "helpers.zygote_work"
TESTS = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def nothing_left() -> Iterator[None]:
    """After each test: no child of this process (zygote or box), and no fd it did not have before.

    (Only new ones: an object of an earlier test, collected meanwhile, may close one of its own.)
    """
    gc.collect()
    before = open_fds()
    yield
    assert children_of(os.getpid()) == []
    assert set(open_fds().items()) - set(before.items()) == set()


def links_of(pid: int) -> dict[str, str]:
    return {kind: os.readlink(f"/proc/{pid}/ns/{kind}") for kind in zygote_work.KINDS}


def boxes_of(zygote: int) -> list[int]:
    """The zygote's boxes: its children that are PID 1 of a PID namespace of their own (every test uses pid=True)."""
    found = []
    for child in children_of(zygote):
        try:
            if proc_status(child)["NSpid"].split()[1:] == ["1"]:
                found.append(child)
        except (OSError, KeyError):
            pass
    return found


def running(pid: int) -> bool:
    return proc_state(pid) not in (None, "Z")


# -- A call: its result, its namespaces ---------------------------------------------------------------------


def test_a_call_returns_its_result_from_fresh_namespaces_seen_from_both_sides(world_tmp: Path) -> None:
    options = {OPTION_FOR[kind]: True for kind in NAMESPACES}  # every kind: pid, mount, ... user, time
    go = world_tmp / "go"
    caller = links_of(os.getpid())
    with nsbox.Zygote([WORK], **options) as zygote, ThreadPoolExecutor(1) as pool:
        zygote_links = links_of(zygote.pid)
        waiting = pool.submit(zygote.call, zygote_work.wait_for, str(go))
        try:
            assert wait_until(lambda: len(boxes_of(zygote.pid)) == 1)
            [box] = boxes_of(zygote.pid)
            outside = links_of(box)
            nspid = proc_status(box)["NSpid"].split()
        finally:
            go.touch()
        seen = waiting.result(timeout=60)
        assert zygote.call(divmod, 7, 2) == (3, 1)
    # Inside: PID 1, root of its user namespace, in namespaces that are neither the caller's nor the zygote's.
    assert (seen["pid"], seen["uid"], nspid) == (1, 0, [str(box), "1"])
    assert seen["ns"] == outside  # what it sees of itself is what the host sees of it
    for kind in zygote_work.KINDS:
        assert outside[kind] != caller[kind] and outside[kind] != zygote_links[kind], kind
    assert zygote_links == caller  # the zygote itself is an ordinary process of the host


def test_each_call_is_a_fresh_fork_of_the_zygote() -> None:
    with nsbox.Zygote([WORK], pid=True) as zygote:
        pids = {zygote.call(os.getppid) for _ in range(3)}  # PID 1's parent is outside its namespace: 0
        assert pids == {0}
        assert zygote.call(zygote_work.remember, 1) == [1]
        assert zygote.call(zygote_work.remember, 2) == [2]  # the first call's change went with its box


def test_a_large_argument_and_result_travel() -> None:
    big = os.urandom(8 << 20)
    with nsbox.Zygote() as zygote:
        assert zygote.call(bytes, big) == big
        assert zygote.call(dict, a=1, b=[2]) == {"a": 1, "b": [2]}
        assert zygote.call(type(None)) is None


# -- Errors come back as with nsbox.call ---------------------------------------------------------------------


def test_an_exception_comes_back_with_its_type_message_and_traceback() -> None:
    with nsbox.Zygote([WORK], pid=True) as zygote:
        with pytest.raises(zygote_work.WorkError, match=r"^deep$") as info:
            zygote.call(zygote_work.fail_deeply, "deep")
        cause = info.value.__cause__
        assert isinstance(cause, nsbox.RemoteTraceback)
        text = str(cause)
        assert text.startswith("Traceback (most recent call last):")
        assert "in fail_deeply" in text and "in inner" in text and "raise WorkError(text)" in text
        assert text.rstrip().endswith("helpers.zygote_work.WorkError: deep")
        assert "_zygote.py" not in text and "_call.py" not in text  # nsbox's own frames are left out

        with pytest.raises(SystemExit) as exit_info:
            zygote.call(sys.exit, 3)
        assert exit_info.value.code == 3
        with pytest.raises(TypeError, match=r"the result of make_lock\(\) cannot be pickled.*_thread.lock"):
            zygote.call(zygote_work.make_lock)


def test_a_crash_and_a_failed_step_are_nsbox_calls_errors() -> None:
    with nsbox.Zygote() as zygote:
        with pytest.raises(nsbox.BoxCrashed, match=r"_exit\(\) did not return: .* exited with status 3") as info:
            zygote.call(os._exit, 3)
        assert (info.value.returncode, info.value.signal) == (3, None)
        with pytest.raises(nsbox.BoxCrashed, match="was killed by SIGABRT"):
            zygote.call(os.abort)
    # A user namespace does not own the host's PID namespace: proc cannot be mounted for it, even by root.
    with nsbox.Zygote(user=True, mount_proc=True) as zygote:
        with pytest.raises(PermissionError, match=r"cannot mount a new proc on '/proc': Operation not permitted"):
            zygote.call(os.getpid)
        assert zygote.pid > 0  # the zygote serves on


# -- What cannot travel ----------------------------------------------------------------------------------------


def test_what_cannot_travel_is_refused_in_the_caller_before_anything_is_sent(world_tmp: Path) -> None:
    def closure() -> int:
        return 1

    class Local:
        pass

    marker = world_tmp / "ran"
    with nsbox.Zygote([WORK], pid=True) as zygote:
        with pytest.raises(TypeError, match=r"\.<lambda>\(\) cannot be sent to the zygote: it is a lambda"):
            zygote.call(lambda: 1)
        with pytest.raises(TypeError, match=r"closure\(\) cannot be sent .* defined inside a function"):
            zygote.call(closure)
        with pytest.raises(TypeError, match=r"repr\(\) cannot be sent .* its arguments hold the class .*Local, and"):
            zygote.call(repr, Local())
        # An argument pickle refuses: the function never runs (it would make the marker first).
        with pytest.raises(TypeError, match=r"touch_then\(\) cannot be sent .* its arguments hold what pickle refuses"):
            zygote.call(zygote_work.touch_then, str(marker), threading.Lock())
        with pytest.raises(TypeError, match="define them at the top level of a module"):
            zygote.call(zygote_work.touch_then, str(marker), (i for i in range(3)))
        assert not marker.exists()
        assert children_of(zygote.pid) == []
        zygote.call(zygote_work.touch_then, str(marker), None)  # and the zygote serves on
        assert marker.exists()


MAIN_SCRIPT = """\
import json, os, nsbox

def square(x):
    return x * x

class Shape:
    pass

out = {}
with nsbox.Zygote() as zygote:
    for label, fn, args in [("function", square, (3,)), ("argument", repr, (Shape(),)), ("ok", abs, (-3,))]:
        try:
            out[label] = zygote.call(fn, *args)
        except TypeError as e:
            out[label] = str(e)
print(json.dumps(out))
"""


def test_functions_and_classes_of_main_are_refused_with_the_reason(tmp_path: Path) -> None:
    # The zygote's __main__ is not the script's: without the check, `__main__.square` would not be found there,
    # or worse, another object of that name would.
    script = tmp_path / "script.py"
    script.write_text(MAIN_SCRIPT)
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=True)
    out = json.loads(r.stdout)
    assert out["function"].startswith("square() cannot be sent to the zygote: it is defined in __main__")
    assert out["argument"].startswith(
        "repr() cannot be sent to the zygote: its arguments hold the class __main__.Shape"
    )
    assert out["ok"] == 3


# -- Preload, and what calls share ------------------------------------------------------------------------------


def test_preload_is_imported_once_in_the_zygote_not_per_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"zygote_counted_{secrets.token_hex(4)}"
    log = tmp_path / "imports"
    (tmp_path / f"{name}.py").write_text(
        f"import os\nwith open({str(log)!r}, 'a') as f:\n    f.write(f'{{os.getpid()}}\\n')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with nsbox.Zygote([WORK, name], pid=True) as zygote:
        assert log.read_text().split() == [str(zygote.pid)]
        assert [zygote.call(zygote_work.loaded, name) for _ in range(5)] == [True] * 5
        assert log.read_text().split() == [str(zygote.pid)]  # no box imported it again
    assert name not in sys.modules  # nor did the caller


def test_a_preload_that_fails_is_raised_with_its_traceback_and_leaves_nothing() -> None:
    with pytest.raises(ModuleNotFoundError, match="no_such_module_for_nsbox") as info:
        nsbox.Zygote(["no_such_module_for_nsbox"])
    assert isinstance(info.value.__cause__, nsbox.RemoteTraceback)


def test_the_callers_state_stays_the_callers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zygote_work, "STATE", ["the caller's"])
    with nsbox.Zygote([WORK]) as zygote:
        assert zygote.call(zygote_work.remember, 1) == [1]  # the zygote's module, as it was imported there
        monkeypatch.setenv("NSBOX_ZYGOTE_LATE", "1")
        monkeypatch.chdir(tmp_path)
        monkeypatch.syspath_prepend(str(tmp_path))
        late, cwd, path = zygote.call(zygote_work.environment, "NSBOX_ZYGOTE_LATE")
    # The environment is the caller's as the zygote started; sys.path and the directory are the call's.
    assert (late, cwd, path[0]) == (None, str(tmp_path), str(tmp_path))
    assert zygote_work.STATE == ["the caller's"]


# -- Ends: close, interrupt, the caller's death ------------------------------------------------------------------


def test_close_ends_the_zygote_and_its_boxes_and_gives_the_fds_back(world_tmp: Path) -> None:
    zygote = nsbox.Zygote([WORK], pid=True)
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(zygote.call, zygote_work.wait_for, str(world_tmp / "never"))
        assert wait_until(lambda: len(boxes_of(zygote.pid)) == 1)
        boxes = boxes_of(zygote.pid)
        zygote.close()
        # close() returned: the zygote exited after killing and reaping its box.
        assert [proc_state(pid) for pid in [zygote.pid, *boxes]] == [None, None]
        with pytest.raises(RuntimeError, match=r"the Zygote was closed while wait_for\(\) ran"):
            waiting.result(timeout=30)
    with pytest.raises(ValueError, match="call on a closed Zygote"):
        zygote.call(os.getpid)
    zygote.close()  # twice: nothing


def test_an_interrupted_call_kills_its_box_and_the_zygote_serves_on(world_tmp: Path) -> None:
    main = threading.get_ident()
    with nsbox.Zygote([WORK], pid=True) as zygote:
        boxes: list[int] = []

        def interrupt() -> None:
            try:
                wait_until(lambda: len(boxes_of(zygote.pid)) == 1)
                boxes.extend(boxes_of(zygote.pid))
            finally:
                signal.pthread_kill(main, signal.SIGINT)

        interrupter = threading.Thread(target=interrupt)
        interrupter.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                zygote.call(zygote_work.wait_for, str(world_tmp / "never"))
        finally:
            interrupter.join()
        assert len(boxes) == 1
        assert wait_until(lambda: proc_state(boxes[0]) is None)  # killed and reaped by the zygote
        assert zygote.call(os.getpid) == 1
        # A terminal's Ctrl-C goes to its foreground process group: the caller's, not the zygote's own.
        assert os.getpgid(zygote.pid) == zygote.pid != os.getpgid(0)


def in_pid_namespace(link: str) -> list[int]:
    """Host PIDs of the processes (zombies too) in the PID namespace ``link`` (``pid:[N]``)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.readlink(f"/proc/{pid}/ns/pid") == link:
                found.append(int(pid))
        except OSError:
            pass  # gone, or a kernel thread
    return found


def test_a_call_past_its_timeout_is_killed_with_its_whole_box_and_the_zygote_serves_on(world_tmp: Path) -> None:
    ready = world_tmp / "pid-namespace"
    with nsbox.Zygote([WORK], pid=True) as zygote:
        seen: list[int] = []

        def watch() -> None:  # the control: the search finds the box's two processes while the call runs
            if wait_until(ready.exists):
                seen.extend(in_pid_namespace(ready.read_text()))

        watcher = threading.Thread(target=watch)
        watcher.start()
        started = time.monotonic()
        try:
            with pytest.raises(subprocess.TimeoutExpired) as caught:
                zygote.call(zygote_work.fork_and_wait, str(ready), timeout=3)
        finally:
            watcher.join()
        took = time.monotonic() - started
        # As nsbox.call raises it: the function's name and the timeout, and no traceback of the zygote's.
        assert (caught.value.cmd, caught.value.timeout) == ("fork_and_wait()", 3)
        assert caught.value.__cause__ is None and caught.value.__context__ is None
        assert 3 <= took < 30, took
        assert len(seen) == 2, seen
        # Killed and reaped before the exception: nothing of the box is left on the host, not even a zombie.
        assert in_pid_namespace(ready.read_text()) == []
        assert boxes_of(zygote.pid) == [] and children_of(zygote.pid) == []
        # The zygote serves on: the same process answers the next call, from a fresh box.
        assert running(zygote.pid)
        assert zygote.call(os.getpid, timeout=30) == 1  # a call within its timeout returns (the control)


def test_a_bad_timeout_is_refused_before_anything_is_sent_and_fn_takes_its_own_with_partial(world_tmp: Path) -> None:
    with nsbox.Zygote([WORK], pid=True) as zygote:
        for bad in ("1", True, [1]):
            with pytest.raises(TypeError, match="timeout must be a number of seconds or None"):
                zygote.call(zygote_work.touch_then, str(world_tmp / "sent"), None, timeout=bad)
        assert not (world_tmp / "sent").exists()
        # A keyword of the function named timeout travels in a partial: here wait_for's own gives up at once.
        own = functools.partial(zygote_work.wait_for, timeout=0.01)
        with pytest.raises(TimeoutError, match="did not appear"):
            zygote.call(own, str(world_tmp / "never"))


KILLED_CALLER = """\
import json, os, sys, threading, time
sys.path.insert(0, sys.argv[1])
import nsbox
from helpers import zygote_work
from helpers.procs import children_of, proc_status

zygote = nsbox.Zygote(["helpers.zygote_work"], pid=True)
threading.Thread(target=zygote.call, args=(zygote_work.wait_for, sys.argv[2]), daemon=True).start()
deadline = time.monotonic() + 60
while not [c for c in children_of(zygote.pid) if proc_status(c)["NSpid"].endswith("\\t1")]:
    assert time.monotonic() < deadline, "no box"
    time.sleep(0.01)
boxes = children_of(zygote.pid)
forked = 0
if sys.argv[3] == "forked":
    forked = os.fork()  # a copy of the caller that holds the zygote's connections, and outlives it
    if forked == 0:
        time.sleep(120)
        os._exit(0)
print(json.dumps({"zygote": zygote.pid, "boxes": boxes, "forked": forked}), flush=True)
time.sleep(120)
"""


@pytest.mark.parametrize("copy", ["alone", "forked"])
def test_the_callers_death_ends_the_zygote_and_its_boxes(world_tmp: Path, copy: str) -> None:
    # "forked": a forked copy of the caller keeps the connection open; the zygote watches the caller itself.
    argv = [sys.executable, "-c", KILLED_CALLER, str(TESTS), str(world_tmp / "never"), copy]
    caller = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    seen: dict[str, Any] = {}
    try:
        assert caller.stdout is not None
        seen = json.loads(caller.stdout.readline())
        caller.kill()
        caller.wait()
        watched = [seen["zygote"], *seen["boxes"]]
        assert seen["boxes"] and wait_until(lambda: not any(running(pid) for pid in watched))
        if seen["forked"]:
            assert running(seen["forked"])  # the copy lived on meanwhile
    finally:
        caller.kill()
        caller.wait()
        assert caller.stdout is not None
        caller.stdout.close()
        for pid in [seen.get("forked", 0), seen.get("zygote", 0), *seen.get("boxes", [])]:
            if pid and running(pid):
                os.kill(pid, signal.SIGKILL)


# -- Threads, forks, sandbox -----------------------------------------------------------------------------------


def test_calls_from_several_threads_run_at_once(world_tmp: Path) -> None:
    with nsbox.Zygote([WORK], pid=True) as zygote, ThreadPoolExecutor(4) as pool:
        # Each call waits for its partner's file: they all finish only if they run at the same time.
        paths = [str(world_tmp / str(i)) for i in range(4)]
        pairs = [pool.submit(zygote.call, zygote_work.both_at_once, paths[i], paths[i ^ 1]) for i in range(4)]
        assert [p.result(timeout=60) for p in pairs] == paths
        many = [pool.submit(zygote.call, divmod, i, 7) for i in range(40)]
        assert [m.result(timeout=60) for m in many] == [divmod(i, 7) for i in range(40)]


def test_a_forked_copy_of_the_caller_cannot_use_its_zygote() -> None:
    with nsbox.Zygote() as zygote:
        with pytest.raises(RuntimeError, match="belongs to the process that made it"):
            nsbox.call(zygote.call, (os.getpid,))
        assert zygote.call(divmod, 7, 2) == (3, 1)


def test_a_sandboxed_box_has_none_of_the_zygotes_fds_and_returns_plain_data() -> None:
    with nsbox.Zygote([WORK], sandbox=True) as zygote:
        # Control: the zygote holds sockets (its connections) and a pidfd; the box keeps only its result pipe.
        held = [os.readlink(f"/proc/{zygote.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{zygote.pid}/fd")]
        assert any(target.startswith("socket:") for target in held)
        [pipe] = zygote.call(zygote_work.fd_targets)
        assert pipe.startswith("pipe:")
        assert zygote.call(os.getpid) == 1
        # What it returns is unpickled as plain data only, as nsbox.call's (the suite's own code is trusted).
        with pytest.raises(TypeError, match=r"cannot unpickle what point\(\) returned.*not helpers.zygote_work.Point"):
            zygote.call(zygote_work.point, 1)
        token = TRUSTED.set(True)
        try:
            assert zygote.call(zygote_work.point, 2).x == 2
        finally:
            TRUSTED.reset(token)
    with nsbox.Zygote([WORK]) as zygote:
        assert zygote.call(zygote_work.point, 3).x == 3  # without sandbox: any result


# -- Options ---------------------------------------------------------------------------------------------------


@pytest.mark.unit
def test_options_and_preload_are_checked_before_anything_starts() -> None:
    with pytest.raises(TypeError, match="pid must be True or False"):
        nsbox.Zygote(pid="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="unexpected keyword argument 'init'"):
        nsbox.Zygote(init=True)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="hostname is 100 bytes long"):
        nsbox.Zygote(hostname="x" * 100)
    with pytest.raises(ValueError, match=r"network: a Zygote's boxes cannot join an nsbox\.Network"):
        nsbox.Zygote(network=object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="preload must be a collection of module names"):
        nsbox.Zygote("numpy")
    with pytest.raises(TypeError, match="preload: modules are named by strings"):
        nsbox.Zygote([os])  # type: ignore[list-item]


# -- Rootless ----------------------------------------------------------------------------------------------------


ROOTLESS_SCRIPT = """\
import tempfile
from helpers import zygote_work

caller = zygote_work.ns_links()
with nsbox.Zygote(["helpers.zygote_work"], pid=True, net=True) as zygote:
    pid = zygote.pid
    zygote_ns = {k: os.readlink(f"/proc/{pid}/ns/{k}") for k in zygote_work.KINDS}
    seen = zygote.call(zygote_work.inside)
    fresh = [zygote.call(zygote_work.remember, i) for i in range(3)]
    ready = os.path.join(tempfile.mkdtemp(), "pid-namespace")
    try:
        zygote.call(zygote_work.fork_and_wait, ready, timeout=2)
    except subprocess.TimeoutExpired as e:
        timed_out = [e.cmd, e.timeout]
    link = open(ready).read()
    left = []
    for p in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.readlink(f"/proc/{p}/ns/pid") == link:
                left.append(p)
        except OSError:
            pass
    after_timeout = zygote.call(os.getpid)
with nsbox.Zygote(["helpers.zygote_work"], sandbox=True) as sandboxed:
    fds = sandboxed.call(zygote_work.fd_targets)
    try:
        sandboxed.call(zygote_work.point, 1)
        plain = None
    except TypeError as e:
        plain = str(e)
try:
    os.waitpid(-1, os.WNOHANG)
    children = True
except ChildProcessError:
    children = False
emit({"uid": os.getuid(), "caller": caller, "zygote": zygote_ns, "seen": seen, "fresh": fresh,
      "fds": fds, "plain": plain, "zygote_gone": not os.path.exists(f"/proc/{pid}"), "children": children,
      "timed_out": timed_out, "left": left, "after_timeout": after_timeout})
"""


def test_rootless_zygote_boxes_are_pid_1_and_root_in_fresh_namespaces(rootless: Rootless) -> None:
    out = rootless(ROOTLESS_SCRIPT)
    assert out["uid"] == NOBODY
    # A user namespace is added for the unprivileged caller, with its uid mapped to 0, as for nsbox.call.
    assert (out["seen"]["pid"], out["seen"]["uid"]) == (1, 0)
    assert out["zygote"] == out["caller"]
    for kind in ("pid", "net", "user"):
        assert out["seen"]["ns"][kind] not in (out["caller"][kind], out["zygote"][kind]), kind
    assert out["fresh"] == [[0], [1], [2]]
    assert [t.split(":")[0] for t in out["fds"]] == ["pipe"]
    assert "a sandboxed function returns plain data only, not helpers.zygote_work.Point" in out["plain"]
    assert out["zygote_gone"] and out["children"] is False
    # A call past its timeout: killed with its box (nothing in its PID namespace), and the zygote serves on.
    assert out["timed_out"] == ["fork_and_wait()", 2] and out["left"] == [] and out["after_timeout"] == 1


# -- The README --------------------------------------------------------------------------------------------------


def test_the_readme_example_returns_what_its_comments_say() -> None:
    readme = (TESTS.parent / "README.md").read_text()
    [example] = [b for b in re.findall(r"```python\n(.*?)```", readme, flags=re.S) if "nsbox.Zygote(" in b]
    # Each `zygote.call(...)   # value: explanation` line becomes an assertion on that value.
    claim = re.compile(r"^(\s+)(zygote\.call\(.*?\))\s+# (.+?)(?:[:;] .*)?$", flags=re.M)
    checked = claim.sub(lambda m: f"{m[1]}assert repr({m[2]}) == {m[3]!r}, repr({m[2]})", example)
    assert checked.count("assert repr(") == 3
    r = subprocess.run([sys.executable, "-c", checked], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
