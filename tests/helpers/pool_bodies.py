"""``nsbox.Pool`` test bodies that run alike as root and as 65534 (nsbox and the standard library only).

Each takes JSON-able keyword arguments and returns what ``tests/test_pool.py`` checks, JSON-able too. The
drivers (``CALLER_KILLED``, ``FORKED``) are programs of their own, for the cases that kill or fork the caller.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import warnings
from typing import Any

import nsbox

#: The namespace kinds a pooled box's command reports, in this order.
KINDS = ["net", "uts", "ipc", "user", "pid", "mnt"]
#: The kinds a set may hold (what a pool's fds point to).
SET_KINDS = ("net:", "uts:", "ipc:", "cgroup:", "user:")


def namespace_fds() -> dict[int, str]:
    """fd -> namespace link, for this process's fds that point to a namespace of a kind a set holds."""
    found = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue  # the listing's own fd
        if link.startswith(SET_KINDS):
            found[int(name)] = link
    return found


def children() -> list[int]:
    """PIDs whose parent is this process (zombies included)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) == os.getpid():
                    found.append(int(pid))
        except OSError:
            pass
    return found


def thread_names() -> list[str]:
    names = []
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                names.append(f.read().strip())
        except OSError:
            pass
    return sorted(names)


def wait_full(pool: nsbox.Pool, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while pool.stats().ready < pool.size:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the pool did not fill within {timeout} s: {pool.stats()}")
        time.sleep(0.005)


def fresh_boxes(size: int, boxes: int) -> dict[str, Any]:
    """``boxes`` boxes from a full pool of ``size`` sets, all running at once (a burst when ``boxes > size``).

    Each box's command reads its namespace links, lo's line of ``ip -o link`` and its hostname; the host reads
    the same box's namespaces from outside. The control: an exec into the first box, a process that does share
    its namespaces, which the comparison must see as shared.
    """
    script = "readlink " + " ".join(f"/proc/self/ns/{k}" for k in KINDS) + "; ip -o link show lo; hostname; exec cat"
    with nsbox.Pool(size=size, net=True, uts=True, ipc=True, pid=True, mount_proc=True) as pool:
        wait_full(pool)
        procs = []
        try:
            for i in range(boxes):
                procs.append(
                    pool.Popen(
                        ["sh", "-c", script],
                        hostname=f"pooled-{i}",
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        text=True,
                    )
                )
            inside, outside, lo, names = [], [], [], []
            for p in procs:
                assert p.stdout is not None
                lines = [p.stdout.readline().strip() for _ in range(len(KINDS) + 2)]
                inside.append(dict(zip(KINDS, lines, strict=False)))
                lo.append(lines[len(KINDS)])
                names.append(lines[-1])
                outside.append({k: f"{k}:[{v}]" for k, v in p.namespaces().items() if k in KINDS})
            shared = procs[0].exec(["readlink", "/proc/self/ns/net"], capture_output=True, text=True).stdout.strip()
        finally:
            for p in procs:
                if p.stdin is not None:
                    p.stdin.close()
                p.wait()
                if p.stdout is not None:
                    p.stdout.close()
        stats = pool.stats()._asdict()
    host = {k: os.readlink(f"/proc/self/ns/{k}") for k in KINDS}
    codes = [p.returncode for p in procs]
    return {"inside": inside, "outside": outside, "lo": lo, "names": names, "host": host, "exec_net": shared,
            "codes": codes, "stats": stats}  # fmt: skip


def calls_in_a_pool() -> dict[str, Any]:
    """``pool.call`` twice: the function's PID, hostname and network namespace, beside the caller's."""
    import socket

    def inside() -> list[Any]:
        return [os.getpid(), socket.gethostname(), os.readlink("/proc/self/ns/net")]

    with nsbox.Pool(size=2, net=True, pid=True, hostname="pool-call") as pool:
        wait_full(pool)
        first = pool.call(inside)
        second = pool.call(inside, hostname="other")
        stats = pool.stats()._asdict()
    return {"first": first, "second": second, "host_net": os.readlink("/proc/self/ns/net"), "stats": stats}


def what_a_pool_holds_and_leaves(size: int) -> dict[str, Any]:
    """This process's namespace fds, threads and children before a pool, with it full, and after ``close()``."""

    def snapshot() -> dict[str, Any]:
        return {"fds": namespace_fds(), "threads": thread_names(), "children": children()}

    before = snapshot()
    pool = nsbox.Pool(size=size, net=True, ipc=True, uts=True, cgroup=True)
    wait_full(pool)
    full = snapshot()
    set_fds = {fd: link for fd, link in full["fds"].items() if fd not in before["fds"]}
    flags = {fd: os.get_inheritable(fd) for fd in set_fds}
    box = pool.run(["readlink", "/proc/self/ns/net"], capture_output=True, text=True)
    pool.close()
    closed = snapshot()
    pool.close()  # idempotent
    after = pool.run(["readlink", "/proc/self/ns/net"], capture_output=True, text=True)  # its own namespaces now
    return {
        "before": before,
        "full": full,
        "set_fds": set_fds,
        "inheritable": flags,
        "box": [box.returncode, box.stdout.strip()],
        "closed": closed,
        "after_close": [after.returncode, after.stdout.strip()],
        "stats": pool.stats()._asdict(),
    }


