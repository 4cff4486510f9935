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
# # 4 · The other namespaces
#
# > 大家如果对其他Linux namespace也感兴趣，可以参考下unshare的说明文档，继续做下相关的测试和验证。
# >
# > *If you are interested in the other Linux namespaces, read unshare's documentation and carry on
# > testing and verifying them.*
#
# The article ends there; this notebook carries on. One section per namespace — UTS, IPC, network,
# mount (with propagation), user, cgroup, time — each a small experiment that asserts what the
# namespace isolates, and checks that the host did not change.

# %%
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from IPython.display import HTML, display

import nsbox

HOST_HOSTNAME = socket.gethostname()
HOST_MOUNTS = Path("/proc/self/mountinfo").read_text()


def table(head: Sequence[str], rows: Iterable[Sequence[object]]) -> HTML:
    """An HTML table."""
    th = "".join(f"<th>{h}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return HTML(f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>")


def wait_until(condition: Callable[[], object], timeout: float = 10.0) -> None:
    """Poll condition() until it is true."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


# %% [markdown]
# ## UTS: its own hostname
#
# `hostname="box"` creates a UTS namespace and sets the name in it. Inside, the name can be changed
# again; the host's stays what it was. With `uts=True` alone, the box starts with a copy of ours.

# %%
r = nsbox.run(
    ["sh", "-c", "hostname; hostname changed-inside; uname -n"],
    hostname="box",
    capture_output=True,
    text=True,
    check=True,
)
print(r.stdout)
assert r.stdout.split() == ["box", "changed-inside"]
assert socket.gethostname() == HOST_HOSTNAME

copy = nsbox.run(["hostname"], uts=True, capture_output=True, text=True, check=True).stdout.strip()
print(f"uts=True alone: {copy!r} (the host is {HOST_HOSTNAME!r})")
assert copy == HOST_HOSTNAME

# %% [markdown]
# ## IPC: a message queue the host cannot see
#
# System V IPC objects (message queues, semaphores, shared memory) and POSIX message queues live in
# an IPC namespace. A queue made in the box with `ipcmk -Q` shows in the box's `ipcs` and not in the
# host's; another box with its own IPC namespace starts with none. The queue disappears with the
# namespace.

# %%
ipcbox = nsbox.Popen(["sleep", "60"], pid=True, ipc=True)
print(ipcbox.exec(["ipcmk", "-Q"], capture_output=True, text=True, check=True).stdout)
inside = ipcbox.exec(["ipcs", "-q"], capture_output=True, text=True, check=True).stdout
host = subprocess.run(["ipcs", "-q"], capture_output=True, text=True, check=True).stdout
other = nsbox.run(["ipcs", "-q"], ipc=True, capture_output=True, text=True, check=True).stdout
print("in the box:" + inside, "on the host:" + host, "in another box:" + other, sep="\n")

(queue,) = [line.split()[:2] for line in inside.splitlines() if line.startswith("0x")]  # key, msqid
assert not any(line.split()[:2] == queue for line in host.splitlines())
assert not any(line.startswith("0x") for line in other.splitlines())

ipcbox.kill()
assert ipcbox.wait(timeout=10) == -9

# %% [markdown]
# ## NET: only `lo`, and a server nobody outside can reach
#
# A new network namespace has one interface, loopback, which nsbox brings up. Whatever listens in it
# listens on the box's own loopback.

# %%
r = nsbox.run(["ip", "-o", "link"], net=True, capture_output=True, text=True, check=True)
host_links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
names = [line.split(":")[1].strip() for line in r.stdout.splitlines()]
print("in the box:  ", names)
print("on the host: ", [line.split(":")[1].strip() for line in host_links.splitlines()])
assert names == ["lo"] and "UP" in r.stdout.split("<")[1].split(">")[0]

# %%
SERVER = (
    "import socket, sys\n"
    "s = socket.create_server(('127.0.0.1', int(sys.argv[1])))\n"
    "while True:\n"
    "    c, _ = s.accept(); c.sendall(b'hello from the box'); c.close()\n"
)
CLIENT = "import socket, sys\nprint(socket.create_connection(('127.0.0.1', int(sys.argv[1]))).recv(99).decode())\n"
with socket.socket() as s:  # a port that nothing on the host listens on
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]

server = nsbox.Popen([sys.executable, "-c", SERVER, str(port)], pid=True, net=True)


def ask() -> subprocess.CompletedProcess[str]:
    """Connect to the server from inside the box."""
    return server.exec([sys.executable, "-c", CLIENT, str(port)], capture_output=True, text=True)


wait_until(lambda: ask().returncode == 0)
print(f"inside, 127.0.0.1:{port} ->", ask().stdout.strip())
print("listening inside:", server.exec(["ss", "-Hltn"], capture_output=True, text=True).stdout.strip())

try:
    socket.create_connection(("127.0.0.1", port), timeout=2).close()
    reached = True
except ConnectionRefusedError as e:
    reached = False
    print(f"on the host, 127.0.0.1:{port} -> {e!r}")
assert not reached

server.kill()
assert server.wait(timeout=10) == -9

# %% [markdown]
# ## MNT: a tmpfs the host never sees
#
# In its own mount namespace the box mounts a tmpfs over a directory and writes a file into it. The
# host's directory stays empty and the host's mount table does not change: before mounting anything,
# nsbox makes `/` private in the new namespace (`propagation="private"`), so nothing leaks back.

# %%
where = tempfile.mkdtemp(prefix="nsbox-mnt-")
r = nsbox.run(
    [
        "sh",
        "-c",
        f"mount -t tmpfs box-tmpfs {where} && echo hi > {where}/inside.txt && ls {where} "
        f"&& grep box-tmpfs /proc/self/mountinfo",
    ],
    mount=True,
    capture_output=True,
    text=True,
    check=True,
)
print("in the box:\n" + r.stdout)
print(f"on the host: os.listdir({where!r}) = {os.listdir(where)}")
assert "inside.txt" in r.stdout and os.listdir(where) == []
assert "box-tmpfs" not in Path("/proc/self/mountinfo").read_text()
os.rmdir(where)

# %% [markdown]
# ### Propagation
#
# A new mount namespace starts as a copy of its parent's mounts. *Propagation* decides whether mounts
# made later travel between the copies: **private** — never; **slave** — from the parent into the
# box only; **shared** — both ways; **unchanged** — whatever the parent's mounts were set to. Trying
# all four on the real host would mean mounting on the host, so the experiment runs inside a box of
# its own, whose mount namespace plays the host: it mounts a *shared* tmpfs, starts one box per
# propagation, then mounts something in its copy and something in each box, and checks where each
# mount is visible (in `/proc/PID/mountinfo`).

# %%
# Runs in a box of its own, whose mount namespace stands in for the host's.
PROPAGATION_SCRIPT = """
import json, os, subprocess, sys
import nsbox

