"""cgroup limits (issue 16): memory_limit, pids_limit and cpu_limit, a cgroup per box beneath the caller's own.

This machine mounts the controllers as cgroup v1 (the v2 paths are unit-tested in Rust against a fake cgroupfs,
``src/cgroup/tests.rs``). Each attack runs inside a box and beside a control that shows it working without the
limit; the box's cgroup is looked at from both sides (``/proc/self/cgroup`` inside, ``/proc/PID/cgroup`` and the
cgroup's own counters on the host). Every test checks that the box cgroups it made (``nsbox-<test's PID>-<n>``)
are gone after: unique names, so the tests hold under ``pytest -n 2`` and beside another copy of the suite.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import nsbox
from helpers.cgroups import box_cgroups, cgroup_dirs, cgroup_lines
from helpers.cli import root_runner
from helpers.procs import children_of, kill_and_reap, open_fds, proc_state, wait_until
from helpers.rootless import Rootless

#: A fork bomb that stops at FORKS children (so that its control, without a limit, stays a polite one): each child
#: sleeps; the bomb counts the forks that worked and those refused (errno), prints both, and waits to be killed.
FORK_BOMB = textwrap.dedent("""\
    import json, os, signal, sys
    made, refused = 0, []
    for _ in range(int(sys.argv[1])):
        try:
            pid = os.fork()
        except OSError as exc:
            refused.append(exc.errno)
            continue
        if pid == 0:
            signal.pause()
            os._exit(0)
        made += 1
    print(json.dumps({"made": made, "refused": refused}), flush=True)
    signal.pause()
