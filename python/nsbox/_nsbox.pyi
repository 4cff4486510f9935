"""The compiled core of nsbox. Use :mod:`nsbox` instead: these are its low-level primitives."""

from collections.abc import Callable, Mapping, Sequence
from typing import ClassVar, final

__all__ = [
    "HINTS",
    "NAMESPACE_KINDS",
    "STEPS",
    "Cgroup",
    "Egress",
    "Network",
    "Pool",
    "Spec",
    "TakenSet",
    "__version__",
    "fork",
    "ipv4_routes",
    "kill_and_reap",
    "kill_and_reap_pidfd",
    "namespaces",
    "nspid",
    "persist",
    "processes",
    "release",
    "spawn",
    "spawner_threads",
]
__version__: str
#: The namespace kinds, by their ``/proc/PID/ns`` names, in the order nsbox lists them.
NAMESPACE_KINDS: list[str]
#: Every ``step`` an ``OSError`` from nsbox can name (``"clone"``, ``"uid_map"``, ``"exec"`` ...).
STEPS: list[str]
#: Every ``hint`` an ``OSError`` from nsbox can carry (``"needs_user_namespace"`` ...).
HINTS: list[str]

@final
class Spec:
    """Checked options of a box, resolved against the caller's uid and gid when made.

    ``options`` has every name of the core's options (``nsbox._options`` makes it). Raises ``ValueError``
    for values that cannot work (overlapping id maps, an over-long hostname, clock offsets without
    ``time=True``, an unknown propagation ...), with ``option`` naming the option at fault, if one is.
    """

    def __new__(cls, options: Mapping[str, object]) -> Spec: ...
    @property
    def namespaces(self) -> list[str]:
        """The namespaces a spawn creates, by their ``/proc/PID/ns`` names (``"mnt"``, ``"net"`` ...)."""
    def resolved_for_caller(self) -> bool:
        """Whether the caller's ids are still those it was resolved against (a kept spec is then still right)."""

def spawn(
    config: Spec,
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
    target: int | str | Sequence[tuple[str, str]] | None = None,
    link: tuple[Network, str, str] | None = None,
    umask: int | None = None,
    extra_groups: Sequence[int] | None = None,
    gid: int | None = None,
    uid: int | None = None,
    popen: object = None,
    join_cgroup: Cgroup | None = None,
    egress: Egress | None = None,
    pool: Pool | None = None,
    taken: TakenSet | None = None,
    pidfd: bool = True,
) -> int:
    """Start a process in the namespaces of ``config`` and return its PID in the caller's namespace.

    ``exec_paths`` are tried in order (the caller does the ``PATH`` search); ``env`` of ``None``
    inherits the environment; ``stdio`` are the fds to become 0, 1, 2 (-1 inherits). Every other fd
    is closed at exec except ``pass_fds``. Failures raise the errno's ``OSError`` subclass naming the
    step; exec and chdir failures carry ``program`` / ``cwd_for_errors`` as ``filename``, as
    :mod:`subprocess` does. With ``target`` (a PID, a directory of namespace files named by kind, or ``(kind,
    file)`` pairs) the process joins the namespaces of that process (and takes its root and working directory) or of
    those namespace files instead of creating new ones. With ``link``, ``(network, veth, address)``, the
    child waits in its new network namespace while a veth pair is made (``veth`` on the bridge, ``eth0`` in the
    box), then configures ``eth0`` with ``address`` and a default route through the gateway; a box on a private
    ``Network`` is started inside its user namespace. ``umask``, ``extra_groups``, ``gid`` and ``uid`` are
    :mod:`subprocess`'s, applied inside the box after its namespaces are set up (-1/``None``: unchanged). With
    ``popen``, the PID is also stored on it (``pid``, ``_child_created = True``) before this returns, so that an
    interrupt raised as it returns leaves a ``Popen`` that :func:`kill_and_reap` can clean up; then a pidfd of the
    process (at 3 or above, CLOEXEC; ``None`` if it was reaped already, or with ``pidfd=False``) is stored as
    ``_pidfd``. The GIL is released while spawning. A ``config`` with cgroup limits needs ``popen``: the box's
    :class:`Cgroup` is stored on it
    (``_cgroup``; ``None`` without limits). With ``join_cgroup`` (an exec into a box with limits), the process
    enters that cgroup instead, first thing. With ``pool`` (and no ``target``, ``link`` or ``egress``), the process
    joins one of the pool's sets of namespaces, when one is ready, and makes only the rest. A ``config`` with ``tty``
    starts a new session whose controlling terminal is a new pseudo-terminal, its slave on 0-2 where ``stdio`` has
    -1; the master (at 3 or above, CLOEXEC) is stored on ``popen`` as ``_pty_fd`` (``None`` without ``tty``), or
    closed without ``popen``. With ``taken`` (from :meth:`Pool.take_wired`; then no ``link``), the process joins
    that set, already on its network.
    """

