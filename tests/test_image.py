"""``nsbox.Image``: images built here from busybox, unpacked (OCI layout, its tar, ``docker save``) and run.

No registry is reached: each test builds its images with the small builder below (a static busybox and its
applet links, a second layer with a whiteout, a replaced file and an opaque directory). Hostile archives are
each run twice: through ``Image.unpack``, and through a plain ``tarfile.extractall`` of the same layers, the
control, which shows the attack does write outside the destination when nothing stops it.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import platform
import shutil
import stat
import subprocess
import tarfile
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import nsbox

BUSYBOX = "/bin/busybox"
APPLETS = ("sh", "ls", "cat", "ps", "echo", "id", "pwd", "sleep", "stat")
ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
CONFIG = {
    "Entrypoint": ["/bin/sh", "-c"],
    "Cmd": ["echo hi; cat /etc/msg"],
    "Env": ["PATH=/bin", "GREETING=hello from the image"],
    "WorkingDir": "/work",
}

# ---------------------------------------------------------------------------------------------------------------
# The builder: layers as lists of (TarInfo, data), images as OCI layouts, tars of them, or docker save archives

Entry = tuple[tarfile.TarInfo, bytes | None]


def _info(name: str, kind: bytes, mode: int, **fields: Any) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = kind, mode, 1_700_000_000
    for key, value in fields.items():
        setattr(info, key, value)
    return info


def file(name: str, data: bytes | str, mode: int = 0o644, **fields: Any) -> Entry:
    raw = data.encode() if isinstance(data, str) else data
    return _info(name, tarfile.REGTYPE, mode, size=len(raw), **fields), raw


def directory(name: str, mode: int = 0o755) -> Entry:
    return _info(name, tarfile.DIRTYPE, mode), None


def symlink(name: str, target: str) -> Entry:
    return _info(name, tarfile.SYMTYPE, 0o777, linkname=target), None


def hardlink(name: str, target: str) -> Entry:
    return _info(name, tarfile.LNKTYPE, 0o644, linkname=target), None


def device(name: str, major: int, minor: int) -> Entry:
    return _info(name, tarfile.CHRTYPE, 0o666, devmajor=major, devminor=minor), None


def layer(entries: list[Entry], compress: bool = False) -> bytes:
    """A layer's tar, gzip-compressed or plain."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, None if data is None else io.BytesIO(data))
    raw = buffer.getvalue()
    return gzip.compress(raw, mtime=0) if compress else raw


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def uncompressed(blob: bytes) -> bytes:
    """The tar in ``blob`` (a damaged one as it is: the tests that damage layers check blob digests only)."""
    try:
        return gzip.decompress(blob) if blob[:2] == b"\x1f\x8b" else blob
    except (EOFError, OSError):
        return blob


def image_config(config: dict[str, Any], layers: list[bytes], diff_ids: bool = True) -> bytes:
    rootfs = {"type": "layers", "diff_ids": [sha256(uncompressed(blob)) for blob in layers] if diff_ids else []}
    return json.dumps({"architecture": ARCH, "os": "linux", "config": config, "rootfs": rootfs}).encode()


