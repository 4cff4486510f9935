"""Entering a running box: ``Popen.exec`` sees every namespace of the box and takes run's options, its root and
working directory; boxes that have exited or may not be entered are refused; many calls leave the caller as it was.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

import nsbox
from helpers.drivers import drive
from helpers.mounts import chroot_script, host_mounts
from helpers.namespaces import KINDS
from helpers.procs import children_of, kill_and_reap, open_fds, proc_comm, proc_state, start_box, started, wait_until
from helpers.rootless import ATTEMPTS, NOBODY, Rootless

_ALL_NAMESPACES: dict[str, Any] = {
    "pid": True,
    "mount": True,
    "uts": True,
    "ipc": True,
    "net": True,
    "cgroup": True,
    "time": True,
    "user": True,
    "hostname": "exec-box",
    "monotonic_offset": 1000,
    "boottime_offset": 50000,
}


#: Run by the box before it waits: an IPC queue, a loopback MTU and a tmpfs that only the box has.
_BOX_SETUP = (
    "ipcmk -Q >/dev/null && ip link set lo mtu 1234 && mount -t tmpfs nsbox-exec-tmpfs /mnt && "
    "echo ready && exec sleep 1000"
)


#: Run by `exec` inside: what the exec'd process sees.
_EXEC_PROBE = """
import json, os, re, socket, subprocess
links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
print(json.dumps({
    "hostname": socket.gethostname(),
    "queues": len(open("/proc/sysvipc/msg").read().splitlines()) - 1,
    "links": re.findall(r"^\\d+: ([^:@]+)[:@].* mtu (\\d+)", links, re.M),
    "tmpfs": sum(" - tmpfs nsbox-exec-tmpfs " in line for line in open("/proc/self/mountinfo")),
    "uid_map": open("/proc/self/uid_map").read().split(),
    "offsets": open("/proc/self/timens_offsets").read().split(),
    "uptime": float(open("/proc/uptime").read().split()[0]),
    "cgroup": open("/proc/self/cgroup").read().splitlines(),
    "ns": {kind: os.stat("/proc/self/ns/" + kind).st_ino for kind in os.listdir("/proc/self/ns")},
}))
"""


def _check_exec_sees_the_box(seen: dict[str, Any], box_ns: dict[str, int], boottime_before: float, uid: int) -> None:
    assert seen["hostname"] == "exec-box"
    assert seen["queues"] == 1
    assert seen["links"] == [["lo", "1234"]]
    assert seen["tmpfs"] == 1
    assert seen["uid_map"] == ["0", str(uid), "1"]
    assert seen["offsets"] == ["monotonic", "1000", "0", "boottime", "50000", "0"]
    assert seen["uptime"] >= boottime_before + 50000
    assert "0::/" in seen["cgroup"]
    assert set(seen["ns"]) == KINDS
    assert {kind: int(ino) for kind, ino in seen["ns"].items()} == box_ns


def test_exec_sees_the_hostname_ipc_interfaces_mounts_uid_map_and_clocks_of_the_box(python: str) -> None:
    boottime = time.clock_gettime(time.CLOCK_BOOTTIME)
    box = start_box(["sh", "-c", _BOX_SETUP], **_ALL_NAMESPACES)
    try:
        r = box.exec([python, "-c", _EXEC_PROBE], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        box_ns = box.namespaces()
        _check_exec_sees_the_box(json.loads(r.stdout), box_ns, boottime, os.geteuid())
        # Every kind is the box's own, none is the caller's.
        host = nsbox.namespaces()
        assert {kind for kind in KINDS if box_ns[kind] != host[kind]} == KINDS
    finally:
        kill_and_reap(box)


def test_rootless_exec_sees_every_namespace_of_its_own_box(rootless: Rootless) -> None:
    seen = rootless(
        f"""
        boottime = time.clock_gettime(time.CLOCK_BOOTTIME)
        box = nsbox.Popen(["sh", "-c", {_BOX_SETUP!r}], stdout=subprocess.PIPE, text=True, **{_ALL_NAMESPACES!r})
        try:
            ready = box.stdout.readline()
            r = box.exec([sys.executable, "-c", {_EXEC_PROBE!r}], capture_output=True, text=True)
            emit({{"ready": ready, "rc": r.returncode, "out": r.stdout, "err": r.stderr, "boottime": boottime,
                  "ns": box.namespaces()}})
        finally:
            box.kill()
            box.wait()
            box.stdout.close()
        """
    )
    assert seen["ready"] == "ready\n"
    assert seen["rc"] == 0, seen["err"]
    _check_exec_sees_the_box(json.loads(seen["out"]), seen["ns"], seen["boottime"], NOBODY)


def test_exec_takes_the_run_options(tmp_path: Path) -> None:
    box = nsbox.Popen(["sleep", "1000"], pid=True, mount_proc=True, cwd=tmp_path)
    try:
        r = box.exec(["cat"], input="fed to stdin", capture_output=True, text=True)
        assert (r.returncode, r.stdout, r.stderr) == (0, "fed to stdin", "")
        assert isinstance(r, subprocess.CompletedProcess) and r.args == ["cat"]
        assert box.exec(["env"], env={"ONLY": "this"}, capture_output=True, text=True).stdout == "ONLY=this\n"
        assert box.exec(["pwd"], capture_output=True, text=True).stdout == f"{tmp_path}\n"
        assert box.exec(["pwd"], cwd="/", capture_output=True, text=True).stdout == "/\n"
        assert box.exec(["sh", "-c", "exit 3"]).returncode == 3
        with pytest.raises(subprocess.CalledProcessError) as failed:
            box.exec(["sh", "-c", "echo out; exit 4"], check=True, capture_output=True)
        assert (failed.value.returncode, failed.value.stdout) == (4, b"out\n")
        with pytest.raises(subprocess.TimeoutExpired):
            box.exec(["sleep", "1000"], timeout=0.2)
        # The timed-out exec was killed and reaped; the box goes on, alone.
        assert box.poll() is None
        assert [(p.pid, p.command) for p in box.processes()] == [(1, "sleep 1000")]
        with box.exec_popen(["sh", "-c", "echo $$; cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE) as p:
            out, _ = p.communicate(b"piped")
        assert (p.returncode, out.split(b"\n", 1)[1]) == (0, b"piped")
        assert 1 < int(out.split(b"\n")[0]) < 50
    finally:
        kill_and_reap(box)


def test_exec_takes_the_root_and_working_directory_of_the_box(world_tmp: Path) -> None:
    root = world_tmp / "root"
    root.mkdir()
    then = "mkdir -p home/work && echo ready && exec chroot . sh -c 'cd /home/work && exec sleep 1000'"
    script = f"{chroot_script(root)} && {then}"
    box = start_box(["sh", "-c", script], pid=True, mount=True)
    try:
        started(box, "sleep")
        r = box.exec(["sh", "-c", "pwd; ls /"], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        cwd, *listing = r.stdout.splitlines()
        assert cwd == "/home/work"
        assert "BOX-ROOT" in listing and "root" not in listing
        assert os.listdir(root) == [], "the box's root is its own tmpfs; the host sees the empty directory"
    finally:
        kill_and_reap(box)


def test_exec_into_a_box_that_has_exited_raises_process_lookup_error() -> None:
    box = nsbox.Popen(["sh", "-c", "exit 3"], pid=True)
    assert wait_until(lambda: proc_state(box.pid) == "Z")  # exited, not yet reaped
    with pytest.raises(ProcessLookupError) as info:
        nsbox.enter(box.pid, ["true"])  # the zombie's namespaces are gone
    assert info.value.errno == errno.ESRCH
    assert f"cannot enter process {box.pid}: it does not exist or has exited" in str(info.value)
    for call in (
        lambda: box.exec(["true"]),
        lambda: box.exec_popen(["true"]),
        box.namespaces,
        box.processes,
        lambda: box.persist("/nonexistent/nsbox-never-made"),
    ):
        with pytest.raises(ProcessLookupError) as info:
            call()
        assert f"the box (host PID {box.pid}) has exited with status 3" in str(info.value)
    assert box.returncode == 3
    with pytest.raises(ProcessLookupError, match="does not exist or has exited"):
        nsbox.enter(box.pid, ["true"])
    assert not os.path.exists("/nonexistent/nsbox-never-made")
    box.close_pidfd()  # `info` holds this frame in a cycle: the collector would close it in a later test


def test_rootless_exec_into_a_process_it_may_not_enter_raises_permission_error(rootless: Rootless) -> None:
    root_box = nsbox.Popen(["sleep", "1000"], pid=True, net=True)
    try:
        seen = rootless(
            ATTEMPTS
            + f"""
