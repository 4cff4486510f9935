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
# # 7 · A container from scratch
#
# The notebooks so far gave a process namespaces, but it still saw the host's files: its `ls /` was
# the host's. A container also has a filesystem of its own, unpacked from an image. This notebook
# builds one step by step — an image, its root with `pivot_root`, `/proc`, `/dev`, a hostname, an
# overlay that keeps the image pristine, a network — adding one option at a time and looking at each
# from both sides: what the box sees, and what the host sees. At the end, the article's `docker exec`
# experiment on the finished container.
#
# The test suite runs this notebook twice: as root, and as uid 65534 (the committed outputs are
# root's). The cells are the same; where the kernel's rules differ without root, the prose says so.

# %%
import hashlib
import io
import json
import os
import platform
import random
import shutil
import socket
import subprocess
import tarfile
import tempfile
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import layers  # the overlay picture (layers.py, next to this notebook)
from IPython.display import HTML, display

import nsbox

ROOT = os.geteuid() == 0
WORK = Path(tempfile.mkdtemp(prefix="nsbox-nb7-"))
WORK.chmod(0o755)


def table(head: Sequence[str], rows: Iterable[Sequence[object]]) -> HTML:
    """An HTML table."""
    th = "".join(f"<th>{h}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return HTML(f"<table><tr>{th}</tr>{body}</table>")


def mount_points(mountinfo: str) -> list[str]:
    """The mount points of a /proc/PID/mountinfo, in order."""
    return [line.split()[4] for line in mountinfo.splitlines()]


def host_mounts_under(path: Path) -> list[str]:
    """The host's mount points (ours, read here) at or under path."""
    mine = mount_points(Path("/proc/self/mountinfo").read_text())
    return [m for m in mine if m == str(path) or m.startswith(f"{path}/")]


print(f"uid {os.getuid()} · {'root' if ROOT else 'not root'} · working in {WORK}")

# %% [markdown]
# ## An image
#
# An image is a stack of layers — tar archives of files — and a config that says what to run. This
# one is built here, from the static busybox on this machine: layer 1 is busybox with a link per
# applet, a few files in `/etc`, and the empty mount points every image has (`/proc`, `/dev`); layer
# 2 changes `/etc/motd` and deletes `/etc/issue` with a whiteout (`.wh.issue`). Packed as an OCI
# image layout (what `skopeo copy … oci:DIR` writes), it is unpacked by `nsbox.Image.unpack`, which
# checks each layer's digest and applies the layers in order into one directory.

# %%
BUSYBOX = Path("/bin/busybox")
APPLETS = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True).stdout.split()


Member = tuple[tarfile.TarInfo, io.BytesIO]


