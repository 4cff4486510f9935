"""Running Python as the unprivileged user 65534, for the tests of ``nsbox.call`` and the pytest plugin.

The suite runs as root, from a virtualenv under ``/root`` (mode 0700): the unprivileged side runs Debian's
world-readable ``/usr/bin/python3`` with ``PYTHONPATH`` on world-readable copies, under ``/tmp``, of the
installed distributions it needs (``nsbox``; ``pytest`` and its dependencies for the plugin), dropping to
uid/gid 65534 with ``setpriv``. nsbox's metadata is not copied (pluggy's is: it looks its version up), so
pytest's entry points do not see nsbox there: load the plugin with ``-p nsbox.pytest_plugin``. When the
suite itself runs unprivileged, the commands run directly, as that user.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from packaging.requirements import Requirement

NOBODY = 65534
PYTHON = "/usr/bin/python3"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _with_dependencies(names: Sequence[str]) -> list[importlib.metadata.Distribution]:
    found: dict[str, importlib.metadata.Distribution] = {}
    todo = list(names)
    while todo:
        name = todo.pop()
        dist = importlib.metadata.distribution(name)
        key = dist.metadata["Name"].lower()
        if key in found:
            continue
        found[key] = dist
        for text in dist.requires or ():
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return list(found.values())


@contextmanager
def world_readable_site(*distributions: str) -> Iterator[Path]:
    """A directory under /tmp holding world-readable copies of these installed distributions (and theirs)."""
    base = Path(tempfile.mkdtemp(prefix="nsbox-rootless-", dir="/tmp"))
    try:
        for dist in _with_dependencies(distributions):
            for file in dist.files or ():
                parts = Path(file).parts
                metadata = parts[0].endswith((".dist-info", ".data"))
                if parts[0] == ".." or "__pycache__" in parts or (metadata and dist.metadata["Name"] == "nsbox"):
                    continue
                target = base / file
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(Path(str(dist.locate_file(file))), target)
        for root, dirs, files in os.walk(base):
            for name in dirs:
                os.chmod(os.path.join(root, name), 0o755)
            for name in files:
                os.chmod(os.path.join(root, name), 0o644)
        base.chmod(0o755)
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


@contextmanager
def world_writable_dir() -> Iterator[Path]:
    """A fresh directory under /tmp that the unprivileged user can work in."""
    path = Path(tempfile.mkdtemp(prefix="nsbox-rootless-work-", dir="/tmp"))
    try:
        path.chmod(0o777)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def command(site: Path, *args: str) -> list[str]:
    """``/usr/bin/python3 ARGS`` as uid/gid 65534 without groups, with a clean environment importing ``site``."""
    env = ["env", "-i", f"PATH={PATH}", f"PYTHONPATH={site}", "HOME=/tmp", "LC_ALL=C.UTF-8"]
    env.append("PYTHONDONTWRITEBYTECODE=1")
    drop = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"] if os.geteuid() == 0 else []
    return [*env, *drop, PYTHON, *args]
