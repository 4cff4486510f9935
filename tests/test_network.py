"""nsbox.Network: boxes with their own address, ports and routes, on a bridge, as root and rootless.

Every test looks from both sides: inside, the box's ``/proc/net/dev`` and ``/proc/net/route`` (which
follow the reader's network namespace) and what its servers answer; on the host, the test's own bridge,
its ports and veths (by name), the routes through them, and what the host can reach.

Other users of nsbox (a second copy of this suite, a notebook) make and delete bridges and veths on the
host at the same time: a test asserts only on the interfaces it made, and a LAN on the host takes a /24
picked at random among those no route of the host holds (``free_network``); the addresses a test needs are
derived from it (``at``).
"""

from __future__ import annotations

import errno
import inspect
import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from typing import Any

import pytest

import nsbox
from helpers.lan import (
    BAD_ADDRESSES,
    CLIENT,
    SERVER,
    at,
    client,
    fetch_from_host,
    host_links,
    ports,
    route_hex,
    start_server,
)
from helpers.namespaces import host_ns
from helpers.nets import free_network, free_subnet
from helpers.procs import children_of, kill_and_reap, open_fds, wait_until
from helpers.rootless import ROOTLESS_PYTHON, Rootless

# ---------------------------------------------------------------------------------------------------------------
# Two boxes on one network (root: the bridge is in the host's namespace)


def test_two_boxes_talk_over_tcp_and_each_sees_only_lo_and_eth0_with_its_own_routes(lan: nsbox.Network) -> None:
    server = start_server(lan, at(lan, 10), "alpha")
    url = f"http://{at(lan, 10)}:8000/"
    client_box = nsbox.Popen([ROOTLESS_PYTHON, "-c", CLIENT, url], network=lan, ip=at(lan, 11), stdout=subprocess.PIPE)
    try:
        out, _ = client_box.communicate(timeout=30)
        assert client_box.returncode == 0
        seen = json.loads(out)
        inside_server = server.exec(["cat", "/proc/net/dev", "/proc/net/route"], capture_output=True, text=True)
        # The client's veth was a port of the bridge beside the server's; it goes with the client's network
        # namespace, which the kernel frees a little after the client has exited.
        client_veth_gone = wait_until(lambda: client_box.veth not in host_links())
        on_bridge = ports(lan)
        server_ns = server.namespaces()["net"]
    finally:
        kill_and_reap(client_box)
        kill_and_reap(server)
    # Inside: the client reached the server's eth0 address, and sees only its own interfaces and routes.
    assert seen["answers"][0].startswith("alpha ")
    assert seen["devs"] == ["eth0", "lo"]
    assert ["eth0", "00000000", route_hex(at(lan, 1))] in seen["routes"]  # default via the gateway
    assert ["eth0", route_hex(at(lan, 0)), "00000000"] in seen["routes"]  # the subnet, on eth0
    assert "eth0:" in inside_server.stdout and "nsv" not in inside_server.stdout
    # Both boxes have a network namespace of their own, not the host's.
    assert seen["net"] != host_ns("net")
    assert server_ns != os.stat("/proc/self/ns/net").st_ino
    # On the host: each box had a veth on the bridge; the server's is the one left. The subnet's route is the
    # bridge's, and the host has no route through the boxes' gateway.
    assert client_veth_gone, f"the client's veth {client_box.veth} outlived it"
    assert on_bridge == [server.veth] and server.veth != client_box.veth
    with open("/proc/net/route") as routes:
        host_routes = routes.read()
    assert f"{lan.bridge}\t{route_hex(at(lan, 0))}" in host_routes
    assert f"\t00000000\t{route_hex(at(lan, 1))}" not in host_routes


