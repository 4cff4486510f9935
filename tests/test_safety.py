"""What a box inherits, what happens around it (threads, interrupts, a dying caller), and what it leaves."""

from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import signal
import subprocess
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import nsbox
from helpers.mounts import host_mounts
from helpers.procs import children_of, fd_count, kill_and_reap, kill_pid, proc_comm, proc_state, wait_until
from helpers.rootless import Rootless

# ---------------------------------------------------------------------------------------------------------------
# What the command inherits


def _status_masks(text: str) -> dict[str, int]:
    return {
        line.split(":")[0]: int(line.split()[1], 16)
        for line in text.splitlines()
        if line.startswith(("SigBlk", "SigIgn", "SigCgt"))
    }


@pytest.mark.parametrize("options", [{}, {"pid": True}, {"user": True, "net": True, "time": True}])
def test_signal_dispositions_and_mask_are_reset_for_the_command(options: dict[str, bool]) -> None:
    usr1, usr2 = signal.SIGUSR1, signal.SIGUSR2
    old_handler = signal.signal(usr1, signal.SIG_IGN)
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {usr2})
    try:
        with open("/proc/thread-self/status") as f:
            caller = _status_masks(f.read())
        assert caller["SigIgn"] & (1 << (usr1 - 1)), "control: SIGUSR1 is ignored in the caller"
        assert caller["SigBlk"] & (1 << (usr2 - 1)), "control: SIGUSR2 is blocked in the caller"
        r = nsbox.run(["cat", "/proc/self/status"], capture_output=True, text=True, check=True, **options)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        signal.signal(usr1, old_handler)
    assert _status_masks(r.stdout) == {"SigBlk": 0, "SigIgn": 0, "SigCgt": 0}


# ---------------------------------------------------------------------------------------------------------------
# Threads


