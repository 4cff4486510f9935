"""Hostile input and ways out of a box: a box must not reach the host, whatever it or its caller is given.

Root and rootless wherever both apply. Each test also looks at the host side: its mounts, its files, its
processes, its terminal.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

import nsbox
from helpers.mounts import host_mounts, mountinfo, unmount_new_mounts_under
from helpers.procs import kill_and_reap, proc_comm, start_box
from helpers.rootless import SIDES, Body, Rootless

# ---------------------------------------------------------------------------------------------------------------
# Property-based: any input works, or is refused before anything is forked; never a crash or a hang
#
# The property runs in a driver that is PID 1 of its own PID namespace, where ns_last_pid counts exactly the
# processes the driver (and its boxes) made: a ValueError or TypeError must leave it unchanged.

_PROPERTY = r"""
import json, os, sys
from collections import Counter
from hypothesis import HealthCheck, given, settings, strategies as st
import nsbox

EXAMPLES = int(sys.argv[1])


def last_pid():
    with open("/proc/sys/kernel/ns_last_pid") as f:
        return int(f.read())


def leftovers():
    # Children of this process (zombies too: this driver is PID 1 of its namespace), and its open fds.
    stats = [open(f"/proc/{p}/stat").read() for p in os.listdir("/proc") if p.isdigit() and p != "1"]
    return [s for s in stats if s.rsplit(")", 1)[1].split()[1] == "1"], sorted(os.listdir("/proc/self/fd"))


words = st.one_of(st.text(max_size=10), st.binary(max_size=10))
junk = st.one_of(st.none(), st.integers(-3, 3), st.floats(), words, st.lists(st.integers(), max_size=2),
                 st.just(object()))
ids = st.one_of(st.sampled_from([0, 1, 1000, 65534, 100000, 2**32 - 2]), st.integers(-2, 2**32 + 2))


def option_dicts(wrong_types):
    # Values of the documented types (which may still be wrong: overlapping maps, a 70-byte hostname ...), or,
    # with wrong_types, anything at all.
    def of(strategy):
        return st.one_of(strategy, junk) if wrong_types else strategy

    flag = of(st.booleans())
    id_map = of(st.one_of(st.none(), st.lists(st.tuples(ids, ids, ids), max_size=3)))
    offset = of(st.one_of(st.none(), st.floats(), st.integers(-10**16, 10**16), st.sampled_from([-1e9, 0.5, 86400])))
    return st.fixed_dictionaries({}, optional={
        "pid": flag, "mount": flag, "uts": flag, "ipc": flag, "net": flag, "cgroup": flag, "time": flag,
        "mount_proc": flag, "init": flag, "user": of(st.one_of(st.none(), st.booleans())),
        "propagation": of(st.one_of(st.sampled_from(["private", "slave", "shared", "unchanged"]), st.text(max_size=8))),
        "hostname": of(st.one_of(st.none(), st.text(max_size=70), st.binary(max_size=70), st.just("box"))),
        "uid_map": id_map, "gid_map": id_map, "setgroups": of(st.one_of(st.sampled_from(["allow", "deny"]), words)),
        "monotonic_offset": offset, "boottime_offset": offset, "start_new_session": flag,
        "pass_fds": of(st.lists(st.integers(-2, 1100), max_size=2)),
        "cwd": of(st.one_of(st.none(), st.sampled_from(["/", "/tmp", "/nonexistent"]), words)),
    })


options = st.one_of(option_dicts(wrong_types=False), option_dicts(wrong_types=True))
environments = st.one_of(st.none(), st.dictionaries(words, words, max_size=3))
outcomes = Counter()


@settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(printf=st.sampled_from([True, True, True, False]), args=st.lists(words, max_size=4), env=environments,
       options=options)
def works_or_is_refused_before_forking(printf, args, env, options):
    argv = ["printf", "%s\\0", *args] if printf else args
    before, pid_before = leftovers(), last_pid()
    try:
        r = nsbox.run(argv, env=env, capture_output=True, timeout=20, **options)
    except (ValueError, TypeError, KeyError) as e:  # KeyError: subprocess's, for a user name it cannot find
        assert last_pid() == pid_before, f"{type(e).__name__} raised after forking: {e}"
        outcomes[type(e).__name__] += 1
    except OSError as e:
        outcomes["OSError"] += 1
    else:
        if printf:
            printed = b"".join(os.fsencode(a) + b"\0" for a in args) if args else b"\0"
            assert (r.returncode, r.stdout) == (0, printed), r
        outcomes["ran"] += 1
    after = leftovers()
    assert after == before, f"a child or an fd was left behind: {before} -> {after}"


