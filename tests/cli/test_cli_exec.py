"""``nsbox exec``, ``nsbox ps`` and ``nsbox ns`` on a running box, ``exec`` compared with ``nsenter``."""

from __future__ import annotations

import os
import shlex
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

import nsbox
from helpers.cli import NAMESPACES, READ_NAMESPACES, Box, Runner, one_line_error

# ---------------------------------------------------------------------------------------------------------------
# exec, ps, ns on a running box


def _nsenter(runner: Runner, *args: str) -> list[str]:
    # Without root, nsenter would setgroups() after entering a user namespace and fail; nsbox does not.
    return ["nsenter", *(["--preserve-credentials"] if runner.rootless else []), *args]


def test_exec_enters_every_namespace_as_nsenter_all_does(runner: Runner, start_box: Callable[..., Box]) -> None:
    box = start_box("-p", "-u", "-n", "-i", "--mount-proc", "sleep", "1000")
    # Without root, nsenter --all also tries the namespaces the box shares with the host (cgroup, time),
    # which its user namespace may not enter; nsbox, like nsenter with those left out, skips them.
    every = ["-U", "-m", "-u", "-i", "-n", "-p"] if runner.rootless else ["--all"]
    theirs = runner.run(_nsenter(runner, "-t", str(box.pid), *every, *READ_NAMESPACES))
    ours = runner.nsbox("exec", "--target", str(box.pid), *READ_NAMESPACES)
    ours_all = runner.nsbox("exec", "-at", str(box.pid), "--", *READ_NAMESPACES)
    assert theirs.returncode == 0, theirs.stderr
    assert (ours.returncode, ours.stdout) == (0, theirs.stdout), ours.stderr
    assert (ours_all.returncode, ours_all.stdout) == (0, theirs.stdout), ours_all.stderr
    box_namespaces = {kind: os.readlink(f"/proc/{box.pid}/ns/{kind}") for kind in NAMESPACES}
    assert ours.stdout.split() == [box_namespaces[kind] for kind in NAMESPACES]


def test_exec_without_namespace_flags_takes_the_targets_root_and_working_directory(
    runner: Runner, start_box: Callable[..., Box]
) -> None:
    box = start_box("-p", "--hostname", "the-box", "--mount-proc", "-w", "/usr", "sleep", "1000")
    r = runner.nsbox("exec", "-t", str(box.pid), "sh", "-c", "hostname; pwd; echo $$; ps -o pid= -p 1")
    assert r.returncode == 0, r.stderr
    hostname, cwd, pid, first = r.stdout.split()
    assert (hostname, cwd, first) == ("the-box", "/usr", "1")
    assert 1 < int(pid) < 100  # a PID of the box's namespace, not the host's
    # nsenter's -r and -w (the target's root and working directory) are what --all does anyway.
    implied = runner.nsbox("exec", "-t", str(box.pid), "--all", "-r", "-w", "pwd")
    assert (implied.returncode, implied.stdout) == (0, "/usr\n"), implied.stderr
    elsewhere = runner.nsbox("exec", "-t", str(box.pid), "--wdns", "/etc", "pwd")
    assert (elsewhere.returncode, elsewhere.stdout) == (0, "/etc\n"), elsewhere.stderr


@pytest.mark.parametrize("flags", [["-u"], ["-m", "-u", "-p"], ["-n", "-p"], ["--uts", "--ipc"]], ids=" ".join)
def test_exec_with_namespace_flags_enters_just_those_as_nsenter_does(
    runner: Runner, start_box: Callable[..., Box], flags: list[str]
) -> None:
    box = start_box("-p", "-u", "-n", "-i", "--hostname", "the-box", "--mount-proc", "-w", "/usr", "sleep", "1000")
    if runner.rootless:
        flags = ["-U", *flags]  # the box's namespaces belong to its user namespace
    show = ["sh", "-c", f"hostname; pwd; {shlex.join(READ_NAMESPACES)}"]
    theirs = runner.run(_nsenter(runner, "-t", str(box.pid), *flags, *show))
    ours = runner.nsbox("exec", "-t", str(box.pid), *flags, *show)
    assert theirs.returncode == 0, theirs.stderr
    assert (ours.returncode, ours.stdout) == (0, theirs.stdout), ours.stderr


def test_exec_with_namespace_files_as_nsenter_does(runner: Runner, start_box: Callable[..., Box]) -> None:
    box = start_box("-u", "--hostname", "the-box", "sleep", "1000")
    files = [f"--uts=/proc/{box.pid}/ns/uts"]
    if runner.rootless:
        files.insert(0, f"--user=/proc/{box.pid}/ns/user")
    theirs = runner.run(_nsenter(runner, *files, "hostname"))
    ours = runner.nsbox("exec", *files, "hostname")
    assert (ours.returncode, ours.stdout) == (0, theirs.stdout) == (0, "the-box\n"), ours.stderr


