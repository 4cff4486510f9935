"""Boxes watched from the host and entered: exec, PID translation, namespace ids, init, persistence, reprs.

The views of `docker exec <id> ps -ef` (inside) and `ps -ef` on the host, one call each, for boxes started with
``nsbox.Popen``; root and rootless (the unprivileged user entering its own box).
"""

from __future__ import annotations

import dataclasses
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
from helpers.mounts import chroot_script, host_mounts
from helpers.procs import (
    children_of,
    kill_and_reap,
    kill_pid,
    open_fds,
    proc_comm,
    proc_state,
    proc_status,
    start_box,
    wait_until,
)
from helpers.rootless import ATTEMPTS, NOBODY, Rootless

KINDS = {"cgroup", "ipc", "mnt", "net", "pid", "pid_for_children", "time", "time_for_children", "user", "uts"}


def _ps_ef(text: str) -> list[tuple[int, int, str]]:
    """(PID, PPID, CMD) of each row of ``ps -ef``."""
    rows = []
    for line in text.splitlines()[1:]:
        fields = line.split(None, 7)
        rows.append((int(fields[1]), int(fields[2]), fields[7]))
    return rows


def _started(box: subprocess.Popen[Any], comm: str) -> None:
    """Waits until the box's first process runs ``comm`` (the kernel renames it just after exec)."""
    assert wait_until(lambda: proc_comm(box.pid) == comm), f"the box runs {proc_comm(box.pid)!r}, not {comm!r}"


# ---------------------------------------------------------------------------------------------------------------
# Both views of ps -ef


def _check_two_views(ps: str, processes: list[dict[str, Any]], nspid: list[int], box_pid: int, caller: int) -> None:
    rows = _ps_ef(ps)
    # Inside: sleep is PID 1; ps, forked after setns, has another small PID and a parent outside the box.
    assert rows[0] == (1, 0, "sleep 1000"), ps
    assert len(rows) == 2, ps
    ps_pid, ps_ppid, ps_cmd = rows[1]
    assert (ps_ppid, ps_cmd) == (0, "ps -ef") and 1 < ps_pid < 10, ps
    # Host: the same sleep, with its host PID and the caller as its parent; ps has gone.
    assert processes == [{"host_pid": box_pid, "host_ppid": caller, "pid": 1, "ppid": 0, "command": "sleep 1000"}]
    assert nspid == [box_pid, 1]


