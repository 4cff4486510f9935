"""The "outside world" of the egress tests, on the host's loopback only: TCP and UDP servers that answer with
the address they see, and a tiny DNS that answers one test name."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager

#: The name the tiny DNS answers, and with what: the host's loopback as a box with egress reaches it.
TEST_NAME = "outside.nsbox.test"
TEST_NAME_ADDRESS = "10.0.2.2"


class Outside:
    """A TCP server and a UDP server on 127.0.0.1 (ports picked by the kernel) that answer ``seen <peer ip>``."""

    def __init__(self) -> None:
        self.tcp = socket.create_server(("127.0.0.1", 0))
        self.tcp_port: int = self.tcp.getsockname()[1]
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.udp_port: int = self.udp.getsockname()[1]
        #: The peer addresses seen, in order.
        self.peers: list[str] = []
        self._threads = [threading.Thread(target=f, daemon=True) for f in (self._serve_tcp, self._serve_udp)]
        for t in self._threads:
            t.start()

    def _serve_tcp(self) -> None:
        while True:
            try:
                conn, (ip, _) = self.tcp.accept()
            except OSError:
                return
            self.peers.append(ip)
            with conn:
                conn.sendall(f"seen {ip}".encode())

    def _serve_udp(self) -> None:
        while True:
            try:
                _, peer = self.udp.recvfrom(512)
            except OSError:
                return
            if peer is None:  # shut down
                return
            ip, port = peer
            self.peers.append(ip)
            self.udp.sendto(f"seen {ip}".encode(), (ip, port))

    def close(self) -> None:
        for s in (self.tcp, self.udp):
            try:
                s.shutdown(socket.SHUT_RDWR)  # wakes the threads (UDP: and says ENOTCONN)
            except OSError:
                pass
            s.close()
        for t in self._threads:
            t.join(5)


def dns_answer(query: bytes) -> bytes | None:
    """The reply to an A query for :data:`TEST_NAME` (NXDOMAIN for any other name)."""
    if len(query) < 12:
        return None
    ident, _flags, qdcount = struct.unpack("!HHH", query[:6])
    if qdcount != 1:
        return None
    at, labels = 12, []
    while at < len(query) and query[at]:
        labels.append(query[at + 1 : at + 1 + query[at]].decode(errors="replace"))
        at += 1 + query[at]
    question = query[12 : at + 5]
    qtype = struct.unpack("!H", query[at + 1 : at + 3])[0] if at + 3 <= len(query) else 0
    known = ".".join(labels).lower() == TEST_NAME
    answers = b""
    if known and qtype == 1:
        answers = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton(TEST_NAME_ADDRESS)
    rcode = 0 if known else 3
    header = struct.pack("!HHHHHH", ident, 0x8180 | rcode, 1, 1 if answers else 0, 0, 0)
    return header + question + answers


@contextmanager
def tiny_dns() -> Iterator[None]:
    """A DNS server on the host's 127.0.0.1:53 (UDP) answering :data:`TEST_NAME`.

    Resolvers take no port, so it must be 53. ``SO_REUSEPORT``: test workers running at once each bind one,
    and any of them answers alike.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", 53))

    def serve() -> None:
        while True:
            try:
                query, peer = sock.recvfrom(512)
            except OSError:
                return
            if peer is None:  # shut down
                return
            reply = dns_answer(query)
            if reply is not None:
                sock.sendto(reply, peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        try:
            sock.shutdown(socket.SHUT_RDWR)  # wakes the thread (and says ENOTCONN: unconnected UDP)
        except OSError:
            pass
        sock.close()
        thread.join(5)
