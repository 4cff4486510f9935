"""nsbox spawn benchmark: nsbox side by side with the bare system calls (the floor), unshare, bwrap and subprocess.

Run it as root with any Python that has nsbox installed::

    python bench/run.py            # the full run: a few minutes at most
    python bench/run.py --quick    # a smoke run: few iterations, a small memory case

It builds ``bench/floor.c`` with ``cc`` into a temporary directory, installs Debian's ``bubblewrap`` if ``bwrap``
is missing, measures every case with the tools interleaved round by round, and prints one Markdown table with
the issue's targets. Every process and temporary directory it makes is gone when it returns. See README.md.
"""

from __future__ import annotations

import argparse
import ctypes
import inspect
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    import nsbox
except ImportError as error:
    sys.exit(f"{error}: run this with a Python that has nsbox installed (`pip install .` in the repository)")

HERE = Path(__file__).resolve().parent
TRUE = "/bin/true"
NOBODY = 65534
PR_SET_CHILD_SUBREAPER = 36
SETPRIV = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
BWRAP_BASE = ["bwrap", "--bind", "/", "/", "--unshare-pid", "--proc", "/proc"]
B_NAMESPACES: dict[str, Any] = {"pid": True, "mount_proc": True, "uts": True, "ipc": True, "net": True, "cgroup": True}

# The spawn cases: nsbox's options, the floor's namespace list, and the same through unshare and bwrap.
CASES: dict[str, dict[str, Any]] = {
    "a": {
        "title": "pid + mount_proc",
        "nsbox": {"pid": True, "mount_proc": True},
        "floor": "pid,proc",
        "unshare": ["unshare", "--pid", "--fork", "--mount-proc"],
        "bwrap": BWRAP_BASE,
    },
    "b": {
        "title": "pid + mount_proc + uts + ipc + net + cgroup",
        "nsbox": B_NAMESPACES,
        "floor": "pid,proc,uts,ipc,net,cgroup",
        "unshare": ["unshare", "--pid", "--fork", "--mount-proc", "--uts", "--ipc", "--net", "--cgroup"],
        "bwrap": [*BWRAP_BASE, "--unshare-uts", "--unshare-ipc", "--unshare-net", "--unshare-cgroup"],
    },
    "c": {
        "title": f"rootless (uid {NOBODY}): user + pid + mount_proc",
        "nsbox": {"pid": True, "mount_proc": True},  # user=None: a user namespace, since we are not root
        "floor": "user,pid,proc",
        "unshare": ["unshare", "--user", "--map-root-user", "--pid", "--fork", "--mount-proc"],
        "bwrap": BWRAP_BASE,  # bwrap without setuid makes a user namespace itself
    },
}
TOOL_LABELS = {
    "floor": "floor (C: clone, mounts, exec, wait)",
    "nsbox": "`nsbox.run`",
    "unshare": "`unshare` via subprocess.run",
    "bwrap": "`bwrap` via subprocess.run",
    "subprocess": "`subprocess.run`, no namespaces",
}


@dataclass(frozen=True)
class Settings:
    rounds: int  # interleaved rounds per spawn case
    iterations: int  # spawns per tool per round
    mem_gib: float  # case d: what the caller holds
    mem_rounds: int
    mem_iterations: int
    forks_per_round: int
    thread_rounds: int  # case e
    thread_spawns: int  # spawns per thread per round


FULL = Settings(31, 25, 4.0, 7, 20, 2, 15, 150)
QUICK = Settings(3, 5, 0.25, 2, 5, 1, 2, 20)


class BenchError(Exception):
    pass


# --- measuring ----------------------------------------------------------------------------------------------

Tool = Callable[[int], list[float]]  # runs n spawns, returns each one's time in ms


def timed(spawn: Callable[[], int], what: str) -> Tool:
    """A tool from one spawn-and-wait call that returns an exit status."""

    def run(n: int) -> list[float]:
        times = []
        for _ in range(n):
            t0 = time.perf_counter_ns()
            status = spawn()
            t1 = time.perf_counter_ns()
            if status != 0:
                raise BenchError(f"{what} exited with status {status}")
            times.append((t1 - t0) / 1e6)
        return times

    return run