def forks_while_boxes_take_sets(forks: int, how: str = "run") -> dict[str, Any]:
    """``forks`` forks of this process while two threads start pooled boxes back to back (``pool.run`` or
    ``pool.call``, ``how``): what each child holds.

    A box joins its set while another thread may fork: the child must hold none of the set's fds (it could
    join the box's namespaces, and keeps them alive). The control: an fd of a namespace opened here by hand,
    not a pool's, which every child does hold.
    """
    control = os.open("/proc/self/ns/uts", os.O_RDONLY | os.O_CLOEXEC)
    stop = threading.Event()
    with nsbox.Pool(size=2, net=True, ipc=True, uts=True) as pool:

        def spawn() -> None:
            while not stop.is_set():
                pool.run(["true"]) if how == "run" else pool.call(os.getpid)

        threads = [threading.Thread(target=spawn) for _ in range(2)]
        for thread in threads:
            thread.start()
        held: list[list[str]] = []
        try:
            for _ in range(forks):
                r, w = os.pipe()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)  # fork() in a threaded process: the point
                    pid = os.fork()
                if pid == 0:
                    os.write(w, json.dumps(sorted(namespace_fds().values())).encode())
                    os._exit(0)
                os.close(w)
                with os.fdopen(r, "rb") as f:
                    held.append(json.loads(f.read()))
                os.waitpid(pid, 0)
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        stats = pool.stats()._asdict()
    mine = os.readlink(f"/proc/self/fd/{control}")
    os.close(control)
    return {
        "control_held": sum(mine in links for links in held),
        "set_fds_held": [links for links in held if [link for link in links if link != mine]],
        "stats": stats,
    }


def refusals() -> dict[str, Any]:
    """What ``Pool`` refuses, with the type and message, and what the process holds after each."""
    out: dict[str, Any] = {}
    cases: dict[str, Any] = {
        "size 0": lambda: nsbox.Pool(size=0, net=True),
        "size text": lambda: nsbox.Pool(size="8", net=True),  # type: ignore[arg-type]
        "nothing to pool": lambda: nsbox.Pool(pid=True, mount_proc=True),
        "unknown option": lambda: nsbox.Pool(nett=True),  # type: ignore[call-arg]
        "bad hostname": lambda: nsbox.Pool(net=True, hostname="x" * 65),
    }
    for name, make in cases.items():
        try:
            make().close()
            out[name] = None
        except (TypeError, ValueError) as e:
            out[name] = [type(e).__name__, str(e)]
    with nsbox.Pool(size=1, net=True) as pool:
        wait_full(pool)
        try:
            pool.run(["true"], uid_map=[(0, os.geteuid(), 1), (1, 100000, 10)])
            out["other maps"] = None
        except (ValueError, OSError) as e:
            out["other maps"] = [type(e).__name__, str(e)]
        out["left after the refusal"] = pool.stats()._asdict()
    out["fds"] = namespace_fds()
    out["threads"] = thread_names()
    out["children"] = children()
    return out


#: The caller that is killed: a full pool whose filler is kept busy (a set is being made when the kill comes).
#: Prints the namespace links of its sets, then spawns until killed. ``MARK`` is in its environment, and so in
#: that of every process it makes (the maker shares its memory; the boxes inherit it).
CALLER_KILLED = """
import json, os, sys, threading, time, nsbox
from helpers.pool_bodies import namespace_fds, wait_full
pool = nsbox.Pool(size=4, net=True, uts=True, ipc=True, pid=True)
wait_full(pool)
sets = sorted(set(namespace_fds().values()))
def churn():
    while True:
        pool.run(["true"])
threading.Thread(target=churn, daemon=True).start()
print(json.dumps({"sets": sets}), flush=True)
time.sleep(600)
"""