def test_exec_into_persisted_namespace_files(root: Runner, tmp_path: Path) -> None:
    persisted = tmp_path / "box"
    with nsbox.Popen(["sleep", "1000"], pid=True, hostname="kept", persist=persisted) as box:
        try:
            everything = root.nsbox("exec", "--target", str(persisted), "sh", "-c", "hostname; echo $$")
            assert (everything.returncode, everything.stdout) == (0, "kept\n2\n"), everything.stderr
        finally:
            box.kill()
    try:
        # The box is gone; its UTS namespace is kept by the bind mount.
        uts = root.nsbox("exec", "--target", str(persisted), "-u", "hostname")
        assert (uts.returncode, uts.stdout) == (0, "kept\n"), uts.stderr
        missing = root.nsbox("exec", "--target", str(persisted), "-n", "true")
        assert missing.returncode == 1
        assert one_line_error(missing) == f"nsbox: cannot open {persisted}/net: No such file or directory"
    finally:
        nsbox.release(persisted)


def test_exec_exit_status_and_errors(runner: Runner, start_box: Callable[..., Box]) -> None:
    box = start_box("-p", "sleep", "1000")
    target = ["exec", "-t", str(box.pid)]
    assert runner.nsbox(*target, "sh", "-c", "exit 4").returncode == 4
    assert runner.nsbox(*target, "sh", "-c", "kill -USR1 $$").returncode == 128 + signal.SIGUSR1
    missing = runner.nsbox(*target, "no-such-program-here")
    assert missing.returncode == 127
    assert one_line_error(missing) == "nsbox: failed to execute no-such-program-here: No such file or directory"
    gone = runner.nsbox("exec", "-t", "999999999", "-n", "true")
    assert gone.returncode == 1
    said = "nsbox: cannot enter process 999999999: it does not exist or has exited: No such process"
    assert one_line_error(gone) == said


def test_exec_without_a_program_runs_the_shell_in_the_box(runner: Runner, start_box: Callable[..., Box]) -> None:
    box = start_box("-p", "--hostname", "the-box", "sleep", "1000")
    r = runner.nsbox("exec", "-t", str(box.pid), input="echo zero=$0; hostname; exit 3\n")
    assert (r.returncode, r.stdout) == (3, "zero=-sh\nthe-box\n"), r.stderr


def test_ps_prints_the_boxs_processes_with_host_and_inside_pids(runner: Runner, start_box: Callable[..., Box]) -> None:
    sleep = start_box("--init", "--mount-proc", "sleep", "1000").pid
    with open(f"/proc/{sleep}/status") as f:
        init = int(next(line.split()[1] for line in f if line.startswith("PPid:")))
    r = runner.nsbox("ps", str(init))
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"{nsbox.processes(init)!r}\n"
    header, *rows = r.stdout.splitlines()
    assert header.split() == ["HOST", "PID", "HOST", "PPID", "PID", "PPID", "COMMAND"]
    table = [row.split(None, 4) for row in rows]
    assert [row[2:4] for row in table] == [["1", "0"], ["2", "1"]]
    assert (table[0][0], table[1][0], table[1][4]) == (str(init), str(sleep), "sleep 1000")


def test_ns_prints_kind_and_inode_per_line(runner: Runner, start_box: Callable[..., Box]) -> None:
    box = start_box("-n", "-u", "sleep", "1000")
    r = runner.nsbox("ns", str(box.pid))
    assert r.returncode == 0, r.stderr
    printed = dict(line.split() for line in r.stdout.splitlines())
    assert {kind: int(inode) for kind, inode in printed.items()} == nsbox.namespaces(box.pid)
    assert printed["net"] == str(os.stat(f"/proc/{box.pid}/ns/net").st_ino)
    mine = runner.nsbox("ns")
    assert mine.returncode == 0, mine.stderr
    own = dict(line.split() for line in mine.stdout.splitlines())
    assert own["net"] == str(os.stat("/proc/self/ns/net").st_ino)  # nsbox's own namespaces are the host's


@pytest.mark.parametrize("command", [["ps"], ["ns"]])
def test_ps_and_ns_of_a_missing_process_are_one_line_and_exit_1(runner: Runner, command: list[str]) -> None:
    r = runner.nsbox(*command, "999999999")
    assert r.returncode == 1
    assert one_line_error(r).endswith("process 999999999: No such process")