def floor_tool(binary: str, spec: str) -> Tool:
    def run(n: int) -> list[float]:
        out = subprocess.run([binary, str(n), spec], capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise BenchError(f"floor {spec}: {out.stderr.strip() or out.returncode}")
        return [int(line) / 1e6 for line in out.stdout.split()]

    return run


def subprocess_tool(argv: list[str], **kwargs: Any) -> Tool:
    return timed(lambda: subprocess.run(argv, check=False, **kwargs).returncode, " ".join(argv[:1]))


def measure(
    tools: dict[str, Tool],
    rounds: int,
    iterations: int,
    counts: dict[str, int] | None = None,
    keep: frozenset[int] = frozenset(),
) -> dict[str, Any]:
    """Interleaved rounds: each round runs every tool in turn (the order rotating), `iterations` spawns each.

    Returns, per tool, the median of each round (ms), or the error that stopped it. `counts` overrides
    `iterations` per tool; `keep` are children that orphan reaping must leave alone.
    """
    counts = counts or {}
    names = list(tools)
    medians: dict[str, list[float]] = {name: [] for name in names}
    errors: dict[str, str] = {}
    for name in names:  # warm up: page cache, spawner thread, first-use costs
        try:
            tools[name](min(2, counts.get(name, iterations)))
        except Exception as e:  # a tool that fails (or an API still being written) gets a row saying so
            errors[name] = f"{type(e).__name__}: {e}"
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            if name in errors:
                continue
            try:
                medians[name].append(statistics.median(tools[name](counts.get(name, iterations))))
            except Exception as e:
                errors[name] = f"{type(e).__name__}: {e}"
            reap_orphans(keep)
    return {"medians": medians, "errors": errors}


def side_by_side(tools: dict[str, Tool], rounds: int, iterations: int) -> dict[str, list[float]] | None:
    """:func:`measure` for the small benches: the round medians per tool, or ``None`` (said on stderr) on an error."""
    print(f"{rounds} rounds x {iterations} spawns, interleaved", file=sys.stderr)
    result = measure(tools, rounds, iterations)
    if result["errors"]:
        print(result["errors"], file=sys.stderr)
        return None
    return result["medians"]  # type: ignore[no-any-return]


def median_of(values: list[float]) -> float:
    """The median of round medians, as the benches' rows give it (the upper one of an even count)."""
    return sorted(values)[len(values) // 2]


def ran_on(rounds: int, iterations: int) -> str:
    """The line that says where and as whom a small bench ran."""
    who = "root" if os.geteuid() == 0 else f"uid {os.geteuid()} (rootless)"
    return f"{platform.node()} · Linux {platform.release()} · {os.cpu_count()} CPUs · {who} · {rounds}x{iterations}\n"


def throughput(spawn: Callable[[], int], threads: int, per_thread: int) -> float:
    """Spawns per second with `threads` threads each doing `per_thread` spawns, released together."""
    barrier = threading.Barrier(threads + 1)
    failures: list[str] = []

    def work() -> None:
        barrier.wait()
        try:
            for _ in range(per_thread):
                status = spawn()
                if status != 0:
                    failures.append(f"exit status {status}")
                    return
        except Exception as e:  # reported by the caller, not lost in a thread
            failures.append(repr(e))

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for w in workers:
        w.start()
    barrier.wait()
    t0 = time.perf_counter()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - t0
    if failures:
        raise BenchError(failures[0])
    return threads * per_thread / elapsed


def floor_throughput(binary: str, spec: str, jobs: int, per_job: int) -> float:
    out = subprocess.run([binary, str(per_job), spec, str(jobs)], capture_output=True, text=True, check=False)
    if out.returncode != 0 or not out.stdout.startswith("total "):
        raise BenchError(f"floor {spec} x{jobs}: {out.stderr.strip() or out.returncode}")
    return jobs * per_job / (int(out.stdout.split()[1]) / 1e9)


def settle(before: str, notes: list[str], limit: float = 15.0) -> None:
    """Waits (up to `limit` s) until the CPUs are nearly idle, e.g. after network namespaces are torn down.

    When they are not, says so in `notes`: something else on the machine adds noise to what follows.
    """

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        return fields[3] + fields[4], sum(fields)

    deadline = time.monotonic() + limit
    idle0, total0 = sample()
    busy = 0.0
    while time.monotonic() < deadline:
        time.sleep(0.25)
        idle1, total1 = sample()
        if total1 > total0:
            busy = 1 - (idle1 - idle0) / (total1 - total0)
            if busy < 0.1:
                return
        idle0, total0 = idle1, total1
    notes.append(f"other processes kept {busy:.0%} of the CPUs busy before {before}: expect noise there")


# --- processes and memory -----------------------------------------------------------------------------------


def processes() -> dict[int, tuple[int, str, str]]:
    """PID -> (parent PID, command name, state) of every process."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        state, ppid = stat[stat.rindex(")") + 2 :].split()[:2]
        found[int(entry)] = (int(ppid), stat[stat.index("(") + 1 : stat.rindex(")")], state)
    return found


def descendants(root: int) -> dict[int, str]:
    """PID -> command name of every process below `root`."""
    table = processes()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found: dict[int, str] = {}
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found[pid] = table[pid][1]
        todo.extend(children.get(pid, []))
    return found


def become_subreaper() -> None:
    """Makes orphaned descendants our children, so that we can reap them.

    bwrap's outer process exits without waiting for the PID 1 it made: every `bwrap --unshare-pid` run leaves
    a zombie for init to reap, whenever it gets to it. As a subreaper we collect those ourselves.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def reap_orphans(keep: frozenset[int] = frozenset()) -> None:
    """Reaps our zombie children other than `keep` (those a subprocess.Popen will wait for)."""
    me = os.getpid()
    for pid, (ppid, _, state) in processes().items():
        if ppid == me and state == "Z" and pid not in keep:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass


def private_kib(pid: int) -> int:
    total = 0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                total += int(line.split()[1])
    return total


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def waiting_box_memory(start: Callable[[], subprocess.Popen[Any]]) -> dict[str, Any]:
    """Starts a box around `sleep 100` and reports the private memory of every process it keeps alive.

    Those are all the processes that appear below this one when the box starts: the command, and whatever
    the tool keeps next to it or above it (an init, a monitor).
    """
    me = os.getpid()
    before = set(descendants(me))
    proc = start()
    kept: dict[int, str] = {}
    try:
        deadline = time.monotonic() + 5
        while "sleep" not in descendants(me).values():
            if time.monotonic() > deadline:
                raise BenchError("no sleep process appeared")
            time.sleep(0.01)
        time.sleep(0.2)  # let everything finish starting up
        kept = {pid: comm for pid, comm in descendants(me).items() if pid not in before}
        found = [(comm, private_kib(pid)) for pid, comm in sorted(kept.items())]
    finally:
        # The command first, so each tool reaps what it started and exits by itself; then anything left.
        commands = [pid for pid, comm in kept.items() if comm == "sleep"]
        kill_all(commands or [*descendants(proc.pid), proc.pid])
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            kill_all([*descendants(proc.pid), proc.pid])
            proc.wait()
        # What the tool left to its subreaper (us) dies with its command: wait for it and reap it.
        deadline = time.monotonic() + 5
        while set(kept) & set(descendants(me)) and time.monotonic() < deadline:
            reap_orphans()
            time.sleep(0.01)
    command = sum(kib for comm, kib in found if comm == "sleep")
    extra = [(comm, kib) for comm, kib in found if comm != "sleep"]
    return {"command_kib": command, "extra": extra}


# --- the cases ----------------------------------------------------------------------------------------------


def spawn_tools(case: str, floor: str) -> dict[str, Tool]:
    spec = CASES[case]
    kwargs = spec["nsbox"]
    tools = {
        "floor": floor_tool(floor, spec["floor"]),
        "nsbox": timed(lambda: nsbox.run([TRUE], **kwargs).returncode, "nsbox.run"),
        "unshare": subprocess_tool([*spec["unshare"], TRUE]),
        "subprocess": subprocess_tool([TRUE]),
    }
    if shutil.which("bwrap"):
        tools["bwrap"] = subprocess_tool([*spec["bwrap"], TRUE])
    return tools


def memory_worker(gib: float, rounds: int, iterations: int, forks: int) -> dict[str, Any]:
    """Case d, in its own process: hold `gib` GiB of bytearray(4096), then spawn case (a) and fork."""
    t0 = time.perf_counter()
    hoard = [bytearray(4096) for _ in range(int(gib * 2**30) // 4096)]
    alloc_s = time.perf_counter() - t0
    with open("/proc/self/status") as f:
        rss_kib = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))

    def fork_exec() -> int:
        pid = os.fork()
        if pid == 0:
            try:
                os.execv(TRUE, [TRUE])
            finally:
                os._exit(127)
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])

    kwargs = CASES["a"]["nsbox"]
    tools = {
        "nsbox": timed(lambda: nsbox.run([TRUE], **kwargs).returncode, "nsbox.run"),
        "fork": timed(fork_exec, "fork+exec"),
        "subprocess": subprocess_tool([TRUE]),
    }
    result = measure(tools, rounds, iterations, counts={"fork": forks})
    result.update(objects=len(hoard), alloc_s=alloc_s, rss_kib=rss_kib)
    return result


