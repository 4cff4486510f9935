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
# # 2 · Observing a container's PID namespace
#
# The article takes a running Docker container (a private registry), enters it and lists its processes:
#
# ```
# $ docker exec -it 98cb5c25871b sh
# / # ps -ef
# PID   USER     TIME  COMMAND
#     1 root      0:00 registry serve /etc/docker/registry/config.yml
#    11 root      0:00 sh
#    18 root      0:00 ps -ef
# ```
#
# then looks from the host:
#
# ```
# root      1917     1  ... /usr/bin/containerd-shim-runc-v2 -namespace moby -id 98cb5c25871b...
# root      1945  1917  ... registry serve /etc/docker/registry/config.yml
# ```
#
# > 可以看到registry进程在宿主机中的PID是1945，而且它的父进程ID正是容器进程的PID1917。这正是PID namespace的作用。
# >
# > *The registry process is PID 1945 on the host, and its parent is the container's process, PID 1917
# > [containerd-shim]. This is what the PID namespace does.*
#
# We do the same without Docker. Our "container" is a real service — Python's `http.server`, bound
# to `127.0.0.1` — started by `nsbox.Popen` in its own PID namespace (with a fresh `/proc`), mount,
# network, UTS and IPC namespaces: what Docker gives a container, minus the image and the cgroup limits.

# %%
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import matplotlib.pyplot as plt
import nstree  # the process-tree picture (nstree.py, next to this notebook)
from IPython.display import display

import nsbox


def status(pid: int) -> dict[str, str]:
    """/proc/PID/status as a dict."""
    return dict(line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())


