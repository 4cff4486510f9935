"""``nsbox.Image``: unpack an OCI image layout or a ``docker save`` archive, and run its command in a box.

The archive is read with the standard library only (json, hashlib, tarfile). Every layer is checked against
its digest before it is applied; layers are applied by :mod:`nsbox._layers`, which writes nothing outside the
tree. The tree is made beside ``dest`` and renamed into place only once every layer is in: a failed unpack
leaves nothing behind that could pass for an image.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import json
import os
import platform
import re
import subprocess
import tarfile
import tempfile
import warnings
import zlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from nsbox import _layers
from nsbox._mounts import Bind
from nsbox._popen import Popen as _Popen
from nsbox._run import run as _run

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack for **kwargs from Python 3.12

    from nsbox._options import Args, RunOptions, StrOrBytesPath

#: What ``unpack`` reads, for the error that says it was given something else.
FORMATS = "an OCI image layout (a directory with index.json, or a tar of one) or a `docker save` archive"
#: The PATH a box gets when the image sets none (docker's).
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_INDEX_TYPES = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")
_DIGEST = re.compile(r"(sha256|sha512):([0-9a-f]{64}|[0-9a-f]{128})")
_DOCKER_BLOB = re.compile(r"(?:blobs/sha256/)?([0-9a-f]{64})(?:\.json)?")
#: platform.machine() names as OCI's GOARCH names.
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386", "ppc64le": "ppc64le"}


@dataclass
class _Layer:
    path: str  # in the archive
    label: str  # for messages
    media_type: str = ""
    digest: str | None = None  # of the blob as stored
    diff_id: str | None = None  # of the uncompressed tar


@dataclass
class _Config:
    layers: list[_Layer]
    config: dict[str, Any]


class _Archive:
    """The files of an image archive, by their paths in it (a directory or a tar file)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tar: tarfile.TarFile | None = None
        self.members: dict[str, tarfile.TarInfo] = {}
        if not path.is_dir():
            try:
                self.tar = tarfile.open(path, "r:*")
                self.members = {"/".join(_layers.split(m.name, "archive entry")): m for m in self.tar.getmembers()}
            except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, _layers.HostileEntry) as e:
                raise ValueError(f"{path} is not an image: {e}; nsbox reads {FORMATS}") from None

    def has(self, name: str) -> bool:
        if self.tar is not None:
            return name in self.members
        return (self.path / name).is_file()

    @contextmanager
    def open(self, name: str) -> Iterator[IO[bytes]]:
        """A file of the archive; ``name`` comes from its own JSON, so it may not climb out of it."""
        parts = _layers.split(name, f"{self.path}: file")
        if not parts:
            raise ValueError(f"{self.path}: an empty file name")
        if self.tar is None:
            with open(self.path.joinpath(*parts), "rb") as file:
                yield file
            return
        member = self.members.get("/".join(parts))
        inner = None if member is None else self.tar.extractfile(member)
        if inner is None:
            raise ValueError(f"{self.path} has no file {name!r}, which the image names")
        with inner:
            yield inner

    def json(self, name: str, digest: str | None = None) -> Any:
        with self.open(name) as file:
            data = file.read()
        if digest is not None:
            _check(hashlib.new(digest.split(":")[0], data).hexdigest(), digest, name, self.path)
        try:
            return json.loads(data)
        except ValueError as e:
            raise ValueError(f"{self.path}: {name} is not JSON: {e}") from None

    def close(self) -> None:
        if self.tar is not None:
            self.tar.close()


def _check(got_hex: str, digest: str, what: str, archive: Path) -> None:
    algorithm = digest.split(":")[0]
    if f"{algorithm}:{got_hex}" != digest:
        raise ValueError(f"{archive}: {what} does not match its digest: expected {digest}, got {algorithm}:{got_hex}")


def _blob(digest: object, archive: Path) -> str:
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise ValueError(f"{archive}: {digest!r} is not a digest nsbox can check (sha256 or sha512)")
    return "blobs/" + digest.replace(":", "/")


