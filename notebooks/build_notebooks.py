"""Write the notebooks from the cells below, then run them and save them with their outputs.

Usage (as root, from the repository, with nsbox and the ``notebook`` extra installed)::

    python notebooks/build_notebooks.py            # write, execute, save with outputs
    python notebooks/build_notebooks.py --no-run   # only write the cells

The notebooks are generated so that their text lives in one reviewable place; ``tests/test_notebooks.py``
checks that the committed notebooks have exactly these cells and that they still run.
"""

# ruff: noqa: RUF001  (the article is quoted in Chinese, with its full-width commas)

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

import nbformat
import nbrun
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}


def md(text: str) -> nbformat.NotebookNode:
    """A markdown cell."""
    return new_markdown_cell(textwrap.dedent(text).strip("\n"))


def code(text: str) -> nbformat.NotebookNode:
    """A code cell."""
    return new_code_cell(textwrap.dedent(text).strip("\n"))


# ------------------------------------------------------------------------------------------------
# 1. The namespace types
# ------------------------------------------------------------------------------------------------

NB1 = [
    md(
        """
        # 1 · The namespace types

        > Docker容器本质上是一个带有不同的namespace参数的进程，
        > 正是这些namespace的存在，容器内部就只能看到自己当前namespace限定的资源、文件、设备、状态、配置等。
        >
        > *A Docker container is, at heart, a process with different namespace parameters. Because these
        > namespaces exist, the inside of a container sees only the resources, files, devices, state and
        > configuration its namespaces allow.*
        > — 《5分钟Docker容器原理 · namespace 观察和实践篇》 ("Docker container principles in five minutes:
        > observing and practising namespaces")

        The article lists six namespace kinds — the ones `unshare --help` offered on its CentOS 7 kernel
        (3.10). Kernels since have two more: **cgroup** (4.6) and **time** (5.6). This notebook builds the
        table from the running kernel instead of copying it: which kinds exist, which namespace this
        process is in, and which ones a box gets of its own. Then it maps nsbox's options onto `unshare`'s
        flags, and shows why `unshare` needs `--fork` and nsbox does not.

        Run the notebooks in order; each one cleans up every process it starts.
        """
    ),
    code(
        """
        import os
        import re
        import subprocess
        import time

        from IPython.display import HTML, display

        import nsbox

        print(f"kernel {os.uname().release} · nsbox {nsbox.__version__} · uid {os.getuid()}")
        """
    ),
    md(
        """
        ## A namespace is a file with an inode number

        Every process is in exactly one namespace of each kind. `/proc/PID/ns/KIND` is a link that names
        it as `kind:[inode]`; two processes share a namespace exactly when the numbers are equal.
        `nsbox.namespaces(pid)` reads these links (for this process when `pid` is omitted).
        """
    ),
    code(
        """
        for kind in sorted(os.listdir("/proc/self/ns")):
            print(f"/proc/self/ns/{kind:18} -> {os.readlink(f'/proc/self/ns/{kind}')}")
        host_ns = nsbox.namespaces()
        host_ns
        """
    ),
    md(
        """
        ## A box with all eight

        A box is a process started in new namespaces. This one asks for every kind; `sleep` keeps it
        alive while we look. In Jupyter a box shows its namespaces next to ours and its processes.
        """
    ),
    code(
        """
        box = nsbox.Popen(
            ["sleep", "60"], pid=True, mount=True, uts=True, ipc=True, net=True, user=True, cgroup=True, time=True
        )
        box_ns = box.namespaces()
        box
        """
    ),
    md(
        """
        Now the table: each kind, what it isolates, the kernel that introduced it (the article's table plus
        the two newer kinds), whether the running kernel has it, and our namespace next to the box's.
        """
    ),
    code(
        """
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


        def version(release):
            \"\"\"'6.18.44-fc' -> (6, 18, 44).\"\"\"
            return tuple(int(part) for part in re.match(r"[0-9.]+", release).group().strip(".").split("."))


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
        head = "".join(
            f"<th>{h}</th>" for h in ["kind", "isolates", "since Linux", "here", "this process", "the box", ""]
        )
        display(HTML(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"))

        assert all(box_ns[kind] != host_ns[kind] for kind, *_ in KINDS), "the box has its own namespace of every kind"
        """
    ),
    md(
        """
        `/proc/PID/ns` also has `pid_for_children` and `time_for_children`. A process never changes its
        own PID or time namespace: `unshare(CLONE_NEWPID)` only decides where its *children* will be. The
        box's `sleep` was created directly in its new PID namespace (one `clone` with `CLONE_NEWPID`), so
        both links agree; for time, nsbox calls `unshare(CLONE_NEWTIME)` in the child and the kernel moves
        it into the new time namespace when it `exec`s.
        """
    ),
    code(
        """
        for kind in ["pid", "pid_for_children", "time", "time_for_children"]:
            print(f"{kind:18} host {host_ns[kind]}   box {box_ns[kind]}")
        assert box_ns["pid"] == box_ns["pid_for_children"] and box_ns["time"] == box_ns["time_for_children"]

        box.kill()  # `sleep` is PID 1 of its namespace and has no SIGTERM handler: terminate() would do nothing
        assert box.wait(timeout=10) == -9
        """
    ),
    md(
        """
        ## nsbox's options and `unshare`'s flags

        The article points to `unshare --help`. nsbox takes the same choices as keyword arguments of
        `nsbox.run` / `nsbox.Popen` (which otherwise behave exactly like `subprocess.run` / `subprocess.Popen`):

        | `unshare` | nsbox | notes |
        |---|---|---|
        | `-m`, `--mount` | `mount=True` | new mount namespace; `/` is made private first (see `propagation`) |
        | `-u`, `--uts` | `uts=True` | `hostname="name"` implies it and sets the name |
        | `-i`, `--ipc` | `ipc=True` | |
        | `-n`, `--net` | `net=True` | nsbox also brings `lo` up |
        | `-p`, `--pid` | `pid=True` | the command is PID 1 — no `--fork` needed (below) |
        | `-U`, `--user` | `user=True` | default `None`: automatic when not root and another namespace is asked for |
        | `-C`, `--cgroup` | `cgroup=True` | |
        | `-T`, `--time` | `time=True` | `monotonic_offset=`, `boottime_offset=` ≙ `--monotonic`, `--boottime` |
        | `-f`, `--fork` | *(always)* | the clone's child is the command itself |
        | `--mount-proc` | `mount_proc=True` | implies `mount` |
        | `-r`, `--map-root-user` | the default map in a user namespace | `uid_map=[(0, os.getuid(), 1)]` |
        | `--map-users`, `--map-groups` | `uid_map=`, `gid_map=` | `[(inside, outside, count), …]` |
        | `--propagation private\\|slave\\|shared\\|unchanged` | `propagation="private"` (default) … | on `/` |
        | `-s`, `--setgroups allow\\|deny` | `setgroups="deny"` (default) / `"allow"` | |
        | `--kill-child` | *(always)* | the box is SIGKILLed when the process that started it dies |
        """
    ),
    md(
        """
        ### Why `unshare` needs `--fork`

        `unshare --pid` calls `unshare(CLONE_NEWPID)` and then `exec`s the command. That process stays where
        it is — its own PID never changes — and only its **first child** becomes PID 1 of the new namespace.
        When that child exits, the namespace has lost its init and no further process can be created in it.
        """
    ),
    code(
        r"""
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
        """
    ),
    md(
        """
        nsbox makes **one** `clone(CLONE_NEWPID | CLONE_NEWNS | …)`: the child is created inside the new
        namespaces and `exec`s the command, which is therefore PID 1 with no waiting `unshare` process in
        between. Here is the article's experiment both ways:
        """
    ),
    code(
        """
        via_unshare = subprocess.run(
            ["unshare", "--pid", "--fork", "--mount-proc", "ps", "-ef"], capture_output=True, text=True, check=True
        )
        via_nsbox = nsbox.run(["ps", "-ef"], pid=True, mount_proc=True, capture_output=True, text=True, check=True)
        print("$ unshare --pid --fork --mount-proc ps -ef\\n" + via_unshare.stdout)
        print('>>> nsbox.run(["ps", "-ef"], pid=True, mount_proc=True)\\n' + via_nsbox.stdout)

        for out in (via_unshare.stdout, via_nsbox.stdout):
            (only,) = out.splitlines()[1:]  # ps sees nothing but itself ...
            assert only.split()[1] == "1" and only.endswith("ps -ef")  # ... as PID 1
        """
    ),
    md(
        """
        The difference is cost as much as shape: `unshare` is a program to start (and a process to wait
        in), nsbox one system call from the process you are in. A rough comparison on this machine:
        """
    ),
    code(
        """
        def per_run(fn, n=30):
            \"\"\"Milliseconds per call of fn, over n calls.\"\"\"
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
        rows = "".join(f"<tr><td><code>{k}</code></td><td>{v:.2f} ms</td></tr>" for k, v in timings.items())
        display(HTML(f"<table>{rows}</table>"))
        """
    ),
    md(
        """
        **Next:** [2 · Observing a container](02_observing_a_container.ipynb) — the article's `docker exec`
        experiment, with a box standing in for the container.
        """
    ),
]


