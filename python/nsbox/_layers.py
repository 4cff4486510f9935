"""Applying image layers (tar files) to a directory, safely against hostile archives.

Nothing here writes outside the directory: every path is opened one component at a time from a directory fd,
with ``O_NOFOLLOW``, and symlinks met on the way are followed by this module itself, *inside* the tree, as the
box will see them after ``chroot`` (``lib -> /usr/lib`` means the tree's ``usr/lib``; ``..`` stops at its top).
An entry never writes through an existing file or symlink: what is there is removed and made anew. Entries
whose own names have ``..`` components are refused (a leading ``/`` is dropped, as docker does); hard links
must name an entry already in the tree. (``tarfile``'s ``filter="data"`` checks one archive against the disk
with ``realpath`` before each write; it knows nothing of layers, and strips setuid bits and device nodes.)
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO

#: Symlinks followed for one path before it is taken for a loop (the kernel's limit).
_MAX_LINKS = 40
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"


class HostileEntry(ValueError):
    """A layer entry that would reach outside the tree, or that no tar tool makes (``..``, a dangling hard link)."""


def split(name: str, what: str) -> list[str]:
    """An entry's name as components, without ``.``, empty ones or a leading ``/``; ``..`` is refused."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise HostileEntry(f"{what} {name!r} has a '..' component")
    return parts


@dataclass
class Tree:
    """The directory layers are applied to, and what is left to do once they all are."""

    root: str
    #: Whether to chown to the archive's ids and make device nodes: only root may.
    privileged: bool = field(default_factory=lambda: os.geteuid() == 0)
    #: Keep set-user-ID and set-group-ID bits.
    setuid: bool = False
    #: Make device nodes (as root): an image's node for the host's disk, world-writable, would give every
    #: local user that disk. Off unless asked.
    devices: bool = False
    #: Directory modes and mtimes, set at the end: a read-only directory must stay writable until then.
    dirs: dict[tuple[str, ...], tuple[int, float]] = field(default_factory=dict)
    #: Device nodes that could not be made (without root).
    skipped_devices: list[str] = field(default_factory=list)

    @contextmanager
    def directory(self, parts: list[str], create: bool) -> Iterator[int | None]:
        """An fd of the directory ``parts`` names in the tree, or ``None`` if it is missing and not ``create``.

        Symlinks on the way are followed inside the tree; ``create`` makes missing directories (0755).
        """
        fds = [os.open(self.root, _DIR_FLAGS)]
        try:
            yield self._walk(fds, parts, create)
        finally:
            for fd in fds:
                os.close(fd)

    def _walk(self, fds: list[int], parts: list[str], create: bool) -> int | None:
        # `fds` is the path walked so far as open directories, fds[0] the tree's top: `..` pops one (never the
        # top), an absolute symlink goes back to the top. Only plain names are ever opened, with O_NOFOLLOW.
        todo = list(reversed(parts))
        links = 0
        while todo:
            name = todo.pop()
            if name in ("", "."):
                continue
            if name == "..":
                if len(fds) > 1:
                    os.close(fds.pop())
                continue
            try:
                st = os.lstat(name, dir_fd=fds[-1])
            except FileNotFoundError:
                if not create:
                    return None
                os.mkdir(name, 0o700 | 0o755, dir_fd=fds[-1])
                st = os.lstat(name, dir_fd=fds[-1])
            if stat.S_ISLNK(st.st_mode):
                links += 1
                if links > _MAX_LINKS:
                    raise HostileEntry(f"too many levels of symbolic links in {'/'.join(parts)!r}")
                target = os.readlink(name, dir_fd=fds[-1])
                if target.startswith("/"):
                    while len(fds) > 1:
                        os.close(fds.pop())
                todo.extend(reversed(target.split("/")))
                continue
            if not stat.S_ISDIR(st.st_mode):
                if not create:
                    return None
                raise HostileEntry(f"{'/'.join(parts)!r}: {name!r} on the way is not a directory")
            fds.append(os.open(name, _DIR_FLAGS, dir_fd=fds[-1]))
        return fds[-1]

    def apply(self, layer: tarfile.TarFile, label: str) -> None:
        """Apply one layer: its whiteouts first (they hide lower layers only), then its entries in order."""
        members = layer.getmembers()
        for member in members:
            parts = split(member.name, f"{label}: entry")
            if parts and parts[-1].startswith(_WHITEOUT):
                self._whiteout(parts)
        for member in members:
            parts = split(member.name, f"{label}: entry")
            if parts and parts[-1].startswith(_WHITEOUT):
                continue
            self._extract(layer, member, parts, label)

    def _whiteout(self, parts: list[str]) -> None:
        name = parts[-1]
        with self.directory(parts[:-1], create=False) as fd:
            if fd is None:
                return  # hides something no lower layer has: nothing to do
            if name == _OPAQUE:
                for child in os.listdir(fd):
                    _remove(fd, child)
            elif not name.startswith(_WHITEOUT + _WHITEOUT):  # other .wh..wh. names are aufs's own bookkeeping
                hidden = name[len(_WHITEOUT) :]
                if hidden in ("", ".", ".."):
                    # ".wh..." would hide "..": the directory above, and with it whatever holds dest.
                    raise HostileEntry(f"a whiteout of {hidden!r} in {'/'.join(parts)!r}")
                _remove(fd, hidden)

    def _extract(self, layer: tarfile.TarFile, member: tarfile.TarInfo, parts: list[str], label: str) -> None:
        mode = member.mode & (0o7777 if self.setuid else 0o1777)
        if not parts:  # the top itself ("./")
            if member.isdir():
                self.dirs[()] = (mode, member.mtime)
            return
        name = parts[-1]
        with self.directory(parts[:-1], create=True) as parent:
            assert parent is not None
            if member.isdir():
                self._make_dir(parent, name)
                self._own(parent, name, member)
                self.dirs[tuple(parts)] = (mode, member.mtime)
                return
            _remove(parent, name)
            if member.isreg():
                self._write_file(layer, member, parent, name, mode)
                return
            if member.issym():
                os.symlink(member.linkname, name, dir_fd=parent)
            elif member.islnk():
                self._hard_link(member, parent, name, label)
                return  # the same inode as its target: its ids and mode are the target's
            elif member.isfifo():
                os.mkfifo(name, mode, dir_fd=parent)
            elif member.ischr() or member.isblk():
                if not (self.privileged and self.devices):
                    self.skipped_devices.append("/".join(parts))
                    return
                kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
                os.mknod(name, kind | mode, os.makedev(member.devmajor, member.devminor), dir_fd=parent)
            else:
                raise ValueError(f"{label}: entry {member.name!r} is of a type nsbox does not unpack ({member.type!r})")
            self._own(parent, name, member)
            if not member.issym():
                os.chmod(name, mode, dir_fd=parent)  # after chown, which clears set-id bits
            os.utime(name, (member.mtime, member.mtime), dir_fd=parent, follow_symlinks=False)

    def _make_dir(self, parent: int, name: str) -> None:
        try:
            if stat.S_ISDIR(os.lstat(name, dir_fd=parent).st_mode):
                return  # merged with the lower layers' directory
            _remove(parent, name)
        except FileNotFoundError:
            pass
        os.mkdir(name, 0o700, dir_fd=parent)

    def _write_file(self, layer: tarfile.TarFile, member: tarfile.TarInfo, parent: int, name: str, mode: int) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        source = layer.extractfile(member)
        assert source is not None  # a regular file's
        with source, open(os.open(name, flags, 0o600, dir_fd=parent), "wb") as target:
            shutil.copyfileobj(source, target, 1 << 20)
            target.flush()
            if self.privileged:
                os.fchown(target.fileno(), member.uid, member.gid)
            os.fchmod(target.fileno(), mode)
            os.utime(target.fileno(), (member.mtime, member.mtime))

    def _hard_link(self, member: tarfile.TarInfo, parent: int, name: str, label: str) -> None:
        what = f"{label}: hard link {member.name!r} to {member.linkname!r}"
        target = split(member.linkname, what + ": target")
        if not target:
            raise HostileEntry(f"{what}: a hard link to the top directory")
        with self.directory(target[:-1], create=False) as source:
            try:
                found = source is not None and not stat.S_ISDIR(os.lstat(target[-1], dir_fd=source).st_mode)
            except FileNotFoundError:
                found = False
            if not found:
                raise HostileEntry(f"{what}: the target is not a file in the image (yet)")
            os.link(target[-1], name, src_dir_fd=source, dst_dir_fd=parent, follow_symlinks=False)

    def _own(self, parent: int, name: str, member: tarfile.TarInfo) -> None:
        if self.privileged:
            os.chown(name, member.uid, member.gid, dir_fd=parent, follow_symlinks=False)

    def finish(self) -> None:
        """Set the directories' modes and mtimes, deepest first (a read-only parent would stop the rest)."""
        for parts, (mode, mtime) in sorted(self.dirs.items(), key=lambda item: -len(item[0])):
            with self.directory(list(parts[:-1]), create=False) as parent:
                if parent is None:
                    continue  # removed by a later layer
                try:
                    fd = os.open(parts[-1], _DIR_FLAGS, dir_fd=parent) if parts else os.dup(parent)
                except OSError:
                    continue  # replaced by a file or a symlink in a later layer
                try:
                    os.fchmod(fd, mode)
                    os.utime(fd, (mtime, mtime))
                finally:
                    os.close(fd)


