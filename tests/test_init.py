"""``init=True``: a small PID 1 that reaps orphans, forwards signals to the command and passes its status out."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

import nsbox
from helpers.procs import kill_and_reap, proc_comm, proc_state, start_box, started, wait_until
from helpers.rootless import Rootless


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
        started(plain, "sleep")
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
