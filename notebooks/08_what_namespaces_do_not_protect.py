# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 8 · What namespaces do not protect
#
# Namespaces change what a process *sees*. They do not stop root inside a user namespace from using every
# capability it holds there, a setuid program from gaining root, a process from calling any system call,
# pushing input into a terminal, or eating memory and PIDs. This notebook tries each of those attacks twice:
# first in a **bare box** (namespaces only), where it works, then with the option that refuses it. At the
# end, `sandbox=True` does all of it at once.
#
# The test suite runs this notebook as root and as uid 65534 (the committed outputs are root's). The bare
# box is the same in both: a user namespace, where its root is uid 0 (the host's root in the root run, uid
# 65534 in the other), with PID, mount, UTS, IPC and network namespaces. Where the runs differ, the prose
# says so.

# %%
import errno
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from IPython.display import HTML, display

import nsbox

ROOT = os.geteuid() == 0
WORK = Path(tempfile.mkdtemp(prefix="nsbox-nb8-"))
WORK.chmod(0o755)
PY = "/usr/bin/python3"  # the system's Python: every user may run it (our own may live under /root)
BARE: dict[str, Any] = dict(user=True, pid=True, mount=True, uts=True, ipc=True, net=True)
#: The protections of sections 1, 2 and 4, which ``sandbox=True`` has too.
PROTECTED: dict[str, Any] = dict(capabilities=(), no_new_privs=True, seccomp="default")


