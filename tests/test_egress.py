"""egress=True (outbound NAT and DNS through slirp4netns) and publish= (host ports into the box), root and rootless.

The "outside world" is the host's loopback only (tests/helpers/outside.py): servers the test made, and a tiny DNS.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import nsbox
from helpers.outside import TEST_NAME, Outside, tiny_dns
from helpers.procs import children_of, proc_comm, wait_until
from helpers.rootless import NOBODY, ROOTLESS_PATH, ROOTLESS_PYTHON, Rootless

#: Run in a box: reach the outside by name (TCP) and by address (UDP), print what it answered, as JSON.
CLIENT = r"""
import json, socket, sys
host, tcp_port, udp_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
out = {}
try:
    with socket.create_connection((host, tcp_port), timeout=5) as c:
        out["tcp"] = c.recv(99).decode()
except OSError as e:
    out["tcp"] = [e.errno, str(e)]
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.settimeout(5)
try:
    u.sendto(b"ping", ("10.0.2.2", udp_port))
    out["udp"] = u.recv(99).decode()
except OSError as e:
    out["udp"] = [e.errno, str(e)]
out["resolv.conf"] = open("/etc/resolv.conf").read()
print(json.dumps(out))
"""

#: Run in a box: serve TCP on port 80 and UDP on port 53, answering with the box's hostname and the peer.
SERVER = r"""
import socket, sys, threading
tag = sys.argv[1]
t = socket.create_server(("0.0.0.0", 80))
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", 53))
def udp():
    while True:
        data, peer = u.recvfrom(99)
        u.sendto(f"{tag} udp".encode(), peer)
threading.Thread(target=udp, daemon=True).start()
print("ready", flush=True)
while True:
    c, peer = t.accept()
    c.sendall(f"{tag} tcp".encode()); c.close()
"""


@pytest.fixture
def outside() -> Iterator[Outside]:
    world = Outside()
    try:
        yield world
    finally:
        world.close()


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fetch(port: int, udp: bool = False) -> str:
    """What a server published on the host's 127.0.0.1:port answers."""
    if udp:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.settimeout(5)
            u.sendto(b"ping", ("127.0.0.1", port))
            return u.recv(99).decode()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
        return c.recv(99).decode()


def bindable(port: int) -> bool:
    try:
        with socket.create_server(("127.0.0.1", port)):
            return True
    except OSError:
        return False


# -- Outbound --------------------------------------------------------------------------------------


def test_a_box_with_egress_reaches_the_host_through_the_nat_by_name(outside: Outside) -> None:
    args = [sys.executable, "-c", CLIENT, TEST_NAME, str(outside.tcp_port), str(outside.udp_port)]
    with tiny_dns():
        r = nsbox.run(args, egress=True, dns=["10.0.2.2"], pid=True, capture_output=True, text=True, timeout=30)
    seen = json.loads(r.stdout)
    # The servers see the engine's socket on the host (127.0.0.1), not the box's 10.0.2.100.
    assert (seen["tcp"], seen["udp"]) == ("seen 127.0.0.1", "seen 127.0.0.1"), r.stderr
    assert seen["resolv.conf"] == "nameserver 10.0.2.2\n"
    assert outside.peers == ["127.0.0.1", "127.0.0.1"]
    # Control: the same client in a box with only its own network namespace reaches nothing, at once.
    r = nsbox.run([*args[:3], "10.0.2.2", *args[4:]], net=True, capture_output=True, text=True, timeout=30)
    bare = json.loads(r.stdout)
    assert bare["tcp"][0] == bare["udp"][0] == errno.ENETUNREACH


def test_a_rootless_box_with_egress_reaches_the_host_through_the_nat_by_name(
    outside: Outside, rootless: Rootless
) -> None:
    with tiny_dns():
        seen = rootless(
            f"""
            r = nsbox.run(["python3", "-c", {CLIENT!r}, {TEST_NAME!r}, "{outside.tcp_port}", "{outside.udp_port}"],
                          egress=True, dns=["10.0.2.2"], pid=True, capture_output=True, text=True, timeout=30)
            emit(json.loads(r.stdout))
            """
        )
    assert (seen["tcp"], seen["udp"]) == ("seen 127.0.0.1", "seen 127.0.0.1")
    assert outside.peers == ["127.0.0.1", "127.0.0.1"]


