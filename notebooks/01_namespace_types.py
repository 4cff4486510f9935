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
# # 1 · The namespace types
#
# > Docker容器本质上是一个带有不同的namespace参数的进程，
# > 正是这些namespace的存在，容器内部就只能看到自己当前namespace限定的资源、文件、设备、状态、配置等。
# >
# > *A Docker container is, at heart, a process with different namespace parameters. Because these
# > namespaces exist, the inside of a container sees only the resources, files, devices, state and
# > configuration its namespaces allow.*
# > — 《5分钟Docker容器原理 · namespace 观察和实践篇》 ("Docker container principles in five minutes:
# > observing and practising namespaces")
#
# The article lists six namespace kinds — the ones `unshare --help` offered on its CentOS 7 kernel
# (3.10). Kernels since have two more: **cgroup** (4.6) and **time** (5.6). This notebook builds the
# table from the running kernel instead of copying it: which kinds exist, which namespace this
# process is in, and which ones a box gets of its own. Then it maps nsbox's options onto `unshare`'s
# flags, and shows why `unshare` needs `--fork` and nsbox does not.
#
# Run the notebooks in order; each one cleans up every process it starts.

# %%
import os
import re
import subprocess
import time
from collections.abc import Callable

from IPython.display import HTML, display

import nsbox

print(f"kernel {os.uname().release} · nsbox {nsbox.__version__} · uid {os.getuid()}")

# %% [markdown]
# ## A namespace is a file with an inode number
#
# Every process is in exactly one namespace of each kind. `/proc/PID/ns/KIND` is a link that names
# it as `kind:[inode]`; two processes share a namespace exactly when the numbers are equal.
# `nsbox.namespaces(pid)` reads these links (for this process when `pid` is omitted).

# %%
for kind in sorted(os.listdir("/proc/self/ns")):
    print(f"/proc/self/ns/{kind:18} -> {os.readlink(f'/proc/self/ns/{kind}')}")
host_ns = nsbox.namespaces()
host_ns

# %% [markdown]
# ## A box with all eight
#
# A box is a process started in new namespaces. This one asks for every kind; `sleep` keeps it
# alive while we look. In Jupyter a box shows its namespaces next to ours and its processes.

# %%
box = nsbox.Popen(
    ["sleep", "60"], pid=True, mount=True, uts=True, ipc=True, net=True, user=True, cgroup=True, time=True
)
box_ns = box.namespaces()
box

# %% [markdown]
# Now the table: each kind, what it isolates, the kernel that introduced it (the article's table plus
# the two newer kinds), whether the running kernel has it, and our namespace next to the box's.

# %%
KINDS = [  # /proc name, what it isolates, kernel version that introduced it, nsbox option, unshare flag
    ("mnt", "mount points (the file system tree)", "2.4.19", "mount=True", "--mount"),
    ("ipc", "System V IPC, POSIX message queues", "2.6.19", "ipc=True", "--ipc"),
    ("uts", "hostname and NIS domain name", "2.6.19", 'uts=True / hostname="…"', "--uts"),
    ("pid", "process IDs", "2.6.24", "pid=True", "--pid --fork"),
    ("net", "network devices, addresses, ports, routes, firewall", "2.6.29", "net=True", "--net"),
    ("user", "user and group IDs, capabilities", "3.8", "user=True (automatic without root)", "--user"),
    ("cgroup", "the cgroup root directory", "4.6", "cgroup=True", "--cgroup"),
    ("time", "the monotonic and boot-time clocks", "5.6", "time=True", "--time"),
]


def version(release: str) -> tuple[int, ...]:
    """'6.18.44-fc' -> (6, 18, 44)."""
    numbers = re.match(r"[0-9.]+", release)
    assert numbers, release
    return tuple(int(part) for part in numbers.group().strip(".").split("."))


running = version(os.uname().release)
rows = []
for kind, isolates, since, _option, _flag in KINDS:
    assert running >= version(since) and kind in host_ns, f"this kernel should have the {kind} namespace"
    own = box_ns[kind] != host_ns[kind]
    rows.append(
        f"<tr><td><b>{kind}</b></td><td>{isolates}</td><td>{since}</td><td>yes</td>"
        f"<td>{host_ns[kind]}</td><td>{box_ns[kind]}</td>"
        f"<td style='color:{'green' if own else 'gray'}'>{'own' if own else 'shared'}</td></tr>"
    )
