"""nsbox.call: a Python function in a forked copy of the interpreter, inside new namespaces."""

from __future__ import annotations

import ctypes
import faulthandler
import json
import os
import pickle
import secrets
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import nsbox
from helpers.namespaces import NAMESPACES, OPTION_FOR, host_ns
from helpers.procs import children_of, settle, wait_until
from helpers.rootless import NOBODY, Rootless


def ns_links() -> dict[str, str]:
    return {n: host_ns(n) for n in NAMESPACES}


def fds() -> list[str]:
    settle()
    return sorted(os.listdir("/proc/self/fd"))  # with listdir's own fd, the same each time


@pytest.fixture(autouse=True)
def host_unaffected() -> Iterator[None]:
    """Every call leaves the host as it was: no child (not even for a moment), no new fd, the same
    hostname and namespaces."""
    before = (fds(), socket.gethostname(), ns_links())
    yield
    assert children_of(os.getpid()) == []
    assert (fds(), socket.gethostname(), ns_links()) == before


# -- The examples ----------------------------------------------------------------------------


def test_function_is_pid_1_of_a_new_pid_namespace() -> None:
    assert nsbox.call(os.getpid, pid=True) == 1
    inside = nsbox.call(ns_links, pid=True)
    assert inside["pid"] != ns_links()["pid"]


def test_hostname_is_set_inside_and_the_host_keeps_its_own() -> None:
    host = socket.gethostname()
    assert nsbox.call(socket.gethostname, hostname="box") == "box"
    assert socket.gethostname() == host


ROOTLESS_SCRIPT = """\
from pathlib import Path

def serve_on_port_80():
    server = socket.create_server(("127.0.0.1", 80))
    client = socket.create_connection(("127.0.0.1", 80))
    conn, _ = server.accept()
    client.sendall(b"ping")
    return {"got": conn.recv(4).decode(), "uid": os.getuid(), "gid": os.getgid()}

def error(**options):
    try:
        nsbox.call(int, **options)
    except OSError as exc:
        return [type(exc).__name__, exc.errno, str(exc)]

emit({
    "uid": os.getuid(),
    "port80": nsbox.call(serve_on_port_80, net=True),
    "pid": nsbox.call(os.getpid, pid=True, mount_proc=True),
    "proc": nsbox.call(lambda: sorted(p for p in os.listdir("/proc") if p.isdigit()), pid=True, mount_proc=True),
    "hostname": nsbox.call(socket.gethostname, hostname="rootless"),
    "uid_map": nsbox.call(lambda: Path("/proc/self/uid_map").read_text().split(), user=True),
    "setgroups": nsbox.call(lambda: Path("/proc/self/setgroups").read_text().strip(), user=True),
    "net_without_user": error(net=True, user=False),
    "pid_without_user": error(pid=True, user=False),
    "mount_proc_without_pid": error(mount_proc=True),
})
"""


def test_rootless_function_binds_port_80_and_is_pid_1(rootless: Rootless) -> None:
    seen = rootless(ROOTLESS_SCRIPT)
    assert seen["uid"] == NOBODY
    # A user namespace is added for the unprivileged caller, with its uid and gid mapped to 0.
    assert seen["port80"] == {"got": "ping", "uid": 0, "gid": 0}
    assert seen["pid"] == 1
    assert seen["proc"] == ["1"]
    assert seen["hostname"] == "rootless"
    assert seen["uid_map"] == ["0", str(NOBODY), "1"]
    assert seen["setgroups"] == "deny"
    # What cannot be made is an OSError naming the step, as with nsbox.run (the first child's failure,
    # before the PID-1 process exists, and the second's).
    name, errno, text = seen["net_without_user"]
    assert (name, errno) == ("PermissionError", 1) and "cannot create the network namespace" in text
    name, errno, text = seen["pid_without_user"]
    assert (name, errno) == ("PermissionError", 1) and "cannot create the PID namespace" in text
    name, errno, text = seen["mount_proc_without_pid"]
    assert (name, errno) == ("PermissionError", 1) and "cannot mount a new proc on '/proc'" in text
    assert "add pid=True" in text


# -- Namespaces: the same options and meaning as nsbox.run ----------------------------------------------


@pytest.mark.parametrize("ns", NAMESPACES)
def test_each_option_makes_exactly_that_namespace(ns: str) -> None:
    host = ns_links()
    inside = nsbox.call(ns_links, **{OPTION_FOR[ns]: True})
    assert {n for n in NAMESPACES if inside[n] != host[n]} == {ns}


