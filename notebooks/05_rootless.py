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
# # 5 · Rootless
#
# The article runs `sudo unshare …` and `docker`, both as root. This notebook runs as an **ordinary
# user** — the test suite starts its kernel as uid 65534 (`nobody`) — and repeats the experiments.
# Everything works, because of one namespace: the user namespace.

# %%
import os
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

assert os.getuid() != 0, "run this notebook as an ordinary user: it is about what works without root"


def status(pid: int | str) -> dict[str, str]:
    """/proc/PID/status as a dict."""
    return dict(line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())


def table(head: Sequence[str], rows: Iterable[Sequence[object]]) -> HTML:
    """An HTML table."""
    th = "".join(f"<th>{h}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return HTML(f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>")


ME = os.getuid()
print(f"uid {ME}, gid {os.getgid()}, groups {os.getgroups()}, capabilities {status('self')['CapEff']}")
assert int(status("self")["CapEff"], 16) == 0

# %% [markdown]
# ## Without a user namespace: not permitted
#
# Creating a PID, network, UTS, IPC, mount or cgroup namespace needs `CAP_SYS_ADMIN`, which we do not
# have. `unshare` says so, and so does nsbox when told not to make a user namespace (`user=False`):

# %%
ATTEMPTS: list[tuple[list[str], dict[str, Any]]] = [  # unshare's flags, nsbox's options
    (["--pid", "--fork"], {"pid": True}),
    (["--net"], {"net": True}),
    (["--uts"], {"hostname": "box"}),
    (["--mount"], {"mount": True}),
]
rows = []
for flags, options in ATTEMPTS:
    u = subprocess.run(["unshare", *flags, "true"], capture_output=True, text=True)
    try:
        nsbox.run(["true"], user=False, **options)
        n = "ran"
    except PermissionError as e:
        n = f"PermissionError: {e}"
    rows.append((f"unshare {' '.join(flags)} true", u.stderr.strip(), f"user=False, {options}", n))
    assert u.returncode != 0 and n.startswith("PermissionError")
display(table(["unshare", "result", "nsbox.run(['true'], …)", "result"], rows))

# %% [markdown]
# ## The user namespace
#
# Any process may create a user namespace (up to `/proc/sys/user/max_user_namespaces`). Inside, it
# has every capability — but only over the namespaces that user namespace *owns*, which are the ones
# created with it or after it. Own ids map to root inside: `unshare -r` / `--map-root-user`. This is
# nsbox's default without root: `user=None` adds a user namespace whenever another namespace is
# asked for, and maps our uid and gid to 0 (writing `deny` to `setgroups` first, as the kernel
# requires of unprivileged maps).

# %%
print("max_user_namespaces:", Path("/proc/sys/user/max_user_namespaces").read_text().strip())
u = subprocess.run(["unshare", "-r", "--net", "id"], capture_output=True, text=True, check=True)
print("$ unshare -r --net id\n" + u.stdout)

r = nsbox.run(
    ["sh", "-c", "id; cd /proc/self; cat uid_map gid_map setgroups; grep CapEff status"],
    net=True,
    capture_output=True,
    text=True,
    check=True,
)
print(">>> nsbox.run([...], net=True)\n" + r.stdout)
lines = r.stdout.splitlines()
assert lines[0].startswith("uid=0(root) gid=0(root)")
assert lines[1].split() == ["0", str(ME), "1"] and lines[2].split() == ["0", str(os.getgid()), "1"]
assert lines[3] == "deny" and int(lines[4].split()[1], 16) != 0  # capabilities, inside

# %% [markdown]
# ## The article's experiments, rootless
#
# The PID namespace with a fresh `/proc` (`sudo unshare --pid --fork --mount-proc`, without `sudo`):

# %%
r = nsbox.run(["ps", "-ef"], pid=True, mount_proc=True, capture_output=True, text=True, check=True)
print(r.stdout)
(only,) = r.stdout.splitlines()[1:]
assert only.split()[:2] == ["root", "1"]  # PID 1, and root — of its own user namespace

# %% [markdown]
# A long-running box with its own PID (fresh `/proc`), UTS, IPC, network, mount and cgroup
# namespaces — and the user namespace that owns them, which is the one namespace you would not see in
# notebook 2's table as root:

# %%
options = dict(pid=True, mount_proc=True, hostname="rootless", ipc=True, net=True, cgroup=True)
box = nsbox.Popen(["sleep", "60"], **options)
assert box.namespaces()["user"] != nsbox.namespaces()["user"]
box

# %%
r = box.exec(["sh", "-c", "ps -ef; true"], capture_output=True, text=True, check=True)
print("inside:\n" + r.stdout)
assert r.stdout.splitlines()[1].split()[:3] == ["root", "1", "0"]

print(
    "on the host:\n"
    + subprocess.run(["ps", "-o", "user,pid,ppid,args", "-p", str(box.pid)], capture_output=True, text=True).stdout
)
assert nsbox.nspid(box.pid) == [box.pid, 1] and int(status(box.pid)["PPid"]) == os.getpid()
assert os.stat(f"/proc/{box.pid}").st_uid == ME  # to the host, the box's "root" is us
box.processes()

# %% [markdown]
# ## Root inside, nobody outside
#
# What the box's root creates belongs to us on the host; what the host's root owns shows up inside as
# the overflow id 65534 (unmapped); and "root" inside cannot read what we cannot read — `/root`,
# say. A user namespace grants power over its own namespaces, never over the host's.

