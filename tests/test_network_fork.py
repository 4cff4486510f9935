"""A process forked from one that has a Network (os.fork, multiprocessing) never hangs on the network's locks.

The fork copies every lock as it is at that instant; one that another thread held (a spawn attaching its
veth over netlink, a box reserving its address) stays held in the child forever. Closing the child's copy
of the network (or its ``__del__`` at exit) must not wait for it, and must leave the parent's network as
it was.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable

import pytest

import nsbox
from helpers.lan import client, host_links, ports
from helpers.nets import free_subnet
from helpers.procs import kill_and_reap, wait_until
from test_network_claim import fork_quietly

#: How long a forked child may take to close its copy and exit (it needs milliseconds).
CHILD_DEADLINE = 20.0


def exited_within(pid: int, timeout: float) -> int | None:
    """The wait status of our child ``pid`` if it exits within ``timeout``; else kills and reaps it: None."""
    status: list[int] = []

    def reaped() -> bool:
        done, code = os.waitpid(pid, os.WNOHANG)
        if done:
            status.append(code)
        return bool(done)

    if wait_until(reaped, timeout=timeout, interval=0.005):
        return status[0]
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


def fork_and_close(lan: nsbox.Network, close: Callable[[nsbox.Network], object]) -> int | None:
    """Forks; the child runs ``close(lan)`` and leaves. Returns the child's wait status, or None if it hung."""
    pid = fork_quietly()
    if pid == 0:
        code = 1
        try:
            close(lan)
            code = 0
        finally:
            os._exit(code)
    return exited_within(pid, CHILD_DEADLINE)


#: Connects to ADDRESS:PORT, sends the box's hostname and waits for the server to close. (The server that once
#: accepted and then read nothing for 90 s, blamed on the box's exit, had lost the box to the bridge changing its
#: MAC as the boxes spawned before left: see test_network_macs.py.)
CLIENT = (
    "import socket, sys; "
    "c = socket.create_connection((sys.argv[1], int(sys.argv[2])), 60); c.settimeout(90); "
    "c.sendall(socket.gethostname().encode()); c.shutdown(socket.SHUT_WR); c.recv(1)"
)


