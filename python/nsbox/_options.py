"""Checking the namespace options and turning them into the core's ``Config``.

Types are checked here, with messages that name the argument; values (map overlaps, hostname length,
offsets without ``time=True`` ...) are checked by the Rust core, the same way for every caller.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from nsbox._nsbox import Config

#: The namespace options every spawning function takes, with their defaults.
NAMESPACE_DEFAULTS: dict[str, Any] = {
    "pid": False,
    "mount": False,
    "uts": False,
    "ipc": False,
    "net": False,
    "user": None,
    "cgroup": False,
    "time": False,
    "mount_proc": False,
    "propagation": None,
    "hostname": None,
    "uid_map": None,
    "gid_map": None,
    "setgroups": None,
    "monotonic_offset": None,
    "boottime_offset": None,
    "init": False,
    "root": None,
}

_BOOLS = ("pid", "mount", "uts", "ipc", "net", "cgroup", "time", "init")


def _id_map(name: str, value: object) -> list[tuple[int, int, int]] | None:
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"{name} must be a list of (inside, outside, count) tuples, not {type(value).__name__}")
    ranges = []
    for item in value:
        if not isinstance(item, (tuple, list)) or len(item) != 3:
            raise TypeError(f"{name}: each range must be an (inside, outside, count) tuple, not {item!r}")
        for part in item:
            if isinstance(part, bool) or not isinstance(part, int):
                raise TypeError(f"{name}: ids must be integers, not {part!r} in {item!r}")
            if not 0 <= part < 2**32:
                raise ValueError(f"{name}: {part} in {item!r} is not an id (0 to 4294967294)")
        ranges.append((item[0], item[1], item[2]))
    return ranges


def _offset(name: str, value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    return float(value)


def _path(name: str, value: object) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, (str, bytes, os.PathLike)):
        return os.fsencode(value)
    raise TypeError(f"{name} must be a path, not {type(value).__name__}")


def _choice(name: str, value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"{name} must be a string, not {type(value).__name__}")


def make_config(options: dict[str, Any]) -> Config:
    """Build a checked ``Config`` from namespace options (keys of :data:`NAMESPACE_DEFAULTS`)."""
    for name in _BOOLS:
        if not isinstance(options[name], bool):
            raise TypeError(f"{name} must be True or False, not {options[name]!r}")
    user = options["user"]
    if user is not None and not isinstance(user, bool):
        raise TypeError(f"user must be None, True or False, not {user!r}")
    mount_proc = options["mount_proc"]
    # True, or a directory to mount proc on (unshare --mount-proc=DIR).
    proc_dir = None if isinstance(mount_proc, bool) else _path("mount_proc", mount_proc)
    hostname = options["hostname"]
    if hostname is not None:
        if not isinstance(hostname, (str, bytes)):
            raise TypeError(f"hostname must be str or bytes, not {type(hostname).__name__}")
        hostname = os.fsencode(hostname)
    return Config(
        pid=options["pid"],
        mount=options["mount"],
        uts=options["uts"],
        ipc=options["ipc"],
        net=options["net"],
        user=user,
        cgroup=options["cgroup"],
        time=options["time"],
        mount_proc=bool(mount_proc),
        propagation=_choice("propagation", options["propagation"]),
        hostname=hostname,
        uid_map=_id_map("uid_map", options["uid_map"]),
        gid_map=_id_map("gid_map", options["gid_map"]),
        setgroups=_choice("setgroups", options["setgroups"]),
        monotonic_offset=_offset("monotonic_offset", options["monotonic_offset"]),
        boottime_offset=_offset("boottime_offset", options["boottime_offset"]),
        init=options["init"],
        proc_dir=proc_dir,
        root=_path("root", options["root"]),
    )
