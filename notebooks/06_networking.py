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
# # 6 · Networking: boxes with their own address, ports and routes
#
# The network namespace isolates interfaces, addresses, routes and ports. Notebook 4 showed the
# empty one `net=True` gives: only `lo`, nothing reachable. A container is useful on a network, so
# Docker connects each one to a bridge through a **veth pair** — a virtual cable whose one end
# (`eth0`) is moved into the container's network namespace while the other stays on the bridge.
#
# `nsbox.Network` does the same: a bridge with the subnet's first address (the gateway), and a
# veth pair per box, all made over netlink. This notebook builds a two-box network, serves a page
# from one box to the other, and draws it. It runs as root, so the bridge lives in the host's
# network namespace like Docker's `docker0`; the last part shows what an ordinary user gets.

# %%
import http.server
import os
import socket
import subprocess
import sys
import textwrap
import threading
import urllib.request
from collections.abc import Iterable, Sequence

import nettopo  # the network picture (nettopo.py, next to this notebook)
from IPython.display import HTML, display

import nsbox


def table(head: Sequence[str], rows: Iterable[Sequence[object]]) -> HTML:
    """An HTML table."""
    th = "".join(f"<th>{h}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return HTML(f"<table><tr>{th}</tr>{body}</table>")


def links() -> set[str]:
    """The interfaces of the host's network namespace."""
    return set(os.listdir("/sys/class/net"))


def fetch(url: str) -> str:
    """The page at url, fetched from this process's network namespace."""
    with urllib.request.urlopen(url, timeout=5) as response:
        body: bytes = response.read()
    return body.decode()


HOST_LINKS = links()
print(f"uid {os.getuid()} · host interfaces: {sorted(HOST_LINKS)}")

# %% [markdown]
# ## Before: a network namespace with nothing in it
#
# `ip` inside a box talks netlink to the box's own network namespace, so it shows the box's view.

# %%
alone = nsbox.run(["ip", "-brief", "address"], net=True, capture_output=True, text=True)
print(alone.stdout)
assert [line.split()[0] for line in alone.stdout.splitlines()] == ["lo"]

# %% [markdown]
# ## A network, and two boxes on it
#
# The server is a few lines of Python that answer every request with a page naming the box. It
# binds the box's `eth0` address. (A plain `python -m http.server` would first look its address up
# in DNS; nothing beyond the LAN is reachable — no NAT is set up — so that lookup would only time
# out.)

# %%
SERVER = textwrap.dedent("""
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
""")


def serve(lan: nsbox.Network, ip: str, name: str) -> nsbox.Popen:
    """A box on lan serving SERVER's page on ip:80, as PID 1 with its own hostname."""
    box = nsbox.Popen(
        [sys.executable, "-c", SERVER, ip, "80"],
        network=lan,
        ip=ip,
        pid=True,
        hostname=name,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert box.stdout and box.stdout.readline() == "ready\n"
    return box


lan = nsbox.Network("10.213.0.0/24")
web = serve(lan, "10.213.0.80", "web")
client = nsbox.Popen(["sleep", "600"], network=lan, pid=True, hostname="client")
print(lan)
display(
    table(
        ["box", "host PID", "eth0 address", "veth on the bridge"],
        [("web" if b is web else "client", b.pid, b.ip, b.veth) for b in lan.boxes],
    )
)

# %% [markdown]
# The client got the first free address (`.2`); the server asked for `.80`. Inside the client, `ip`
# shows `lo` and `eth0`, a route for the subnet and a default route through the gateway:

# %%
inside = client.exec(["sh", "-c", "ip -brief address; echo; ip route"], capture_output=True, text=True)
print(inside.stdout)
assert "eth0@" in inside.stdout and "default via 10.213.0.1 dev eth0" in inside.stdout
assert lan.bridge not in inside.stdout

# %% [markdown]
# ## Serving a page from one box to the other

# %%
FETCH = "import urllib.request, sys; print(urllib.request.urlopen(sys.argv[1]).read().decode())"
page = client.exec([sys.executable, "-c", FETCH, "http://10.213.0.80/"], capture_output=True, text=True).stdout
display(HTML(page))
assert "hello from web" in page and "PID 1 inside" in page

# %% [markdown]
# The page says PID 1: the server is PID 1 of its own PID namespace. From the host the same
# process has another PID — and, since the bridge (with the gateway address) is in the host's
# network namespace, the host reaches the box through it, as it reaches a Docker container on
# `docker0`:

# %%
from_host = fetch("http://10.213.0.80/")
print("host PID of the server:", web.pid)
display(HTML(from_host))
assert "hello from web" in from_host
bridge_ports = sorted(os.listdir(f"/sys/class/net/{lan.bridge}/brif"))
print(f"ports of {lan.bridge}:", bridge_ports)
assert set(bridge_ports) == {b.veth for b in lan.boxes}

# %% [markdown]
# ## Port 80, twice
#
# Ports belong to a network namespace: a second server binds port 80 in its own box while the first
# one holds port 80 in its.

# %%
web2 = serve(lan, "10.213.0.81", "web2")
pages = {f"http://10.213.0.{n}/": fetch(f"http://10.213.0.{n}/") for n in (80, 81)}
display(table(["URL", "answer"], pages.items()))
assert "hello from web<" in pages["http://10.213.0.80/"] and "hello from web2" in pages["http://10.213.0.81/"]

# %% [markdown]
# ## The picture

# %%
nettopo.draw(lan, names={web: "web (port 80)", web2: "web2 (port 80)", client: "client"})

# %% [markdown]
# ## Cleaning up
#
# A box's veth pair goes with its network namespace; `close()` deletes the bridge and any veth left.
# The host's interfaces are back to what they were.

# %%
for box in (web, web2, client):
    box.kill()
    box.wait()
lan.close()
print(sorted(links()))
assert links() == HOST_LINKS

# %% [markdown]
# ## Without root
#
# An ordinary user may not add a bridge to the host. `nsbox.Network` then puts the whole LAN in a
# network namespace owned by a user namespace of the caller's own, and starts the boxes inside that
# user namespace: they reach each other, the host sees nothing. `private=True` asks for the same as
# root, which is what this cell shows (the test suite runs the same code as uid 65534).

# %%
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
    display(
        table(
            ["", ""],
            [
                ("the other box fetched", page.strip()),
                ("the host's route to 10.213.1.80", (route.stdout or route.stderr).splitlines()[0]),
                ("the host fetched", from_host),
                ("new interfaces on the host", sorted(links() - HOST_LINKS) or "none"),
                ("interfaces in the LAN's namespace", ", ".join(sorted(hidden.interfaces()))),
            ],
        )
    )
    display(nettopo.draw(hidden, names={server: "hidden (port 80)"}))
    server.kill()
    server.wait()
assert "hello from hidden" in page and "hidden" not in from_host and "nsbr" not in route.stdout
assert links() == HOST_LINKS

# %% [markdown]
# ## Reaching out: a NAT, a leash, and a published port
#
# The boxes above reach their LAN and nothing else. `egress=True` gives a box the host's networks: nsbox
# starts `slirp4netns` beside the box, which puts a `tap0` in the box's network namespace and relays what
# the box sends with sockets of its own on the host — a NAT by construction: the far end sees the host,
# never the box. `10.0.2.2` is the host's loopback as the box sees it. Here the "outside world" is a web
# server on the host's `127.0.0.1` (this machine reaches nothing else).


# %%
class Outside(http.server.BaseHTTPRequestHandler):
    """The host's page: it says where the request came from."""

    def do_GET(self) -> None:
        """Answer with the peer's address."""
        body = f"<h1>hello from the host</h1> you came from {self.client_address[0]}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Log nothing."""


outside = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Outside)
threading.Thread(target=outside.serve_forever, daemon=True).start()
URL = f"http://10.0.2.2:{outside.server_port}/"
TRY = textwrap.dedent("""
    import sys, time, urllib.request
    start = time.monotonic()
    try:
        print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())
    except OSError as e:
        print(f"refused after {time.monotonic() - start:.3f} s: {e}")
""")

out = nsbox.Popen(["sleep", "600"], egress=True, pid=True)
leashed = nsbox.Popen(["sleep", "600"], egress=True, allow=["10.0.0.0/8:443"], pid=True)
answers = {
    name: box.exec([sys.executable, "-c", TRY, URL], capture_output=True, text=True).stdout
    for name, box in (("egress=True", out), ('allow=["10.0.0.0/8:443"]', leashed))
}
display(table(["box", f"fetching {URL}"], answers.items()))
assert (
    "you came from 127.0.0.1" in answers["egress=True"] and "refused after 0.0" in answers['allow=["10.0.0.0/8:443"]']
)

# %% [markdown]
# The first box's request reached the host from `127.0.0.1`: the engine's socket, not the box's `10.0.2.100`.
# The second box may reach only HTTPS in `10.0.0.0/8`; everything else is refused at once (a TCP reset).
# The rule is an nftables rule in a network namespace owned by nsbox, which the box joined as root of a user
# namespace of its own below nsbox's: root in the box cannot touch it.

# %%
lift = leashed.exec(["sh", "-c", "nft flush ruleset; ip link set tap0 down"], capture_output=True, text=True)
again = leashed.exec([sys.executable, "-c", TRY, URL], capture_output=True, text=True).stdout
print(lift.stderr, "\nafter trying:", again)
assert lift.returncode != 0 and "refused" in again

# %% [markdown]
# The other way round, `publish={host port: box port}` makes a port of the box a port of the host's
# loopback. The server is the one from the start of the notebook, on the box's port 80:

# %%
with socket.socket() as probe:  # a free port on the host, for the example
    probe.bind(("127.0.0.1", 0))
    PORT = probe.getsockname()[1]
published = nsbox.Popen(
    [sys.executable, "-c", SERVER, "0.0.0.0", "80"],
    egress=True,
    publish={PORT: 80},
    pid=True,
    hostname="published",
    stdout=subprocess.PIPE,
    text=True,
)
assert published.stdout and published.stdout.readline() == "ready\n"
page = fetch(f"http://127.0.0.1:{PORT}/")
display(HTML(page))
assert "hello from published" in page
published

# %% [markdown]
# ## The picture

# %%
display(nettopo.draw_egress({out: "egress=True", leashed: "on a leash", published: f"publish={{{PORT}: 80}}"}))
engines = [box.egress.helper_pid for box in (out, leashed, published) if box.egress]
for box in (out, leashed, published):
    box.kill()
    box.wait()
    if box.stdout:
        box.stdout.close()
outside.shutdown()
outside.server_close()
# Nothing to wait for: each engine was stopped when its box was reaped.
assert not [pid for pid in engines if pid and os.path.exists(f"/proc/{pid}")]
print("engines gone:", engines)

# %% [markdown]
# That is the whole trick behind container networking: a network namespace per container, a
# virtual cable into it, and a switch outside; and for the outside world, a NAT and published ports — which
# Docker makes with routing and iptables in the host's namespace, and nsbox with an engine beside the box that
# changes nothing on the host.