def _remove(parent: int, name: str) -> None:
    """Remove ``name`` in ``parent`` (a whole directory too); gone already is fine. Symlinks are not followed."""
    if name in ("", ".", "..") or "/" in name:
        raise HostileEntry(f"{name!r} is not a name in its directory")
    try:
        st = os.lstat(name, dir_fd=parent)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=parent)
    else:
        os.unlink(name, dir_fd=parent)


def remove_tree(path: str) -> None:
    """Remove a half-made tree, making its directories writable first (a layer may have made one read-only)."""
    os.chmod(path, 0o700)
    for top, dirs, _files in os.walk(path):  # top-down: each directory is made readable before it is listed
        for name in dirs:
            full = os.path.join(top, name)
            if not os.path.islink(full):
                os.chmod(full, 0o700)
    shutil.rmtree(path, ignore_errors=True)


def read_in_tree(root: str, path: str) -> str | None:
    """The text of ``path`` in the tree, its symlinks followed inside it; ``None`` if it is not a file."""
    parts = split(path, "path")
    with Tree(root).directory(parts[:-1], create=False) as parent:
        if parent is None:
            return None
        try:
            fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=parent)
        except OSError:
            return None  # missing, or a symlink: passwd and group are plain files
        with open(fd, encoding="utf-8", errors="replace") as file:
            if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
                return None
            return file.read()


def open_layer(blob: IO[bytes], label: str) -> tarfile.TarFile:
    """``blob`` (gzip-compressed or plain) as a tar file."""
    try:
        return tarfile.open(fileobj=blob, mode="r:*")
    except tarfile.TarError as e:
        raise ValueError(f"{label} is not a tar file (plain or gzip-compressed): {e}") from None