def test_the_host_reaches_a_box_through_the_bridge_but_not_a_box_without_the_network(lan: nsbox.Network) -> None:
    on_lan = start_server(lan, at(lan, 20), "bridged")
    # A port of the host's loopback that stays ours (bound, not listening: a connection to it is refused) for
    # the box without the network to listen on, in its own namespace.
    with socket.socket() as reserved:
        reserved.bind(("127.0.0.1", 0))
        port = reserved.getsockname()[1]
        alone = nsbox.Popen(
            [sys.executable, "-c", SERVER, "0.0.0.0", str(port), "alone"],
            net=True,
            pid=True,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert alone.stdout is not None and alone.stdout.readline() == "ready\n"
            via_bridge = fetch_from_host(f"http://{at(lan, 20)}:8000/")
            to_alone = fetch_from_host(f"http://127.0.0.1:{port}/")
            alone_inside = alone.exec(
                [sys.executable, "-c", CLIENT, f"http://127.0.0.1:{port}/"], capture_output=True, text=True
            )
        finally:
            kill_and_reap(on_lan)
            kill_and_reap(alone)
    assert via_bridge.startswith("bridged ")
    # The server without the network is up (it answers inside its box) but the host cannot reach it.
    assert json.loads(alone_inside.stdout)["answers"][0].startswith("alone ")
    assert "Connection refused" in to_alone
    assert not fetch_from_host(f"http://{at(lan, 20)}:8000/").startswith("bridged")  # gone with its box


def test_two_boxes_bind_port_80_at_the_same_time(lan: nsbox.Network) -> None:
    first = start_server(lan, at(lan, 30), "first", port=80)
    try:
        second = start_server(lan, at(lan, 31), "second", port=80)
        try:
            answers = [fetch_from_host(f"http://{at(lan, n)}:80/") for n in (30, 31)]
            pids = [first.host_pid(1), second.host_pid(1)]
        finally:
            kill_and_reap(second)
    finally:
        kill_and_reap(first)
    # Each answer comes from PID 1 of its own box (inside), two different processes on the host.
    assert answers[0] == "first 1" and answers[1] == "second 1"
    assert pids == [first.pid, second.pid]
    assert first.pid != second.pid


def test_boxes_get_the_next_free_address_and_the_network_lists_them(lan: nsbox.Network) -> None:
    boxes = [nsbox.Popen(["sleep", "60"], network=lan) for _ in range(2)]
    try:
        assert [b.ip for b in boxes] == [at(lan, 2), at(lan, 3)]
        assert ports(lan) == sorted(b.veth for b in boxes)
        assert lan.boxes == boxes
        assert all(b.network is lan for b in boxes)
        boxes[0].kill()
        boxes[0].wait()
        assert lan.boxes == [boxes[1]]
        # The address of the box that exited is free again once the kernel has deleted its veth.
        assert wait_until(lambda: boxes[0].veth not in host_links())
        again = nsbox.Popen(["sleep", "60"], network=lan)
        boxes.append(again)
        assert again.ip == at(lan, 2)
        inside = again.exec([sys.executable, "-c", CLIENT], capture_output=True, text=True)
        assert json.loads(inside.stdout)["devs"] == ["eth0", "lo"]
    finally:
        for b in boxes:
            kill_and_reap(b)


def test_a_box_without_a_network_has_no_ip() -> None:
    with nsbox.Popen(["true"], net=True) as box:
        assert box.ip is None and box.network is None
    assert box.returncode == 0


# ---------------------------------------------------------------------------------------------------------------
# Nothing left behind


def test_closing_the_network_removes_the_bridge_and_every_veth_while_boxes_run() -> None:
    network = free_network()
    boxes = [nsbox.Popen(["sleep", "60"], network=network, pid=True) for _ in range(2)]
    try:
        made = {network.bridge, *(b.veth for b in boxes)}
        assert made <= host_links() and len(made) == 3
        assert ports(network) == sorted(b.veth for b in boxes)
        network.close()
        network.close()  # idempotent
        assert not made & host_links()
        # The boxes keep running, without their eth0.
        inside = boxes[0].exec([sys.executable, "-c", CLIENT], capture_output=True, text=True)
        assert json.loads(inside.stdout)["devs"] == ["lo"]
        with pytest.raises(ValueError, match="closed"):
            nsbox.Popen(["true"], network=network)
    finally:
        for b in boxes:
            kill_and_reap(b)


def test_a_crashed_box_leaves_no_veth(lan: nsbox.Network) -> None:
    box = nsbox.Popen(["sleep", "60"], network=lan)
    assert box.veth in host_links() and ports(lan) == [box.veth]
    os.kill(box.pid, signal.SIGKILL)
    box.wait()
    assert wait_until(lambda: box.veth not in host_links()), "the veth of a killed box is still there"
    assert ports(lan) == []
    assert lan.boxes == []


def test_a_failed_spawn_leaves_no_veth_and_frees_its_address(lan: nsbox.Network) -> None:
    with pytest.raises(FileNotFoundError):
        nsbox.Popen(["/nonexistent/program"], network=lan)
    assert ports(lan) == []  # the box's veth was made (a port of the bridge) before the exec failed
    assert lan.boxes == []
    with nsbox.Popen(["true"], network=lan) as box:
        assert box.ip == at(lan, 2)


KILLED_CALLER = f"""
from __future__ import annotations
import json, os, sys, time
import nsbox
{inspect.getsource(free_subnet)}
{inspect.getsource(free_network)}
lan = free_network()
boxes = [nsbox.Popen(["sleep", "300"], network=lan, pid=True) for _ in range(2)]
fd = lan.namespace_fd("net")
print(json.dumps({{"bridge": lan.bridge, "veths": [b.veth for b in boxes], "boxes": [b.pid for b in boxes],
                  "netns": os.fstat(fd).st_ino if fd is not None else None}}), flush=True)
time.sleep(300)
"""


def descendants(pid: int) -> dict[int, str]:
    """The processes below ``pid``, now: PID -> start time (which tells the process from a later one given its PID)."""
    found, todo = {}, [pid]
    while todo:
        for child in children_of(todo.pop()):
            found[child] = started_at(child)
            todo.append(child)
    return found


def started_at(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (FileNotFoundError, ProcessLookupError):
        return ""


def still_there(processes: dict[int, str]) -> list[int]:
    """Those of ``processes`` that still exist (zombies included): the same PID, started at the same time."""
    return [pid for pid, start in processes.items() if start and started_at(pid) == start]


def namespace_in_use(inode: int) -> bool:
    """Whether any process has, or holds an fd of, the network namespace ``inode``.

    Only while the namespace is known to exist does its inode name it: the kernel gives a freed namespace's
    number to the next namespace made, anyone's. Once it may be gone, ask about the processes that could hold it.
    """
    link = f"net:[{inode}]"
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.readlink(f"/proc/{pid}/ns/net") == link:
                return True
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == link:
                    return True
        except OSError:
            continue
    return False


@pytest.mark.parametrize("private", [False, True], ids=["host-bridge", "private"])
def test_a_killed_caller_leaves_no_bridge_veth_box_or_namespace(
    private: bool, world_tmp: Any, rootless_dir: Any
) -> None:
    script = world_tmp / "caller.py"
    script.write_text(KILLED_CALLER)
    script.chmod(0o644)
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(nsbox.__file__))}
    if private:
        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", str(script)]
        env["PYTHONPATH"] = str(rootless_dir)  # conftest's world-readable copy of the package
    else:
        cmd = [sys.executable, str(script)]
    caller = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert caller.stdout is not None
        seen = json.loads(caller.stdout.readline())
        made = {seen["bridge"], *seen["veths"]}
        tree = descendants(caller.pid)  # the boxes, and whatever else nsbox started for the caller
        assert set(seen["boxes"]) <= tree.keys()
        if private:
            assert not made & host_links()
            assert namespace_in_use(seen["netns"])
        else:
            assert made <= host_links() and len(made) == 3
        caller.kill()
        caller.wait()
        gone = wait_until(lambda: not made & host_links() and not still_there(tree))
        left = still_there(tree)
        # With them went whatever held the private LAN's namespace (the caller's fds, the boxes, nsbox's helpers).
        assert gone, f"left behind: {made & host_links()}, processes {left}"
    finally:
        kill_and_reap(caller)