def table(head: Sequence[str], rows: Iterable[Sequence[object]]) -> HTML:
    """An HTML table."""
    th = "".join(f"<th>{h}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return HTML(f"<table><tr>{th}</tr>{body}</table>")


#: Prepended to every probe: ``attempt(name, fn)`` notes in ``out`` the errno ``fn`` failed with (0: it
#: worked); ``c(ret)`` raises the errno of a failed libc call; the probe prints ``out`` as JSON.
PRELUDE = r"""
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
        raise OSError(ctypes.get_errno(), "")
"""


def probe(code: str, *args: str, **options: Any) -> dict[str, Any]:
    """Run ``PRELUDE + code`` in a box with ``options``: what it printed, as JSON."""
    r = nsbox.run(
        [PY, "-c", PRELUDE + code + "\nprint(json.dumps(out))", *args], capture_output=True, text=True, **options
    )
    assert r.returncode == 0, r.stderr
    result: dict[str, Any] = json.loads(r.stdout)
    return result


def compare(code: str, boxes: dict[str, dict[str, Any]], *args: str) -> dict[str, dict[str, Any]]:
    """``probe(code, *args)`` in each box of ``boxes`` (a name: its options besides the bare box's)."""
    return {name: probe(code, *args, **BARE, **options) for name, options in boxes.items()}


def outcome(err: int) -> str:
    """An attempt's errno as a name; 0 is success."""
    return "<b>ok</b>" if err == 0 else errno.errorcode[err]


print(f"uid {os.getuid()} · {'root' if ROOT else 'not root'} · working in {WORK}")

# %% [markdown]
# ## 1 · Capabilities: root in a user namespace may do what root does — there
#
# The box's root holds every capability in its user namespace, over what that namespace owns: it mounts in
# its mount namespace, renames its UTS namespace, opens raw sockets and binds port 80 in its network
# namespace. Nothing of that reaches the host, but each is kernel code that untrusted code can now reach
# (CVE-2022-0185, a way to root through the mount code, needed only the `CAP_SYS_ADMIN` a user namespace
# gives).
# `capabilities=()` drops every capability from every set, the bounding set included, so not even a
# setuid program can win them back; `capabilities=["net_bind_service"]` keeps one. As root and as uid
# 65534 alike: the box's user namespace gives it all.

# %%
CAPS = r"""
def mount():
    c(libc.mount(b"none", b"/mnt", b"tmpfs", 0, None))
    c(libc.umount2(b"/mnt", 0))

attempt("mount a tmpfs", mount)
attempt("sethostname", lambda: c(libc.sethostname(b"attack", 6)))
attempt("raw socket", lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP).close())
attempt("bind port 80", lambda: socket.create_server(("127.0.0.1", 80)).close())
out["CapEff"] = next(line.split()[1] for line in open("/proc/self/status") if line.startswith("CapEff"))
"""
seen = compare(
    CAPS,
    {
        "bare box": {},
        "capabilities=()": {"capabilities": ()},
        'capabilities=["net_bind_service"]': {"capabilities": ["net_bind_service"]},
    },
)
attempts = ["mount a tmpfs", "sethostname", "raw socket", "bind port 80"]
rows = [(a, *(outcome(s[a]) for s in seen.values())) for a in attempts]
display(table(["", *seen], [*rows, ("CapEff", *(s["CapEff"] for s in seen.values()))]))
bare, none, kept = seen.values()
assert [bare[a] for a in attempts] == [0, 0, 0, 0] and int(bare["CapEff"], 16) != 0
assert [none[a] for a in attempts] == [errno.EPERM, errno.EPERM, errno.EPERM, errno.EACCES]
assert [kept[a] for a in attempts] == [errno.EPERM, errno.EPERM, errno.EPERM, 0]
assert int(none["CapEff"], 16) == 0 and int(kept["CapEff"], 16) == 1 << 10  # CAP_NET_BIND_SERVICE is 10
assert socket.gethostname() != "attack"  # the bare box renamed its own UTS namespace, not the host

# %% [markdown]
# ## 2 · A setuid program gains root; `no_new_privs=True` stops it
#
# A setuid-root program runs as root whoever starts it: `su`, `passwd`, `mount`. A box that runs as
# another user and can reach one gains root through it. `no_new_privs=True` sets `PR_SET_NO_NEW_PRIVS`
# before the exec: from then on, the kernel ignores setuid bits and file capabilities. (Each case runs
# `passwd -S`, the system's setuid-root `passwd`, which prints the caller's password ageing from
# `/etc/shadow` — if it can read it, which only root can.)
#
# As root, the notebook makes its own setuid-root program too, a copy of `id`, and the box runs without a
# user namespace as uid 65534 (`user=65534`, as in `subprocess`). Without root, the notebook can make no
# setuid-root file, and it cannot make a box with namespaces outside a user namespace — where the kernel
# already ignores the setuid bit of a file whose owner (the host's root) is not mapped. So the unprivileged
# run shows the three cases: no namespaces at all (the program gains root), a user namespace, and
# `no_new_privs=True`.

# %%
programs = {"passwd -S": ["passwd", "-S"]}
if ROOT:
    suid_id = WORK / "suid-id"
    shutil.copy("/usr/bin/id", suid_id)
    os.chown(suid_id, 0, 0)
    suid_id.chmod(0o4755)
    programs["a setuid-root copy of id -u"] = [str(suid_id), "-u"]
    cases: dict[str, dict[str, Any]] = {
        "bare box, as uid 65534": dict(pid=True, user=65534),
        "no_new_privs=True": dict(pid=True, user=65534, no_new_privs=True),
    }
else:
    cases = {"no namespaces": {}, "user=True": dict(user=True), "no_new_privs=True": dict(no_new_privs=True)}
said = {
    case: {
        name: nsbox.run(argv, capture_output=True, text=True, check=True, **options).stdout.strip()
        for name, argv in programs.items()
    }
    for case, options in cases.items()
}
display(table(["", *cases], [(name, *(said[case][name] for case in cases)) for name in programs]))
shadow_unread = ["never", "-1", "-1", "-1", "-1"]  # what passwd -S shows when it could not read /etc/shadow
first, *confined = cases
assert said[first]["passwd -S"].split()[2:] != shadow_unread
assert all(said[case]["passwd -S"].split()[2:] == shadow_unread for case in confined)
if ROOT:
    assert [said[case]["a setuid-root copy of id -u"] for case in cases] == ["0", "65534"]

# %% [markdown]
# ## 3 · Resource limits: `rlimits=`
#
# A box shares the host's disks, file table and process table. Resource limits, set in the box before the
# exec and inherited by everything it starts, bound what one process (or one user) takes: `fsize` stops a
# write at a size with `SIGXFSZ`, `nofile` bounds open files.

# %%
big = WORK / "big"


def write_big(**options: Any) -> tuple[str, int]:
    """A shell in a box writes 3 MiB: its exit status, and the size of the file on the host."""
    script = f"head -c {3 << 20} /dev/zero > {big}; echo $?"
    r = nsbox.run(["sh", "-c", script], capture_output=True, text=True, **BARE, **options)
    size = big.stat().st_size
    big.unlink()
    return r.stdout.strip(), size


OPEN = """
n = 0
try:
    while n < 5000:
        os.open("/dev/null", os.O_RDONLY)
        n += 1
except OSError as e:
    out["errno"] = e.errno
out["opened"] = n
"""
written = {"bare box": write_big(), 'rlimits={"fsize": 1 << 20}': write_big(rlimits={"fsize": 1 << 20})}
opened = compare(OPEN, {"bare box": {}, 'rlimits={"nofile": 64}': {"rlimits": {"nofile": 64}}})
rows = [
    (k, "write 3 MiB", f"exit status {status}, {size >> 20} MiB on the host") for k, (status, size) in written.items()
]
for k, o in opened.items():
    rows.append(
        (k, "open files", f"{o['opened']} opened, then " + (outcome(o["errno"]) if "errno" in o else "stopped"))
    )
display(table(["", "attempt", "result"], rows))
assert list(written.values()) == [("0", 3 << 20), (str(128 + 25), 1 << 20)]  # 25: SIGXFSZ
assert opened["bare box"]["opened"] > 64 and opened['rlimits={"nofile": 64}'] == {"errno": errno.EMFILE, "opened": 61}

# %% [markdown]
# A fork bomb fills the host's process table. This one is bounded — three children each, three levels
# deep: 40 processes; each logs its forks, then sleeps. In the bare box all 40 start; under
# `rlimits={"nproc": 16}` forks fail with `EAGAIN` at 16, and the host meanwhile starts processes as usual.
# Killing the box's PID 1 ends them all.
#
# `nproc` counts the processes of the box's user in the box's user namespace, but the kernel exempts the
# host's root from it: as root, the box's root is mapped to uid 65534 here (as `sandbox=True` does). Without
# root, the box's root is uid 65534 on the host already.

# %%
BOMB = r"""
import os, sys, time
log = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND)
depth, forking = 3, True
while depth > 0 and forking:
    depth, forking = depth - 1, False
    for _ in range(3):
        os.write(log, b"fork\n")  # before the child exists: a process is logged before it can log itself
        try:
            pid = os.fork()
        except OSError as e:
            os.write(log, b"refused %d\n" % e.errno)
            continue
        if pid == 0:
            forking = True  # a child: forks its own, one level less deep
            break
os.write(log, b"done\n")
time.sleep(1000)
"""


def in_pid_namespace(inode: int) -> int:
    """How many of the processes we may look at are in the PID namespace ``inode``."""
    count = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            count += os.stat(f"/proc/{pid}/ns/pid").st_ino == inode
        except OSError:
            pass
    return count


def fork_bomb(**options: Any) -> tuple[dict[str, Any], nsbox.Popen]:
    """The bomb in a box with ``options``, and the box (reaped).

    Returns how many processes the box had once all were done forking, what forks failed with, whether the
    host started a process meanwhile, and how many were left after the kill.
    """
    log = WORK / "bomb.log"
    log.write_text("")
    log.chmod(0o666)  # the box's root may be 65534 on the host
    with nsbox.Popen([PY, "-c", BOMB, str(log)], **BARE, **options) as box:
        inode = os.stat(f"/proc/{box.pid}/ns/pid").st_ino
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # until every process that started is done forking
            lines = log.read_text().splitlines()
            refused = [line.split()[1] for line in lines if line.startswith("refused")]
            if lines.count("done") == 1 + lines.count("fork") - len(refused):
                break
            time.sleep(0.02)
        running, host = in_pid_namespace(inode), subprocess.run(["true"]).returncode
        box.kill()
    deadline = time.monotonic() + 10
    while in_pid_namespace(inode) and time.monotonic() < deadline:
        time.sleep(0.02)
    log.unlink()
    errnos = ", ".join(sorted({errno.errorcode[int(e)] for e in refused})) or "none"
    left = in_pid_namespace(inode)
    return {"processes": running, "forks refused": errnos, "the host's fork": host, "left after the kill": left}, box


NPROC: dict[str, Any] = {"rlimits": {"nproc": 16}}
if ROOT:
    NPROC |= {"uid_map": [(0, 65534, 1)], "gid_map": [(0, 65534, 1)]}
bombs = {"bare box": fork_bomb()[0], 'rlimits={"nproc": 16}': fork_bomb(**NPROC)[0]}
display(table(["", *bombs["bare box"]], [(k, *b.values()) for k, b in bombs.items()]))
assert bombs["bare box"] == {"processes": 40, "forks refused": "none", "the host's fork": 0, "left after the kill": 0}
limited = bombs['rlimits={"nproc": 16}']
assert 1 <= limited.pop("processes") <= 16
assert limited == {"forks refused": "EAGAIN", "the host's fork": 0, "left after the kill": 0}

# %% [markdown]
# ## 4 · System calls: `seccomp="default"`
#
# The box may make every system call, and each is kernel code it can reach. A seccomp filter, installed last
# before the exec, refuses calls by number before the kernel looks at them. nsbox's default profile, in the
# spirit of Docker's, denies those a box has no use for — the keyring (`keyctl`), `bpf`, `perf_event_open`,
# new user namespaces, and more (the README lists them). In the bare box the kernel answers each call (it
# parses our empty `bpf` and `perf_event_open` requests before refusing them); under the filter each fails
# with `EPERM` at once, and the box goes on: an ordinary pipeline runs unchanged.

# %%
NUMBERS = {
    "x86_64": {"keyctl": 250, "bpf": 321, "perf_event_open": 298},
    "aarch64": {"keyctl": 219, "bpf": 280, "perf_event_open": 241},
}[platform.machine()]
CALLS = r"""
nr = json.loads(sys.argv[1])
empty = ctypes.create_string_buffer(128)
attempt("keyctl", lambda: c(libc.syscall(nr["keyctl"], 0, -3, 0)))  # KEYCTL_GET_KEYRING_ID of the session's
attempt("bpf", lambda: c(libc.syscall(nr["bpf"], 0, empty, 128)))  # BPF_MAP_CREATE, all zeros
attempt("perf_event_open", lambda: c(libc.syscall(nr["perf_event_open"], empty, 0, -1, -1, 0)))
attempt("unshare(CLONE_NEWUSER)", lambda: c(libc.unshare(0x10000000)))
"""
calls = compare(CALLS, {"bare box": {}, 'seccomp="default"': {"seccomp": "default"}}, json.dumps(NUMBERS))
display(table(["", *calls], [(k, *(outcome(c[k]) for c in calls.values())) for k in calls["bare box"]]))
pipeline = ["sh", "-c", "ps -o comm= -p 1 | tr a-z A-Z"]
r = nsbox.run(pipeline, **BARE, mount_proc=True, seccomp="default", capture_output=True, text=True, check=True)
print(f"{pipeline[2]!r} under the filter: {r.stdout.strip()}")
assert calls["bare box"]["keyctl"] == calls["bare box"]["unshare(CLONE_NEWUSER)"] == 0
assert errno.EPERM not in calls["bare box"].values()
assert set(calls['seccomp="default"'].values()) == {errno.EPERM} and r.stdout == "SH\n"

# %% [markdown]
# `TIOCSTI` pushes characters into a terminal's input, as if typed: a box that shares its caller's terminal
# can type a command into the caller's shell, to run once the box has exited (bubblewrap's CVE-2017-5226).
# Here a small caller — a session leader whose controlling terminal is a fresh pseudo-terminal, as a login
# shell's is — starts a box that shares its terminal and its session; the box pushes `id` and a newline, and
# the caller reads what its terminal then has for it. Under the filter the `ioctl` fails with `EPERM`,
# though the box is still in the caller's session.

# %%
CALLER = r"""
import json, os, sys
import nsbox
master, slave = os.openpty()
tty = os.open(os.ttyname(slave), os.O_RDWR)  # a session leader without a terminal: this one becomes ours
push = "import fcntl, termios\nfor c in b'id\\n': fcntl.ioctl(0, termios.TIOCSTI, bytes([c]))"
r = nsbox.run([sys.argv[1], "-c", push], stdin=tty, capture_output=True, text=True, **json.loads(sys.argv[2]))
os.set_blocking(tty, False)
try:
    typed = os.read(tty, 100).decode()
except BlockingIOError:
    typed = ""
print(json.dumps({"the box": (r.stderr.strip().splitlines() or ["pushed"])[-1], "the caller's terminal": typed}))
"""


def tiocsti(**options: Any) -> dict[str, Any]:
    """What the caller reports for a box with ``options`` (besides the bare box's) that pushes input."""
    caller = [sys.executable, "-c", CALLER, PY, json.dumps({**BARE, **options})]
    r = subprocess.run(caller, start_new_session=True, capture_output=True, text=True, timeout=60, check=True)
    result: dict[str, Any] = json.loads(r.stdout)
    return result


pushed = {"bare box": tiocsti(), 'seccomp="default"': tiocsti(seccomp="default")}
display(table(["", *pushed["bare box"]], [(k, *(repr(v) for v in p.values())) for k, p in pushed.items()]))
assert pushed["bare box"] == {"the box": "pushed", "the caller's terminal": "id\n"}
assert pushed['seccomp="default"'] == {
    "the box": "PermissionError: [Errno 1] Operation not permitted",
    "the caller's terminal": "",
}

# %% [markdown]
# ## 5 · Memory and processes: cgroup limits
#
# A box shares the host's memory: one that takes it all makes the kernel's OOM killer pick a victim
# anywhere on the host. With `memory_limit="64M"` the box gets a cgroup of its own, and the OOM killer
# picks in the box; `box.oom_killed` says it did, `box.usage()` reads the cgroup's counters. The hog below
# would take 512 MiB.
#
# The box's cgroup is made beneath the caller's own, which takes root, or a cgroup v2 subtree delegated to
# the caller (as systemd gives each user on most distributions). This machine mounts the v1 controllers and
# delegates nothing: without root, asking for a limit is a `PermissionError` that says what to do.

# %%
HOG = """
chunks = [bytearray(b"x") * (16 << 20) for _ in range(32)]
print("survived")
"""
try:
    with nsbox.Popen([PY, "-c", HOG], **BARE, memory_limit="64M", stdout=subprocess.PIPE, text=True) as box:
        said, _ = box.communicate(timeout=60)
except PermissionError as e:
    print(f"without root: {type(e).__name__}: {e}")
    assert not ROOT
else:
    usage = box.usage()
    print(f"exit status {box.returncode} · box.oom_killed: {box.oom_killed} · box.usage(): {usage}")
    assert box.returncode == -9 and box.oom_killed and said == ""
    assert usage.memory_peak is not None and usage.memory_peak <= 64 << 20

# %% [markdown]
# The fork bomb again, with its box's root left as it is — the host's root, in the root run, whom `nproc`
# would not hold: `pids_limit=16` does. (Host root in a box could still raise the limit in the cgroup's files,
# which it owns; a box whose root is not the host's, as in the sandbox, cannot.)

# %%
try:
    bomb, box = fork_bomb(pids_limit=16)
except PermissionError as e:
    print(f"without root: {type(e).__name__}: {e}")
    assert not ROOT
else:
    display(table(["", *bomb], [("pids_limit=16", *bomb.values())]))
    print(f"box.usage(): {box.usage()}")
    processes = bomb.pop("processes")
    assert 1 <= processes <= 16 and box.usage().processes == processes
    assert bomb == {"forks refused": "EAGAIN", "the host's fork": 0, "left after the kill": 0}

# %% [markdown]
# ## 6 · `sandbox=True`: all of it at once
#
# `sandbox=True` is one switch for code you do not trust: every namespace, a `/proc` of its own, loopback
# only, the host's root read-only with a private `/tmp`, an empty `/run` and a minimal `/dev`, a new session,
# no capabilities, `no_new_privs`, `seccomp="default"`, and modest limits (`nproc`, `nofile`, `core`); as
# root, the box's root is the host's `nobody`. It works without root. An option given explicitly replaces its
# part (limits given add to its own).
#
# A process's `/proc/self/status` says what holds: its capability sets (inheritable, permitted, effective,
# bounding, ambient; bit masks in hex), `NoNewPrivs`, and `Seccomp` (2: a filter). Here those of the notebook
# itself, the bare box, the bare box with the three protections of sections 1, 2 and 4, and the sandbox.
# (The notebook's own sets are those its caller gave it: none without root, and as root here all but
# `CAP_SYS_RESOURCE`, which this machine withholds. The bare box's root has every capability of its user
# namespace in both runs.)

# %%
LINES = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp")
STATUS = """
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
out.update({k: status[k].strip() for k in sys.argv[1:]})
"""
mine = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
status = {"this notebook": {k: mine[k].strip() for k in LINES}}
status |= compare(
    STATUS,
    {"bare box": {}, "bare box +<br>capabilities=()<br>no_new_privs=True<br>seccomp='default'": PROTECTED},
    *LINES,
)
status["sandbox=True"] = probe(STATUS, *LINES, sandbox=True)
display(table(["", *status], [(line, *(s[line] for s in status.values())) for line in LINES]))
bare, protected, sandboxed = list(status.values())[1:]
assert int(bare["CapEff"], 16) != 0 and (bare["NoNewPrivs"], bare["Seccomp"]) == ("0", "0")
assert protected == sandboxed == {**dict.fromkeys(LINES[:5], "0" * 16), "NoNewPrivs": "1", "Seccomp": "2"}

# %% [markdown]
# And a few escapes, in the bare box and in the sandbox: writing a file outside `/tmp` (in the host's
# `/var/tmp`; the sandbox's own `/tmp` is a private tmpfs), mounting, and listing the processes it can see
# (the bare box has a PID namespace but not a `/proc` of its own: it lists the host's).

# %%
ESCAPE = r"""
def write():
    with open(sys.argv[1], "w") as f:
        f.write("escaped")

attempt("write outside /tmp", write)
attempt("mount a tmpfs", lambda: c(libc.mount(b"none", b"/mnt", b"tmpfs", 0, None)))
out["processes it sees"] = sum(p.isdigit() for p in os.listdir("/proc"))
"""
outside = Path("/var/tmp") / f"{WORK.name}-escaped"
escape = {"bare box": probe(ESCAPE, str(outside), **BARE), "sandbox=True": probe(ESCAPE, str(outside), sandbox=True)}
rows = [(k, *(outcome(e[k]) for e in escape.values())) for k in ("write outside /tmp", "mount a tmpfs")]
display(table(["", *escape], [*rows, ("processes it sees", *(e["processes it sees"] for e in escape.values()))]))
outside.unlink()  # the bare box's
escaped, held = escape.values()
assert escaped["write outside /tmp"] == escaped["mount a tmpfs"] == 0 and escaped["processes it sees"] > 3
assert held == {"write outside /tmp": errno.EROFS, "mount a tmpfs": errno.EPERM, "processes it sees": 1}

# %% [markdown]
# ## What `sandbox=True` does not do
#
# - **Bound the memory, CPU time and processes of the box as a whole**: its limits are rlimits, per process
#   (`nproc`: per user). Cgroup limits (section 5: `memory_limit=`, `pids_limit=`, `cpu_limit=`) are options
#   of their own, and take root or a delegated cgroup.
# - **Hide the host's files**: its root is the host's, read-only, not hidden (only `/run` and
#   `$XDG_RUNTIME_DIR` are, for their UNIX sockets): it reads every file the host's `nobody` (without root:
#   the caller) may read. Landlock would narrow that by path, but it is not compiled into this machine's
#   kernel, so nsbox does not use it (an untested path would not be shipped). Where it matters, give the box a
#   root of its own (`root=nsbox.Tmpfs()` with what the code needs bound in, or an image).
# - **Filter a network it is given**: a sandbox has loopback only. `net=False` shares the host's network,
#   unfiltered; `egress=True` reaches out through a NAT of the box's own, and `allow=` keeps it to the
#   destinations listed (the README's Egress section).
# - **Remove the kernel's bugs**: the box still calls into the host's kernel; the filter narrows the calls.

# %%
shutil.rmtree(WORK)
print("left:", WORK.exists())
assert not WORK.exists()