def test_the_boxs_resolv_conf_is_its_own_and_the_hosts_is_untouched() -> None:
    before = os.stat("/etc/resolv.conf"), Path("/etc/resolv.conf").read_text()
    r = nsbox.run(
        ["sh", "-c", "cat /etc/resolv.conf; ip -4 -o addr show tap0; ip route"],
        egress=True,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.stdout.startswith("nameserver 10.0.2.3\n"), r.stderr
    assert "10.0.2.100/24" in r.stdout and "default via 10.0.2.2" in r.stdout
    after = os.stat("/etc/resolv.conf"), Path("/etc/resolv.conf").read_text()
    assert (after[0].st_ino, after[0].st_mtime_ns, after[1]) == (before[0].st_ino, before[0].st_mtime_ns, before[1])


def test_box_egress_describes_the_engine_and_it_goes_with_the_box() -> None:
    port = free_port()
    box = nsbox.Popen(["sleep", "60"], egress=True, publish={port: 80}, pid=True)
    try:
        info = box.egress
        assert info is not None and info.helper_pid is not None
        assert (info.host_address, info.address, info.dns) == ("10.0.2.2", "10.0.2.100", ["10.0.2.3"])
        assert [str(p) for p in info.published] == [f"127.0.0.1:{port}/tcp -> 80"]
        assert f"pid={info.helper_pid}" in repr(info) and "<table>" in info._repr_html_()
        assert "host loopback, from the box" in box._repr_html_()
        with open(f"/proc/{info.helper_pid}/comm") as comm:
            assert comm.read() == "slirp4netns\n"
        assert not bindable(port)
        helper = info.helper_pid
    finally:
        box.kill()
        box.wait()
    # Reaped with the box: no process, and the port is free again.
    assert box.egress is not None and box.egress.helper_pid is None and "stopped" in repr(box.egress)
    assert not os.path.exists(f"/proc/{helper}")
    assert bindable(port)


def test_no_egress_means_no_engine() -> None:
    with nsbox.Popen(["true"], net=True) as box:
        assert box.egress is None


# -- Published ports -------------------------------------------------------------------------------


def test_the_host_reaches_a_server_in_a_box_through_published_ports() -> None:
    tcp, udp = free_port(), free_port(socket.SOCK_DGRAM)
    box = nsbox.Popen(
        [sys.executable, "-c", SERVER, "web"],
        egress=True,
        publish={tcp: 80, f"{udp}/udp": 53},
        pid=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert box.stdout is not None and box.stdout.readline() == "ready\n"
        assert (fetch(tcp), fetch(udp, udp=True)) == ("web tcp", "web udp")
    finally:
        box.kill()
        box.wait()
        assert box.stdout is not None
        box.stdout.close()
    assert bindable(tcp)


def test_the_host_reaches_a_server_in_a_rootless_box_through_published_ports(rootless_dir: Path) -> None:
    tcp, udp = free_port(), free_port(socket.SOCK_DGRAM)
    # The box runs under an unprivileged caller while the host (this process) connects to it.
    code = f"""
import nsbox, subprocess, sys
box = nsbox.Popen(["python3", "-c", {SERVER!r}, "web"], egress=True, publish={{{tcp}: 80, "{udp}/udp": 53}},
                  pid=True, stdout=subprocess.PIPE, text=True)
print(box.stdout.readline(), end="", flush=True)
sys.stdin.read()
box.kill(); box.wait()
"""
    env = {"PATH": ROOTLESS_PATH, "PYTHONPATH": str(rootless_dir), "PYTHONDONTWRITEBYTECODE": "1", "HOME": "/tmp"}
    cmd = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", ROOTLESS_PYTHON, "-c", code]
    driver = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd="/tmp")
    try:
        assert driver.stdout is not None and driver.stdout.readline() == "ready\n"
        assert (fetch(tcp), fetch(udp, udp=True)) == ("web tcp", "web udp")
    finally:
        assert driver.stdin is not None and driver.stdout is not None
        driver.stdin.close()
        driver.wait(30)
        driver.stdout.close()
    assert bindable(tcp)


def test_two_boxes_publish_different_host_ports_to_their_own_port_80() -> None:
    ports = free_port(), free_port()
    boxes = [
        nsbox.Popen(
            [sys.executable, "-c", SERVER, name],
            egress=True,
            publish=[("127.0.0.1", port, 80)],
            pid=True,
            stdout=subprocess.PIPE,
            text=True,
        )
        for name, port in zip(("one", "two"), ports, strict=True)
    ]
    try:
        for box in boxes:
            assert box.stdout is not None and box.stdout.readline() == "ready\n"
        assert [fetch(p) for p in ports] == ["one tcp", "two tcp"]
    finally:
        for box in boxes:
            box.kill()
            box.wait()
            assert box.stdout is not None
            box.stdout.close()


def test_a_host_port_in_use_is_a_clear_error_before_the_box_runs(tmp_path: os.PathLike[str]) -> None:
    marker = os.path.join(tmp_path, "ran")
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(OSError) as caught:
            nsbox.Popen(["touch", marker], egress=True, publish={port: 80})
    assert caught.value.errno == errno.EADDRINUSE
    assert f"127.0.0.1:{port}/tcp is in use" in str(caught.value)
    assert getattr(caught.value, "step", None) == "publish"
    assert not os.path.exists(marker)
    assert not [pid for pid in children_of(os.getpid()) if proc_comm(pid) == "slirp4netns"]


# -- The leash -------------------------------------------------------------------------------------

#: Run in a box: try each port of the host's loopback (10.0.2.2) by TCP, then try to lift the leash, then again.
REACH = r"""
import json, socket, subprocess, sys, time
def reach(port):
    start = time.monotonic()
    try:
        with socket.create_connection(("10.0.2.2", port), timeout=10) as c:
            return c.recv(99).decode()
    except OSError as e:
        return [e.errno, round(time.monotonic() - start, 3)]
ports = [int(p) for p in sys.argv[1:]]
out = {"before": [reach(p) for p in ports], "lift": {}}
for name, cmd in [("nft flush ruleset", ["nft", "flush", "ruleset"]), ("iptables -F", ["iptables", "-F"]),
                  ("nft add rule", ["nft", "add", "rule", "inet", "nsbox_leash", "out", "accept"]),
                  ("ip link set tap0 down", ["ip", "link", "set", "tap0", "down"])]:
    out["lift"][name] = subprocess.run(cmd, capture_output=True).returncode
out["after"] = [reach(p) for p in ports]
out["uid"] = open("/proc/self/uid_map").read().split()
print(json.dumps(out))
"""


@pytest.fixture
def two_outsides() -> Iterator[tuple[Outside, Outside]]:
    a, b = Outside(), Outside()
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def check_leash(seen: dict[str, object], allowed: str) -> None:
    before, after = seen["before"], seen["after"]
    assert isinstance(before, list) and isinstance(after, list)
    for tried in (before, after):
        assert tried[0] == allowed
        # Refused at once by the rule (a TCP reset), not left to time out.
        assert tried[1][0] == errno.ECONNREFUSED and tried[1][1] < 1.0, tried
    lift = seen["lift"]
    assert isinstance(lift, dict) and len(lift) == 4 and all(code != 0 for code in lift.values()), lift


@pytest.mark.parametrize("allow", ["127.0.0.1:{a}", "10.0.2.2:{a}", "localhost:{a}", "10.0.2.2/32:{a}"])
def test_allow_lets_port_a_through_and_refuses_port_b_at_once(
    two_outsides: tuple[Outside, Outside], allow: str
) -> None:
    a, b = two_outsides
    box = nsbox.Popen(
        [sys.executable, "-c", REACH, str(a.tcp_port), str(b.tcp_port)],
        egress=True,
        pid=True,
        allow=[allow.format(a=a.tcp_port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, _ = box.communicate(timeout=60)
    seen = json.loads(out)
    check_leash(seen, "seen 127.0.0.1")
    assert b.peers == []  # port B never saw a connection
    assert box.egress is not None and box.egress.allowed is not None
    assert str(box.egress.allowed[0]).startswith("10.0.2.2")


def test_an_exec_into_a_box_on_a_leash_is_on_the_leash_too(two_outsides: tuple[Outside, Outside]) -> None:
    a, b = two_outsides
    with nsbox.Popen(["sleep", "60"], egress=True, allow=[f"127.0.0.1:{a.tcp_port}"], pid=True) as box:
        try:
            r = box.exec(
                [sys.executable, "-c", REACH, str(a.tcp_port), str(b.tcp_port)], capture_output=True, text=True
            )
        finally:
            box.kill()
    check_leash(json.loads(r.stdout), "seen 127.0.0.1")
    assert b.peers == []


def test_a_rootless_box_on_a_leash_reaches_port_a_only_and_cannot_lift_it(
    two_outsides: tuple[Outside, Outside], rootless: Rootless
) -> None:
    a, b = two_outsides
    seen = rootless(
        f"""
        r = nsbox.run(["python3", "-c", {REACH!r}, "{a.tcp_port}", "{b.tcp_port}"], egress=True, pid=True,
                      allow=["127.0.0.1:{a.tcp_port}"], capture_output=True, text=True, timeout=60)
        emit(json.loads(r.stdout))
        """
    )
    check_leash(seen, "seen 127.0.0.1")
    assert b.peers == []


#: Run in a box: find the engine in /proc and try to open its memory for writing (to make it go anywhere).
TAMPER = r"""
import json, os, sys
engine = int(sys.argv[1])
try:
    with open(f"/proc/{engine}/mem", "r+b"):
        print(json.dumps("opened"))
except OSError as e:
    print(json.dumps(e.errno))
"""


def test_a_box_on_a_leash_cannot_tamper_with_its_engine(rootless: Rootless) -> None:
    # The box sees the host's /proc here (no pid or mount_proc): the kernel still refuses, as the box's user
    # namespace is below the engine's. The control: the caller itself, same uid, opens the engine's memory.
    seen = rootless(
        f"""
        box = nsbox.Popen(["sleep", "60"], egress=True, allow=[])
        engine = box.egress.helper_pid
        with open(f"/proc/{{engine}}/mem", "r+b"):
            caller = "opened"
        r = box.exec(["python3", "-c", {TAMPER!r}, str(engine)], capture_output=True, text=True)
        box.kill(); box.wait()
        emit({{"caller": caller, "box": json.loads(r.stdout)}})
        """
    )
    assert seen == {"caller": "opened", "box": errno.EACCES}


def test_a_rootless_sandbox_on_a_leash_reaches_port_a_only(
    two_outsides: tuple[Outside, Outside], rootless: Rootless
) -> None:
    a, b = two_outsides
    seen = rootless(
        f"""
        r = nsbox.run(["python3", "-c", {REACH!r}, "{a.tcp_port}", "{b.tcp_port}"], sandbox=True, egress=True,
                      allow=["127.0.0.1:{a.tcp_port}"], capture_output=True, text=True, timeout=60)
        emit(json.loads(r.stdout))
        """
    )
    check_leash(seen, "seen 127.0.0.1")


def test_a_root_sandbox_on_a_leash_is_refused_with_why() -> None:
    # sandbox=True as root maps the box's root to the host's nobody: a box below nsbox's user namespace cannot.
    with pytest.raises(ValueError, match="sandbox=True as root makes the box's root the host's nobody"):
        nsbox.run(["true"], sandbox=True, egress=True, allow=[])


def test_without_a_leash_the_box_root_can_change_its_own_rules(outside: Outside) -> None:
    # The control: the same attempts succeed where the rules are the box's own (egress without allow).
    r = nsbox.run(
        [sys.executable, "-c", REACH, str(outside.tcp_port)],
        egress=True,
        pid=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    seen = json.loads(r.stdout)
    assert seen["before"] == ["seen 127.0.0.1"]
    assert seen["lift"]["nft flush ruleset"] == 0 and seen["lift"]["ip link set tap0 down"] == 0


def test_a_published_port_still_answers_the_host_on_a_leash() -> None:
    tcp = free_port()
    box = nsbox.Popen(
        [sys.executable, "-c", SERVER, "leashed"],
        egress=True,
        allow=[],
        publish={tcp: 80},
        pid=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert box.stdout is not None and box.stdout.readline() == "ready\n"
        assert fetch(tcp) == "leashed tcp"
    finally:
        box.kill()
        box.wait()
        assert box.stdout is not None
        box.stdout.close()


# -- The caller's death ----------------------------------------------------------------------------


def test_a_sigkilled_caller_leaves_no_engine_and_no_forwarded_port() -> None:
    port = free_port()
    code = f"""
import nsbox, sys
box = nsbox.Popen(["sleep", "600"], egress=True, publish={{{port}: 80}}, pid=True)
print(box.egress.helper_pid, box.pid, flush=True)
sys.stdin.read()
"""
    caller = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert caller.stdout is not None
        helper, box = map(int, caller.stdout.readline().split())
        assert not bindable(port)
        os.kill(caller.pid, signal.SIGKILL)
        caller.wait()
    finally:
        if caller.poll() is None:
            caller.kill()
            caller.wait()
        for stream in (caller.stdin, caller.stdout):
            if stream is not None:
                stream.close()
    assert wait_until(lambda: not os.path.exists(f"/proc/{helper}") and not os.path.exists(f"/proc/{box}"), 10)
    assert wait_until(lambda: bindable(port), 10)


# -- Input -----------------------------------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize(
    ("options", "kind", "message"),
    [
        ({"publish": {8080: 80}}, ValueError, "publish needs egress=True"),
        ({"dns": ["10.0.2.3"]}, ValueError, "dns needs egress=True"),
        ({"egress": 1}, TypeError, "egress must be True or False"),
        ({"egress": True, "publish": {0: 80}}, ValueError, "host port 0 is not a port"),
        ({"egress": True, "publish": {"80/sctp": 80}}, ValueError, "is not a host port such as"),
        ({"egress": True, "publish": [("localhost", 80, 80)]}, ValueError, "'localhost' is not an IPv4 address"),
        ({"egress": True, "publish": [(8080, 80)]}, TypeError, "each item must be an (address, host port, box port)"),
        ({"egress": True, "publish": "8080:80"}, TypeError, "publish must be a dict"),
        ({"egress": True, "dns": ["one.one"]}, ValueError, "dns: 'one.one' is not an IPv4 address"),
        ({"egress": True, "target": 1}, ValueError, "cannot be combined with egress"),
        ({"allow": ["10.0.0.0/8"]}, ValueError, "allow needs egress=True"),
        ({"egress": True, "allow": "10.0.0.0/8"}, TypeError, "allow must be a list"),
        ({"egress": True, "allow": ["10.0.0.1:http"]}, ValueError, "has no valid port"),
        ({"egress": True, "allow": ["10.0.0.0/33"]}, ValueError, "is not a CIDR, an address or a host name"),
        ({"egress": True, "allow": ["no-such-host.invalid"]}, ValueError, "cannot resolve 'no-such-host.invalid'"),
        ({"egress": True, "allow": [], "uid_map": [(0, 0, 1)]}, ValueError, "it cannot take uid_map"),
    ],
)
def test_bad_egress_options_are_refused_before_anything_is_made(
    options: dict[str, object], kind: type[Exception], message: str
) -> None:
    with pytest.raises(kind) as caught:
        nsbox.Popen(["true"], **options)  # type: ignore[arg-type]
    assert message in str(caught.value)


@pytest.mark.unit
def test_a_tun_device_closed_to_the_caller_is_named_with_its_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    from nsbox import _egress

    monkeypatch.setattr(os, "geteuid", lambda: 65534)
    monkeypatch.setattr(os, "access", lambda *a, **k: False)
    with pytest.raises(PermissionError) as caught:
        _egress.check_tun()
    assert "chmod 0666 /dev/net/tun" in str(caught.value)
    assert getattr(caught.value, "hint", None) == "tun_not_open"


# -- A network with egress -------------------------------------------------------------------------


def test_every_box_on_a_network_with_egress_reaches_the_host_through_its_nat(outside: Outside) -> None:
    args = [sys.executable, "-c", CLIENT, "10.0.2.2", str(outside.tcp_port), str(outside.udp_port)]
    with nsbox.Network("192.168.213.0/24", egress=True) as lan:
        assert lan.private and lan.egress is not None and "with egress" in repr(lan)
        engine = lan.egress.helper_pid
        seen = [json.loads(nsbox.run(args, network=lan, capture_output=True, text=True, timeout=30).stdout)]
        with nsbox.Popen(["sleep", "60"], network=lan) as box:
            assert box.egress is not None and box.egress.helper_pid == engine
            seen.append(json.loads(box.exec(args, capture_output=True, text=True).stdout))
            box.kill()
    # Each box's traffic left through the network's NAT and the engine: the server saw the host.
    assert [(s["tcp"], s["udp"], s["resolv.conf"]) for s in seen] == [
        ("seen 127.0.0.1", "seen 127.0.0.1", "nameserver 10.0.2.3\n")
    ] * 2
    assert not os.path.exists(f"/proc/{engine}")  # closed with the network


def test_a_rootless_network_with_egress_gives_its_boxes_the_nat(outside: Outside, rootless: Rootless) -> None:
    seen = rootless(
        f"""
        with nsbox.Network("192.168.213.0/24", egress=True) as lan:
            r = nsbox.run(["python3", "-c", {CLIENT!r}, "10.0.2.2", "{outside.tcp_port}", "{outside.udp_port}"],
                          network=lan, capture_output=True, text=True, timeout=30)
            engine = lan.egress.helper_pid
        emit({{"box": json.loads(r.stdout), "engine_left": os.path.exists(f"/proc/{{engine}}")}})
        """
    )
    assert (seen["box"]["tcp"], seen["box"]["udp"], seen["engine_left"]) == ("seen 127.0.0.1", "seen 127.0.0.1", False)


@pytest.mark.unit
def test_a_network_with_egress_refuses_what_cannot_work() -> None:
    with pytest.raises(ValueError, match="private=True"):
        nsbox.Network("192.168.213.0/24", private=False, egress=True)
    with pytest.raises(ValueError, match=r"overlaps the egress engine's 10\.0\.2\.0/24"):
        nsbox.Network("10.0.0.0/16", egress=True)
    with pytest.raises(TypeError, match="egress must be True or False"):
        nsbox.Network("192.168.213.0/24", egress=1)  # type: ignore[arg-type]
