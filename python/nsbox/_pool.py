"""``nsbox.Pool``: warm sets of the expensive namespaces, made off the caller's thread."""

from __future__ import annotations

import subprocess
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack for **kwargs from Python 3.12

from nsbox import _nsbox
from nsbox._call import call
from nsbox._options import CALL_OPTIONS, POOL, Args, NamespaceOptions, RunOptions, check_names, prepare
from nsbox._popen import Popen
from nsbox._run import run

T = TypeVar("T")


def _give_back(core: _nsbox.Pool, network: Any) -> None:
    """A pool's collection: frees its sets and hands their addresses to its network's ``_returned``."""
    core.close()
    if not network._lan.forked_copy:
        network._returned.extend(core.spent())


class PoolStats(NamedTuple):
    """What a :class:`Pool` has done in this process (a forked child counts from zero)."""

    #: Sets ready now.
    ready: int
    #: Sets made, sets taken by boxes, and spawns that found the pool empty (and made their own namespaces).
    made: int
    taken: int
    missed: int
    #: Why the last attempt to make a set failed, until one is made (spawns then make their own, and fail
    #: with the full error if the namespaces cannot be made at all).
    failure: str | None


class Pool:
    """Warm sets of a box's expensive namespaces, made by a thread of the pool's own before boxes need them.

    ``Pool(size=8, **options)`` takes the namespace options of :func:`nsbox.call` (``net``, ``ipc``, ``uts``,
    ``cgroup``, ``pid``, ``mount_proc``, ``hostname``, ``user`` and the id maps, ``sandbox`` ...). They are
    the defaults of the pool's boxes, and they shape its sets: a set is a fresh network (``lo`` up), IPC, UTS
    and cgroup namespace, as many of those as the options ask for, in a fresh user namespace when the boxes
    get one (always without root), with the maps the options give. Up to ``size`` sets are kept ready.

    :meth:`run`, :meth:`Popen` and :meth:`call` take what :func:`nsbox.run`, :class:`nsbox.Popen` and
    :func:`nsbox.call` take (given options add to the pool's, or replace them). The box joins one ready set
    and makes the rest itself (PID and mount namespaces, ``/proc``, ``root``, mounts, a time namespace, its
    hostname); a set is used by exactly one box and never again, so the box is as fresh as one from
    :func:`nsbox.run`. When no set is ready the box makes its own namespaces rather than wait. A box with
    ``egress`` or a ``target`` is made as without a pool.

    **On a Network** (``Pool(network=lan, ...)``): every set is made on ``lan`` as a box's namespaces would be,
    its veth on the bridge and its ``eth0`` with an address, up, routed through the gateway, so a box that takes
    one has nothing of its network left to make. The addresses are ``lan``'s: each ready set (and each set being
    made) holds one, up to ``size``, taken when the set is made, in turn through the subnet (skipping addresses
    in use, and those of exited boxes whose veth may still be there), and the box that takes the set gets it
    (``box.ip``, ``box.veth``). A set is never reused; :meth:`close` gives the addresses of unused sets back to
    ``lan``, which hands them out again once their veth is gone, as it does an exited box's. The pool holds
    fewer sets while ``lan`` has no address free. A box with ``ip=``, on another network or on none is made as
    without a pool; a Network with ``egress`` is refused; ``lan.close()``
    closes the pool first. A pool on a Network made without root (a private one) makes its sets in the
    network's user namespace, where its boxes live.

    A set's user namespace is fixed when it is made: a box that asks for another (other ``uid_map``,
    ``gid_map`` or ``setgroups``, or ``user`` otherwise than the pool) raises ``ValueError`` before anything is
    started. The pool can only move the kernel's work off the caller's path, not remove it: a burst larger
    than ``size`` runs at the unpooled speed once the pool is empty, and the sets are made on the machine's
    other CPUs.

    :meth:`close` (and the ``with`` block's end, and the process's death) frees every unused set: sets are
    open namespace fds (close-on-exec, never 0-2), and no process is kept. A forked child has its copies of
    them closed as it is forked (so the function of :meth:`call` holds none), and its pool makes sets of its own.

    Those fds count against the process's ``RLIMIT_NOFILE``, so a pool never takes the process past half of
    its soft limit: the rest is left to your own files. A ``size`` whose sets do not fit (with the fds open
    now) is refused; a set that would not fit later (you opened files, or lowered the limit) is not made until
    it does, and :meth:`stats` says why.

    Raises:
        TypeError, ValueError: a bad option or ``size``, or a ``size`` whose sets (up to five fds each) do not
            fit in half of the soft ``RLIMIT_NOFILE``: the message names the limit and the largest size.
    """

    def __init__(self, size: int = 8, *, user: bool | None = None, **options: Unpack[NamespaceOptions]) -> None:
        if isinstance(size, bool) or not isinstance(size, int):
            raise TypeError(f"size must be an int, not {type(size).__name__}")
        if size < 1:
            raise ValueError(f"size must be at least 1, not {size}")
        check_names(options, CALL_OPTIONS, "Pool")
        network = options.get("network")
        if network is not None and getattr(network, "egress", None) is not None:
            raise ValueError("a Pool does not keep sets on a Network with egress yet: pass network= to nsbox.run")
        if options.get("ip") is not None:
            raise ValueError(
                "a Pool's boxes cannot share one ip: give ip= to the box (it is then made as without a pool)"
            )
        # Checked as a box's options are: the pool's boxes start from them.
        prepared = prepare(options, user)
        self._options: dict[str, Any] = dict(options)
        self._user = user
        self.size = size
        self._network = prepared.network
        # Held while addresses go between the network and the pool (_top_up).
        self._addresses = threading.Lock()
        self._core = _nsbox.Pool(prepared.spec, size, None if self._network is None else self._network._lan)
        if self._network is not None:
            try:
                if self._network.closed:
                    raise ValueError(f"{self._network!r} is closed")
                self._network._check_usable()  # a forked copy's: the network is its parent's (raises its words)
                self._top_up()
            except BaseException:
                self.close()
                raise
            self._network._pools.add(self)
            # Collected without close(): the core frees the sets, and their addresses go back to the network
            # (without its lock, which the collecting thread may hold).
            weakref.finalize(self, _give_back, self._core, self._network)

    def _top_up(self) -> None:
        """On a network: gives the addresses of spent sets back to it, and the pool an address per set it may make."""
        network = self._network
        if network is None:
            return
        if network._lan.forked_copy:
            # A forked child's pool makes no sets on its parent's network (a box on it is refused by _place), but
            # runs its boxes on none: this runs after theirs, whose box must not be lost to an exception here.
            return
        with self._addresses:
            for veth, address in self._core.spent():
                network._release(address, veth)
            for _ in range(self._core.wanted()):
                link = network._reserve_for_pool()
                if link is None:
                    return  # the network is full (but for exited boxes' addresses): fewer sets for now
                if not self._core.give(*link):
                    network._release(link[1], link[0])  # closed meanwhile; no veth was made
                    return

    def Popen(self, args: Args, **options: Unpack[RunOptions]) -> Popen:
        """Start ``args`` as :class:`nsbox.Popen` does, in a set of this pool's namespaces when one is ready."""
        token = POOL.set(self._core)
        try:
            return Popen(args, **self._merged(options))
        finally:
            POOL.reset(token)
            self._top_up()

    def run(
        self,
        args: Args,
        *,
        input: Any = None,
        capture_output: bool = False,
        timeout: float | None = None,
        check: bool = False,
        **options: Unpack[RunOptions],
    ) -> subprocess.CompletedProcess[Any]:
        """Run ``args`` as :func:`nsbox.run` does, in a set of this pool's namespaces when one is ready."""
        token = POOL.set(self._core)
        try:
            merged = self._merged(options)
            return run(args, input=input, capture_output=capture_output, timeout=timeout, check=check, **merged)
        finally:
            POOL.reset(token)
            self._top_up()

    def call(
        self,
        fn: Callable[..., T],
        args: Iterable[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
        user: bool | None = None,
        **options: Unpack[NamespaceOptions],
    ) -> T:
        """Call ``fn`` as :func:`nsbox.call` does, in a set of this pool's namespaces when one is ready."""
        __tracebackhide__ = True  # pytest: show the caller's frames, not these
        token = POOL.set(self._core)
        try:
            merged: Any = {**self._options, **options}
            return call(fn, args, kwargs, timeout=timeout, user=self._user if user is None else user, **merged)
        finally:
            POOL.reset(token)
            self._top_up()

    def _merged(self, options: Mapping[str, Any]) -> Any:
        merged = {**self._options, **options}
        if "user" not in options and self._user is not None:
            merged["user"] = self._user
        return merged

    def stats(self) -> PoolStats:
        """Sets ready, made, taken and missed so far in this process, and the last failure to make one."""
        return PoolStats(*self._core.counts())

    @property
    def kinds(self) -> list[str]:
        """The namespaces a set holds besides the user namespace (``"net"``, ``"ipc"`` ...)."""
        return self._core.kinds

    def close(self) -> None:
        """Free every unused set and stop making them; later spawns make their own namespaces. Idempotent.

        On a network, the addresses of the unused sets go back to it; their veths go with their network
        namespaces, which the kernel frees a few milliseconds later.
        """
        self._core.close()
        if self._network is not None and not self._network._lan.forked_copy:
            self._top_up()

    def __enter__(self) -> Pool:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        stats = self.stats()
        on = "" if self._network is None else f" network={self._network.subnet}"
        return f"<nsbox.Pool size={self.size} kinds=[{', '.join(self.kinds)}]{on} ready={stats.ready}>"
