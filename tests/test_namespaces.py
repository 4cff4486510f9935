"""Each namespace type, checked from both sides: what the box sees, and that the host did not change."""

from __future__ import annotations

import inspect
import json
import os
import re
import socket
import subprocess
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

import nsbox
from helpers.mounts import host_mounts, mountinfo, root_mount_optional_fields
from helpers.namespaces import NAMESPACES, OPTION_FOR, box_ns_links, host_ns
from helpers.pooling import RUNS
from helpers.procs import children_of, kill_and_reap, kill_pid, proc_comm, proc_status, wait_gone, wait_until


@pytest.fixture(params=list(RUNS))
def box_run(request: pytest.FixtureRequest) -> Any:
    """``nsbox.run``, or the same box with its namespaces from a pool (``helpers.pooling``): both must pass."""
    return RUNS[request.param]


# ---------------------------------------------------------------------------------------------------------------
# Namespace identity: /proc/self/ns/X inside vs on the host


@pytest.mark.parametrize("ns", NAMESPACES)
def test_namespace_option_creates_exactly_that_namespace(ns: str, box_run: Any) -> None:
    inside = box_ns_links(box_run, **{OPTION_FOR[ns]: True})
    for name in NAMESPACES:
        if name == ns:
            assert inside[name] != host_ns(name), f"{ns}=True did not create a new {name} namespace"
        else:
            assert inside[name] == host_ns(name), f"{ns}=True also changed the {name} namespace"
    # The exec'd program is in its time namespace, and its children would be too.
    assert inside["time_for_children"] == inside["time"]


def test_no_namespace_option_keeps_every_host_namespace() -> None:
    inside = box_ns_links()
    assert inside == {name: host_ns(name) for name in (*NAMESPACES, "time_for_children")}


def test_all_namespace_options_together_create_all_namespaces(box_run: Any) -> None:
    options = {OPTION_FOR[ns]: True for ns in NAMESPACES}
    inside = box_ns_links(box_run, **options)
    assert all(inside[ns] != host_ns(ns) for ns in NAMESPACES), inside
    with nsbox.Popen(["true"], **options) as p:
        assert sorted(p.namespaces_created) == sorted(NAMESPACES)
    assert p.returncode == 0


def test_namespaces_created_names_what_was_asked_and_implied() -> None:
    with nsbox.Popen(["true"], mount_proc=True, hostname="nsbox-implied") as p:
        assert sorted(p.namespaces_created) == ["mnt", "uts"]
    assert p.returncode == 0


# ---------------------------------------------------------------------------------------------------------------
# PID