stage = sys.argv[1]
subprocess.run(["mount", "-t", "tmpfs", "stage", stage], check=True)  # only in this (outer) box
subprocess.run(["mount", "--make-shared", stage], check=True)


def mounted(pid, path):
    with open(f"/proc/{pid}/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


boxes, result = {}, {}
try:
    for prop in ["private", "slave", "shared", "unchanged"]:
        boxes[prop] = nsbox.Popen(["sleep", "30"], mount=True, propagation=prop)
    os.mkdir(f"{stage}/from-outside")  # mounted after the boxes were made
    subprocess.run(["mount", "-t", "tmpfs", "outside", f"{stage}/from-outside"], check=True)
    for prop, box in boxes.items():
        os.mkdir(f"{stage}/from-{prop}")
        box.exec(["mount", "-t", "tmpfs", prop, f"{stage}/from-{prop}"], check=True)
    for prop, box in boxes.items():
        result[prop] = {
            "outside → box": mounted(box.pid, f"{stage}/from-outside"),
            "box → outside": mounted("self", f"{stage}/from-{prop}"),
        }
finally:
    for box in boxes.values():
        box.kill()
        box.wait()
print(json.dumps(result))
"""

# %%
script = Path(tempfile.mkdtemp(prefix="nsbox-prop-"), "propagation.py")
script.write_text(PROPAGATION_SCRIPT)
stage = tempfile.mkdtemp(prefix="nsbox-stage-")
r = nsbox.run([sys.executable, str(script), stage], pid=True, mount_proc=True, capture_output=True, text=True)
assert r.returncode == 0, r.stderr
result = json.loads(r.stdout)
marks = {True: "✔ visible", False: "✘ not visible"}
head = ["propagation", "mounted outside later → in the box?", "mounted in the box → outside?"]
display(table(head, [(p, marks[v["outside → box"]], marks[v["box → outside"]]) for p, v in result.items()]))

assert result == {
    "private": {"outside → box": False, "box → outside": False},
    "slave": {"outside → box": True, "box → outside": False},
    "shared": {"outside → box": True, "box → outside": True},
    "unchanged": {"outside → box": True, "box → outside": True},  # the stand-in host's tmpfs is shared
}
assert os.listdir(stage) == [] and Path("/proc/self/mountinfo").read_text() == HOST_MOUNTS
os.rmdir(stage)
shutil.rmtree(script.parent)

# %% [markdown]
# (The stand-in host is a box that starts boxes: nsbox works inside a box too, given the box's own `/proc`.)
#
# ## USER: root inside — over what the namespace owns
#
# A user namespace has its own uids and gids, mapped onto the host's by `/proc/PID/uid_map` and
# `gid_map` (`inside outside count`), and its own capabilities. As root, `user=True` maps root to root
# (`0 0 1`), so ids do not change; what changes is *where the capabilities count*. The box's root has
# every capability — over the namespaces its user namespace owns, which are the ones created with
# it. Setting a hostname (even to the one it already is) or mounting needs `CAP_SYS_ADMIN` in the
# user namespace that owns the UTS or mount namespace: with `user=True` alone those are still the
# host's, and root-in-a-box is refused; add `uts=True` / `mount=True` and the same commands work.

# %%
where = tempfile.mkdtemp(prefix="nsbox-user-")
TRY = (
    "id; cat /proc/self/uid_map; grep CapEff /proc/self/status; "
    f'hostname "$(hostname)" && echo hostname: ok; mount -t tmpfs t {where} && echo mount: ok'
)
rows = []
runs: list[dict[str, Any]] = [{"user": True}, {"user": True, "uts": True, "mount": True}]
for options in runs:
    r = nsbox.run(["sh", "-c", TRY], capture_output=True, text=True, **options)
    out = r.stdout.splitlines()
    print(f">>> nsbox.run([...], **{options})\n" + r.stdout + r.stderr)
    assert out[0].startswith("uid=0(root)") and out[1].split() == ["0", "0", "1"]
    assert int(out[2].split()[1], 16) != 0  # every capability ...
    rows.append((", ".join(f"{k}=True" for k in options), "hostname: ok" in out, "mount: ok" in out))

display(table(["options", "may set the hostname", "may mount"], rows))
assert [row[1:] for row in rows] == [(False, False), (True, True)]
assert socket.gethostname() == HOST_HOSTNAME and os.listdir(where) == []
os.rmdir(where)

# %% [markdown]
# As root we may also map whole ranges — `uid_map=[(0, 100000, 65536)]` gives a box 65536 ids of its
# own, the way rootful Docker's `userns-remap` does. The map is what the kernel uses to translate
# every id crossing the boundary:

# %%
remapped = nsbox.Popen(["sleep", "60"], uid_map=[(0, 100000, 65536)], gid_map=[(0, 100000, 65536)])
uid_map = Path(f"/proc/{remapped.pid}/uid_map").read_text()
print("uid_map:", uid_map.strip())
assert uid_map.split() == ["0", "100000", "65536"]
assert remapped.namespaces()["user"] != nsbox.namespaces()["user"]
remapped.kill()
assert remapped.wait(timeout=10) == -9

# %% [markdown]
# Creating a user namespace does not change a process's own uid, and nsbox does not switch it: a
# command started by root with this map keeps host uid 0, which the map leaves out — it shows up
# inside as the overflow id 65534, without capabilities, yet still owns root's files on the host.
# The map is useful for processes that become one of its ids. The case that matters most —
# **root inside, nobody outside** — is what an ordinary user gets: notebook 5.

# %% [markdown]
# ## cgroup: its own cgroup root
#
# A cgroup namespace makes the process's current cgroup the root of what it sees in
# `/proc/self/cgroup` (and in cgroupfs mounted inside), hiding where the box sits in the host's
# hierarchy. Each line is `hierarchy:controllers:path`.

# %%
host_cgroups = [line.split(":", 2) for line in Path("/proc/self/cgroup").read_text().splitlines()]
r = nsbox.run(["cat", "/proc/self/cgroup"], cgroup=True, capture_output=True, text=True, check=True)
box_cgroups = [line.split(":", 2) for line in r.stdout.splitlines()]
display(
    table(
        ["hierarchy", "controllers", "path on the host", "path in the box"],
        [(h[0], h[1] or "(v2)", h[2], b[2]) for h, b in zip(host_cgroups, box_cgroups, strict=True)],
    )
)
assert all(path == "/" for _, _, path in box_cgroups)

# %% [markdown]
# ## time: a monotonic clock with an offset
#
# A time namespace offsets `CLOCK_MONOTONIC` and `CLOCK_BOOTTIME` (what uptime and timeouts measure),
# so a box can appear to have been up for a week — or keep its clocks across a migration. The wall
# clock, `CLOCK_REALTIME`, is not namespaced.

# %%
WEEK = 7 * 24 * 3600
CLOCKS = (
    "import time; print(time.clock_gettime(time.CLOCK_MONOTONIC), time.clock_gettime(time.CLOCK_BOOTTIME), time.time())"
)
r = nsbox.run(
    [sys.executable, "-c", CLOCKS],
    time=True,
    monotonic_offset=WEEK,
    boottime_offset=2 * WEEK,
    capture_output=True,
    text=True,
    check=True,
)
host_clocks = (time.clock_gettime(time.CLOCK_MONOTONIC), time.clock_gettime(time.CLOCK_BOOTTIME), time.time())
box_clocks = [float(x) for x in r.stdout.split()]
names = ["CLOCK_MONOTONIC", "CLOCK_BOOTTIME", "CLOCK_REALTIME"]
clock_rows = [
    (n, f"{h:,.1f}", f"{b:,.1f}", f"{b - h:+,.1f} s") for n, h, b in zip(names, host_clocks, box_clocks, strict=True)
]
display(table(["clock", "host", "box", "box - host"], clock_rows))

assert abs((box_clocks[0] - host_clocks[0]) - WEEK) < 5  # the monotonic offset is visible inside
assert abs((box_clocks[1] - host_clocks[1]) - 2 * WEEK) < 5
assert abs(box_clocks[2] - host_clocks[2]) < 5  # the wall clock is shared
uptime = nsbox.run(["cat", "/proc/uptime"], time=True, boottime_offset=2 * WEEK, capture_output=True, text=True)
host_uptime = Path("/proc/uptime").read_text().split()[0]
print(f"/proc/uptime in the box: {uptime.stdout.split()[0]} s, on the host: {host_uptime} s")

# %% [markdown]
# ## The host is unchanged

# %%
assert socket.gethostname() == HOST_HOSTNAME
assert Path("/proc/self/mountinfo").read_text() == HOST_MOUNTS
print("hostname and mount table as they were")

# %% [markdown]
# **Next:** [5 · Rootless](05_rootless.ipynb) — the same experiments without root.