def thread_case(floor: str, rounds: int, per_thread: int) -> dict[str, Any]:
    """Case e: throughput of two concurrent spawners over one, per round, for nsbox, the floor and subprocess."""
    kwargs = CASES["a"]["nsbox"]

    def nsbox_spawn() -> int:
        return nsbox.run([TRUE], **kwargs).returncode

    def plain_spawn() -> int:
        return subprocess.run([TRUE], check=False).returncode

    runs: dict[str, Callable[[int], float]] = {
        "nsbox": lambda n: throughput(nsbox_spawn, n, per_thread),
        "floor": lambda n: floor_throughput(floor, CASES["a"]["floor"], n, per_thread),
        "subprocess": lambda n: throughput(plain_spawn, n, per_thread),
    }
    ratios: dict[str, list[float]] = {name: [] for name in runs}
    single: dict[str, list[float]] = {name: [] for name in runs}
    for name in runs:  # warm up, and start nsbox's second spawner thread
        runs[name](2)
    names = list(runs)
    for r in range(rounds):
        for name in names[r % 3 :] + names[: r % 3]:
            if r % 2:
                one, two = runs[name](1), runs[name](2)
            else:
                two, one = runs[name](2), runs[name](1)
            ratios[name].append(two / one)
            single[name].append(one)
    return {"ratios": ratios, "single": single}