""")
FORKS = 100

#: A memory hog: touches MiB in 8 MiB steps up to argv[1], printing how far it got.
MEMORY_HOG = textwrap.dedent("""\
    import sys
    held = []
    for step in range(int(sys.argv[1]) // 8):
        held.append(bytearray(b"x" * (8 << 20)))
        print((step + 1) * 8, flush=True)
    print("done", flush=True)
""")

#: A busy loop at a high priority (as root): what it gets is the CPU limit's doing, not the machine's other work.
BUSY_LOOP = ["nice", "-n", "-15", "sh", "-c", "while :; do :; done"]
HIGH_PRIORITY = "-15"
#: How long the CPU limit is measured over.
WINDOW = 2.5


@pytest.fixture(autouse=True)
def no_box_cgroup_left() -> Iterator[None]:
    """Every test leaves no box cgroup of this process's, and no fd, behind."""
    fds = our_fds()
    yield
    assert box_cgroups() == []
    assert our_fds() == fds


def our_fds() -> dict[int, str]:
    """The fds of this process but the helper program's memfd, loaded once on first use (``init=True``)."""
    return {fd: what for fd, what in open_fds().items() if "nsbox-helper" not in what}


@contextlib.contextmanager
def running(args: list[str], **options: Any) -> Iterator[nsbox.Popen]:
    """A box that is killed and reaped, its pipes closed, however the block ends."""
    with nsbox.Popen(args, **options) as box:
        try:
            yield box
        finally:
            box.kill()


def lines_inside(box_output: str) -> dict[str, str]:
    """``/proc/self/cgroup`` as printed in a box, as :func:`cgroup_lines` reads it."""
    parts = [line.split(":", 2) for line in box_output.splitlines()]
    return {controllers: path for _, controllers, path in parts if not controllers.startswith("name=")}


# -- Bad values ------------------------------------------------------------------------------------------------


BAD = [
    ({"memory_limit": "12Q"}, ValueError, "memory_limit must be a number of bytes or a size such as '256M'"),
    ({"memory_limit": -5}, ValueError, "memory_limit must be a positive size, not -5"),
    ({"memory_limit": 0}, ValueError, "memory_limit must be at least 1M"),
    ({"memory_limit": "256"}, ValueError, "not '256': it is in bytes; '256M' is 256 MiB"),
    ({"memory_limit": "-1G"}, ValueError, "not '-1G'"),
    ({"memory_limit": "64K"}, ValueError, "memory_limit must be at least 1M (1048576 bytes), not '64K'"),
    ({"memory_limit": True}, TypeError, "memory_limit must be a number of bytes or a size such as '256M', not bool"),
    ({"memory_limit": 1.5e9}, TypeError, "not float"),
    ({"memory_limit": 2**64}, ValueError, "below 8 EiB"),
    ({"pids_limit": 0}, ValueError, "pids_limit must be from 1 to 4194304, not 0"),
    ({"pids_limit": -1}, ValueError, "not -1"),
    ({"pids_limit": True}, TypeError, "pids_limit must be a number of processes, not bool"),
    ({"pids_limit": "64"}, TypeError, "not str"),
    ({"cpu_limit": 0}, ValueError, "cpu_limit must be a number of CPUs from 0.01 to 100000 (0.5: half a CPU), not 0"),
    ({"cpu_limit": -0.5}, ValueError, "not -0.5"),
    ({"cpu_limit": math.nan}, ValueError, "not NaN"),
    ({"cpu_limit": "half"}, TypeError, "cpu_limit must be a number of CPUs, not str"),
]


@pytest.mark.unit
@pytest.mark.parametrize(("options", "kind", "message"), BAD, ids=[repr(b[0]) for b in BAD])
def test_bad_values_are_refused_before_anything_is_made(options: dict[str, Any], kind: type, message: str) -> None:
    for start in (nsbox.Popen, nsbox.run):
        with pytest.raises(kind) as raised:
            start(["true"], **options)
        assert message in str(raised.value)
    with pytest.raises(kind):
        nsbox.call(os.getpid, **options)
    # Nothing was started (the fixture checks that no cgroup directory and no fd is left).
    assert children_of(os.getpid()) == []


@pytest.mark.unit
def test_sizes_are_binary_units() -> None:
    # Read back from the box's cgroup is the root's job (below); here, what a size means, through the core.
    spec = nsbox._nsbox.Spec
    from nsbox._options import prepare

    for text in ["1024K", "256M", "256MiB", "1.5G", "2t", "1048576", 1 << 20]:
        assert isinstance(prepare({"memory_limit": text}, None).spec, spec)
    for text in ["12Q", "1.5.5G", "1 G", "", "0x10M", "1e6"]:
        with pytest.raises(ValueError, match="memory_limit must be"):
            prepare({"memory_limit": text}, None)


def test_a_size_is_the_limit_the_cgroup_gets() -> None:
    sizes = {"1M": 1 << 20, "256M": 256 << 20, "1.5G": 3 << 29, "4096K": 4 << 20, 100 << 20: 100 << 20}
    for size, expected in sizes.items():
        with running(["sleep", "60"], memory_limit=size) as box:
            (memory,) = [Path(p) for p in box._cgroup.paths if "/memory/" in p]  # type: ignore[union-attr]
            assert int((memory / "memory.limit_in_bytes").read_text()) == expected


# -- Where the box's cgroup is: both sides --------------------------------------------------------------------


def test_the_box_is_in_a_cgroup_of_its_own_beneath_the_callers() -> None:
    ours = cgroup_lines()
    with running(["sh", "-c", "cat /proc/self/cgroup; exec sleep 60"], pids_limit=32, stdout=subprocess.PIPE) as box:
        assert box.stdout is not None
        inside = lines_inside(box.stdout.read1().decode())  # type: ignore[attr-defined]
        host_view = cgroup_lines(box.pid)
        made = box_cgroups()
    # Host side: the box's own directory, beneath ours, in the pids hierarchy and in cpuacct (for its CPU time).
    assert [p.parent for p in made] == sorted(cgroup_dirs()[c] for c in ("cpuacct", "pids"))
    assert host_view["pids"] == f"{ours['pids'].rstrip('/')}/{made[0].name}"
    assert host_view["cpuacct"] == f"{ours['cpuacct'].rstrip('/')}/{made[0].name}"
    # The other hierarchies are the caller's; and inside (no cgroup namespace) the box sees what the host sees.
    assert {k: v for k, v in host_view.items() if k not in ("pids", "cpuacct")} == {
        k: v for k, v in ours.items() if k not in ("pids", "cpuacct")
    }
    assert inside == host_view
    # Control: without limits, no cgroup of its own.
    control = nsbox.run(["cat", "/proc/self/cgroup"], pid=True, capture_output=True, text=True, check=True)
    assert lines_inside(control.stdout) == ours


def test_with_a_cgroup_namespace_the_box_sees_its_own_cgroup_as_the_root() -> None:
    script = "cat /proc/self/cgroup; echo; exec sleep 60"
    with running(["sh", "-c", script], cgroup=True, memory_limit="64M", stdout=subprocess.PIPE) as box:
        assert box.stdout is not None
        inside = lines_inside(box.stdout.read1().decode().strip())  # type: ignore[attr-defined]
        host_view = cgroup_lines(box.pid)
        (made,) = {p.name for p in box_cgroups()}
    # Inside: every hierarchy at "/", its own memory cgroup included (the namespace was made after entering it).
    assert set(inside.values()) == {"/"}
    # Host side: that "/" is the box's own cgroup.
    assert host_view["memory"].endswith(f"/{made}")
    # Control: without the cgroup namespace, the box sees the host's path of its cgroup.
    r = nsbox.run(["cat", "/proc/self/cgroup"], memory_limit="64M", capture_output=True, text=True, check=True)
    assert lines_inside(r.stdout)["memory"].startswith(cgroup_lines()["memory"].rstrip("/") + "/nsbox-")
    # sandbox=True (a cgroup namespace among the rest) with limits, likewise.
    r = nsbox.run(["cat", "/proc/self/cgroup"], sandbox=True, pids_limit=16, capture_output=True, text=True, check=True)
    assert set(lines_inside(r.stdout).values()) == {"/"} and r.usage.processes == 1
    # nsbox.call's fork likewise: in its cgroup first, the namespace after.
    inside = lines_inside(nsbox.call(read_own_cgroups, cgroup=True, pid=True, memory_limit="64M"))
    assert set(inside.values()) == {"/"}
    inside = lines_inside(nsbox.call(read_own_cgroups, pid=True, memory_limit="64M"))
    assert "/nsbox-" in inside["memory"]


def read_own_cgroups() -> str:
    with open("/proc/self/cgroup") as f:
        return f.read()


def test_the_cgroup_is_entered_before_the_command_runs_in_every_shape_of_box() -> None:
    # A second clone (pid with init), the helper (init), a user namespace, a network namespace: every process of the
    # box is in its cgroup, so the count the kernel keeps of the box is exactly the processes shown inside.
    for options in [{}, {"pid": True}, {"init": True}, {"user": True, "pid": True}, {"net": True, "uts": True}]:
        r = nsbox.run(
            ["sh", "-c", "cat /proc/self/cgroup"], pids_limit=8, **options, capture_output=True, text=True, check=True
        )
        assert isinstance(r, nsbox.CompletedBox)
        assert "/nsbox-" in lines_inside(r.stdout)["pids"], options
        assert r.usage.processes is not None and 1 <= r.usage.processes <= 3, (options, r.usage)


def test_an_exec_into_a_box_enters_its_cgroup_and_is_held_by_its_limits(python: str) -> None:
    with running(["sleep", "60"], pid=True, pids_limit=8, memory_limit="64M") as box:
        made = {p.name for p in box_cgroups()}
        r = box.exec(["cat", "/proc/self/cgroup"], capture_output=True, text=True, check=True)
        assert {path.rsplit("/", 1)[-1] for path in lines_inside(r.stdout).values()} >= made
        # The box's memory limit holds the exec'd hog too, and the box knows of the OOM kill.
        assert not box.oom_killed
        assert box.exec([python, "-c", MEMORY_HOG, "400"], capture_output=True).returncode == -signal.SIGKILL
        assert box.oom_killed
        with box.exec_popen(["cat", "/proc/self/cgroup"], stdout=subprocess.PIPE, text=True) as child:
            out, _ = child.communicate()
        assert lines_inside(out) == lines_inside(r.stdout)
    # Control: an exec into a box without limits stays in the caller's cgroups.
    with running(["sleep", "60"], pid=True) as box:
        r = box.exec(["cat", "/proc/self/cgroup"], capture_output=True, text=True, check=True)
    assert lines_inside(r.stdout) == cgroup_lines()


# -- A fork bomb under pids_limit -------------------------------------------------------------------------------


def bomb_report(box: nsbox.Popen) -> dict[str, Any]:
    assert box.stdout is not None
    report: dict[str, Any] = json.loads(box.stdout.readline())
    return report


def test_a_fork_bomb_is_contained_by_pids_limit(python: str) -> None:
    with running([python, "-c", FORK_BOMB, str(FORKS)], pids_limit=64, stdout=subprocess.PIPE, text=True) as box:
        report = bomb_report(box)
        # Inside: the bomb got 63 children (64 processes with itself); every other fork failed with EAGAIN.
        assert report["made"] == 63
        assert report["refused"] == [errno.EAGAIN] * (FORKS - 63)
        (pids_dir,) = [Path(p) for p in box._cgroup.paths if "/pids/" in p]  # type: ignore[union-attr]
        left = [int(pid) for pid in (pids_dir / "cgroup.procs").read_text().split()]
        assert len(left) == 64 and box.usage().processes == 64
        # The host keeps spawning while the bomb holds its 64 processes.
        assert subprocess.run(["true"], check=False).returncode == 0
        assert nsbox.run(["true"], pid=True).returncode == 0
    # Killing the box ends the bomb: without a PID namespace its children outlived it, and were killed with the
    # cgroup (they were the bomb's children, now init's).
    assert wait_until(lambda: all(proc_state(pid) in (None, "Z") for pid in left), timeout=10)
    assert box_cgroups() == []
    assert box.usage().processes == 64  # read before the cgroup went


def test_control_the_same_bomb_without_a_limit_forks_every_time(python: str) -> None:
    # With a PID namespace: PID 1's death ends its children.
    with running([python, "-c", FORK_BOMB, str(FORKS)], pid=True, stdout=subprocess.PIPE, text=True) as box:
        assert bomb_report(box) == {"made": FORKS, "refused": []}


def test_a_pids_limit_below_what_the_box_needs_to_start_says_so() -> None:
    # init=True is two processes (the init and the command): one is not enough, and the error says why.
    with pytest.raises(BlockingIOError) as raised:
        nsbox.run(["true"], init=True, pids_limit=1)
    assert (raised.value.step, raised.value.hint) == ("init", "pids_limit_reached")  # type: ignore[attr-defined]
    assert "nsbox's own short-lived setup process included" in str(raised.value)
    assert nsbox.run(["true"], init=True, pids_limit=2).returncode == 0


# -- A memory hog under memory_limit ----------------------------------------------------------------------------


def test_a_memory_hog_is_oom_killed_and_the_caller_is_untouched(python: str) -> None:
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        with running([python, "-c", MEMORY_HOG, "400"], memory_limit="64M", stdout=subprocess.PIPE, text=True) as box:
            out, _ = box.communicate(timeout=60)
        # Inside: it got part of the way, then SIGKILL from the OOM killer.
        assert box.returncode == -signal.SIGKILL
        assert "done" not in out and 0 < len(out.split()) < 64 // 8
        assert box.oom_killed
        usage = box.usage()
        assert usage.memory_peak is not None and 48 << 20 < usage.memory_peak <= 64 << 20
        # The caller and a process beside it are untouched.
        assert proc_state(bystander.pid) not in (None, "Z")
        assert len(bytearray(128 << 20)) == 128 << 20
    finally:
        kill_and_reap(bystander)


def test_control_the_same_hog_without_a_limit_gets_its_memory(python: str) -> None:
    r = nsbox.run([python, "-c", MEMORY_HOG, "104"], capture_output=True, text=True, check=True)
    assert r.stdout.split()[-2:] == ["104", "done"]
    # And under a limit it stays below, the same hog is not killed.
    r = nsbox.run([python, "-c", MEMORY_HOG, "104"], memory_limit="256M", capture_output=True, text=True, check=True)
    assert isinstance(r, nsbox.CompletedBox) and not r.oom_killed
    assert r.usage.memory_peak is not None and 104 << 20 < r.usage.memory_peak < 256 << 20


def test_run_and_call_report_the_oom_kill(python: str) -> None:
    r = nsbox.run([python, "-c", MEMORY_HOG, "400"], memory_limit="64M", capture_output=True)
    assert isinstance(r, nsbox.CompletedBox) and isinstance(r, subprocess.CompletedProcess)
    assert (r.returncode, r.oom_killed) == (-signal.SIGKILL, True)

    def hog() -> int:
        held = [bytearray(b"x" * (8 << 20)) for _ in range(50)]
        return len(held)

    with pytest.raises(nsbox.BoxCrashed, match="killed by SIGKILL \\(the OOM killer of memory_limit\\)") as crashed:
        nsbox.call(hog, memory_limit="64M")
    assert crashed.value.oom_killed
    assert nsbox.call(hog, memory_limit="1G") == 50


# -- CPU time under cpu_limit -----------------------------------------------------------------------------------


def cpu_share(**options: Any) -> float:
    """The CPUs a busy loop used in a box over WINDOW seconds, from its cgroup's CPU time (cpuacct.usage)."""
    started = time.monotonic()
    with running(BUSY_LOOP, start_new_session=True, **options) as box:
        # With autogroups, the scheduler shares a CPU between sessions first (nice counts within one): the box's
        # session of its own gets the high priority too.
        autogroup = Path(f"/proc/{box.pid}/autogroup")
        if autogroup.exists():
            autogroup.write_text(HIGH_PRIORITY)
        with pytest.raises(subprocess.TimeoutExpired):
            box.wait(timeout=WINDOW)
        used = box.usage().cpu_time
        elapsed = time.monotonic() - started
    assert used is not None
    return used / elapsed


def test_cpu_limit_holds_a_busy_loop_to_a_quarter_of_a_cpu() -> None:
    share = cpu_share(cpu_limit=0.25)
    assert 0.15 <= share <= 0.35, share


def test_control_a_busy_loop_without_a_cpu_limit_takes_a_whole_cpu() -> None:
    # A cgroup for its counters (pids_limit), no CPU limit. Its priority keeps it ahead of busy neighbours (a load
    # test beside this one); the limited box above has it too and still gets no more than its quota.
    share = cpu_share(pids_limit=16)
    assert share > 0.6, share


# -- Removal on every reaping path ------------------------------------------------------------------------------


def test_the_cgroup_goes_on_every_path_that_reaps_the_box() -> None:
    def made_and_gone(reap: Any) -> None:
        box = nsbox.Popen(["sleep", "60"], pids_limit=8)
        assert len(box_cgroups()) == 2  # pids, and cpuacct for the CPU time
        reap(box)
        assert box.returncode is not None
        assert box_cgroups() == []
        assert box.usage().cpu_time is not None  # the final figures stay

    made_and_gone(lambda b: (b.kill(), b.wait()))
    made_and_gone(lambda b: (b.kill(), wait_until(lambda: b.poll() is not None)))
    made_and_gone(lambda b: nsbox._nsbox.kill_and_reap(b))
    made_and_gone(lambda b: (b.kill(), os.waitpid(b.pid, 0), b.poll()))  # reaped by someone else: ECHILD
    # A timeout of run: the box is killed, reaped, and its cgroup removed.
    with pytest.raises(subprocess.TimeoutExpired):
        nsbox.run(["sleep", "60"], pids_limit=8, timeout=0.2)
    assert box_cgroups() == []
    # A failed start leaves nothing either.
    with pytest.raises(FileNotFoundError):
        nsbox.Popen(["/nonexistent/program"], pids_limit=8)
    # And a call.
    assert nsbox.call(os.getpid, pid=True, pids_limit=8) == 1


def test_orphans_of_a_box_without_a_pid_namespace_are_killed_when_it_is_reaped() -> None:
    # The box's shell leaves a sleep behind (it would outlive the box), prints its PID and exits.
    orphan_maker = ["sh", "-c", "sleep 60 >/dev/null 2>&1 & echo $!"]
    r = nsbox.run(orphan_maker, pids_limit=8, capture_output=True, text=True, check=True)
    orphan = int(r.stdout)
    assert wait_until(lambda: proc_state(orphan) in (None, "Z"), timeout=10)
    # Control: without limits, the same orphan lives on (until this test kills it).
    r = nsbox.run(orphan_maker, capture_output=True, text=True, check=True)
    orphan = int(r.stdout)
    try:
        assert proc_state(orphan) not in (None, "Z")
    finally:
        os.kill(orphan, signal.SIGKILL)


def test_an_empty_cgroup_of_a_caller_killed_with_sigkill_is_swept_by_the_next_box(python: str) -> None:
    # A caller that is SIGKILLed while its box runs cannot remove the box's cgroups. Its box dies with it, but what
    # that box left behind (no PID namespace) keeps them in use; once that is gone, the next box of any caller
    # (another test worker's, here, as well as ours) removes them.
    box = "sleep 60 </dev/null >/dev/null 2>&1 & echo $!; exec sleep 60"
    code = f"import nsbox; nsbox.Popen(['sh', '-c', {box!r}], pids_limit=8); input()"
    caller = subprocess.Popen([python, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert caller.stdout is not None
        orphan = int(caller.stdout.readline())
        left = box_cgroups(caller.pid)
        assert len(left) == 2
        caller.kill()
        caller.wait()
        # The box died with its caller; its orphan holds the cgroups, which no sweep removes meanwhile.
        assert proc_state(orphan) not in (None, "Z")
        assert nsbox.run(["true"], pids_limit=8).returncode == 0
        assert all(p.exists() for p in left)
        # Once it is gone the cgroups are empty, and the next box sweeps them away.
        os.kill(orphan, signal.SIGKILL)
        assert wait_until(lambda: all(not members(p) for p in left))
        assert nsbox.run(["true"], pids_limit=8).returncode == 0
        assert not any(p.exists() for p in left)
    finally:
        kill_and_reap(caller)
        for path in box_cgroups(caller.pid):
            for pid in members(path):
                os.kill(pid, signal.SIGKILL)
            wait_until(lambda path=path: not members(path))
            with contextlib.suppress(FileNotFoundError):
                path.rmdir()


def members(cgroup: Path) -> list[int]:
    """The processes in ``cgroup`` (none if it is gone: another test worker's box may sweep it any time)."""
    try:
        return [int(pid) for pid in (cgroup / "cgroup.procs").read_text().split()]
    except FileNotFoundError:
        return []


def test_a_forked_copy_of_the_caller_leaves_the_box_and_its_cgroup_alone() -> None:
    with running(["sleep", "60"], pids_limit=8) as box:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # Python 3.12+: forking a process with threads
            pid = os.fork()
        if pid == 0:
            # The copy finishes its copy of the cgroup (as dropping the Popen at its exit would): nothing happens.
            box._cgroup.finish()  # type: ignore[union-attr]
            os._exit(0)
        assert os.waitpid(pid, 0)[1] == 0
        assert box.poll() is None and len(box_cgroups()) == 2
    assert box_cgroups() == []


# -- Without root ----------------------------------------------------------------------------------------------


def test_rootless_limits_without_a_delegated_cgroup_are_a_permission_error(rootless: Rootless) -> None:
    out = rootless("""
        from helpers.cgroups import box_cgroups
        out = {"pid": os.getpid()}
        fds = sorted(os.listdir("/proc/self/fd"))
        try:
            nsbox.run(["true"], pid=True, memory_limit="64M", pids_limit=8)
        except OSError as exc:
            out["error"] = [type(exc).__name__, exc.errno, str(exc), exc.step, exc.hint]
        out["left"] = [str(p) for p in box_cgroups()]
        out["fds_kept"] = sorted(os.listdir("/proc/self/fd")) == fds
        # Control: the same box without limits runs.
        out["control"] = nsbox.run(["true"], pid=True).returncode
        emit(out)
    """)
    kind, code, message, step, hint = out["error"]
    assert (kind, code, step, hint) == ("PermissionError", errno.EACCES, "cgroup", "cgroup_needs_delegation")
    assert "cannot create the box's cgroup in '/sys/fs/cgroup/" in message
    assert "systemd-run --user --scope -p Delegate=yes" in message
    assert out["left"] == [] and box_cgroups(out["pid"]) == []
    assert out["fds_kept"]
    assert out["control"] == 0


# -- The command line and the pytest marker ----------------------------------------------------------------------


def test_the_command_line_takes_memory_pids_and_cpus() -> None:
    cli = root_runner()
    r = cli.nsbox("--memory=64M", "--pids", "16", "--cpus=0.5", "--", "cat", "/proc/self/cgroup")
    assert r.returncode == 0, r.stderr
    inside = lines_inside(r.stdout)
    assert all("/nsbox-" in inside[c] for c in ("memory", "pids", "cpu", "cpuacct"))
    for args, words in [
        (["--memory=12Q"], "nsbox: --memory: the size must be a number of bytes or a size such as '256M'"),
        (["--pids=0"], "nsbox: --pids: the number must be from 1 to 4194304, not 0"),
        (["--pids=x"], "nsbox: --pids: invalid int value: 'x'"),
        (["--cpus=0"], "nsbox: --cpus: the number must be a number of CPUs from 0.01"),
    ]:
        r = cli.nsbox(*args, "true")
        assert (r.returncode, r.stderr.startswith(words)) == (2, True), r.stderr


@pytest.mark.nsbox(pid=True, pids_limit=16, memory_limit="128M")
def test_the_pytest_marker_takes_limits() -> None:
    with open("/proc/self/cgroup") as f:
        inside = lines_inside(f.read())
    assert "/nsbox-" in inside["pids"] and "/nsbox-" in inside["memory"]
    with open(f"/sys/fs/cgroup/pids{inside['pids']}/pids.max") as f:
        assert f.read().strip() == "16"
    assert sys.modules["nsbox"] is nsbox
