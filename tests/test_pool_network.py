"""nsbox.Pool(network=lan): ready sets already on a Network, a box that takes one indistinguishable from one without.

A pooled box and an unpooled box on the same network are run side by side (``pooled`` parametrizes the tests):
what the box sees inside (its interfaces, address, routes, resolver), what the host sees (the veth on the bridge,
the address the network lists for the box), and whether it took a set (``Pool.stats``: the control that says the
pooled run did use the pool). As in ``test_network.py``, a LAN on the host takes a free /24 picked at run time
(``free_network``) and the tests assert only on the interfaces they made.
"""

from __future__ import annotations

import functools
import gc
import inspect
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

import nsbox
from helpers.lan import CLIENT, SERVER, at, fetch_from_host, host_links, ports, route_hex, start_server
from helpers.nets import free_network, free_subnet
from helpers.procs import kill_and_reap, open_fds, wait_until
from helpers.rootless import ROOTLESS_PYTHON, Rootless

#: What a box on a network sees: its interfaces, IPv4 addresses, routes, resolver and network namespace.
LOOK = """
import json, os, socket, fcntl, struct
devs = sorted(line.split(":")[0].strip() for line in open("/proc/net/dev").read().splitlines()[2:])
routes = [line.split()[:3] for line in open("/proc/net/route").read().splitlines()[1:]]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
addr = socket.inet_ntoa(fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", b"eth0"))[20:24])  # SIOCGIFADDR
mtu = int(open("/sys/class/net/eth0/mtu").read()) if os.path.exists("/sys/class/net/eth0/mtu") else None
flags = int(open("/sys/class/net/eth0/flags").read(), 16) if os.path.exists("/sys/class/net/eth0/flags") else None
print(json.dumps({"devs": devs, "routes": routes, "addr": addr, "resolv": open("/etc/resolv.conf").read(),
                  "net": os.readlink("/proc/self/ns/net"), "user": os.readlink("/proc/self/ns/user")}))
"""


def wait_ready(pool: nsbox.Pool, n: int) -> bool:
    """Whether ``n`` sets are ready before the deadline (the pool makes them in the background)."""
    return wait_until(lambda: pool.stats().ready >= n)


@pytest.fixture
def lan_pool(lan: nsbox.Network) -> Iterator[tuple[nsbox.Network, nsbox.Pool]]:
    with nsbox.Pool(size=3, network=lan, pid=True) as pool:
        assert wait_ready(pool, 3), pool.stats()
        yield lan, pool


def start(pool: nsbox.Pool, lan: nsbox.Network, pooled: bool, args: list[str], **options: Any) -> nsbox.Popen:
    """A box on ``lan``, from ``pool`` or from ``nsbox.Popen`` with the pool's options."""
    if pooled:
        return pool.Popen(args, **options)
    return nsbox.Popen(args, network=lan, pid=True, **options)


# ---------------------------------------------------------------------------------------------------------------
# The box, pooled or not


