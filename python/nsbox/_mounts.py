"""The box's own filesystem: ``root=`` and ``mounts=`` take these (bubblewrap's and runc's mounts, in Python).

Each is a small frozen dataclass, checked when made (types, absolute targets, sizes); the paths it names on
the host are checked when a box is started, before anything is forked (:func:`core`). The Rust core plans
the mounts (``src/mounts.rs``) and the child makes them (``src/child/mounts.rs``).
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

StrPath = str | os.PathLike[str]

_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def _target(kind: str, value: StrPath | None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{kind}: target must be a path, not {type(value).__name__}")
    path = os.fspath(value)
    if not isinstance(path, str):
        raise TypeError(f"{kind}: target must be a str path, not {type(path).__name__}")
    if not path.startswith("/"):
        raise ValueError(f"{kind}: target must be absolute (a path inside the box), not {path!r}")
    if "\0" in path:
        raise ValueError(f"{kind}: target must not contain NUL bytes")
    return os.path.normpath(path).replace("//", "/")


def _host_path(kind: str, what: str, value: object) -> str:
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{kind}: {what} must be a path, not {type(value).__name__}")
    path = os.fspath(value)
    if not isinstance(path, str):
        raise TypeError(f"{kind}: {what} must be a str path, not {type(path).__name__}")
    if "\0" in path:
        raise ValueError(f"{kind}: {what} must not contain NUL bytes")
    if not path:
        raise ValueError(f"{kind}: {what} must not be empty")
    return path


def _size(value: int | str | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError(f"Tmpfs: size must be bytes or a string like '64M', not {type(value).__name__}")
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+)\s*([kKmMgG]?)[iI]?[bB]?\s*", value)
        if match is None:
            raise ValueError(f"Tmpfs: size must be bytes or a string like '64M' (k, M, G), not {value!r}")
        value = int(match[1]) * _UNITS[match[2].lower()]
    if not 0 < value < 2**63:
        raise ValueError(f"Tmpfs: size must be positive and below 2**63 bytes, not {value}")
    return value


def _mode(kind: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0o7777:
        raise ValueError(f"{kind}: mode must be permission bits (0 to 0o7777), not {value!r}")
    return value


def _existing(kind: str, what: str, path: str, *, directory: bool) -> tuple[str, bool]:
    """``path`` made absolute, and whether it is a directory; ``OSError`` naming it if it is not there.

    Symlinks in it are left to the kernel (the core resolves them itself where it must: ``src/mounts.rs``).
    """
    path = os.path.abspath(path)
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise type(e)(e.errno, f"{kind} {what}: {e.strerror}", path) from None
    is_dir = stat.S_ISDIR(mode)
    if directory and not is_dir:
        raise NotADirectoryError(errno.ENOTDIR, f"{kind} {what} is not a directory", path)
    return path, is_dir


def _inside(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


@dataclass(frozen=True)
class Bind:
    """Bind-mount the host's ``source`` at ``target`` in the box (by default the same path).

    ``source`` is a file or a directory, with everything mounted under it; ``readonly`` makes all of it
    read-only. As ``root=``, ``Bind("/", readonly=True)`` is the host's root, read-only.
    """

    source: StrPath
    target: StrPath | None = None
    readonly: bool = field(default=False, kw_only=True)

    def __post_init__(self) -> None:
        source = _host_path("Bind", "source", self.source)
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "target", _target("Bind", self.target))
        if not isinstance(self.readonly, bool):
            raise TypeError(f"Bind: readonly must be True or False, not {self.readonly!r}")

    def _core(self, target: str) -> dict[str, Any]:
        source, is_dir = _existing("Bind", "source", str(self.source), directory=False)
        return _fields("bind", target, repr(self), source=source, dir=is_dir, readonly=self.readonly)


@dataclass(frozen=True)
class Tmpfs:
    """A fresh tmpfs at ``target``.

    ``size`` is in bytes or a string like ``"64M"`` (the kernel's default, half the memory, when ``None``).
    As ``root=``, ``Tmpfs()`` is an empty root to fill with mounts.
    """

    target: StrPath | None = None
    size: int | str | None = field(default=None, kw_only=True)
    mode: int = field(default=0o755, kw_only=True)

    def __post_init__(self) -> None:
        object.__setattr__(self, "target", _target("Tmpfs", self.target))
        object.__setattr__(self, "size", _size(self.size))
        _mode("Tmpfs", self.mode)

    def __repr__(self) -> str:
        args = [repr(self.target)] if self.target is not None else []
        args += [f"size={self.size}"] if self.size is not None else []
        args += [f"mode={self.mode:#o}"] if self.mode != 0o755 else []
        return f"Tmpfs({', '.join(args)})"

    def _core(self, target: str) -> dict[str, Any]:
        return _fields("tmpfs", target, repr(self), size=self.size, mode=self.mode)


@dataclass(frozen=True)
class Overlay:
    """An overlayfs at ``target`` of the ``lower`` directories, the first topmost.

    With ``upper=None`` changes go to a private tmpfs and vanish with the box; with ``upper=DIR`` they are
    kept there (made if missing; nsbox makes overlayfs's work directory beside it, ``.NAME.nsbox-work``).
    Without root, no lower directory may have anything mounted under it (the kernel refuses a lower
    layer whose submounts are locked, as the host's are in a user namespace).
    """

    target: StrPath | None = None
    lower: Sequence[StrPath] = field(default=(), kw_only=True)
    upper: StrPath | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        object.__setattr__(self, "target", _target("Overlay", self.target))
        if isinstance(self.lower, (str, os.PathLike)):
            raise TypeError("Overlay: lower must be a list of directories, not a single path")
        lower = tuple(_host_path("Overlay", "lower", p) for p in self.lower)
        if not lower:
            raise ValueError("Overlay: lower must name at least one directory")
        object.__setattr__(self, "lower", lower)
        if self.upper is not None:
            object.__setattr__(self, "upper", _host_path("Overlay", "upper", self.upper))

    def _core(self, target: str) -> dict[str, Any]:
        lower = [_existing("Overlay", "lower", str(p), directory=True)[0] for p in self.lower]
        upper = work = None
        if self.upper is not None:
            given = os.path.abspath(str(self.upper))
            parent = os.path.realpath(_existing("Overlay", "upper's parent", os.path.dirname(given), directory=True)[0])
            upper = os.path.realpath(os.path.join(parent, os.path.basename(given)))  # a symlink, where it leads
            for layer in map(os.path.realpath, lower):
                if _inside(upper, layer) or _inside(layer, upper):
                    raise ValueError(f"Overlay: upper {upper!r} must not be inside a lower directory or hold one")
            work = os.path.join(parent, f".{os.path.basename(upper)}.nsbox-work")
            for path in (upper, work):
                os.makedirs(path, mode=0o755, exist_ok=True)
        return _fields("overlay", target, repr(self), lower=lower, upper=upper, work=work)


@dataclass(frozen=True)
class Dev:
    """A minimal ``/dev`` at ``target``, with no disks.

    It holds ``null zero full random urandom tty`` (the host's, bound), a private ``pts`` (a new devpts
    instance) with ``ptmx``, a tmpfs ``shm``, and the ``fd``, ``stdin``, ``stdout``, ``stderr`` links.
    """

    target: StrPath = "/dev"

    def __post_init__(self) -> None:
        object.__setattr__(self, "target", _target("Dev", self.target))

    def _core(self, target: str) -> dict[str, Any]:
        return _fields("dev", target, repr(self), mode=0o755)


#: What ``mounts=`` holds.
Mount = Bind | Tmpfs | Overlay | Dev
_MOUNTS = (Bind, Tmpfs, Overlay, Dev)


def _fields(kind: str, target: str, described: str, **given: Any) -> dict[str, Any]:
    """The core's ``MountOption`` (``src/mounts.rs``): every field, paths as bytes."""
    fields: dict[str, Any] = {
        "kind": kind,
        "target": os.fsencode(target),
        "source": b"",
        "dir": False,
        "readonly": False,
        "size": None,
        "mode": 0o755,
        "lower": [],
        "upper": None,
        "work": None,
        "described": described,
    }
    for name, value in given.items():
        if name in ("source", "upper", "work") and value is not None:
            value = os.fsencode(value)
        elif name == "lower":
            value = [os.fsencode(p) for p in value]
        fields[name] = value
    return fields


def root_core(value: object) -> dict[str, Any] | None:
    """``root=`` for the core, its host paths checked before anything is forked.

    A directory (a bind of it), or a ``Bind``, ``Tmpfs`` or ``Overlay`` without a target.
    """
    if value is None:
        return None
    if isinstance(value, (str, bytes, os.PathLike)):
        path = os.fsdecode(value)
        source, _ = _existing("root", "directory", path, directory=True)
        return _fields("bind", "/", repr(path), source=source, dir=True)
    if isinstance(value, Dev):
        raise ValueError("root cannot be a Dev(): give it in mounts; root is a directory, Bind, Tmpfs or Overlay")
    if not isinstance(value, _MOUNTS):
        raise TypeError(f"root must be a directory, Bind, Tmpfs or Overlay, not {type(value).__name__}")
    if value.target not in (None, "/"):
        raise ValueError(f"root is mounted on '/': {value!r} must not name a target")
    core = value._core("/")
    if isinstance(value, Bind) and not core["dir"]:
        raise NotADirectoryError(errno.ENOTDIR, "root: Bind source is not a directory", os.fsdecode(core["source"]))
    return core


def mounts_core(value: object) -> list[dict[str, Any]]:
    """``mounts=`` for the core, in order; each mount's target defaults as its type says."""
    if value is None:
        return []
    if isinstance(value, (str, bytes, *_MOUNTS)) or not isinstance(value, Sequence):
        raise TypeError(f"mounts must be a list of Bind, Tmpfs, Overlay or Dev, not {type(value).__name__}")
    out = []
    for mount in value:
        if not isinstance(mount, _MOUNTS):
            raise TypeError(f"mounts: each must be a Bind, Tmpfs, Overlay or Dev, not {mount!r}")
        target = mount.target
        if target is None and isinstance(mount, Bind):
            target = _target("Bind", os.path.abspath(str(mount.source)))
        if target is None:
            raise ValueError(f"mounts: {mount!r} needs a target (only root= takes a mount without one)")
        if target == "/":
            raise ValueError(f"mounts: {mount!r} would cover the box's root: make it the root instead")
        out.append(mount._core(str(target)))
    return out
