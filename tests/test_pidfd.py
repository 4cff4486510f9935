"""``Popen.pidfd``: a pidfd of the box's first process, for select, event loops and ``waitid(P_PIDFD)``."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys

import pytest

import nsbox


def test_the_pidfd_becomes_readable_when_the_box_exits_and_waitid_reaps_it() -> None:
    with nsbox.Popen(["cat"], pid=True, mount_proc=True, stdin=subprocess.PIPE) as box:
        assert box.pidfd >= 3
        assert select.select([box.pidfd], [], [], 0)[0] == []  # running: not readable
        inside = box.exec(["cat", "/proc/1/cmdline"], capture_output=True).stdout
        assert inside.split(b"\0")[0] == b"cat"  # the pidfd's process is PID 1 of the box
        assert box.stdin is not None
        box.stdin.close()
        assert select.select([box.pidfd], [], [], 30)[0] == [box.pidfd]
        info = os.waitid(os.P_PIDFD, box.pidfd, os.WEXITED)
        assert info is not None and (info.si_pid, info.si_status) == (box.pid, 0)
        assert box.wait() == 0  # reaped through the pidfd: subprocess finds it gone


def test_a_signal_through_the_pidfd_reaches_the_box() -> None:
    with nsbox.Popen(["sleep", "60"], pid=True) as box:
        signal.pidfd_send_signal(box.pidfd, signal.SIGKILL)
        assert box.wait(timeout=30) == -signal.SIGKILL


def test_the_pidfd_is_closed_with_the_popen() -> None:
    with nsbox.Popen(["true"]) as box:
        fd = box.pidfd
        assert os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[pidfd]"
        assert os.get_inheritable(fd) is False
    with pytest.raises(ValueError, match="closed"):
        box.pidfd  # noqa: B018
    assert not os.path.exists(f"/proc/self/fd/{fd}") or os.readlink(f"/proc/self/fd/{fd}") != "anon_inode:[pidfd]"


def test_the_pidfd_never_lands_on_0_to_2_when_they_are_closed() -> None:
    code = (
        "import os, subprocess, nsbox\n"
        "os.close(0)\n"
        "box = nsbox.Popen(['true'], stdin=subprocess.DEVNULL)\n"
        "assert box.pidfd >= 3, box.pidfd\n"
        "box.wait(); box.close_pidfd()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
