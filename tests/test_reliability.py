"""Under load and under faults: nothing leaks, nothing hangs, and a box never outlives what should end it.

Most cases run a small driver program (a string below; ``helpers.drivers`` runs it) in a fresh interpreter, as root
and, through the ``rootless`` fixture, as the unprivileged user 65534: it makes the situation (a killed caller, a
timeout, an exhausted process table, a corrupted error record), looks at what is left, kills any survivor, and
prints a JSON report that the test checks.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import nsbox
from helpers.drivers import WATCH, drive_watched, drive_watched_rootless
from helpers.procs import kill_and_reap, proc_comm
from helpers.rootless import SIDES, Body, Rootless

# ---------------------------------------------------------------------------------------------------------------
# Load: 1,000 sequential runs, then 8 threads x 100 concurrent runs, while other threads allocate

_LOAD = r"""
import ctypes

# argv[1] == "pooled": the boxes that can take their namespaces from a pool do (a box that asks for a user
# namespace the pool's sets do not have, root's user=True, is refused by a pool: it is made without one).
pool = None  # made once the fds are counted, and closed before they are counted again


def run(args, **options):
    if pool is None or (options.get("user") and os.geteuid() == 0):
        return nsbox.run(args, **options)
    return pool.run(args, **options)


MIX = [{}, {"pid": True, "mount_proc": True}, {"net": True}, {"pid": True, "uts": True, "ipc": True, "net": True},
       {"init": True}, {"user": True, "time": True}]


def runs(tag, count):
    for i in range(count):
        options = MIX[i % len(MIX)]
        try:
            r = run(["echo", f"{tag}-{i}"], capture_output=True, **options)
            if (r.returncode, r.stdout) != (0, f"{tag}-{i}\n".encode()):
                errors.append([tag, i, options, r.returncode, r.stderr.decode()])
        except Exception as e:
            errors.append([tag, i, options, repr(e)])


def churn():
    while not stop.is_set():
        allocated[0] += len([{"n": i, "s": str(i) * 5} for i in range(2000)])
        time.sleep(0.0005)


# Whatever a box leaves behind (a daemon, a zombie) is then reparented to us, and counts as our child.
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
for options in MIX:
    nsbox.run(["true"], **options)  # warm up: a spawner thread, the helper's memfd
fds_before, mounts_before = fds(), host_mounts()
if sys.argv[1:] == ["pooled"]:
    pool = nsbox.Pool(size=8, net=True, uts=True, ipc=True)
errors, allocated, stop = [], [0], threading.Event()
churners = [threading.Thread(target=churn) for _ in range(2)]
for t in churners:
    t.start()
start = time.monotonic()
runs("seq", 1000)
sequential = time.monotonic() - start
workers = [threading.Thread(target=runs, args=(f"t{n}", 100)) for n in range(8)]
start = time.monotonic()
for t in workers:
    t.start()
for t in workers:
    t.join(timeout=120)
concurrent = time.monotonic() - start
hung = sum(t.is_alive() for t in workers)
stop.set()
for t in churners:
    t.join()
if pool is not None:
    pool.close()