def oci_layout(path: Path, layers: list[bytes], config: dict[str, Any] = CONFIG) -> Path:
    """An OCI image layout directory at ``path``: index.json -> manifest -> config and layers, by digest."""
    (path / "blobs" / "sha256").mkdir(parents=True)

    def put(data: bytes, media_type: str) -> dict[str, Any]:
        digest = sha256(data)
        (path / "blobs" / "sha256" / digest.split(":")[1]).write_bytes(data)
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    tar_type = "application/vnd.oci.image.layer.v1.tar"
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": put(image_config(config, layers), "application/vnd.oci.image.config.v1+json"),
        "layers": [put(blob, tar_type + ("+gzip" if blob[:2] == b"\x1f\x8b" else "")) for blob in layers],
    }
    descriptor = put(json.dumps(manifest).encode(), manifest["mediaType"])
    descriptor["platform"] = {"architecture": ARCH, "os": "linux"}
    (path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [descriptor]}))
    (path / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    return path


def tar_of(directory: Path, path: Path) -> Path:
    with tarfile.open(path, "w") as tar:
        for child in sorted(directory.iterdir()):
            tar.add(child, arcname=child.name)
    return path


def docker_save(path: Path, layers: list[bytes], config: dict[str, Any] = CONFIG, blobs: bool = False) -> Path:
    """A ``docker save`` archive: manifest.json, <config digest>.json, <id>/layer.tar, checked by diff_ids.

    With ``blobs``, files named blobs/sha256/<digest> instead and no diff_ids: checked by their names.
    """
    config_blob = image_config(config, layers, diff_ids=not blobs)
    config_name = ("blobs/sha256/" if blobs else "") + sha256(config_blob).split(":")[1] + ("" if blobs else ".json")
    names = [f"{hashlib.sha256(str(i).encode()).hexdigest()}/layer.tar" for i in range(len(layers))]
    if blobs:
        names = [f"blobs/sha256/{sha256(blob).split(':')[1]}" for blob in layers]
    manifest = [{"Config": config_name, "RepoTags": ["busybox-test:latest"], "Layers": names}]
    with tarfile.open(path, "w") as tar:
        for name, data in [("manifest.json", json.dumps(manifest).encode()), (config_name, config_blob)]:
            tar.addfile(file(name, data)[0], io.BytesIO(data))
        for name, blob in zip(names, layers, strict=True):
            tar.addfile(file(name, blob)[0], io.BytesIO(blob))
    return path


def busybox_layer(*extra: Entry) -> bytes:
    """Layer 1 (gzip): busybox and its applets, /etc with passwd, group, msg and gone, /opaque with content."""
    entries = [directory(d) for d in ("bin", "etc", "opaque", "opaque/sub", "proc", "work")]
    entries.append(directory("tmp", 0o1777))
    entries.append(file("bin/busybox", Path(BUSYBOX).read_bytes(), 0o755))
    entries += [symlink(f"bin/{applet}", "busybox") for applet in APPLETS]
    entries += [
        file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/work:/bin/sh\n"),
        file("etc/group", "root:x:0:\nstaff:x:50:\napp:x:1001:\n"),
        file("etc/msg", "from layer 1\n"),
        file("etc/gone", "deleted by layer 2\n"),
        file("opaque/a", "lower\n"),
        file("opaque/sub/b", "lower\n"),
    ]
    return layer(entries + list(extra), compress=True)


def change_layer() -> bytes:
    """Layer 2 (plain tar): deletes etc/gone, replaces etc/msg, makes /opaque opaque and adds opaque/new."""
    return layer(
        [
            file("etc/.wh.gone", b""),
            file("etc/msg", "from layer 2\n"),
            file("etc/.wh.never-there", b""),  # a whiteout of nothing is fine
            directory("opaque"),
            file("opaque/.wh..wh..opq", b""),
            file("opaque/new", "upper\n"),
        ]
    )


def build(kind: str, base: Path, layers: list[bytes], config: dict[str, Any] = CONFIG) -> Path:
    """The image as ``kind``: "oci" (a layout directory), "oci-tar", "docker" or "docker-blobs"."""
    if kind == "oci":
        return oci_layout(base / "layout", layers, config)
    if kind == "oci-tar":
        return tar_of(oci_layout(base / "layout", layers, config), base / "image.tar")
    return docker_save(base / "docker.tar", layers, config, blobs=kind == "docker-blobs")


@pytest.fixture(scope="module")
def busybox_image() -> Iterator[nsbox.Image]:
    """The two-layer busybox image, unpacked once (from an OCI layout) for the tests that only run it."""
    base = Path(tempfile.mkdtemp(prefix="nsbox-image-"))
    base.chmod(0o755)  # a box with uid_map is root inside but not on the host: it must reach the root
    try:
        archive = oci_layout(base / "layout", [busybox_layer(), change_layer()])
        yield nsbox.Image.unpack(archive, base / "root")
    finally:
        shutil.rmtree(base)


def leftovers(parent: Path) -> list[str]:
    """What an unpack left in ``parent`` besides the archive and the sentinel: a partial tree would show here."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


# ---------------------------------------------------------------------------------------------------------------
# Unpacking


@pytest.mark.parametrize("kind", ["oci", "oci-tar", "docker", "docker-blobs"])
def test_unpack_applies_the_layers_in_order_with_their_whiteouts(kind: str, tmp_path: Path) -> None:
    archive = build(kind, tmp_path, [busybox_layer(), change_layer()])
    image = nsbox.Image.unpack(archive, tmp_path / "root")
    root = tmp_path / "root"
    assert image.root == root
    assert (root / "bin" / "busybox").read_bytes() == Path(BUSYBOX).read_bytes()
    assert os.readlink(root / "bin" / "sh") == "busybox"
    assert (root / "etc" / "msg").read_text() == "from layer 2\n"
    assert not (root / "etc" / "gone").exists()
    assert sorted(os.listdir(root / "opaque")) == ["new"]  # a and sub/b were the lower layer's
    assert not list(root.rglob(".wh.*"))
    assert stat.S_IMODE((root / "tmp").stat().st_mode) == 0o1777
    assert stat.S_IMODE(root.stat().st_mode) == 0o755
    assert image.cmd == ["/bin/sh", "-c", "echo hi; cat /etc/msg"]
    assert image.env == {"PATH": "/bin", "GREETING": "hello from the image"}
    assert (image.workdir, image.user) == ("/work", "")
    assert leftovers(tmp_path) == []


def test_unpack_keeps_owners_and_makes_devices_as_root_only_when_asked_and_drops_setuid_unless_asked(
    tmp_path: Path,
) -> None:
    extra = [
        file("etc/owned", "x", uid=1234, gid=4321),
        file("bin/suid", "x", 0o4755),
        device("dev-null", 1, 3),
    ]
    archive = oci_layout(tmp_path / "layout", [busybox_layer(*extra)])
    with pytest.warns(RuntimeWarning, match=r"devices=True\): dev-null"):
        root = nsbox.Image.unpack(archive, tmp_path / "no-devices").root
    assert not (root / "dev-null").exists()  # a hostile image's disk node would be every user's disk
    for name, setuid in [("plain", False), ("setuid", True)]:
        root = nsbox.Image.unpack(archive, tmp_path / name, setuid=setuid, devices=True).root
        owned = (root / "etc" / "owned").stat()
        assert (owned.st_uid, owned.st_gid) == (1234, 4321)
        assert stat.S_IMODE((root / "bin" / "suid").stat().st_mode) == (0o4755 if setuid else 0o755)
        null = (root / "dev-null").stat()
        assert stat.S_ISCHR(null.st_mode) and null.st_rdev == os.makedev(1, 3)


def test_unpack_into_an_existing_empty_directory_works_and_a_full_one_is_refused(tmp_path: Path) -> None:
    archive = oci_layout(tmp_path / "layout", [busybox_layer()])
    (tmp_path / "empty").mkdir()
    assert (nsbox.Image.unpack(archive, tmp_path / "empty").root / "etc" / "msg").is_file()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "mine").write_text("keep me")
    with pytest.raises(FileExistsError, match="full"):
        nsbox.Image.unpack(archive, tmp_path / "full")
    assert os.listdir(tmp_path / "full") == ["mine"]


def test_unpack_says_what_it_reads(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no-such-image\.tar"):
        nsbox.Image.unpack(tmp_path / "no-such-image.tar", tmp_path / "root")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "plain-dir").mkdir()
    with tarfile.open(tmp_path / "other.tar", "w") as tar:
        tar.add(tmp_path / "notes.txt", arcname="notes.txt")
    (tmp_path / "bad-json").mkdir()
    (tmp_path / "bad-json" / "index.json").write_text("[]")
    for wrong in ("notes.txt", "plain-dir", "other.tar", "bad-json"):
        with pytest.raises(ValueError, match=r"OCI image layout .* or a `docker save` archive"):
            nsbox.Image.unpack(tmp_path / wrong, tmp_path / "root")
    assert not (tmp_path / "root").exists()
    assert leftovers(tmp_path) == []


def test_a_layer_that_does_not_match_its_digest_is_refused_and_nothing_is_left(tmp_path: Path) -> None:
    good, evil = busybox_layer(), change_layer()
    layout = oci_layout(tmp_path / "layout", [good, evil])
    blob = layout / "blobs" / "sha256" / sha256(evil).split(":")[1]
    blob.write_bytes(evil.replace(b"from layer 2", b"from layer X"))  # same size, other bytes
    with pytest.raises(ValueError, match=rf"layer 2 of 2 \({sha256(evil)}\).*expected {sha256(evil)}, got sha256:"):
        nsbox.Image.unpack(layout, tmp_path / "root")
    assert not (tmp_path / "root").exists()
    assert leftovers(tmp_path) == []


def test_a_docker_layer_that_does_not_match_its_diff_id_is_refused(tmp_path: Path) -> None:
    good, evil = busybox_layer(), change_layer()
    archive = docker_save(tmp_path / "docker.tar", [good, evil])
    tampered = tmp_path / "tampered.tar"
    with tarfile.open(archive) as source, tarfile.open(tampered, "w") as target:
        for member in source.getmembers():
            data = source.extractfile(member).read()  # type: ignore[union-attr]
            if data == evil:
                data = evil.replace(b"from layer 2", b"from layer X")
            target.addfile(member, io.BytesIO(data))
    with pytest.raises(ValueError, match=rf"layer 2 of 2 .*expected {sha256(evil)}, got sha256:"):
        nsbox.Image.unpack(tampered, tmp_path / "root")
    assert not (tmp_path / "root").exists()
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("compress", [True, False])
def test_a_truncated_layer_with_matching_digests_fails_and_leaves_nothing(compress: bool, tmp_path: Path) -> None:
    # Digests made for the truncated bytes: the tar reader, not the digest check, finds the damage. Layer 1 has a
    # read-only directory, which the clean-up must still remove.
    lower = busybox_layer(directory("ro", 0o555), file("ro/f", "x"))
    full = layer([file("big", os.urandom(200_000)), file("after", "x")], compress=compress)
    layout = oci_layout(tmp_path / "layout", [lower, full[: len(full) // 2]])
    with pytest.raises(ValueError, match=r"layer 2 of 2 .* damaged|is not a tar file"):
        nsbox.Image.unpack(layout, tmp_path / "root")
    assert not (tmp_path / "root").exists()
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------------------------------------
# Hostile archives: each attack against Image.unpack, then against a plain tarfile.extractall (the control)


def naive_unpack(layers: list[bytes], dest: Path) -> None:
    """What an unpacker without protection does: extract each layer over the last, trusting every entry."""
    dest.mkdir()
    trusted: dict[str, Any] = {"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") else {}
    for blob in layers:
        with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
            tar.extractall(dest, **trusted)


def attacks(outside: Path) -> dict[str, tuple[list[bytes], str]]:
    """Name -> (layers, what Image.unpack does: "refused" or "contained") for attacks on the ``outside`` dir."""
    base = busybox_layer()
    return {
        "dotdot-path": ([base, layer([file("../outside/pwned", "pwned")])], "refused"),
        "absolute-path": ([base, layer([file(f"{outside}/pwned", "pwned")])], "contained"),
        "symlink-then-write": (
            [base, layer([symlink("evil", str(outside))]), layer([file("evil/pwned", "pwned")])],
            "contained",
        ),
        "relative-symlink-then-write": (
            [base, layer([symlink("evil", "../outside")]), layer([file("evil/pwned", "pwned")])],
            "contained",
        ),
        "symlink-then-write-same-layer": (
            [base, layer([symlink("evil", str(outside)), file("evil/pwned", "pwned")])],
            "contained",
        ),
        "hardlink-to-outside-then-write": (
            [base, layer([hardlink("link", f"{outside}/secret")]), layer([file("link", "pwned")])],
            "refused",
        ),
        "hardlink-dotdot-then-write": (
            [base, layer([hardlink("link", "../outside/secret")]), layer([file("link", "pwned")])],
            "refused",
        ),
    }


def outside_state(outside: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in outside.iterdir()}


@pytest.mark.parametrize("attack", sorted(attacks(Path("/x"))))
def test_a_hostile_archive_writes_nothing_outside_dest(attack: str, tmp_path: Path) -> None:
    outside = tmp_path / "outside"  # the sentinel, next to dest
    outside.mkdir()
    (outside / "secret").write_text("secret\n")
    layers, expected = attacks(outside)[attack]
    archive = oci_layout(tmp_path / "layout", layers)
    dest = tmp_path / "dest"
    if expected == "refused":
        with pytest.raises(ValueError, match=r"'\.\.'|not a file in the image"):
            nsbox.Image.unpack(archive, dest)
        assert not dest.exists()
    else:
        image = nsbox.Image.unpack(archive, dest)
        pwned = [p for p in image.root.rglob("pwned") if p.is_file() and not p.is_symlink()]
        assert [p.read_text() for p in pwned] == ["pwned"]  # written inside dest instead
        assert pwned[0].resolve().is_relative_to(dest.resolve())
    assert outside_state(outside) == {"secret": "secret\n"}
    assert leftovers(tmp_path) == []

    # The control: the same layers, extracted naively into another directory next to the sentinel.
    naive_unpack(layers, tmp_path / "naive")
    assert outside_state(outside) != {"secret": "secret\n"}


@pytest.mark.parametrize("name", [".wh...", ".wh..", ".wh.", "sub/.wh..."])
def test_a_whiteout_of_dot_or_dotdot_is_refused_and_removes_nothing(name: str, tmp_path: Path) -> None:
    (tmp_path / "precious").write_text("keep\n")
    archive = oci_layout(tmp_path / "layout", [busybox_layer(file("sub/x", "x")), layer([file(name, "")])])
    with pytest.raises(ValueError, match="whiteout of"):
        nsbox.Image.unpack(archive, tmp_path / "dest")
    assert (tmp_path / "precious").read_text() == "keep\n" and (tmp_path / "layout").is_dir()
    assert not (tmp_path / "dest").exists() and leftovers(tmp_path) == []
    # The control: what applying that whiteout as any other does (removing the name it hides, in the
    # directory that holds it) removes for "..": the directory above, here a scratch copy of this one.
    scratch = tmp_path / "scratch"
    (scratch / "holder" / "dest").mkdir(parents=True)
    (scratch / "holder" / "precious").write_text("keep\n")
    fd = os.open(scratch / "holder" / "dest", os.O_RDONLY | os.O_DIRECTORY)
    try:
        shutil.rmtree("..", dir_fd=fd)  # empties the directory above, then fails to remove ".." itself
    except OSError:
        pass
    finally:
        os.close(fd)
    assert not (scratch / "holder" / "precious").exists()


# ---------------------------------------------------------------------------------------------------------------
# Running


def test_run_starts_the_images_command_in_a_box_on_its_root(busybox_image: nsbox.Image) -> None:
    r = busybox_image.run(capture_output=True, text=True)
    assert (r.returncode, r.stdout, r.stderr) == (0, "hi\nfrom layer 2\n", "")
    r = busybox_image.run(["/bin/sh", "-c", "echo $GREETING; pwd; ls /"], capture_output=True, text=True)
    lines = r.stdout.splitlines()
    assert lines[:2] == ["hello from the image", "/work"]
    assert sorted(lines[2:]) == ["bin", "etc", "opaque", "proc", "tmp", "work"]  # the image's /, not the host's


def test_run_merges_the_callers_env_over_the_images(busybox_image: nsbox.Image) -> None:
    r = busybox_image.run(
        ["sh", "-c", 'echo "$GREETING|$OTHER|$PATH|$HOME"'], env={"OTHER": "mine"}, capture_output=True, text=True
    )
    assert r.stdout == "hello from the image|mine|/bin|\n"  # nothing of the caller's own environment
    r = busybox_image.run(["sh", "-c", "echo $GREETING"], env={"GREETING": "over"}, capture_output=True, text=True)
    assert r.stdout == "over\n"


def test_the_images_command_is_pid_1_inside_and_another_pid_outside(busybox_image: nsbox.Image) -> None:
    box = busybox_image.Popen(
        ["/bin/sh", "-c", "echo $$; ps -o pid,args; echo done; exec sleep 60"],
        pid=True,
        mount_proc=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert box.stdout is not None
        lines = []
        while (line := box.stdout.readline()) not in ("done\n", ""):
            lines.append(line.split())
        assert lines[0] == ["1"]
        assert ["1", "/bin/sh", "-c"] == lines[2][:3]  # ps: PID 1 is the image's shell
        assert box.pid != 1
        nspid = next(x for x in Path(f"/proc/{box.pid}/status").read_text().splitlines() if x.startswith("NSpid:"))
        assert nspid.split()[1:] == [str(box.pid), "1"]  # the same process, seen from the host
    finally:
        box.kill()
        box.wait()
        assert box.stdout is not None
        box.stdout.close()


def test_run_without_a_command_needs_args(tmp_path: Path) -> None:
    image = nsbox.Image.unpack(oci_layout(tmp_path / "layout", [busybox_layer()], {}), tmp_path / "root")
    assert image.cmd == []
    with pytest.raises(ValueError, match="no command"):
        image.run()
    assert image.run(["/bin/echo", "given"], capture_output=True, text=True).stdout == "given\n"
    with pytest.raises(TypeError, match="root"):
        image.run(["/bin/true"], root="/")


@pytest.mark.parametrize(
    ("user", "ids"),
    [
        ("", (0, 0)),
        ("root", (0, 0)),
        ("0", (0, 0)),
        ("app", (1000, 1001)),
        ("1000", (1000, 1001)),
        ("app:staff", (1000, 50)),
        ("1000:7", (1000, 7)),
        ("4242", (4242, 0)),
    ],
)
def test_the_images_user_is_read_from_its_own_passwd_and_group(
    user: str, ids: tuple[int, int], busybox_image: nsbox.Image
) -> None:
    assert nsbox.Image(busybox_image.root, user=user).ids() == ids


def test_an_unknown_user_name_is_an_error(busybox_image: nsbox.Image) -> None:
    with pytest.raises(ValueError, match="'ghost' is not in its /etc/passwd"):
        nsbox.Image(busybox_image.root, user="ghost").ids()
    with pytest.raises(ValueError, match="'ghosts' is not in its /etc/group"):
        nsbox.Image(busybox_image.root, user="app:ghosts").ids()


def test_as_root_the_images_user_is_applied_where_the_box_maps_it(busybox_image: nsbox.Image) -> None:
    image = nsbox.Image(busybox_image.root, ["/bin/sh", "-c", "echo $(id -u) $(id -g) $(id -G)"], user="app")
    assert image.run(capture_output=True, text=True).stdout == "1000 1001 1001\n"  # no root's groups kept
    # A user namespace with the default map has only root: the command is the box's root.
    assert image.run(user=True, capture_output=True, text=True).stdout == "0 0 0\n"
    maps: dict[str, Any] = {"uid_map": [(0, 100000, 65536)], "gid_map": [(0, 100000, 65536)]}
    assert image.run(capture_output=True, text=True, **maps).stdout.split()[:2] == ["1000", "1001"]
    # The caller's own choice wins.
    assert image.run(user=0, capture_output=True, text=True).stdout.split()[0] == "0"


# ---------------------------------------------------------------------------------------------------------------
# Rootless, as uid 65534


@pytest.fixture
def nobody_dir() -> Iterator[Path]:
    """A directory under /tmp that uid 65534 may write to (sticky and world-writable, like /tmp)."""
    path = Path(tempfile.mkdtemp(prefix="nsbox-image-rootless-", dir="/tmp"))
    path.chmod(0o1777)
    try:
        yield path
    finally:
        for top, dirs, _ in os.walk(path):  # a read-only directory the box left must not stop the clean-up
            for name in dirs:
                if not os.path.islink(os.path.join(top, name)):
                    os.chmod(os.path.join(top, name), 0o755)
        shutil.rmtree(path)


def test_rootless_unpack_and_run(rootless: Callable[[str], Any], nobody_dir: Path) -> None:
    config = dict(CONFIG, User="app")
    build("oci-tar", nobody_dir, [busybox_layer(device("dev-null", 1, 3), file("bin/suid", "x", 0o4755))])
    (nobody_dir / "layout").rename(nobody_dir / "layout-1")
    oci_layout(nobody_dir / "layout-user", [busybox_layer(), change_layer()], config)
    oci_layout(
        nobody_dir / "layout-damaged", [busybox_layer(directory("ro", 0o555), file("ro/f", "x")), b"\x1f\x8bjunk"]
    )
    subprocess.run(["chmod", "-R", "a+rX", str(nobody_dir)], check=True)
    seen = rootless(
        textwrap.dedent(
            f"""
            import warnings
            base = {str(nobody_dir)!r}
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                image = nsbox.Image.unpack(base + "/image.tar", base + "/root")
            r = image.run(capture_output=True, text=True)
            ps = image.run(["ps", "-o", "pid,args"], pid=True, mount_proc=True, capture_output=True, text=True)
            owners = {{os.stat(base + "/root/" + p).st_uid for p in ("bin/busybox", "etc", "tmp")}}
            suid = os.stat(base + "/root/bin/suid").st_mode & 0o7777

            user_image = nsbox.Image.unpack(base + "/layout-user", base + "/root-user")
            as_root = user_image.run(["id", "-u"], capture_output=True, text=True).stdout
            maps = dict(uid_map=[(1000, os.getuid(), 1)], gid_map=[(1001, os.getgid(), 1)])
            as_app = user_image.run(["sh", "-c", "echo $(id -u) $(id -g)"], capture_output=True, text=True, **maps)

            try:
                nsbox.Image.unpack(base + "/layout-damaged", base + "/root-damaged")
                damaged = "unpacked"
            except ValueError as e:
                damaged = str(e)
            emit({{
                "warnings": [str(w.message) for w in caught], "stdout": r.stdout, "ps": ps.stdout,
                "owners": list(owners), "suid": suid, "as_root": as_root, "as_app": as_app.stdout, "damaged": damaged,
                "left": sorted(os.listdir(base)), "dev": os.path.lexists(base + "/root/dev-null"),
            }})
            """
        )
    )
    assert seen["stdout"] == "hi\nfrom layer 1\n"
    assert [line.split()[:2] for line in seen["ps"].splitlines()[1:]] == [["1", "ps"]]
    assert seen["owners"] == [65534]  # the caller's, not the archive's
    assert seen["suid"] == 0o755
    assert len(seen["warnings"]) == 1 and "dev-null" in seen["warnings"][0]
    assert seen["dev"] is False
    # The image's user (app, 1000:1001) is not mapped by default: the box's root runs it. Mapped, it is applied.
    assert seen["as_root"] == "0\n"
    assert seen["as_app"] == "1000 1001\n"
    assert "damaged" in seen["damaged"] or "not a tar" in seen["damaged"]
    assert seen["left"] == ["image.tar", "layout-1", "layout-damaged", "layout-user", "root", "root-user"]


def test_an_image_runs_in_a_sandbox() -> None:
    # The image is the root (it overrides the sandbox's read-only host root); the rest of the sandbox holds.
    base = Path(tempfile.mkdtemp(prefix="nsbox-image-"))
    base.chmod(0o755)  # a root caller's sandbox is nobody on the host: it must reach the root
    try:
        image = nsbox.Image.unpack(oci_layout(base / "layout", [busybox_layer(directory("dev"))]), base / "root")
        script = "grep -E '^(CapEff|NoNewPrivs)' /proc/self/status; echo x > /tmp/ok && cat /tmp/ok; hostname box"
        r = image.run(["/bin/sh", "-c", script], sandbox=True, capture_output=True, text=True)
        assert r.stdout.split() == ["CapEff:", "0000000000000000", "NoNewPrivs:", "1", "x"], r
        # Without capabilities setting the hostname fails; control: the same image outside a sandbox may.
        assert r.returncode != 0 and "Operation not permitted" in r.stderr
        assert image.run(["/bin/sh", "-c", "hostname box"], uts=True).returncode == 0
        # The sandbox keeps the image as it is; control: outside one the box writes to the image's files.
        write = ["/bin/sh", "-c", "echo x > /work/written"]
        r = image.run(write, sandbox=True, capture_output=True)
        assert b"Read-only file system" in r.stderr and not (image.root / "work" / "written").exists()
        assert image.run(write).returncode == 0 and (image.root / "work" / "written").exists()
    finally:
        shutil.rmtree(base)