nsbox.run(["true"], init=True, time=True)  # warm up: a spawner thread, the helper's memfd
works_or_is_refused_before_forking()
print(json.dumps(outcomes))
"""


def _check_outcomes(outcomes: dict[str, int], examples: int) -> None:
    # Every branch was reached, so the property was tested on inputs that run, and on each kind of refusal.
    assert sum(outcomes.values()) >= examples, outcomes
    assert all(outcomes.get(kind, 0) > 0 for kind in ("ran", "ValueError", "TypeError", "OSError")), outcomes


def test_any_input_runs_or_is_refused_before_forking(python: str, tmp_path: Path) -> None:
    examples = 500
    r = nsbox.run(
        [python, "-c", _PROPERTY, str(examples)],
        pid=True,
        mount_proc=True,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert r.returncode == 0, f"the property failed (or the interpreter crashed: {r.returncode}):\n{r.stderr}"
    _check_outcomes(json.loads(r.stdout), examples)


def test_rootless_any_input_runs_or_is_refused_before_forking(rootless_hypothesis: Rootless) -> None:
    examples = 300
    # The driver keeps uid 65534 (mapped to itself, without capabilities) in its own PID namespace.
    seen = rootless_hypothesis(
        f"""
        r = nsbox.run([sys.executable, "-c", {_PROPERTY!r}, "{examples}"], pid=True, mount_proc=True,
                      uid_map=[(65534, 65534, 1)], gid_map=[(65534, 65534, 1)], capture_output=True, text=True,
                      timeout=150)
        emit({{"rc": r.returncode, "out": r.stdout, "err": r.stderr}})
        """
    )
    assert seen["rc"] == 0, f"the property failed (or the interpreter crashed: {seen['rc']}):\n{seen['err']}"
    _check_outcomes(json.loads(seen["out"]), examples)


# ---------------------------------------------------------------------------------------------------------------
# No mount leak, with every propagation value

PROPAGATIONS = ["private", "slave", "shared", "unchanged"]
#: The box mounts a tmpfs on a host directory and on /mnt, and a proc on /proc, then waits (stdin).
_MOUNT_IN_BOX = (
    "mount -t tmpfs nsbox-leak-tmpfs {target} && mount -t tmpfs nsbox-leak-tmpfs /mnt && "
    "mount -t proc nsbox-leak-proc /proc && echo mounted && read line || :"
)


@pytest.mark.parametrize("propagation", PROPAGATIONS)
def test_tmpfs_and_proc_mounted_in_a_box_never_reach_the_host(world_tmp: Path, propagation: str) -> None:
    target = world_tmp / "target"
    target.mkdir()
    before, watched = mountinfo(), host_mounts(world_tmp)
    box = start_box(
        ["sh", "-c", _MOUNT_IN_BOX.format(target=target)],
        "mounted\n",
        pid=True,
        mount_proc=True,
        propagation=propagation,
        stdin=subprocess.PIPE,
    )
    try:
        with open(f"/proc/{box.pid}/mountinfo") as f:
            inside = f.read()
        assert inside.count(" - tmpfs nsbox-leak-tmpfs ") == 2 and " - proc nsbox-leak-proc " in inside
        assert host_mounts(world_tmp) == watched, "a mount made in the box appeared on the host while the box ran"
        assert box.stdin is not None
        box.stdin.close()
        assert box.wait(timeout=10) == 0
        assert host_mounts(world_tmp) == watched
        assert os.listdir(target) == []
    finally:
        kill_and_reap(box)
        leaked = unmount_new_mounts_under(before, world_tmp)
    assert leaked == []


#: In a box whose / is private, made shared (a host as systemd sets it up), inner boxes mount tmpfs and proc.
_UNDER_A_SHARED_PARENT = r"""
import json, subprocess
import nsbox