def test_network_namespace_has_only_loopback_and_it_is_up() -> None:
    def talk() -> tuple[list[str], bytes]:
        server = socket.create_server(("127.0.0.1", 0))
        client = socket.create_connection(server.getsockname())
        conn, _ = server.accept()
        client.sendall(b"up")
        return [name for _, name in socket.if_nameindex()], conn.recv(2)

    assert nsbox.call(talk, net=True) == (["lo"], b"up")


def test_mount_proc_shows_only_the_box() -> None:
    def box_processes() -> list[str]:
        return sorted(p for p in os.listdir("/proc") if p.isdigit())

    assert nsbox.call(box_processes, pid=True, mount_proc=True) == ["1"]
    assert len(box_processes()) > 1  # the host's /proc is untouched


def test_mounts_stay_in_the_box(tmp_path: Path) -> None:
    def mount_tmpfs() -> str:
        subprocess.run(["mount", "-t", "tmpfs", "box", str(tmp_path)], check=True)
        (tmp_path / "inside").write_text("x")
        with open("/proc/self/mountinfo") as f:
            return f.read()

    mountinfo = nsbox.call(mount_tmpfs, mount=True)
    assert f" {tmp_path} " in mountinfo
    assert list(tmp_path.iterdir()) == []
    with open("/proc/self/mountinfo") as f:
        assert f" {tmp_path} " not in f.read()


@pytest.mark.parametrize("pid", [False, True])
def test_time_namespace_offsets_apply_to_the_function(pid: bool) -> None:
    day = 86400.0
    before = time.clock_gettime(time.CLOCK_BOOTTIME)
    boottime = nsbox.call(time.clock_gettime, (time.CLOCK_BOOTTIME,), time=True, boottime_offset=day, pid=pid)
    assert before + day <= boottime <= time.clock_gettime(time.CLOCK_BOOTTIME) + day
    before = time.monotonic()
    monotonic = nsbox.call(time.monotonic, time=True, monotonic_offset=-1.5, pid=pid)
    assert before - 1.5 <= monotonic <= time.monotonic() - 1.5


def test_user_namespace_maps_written_by_the_parent() -> None:
    # Ranges other than the caller's own id are written by the parent (root) while the child waits.
    def ids() -> tuple[str, ...]:
        return tuple(
            " ".join(Path(f"/proc/self/{name}").read_text().split()) for name in ("uid_map", "gid_map", "setgroups")
        )

    got = nsbox.call(ids, uid_map=[(0, 100000, 65536)], gid_map=[(0, 100000, 65536)], setgroups="allow")
    assert got == ("0 100000 65536", "0 100000 65536", "allow")
    got = nsbox.call(ids, pid=True, uid_map=[(0, 0, 1), (1, 200000, 10)], gid_map=[(0, 0, 1)])
    assert got == ("0 0 1 1 200000 10", "0 0 1", "deny")


def test_fork_hooks_run_around_the_fork() -> None:
    # PyOS_BeforeFork / AfterFork_Parent / AfterFork_Child run os.register_at_fork's callbacks: in a
    # fresh interpreter, so that the callbacks stay out of this test process.
    script = textwrap.dedent(
        """
        import os, threading, random, nsbox
        seen = []
        os.register_at_fork(before=lambda: seen.append("before"),
                            after_in_parent=lambda: seen.append("parent"),
                            after_in_child=lambda: seen.append("child"))
        stop = threading.Event()
        worker = threading.Thread(target=stop.wait)
        worker.start()
        state = random.getstate()
        inside = nsbox.call(lambda: (list(seen), threading.active_count(), random.random()), pid=True)
        random.setstate(state)
        stop.set(); worker.join()
        print(json.dumps([inside[0], seen, inside[1], inside[2] != random.random()]))
        """
    )
    r = subprocess.run([sys.executable, "-c", "import json\n" + script], capture_output=True, text=True, check=True)
    in_box, in_caller, threads, reseeded = json.loads(r.stdout)
    assert in_box == ["before", "child"]
    assert in_caller == ["before", "parent"]
    # In the box the other thread is gone, and random was reseeded (by its own after_in_child hook).
    assert (threads, reseeded) == (1, True)


def test_call_takes_the_namespace_options_of_run_but_init() -> None:
    from nsbox._options import CALL_OPTIONS, OPTIONS

    # Those of a box that runs a command, but what only a command can have (an init, a target to join,
    # namespaces to persist, an egress engine started while the command waits, a terminal of its own); `user` is a
    # parameter of both. A root and mounts it takes (issue 15).
    only_commands = {"init", "persist", "target", "egress", "publish", "dns", "allow", "tty"}
    assert CALL_OPTIONS == OPTIONS.keys() - only_commands


