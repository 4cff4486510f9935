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
# # 3 · PID namespace practice
#
# The article's second experiment builds a PID namespace by hand:
#
# ```
# $ sudo unshare --pid --fork --mount-proc /bin/bash
# # ps -ef
# UID        PID  PPID  C STIME TTY          TIME CMD
# root         1     0  0 08:16 pts/0    00:00:00 /bin/bash
# root        10     1  0 08:16 pts/0    00:00:00 ps -ef
# # sleep 1024 &
# # ps -ef
# root         1     0  0 08:16 pts/0    00:00:00 /bin/bash
# root        13     1  0 08:22 pts/0    00:00:00 sleep 1024
# root        14     1  0 08:22 pts/0    00:00:00 ps -ef
# ```
#
# > 可以看到，我们的bash进程，已经成为了1号进程，并且我们创建的sleep静默进程，此时的父进程ID为1
# >
# > *Our bash has become process number 1, and the `sleep` we started in the background has parent PID 1.*
#
# On the host the same two processes were `bash` 15805 (parent 15803, `unshare`) and `sleep` 17301
# (parent 15805). We repeat it with nsbox, then go on to what being PID 1 means: orphans, zombies,
# signals, and `init=True`.

# %%
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import nstree
from IPython.display import HTML, display

import nsbox


def status(pid: int) -> dict[str, str]:
    """/proc/PID/status as a dict."""
    return dict(line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())


def state(pid: int) -> str:
    """R, S, Z ... from /proc/PID/stat; "-" if the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "-"


def wait_until(condition: Callable[[], object], timeout: float = 10.0) -> None:
    """Poll condition() until it is true."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def ps_rows(text: str) -> list[dict[str, Any]]:
    """Parse `ps -ef` output."""
    keys = ["uid", "pid", "ppid", "c", "stime", "tty", "time", "cmd"]
    rows = [dict(zip(keys, line.split(None, 7), strict=True)) for line in text.splitlines()[1:]]
    return [{**r, "pid": int(r["pid"]), "ppid": int(r["ppid"])} for r in rows]


# %% [markdown]
# ## bash as PID 1, with its own `/proc`
#
# `pid=True, mount_proc=True` is `unshare --pid --fork --mount-proc`. We talk to the box's `bash`
# through pipes: `sh(command)` types a command and returns what it printed.

# %%
bash = nsbox.Popen(
    ["bash", "--norc", "--noprofile"],
    pid=True,
    mount_proc=True,
    stdin=subprocess.PIPE,
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
)


def sh(command: str) -> str:
    """Run `command` in the box's bash; print and return its output."""
    assert bash.stdin and bash.stdout  # the pipes asked for above
    bash.stdin.write(f"{command}\necho __done__\n")
    bash.stdin.flush()
    lines = []
    for line in bash.stdout:
        if line == "__done__\n":
            break
        lines.append(line)
    print(f"# {command}\n" + "".join(lines), end="")
    return "".join(lines)


rows = ps_rows(sh("ps -ef"))
assert rows[0]["pid"] == 1 and rows[0]["ppid"] == 0 and rows[0]["cmd"].startswith("bash")
assert rows[1]["cmd"] == "ps -ef" and rows[1]["ppid"] == 1

# %%
sh("sleep 1024 &")
wait_until(lambda: any(p.command == "sleep 1024" for p in bash.processes()))
rows = ps_rows(sh("ps -ef"))
sleep = next(r for r in rows if r["cmd"] == "sleep 1024")
assert sleep["ppid"] == 1  # the article's point: the parent of our sleep is PID 1

# %% [markdown]
# ## From the host
#
# The article greps the host's `ps -ef` for `sleep` and then for bash's PID. We ask the box which
# host PID its `sleep` has, and ask the host's `ps` about both:

# %%
sleep_host = bash.host_pid(sleep["pid"])
print(
    subprocess.run(
        ["ps", "-o", "user,pid,ppid,args", "-p", f"{bash.pid},{sleep_host}"], capture_output=True, text=True
    ).stdout
)

assert bash.pid != 1 and sleep_host != sleep["pid"]  # other PIDs on the host ...
assert int(status(sleep_host)["PPid"]) == bash.pid  # ... with the parent chain intact
assert int(status(bash.pid)["PPid"]) == os.getpid()
assert nsbox.nspid(sleep_host) == [sleep_host, sleep["pid"]]

cells = [
    ("bash", "1", "15805", "1", bash.pid),
    ("sleep 1024", "13", "17301", sleep["pid"], sleep_host),
    ("bash's parent", "— (0)", "15803 <code>unshare</code>", "— (0)", f"{os.getpid()} (this kernel)"),
]
head = "".join(f"<th>{h}</th>" for h in ["", "article, inside", "article, host", "here, inside", "here, host"])
body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in cells)
display(HTML(f"<table><tr>{head}</tr>{body}</table>"))

# %% [markdown]
# Unlike `unshare --fork`, there is no waiting `unshare` between our kernel and `bash`: nsbox's clone
# made `bash` directly, so the kernel is bash's parent.
#
# ## Orphans are adopted by PID 1 — of their own namespace
#
# `(sleep 1025 &)` starts `sleep` from a subshell that exits at once. The orphaned `sleep` is adopted
# by the init of *its* PID namespace — bash — not by the host's init.

