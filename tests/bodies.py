"""Test bodies that run alike as root and as the unprivileged user 65534.

Each function takes JSON-able keyword arguments and returns what the test checks, JSON-able too. The ``body``
fixture calls one in the test runner (root) or in Debian's ``/usr/bin/python3`` started by ``setpriv`` as
65534:65534 (rootless), where neither pytest nor the test virtualenv is: so this module imports only nsbox and
the standard library.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import nsbox


def ids_and_capabilities() -> dict[str, Any]:
    """The caller's uids and gids, and its effective capabilities (hex)."""
    with open("/proc/self/status") as f:
        status = dict(line.split(":\t", 1) for line in f.read().splitlines() if ":\t" in line)
    return {"ids": [os.getuid(), os.geteuid(), os.getgid(), os.getegid()], "capeff": status["CapEff"]}


def ps_in_a_pid_namespace() -> dict[str, Any]:
    """``ps -ef`` in a box with a PID namespace and its own /proc; the NSpid chain of a box seen from the host."""
    r = nsbox.run(["ps", "-ef"], pid=True, mount_proc=True, capture_output=True, text=True)
    with nsbox.Popen(["sleep", "1000"], pid=True) as p:
        try:
            with open(f"/proc/{p.pid}/status") as f:
                nspid = next(line.split()[1:] for line in f if line.startswith("NSpid:"))
            host_pid = p.pid
        finally:
            p.kill()
    return {
        "rc": r.returncode,
        "stdout": r.stdout,
        "stderr": r.stderr,
        "nspid": nspid,
        "host_pid": host_pid,
        "box_rc": p.returncode,
    }


def namespace_links(names: list[str], option: str) -> dict[str, Any]:
    """The caller's namespace links, and those of a box made with ``option=True``."""
    host = {n: os.readlink(f"/proc/self/ns/{n}") for n in names}
    r = nsbox.run(
        ["readlink", *(f"/proc/self/ns/{n}" for n in names)],
        capture_output=True,
        text=True,
        check=True,
        **{option: True},
    )
    return {"host": host, "inside": dict(zip(names, r.stdout.split(), strict=False))}


def hostname_inside_and_outside(hostname: str) -> dict[str, Any]:
    """The hostname before and after a box named ``hostname``, and what ``hostname`` and ``uname -n`` say in it."""
    before = socket.gethostname()
    r = nsbox.run(["sh", "-c", "hostname; uname -n"], hostname=hostname, capture_output=True, text=True)
    return {
        "before": before,
        "after": socket.gethostname(),
        "rc": r.returncode,
        "out": r.stdout.split(),
        "err": r.stderr,
    }


def links_in_a_network_namespace() -> dict[str, Any]:
    """``ip -o link`` and /proc/net/dev in a box with ``net=True``, and the caller's /proc/net/dev."""
    r = nsbox.run(["sh", "-c", "ip -o link && echo @@ && cat /proc/net/dev"], net=True, capture_output=True, text=True)
    with open("/proc/net/dev") as f:
        host = f.read()
    return {"rc": r.returncode, "out": r.stdout, "err": r.stderr, "host": host}


def ids_and_maps_in_a_user_namespace() -> dict[str, Any]:
    """The ids, the id maps and the setgroups file in a box with ``user=True``."""
    r = nsbox.run(
        ["sh", "-c", "id -u; id -g; cat /proc/self/uid_map; cat /proc/self/gid_map; cat /proc/self/setgroups"],
        user=True,
        capture_output=True,
        text=True,
    )
    return {"rc": r.returncode, "out": r.stdout.splitlines(), "err": r.stderr}


def owner_of_a_file_made_inside(target: str) -> dict[str, Any]:
    """A box (``pid=True``) makes ``target``; its owner as the box sees it."""
    r = nsbox.run(["sh", "-c", f"touch {target} && stat -c '%u %g' {target}"], pid=True, capture_output=True, text=True)
    return {"rc": r.returncode, "out": r.stdout.strip(), "err": r.stderr}


def refusal(options: dict[str, Any]) -> dict[str, Any] | None:
    """The OSError of ``nsbox.run(["true"], **options)`` as type, errno and message; None if it ran."""
    try:
        nsbox.run(["true"], **options)
    except OSError as e:
        return {"type": type(e).__name__, "errno": e.errno, "message": str(e)}
    return None