@pytest.mark.unit
def test_options_are_checked_before_forking() -> None:
    with pytest.raises(ValueError, match="hostname is 100 bytes long"):
        nsbox.call(int, hostname="x" * 100)
    with pytest.raises(TypeError, match="pid must be True or False"):
        nsbox.call(int, pid="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="unexpected keyword argument 'init'"):
        nsbox.call(int, init=True)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="fn must be callable"):
        nsbox.call(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="timeout must be a number"):
        nsbox.call(int, timeout="1")  # type: ignore[arg-type]


def test_a_step_that_fails_is_an_oserror_naming_it() -> None:
    # A user namespace does not own the host's PID namespace: proc cannot be mounted for it, even by root.
    with pytest.raises(PermissionError, match=r"cannot mount a new proc on '/proc': Operation not permitted"):
        nsbox.call(int, user=True, mount_proc=True)


# -- Results and exceptions -------------------------------------------------------------------------


def test_arguments_go_in_by_fork_and_the_result_comes_back_pickled() -> None:
    lock = threading.Lock()  # not picklable, and need not be: the box is a fork
    big = os.urandom(8 << 20)
    assert nsbox.call(lambda data, *, key: (len(data), lock.locked(), key), (big,), {"key": "k"}) == (
        len(big),
        False,
        "k",
    )
    assert nsbox.call(zlib.crc32, (big,), pid=True) == zlib.crc32(big)  # a large argument, by fork
    assert nsbox.call(bytes, (big,)) == big  # a large result, through the pipe
    assert nsbox.call(divmod, [7, 2], net=True) == (3, 1)
    assert nsbox.call(dict, kwargs={"a": 1}) == {"a": 1}
    assert nsbox.call(type(None)) is None


class CustomError(Exception):
    pass


def fails_deep_inside() -> None:
    def inner() -> None:
        raise CustomError("the message")

    inner()


def test_an_exception_is_reraised_with_its_type_message_and_remote_traceback() -> None:
    with pytest.raises(CustomError, match=r"^the message$") as info:
        nsbox.call(fails_deep_inside, pid=True)
    cause = info.value.__cause__
    assert isinstance(cause, nsbox.RemoteTraceback)
    text = str(cause)
    assert text.startswith("Traceback (most recent call last):")
    assert "in fails_deep_inside" in text and "in inner" in text and 'raise CustomError("the message")' in text
    assert text.rstrip().endswith("test_call.CustomError: the message")
    assert "_run_in_box" not in text  # nsbox's own frame is left out

    with pytest.raises(SystemExit) as exit_info:
        nsbox.call(sys.exit, (3,))
    assert exit_info.value.code == 3


class UnpicklableError(Exception):
    def __init__(self, a: int, b: int) -> None:  # pickles, but cannot be unpickled (args is one string)
        super().__init__(f"{a} and {b}")


def test_an_exception_that_cannot_travel_back_still_says_what_happened() -> None:
    def fail() -> None:
        raise UnpicklableError(1, 2)

    with pytest.raises(RuntimeError, match=r"fail\(\) raised test_call.UnpicklableError: 1 and 2") as info:
        nsbox.call(fail)
    assert isinstance(info.value.__cause__, nsbox.RemoteTraceback)
    assert "raise UnpicklableError(1, 2)" in str(info.value.__cause__)


def test_an_unpicklable_result_is_a_type_error_naming_the_function() -> None:
    def make_lock() -> threading.Lock:
        return threading.Lock()

    started = time.monotonic()
    with pytest.raises(TypeError, match=r"the result of .*make_lock\(\) cannot be pickled.*_thread.lock"):
        nsbox.call(make_lock, pid=True)
    assert time.monotonic() - started < 30  # no hang


def test_a_result_that_pickles_is_returned_even_if_the_function_forked() -> None:
    # Only the function's own process answers; the fork's copy returning os.fork's 0 leaves silently.
    child = nsbox.call(os.fork, pid=True)
    assert isinstance(child, int) and child > 1


# -- Ends: timeout, interrupt, crash, exit ------------------------------------------------------------


def sleep_with_a_helper(marker: str) -> None:
    subprocess.Popen(["sleep", marker])
    time.sleep(60)


def processes_running(argv: list[str]) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read().split(b"\0")[:-1] == [a.encode() for a in argv]:
                    found.append(int(pid))
        except OSError:
            pass
    return found