# %%
sh("(sleep 1025 &)")
wait_until(lambda: any(p.command == "sleep 1025" for p in bash.processes()))
rows = ps_rows(sh("ps -ef"))
orphan = next(r for r in rows if r["cmd"] == "sleep 1025")
assert orphan["ppid"] == 1
assert int(status(bash.host_pid(orphan["pid"]))["PPid"]) == bash.pid  # on the host: adopted by bash too

table = bash.processes()
display(table)
nstree.draw(table, title="unshare --pid --fork --mount-proc bash; sleep 1024 &; (sleep 1025 &)")
plt.show()

# %% [markdown]
# ## Zombies: PID 1 must reap
#
# A process that exits stays a *zombie* until its parent collects its exit status with `wait`.
# Orphans' parent is PID 1, so PID 1 must reap them — bash does, but most programs never call `wait`
# for children they did not start. Here the box's PID 1 ends up being `sleep 60`, after a shell
# left an orphan behind that exits after 0.2 seconds:

# %%
ORPHAN = 'sh -c "sleep 0.2 &"; exec sleep 60'  # leave an orphan, then become `sleep 60`

noinit = nsbox.Popen(["sh", "-c", ORPHAN], pid=True, mount_proc=True)


def orphan_is_a_zombie() -> bool:
    """PID 1 has become `sleep 60`, and the orphan has exited."""
    table = noinit.processes()
    return table[0].command == "sleep 60" and any(state(p.host_pid) == "Z" for p in table)


wait_until(orphan_is_a_zombie)

print(noinit.exec(["ps", "-ef"], capture_output=True, text=True).stdout)
table = noinit.processes()
zombies = [p for p in table if state(p.host_pid) == "Z"]
assert len(zombies) == 1 and zombies[0].ppid == 1  # adopted by PID 1, which never reaps it

title = "PID 1 is `sleep 60`: the orphan stays a zombie"
nstree.draw(table, zombies=[p.host_pid for p in zombies], title=title)
plt.show()

# %% [markdown]
# A zombie holds a PID until reaped; a container whose main program does not reap fills up with them.
# That is why Docker has `docker run --init` (tini), and nsbox has **`init=True`**: PID 1 is then a
# tiny init that starts the command as PID 2, reaps every orphan, forwards signals to the command,
# and exits with its status.

# %%
withinit = nsbox.Popen(["sh", "-c", ORPHAN], init=True, mount_proc=True)


def settled() -> bool:
    """Two looks 0.3 s apart show only init and `sleep 60`: the orphan has come and gone."""
    first = [p.command for p in withinit.processes()]
    time.sleep(0.3)
    return first == [p.command for p in withinit.processes()] == ["nsbox-init", "sleep 60"]


wait_until(settled)

print(withinit.exec(["ps", "-ef"], capture_output=True, text=True).stdout)
table = withinit.processes()
display(table)
assert [(p.pid, p.ppid) for p in table] == [(1, 0), (2, 1)]
assert all(state(p.host_pid) != "Z" for p in table)  # the orphan came and went: reaped by nsbox-init

# %% [markdown]
# ## Signals: the kernel protects PID 1
#
# PID 1 of a namespace receives only the signals it has installed a handler for — even when they come
# from the host. `SIGKILL` and `SIGSTOP` from the parent namespace are the exceptions. `sleep` has
# no handler for `SIGTERM`, so `terminate()` does nothing to it; nsbox's init forwards `SIGTERM` to
# its command, whose default action is to die.

# %%
noinit.terminate()
try:
    noinit.wait(timeout=1)
except subprocess.TimeoutExpired:
    print("sleep as PID 1: still running one second after SIGTERM")
assert noinit.poll() is None

noinit.kill()
assert noinit.wait(timeout=10) == -signal.SIGKILL
print("after SIGKILL:", noinit.returncode)

withinit.terminate()
assert withinit.wait(timeout=10) == 128 + signal.SIGTERM  # init's exit status: its command died of SIGTERM
print("with init=True, after SIGTERM:", withinit.returncode, "(128 + SIGTERM)")

# %% [markdown]
# Our `bash` is PID 1 without a `SIGTERM` handler too (a non-interactive bash keeps the default), so
# it ignores `terminate()` as well.
#
# ## When PID 1 dies, the namespace dies
#
# Killing `bash` takes both `sleep`s with it: the kernel SIGKILLs every process left in a PID
# namespace whose init has exited.

# %%
members = [p.host_pid for p in bash.processes()]
bash.terminate()
time.sleep(0.5)
assert bash.poll() is None  # SIGTERM ignored by PID 1

bash.kill()
bash.communicate(timeout=10)  # reap it and close the pipes
assert bash.returncode == -signal.SIGKILL
gone = [pid for pid in members if not Path(f"/proc/{pid}").exists()]
print(f"bash: {bash.returncode}; host PIDs {members}: {len(gone)} of {len(members)} gone")
assert gone == members

# %% [markdown]
# | PID 1 … | without an init (`pid=True`) | with `init=True` |
# |---|---|---|
# | is | your command | `nsbox-init`; your command is PID 2 |
# | orphans | adopted by your command; zombies unless it `wait`s | adopted and reaped by init |
# | `terminate()` (SIGTERM) | ignored unless your command handles it | forwarded; exit status 128 + 15 |
# | `kill()` (SIGKILL) | ends the namespace | ends the namespace |
#
# **Next:** [4 · The other namespaces](04_other_namespaces.ipynb).
