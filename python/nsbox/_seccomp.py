"""``seccomp=``: the system calls a box may not make, by name (:class:`Seccomp`).

The filter is compiled by the Rust core (``src/seccomp.rs``, which also holds the default profile) before
anything is forked, and installed by the box as its last step before the exec (``src/child/seccomp.rs``).
"""

from __future__ import annotations

import errno as _errno
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal


def _names(what: str, value: object) -> tuple[str, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"Seccomp: {what} must be a list of system call names, not {type(value).__name__}")
    names = tuple(value)
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"Seccomp: {what} must hold system call names (str), not {name!r}")
    return names


@dataclass(frozen=True)
class Seccomp:
    """A seccomp filter for a box: the system calls it may not make, by name (``seccomp=``).

    A denied call fails with ``errno`` (``EPERM``) and the box goes on; a call through another ABI than the
    machine's own (i386's ``int 0x80`` or x32 on x86_64, arm32 on aarch64) kills it with ``SIGSYS``.

    - ``Seccomp(deny=["uname", ...])``: those calls fail, everything else is allowed.
    - ``Seccomp.default()`` (``seccomp="default"``): nsbox's default profile, in the spirit of Docker's (the
      README lists what it denies): kernel modules, kexec, the keyring, ``bpf``, ``perf_event_open``,
      ``userfaultfd``, ``open_by_handle_at``, the ``TIOCSTI`` and ``TIOCLINUX`` ioctls, personality changes,
      new user namespaces (``clone3`` answers ``ENOSYS`` so that the C library falls back to ``clone``), and
      ``ptrace``, ``process_vm_readv``/``writev``, ``kcmp`` and ``pidfd_getfd`` unless the box has its own
      PID namespace: a filter sees the PID a call names, never the process, and only in a PID namespace of
      its own can the box name nothing but its own processes. ``user_namespaces=True`` lets the box make
      user namespaces of its own (nested boxes); ``deny`` adds names to the profile.
    - ``Seccomp(allow=[...])``: an allow list; every other call fails with ``errno``. nsbox adds the calls it
      makes itself once the filter is in place (``execve``, ``execveat``, ``write``, ``exit_group``); the
      list must hold everything the program needs (with ``init=True``, the init's calls too).

    Names are those of the machine's architecture: an unknown one is a ``ValueError`` naming it, raised
    before anything is forked. The kernel takes a filter from a box that is root (in its user namespace, if it
    has one); a box without ``CAP_SYS_ADMIN`` (``user=`` another id, ``capabilities=`` without ``sys_admin``) gets
    ``no_new_privs`` with it, as the kernel requires.
    """

    deny: Sequence[str] = ()
    allow: Sequence[str] | None = None
    errno: int = _errno.EPERM
    #: ``"default"``: start from nsbox's default profile (see :meth:`default`).
    profile: Literal["default"] | None = None
    #: With the default profile: allow the box to make user namespaces.
    user_namespaces: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "deny", _names("deny", self.deny))
        if self.allow is not None:
            object.__setattr__(self, "allow", _names("allow", self.allow))
        if isinstance(self.errno, bool) or not isinstance(self.errno, int):
            raise TypeError(f"Seccomp: errno must be an int, not {type(self.errno).__name__}")
        if not 1 <= self.errno <= 4095:
            raise ValueError(f"Seccomp: errno must be 1 to 4095, not {self.errno}")
        if self.profile not in (None, "default"):
            raise ValueError(f"Seccomp: profile must be None or 'default', not {self.profile!r}")
        if not isinstance(self.user_namespaces, bool):
            raise TypeError(f"Seccomp: user_namespaces must be True or False, not {self.user_namespaces!r}")
        if self.allow is not None and (self.deny or self.profile is not None):
            raise ValueError("Seccomp: an allow list denies everything else: it takes no deny list and no profile")
        if self.user_namespaces and self.profile is None:
            raise ValueError("Seccomp: user_namespaces applies to the default profile: use Seccomp.default()")

    @classmethod
    def default(cls, *, user_namespaces: bool = False, deny: Sequence[str] = (), errno: int = _errno.EPERM) -> Seccomp:
        """The default profile (``seccomp="default"``), with user namespaces allowed if asked, and more names denied."""
        return cls(deny=deny, errno=errno, profile="default", user_namespaces=user_namespaces)

    def _core(self) -> dict[str, Any]:
        """The core's ``SeccompOptions`` (``src/seccomp.rs``)."""
        allow = None if self.allow is None else list(self.allow)
        return {
            "profile": self.profile,
            "user_namespaces": self.user_namespaces,
            "deny": list(self.deny),
            "allow": allow,
            "errno": self.errno,
        }


def seccomp_core(name: str, value: object) -> dict[str, Any]:
    """``seccomp=`` as the core takes it: ``None``, ``"default"`` or a :class:`Seccomp`."""
    if value is None:
        return {name: None}
    if value == "default":
        value = Seccomp.default()
    if isinstance(value, str):
        raise ValueError(f"seccomp must be None, 'default' or an nsbox.Seccomp, not {value!r}")
    if not isinstance(value, Seccomp):
        raise TypeError(f"seccomp must be None, 'default' or an nsbox.Seccomp, not {type(value).__name__}")
    return {name: value._core()}