def enter_case(floor: str, rounds: int, iterations: int) -> dict[str, Any]:
    """Case f: entering a running box (made with case b's namespaces)."""
    box = nsbox.Popen(["sleep", "1000"], **B_NAMESPACES)
    try:
        tools: dict[str, Tool] = {
            "floor": floor_tool(floor, f"enter:{box.pid}"),
            "nsenter": subprocess_tool(["nsenter", "--target", str(box.pid), "--all", TRUE]),
        }
        exec_into = getattr(nsbox.Popen, "exec", None)  # being written: measured once it exists
        if exec_into is not None:

            def box_exec() -> int:
                result = exec_into(box, [TRUE])
                if hasattr(result, "wait"):  # a Popen rather than a CompletedProcess
                    return int(result.wait())
                return int(getattr(result, "returncode", 0) or 0)

            tools["exec"] = timed(box_exec, "box.exec")
        return measure(tools, rounds, iterations, keep=frozenset([box.pid]))
    finally:
        box.kill()
        box.wait()


def memory_case() -> dict[str, Any]:
    """Case g: what a waiting box keeps alive, with unshare and bwrap for contrast."""
    starts: dict[str, Callable[[], subprocess.Popen[Any]]] = {
        "nsbox": lambda: nsbox.Popen(["sleep", "100"], pid=True),
        # unshare reports "sigprocmask unblock failed" when its child dies of SIGKILL: not news.
        "unshare": lambda: subprocess.Popen(["unshare", "--pid", "--fork", "sleep", "100"], stderr=subprocess.DEVNULL),
    }
    if "init" in inspect.signature(nsbox.Popen.__init__).parameters:
        with_init: dict[str, Any] = {"pid": True, "init": True}
        starts["nsbox-init"] = lambda: nsbox.Popen(["sleep", "100"], **with_init)
    if shutil.which("bwrap"):
        starts["bwrap"] = lambda: subprocess.Popen(["bwrap", "--bind", "/", "/", "--unshare-pid", "sleep", "100"])
    out: dict[str, Any] = {}
    for name, start in starts.items():
        try:
            out[name] = waiting_box_memory(start)
        except (BenchError, OSError) as e:
            out[name] = {"error": str(e)}
    return out