attempt("init", lambda: nsbox.enter(1, ["true"]))
attempt("root-box", lambda: nsbox.enter({root_box.pid}, ["true"]))
emit_attempts()
"""
        )
    finally:
        kill_and_reap(root_box)
    for name, pid in [("init", 1), ("root-box", root_box.pid)]:
        assert seen[name] is not None, f"nobody entered {name}"
        kind, number, message = seen[name]
        assert (kind, number) == ("PermissionError", errno.EACCES), seen[name]
        assert f"process {pid}" in message
    assert seen["children"] is False


def test_many_exec_calls_leave_the_callers_fds_mounts_and_process_table_unchanged() -> None:
    box = nsbox.Popen(["sleep", "1000"], pid=True, mount_proc=True, user=True, net=True, time=True, hostname="many")
    try:
        box.exec(["true"], check=True)  # warm up: the helper that joins the time namespace is loaded once
        fds, mounts = open_fds(), host_mounts()
        for i in range(50):
            assert box.exec(["echo", str(i)], capture_output=True, text=True).stdout == f"{i}\n"
            with box.exec_popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE) as p:
                assert p.communicate(b"x")[0] == b"x"
            nsbox.enter(box.pid, ["true"], check=True)
            if i % 10 == 0:
                with pytest.raises(FileNotFoundError):
                    box.exec(["/nonexistent/program"])
                with pytest.raises(subprocess.TimeoutExpired):
                    box.exec(["sleep", "1000"], timeout=0.05)
        assert open_fds() == fds
        assert host_mounts() == mounts
        assert children_of(os.getpid()) == [box.pid]
        assert [(p.pid, p.command) for p in box.processes()] == [(1, "sleep 1000")]
    finally:
        kill_and_reap(box)


def test_rootless_many_exec_calls_leave_the_caller_unchanged(rootless: Rootless) -> None:
    seen = rootless(
        """
        def kids():
            found = []
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    if int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1]) == os.getpid():
                        found.append(int(pid))
                except OSError:
                    pass
            return found

        box = nsbox.Popen(["sleep", "1000"], pid=True, mount_proc=True, net=True, time=True)
        try:
            box.exec(["true"], check=True)
            fds, mounts = sorted(os.listdir("/proc/self/fd")), host_mounts()
            for i in range(30):
                box.exec(["echo", str(i)], capture_output=True, check=True)
                nsbox.enter(box.pid, ["true"], check=True)
                try:
                    box.exec(["/nonexistent/program"])
                except FileNotFoundError:
                    pass
            emit({"fds": sorted(os.listdir("/proc/self/fd")) == fds, "mounts": host_mounts() == mounts,
                  "children": kids(), "box": box.pid,
                  "inside": [p.pid for p in box.processes()]})
        finally:
            box.kill()
            box.wait()
        """
    )
    assert seen["fds"] and seen["mounts"]
    assert seen["children"] == [seen["box"]]
    assert seen["inside"] == [1]


#: A box whose root (a tmpfs of its own) has /proc replaced by a symlink to /elsewhere.
_PROC_IS_A_LINK = "ln -s /elsewhere proc && mkdir elsewhere && echo ready && exec chroot . sleep 1000"


def test_exec_into_a_box_whose_proc_is_a_symlink_follows_nothing(world_tmp: Path) -> None:
    root = world_tmp / "root"
    root.mkdir()
    box = start_box(["sh", "-c", f"{chroot_script(root)} && {_PROC_IS_A_LINK}"], pid=True, mount=True)
    try:
        assert wait_until(lambda: proc_comm(box.pid) == "sleep")
        with open(f"/proc/{box.pid}/mountinfo") as f:
            box_mounts = f.read()
        watched = host_mounts(world_tmp)
        for _ in range(3):
            r = box.exec(["sh", "-c", "ls -A /elsewhere; readlink /proc"], capture_output=True, text=True)
            assert (r.returncode, r.stdout) == (0, "/elsewhere\n"), r.stderr
        assert [(p.pid, p.command) for p in box.processes()] == [(1, "sleep 1000")]
        assert box.namespaces()["mnt"] != nsbox.namespaces()["mnt"]
        with open(f"/proc/{box.pid}/mountinfo") as f:
            assert f.read() == box_mounts, "exec mounted something in the box"
        assert host_mounts(world_tmp) == watched
    finally:
        kill_and_reap(box)


def test_rootless_exec_into_a_box_whose_proc_is_a_symlink_follows_nothing(rootless: Rootless, world_tmp: Path) -> None:
    root = world_tmp / "root"
    root.mkdir()
    seen = rootless(
        f"""
        box = nsbox.Popen(["sh", "-c", {chroot_script(root) + " && " + _PROC_IS_A_LINK!r}], pid=True, mount=True,
                          stdout=subprocess.PIPE, text=True)
        try:
            ready = box.stdout.readline()
            while open(f"/proc/{{box.pid}}/comm").read().strip() != "sleep":
                time.sleep(0.01)
            mounts = open(f"/proc/{{box.pid}}/mountinfo").read()
            r = box.exec(["sh", "-c", "ls -A /elsewhere; readlink /proc"], capture_output=True, text=True)
            emit({{"ready": ready, "rc": r.returncode, "out": r.stdout, "err": r.stderr,
                  "same": open(f"/proc/{{box.pid}}/mountinfo").read() == mounts}})
        finally:
            box.kill()
            box.wait()
            box.stdout.close()
        """
    )
    assert seen["ready"] == "ready\n"
    assert (seen["rc"], seen["out"]) == (0, "/elsewhere\n"), seen["err"]
    assert seen["same"]


EXEC_WHILE_FORKING = """
libc = ctypes.CDLL(None)
box = nsbox.Popen(["sleep", "600"], pid=True, time=True, boottime_offset=1000)
stop = threading.Event()
kept = []
def fork_and_keep():
    # Children that keep every fd they inherit (a copy of an exec's error pipe, at times) for a long time.
    while not stop.is_set():
        pid = os.fork()
        if pid == 0:
            libc.prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL: they go with this driver
            time.sleep(600)
            os._exit(0)
        kept.append(pid)
        time.sleep(0.001)
