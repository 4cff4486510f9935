"""``nsbox`` compared with ``unshare -f`` on the same flags: the namespaces, ids, mounts, PID view, clocks and
hostname inside, and the exit statuses; as root and as uid 65534 (where the comparison is with ``unshare -r``).
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from helpers.cli import (
    NAMESPACES,
    READ_NAMESPACES,
    USER_OPTIONS,
    Runner,
    host_namespaces,
    mount_table,
    one_line_error,
    ps_rows,
    rootless_runner,
    shell_status,
    stop,
    wait_for_descendant,
)

# ---------------------------------------------------------------------------------------------------------------
# Same namespaces, mounts, PID view and ids as unshare


NAMESPACE_CASES = [
    [],
    ["-m"],
    ["-u"],
    ["-i"],
    ["-n"],
    ["-p"],
    ["-U"],
    ["-C"],
    ["-T"],
    ["-r"],
    ["--mount-proc", "-p"],
    ["--net", "--uts", "--ipc"],
    ["-mUuinpCT"],
    ["--map-user=1000", "-n"],
    ["-c", "-m"],
]


@pytest.mark.parametrize("flags", NAMESPACE_CASES, ids=lambda f: " ".join(f) or "none")
def test_creates_the_same_namespaces_as_unshare(runner: Runner, flags: list[str]) -> None:
    host = host_namespaces()  # uid 65534 runs in the test runner's namespaces too
    theirs = runner.unshare(*flags, *READ_NAMESPACES)
    ours = runner.nsbox("-f", *flags, *READ_NAMESPACES)
    assert theirs.returncode == 0, theirs.stderr
    assert ours.returncode == 0, ours.stderr

    def created(output: str) -> set[str]:
        return {kind for kind, link in zip(NAMESPACES, output.split(), strict=True) if link != host[kind]}

    assert created(ours.stdout) == created(theirs.stdout)
    if not runner.rootless and not any(USER_OPTIONS.match(f) for f in flags):
        assert "user" not in created(ours.stdout)


@pytest.mark.parametrize(
    "flags",
    [
        ["-U"],
        ["-r"],
        ["-c"],
        ["--map-user=1000"],
        ["--map-group=100"],
        ["--map-user=daemon", "--map-group=daemon"],
        ["-r", "--map-user=7"],
        ["--map-user=7", "-r"],
        ["-n"],
    ],
    ids=lambda f: " ".join(f),
)
def test_ids_inside_are_unshares(runner: Runner, flags: list[str]) -> None:
    show = ["sh", "-c", "id -u; id -g; id -G"]
    theirs = runner.unshare(*flags, *show)
    ours = runner.nsbox(*flags, *show)
    assert theirs.returncode == 0, theirs.stderr
    assert (ours.returncode, ours.stdout) == (0, theirs.stdout), ours.stderr


# (unshare -r --setgroups=deny fails: it writes setgroups again after the gid map.)
@pytest.mark.parametrize("flags", [["-r"], ["--map-user=0", "--setgroups=deny"], ["-U", "--setgroups", "deny"]])
def test_setgroups_file_inside_is_unshares(runner: Runner, flags: list[str]) -> None:
    theirs = runner.unshare(*flags, "cat", "/proc/self/setgroups")
    ours = runner.nsbox(*flags, "cat", "/proc/self/setgroups")
    assert theirs.returncode == 0, theirs.stderr
    assert (ours.returncode, ours.stdout) == (0, theirs.stdout), ours.stderr


def test_setgroups_allow_with_user_namespace_as_root_is_unshares(root: Runner) -> None:
    for flags in (["-U"], ["-U", "--setgroups=allow"]):
        theirs = root.unshare(*flags, "cat", "/proc/self/setgroups")
        ours = root.nsbox(*flags, "cat", "/proc/self/setgroups")
        assert (ours.returncode, ours.stdout) == (0, theirs.stdout) == (0, "allow\n"), ours.stderr


@pytest.mark.parametrize(
    "flags",
    [
        ["-p", "--mount-proc"],
        ["-pm", "--mount-proc=/proc"],
        ["-m"],
        ["-m", "--propagation", "slave"],
        ["-m", "--propagation=shared"],
        ["-m", "--propagation=unchanged"],
        ["-p", "--mount-proc", "--propagation=slave"],
        ["-p", "--mount-proc", "--propagation=private"],
        ["-p", "--mount-proc", "--propagation=shared"],
        ["-p", "--mount-proc", "--propagation=unchanged"],
    ],
    ids=lambda f: " ".join(f),
)
def test_mounts_are_unshares(runner: Runner, flags: list[str]) -> None:
    theirs = runner.unshare(*flags, "cat", "/proc/self/mountinfo")
    ours = runner.nsbox(*flags, "cat", "/proc/self/mountinfo")
    assert theirs.returncode == 0, theirs.stderr
    assert ours.returncode == 0, ours.stderr
    assert mount_table(ours.stdout) == mount_table(theirs.stdout)
    if "--mount-proc" in "".join(flags):
        proc = [row for row in mount_table(ours.stdout) if row[0] == "/proc"]
        assert proc[-1][3:5] == ("proc", "proc")
        assert {"nosuid", "nodev", "noexec"} <= set(proc[-1][1].split(","))


def test_ps_in_a_pid_namespace_shows_itself_as_pid_1_as_with_unshare(runner: Runner) -> None:
    theirs = runner.unshare("-p", "--mount-proc", "ps", "-ef")
    ours = runner.nsbox("-p", "--mount-proc", "ps", "-ef")
    assert theirs.returncode == 0, theirs.stderr
    assert ours.returncode == 0, ours.stderr
    assert ps_rows(ours.stdout) == ps_rows(theirs.stdout) == [("root", "1", "0", "ps -ef")]


def test_program_sees_its_pid_as_1_and_its_children_in_the_box(runner: Runner) -> None:
    script = "echo $$; sh -c 'echo $$'; cat /proc/self/status | grep -c NSpid"
    theirs = runner.unshare("-p", "--mount-proc", "sh", "-c", script)
    ours = runner.nsbox("-p", "--mount-proc", "sh", "-c", script)
    assert ours.returncode == 0, ours.stderr
    assert ours.stdout.split()[:2] == theirs.stdout.split()[:2] == ["1", "2"]


def test_working_directory_is_unshares(runner: Runner) -> None:
    theirs = runner.unshare("-w", "/usr", "pwd")
    ours = runner.nsbox("-w", "/usr", "pwd")
    ours_long = runner.nsbox("--wd=/usr/lib", "-m", "pwd")
    assert (ours.returncode, ours.stdout) == (0, theirs.stdout) == (0, "/usr\n")
    assert (ours_long.returncode, ours_long.stdout) == (0, "/usr/lib\n"), ours_long.stderr


def test_root_and_mount_proc_dir_are_unshares(runner: Runner, tiny_root: Path) -> None:
    # As unshare: chroot into DIR, start in its /, mount proc at the given path inside the new root.
    script = (
        "pwd; test -e /bin/sh && echo has-sh; test -e /proc/1/status && echo proc;"
        " test -e /mnt/1/status && echo mnt; true"
    )
    for flags in (["-p", "--mount-proc"], ["-p", "--mount-proc=/mnt"]):
        theirs = runner.unshare("-R", str(tiny_root), "-f", *flags, "/bin/sh", "-c", script)
        ours = runner.nsbox("-R", str(tiny_root), *flags, "/bin/sh", "-c", script)
        assert theirs.returncode == 0, theirs.stderr
        assert (ours.returncode, ours.stdout) == (0, theirs.stdout), ours.stderr
    assert runner.nsbox("--root", str(tiny_root), "/bin/sh", "-c", "pwd").stdout == "/\n"
    # Nothing was mounted in the directory on the host.
    assert not (tiny_root / "proc" / "1").exists() and not (tiny_root / "mnt" / "1").exists()


def test_boottime_offset_is_unshares(runner: Runner) -> None:
    theirs = runner.unshare("-T", "--boottime", "86400", "cat", "/proc/uptime")
    ours = runner.nsbox("-T", "--boottime", "86400", "cat", "/proc/uptime")
    assert theirs.returncode == 0, theirs.stderr
    assert ours.returncode == 0, ours.stderr
    ours_uptime, theirs_uptime = float(ours.stdout.split()[0]), float(theirs.stdout.split()[0])
    assert ours_uptime > 86400
    assert abs(ours_uptime - theirs_uptime) < 30


def test_monotonic_offset_moves_the_monotonic_clock(runner: Runner) -> None:
    read = ["python3", "-c", "import time; print(time.monotonic())"]
    before = float(runner.run(read).stdout)
    ours = runner.nsbox("-T", "--monotonic", "3600", *read)
    assert ours.returncode == 0, ours.stderr
    assert float(ours.stdout) - before > 3500


def test_hostname_is_set_inside_and_the_hosts_is_unchanged(runner: Runner) -> None:
    host = os.uname().nodename
    r = runner.nsbox("--hostname", "cli-box", "hostname")
    assert (r.returncode, r.stdout) == (0, "cli-box\n"), r.stderr
    assert os.uname().nodename == host


def test_init_runs_the_program_as_pid_2_and_passes_its_exit_status(runner: Runner) -> None:
    r = runner.nsbox("--init", "sh", "-c", "echo $$; exit 5")
    assert (r.returncode, r.stdout) == (5, "2\n"), r.stderr


# ---------------------------------------------------------------------------------------------------------------
# Exit statuses


@pytest.mark.parametrize("flags", [[], ["-p"], ["-n", "--mount-proc", "-p"]], ids=lambda f: " ".join(f) or "none")
def test_exit_status_is_the_programs_as_with_unshare(runner: Runner, flags: list[str]) -> None:
    theirs = runner.unshare(*flags, "sh", "-c", "exit 3")
    ours = runner.nsbox(*flags, "sh", "-c", "exit 3")
    assert ours.returncode == theirs.returncode == 3, ours.stderr


@pytest.mark.parametrize("flags", [[], ["-n"]], ids=lambda f: " ".join(f) or "none")
def test_killed_by_a_signal_is_128_plus_n_as_a_shell_reports_unshare(runner: Runner, flags: list[str]) -> None:
    program = ["sh", "-c", "kill -USR1 $$"]
    # unshare kills itself with the same signal; a shell reports that as 128+N, which nsbox returns.
    theirs = runner.unshare(*flags, *program)
    ours = runner.nsbox(*flags, *program)
    assert theirs.returncode == -signal.SIGUSR1
    assert ours.returncode == 128 + signal.SIGUSR1
    assert ours.stderr == ""
    assert shell_status(runner.nsbox_argv(*flags, *program), runner) == shell_status(
        runner.unshare_argv(*flags, *program), runner
    )


def test_pid_1_killed_from_outside_is_137_as_a_shell_reports_unshare(runner: Runner) -> None:
    results = {}
    for name, command in (
        ("nsbox", runner.nsbox_argv("-p", "sleep", "1000")),
        ("unshare", runner.unshare_argv("-p", "sleep", "1000")),
    ):
        front = runner.popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            box = wait_for_descendant(front, "sleep")
            os.kill(box, signal.SIGKILL)
            front.wait(timeout=10)
            results[name] = (front.returncode, front.stderr.read() if front.stderr else "")
        finally:
            stop(front)
    assert results["nsbox"] == (128 + signal.SIGKILL, "")
    # unshare dies of the same signal, which a shell reports as 137 -- since util-linux 2.39. 2.38 fails
    # to unblock SIGKILL for itself and exits 1 instead.
    assert results["unshare"] in ((-signal.SIGKILL, ""), (1, "unshare: sigprocmask unblock failed: Invalid argument\n"))


def test_program_not_found_is_127_with_unshares_message(runner: Runner) -> None:
    theirs = runner.unshare("-n", "no-such-program-here")
    ours = runner.nsbox("-n", "no-such-program-here")
    assert ours.returncode == theirs.returncode == 127
    assert one_line_error(ours) == theirs.stderr.strip().replace("unshare: ", "nsbox: ")
    assert ours.stdout == ""


def test_program_not_executable_is_126_with_unshares_message(runner: Runner) -> None:
    theirs = runner.unshare("-n", "/etc/passwd")
    ours = runner.nsbox("-n", "/etc/passwd")
    assert ours.returncode == theirs.returncode == 126
    assert one_line_error(ours) == theirs.stderr.strip().replace("unshare: ", "nsbox: ")


def test_missing_working_directory_is_1_with_unshares_message(runner: Runner) -> None:
    theirs = runner.unshare("-w", "/no/such/dir", "true")
    ours = runner.nsbox("-w", "/no/such/dir", "true")
    assert ours.returncode == theirs.returncode == 1
    assert one_line_error(ours) == theirs.stderr.strip().replace("unshare: ", "nsbox: ")


def test_runtime_failure_is_one_line_and_exit_1(runner: Runner) -> None:
    if runner.rootless:
        # Without root, proc can only be mounted for a PID namespace of one's own; unshare fails too.
        theirs = runner.unshare("--mount-proc", "true")
        ours = runner.nsbox("--mount-proc", "true")
        assert theirs.returncode == 1
        assert "Operation not permitted" in one_line_error(ours)
        assert "add -p" in one_line_error(ours)  # the core's hint, in the command line's words
    else:
        ours = runner.nsbox("exec", "--target", "999999999", "true")
        assert "999999999" in one_line_error(ours)
    assert ours.returncode == 1
    assert ours.stdout == ""


def test_entering_another_users_process_without_root_is_one_line_and_exit_1(rootless_package: Path) -> None:
    runner = rootless_runner(rootless_package)
    r = runner.nsbox("exec", "--target", str(os.getpid()), "true")
    assert r.returncode == 1
    assert "Permission denied" in one_line_error(r)
