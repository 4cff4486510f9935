"""The main experiments again, as the unprivileged user 65534 (no sudo, no capabilities).

Each runs a function of ``bodies.py`` in the unprivileged interpreter (the ``body`` fixture).
"""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from helpers.namespaces import NAMESPACES, OPTION_FOR, host_ns
from helpers.procs import proc_comm
from helpers.rootless import NOBODY, Body


def test_rootless_harness_runs_as_nobody_without_capabilities(body: Body) -> None:
    seen = body("rootless", "ids_and_capabilities")
    assert seen["ids"] == [NOBODY] * 4
    assert int(seen["capeff"], 16) == 0


def test_rootless_pid_namespace_shows_ps_as_pid_1(body: Body) -> None:
    seen = body("rootless", "ps_in_a_pid_namespace")
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
def test_rootless_namespace_option_creates_that_namespace_and_a_user_namespace(body: Body, ns: str) -> None:
    seen = body("rootless", "namespace_links", names=list(NAMESPACES), option=OPTION_FOR[ns])
    # The unprivileged caller's namespaces are the test runner's.
    assert seen["host"] == {n: host_ns(n) for n in NAMESPACES}
    changed = {n for n in NAMESPACES if seen["inside"][n] != seen["host"][n]}
    assert changed == {ns, "user"}


def test_rootless_hostname_is_set_inside_and_host_hostname_unchanged(body: Body) -> None:
    before = socket.gethostname()
    seen = body("rootless", "hostname_inside_and_outside", hostname="rootless-box")
    assert seen["rc"] == 0, seen["err"]
    assert seen["out"] == ["rootless-box", "rootless-box"]
    assert seen["before"] == seen["after"] == before == socket.gethostname()


def test_rootless_net_namespace_has_only_loopback_up(body: Body) -> None:
    seen = body("rootless", "links_in_a_network_namespace")
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


def test_rootless_user_namespace_maps_own_ids_to_root(body: Body) -> None:
    seen = body("rootless", "ids_and_maps_in_a_user_namespace")
    assert seen["rc"] == 0, seen["err"]
    uid, gid, uid_map, gid_map, setgroups = seen["out"]
    assert (uid, gid) == ("0", "0")
    assert uid_map.split() == ["0", str(NOBODY), "1"]
    assert gid_map.split() == ["0", str(NOBODY), "1"]
    assert setgroups == "deny"


def test_rootless_file_made_inside_belongs_to_the_caller_on_the_host(body: Body, world_tmp: Path) -> None:
    target = world_tmp / "made-by-rootless-box"
    seen = body("rootless", "owner_of_a_file_made_inside", target=str(target))
    assert seen["rc"] == 0, seen["err"]
    assert seen["out"] == "0 0"  # root inside ...
    st = target.stat()
    assert (st.st_uid, st.st_gid) == (NOBODY, NOBODY)  # ... nobody on the host


def test_rootless_user_false_with_net_names_the_network_namespace(body: Body) -> None:
    seen = body("rootless", "refusal", options={"net": True, "user": False})
    assert seen is not None, "net=True, user=False succeeded without privileges"
    assert seen["type"] == "PermissionError"
    assert seen["errno"] == 1
    assert "cannot create the network namespace" in seen["message"]


def test_rootless_uid_map_of_another_id_is_refused_naming_the_uid_map(body: Body) -> None:
    seen = body("rootless", "refusal", options={"uid_map": [(0, 0, 1)]})
    assert seen is not None, "mapping uid 0 succeeded without privileges"
    assert seen["type"] == "PermissionError"
    assert seen["errno"] == 1
    assert "uid map" in seen["message"]


def test_rootless_cgroup_namespace_roots_the_box(body: Body) -> None:
    seen = body("rootless", "cgroups_inside_and_outside")
    assert "0::/" in seen["inside"]
    assert all(line.endswith(":/") for line in seen["inside"])
    assert any(not line.endswith(":/") for line in seen["host"])


def test_rootless_time_offset_shifts_uptime(body: Body) -> None:
    seen = body("rootless", "uptime_with_a_boottime_offset", offset=50000)
    assert seen["before"] + 50000 - 0.02 <= seen["inside"] <= seen["after"] + 50000 + 0.02


def test_rootless_runs_leave_no_processes_and_no_fds(body: Body) -> None:
    seen = body("rootless", "what_many_runs_leave")
    assert seen["children"] == []
    assert seen["fds_after"] == seen["fds_before"]