def _oci(archive: _Archive) -> _Config:
    """The manifest for this machine, from the index (recursing into nested indexes), and its config."""
    index = archive.json("index.json")
    arch = _ARCH.get(platform.machine(), platform.machine())
    while True:
        candidates = [
            m
            for m in index.get("manifests") or []
            if m.get("platform", {}).get("os", "linux") == "linux"
            and m.get("platform", {}).get("architecture", arch) == arch
        ]
        if not candidates:
            raise ValueError(f"{archive.path}: the index has no image for linux/{arch}")
        chosen = candidates[0]
        manifest = archive.json(_blob(chosen.get("digest"), archive.path), chosen["digest"])
        if chosen.get("mediaType") not in _INDEX_TYPES and manifest.get("mediaType") not in _INDEX_TYPES:
            break
        index = manifest
    config_ref = manifest.get("config") or {}
    config = archive.json(_blob(config_ref.get("digest"), archive.path), config_ref["digest"])
    refs = manifest.get("layers") or []
    layers = [
        _Layer(
            _blob(ref.get("digest"), archive.path),
            f"layer {i} of {len(refs)} ({ref['digest']})",
            str(ref.get("mediaType", "")),
            digest=ref["digest"],
        )
        for i, ref in enumerate(refs, 1)
    ]
    return _Config(layers, config)


def _docker(archive: _Archive) -> _Config:
    """``docker save``'s manifest.json: one image, its config (named by its digest) and layers (diff_ids)."""
    manifest = archive.json("manifest.json")
    if not isinstance(manifest, list) or len(manifest) != 1:
        raise ValueError(f"{archive.path}: manifest.json must list exactly one image (docker save one image)")
    entry = manifest[0]
    config_name = str(entry.get("Config", ""))
    named = _DOCKER_BLOB.fullmatch(config_name)
    config = archive.json(config_name, f"sha256:{named.group(1)}" if named else None)
    paths = [str(p) for p in entry.get("Layers") or []]
    diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
    layers = []
    for i, path in enumerate(paths, 1):
        layer = _Layer(path, f"layer {i} of {len(paths)} ({path})")
        if len(diff_ids) == len(paths) and _DIGEST.fullmatch(str(diff_ids[i - 1])):
            layer.diff_id = diff_ids[i - 1]
        elif named_layer := _DOCKER_BLOB.fullmatch(path.removesuffix("/layer.tar")):
            layer.digest = f"sha256:{named_layer.group(1)}"
        else:
            raise ValueError(f"{archive.path}: nothing to check {layer.label} against (no diff_id, no digest name)")
        layers.append(layer)
    return _Config(layers, config)


def _verify(blob: IO[bytes], layer: _Layer, archive: Path) -> None:
    """Check ``layer``'s digest (of the blob) or diff_id (of the tar, uncompressed), reading it whole."""
    expected = layer.digest or layer.diff_id
    assert expected is not None
    hasher = hashlib.new(expected.split(":")[0])
    stream: IO[bytes] = blob
    if layer.digest is None and blob.read(2) == b"\x1f\x8b":
        blob.seek(0)
        stream = gzip.GzipFile(fileobj=blob, mode="rb")  # type: ignore[assignment]
    else:
        blob.seek(0)
    while chunk := stream.read(1 << 20):
        hasher.update(chunk)
    _check(hasher.hexdigest(), expected, layer.label, archive)
    blob.seek(0)


def _strings(value: object) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


