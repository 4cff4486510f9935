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


#: Run inside a box by ``python3 -c``: tries what capabilities govern and prints, as JSON, each attempt's
#: errno (0: it worked) and the capability lines of ``/proc/self/status``. ``argv[1]``: a file to chown.
PRIVILEGE_PROBE = r"""
import ctypes, json, os, socket, sys
libc = ctypes.CDLL(None, use_errno=True)
out = {}

def attempt(name, fn):
    try:
        fn()
        out[name] = 0
    except OSError as e:
        out[name] = e.errno

def c(ret):
    if ret < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))

def mount():
    c(libc.mount(b"none", b"/tmp", b"tmpfs", 0, None))
    c(libc.umount2(b"/tmp", 0))

attempt("mount", mount)
attempt("sethostname", lambda: c(libc.sethostname(b"attack", 6)))
attempt("raw_socket", lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP).close())
attempt("chown", lambda: os.chown(sys.argv[1], 1234, 1234))
with open("/proc/self/status") as f:
    status = dict(line.split(":\t", 1) for line in f.read().splitlines() if ":\t" in line)
out["status"] = {k: status[k].strip() for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs")}
print(json.dumps(out))
"""

CAP_LINES = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs")


def status_lines(pid: int) -> dict[str, str]:
    """The capability and no_new_privs lines of a process's ``/proc/PID/status``, read from outside."""
    with open(f"/proc/{pid}/status") as f:
        status = dict(line.split(":\t", 1) for line in f.read().splitlines() if ":\t" in line)
    return {k: status[k].strip() for k in CAP_LINES}


def privileges_in_a_box(victim: str, **options: Any) -> dict[str, Any]:
    """The probe's attempts inside a box with ``options``, and the same box's status lines seen from the host."""
    base = {"pid": True, "mount": True, "uts": True, "net": True}
    r = nsbox.run(["python3", "-c", PRIVILEGE_PROBE, victim], capture_output=True, text=True, **base, **options)
    if r.returncode != 0:
        raise RuntimeError(f"the probe failed: {r.stderr}")
    with nsbox.Popen(["sleep", "1000"], **base, **options) as box:
        try:
            outside = status_lines(box.pid)
        finally:
            box.kill()
    return {"inside": json.loads(r.stdout), "outside": outside}


def setuid_program_in_a_box(program: str, run_as: int | None) -> dict[str, Any]:
    """The effective uid a setuid-root ``id`` reports in a box without and with ``no_new_privs`` (as the user
    ``run_as`` inside, when given), and the box's ``NoNewPrivs`` line seen from the host."""
    out: dict[str, Any] = {}
    for nnp in (False, True):
        r = nsbox.run([program, "-u"], capture_output=True, text=True, user=run_as, no_new_privs=nnp)
        with nsbox.Popen(["sleep", "1000"], user=run_as, no_new_privs=nnp) as box:
            try:
                outside = status_lines(box.pid)["NoNewPrivs"]
            finally:
                box.kill()
        out[str(nnp)] = {"euid": r.stdout.strip(), "rc": r.returncode, "outside": outside}
    return out


def files_written_under_fsize(path: str, limit: int, size: int) -> dict[str, Any]:
    """A shell writing ``size`` bytes to ``path`` in a box with ``rlimits={"fsize": limit}`` and without."""
    out = {}
    for name, limits in (("bare", None), ("limited", {"fsize": limit})):
        script = f"head -c {size} /dev/zero > {path}; echo $?"
        r = nsbox.run(["sh", "-c", script], capture_output=True, text=True, pid=True, rlimits=limits)
        out[name] = {"status": r.stdout.strip(), "size": os.path.getsize(path)}
        os.unlink(path)
    return out


#: Opens /dev/null until refused; prints how many it got and the errno.
OPEN_UNTIL_REFUSED = """
import os
n = 0
try:
    while n < 5000:
        os.open("/dev/null", os.O_RDONLY)
        n += 1
    print(n, 0)
except OSError as e:
    print(n, e.errno)
"""


def files_opened_under_nofile(limit: int) -> dict[str, Any]:
    """How many files a box opens with ``rlimits={"nofile": limit}`` and without (up to 5000)."""
    out = {}
    for name, limits in (("bare", None), ("limited", {"nofile": limit})):
        r = nsbox.run(["python3", "-c", OPEN_UNTIL_REFUSED], capture_output=True, text=True, pid=True, rlimits=limits)
        opened, err = r.stdout.split()
        out[name] = {"opened": int(opened), "errno": int(err)}
    return out