def test_spawning_works_while_other_python_threads_run_and_allocate() -> None:
    stop = threading.Event()
    allocated = [0, 0, 0]

    def churn(slot: int) -> None:
        while not stop.is_set():
            junk = [{"n": i, "s": str(i) * 10} for i in range(2000)]
            allocated[slot] += len(junk)
            time.sleep(0.0005)  # let the spawning thread have the GIL now and then

    threads = [threading.Thread(target=churn, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    try:
        for i in range(60):
            r = nsbox.run(["echo", str(i)], pid=True, capture_output=True, text=True)
            assert (r.returncode, r.stdout) == (0, f"{i}\n")
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert all(allocated), "the allocating threads did not run"


def test_concurrent_spawns_from_several_threads() -> None:
    results: dict[int, list[str]] = {}
    errors: list[BaseException] = []

    def spawn_many(n: int) -> None:
        try:
            results[n] = [
                nsbox.run(["sh", "-c", f"echo {n}-{i}"], pid=True, net=True, capture_output=True, text=True).stdout
                for i in range(20)
            ]
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=spawn_many, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert results == {n: [f"{n}-{i}\n" for i in range(20)] for n in range(4)}


def test_other_threads_run_while_a_box_is_waited_for() -> None:
    # The box waits for a line that another thread writes once it has run 10 times while run() waits (the
    # box is up and blocked until then): if run() held the GIL while it waits, that thread could not run.
    read, write = os.pipe()
    ticks = 0

    def tick() -> None:
        nonlocal ticks
        with os.fdopen(write, "w") as pipe:
            if wait_until(lambda: any(proc_comm(c) == "sh" for c in children_of(os.getpid())), timeout=60):
                while ticks < 10:
                    ticks += 1
                    time.sleep(0.01)
            pipe.write("done\n")

    t = threading.Thread(target=tick)
    t.start()
    try:
        r = nsbox.run(["sh", "-c", "read line && echo $line"], pid=True, stdin=read, capture_output=True, timeout=60)
    finally:
        os.close(read)
        t.join()
    assert (r.returncode, r.stdout, ticks) == (0, b"done\n", 10)


def test_box_started_from_a_short_lived_thread_outlives_that_thread() -> None:
    boxes: list[subprocess.Popen[bytes]] = []
    t = threading.Thread(target=lambda: boxes.append(nsbox.Popen(["sleep", "1000"], pid=True)))
    t.start()
    t.join()
    assert not t.is_alive()
    (box,) = boxes
    try:
        time.sleep(0.5)
        assert box.poll() is None, "the box died with the thread that started it"
        assert proc_comm(box.pid) == "sleep"
    finally:
        kill_and_reap(box)
    assert box.returncode == -signal.SIGKILL


# ---------------------------------------------------------------------------------------------------------------
# A dying caller

PR_SET_CHILD_SUBREAPER = 36

_START_BOX_AND_WAIT = textwrap.dedent(
    """
    import json, sys, time, nsbox
    p = nsbox.Popen(["sleep", "1000"], **json.loads(sys.argv[1]))
    print(p.pid, flush=True)
    time.sleep(1000)
    """
)


def _set_child_subreaper(on: bool) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


@pytest.mark.parametrize("options", [{"pid": True}, {"pid": True, "user": True, "net": True}, {}])
def test_box_dies_when_the_calling_process_dies(python: str, options: dict[str, bool]) -> None:
    # We become the subreaper, so the orphaned box is reparented to us and we see how it ended.
    _set_child_subreaper(True)
    helper = subprocess.Popen(
        [python, "-c", _START_BOX_AND_WAIT, json.dumps(options)], stdout=subprocess.PIPE, text=True
    )
    box = None
    status = None
    try:
        assert helper.stdout is not None
        box = int(helper.stdout.readline())
        assert wait_until(lambda: proc_comm(box) == "sleep")
        helper.kill()
        helper.wait(timeout=10)

        def reaped() -> bool:
            nonlocal status
            pid, st = os.waitpid(box, os.WNOHANG)
            if pid:
                status = st
            return pid != 0

        assert wait_until(reaped, timeout=5), "the box outlived its caller"
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        assert proc_state(box) is None
    finally:
        _set_child_subreaper(False)
        if box is not None and status is None:
            kill_pid(box)
            try:
                os.waitpid(box, 0)
            except ChildProcessError:
                pass
        kill_and_reap(helper)


def test_rootless_box_dies_when_the_calling_process_dies(rootless: Rootless) -> None:
    seen = rootless(
        f"""
        helper = subprocess.Popen([sys.executable, "-c", {_START_BOX_AND_WAIT!r}, '{{"pid": true, "net": true}}'],
                                  stdout=subprocess.PIPE, text=True)
        box = int(helper.stdout.readline())

        def comm():
            try:
                return open(f"/proc/{{box}}/comm").read().strip()
            except OSError:
                return None

        def state():
            try:
                return open(f"/proc/{{box}}/stat").read().rsplit(")", 1)[1].split()[0]
            except OSError:
                return None

        def poll(predicate):
            deadline = time.monotonic() + 5
            while not predicate() and time.monotonic() < deadline:
                time.sleep(0.02)

        try:
            poll(lambda: comm() == "sleep")
            before = comm()
            helper.kill()
            helper.wait()
            helper.stdout.close()
            poll(lambda: state() in (None, "Z"))
            emit({{"box": box, "before": before, "after": state()}})
        finally:
            if comm() == "sleep" and state() not in (None, "Z"):
                os.kill(box, 9)
        """
    )
    assert seen["before"] == "sleep"
    # Gone, or dead and waiting for the host's init to reap it.
    assert seen["after"] in (None, "Z"), f"the rootless box {seen['box']} outlived its caller"


# ---------------------------------------------------------------------------------------------------------------
# KeyboardInterrupt


@pytest.mark.parametrize("kwargs", [{}, {"capture_output": True}, {"input": b"x", "stdout": subprocess.PIPE}])
def test_keyboard_interrupt_while_run_waits_kills_and_reaps_the_box(kwargs: dict[str, Any]) -> None:
    main = threading.main_thread().ident
    assert main is not None and threading.get_ident() == main
    found: list[int] = []

    def interrupt_when_box_runs() -> None:
        def box_running() -> bool:
            found[:] = [c for c in children_of(os.getpid()) if proc_comm(c) == "sleep"]
            return bool(found)

        if wait_until(box_running, timeout=10):
            time.sleep(0.1)
        signal.pthread_kill(main, signal.SIGINT)

    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Thread(target=interrupt_when_box_runs)
    start = time.monotonic()
    try:
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            nsbox.run(["sleep", "1000"], pid=True, **kwargs)
    finally:
        timer.join()
        signal.signal(signal.SIGINT, old)
    assert found, "the box never started"
    assert time.monotonic() - start < 10
    (box,) = found
    assert proc_state(box) is None, f"the box is still there: state {proc_state(box)}"
    assert children_of(os.getpid()) == []
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)


# ---------------------------------------------------------------------------------------------------------------
# What many runs leave behind

_MIX: list[dict[str, Any]] = [
    {},
    {"pid": True, "mount_proc": True},
    {"net": True, "ipc": True},
    {"user": True, "cgroup": True},
    {"hostname": "many", "time": True, "monotonic_offset": 10},
    {"mount": True, "propagation": "slave"},
    {"uid_map": [(0, 100000, 65536)], "gid_map": [(0, 100000, 65536)]},
]


def test_no_fd_growth_zombies_or_mounts_after_many_runs() -> None:
    nsbox.run(["true"], pid=True)  # warm up: the spawner thread and its stack exist from here on
    fds_before = fd_count()
    mounts_before = host_mounts()
    for i in range(200):
        options = _MIX[i % len(_MIX)]
        r = nsbox.run(["echo", str(i)], capture_output=True, text=True, **options)
        assert (r.returncode, r.stdout) == (0, f"{i}\n"), (options, r.stderr)
        if i % 10 == 0:
            with pytest.raises(FileNotFoundError):
                nsbox.run(["/nonexistent/program"], capture_output=True, **options)
    for _ in range(20):
        nsbox.run(["sh", "-c", "mount -t tmpfs nsbox-many /mnt"], mount=True, check=True)
    assert fd_count() == fds_before
    assert host_mounts() == mounts_before
    assert children_of(os.getpid()) == []


def test_spawn_works_in_a_forked_child_of_a_process_that_spawned_before(python: str) -> None:
    # The spawner threads do not survive fork(); the child must make its own.
    code = textwrap.dedent(
        """
        import os, nsbox
        nsbox.run(["true"], pid=True)
        pid = os.fork()
        if pid == 0:
            r = nsbox.run(["echo", "from-child"], pid=True, capture_output=True)
            os._exit(0 if r.stdout == b"from-child\\n" else 3)
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status))
        """
    )
    # Python 3.12+ warns about fork() in a process with threads (nsbox's spawner thread is one).
    r = subprocess.run(
        [python, "-W", "ignore::DeprecationWarning", "-c", code], capture_output=True, text=True, timeout=30
    )
    assert (r.returncode, r.stdout, r.stderr) == (0, "0\n", "")


# ---------------------------------------------------------------------------------------------------------------
# How the box is spawned


def test_spawn_is_a_single_vfork_style_clone_into_the_namespaces(python: str, tmp_path: Path) -> None:
    strace = shutil.which("strace")
    assert strace, "strace is needed for this test: apt-get install strace"
    # -ff: one file per thread, so a call interrupted by another thread's is never split in two lines.
    code = "import nsbox; nsbox.run(['true'], pid=True, net=True)"
    trace = str(tmp_path / "trace")
    subprocess.run(
        [strace, "-ff", "-qq", "-o", trace, "-e", "trace=clone,clone3,fork,vfork", python, "-c", code],
        check=True,
        timeout=60,
    )
    lines = [line for f in sorted(tmp_path.glob("trace.*")) for line in f.read_text().splitlines()]
    calls = [line for line in lines if "CLONE_NEWPID" in line]
    assert len(calls) == 1, lines
    (call,) = calls
    match = re.search(r"flags=([A-Z0-9_|]+)", call)
    assert match, call
    flags = set(match.group(1).split("|"))
    assert {"CLONE_VM", "CLONE_VFORK", "CLONE_NEWPID", "CLONE_NEWNET"} <= flags, call
    # Nothing else in the process forked (a CLONE_VM|CLONE_THREAD spawner thread is not a fork).
    forks = [line for line in lines if ("clone" in line or "fork" in line) and "CLONE_VM" not in line]
    assert forks == [], forks
