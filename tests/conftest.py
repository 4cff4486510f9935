"""Shared helpers for the nsbox test suite.

The suite runs as root. Rootless behaviour is checked by running small Python snippets as the
unprivileged user 65534 through the ``rootless`` fixture (``setpriv`` + Debian's world-readable
``/usr/bin/python3`` + a world-readable copy of the installed package).
"""

from __future__ import annotations

import ctypes
import inspect
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

import nsbox

#: The namespace names of /proc/PID/ns, and the nsbox option that asks for each.
NAMESPACES = ("pid", "mnt", "uts", "ipc", "net", "user", "cgroup", "time")
OPTION_FOR = {"pid": "pid", "mnt": "mount", "uts": "uts", "ipc": "ipc", "net": "net", "user": "user"}
OPTION_FOR |= {"cgroup": "cgroup", "time": "time"}

NOBODY = 65534
#: A world-readable interpreter (the dev venv's python lives under /root, mode 0700).
ROOTLESS_PYTHON = "/usr/bin/python3"
ROOTLESS_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: Prepended to every rootless snippet (with ``host_mounts``, added below).
ROOTLESS_PRELUDE = """\
from __future__ import annotations
import json, os, socket, subprocess, sys, time
import nsbox

def emit(value):
    print(json.dumps(value))
"""


# ---------------------------------------------------------------------------------------------------------------
# /proc helpers


def host_ns(name: str) -> str:
    """The caller's namespace link, e.g. ``'net:[4026531833]'``."""
    return os.readlink(f"/proc/self/ns/{name}")


def box_ns_links(**options: Any) -> dict[str, str]:
    """The box's own command (``readlink``, PID 1 with ``pid=True``) reads every ``/proc/self/ns/X``."""
    names = (*NAMESPACES, "time_for_children")
    r = nsbox.run(
        ["readlink", *(f"/proc/self/ns/{n}" for n in names)], capture_output=True, text=True, check=True, **options
    )
    links = r.stdout.split()
    assert len(links) == len(names), r.stdout
    return dict(zip(names, links, strict=True))


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def mountinfo() -> bytes:
    with open("/proc/self/mountinfo", "rb") as f:
        return f.read()


def host_mounts(*own: Path | str, text: str | None = None) -> list[str]:
    """The lines of this process's mountinfo (or of ``text``, one read elsewhere) that a test may expect to stay.

    Other users of the machine (a second copy of this suite, a notebook) mount and unmount things of their own,
    at any time, under the scratch directories (``/tmp``, ``/run`` ...): persisted namespaces, for one. Mounts
    there are left out, except under ``own``, the test's own directories. Self-contained (no module-level names),
    so that drivers and rootless snippets can carry its source (``inspect.getsource``).
    """
    scratch = ("/tmp/", "/var/tmp/", "/run/", "/var/run/", "/dev/shm/")
    mine = tuple(str(path).rstrip("/") + "/" for path in own)
    if text is None:
        with open("/proc/self/mountinfo") as f:
            text = f.read()
    lines = text.splitlines()
    return [
        line for line in lines if not line.split()[4].startswith(scratch) or (line.split()[4] + "/").startswith(mine)
    ]


ROOTLESS_PRELUDE += "\n\n" + inspect.getsource(host_mounts)