# --- the table ----------------------------------------------------------------------------------------------


def fmt_ms(v: float) -> str:
    return f"{v:.3f} ms" if v < 10 else f"{v:.1f} ms"


def fmt_range(values: list[float]) -> str:
    lo, hi = min(values), max(values)
    return f"{lo:.3f}-{hi:.3f}" if hi < 10 else f"{lo:.1f}-{hi:.1f}"


def mib(kib: float) -> str:
    return f"{kib / 1024:.2f} MiB"


class Table:
    HEADER = ("case", "what", "median", "min-max", "x floor", "x unshare (f: nsenter)", "target", "result")

    def __init__(self) -> None:
        self.rows: list[tuple[str, ...]] = []
        self.misses: list[str] = []

    def add(self, *cells: str) -> None:
        self.rows.append(tuple(cells) + ("",) * (len(self.HEADER) - len(cells)))

    def verdict(self, case: str, checks: list[tuple[str, bool]]) -> str:
        missed = [text for text, ok in checks if not ok]
        if missed:
            self.misses.append(f"({case}) " + ", ".join(missed))
            return "**MISS** (" + ", ".join(text for text, _ in checks) + ")"
        return "PASS (" + ", ".join(text for text, _ in checks) + ")"

    def render(self) -> str:
        widths = [max(len(row[i]) for row in [self.HEADER, *self.rows]) for i in range(len(self.HEADER))]
        lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(self.HEADER, widths, strict=True)) + " |"]
        lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in self.rows]
        return "\n".join(lines)


def med(result: dict[str, Any], tool: str) -> float | None:
    values = result["medians"].get(tool)
    return statistics.median(values) if values and tool not in result["errors"] else None


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a is not None and b else ""


def spawn_rows(table: Table, case: str, result: dict[str, Any]) -> None:
    floor, unshare = med(result, "floor"), med(result, "unshare")
    for tool in ("floor", "nsbox", "unshare", "bwrap", "subprocess"):
        label = TOOL_LABELS[tool]
        if tool in result["errors"]:
            table.add(case, label, "failed", result["errors"][tool][:60])
            continue
        value = med(result, tool)
        if value is None:
            table.add(case, label, "not available", "`bwrap` missing" if tool == "bwrap" else "")
            continue
        target = result_text = ""
        if tool == "nsbox":
            target = "<=1.25x floor, <=0.5x unshare"
            checks = []
            if floor:
                checks.append((f"{value / floor:.2f}x floor", value <= 1.25 * floor))
            if unshare:
                checks.append((f"{value / unshare:.2f}x unshare", value <= 0.5 * unshare))
            result_text = table.verdict(case, checks)
        ratios = (ratio(value, floor), ratio(value, unshare))
        table.add(case, label, fmt_ms(value), fmt_range(result["medians"][tool]), *ratios, target, result_text)


def memory_rows(table: Table, result: dict[str, Any], case_a: dict[str, Any], gib: float) -> None:
    a_nsbox, a_floor, a_unshare = med(case_a, "nsbox"), med(case_a, "floor"), med(case_a, "unshare")
    held = f"{result['rss_kib'] / 2**20:.1f} GiB RSS, {result['objects']:,} bytearrays"
    labels = {
        "nsbox": f"`nsbox.run` (a), caller holds {gib:g} GiB ({held})",
        "fork": "`os.fork()` + exec, same caller",
        "subprocess": "`subprocess.run`, no namespaces, same caller",
    }
    for tool, label in labels.items():
        value = med(result, tool)
        if value is None:
            table.add("d", label, "failed", result["errors"].get(tool, "")[:60])
            continue
        target = result_text = ""
        if tool == "nsbox" and a_nsbox:
            target = "<=1.25x (a) nsbox"
            result_text = table.verdict("d", [(f"{value / a_nsbox:.2f}x (a) nsbox", value <= 1.25 * a_nsbox)])
        ratios = (ratio(value, a_floor), ratio(value, a_unshare))
        table.add("d", label, fmt_ms(value), fmt_range(result["medians"][tool]), *ratios, target, result_text)