def marked_processes(mark: str) -> list[int]:
    """PIDs of the processes whose environment holds ``mark`` (those this user may read)."""
    found = []
    needle = mark.encode()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if needle in f.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found


def caller_killed_with_a_full_pool(tests_dir: str, python: str) -> dict[str, Any]:
    """Starts ``CALLER_KILLED``, SIGKILLs it once its pool is full and busy, and waits (a deadline) until no
    process of its is left. The control: the caller itself is found by the same search while it lives."""
    import json
    import uuid

    mark = f"NSBOX_POOL_TEST_MARK={uuid.uuid4().hex}"
    env = {**os.environ, "PYTHONPATH": tests_dir + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env[mark.split("=")[0]] = mark.split("=")[1]
    caller = subprocess.Popen([python, "-c", CALLER_KILLED], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert caller.stdout is not None
        sets = json.loads(caller.stdout.readline())["sets"]
        alive = marked_processes(mark)
    finally:
        caller.kill()
        caller.wait()
        if caller.stdout is not None:
            caller.stdout.close()
    deadline = time.monotonic() + 10
    left = marked_processes(mark)
    while left and time.monotonic() < deadline:
        time.sleep(0.01)
        left = marked_processes(mark)
    return {"sets": sets, "caller": caller.pid, "alive": alive, "left": left, "status": caller.returncode}


#: A thread-busy caller with two pools forks: ``pool`` (network and UTS) full and idle, ``busy`` (IPC only) taken
#: from and refilled all the time by two threads (its filler may hold its lock at the fork). The child reports
#: the network namespaces it holds fds of (none: the parent's sets are closed as it is forked), and uses both
#: pools. The parent's network namespace fds are ``pool``'s sets, alive until the child is done (their ids
#: cannot be reused meanwhile).
FORKED = """
import json, os, sys, threading, warnings, nsbox
from helpers.pool_bodies import namespace_fds, wait_full
warnings.simplefilter("ignore", DeprecationWarning)  # fork() in a threaded process: the point of the test
pool = nsbox.Pool(size=3, net=True, uts=True)
busy = nsbox.Pool(size=2, ipc=True)
stop = threading.Event()
def spawn():
    while not stop.is_set():
        busy.run(["true"])
threads = [threading.Thread(target=spawn) for _ in range(2)]
for t in threads:
    t.start()
wait_full(pool)
def nets():
    return sorted(link for link in namespace_fds().values() if link.startswith("net:"))
r, w = os.pipe()
parent_sets = nets()
pid = os.fork()
if pid == 0:
    code = 1
    try:
        inherited = nets()
        box = pool.run(["readlink", "/proc/self/ns/net"], capture_output=True, text=True)
        called = pool.call(lambda: [os.readlink("/proc/self/ns/net"), nets()])
        ipc = busy.run(["readlink", "/proc/self/ns/ipc"], capture_output=True, text=True)
        report = {"inherited": inherited, "box": [box.returncode, box.stdout.strip()], "call": called,
                  "ipc": [ipc.returncode, ipc.stdout.strip()], "stats": pool.stats()._asdict(),
                  "busy_stats": busy.stats()._asdict()}
        os.write(w, json.dumps(report).encode())
        code = 0
    finally:
        os._exit(code)
os.close(w)
with os.fdopen(r) as f:
    child = json.loads(f.read() or "null")
_, status = os.waitpid(pid, 0)
stop.set()
for t in threads:
    t.join()
after = pool.run(["readlink", "/proc/self/ns/net"], capture_output=True, text=True)
stats = pool.stats()._asdict()
pool.close()
busy.close()
print(json.dumps({"child": child, "status": status, "parent_sets": parent_sets,
                  "parent_after": [after.returncode, after.stdout.strip()], "parent_stats": stats,
                  "host_ipc": os.readlink("/proc/self/ns/ipc")}))
"""


#: A pool at the limits of this process (stdout: one JSON line). More sets than the registry of set fds holds
#: (sets beyond it would be kept by forked children): the pool stops there and says why. Then limits too low for a
#: set within half of them: the pool is refused. Either way the process still forks and nothing is left.
LIMITS = """
import json, os, resource, sys, time, nsbox
from helpers.pool_bodies import namespace_fds
def wait_failure(pool):
    deadline = time.monotonic() + 60
    while pool.stats().failure is None:
        assert time.monotonic() < deadline, pool.stats()
        time.sleep(0.01)
    return pool.stats()
def forked_child_holds():
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        os.write(w, str(len(namespace_fds())).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        held = int(f.read())
    os.waitpid(pid, 0)
    return held
out = {}
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
soft = hard  # room for 600 sets within half of the limit (a pool keeps within it), past the registry's 2048 fds
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
pool = nsbox.Pool(size=600, net=True, ipc=True, uts=True, cgroup=True)
stats = wait_failure(pool)
held = len(namespace_fds())
out["many"] = {"ready": stats.ready, "failure": stats.failure, "held": held, "child": forked_child_holds()}
pool.close()
out["many_closed"] = len(namespace_fds())
probe = os.open("/", os.O_RDONLY)  # the lowest free fd
os.close(probe)
out["few"] = []
# Limits too low for a set within half of them (refused), then one with room enough.
for limit in (probe + 3, probe + 5, 2 * probe + 5, 2 * (probe + 4) + 64):
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    try:
        pool = nsbox.Pool(size=1, net=True, ipc=True, uts=True)
    except ValueError as err:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        out["few"].append({"refused": str(err), "child": forked_child_holds(), "closed": len(namespace_fds())})
        continue
    deadline = time.monotonic() + 60
    while pool.stats().failure is None and pool.stats().ready == 0:
        assert time.monotonic() < deadline, pool.stats()
        time.sleep(0.01)
    stats = pool.stats()
    out["few"].append({"ready": stats.ready, "failure": stats.failure, "child": forked_child_holds()})
    pool.close()
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    out["few"][-1]["closed"] = len(namespace_fds())
out["few_closed"] = len(namespace_fds())
print(json.dumps(out))
"""


#: A pool within half of a low ``RLIMIT_NOFILE`` (stdout: one JSON line): a size that does not fit is refused; a
#: full pool leaves the caller its files; sets taken while the caller holds many files are not made again until
#: the caller's files are closed.
FD_SHARE = """
import errno, json, os, resource, time, nsbox
from helpers.pool_bodies import namespace_fds, wait_full
LIMIT = 256
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (LIMIT, hard))
options = {"net": True, "ipc": True, "uts": True, "cgroup": True}
per_set = 4 if os.geteuid() == 0 else 5  # and a user namespace without root
def free_fds():
    # How many files this process can still open (closed again), and the errno that stopped it.
    fds = []
    try:
        while True:
            fds.append(os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC))
    except OSError as err:
        stopped = errno.errorcode[err.errno]
    finally:
        for fd in fds:
            os.close(fd)
    return [len(fds), stopped]
def wait_for(what, pool):
    deadline = time.monotonic() + 30
    while not what(pool.stats()):
        assert time.monotonic() < deadline, pool.stats()
        time.sleep(0.005)
    return pool.stats()
out = {"limit": LIMIT, "per_set": per_set, "alone": free_fds()}
try:
    nsbox.Pool(size=1000, **options)
except ValueError as err:
    out["refused"] = str(err)
out["after_refusal"] = free_fds()
size = (LIMIT // 2 - 32) // per_set  # room left for this process's own few fds
with nsbox.Pool(size=size, **options) as pool:
    wait_full(pool)
    out["full"] = {"size": size, "held": len(namespace_fds()), "free": free_fds()}
    # The caller opens a quarter of its limit, then three boxes take sets: the pool is now past its share.
    mine = [os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC) for _ in range(LIMIT // 4)]
    codes = [pool.run(["true"]).returncode for _ in range(3)]
    # The filler tried to make a set again, and did not (it makes none while the caller holds those files).
    stats = wait_for(lambda s: s.failure is not None, pool)
    out["crowded"] = {"codes": codes, "ready": stats.ready, "failure": stats.failure, "free": free_fds()}
    for fd in mine:
        os.close(fd)
    # The caller's files closed: the filler makes the sets again (it retries within a second).
    out["refilled"] = wait_for(lambda s: s.ready == size, pool).ready
out["closed"] = len(namespace_fds())
print(json.dumps(out))
"""
