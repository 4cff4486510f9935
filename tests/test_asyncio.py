"""``nsbox.asyncio``: boxes awaited on the running loop through their pidfd, on asyncio's loop and on uvloop.

Each test runs its coroutine on a fresh loop of the kind it is given (``asyncio.Runner(loop_factory=...)``), and
checks from the host what it made: the box's processes (by host PID), this process's fds, threads and children.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
import uvloop

import nsbox
import nsbox.asyncio
from helpers.cgroups import box_cgroups
from helpers.procs import children_of, open_fds, proc_comm, proc_state, wait_gone, wait_until
from helpers.rootless import Rootless

T = TypeVar("T")

#: The loops every core test runs on: asyncio's own, and uvloop (a test dependency: scripts/bootstrap installs it).
LOOPS = ["asyncio", "uvloop"]


def run_on(kind: str, main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """``main()`` on a fresh loop of that kind, closed afterwards."""
    factory = uvloop.new_event_loop if kind == "uvloop" else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main())


async def fds_of_a_warm_loop() -> dict[int, str]:
    """This process's fds, once the loop has run a box (uvloop opens /dev/null once, for its first pipes)."""
    await nsbox.asyncio.run(["true"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return open_fds()


#: The threads of a loop's default executor at most (concurrent.futures.ThreadPoolExecutor's default).
EXECUTOR_THREADS = min(32, (os.cpu_count() or 1) + 4)


def threads() -> int:
    """OS threads of this process (the spawner threads of nsbox's core included)."""
    return len(os.listdir("/proc/self/task"))


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return b""


def host_pids_with(token: str) -> list[int]:
    """Host PIDs whose command line has ``token`` in it."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and token.encode() in cmdline(int(entry)).split(b"\0"):
            found.append(int(entry))
    return found


def gone(pid: int, comm: str) -> bool:
    """``pid`` no longer names the process it named (absent, or reused by another command)."""
    return proc_state(pid) is None or proc_comm(pid) != comm


class Sampler:
    """Counts this process's OS threads on every turn of the loop while a block runs: the highest count seen."""

    def __init__(self) -> None:
        self.peak = threads()
        self._stop = False

    async def sample(self) -> None:
        while not self._stop:
            self.peak = max(self.peak, threads())
            await asyncio.sleep(0)

    def stop(self) -> None:
        self._stop = True


@pytest.mark.parametrize("loop", LOOPS)
def test_200_concurrent_boxes_from_one_loop_each_pid_1_without_a_thread_per_box(loop: str) -> None:
    async def main() -> None:
        fds_before, threads_before = await fds_of_a_warm_loop(), threads()
        sampler = Sampler()
        watching = asyncio.create_task(sampler.sample())

        async def box(i: int) -> subprocess.CompletedProcess[str]:
            return await nsbox.asyncio.run(
                ["sh", "-c", 'echo "$$ $0"', f"token-{i}"], pid=True, capture_output=True, text=True
            )

        results = await asyncio.gather(*(box(i) for i in range(200)))
        sampler.stop()
        await watching
        assert [r.stdout for r in results] == [f"1 token-{i}\n" for i in range(200)]
        assert {r.returncode for r in results} == {0}
        # Never a thread per box: spawns that overlap run in the loop's executor (a bounded pool, as asyncio's
        # getaddrinfo does), each pool thread with a spawner thread of nsbox's core at most.
        assert sampler.peak <= threads_before + 2 * EXECUTOR_THREADS + 2, (threads_before, sampler.peak)
        assert sampler.peak < threads_before + 20
        assert set(open_fds()) == set(fds_before)
        assert children_of(os.getpid()) == []

    threads_before = threads()
    run_on(loop, main)
    assert wait_until(lambda: threads() <= threads_before + 1, timeout=30)  # an idle spawner retires after 2 s


@pytest.mark.parametrize("loop", LOOPS)
def test_50_boxes_cancelled_mid_run_are_killed_and_reaped(loop: str) -> None:
    tag = f"nsbox-cancel-{os.getpid()}"

    async def main() -> None:
        fds_before = await fds_of_a_warm_loop()
        read_end, write_end = os.pipe()
        reader = asyncio.StreamReader()
        transport, _ = await asyncio.get_running_loop().connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_end, "rb")
        )
        tasks = [
            asyncio.create_task(
                nsbox.asyncio.run(
                    ["sh", "-c", 'sleep 100 & echo "ready $0"; wait', f"{tag}-{i}"], pid=True, stdout=write_end
                )
            )
            for i in range(50)
        ]
        lines = {(await reader.readline()).decode() for _ in range(50)}
        os.close(write_end)
        assert lines == {f"ready {tag}-{i}\n" for i in range(50)}
        # Each box's sh (PID 1), found by its token, and its sleep: the box's processes, by host PID.
        shells = [pid for i in range(50) for pid in host_pids_with(f"{tag}-{i}")]
        sleeps = [child for pid in shells for child in children_of(pid)]
        assert len(shells) == 50 and len(sleeps) == 50
        # `$!` is known as soon as sh has forked, before the child has exec'd sleep.
        assert wait_until(lambda: {proc_comm(pid) for pid in sleeps} == {"sleep"})
        for task in tasks:
            task.cancel()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(o, asyncio.CancelledError) for o in outcomes)
        # Gone as the cancellations return: killed and reaped, not left for later.
        assert [pid for pid in shells if not gone(pid, "sh")] == []
        assert [pid for pid in sleeps if not gone(pid, "sleep")] == []
        assert children_of(os.getpid()) == []
        transport.close()
        await asyncio.sleep(0)  # the pipe transport closes its file on the loop's next turn
        assert set(open_fds()) == set(fds_before)

    run_on(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_wait_for_communicate_times_out_then_kill_ends_the_grandchild_too(loop: str) -> None:
    async def main() -> None:
        proc = await nsbox.asyncio.create_subprocess_exec(
            "sh", "-c", "sleep 100 & echo $!; wait", pid=True, mount_proc=True, stdout=asyncio.subprocess.PIPE
        )
        try:
            assert proc.stdout is not None
            inner = int(await proc.stdout.readline())
            box = proc._transport.get_extra_info("subprocess")  # type: ignore[attr-defined]
            grandchild = box.host_pid(inner)
            assert grandchild in children_of(proc.pid)
            assert wait_until(lambda: proc_comm(grandchild) == "sleep")  # `$!` is known before the exec
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(proc.communicate(), 0.1)
            assert proc.returncode is None
            proc.kill()
            assert await proc.wait() == -signal.SIGKILL
            assert proc.returncode == -signal.SIGKILL
            assert gone(grandchild, "sleep") and gone(proc.pid, "sh")
        finally:
            proc._transport.close()  # type: ignore[attr-defined]  # a failed assert leaves nothing running

    run_on(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_waiting_uses_the_pidfd_without_a_child_watcher_or_a_thread(loop: str) -> None:
    policy = asyncio.get_event_loop_policy()

    async def main() -> None:
        python_threads = threading.active_count()
        proc = await nsbox.asyncio.create_subprocess_exec(
            "sh", "-c", "read line; exit 7", stdin=asyncio.subprocess.PIPE
        )
        assert isinstance(proc, asyncio.subprocess.Process)
        box = proc._transport.get_extra_info("subprocess")  # type: ignore[attr-defined]
        assert isinstance(box, nsbox.Popen) and proc.pid == box.pid and proc.returncode is None
        assert threading.active_count() == python_threads  # no waitpid thread (ThreadedChildWatcher's)
        await proc.communicate(b"go\n")
        assert proc.returncode == 7 and await proc.wait() == 7
        assert threading.active_count() == python_threads
        assert not [t for t in threading.enumerate() if t.name.startswith("waitpid-")]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the watcher API is deprecated from 3.12
        run_on(loop, main)
        # The policy's child watcher (3.11-3.13) was never made, hence never attached to a loop.
        assert getattr(policy, "_watcher", None) is None
    assert signal.getsignal(signal.SIGCHLD) == signal.SIG_DFL  # no SIGCHLD handler was installed


@pytest.mark.parametrize("loop", LOOPS)
def test_run_matches_nsbox_run(loop: str) -> None:
    cases: list[tuple[list[str], dict[str, Any]]] = [
        (
            ["sh", "-c", "cat; echo out; echo err >&2; exit 3"],
            {"input": "a\r\nb\n", "capture_output": True, "text": True},
        ),
        (["sh", "-c", "echo $$; hostname"], {"pid": True, "hostname": "box", "capture_output": True}),
        (["sh", "-c", "cat"], {"input": b"x" * 300_000, "stdout": subprocess.PIPE}),
        (["true"], {}),
    ]

    async def main() -> list[subprocess.CompletedProcess[Any]]:
        return [await nsbox.asyncio.run(args, **options) for args, options in cases]

    awaited = run_on(loop, main)
    for (args, options), got in zip(cases, awaited, strict=True):
        expected = nsbox.run(args, **options)
        assert (got.args, got.returncode, got.stdout, got.stderr) == (
            expected.args,
            expected.returncode,
            expected.stdout,
            expected.stderr,
        )
    assert awaited[0].stdout == "a\nb\nout\n"


@pytest.mark.parametrize("loop", LOOPS)
def test_check_timeout_and_asyncio_timeout_kill_and_reap_the_box(loop: str) -> None:
    tag = f"nsbox-timeout-{os.getpid()}"

    async def main() -> None:
        fds_before = await fds_of_a_warm_loop()
        with pytest.raises(subprocess.CalledProcessError) as failed:
            await nsbox.asyncio.run(["sh", "-c", "echo no; exit 4"], check=True, capture_output=True)
        assert (failed.value.returncode, failed.value.stdout) == (4, b"no\n")
        with pytest.raises(subprocess.TimeoutExpired) as expired:
            await nsbox.asyncio.run(["sh", "-c", "sleep 100", f"{tag}-a"], pid=True, timeout=0.2)
        assert expired.value.timeout == 0.2
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await nsbox.asyncio.run(["sh", "-c", "sleep 100", f"{tag}-b"], pid=True, capture_output=True)
        assert host_pids_with(f"{tag}-a") == host_pids_with(f"{tag}-b") == []
        assert children_of(os.getpid()) == []
        assert set(open_fds()) == set(fds_before)

    run_on(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_shell_and_every_popen_option(loop: str) -> None:
    async def main() -> None:
        proc = await nsbox.asyncio.create_subprocess_shell(
            "echo $$ $(hostname) $(cat /proc/1/comm) $(grep -c : /proc/net/dev)",
            stdout=asyncio.subprocess.PIPE,
            pid=True,
            mount_proc=True,
            hostname="box",
            net=True,
        )
        out, _ = await proc.communicate()
        assert out == b"1 box sh 1\n"  # PID 1, its hostname, its own /proc, one interface (lo)
        assert proc.returncode == 0

    run_on(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_bad_options_raise_before_anything_is_started_and_spawn_failures_as_popen(loop: str) -> None:
    async def main() -> None:
        fds_before = await fds_of_a_warm_loop()
        with pytest.raises(TypeError, match="nonsense"):
            await nsbox.asyncio.create_subprocess_exec("true", nonsense=True)  # type: ignore[call-arg]
        with pytest.raises(TypeError, match="nonsense"):
            await nsbox.asyncio.run(["true"], nonsense=True)  # type: ignore[call-arg]
        with pytest.raises(ValueError, match="hostname"):
            await nsbox.asyncio.run(["true"], hostname="x" * 100)
        with pytest.raises(ValueError, match="text must be False"):
            await nsbox.asyncio.create_subprocess_exec("true", text=True)  # type: ignore[call-arg]
        # Nothing would read the terminal: a box writing more than it holds would never end (nsbox.run drives it).
        with pytest.raises(ValueError, match="tty=True"):
            await nsbox.asyncio.run(["seq", "100000"], tty=True, capture_output=True)
        with pytest.raises(ValueError, match="cmd must be a string"):
            await nsbox.asyncio.create_subprocess_shell(["true"])  # type: ignore[arg-type]
        # A failed spawn: the OSError subclass nsbox.Popen raises, with its message (the step, the file).
        failing: list[tuple[list[str], dict[str, Any]]] = [
            (["/nonexistent/program"], {"pid": True}),
            (["true"], {"pid": True, "cwd": "/nonexistent/dir"}),
        ]
        for args, options in failing:
            with pytest.raises(OSError) as awaited:
                await nsbox.asyncio.run(args, **options)
            with pytest.raises(OSError) as popen:
                nsbox.Popen(args, **options)
            assert type(awaited.value) is type(popen.value) is FileNotFoundError
            assert (str(awaited.value), awaited.value.filename) == (str(popen.value), popen.value.filename)
        assert children_of(os.getpid()) == []
        assert set(open_fds()) == set(fds_before)

    run_on(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_transport_closed_or_collected_while_the_box_runs_kills_and_reaps_it(loop: str) -> None:
    async def closed() -> None:
        proc = await nsbox.asyncio.create_subprocess_exec(
            "sh", "-c", "sleep 100 & echo $!; wait", pid=True, stdout=asyncio.subprocess.PIPE
        )
        assert proc.stdout is not None
        await proc.stdout.readline()
        sleeps = children_of(proc.pid)
        assert sleeps and wait_until(lambda: {proc_comm(pid) for pid in sleeps} == {"sleep"})
        proc._transport.close()  # type: ignore[attr-defined]
        assert gone(proc.pid, "sh") and all(gone(pid, "sleep") for pid in sleeps)
        assert proc.returncode == -signal.SIGKILL and await proc.wait() == -signal.SIGKILL

    run_on(loop, closed)

    fds_before = open_fds()
    started: list[int] = []

    async def forgotten() -> None:
        proc = await nsbox.asyncio.create_subprocess_exec("sleep", "100", pid=True, stdout=asyncio.subprocess.PIPE)
        started.append(proc.pid)  # and the loop is closed with the box running, the Process dropped

    # The loop closes with the box running and its pipes open: asyncio and uvloop warn of those (ResourceWarning),
    # and the transport, collected, of itself.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_on(loop, forgotten)
        gc.collect()
    assert gone(started[0], "sleep") and children_of(os.getpid()) == []
    assert any("unclosed transport" in str(w.message) for w in caught)
    assert set(open_fds()) == set(fds_before)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_box_with_cgroup_limits_cancelled_has_what_is_in_its_cgroup_killed(loop: str) -> None:
    async def main() -> None:
        read_end, write_end = os.pipe()
        # No pid=True: only the cgroup holds the orphaned sleep.
        task = asyncio.create_task(
            nsbox.asyncio.run(["sh", "-c", "sleep 100 & echo $!; wait"], pids_limit=16, stdout=write_end)
        )
        reader = asyncio.StreamReader()
        transport, _ = await asyncio.get_running_loop().connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_end, "rb")
        )
        sleep = int(await reader.readline())  # the host PID: no PID namespace
        made = box_cgroups()
        assert made and any(str(sleep) in (path / "cgroup.procs").read_text().split() for path in made)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        os.close(write_end)
        transport.close()
        # Killed with the cgroup, which is removed; an orphan, it is reaped by the host's init (or subreaper).
        assert box_cgroups() == []
        assert wait_gone(sleep, "sleep")

    run_on(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_call_returns_raises_and_cancelling_it_kills_the_forked_box(loop: str) -> None:
    def boom() -> None:
        raise KeyError("inside")

    def ready_then_wait(fd: int) -> None:
        os.write(fd, b"ready\n")
        signal.pause()

    async def main() -> None:
        fds_before = await fds_of_a_warm_loop()
        assert await nsbox.asyncio.call(os.getpid, pid=True) == 1
        assert await nsbox.asyncio.call(divmod, 7, 2, hostname="box") == (3, 1)
        with pytest.raises(KeyError, match="inside") as raised:
            await nsbox.asyncio.call(boom, pid=True)
        assert isinstance(raised.value.__cause__, nsbox.RemoteTraceback)
        with pytest.raises(subprocess.TimeoutExpired):
            await nsbox.asyncio.call(signal.pause, pid=True, timeout=0.2)
        with pytest.raises(nsbox.BoxCrashed, match=r"^_exit\(\) did not return: .* exited with status 3") as crashed:
            await nsbox.asyncio.call(os._exit, 3)  # the same message as nsbox.call's
        assert (crashed.value.returncode, crashed.value.oom_killed) == (3, False)
        assert children_of(os.getpid()) == []

        read_end, write_end = os.pipe()
        task = asyncio.create_task(nsbox.asyncio.call(ready_then_wait, write_end, pid=True))
        reader = asyncio.StreamReader()
        transport, _ = await asyncio.get_running_loop().connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_end, "rb")
        )
        assert await reader.readline() == b"ready\n"
        [forked] = children_of(os.getpid())
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert proc_state(forked) is None  # killed and reaped as the cancellation returned
        os.close(write_end)
        transport.close()
        await asyncio.sleep(0)
        assert children_of(os.getpid()) == []
        assert set(open_fds()) == set(fds_before)

    run_on(loop, main)


def _killed_by_sigkill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)  # not PID 1 (which cannot signal itself): a box without pid=True


@pytest.mark.parametrize("loop", LOOPS)
def test_call_reports_a_crashed_box_as_nsbox_call_does(loop: str) -> None:
    with pytest.raises(nsbox.BoxCrashed) as crashed_sync:
        nsbox.call(_killed_by_sigkill, net=True)

    async def main() -> nsbox.BoxCrashed:
        with pytest.raises(nsbox.BoxCrashed) as crashed:
            await nsbox.asyncio.call(_killed_by_sigkill, net=True)
        return crashed.value

    crashed = run_on(loop, main)
    expected = "_killed_by_sigkill() did not return: its process in the box (host PID {}) was killed by SIGKILL"
    assert str(crashed_sync.value) == expected.format(crashed_sync.value.pid)  # the control
    assert str(crashed) == expected.format(crashed.pid)
    assert (crashed.returncode, crashed.oom_killed) == (-signal.SIGKILL, False)


ROOTLESS_ASYNC = """
import asyncio
import nsbox.asyncio

def children():
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[1] == str(os.getpid()):
                    found.append(int(entry))
        except (FileNotFoundError, ProcessLookupError):
            pass  # gone meanwhile
    return found

async def main():
    r = await nsbox.asyncio.run(["sh", "-c", "echo $$ $(id -u)"], pid=True, capture_output=True, text=True)
    read_end, write_end = os.pipe()
    task = asyncio.create_task(nsbox.asyncio.run(["sh", "-c", "sleep 100 & echo $!; wait"], pid=True, stdout=write_end))
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_end, "rb"))
    await reader.readline()
    [box] = children()
    task.cancel()
    try:
        await task
        cancelled = False
    except asyncio.CancelledError:
        cancelled = True
    os.close(write_end)
    transport.close()
    called = await nsbox.asyncio.call(os.getpid, pid=True)
    return {"run": r.stdout, "cancelled": cancelled, "box_left": os.path.exists(f"/proc/{box}"), "call": called,
            "children": children()}

emit(asyncio.run(main()))
"""


def test_rootless_run_call_and_cancellation(rootless: Rootless) -> None:
    seen = rootless(ROOTLESS_ASYNC)
    assert seen == {"run": "1 0\n", "cancelled": True, "box_left": False, "call": 1, "children": []}


def test_a_jupyter_kernel_awaits_a_box_at_top_level() -> None:
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient

    cell = (
        "import nsbox.asyncio\n"
        "r = await nsbox.asyncio.run(['sh', '-c', 'echo PID $$'], pid=True, capture_output=True, text=True)\n"
        "print(r.stdout, end='')"
    )
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(cell)])
    NotebookClient(nb, timeout=60, kernel_name="python3").execute()
    [output] = nb.cells[0].outputs
    assert output.text == "PID 1\n"