def test_a_network_leaves_no_fds_behind() -> None:
    def both() -> None:
        with free_network() as network, nsbox.Popen(["true"], network=network):
            pass
        with nsbox.Network("10.213.10.0/24", private=True) as network, nsbox.Popen(["true"], network=network):
            pass

    both()  # warm up: what nsbox makes once per process, the first time it needs it (the helper's memfd)
    before = open_fds()
    both()
    assert open_fds() == before


# ---------------------------------------------------------------------------------------------------------------
# A private network, as root


def test_a_private_network_is_invisible_to_the_host_and_its_boxes_still_talk() -> None:
    # A private LAN's subnet is its own: any will do (10.213.0.0/16 is left out of the host's LANs here).
    with nsbox.Network("10.213.11.0/24", private=True) as network:
        assert network.private
        server = start_server(network, "10.213.11.5", "hidden")
        try:
            made = {network.bridge, server.veth}
            assert made <= set(network.interfaces())
            assert not made & host_links()
            seen = client("http://10.213.11.5:8000/", network=network)
            from_host = fetch_from_host("http://10.213.11.5:8000/")
            with open("/proc/net/route") as f:
                routes_via_lan = [line for line in f if line.split("\t")[0] in made]
            userns = server.namespaces()["user"]
        finally:
            kill_and_reap(server)
    assert seen["answers"][0].startswith("hidden ")
    assert seen["devs"] == ["eth0", "lo"]
    # The host has no route into the LAN (its request goes wherever its default route leads).
    assert routes_via_lan == []
    assert not from_host.startswith("hidden")
    # The box lives in the network's user namespace, not the host's.
    assert userns != os.stat("/proc/self/ns/user").st_ino