# %%
work = tempfile.mkdtemp(prefix="nsbox-nb5-")
r = box.exec(
    ["sh", "-c", f"touch {work}/made-inside; ls -ln {work}; stat -c '%u %n' /etc/passwd; ls /root"],
    capture_output=True,
    text=True,
)
print(r.stdout + r.stderr)
made = os.stat(f"{work}/made-inside")
print(f"on the host, made-inside belongs to uid {made.st_uid} (us: {ME})")

assert " 0 0 " in r.stdout.splitlines()[1]  # owned by root, inside ...
assert made.st_uid == ME  # ... by us, outside
assert "65534 /etc/passwd" in r.stdout
assert r.returncode != 0 and "Permission denied" in r.stderr

# %% [markdown]
# ## The other namespaces, rootless
#
# Each experiment of notebook 4 in the same box, joined with `box.exec`; every one works without root.

# %%
results = []

# UTS: the box's hostname; setting it inside leaves the host's alone
rename = ["sh", "-c", "hostname; hostname renamed-inside; hostname"]
name = box.exec(rename, capture_output=True, text=True, check=True).stdout.split()
assert name == ["rootless", "renamed-inside"] and socket.gethostname() != "renamed-inside"
results.append(("UTS", f"hostname {name[0]!r}, renamed to {name[1]!r}", f"still {socket.gethostname()!r}"))

# IPC: a message queue made inside is not in the host's list
box.exec(["ipcmk", "-Q"], capture_output=True, check=True)
inside = box.exec(["ipcs", "-q"], capture_output=True, text=True, check=True).stdout
host = subprocess.run(["ipcs", "-q"], capture_output=True, text=True, check=True).stdout
(queue,) = [line.split()[:2] for line in inside.splitlines() if line.startswith("0x")]
assert not any(line.split()[:2] == queue for line in host.splitlines())
results.append(("IPC", f"message queue key {queue[0]}", "not listed by ipcs -q"))

# NET: only lo, up
links = box.exec(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
assert [line.split(":")[1].strip() for line in links.splitlines()] == ["lo"] and "UP" in links
results.append(("NET", "only lo (UP)", "its own interfaces, unchanged"))

# MNT: a tmpfs mounted by the box's root
box.exec(["mount", "-t", "tmpfs", "rootless-tmpfs", work], check=True)
box.exec(["sh", "-c", f"echo hi > {work}/on-tmpfs"], check=True)
in_box = box.exec(["ls", work], capture_output=True, text=True, check=True).stdout.split()
assert in_box == ["on-tmpfs"] and os.listdir(work) == ["made-inside"]
assert "rootless-tmpfs" not in Path("/proc/self/mountinfo").read_text()
results.append(("MNT", f"tmpfs on {work}: {in_box}", f"{os.listdir(work)}, no tmpfs"))

# cgroup: its own root
cgroups = box.exec(["cat", "/proc/self/cgroup"], capture_output=True, text=True, check=True).stdout
assert all(line.split(":", 2)[2] == "/" for line in cgroups.splitlines())
results.append(("cgroup", "every path is /", Path("/proc/self/cgroup").read_text().splitlines()[-1]))

# time: a new box, with a monotonic offset of one day
r = nsbox.run(
    [sys.executable, "-c", "import time; print(time.monotonic())"],
    time=True,
    monotonic_offset=86400,
    capture_output=True,
    text=True,
    check=True,
)
shift = float(r.stdout) - time.monotonic()
assert abs(shift - 86400) < 5
results.append(("time", f"monotonic clock {shift:+,.0f} s ahead", "unchanged"))

display(table(["namespace", "in the box (uid 0 inside)", f"on the host (uid {ME})"], results))

# %% [markdown]
# ## What a user namespace does not give
#
# Without privileges, only our own uid and gid can be mapped — one id each, with `setgroups` denied.
# A box that needs more ids (a distribution image with several system users) needs a map written by
# someone privileged: the setuid `newuidmap`/`newgidmap` helpers with ranges from `/etc/subuid`, as
# rootless Docker and Podman use. Likewise connecting the box's network to the outside needs help
# from outside (rootless Docker uses slirp4netns or pasta).

# %%
NEED_PRIVILEGE: list[dict[str, Any]] = [{"uid_map": [(0, ME, 1), (1, 100000, 1000)]}, {"setgroups": "allow"}]
for options in NEED_PRIVILEGE:
    try:
        nsbox.run(["true"], user=True, **options)
        print(options, "-> ran")
    except PermissionError as e:
        print(f"{options} -> PermissionError: {e}")

# %% [markdown]
# ## Cleaning up

# %%
box.kill()
assert box.wait(timeout=10) == -9
shutil.rmtree(work)  # the tmpfs went with the box's mount namespace; this is the host's directory
print("box:", box.returncode)

# %% [markdown]
# So a container needs no root: a user namespace first, and the other namespaces owned by it. That
# is what nsbox does when you are not root, what `unshare -r` does, and what rootless Docker and
# Podman build on. The article's experiments, and notebook 4's, all ran here as uid 65534.

# %% [markdown]
# **Next:** [6 · Networking](06_networking.ipynb) — boxes with their own addresses, on a bridge.