@dataclass
class Image:
    """An unpacked image: a root directory and how to run it.

    Made by :meth:`Image.unpack`, or by hand (``Image(Path("rootfs"), ["/bin/sh"])``).
    """

    #: The unpacked tree, the box's ``/``.
    root: Path
    #: The command: the config's ``Entrypoint`` followed by its ``Cmd``.
    cmd: list[str] = field(default_factory=list)
    #: The config's ``Env``, by name.
    env: dict[str, str] = field(default_factory=dict)
    #: The config's ``WorkingDir`` ("" for ``/``).
    workdir: str = ""
    #: The config's ``User`` as written there: ``""``, a name or a uid, with ``:group`` or ``:gid`` perhaps.
    user: str = ""

    @classmethod
    def unpack(
        cls, archive: StrOrBytesPath, dest: StrOrBytesPath, *, setuid: bool = False, devices: bool = False
    ) -> Image:
        """Unpack the image in ``archive`` into the new directory ``dest``, and return it.

        ``archive`` is an OCI image layout (a directory, or a tar of one, gzip-compressed or not) or a
        ``docker save`` archive. Each layer is checked against its digest, then applied in order, with its
        whiteouts. ``dest`` must not exist, or be an empty directory. As root, files get the archive's
        owners; without root, files are the caller's. Device nodes are skipped (one warning names them)
        unless ``devices=True`` as root: a hostile image's node for the host's disk, world-writable, would
        give it to every local user. Set-user-ID and set-group-ID bits are dropped unless ``setuid=True``.

        Raises ``FileNotFoundError`` (no ``archive``), ``FileExistsError`` (``dest`` is not empty) and
        ``ValueError`` (not an image, a digest that does not match, a damaged or hostile layer).
        """
        source, target = Path(os.fsdecode(archive)), Path(os.path.abspath(os.fsdecode(dest)))
        if not source.exists():
            raise FileNotFoundError(errno.ENOENT, "no image archive there", str(source))
        if os.path.lexists(target) and (not target.is_dir() or target.is_symlink() or any(target.iterdir())):
            raise FileExistsError(errno.EEXIST, "an image unpacks into a new or empty directory only", str(target))
        files = _Archive(source)
        try:
            if not files.has("index.json") and not files.has("manifest.json"):
                raise ValueError(f"{source} is not an image (no index.json, no manifest.json): nsbox reads {FORMATS}")
            try:
                found = _oci(files) if files.has("index.json") else _docker(files)
            except (AttributeError, KeyError, TypeError) as e:  # JSON of the wrong shape
                raise ValueError(f"{source}: the image's JSON is not what {FORMATS} holds: {e!r}") from None
            tree = _unpack(files, found.layers, target, setuid, devices)
        finally:
            files.close()
        if tree.skipped_devices:
            warnings.warn(
                f"device nodes skipped (only root makes them, with devices=True): {', '.join(tree.skipped_devices)}",
                RuntimeWarning,
                stacklevel=2,
            )
        config = found.config.get("config") or {}
        env = dict(item.partition("=")[::2] for item in _strings(config.get("Env")))
        return cls(
            root=target,
            cmd=_strings(config.get("Entrypoint")) + _strings(config.get("Cmd")),
            env=env,
            workdir=str(config.get("WorkingDir") or ""),
            user=str(config.get("User") or ""),
        )

    def ids(self) -> tuple[int, int]:
        """``user`` as ``(uid, gid)``, names looked up in the image's own ``/etc/passwd`` and ``/etc/group``.

        A uid without a group takes its passwd entry's group, or 0. Raises ``ValueError`` for a name the
        image does not list.
        """
        name, _, group = self.user.partition(":")
        uid, gid = 0, 0
        if name:
            passwd = _table(self.root, "etc/passwd", 4)
            entry = next((e for e in passwd if name in (e[0], e[2])), None)
            if name.isdigit():
                uid = int(name)
            elif entry is None:
                raise ValueError(f"the image's user {name!r} is not in its /etc/passwd")
            else:
                uid = int(entry[2])
            if entry is not None and entry[3].isdigit():
                gid = int(entry[3])
        if group:
            if group.isdigit():
                gid = int(group)
            else:
                found = next((e for e in _table(self.root, "etc/group", 3) if e[0] == group), None)
                if found is None or not found[2].isdigit():
                    raise ValueError(f"the image's group {group!r} is not in its /etc/group")
                gid = int(found[2])
        return uid, gid

    def Popen(self, args: Args | None = None, **options: Unpack[RunOptions]) -> _Popen:
        """Start the image's command (or ``args``) in a box on :attr:`root`, as :class:`nsbox.Popen`.

        Takes every option of :class:`nsbox.Popen` but ``root``; see :meth:`run` for what the image adds.
        """
        cmd, box = self._box(args, dict(options))
        return _Popen(cmd, **box)

    def run(
        self,
        args: Args | None = None,
        *,
        input: Any = None,
        capture_output: bool = False,
        timeout: float | None = None,
        check: bool = False,
        **options: Unpack[RunOptions],
    ) -> subprocess.CompletedProcess[Any]:
        """Run the image's command (or ``args``, which replace all of it) in a box on :attr:`root`: :func:`nsbox.run`.

        The box starts in ``workdir`` (or ``cwd``), with the image's ``env`` (``PATH`` defaults to docker's),
        updated by ``env`` if given; nothing of the caller's environment gets in. The image's user is applied
        when the box maps its uid and gid: as root without a user namespace, or when ``uid_map`` and
        ``gid_map`` map them; otherwise the command runs as the box's root. A ``user`` name or uid given
        here wins over the image's.
        """
        cmd, box = self._box(args, dict(options))
        return _run(cmd, input=input, capture_output=capture_output, timeout=timeout, check=check, **box)

    def _box(self, args: Args | None, options: dict[str, Any]) -> tuple[Args, RunOptions]:
        if "root" in options:
            raise TypeError("the root of an image's box is the image's: run it with nsbox.run to choose another")
        if args is None:
            if not self.cmd:
                raise ValueError(f"the image in {self.root} has no command (Entrypoint, Cmd): give args")
            args = list(self.cmd)
        # A sandbox keeps the image as it is (as the host's root is read-only in one).
        options["root"] = Bind(self.root, readonly=True) if options.get("sandbox") else self.root
        options["env"] = {"PATH": DEFAULT_PATH, **self.env, **(options.get("env") or {})}
        if options.get("cwd") is None:
            options["cwd"] = self.workdir or "/"
        user = options.get("user")
        if user is None or isinstance(user, bool):
            ids = self.ids()
            if ids != (0, 0) and _mapped(ids, options):
                options["user"], gid = ids
                options.setdefault("group", gid)
                if not _user_namespace(options):
                    options.setdefault("extra_groups", [])  # not root's supplementary groups
        return args, options  # type: ignore[return-value]  # RunOptions' keys, checked by Popen