# ------------------------------------------------------------------------------------------------
# 2. Observing a container
# ------------------------------------------------------------------------------------------------

NB2 = [
    md(
        """
        # 2 · Observing a container's PID namespace

        The article takes a running Docker container (a private registry), enters it and lists its processes:

        ```
        $ docker exec -it 98cb5c25871b sh
        / # ps -ef
        PID   USER     TIME  COMMAND
            1 root      0:00 registry serve /etc/docker/registry/config.yml
           11 root      0:00 sh
           18 root      0:00 ps -ef
        ```

        then looks from the host:

        ```
        root      1917     1  ... /usr/bin/containerd-shim-runc-v2 -namespace moby -id 98cb5c25871b...
        root      1945  1917  ... registry serve /etc/docker/registry/config.yml
        ```

        > 可以看到registry进程在宿主机中的PID是1945，而且它的父进程ID正是容器进程的PID1917。这正是PID namespace的作用。
        >
        > *The registry process is PID 1945 on the host, and its parent is the container's process, PID 1917
        > [containerd-shim]. This is what the PID namespace does.*

        We do the same without Docker. Our "container" is a real service — Python's `http.server`, bound
        to `127.0.0.1` — started by `nsbox.Popen` in its own PID namespace (with a fresh `/proc`), mount,
        network, UTS and IPC namespaces: what Docker gives a container, minus the image and the cgroup limits.
        """
    ),
    code(
        """
        import os
        import socket
        import subprocess
        import sys
        import tempfile
        import time
        import urllib.error
        import urllib.request
        from pathlib import Path

        import matplotlib.pyplot as plt
        import nstree  # the process-tree picture (nstree.py, next to this notebook)

        import nsbox


        def status(pid):
            \"\"\"/proc/PID/status as a dict.\"\"\"
            return dict(line.split(":\\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())


        def wait_until(condition, timeout=10.0):
            \"\"\"Poll condition() until it is true.\"\"\"
            deadline = time.monotonic() + timeout
            while not condition():
                assert time.monotonic() < deadline, "timed out"
                time.sleep(0.05)
        """
    ),
    md(
        """
        ## Start the container

        The site it serves is a temporary directory with one page. The port is one that nothing on the
        host listens on, so that "the host cannot reach it" below means what it says.
        """
    ),
    code(
        """
        site = tempfile.TemporaryDirectory(prefix="nsbox-site-")
        Path(site.name, "index.html").write_text("<h1>hello from inside the box</h1>\\n")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            PORT = s.getsockname()[1]

        container = nsbox.Popen(
            [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", site.name, str(PORT)],
            pid=True, mount_proc=True, net=True, uts=True, ipc=True, hostname="private-registry",
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        container  # ≈ docker ps: what it runs, its namespaces next to ours, its processes
        """
    ),
    md(
        """
        ## `docker exec … sh`, then `ps -ef`

        `container.exec(args)` is `docker exec` (or `nsenter --all`): it joins every namespace of the box,
        then forks, so the command really is inside the PID namespace and sees the box's `/proc`. As in
        the article, we run a shell and `ps -ef` from it.
        """
    ),
    code(
        """
        r = container.exec(["sh", "-c", "ps -ef; true"], capture_output=True, text=True, check=True)
        print("/ # ps -ef\\n" + r.stdout)

        keys = ["uid", "pid", "ppid", "c", "stime", "tty", "time", "cmd"]
        inside = [dict(zip(keys, line.split(None, 7), strict=True)) for line in r.stdout.splitlines()[1:]]
        pid1 = next(p for p in inside if p["pid"] == "1")
        assert "http.server" in pid1["cmd"] and pid1["ppid"] == "0"  # our server is PID 1, its parent is not in here
        shell = next(p for p in inside if p["cmd"] == "sh -c ps -ef; true")
        assert shell["ppid"] == "0"  # the exec'd shell came from outside too, like docker exec's sh
        """
    ),
    md(
        """
        Inside, the server is **PID 1**, as the registry was. The shell we exec'd has a small PID and
        **PPID 0**: its parent is outside the namespace, so there is no PID for it in here (in Docker,
        the exec'd `sh`'s parent is likewise outside: runc, then the shim).

        ## The same process from the host

        `container.pid` is the host's PID of the box's PID 1 — the article's 1945. `nsbox.nspid(pid)` reads
        the `NSpid` line of `/proc/PID/status`: the process's PID in each namespace from ours down to its own.
        """
    ),
    code(
        """
        print(f"container.pid = {container.pid}    NSpid = {nsbox.nspid(container.pid)}")
        assert container.pid != 1 and nsbox.nspid(container.pid) == [container.pid, 1]

        parent = int(status(container.pid)["PPid"])
        print(subprocess.run(
            ["ps", "-ww", "-o", "user,pid,ppid,args", "-p", f"{parent},{container.pid}"], capture_output=True, text=True
        ).stdout)
        assert parent == os.getpid()  # the parent is this Jupyter kernel
        """
    ),
    md(
        """
        The parent is **this notebook's kernel**. Where Docker has containerd start a `containerd-shim`
        per container to be the container's parent (1917 above), nsbox clones the box from one of its own
        threads in the kernel process; a thread's children belong to its process, so the kernel is the
        parent. Its threads:
        """
    ),
    code(
        """
        threads = {int(t): Path(f"/proc/self/task/{t}/comm").read_text().strip() for t in os.listdir("/proc/self/task")}
        print("the kernel's threads:", ", ".join(sorted(set(threads.values()))))
        """
    ),
    md(
        """
        ## Both views joined: `container.processes()`

        `processes()` reads `/proc` (not `ps`) and puts each process's host PID and inside PID on one row —
        what `docker top` shows, plus the inside column.
        """
    ),
    code(
        """
        table = container.processes()
        (first,) = table
        assert (first.pid, first.ppid, first.host_pid, first.host_ppid) == (1, 0, container.pid, os.getpid())
        table
        """
    ),
    md(
        """
        A container usually runs more than its main process: `docker exec -d` leaves one running. Here a
        shell that starts a `sleep` and waits for it, started with `container.exec_popen` (the `Popen`
        form of `exec`), then the picture: the host's view on the left (host PIDs, our kernel and its
        parent above the box; the dashed box is the PID namespace), the inside view on the right.
        """
    ),
    code(
        """
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
        """
    ),
    md(
        """
        ## Its network: reachable from inside only

        The box has its own network namespace: its own `lo`, its own `127.0.0.1`, its own ports. A request
        from inside the box (curl may not be installed, Python is) reaches the server:
        """
    ),
    code(
        """
        URL = f"http://127.0.0.1:{PORT}/"
        FETCH = "import sys, urllib.request as u; r = u.urlopen(sys.argv[1]); print(r.status, r.read().decode())"


        def fetch_inside():
            \"\"\"GET URL from inside the box, with Python (curl may not be installed).\"\"\"
            return container.exec([sys.executable, "-c", FETCH, URL], capture_output=True, text=True)


        wait_until(lambda: fetch_inside().returncode == 0)  # the server may still be starting
        r = fetch_inside()
        print(f"inside the box: GET {URL} ->", r.stdout)
        assert r.stdout.startswith("200") and "hello from inside the box" in r.stdout

        print(container.exec(["ip", "-brief", "address"], capture_output=True, text=True).stdout)
        print("hostname inside:", container.exec(["hostname"], capture_output=True, text=True).stdout.strip(),
              "· on the host:", socket.gethostname())
        """
    ),
    md("The same URL from the host is another machine's loopback, where nothing listens on that port:"),
    code(
        """
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
        """
    ),
    md(
        """
        To publish it, Docker connects the container's network namespace to the host with a virtual
        Ethernet pair and NAT (the article's `0.0.0.0:5000->5000/tcp`); that needs privileges and is
        beyond this notebook.

        ## Stopping the container

        Killing PID 1 ends the namespace: the kernel SIGKILLs every other process in it. It finishes only
        once all of them have been *reaped* by their parents — and the exec'd shell's parent is us. So we
        reap `worker` as well as the container (Docker's shim does this for its container). Waiting for the
        container alone, while `worker` is left unreaped, would block forever.
        """
    ),
    code(
        """
        container.kill()
        assert worker.wait(timeout=10) == -9  # killed by the kernel when PID 1 died
        assert container.wait(timeout=10) == -9
        site.cleanup()
        print("worker:", worker.returncode, "· container:", container.returncode)
        """
    ),
    md(
        """
        | the article (Docker) | here (nsbox) |
        |---|---|
        | `docker ps` | `container` (its HTML view), `container.namespaces()` |
        | `docker exec -it ID sh`, then `ps -ef` | `container.exec(["sh", "-c", "ps -ef"])` |
        | `docker exec -d ID …` | `container.exec_popen([...])` |
        | the registry is PID 1 inside, 1945 on the host | the server is PID 1 inside, `container.pid` on the host |
        | its parent is `containerd-shim-runc-v2` (1917) | its parent is this kernel (`os.getpid()`) |
        | `docker top ID` | `container.processes()` |
        | `docker kill ID` | `container.kill()`; `wait()` for it and for what you exec'd |

        **Next:** [3 · PID namespace practice](03_pid_namespace.ipynb).
        """
    ),
]


