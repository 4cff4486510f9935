"""The spawn core under the conditions a review and real clients found it failing in.

Each test makes the situation for real (a caller killed after an id change, a fork while the spawner is busy, a
caller with host groups, ``SIGCHLD`` ignored, no threads left, an interrupt storm ...) and looks from both sides:
what the box sees and what the host sees. Most run a small driver program in a fresh interpreter, which prints a
JSON report.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import nsbox
from helpers.drivers import PRELUDE, drive
from helpers.procs import children_of, kill_and_reap, proc_state, wait_gone, wait_until
from helpers.rootless import Rootless

UID_RANGE = [(0, 100_000, 65536)]


# ---------------------------------------------------------------------------------------------------------------
# 1. The parent-death signal survives the change of ids


KILLED_CALLER = """
import nsbox, os, sys, time
how = sys.argv[1]
maps = {"uid_map": [(0, 100000, 65536)], "gid_map": [(0, 100000, 65536)]}
def report_and_sleep():
    print(os.getpid(), flush=True)
    time.sleep(300)
if how == "popen":
    box = nsbox.Popen(["sh", "-c", "echo $$; exec sleep 300"], stdout=sys.stdout, **maps)
elif how == "popen-pid":
    box = nsbox.Popen(["sleep", "300"], pid=True, **maps)
    print(box.pid, flush=True)
else:
    nsbox.call(report_and_sleep, **maps)
time.sleep(300)
"""


@pytest.mark.parametrize("how", ["popen", "popen-pid", "call"])
def test_a_box_whose_ids_changed_dies_with_its_killed_caller(how: str) -> None:
    caller = subprocess.Popen([sys.executable, "-c", KILLED_CALLER, how], stdout=subprocess.PIPE, text=True)
    try:
        assert caller.stdout is not None
        box = int(caller.stdout.readline())
        # Host side: the box runs as uid 100000 (0 inside): its credentials did change.
        assert wait_until(lambda: nsbox_uid(box) == 100_000), f"box {box} uid {nsbox_uid(box)}"
        assert nsbox.nspid(box)[0] == box
        caller.kill()
        caller.wait()
        # The kernel clears PR_SET_PDEATHSIG on a change of credentials: it must be set after the last one.
        assert wait_gone(box, proc_comm_of(box), timeout=10), f"box {box} outlived its killed caller"
    finally:
        kill_and_reap(caller)


def nsbox_uid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Uid:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def proc_comm_of(pid: int) -> str:
    with open(f"/proc/{pid}/comm") as f:
        return f.read().strip()


CALLER_DIES_DURING_SETUP = r"""
libc = ctypes.CDLL(None)
libc.prctl(36, 1)  # PR_SET_CHILD_SUBREAPER: the box, orphaned, becomes our child
how, log = sys.argv[1], sys.argv[2]
caller_code = (
    "import nsbox, os\n"
    "maps = dict(uid_map=[(0, 100000, 65536)], gid_map=[(0, 100000, 65536)], hostname='late')\n"
    + ("nsbox.run(['sleep', '300'], **maps)\n" if how == "popen" else
       f"nsbox.call(os.execvp, ('sleep', ['sleep', '300']), pid={how == 'call-pid'}, **maps)\n")
)
# The child's sethostname (after its ids changed, before the death signal is set again) takes 2 s.
strace = subprocess.Popen(["strace", "-f", "-qq", "-o", log, "-e", "trace=sethostname",
                           "-e", "inject=sethostname:delay_enter=2000000", sys.executable, "-c", caller_code])
def in_window():
    try:
        with open(log) as f:
            return "sethostname(" in f.read()
    except FileNotFoundError:
        return False
deadline = time.monotonic() + 60
while not in_window() and time.monotonic() < deadline:
    time.sleep(0.01)
# The caller is strace's child: kill it while the box sits in sethostname.
with open(f"/proc/{strace.pid}/task/{strace.pid}/children") as f:
    caller = int(f.read().split()[0])
os.kill(caller, signal.SIGKILL)
strace.wait()
def survivors():
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[1]) == os.getpid() and fields[0] != "Z":
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    found.append((int(pid), f.read().split(b"\0")[0].decode()))
        except (OSError, ValueError):
            pass
    return found