#: A fork bomb that counts: each process forks until refused, children sleep; the first refusal's errno is
#: printed by whichever process meets it first, then everything waits to be killed.
FORK_BOMB = """
import os, sys, time
refused = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND)
depth = 0
while depth < 7:  # bounded (3**7 processes at most), should the limit ever fail to hold
    for _ in range(3):
        try:
            pid = os.fork()
        except OSError as e:
            os.write(refused, b"%d\\n" % e.errno)
            time.sleep(1000)
        if pid == 0:
            depth += 1
            break
    else:
        time.sleep(1000)
"""


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def processes_in_pid_namespace(inode: int) -> int:
    """How many of the host's processes (that we may look at) are in the PID namespace ``inode``."""
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                count += os.stat(f"/proc/{entry}/ns/pid").st_ino == inode
            except OSError:
                pass
    return count


def fork_bomb_under_nproc(limit: int, log: str) -> dict[str, Any]:
    """A fork bomb in a box with ``rlimits={"nproc": limit}``: what its forks failed with, how many processes the
    host sees in its PID namespace, a process the caller starts meanwhile, and how many are left after the kill."""
    # The kernel exempts host root (and a box whose root is host root) from RLIMIT_NPROC: as root, the box's
    # root is 65534 on the host.
    maps = {"uid_map": [(0, 65534, 1)], "gid_map": [(0, 65534, 1)]} if os.geteuid() == 0 else {}
    with nsbox.Popen(["python3", "-c", FORK_BOMB, log], pid=True, user=True, rlimits={"nproc": limit}, **maps) as box:
        try:
            inode = os.stat(f"/proc/{box.pid}/ns/pid").st_ino
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not _read(log):
                time.sleep(0.02)
            errnos = sorted({int(e) for e in _read(log).split()})
            running = processes_in_pid_namespace(inode)
            host = subprocess.run(["true"], check=False).returncode
        finally:
            box.kill()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and processes_in_pid_namespace(inode) > 0:
        time.sleep(0.02)
    return {"errnos": errnos, "running": running, "host": host, "left": processes_in_pid_namespace(inode)}


#: Run inside a sandbox by ``python3 -c``: ``argv[1]`` a host directory, ``argv[2]`` a port listening on the host's
#: loopback, ``argv[3]`` the caller's PID on the host. Prints what each attempt gave (0: it worked).
SANDBOX_PROBE = r"""
import json, os, socket, sys
out = {}

def attempt(name, fn):
    try:
        fn()
        out[name] = 0
    except OSError as e:
        out[name] = e.errno

def write(path):
    with open(path, "w") as f:
        f.write("escaped")

attempt("write_host", lambda: write(os.path.join(sys.argv[1], "escaped")))
attempt("write_tmp", lambda: write("/tmp/nsbox-sandbox-probe"))
attempt("connect_host", lambda: socket.create_connection(("127.0.0.1", int(sys.argv[2])), timeout=5).close())
attempt("signal_caller", lambda: os.kill(int(sys.argv[3]), 0))
out["processes"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
with open("/proc/self/status") as f:
    status = dict(line.split(":\t", 1) for line in f.read().splitlines() if ":\t" in line)
keys = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp")
out["status"] = {k: status[k].strip() for k in keys}
print(json.dumps(out))
"""

#: A caller that starts a sandboxed ``sleep``, prints its PID, and waits to be killed.
SANDBOX_CALLER = """
import sys, time
import nsbox
box = nsbox.Popen(["sleep", "1000"], sandbox=True)
print(box.pid, flush=True)
time.sleep(1000)
"""


