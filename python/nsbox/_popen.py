"""``nsbox.Popen``: :class:`subprocess.Popen` whose child starts in fresh namespaces."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Collection, Mapping, Sequence
from typing import IO, Any

from nsbox import _nsbox
from nsbox._options import NAMESPACE_DEFAULTS, make_config

#: What ``args`` may be, as in :mod:`subprocess`.
StrOrBytesPath = str | bytes | os.PathLike[str] | os.PathLike[bytes]
Args = StrOrBytesPath | Sequence[StrOrBytesPath]
File = None | int | IO[Any]


class Popen(subprocess.Popen[Any]):
    """Start ``args`` in new namespaces; otherwise exactly :class:`subprocess.Popen`.

    All of ``subprocess.Popen``'s pipes, ``communicate``, ``wait``, ``poll``, ``send_signal``,
    ``terminate``, ``kill``, ``returncode`` and context-manager behaviour are inherited unchanged.
    ``pid`` is the host PID of the box's first process (PID 1 inside when ``pid=True``).

    Namespace options (all keyword-only):

    - ``pid``, ``mount``, ``uts``, ``ipc``, ``net``, ``cgroup``, ``time``: create that namespace.
    - ``user``: ``None`` (default) creates a user namespace exactly when the caller is not root and
      another namespace is asked for, so everything works without privileges. In a user namespace
      the caller's uid and gid are root inside unless ``uid_map``/``gid_map`` give
      ``(inside, outside, count)`` ranges; ``setgroups`` is ``"deny"`` unless ``"allow"`` is asked.
    - ``mount_proc``: mount a fresh proc on ``/proc`` (implies ``mount``).
    - ``propagation``: ``"private"`` (default), ``"slave"``, ``"shared"`` or ``"unchanged"``, applied
      to ``/`` recursively in the new mount namespace before anything is mounted.
    - ``hostname``: set in a new UTS namespace (implies ``uts``).
    - ``monotonic_offset``, ``boottime_offset``: seconds added to those clocks (needs ``time``).

    Differences from ``subprocess.Popen``: every fd other than 0, 1, 2 and ``pass_fds`` is closed
    (``close_fds`` cannot be False); signal dispositions and mask are reset to default; there is no
    ``preexec_fn`` (nothing runs between fork and exec but nsbox's own system calls); ``user`` is the
    user namespace, not a uid to switch to. Without ``pid=True``, ``kill()`` reaches the first process
    only, as in subprocess; with it, killing PID 1 ends every process of the box.
    """

    def __init__(
        self,
        args: Args,
        bufsize: int = -1,
        executable: StrOrBytesPath | None = None,
        stdin: File = None,
        stdout: File = None,
        stderr: File = None,
        *,
        cwd: StrOrBytesPath | None = None,
        env: Mapping[Any, Any] | None = None,
        universal_newlines: bool | None = None,
        shell: bool = False,
        close_fds: bool = True,
        pass_fds: Collection[int] = (),
        restore_signals: bool = True,
        start_new_session: bool = False,
        process_group: int | None = None,
        text: bool | None = None,
        encoding: str | None = None,
        errors: str | None = None,
        pipesize: int = -1,
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
        hostname: str | bytes | None = None,
        uid_map: Sequence[tuple[int, int, int]] | None = None,
        gid_map: Sequence[tuple[int, int, int]] | None = None,
        setgroups: str | None = None,
        monotonic_offset: float | None = None,
        boottime_offset: float | None = None,
    ) -> None:
        if not close_fds:
            raise ValueError("nsbox always closes inherited fds; pass the ones to keep in pass_fds")
        if not restore_signals:
            raise ValueError("nsbox always resets signal dispositions; restore_signals=False is not supported")
        options = dict(NAMESPACE_DEFAULTS)
        options.update(
            pid=pid,
            mount=mount,
            uts=uts,
            ipc=ipc,
            net=net,
            user=user,
            cgroup=cgroup,
            time=time,
            mount_proc=mount_proc,
            propagation=propagation,
            hostname=hostname,
            uid_map=uid_map,
            gid_map=gid_map,
            setgroups=setgroups,
            monotonic_offset=monotonic_offset,
            boottime_offset=boottime_offset,
        )
        # Checked before any pipe is made: bad options leave nothing behind.
        self._nsbox_config = make_config(options)
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
            start_new_session=start_new_session,
            process_group=process_group,
            text=text,
            encoding=encoding,
            errors=errors,
            pipesize=pipesize,
        )

    @property
    def namespaces_created(self) -> list[str]:
        """The namespaces this box was given, by their ``/proc/PID/ns`` names."""
        return self._nsbox_config.namespaces

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
        # The same argument handling as subprocess's POSIX _execute_child, then one call to the core.
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
        if os.path.dirname(program):
            exec_paths = [program]
        else:
            exec_paths = [os.path.join(os.fsencode(d), program) for d in os.get_exec_path(env)]
        self.pid = _nsbox.spawn(
            self._nsbox_config,
            exec_paths,
            argv,
            env_list,
            None if cwd is None else os.fsencode(cwd),
            (p2cread, c2pwrite, errwrite),
            sorted({int(fd) for fd in pass_fds}),
            start_new_session,
            process_group,
            program=executable,
            cwd_for_errors=cwd,
        )
        self._child_created = True
        self._close_pipe_fds(p2cread, p2cwrite, c2pread, c2pwrite, errread, errwrite)  # type: ignore[attr-defined]