# ------------------------------------------------------------------------------------------------
# 3. PID namespace practice
# ------------------------------------------------------------------------------------------------

NB3 = [
    md(
        """
        # 3 · PID namespace practice

        The article's second experiment builds a PID namespace by hand:

        ```
        $ sudo unshare --pid --fork --mount-proc /bin/bash
        # ps -ef
        UID        PID  PPID  C STIME TTY          TIME CMD
        root         1     0  0 08:16 pts/0    00:00:00 /bin/bash
        root        10     1  0 08:16 pts/0    00:00:00 ps -ef
        # sleep 1024 &
        # ps -ef
        root         1     0  0 08:16 pts/0    00:00:00 /bin/bash
        root        13     1  0 08:22 pts/0    00:00:00 sleep 1024
        root        14     1  0 08:22 pts/0    00:00:00 ps -ef
        ```

        > 可以看到，我们的bash进程，已经成为了1号进程，并且我们创建的sleep静默进程，此时的父进程ID为1
        >
        > *Our bash has become process number 1, and the `sleep` we started in the background has parent PID 1.*

        On the host the same two processes were `bash` 15805 (parent 15803, `unshare`) and `sleep` 17301
        (parent 15805). We repeat it with nsbox, then go on to what being PID 1 means: orphans, zombies,
        signals, and `init=True`.
        """
    ),
    code(
        """
        import os
        import signal
        import subprocess
        import time
        from pathlib import Path

        import matplotlib.pyplot as plt
        import nstree
        from IPython.display import HTML, display

        import nsbox


        def status(pid):
            \"\"\"/proc/PID/status as a dict.\"\"\"
            return dict(line.split(":\\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())


        def state(pid):
            \"\"\"R, S, Z ... from /proc/PID/stat; "-" if the process is gone.\"\"\"
            try:
                return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except FileNotFoundError:
                return "-"


        def wait_until(condition, timeout=10.0):
            \"\"\"Poll condition() until it is true.\"\"\"
            deadline = time.monotonic() + timeout
            while not condition():
                assert time.monotonic() < deadline, "timed out"
                time.sleep(0.05)


        def ps_rows(text):
            \"\"\"Parse `ps -ef` output.\"\"\"
            keys = ["uid", "pid", "ppid", "c", "stime", "tty", "time", "cmd"]
            rows = [dict(zip(keys, line.split(None, 7), strict=True)) for line in text.splitlines()[1:]]
            return [{**r, "pid": int(r["pid"]), "ppid": int(r["ppid"])} for r in rows]
        """
    ),
    md(
        """
        ## bash as PID 1, with its own `/proc`

        `pid=True, mount_proc=True` is `unshare --pid --fork --mount-proc`. We talk to the box's `bash`
        through pipes: `sh(command)` types a command and returns what it printed.
        """
    ),
    code(
        """
        bash = nsbox.Popen(
            ["bash", "--norc", "--noprofile"], pid=True, mount_proc=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )


        def sh(command):
            \"\"\"Run `command` in the box's bash; print and return its output.\"\"\"
            bash.stdin.write(f"{command}\\necho __done__\\n")
            bash.stdin.flush()
            lines = []
            for line in bash.stdout:
                if line == "__done__\\n":
                    break
                lines.append(line)
            print(f"# {command}\\n" + "".join(lines), end="")
            return "".join(lines)


        rows = ps_rows(sh("ps -ef"))
        assert rows[0]["pid"] == 1 and rows[0]["ppid"] == 0 and rows[0]["cmd"].startswith("bash")
        assert rows[1]["cmd"] == "ps -ef" and rows[1]["ppid"] == 1
        """
    ),
    code(
        """
        sh("sleep 1024 &")
        wait_until(lambda: any(p.command == "sleep 1024" for p in bash.processes()))
        rows = ps_rows(sh("ps -ef"))
        sleep = next(r for r in rows if r["cmd"] == "sleep 1024")
        assert sleep["ppid"] == 1  # the article's point: the parent of our sleep is PID 1
        """
    ),
    md(
        """
        ## From the host

        The article greps the host's `ps -ef` for `sleep` and then for bash's PID. We ask the box which
        host PID its `sleep` has, and ask the host's `ps` about both:
        """
    ),
    code(
        """
        sleep_host = bash.host_pid(sleep["pid"])
        print(subprocess.run(
            ["ps", "-o", "user,pid,ppid,args", "-p", f"{bash.pid},{sleep_host}"], capture_output=True, text=True
        ).stdout)

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
        """
    ),
    md(
        """
        Unlike `unshare --fork`, there is no waiting `unshare` between our kernel and `bash`: nsbox's clone
        made `bash` directly, so the kernel is bash's parent.

        ## Orphans are adopted by PID 1 — of their own namespace

        `(sleep 1025 &)` starts `sleep` from a subshell that exits at once. The orphaned `sleep` is adopted
        by the init of *its* PID namespace — bash — not by the host's init.
        """
    ),
    code(
        """
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
        """
    ),
    md(
        """
        ## Zombies: PID 1 must reap

        A process that exits stays a *zombie* until its parent collects its exit status with `wait`.
        Orphans' parent is PID 1, so PID 1 must reap them — bash does, but most programs never call `wait`
        for children they did not start. Here the box's PID 1 ends up being `sleep 60`, after a shell
        left an orphan behind that exits after 0.2 seconds:
        """
    ),
    code(
        """
        ORPHAN = 'sh -c "sleep 0.2 &"; exec sleep 60'  # leave an orphan, then become `sleep 60`

        noinit = nsbox.Popen(["sh", "-c", ORPHAN], pid=True, mount_proc=True)


        def orphan_is_a_zombie():
            \"\"\"PID 1 has become `sleep 60`, and the orphan has exited.\"\"\"
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
        """
    ),
    md(
        """
        A zombie holds a PID until reaped; a container whose main program does not reap fills up with them.
        That is why Docker has `docker run --init` (tini), and nsbox has **`init=True`**: PID 1 is then a
        tiny init that starts the command as PID 2, reaps every orphan, forwards signals to the command,
        and exits with its status.
        """
    ),
    code(
        """
        withinit = nsbox.Popen(["sh", "-c", ORPHAN], init=True, mount_proc=True)


        def settled():
            \"\"\"Two looks 0.3 s apart show only init and `sleep 60`: the orphan has come and gone.\"\"\"
            first = [p.command for p in withinit.processes()]
            time.sleep(0.3)
            return first == [p.command for p in withinit.processes()] == ["nsbox-init", "sleep 60"]


        wait_until(settled)

        print(withinit.exec(["ps", "-ef"], capture_output=True, text=True).stdout)
        table = withinit.processes()
        display(table)
        assert [(p.pid, p.ppid) for p in table] == [(1, 0), (2, 1)]
        assert all(state(p.host_pid) != "Z" for p in table)  # the orphan came and went: reaped by nsbox-init
        """
    ),
    md(
        """
        ## Signals: the kernel protects PID 1

        PID 1 of a namespace receives only the signals it has installed a handler for — even when they come
        from the host. `SIGKILL` and `SIGSTOP` from the parent namespace are the exceptions. `sleep` has
        no handler for `SIGTERM`, so `terminate()` does nothing to it; nsbox's init forwards `SIGTERM` to
        its command, whose default action is to die.
        """
    ),
    code(
        """
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
        """
    ),
    md(
        """
        Our `bash` is PID 1 without a `SIGTERM` handler too (a non-interactive bash keeps the default), so
        it ignores `terminate()` as well.

        ## When PID 1 dies, the namespace dies

        Killing `bash` takes both `sleep`s with it: the kernel SIGKILLs every process left in a PID
        namespace whose init has exited.
        """
    ),
    code(
        """
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
        """
    ),
    md(
        """
        | PID 1 … | without an init (`pid=True`) | with `init=True` |
        |---|---|---|
        | is | your command | `nsbox-init`; your command is PID 2 |
        | orphans | adopted by your command; zombies unless it `wait`s | adopted and reaped by init |
        | `terminate()` (SIGTERM) | ignored unless your command handles it | forwarded; exit status 128 + 15 |
        | `kill()` (SIGKILL) | ends the namespace | ends the namespace |

        **Next:** [4 · The other namespaces](04_other_namespaces.ipynb).
        """
    ),
]