def attacks_from_a_sandbox(directory: str, **options: Any) -> dict[str, Any]:
    """The sandbox probe's attempts (with ``options`` beside ``sandbox=True``, or in a bare box with ``bare=True``),
    whether a connection reached the host's listener or a file the host's ``/tmp``, and whether a sandbox
    outlives its SIGKILLed caller."""
    bare = options.pop("bare", False)
    box_options = {} if bare else {"sandbox": True, **options}
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(0)
        port = listener.getsockname()[1]
        args = ["python3", "-c", SANDBOX_PROBE, directory, str(port), str(os.getpid())]
        r = nsbox.run(args, capture_output=True, text=True, **box_options)
        if r.returncode != 0:
            raise RuntimeError(f"the probe failed: {r.stderr}")
        try:
            listener.accept()[0].close()
            reached = True
        except BlockingIOError:
            reached = False
    out = json.loads(r.stdout)
    out["host_saw_connection"] = reached
    out["host_has_escaped"] = os.path.exists(os.path.join(directory, "escaped"))
    out["host_has_tmp_file"] = os.path.exists("/tmp/nsbox-sandbox-probe")
    for leftover in (os.path.join(directory, "escaped"), "/tmp/nsbox-sandbox-probe"):
        if os.path.exists(leftover) and bare:
            os.unlink(leftover)
    if not bare:
        caller = subprocess.Popen([sys.executable, "-c", SANDBOX_CALLER], stdout=subprocess.PIPE, text=True)
        assert caller.stdout is not None
        box_pid = int(caller.stdout.readline())
        alive_before = os.path.exists(f"/proc/{box_pid}")
        caller.kill()
        caller.wait()
        caller.stdout.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _alive(box_pid):
            time.sleep(0.02)
        out["outlived_caller"] = not alive_before or _alive(box_pid)
    return out


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (not gone, not a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def confined_init() -> dict[str, Any]:
    """``CapEff`` and ``NoNewPrivs`` of a command under ``init=True`` without capabilities, as it reads them, and of
    its init (PID 1), as the host reads them."""
    script = "grep -E '^(CapEff|NoNewPrivs)' /proc/self/status; sleep 1000"
    options: dict[str, Any] = {"init": True, "user": True, "capabilities": (), "no_new_privs": True}
    with nsbox.Popen(["sh", "-c", script], stdout=subprocess.PIPE, text=True, **options) as box:
        try:
            assert box.stdout is not None
            command = [box.stdout.readline().split()[1] for _ in range(2)]
            init = status_lines(box.pid)
        finally:
            box.kill()
    return {"command": command, "init": [init["CapEff"], init["NoNewPrivs"]]}


def exec_into_a_confined_box() -> dict[str, Any]:
    """``CapEff`` and ``NoNewPrivs`` of commands run by ``Popen.exec`` and ``exec_popen`` in a box without
    capabilities and with ``no_new_privs``, and by ``exec`` in the same box without them."""
    script = ["sh", "-c", "grep -E '^(CapEff|NoNewPrivs)' /proc/self/status | cut -f2"]
    out: dict[str, Any] = {}
    for name, options in (("bare", {}), ("confined", {"capabilities": (), "no_new_privs": True})):
        with nsbox.Popen(["sleep", "1000"], pid=True, user=True, **options) as box:
            try:
                out[name] = box.exec(script, capture_output=True, text=True).stdout.split()
                if name == "confined":
                    child = box.exec_popen(script, stdout=subprocess.PIPE, text=True)
                    out["exec_popen"] = child.communicate()[0].split()
            finally:
                box.kill()
    return out


#: Run in a box: connects to the UNIX socket ``argv[1]`` and prints what it read, or the errno.
UNIX_CLIENT = r"""
import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
    print(s.recv(100).decode())
except OSError as e:
    print(e.errno)
"""


def unix_socket_from_a_sandbox(directory: str) -> dict[str, Any]:
    """A host service on a UNIX socket in ``directory`` (the host's runtime directory for the box): what a bare box
    and a sandbox get connecting to it. ``XDG_RUNTIME_DIR`` names it, as a session's does."""
    path = os.path.join(directory, "service.sock")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(path)
        server.listen(4)

        def serve() -> None:
            while True:
                try:
                    conn, _ = server.accept()
                except OSError:
                    return
                with conn:
                    conn.sendall(b"hello from the host")

        threading.Thread(target=serve, daemon=True).start()
        out = {}
        old = os.environ.get("XDG_RUNTIME_DIR")
        os.environ["XDG_RUNTIME_DIR"] = directory
        try:
            for name, options in (("bare", {}), ("sandbox", {"sandbox": True})):
                r = nsbox.run(["python3", "-c", UNIX_CLIENT, path], capture_output=True, text=True, **options)
                out[name] = r.stdout.strip()
        finally:
            if old is None:
                del os.environ["XDG_RUNTIME_DIR"]
            else:
                os.environ["XDG_RUNTIME_DIR"] = old
            server.shutdown(socket.SHUT_RDWR)
    return out