def _user_namespace(options: Mapping[str, Any]) -> bool:
    """Whether nsbox will make the box a user namespace (``root`` is always given: any namespace is asked for)."""
    user = options.get("user")
    if user is False:
        return False
    return user is True or options.get("uid_map") is not None or options.get("gid_map") is not None or os.geteuid() != 0


def _mapped(ids: tuple[int, int], options: Mapping[str, Any]) -> bool:
    """Whether the box has ``(uid, gid)``: every id without a user namespace, the maps' inside ids in one."""
    if not _user_namespace(options):
        return True

    def covers(ranges: Sequence[tuple[int, int, int]] | None, wanted: int) -> bool:
        return any(inside <= wanted < inside + count for inside, _, count in ranges or [(0, 0, 1)])

    return covers(options.get("uid_map"), ids[0]) and covers(options.get("gid_map"), ids[1])


def _table(root: Path, path: str, fields: int) -> list[list[str]]:
    """The lines of a passwd-like file of the image with at least ``fields`` fields, split (none if it is missing)."""
    text = _layers.read_in_tree(str(root), path) or ""
    return [entry for entry in (line.split(":") for line in text.splitlines()) if len(entry) >= fields]


def _unpack(files: _Archive, layers: list[_Layer], dest: Path, setuid: bool, devices: bool) -> _layers.Tree:
    """Apply ``layers`` to a new directory beside ``dest``, then rename it to ``dest``; on failure, remove it."""
    partial = tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent)
    try:
        tree = _layers.Tree(partial, setuid=setuid, devices=devices)
        for layer in layers:
            if "zstd" in layer.media_type:
                raise ValueError(f"{files.path}: {layer.label} is zstd-compressed, which nsbox cannot read")
            with files.open(layer.path) as blob:
                try:
                    _verify(blob, layer, files.path)
                    with _layers.open_layer(blob, f"{files.path}: {layer.label}") as tar:
                        tree.apply(tar, layer.label)
                except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as e:
                    raise ValueError(f"{files.path}: {layer.label} is damaged: {e}") from None
        tree.finish()
        if () not in tree.dirs:
            os.chmod(partial, 0o755)
        os.rename(partial, dest)
    except BaseException:
        _layers.remove_tree(partial)
        raise
    return tree