# ------------------------------------------------------------------------------------------------
# 4. The other namespaces
# ------------------------------------------------------------------------------------------------

NB4 = [
    md(
        """
        # 4 · The other namespaces

        > 大家如果对其他Linux namespace也感兴趣，可以参考下unshare的说明文档，继续做下相关的测试和验证。
        >
        > *If you are interested in the other Linux namespaces, read unshare's documentation and carry on
        > testing and verifying them.*

        The article ends there; this notebook carries on. One section per namespace — UTS, IPC, network,
        mount (with propagation), user, cgroup, time — each a small experiment that asserts what the
        namespace isolates, and checks that the host did not change.
        """
    ),
    code(
        """
        import json
        import os
        import shutil
        import socket
        import subprocess
        import sys
        import tempfile
        import time
        from pathlib import Path

        from IPython.display import HTML, display

        import nsbox

        HOST_HOSTNAME = socket.gethostname()
        HOST_MOUNTS = Path("/proc/self/mountinfo").read_text()


        def table(head, rows):
            \"\"\"An HTML table.\"\"\"
            th = "".join(f"<th>{h}</th>" for h in head)
            body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
            return HTML(f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>")


        def wait_until(condition, timeout=10.0):
            \"\"\"Poll condition() until it is true.\"\"\"
            deadline = time.monotonic() + timeout
            while not condition():
                assert time.monotonic() < deadline, "timed out"
                time.sleep(0.05)
        """
    ),
    md(
        """
        ## UTS: its own hostname

        `hostname="box"` creates a UTS namespace and sets the name in it. Inside, the name can be changed
        again; the host's stays what it was. With `uts=True` alone, the box starts with a copy of ours.
        """
    ),
    code(
        """
        r = nsbox.run(["sh", "-c", "hostname; hostname changed-inside; uname -n"], hostname="box",
                      capture_output=True, text=True, check=True)
        print(r.stdout)
        assert r.stdout.split() == ["box", "changed-inside"]
        assert socket.gethostname() == HOST_HOSTNAME

        copy = nsbox.run(["hostname"], uts=True, capture_output=True, text=True, check=True).stdout.strip()
        print(f"uts=True alone: {copy!r} (the host is {HOST_HOSTNAME!r})")
        assert copy == HOST_HOSTNAME
        """
    ),
    md(
        """
        ## IPC: a message queue the host cannot see

        System V IPC objects (message queues, semaphores, shared memory) and POSIX message queues live in
        an IPC namespace. A queue made in the box with `ipcmk -Q` shows in the box's `ipcs` and not in the
        host's; another box with its own IPC namespace starts with none. The queue disappears with the
        namespace.
        """
    ),
    code(
        """
        ipcbox = nsbox.Popen(["sleep", "60"], pid=True, ipc=True)
        print(ipcbox.exec(["ipcmk", "-Q"], capture_output=True, text=True, check=True).stdout)
        inside = ipcbox.exec(["ipcs", "-q"], capture_output=True, text=True, check=True).stdout
        host = subprocess.run(["ipcs", "-q"], capture_output=True, text=True, check=True).stdout
        other = nsbox.run(["ipcs", "-q"], ipc=True, capture_output=True, text=True, check=True).stdout
        print("in the box:" + inside, "on the host:" + host, "in another box:" + other, sep="\\n")

        (queue,) = [line.split()[:2] for line in inside.splitlines() if line.startswith("0x")]  # key, msqid
        assert not any(line.split()[:2] == queue for line in host.splitlines())
        assert not any(line.startswith("0x") for line in other.splitlines())

        ipcbox.kill()
        assert ipcbox.wait(timeout=10) == -9
        """
    ),
    md(
        """
        ## NET: only `lo`, and a server nobody outside can reach

        A new network namespace has one interface, loopback, which nsbox brings up. Whatever listens in it
        listens on the box's own loopback.
        """
    ),
    code(
        """
        r = nsbox.run(["ip", "-o", "link"], net=True, capture_output=True, text=True, check=True)
        host_links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
        names = [line.split(":")[1].strip() for line in r.stdout.splitlines()]
        print("in the box:  ", names)
        print("on the host: ", [line.split(":")[1].strip() for line in host_links.splitlines()])
        assert names == ["lo"] and "UP" in r.stdout.split("<")[1].split(">")[0]
        """
    ),
    code(
        """
        SERVER = (
            "import socket, sys\\n"
            "s = socket.create_server(('127.0.0.1', int(sys.argv[1])))\\n"
            "while True:\\n"
            "    c, _ = s.accept(); c.sendall(b'hello from the box'); c.close()\\n"
        )
        CLIENT = (
            "import socket, sys\\n"
            "print(socket.create_connection(('127.0.0.1', int(sys.argv[1]))).recv(99).decode())\\n"
        )
        with socket.socket() as s:  # a port that nothing on the host listens on
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]

        server = nsbox.Popen([sys.executable, "-c", SERVER, str(port)], pid=True, net=True)


        def ask():
            \"\"\"Connect to the server from inside the box.\"\"\"
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
        """
    ),
    md(
        """
        ## MNT: a tmpfs the host never sees

        In its own mount namespace the box mounts a tmpfs over a directory and writes a file into it. The
        host's directory stays empty and the host's mount table does not change: before mounting anything,
        nsbox makes `/` private in the new namespace (`propagation="private"`), so nothing leaks back.
        """
    ),
    code(
        """
        where = tempfile.mkdtemp(prefix="nsbox-mnt-")
        r = nsbox.run(
            ["sh", "-c", f"mount -t tmpfs box-tmpfs {where} && echo hi > {where}/inside.txt && ls {where} "
                         f"&& grep box-tmpfs /proc/self/mountinfo"],
            mount=True, capture_output=True, text=True, check=True,
        )
        print("in the box:\\n" + r.stdout)
        print(f"on the host: os.listdir({where!r}) = {os.listdir(where)}")
        assert "inside.txt" in r.stdout and os.listdir(where) == []
        assert "box-tmpfs" not in Path("/proc/self/mountinfo").read_text()
        os.rmdir(where)
        """
    ),
    md(
        """
        ### Propagation

        A new mount namespace starts as a copy of its parent's mounts. *Propagation* decides whether mounts
        made later travel between the copies: **private** — never; **slave** — from the parent into the
        box only; **shared** — both ways; **unchanged** — whatever the parent's mounts were set to. Trying
        all four on the real host would mean mounting on the host, so the experiment runs inside a box of
        its own, whose mount namespace plays the host: it mounts a *shared* tmpfs, starts one box per
        propagation, then mounts something in its copy and something in each box, and checks where each
        mount is visible (in `/proc/PID/mountinfo`).
        """
    ),
    code(
        '''
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
        '''
    ),
    code(
        """
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
        """
    ),
    md(
        """
        (The stand-in host is a box that starts boxes: nsbox works inside a box too, given the box's own `/proc`.)

        ## USER: root inside — over what the namespace owns

        A user namespace has its own uids and gids, mapped onto the host's by `/proc/PID/uid_map` and
        `gid_map` (`inside outside count`), and its own capabilities. As root, `user=True` maps root to root
        (`0 0 1`), so ids do not change; what changes is *where the capabilities count*. The box's root has
        every capability — over the namespaces its user namespace owns, which are the ones created with
        it. Setting a hostname (even to the one it already is) or mounting needs `CAP_SYS_ADMIN` in the
        user namespace that owns the UTS or mount namespace: with `user=True` alone those are still the
        host's, and root-in-a-box is refused; add `uts=True` / `mount=True` and the same commands work.
        """
    ),
    code(
        """
        where = tempfile.mkdtemp(prefix="nsbox-user-")
        TRY = (
            "id; cat /proc/self/uid_map; grep CapEff /proc/self/status; "
            f'hostname "$(hostname)" && echo hostname: ok; mount -t tmpfs t {where} && echo mount: ok'
        )
        rows = []
        for options in [{"user": True}, {"user": True, "uts": True, "mount": True}]:
            r = nsbox.run(["sh", "-c", TRY], capture_output=True, text=True, **options)
            out = r.stdout.splitlines()
            print(f">>> nsbox.run([...], **{options})\\n" + r.stdout + r.stderr)
            assert out[0].startswith("uid=0(root)") and out[1].split() == ["0", "0", "1"]
            assert int(out[2].split()[1], 16) != 0  # every capability ...
            rows.append((", ".join(f"{k}=True" for k in options), "hostname: ok" in out, "mount: ok" in out))

        display(table(["options", "may set the hostname", "may mount"], rows))
        assert [row[1:] for row in rows] == [(False, False), (True, True)]
        assert socket.gethostname() == HOST_HOSTNAME and os.listdir(where) == []
        os.rmdir(where)
        """
    ),
    md(
        """
        As root we may also map whole ranges — `uid_map=[(0, 100000, 65536)]` gives a box 65536 ids of its
        own, the way rootful Docker's `userns-remap` does. The map is what the kernel uses to translate
        every id crossing the boundary:
        """
    ),
    code(
        """
        remapped = nsbox.Popen(["sleep", "60"], uid_map=[(0, 100000, 65536)], gid_map=[(0, 100000, 65536)])
        uid_map = Path(f"/proc/{remapped.pid}/uid_map").read_text()
        print("uid_map:", uid_map.strip())
        assert uid_map.split() == ["0", "100000", "65536"]
        assert remapped.namespaces()["user"] != nsbox.namespaces()["user"]
        remapped.kill()
        assert remapped.wait(timeout=10) == -9
        """
    ),
    md(
        """
        Creating a user namespace does not change a process's own uid, and nsbox does not switch it: a
        command started by root with this map keeps host uid 0, which the map leaves out — it shows up
        inside as the overflow id 65534, without capabilities, yet still owns root's files on the host.
        The map is useful for processes that become one of its ids. The case that matters most —
        **root inside, nobody outside** — is what an ordinary user gets: notebook 5.
        """
    ),
    md(
        """
        ## cgroup: its own cgroup root

        A cgroup namespace makes the process's current cgroup the root of what it sees in
        `/proc/self/cgroup` (and in cgroupfs mounted inside), hiding where the box sits in the host's
        hierarchy. Each line is `hierarchy:controllers:path`.
        """
    ),
    code(
        """
        host_cgroups = [line.split(":", 2) for line in Path("/proc/self/cgroup").read_text().splitlines()]
        r = nsbox.run(["cat", "/proc/self/cgroup"], cgroup=True, capture_output=True, text=True, check=True)
        box_cgroups = [line.split(":", 2) for line in r.stdout.splitlines()]
        display(table(["hierarchy", "controllers", "path on the host", "path in the box"],
                      [(h[0], h[1] or "(v2)", h[2], b[2]) for h, b in zip(host_cgroups, box_cgroups, strict=True)]))
        assert all(path == "/" for _, _, path in box_cgroups)
        """
    ),
    md(
        """
        ## time: a monotonic clock with an offset

        A time namespace offsets `CLOCK_MONOTONIC` and `CLOCK_BOOTTIME` (what uptime and timeouts measure),
        so a box can appear to have been up for a week — or keep its clocks across a migration. The wall
        clock, `CLOCK_REALTIME`, is not namespaced.
        """
    ),
    code(
        """
        WEEK = 7 * 24 * 3600
        CLOCKS = ("import time; print(time.clock_gettime(time.CLOCK_MONOTONIC), "
                  "time.clock_gettime(time.CLOCK_BOOTTIME), time.time())")
        r = nsbox.run([sys.executable, "-c", CLOCKS], time=True, monotonic_offset=WEEK, boottime_offset=2 * WEEK,
                      capture_output=True, text=True, check=True)
        host = (time.clock_gettime(time.CLOCK_MONOTONIC), time.clock_gettime(time.CLOCK_BOOTTIME), time.time())
        box = [float(x) for x in r.stdout.split()]
        names = ["CLOCK_MONOTONIC", "CLOCK_BOOTTIME", "CLOCK_REALTIME"]
        rows = [(n, f"{h:,.1f}", f"{b:,.1f}", f"{b - h:+,.1f} s") for n, h, b in zip(names, host, box, strict=True)]
        display(table(["clock", "host", "box", "box - host"], rows))

        assert abs((box[0] - host[0]) - WEEK) < 5  # the monotonic offset is visible inside
        assert abs((box[1] - host[1]) - 2 * WEEK) < 5
        assert abs(box[2] - host[2]) < 5  # the wall clock is shared
        uptime = nsbox.run(["cat", "/proc/uptime"], time=True, boottime_offset=2 * WEEK, capture_output=True, text=True)
        host_uptime = Path("/proc/uptime").read_text().split()[0]
        print(f"/proc/uptime in the box: {uptime.stdout.split()[0]} s, on the host: {host_uptime} s")
        """
    ),
    md(
        """
        ## The host is unchanged
        """
    ),
    code(
        """
        assert socket.gethostname() == HOST_HOSTNAME
        assert Path("/proc/self/mountinfo").read_text() == HOST_MOUNTS
        print("hostname and mount table as they were")
        """
    ),
    md("**Next:** [5 · Rootless](05_rootless.ipynb) — the same experiments without root."),
]


