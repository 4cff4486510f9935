"""``nsbox.Popen``: :class:`subprocess.Popen` whose child starts in fresh namespaces."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time as _time
import warnings
from collections.abc import Callable, Collection, Iterable, Mapping
from contextvars import ContextVar
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack for **kwargs from Python 3.12

    from nsbox import _egress, _pty
    from nsbox._network import Network  # a box's network is checked in _options, where it is loaded if need be

from nsbox import _ids, _inspect, _nsbox
from nsbox._limits import NOTHING_MEASURED, Usage
from nsbox._options import (
    OPTIONS,
    POOL,
    Args,
    BoxOptions,
    ExecArgs,
    File,
    PopenArgs,
    StrOrBytesPath,
    check_names,
    prepare,
    wants_tty,
)

#: The cgroup of the box that :meth:`Popen.exec` or :meth:`Popen.exec_popen` is running a command in, while they do:
#: that command enters it (limited and counted with the box, as ``docker exec`` runs in the container's cgroup).
_exec_cgroup: ContextVar[_nsbox.Cgroup | None] = ContextVar("nsbox_exec_cgroup", default=None)


class Popen(subprocess.Popen[Any]):
    r"""Start ``args`` in new namespaces; otherwise exactly :class:`subprocess.Popen`.

    All of ``subprocess.Popen``'s pipes, ``communicate``, ``wait``, ``poll``, ``send_signal``,
    ``terminate``, ``kill``, ``returncode`` and context-manager behaviour are inherited unchanged.
    ``pid`` is the host PID of the box's first process (PID 1 inside when ``pid=True``).

    Namespace options (all keyword-only):

    - ``pid``, ``mount``, ``uts``, ``ipc``, ``net``, ``cgroup``, ``time``: create that namespace.
    - ``user``: ``None`` (default) creates a user namespace exactly when the caller is not root and
      another namespace is asked for, so everything works without privileges. In a user namespace
      the caller's uid and gid are root inside unless ``uid_map``/``gid_map`` give
      ``(inside, outside, count)`` ranges; ``setgroups`` is ``"deny"`` unless ``"allow"`` is asked.
    - ``mount_proc``: mount a fresh proc on ``/proc``, or on the directory given (implies ``mount``).
    - ``root``: the box's root, switched to with ``pivot_root`` (the caller's root detached, so nothing
      inside can climb back to it): a directory, or an :class:`nsbox.Bind`, :class:`nsbox.Tmpfs` or
      :class:`nsbox.Overlay` without a target. The command starts in its ``/`` unless ``cwd`` is given.
    - ``mounts``: :class:`nsbox.Bind`, :class:`nsbox.Tmpfs`, :class:`nsbox.Overlay` and :class:`nsbox.Dev`
      mounts, made in order in the box's root (the caller's, without ``root``), after proc; a missing
      mount point is made where its parent is writable. ``root`` and ``mounts`` imply ``mount``.
    - ``propagation``: ``"private"`` (default), ``"slave"``, ``"shared"`` or ``"unchanged"``, applied
      to ``/`` recursively in the new mount namespace before anything is mounted.
    - ``hostname``: set in a new UTS namespace (implies ``uts``).
    - ``monotonic_offset``, ``boottime_offset``: seconds added to those clocks (needs ``time``).
    - ``init``: PID 1 is a tiny init that starts the command as PID 2, reaps every orphan, forwards
      SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2, SIGQUIT (and SIGWINCH, SIGCONT, SIGALRM) to it, and
      exits with its status (128+N when signal N killed it). Implies ``pid``. Without it, the command is
      PID 1: signals it has no handler for are ignored, and reaping orphans is its job.
    - ``persist``: a directory to bind-mount the box's namespaces into, so they outlive it (root only;
      see :func:`nsbox.persist`, :func:`nsbox.release`).
    - ``target``: instead of new namespaces, join those of a running process (a PID) or of persisted
      namespace files (a directory), as ``nsenter`` does. Cannot be combined with the options above.
    - ``network``: an :class:`nsbox.Network` to join (implies ``net``): the box gets ``eth0`` with ``ip``
      (default: the next free address), up, with a default route through the network's gateway.
      ``box.ip`` is the address.
    - ``seccomp``: a seccomp filter, installed as the box's last step before the exec: ``"default"`` (nsbox's
      default profile) or an :class:`nsbox.Seccomp`; denied calls fail with ``EPERM`` (see ``Seccomp``).
    - ``memory_limit`` (bytes, or a size such as ``"256M"``, ``"1.5G"``: binary units), ``pids_limit``
      (processes at once), ``cpu_limit`` (CPUs, ``0.5`` for half of one): the box gets a cgroup of its own
      beneath the caller's, entered before the command runs and removed when the box is reaped (what is
      left in it is killed then). :attr:`oom_killed` and :meth:`usage` read its counters. Root, or a
      delegated cgroup v2 subtree (see the README); otherwise ``PermissionError`` says what to do.
    - ``tty``: the box's first process starts a new session whose controlling terminal is a new
      pseudo-terminal (``setsid`` and ``TIOCSCTTY``), on its 0, 1 and 2 except where ``stdin``, ``stdout`` or
      ``stderr`` redirect them. :attr:`pty` is the terminal's master, an unbuffered binary file (reads end with
      ``b""`` once the box no longer holds the terminal: see :class:`nsbox.Pty`); :meth:`resize` sets its size
      (24x80 to start with, or ``tty=(rows, cols)``: a one-shot program such as ``stty size`` or ``ls`` runs
      before any resize could reach it). In a box with a :class:`nsbox.Dev` mount the terminal is one of the box's own
      devpts (``tty`` prints ``/dev/pts/0`` inside, and the host's ``/dev/pts`` does not show it); otherwise it
      comes from the caller's ``/dev/ptmx``. Being in another session, the caller never gets the terminal's
      signals: Ctrl-C (``box.pty.write(b"\x03")``) interrupts the box's foreground job only (with ``pid=True``,
      PID 1 ignores it unless it handles SIGINT, as any signal). ``start_new_session=False`` and
      ``process_group`` contradict it and are refused. The ``with`` block closes :attr:`pty` before it waits,
      as it closes ``stdin``: a program reading the terminal then reads EOF.

    ``user`` does two jobs, told apart by type: ``None``, ``True`` or ``False`` is the user namespace
    (above); a user name or an ``int`` uid means what it means to :mod:`subprocess`: run the command as
    that user, here *inside* the box (after the namespaces are made, so uid 1000 is uid 1000 of the box's
    user namespace, which must map it). ``group``, ``extra_groups`` and ``umask`` are :mod:`subprocess`'s
    too, applied inside the box likewise. Names are looked up in the host's passwd and group databases
    before anything is forked, as :mod:`subprocess` does.

    Differences from ``subprocess.Popen``: every fd other than 0, 1, 2 and ``pass_fds`` is closed
    (``close_fds=False`` is refused, or overridden with subprocess's own warning when ``pass_fds`` is
    given); signal dispositions and mask are reset to default (``restore_signals=False`` is refused);
    there is no ``preexec_fn`` (nothing runs between fork and exec but nsbox's own system calls);
    ``startupinfo`` and ``creationflags`` are refused as on any POSIX system. Without ``pid=True``,
    ``kill()`` reaches the first process only, as in subprocess; with it, killing PID 1 ends every
    process of the box.
    """

    def __init__(
        self,
        args: Args,
        bufsize: int = -1,
        executable: StrOrBytesPath | None = None,
        stdin: File = None,
        stdout: File = None,
        stderr: File = None,
        preexec_fn: Callable[[], Any] | None = None,
        close_fds: bool = True,
        shell: bool = False,
        cwd: StrOrBytesPath | None = None,
        env: Mapping[Any, Any] | None = None,
        universal_newlines: bool | None = None,
        startupinfo: Any = None,
        creationflags: int = 0,
        restore_signals: bool = True,
        start_new_session: bool | None = None,
        pass_fds: Collection[int] = (),
        *,
        user: bool | str | int | None = None,
        group: str | int | None = None,
        extra_groups: Iterable[str | int] | None = None,
        encoding: str | None = None,
        errors: str | None = None,
        text: bool | None = None,
        umask: int = -1,
        pipesize: int = -1,
        process_group: int | None = None,
        **options: Unpack[BoxOptions],
    ) -> None:
        if preexec_fn is not None:
            raise ValueError(
                "nsbox runs no Python code between fork and exec (it would be unsafe in a threaded caller): "
                "preexec_fn is not supported; use nsbox.call to run a function in a box"
            )
        if startupinfo is not None:
            raise ValueError("startupinfo is only supported on Windows platforms")
        if creationflags != 0:
            raise ValueError("creationflags is only supported on Windows platforms")
        if not close_fds:
            if not pass_fds:
                raise ValueError("nsbox always closes inherited fds; pass the ones to keep in pass_fds")
            warnings.warn("pass_fds overriding close_fds.", RuntimeWarning, stacklevel=2)
        if not restore_signals:
            raise ValueError("nsbox always resets signal dispositions; restore_signals=False is not supported")
        # `user` is the user namespace when None or a bool, subprocess's user (a name or uid) otherwise.
        if user is not None and not isinstance(user, (bool, str, int)):
            raise TypeError(
                f"user must be None, True or False (a user namespace), or a user name or uid to run as, not {user!r}"
            )
        user_namespace = user if isinstance(user, bool) else None
        run_as, group, extra_groups = _ids.resolve(
            None if user is None or isinstance(user, bool) else user, group, extra_groups
        )
        check_names(options, OPTIONS, "Popen")
        #: ``tty=True``: the master of the box's terminal (see :mod:`nsbox._pty`).
        self.pty: _pty.Pty | None = None
        if wants_tty(options):
            # A new session is how the terminal becomes the box's: refuse what says otherwise, before anything is made.
            if start_new_session is False:
                raise ValueError(
                    "tty=True starts a new session (the terminal's): it cannot take start_new_session=False"
                )
            if process_group is not None:
                raise ValueError(
                    "tty=True makes the box the leader of a new session and of its process group: "
                    "it cannot take process_group"
                )
            if stderr == subprocess.STDOUT and stdout is None:
                stderr = None  # both on the terminal
        self._exec_children = []
        self._nsbox_link: tuple[str, str] | None = None
        #: The box's cgroup when it has limits (set by the core as it starts the box).
        self._cgroup: _nsbox.Cgroup | None = None
        # Checked before any pipe is made: bad options leave nothing behind.
        self._prepared = prepare(options, user_namespace)
        if cwd is None and self._prepared.keeps_cwd:
            # Mounts on the caller's root (pivot_root to a copy of it): start where the caller is, as without.
            cwd = os.getcwd()
        network = self._prepared.network
        #: A ready set of a Pool wired to the box's network (see nsbox.Pool), until the spawn joins it.
        self._nsbox_wired: _nsbox.TakenSet | None = None
        if network is not None:
            self._nsbox_link, self._nsbox_wired = network._place(self._prepared.ip, self._prepared.spec, POOL.get())
        try:
            super().__init__(
                args,
                bufsize,
                executable,
                stdin,
                stdout,
                stderr,
                close_fds=True,
                shell=shell,
                cwd=cwd,
                env=env,
                universal_newlines=universal_newlines,
                pass_fds=pass_fds,
                start_new_session=bool(start_new_session) or self._prepared.new_session,
                process_group=process_group,
                text=text,
                encoding=encoding,
                errors=errors,
                pipesize=pipesize,
                user=run_as,
                group=group,
                extra_groups=extra_groups,
                umask=umask,
            )
            self._nsbox_wired = None
            if network is not None and self._nsbox_link is not None:
                network._bind(self._nsbox_link[1], self)
            if self._prepared.egress is not None:
                self._prepared.egress.cleanup()  # the box has its resolv.conf mounted; the engine runs
            if self._prepared.persist is not None:
                self.persist(self._prepared.persist)
        except BaseException:
            # First, and in one call that Python's signal handlers cannot interrupt: an interrupt raised
            # as the spawn returned (or later in __init__) must not leave a running box nobody knows of.
            _nsbox.kill_and_reap(self)
            self.close_pidfd()
            self._close_pty()
            if self._prepared.egress is not None:
                self._prepared.egress.stop()
            self._nsbox_wired = None  # a set the spawn did not take is freed with it
            if network is not None and self._nsbox_link is not None:
                network._bind(self._nsbox_link[1], None)
            for name in ("stdin", "stdout", "stderr"):  # unset when __init__ failed early
                stream = getattr(self, name, None)
                if stream is not None:
                    stream.close()
            raise

    @property
    def pidfd(self) -> int:
        """A pidfd of the box's first process (``pidfd_open(2)``), opened as it started, closed with this object.

        It becomes readable when that process exits, so it serves ``select``/``poll``, event loops
        (``loop.add_reader``) and ``os.waitid(os.P_PIDFD, ...)``; it names that process for good, so
        ``signal.pidfd_send_signal`` through it can never reach a process that took over the PID.
        Reaping through it yourself leaves :meth:`wait` to find the process gone (``returncode`` 0, as
        :mod:`subprocess` says when someone else reaped it).

        Raises:
            ValueError: the ``Popen`` is closed (its ``with`` block ended, or :meth:`close_pidfd` was called),
                or the process was reaped by someone else before it could be watched.
        """
        fd = self.__dict__.get("_pidfd")
        if fd is None:
            raise ValueError("no pidfd: the Popen is closed (or its process was reaped before it could be watched)")
        return fd  # type: ignore[no-any-return]

    def close_pidfd(self) -> None:
        """Close :attr:`pidfd` (done by the ``with`` block and when this object is collected). Idempotent."""
        fd = self.__dict__.pop("_pidfd", None)
        if fd is not None:
            os.close(fd)

    def resize(self, rows: int, cols: int) -> None:
        """Set the size of the box's terminal (``tty=True``): the box's foreground process group gets ``SIGWINCH``.

        A new terminal starts at 24 rows and 80 columns. Programs read the size with ``TIOCGWINSZ``
        (``stty size``, ``os.get_terminal_size``).

        Raises:
            ValueError: the box has no terminal (or it is closed), or a size is not from 1 to 65535.
        """
        if self.pty is None or self.pty.closed:
            raise ValueError("the box has no terminal: pass tty=True" if self.pty is None else "the terminal is closed")
        from nsbox import _pty  # loaded by boxes with a terminal only

        _pty.set_size(self.pty.fileno(), rows, cols)

    def _close_pty(self) -> None:
        pty = self.__dict__.get("pty")
        fd = self.__dict__.pop("_pty_fd", None)
        if pty is not None:
            pty.close()
        elif fd is not None:
            os.close(fd)  # recorded by the core, not yet wrapped

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            # First, as subprocess closes stdin before it waits: a box reading its terminal reads EOF (a hang-up).
            self._close_pty()
            super().__exit__(exc_type, exc, tb)
        finally:
            self.close_pidfd()

    def __del__(self, *args: Any, **kwargs: Any) -> None:
        # subprocess keeps a still running child for later reaping; that needs the PID, not the pidfd.
        try:
            super().__del__(*args, **kwargs)
        finally:
            self.close_pidfd()
            self._close_pty()

    @property
    def egress(self) -> _egress.EgressInfo | None:
        """What ``egress=True`` put in place (engine, addresses, published ports), or ``None``."""
        plan = self._prepared.egress
        if plan is None:
            return None
        if plan.on_network and self._prepared.network is not None:
            return self._prepared.network.egress  # type: ignore[no-any-return]
        from nsbox._egress import EgressInfo

        return EgressInfo(plan)

    @property
    def returncode(self) -> int | Any:
        """As :attr:`subprocess.Popen.returncode`; once it is known, the box's egress engine is stopped."""
        return self.__dict__.get("_nsbox_returncode")

    @returncode.setter
    def returncode(self, value: int | Any) -> None:
        # Every way subprocess (or the core's kill_and_reap) records the box's end goes through here.
        self.__dict__["_nsbox_returncode"] = value
        if value is not None:
            plan = getattr(self.__dict__.get("_prepared"), "egress", None)
            if plan is not None:
                plan.stop()

    @property
    def ip(self) -> str | None:
        """The box's address on its :class:`nsbox.Network` (``eth0``), or ``None`` without one."""
        return None if self._nsbox_link is None else self._nsbox_link[1]

    @property
    def veth(self) -> str | None:
        """The name of the host-side end of the box's veth pair (on the network's bridge), if any."""
        return None if self._nsbox_link is None else self._nsbox_link[0]

    @property
    def network(self) -> Network | None:
        """The :class:`nsbox.Network` the box joined, if any."""
        return self._prepared.network

    @property
    def namespaces_created(self) -> list[str]:
        """The namespaces this box was given, by their ``/proc/PID/ns`` names."""
        return self._prepared.spec.namespaces

    # -- Looking at the box from the host -------------------------------------------------------

    def _require_running(self, doing: str) -> None:
        if self.poll() is not None:
            raise ProcessLookupError(
                errno.ESRCH, f"cannot {doing}: the box (host PID {self.pid}) has exited with status {self.returncode}"
            )

    def namespaces(self) -> dict[str, int]:
        """Namespace kind → inode id of the box's first process (compare with :func:`nsbox.namespaces`)."""
        self._require_running("read the box's namespaces")
        return _inspect.namespaces(self.pid)

    def processes(self) -> _inspect.ProcessTable:
        """Every process in the box's PID namespace with its host and inside PIDs, as in ``ps -ef``."""
        self._require_running("list the box's processes")
        return _inspect.processes(self.pid)

    def host_pid(self, inner_pid: int) -> int:
        """The host PID of the process that is ``inner_pid`` inside the box."""
        for proc in self.processes():
            if proc.pid == inner_pid:
                return proc.host_pid
        raise ProcessLookupError(errno.ESRCH, f"no process has PID {inner_pid} in the box (host PID {self.pid})")

    def inner_pid(self, host_pid: int) -> int:
        """The PID that host process ``host_pid`` has inside the box."""
        for proc in self.processes():
            if proc.host_pid == host_pid:
                return proc.pid
        raise ProcessLookupError(errno.ESRCH, f"process {host_pid} is not in the box (host PID {self.pid})")

    # -- Entering it ----------------------------------------------------------------------------

    def exec(self, args: Args, **run_options: Unpack[ExecArgs]) -> subprocess.CompletedProcess[Any]:
        """Run ``args`` inside all of the box's namespaces, like ``docker exec`` / ``nsenter --all``.

        The command is confined as the box is (``no_new_privs``, ``capabilities``, ``rlimits``, ``seccomp``,
        given or implied by ``sandbox``), as ``docker exec`` runs with the container's; in a box with cgroup
        limits it enters the box's cgroup, and counts against them.

        Takes :func:`nsbox.run`'s options (``capture_output``, ``text``, ``input``, ``timeout``,
        ``check``, ``env``, ``cwd`` ...). The command forks after joining, so it is in the box's PID
        namespace, and starts in the box's root and working directory.

        Raises:
            ProcessLookupError: the box has exited. PermissionError: its namespaces may not be joined.
        """
        from nsbox import run  # by its public name: loaded under the lock a fork waits for (nsbox/__init__.py)

        self._require_running("exec into the box")
        entering = _exec_cgroup.set(self._cgroup)
        try:
            return run(args, target=self.pid, **self._prepared.confinement, **run_options)
        finally:
            _exec_cgroup.reset(entering)

    def exec_popen(self, args: Args, **popen_options: Unpack[PopenArgs]) -> Popen:
        """The :class:`Popen` form of :meth:`exec`: start ``args`` inside the box and return at once.

        The box keeps track of it: :meth:`wait` and :meth:`poll` on the box reap it once it has exited.
        """
        self._require_running("exec into the box")
        entering = _exec_cgroup.set(self._cgroup)
        try:
            child = Popen(args, target=self.pid, **self._prepared.confinement, **popen_options)
        finally:
            _exec_cgroup.reset(entering)
        self._exec_children.append(child)
        return child

    # -- Its cgroup -----------------------------------------------------------------------------

    @property
    def oom_killed(self) -> bool:
        """Whether the OOM killer of ``memory_limit`` killed a process of the box (so far)."""
        cgroup = getattr(self, "_cgroup", None)
        return cgroup is not None and (cgroup.usage()[3] or 0) > 0

    def usage(self) -> Usage:
        """What the box has used, from its cgroup's counters: now, or as it was when the box was reaped.

        Fields are ``None`` where nothing was counted: all of them for a box without cgroup limits.
        """
        cgroup = getattr(self, "_cgroup", None)
        if cgroup is None:
            return NOTHING_MEASURED
        memory_peak, cpu_time, processes, _ = cgroup.usage()
        return Usage(memory_peak, cpu_time, processes)

    def _finish_cgroup(self) -> None:
        # Once reaped: kill what is left in the cgroup (a box without pid=True may leave orphans), keep the
        # final figures, remove it.
        cgroup = getattr(self, "_cgroup", None)
        if cgroup is not None and self.returncode is not None:
            cgroup.finish()

    def _handle_exitstatus(self, sts: int, *args: Any) -> None:  # subprocess's hook of every reaping path
        super()._handle_exitstatus(sts, *args)  # type: ignore[misc]
        self._finish_cgroup()

    # -- Waiting --------------------------------------------------------------------------------

    # The processes started by exec_popen: children of ours, inside the box's PID namespace.
    _exec_children: list[Popen]

    def _reap_exec_children(self) -> None:
        self._exec_children = [c for c in self._exec_children if c.poll() is None]

    def poll(self) -> int | None:
        """As :meth:`subprocess.Popen.poll`; also reaps the box's exited ``exec_popen`` processes."""
        self._reap_exec_children()
        code = super().poll()
        self._finish_cgroup()  # also when someone else reaped it (subprocess then sets returncode alone)
        return code

    def wait(self, timeout: float | None = None) -> int:
        """As :meth:`subprocess.Popen.wait`.

        PID 1 of a PID namespace cannot finish exiting while a process of its namespace is an unreaped
        child of ours (one started by :meth:`exec_popen`): the kernel waits for it to be reaped. So while
        there are such processes, they are reaped as they die instead of blocking on PID 1 alone.
        """
        if not self._exec_children or self.returncode is not None:
            status = super().wait(timeout)
            self._finish_cgroup()
            return status
        deadline = None if timeout is None else _time.monotonic() + timeout
        delay = 0.0005
        while True:
            code = self.poll()
            if code is not None:
                return code
            if not self._exec_children:
                status = super().wait(None if deadline is None else max(0.0, deadline - _time.monotonic()))
                self._finish_cgroup()
                return status
            if timeout is not None and deadline is not None and _time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(self.args, timeout)
            _time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def persist(self, path: StrOrBytesPath) -> list[str]:
        """Bind-mount the box's namespaces onto ``path/KIND`` so they outlive it (see :func:`nsbox.persist`)."""
        from nsbox import persist  # as run in exec

        self._require_running("persist the box's namespaces")
        return persist(self.pid, path)

    # -- Showing it -----------------------------------------------------------------------------

    def __repr__(self) -> str:
        # Only what is known: pytest and debuggers show the repr of a Popen whose __init__ raised part way
        # (options refused, the command not found), so nothing here may assume that __init__ finished.
        pid, returncode = getattr(self, "pid", None), getattr(self, "returncode", None)
        parts = ["<nsbox.Popen"]
        if pid is not None:
            inside = ""
            if returncode is None:
                try:
                    inside = f" ({_inspect.nspid(pid)[-1]} inside)"
                except OSError:
                    pass
            parts.append(f"pid={pid}{inside}")
        prepared = getattr(self, "_prepared", None)
        if prepared is not None:
            parts.append(f"namespaces=[{', '.join(prepared.spec.namespaces) or 'none'}]")
        parts.append("not started" if pid is None else "running" if returncode is None else f"exited {returncode}")
        args = f": {self.args!r}" if hasattr(self, "args") else ""
        return f"{' '.join(parts)}{args}>"

    def _repr_html_(self) -> str:
        import html  # for Jupyter, not for a plain run

        parts = [f"<p><code>{html.escape(repr(self))}</code></p>"]
        started = getattr(self, "pid", None) is not None and getattr(self, "returncode", 0) is None
        if started and self.poll() is None:
            try:
                box, host = self.namespaces(), _inspect.namespaces()
                rows = {k: (box.get(k), host.get(k)) for k in sorted(set(box) | set(host))}
                parts.append(_inspect.namespaces_html(rows))
                parts.append(self.processes()._repr_html_())
                if self.egress is not None:
                    parts.append(self.egress._repr_html_())
            except OSError as exc:
                parts.append(f"<p>{html.escape(str(exc))}</p>")
        return "".join(parts)

    def _execute_child(  # private hook of subprocess.Popen; its signature is the same in 3.11 to 3.13
        self,
        args: Any,
        executable: Any,
        preexec_fn: Any,
        close_fds: bool,
        pass_fds: Collection[int],
        cwd: Any,
        env: Mapping[Any, Any] | None,
        startupinfo: Any,
        creationflags: int,
        shell: bool,
        p2cread: int,
        p2cwrite: int,
        c2pread: int,
        c2pwrite: int,
        errread: int,
        errwrite: int,
        restore_signals: bool,
        gid: Any,
        gids: Any,
        uid: Any,
        umask: int,
        start_new_session: bool,
        process_group: int | None,
    ) -> None:
        executable, argv, env_list, exec_paths = command(args, executable, shell, cwd, env)
        # The core records the PID on self (pid, _child_created) before it returns: see kill_and_reap.
        _nsbox.spawn(
            self._prepared.spec,
            exec_paths,
            argv,
            env_list,
            None if cwd is None else os.fsencode(cwd),
            (p2cread, c2pwrite, errwrite),
            _fds_to_keep(pass_fds),
            start_new_session,
            process_group,
            program=executable,
            cwd_for_errors=cwd,
            target=self._prepared.target,
            link=None
            if self._prepared.network is None or self._nsbox_link is None or self._nsbox_wired is not None
            else (self._prepared.network._lan, *self._nsbox_link),
            umask=umask,
            extra_groups=None if gids is None else list(gids),
            gid=gid,
            uid=uid,
            popen=self,
            join_cgroup=None if self._prepared.target is None else _exec_cgroup.get(),
            egress=None if self._prepared.egress is None else self._prepared.egress.box_engine,
            pool=POOL.get(),
            taken=self._nsbox_wired,
        )
        fd = self.__dict__.get("_pty_fd")
        if fd is not None:
            from nsbox import _pty  # loaded by boxes with a terminal only: termios, fcntl

            self.pty = _pty.Pty(fd, "r+")
            del self.__dict__["_pty_fd"]
        self._close_pipe_fds(p2cread, p2cwrite, c2pread, c2pwrite, errread, errwrite)  # type: ignore[attr-defined]


def command(
    args: Any, executable: Any, shell: bool, cwd: Any, env: Mapping[Any, Any] | None
) -> tuple[Any, list[bytes], list[bytes] | None, list[bytes]]:
    """The POSIX handling of ``args``, ``shell``, ``executable`` and ``env`` by :mod:`subprocess`, with its audit event.

    Returns the program as given (for error messages), the argv, the environment (``None``: inherited), and
    the paths to try in turn (the ``PATH`` search is done here, the core tries each).
    """
    if isinstance(args, (str, bytes)):
        args = [args]
    elif isinstance(args, os.PathLike):
        if shell:
            raise TypeError("path-like args is not allowed when shell is true")
        args = [args]
    else:
        args = list(args)
    if shell:
        args = ["/bin/sh", "-c", *args]
        if executable:
            args[0] = executable
    if not args:
        raise ValueError("args must not be empty")
    if executable is None:
        executable = args[0]
    sys.audit("subprocess.Popen", executable, args, cwd, env)

    argv = [os.fsencode(a) for a in args]
    env_list = None
    if env is not None:
        env_list = []
        for key, value in env.items():
            k = os.fsencode(key)
            if b"=" in k:
                raise ValueError("illegal environment variable name")
            env_list.append(k + b"=" + os.fsencode(value))
    program = os.fsencode(executable)
    if b"/" in program:  # os.path.dirname(program) is not empty
        exec_paths = [program]
    else:
        exec_paths = [os.path.join(os.fsencode(d), program) for d in os.get_exec_path(env)]
    return executable, argv, env_list, exec_paths


def _fds_to_keep(pass_fds: Collection[int]) -> list[int]:
    """``pass_fds`` sorted, each checked to be an fd number (subprocess raises the same ``ValueError``)."""
    fds = sorted({int(fd) for fd in pass_fds})
    if fds and not (0 <= fds[0] and fds[-1] < 2**31):
        bad = fds[0] if fds[0] < 0 else fds[-1]
        raise ValueError(f"pass_fds: {bad} is not a file descriptor")
    return fds