# Whatever survived is ours now: let it reach its exec (or leave), then look.
deadline = time.monotonic() + 10
while time.monotonic() < deadline and any(cmd != "sleep" for _, cmd in survivors()):
    time.sleep(0.05)
left = survivors()
for pid, _ in left:
    os.kill(pid, signal.SIGKILL)
while True:
    try:
        os.wait()
    except ChildProcessError:
        break
emit({"in_window": in_window(), "left": left})
"""


@pytest.mark.parametrize("how", ["popen", "call", "call-pid"])
def test_a_caller_that_dies_before_the_death_signal_is_set_again_leaves_no_box(how: str, tmp_path: Path) -> None:
    report = drive(CALLER_DIES_DURING_SETUP, how, str(tmp_path / "strace.log"))
    assert report["in_window"], "the box never reached its (slowed) sethostname"
    assert report["left"] == [], report


# ---------------------------------------------------------------------------------------------------------------
# 2. A forked child's boxes are not tied to a thread that exits


FORK_WHILE_SPAWNING = """
import select
stop = threading.Event()
def hammer():
    while not stop.is_set():
        nsbox.run(["true"])
hammers = [threading.Thread(target=hammer) for _ in range(6)]
for t in hammers:
    t.start()
codes = []
for _ in range(int(sys.argv[1])):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        # The box must live its whole life: 20 ms, then exit 7 (SIGKILLed at birth on the old code).
        code = nsbox.run(["sh", "-c", "sleep 0.02; exit 7"], pid=True).returncode
        os.write(w, str(code).encode())
        os._exit(0)
    os.close(w)
    if select.select([r], [], [], 30)[0]:
        codes.append(os.read(r, 16).decode())
    else:
        codes.append("hung")
        os.kill(pid, signal.SIGKILL)
    os.close(r)
    os.waitpid(pid, 0)
stop.set()
for t in hammers:
    t.join()
emit(codes)
"""


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork() with threads, as the test means to
def test_boxes_started_in_a_child_forked_while_the_spawner_was_busy_live_their_whole_life() -> None:
    codes = drive(FORK_WHILE_SPAWNING, "150", env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert len(codes) == 150
    assert set(codes) == {"7"}, f"boxes killed early: {[c for c in codes if c != '7']}"


# ---------------------------------------------------------------------------------------------------------------
# 3. Host supplementary groups are dropped


GROUPS = r"""
os.setgroups([0, 4242])  # a caller with supplementary groups: host root's, and one only it has
path = sys.argv[1]
script = f"grep '^Groups:' /proc/self/status; cat {path} 2>&1 || true"
uid_range = [(0, 100000, 65536)]
def look(**options):
    r = nsbox.run(["sh", "-c", script], capture_output=True, text=True, **options)
    groups, _, read = r.stdout.partition("\n")
    return [r.returncode, groups.split(":", 1)[1].strip(), read.strip()]