# ------------------------------------------------------------------------------------------------
# 5. Rootless
# ------------------------------------------------------------------------------------------------

NB5 = [
    md(
        """
        # 5 · Rootless

        The article runs `sudo unshare …` and `docker`, both as root. This notebook runs as an **ordinary
        user** — the test suite starts its kernel as uid 65534 (`nobody`) — and repeats the experiments.
        Everything works, because of one namespace: the user namespace.
        """
    ),
    code(
        """
        import os
        import shutil
        import socket
        import subprocess
        import sys
        import tempfile
        import time
        from pathlib import Path

        from IPython.display import HTML, display

        import nsbox

        assert os.getuid() != 0, "run this notebook as an ordinary user: it is about what works without root"


        def status(pid):
            \"\"\"/proc/PID/status as a dict.\"\"\"
            return dict(line.split(":\\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())


        def table(head, rows):
            \"\"\"An HTML table.\"\"\"
            th = "".join(f"<th>{h}</th>" for h in head)
            body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
            return HTML(f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>")


        ME = os.getuid()
        print(f"uid {ME}, gid {os.getgid()}, groups {os.getgroups()}, capabilities {status('self')['CapEff']}")
        assert int(status("self")["CapEff"], 16) == 0
        """
    ),
    md(
        """
        ## Without a user namespace: not permitted

        Creating a PID, network, UTS, IPC, mount or cgroup namespace needs `CAP_SYS_ADMIN`, which we do not
        have. `unshare` says so, and so does nsbox when told not to make a user namespace (`user=False`):
        """
    ),
    code(
        """
        rows = []
        for flags, options in [(["--pid", "--fork"], {"pid": True}), (["--net"], {"net": True}),
                               (["--uts"], {"hostname": "box"}), (["--mount"], {"mount": True})]:
            u = subprocess.run(["unshare", *flags, "true"], capture_output=True, text=True)
            try:
                nsbox.run(["true"], user=False, **options)
                n = "ran"
            except PermissionError as e:
                n = f"PermissionError: {e}"
            rows.append((f"unshare {' '.join(flags)} true", u.stderr.strip(), f"user=False, {options}", n))
            assert u.returncode != 0 and n.startswith("PermissionError")
        display(table(["unshare", "result", "nsbox.run(['true'], …)", "result"], rows))
        """
    ),
    md(
        """
        ## The user namespace

        Any process may create a user namespace (up to `/proc/sys/user/max_user_namespaces`). Inside, it
        has every capability — but only over the namespaces that user namespace *owns*, which are the ones
        created with it or after it. Own ids map to root inside: `unshare -r` / `--map-root-user`. This is
        nsbox's default without root: `user=None` adds a user namespace whenever another namespace is
        asked for, and maps our uid and gid to 0 (writing `deny` to `setgroups` first, as the kernel
        requires of unprivileged maps).
        """
    ),
    code(
        """
        print("max_user_namespaces:", Path("/proc/sys/user/max_user_namespaces").read_text().strip())
        u = subprocess.run(["unshare", "-r", "--net", "id"], capture_output=True, text=True, check=True)
        print("$ unshare -r --net id\\n" + u.stdout)

        r = nsbox.run(
            ["sh", "-c", "id; cd /proc/self; cat uid_map gid_map setgroups; grep CapEff status"],
            net=True, capture_output=True, text=True, check=True,
        )
        print(">>> nsbox.run([...], net=True)\\n" + r.stdout)
        lines = r.stdout.splitlines()
        assert lines[0].startswith("uid=0(root) gid=0(root)")
        assert lines[1].split() == ["0", str(ME), "1"] and lines[2].split() == ["0", str(os.getgid()), "1"]
        assert lines[3] == "deny" and int(lines[4].split()[1], 16) != 0  # capabilities, inside
        """
    ),
    md(
        """
        ## The article's experiments, rootless

        The PID namespace with a fresh `/proc` (`sudo unshare --pid --fork --mount-proc`, without `sudo`):
        """
    ),
    code(
        """
        r = nsbox.run(["ps", "-ef"], pid=True, mount_proc=True, capture_output=True, text=True, check=True)
        print(r.stdout)
        (only,) = r.stdout.splitlines()[1:]
        assert only.split()[:2] == ["root", "1"]  # PID 1, and root — of its own user namespace
        """
    ),
    md(
        """
        A long-running box with its own PID (fresh `/proc`), UTS, IPC, network, mount and cgroup
        namespaces — and the user namespace that owns them, which is the one namespace you would not see in
        notebook 2's table as root:
        """
    ),
    code(
        """
        options = dict(pid=True, mount_proc=True, hostname="rootless", ipc=True, net=True, cgroup=True)
        box = nsbox.Popen(["sleep", "60"], **options)
        assert box.namespaces()["user"] != nsbox.namespaces()["user"]
        box
        """
    ),
    code(
        """
        r = box.exec(["sh", "-c", "ps -ef; true"], capture_output=True, text=True, check=True)
        print("inside:\\n" + r.stdout)
        assert r.stdout.splitlines()[1].split()[:3] == ["root", "1", "0"]

        print("on the host:\\n" + subprocess.run(["ps", "-o", "user,pid,ppid,args", "-p", str(box.pid)],
                                                capture_output=True, text=True).stdout)
        assert nsbox.nspid(box.pid) == [box.pid, 1] and int(status(box.pid)["PPid"]) == os.getpid()
        assert os.stat(f"/proc/{box.pid}").st_uid == ME  # to the host, the box's "root" is us
        box.processes()
        """
    ),
    md(
        """
        ## Root inside, nobody outside

        What the box's root creates belongs to us on the host; what the host's root owns shows up inside as
        the overflow id 65534 (unmapped); and "root" inside cannot read what we cannot read — `/root`,
        say. A user namespace grants power over its own namespaces, never over the host's.
        """
    ),
    code(
        """
        work = tempfile.mkdtemp(prefix="nsbox-nb5-")
        r = box.exec(["sh", "-c", f"touch {work}/made-inside; ls -ln {work}; stat -c '%u %n' /etc/passwd; ls /root"],
                     capture_output=True, text=True)
        print(r.stdout + r.stderr)
        made = os.stat(f"{work}/made-inside")
        print(f"on the host, made-inside belongs to uid {made.st_uid} (us: {ME})")

        assert " 0 0 " in r.stdout.splitlines()[1]  # owned by root, inside ...
        assert made.st_uid == ME  # ... by us, outside
        assert "65534 /etc/passwd" in r.stdout
        assert r.returncode != 0 and "Permission denied" in r.stderr
        """
    ),
    md(
        """
        ## The other namespaces, rootless

        Each experiment of notebook 4 in the same box, joined with `box.exec`; every one works without root.
        """
    ),
    code(
        """
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
        r = nsbox.run([sys.executable, "-c", "import time; print(time.monotonic())"], time=True, monotonic_offset=86400,
                      capture_output=True, text=True, check=True)
        shift = float(r.stdout) - time.monotonic()
        assert abs(shift - 86400) < 5
        results.append(("time", f"monotonic clock {shift:+,.0f} s ahead", "unchanged"))

        display(table(["namespace", "in the box (uid 0 inside)", f"on the host (uid {ME})"], results))
        """
    ),
    md(
        """
        ## What a user namespace does not give

        Without privileges, only our own uid and gid can be mapped — one id each, with `setgroups` denied.
        A box that needs more ids (a distribution image with several system users) needs a map written by
        someone privileged: the setuid `newuidmap`/`newgidmap` helpers with ranges from `/etc/subuid`, as
        rootless Docker and Podman use. Likewise connecting the box's network to the outside needs help
        from outside (rootless Docker uses slirp4netns or pasta).
        """
    ),
    code(
        """
        for options in [{"uid_map": [(0, ME, 1), (1, 100000, 1000)]}, {"setgroups": "allow"}]:
            try:
                nsbox.run(["true"], user=True, **options)
                print(options, "-> ran")
            except PermissionError as e:
                print(f"{options} -> PermissionError: {e}")
        """
    ),
    md("## Cleaning up"),
    code(
        """
        box.kill()
        assert box.wait(timeout=10) == -9
        shutil.rmtree(work)  # the tmpfs went with the box's mount namespace; this is the host's directory
        print("box:", box.returncode)
        """
    ),
    md(
        """
        So a container needs no root: a user namespace first, and the other namespaces owned by it. That
        is what nsbox does when you are not root, what `unshare -r` does, and what rootless Docker and
        Podman build on. The article's experiments, and notebook 4's, all ran here as uid 65534.
        """
    ),
    md("**Next:** [6 · Networking](06_networking.ipynb) — boxes with their own addresses, on a bridge."),
]