fds_after, mounts_after = fds(), host_mounts()
print(json.dumps({
    "errors": errors[:5], "error_count": len(errors), "hung": hung, "allocated": allocated[0],
    "seconds": [round(sequential, 2), round(concurrent, 2)], "fds_before": fds_before, "fds_after": fds_after,
    "children": children(), "mounts_same": mounts_before == mounts_after,
    "namespace_refs": sorted(t for t in fds_after.values() if t.split(":")[0] in ("net", "mnt", "pid", "user")),
}))
"""


def _check_load(report: dict[str, Any]) -> None:
    assert report["hung"] == 0, "a spawning thread never finished"
    assert (report["error_count"], report["errors"]) == (0, [])
    assert report["allocated"] > 0, "the allocating threads did not run"
    assert report["fds_after"] == report["fds_before"]
    assert report["children"] == [], "children or zombies (or reparented daemons) are left"
    assert report["mounts_same"]
    assert report["namespace_refs"] == [], "the caller holds a namespace of a box"


@pytest.mark.parametrize("way", ["unpooled", "pooled"])
@pytest.mark.parametrize("side", SIDES)
def test_thousand_sequential_and_eight_times_hundred_concurrent_runs_leave_nothing(
    drive_as: Callable[..., Any], side: str, way: str
) -> None:
    _check_load(drive_as(side, _LOAD, way))


# ---------------------------------------------------------------------------------------------------------------
# A box started from a short-lived thread outlives that thread (test_safety covers a plain pid=True box)


@pytest.mark.parametrize("how", ["init", "user-net", "exec_popen"])
def test_box_started_from_a_pool_thread_keeps_running_after_the_thread_exits(how: str) -> None:
    host = nsbox.Popen(["sleep", "1000"], pid=True) if how == "exec_popen" else None

    def start() -> tuple[nsbox.Popen, int]:
        if host is not None:
            return host.exec_popen(["sleep", "1000"]), threading.get_ident()
        options = {"init": True} if how == "init" else {"user": True, "net": True}
        return nsbox.Popen(["sleep", "1000"], **options), threading.get_ident()

    boxes = [host] if host is not None else []
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            box, ident = pool.submit(start).result()
        boxes.append(box)
        assert ident not in {t.ident for t in threading.enumerate()}, "the pool's thread is still there"
        time.sleep(0.5)
        assert box.poll() is None, "the box died with the thread that started it"
        if how == "init":
            assert [p.command for p in box.processes()] == ["nsbox-init", "sleep 1000"]
        else:
            assert proc_comm(box.pid) == "sleep"
    finally:
        for started in reversed(boxes):
            kill_and_reap(started)


def test_rootless_box_started_from_a_short_lived_thread_outlives_it(body: Body) -> None:
    seen = body("rootless", "box_started_from_a_thread_that_exits")
    assert seen == {"running": True, "status": -signal.SIGKILL}


# ---------------------------------------------------------------------------------------------------------------
# Faults that must end the whole box: the caller killed, a timeout, an interrupt, PID 1 exiting

#: `sh descendants.sh PREFIX [STATUS]`: records its own host PID (the box keeps the host's /proc) in PREFIX-sh, starts
#: a grandchild and a daemon (a new session whose parent exits at once), each recording its host PID in PREFIX-child
#: / PREFIX-daemon before it becomes `sleep 1000`; then waits, or with STATUS exits with it once PREFIX-go exists.
_DESCENDANTS_SH = """\
record() { read -r pid rest </proc/self/stat; echo "$pid" >"$1.tmp"; mv "$1.tmp" "$1"; }
if [ "$1" = --daemon ]; then
    (record "$2-daemon"; exec sleep 1000) &
    exit 0