subprocess.run(["mount", "--make-rshared", "/"], check=True)
parent = [line.split() for line in open("/proc/self/mountinfo") if line.split()[4] == "/"][-1][6]
report = {"parent": parent}
for propagation in ["private", "slave", "shared", "unchanged"]:
    before = open("/proc/self/mountinfo").read().splitlines()
    box = nsbox.Popen(["sh", "-c", "mount -t tmpfs nsbox-leak-tmpfs /mnt && mount -t proc nsbox-leak-proc /proc && "
                       "echo mounted && read line || :"], pid=True, mount_proc=True, propagation=propagation,
                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    box.stdout.readline()
    during = open("/proc/self/mountinfo").read().splitlines()
    box.stdin.close()
    box.wait()
    report[propagation] = [line.split()[4] for line in during if line not in before]
print(json.dumps(report))
"""


def _check_shared_parent(report: dict[str, Any]) -> None:
    assert report["parent"].startswith("shared:"), report
    assert report["private"] == [] and report["slave"] == [], report
    # The control: shared and unchanged do propagate to a shared parent, as documented, so a leak would show.
    assert "/mnt" in report["shared"] and "/mnt" in report["unchanged"], report


def test_private_and_slave_leak_nothing_to_a_parent_whose_root_is_shared(python: str) -> None:
    before = host_mounts()
    # The outer box is cut off from the host (private), then makes its own / shared.
    r = nsbox.run([python, "-c", _UNDER_A_SHARED_PARENT], mount=True, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    _check_shared_parent(json.loads(r.stdout))
    assert host_mounts() == before


def test_rootless_mounts_never_reach_the_host_or_a_shared_parent(rootless: Rootless, world_tmp: Path) -> None:
    target = world_tmp / "target"
    target.mkdir()
    before, watched = mountinfo(), host_mounts(world_tmp)
    try:
        seen = rootless(
            f"""
            direct = {{}}
            for propagation in {PROPAGATIONS!r}:
                before = host_mounts({str(world_tmp)!r})
                box = nsbox.Popen(["sh", "-c", {_MOUNT_IN_BOX.format(target=target)!r}], pid=True, mount_proc=True,
                                  propagation=propagation, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                mounted = box.stdout.readline()
                during = host_mounts({str(world_tmp)!r})
                box.stdin.close()
                direct[propagation] = [mounted, box.wait(), during == before]
            r = nsbox.run([sys.executable, "-c", {_UNDER_A_SHARED_PARENT!r}], mount=True, capture_output=True,
                          text=True)
            emit({{"direct": direct, "rc": r.returncode, "out": r.stdout, "err": r.stderr}})
            """
        )
    finally:
        leaked = unmount_new_mounts_under(before, world_tmp)
    assert seen["direct"] == {p: ["mounted\n", 0, True] for p in PROPAGATIONS}
    assert seen["rc"] == 0, seen["err"]
    _check_shared_parent(json.loads(seen["out"]))
    assert leaked == [] and host_mounts(world_tmp) == watched


# ---------------------------------------------------------------------------------------------------------------
# setgroups, groups and capabilities


def _id_map_writes(trace: str) -> list[str]:
    """``file=text`` for each write to a setgroups/uid_map/gid_map file in an ``strace -f`` log, in order."""
    opened: dict[tuple[str, str], str] = {}
    writes = []
    for line in trace.splitlines():
        m = re.match(r'(\d+) +openat\(AT_FDCWD, "/proc/\w+/(setgroups|uid_map|gid_map)", O_WRONLY.*\) = (\d+)$', line)
        if m:
            opened[(m.group(1), m.group(3))] = m.group(2)
            continue
        m = re.match(r'(\d+) +write\((\d+), "([^"]*)"', line)
        if m and (m.group(1), m.group(2)) in opened:
            writes.append(f"{opened.pop((m.group(1), m.group(2)))}={m.group(3)}")
    return writes


_TRACE = ["strace", "-f", "-qq", "-s", "64", "-e", "trace=openat,write", "-o"]


@pytest.mark.parametrize(
    ("options", "uid_map"),
    [
        ({"user": True}, "0 0 1\\n"),  # the child writes its own maps
        ({"uid_map": [(0, 100000, 65536)], "gid_map": [(0, 100000, 65536)]}, "0 100000 65536\\n"),  # the parent does
    ],
)
def test_setgroups_deny_is_written_before_the_gid_map(python: str, tmp_path: Path, options: Any, uid_map: str) -> None:
    assert shutil.which("strace"), "strace is needed for this test: apt-get install strace"
    log = tmp_path / "trace"
    code = f"import nsbox; nsbox.run(['true'], check=True, **{options!r})"
    subprocess.run([*_TRACE, str(log), python, "-c", code], check=True, timeout=60)
    writes = _id_map_writes(log.read_text())
    assert writes == ["setgroups=deny", f"uid_map={uid_map}", f"gid_map={uid_map}"], writes


def test_rootless_setgroups_deny_is_written_before_the_gid_map(rootless: Rootless, world_tmp: Path) -> None:
    log = world_tmp / "trace"
    rootless(
        f"""
        subprocess.run([*{_TRACE!r}, {str(log)!r}, sys.executable, "-c", "import nsbox; nsbox.run(['true'], net=True)"],
                       check=True, timeout=60)
        emit(None)
        """
    )
    assert _id_map_writes(log.read_text()) == ["setgroups=deny", "uid_map=0 65534 1\\n", "gid_map=0 65534 1\\n"]


#: Run as root inside a rootless box: each attempt on a root-owned host file, and at gaining groups.
_GAIN = r"""
import json, os, sys
base = sys.argv[1]
def attempt(call):
    try:
        call()
        return "done"
    except OSError as e:
        return type(e).__name__
print(json.dumps({
    "ids": [os.getuid(), os.getgid(), os.getgroups()],
    "append": attempt(lambda: open(f"{base}/root-file", "a").write("box")),
    "chmod": attempt(lambda: os.chmod(f"{base}/root-file", 0o666)),
    "chown": attempt(lambda: os.chown(f"{base}/root-file", 0, 0)),
    "read-secret": attempt(lambda: open(f"{base}/root-secret").read()),
    "create-in-root-dir": attempt(lambda: open(f"{base}/root-dir/new", "w")),
    "setgroups-0": attempt(lambda: os.setgroups([0])),
    "setgroups-empty": attempt(lambda: os.setgroups([])),
    "groups-file": open("/proc/self/setgroups").read().strip(),
}))
"""


def test_rootless_box_cannot_gain_groups_or_write_root_owned_host_files(rootless: Rootless, world_tmp: Path) -> None:
    (world_tmp / "root-file").write_text("root\n")
    (world_tmp / "root-file").chmod(0o644)
    (world_tmp / "root-secret").write_text("secret\n")
    (world_tmp / "root-secret").chmod(0o600)
    (world_tmp / "root-dir").mkdir(mode=0o755)
    seen = rootless(
        f"""
        r = nsbox.run([sys.executable, "-c", {_GAIN!r}, {str(world_tmp)!r}], user=True, pid=True, net=True,
                      capture_output=True, text=True)
        emit({{"rc": r.returncode, "out": r.stdout, "err": r.stderr}})
        """
    )
    assert seen["rc"] == 0, seen["err"]
    report = json.loads(seen["out"])
    assert report.pop("ids") == [0, 0, []]  # root inside, without supplementary groups (the caller had none)
    assert report.pop("groups-file") == "deny"
    assert report == {
        "append": "PermissionError",
        "chmod": "PermissionError",
        "chown": "PermissionError",
        "read-secret": "PermissionError",
        "create-in-root-dir": "PermissionError",
        "setgroups-0": "PermissionError",
        "setgroups-empty": "PermissionError",
    }
    assert (world_tmp / "root-file").read_text() == "root\n"
    assert (world_tmp / "root-file").stat().st_mode & 0o777 == 0o644
    assert os.listdir(world_tmp / "root-dir") == []


# ---------------------------------------------------------------------------------------------------------------
# The box cannot signal, ptrace or see processes outside its PID namespace

#: Run in a box, given a host PID: what the box can do to that process.
_REACH = r"""
import ctypes, errno, json, os, signal, sys
target = int(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)


def attempt(call):
    try:
        call()
        return "done"
    except OSError as e:
        return errno.errorcode[e.errno]


def seize():  # PTRACE_SEIZE does not stop the tracee; our exit detaches it
    if libc.ptrace(0x4206, target, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "ptrace")


print(json.dumps({
    "me": os.getpid(),
    "seen": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
    "in_proc": os.path.exists(f"/proc/{target}"),
    "signal": attempt(lambda: os.kill(target, signal.SIGCONT)),
    "pidfd": attempt(lambda: os.close(os.pidfd_open(target))),
    "ptrace": attempt(seize),
}))
"""

REACH_OPTIONS = {
    "pid": {"pid": True, "mount_proc": True},
    "init": {"init": True, "mount_proc": True},
    "user-pid": {"user": True, "pid": True, "mount_proc": True, "net": True},
}


def _check_unreachable(report: dict[str, Any]) -> None:
    assert report["seen"] == list(range(1, report["me"] + 1)), "the box sees processes other than its own"
    assert report["in_proc"] is False
    assert (report["signal"], report["pidfd"], report["ptrace"]) == ("ESRCH", "ESRCH", "ESRCH"), report


@pytest.mark.parametrize("kind", [*REACH_OPTIONS, "control-no-pid-namespace"])
def test_box_cannot_signal_ptrace_or_see_a_host_process(python: str, kind: str) -> None:
    target = subprocess.Popen(["sleep", "1000"])
    try:
        options = REACH_OPTIONS.get(kind, {})
        r = nsbox.run([python, "-c", _REACH, str(target.pid)], capture_output=True, text=True, **options)
        assert r.returncode == 0, r.stderr
        report = json.loads(r.stdout)
        if kind.startswith("control"):
            # Without a PID namespace the same probe reaches the process: the probe can tell.
            assert target.pid in report["seen"] and report["in_proc"]
            assert (report["signal"], report["pidfd"], report["ptrace"]) == ("done", "done", "done")
        else:
            _check_unreachable(report)
        assert target.poll() is None and proc_comm(target.pid) == "sleep"
    finally:
        kill_and_reap(target)


def test_rootless_box_cannot_signal_ptrace_or_see_a_process_of_the_same_user(rootless: Rootless) -> None:
    seen = rootless(
        f"""
        target = subprocess.Popen(["sleep", "1000"])
        try:
            r = nsbox.run([sys.executable, "-c", {_REACH!r}, str(target.pid)], pid=True, mount_proc=True,
                          capture_output=True, text=True)
            emit({{"rc": r.returncode, "out": r.stdout, "err": r.stderr, "alive": target.poll() is None}})
        finally:
            target.kill()
            target.wait()
        """
    )
    assert seen["rc"] == 0, seen["err"]
    _check_unreachable(json.loads(seen["out"]))
    assert seen["alive"]


# ---------------------------------------------------------------------------------------------------------------
# TIOCSTI: a box in a new session cannot push input into the caller's terminal
#
# The caller is a session leader whose controlling terminal is a fresh pty; the box gets that terminal as
# stdin and tries to inject a character (``bodies.TIOCSTI_CALLER``). A box that is real root (no user namespace)
# holds CAP_SYS_ADMIN, which the kernel lets use TIOCSTI on any terminal, so the boxes here have a user namespace
# (always so without root).


def _check_tiocsti(report: dict[str, Any], new_session: bool) -> None:
    assert report["ours"], "the caller did not get the pty as its controlling terminal"
    if new_session:
        assert (report["box"], report["queued"]) == ("Operation not permitted", 0), report
    else:
        # The control: in the caller's session the same box can inject, so the probe can tell.
        assert (report["box"], report["queued"]) == ("injected", 1), report


#: The box's options beside ``start_new_session``: as root, a user namespace (see above) and a PID namespace.
_TIOCSTI_OPTIONS: dict[str, dict[str, bool]] = {"root": {"user": True, "pid": True}, "rootless": {}}


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("new_session", [True, False])
def test_box_in_a_new_session_cannot_inject_input_into_the_callers_terminal(
    body: Body, side: str, new_session: bool
) -> None:
    options = {**_TIOCSTI_OPTIONS[side], "start_new_session": new_session}
    seen = body(side, "tiocsti_from_a_box", options=options)
    assert seen["rc"] == 0, seen["err"]
    _check_tiocsti(json.loads(seen["out"]), new_session)