def thread_rows(table: Table, result: dict[str, Any]) -> None:
    floor_ratio = statistics.median(result["ratios"]["floor"])
    labels = {
        "nsbox": "`nsbox.run` (a), 2 threads vs 1: throughput",
        "floor": "floor (a), 2 processes vs 1: throughput",
        "subprocess": "`subprocess.run`, 2 threads vs 1: throughput",
    }
    for tool, label in labels.items():
        values = result["ratios"][tool]
        value = statistics.median(values)
        one = statistics.median(result["single"][tool])
        target = result_text = ""
        if tool == "nsbox":
            target = ">=1.6x"
            result_text = table.verdict("e", [(f"{value:.2f}x", value >= 1.6)])
        cells = (f"{value:.2f}x", f"{min(values):.2f}-{max(values):.2f}", ratio(value, floor_ratio))
        table.add("e", f"{label} (1: {one:,.0f}/s)", *cells, "", target, result_text)


def enter_rows(table: Table, result: dict[str, Any]) -> None:
    floor, nsenter = med(result, "floor"), med(result, "nsenter")
    labels = {
        "floor": "floor (C: setns, clone, exec, wait)",
        "exec": '`box.exec(["/bin/true"])`',
        "nsenter": "`nsenter --target PID --all` via subprocess.run",
    }
    for tool, label in labels.items():
        if tool == "exec" and "exec" not in result["medians"]:
            table.add("f", label, "not available", "no `Popen.exec` yet", "", "", "<=0.5x nsenter", "not available")
            continue
        value = med(result, tool)
        if value is None:
            table.add("f", label, "failed", result["errors"].get(tool, "")[:60])
            continue
        target = result_text = ""
        if tool == "exec" and nsenter:
            target = "<=0.5x nsenter"
            result_text = table.verdict("f", [(f"{value / nsenter:.2f}x nsenter", value <= 0.5 * nsenter)])
        cells = (fmt_ms(value), fmt_range(result["medians"][tool]), ratio(value, floor), ratio(value, nsenter))
        table.add("f", label, *cells, target, result_text)


def box_rows(table: Table, result: dict[str, Any]) -> None:
    labels = {
        "nsbox": '`nsbox.Popen(["sleep", "100"], pid=True)`',
        "nsbox-init": '`nsbox.Popen(["sleep", "100"], pid=True, init=True)`',
        "unshare": "`unshare --pid --fork sleep 100`",
        "bwrap": "`bwrap --bind / / --unshare-pid sleep 100`",
    }
    for tool, label in labels.items():
        if tool not in result:
            if tool == "nsbox-init":
                table.add("g", label, "not available", "no `init=True` yet")
            continue
        r = result[tool]
        if "error" in r:
            table.add("g", label, "failed", r["error"][:60])
            continue
        extra = sum(kib for _, kib in r["extra"])
        kept = ", ".join(f"{comm} {mib(kib)}" for comm, kib in r["extra"]) or "nothing else"
        detail = f"command {mib(r['command_kib'])}; besides it: {kept}"
        target = result_text = ""
        if tool.startswith("nsbox"):
            target = "<=2 MiB beyond the command"
            result_text = table.verdict("g", [(f"{mib(extra)} beyond the command", extra <= 2048)])
        table.add("g", label, f"{mib(extra)} extra", detail, "", "", target, result_text)


# --- setup --------------------------------------------------------------------------------------------------


def ensure_bwrap() -> str | None:
    """Installs Debian's bubblewrap when `bwrap` is missing. Returns a note when it stays missing."""
    if shutil.which("bwrap"):
        return None
    how = "apt-get install -y bubblewrap"
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return f"`bwrap` is missing: install it with `{how}` (as root)"
    print(f"bwrap is missing: running `{how}` ...", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "bubblewrap"]
    for cmd in (install, ["apt-get", "update"], install):  # the package lists may be missing or stale
        subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, check=False)
        if shutil.which("bwrap"):
            return None
    return f"`bwrap` is missing and `{how}` failed"


def build_floor(directory: Path) -> str:
    binary = directory / "floor"
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise BenchError("no C compiler: install gcc (the floor is built from bench/floor.c)")
    out = subprocess.run([cc, "-O2", "-o", str(binary), str(HERE / "floor.c")], capture_output=True, text=True)
    if out.returncode != 0:
        raise BenchError(f"cannot build the floor:\n{out.stderr}")
    binary.chmod(0o755)
    return str(binary)