# ------------------------------------------------------------------------------------------------
# 6. Networking
# ------------------------------------------------------------------------------------------------

NB6 = [
    md(
        """
        # 6 · Networking: boxes with their own address, ports and routes

        The network namespace isolates interfaces, addresses, routes and ports. Notebook 4 showed the
        empty one `net=True` gives: only `lo`, nothing reachable. A container is useful on a network, so
        Docker connects each one to a bridge through a **veth pair** — a virtual cable whose one end
        (`eth0`) is moved into the container's network namespace while the other stays on the bridge.

        `nsbox.Network` does the same: a bridge with the subnet's first address (the gateway), and a
        veth pair per box, all made over netlink. This notebook builds a two-box network, serves a page
        from one box to the other, and draws it. It runs as root, so the bridge lives in the host's
        network namespace like Docker's `docker0`; the last part shows what an ordinary user gets.
        """
    ),
    code(
        """
        import os
        import subprocess
        import sys
        import textwrap
        import urllib.request

        import nettopo  # the network picture (nettopo.py, next to this notebook)
        from IPython.display import HTML, display

        import nsbox


        def table(head, rows):
            \"\"\"An HTML table.\"\"\"
            th = "".join(f"<th>{h}</th>" for h in head)
            body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
            return HTML(f"<table><tr>{th}</tr>{body}</table>")


        def links():
            \"\"\"The interfaces of the host's network namespace.\"\"\"
            return set(os.listdir("/sys/class/net"))


        def fetch(url):
            \"\"\"The page at url, fetched from this process's network namespace.\"\"\"
            return urllib.request.urlopen(url, timeout=5).read().decode()


        HOST_LINKS = links()
        print(f"uid {os.getuid()} · host interfaces: {sorted(HOST_LINKS)}")
        """
    ),
    md(
        """
        ## Before: a network namespace with nothing in it

        `ip` inside a box talks netlink to the box's own network namespace, so it shows the box's view.
        """
    ),
    code(
        """
        alone = nsbox.run(["ip", "-brief", "address"], net=True, capture_output=True, text=True)
        print(alone.stdout)
        assert [line.split()[0] for line in alone.stdout.splitlines()] == ["lo"]
        """
    ),
    md(
        """
        ## A network, and two boxes on it

        The server is a few lines of Python that answer every request with a page naming the box. It
        binds the box's `eth0` address. (A plain `python -m http.server` would first look its address up
        in DNS; nothing beyond the LAN is reachable — no NAT is set up — so that lookup would only time
        out.)
        """
    ),
    code(
        """
        SERVER = textwrap.dedent(\"\"\"
            import http.server, os, socket, socketserver, sys
            address, port = sys.argv[1], int(sys.argv[2])
            class Page(http.server.BaseHTTPRequestHandler):
                def do_GET(self):
                    body = f"<h1>hello from {socket.gethostname()}</h1> PID {os.getpid()} inside".encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                def log_message(self, *args):
                    pass
            class Server(http.server.HTTPServer):
                def server_bind(self):
                    socketserver.TCPServer.server_bind(self)
                    self.server_name, self.server_port = self.server_address[:2]
            server = Server((address, port), Page)
            print("ready", flush=True)
            server.serve_forever()
        \"\"\")


        def serve(lan, ip, name):
            \"\"\"A box on lan serving SERVER's page on ip:80, as PID 1 with its own hostname.\"\"\"
            box = nsbox.Popen(
                [sys.executable, "-c", SERVER, ip, "80"],
                network=lan, ip=ip, pid=True, hostname=name, stdout=subprocess.PIPE, text=True,
            )
            assert box.stdout.readline() == "ready\\n"
            return box


        lan = nsbox.Network("10.213.0.0/24")
        web = serve(lan, "10.213.0.80", "web")
        client = nsbox.Popen(["sleep", "600"], network=lan, pid=True, hostname="client")
        print(lan)
        display(table(["box", "host PID", "eth0 address", "veth on the bridge"],
                      [("web" if b is web else "client", b.pid, b.ip, b.veth) for b in lan.boxes]))
        """
    ),
    md(
        """
        The client got the first free address (`.2`); the server asked for `.80`. Inside the client, `ip`
        shows `lo` and `eth0`, a route for the subnet and a default route through the gateway:
        """
    ),
    code(
        """
        inside = client.exec(["sh", "-c", "ip -brief address; echo; ip route"], capture_output=True, text=True)
        print(inside.stdout)
        assert "eth0@" in inside.stdout and "default via 10.213.0.1 dev eth0" in inside.stdout
        assert lan.bridge not in inside.stdout
        """
    ),
    md("## Serving a page from one box to the other"),
    code(
        """
        FETCH = "import urllib.request, sys; print(urllib.request.urlopen(sys.argv[1]).read().decode())"
        page = client.exec([sys.executable, "-c", FETCH, "http://10.213.0.80/"], capture_output=True, text=True).stdout
        display(HTML(page))
        assert "hello from web" in page and "PID 1 inside" in page
        """
    ),
    md(
        """
        The page says PID 1: the server is PID 1 of its own PID namespace. From the host the same
        process has another PID — and, since the bridge (with the gateway address) is in the host's
        network namespace, the host reaches the box through it, as it reaches a Docker container on
        `docker0`:
        """
    ),
    code(
        """
        from_host = fetch("http://10.213.0.80/")
        print("host PID of the server:", web.pid)
        display(HTML(from_host))
        assert "hello from web" in from_host
        bridge_ports = sorted(os.listdir(f"/sys/class/net/{lan.bridge}/brif"))
        print(f"ports of {lan.bridge}:", bridge_ports)
        assert bridge_ports == sorted(b.veth for b in lan.boxes)
        """
    ),
    md(
        """
        ## Port 80, twice

        Ports belong to a network namespace: a second server binds port 80 in its own box while the first
        one holds port 80 in its.
        """
    ),
    code(
        """
        web2 = serve(lan, "10.213.0.81", "web2")
        pages = {f"http://10.213.0.{n}/": fetch(f"http://10.213.0.{n}/") for n in (80, 81)}
        display(table(["URL", "answer"], pages.items()))
        assert "hello from web<" in pages["http://10.213.0.80/"] and "hello from web2" in pages["http://10.213.0.81/"]
        """
    ),
    md("## The picture"),
    code(
        """
        nettopo.draw(lan, names={web: "web (port 80)", web2: "web2 (port 80)", client: "client"})
        """
    ),
    md(
        """
        ## Cleaning up

        A box's veth pair goes with its network namespace; `close()` deletes the bridge and any veth left.
        The host's interfaces are back to what they were.
        """
    ),
    code(
        """
        for box in (web, web2, client):
            box.kill()
            box.wait()
        lan.close()
        print(sorted(links()))
        assert links() == HOST_LINKS
        """
    ),
    md(
        """
        ## Without root

        An ordinary user may not add a bridge to the host. `nsbox.Network` then puts the whole LAN in a
        network namespace owned by a user namespace of the caller's own, and starts the boxes inside that
        user namespace: they reach each other, the host sees nothing. `private=True` asks for the same as
        root, which is what this cell shows (the test suite runs the same code as uid 65534).
        """
    ),
    code(
        """
        with nsbox.Network("10.213.1.0/24", private=True) as hidden:
            server = serve(hidden, "10.213.1.80", "hidden")
            page = nsbox.run(
                [sys.executable, "-c", FETCH, "http://10.213.1.80/"], network=hidden, capture_output=True, text=True
            ).stdout
            # The host has no route into the LAN: its request goes wherever its default route leads.
            route = subprocess.run(["ip", "route", "get", "10.213.1.80"], capture_output=True, text=True)
            try:
                from_host = fetch("http://10.213.1.80/")
            except OSError as exc:
                from_host = f"{type(exc).__name__}: {exc}"
            display(table(["", ""], [
                ("the other box fetched", page.strip()),
                ("the host's route to 10.213.1.80", (route.stdout or route.stderr).splitlines()[0]),
                ("the host fetched", from_host),
                ("new interfaces on the host", sorted(links() - HOST_LINKS) or "none"),
                ("interfaces in the LAN's namespace", ", ".join(sorted(hidden.interfaces()))),
            ]))
            display(nettopo.draw(hidden, names={server: "hidden (port 80)"}))
            server.kill()
            server.wait()
        assert "hello from hidden" in page and "hidden" not in from_host and "nsbr" not in route.stdout
        assert links() == HOST_LINKS
        """
    ),
    md(
        """
        That is the whole trick behind container networking: a network namespace per container, a
        virtual cable into it, and a switch outside. What Docker adds on top — NAT to the outside world,
        published ports, DNS between containers — is routing and iptables in the host's namespace.
        """
    ),
]


