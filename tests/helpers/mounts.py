"""Mount tables: reading mountinfo, what of it a test may expect to stay, and undoing what a test left."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path


def mountinfo() -> bytes:
    with open("/proc/self/mountinfo", "rb") as f:
        return f.read()


def host_mounts(*own: Path | str, text: str | None = None) -> list[str]:
    """The lines of this process's mountinfo (or of ``text``, one read elsewhere) that a test may expect to stay.

    Other users of the machine (a second copy of this suite, a notebook) mount and unmount things of their own,
    at any time, under the scratch directories (``/tmp``, ``/run`` ...): persisted namespaces, for one. Mounts
    there are left out, except under ``own``, the test's own directories. Self-contained (no module-level names),
    so that drivers and rootless snippets can carry its source (``inspect.getsource``).
    """
    scratch = ("/tmp/", "/var/tmp/", "/run/", "/var/run/", "/dev/shm/")
    mine = tuple(str(path).rstrip("/") + "/" for path in own)
    if text is None:
        with open("/proc/self/mountinfo") as f:
            text = f.read()
    lines = text.splitlines()
    return [
        line for line in lines if not line.split()[4].startswith(scratch) or (line.split()[4] + "/").startswith(mine)
    ]


def root_mount_optional_fields(text: str) -> list[str]:
    """The optional fields (``shared:N``, ``master:N`` ...) of the mount on ``/`` in a mountinfo text."""
    fields: list[str] | None = None
    for line in text.splitlines():
        parts = line.split()
        if len(parts) > 6 and parts[4] == "/":
            fields = parts[6 : parts.index("-")]  # the last mount on / is the visible one
    assert fields is not None, f"no mount on / in:\n{text}"
    return fields


def chroot_script(root: Path | str) -> str:
    """Shell for a box with a mount namespace of its own: turn ``root`` into a small root directory.

    A tmpfs (mounted in the box only) with the host's ``/usr`` and ``/etc`` bound in, the merged-usr links
    (``bin``, ``sbin``, ``lib``, ``lib64``), ``tmp`` and a marker file ``BOX-ROOT``; the shell is left in it.
    The box then runs ``chroot . COMMAND`` (or adds its own ``proc`` first).
    """
    return (
        f"mount -t tmpfs nsbox-box-root {root} && cd {root} && mkdir usr etc tmp && "
        "mount --rbind /usr usr && mount --rbind /etc etc && "
        "ln -s usr/bin bin && ln -s usr/sbin sbin && ln -s usr/lib lib && ln -s usr/lib64 lib64 && touch BOX-ROOT"
    )


def mount_points(text: bytes | str) -> list[str]:
    """The mount points of a mountinfo text, in order."""
    if isinstance(text, bytes):
        text = text.decode()
    return [line.split()[4] for line in text.splitlines()]


def unmount_new_mounts_under(before: bytes, base: Path) -> list[str]:
    """Cleanup for a test whose failure may have left mounts on the host.

    Lazily unmounts, newest first, every mount point under ``base`` that is not in ``before`` (a
    ``mountinfo()`` taken at the start), and returns them. Nothing outside ``base`` is touched.
    """
    old = set(mount_points(before))
    prefix = str(base).rstrip("/") + "/"
    extra = [m for m in mount_points(mountinfo()) if m not in old and (m + "/").startswith(prefix)]
    libc = ctypes.CDLL(None, use_errno=True)
    for point in reversed(extra):
        libc.umount2(os.fsencode(point), 2)  # MNT_DETACH
    return extra