def rootless_setup(directory: Path) -> tuple[list[str], dict[str, str]] | str:
    """A command prefix and environment running this script as uid 65534, or why that is impossible.

    Copies the installed nsbox package and this script to the world-readable `directory` and picks the
    first Python that can import nsbox from there as that user (a checkout or venv under /root cannot).
    """
    site = directory / "site"
    shutil.copytree(Path(nsbox.__file__).parent, site / "nsbox", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(__file__, directory / "run.py")
    directory.chmod(0o755)
    for root, _, files in os.walk(site):
        Path(root).chmod(0o755)
        for name in files:
            (Path(root) / name).chmod(0o755 if name.endswith(".so") else 0o644)
    (directory / "run.py").chmod(0o644)
    env = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "PYTHONPATH": str(site),
        "PYTHONDONTWRITEBYTECODE": "1",
        "HOME": "/tmp",
        "LANG": "C.UTF-8",
    }
    if not shutil.which("setpriv"):
        return "`setpriv` is missing (util-linux)"
    # The system's Python first: a venv or pyenv Python under /root is not really usable by another user.
    for python in dict.fromkeys(["/usr/bin/python3", sys.executable, shutil.which("python3") or ""]):
        if not python:
            continue
        probe = [*SETPRIV, python, "-c", "import nsbox"]
        if subprocess.run(probe, env=env, cwd="/tmp", capture_output=True, check=False).returncode == 0:
            return [*SETPRIV, python, str(directory / "run.py")], env
    return f"no Python can import nsbox as uid {NOBODY} (tried {sys.executable} and /usr/bin/python3)"


def clean_up() -> list[str]:
    """Reaps the zombies the tools left us and kills anything still running below us; names the latter."""
    reap_orphans()
    table = processes()
    alive = {pid: comm for pid, comm in descendants(os.getpid()).items() if table.get(pid, (0, "", "Z"))[2] != "Z"}
    kill_all(list(alive))
    deadline = time.monotonic() + 5
    while descendants(os.getpid()) and time.monotonic() < deadline:
        reap_orphans()
        time.sleep(0.01)
    return [f"{comm} ({pid})" for pid, comm in alive.items()]


def worker(cmd: list[str], timeout: float, **kwargs: Any) -> dict[str, Any]:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, **kwargs)
    if out.returncode != 0:
        raise BenchError(f"worker {' '.join(cmd[-8:])} failed:\n{out.stderr}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def machine() -> str:
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = []
    for tool in (["unshare", "--version"], ["bwrap", "--version"]):
        if shutil.which(tool[0]):
            versions.append(subprocess.run(tool, capture_output=True, text=True, check=False).stdout.strip())
    return (
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}; {os.cpu_count()} CPUs ({cpu}); Linux {platform.release()}; "
        f"Python {platform.python_version()}; nsbox {nsbox.__version__}; {'; '.join(versions)}"
    )


@contextmanager
def progress(what: str) -> Iterator[None]:
    print(f"  {what} ...", end="", flush=True, file=sys.stderr)
    t0 = time.perf_counter()
    yield
    print(f" {time.perf_counter() - t0:.1f} s", file=sys.stderr)