# ---------------------------------------------------------------------------------------------------------------
# Rootless


def test_rootless_boxes_on_a_user_owned_network_talk_and_bind_port_80(rootless: Rootless) -> None:
    seen = rootless(
        f"""
        SERVER, CLIENT = {SERVER!r}, {CLIENT!r}
        with nsbox.Network("10.213.14.0/24") as lan:
            servers = []
            for n in (5, 6):
                box = nsbox.Popen(["python3", "-c", SERVER, f"10.213.14.{{n}}", "80", f"box{{n}}"], network=lan,
                                  ip=f"10.213.14.{{n}}", pid=True, stdout=subprocess.PIPE, text=True)
                assert box.stdout.readline() == "ready\\n"
                servers.append(box)
            r = nsbox.run(["python3", "-c", CLIENT, "http://10.213.14.5/", "http://10.213.14.6/"], network=lan,
                          capture_output=True, text=True)
            during = sorted(os.listdir("/sys/class/net"))
            deadline = time.monotonic() + 30  # the client's veth goes with its namespace, soon after it exits
            while len([i for i in lan.interfaces() if i.startswith("nsv")]) > 2 and time.monotonic() < deadline:
                time.sleep(0.02)
            userns = [os.readlink(f"/proc/{{b.pid}}/ns/user") for b in servers]
            netns = [os.readlink(f"/proc/{{b.pid}}/ns/net") for b in servers]
            info = {{"private": lan.private, "bridge": lan.bridge, "interfaces": lan.interfaces()}}
            for box in servers:
                box.kill()
                box.wait()
        emit({{"client": json.loads(r.stdout) if r.returncode == 0 else r.stderr, "during": during, "userns": userns,
              "netns": netns, "my_userns": os.readlink("/proc/self/ns/user"),
              "my_netns": os.readlink("/proc/self/ns/net"), **info}})
        """
    )
    client_seen = seen["client"]
    assert isinstance(client_seen, dict), client_seen
    assert client_seen["answers"] == ["box5 1", "box6 1"]
    assert client_seen["devs"] == ["eth0", "lo"]
    assert ["eth0", "00000000", route_hex("10.213.14.1")] in client_seen["routes"]
    assert seen["private"] is True
    # The LAN lives in its own namespace: it has the bridge and the servers' veths, and the host has none of them.
    made = {seen["bridge"], *(i for i in seen["interfaces"] if i.startswith("nsv"))}
    assert seen["bridge"] in seen["interfaces"]
    assert len(made) == 3
    assert not made & set(seen["during"])
    # Both boxes share the network's user namespace (not the caller's); each has its own network namespace.
    assert seen["userns"][0] == seen["userns"][1] != seen["my_userns"]
    assert len({*seen["netns"], seen["my_netns"]}) == 3