def cgroups_inside_and_outside() -> dict[str, Any]:
    """/proc/self/cgroup in a box with ``cgroup=True``, and the caller's."""
    r = nsbox.run(["cat", "/proc/self/cgroup"], cgroup=True, capture_output=True, text=True, check=True)
    with open("/proc/self/cgroup") as f:
        host = f.read().splitlines()
    return {"inside": r.stdout.splitlines(), "host": host}


def uptime_with_a_boottime_offset(offset: int) -> dict[str, Any]:
    """The caller's boottime clock before and after a box's /proc/uptime, with ``boottime_offset=offset``."""
    before = time.clock_gettime(time.CLOCK_BOOTTIME)
    r = nsbox.run(
        ["cat", "/proc/uptime"], time=True, boottime_offset=offset, capture_output=True, text=True, check=True
    )
    after = time.clock_gettime(time.CLOCK_BOOTTIME)
    return {"before": before, "inside": float(r.stdout.split()[0]), "after": after}


def what_many_runs_leave() -> dict[str, Any]:
    """The caller's children and fds after 30 runs with most namespaces, some of them failing."""
    nsbox.run(["true"], pid=True)  # warm up: the spawner thread exists from here on
    fds_before = sorted(os.listdir("/proc/self/fd"))
    for i in range(30):
        nsbox.run(["echo", str(i)], pid=True, mount_proc=True, net=True, hostname="x", capture_output=True)
        if i % 10 == 0:
            try:
                nsbox.run(["/nonexistent/program"], pid=True, capture_output=True)
            except FileNotFoundError:
                pass
    kids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid():
            kids.append(pid)
    return {"children": kids, "fds_before": fds_before, "fds_after": sorted(os.listdir("/proc/self/fd"))}


def box_started_from_a_thread_that_exits() -> dict[str, Any]:
    """A box (``pid=True, net=True``) started by a thread that has exited since: still running? its status."""
    boxes = []
    t = threading.Thread(target=lambda: boxes.append(nsbox.Popen(["sleep", "1000"], pid=True, net=True)))
    t.start()
    t.join()
    time.sleep(0.5)
    (box,) = boxes
    running = box.poll() is None
    box.kill()
    return {"running": running, "status": box.wait()}


#: Run as a session leader without a terminal: takes a fresh pty as its controlling terminal, gives it to a box
#: as stdin, and reports whether the box could push a character into it (TIOCSTI).
TIOCSTI_CALLER = r"""
import fcntl, json, os, sys, termios
import nsbox

options = json.loads(sys.argv[1])
master, slave = os.openpty()
tty = os.open(os.ttyname(slave), os.O_RDWR)  # a session leader without a terminal: this becomes ours
os.close(slave)
attrs = termios.tcgetattr(tty)
attrs[3] &= ~termios.ICANON  # queued input counts at once, without a newline
termios.tcsetattr(tty, termios.TCSANOW, attrs)
probe = ("import fcntl, termios\ntry:\n    fcntl.ioctl(0, termios.TIOCSTI, b'X')\n    print('injected')\n"
         "except OSError as e:\n    print(e.strerror)")
r = nsbox.run([sys.executable, "-c", probe], stdin=tty, capture_output=True, text=True, **options)
queued = int.from_bytes(fcntl.ioctl(tty, termios.FIONREAD, b"\0\0\0\0"), "little")
print(json.dumps({"ours": os.tcgetpgrp(tty) == os.getpgrp(), "box": r.stdout.strip(), "err": r.stderr,
                  "queued": queued}))
"""


def tiocsti_from_a_box(options: dict[str, Any]) -> dict[str, Any]:
    """``TIOCSTI_CALLER`` in a session of its own, its box made with ``options``: its exit status and report."""
    r = subprocess.run(
        [sys.executable, "-c", TIOCSTI_CALLER, json.dumps(options)],
        start_new_session=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return {"rc": r.returncode, "out": r.stdout, "err": r.stderr}


def run_python(source: str, args: list[str]) -> None:
    """Runs ``source`` in a fresh interpreter (this one's) with ``args``; raises if it fails or takes over 60 s."""
    subprocess.run([sys.executable, "-c", source, *args], check=True, timeout=60)