def notebooks() -> dict[str, nbformat.NotebookNode]:
    """Every notebook by file name, without outputs."""
    cells = {
        "01_namespace_types.ipynb": NB1,
        "02_observing_a_container.ipynb": NB2,
        "03_pid_namespace.ipynb": NB3,
        "04_other_namespaces.ipynb": NB4,
        "05_rootless.ipynb": NB5,
        "06_networking.ipynb": NB6,
    }
    assert list(cells) == list(nbrun.NOTEBOOKS)
    out = {}
    for name, nb_cells in cells.items():
        nb = new_notebook(cells=[nbformat.from_dict(c) for c in nb_cells])
        nb.metadata["kernelspec"] = dict(KERNELSPEC)
        nb.metadata["language_info"] = {"name": "python"}
        for i, cell in enumerate(nb.cells):
            cell["id"] = f"{name[:2]}-{i:02d}"
        out[name] = nb
    return out


def _strip_volatile(nb: nbformat.NotebookNode) -> None:
    for cell in nb.cells:
        cell.metadata.pop("execution", None)


def main() -> int:
    """Write the notebooks; execute them and save the outputs unless ``--no-run``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-run", action="store_true", help="write the cells only")
    parser.add_argument("names", nargs="*", help="only these notebooks (default: all)")
    args = parser.parse_args()
    for name, nb in notebooks().items():
        if args.names and name not in args.names:
            continue
        path = HERE / name
        nbformat.write(nb, path)
        if not args.no_run:
            executed, seconds = nbrun.execute(path)
            _strip_volatile(executed)
            nbformat.write(executed, path)
            print(f"{name}: {seconds:.1f} s")
        else:
            print(f"{name}: written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