def entry(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", mode: int = 0o644, link: str = "") -> Member:
    """One member of a layer: its header and its data."""
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size, info.linkname, info.mtime = kind, mode, len(data), link, 1_700_000_000
    return info, io.BytesIO(data)


def layer(members: list[Member]) -> bytes:
    """A layer: an uncompressed tar of members."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, data)
    return buffer.getvalue()


def oci_layout(path: Path, blobs: list[bytes], config: dict[str, Any]) -> Path:
    """An OCI image layout at path: index.json names a manifest, which names the config and the layers."""
    (path / "blobs" / "sha256").mkdir(parents=True)

    def put(data: bytes, media_type: str) -> dict[str, Any]:
        digest = hashlib.sha256(data).hexdigest()
        (path / "blobs" / "sha256" / digest).write_bytes(data)
        return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}

    diff_ids = [f"sha256:{hashlib.sha256(blob).hexdigest()}" for blob in blobs]
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    image_config = {
        "architecture": arch,
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    manifest_type = "application/vnd.oci.image.manifest.v1+json"
    manifest = {
        "schemaVersion": 2,
        "mediaType": manifest_type,
        "config": put(json.dumps(image_config).encode(), "application/vnd.oci.image.config.v1+json"),
        "layers": [put(blob, "application/vnd.oci.image.layer.v1.tar") for blob in blobs],
    }
    index = {"schemaVersion": 2, "manifests": [put(json.dumps(manifest).encode(), manifest_type)]}
    (path / "index.json").write_text(json.dumps(index))
    (path / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    return path


layer1 = layer(
    [entry(d, tarfile.DIRTYPE, mode=0o755) for d in ("bin", "etc", "proc", "dev", "srv")]
    + [entry("tmp", tarfile.DIRTYPE, mode=0o1777)]
    + [entry("bin/busybox", data=BUSYBOX.read_bytes(), mode=0o755)]
    + [entry(f"bin/{a}", tarfile.SYMTYPE, link="busybox") for a in APPLETS if a != "busybox"]
    + [entry("etc/passwd", data=b"root:x:0:0:root:/:/bin/sh\n")]
    + [entry("etc/motd", data=b"from layer 1\n"), entry("etc/issue", data=b"busybox from scratch\n")]
)
layer2 = layer([entry("etc/motd", data=b"from layer 2\n"), entry("etc/.wh.issue")])
config = {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"], "WorkingDir": "/"}
archive = oci_layout(WORK / "layout", [layer1, layer2], config)

image = nsbox.Image.unpack(archive, WORK / "image")
files = sorted(str(p.relative_to(archive)) for p in archive.rglob("*") if p.is_file())
display(table(["the OCI layout", "the unpacked image"], [("<br>".join(files), f"{image!r}")]))
print("ls", image.root, "->", sorted(os.listdir(image.root)))
print("etc:", sorted(os.listdir(image.root / "etc")), "· motd:", (image.root / "etc/motd").read_text().strip())
assert sorted(os.listdir(image.root)) == ["bin", "dev", "etc", "proc", "srv", "tmp"]
assert sorted(os.listdir(image.root / "etc")) == ["motd", "passwd"]  # issue: deleted by layer 2
assert (image.root / "etc/motd").read_text() == "from layer 2\n" and image.cmd == ["/bin/sh"]

# %% [markdown]
# Unpacked as root, the files have the archive's owners (0 here); unpacked without root they are
# the caller's — which is what a box without root needs, since its user namespace maps only the
# caller's ids.

# %%
owners = {p.lstat().st_uid for p in [image.root, *image.root.rglob("*")]}
print(f"owners of the image's files: {owners}")
assert owners == ({0} if ROOT else {os.getuid()})

# %% [markdown]
# ## Step 1 · `root=`: the image as `/`
#
# `root=image.root` makes a mount namespace for the box, binds the directory on itself and switches
# to it with `pivot_root`; the host's root, which `pivot_root` leaves underneath, is then detached.
# Unlike `chroot`, there is no way back up: `/..` is `/`, and nothing of the host is left mounted.

# %%
SH = ["/bin/sh", "-c"]
ENV = {"PATH": "/bin"}
r = nsbox.run(
    [*SH, "ls /; echo; cd /..; pwd; ls /proc | wc -l"], root=image.root, env=ENV, capture_output=True, text=True
)
print(r.stdout)
*listing, _, up, in_proc = r.stdout.splitlines()
assert listing == sorted(os.listdir(image.root)) and up == "/" and in_proc == "0"  # an empty /proc: no proc yet

# %% [markdown]
# A root made of a directory is bound read-write: what the box writes, it writes into the image.
# Docker never lets that happen — we will fix it with an overlay (step 5).

# %%
nsbox.run([*SH, "echo oops > /written-by-the-box"], root=image.root, env=ENV, check=True)
print("on the host:", sorted(os.listdir(image.root)))
assert (image.root / "written-by-the-box").read_text() == "oops\n"
(image.root / "written-by-the-box").unlink()  # put the image back as it was

# %% [markdown]
# ## Step 2 · `pid=True, mount_proc=True`: a `/proc` of its own
#
# `ps` reads `/proc`. A fresh proc, mounted in the box's PID namespace, shows the box's processes
# only, and `/proc/self/mountinfo` shows the box's mount table: its root and its proc — nothing of
# the host's. On the host, the box's mounts are in no table: they went with its mount namespace.

# %%
BOX: dict[str, Any] = dict(root=image.root, env=ENV, pid=True, mount_proc=True)
r = nsbox.run([*SH, "ps -ef; echo; cat /proc/self/mountinfo"], **BOX, capture_output=True, text=True, check=True)
print(r.stdout)
ps, mountinfo = r.stdout.split("\n\n")
assert [line.split()[:2] for line in ps.splitlines()[1:]] == [["1", "root"], ["2", "root"]]  # the shell, and ps
assert mount_points(mountinfo) == ["/", "/proc"]
assert host_mounts_under(WORK) == []

# %% [markdown]
# (`ps -ef`'s header is busybox's: `PID USER TIME COMMAND`.)
#
# ## Step 3 · `mounts=[nsbox.Dev()]`: a minimal `/dev`
#
# The image's `/dev` is empty. `nsbox.Dev()` mounts a tmpfs there with the few devices a program
# expects — `null zero full random urandom tty`, bound from the host (a box without root may not make
# device nodes, so nsbox binds them in both cases, as bubblewrap does) — a devpts of its own for
# terminals, and `shm`. No disks.

# %%
BOX["mounts"] = [nsbox.Dev()]
r = nsbox.run(
    [*SH, "ls /dev; echo; stat -c '%n %F %t:%T' /dev/null; echo gone > /dev/null; echo; cat /proc/self/mountinfo"],
    **BOX,
    capture_output=True,
    text=True,
    check=True,
)
devices, null, mountinfo = r.stdout.split("\n\n")
print("ls /dev:", " ".join(devices.split()))
print(null)
print("mount points:", " ".join(mount_points(mountinfo)))
assert {"null", "zero", "full", "random", "urandom", "tty", "pts", "ptmx", "shm", "fd"} <= set(devices.split())
assert null.strip() == "/dev/null character special file 1:3"
assert {"/dev", "/dev/null", "/dev/pts", "/dev/shm"} <= set(mount_points(mountinfo))
assert os.listdir(image.root / "dev") == [] and host_mounts_under(WORK) == []

# %% [markdown]
# ## Step 4 · `hostname=`: a UTS namespace of its own

# %%
BOX["hostname"] = "scratch"
r = nsbox.run([*SH, "hostname; hostname renamed; hostname"], **BOX, capture_output=True, text=True, check=True)
print("inside:", r.stdout.split(), "· the host:", socket.gethostname())
assert r.stdout.split() == ["scratch", "renamed"] and socket.gethostname() not in ("scratch", "renamed")

# %% [markdown]
# ## Step 5 · `root=nsbox.Overlay(...)`: the image stays pristine
#
# Docker's containers start from the same image directory and never change it: their root is an
# **overlay**. Reads fall through a stack of read-only *lower* directories; every change goes to
# an *upper* directory — a changed file is copied up first, a deleted one is hidden by a *whiteout*
# (a character device 0/0 in the upper directory).
#
# Here the lower directories are the image and, on top of it, a small layer of our own (an
# "application": a page to serve, and a replaced `/etc/motd`), as Docker stacks one directory per
# layer. `upper=WORK / "upper"` keeps the changes where the host can list them afterwards (with
# `upper=None` they would go to a tmpfs and vanish with the box). The box adds a user to the
# image's `/etc/passwd`, deletes `/etc/motd` (which two layers hold) and writes `/notes.txt`.

# %%
app = WORK / "app"
(app / "srv").mkdir(parents=True)
(app / "etc").mkdir()
(app / "srv/index.html").write_text("<h1>hello from a container built from scratch</h1>\n")
(app / "etc/motd").write_text("from the app layer\n")
upper = WORK / "upper"
overlay = nsbox.Overlay(lower=[app, image.root], upper=upper)
PATHS = ["bin/busybox", "etc/passwd", "etc/motd", "srv/index.html", "notes.txt"]

BOX["root"] = overlay
changes = "cat /etc/motd; echo guest:x:1000:1000::/:/bin/sh >> /etc/passwd; rm /etc/motd; echo mine > /notes.txt"
changes += "; echo"
seen = "; ".join(f"[ -e /{p} ] && echo {p}" for p in PATHS) + "; true"
r = nsbox.run([*SH, f"{changes}; {seen}"], **BOX, capture_output=True, text=True, check=True)
motd_before, inside = r.stdout.split("\n\n")
print("inside, /etc/motd was:", motd_before, "· the box now sees:", inside.split())


def upper_entries(directory: Path) -> dict[str, str]:
    """The files of an overlay's upper directory: "whiteout" for a 0/0 character device."""
    found = {}
    for path in sorted(directory.rglob("*")):
        st = path.lstat()
        if path.is_dir() and not path.is_symlink():
            continue
        whiteout = (st.st_mode & 0o170000) == 0o020000 and st.st_rdev == 0
        found[str(path.relative_to(directory))] = "whiteout" if whiteout else "file"
    return found


display(
    table(
        ["on the host", ""],
        [
            ("the image's /etc", sorted(os.listdir(image.root / "etc"))),
            ("the image's /etc/passwd", (image.root / "etc/passwd").read_text()),
            ("the upper directory", upper_entries(upper)),
            ("its /etc/passwd", (upper / "etc/passwd").read_text()),
            ("mounts left under " + str(WORK), host_mounts_under(WORK)),
        ],
    )
)
assert motd_before == "from the app layer"  # the topmost lower layer wins
assert (image.root / "etc/motd").read_text() == "from layer 2\n" and (app / "etc/motd").exists()
assert (image.root / "etc/passwd").read_text().splitlines() == ["root:x:0:0:root:/:/bin/sh"]
assert (upper / "etc/passwd").read_text().splitlines()[1].startswith("guest:")  # copied up, then changed
assert upper_entries(upper) == {"etc/motd": "whiteout", "etc/passwd": "file", "notes.txt": "file"}
assert host_mounts_under(WORK) == []

# %% [markdown]
# The picture: the layers as the host lists them (the image's files, our layer's, the upper
# directory's), and what the process saw — each path from the topmost layer that holds it, none where
# that is a whiteout. The merged view computed from the layers is the one the box listed.

# %%
stack = [
    ("upper: the box's changes", upper_entries(upper)),
    ("lower 1: the app layer", {str(p.relative_to(app)): "file" for p in app.rglob("*") if p.is_file()}),
    ("lower 2: the image", {p: "file" for p in PATHS if (image.root / p).exists()}),
]
assert sorted(p for p in layers.visible(stack) if p in PATHS) == sorted(inside.split())
layers.draw(stack, PATHS)

# %% [markdown]
# Without root, the box's overlay is mounted in its user namespace, with the kernel's rules for that:
# the lower directories must have nothing mounted under them, and a lower file owned by an id the box
# does not map (the host's root, seen inside as 65534) cannot be changed in place — copying it up
# fails with `EOVERFLOW`. That is why the image was unpacked as the caller: then the box's root (the
# caller) owns every lower file, and the copy-up of the image's `/etc/passwd` worked in both runs.
#
# ## Step 6 · `network=`: an address of its own
#
# Notebook 6's network: a bridge, and a veth pair into the box. The subnet is picked at run time
# among free ones (`nsbox.Network` refuses, with `ValueError`, a subnet that overlaps a route of the
# host). As root the bridge is on the host, which reaches the box through it; without root
# `nsbox.Network` makes a private LAN in a namespace of the caller's own, which the host cannot reach.
#
# The container: busybox `httpd` serving the app layer's `/srv`, with everything of the steps above.
# A second box from the same image fetches the page with `wget`. The container's overlay has no
# `upper` this time: a new container starts from the pristine layers, its changes in a tmpfs that goes
# with it (the `upper` of step 5 stays on the host, unused: another container's changes).


# %%
def free_network() -> nsbox.Network:
    """A network on a /24 of 10.0.0.0/8 that nothing on the host routes yet."""
    for _ in range(50):
        subnet = f"10.{random.randrange(100, 250)}.{random.randrange(256)}.0/24"
        try:
            return nsbox.Network(subnet)
        except ValueError:
            continue  # in use
    raise RuntimeError("no free /24 found in 10.0.0.0/8")


lan = free_network()
BOX["root"] = nsbox.Overlay(lower=[app, image.root])  # a new container: changes in a tmpfs, gone with it
box = nsbox.Popen(["httpd", "-f", "-p", "80", "-h", "/srv"], **BOX, network=lan)
box.exec([*SH, "until netstat -ltn | grep -q ':80 '; do sleep 0.05; done"], timeout=10, check=True)
url = f"http://{box.ip}/"
page = image.run(["wget", "-qO-", url], network=lan, capture_output=True, text=True, check=True).stdout
display(HTML(page))
if lan.private:  # without root: the host has no way into the LAN
    print(f"the LAN {lan.subnet} is private: the host has no route to {box.ip}")
else:
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.read().decode() == page
    print(f"the host fetched the same page through {lan.bridge}")
assert "built from scratch" in page and lan.private == (not ROOT)

# %% [markdown]
# ## Inside and outside: the `docker exec` experiment
#
# As in the article: `exec` into the running container and run `ps -ef` — the server is PID 1 and
# `ps` the only other process; then look at the same processes from the host, where PID 1 has
# another PID and a parent of ours.

# %%
r = box.exec(["ps", "-ef"], capture_output=True, text=True, check=True)
print("inside:\n" + r.stdout)
rows = [line.split(None, 2) for line in r.stdout.splitlines()[1:]]
assert [(user, cmd.split()[0]) for _, user, cmd in rows] == [("root", "httpd"), ("root", "ps")]
assert rows[0][0] == "1"  # ps has another PID: the box's exec'd processes came before it

ps_host = ["ps", "-o", "pid,ppid,user,args", "-p", f"{box.pid},{os.getpid()}"]
host = subprocess.run(ps_host, capture_output=True, text=True, check=True)
print("on the host:\n" + host.stdout)
parent = int(Path(f"/proc/{box.pid}/status").read_text().split("PPid:\t")[1].split()[0])
assert nsbox.nspid(box.pid) == [box.pid, 1] and parent == os.getpid() and str(box.pid) in host.stdout
print(f"the box's PID 1 is host PID {box.pid}, child of {parent} (this kernel is {os.getpid()})")
box.processes()

# %% [markdown]
# And from the host, the container's root is nowhere in our mount table, while the box's own table
# lists everything this notebook added, one step at a time:

# %%
inside = box.exec(["cat", "/proc/1/mountinfo"], capture_output=True, text=True, check=True).stdout
display(
    table(
        ["the box's mount points", "the host's under " + str(WORK)],
        [("<br>".join(mount_points(inside)), host_mounts_under(WORK) or "none")],
    )
)
assert mount_points(inside)[:2] == ["/", "/proc"] and "overlay" in inside.splitlines()[0]
assert host_mounts_under(WORK) == []

# %% [markdown]
# ## Cleaning up

# %%
box.kill()
box.wait(timeout=10)
lan.close()
for top, dirs, _ in os.walk(WORK):  # the overlay's work directory may be left unreadable
    for name in dirs:
        os.chmod(os.path.join(top, name), 0o755)
shutil.rmtree(WORK)
print("box:", box.returncode, "· left:", WORK.exists())
assert box.returncode == -9 and not WORK.exists()

# %% [markdown]
# That is a container: an image unpacked into a directory, a mount namespace whose root is an
# overlay of it (switched to with `pivot_root`), a fresh `/proc` and a minimal `/dev`, a hostname,
# and a network namespace wired to a bridge — every one an option of `nsbox.Popen`, and every one
# possible without root.
