"""Boxes watched from the host: ``processes``, PID translation (``nspid``), namespace ids (``namespaces``).

The views of `docker exec <id> ps -ef` (inside) and `ps -ef` on the host, one call each, for boxes started with
``nsbox.Popen``; root and rootless (the unprivileged user entering its own box).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
from typing import Any

import pytest

import nsbox
from helpers.namespaces import KINDS
from helpers.procs import kill_and_reap, kill_pid, proc_status, start_box, started, wait_until
from helpers.rootless import Rootless


def _ps_ef(text: str) -> list[tuple[int, int, str]]:
    """(PID, PPID, CMD) of each row of ``ps -ef``."""
    rows = []
    for line in text.splitlines()[1:]:
        fields = line.split(None, 7)
        rows.append((int(fields[1]), int(fields[2]), fields[7]))
    return rows


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
        started(box, "sleep")
        r = box.exec(["ps", "-ef"], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        processes = [dataclasses.asdict(p) for p in box.processes()]
        _check_two_views(r.stdout, processes, nsbox.nspid(box.pid), box.pid, os.getpid())
    finally:
        kill_and_reap(box)


def test_processes_and_ps_inside_list_the_same_processes_while_an_exec_runs() -> None:
    box = nsbox.Popen(["sleep", "1000"], pid=True, mount_proc=True)
    try:
        started(box, "sleep")
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