def test_pid_namespace_shows_command_as_pid_1() -> None:
    r = nsbox.run(["ps", "-ef"], pid=True, mount_proc=True, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    header, *rows = r.stdout.splitlines()
    assert header.split()[:3] == ["UID", "PID", "PPID"]
    assert len(rows) == 1, f"the box should see only ps itself:\n{r.stdout}"
    fields = rows[0].split(None, 7)
    assert (fields[1], fields[2], fields[7]) == ("1", "0", "ps -ef")
    # Host side: the host's ps sees many processes, this one among them.
    host = subprocess.run(["ps", "-e", "-o", "pid="], capture_output=True, text=True, check=True)
    host_pids = {int(p) for p in host.stdout.split()}
    assert os.getpid() in host_pids and 1 in host_pids and len(host_pids) > 2


def test_mount_proc_without_pid_namespace_still_sees_host_processes() -> None:
    # The control for the test above: the fresh /proc alone does not hide anything.
    r = nsbox.run(["ps", "-e", "-o", "pid="], mount_proc=True, capture_output=True, text=True, check=True)
    assert os.getpid() in {int(p) for p in r.stdout.split()}


def test_pid_namespace_host_pid_is_not_1_and_nspid_ends_in_1() -> None:
    own_levels = proc_status(os.getpid())["NSpid"].split()
    p = nsbox.Popen(["sleep", "1000"], pid=True)
    try:
        assert p.pid != 1
        nspid = proc_status(p.pid)["NSpid"].split()
        assert nspid[0] == str(p.pid)
        assert nspid[-1] == "1"
        assert len(nspid) == len(own_levels) + 1
        # The vfork-style spawn returns once the child is past exec's point of no return; the kernel
        # renames it a moment later.
        assert wait_until(lambda: proc_comm(p.pid) == "sleep")
    finally:
        kill_and_reap(p)
    assert p.returncode == -9


def test_processes_left_in_pid_namespace_die_when_pid_1_exits() -> None:
    p = nsbox.Popen(
        ["sh", "-c", "sleep 1000 & echo started; read line; exit 0"],
        pid=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    sleep_pid = None
    try:
        assert p.stdout is not None and p.stdin is not None
        assert p.stdout.readline() == "started\n"
        assert wait_until(lambda: any(proc_comm(c) == "sleep" for c in children_of(p.pid)))
        sleep_pid = next(c for c in children_of(p.pid) if proc_comm(c) == "sleep")
        assert proc_status(sleep_pid)["NSpid"].split()[-1] not in ("1", str(sleep_pid))
        p.stdin.close()  # PID 1 (sh) reads EOF and exits
        assert p.wait(timeout=10) == 0
        assert wait_gone(sleep_pid, "sleep"), "the sleep outlived PID 1 of its namespace"
    finally:
        kill_and_reap(p)
        if sleep_pid is not None and proc_comm(sleep_pid) == "sleep":
            kill_pid(sleep_pid)


def test_without_pid_namespace_background_processes_outlive_the_command() -> None:
    # The control for the test above: the sleep dies because of the PID namespace, not by accident.
    r = nsbox.run(
        ["sh", "-c", "sleep 1000 >/dev/null 2>&1 & read pid rest </proc/self/stat; echo $!"],
        capture_output=True,
        text=True,
        check=True,
    )
    sleep_pid = int(r.stdout)
    try:
        time.sleep(0.2)
        assert proc_comm(sleep_pid) == "sleep"
    finally:
        kill_pid(sleep_pid)


# ---------------------------------------------------------------------------------------------------------------
# UTS


def test_hostname_is_set_inside_and_host_hostname_unchanged(box_run: Any) -> None:
    before = socket.gethostname()
    assert before != "nsbox-box"
    r = box_run(
        ["sh", "-c", "hostname; uname -n; cat /proc/sys/kernel/hostname"],
        hostname="nsbox-box",
        capture_output=True,
        text=True,
        check=True,
    )
    assert r.stdout.split() == ["nsbox-box"] * 3
    assert socket.gethostname() == before
    with open("/proc/sys/kernel/hostname") as f:
        assert f.read().strip() == before


def test_uts_box_starts_with_host_hostname_and_can_change_only_its_own(box_run: Any) -> None:
    before = socket.gethostname()
    r = box_run(
        ["sh", "-c", "hostname; hostname renamed-in-box && hostname"],
        uts=True,
        capture_output=True,
        text=True,
        check=True,
    )
    assert r.stdout.split() == [before, "renamed-in-box"]
    assert socket.gethostname() == before


def test_hostname_of_64_bytes_is_accepted() -> None:
    name = "h" * 64
    r = nsbox.run(["hostname"], hostname=name, capture_output=True, text=True, check=True)
    assert r.stdout.strip() == name


# ---------------------------------------------------------------------------------------------------------------
# IPC


def _msg_queues(text: str) -> set[tuple[str, str]]:
    """(key, msqid) of each System V message queue in ``ipcs -q`` output."""
    return {(m.group(1), m.group(2)) for m in re.finditer(r"^(0x[0-9a-f]+)\s+(\d+)\s", text, re.M)}


def _host_msg_queues() -> str:
    with open("/proc/sysvipc/msg") as f:
        return f.read()


def test_ipc_message_queue_made_in_box_is_invisible_on_host(box_run: Any) -> None:
    r = box_run(["sh", "-c", "ipcmk -Q && echo @@ && ipcs -q"], ipc=True, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    made, listing = r.stdout.split("@@\n")
    msqid = re.search(r"Message queue id: (\d+)", made)
    assert msqid, made
    inside = _msg_queues(listing)
    assert [q for q in inside if q[1] == msqid.group(1)], f"ipcs -q inside does not show the queue:\n{listing}"
    (key, _) = next(q for q in inside if q[1] == msqid.group(1))
    # Host side: the queue (its random key) is nowhere. (Other users' queues may come and go meanwhile.)
    host_keys = {int(line.split()[0]) & 0xFFFFFFFF for line in _host_msg_queues().splitlines()[1:]}  # signed there
    assert int(key, 16) not in host_keys
    host_ipcs = subprocess.run(["ipcs", "-q"], capture_output=True, text=True, check=True).stdout
    assert key not in {k for k, _ in _msg_queues(host_ipcs)}


def test_box_without_ipc_shares_the_callers_ipc_objects(python: str) -> None:
    # Run from inside an IPC box (so the host is not touched): a queue made there is seen by a box
    # started without ipc=True, and not by one started with ipc=True.
    helper = textwrap.dedent(
        """
        import json, re, subprocess, nsbox
        made = subprocess.run(["ipcmk", "-Q"], capture_output=True, text=True, check=True).stdout
        msqid = re.search(r"id: (\\d+)", made).group(1)
        shared = nsbox.run(["cat", "/proc/sysvipc/msg"], capture_output=True, text=True, check=True).stdout
        own = nsbox.run(["cat", "/proc/sysvipc/msg"], ipc=True, capture_output=True, text=True, check=True).stdout
        ids = lambda text: [line.split()[1] for line in text.splitlines()[1:]]
        print(json.dumps({"msqid": msqid, "shared": ids(shared), "own": ids(own)}))
        """
    )
    r = nsbox.run([python, "-c", helper], ipc=True, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    seen = json.loads(r.stdout)
    assert seen["shared"] == [seen["msqid"]]
    assert seen["own"] == []


# ---------------------------------------------------------------------------------------------------------------
# NET


def _net_dev_names(text: str) -> list[str]:
    return [line.split(":", 1)[0].strip() for line in text.splitlines()[2:]]


def _host_net_dev() -> str:
    with open("/proc/net/dev") as f:
        return f.read()


def _own(names: list[str]) -> list[str]:
    """The host's own interfaces: without nsbox's bridges and veths, which other users make and delete meanwhile."""
    return [name for name in names if not name.startswith(("nsbr", "nsv"))]


def test_net_namespace_has_only_loopback_and_it_is_up(box_run: Any) -> None:
    host_before = _net_dev_names(_host_net_dev())
    host_links_before = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    r = box_run(["sh", "-c", "ip -o link && echo --- && cat /proc/net/dev"], net=True, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    links, dev = r.stdout.split("---\n")
    (lo,) = links.splitlines()
    m = re.match(r"\d+: (\S+): <([^>]*)>", lo)
    assert m, lo
    assert m.group(1) == "lo"
    assert {"UP", "LOWER_UP", "LOOPBACK"} <= set(m.group(2).split(","))
    assert _net_dev_names(dev) == ["lo"]
    # Host side: more than loopback, and its own interfaces unchanged.
    assert set(host_before) - {"lo"}, "the host should have a network interface besides lo"
    assert _own(_net_dev_names(_host_net_dev())) == _own(host_before)
    host_links_after = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    assert _own([line.split()[1] for line in host_links_after.splitlines()]) == _own(
        [line.split()[1] for line in host_links_before.splitlines()]
    )


def test_net_namespace_loopback_flags_in_its_own_sysfs() -> None:
    r = nsbox.run(
        ["sh", "-c", "mount -t sysfs nsbox-sysfs /sys && ls /sys/class/net && cat /sys/class/net/lo/flags"],
        net=True,
        mount=True,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    *names, flags = r.stdout.split()
    assert names == ["lo"]
    assert int(flags, 16) & 0x1, "IFF_UP is not set on lo"
    assert b"nsbox-sysfs" not in mountinfo()


def test_net_namespace_loopback_carries_traffic(python: str, box_run: Any) -> None:
    code = (
        "import socket; s = socket.create_server(('127.0.0.1', 0)); "
        "c = socket.create_connection(s.getsockname(), timeout=5); a, _ = s.accept(); "
        "c.sendall(b'ping'); print(a.recv(4).decode())"
    )
    r = box_run([python, "-c", code], net=True, capture_output=True, text=True)
    assert (r.returncode, r.stdout.strip()) == (0, "ping"), r.stderr


# ---------------------------------------------------------------------------------------------------------------
# MNT


def test_tmpfs_mounted_in_box_is_visible_inside_only() -> None:
    before = host_mounts()
    assert b"nsbox-test-tmpfs" not in mountinfo()
    r = nsbox.run(
        ["sh", "-c", "mount -t tmpfs nsbox-test-tmpfs /mnt && grep ' /mnt ' /proc/self/mountinfo"],
        mount=True,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert " - tmpfs nsbox-test-tmpfs " in r.stdout
    assert host_mounts() == before


def _expected_root_fields(propagation: str, host: list[str]) -> list[str] | str:
    """What the box's / should show, given the host's optional fields for /. A str is a regex."""
    host_shared = [f for f in host if f.startswith("shared:")]
    host_master = [f for f in host if f.startswith("master:")]
    if propagation == "private":
        return []
    if propagation == "shared":
        return host_shared or r"shared:\d+"
    if propagation == "slave":
        if host_shared:
            return ["master:" + host_shared[0].split(":")[1]]
        return host_master
    return host  # unchanged


@pytest.mark.parametrize("propagation", ["private", "slave", "shared", "unchanged"])
def test_mount_in_box_never_reaches_host_whatever_the_propagation(propagation: str) -> None:
    before = host_mounts()
    host_root = root_mount_optional_fields("\n".join(before))
    r = nsbox.run(
        ["sh", "-c", "mount -t tmpfs nsbox-prop-test /mnt && cat /proc/self/mountinfo"],
        mount=True,
        propagation=propagation,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert " - tmpfs nsbox-prop-test " in r.stdout
    assert host_mounts() == before
    box_root = root_mount_optional_fields(r.stdout)
    expected = _expected_root_fields(propagation, host_root)
    if isinstance(expected, str):
        assert len(box_root) == 1 and re.fullmatch(expected, box_root[0]), box_root
    else:
        assert box_root == expected, f"host / has {host_root}"


def test_default_propagation_is_private() -> None:
    r = nsbox.run(["cat", "/proc/self/mountinfo"], mount=True, capture_output=True, text=True, check=True)
    assert root_mount_optional_fields(r.stdout) == []


def test_propagation_under_a_shared_parent(python: str) -> None:
    # Hosts with systemd have a shared /. Simulate one inside an outer box whose / is shared, and look
    # at the inner boxes from there, so the real host is never touched.
    helper = textwrap.dedent(
        """
        import json, nsbox

        def root_fields(text):
            for line in text.splitlines():
                parts = line.split()
                if parts[4] == "/":
                    fields = parts[6 : parts.index("-")]
            return fields

        report = {"outer": root_fields(open("/proc/self/mountinfo").read())}
        for prop in ["private", "slave", "shared", "unchanged"]:
            before = host_mounts()  # the outer box's / is a peer of the host's: the host's scratch mounts show
            r = nsbox.run(["sh", "-c", "mount -t tmpfs nsbox-nested /mnt && cat /proc/self/mountinfo"],
                          mount=True, propagation=prop, capture_output=True, text=True, check=True)
            report[prop] = {"inner": root_fields(r.stdout), "outer_unchanged": host_mounts() == before}
        print(json.dumps(report))
        """
    )
    helper = "from __future__ import annotations\n" + inspect.getsource(host_mounts) + helper
    before = host_mounts()
    r = nsbox.run([python, "-c", helper], mount=True, propagation="shared", capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    (outer,) = report["outer"]
    assert re.fullmatch(r"shared:\d+", outer)
    group = outer.split(":")[1]
    assert report["private"]["inner"] == []
    assert report["slave"]["inner"] == [f"master:{group}"]
    assert report["shared"]["inner"] == [outer]
    assert report["unchanged"]["inner"] == [outer]
    # A private or slave box never pushes its mounts to its parent, even a shared one.
    assert report["private"]["outer_unchanged"]
    assert report["slave"]["outer_unchanged"]
    assert host_mounts() == before


def test_mount_proc_is_a_new_proc_mounted_nosuid_nodev_noexec() -> None:
    before = host_mounts()
    host_proc = [line for line in before if line.split()[4] == "/proc"]
    r = nsbox.run(["cat", "/proc/self/mountinfo"], pid=True, mount_proc=True, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    box_proc = [line for line in r.stdout.splitlines() if line.split()[4] == "/proc"]
    assert len(box_proc) == len(host_proc) + 1, "mount_proc should stack a new proc on /proc"
    parts = box_proc[-1].split()
    assert {"nosuid", "nodev", "noexec"} <= set(parts[5].split(","))
    assert parts[parts.index("-") + 1] == "proc"
    assert host_mounts() == before


# ---------------------------------------------------------------------------------------------------------------
# USER


def _id_map_fields(text: str) -> list[list[str]]:
    return [line.split() for line in text.strip().splitlines()]


def test_user_namespace_maps_caller_to_root_with_setgroups_denied() -> None:
    r = nsbox.run(
        ["sh", "-c", "id -u; id -g; cat /proc/self/uid_map; cat /proc/self/gid_map; cat /proc/self/setgroups"],
        user=True,
        capture_output=True,
        text=True,
        check=True,
    )
    uid, gid, uid_map, gid_map, setgroups = r.stdout.splitlines()
    assert (uid, gid) == ("0", "0")
    assert uid_map.split() == ["0", str(os.geteuid()), "1"]
    assert gid_map.split() == ["0", str(os.getegid()), "1"]
    assert setgroups == "deny"
    # Host side: the caller's own maps are the full initial ones.
    with open("/proc/self/uid_map") as f:
        assert f.read().split() == ["0", "0", "4294967295"]
    with open("/proc/self/setgroups") as f:
        assert f.read().strip() == "allow"


def test_explicit_id_maps_appear_inside_and_translate_host_owners(world_tmp: Path) -> None:
    # Host side of the map: files owned by host ids 100000 and 101000 are owned by 0 and 1000 inside;
    # a host id outside the map (root) shows as the overflow id.
    for name, owner in [("mapped-root", 100000), ("mapped-1000", 101000), ("unmapped", 0)]:
        (world_tmp / name).touch()
        os.chown(world_tmp / name, owner, owner)
    r = nsbox.run(
        [
            "sh",
            "-c",
            "cat /proc/self/uid_map; echo -; cat /proc/self/gid_map; echo -; cat /proc/self/setgroups; "
            "stat -c '%n %u %g' mapped-root mapped-1000 unmapped",
        ],
        uid_map=[(0, 100000, 65536)],
        gid_map=[(0, 100000, 65536)],
        cwd=world_tmp,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    uid_map, gid_map, rest = r.stdout.split("-\n")
    assert _id_map_fields(uid_map) == [["0", "100000", "65536"]]
    assert _id_map_fields(gid_map) == [["0", "100000", "65536"]]
    assert rest.splitlines() == ["deny", "mapped-root 0 0", "mapped-1000 1000 1000", "unmapped 65534 65534"]


def test_explicit_multi_range_map_with_setgroups_allowed() -> None:
    r = nsbox.run(
        ["sh", "-c", "cat /proc/self/uid_map; echo -; cat /proc/self/setgroups"],
        uid_map=[(0, 0, 1), (1, 200000, 1000)],
        gid_map=[(0, 0, 1), (1, 200000, 1000)],
        setgroups="allow",
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    uid_map, setgroups = r.stdout.split("-\n")
    assert _id_map_fields(uid_map) == [["0", "0", "1"], ["1", "200000", "1000"]]
    assert setgroups.strip() == "allow"


# ---------------------------------------------------------------------------------------------------------------
# cgroup


def _cgroup_lines(text: str) -> list[tuple[str, str, str]]:
    return [tuple(line.split(":", 2)) for line in text.strip().splitlines()]  # type: ignore[misc]


def test_cgroup_namespace_puts_the_box_at_the_root_of_every_hierarchy(box_run: Any) -> None:
    with open("/proc/self/cgroup") as f:
        host = _cgroup_lines(f.read())
    r = box_run(["cat", "/proc/self/cgroup"], cgroup=True, capture_output=True, text=True, check=True)
    inside = _cgroup_lines(r.stdout)
    assert ("0", "", "/") in inside, r.stdout
    assert [(h, c) for h, c, _ in inside] == [(h, c) for h, c, _ in host]
    assert all(path == "/" for _, _, path in inside), r.stdout
    not_root = [line for line in host if line[2] != "/"]
    assert not_root, "the test runner sits in the root cgroup of every hierarchy, so this test cannot tell"
    # The box is in the caller's cgroups: without cgroup=True it sees the host's paths.
    plain = nsbox.run(["cat", "/proc/self/cgroup"], capture_output=True, text=True, check=True)
    assert _cgroup_lines(plain.stdout) == host


# ---------------------------------------------------------------------------------------------------------------
# time

_CLOCKS = (
    "import time; print(time.clock_gettime(time.CLOCK_MONOTONIC), time.clock_gettime(time.CLOCK_BOOTTIME),"
    " open('/proc/uptime').read().split()[0])"
)


def _host_clocks() -> tuple[float, float]:
    return time.clock_gettime(time.CLOCK_MONOTONIC), time.clock_gettime(time.CLOCK_BOOTTIME)


@pytest.mark.parametrize(
    ("monotonic", "boottime"), [(None, None), (1000.0, None), (None, 100000.0), (2500.5, 86400.25)]
)
def test_time_offsets_shift_exactly_their_clocks_inside(python: str, monotonic: float, boottime: float) -> None:
    m0, b0 = _host_clocks()
    r = nsbox.run(
        [python, "-c", _CLOCKS],
        time=True,
        monotonic_offset=monotonic,
        boottime_offset=boottime,
        capture_output=True,
        text=True,
    )
    m1, b1 = _host_clocks()
    assert r.returncode == 0, r.stderr
    mono, boot, uptime = (float(x) for x in r.stdout.split())
    dm, db = monotonic or 0.0, boottime or 0.0
    eps = 0.001
    assert m0 + dm - eps <= mono <= m1 + dm + eps, (m0, mono, m1)
    assert b0 + db - eps <= boot <= b1 + db + eps, (b0, boot, b1)
    assert b0 + db - 0.01 - eps <= uptime <= b1 + db + 0.01 + eps, (b0, uptime, b1)
    # Host side: no offset here.
    with open("/proc/uptime") as f:
        host_uptime = float(f.read().split()[0])
    assert abs(host_uptime - time.clock_gettime(time.CLOCK_BOOTTIME)) < 1.0


@pytest.mark.parametrize("propagation", ["private", "slave", "shared", "unchanged"])
def test_mount_proc_never_covers_a_shared_parents_proc(python: str, propagation: str) -> None:
    # As unshare does, /proc is made private before the box's proc is mounted: even with shared
    # propagation under a shared parent, the parent keeps its own /proc (and its own processes in it).
    helper = textwrap.dedent(
        f"""
        import json, os, nsbox
        r = nsbox.run(["true"], pid=True, mount_proc=True, propagation={propagation!r})
        with open("/proc/self/mountinfo") as f:
            procs = [line for line in f if line.split()[4] == "/proc"]
        print(json.dumps({{"rc": r.returncode, "procs": len(procs), "me": os.path.exists(f"/proc/{{os.getpid()}}")}}))
        """
    )
    r = nsbox.run([python, "-c", helper], mount=True, propagation="shared", capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"rc": 0, "procs": 1, "me": True}


def test_root_chroots_before_proc_is_mounted(tiny_root: Path) -> None:
    before = host_mounts(tiny_root)
    script = "pwd; test -e /proc/1/status && echo proc; test -e /etc/passwd || echo no-etc"
    r = nsbox.run(["/bin/sh", "-c", script], root=tiny_root, pid=True, mount_proc=True, capture_output=True, text=True)
    assert (r.returncode, r.stdout) == (0, "/\nproc\nno-etc\n"), r.stderr
    # The host sees nothing mounted in that directory, and its own mounts unchanged.
    assert list((tiny_root / "proc").iterdir()) == []
    assert host_mounts(tiny_root) == before


def test_root_that_is_not_a_directory_is_refused_naming_it(tmp_path: Path) -> None:
    # Checked before anything is forked (issue 15): the error names the path, as subprocess's do.
    with pytest.raises(FileNotFoundError) as info:
        nsbox.run(["/bin/sh", "-c", "true"], root=tmp_path / "missing", mount=True)
    assert info.value.filename == str(tmp_path / "missing") and "root" in str(info.value)
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError) as not_dir:
        nsbox.run(["/bin/sh", "-c", "true"], root=tmp_path / "file")
    assert not_dir.value.filename == str(tmp_path / "file")


def test_explicit_maps_make_the_command_root_inside_and_unprivileged_outside(world_tmp: Path) -> None:
    # Root's own uid is not in these maps: the command must not keep host root's ids (unmapped, yet the
    # owner of root's files); it becomes uid 0 inside, which is 100000 on the host.
    secret = world_tmp / "root-only"
    secret.write_text("secret\n")
    secret.chmod(0o600)
    maps = {"uid_map": [(0, 100000, 65536)], "gid_map": [(0, 100000, 65536)]}
    script = f"id -u; id -g; cat {secret} 2>/dev/null || echo denied; touch {world_tmp}/made"
    r = nsbox.run(["sh", "-c", script], **maps, capture_output=True, text=True)
    assert r.stdout.split() == ["0", "0", "denied"], r.stderr
    made = (world_tmp / "made").stat()
    assert (made.st_uid, made.st_gid) == (100000, 100000)
    assert secret.read_text() == "secret\n"
    with nsbox.Popen(["sleep", "100"], pid=True, **maps) as box:
        uid_line = next(
            line for line in Path(f"/proc/{box.pid}/status").read_text().splitlines() if line.startswith("Uid:")
        )
        assert uid_line.split()[1:] == ["100000"] * 4
        # Entering it switches to root inside too, as nsenter does.
        assert box.exec(["id", "-u"], capture_output=True, text=True).stdout == "0\n"
        box.kill()