def test_the_module_is_nsbox_asyncio_and_imports_the_standard_asyncio() -> None:
    code = "import nsbox.asyncio, asyncio; assert asyncio is not nsbox.asyncio; print(asyncio.run.__module__)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout == "asyncio.runners\n"


def test_type_checkers_see_every_keyword(tmp_path: Path) -> None:
    from mypy import api as mypy_api

    good = """
import asyncio
import nsbox.asyncio

async def main() -> None:
    p = await nsbox.asyncio.create_subprocess_exec("true", pid=True, stdout=asyncio.subprocess.PIPE, hostname="b")
    q: asyncio.subprocess.Process = await nsbox.asyncio.create_subprocess_shell("true", net=True, cwd="/")
    r = await nsbox.asyncio.run(["true"], pid=True, capture_output=True, text=True, timeout=1.5)
    n: int = await nsbox.asyncio.call(len, "ab", pid=True, timeout=1)
"""
    bad = {
        "run": 'await nsbox.asyncio.run(["true"], pdi=True)',
        "exec": 'await nsbox.asyncio.create_subprocess_exec("true", hostnme="box")',
        "call": "await nsbox.asyncio.call(len, 'ab', pid='yes')",
        "call-init": "await nsbox.asyncio.call(len, 'ab', init=True)",
    }
    cases = {
        "good": good,
        **{name: f"import nsbox.asyncio\nasync def main() -> None:\n    {line}\n" for name, line in bad.items()},
    }
    for name, code in cases.items():
        source = tmp_path / f"client_{name.replace('-', '_')}.py"
        source.write_text(code)
        out, err, status = mypy_api.run(["--strict", "--no-incremental", "--cache-dir", str(tmp_path), str(source)])
        assert (status == 0) == (name == "good"), (name, out + err)
