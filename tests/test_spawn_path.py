"""The short path of a plain box: spawned from the main thread itself, `nsbox.run` without the Popen layer, options
prepared once.

The main thread clones the box itself (no hand-off to a spawner thread) with every signal blocked around the clone;
`nsbox.run` of a box with nothing of Popen's own (pipes, input, a timeout, a terminal, a network ...) calls the core
and waits; options that are plain values are converted and resolved once. Each must be invisible: the same box, the
same results and errors, the caller's signal handlers and mask untouched.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import nsbox
from helpers.drivers import drive
from helpers.procs import children_of

# ---------------------------------------------------------------------------------------------------------------
# Spawning from the main thread


def test_the_main_thread_spawns_without_a_spawner_thread_and_other_threads_with_one() -> None:
    report = drive(
        """
        assert threading.current_thread() is threading.main_thread()
        nsbox.run(["true"], pid=True, mount_proc=True)
        from_main = spawner_threads()
        t = threading.Thread(target=nsbox.run, args=(["true"],), kwargs={"pid": True})
        t.start()
        t.join()
        emit({"from_main": from_main, "from_thread": spawner_threads()})
        """
    )
    assert report == {"from_main": 0, "from_thread": 1}  # the control: another thread's spawn takes one


@pytest.mark.parametrize("program", ["true", "/nonexistent/program"])
def test_the_main_threads_signal_mask_is_put_back_after_a_spawn(program: str) -> None:
    assert threading.current_thread() is threading.main_thread()
    before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})
    try:
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, set())
        assert blocked == before | {signal.SIGUSR2}  # control: the mask can be seen to change
        try:
            nsbox.run([program], pid=True)
        except FileNotFoundError:
            assert program.startswith("/nonexistent")
        assert signal.pthread_sigmask(signal.SIG_BLOCK, set()) == blocked
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


@pytest.mark.parametrize("options", [{}, {"pid": True, "mount_proc": True}])
def test_a_signal_that_reaches_a_box_before_its_exec_never_runs_the_callers_handler(options: dict[str, Any]) -> None:
    # The child shares the caller's memory until its exec: a Python handler run there would mark the signal as
    # pending in the caller, whose handler would then run here. A thread signals every child of the main thread
    # as soon as it appears; a child still named like the caller after the signal was signalled before its exec.
    assert threading.current_thread() is threading.main_thread()
    calls: list[int] = []
    me = os.getpid()
    stop = threading.Event()
    before_exec = []

    def signal_children() -> None:
        while not stop.is_set():
            with open(f"/proc/{me}/task/{me}/children") as f:
                pids = [int(p) for p in f.read().split()]
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGUSR1)
                    with open(f"/proc/{pid}/comm") as f:
                        if f.read().strip() != "true":
                            before_exec.append(pid)
                except OSError:
                    pass  # gone already
            time.sleep(0)

    old = signal.signal(signal.SIGUSR1, lambda *_: calls.append(1))
    codes = set()
    try:
        os.kill(me, signal.SIGUSR1)  # control: the handler runs for a signal to the caller
        assert calls == [1]
        calls.clear()
        watcher = threading.Thread(target=signal_children)
        watcher.start()
        try:
            deadline = time.monotonic() + 30
            while len(set(before_exec)) < 3 and time.monotonic() < deadline:
                codes.add(nsbox.run(["true"], **options).returncode)
        finally:
            stop.set()
            watcher.join()
    finally:
        signal.signal(signal.SIGUSR1, old)
    assert before_exec, "no box was signalled before its exec"
    assert calls == []
    # Killed by it (with its default disposition), or, as PID 1 of its namespace, not.
    assert codes <= {0, -signal.SIGUSR1}
    assert children_of(me) == []


# ---------------------------------------------------------------------------------------------------------------
# nsbox.run without the Popen layer: the same results and errors


def _both(args: Any, **kwargs: Any) -> list[Any]:
    """``nsbox.run``'s outcome on the short path and through Popen (``stdin=None`` asks for nothing, but is Popen's)."""
    outcomes = []
    for extra in ({}, {"stdin": None}):
        try:
            r = nsbox.run(args, **kwargs, **extra)
            outcomes.append((type(r), r.args, r.returncode, r.stdout, r.stderr))
        except (OSError, subprocess.CalledProcessError) as e:
            outcomes.append((type(e), str(e), getattr(e, "filename", None), getattr(e, "errno", None)))
    return outcomes


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        (["true"], {"pid": True, "mount_proc": True}),
        (["sh", "-c", "exit 3"], {"pid": True}),
        (["sh", "-c", "kill -9 $$"], {}),
        ("false", {"user": False}),
        (Path("/bin/true"), {"net": True}),
        (["false"], {"pid": True, "check": True}),
        (["/nonexistent/program"], {"pid": True}),
        (["no-such-program-anywhere"], {}),
        (["true"], {"mounts": [nsbox.Tmpfs("/mnt")]}),
    ],
)
def test_the_short_path_gives_what_popen_gives(args: Any, kwargs: dict[str, Any]) -> None:
    short, through_popen = _both(args, **kwargs)
    assert short == through_popen


def test_the_short_path_raises_the_audit_event_of_a_popen() -> None:
    events = []
    hook_on = [True]

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == "subprocess.Popen" and hook_on[0]:
            events.append(args)

    sys.addaudithook(hook)  # cannot be removed: switched off below
    try:
        nsbox.run(["true"], pid=True)
        nsbox.run(["true"], pid=True, stdin=None)  # control: through Popen
    finally:
        hook_on[0] = False
    assert events == [("true", ["true"], None, None)] * 2


def test_the_short_path_reports_0_for_a_box_reaped_behind_its_back() -> None:
    old = signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps children at once
    try:
        assert nsbox.run(["sh", "-c", "exit 5"], pid=True).returncode == 0
        assert nsbox.run(["sh", "-c", "exit 5"], pid=True, stdin=None).returncode == 0  # control: as subprocess
    finally:
        signal.signal(signal.SIGCHLD, old)
    assert nsbox.run(["sh", "-c", "exit 5"], pid=True).returncode == 5  # control: 5 once the box is ours to reap


# ---------------------------------------------------------------------------------------------------------------
# Options prepared once


def test_a_value_equal_to_a_kept_one_but_of_another_type_is_still_refused() -> None:
    assert nsbox.run(["true"], pid=True).returncode == 0
    with pytest.raises(TypeError, match="pid must be True or False"):
        nsbox.run(["true"], pid=1)  # == True, and hashes alike
    with pytest.raises(TypeError, match="user must be"):
        nsbox.Popen(["true"], user=1.0, pid=True)  # type: ignore[arg-type]


def test_kept_options_follow_a_change_of_the_callers_ids() -> None:
    # As root, pid=True makes no user namespace; with the effective ids of uid 65534 the same options need one.
    report = drive(
        """
        from nsbox._options import prepare
        before = [prepare({"pid": True}, None).spec.namespaces for _ in range(2)]
        os.setegid(65534)
        os.seteuid(65534)
        after = prepare({"pid": True}, None).spec.namespaces
        emit({"before": before, "after": after})
        """
    )
    assert report["before"] == [["pid"], ["pid"]]  # control: kept, as root
    assert report["after"] == ["user", "pid"]


def test_a_kept_relative_root_follows_the_working_directory(tmp_path: Path) -> None:
    (tmp_path / "a" / "box").mkdir(parents=True)
    here = os.getcwd()
    try:
        os.chdir(tmp_path / "a")
        with pytest.raises(FileNotFoundError) as found:
            nsbox.run(["true"], root="box")  # made and kept: an empty root, with no program in it
        assert "root directory" not in str(found.value)  # control: the root was there
        os.chdir(tmp_path)
        with pytest.raises(FileNotFoundError, match="root directory") as missing:
            nsbox.run(["true"], root="box")  # the same options: resolved here, not the kept a/box
        assert str(tmp_path / "box") in str(missing.value)
    finally:
        os.chdir(here)


@pytest.mark.parametrize("capture", [False, True], ids=["short-path", "popen"])
def test_options_with_text_work_from_a_removed_working_directory(tmp_path: Path, capture: bool) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    here = os.getcwd()
    try:
        os.chdir(gone)
        gone.rmdir()
        assert subprocess.run(["true"], check=True).returncode == 0  # control: subprocess starts from here
        # A plain str option (no path in it) must not need the working directory.
        result = nsbox.run(
            ["sh", "-c", 'test "$(hostname)" = box && echo in-box'],
            hostname="box",
            propagation="private",
            mount=True,
            check=True,
            capture_output=capture,
            text=True,
        )
        assert result.returncode == 0
        if capture:
            assert result.stdout == "in-box\n"
    finally:
        os.chdir(here)


def test_a_root_gone_since_it_was_kept_is_refused_before_anything_is_forked(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(FileNotFoundError) as empty:
        nsbox.run(["/nothing-here"], root=str(root))  # control: the root was there (the program is not)
    assert "root directory" not in str(empty.value)
    root.rmdir()
    with pytest.raises(FileNotFoundError, match="root directory: No such file") as missing:
        nsbox.run(["/nothing-here"], root=str(root))  # the same options: checked again
    assert missing.value.filename == str(root)
    assert getattr(missing.value, "step", None) is None  # from the check, not from a forked child's mount
    root.write_text("")
    with pytest.raises(NotADirectoryError, match="root directory is not a directory"):
        nsbox.run(["/nothing-here"], root=str(root))