@pytest.mark.parametrize("pooled", [False, True], ids=["unpooled", "pooled"])
def test_a_box_sees_eth0_with_its_address_routes_and_resolver_as_without_a_pool(
    lan_pool: tuple[nsbox.Network, nsbox.Pool], pooled: bool
) -> None:
    lan, pool = lan_pool
    before = pool.stats()
    with start(
        pool,
        lan,
        pooled,
        [sys.executable, "-c", LOOK + "\nimport sys; sys.stdin.read()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as box:
        on_bridge = ports(lan)
        listed = [b.ip for b in lan.boxes]
        out, _ = box.communicate("", timeout=30)
    after = pool.stats()
    seen = json.loads(out)
    # The control: the pooled box took a ready set (and the pool had one), the other did not touch the pool.
    assert after.taken - before.taken == (1 if pooled else 0)
    assert after.missed == before.missed
    # Inside: lo and eth0, eth0 holding the address the network gave the box, routes through the gateway.
    assert seen["devs"] == ["eth0", "lo"]
    assert seen["addr"] == box.ip and box.ip in listed
    assert ["eth0", "00000000", route_hex(at(lan, 1))] in seen["routes"]
    assert ["eth0", route_hex(at(lan, 0)), "00000000"] in seen["routes"]
    assert len(seen["routes"]) == 2
    with open("/etc/resolv.conf") as host_resolv:
        assert seen["resolv"] == host_resolv.read()
    assert seen["net"] != os.readlink("/proc/self/ns/net")
    # On the host: the box's veth is a port of the bridge while it runs, beside the pool's ready sets' veths.
    assert box.veth in on_bridge


@pytest.mark.parametrize("pooled", [False, True], ids=["unpooled", "pooled"])
def test_the_host_and_another_box_reach_a_server_in_the_box(
    lan_pool: tuple[nsbox.Network, nsbox.Pool], pooled: bool
) -> None:
    lan, pool = lan_pool
    taken = pool.stats().taken
    server = start(
        pool, lan, pooled, [sys.executable, "-c", SERVER, "0.0.0.0", "8000", "srv"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None and server.stdout.readline() == "ready\n"
        url = f"http://{server.ip}:8000/"
        from_host = fetch_from_host(url)
        client = start(pool, lan, pooled, [ROOTLESS_PYTHON, "-c", CLIENT, url], stdout=subprocess.PIPE)
        with client:
            out, _ = client.communicate(timeout=30)
    finally:
        kill_and_reap(server)
    assert from_host == "srv 1"
    assert json.loads(out)["answers"] == ["srv 1"]
    assert client.ip != server.ip
    assert pool.stats().taken - taken == (2 if pooled else 0)  # the control


def _look_from_a_function() -> dict[str, Any]:
    devs = sorted(line.split(":")[0].strip() for line in open("/proc/net/dev").read().splitlines()[2:])
    routes = [line.split()[:3] for line in open("/proc/net/route").read().splitlines()[1:]]
    return {"devs": devs, "routes": routes, "net": os.readlink("/proc/self/ns/net")}


@pytest.mark.parametrize("pooled", [False, True], ids=["unpooled", "pooled"])
def test_a_function_called_on_the_network_sees_eth0_and_its_routes_as_without_a_pool(
    lan_pool: tuple[nsbox.Network, nsbox.Pool], pooled: bool
) -> None:
    lan, pool = lan_pool
    before = pool.stats()
    if pooled:
        seen = pool.call(_look_from_a_function)
    else:
        seen = nsbox.call(_look_from_a_function, network=lan, pid=True)
    after = pool.stats()
    assert after.taken - before.taken == (1 if pooled else 0)  # the control
    assert seen["devs"] == ["eth0", "lo"]
    assert ["eth0", "00000000", route_hex(at(lan, 1))] in seen["routes"]
    assert seen["net"] != os.readlink("/proc/self/ns/net")
    # The function's address is free again once its veth is gone (pooled: handed out again in turn).
    assert wait_until(lambda: len(ports(lan)) == 3), ports(lan)


def test_each_set_is_used_once_and_a_burst_larger_than_the_pool_still_gets_boxes(
    lan_pool: tuple[nsbox.Network, nsbox.Pool],
) -> None:
    lan, pool = lan_pool
    before = pool.stats()
    boxes = [pool.Popen(["sleep", "60"]) for _ in range(6)]  # twice the pool's size, back to back
    try:
        netns = [os.readlink(f"/proc/{b.pid}/ns/net") for b in boxes]
        ips = [b.ip for b in boxes]
        veths = [b.veth for b in boxes]
        on_bridge = ports(lan)
    finally:
        for box in boxes:
            kill_and_reap(box)
    after = pool.stats()
    assert len(set(netns)) == 6 and len(set(ips)) == 6 and len(set(veths)) == 6
    assert set(veths) <= set(on_bridge)
    # Some took a set, the others made their own namespaces (the pool never makes a spawn wait).
    taken, missed = after.taken - before.taken, after.missed - before.missed
    assert taken + missed == 6 and taken >= 3, after


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
@pytest.mark.parametrize("pooled", [False, True], ids=["unpooled", "pooled"])
def test_a_box_on_a_network_takes_the_other_options(lan: nsbox.Network, options: dict[str, Any], pooled: bool) -> None:
    server = start_server(lan, at(lan, 40), "server")
    try:
        # init is the box's (a run option); the rest shapes the pool's sets.
        box_only = {name: value for name, value in options.items() if name == "init"}
        shape = {name: value for name, value in options.items() if name not in box_only}
        with nsbox.Pool(size=2, network=lan, **shape) as pool:
            assert wait_ready(pool, 2), pool.stats()
            unpooled = functools.partial(nsbox.run, network=lan, **options)
            run: Any = functools.partial(pool.run, **box_only) if pooled else unpooled
            seen = run([ROOTLESS_PYTHON, "-c", CLIENT, f"http://{at(lan, 40)}:8000/"], capture_output=True, text=True)
            uid = run(["id", "-u"], capture_output=True, text=True)
            stats = pool.stats()
    finally:
        kill_and_reap(server)
    assert seen.returncode == 0, seen.stderr
    assert json.loads(seen.stdout)["answers"][0].startswith("server ")
    assert json.loads(seen.stdout)["devs"] == ["eth0", "lo"]
    assert uid.stdout.strip() == "0"
    assert stats.taken == (2 if pooled else 0)  # the control


def test_boxes_from_four_threads_on_one_pool_all_get_their_own_address_and_reach_the_server(
    lan_pool: tuple[nsbox.Network, nsbox.Pool],
) -> None:
    lan, pool = lan_pool
    server = start_server(lan, at(lan, 250), "busy")
    try:

        def one(_: int) -> tuple[str, str]:
            box = pool.Popen([sys.executable, "-c", CLIENT, f"http://{at(lan, 250)}:8000/"], stdout=subprocess.PIPE)
            with box:
                out, _ = box.communicate(timeout=30)
            assert box.returncode == 0
            return box.ip or "", json.loads(out)["answers"][0]

        with ThreadPoolExecutor(4) as threads:
            results = list(threads.map(one, range(24)))
        stats = pool.stats()
    finally:
        kill_and_reap(server)
    assert all(answer.startswith("busy ") for _, answer in results), results
    assert {ip for ip, _ in results} <= {str(a) for a in lan.subnet.hosts()}
    assert stats.taken >= 3, stats  # some took sets (the others found the pool empty: four threads on two CPUs)


def test_ready_sets_hold_addresses_and_close_gives_them_back(lan: nsbox.Network) -> None:
    assert ports(lan) == []  # the control: nothing on the bridge before the pool
    pool = nsbox.Pool(size=3, network=lan)
    try:
        assert wait_ready(pool, 3)
        held = ports(lan)
        with nsbox.Popen(["true"], network=lan) as other:  # a box without the pool: the next free address
            other.wait()
    finally:
        pool.close()
    # Each ready set had its veth on the bridge, and .2-.4 were the sets': the other box got .5.
    assert len(held) == 3
    assert other.ip == at(lan, 5)
    # After close() the sets' veths go with their namespaces, and their addresses are free again.
    assert wait_until(lambda: not set(held) & set(ports(lan))), ports(lan)
    with nsbox.Popen(["true"], network=lan) as again:
        again.wait()
    assert again.ip == at(lan, 2)
    assert pool.stats().ready == 0
    pool.close()  # idempotent


def test_a_pool_on_a_small_network_hands_addresses_out_again_and_holds_fewer_sets_when_it_is_full() -> None:
    # Private LANs (their subnets are their own): a /29 has 5 addresses for boxes, a /30 one.
    with nsbox.Network("10.213.30.0/29", private=True) as lan, nsbox.Pool(size=2, network=lan) as pool:
        seen = [pool.run([sys.executable, "-c", LOOK], capture_output=True, text=True) for _ in range(12)]
        stats = pool.stats()
    addrs = [json.loads(r.stdout)["addr"] for r in seen if r.returncode == 0]
    assert len(addrs) == 12, [r.stderr for r in seen]
    assert set(addrs) <= {f"10.213.30.{n}" for n in range(2, 7)}
    assert stats.taken + stats.missed == 12 and stats.taken >= 1, stats
    with nsbox.Network("10.213.31.0/30", private=True) as full, nsbox.Pool(size=3, network=full) as pool:
        assert wait_ready(pool, 1)
        before = pool.stats()
        with pytest.raises(ValueError, match="no free address left"):  # the control: the set holds the one address
            nsbox.run(["true"], network=full)
        pooled = pool.run([sys.executable, "-c", LOOK], capture_output=True, text=True)
        stats = pool.stats()
    assert json.loads(pooled.stdout)["addr"] == "10.213.31.2"
    assert (before.ready, before.made) == (1, 1)  # one address, one set (of three)
    assert stats.taken == 1


def test_a_pool_collected_without_close_frees_its_sets_and_gives_their_addresses_back(lan: nsbox.Network) -> None:
    pool = nsbox.Pool(size=3, network=lan)
    assert wait_ready(pool, 3)
    held = ports(lan)
    with nsbox.Popen(["true"], network=lan) as during:  # the control: the sets hold .2-.4
        during.wait()
    del pool
    gc.collect()
    assert wait_until(lambda: not set(held) & set(ports(lan))), ports(lan)
    with nsbox.Popen(["true"], network=lan) as after:
        after.wait()
    assert len(held) == 3
    assert during.ip == at(lan, 5)
    assert after.ip == at(lan, 2)


@pytest.mark.parametrize("private", [False, True], ids=["host-bridge", "private"])
def test_a_pool_on_a_network_leaves_no_fds_behind(private: bool) -> None:
    def once() -> None:
        with free_network(private=private) as lan, nsbox.Pool(size=2, network=lan) as pool:
            assert wait_ready(pool, 2)
            pool.run(["true"])

    once()  # warm up: what nsbox makes once per process, the first time it needs it
    before = open_fds()
    once()
    assert open_fds() == before


def test_a_box_with_ip_or_on_another_network_is_made_as_without_a_pool(
    lan_pool: tuple[nsbox.Network, nsbox.Pool],
) -> None:
    lan, pool = lan_pool
    before = pool.stats()
    fixed = pool.run(["true"], ip=at(lan, 77))
    with free_network() as other:
        elsewhere = pool.run([sys.executable, "-c", LOOK], network=other, capture_output=True, text=True)
        other_gateway = other.gateway
    mid = pool.stats()
    pool.run(["true"])  # the control: a box on the pool's network takes a set
    after = pool.stats()
    assert fixed.returncode == 0
    assert elsewhere.returncode == 0, elsewhere.stderr
    assert ["eth0", "00000000", route_hex(other_gateway)] in json.loads(elsewhere.stdout)["routes"]
    assert (mid.taken, mid.missed) == (before.taken, before.missed)
    assert after.taken == mid.taken + 1


def test_a_box_given_the_address_of_a_ready_set_gets_it_and_no_other_box_does(
    lan_pool: tuple[nsbox.Network, nsbox.Pool],
) -> None:
    lan, pool = lan_pool
    held = {at(lan, n) for n in (2, 3, 4)}  # the three ready sets' addresses: handed out in turn from the first
    boxes: list[nsbox.Popen] = []
    try:
        boxes.append(pool.Popen(["sleep", "60"]))
        assert boxes[0].ip in held  # the control: the pool's sets hold those addresses
        with pytest.raises(ValueError, match="already used by a box"):  # a running box's address is its own
            nsbox.run(["true"], network=lan, ip=boxes[0].ip)
        wanted = min(held - {boxes[0].ip})  # held by a ready set, which no box has taken
        look = [sys.executable, "-c", LOOK + "\nimport sys; sys.stdin.read()"]
        boxes.append(nsbox.Popen(look, network=lan, ip=wanted, stdin=subprocess.PIPE, stdout=subprocess.PIPE))
        assert boxes[1].ip == wanted
        # Every set the pool has (or makes) now goes to a box with an address of its own.
        for _ in range(4):
            boxes.append(pool.Popen(["sleep", "60"]))
        ips = [box.ip for box in boxes]
        assert len(set(ips)) == len(ips), ips
        assert sorted(b.ip for b in lan.boxes) == sorted(ips)
        out, _ = boxes[1].communicate(b"", timeout=30)
        assert json.loads(out)["addr"] == wanted  # inside: eth0 holds it
    finally:
        for box in boxes:
            kill_and_reap(box)


def test_a_pool_refuses_one_ip_for_all_and_a_closed_network_and_leaves_nothing(lan: nsbox.Network) -> None:
    with pytest.raises(ValueError, match="cannot share one ip"):
        nsbox.Pool(network=lan, ip=at(lan, 9))
    closed = free_network()
    closed.close()
    with pytest.raises(ValueError, match="is closed"):
        nsbox.Pool(network=closed)
    with pytest.raises(ValueError, match="is closed"):  # the control: what a box without a pool is told
        nsbox.run(["true"], network=closed)
    assert ports(lan) == []
    assert lan.boxes == []


def test_closing_the_network_closes_the_pool_first_and_boxes_are_then_refused_as_without(
    lan_pool: tuple[nsbox.Network, nsbox.Pool],
) -> None:
    lan, pool = lan_pool
    made = {lan.bridge, *ports(lan)}
    assert len(made) == 4  # the bridge and three ready sets' veths
    lan.close()
    assert pool.stats().ready == 0
    assert wait_until(lambda: not made & host_links()), made & host_links()
    with pytest.raises(ValueError, match="is closed") as pooled:
        pool.run(["true"])
    with pytest.raises(ValueError, match="is closed") as unpooled:
        nsbox.run(["true"], network=lan)
    assert str(pooled.value) == str(unpooled.value)


FORKED = f"""
from __future__ import annotations
import json, os, sys, time
import nsbox
{inspect.getsource(free_subnet)}
{inspect.getsource(free_network)}
def net_fds():
    return sorted(link for link in (os.readlink(f"/proc/self/fd/{{fd}}") for fd in os.listdir("/proc/self/fd")
                  if os.path.exists(f"/proc/self/fd/{{fd}}")) if link.startswith("net:"))
with free_network() as lan, nsbox.Pool(size=2, network=lan) as pool:
    deadline = time.monotonic() + 30
    while pool.stats().ready < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        seen = {{"fds": net_fds()}}
        for name, run in [("pooled", pool.run), ("unpooled", lambda a: nsbox.run(a, network=lan))]:
            try:
                seen[name] = run(["true"]).returncode
            except ValueError as exc:
                seen[name] = str(exc)
        os.write(w, json.dumps(seen).encode())
        os._exit(0)
    os.close(w)
    child = json.loads(os.read(r, 65536))
    os.waitpid(pid, 0)
    parent = net_fds()
    stats = pool.stats()
    print(json.dumps({{"child": child, "parent": parent, "taken": stats.taken, "ready": stats.ready}}))
"""


def test_a_forked_child_holds_none_of_the_sets_and_is_refused_the_network_as_without_a_pool() -> None:
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(nsbox.__file__))}
    r = subprocess.run([sys.executable, "-c", FORKED], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    seen = json.loads(r.stdout.strip().splitlines()[-1])
    assert len(seen["parent"]) == 2  # the control: the parent holds its two ready sets' network namespaces
    assert seen["child"]["fds"] == []
    # In the child the network is its parent's: a pooled box is refused as an unpooled one is, with the same words.
    assert "forked from" in seen["child"]["unpooled"]
    assert seen["child"]["pooled"] == seen["child"]["unpooled"]
    assert seen["taken"] == 0 and seen["ready"] == 2


FORKED_OFF_NETWORK = f"""
from __future__ import annotations
import json, os, sys, time
import nsbox
{inspect.getsource(free_subnet)}
{inspect.getsource(free_network)}
with free_network() as lan, nsbox.Pool(size=2, network=lan) as pool:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        seen = {{}}
        try:
            pool.run(["true"])
        except ValueError as exc:
            seen["on_network"] = str(exc)
        try:
            seen["run"] = pool.run(["sh", "-c", "exit 3"], network=None).returncode
        except ValueError as exc:
            seen["run"] = str(exc)
        try:
            box = pool.Popen(["sleep", "60"], network=None)
        except ValueError as exc:
            seen["popen"] = str(exc)
            # The box it started, which nobody holds: kill it here, so that the test itself leaves nothing.
            with open(f"/proc/self/task/{{os.getpid()}}/children") as f:
                children = f.read().split()
            for child in children:
                os.kill(int(child), 9)
                os.waitpid(int(child), 0)
                seen["left_running"] = True
        else:
            seen["popen_running"] = box.poll() is None
            box.kill()
            seen["popen"] = box.wait()
        os.write(w, json.dumps(seen).encode())
        os._exit(0)
    os.close(w)
    child = json.loads(os.read(r, 65536))
    os.waitpid(pid, 0)
    print(json.dumps(child))
"""


def test_a_forked_childs_pool_runs_boxes_on_no_network_and_gives_them_back() -> None:
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(nsbox.__file__))}
    r = subprocess.run([sys.executable, "-c", FORKED_OFF_NETWORK], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    seen = json.loads(r.stdout.strip().splitlines()[-1])
    assert "forked from" in seen["on_network"]  # control: on the parent's network the child is refused
    # On no network the pool's box is made as without a pool (as in the parent), and the caller gets it.
    assert seen["run"] == 3
    assert seen == {"on_network": seen["on_network"], "run": 3, "popen_running": True, "popen": -signal.SIGKILL}


# ---------------------------------------------------------------------------------------------------------------
# The caller killed with a full pool

KILLED_CALLER = f"""
from __future__ import annotations
import json, os, sys, time
import nsbox
{inspect.getsource(free_subnet)}
{inspect.getsource(free_network)}
lan = free_network()
pool = nsbox.Pool(size=4, network=lan, pid=True)
deadline = time.monotonic() + 60
while pool.stats().ready < 4 and time.monotonic() < deadline:
    time.sleep(0.01)
box = pool.Popen(["sleep", "300"])
while pool.stats().ready < 4 and time.monotonic() < deadline:
    time.sleep(0.01)
fd = lan.namespace_fd("net")
# The bridge's ports (the host's namespace has other users' veths too), or every veth of a private LAN.
ports = f"/sys/class/net/{{lan.bridge}}/brif"
veths = [n for n in lan.interfaces() if n.startswith("nsv")] if lan.private else os.listdir(ports)
print(json.dumps({{"bridge": lan.bridge, "veths": veths, "box": box.pid, "box_veth": box.veth,
                  "ready": pool.stats().ready, "netns": os.fstat(fd).st_ino if fd is not None else None}}), flush=True)
time.sleep(300)
"""


def descendants(pid: int) -> dict[int, str]:
    """The processes below ``pid`` now: PID -> start time (which tells the process from a later one with its PID)."""
    found: dict[int, str] = {}
    todo = [pid]
    while todo:
        parent = todo.pop()
        for entry in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == parent:
                found[int(entry)] = fields[19]
                todo.append(int(entry))
    return found


def still_there(processes: dict[int, str]) -> list[int]:
    left = []
    for pid, start in processes.items():
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[19] == start:
                    left.append(pid)
        except OSError:
            continue
    return left


def namespace_in_use(inode: int) -> bool:
    """Whether any process has, or holds an fd of, the network namespace ``inode`` (see test_network.py)."""
    link = f"net:[{inode}]"
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.readlink(f"/proc/{pid}/ns/net") == link:
                return True
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") == link for fd in os.listdir(f"/proc/{pid}/fd")):
                return True
        except OSError:
            continue
    return False


@pytest.mark.parametrize("private", [False, True], ids=["host-bridge", "private"])
def test_a_killed_caller_with_a_full_pool_leaves_no_veth_box_process_or_namespace(
    private: bool, world_tmp: Any, rootless_dir: Any
) -> None:
    script = world_tmp / "caller.py"
    script.write_text(KILLED_CALLER)
    script.chmod(0o644)
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(nsbox.__file__))}
    if private:
        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", str(script)]
        env["PYTHONPATH"] = str(rootless_dir)
    else:
        cmd = [sys.executable, str(script)]
    caller = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert caller.stdout is not None
        seen = json.loads(caller.stdout.readline())
        made = {seen["bridge"], *seen["veths"]}
        tree = descendants(caller.pid)  # the box, the janitor, the pool's thread's children if any
        assert seen["box"] in tree
        assert seen["ready"] == 4 and len(seen["veths"]) == 5  # four ready sets and the box
        assert seen["box_veth"] in seen["veths"]
        if private:
            assert not made & host_links()  # the private LAN is not the host's
            assert namespace_in_use(seen["netns"])  # the control: a holder shows
        else:
            assert made <= host_links()  # the control: the host shows them
        caller.send_signal(signal.SIGKILL)
        caller.wait()
        gone = wait_until(lambda: not made & host_links() and not still_there(tree))
        assert gone, f"left behind: {made & host_links()}, processes {still_there(tree)}"
        if private:
            assert wait_until(lambda: not namespace_in_use(seen["netns"]))
    finally:
        kill_and_reap(caller)