def proc_groups(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(line for line in f if line.startswith("Groups:")).split(":", 1)[1].strip()
out = {"control": look()}
for name, options in [
    ("uid range", {"uid_map": uid_range, "gid_map": uid_range}),
    ("uid range, setgroups allowed", {"uid_map": uid_range, "gid_map": uid_range, "setgroups": "allow"}),
    ("user namespace", {"user": True}),
    ("user namespace, pid", {"user": True, "pid": True, "mount_proc": True}),
]:
    out[name] = look(**options)
out["call"] = nsbox.call(os.getgroups, uid_map=uid_range, gid_map=uid_range)
out["call, pid"] = nsbox.call(os.getgroups, uid_map=uid_range, gid_map=uid_range, pid=True)
box = nsbox.Popen(["sleep", "60"], uid_map=uid_range, gid_map=uid_range, pid=True)
out["box, host side"] = proc_groups(box.pid)
exec_out = box.exec(["grep", "^Groups:", "/proc/self/status"], capture_output=True, text=True).stdout
out["exec"] = exec_out.split(":", 1)[1].strip()
box.kill(); box.wait()
emit(out)
"""


def test_a_box_in_a_user_namespace_does_not_keep_the_callers_host_groups(world_tmp: Path) -> None:
    secret = world_tmp / "group-secret"
    secret.write_text("group 4242 only\n")
    os.chown(secret, 0, 4242)
    secret.chmod(0o640)
    seen = drive(GROUPS, str(secret))
    # Control: without a user namespace the box keeps the caller's groups, and group 4242 reads the file.
    assert seen.pop("control") == [0, "0 4242", "group 4242 only"]
    # In a user namespace: no supplementary group, inside or on the host; the file is out of reach.
    for name in ["uid range", "uid range, setgroups allowed"]:
        assert seen.pop(name) == [0, "", "cat: " + str(secret) + ": Permission denied"], name
    for name in ["user namespace", "user namespace, pid"]:  # uid 0 inside is host root: reads as owner
        assert seen.pop(name)[:2] == [0, ""], name
    assert seen == {"call": [], "call, pid": [], "box, host side": "", "exec": ""}


def test_rootless_groups_stay_as_the_kernel_requires(rootless: Rootless) -> None:
    # An unprivileged caller cannot drop its groups, and setgroups is denied inside: its own groups stay.
    seen = rootless(
        """
        r = nsbox.run(["grep", "^Groups:", "/proc/self/status"], pid=True, capture_output=True, text=True)
        emit({"box": r.stdout.split(":", 1)[1].strip(), "host": os.getgroups(), "code": r.returncode})
        """
    )
    assert seen == {"box": "", "host": [], "code": 0}


# ---------------------------------------------------------------------------------------------------------------
# 6. Nothing nsbox holds deadlocks a forked child


FORK_DURING_FIRST_USE = """
import select
hung = 0
for round in range(int(sys.argv[1])):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        # A fresh interpreter's first spawns, with init (the helper's memfd is made once) ...
        os.setpgid(0, 0)  # a group of its own: a hung grandchild goes with it
        os.close(r)
        t = threading.Thread(target=lambda: nsbox.run(["true"], init=True))
        t.start()
        grand = os.fork()  # ... forked while another thread makes it
        if grand == 0:
            nsbox.run(["true"], init=True)
            os._exit(0)
        t.join()
        _, status = os.waitpid(grand, 0)
        os.write(w, b"ok" if status == 0 else b"bad")
        os._exit(0)
    os.close(w)
    ready, _, _ = select.select([r], [], [], 20)
    if not ready:
        hung += 1
        os.killpg(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    os.close(r)
emit(hung)
"""


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_child_forked_during_the_first_spawn_with_init_does_not_hang() -> None:
    assert drive(FORK_DURING_FIRST_USE, "40", env={**os.environ, "PYTHONWARNINGS": "ignore"}, timeout=600) == 0


# ---------------------------------------------------------------------------------------------------------------
# 7. SIGCHLD ignored, or reaped by a handler


SIGCHLD_CASES = """
out = {}
for how in ("ignored", "reaping-handler"):
    if how == "ignored":
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    else:
        def reap(*_):
            try:
                while os.waitpid(-1, os.WNOHANG)[0]:
                    pass
            except ChildProcessError:
                pass
        signal.signal(signal.SIGCHLD, reap)
    results = []
    for options in [{}, {"pid": True}, {"user": True, "hostname": "h"}]:
        results.append(all(nsbox.call(os.getpid, **options) > 0 for _ in range(30)))
        results.append(sum(nsbox.run(["true"], **options).returncode for _ in range(30)))
    box = nsbox.Popen(["sleep", "60"], pid=True, time=True)
    # Fast commands, many times: the helper is often gone (reaped behind our back) before it is watched.
    results.append(sorted({box.exec(["echo", "x"], capture_output=True, text=True).stdout for _ in range(100)}))
    results.append(sum(nsbox.run(["true"], init=True).returncode for _ in range(100)))
    box.kill(); box.wait()
    out[how] = results
emit(out)
"""


def test_call_and_run_cope_with_sigchld_ignored_or_reaped_elsewhere() -> None:
    expected = [True, 0, True, 0, True, 0, ["x\n"], 0]
    assert drive(SIGCHLD_CASES) == {"ignored": expected, "reaping-handler": expected}


# ---------------------------------------------------------------------------------------------------------------
# 8. Out of threads


def test_rootless_out_of_threads_raises_blocking_io_error_without_a_panic(rootless: Rootless) -> None:
    report = rootless(
        """
        import resource
        lan = nsbox.Network("10.77.0.0/24")          # private: a spawn on it needs a handshake thread
        nsbox.run(["true"], network=lan)             # warm up: a spawner thread exists
        soft, hard = resource.getrlimit(resource.RLIMIT_NPROC)
        resource.setrlimit(resource.RLIMIT_NPROC, (1, hard))
        outcomes = []
        for options in [{"network": lan}, {"pid": True}]:
            try:
                nsbox.run(["true"], **options)
                outcomes.append("ran")
            except Exception as e:
                outcomes.append([type(e).__name__, e.errno, str(e)])
        resource.setrlimit(resource.RLIMIT_NPROC, (soft, hard))
        again = nsbox.run(["echo", "again"], network=lan, capture_output=True, text=True).stdout
        lan.close()
        emit({"outcomes": outcomes, "again": again})
        """
    )
    for outcome in report["outcomes"]:
        assert outcome[:2] == ["BlockingIOError", 11], outcome
        assert "panicked" not in outcome[2] and "internal error" not in outcome[2], outcome
    assert report["again"] == "again\n"


# ---------------------------------------------------------------------------------------------------------------
# 10. Interrupts never leak a box


INTERRUPT_STORM = """
how, token = sys.argv[1], sys.argv[2]  # the boxes sleep "1000.TOKEN": this run's, no other's
done = threading.Event()
finished = threading.Event()
armed = False
interrupts = rounds = 0

def interrupt(*_):
    # KeyboardInterrupt only inside nsbox's calls: the driver's own loop must survive the storm.
    if armed:
        raise KeyboardInterrupt

signal.signal(signal.SIGINT, interrupt)

def box_processes():
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read().split(b"\\0")[:2] == [b"sleep", f"1000.{token}".encode()]:
                    found.append(int(pid))
        except OSError:
            pass
    return found

def wait_for_the_end_of_the_storm():
    sys.stdin.readline()
    done.set()
    while not finished.is_set():  # end the round under way (its box sleeps for 1000 s)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)

def loop():
    global armed, interrupts, rounds
    while not done.is_set():
        rounds += 1
        try:
            armed = True
            if how == "run":
                nsbox.run(["sleep", f"1000.{token}"], pid=True)
            else:
                nsbox.call(os.execvp, ("sleep", ["sleep", f"1000.{token}"]), pid=True)
        except KeyboardInterrupt:
            interrupts += 1
        finally:
            armed = False

threading.Thread(target=wait_for_the_end_of_the_storm, daemon=True).start()
# The storm is for spawns: the public names load (lazily) before it, or it would interrupt their imports.
nsbox.run, nsbox.call
print("ready", flush=True)
loop()
finished.set()
emit({"left": box_processes(), "interrupts": interrupts, "rounds": rounds})
"""


@pytest.mark.parametrize("how", ["run", "call"])
def test_an_interrupt_storm_leaves_no_box_running(how: str) -> None:
    driver = subprocess.Popen(
        [sys.executable, "-c", PRELUDE + INTERRUPT_STORM, how, str(int.from_bytes(os.urandom(4), "big"))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert driver.stdout is not None and driver.stdin is not None
        assert driver.stdout.readline() == "ready\n"
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            os.kill(driver.pid, signal.SIGINT)
            time.sleep(0.0005)
        driver.stdin.write("done\n")
        driver.stdin.flush()
        report = json.loads(driver.stdout.readline())
        driver.wait(timeout=30)
    finally:
        kill_and_reap(driver)
    # Boxes the storm left running would still be there, children of the driver that nobody knows of.
    assert report["interrupts"] > 50, report
    assert report["left"] == [], report


def test_an_interrupt_as_the_spawn_returns_kills_and_reaps_the_box(monkeypatch: pytest.MonkeyPatch) -> None:
    real = nsbox._nsbox.spawn
    started: list[int] = []

    def spawn_then_interrupt(*args: Any, **kwargs: Any) -> int:
        pid = real(*args, **kwargs)
        started.append(pid)
        raise KeyboardInterrupt  # as if SIGINT's handler ran as the spawn returned

    monkeypatch.setattr(nsbox._nsbox, "spawn", spawn_then_interrupt)
    for options in [{"pid": True}, {}, {"init": True}]:
        with pytest.raises(KeyboardInterrupt):
            nsbox.Popen(["sleep", "1000"], **options)
        # Host side: the box was started, and is gone (killed and reaped), not a child left running.
        assert proc_state(started[-1]) is None, options
    assert children_of(os.getpid()) == []


# ---------------------------------------------------------------------------------------------------------------
# 11. Idle spawner threads retire, but never before their boxes


POOL = """
def burst():
    threads = [threading.Thread(target=nsbox.run, args=(["true"],), kwargs={"pid": True}) for _ in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
burst()
after_burst = spawner_threads()
started = []  # from another thread: the main thread spawns itself (it lives as long as the process)
starter = threading.Thread(target=lambda: started.append(nsbox.Popen(["sleep", "600"], pid=True)))
starter.start()
starter.join()
box = started.pop()
deadline = time.monotonic() + 30
while spawner_threads() > 1 and time.monotonic() < deadline:
    time.sleep(0.1)
with_box = spawner_threads()
time.sleep(6)  # past the idle time (2 s) of the box's thread, several times over
still = [spawner_threads(), box.poll()]
box.kill(); box.wait()
deadline = time.monotonic() + 30
while spawner_threads() > 0 and time.monotonic() < deadline:
    time.sleep(0.1)
end = spawner_threads()
works = nsbox.run(["echo", "x"], capture_output=True, text=True).stdout
emit({"after_burst": after_burst, "with_box": with_box, "still": still, "returncode": box.returncode,
      "end": end, "works": works, "main": spawner_threads()})
"""


def test_idle_spawner_threads_retire_but_not_while_their_box_runs() -> None:
    report = drive(POOL)
    assert report["after_burst"] > 1  # the concurrent runs had threads of their own
    assert report["with_box"] == 1  # the idle ones retired; the box's thread stays ...
    assert report["still"] == [1, None]  # ... and so does the box
    assert report["returncode"] == -signal.SIGKILL
    assert report["end"] == 0  # once the box is gone, its thread goes too
    assert report["works"] == "x\n"
    assert report["main"] == 0  # a box started from the main thread needs no spawner thread


# ---------------------------------------------------------------------------------------------------------------
# 12. nsbox.call(pid=True): the C library's view of the CPU, and no process in state D


def where_am_i() -> list[int]:
    import ctypes

    libc = ctypes.CDLL(None)
    allowed = os.sched_getaffinity(0)
    seen = []
    try:
        for cpu in sorted(allowed):
            os.sched_setaffinity(0, {cpu})
            seen.append(libc.sched_getcpu())
    finally:
        os.sched_setaffinity(0, allowed)
    return seen


def test_pid_1_of_a_call_has_restartable_sequences_so_sched_getcpu_is_right() -> None:
    cpus = sorted(os.sched_getaffinity(0))
    assert len(cpus) >= 2, "needs two CPUs to tell a stale CPU number"
    assert where_am_i() == cpus  # control: the caller's own view
    assert nsbox.call(where_am_i, pid=True) == cpus
    assert nsbox.call(where_am_i) == cpus


def test_no_process_of_a_call_waits_in_uninterruptible_sleep(tmp_path: Path) -> None:
    flag = tmp_path / "running"

    def wait_for_flag_removal() -> int:
        flag.write_text("x")
        while flag.exists():
            time.sleep(0.01)
        return os.getpid()

    import threading

    result: list[int] = []
    worker = threading.Thread(target=lambda: result.append(nsbox.call(wait_for_flag_removal, pid=True)))
    worker.start()
    try:
        assert wait_until(flag.exists, timeout=30)
        states = {pid: proc_state(pid) for pid in children_of(os.getpid())}
        # The function's process (PID 1 inside) sleeps; nothing is left in D (which counts in the load average).
        assert states and "D" not in states.values(), states
    finally:
        flag.unlink(missing_ok=True)
        worker.join(timeout=30)
    assert result == [1]


# ---------------------------------------------------------------------------------------------------------------
# 13. Id maps too long for the kernel


def test_an_id_map_over_the_kernels_page_limit_is_a_value_error_before_forking() -> None:
    wide = [(1_000_000_000 + i, 2_000_000_000 + i, 1) for i in range(200)]
    before = children_of(os.getpid())
    with pytest.raises(ValueError, match=r"uid_map: is \d+ bytes as /proc text; the kernel takes less than 4096"):
        nsbox.run(["true"], uid_map=wide)
    assert children_of(os.getpid()) == before
    narrow = [(i, 100_000 + i, 1) for i in range(200)]  # 200 ranges, short enough: runs
    r = nsbox.run(["cat", "/proc/self/uid_map"], uid_map=narrow, capture_output=True, text=True)
    assert len(r.stdout.splitlines()) == 200


# ---------------------------------------------------------------------------------------------------------------
# Found in review: the caller's dumpable flag, and PIDs that were reaped behind nsbox's back


DUMPABLE = """
PR_GET_DUMPABLE = 3
libc = ctypes.CDLL(None)
def state():
    return [libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0), os.stat(f"/proc/{os.getpid()}/status").st_uid]
out = {"start": state()}
maps = {"uid_map": [(0, 100000, 65536)], "gid_map": [(0, 100000, 65536)]}
for name, options in [("user", {"user": 65534}), ("group", {"group": 65534}), ("uid range", maps)]:
    nsbox.run(["true"], **options)
    out[name] = state()
# The same id change made the box's own /proc/self files root's, so the clock offsets could not be written.
r = nsbox.run(["cat", "/proc/uptime"], time=True, boottime_offset=100000, capture_output=True, text=True, **maps)
out["uptime"] = float(r.stdout.split()[0])
emit(out)
"""


def test_a_spawn_that_changes_ids_leaves_the_caller_dumpable_and_the_box_its_proc_files() -> None:
    out = drive(DUMPABLE)
    assert out.pop("start") == [1, 0]
    uptime = out.pop("uptime")
    assert out == {"user": [1, 0], "group": [1, 0], "uid range": [1, 0]}  # the caller's own flag and files
    with open("/proc/uptime") as f:
        assert uptime > float(f.read().split()[0]) + 100000 - 60  # the offset inside the box


PID_REUSE = r"""
signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # boxes are reaped behind nsbox's back

def unrelated_process_with_pid(pid):
    r, w = os.pipe()
    if os.fork() == 0:  # an intermediate that leaves: the victim is not our child
        with open("/proc/sys/kernel/ns_last_pid", "w") as f:
            f.write(str(pid - 1))
        victim = os.fork()
        if victim == 0:
            os.execvp("sleep", ["sleep", "100"])
        os.write(w, str(victim).encode())
        os._exit(0)
    os.close(w)
    got = int(os.read(r, 100))
    os.close(r)
    return got

p = nsbox.Popen(["true"])  # exits at once and is reaped by the kernel; returncode stays None
while os.path.exists(f"/proc/{p.pid}"):
    time.sleep(0.01)
victim = unrelated_process_with_pid(p.pid)
nsbox._nsbox.kill_and_reap(p)  # what run() and Popen.__init__ call on a timeout or interrupt
with open(f"/proc/{victim}/stat") as f:
    state = f.read().rsplit(")", 1)[1].split()[0]
os.kill(victim, signal.SIGKILL)
emit({"same_pid": victim == p.pid, "victim_state": state, "returncode": p.returncode})
"""


def test_cleanup_never_signals_a_pid_that_was_reaped_behind_its_back() -> None:
    # In a PID namespace of its own, where the driver can hand the box's old PID to another process. The
    # shell stays PID 1 (orphans go to it): the driver must not adopt the unrelated process.
    shell = ["sh", "-c", '"$0" -c "$1"; exit $?', sys.executable, PRELUDE + PID_REUSE]
    r = nsbox.run(shell, pid=True, mount_proc=True, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout.splitlines()[-1])
    assert report["same_pid"], report  # the control: the unrelated process did get the box's old PID
    assert report["victim_state"] in ("R", "S"), report  # alive: not killed by the cleanup
    assert report["returncode"] == 0, report