head = "".join(f"<th>{h}</th>" for h in ["kind", "isolates", "since Linux", "here", "this process", "the box", ""])
display(HTML(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"))

assert all(box_ns[kind] != host_ns[kind] for kind, *_ in KINDS), "the box has its own namespace of every kind"

# %% [markdown]
# `/proc/PID/ns` also has `pid_for_children` and `time_for_children`. A process never changes its
# own PID or time namespace: `unshare(CLONE_NEWPID)` only decides where its *children* will be. The
# box's `sleep` was created directly in its new PID namespace (one `clone` with `CLONE_NEWPID`), so
# both links agree; for time, nsbox calls `unshare(CLONE_NEWTIME)` in the child and the kernel moves
# it into the new time namespace when it `exec`s.

# %%
for kind in ["pid", "pid_for_children", "time", "time_for_children"]:
    print(f"{kind:18} host {host_ns[kind]}   box {box_ns[kind]}")
assert box_ns["pid"] == box_ns["pid_for_children"] and box_ns["time"] == box_ns["time_for_children"]

box.kill()  # `sleep` is PID 1 of its namespace and has no SIGTERM handler: terminate() would do nothing
assert box.wait(timeout=10) == -9

# %% [markdown]
# ## nsbox's options and `unshare`'s flags
#
# The article points to `unshare --help`. nsbox takes the same choices as keyword arguments of
# `nsbox.run` / `nsbox.Popen` (which otherwise behave exactly like `subprocess.run` / `subprocess.Popen`):
#
# | `unshare` | nsbox | notes |
# |---|---|---|
# | `-m`, `--mount` | `mount=True` | new mount namespace; `/` is made private first (see `propagation`) |
# | `-u`, `--uts` | `uts=True` | `hostname="name"` implies it and sets the name |
# | `-i`, `--ipc` | `ipc=True` | |
# | `-n`, `--net` | `net=True` | nsbox also brings `lo` up |
# | `-p`, `--pid` | `pid=True` | the command is PID 1 — no `--fork` needed (below) |
# | `-U`, `--user` | `user=True` | default `None`: automatic when not root and another namespace is asked for |
# | `-C`, `--cgroup` | `cgroup=True` | |
# | `-T`, `--time` | `time=True` | `monotonic_offset=`, `boottime_offset=` ≙ `--monotonic`, `--boottime` |
# | `-f`, `--fork` | *(always)* | the clone's child is the command itself |
# | `--mount-proc` | `mount_proc=True` | implies `mount` |
# | `-r`, `--map-root-user` | the default map in a user namespace | `uid_map=[(0, os.getuid(), 1)]` |
# | `--map-users`, `--map-groups` | `uid_map=`, `gid_map=` | `[(inside, outside, count), …]` |
# | `--propagation private\|slave\|shared\|unchanged` | `propagation="private"` (default) … | on `/` |
# | `-s`, `--setgroups allow\|deny` | `setgroups="deny"` (default) / `"allow"` | |
# | `--kill-child` | *(always)* | the box is SIGKILLed when the process that started it dies |

# %% [markdown]
# ### Why `unshare` needs `--fork`
#
# `unshare --pid` calls `unshare(CLONE_NEWPID)` and then `exec`s the command. That process stays where
# it is — its own PID never changes — and only its **first child** becomes PID 1 of the new namespace.
# When that child exits, the namespace has lost its init and no further process can be created in it.

# %%
script = r'echo "sh is PID $$"; sh -c "echo first child is PID \$\$"; sh -c "echo second child is PID \$\$"'
results = {}
for flags in (["--pid"], ["--pid", "--fork"]):
    r = subprocess.run(["unshare", *flags, "sh", "-c", script], capture_output=True, text=True)
    results[" ".join(flags)] = r
    print(f"$ unshare {' '.join(flags)} sh -c '…'        (exit status {r.returncode})")
    print(r.stdout + r.stderr)

without, with_fork = results["--pid"], results["--pid --fork"]
assert "first child is PID 1" in without.stdout and without.returncode != 0  # the 2nd fork fails
assert "sh is PID 1" in with_fork.stdout and with_fork.returncode == 0

# %% [markdown]
# nsbox makes **one** `clone(CLONE_NEWPID | CLONE_NEWNS | …)`: the child is created inside the new
# namespaces and `exec`s the command, which is therefore PID 1 with no waiting `unshare` process in
# between. Here is the article's experiment both ways:

# %%
via_unshare = subprocess.run(
    ["unshare", "--pid", "--fork", "--mount-proc", "ps", "-ef"], capture_output=True, text=True, check=True
)
via_nsbox = nsbox.run(["ps", "-ef"], pid=True, mount_proc=True, capture_output=True, text=True, check=True)
print("$ unshare --pid --fork --mount-proc ps -ef\n" + via_unshare.stdout)
print('>>> nsbox.run(["ps", "-ef"], pid=True, mount_proc=True)\n' + via_nsbox.stdout)

for out in (via_unshare.stdout, via_nsbox.stdout):
    (only,) = out.splitlines()[1:]  # ps sees nothing but itself ...
    assert only.split()[1] == "1" and only.endswith("ps -ef")  # ... as PID 1


# %% [markdown]
# The difference is cost as much as shape: `unshare` is a program to start (and a process to wait
# in), nsbox one system call from the process you are in. A rough comparison on this machine:


# %%
def per_run(fn: Callable[[], object], n: int = 30) -> float:
    """Milliseconds per call of fn, over n calls."""
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1000


timings = {
    "subprocess.run(['true'])  (no namespaces)": per_run(lambda: subprocess.run(["true"], check=True)),
    "subprocess.run(['unshare', '--pid', '--fork', '--mount-proc', 'true'])": per_run(
        lambda: subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"], check=True)
    ),
    "nsbox.run(['true'], pid=True, mount_proc=True)": per_run(
        lambda: nsbox.run(["true"], pid=True, mount_proc=True, check=True)
    ),
}
timing_rows = "".join(f"<tr><td><code>{k}</code></td><td>{v:.2f} ms</td></tr>" for k, v in timings.items())
display(HTML(f"<table>{timing_rows}</table>"))

# %% [markdown]
# **Next:** [2 · Observing a container](02_observing_a_container.ipynb) — the article's `docker exec`
# experiment, with a box standing in for the container.