def kill_and_reap(popen: object) -> None:
    """SIGKILL and reap a ``Popen``'s process if it started and has not been reaped; set its ``returncode``.

    One call, which Python signal handlers cannot interrupt before the kill. Then finish its ``_cgroup``, if any.
    """

@final
class Cgroup:
    """A box's own cgroup (with cgroup limits): one directory per hierarchy, beneath the caller's cgroups."""

    def finish(self) -> None:
        """Kill what is left in it, keep its final figures, and remove it; later calls do nothing.

        Call it once the box is reaped. The GIL is released meanwhile.
        """
    def usage(self) -> tuple[int | None, float | None, int | None, int | None]:
        """``(memory_peak, cpu_time, processes, oom_kills)`` now, or as they were when it was finished."""
    @property
    def paths(self) -> list[str]:
        """Its directories, one per hierarchy."""

def kill_and_reap_pidfd(pidfd: int) -> None:
    """SIGKILL and reap the child of ours behind ``pidfd`` (nothing if it was reaped already)."""

def spawner_threads() -> int:
    """The number of idle spawner threads of this process (they retire when idle and their boxes are gone)."""

@final
class Network:
    """A bridge with the gateway address, in the caller's network namespace or (``private``) in a new one.

    A bridge in the caller's namespace is refused with ``ValueError`` if its subnet overlaps a route there;
    the check and the bridge's creation are one step for every nsbox user of the namespace (a lock on the
    abstract unix socket ``@nsbox-network-claim``; ``TimeoutError`` if it stays taken for 20 s).
    """

    def __new__(cls, bridge: str, gateway: str, prefix: int, private: bool) -> Network: ...
    @property
    def bridge(self) -> str: ...
    @property
    def private(self) -> bool: ...
    @property
    def forked_copy(self) -> bool:
        """Whether this process is a ``fork()``ed copy of the one that made the network (which owns it)."""
    def detach(self, veth: str) -> None:
        """Delete a box's veth pair (nothing if it is gone already)."""
    def has_link(self, name: str) -> bool:
        """Whether the interface exists in the bridge's network namespace."""
    def link_names(self) -> list[str]:
        """The interfaces in the bridge's network namespace."""
    def namespace_fd(self, kind: str) -> int | None:
        """A new fd of the private network's ``"user"`` or ``"net"`` namespace (``None`` for a host one)."""
    def close(self) -> None:
        """Delete the bridge, and let go of the janitor or the namespaces. Idempotent.

        In a :attr:`forked_copy`, only let go of this copy's fds, without waiting for any lock (spawning
        onto the network, :meth:`detach`, :meth:`has_link` and :meth:`link_names` raise ``ValueError`` there).
        """

def ipv4_routes() -> list[tuple[str, int]]:
    """(destination, prefix length) of the IPv4 routes of the main table, the default route aside."""

def fork(
    config: Spec,
    child: Callable[[], object],
    started: list[tuple[int, int, Cgroup | None]],
    link: tuple[Network, str, str] | None = None,
    pool: Pool | None = None,
    taken: TakenSet | None = None,
) -> None:
    """Fork this interpreter into the namespaces of ``config``, with CPython's fork hooks, as ``os.fork`` does.

    In the caller, once the namespaces are ready, appends ``(pid, pidfd, cgroup)`` to ``started``: the process
    that runs ``child``, a pidfd for it (the caller owns it), and its :class:`Cgroup` when ``config`` has cgroup
    limits (the caller finishes it once the process is reaped). A list rather than a return value, so that the
    caller has them even if an interrupt is raised as this returns. With ``pid=True`` that process is PID 1
    of the new PID namespace and a child of the caller. In that process, calls ``child()`` and ends with
    ``_exit`` (status 0, or 70 if ``child`` raised): it never returns into the caller's code. Failures to
    make the namespaces raise the errno's ``OSError`` naming the step, as :func:`spawn` does, after reaping
    what was started; the GIL is released while waiting.
    ``link`` puts the process on a network, as for :func:`spawn`; ``pool`` gives it a set of namespaces, as there,
    and ``taken`` a set on a network.
    """

