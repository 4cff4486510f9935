"""``nsbox.run``: :func:`subprocess.run` with namespaces."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack for **kwargs from Python 3.12

from nsbox import _nsbox
from nsbox._limits import CompletedBox
from nsbox._options import OPTIONS, POOL, Args, RunOptions, prepare, wants_tty
from nsbox._popen import Popen, command

#: Options the Popen layer acts on itself (a network, egress, persisting, joining, a terminal, a cgroup whose usage
#: the result reports): a box given any of them is started through :class:`Popen`.
_POPEN_OPTIONS = frozenset(
    {"network", "ip", "egress", "publish", "dns", "allow", "persist", "target", "tty"}
    | {"memory_limit", "pids_limit", "cpu_limit"}
)


def run(
    args: Args,
    *,
    input: Any = None,
    capture_output: bool = False,
    timeout: float | None = None,
    check: bool = False,
    **kwargs: Unpack[RunOptions],
) -> subprocess.CompletedProcess[Any]:
    r"""Run ``args`` in new namespaces, wait for it, and return a :class:`subprocess.CompletedProcess`.

    With cgroup limits (``memory_limit``, ``pids_limit``, ``cpu_limit``) it is an :class:`nsbox.CompletedBox`,
    a subclass that also has ``oom_killed`` and ``usage`` (an :class:`nsbox.Usage`).

    Takes every argument of :func:`subprocess.run` and the namespace options of :class:`nsbox.Popen`,
    with the same meaning and the same exceptions (``TimeoutExpired``, ``CalledProcessError``).
    On a timeout, ``KeyboardInterrupt`` or any other exception while waiting, the box is killed and
    reaped before the exception propagates; with ``pid=True`` that ends every process in it.

    With ``tty=True`` the program runs on a terminal of its own (see :class:`nsbox.Popen`), and the terminal
    takes the places of the pipes: ``input`` is typed on it, followed by an end of file (Ctrl-D; twice if the
    last line has no newline); ``capture_output`` gives what the terminal showed as ``stdout`` (the program's
    output and errors as they were interleaved, with the terminal's echo of the input and its ``\r\n`` line
    ends; ``text=True`` makes them ``\n``), and ``stderr`` is ``None``; without it, what the terminal shows is
    copied to the caller's stdout (fd 1) as it comes. ``run`` returns once the box has exited and nothing holds
    its terminal any more (with ``pid=True``, when the box exits). On a timeout the whole box is killed, as above.

    >>> r = run(["hostname"], hostname="box", capture_output=True, text=True)
    >>> r.stdout.strip()
    'box'
    """
    if input is None and not capture_output and timeout is None and _plain(kwargs):
        return _run_plain(args, kwargs, check)
    tty = wants_tty(kwargs)
    pipes_for(kwargs, input, capture_output, tty=tty)

    # Made before it is started, so that an interrupt raised as __init__ returns (before a `with` or an
    # assignment could hold the object) still finds the box here.
    process = Popen.__new__(Popen)
    try:
        process.__init__(args, **kwargs)  # type: ignore[misc]
        with process:
            try:
                if tty:
                    from nsbox import _pty  # loaded by boxes with a terminal only

                    stdout, stderr = _pty.drive(process, input, timeout, capture_output)
                else:
                    stdout, stderr = process.communicate(input, timeout=timeout)
            except BaseException:
                # Unlike subprocess.run, also on KeyboardInterrupt: kill and reap (before __exit__ would
                # wait), leave no zombie behind, in one call that a second interrupt cannot cut short.
                _nsbox.kill_and_reap(process)
                raise
            retcode = process.wait()  # communicate() has reaped it; this just reads returncode
    except BaseException:
        _nsbox.kill_and_reap(process)  # an interrupt between __init__ and the `with`
        raise
    return completed(process, retcode, stdout, stderr, check=check)


def pipes_for(options: Any, input: Any, capture_output: bool, *, tty: bool = False) -> None:
    """:func:`subprocess.run`'s checks of ``input`` and ``capture_output``, and the pipes they ask for in ``options``.

    A terminal (``tty``) takes the places of the pipes.
    """
    if input is not None:
        if options.get("stdin") is not None:
            raise ValueError("stdin and input arguments may not both be used.")
        if not tty:
            options["stdin"] = subprocess.PIPE
    if capture_output:
        if options.get("stdout") is not None or options.get("stderr") is not None:
            raise ValueError("stdout and stderr arguments may not be used with capture_output.")
        if not tty:
            options["stdout"] = subprocess.PIPE
            options["stderr"] = subprocess.PIPE


def completed(
    process: Popen, retcode: int, stdout: Any, stderr: Any, *, check: bool
) -> subprocess.CompletedProcess[Any]:
    """What :func:`run` returns for a box that has exited (a :class:`CompletedBox` with cgroup limits)."""
    if check and retcode:
        raise subprocess.CalledProcessError(retcode, process.args, output=stdout, stderr=stderr)
    if process._cgroup is not None:
        usage, oom_killed = process.usage(), process.oom_killed
        return CompletedBox(process.args, retcode, stdout, stderr, oom_killed=oom_killed, usage=usage)
    return subprocess.CompletedProcess(process.args, retcode, stdout, stderr)


def _plain(kwargs: Mapping[str, Any]) -> bool:
    """Whether ``kwargs`` are namespace options alone (``user`` as the user namespace), none of the Popen layer's."""
    for name, value in kwargs.items():
        if name == "user":
            if value is not None and not isinstance(value, bool):
                return False  # a user to run as: Popen looks it up
        elif name not in OPTIONS or (name in _POPEN_OPTIONS and value is not None and value is not False):
            return False
    return True