fi
record "$1-sh"
(record "$1-child"; exec sleep 1000) &
setsid sh "$0" --daemon "$1"
if [ $# -ge 2 ]; then
    while [ ! -e "$1-go" ]; do sleep 0.01; done
    exit "$2"
fi
wait
"""

_SCENARIO = r"""
scenario, directory, options = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
prefix = os.path.join(directory, scenario)
box_command = ["sh", os.path.join(directory, "descendants.sh"), prefix]
COMMS = {"sh": "sh", "child": "sleep", "daemon": "sleep"}
# With a PID namespace, the box's processes die with it: wait for that as long as a busy machine may need.
# Without, they live on (the test checks that they still run, then kills them).
SURVIVAL = 30 if options.get("pid") or options.get("init") else 1.5


def running(pid, comm):
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    return stat.split("(", 1)[1].rsplit(")", 1)[0] == comm and stat.rsplit(")", 1)[1].split()[0] not in "ZX"


def recorded():
    # The host PID each process of the box recorded, or None while one is missing.
    paths = {name: f"{prefix}-{name}" for name in COMMS}
    if not all(os.path.exists(p) for p in paths.values()):
        return None
    return {name: int(open(path).read()) for name, path in paths.items()}


def started(timeout=30):
    # The recorded PIDs, once the grandchild and the daemon both run sleep.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = recorded()
        if pids and running(pids["child"], "sleep") and running(pids["daemon"], "sleep"):
            return pids
        time.sleep(0.01)
    raise SystemExit(f"the box did not start its descendants: {sorted(os.listdir(directory))}")


def survivors(pids, timeout=SURVIVAL):
    # Those still running after `timeout` seconds; killed here, so that nothing outlives the test.
    deadline = time.monotonic() + timeout
    while any(running(pid, COMMS[n]) for n, pid in pids.items()) and time.monotonic() < deadline:
        time.sleep(0.02)
    left = sorted(name for name, pid in pids.items() if running(pid, COMMS[name]))
    for name in left:
        os.kill(pids[name], signal.SIGKILL)
    return left


def kill_attempt():
    # Kills what an attempt that timed out too early may have left (only a box without a PID namespace can):
    # a process of the box has the prefix in its command line until it records its PID, then execs sleep.
    quiet = 0
    while quiet < 5:
        found = {int(open(path).read()) for path in (f"{prefix}-child", f"{prefix}-daemon") if os.path.exists(path)}
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if os.fsencode(prefix) in f.read().split(b"\0"):
                        found.add(int(pid))
            except OSError:
                pass
        alive = [pid for pid in found if running(pid, "sh") or running(pid, "sleep")]
        for pid in alive:
            os.kill(pid, signal.SIGKILL)
        quiet = 0 if alive else quiet + 1
        time.sleep(0.05)


report = {"outcome": None}
if scenario == "caller-killed":
    caller_code = "import json, sys, time, nsbox\nnsbox.Popen(sys.argv[2:], **json.loads(sys.argv[1]))\ntime.sleep(99)"
    caller = subprocess.Popen([sys.executable, "-c", caller_code, json.dumps(options), *box_command])
    try:
        pids = started()
    finally:
        caller.kill()
        report["outcome"] = caller.wait()
elif scenario == "timeout":
    # The timeout must strike once the box has started its descendants. A busy machine may take longer than
    # the first timeout tried: then the processes of that attempt are killed, and a longer timeout is tried.
    for limit in (1.0, 4.0, 15.0):
        prefix = os.path.join(directory, f"{scenario}-{limit}")
        try:
            nsbox.run([*box_command[:-1], prefix], timeout=limit, **options)
        except subprocess.TimeoutExpired as e:
            report["outcome"] = type(e).__name__
        pids = recorded()
        if pids:
            break
        kill_attempt()
    assert pids, "the box did not start its descendants within the timeout"
elif scenario == "interrupt":
    main, pids = threading.get_ident(), {}

    def interrupt():
        try:
            pids.update(started())
        finally:
            signal.pthread_kill(main, signal.SIGINT)

    threading.Thread(target=interrupt).start()
    try:
        nsbox.run(box_command, **options)
    except KeyboardInterrupt as e:
        report["outcome"] = type(e).__name__
elif scenario == "first-exits":
    box = nsbox.Popen([*box_command, "7"], **options)
    try:
        pids = started()
    finally:
        open(f"{prefix}-go", "w").close()  # PID 1 exits 7 now, while the grandchild and the daemon run
        report["outcome"] = box.wait(timeout=10)
report["survivors"] = survivors(pids)
report["children"] = children()
print(json.dumps(report))
"""


@pytest.fixture
def scenario_dir(world_tmp: Path) -> Path:
    (world_tmp / "descendants.sh").write_text(_DESCENDANTS_SH)
    (world_tmp / "descendants.sh").chmod(0o644)
    return world_tmp


#: A box with a PID namespace (its own PID 1, or nsbox-init as PID 1), a rootless-style one, and one without.
BOX_KINDS = {
    "pid": {"pid": True},
    "init": {"init": True},
    "user-pid-net": {"pid": True, "user": True, "net": True},
    "no-pid-namespace": {"net": True},
}
EXPECTED = {
    "caller-killed": -signal.SIGKILL,
    "timeout": "TimeoutExpired",
    "interrupt": "KeyboardInterrupt",
    "first-exits": 7,
}


def _run_scenario(run: Any, scenario: str, directory: Path, options: dict[str, Any]) -> None:
    report = run(scenario, str(directory), json.dumps(options))
    assert report["outcome"] == EXPECTED[scenario]
    if options.get("pid") or options.get("init"):
        assert report["survivors"] == [], f"{report['survivors']} outlived the box (killed by the test since)"
    else:
        # Documented: without a PID namespace there is no boundary to kill; as with subprocess, only the
        # first process is ended, and its descendants live on (the test kills them). pid=True is the answer.
        assert report["survivors"] == ["child", "daemon"], report
    assert report["children"] == []


@pytest.mark.parametrize("kind", BOX_KINDS)
@pytest.mark.parametrize("scenario", ["caller-killed", "timeout", "interrupt"])
def test_killed_caller_timeout_and_interrupt_end_every_process_of_the_box(
    python: str, scenario_dir: Path, scenario: str, kind: str
) -> None:
    # caller-killed: the caller gets SIGKILL (watched from another process, the driver); timeout: run(timeout=1);
    # interrupt: KeyboardInterrupt while run waits. The grandchild and the daemon must die with the box.
    _run_scenario(lambda *a: drive_watched(python, _SCENARIO, *a), scenario, scenario_dir, BOX_KINDS[kind])


@pytest.mark.parametrize("kind", ["pid", "init", "user-pid-net"])
def test_pid_1_exiting_ends_the_rest_of_the_box_and_wait_returns_its_status(
    python: str, scenario_dir: Path, kind: str
) -> None:
    _run_scenario(lambda *a: drive_watched(python, _SCENARIO, *a), "first-exits", scenario_dir, BOX_KINDS[kind])


@pytest.mark.parametrize(
    ("scenario", "kind"),
    [
        *(
            (scenario, kind)
            for scenario in ("caller-killed", "timeout", "interrupt")
            for kind in ("pid", "no-pid-namespace")
        ),
        ("first-exits", "pid"),
    ],
)
def test_rootless_faults_end_every_process_of_the_box(
    rootless: Rootless, scenario_dir: Path, scenario: str, kind: str
) -> None:
    _run_scenario(lambda *a: drive_watched_rootless(rootless, _SCENARIO, *a), scenario, scenario_dir, BOX_KINDS[kind])


# ---------------------------------------------------------------------------------------------------------------
# Fork failure: the process table at its limit

_FORK_FAILURE = r"""
import resource

OPTIONS = [{}, {"pid": True}, {"net": True}, {"init": True}, {"pid": True, "mount_proc": True}]


def state():
    return sorted(fds()), children(), len(os.listdir("/proc/self/task"))


for options in OPTIONS:
    nsbox.run(["true"], **options)  # warm up: a spawner thread, the helper's memfd
before = state()
release, fillers = threading.Event(), []
if sys.argv[1] == "nproc":
    # Not root: RLIMIT_NPROC counts our processes and threads; at 1 no fork can succeed.
    soft, hard = resource.getrlimit(resource.RLIMIT_NPROC)
    resource.setrlimit(resource.RLIMIT_NPROC, (1, hard))
else:
    # Root ignores RLIMIT_NPROC. This driver is PID 1 of its own PID namespace, whose pid_max is its own
    # (Linux 6.14 on): set it to the minimum and take every PID with threads.
    with open("/proc/sys/kernel/pid_max") as f:
        pid_max = f.read()
    with open("/proc/sys/kernel/pid_max", "w") as f:
        f.write("301")
    threading.stack_size(64 * 1024)
    while True:
        t = threading.Thread(target=release.wait)
        try:
            t.start()
        except RuntimeError:
            break
        fillers.append(t)
outcomes = []
for options in OPTIONS:
    try:
        nsbox.run(["true"], **options)
        outcomes.append(["ran"])
    except Exception as e:
        outcomes.append([type(e).__name__, getattr(e, "errno", None), str(e)])
during = state()
if sys.argv[1] == "nproc":
    resource.setrlimit(resource.RLIMIT_NPROC, (soft, hard))
release.set()
for t in fillers:
    t.join()
if sys.argv[1] != "nproc":
    # Past PID 300 the kernel allocates from 300 up again (RESERVED_PIDS), so at pid_max 301 one PID is left for
    # ever, which a thread may hold: put pid_max back, as RLIMIT_NPROC is put back above.
    with open("/proc/sys/kernel/pid_max", "w") as f:
        f.write(pid_max)
again = nsbox.run(["echo", "again"], pid=True, capture_output=True, text=True).stdout
print(json.dumps({"outcomes": outcomes, "before": before, "during": during, "fillers": len(fillers), "again": again}))
"""


def _check_fork_failure(report: dict[str, Any]) -> None:
    for outcome in report["outcomes"]:
        assert outcome[:2] == ["BlockingIOError", 11], outcome
        assert outcome[2].startswith("[Errno 11] cannot create the "), outcome
    fds, children, threads = report["during"]
    assert (fds, children) == tuple(report["before"][:2]), "the failed spawns left fds or children"
    assert threads == report["before"][2] + report["fillers"], "the failed spawns left threads"
    assert report["again"] == "again\n"


def test_fork_failure_at_the_pid_limit_raises_blocking_io_error_and_leaves_nothing(python: str) -> None:
    cmd = [python, "-c", WATCH + _FORK_FAILURE, "pid_max"]
    r = nsbox.run(cmd, pid=True, mount_proc=True, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["fillers"] > 250
    _check_fork_failure(report)


def test_rootless_fork_failure_at_rlimit_nproc_raises_blocking_io_error_and_leaves_nothing(rootless: Rootless) -> None:
    _check_fork_failure(drive_watched_rootless(rootless, _FORK_FAILURE, "nproc"))


# ---------------------------------------------------------------------------------------------------------------
# A corrupted or short error record on the internal pipe
#
# A preloaded write() that, in nsbox's child (a process other than the one that loaded it, or the helper
# program), mangles each 8-byte write, which is how the child and the helper send their (stage, errno) record.

_SHIM_C = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static pid_t owner;
static int helper;

__attribute__((constructor)) static void setup(void) {
    owner = (pid_t)syscall(SYS_getpid);
    helper = strcmp(program_invocation_short_name, "nsbox-helper") == 0;
}

ssize_t write(int fd, const void *buf, size_t n) {
    unsigned char rec[8];
    const char *setting = getenv("NSBOX_TEST_RECORD"); /* read at each call: the driver sets it when ready */
    int mode = setting ? atoi(setting) : 0;
    if (mode == 0 || n != 8 || (!helper && (pid_t)syscall(SYS_getpid) == owner))
        return syscall(SYS_write, fd, buf, n);
    memcpy(rec, buf, 8);
    if (mode == 1) n = 3;                                           /* short */
    if (mode == 2) { uint32_t stage = 999; memcpy(rec, &stage, 4); } /* a stage that does not exist */
    if (mode == 3) memset(rec, 0, 8);                                /* all zeros */
    return syscall(SYS_write, fd, rec, n);
}
"""

_CORRUPT = r"""
path, mode = sys.argv[1], sys.argv[2]
OPTIONS = {"plain": {"net": True}, "init": {"init": True}, "exec": {"pid": True},
           "parent-writes-maps": {"uid_map": [(0, 100000, 65536)], "gid_map": [(0, 100000, 65536)]}}
nsbox.run(["true"], **OPTIONS[path])  # warm up (nothing is written on success)
before = sorted(fds())
os.environ["NSBOX_TEST_RECORD"] = mode  # from here on, the preloaded write() mangles the child's records
box = nsbox.Popen(["sleep", "1000"], **OPTIONS[path]) if path == "exec" else None
try:
    if box is not None:
        box.exec(["/nonexistent/program"])
    else:
        nsbox.run(["/nonexistent/program"], **OPTIONS[path])
    outcome = ["no error"]
except BaseException as e:
    outcome = [type(e).__name__, str(e)]
finally:
    if box is not None:
        box.kill()
        box.wait()
        box.close_pidfd()  # the box's own fd, closed with it: what is compared is what the failed exec left
print(json.dumps({"outcome": outcome, "children": children(), "fds_same": sorted(fds()) == before}))
"""

_RECORD_MODES = {"short": "1", "unknown-stage": "2", "all-zeros": "3"}


@pytest.fixture(scope="module")
def corrupting_write() -> Iterator[str]:
    """The shim above, built as a world-readable shared library."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.fail("a C compiler (cc) is needed to build the fault-injection shim; nsbox's build needs one too")
    directory = Path(tempfile.mkdtemp(prefix="nsbox-shim-", dir="/tmp"))
    try:
        directory.chmod(0o755)
        (directory / "shim.c").write_text(_SHIM_C)
        subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", directory / "shim.so", directory / "shim.c"], check=True)
        (directory / "shim.so").chmod(0o755)
        yield str(directory / "shim.so")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _check_corrupt_record(report: dict[str, Any] | None) -> None:
    assert report is not None, "the caller hung on the corrupted record (killed after 60 s)"
    kind, message = report["outcome"][0], report["outcome"][-1]
    assert (kind, message.startswith("nsbox internal error")) == ("RuntimeError", True), report["outcome"]
    assert "record" in message
    assert report["children"] == []
    assert report["fds_same"]


@pytest.mark.parametrize("mode", _RECORD_MODES)
@pytest.mark.parametrize("path", ["plain", "parent-writes-maps", "init", "exec"])
def test_corrupted_error_record_gives_a_clear_internal_error_never_a_crash_or_hang(
    python: str, corrupting_write: str, path: str, mode: str
) -> None:
    env = {**os.environ, "LD_PRELOAD": corrupting_write}
    try:
        report = drive_watched(python, _CORRUPT, path, _RECORD_MODES[mode], timeout=60, env=env)
    except subprocess.TimeoutExpired:
        report = None
    _check_corrupt_record(report)


@pytest.mark.parametrize("mode", _RECORD_MODES)
@pytest.mark.parametrize("path", ["plain", "init", "exec"])
def test_rootless_corrupted_error_record_gives_a_clear_internal_error(
    rootless: Rootless, corrupting_write: str, path: str, mode: str
) -> None:
    seen = rootless(
        f"""
        env = {{**os.environ, "LD_PRELOAD": {corrupting_write!r}}}
        try:
            r = subprocess.run([sys.executable, "-c", {WATCH + _CORRUPT!r}, {path!r}, {_RECORD_MODES[mode]!r}],
                               capture_output=True, text=True, env=env, timeout=60)
            emit({{"rc": r.returncode, "err": r.stderr, "report": json.loads(r.stdout.splitlines()[-1] or "null")}})
        except subprocess.TimeoutExpired:
            emit({{"rc": None, "err": "", "report": None}})
        """
    )
    assert seen["rc"] in (0, None), seen["err"]
    _check_corrupt_record(seen["report"])


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_spawn_does_not_wait_for_a_process_forked_meanwhile_by_another_thread() -> None:
    # Another thread forks (without exec) all the time: its children inherit copies of whatever pipe nsbox
    # has open at that instant. A spawn must never wait for those children (they sleep 30 s) to exit. A spawn
    # on a busy machine, beside a thread that forks a big process all the time, may take a second or two: the
    # bound is far from both.
    stop = threading.Event()
    kids: list[int] = []
    bound = 10.0

    def forker() -> None:
        while not stop.is_set():
            pid = os.fork()
            if pid == 0:
                time.sleep(3 * bound)
                os._exit(0)
            kids.append(pid)
            time.sleep(0.0002)

    thread = threading.Thread(target=forker)
    thread.start()
    slowest = 0.0
    try:
        parent_maps = {"uid_map": [(0, 0, 1), (1, 100000, 65536)], "gid_map": [(0, 0, 1), (1, 100000, 65536)]}
        for options in ({"init": True}, {"pid": True}, {"user": True}, parent_maps) * 30:
            started = time.monotonic()
            assert nsbox.run(["true"], **options).returncode == 0
            slowest = max(slowest, time.monotonic() - started)
            if slowest >= bound:
                break
    finally:
        stop.set()
        thread.join()
        for pid in kids:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    assert slowest < bound, f"a spawn waited {slowest:.2f} s for an unrelated forked process"