def namespaces(pid: int | None = None) -> list[tuple[str, int]]:
    """(kind, inode) for every namespace kind of ``pid`` (this process when ``None``)."""

def nspid(pid: int) -> list[int]:
    """The ``NSpid`` line of ``/proc/PID/status``."""

def processes(pid: int) -> list[tuple[int, int, int, int, str]]:
    """(host_pid, host_ppid, pid, ppid, command) for each process in the PID namespace of ``pid``."""

def persist(pid: int, dir: str) -> list[str]:
    """Bind-mount the namespaces of ``pid`` that differ from ours onto ``dir/KIND``; return the kinds."""

def release(dir: str) -> list[str]:
    """Unmount and remove what :func:`persist` made in ``dir``; return the kinds released."""

@final
class Egress:
    """A box's egress engine (``slirp4netns``), started by :func:`spawn` while the box waits.

    The engine attaches to the box's network namespace; then the ``publish`` rows, ``(udp, host_address,
    host_port, box_port)``, are forwarded through the engine's API socket at ``api_socket`` (removed once they
    are). Killed and reaped by :meth:`stop` or when the object goes; its parent-death signal ends it with the
    caller.
    """

    BOX_ADDRESS: ClassVar[str]
    HOST_ADDRESS: ClassVar[str]
    DNS_ADDRESS: ClassVar[str]
    def __new__(
        cls, engine: bytes, publish: Sequence[tuple[bool, str, int, int]], api_socket: bytes | None = None
    ) -> Egress: ...
    @property
    def pid(self) -> int | None:
        """The engine's PID while it runs."""
    def make_leash(self) -> None:
        """Make the leash's namespaces (``allow=``): the box will join them, below a user namespace of its own."""
    def leash_fd(self, kind: str) -> int | None:
        """A new fd of the leash's ``"user"`` or ``"net"`` namespace, to close after use (``None`` without one)."""
    def use_namespaces(self, userns: int, netns: int) -> None:
        """Run the engine on a private network's namespaces (fds of the caller's, duplicated here)."""
    def attach_to_leash(self) -> None:
        """Start the engine on the leash's network namespace and publish the ports (before the box)."""
    def stop(self) -> None:
        """Kill and reap the engine, and let go of the leash. Idempotent."""

@final
class Pool:
    """Warm sets of a box's network, IPC, UTS and cgroup namespaces (with its user namespace), made by a thread.

    ``spec`` is a box's checked options: a set holds the kinds of those that it asks for, and its user
    namespace. Up to ``size`` sets are kept ready, within half of the soft ``RLIMIT_NOFILE``. Raises ``ValueError``
    when ``spec`` asks for none of them, or when ``size`` sets do not fit in that half.
    """

    def __new__(cls, spec: Spec, size: int, network: Network | None = None) -> Pool:
        """A pool of sets for boxes of ``spec``; with ``network``, every set is wired to it.

        A wired set has a veth on the bridge and ``eth0`` configured, with an address given by :meth:`give`.
        """
    def counts(self) -> tuple[int, int, int, int, str | None]:
        """``(ready, made, taken, missed, failure)`` of this process: see :meth:`nsbox.Pool.stats`."""
    @property
    def kinds(self) -> list[str]:
        """The kinds a set holds besides the user namespace, by their ``/proc/PID/ns`` names."""
    def close(self) -> None:
        """Free every unused set and stop filling (waits for a set being made). Idempotent."""
    def take_wired(self, network: Network, spec: Spec) -> tuple[str, str, TakenSet] | None:
        """A ready set wired to ``network`` for a box of ``spec``: ``(veth, address, set)``.

        ``None`` if the pool is not wired to it, or has no set ready (counted as missed).
        """
    def give(self, veth: str, address: str) -> bool:
        """Give a wired pool an address (and its veth's name) for a set; ``False`` if it takes none (closed)."""
    def wanted(self) -> int:
        """How many addresses a wired pool wants given, to hold ``size`` sets made or to make."""
    def discard(self, address: str) -> bool:
        """Frees the unused set (or address) that holds ``address``, for a box given it by name; whether it did."""
    def spent(self) -> list[tuple[str, str]]:
        """``(veth, address)`` given to sets that will serve no box (failed, or freed by ``close``), once each."""

@final
class TakenSet:
    """A wired set taken for one box, until :func:`spawn` joins it (``taken=``); freed if it never does."""