def collect(s: Settings, raw: dict[str, Any], notes: list[str]) -> None:
    """Runs every case into `raw`; the temporary directory is gone when this returns."""
    with tempfile.TemporaryDirectory(prefix="nsbox-bench-") as tmp:
        directory = Path(tmp)
        directory.chmod(0o755)  # the rootless case reads the floor, nsbox and this script from here
        floor = build_floor(directory)
        for case in ("a", "b"):
            settle(f"case {case}", notes)  # after (b): network namespaces are torn down in the background
            with progress(f"case {case}: {CASES[case]['title']}"):
                raw[case] = measure(spawn_tools(case, floor), s.rounds, s.iterations)
        settle("case c", notes)
        with progress(f"case c: {CASES['c']['title']}"):
            rootless = rootless_setup(directory)
            if isinstance(rootless, str):
                notes.append(f"case c skipped: {rootless}")
            else:
                cmd, env = rootless
                args = ["--worker", "c", "--floor", floor, "--rounds", str(s.rounds), "--iterations", str(s.iterations)]
                raw["c"] = worker([*cmd, *args], 600, env=env, cwd="/tmp")
                notes.append(f"case c ran as uid {NOBODY} with {raw['c']['python']} and a copy of nsbox's package")
        settle("case d", notes)
        with progress(f"case d: caller holding {s.mem_gib:g} GiB"):
            args = ["--worker", "d", "--gib", str(s.mem_gib), "--rounds", str(s.mem_rounds)]
            args += ["--iterations", str(s.mem_iterations), "--forks", str(s.forks_per_round)]
            raw["d"] = worker([sys.executable, __file__, *args], 600)
        settle("case e", notes)
        with progress("case e: two threads vs one"):
            raw["e"] = thread_case(floor, s.thread_rounds, s.thread_spawns)
        settle("case f", notes)
        with progress("case f: entering a running box"):
            raw["f"] = enter_case(floor, s.rounds, s.iterations)
        with progress("case g: memory of a waiting box"):
            raw["g"] = memory_case()


def report(s: Settings, raw: dict[str, Any], notes: list[str], seconds: float) -> Table:
    table = Table()
    for case in ("a", "b", "c"):
        if case in raw:
            spawn_rows(table, case, raw[case])
    memory_rows(table, raw["d"], raw["a"], s.mem_gib)
    thread_rows(table, raw["e"])
    enter_rows(table, raw["f"])
    box_rows(table, raw["g"])
    print(f"\n{raw['machine']}\n")
    print(table.render())
    print(
        f"\n{s.rounds} interleaved rounds x {s.iterations} spawns of /bin/true per tool (d: {s.mem_rounds} rounds, "
        f"fork {s.forks_per_round} per round; e: {s.thread_rounds} rounds x {s.thread_spawns} spawns per thread). "
        "median = median of the per-round medians; min-max = lowest and highest per-round median. "
        f"Total {seconds:.0f} s."
    )
    for case in ("a", "b", "c", "d", "f"):
        for tool, error in raw.get(case, {}).get("errors", {}).items():
            notes.append(f"({case}) {tool} failed: {error}")
    for note in notes:
        print(f"note: {note}")
    print("targets missed: " + (" | ".join(table.misses) if table.misses else "none"))
    return table


def main(settings: Settings, quick: bool, json_path: str | None) -> int:
    if os.geteuid() != 0:
        print("run as root: cases a, b, f need it (case c drops to uid 65534 by itself)", file=sys.stderr)
        return 2
    started = time.perf_counter()
    become_subreaper()
    notes = [n for n in [ensure_bwrap()] if n]
    raw: dict[str, Any] = {"settings": settings.__dict__, "machine": machine()}
    print(f"nsbox benchmark ({'quick' if quick else 'full'}): {raw['machine']}", file=sys.stderr)
    try:
        collect(settings, raw, notes)
    finally:
        leftovers = clean_up()
    if leftovers:
        notes.append(f"killed leftover processes: {leftovers}")
    report(settings, raw, notes, time.perf_counter() - started)
    if json_path:
        Path(json_path).write_text(json.dumps(raw, indent=1))
    return 0


def run_worker(args: argparse.Namespace) -> int:
    become_subreaper()
    if args.worker == "c":
        result = measure(spawn_tools("c", args.floor), args.rounds, args.iterations)
        result["python"] = f"{sys.executable} (Python {platform.python_version()})"
    else:
        result = memory_worker(args.gib, args.rounds, args.iterations, args.forks)
    print(json.dumps(result))
    return 0


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run: few iterations, 256 MiB for case d")
    parser.add_argument("--json", metavar="PATH", help="also write the raw measurements there")
    # Internal: the rootless case and the memory case run in their own processes.
    parser.add_argument("--worker", choices=["c", "d"], help=argparse.SUPPRESS)
    parser.add_argument("--floor", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--iterations", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--gib", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--forks", type=int, help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse()
    try:
        if arguments.worker:
            sys.exit(run_worker(arguments))
        sys.exit(main(QUICK if arguments.quick else FULL, arguments.quick, arguments.json))
    except BenchError as error:
        sys.exit(f"benchmark failed: {error}")