def test_rootless_network_leaves_no_namespace_or_fd_behind(rootless: Rootless) -> None:
    seen = rootless(
        """
        def fds():
            return sorted(os.readlink(f"/proc/self/fd/{n}") for n in os.listdir("/proc/self/fd")
                          if os.path.exists(f"/proc/self/fd/{n}"))
        def tree():  # this process and those below it
            found, todo = {os.getpid()}, [os.getpid()]
            while todo:
                parent = todo.pop()
                for pid in filter(str.isdigit, os.listdir("/proc")):
                    try:
                        stat = open(f"/proc/{pid}/stat").read()
                    except OSError:
                        continue
                    if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                        found.add(int(pid))
                        todo.append(int(pid))
            return found

        def holds(pid, link):
            try:
                return os.readlink(f"/proc/{pid}/ns/net") == link or any(
                    os.readlink(f"/proc/{pid}/fd/{n}") == link for n in os.listdir(f"/proc/{pid}/fd"))
            except OSError:
                return False

        before = fds()
        lan = nsbox.Network("10.213.15.0/24")
        fd = lan.namespace_fd("net")
        link = f"net:[{os.fstat(fd).st_ino}]"
        os.close(fd)
        with nsbox.Popen(["sleep", "60"], network=lan, pid=True) as box:
            during = tree()  # the box, and whatever else nsbox runs for the LAN or the box
            held_during = sorted(p for p in during if holds(p, link))
            box.kill()
        lan.close()
        after = fds()
        # The namespace's number names it only while it exists: look at what could hold it, our own processes.
        emit({"before": before, "after": after, "me": os.getpid(), "held_during": held_during,
              "held_after": sorted(p for p in during | tree() if holds(p, link))})
        """
    )
    assert seen["before"] == seen["after"]
    assert seen["held_during"] == [seen["me"]]  # the control: a holder shows (the LAN's fd, ours)
    assert seen["held_after"] == []


# ---------------------------------------------------------------------------------------------------------------
# With the other options, and under load


@pytest.mark.parametrize(
    "options",
    [
        {"user": True},
        {"init": True, "mount_proc": True},
        {"uid_map": [(0, 100000, 1000)], "gid_map": [(0, 100000, 1000)]},  # maps written by the parent
        {"mount": True, "uts": True, "ipc": True, "cgroup": True, "time": True},
    ],
    ids=["user", "init", "parent-written-maps", "every-other-namespace"],
)
def test_a_box_on_a_network_takes_the_other_options(lan: nsbox.Network, options: dict[str, Any]) -> None:
    server = start_server(lan, at(lan, 40), "server")
    try:
        seen = client(f"http://{at(lan, 40)}:8000/", network=lan, **options)
        r = nsbox.run(["id", "-u"], network=lan, capture_output=True, text=True, **options)
    finally:
        kill_and_reap(server)
    assert seen["answers"][0].startswith("server ")
    assert seen["devs"] == ["eth0", "lo"]
    assert r.stdout.strip() == "0"


def test_concurrent_boxes_on_one_network_all_get_their_own_address_and_reach_the_server(lan: nsbox.Network) -> None:
    from concurrent.futures import ThreadPoolExecutor

    server = start_server(lan, at(lan, 250), "busy")
    try:

        def one(_: int) -> tuple[str, str]:
            box = nsbox.Popen(
                [sys.executable, "-c", CLIENT, f"http://{at(lan, 250)}:8000/"],
                network=lan,
                stdout=subprocess.PIPE,
                text=True,
            )
            out, _ = box.communicate(timeout=30)
            assert box.returncode == 0
            return box.ip or "", json.loads(out)["answers"][0]

        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(one, range(24)))
        # Only the server's veth stays on the bridge (the kernel deletes the others with their namespaces).
        only_server = wait_until(lambda: ports(lan) == [server.veth])
    finally:
        kill_and_reap(server)
    assert all(answer.startswith("busy ") for _, answer in results), results
    # Addresses are reused once a box exits, but never shared by two running boxes: every request got through.
    assert {ip for ip, _ in results} <= {str(a) for a in lan.subnet.hosts()}
    assert only_server, ports(lan)


def test_rootless_host_bridge_is_refused_with_a_hint_and_leaves_nothing(rootless: Rootless) -> None:
    seen = rootless(
        """
        try:
            nsbox.Network("10.213.16.0/24", private=False)
            result = "made"
        except PermissionError as exc:
            result = str(exc)
        def parent(pid):
            try:
                return int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
            except OSError:
                return None  # gone since listdir
        children = [p for p in os.listdir("/proc") if p.isdigit() and parent(p) == os.getpid()]
        emit({"result": result, "children": children, "links": sorted(os.listdir("/sys/class/net"))})
        """
    )
    named = re.search(r"cannot create the bridge (nsbr[0-9a-f]+)", seen["result"])
    assert named, seen["result"]
    assert "private=True" in seen["result"]
    assert seen["children"] == []
    assert named.group(1) not in seen["links"] and named.group(1) not in host_links()