# ---------------------------------------------------------------------------------------------------------------
# Rootless: a private network


def test_rootless_pooled_boxes_on_a_private_network_see_and_reach_what_unpooled_ones_do(rootless: Rootless) -> None:
    seen = rootless(
        f"""
        LOOK, SERVER, CLIENT = {LOOK!r}, {SERVER!r}, {CLIENT!r}
        with nsbox.Network("10.213.16.0/24") as lan, nsbox.Pool(size=2, network=lan, pid=True) as pool:
            deadline = time.monotonic() + 30
            while pool.stats().ready < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            server = pool.Popen(["python3", "-c", SERVER, "0.0.0.0", "80", "srv"], stdout=subprocess.PIPE, text=True)
            assert server.stdout.readline() == "ready\\n"
            looks = {{}}
            def unpooled(args, **options):
                return nsbox.run(args, network=lan, pid=True, **options)
            for name, run in [("pooled", pool.run), ("unpooled", unpooled)]:
                before = pool.stats().taken
                r = run(["python3", "-c", LOOK], capture_output=True, text=True)
                c = run(["python3", "-c", CLIENT, f"http://{{server.ip}}/"], capture_output=True, text=True)
                looks[name] = {{"look": json.loads(r.stdout) if r.returncode == 0 else r.stderr,
                               "answers": json.loads(c.stdout)["answers"] if c.returncode == 0 else c.stderr,
                               "took": pool.stats().taken - before}}
            fd = lan.namespace_fd("user")
            lan_user = f"user:[{{os.fstat(fd).st_ino}}]"
            os.close(fd)
            server_user = os.readlink(f"/proc/{{server.pid}}/ns/user")
            lan_veths = [name for name in lan.interfaces() if name.startswith("nsv")]
            host = sorted(os.listdir("/sys/class/net"))
            server.kill()
            server.wait()
            emit({{**looks, "lan_user": lan_user, "server_user": server_user, "private": lan.private,
                  "me": os.readlink("/proc/self/ns/user"), "host": host, "lan_veths": lan_veths,
                  "server_veth": server.veth}})
        """
    )
    assert seen["private"] is True
    for name, took in [("pooled", 2), ("unpooled", 0)]:
        look = seen[name]["look"]
        assert isinstance(look, dict), look
        assert seen[name]["took"] == took  # the control: the pooled runs took sets, the others not
        assert look["devs"] == ["eth0", "lo"]
        assert ["eth0", "00000000", route_hex("10.213.16.1")] in look["routes"]
        assert look["addr"].startswith("10.213.16.")
        # The box lives in the network's user namespace (not the caller's), pooled or not.
        assert look["user"] == seen["lan_user"] != seen["me"]
        assert seen[name]["answers"] == ["srv 1"]
    assert seen["server_user"] == seen["lan_user"]
    # The LAN's veths (the server's and the ready sets') are in its own namespace, not the host's.
    assert seen["server_veth"] in seen["lan_veths"]  # the control: the listing shows the server's veth
    assert not set(seen["lan_veths"]) & set(seen["host"])
