"""The main experiments again, as the unprivileged user 65534 (no sudo, no capabilities)."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from helpers.namespaces import NAMESPACES, OPTION_FOR, host_ns
from helpers.procs import proc_comm
from helpers.rootless import NOBODY, Rootless


def test_rootless_harness_runs_as_nobody_without_capabilities(rootless: Rootless) -> None:
    seen = rootless(
        """
        status = dict(l.split(":\\t", 1) for l in open("/proc/self/status").read().splitlines() if ":\\t" in l)
        emit({"ids": [os.getuid(), os.geteuid(), os.getgid(), os.getegid()], "capeff": status["CapEff"]})
        """
    )
    assert seen["ids"] == [NOBODY] * 4
    assert int(seen["capeff"], 16) == 0


def test_rootless_pid_namespace_shows_ps_as_pid_1(rootless: Rootless) -> None:
    seen = rootless(
        """
        r = nsbox.run(["ps", "-ef"], pid=True, mount_proc=True, capture_output=True, text=True)
        with nsbox.Popen(["sleep", "1000"], pid=True) as p:
            try:
                nspid = [l.split()[1:] for l in open(f"/proc/{p.pid}/status") if l.startswith("NSpid:")][0]
                host_pid = p.pid
            finally:
                p.kill()
        emit({"rc": r.returncode, "stdout": r.stdout, "stderr": r.stderr, "nspid": nspid, "host_pid": host_pid,
              "box_rc": p.returncode})
        """
    )
    assert seen["rc"] == 0, seen["stderr"]
    header, *rows = seen["stdout"].splitlines()
    assert header.split()[:3] == ["UID", "PID", "PPID"]
    assert len(rows) == 1, seen["stdout"]
    fields = rows[0].split(None, 7)
    # uid 0 inside (the user namespace nsbox adds for an unprivileged caller), PID 1, parent 0.
    assert (fields[0], fields[1], fields[2], fields[7]) == ("root", "1", "0", "ps -ef")
    assert seen["host_pid"] != 1
    assert seen["nspid"][0] == str(seen["host_pid"]) and seen["nspid"][-1] == "1"
    assert seen["box_rc"] == -9
    assert proc_comm(seen["host_pid"]) != "sleep"


@pytest.mark.parametrize("ns", NAMESPACES)
def test_rootless_namespace_option_creates_that_namespace_and_a_user_namespace(rootless: Rootless, ns: str) -> None:
    seen = rootless(
        f"""
        names = {list(NAMESPACES)!r}
        host = {{n: os.readlink(f"/proc/self/ns/{{n}}") for n in names}}
        r = nsbox.run(["readlink", *(f"/proc/self/ns/{{n}}" for n in names)], {OPTION_FOR[ns]}=True,
                      capture_output=True, text=True, check=True)
        emit({{"host": host, "inside": dict(zip(names, r.stdout.split()))}})
        """
    )
    # The unprivileged caller's namespaces are the test runner's.
    assert seen["host"] == {n: host_ns(n) for n in NAMESPACES}
    changed = {n for n in NAMESPACES if seen["inside"][n] != seen["host"][n]}
    assert changed == {ns, "user"}


def test_rootless_hostname_is_set_inside_and_host_hostname_unchanged(rootless: Rootless) -> None:
    before = socket.gethostname()
    seen = rootless(
        """
        before = socket.gethostname()
        r = nsbox.run(["sh", "-c", "hostname; uname -n"], hostname="rootless-box", capture_output=True, text=True)
        emit({"before": before, "after": socket.gethostname(), "rc": r.returncode, "out": r.stdout.split(),
              "err": r.stderr})
        """
    )
    assert seen["rc"] == 0, seen["err"]
    assert seen["out"] == ["rootless-box", "rootless-box"]
    assert seen["before"] == seen["after"] == before == socket.gethostname()


def test_rootless_net_namespace_has_only_loopback_up(rootless: Rootless) -> None:
    seen = rootless(
        """
        r = nsbox.run(["sh", "-c", "ip -o link && echo @@ && cat /proc/net/dev"], net=True,
                      capture_output=True, text=True)
        emit({"rc": r.returncode, "out": r.stdout, "err": r.stderr, "host": open("/proc/net/dev").read()})
        """
    )
    assert seen["rc"] == 0, seen["err"]
    links, dev = seen["out"].split("@@\n")
    (lo,) = links.splitlines()
    m = re.match(r"\d+: lo: <([^>]*)>", lo)
    assert m and "UP" in m.group(1).split(","), lo
    assert [line.split(":")[0].strip() for line in dev.splitlines()[2:]] == ["lo"]
    # The host's own interfaces (nsbox's bridges and veths come and go with other users) are unchanged.
    host_names = [name for name in _dev_names(seen["host"]) if not name.startswith(("nsbr", "nsv"))]
    assert set(host_names) - {"lo"}
    with open("/proc/net/dev") as f:
        assert [name for name in _dev_names(f.read()) if not name.startswith(("nsbr", "nsv"))] == host_names


def _dev_names(net_dev: str) -> list[str]:
    return [line.split(":")[0].strip() for line in net_dev.splitlines()[2:]]


def test_rootless_user_namespace_maps_own_ids_to_root(rootless: Rootless) -> None:
    seen = rootless(
        """
        r = nsbox.run(["sh", "-c", "id -u; id -g; cat /proc/self/uid_map; cat /proc/self/gid_map; "
                       "cat /proc/self/setgroups"], user=True, capture_output=True, text=True)
        emit({"rc": r.returncode, "out": r.stdout.splitlines(), "err": r.stderr})
        """
    )
    assert seen["rc"] == 0, seen["err"]
    uid, gid, uid_map, gid_map, setgroups = seen["out"]
    assert (uid, gid) == ("0", "0")
    assert uid_map.split() == ["0", str(NOBODY), "1"]
    assert gid_map.split() == ["0", str(NOBODY), "1"]
    assert setgroups == "deny"


def test_rootless_file_made_inside_belongs_to_the_caller_on_the_host(rootless: Rootless, world_tmp: Path) -> None:
    target = world_tmp / "made-by-rootless-box"
    seen = rootless(
        f"""
        r = nsbox.run(["sh", "-c", "touch {target} && stat -c '%u %g' {target}"], pid=True,
                      capture_output=True, text=True)
        emit({{"rc": r.returncode, "out": r.stdout.strip(), "err": r.stderr}})
        """
    )
    assert seen["rc"] == 0, seen["err"]
    assert seen["out"] == "0 0"  # root inside ...
    st = target.stat()
    assert (st.st_uid, st.st_gid) == (NOBODY, NOBODY)  # ... nobody on the host


def test_rootless_user_false_with_net_names_the_network_namespace(rootless: Rootless) -> None:
    seen = rootless(
        """
        try:
            nsbox.run(["true"], net=True, user=False)
        except OSError as e:
            emit({"type": type(e).__name__, "errno": e.errno, "message": str(e)})
        else:
            emit(None)
        """
    )
    assert seen is not None, "net=True, user=False succeeded without privileges"
    assert seen["type"] == "PermissionError"
    assert seen["errno"] == 1
    assert "cannot create the network namespace" in seen["message"]


def test_rootless_uid_map_of_another_id_is_refused_naming_the_uid_map(rootless: Rootless) -> None:
    seen = rootless(
        """
        try:
            nsbox.run(["true"], uid_map=[(0, 0, 1)])
        except OSError as e:
            emit({"type": type(e).__name__, "errno": e.errno, "message": str(e)})
        else:
            emit(None)
        """
    )
    assert seen is not None, "mapping uid 0 succeeded without privileges"
    assert seen["type"] == "PermissionError"
    assert seen["errno"] == 1
    assert "uid map" in seen["message"]


def test_rootless_cgroup_namespace_roots_the_box(rootless: Rootless) -> None:
    seen = rootless(
        """
        r = nsbox.run(["cat", "/proc/self/cgroup"], cgroup=True, capture_output=True, text=True, check=True)
        emit({"inside": r.stdout.splitlines(), "host": open("/proc/self/cgroup").read().splitlines()})
        """
    )
    assert "0::/" in seen["inside"]
    assert all(line.endswith(":/") for line in seen["inside"])
    assert any(not line.endswith(":/") for line in seen["host"])


def test_rootless_time_offset_shifts_uptime(rootless: Rootless) -> None:
    seen = rootless(
        """
        before = time.clock_gettime(time.CLOCK_BOOTTIME)
        r = nsbox.run(["cat", "/proc/uptime"], time=True, boottime_offset=50000, capture_output=True, text=True,
                      check=True)
        after = time.clock_gettime(time.CLOCK_BOOTTIME)
        emit({"before": before, "inside": float(r.stdout.split()[0]), "after": after})
        """
    )
    assert seen["before"] + 50000 - 0.02 <= seen["inside"] <= seen["after"] + 50000 + 0.02


def test_rootless_runs_leave_no_processes_and_no_fds(rootless: Rootless) -> None:
    seen = rootless(
        """
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
                stat = open(f"/proc/{pid}/stat").read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid():
                kids.append(pid)
        emit({"children": kids, "fds_before": fds_before, "fds_after": sorted(os.listdir("/proc/self/fd"))})
        """
    )
    assert seen["children"] == []
    assert seen["fds_after"] == seen["fds_before"]