def wait_until(condition: Callable[[], object], timeout: float = 10.0) -> None:
    """Poll condition() until it is true."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


# %% [markdown]
# ## Start the container
#
# The site it serves is a temporary directory with one page. The port is one that nothing on the
# host listens on, so that "the host cannot reach it" below means what it says.

# %%
site = tempfile.TemporaryDirectory(prefix="nsbox-site-")
Path(site.name, "index.html").write_text("<h1>hello from inside the box</h1>\n")
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    PORT = s.getsockname()[1]

container = nsbox.Popen(
    [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", site.name, str(PORT)],
    pid=True,
    mount_proc=True,
    net=True,
    uts=True,
    ipc=True,
    hostname="private-registry",
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
)
container  # ≈ docker ps: what it runs, its namespaces next to ours, its processes

# %% [markdown]
# ## `docker exec … sh`, then `ps -ef`
#
# `container.exec(args)` is `docker exec` (or `nsenter --all`): it joins every namespace of the box,
# then forks, so the command really is inside the PID namespace and sees the box's `/proc`. As in
# the article, we run a shell and `ps -ef` from it.

# %%
r = container.exec(["sh", "-c", "ps -ef; true"], capture_output=True, text=True, check=True)
print("/ # ps -ef\n" + r.stdout)

keys = ["uid", "pid", "ppid", "c", "stime", "tty", "time", "cmd"]
inside = [dict(zip(keys, line.split(None, 7), strict=True)) for line in r.stdout.splitlines()[1:]]
pid1 = next(p for p in inside if p["pid"] == "1")
assert "http.server" in pid1["cmd"] and pid1["ppid"] == "0"  # our server is PID 1, its parent is not in here
shell = next(p for p in inside if p["cmd"] == "sh -c ps -ef; true")
assert shell["ppid"] == "0"  # the exec'd shell came from outside too, like docker exec's sh

# %% [markdown]
# Inside, the server is **PID 1**, as the registry was. The shell we exec'd has a small PID and
# **PPID 0**: its parent is outside the namespace, so there is no PID for it in here (in Docker,
# the exec'd `sh`'s parent is likewise outside: runc, then the shim).
#
# ## The same process from the host
#
# `container.pid` is the host's PID of the box's PID 1 — the article's 1945. `nsbox.nspid(pid)` reads
# the `NSpid` line of `/proc/PID/status`: the process's PID in each namespace from ours down to its own.

# %%
print(f"container.pid = {container.pid}    NSpid = {nsbox.nspid(container.pid)}")
assert container.pid != 1 and nsbox.nspid(container.pid) == [container.pid, 1]

parent = int(status(container.pid)["PPid"])
print(
    subprocess.run(
        ["ps", "-ww", "-o", "user,pid,ppid,args", "-p", f"{parent},{container.pid}"], capture_output=True, text=True
    ).stdout
)
assert parent == os.getpid()  # the parent is this Jupyter kernel

# %% [markdown]
# The parent is **this notebook's kernel**. Where Docker has containerd start a `containerd-shim`
# per container to be the container's parent (1917 above), nsbox clones the box from one of its own
# threads in the kernel process; a thread's children belong to its process, so the kernel is the
# parent. Its threads:

# %%
threads = {int(t): Path(f"/proc/self/task/{t}/comm").read_text().strip() for t in os.listdir("/proc/self/task")}
print("the kernel's threads:", ", ".join(sorted(set(threads.values()))))

# %% [markdown]
# ## Both views joined: `container.processes()`
#
# `processes()` reads `/proc` (not `ps`) and puts each process's host PID and inside PID on one row —
# what `docker top` shows, plus the inside column.

# %%
table = container.processes()
(first,) = table
assert (first.pid, first.ppid, first.host_pid, first.host_ppid) == (1, 0, container.pid, os.getpid())
table

# %% [markdown]
# A container usually runs more than its main process: `docker exec -d` leaves one running. Here a
# shell that starts a `sleep` and waits for it, started with `container.exec_popen` (the `Popen`
# form of `exec`), then the picture: the host's view on the left (host PIDs, our kernel and its
# parent above the box; the dashed box is the PID namespace), the inside view on the right.

# %%
worker = container.exec_popen(["sh", "-c", "sleep 300 & wait"])
wait_until(lambda: any(p.command == "sleep 300" for p in container.processes()))

table = container.processes()
display(table)
sh_row = next(p for p in table if p.host_pid == worker.pid)
sleep_row = next(p for p in table if p.command == "sleep 300")
assert sh_row.ppid == 0 and sh_row.host_ppid == os.getpid()  # exec'd from outside: parent is us
assert sleep_row.ppid == sh_row.pid and sleep_row.host_ppid == sh_row.host_pid

nstree.draw(table, title="The container: PID 1 inside, host PID outside; exec'd processes enter from outside")
plt.show()

# %% [markdown]
# ## Its network: reachable from inside only
#
# The box has its own network namespace: its own `lo`, its own `127.0.0.1`, its own ports. A request
# from inside the box (curl may not be installed, Python is) reaches the server:

# %%
URL = f"http://127.0.0.1:{PORT}/"
FETCH = "import sys, urllib.request as u; r = u.urlopen(sys.argv[1]); print(r.status, r.read().decode())"


def fetch_inside() -> subprocess.CompletedProcess[str]:
    """GET URL from inside the box, with Python (curl may not be installed)."""
    return container.exec([sys.executable, "-c", FETCH, URL], capture_output=True, text=True)


wait_until(lambda: fetch_inside().returncode == 0)  # the server may still be starting
r = fetch_inside()
print(f"inside the box: GET {URL} ->", r.stdout)
assert r.stdout.startswith("200") and "hello from inside the box" in r.stdout

print(container.exec(["ip", "-brief", "address"], capture_output=True, text=True).stdout)
print(
    "hostname inside:",
    container.exec(["hostname"], capture_output=True, text=True).stdout.strip(),
    "· on the host:",
    socket.gethostname(),
)

# %% [markdown]
# The same URL from the host is another machine's loopback, where nothing listens on that port:

# %%
try:
    urllib.request.urlopen(URL, timeout=2)
    reached = True
except urllib.error.URLError as e:
    reached = False
    print(f"from the host: GET {URL} -> {e.reason!r}")
assert not reached

with socket.socket() as s:  # two network stacks: the host can even bind the same address and port
    s.bind(("127.0.0.1", PORT))
    print(f"the host bound 127.0.0.1:{PORT} too, while the box's server listens on its own 127.0.0.1:{PORT}")

# %% [markdown]
# To publish it, Docker connects the container's network namespace to the host with a virtual
# Ethernet pair and NAT (the article's `0.0.0.0:5000->5000/tcp`); that needs privileges and is
# beyond this notebook.
#
# ## Stopping the container
#
# Killing PID 1 ends the namespace: the kernel SIGKILLs every other process in it. It finishes only
# once all of them have been *reaped* by their parents — and the exec'd shell's parent is us. So we
# reap `worker` as well as the container (Docker's shim does this for its container). Waiting for the
# container alone, while `worker` is left unreaped, would block forever.

# %%
container.kill()
assert worker.wait(timeout=10) == -9  # killed by the kernel when PID 1 died
assert container.wait(timeout=10) == -9
site.cleanup()
print("worker:", worker.returncode, "· container:", container.returncode)

# %% [markdown]
# | the article (Docker) | here (nsbox) |
# |---|---|
# | `docker ps` | `container` (its HTML view), `container.namespaces()` |
# | `docker exec -it ID sh`, then `ps -ef` | `container.exec(["sh", "-c", "ps -ef"])` |
# | `docker exec -d ID …` | `container.exec_popen([...])` |
# | the registry is PID 1 inside, 1945 on the host | the server is PID 1 inside, `container.pid` on the host |
# | its parent is `containerd-shim-runc-v2` (1917) | its parent is this kernel (`os.getpid()`) |
# | `docker top ID` | `container.processes()` |
# | `docker kill ID` | `container.kill()`; `wait()` for it and for what you exec'd |
#
# **Next:** [3 · PID namespace practice](03_pid_namespace.ipynb).