class _Box:
    """What the core records a started box on (as on a :class:`Popen`): ``pid``, ``_child_created``..."""

    returncode: int | None = None


def _run_plain(args: Args, kwargs: Mapping[str, Any], check: bool) -> subprocess.CompletedProcess[Any]:
    """:func:`run` of a box with no pipes, input, timeout or anything of :class:`Popen`'s own: the core, then waitpid.

    The same results and errors as through ``Popen`` (which costs ~70 us more per box, most of a plain box's
    overhead over the bare system calls): the same option checks and spawn, ``returncode`` as ``subprocess``
    gives it (0 when someone else reaped the box), and on any exception while waiting (``KeyboardInterrupt``)
    the box killed and reaped before it propagates.
    """
    options = dict(kwargs)
    prepared = prepare(options, options.pop("user", None))
    # Mounts on the caller's root (pivot_root to a copy of it): start where the caller is, as without (as Popen).
    cwd = os.getcwd() if prepared.keeps_cwd else None
    program, argv, _, exec_paths = command(args, None, False, cwd, None)
    box = _Box()
    try:
        # The core records the PID on `box` before it returns: an interrupt from here on finds it.
        _nsbox.spawn(
            prepared.spec,
            exec_paths,
            argv,
            None,
            None if cwd is None else os.fsencode(cwd),
            (-1, -1, -1),
            [],
            prepared.new_session,
            None,
            program=program,
            cwd_for_errors=cwd,
            umask=-1,
            popen=box,
            pool=POOL.get(),
            pidfd=False,  # waited for here, by its PID: nobody else will see it
        )
        try:
            status = os.waitpid(box.pid, 0)[1]  # type: ignore[attr-defined]
            box.returncode = os.waitstatus_to_exitcode(status)
        except ChildProcessError:
            box.returncode = 0  # reaped by someone else (SIGCHLD ignored): as subprocess says
    except BaseException:
        _nsbox.kill_and_reap(box)
        raise
    if check and box.returncode:
        raise subprocess.CalledProcessError(box.returncode, args)
    return subprocess.CompletedProcess(args, box.returncode)