def talk_to_the_host(lan: nsbox.Network, hostname: str) -> tuple[str, str, str]:
    """A box on ``lan`` connects to a server on the gateway: (what the server read, the box's IP, peer IP)."""
    with socket.create_server((lan.gateway, 0)) as server:
        port = server.getsockname()[1]
        box = nsbox.Popen(
            [sys.executable, "-c", CLIENT, lan.gateway, str(port)],
            network=lan,
            hostname=hostname,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            server.settimeout(90)  # a deadline for a busy machine: a box connects in milliseconds
            try:
                conn, peer = server.accept()
            except TimeoutError:
                box.kill()
                pytest.fail(f"the box on {lan!r} did not connect to the host: {box.communicate()[1]}")
            with conn:
                conn.settimeout(90)
                said = b"".join(iter(lambda: conn.recv(100), b"")).decode()  # to the box's end of stream
        finally:
            kill_and_reap(box)
    assert box.ip is not None
    return said, box.ip, peer[0]


def test_children_forked_while_boxes_join_the_network_close_their_copy_without_hanging() -> None:
    with nsbox.Network(free_subnet()) as lan:
        stop = threading.Event()
        failures: list[BaseException] = []
        spawned = [0]

        def spawn_boxes() -> None:
            try:
                while not stop.is_set():
                    nsbox.run(["true"], network=lan, check=True, timeout=60)
                    spawned[0] += 1
            except BaseException as exc:
                failures.append(exc)

        spawners = [threading.Thread(target=spawn_boxes) for _ in range(3)]
        for thread in spawners:
            thread.start()
        hung: list[str] = []
        forks = 0
        try:
            assert wait_until(lambda: spawned[0] > 0 or bool(failures), timeout=30)
            # Each child closes its copy as code would (close()) and as its exit would (__del__).
            for close in [nsbox.Network.close, nsbox.Network.__del__] * 60:
                status = fork_and_close(lan, close)
                forks += 1
                if status is None:
                    hung.append(close.__name__)
                    break
                assert os.waitstatus_to_exitcode(status) == 0
        finally:
            stop.set()
            for thread in spawners:
                thread.join(timeout=120)
        assert hung == [], f"a forked child hung in Network.{hung[0]}() (fork {forks}, killed after {CHILD_DEADLINE} s)"
        assert failures == [] and spawned[0] > 0
        # The parent's network is as it was: its bridge, and a box that reaches the host through it.
        assert lan.bridge in os.listdir("/sys/class/net")
        said, box_ip, peer = talk_to_the_host(lan, "after-forks")
        assert said == "after-forks" and peer == box_ip


def test_a_child_forked_while_another_thread_holds_the_networks_lock_does_not_wait_for_it() -> None:
    # The Python lock (a thread reserving an address holds it): the fork copies it held.
    with nsbox.Network(free_subnet()) as lan:
        held, release = threading.Event(), threading.Event()

        def hold() -> None:
            with lan._lock:
                held.set()
                release.wait(timeout=120)

        holder = threading.Thread(target=hold)
        holder.start()
        try:
            assert held.wait(timeout=30)
            for close in (nsbox.Network.close, nsbox.Network.__del__, lambda n: n.boxes):
                status = fork_and_close(lan, close)
                assert status is not None, f"the forked child hung in {close}"
                assert os.waitstatus_to_exitcode(status) == 0
        finally:
            release.set()
            holder.join(timeout=30)
        said, box_ip, peer = talk_to_the_host(lan, "still-there")
        assert said == "still-there" and peer == box_ip


def test_a_forked_child_cannot_add_boxes_to_its_parents_network() -> None:
    with nsbox.Network(free_subnet()) as lan:
        read_end, write_end = os.pipe()
        pid = fork_quietly()
        if pid == 0:
            message = b"no error"
            try:
                try:
                    nsbox.run(["true"], network=lan)
                except ValueError as exc:
                    message = str(exc).encode()
                os.write(write_end, message)
            finally:
                os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            message = pipe.read().decode()
        assert exited_within(pid, CHILD_DEADLINE) == 0
        assert message == (
            f"the network {lan.bridge} belongs to the process this one was forked from: add boxes to it there, "
            "or make a Network in this process"
        )
        assert lan.boxes == []


def in_proc_net_dev() -> list[str]:
    """The interfaces of the reader's network namespace."""
    with open("/proc/net/dev") as dev:
        return sorted(line.split(":")[0].strip() for line in dev.read().splitlines()[2:])


def test_a_copy_whose_pid_is_its_makers_closes_its_copy_and_deletes_nothing() -> None:
    # nsbox.call(pid=True) from a PID 1 runs the function as PID 1 again: only the fork tells them apart.
    subnet = str(free_subnet())

    def maker() -> tuple[int, int, list[str]]:
        with nsbox.Network(subnet) as lan:  # in this box's own network namespace

            def copy() -> int:
                lan.close()
                return os.getpid()

            copy_pid = nsbox.call(copy, pid=True)
            return os.getpid(), copy_pid, in_proc_net_dev()

    maker_pid, copy_pid, seen = nsbox.call(maker, pid=True, net=True)
    assert (maker_pid, copy_pid) == (1, 1)
    assert [name for name in seen if name.startswith("nsbr")] != [], "the copy deleted its maker's bridge"


def test_a_forked_copy_of_the_caller_closing_the_network_deletes_nothing(lan: nsbox.Network) -> None:
    box = nsbox.Popen(["sleep", "60"], network=lan, pid=True)
    try:
        pid = os.fork()
        if pid == 0:  # the child closes its copy (as a worker's interpreter exit would), then leaves
            try:
                lan.close()
            finally:
                os._exit(0)
        assert os.waitpid(pid, 0)[1] == 0
        assert lan.bridge in host_links() and box.veth in host_links()
        assert ports(lan) == [box.veth]
        seen = client(f"http://{lan.gateway}:9/", network=lan)  # the LAN still works
        assert seen["devs"] == ["eth0", "lo"] and "refused" in seen["answers"][0]
    finally:
        kill_and_reap(box)