# ---------------------------------------------------------------------------------------------------------------
# nsbox.call on a network


def _fetch_and_look(url: str) -> dict[str, Any]:
    """Runs in the box: what a client sees (interfaces, routes, the page, its PID)."""
    with open("/proc/net/dev") as dev, open("/proc/net/route") as route:
        devs = sorted(line.split(":")[0].strip() for line in dev.read().splitlines()[2:])
        routes = [line.split()[:3] for line in route.read().splitlines()[1:]]
    page = urllib.request.urlopen(url, timeout=5).read().decode()
    return {"devs": devs, "routes": routes, "page": page, "pid": os.getpid(), "net": os.readlink("/proc/self/ns/net")}


def test_a_function_called_on_a_network_reaches_a_box_on_it(lan: nsbox.Network) -> None:
    server = start_server(lan, at(lan, 60), "served")
    url = f"http://{at(lan, 60)}:8000/"
    try:
        seen = nsbox.call(_fetch_and_look, [url], network=lan, ip=at(lan, 61), pid=True)
        plain = nsbox.call(_fetch_and_look, [url], network=lan)
        members = lan.boxes
    finally:
        kill_and_reap(server)
    assert seen["page"].startswith("served ") and plain["page"].startswith("served ")
    assert seen["devs"] == ["eth0", "lo"]
    assert ["eth0", "00000000", route_hex(at(lan, 1))] in seen["routes"]
    assert seen["pid"] == 1 and seen["net"] != host_ns("net")
    assert members == [server]  # the functions' processes are gone, and so is their place on the network
    with pytest.raises(ValueError, match="outside"):
        nsbox.call(os.getpid, network=lan, ip=BAD_ADDRESSES["outside"](lan.subnet))
    with pytest.raises(ValueError, match="without a network"):
        nsbox.call(os.getpid, ip=at(lan, 9))


def test_rootless_function_called_on_a_private_network_reaches_a_box_on_it(rootless: Rootless) -> None:
    seen = rootless(
        f"""
        SERVER = {SERVER!r}
        def look(url):
            import urllib.request
            devs = sorted(l.split(":")[0].strip() for l in open("/proc/net/dev").read().splitlines()[2:])
            return devs, urllib.request.urlopen(url, timeout=5).read().decode(), os.getpid()
        with nsbox.Network("10.213.17.0/24") as lan:
            box = nsbox.Popen(["python3", "-c", SERVER, "10.213.17.5", "80", "web"], network=lan, ip="10.213.17.5",
                              pid=True, stdout=subprocess.PIPE, text=True)
            assert box.stdout.readline() == "ready\\n"
            devs, page, pid = nsbox.call(look, ["http://10.213.17.5/"], network=lan, pid=True)
            box.kill()
            box.wait()
        emit({{"devs": devs, "page": page, "pid": pid, "private": lan.private}})
        """
    )
    assert seen == {"devs": ["eth0", "lo"], "page": "web 1", "pid": 1, "private": True}


def _spawn_on_a_deleted_bridge() -> dict[str, Any]:
    """In a network namespace of its own (``nsbox.call``), whose interfaces are all this test's: a LAN whose
    bridge is deleted behind nsbox's back, and a box started on it."""
    lan = nsbox.Network("10.213.18.0/24")
    try:
        subprocess.run(["ip", "link", "del", lan.bridge], check=True)
        before = sorted(name for _, name in socket.if_nameindex())
        try:
            nsbox.Popen(["true"], network=lan)
            error = None
        except OSError as exc:
            error = [exc.errno, str(exc)]
        after = sorted(name for _, name in socket.if_nameindex())
        return {"bridge": lan.bridge, "error": error, "before": before, "after": after, "freed": lan._members == {}}
    finally:
        lan.close()


def test_a_box_whose_bridge_was_deleted_under_it_gets_an_os_error_naming_the_step() -> None:
    seen = nsbox.call(_spawn_on_a_deleted_bridge, net=True, timeout=60)
    message = f"cannot connect the box to {seen['bridge']}, which no longer exists: No such device"
    assert seen["error"] is not None and seen["error"][0] == errno.ENODEV and message in seen["error"][1], seen
    # Nothing half-made: no veth (any interface new in the namespace is one), no child, the address free again.
    assert seen["after"] == seen["before"] == ["lo"]
    assert seen["freed"]
