"""The compiled core of nsbox. Use :mod:`nsbox` instead: these are its low-level primitives."""

from collections.abc import Sequence
from typing import final

__all__ = ["Config", "__version__", "spawn"]
__version__: str

@final
class Config:
    """Checked namespace options, resolved against the caller's uid and gid when made.

    Raises ``ValueError`` for values that cannot work (overlapping id maps, an over-long hostname,
    clock offsets without ``time=True``, an unknown propagation ...).
    """

    def __new__(
        cls,
        *,
        pid: bool = False,
        mount: bool = False,
        uts: bool = False,
        ipc: bool = False,
        net: bool = False,
        user: bool | None = None,
        cgroup: bool = False,
        time: bool = False,
        mount_proc: bool = False,
        propagation: str | None = None,
        hostname: bytes | None = None,
        uid_map: Sequence[tuple[int, int, int]] | None = None,
        gid_map: Sequence[tuple[int, int, int]] | None = None,
        setgroups: str | None = None,
        monotonic_offset: float | None = None,
        boottime_offset: float | None = None,
    ) -> Config: ...
    @property
    def namespaces(self) -> list[str]:
        """The namespaces a spawn creates, by their ``/proc/PID/ns`` names (``"mnt"``, ``"net"`` ...)."""

def spawn(
    config: Config,
    exec_paths: Sequence[bytes],
    argv: Sequence[bytes],
    env: Sequence[bytes] | None,
    cwd: bytes | None,
    stdio: tuple[int, int, int],
    pass_fds: Sequence[int],
    new_session: bool,
    process_group: int | None,
    program: object = None,
    cwd_for_errors: object = None,
) -> int:
    """Start a process in the namespaces of ``config`` and return its PID in the caller's namespace.

    ``exec_paths`` are tried in order (the caller does the ``PATH`` search); ``env`` of ``None``
    inherits the environment; ``stdio`` are the fds to become 0, 1, 2 (-1 inherits). Every other fd
    is closed at exec except ``pass_fds``. Failures raise the errno's ``OSError`` subclass naming the
    step; exec and chdir failures carry ``program`` / ``cwd_for_errors`` as ``filename``, as
    :mod:`subprocess` does. The GIL is released while spawning.
    """