def test_exec_ps_shows_sleep_as_pid_1_and_processes_shows_it_with_its_host_pid() -> None:
    box = nsbox.Popen(["sleep", "1000"], pid=True, mount_proc=True)
    try:
        _started(box, "sleep")
        r = box.exec(["ps", "-ef"], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        processes = [dataclasses.asdict(p) for p in box.processes()]
        _check_two_views(r.stdout, processes, nsbox.nspid(box.pid), box.pid, os.getpid())
    finally:
        kill_and_reap(box)


def test_processes_and_ps_inside_list_the_same_processes_while_an_exec_runs() -> None:
    box = nsbox.Popen(["sleep", "1000"], pid=True, mount_proc=True)
    try:
        _started(box, "sleep")
        script = "ps -e -o pid=,ppid=,args=; read line || :"
        with box.exec_popen(["sh", "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as sh:
            assert isinstance(sh, nsbox.Popen) and sh.stdout is not None and sh.stdin is not None
            inside = [tuple(sh.stdout.readline().split(None, 2)) for _ in range(3)]
            host = box.processes()
            sh_nspid = nsbox.nspid(sh.pid)
            sh.stdin.close()
            assert sh.wait(timeout=10) == 0
        sh_pid = int(inside[1][0])
        assert inside == [
            ("1", "0", "sleep 1000\n"),
            (str(sh_pid), "0", "sh -c ps -e -o pid=,ppid=,args=; read line || :\n"),
            (inside[2][0], str(sh_pid), "ps -e -o pid=,ppid=,args=\n"),
        ]
        # The host's view of the same moment (ps itself may have gone by then).
        assert [(p.pid, p.ppid, p.command) for p in host][:2] == [
            (1, 0, "sleep 1000"),
            (sh_pid, 0, "sh -c ps -e -o pid=,ppid=,args=; read line || :"),
        ]
        assert [(p.host_pid, p.host_ppid) for p in host][:2] == [(box.pid, os.getpid()), (sh.pid, os.getpid())]
        assert sh_nspid == [sh.pid, sh_pid]
        assert box.host_pid(1) == box.pid and box.inner_pid(box.pid) == 1
    finally:
        kill_and_reap(box)


def test_shell_as_pid_1_is_the_parent_of_its_background_sleep_inside_and_on_the_host() -> None:
    # The article's second experiment: `unshare --pid --fork --mount-proc bash`, then `sleep 1024 &`.
    box = start_box(["sh", "-c", "sleep 1024 & echo started; wait"], "started\n", pid=True, mount_proc=True)
    try:
        assert wait_until(lambda: any(p.command == "sleep 1024" for p in box.processes()))
        r = box.exec(["ps", "-efww"], capture_output=True, text=True, check=True)
        inside = {cmd: (pid, ppid) for pid, ppid, cmd in _ps_ef(r.stdout)}
        assert inside["sh -c sleep 1024 & echo started; wait"] == (1, 0)
        sleep_pid, sleep_ppid = inside["sleep 1024"]
        assert sleep_ppid == 1
        (sleep,) = [p for p in box.processes() if p.command == "sleep 1024"]
        assert (sleep.pid, sleep.ppid) == (sleep_pid, 1)
        assert sleep.host_ppid == box.pid != 1
        assert proc_status(sleep.host_pid)["PPid"] == str(box.pid)
        assert box.host_pid(sleep_pid) == sleep.host_pid
        assert box.inner_pid(sleep.host_pid) == sleep_pid
        assert nsbox.nspid(sleep.host_pid) == [sleep.host_pid, sleep_pid]
    finally:
        kill_and_reap(box)


def test_pid_translation_of_a_process_outside_the_box_raises_process_lookup_error() -> None:
    box = nsbox.Popen(["sleep", "1000"], pid=True)
    try:
        with pytest.raises(ProcessLookupError, match="not in the box"):
            box.inner_pid(os.getpid())
        with pytest.raises(ProcessLookupError, match="no process has PID 2"):
            box.host_pid(2)
    finally:
        kill_and_reap(box)


def test_processes_of_a_box_without_pid_namespace_are_its_command_and_descendants() -> None:
    box = start_box(["sh", "-c", "sleep 1000 & echo started; wait"], "started\n", net=True)
    try:
        # Until the background child has exec'd sleep, it is a copy of sh.
        assert wait_until(lambda: [p.command for p in box.processes()][1:] == ["sleep 1000"])
        sh, sleep = box.processes()
        assert (sh.host_pid, sh.pid, sh.host_ppid) == (box.pid, box.pid, os.getpid())
        assert (sleep.command, sleep.host_ppid, sleep.ppid) == ("sleep 1000", box.pid, box.pid)
        assert sleep.pid == sleep.host_pid
        assert nsbox.nspid(box.pid) == [box.pid]
    finally:
        leftover = [p.host_pid for p in box.processes()[1:]] if box.poll() is None else []
        kill_and_reap(box)
        for pid in leftover:  # without a PID namespace, the background sleep would outlive sh
            kill_pid(pid)


def test_rootless_exec_ps_and_processes_show_both_views(rootless: Rootless) -> None:
    seen = rootless(
        """
        import dataclasses
        box = nsbox.Popen(["sleep", "1000"], pid=True, mount_proc=True)
        try:
            while open(f"/proc/{box.pid}/comm").read().strip() != "sleep":
                time.sleep(0.01)
            r = box.exec(["ps", "-ef"], capture_output=True, text=True)
            emit({"rc": r.returncode, "ps": r.stdout, "err": r.stderr, "box": box.pid, "caller": os.getpid(),
                  "processes": [dataclasses.asdict(p) for p in box.processes()], "nspid": nsbox.nspid(box.pid)})
        finally:
            box.kill()
            box.wait()
        """
    )
    assert seen["rc"] == 0, seen["err"]
    _check_two_views(seen["ps"], seen["processes"], seen["nspid"], seen["box"], seen["caller"])


# ---------------------------------------------------------------------------------------------------------------
# exec sees every namespace of the box

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


# ---------------------------------------------------------------------------------------------------------------
# exec takes run's options, the box's root and its working directory


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
        _started(box, "sleep")
        r = box.exec(["sh", "-c", "pwd; ls /"], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        cwd, *listing = r.stdout.splitlines()
        assert cwd == "/home/work"
        assert "BOX-ROOT" in listing and "root" not in listing
        assert os.listdir(root) == [], "the box's root is its own tmpfs; the host sees the empty directory"
    finally:
        kill_and_reap(box)


# ---------------------------------------------------------------------------------------------------------------
# namespaces() and nspid()


def test_namespaces_gives_every_kind_and_comparing_shows_what_is_shared() -> None:
    me = nsbox.namespaces()
    assert set(me) == KINDS == set(os.listdir("/proc/self/ns"))
    assert me == nsbox.namespaces(os.getpid())
    assert me == {kind: os.stat(f"/proc/self/ns/{kind}").st_ino for kind in KINDS}
    for options, own in [
        ({"net": True, "hostname": "ids"}, {"net", "uts"}),
        ({"pid": True}, {"pid", "pid_for_children"}),
        ({"time": True, "ipc": True}, {"time", "time_for_children", "ipc"}),
        ({"user": True, "cgroup": True, "mount": True}, {"user", "cgroup", "mnt"}),
    ]:
        box = nsbox.Popen(["sleep", "1000"], **options)
        try:
            ids = box.namespaces()
            assert ids == nsbox.namespaces(box.pid)
            assert {kind for kind in KINDS if ids[kind] != me[kind]} == own, options
        finally:
            kill_and_reap(box)


def test_nspid_is_the_chain_from_the_host_down_to_the_box() -> None:
    assert nsbox.nspid(os.getpid()) == [os.getpid()]
    box = nsbox.Popen(["sleep", "1000"], pid=True)
    plain = nsbox.Popen(["sleep", "1000"], net=True)
    try:
        assert nsbox.nspid(box.pid) == [box.pid, 1]
        assert nsbox.nspid(plain.pid) == [plain.pid]
    finally:
        kill_and_reap(box)
        kill_and_reap(plain)


def test_looking_at_a_process_that_is_gone_raises_process_lookup_error() -> None:
    box = nsbox.Popen(["true"])
    box.wait()
    # namespaces() documents ProcessLookupError for "no such process"; the other two name the process.
    with pytest.raises(ProcessLookupError):
        nsbox.namespaces(box.pid)
    for look in (nsbox.nspid, nsbox.processes):
        with pytest.raises(OSError, match=str(box.pid)):
            look(box.pid)


# ---------------------------------------------------------------------------------------------------------------
# init=True


def _zombies(box: subprocess.Popen[Any]) -> list[int]:
    return [p.host_pid for p in nsbox.processes(box.pid) if proc_state(p.host_pid) == "Z"]


#: Leaves three orphans (started by shells that exit at once) that end after PID 1 has become sleep, which never
#: reaps.
_LEAVE_ORPHANS = "for i in 1 2 3; do sh -c 'sleep 0.5 &'; done; echo started; exec sleep 1000"


@pytest.mark.parametrize("init", [False, True])
def test_init_reaps_the_orphans_that_a_command_as_pid_1_leaves_as_zombies(init: bool) -> None:
    box = start_box(["sh", "-c", _LEAVE_ORPHANS], "started\n", pid=True, init=init)
    try:
        if init:
            # nsbox-init is PID 1, the command PID 2; every orphan it adopted is gone.
            assert wait_until(lambda: len(box.processes()) == 2)
            first, command = box.processes()
            assert (first.pid, first.command, first.host_pid) == (1, "nsbox-init", box.pid)
            assert (command.pid, command.ppid, command.host_ppid) == (2, 1, box.pid)
            assert wait_until(lambda: proc_comm(command.host_pid) == "sleep")
            time.sleep(0.2)
            assert _zombies(box) == []
        else:
            # The control: without an init the orphans stay zombies of the command.
            assert wait_until(lambda: len(_zombies(box)) == 3), box.processes()
    finally:
        kill_and_reap(box)


def test_terminate_reaches_a_command_without_a_handler_only_with_init() -> None:
    with nsbox.Popen(["sleep", "1000"], init=True) as box:
        assert wait_until(lambda: [p.command for p in box.processes()] == ["nsbox-init", "sleep 1000"])
        box.terminate()
        assert box.wait(timeout=10) == 128 + signal.SIGTERM
    plain = nsbox.Popen(["sleep", "1000"], pid=True)
    try:
        _started(plain, "sleep")
        plain.terminate()
        with pytest.raises(subprocess.TimeoutExpired):
            plain.wait(timeout=0.3)  # sleep as PID 1 ignores SIGTERM, as the README says
    finally:
        kill_and_reap(plain)


@pytest.mark.parametrize(
    "sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGQUIT]
)
def test_init_forwards_the_signal_and_reports_128_plus_its_number(sig: signal.Signals, tmp_path: Path) -> None:
    box = nsbox.Popen(["sleep", "1000"], init=True, cwd=tmp_path)  # any core dump (SIGQUIT) lands in tmp_path
    try:
        assert wait_until(lambda: len(box.processes()) == 2 and proc_comm(box.processes()[1].host_pid) == "sleep")
        box.send_signal(sig)
        assert box.wait(timeout=10) == 128 + sig
    finally:
        kill_and_reap(box)


@pytest.mark.parametrize(("script", "status"), [("exit 0", 0), ("exit 7", 7), ("kill -USR1 $$", 128 + signal.SIGUSR1)])
def test_init_passes_the_command_status_through(script: str, status: int) -> None:
    assert nsbox.run(["sh", "-c", script], init=True).returncode == status
    with nsbox.Popen(["sh", "-c", script], init=True) as box:
        pass
    assert box.returncode == status


def test_rootless_init_reaps_orphans_forwards_sigterm_and_passes_the_status(rootless: Rootless) -> None:
    seen = rootless(
        f"""
        def state(pid):
            try:
                return open(f"/proc/{{pid}}/stat").read().rsplit(")", 1)[1].split()[0]
            except OSError:
                return None

        box = nsbox.Popen(["sh", "-c", {_LEAVE_ORPHANS!r}], init=True, stdout=subprocess.PIPE, text=True)
        started = box.stdout.readline()
        deadline = time.monotonic() + 5
        while len(box.processes()) != 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)
        table = [[p.pid, p.command, state(p.host_pid)] for p in box.processes()]
        box.terminate()
        status = box.wait(timeout=10)
        box.stdout.close()
        emit({{"started": started, "table": table, "terminated": status,
              "exit": nsbox.run(["sh", "-c", "exit 9"], init=True).returncode}})
        """
    )
    assert seen["started"] == "started\n"
    assert [row[:2] for row in seen["table"]] == [[1, "nsbox-init"], [2, "sleep 1000"]]
    assert "Z" not in [row[2] for row in seen["table"]]
    assert seen["terminated"] == 128 + signal.SIGTERM
    assert seen["exit"] == 9


# ---------------------------------------------------------------------------------------------------------------
# Boxes that have exited, and processes the caller may not enter


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


# ---------------------------------------------------------------------------------------------------------------
# Many exec calls leave the caller as it was


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


# ---------------------------------------------------------------------------------------------------------------
# Reprs for the terminal and Jupyter


def test_box_repr_shows_host_and_inside_pid_namespaces_and_state() -> None:
    box = nsbox.Popen(["sleep", "1000"], pid=True, mount_proc=True)
    try:
        assert repr(box) == f"<nsbox.Popen pid={box.pid} (1 inside) namespaces=[pid, mnt] running: ['sleep', '1000']>"
        _started(box, "sleep")
        page = box._repr_html_()
        ids, host = box.namespaces(), nsbox.namespaces()
        for kind in KINDS:
            mark = "<b>own</b>" if kind in ("pid", "pid_for_children", "mnt") else "shared"
            assert f"<tr><td>{kind}</td><td>{ids[kind]}</td><td>{host[kind]}</td><td>{mark}</td></tr>" in page
        assert "<th>HOST PID</th><th>HOST PPID</th><th>PID</th><th>PPID</th><th>COMMAND</th>" in page
        assert f"<tr><td>{box.pid}</td><td>{os.getpid()}</td><td>1</td><td>0</td><td>sleep 1000</td></tr>" in page
    finally:
        kill_and_reap(box)
    assert repr(box) == f"<nsbox.Popen pid={box.pid} namespaces=[pid, mnt] exited -9: ['sleep', '1000']>"
    assert box._repr_html_() == f"<p><code>&lt;nsbox.Popen pid={box.pid} namespaces=[pid, mnt] exited -9: " + (
        "[&#x27;sleep&#x27;, &#x27;1000&#x27;]&gt;</code></p>"
    )


def test_process_table_repr_aligns_columns_and_html_escapes_commands() -> None:
    table = nsbox.ProcessTable(
        [nsbox.ProcessInfo(15563, 15542, 1, 0, "sleep 1000"), nsbox.ProcessInfo(17301, 15563, 13, 1, "sh -c '<b>'")]
    )
    assert repr(table) == (
        "HOST PID  HOST PPID  PID  PPID  COMMAND\n"
        "   15563      15542    1     0  sleep 1000\n"
        "   17301      15563   13     1  sh -c '<b>'"
    )
    page = table._repr_html_()
    assert "<td>17301</td><td>15563</td><td>13</td><td>1</td><td>sh -c &#x27;&lt;b&gt;&#x27;</td>" in page
    assert "<b>" not in page
    box = nsbox.Popen(["sleep", "1000"], pid=True)
    try:
        assert isinstance(box.processes(), nsbox.ProcessTable)
        # Until the kernel has finished the exec, the command line is empty and the row shows "[sleep]".
        assert wait_until(lambda: repr(box.processes()).splitlines()[1].endswith(" sleep 1000"))
        row = repr(box.processes()).splitlines()[1]
        assert row.split() == [str(box.pid), str(os.getpid()), "1", "0", "sleep", "1000"]
    finally:
        kill_and_reap(box)