t = threading.Thread(target=fork_and_keep)
t.start()
uptimes = []
for _ in range(40):
    # Output to a file: a pipe's write end would be held by the forked children (as with subprocess).
    with open(sys.argv[1], "w+") as out:
        box.exec(["cat", "/proc/uptime"], stdout=out)
        out.seek(0)
        uptimes.append(float(out.read().split()[0]))
stop.set()
t.join()
for pid in kept:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
box.kill(); box.wait()
with open("/proc/uptime") as f:
    host = float(f.read().split()[0])
emit({"uptimes": uptimes, "host": host, "forks": len(kept)})
"""


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_exec_into_a_time_namespace_does_not_wait_for_processes_forked_meanwhile(tmp_path: Path) -> None:
    # On the old code an exec whose error pipe leaked into a forked child waited for that child (600 s):
    # the driver's deadline catches it.
    out = str(tmp_path / "uptime")
    report = drive(EXEC_WHILE_FORKING, out, timeout=90, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert report["forks"] > 0
    # Inside: every exec saw the box's boottime offset (the helper did join the time namespace).
    assert all(up > report["host"] + 900 - 60 for up in report["uptimes"]), report


def test_killing_a_box_with_an_unreaped_exec_popen_process_does_not_hang() -> None:
    # PID 1 cannot finish exiting while a process of its namespace is our unreaped child: wait() reaps it.
    box = nsbox.Popen(["sleep", "100"], pid=True)
    inside = box.exec_popen(["sleep", "100"])
    host_pid = inside.pid
    box.kill()
    assert box.wait(timeout=10) == -signal.SIGKILL
    assert inside.returncode == -signal.SIGKILL
    assert not os.path.exists(f"/proc/{host_pid}")