def test_timeout_kills_and_reaps_the_box_and_everything_in_it() -> None:
    # A marker no other process has (the system's randomness: pytest-randomly seeds `random` alike everywhere).
    marker = f"{os.getpid()}.{secrets.randbelow(10**9):09d}"
    started = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired) as info:
        nsbox.call(sleep_with_a_helper, (marker,), pid=True, timeout=0.5)
    assert 0.5 <= time.monotonic() - started < 30  # no hang
    assert info.value.timeout == 0.5 and "sleep_with_a_helper()" in str(info.value)
    # PID 1 was killed, and with it every process of its PID namespace.
    assert wait_until(lambda: not processes_running(["sleep", marker]))

    with pytest.raises(subprocess.TimeoutExpired):
        nsbox.call(time.sleep, (60,), timeout=0.2)


def test_keyboard_interrupt_kills_reaps_and_is_reraised() -> None:
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            nsbox.call(time.sleep, (60,), pid=True)
    finally:
        timer.join()
    assert time.monotonic() - started < 30  # not the 60 s of the sleep


def abort() -> None:
    faulthandler.disable()  # pytest's faulthandler would print a traceback from the box
    os.abort()


def segfault() -> None:
    faulthandler.disable()
    ctypes.string_at(0)


def test_a_crash_is_an_error_naming_the_signal() -> None:
    with pytest.raises(nsbox.BoxCrashed, match=r"abort\(\) did not return: .* was killed by SIGABRT") as info:
        nsbox.call(abort, net=True)
    assert isinstance(info.value, ChildProcessError)
    assert (info.value.returncode, info.value.signal) == (-signal.SIGABRT, signal.SIGABRT)

    with pytest.raises(nsbox.BoxCrashed, match="was killed by SIGSEGV") as info:
        nsbox.call(segfault, pid=True)
    assert info.value.signal == signal.SIGSEGV

    with pytest.raises(nsbox.BoxCrashed, match="exited with status 3") as info:
        nsbox.call(os._exit, (3,))
    assert (info.value.returncode, info.value.signal) == (3, None)


EXIT_SCRIPT = """\
import atexit, os, sys, nsbox
atexit.register(lambda: print("atexit in", "box" if os.getpid() == 1 else "caller"))
print("caller output", end=" ")          # buffered: stdout is a pipe
kept = open(sys.argv[1], "w")
kept.write("written once")                # buffered, not flushed before the call
print(nsbox.call(lambda: print("box output", end=" ") or 42, pid=True), end=" ")
kept.close()
"""


def test_the_box_exits_without_atexit_and_without_flushing_the_callers_buffers_again(tmp_path: Path) -> None:
    path = tmp_path / "file"
    r = subprocess.run([sys.executable, "-c", EXIT_SCRIPT, str(path)], capture_output=True, text=True, check=True)
    assert r.stdout == "caller output box output 42 atexit in caller\n"
    assert path.read_text() == "written once"


# -- Threads and nesting -------------------------------------------------------------------------------


def test_concurrent_calls_from_threads_while_other_threads_allocate() -> None:
    stop = threading.Event()

    def churn() -> None:
        while not stop.is_set():
            zlib.compress(os.urandom(1 << 16))  # mallocs and frees without the GIL

    def calls(options: dict[str, Any], out: list[Any]) -> None:
        out += [nsbox.call(lambda i=i: (os.getpid() == 1, i * i), timeout=30, **options) for i in range(25)]

    busy = [threading.Thread(target=churn) for _ in range(3)]
    option_sets: list[dict[str, Any]] = [{}, {"pid": True}, {"pid": True, "net": True}, {"user": True}]
    results: list[list[Any]] = [[] for _ in option_sets]
    callers = [threading.Thread(target=calls, args=(o, r)) for o, r in zip(option_sets, results, strict=True)]
    for t in busy + callers:
        t.start()
    for t in callers:
        t.join()
    stop.set()
    for t in busy:
        t.join()
    for options, result in zip(option_sets, results, strict=True):
        assert result == [(bool(options.get("pid")), i * i) for i in range(25)]


def test_nsbox_inside_a_box() -> None:
    def inner() -> tuple[int, int, int]:
        # The box is PID 1; so is a box it makes with pid=True: the spawner threads of this process must
        # not be taken for its own.
        first = nsbox.run(["true"], pid=True).returncode
        return first, nsbox.call(lambda: nsbox.run(["true"]).returncode, pid=True), nsbox.call(os.getpid, pid=True)

    nsbox.run(["true"])  # this process has spawner threads
    assert nsbox.call(inner, pid=True, timeout=30) == (0, 0, 1)


@pytest.mark.unit
def test_remote_traceback_pickles_and_shows_the_text() -> None:
    exc = nsbox.RemoteTraceback("Traceback ...\nValueError: x\n")
    again = pickle.loads(pickle.dumps(exc))
    assert str(again) == str(exc) == "Traceback ...\nValueError: x\n"