def free_subnet(prefix: int = 24) -> Any:
    """A random ``IPv4Network`` of the private ranges that no route of this network namespace overlaps.

    From the system's random source: pytest-randomly seeds ``random`` alike in every xdist worker. 10.213.0.0/16
    is left to the README and the notebooks. Another user may claim the subnet first (``free_network`` retries).
    Self-contained, so that driver scripts can carry its source (``inspect.getsource``).
    """
    import ipaddress
    import random

    from nsbox import _nsbox

    pick = random.SystemRandom()
    pools = [ipaddress.IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")]
    routes = [ipaddress.IPv4Network((dst, length)) for dst, length in _nsbox.ipv4_routes()]
    for _ in range(1000):
        pool = pick.choices(pools, weights=[p.num_addresses for p in pools])[0]
        size = 1 << (32 - prefix)
        subnet = ipaddress.IPv4Network(
            (int(pool.network_address) + size * pick.randrange(pool.num_addresses // size), prefix)
        )
        if not subnet.overlaps(ipaddress.IPv4Network("10.213.0.0/16")) and not any(subnet.overlaps(r) for r in routes):
            return subnet
    raise RuntimeError("no subnet of the private ranges is free of this namespace's routes")


def free_network(**options: Any) -> nsbox.Network:
    """A ``nsbox.Network`` on a ``free_subnet()``, retrying while other users claim the subnets picked first.

    Self-contained but for ``free_subnet`` (drivers carry both sources).
    """
    import time

    import nsbox

    for _ in range(500):
        try:
            return nsbox.Network(free_subnet(), **options)
        except ValueError as exc:
            if "overlaps the host's route" not in str(exc):
                raise
            time.sleep(0.01)  # a wide network that someone holds for a moment (a property test's) may cover many
    raise RuntimeError("no /24 of the private ranges is free of the host's routes")


def root_mount_optional_fields(text: str) -> list[str]:
    """The optional fields (``shared:N``, ``master:N`` ...) of the mount on ``/`` in a mountinfo text."""
    fields: list[str] | None = None
    for line in text.splitlines():
        parts = line.split()
        if len(parts) > 6 and parts[4] == "/":
            fields = parts[6 : parts.index("-")]  # the last mount on / is the visible one
    assert fields is not None, f"no mount on / in:\n{text}"
    return fields


def proc_status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def proc_state(pid: int) -> str | None:
    """The one-letter state of ``pid`` (``'Z'`` for a zombie), or None if it does not exist."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def proc_comm(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except (FileNotFoundError, ProcessLookupError):
        return None


def children_of(pid: int) -> list[int]:
    """Host PIDs whose parent is ``pid`` (zombies included)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry))
    return found


def wait_until(predicate: Callable[[], bool], timeout: float = 30.0, interval: float = 0.02) -> bool:
    """Polls ``predicate`` until it holds (True) or ``timeout`` seconds have passed (False).

    The deadline is generous on purpose: it only matters when the condition never comes, and a machine busy with
    other test runs may take seconds to do what takes milliseconds when it is idle (a network namespace, say,
    is freed by a kernel worker that runs when it can).
    """
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


def wait_gone(pid: int, comm: str, timeout: float = 30.0) -> bool:
    """True once ``pid`` no longer runs ``comm`` (gone, or reused by something else)."""
    return wait_until(lambda: proc_comm(pid) != comm or proc_state(pid) in (None, "Z", "X"), timeout)


def kill_and_reap(process: subprocess.Popen[Any]) -> None:
    """Cleanup for a Popen a test started: SIGKILL (if still running) and wait."""
    if process.poll() is None:
        try:
            process.kill()
        except ProcessLookupError:
            pass
    process.wait(timeout=10)
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            stream.close()


def kill_pid(pid: int) -> None:
    """Cleanup for a process we know only by PID (SIGKILL; ignore if gone)."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# ---------------------------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(autouse=True)
def no_leftover_children() -> Iterator[None]:
    """Every test must reap what it starts: no child process of the test runner may be left behind."""
    yield
    leftover = children_of(os.getpid())
    if leftover and not wait_until(lambda: not children_of(os.getpid()), timeout=10):
        details = {pid: (proc_comm(pid), proc_state(pid)) for pid in children_of(os.getpid())}
        for pid in details:
            kill_pid(pid)
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        pytest.fail(f"the test left child processes behind: {details}")


@pytest.fixture
def world_tmp() -> Iterator[Path]:
    """A fresh directory under /tmp that every user (and every box) can write to."""
    path = Path(tempfile.mkdtemp(prefix="nsbox-test-", dir="/tmp"))
    path.chmod(0o777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def python() -> str:
    """The interpreter that runs the test suite (root can read it; boxes run as root can too)."""
    return sys.executable


Rootless = Callable[[str], Any]


@pytest.fixture(scope="session")
def rootless_dir() -> Iterator[Path]:
    """A world-readable copy of the installed nsbox package, for the unprivileged interpreter."""
    if os.geteuid() != 0:
        pytest.fail("the test suite runs as root; it drops to uid 65534 itself for the rootless tests")
    if shutil.which("setpriv") is None:
        pytest.fail("setpriv (util-linux) is needed to run the rootless tests: apt-get install util-linux")
    if not os.access(ROOTLESS_PYTHON, os.X_OK):
        pytest.fail(f"{ROOTLESS_PYTHON} is needed for the rootless tests (world-readable): apt-get install python3")
    base = Path(tempfile.mkdtemp(prefix="nsbox-rootless-", dir="/tmp"))
    try:
        base.chmod(0o755)
        shutil.copytree(os.path.dirname(nsbox.__file__), base / "nsbox", ignore=shutil.ignore_patterns("__pycache__"))
        for root, dirs, files in os.walk(base):
            for name in dirs + files:
                path = os.path.join(root, name)
                os.chmod(path, os.stat(path).st_mode | 0o444 | (0o111 if os.path.isdir(path) else 0))
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _run_as_nobody(package_dir: Path, code: str, timeout: float = 60) -> Any:
    source = ROOTLESS_PRELUDE + textwrap.dedent(code)
    env = {
        "PATH": ROOTLESS_PATH,
        "PYTHONPATH": str(package_dir),
        "PYTHONDONTWRITEBYTECODE": "1",
        "HOME": "/tmp",
        "LC_ALL": "C.UTF-8",
    }
    cmd = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", ROOTLESS_PYTHON, "-c", source]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd="/tmp", timeout=timeout)
    if r.returncode != 0:
        pytest.fail(f"rootless snippet exited with {r.returncode}\n--- code\n{source}\n--- stderr\n{r.stderr}")
    lines = r.stdout.strip().splitlines()
    if not lines:
        pytest.fail(f"rootless snippet printed nothing\n--- code\n{source}\n--- stderr\n{r.stderr}")
    return json.loads(lines[-1])


@pytest.fixture(scope="session")
def rootless(rootless_dir: Path) -> Rootless:
    """``rootless(code)`` runs a Python snippet as uid/gid 65534 and returns the JSON its last line prints.

    The snippet starts with ``json, os, socket, subprocess, sys, time, nsbox`` imported and ``emit(value)``
    (print as JSON) defined. A snippet that fails, or an interpreter that cannot import nsbox as that
    user, fails the test: rootless tests must run, never skip.
    """
    probe = _run_as_nobody(
        rootless_dir,
        "emit({'euid': os.geteuid(), 'egid': os.getegid(), 'groups': os.getgroups(),"
        " 'version': list(sys.version_info[:2]), 'nsbox': nsbox.__file__})",
    )
    if probe["euid"] != NOBODY or probe["egid"] != NOBODY or probe["groups"]:
        pytest.fail(f"the rootless interpreter does not run as {NOBODY}:{NOBODY} without groups: {probe}")
    if tuple(probe["version"]) < (3, 11):
        pytest.fail(f"{ROOTLESS_PYTHON} is Python {probe['version']}; nsbox needs 3.11 or newer")
    if not probe["nsbox"].startswith(str(rootless_dir)):
        pytest.fail(f"the rootless interpreter imported nsbox from {probe['nsbox']}, not the copy in {rootless_dir}")

    def run(code: str) -> Any:
        return _run_as_nobody(rootless_dir, code)

    return run


# ---------------------------------------------------------------------------------------------------------------
# Shared by the boxes, reliability and hostile-input tests


def open_fds() -> dict[int, str]:
    """fd -> what it points to, for every fd of this process (without the one the listing itself uses)."""
    fds = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            fds[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except FileNotFoundError:
            continue  # the directory fd listdir used, closed by now
    return fds


def chroot_script(root: Path | str) -> str:
    """Shell for a box with a mount namespace of its own: turn ``root`` into a small root directory.

    A tmpfs (mounted in the box only) with the host's ``/usr`` and ``/etc`` bound in, the merged-usr links
    (``bin``, ``sbin``, ``lib``, ``lib64``), ``tmp`` and a marker file ``BOX-ROOT``; the shell is left in it.
    The box then runs ``chroot . COMMAND`` (or adds its own ``proc`` first).
    """
    return (
        f"mount -t tmpfs nsbox-box-root {root} && cd {root} && mkdir usr etc tmp && "
        "mount --rbind /usr usr && mount --rbind /etc etc && "
        "ln -s usr/bin bin && ln -s usr/sbin sbin && ln -s usr/lib lib && ln -s usr/lib64 lib64 && touch BOX-ROOT"
    )


def mount_points(text: bytes | str) -> list[str]:
    """The mount points of a mountinfo text, in order."""
    if isinstance(text, bytes):
        text = text.decode()
    return [line.split()[4] for line in text.splitlines()]


def unmount_new_mounts_under(before: bytes, base: Path) -> list[str]:
    """Cleanup for a test whose failure may have left mounts on the host.

    Lazily unmounts, newest first, every mount point under ``base`` that is not in ``before`` (a
    ``mountinfo()`` taken at the start), and returns them. Nothing outside ``base`` is touched.
    """
    old = set(mount_points(before))
    prefix = str(base).rstrip("/") + "/"
    extra = [m for m in mount_points(mountinfo()) if m not in old and (m + "/").startswith(prefix)]
    libc = ctypes.CDLL(None, use_errno=True)
    for point in reversed(extra):
        libc.umount2(os.fsencode(point), 2)  # MNT_DETACH
    return extra


@pytest.fixture(scope="session")
def rootless_hypothesis(rootless_dir: Path, rootless: Rootless) -> Rootless:
    """``rootless``, with Hypothesis (and what it needs) importable by the unprivileged interpreter."""
    for dist in ("hypothesis", "sortedcontainers"):
        for file in metadata.files(dist) or []:
            if file.parts[0] == ".." or "__pycache__" in file.parts:
                continue
            target = rootless_dir / file
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(file.locate(), target)
    for root, dirs, files in os.walk(rootless_dir):
        for name in dirs + files:
            path = os.path.join(root, name)
            os.chmod(path, os.stat(path).st_mode | 0o444 | (0o111 if os.path.isdir(path) else 0))
    return rootless


def start_box(args: list[str], ready: str = "ready\n", **options: Any) -> nsbox.Popen:
    """Starts a box (stdout a text pipe) whose command prints ``ready`` once it is set up, and waits for that line."""
    box = nsbox.Popen(args, stdout=subprocess.PIPE, text=True, **options)
    assert box.stdout is not None
    line = box.stdout.readline()
    if line != ready:
        kill_and_reap(box)
        pytest.fail(f"the box printed {line!r} instead of {ready!r}")
    return box


@pytest.fixture(scope="session")
def tiny_root() -> Iterator[Path]:
    """A world-readable directory to chroot into: /bin/sh and the libraries it links, /proc and /mnt."""
    path = Path(tempfile.mkdtemp(prefix="nsbox-root-", dir="/tmp"))
    sh = Path(os.path.realpath("/bin/sh"))
    libs = re.findall(r"(/\S+) \(0x", subprocess.run(["ldd", str(sh)], capture_output=True, text=True).stdout)
    for source in [str(sh), *libs]:
        target = path / source.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.realpath(source), target)
    (path / "bin").mkdir(exist_ok=True)
    if not (path / "bin" / "sh").exists():
        (path / "bin" / "sh").symlink_to(sh)
    (path / "proc").mkdir()
    (path / "mnt").mkdir()
    subprocess.run(["chmod", "-R", "a+rX", str(path)], check=True)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
