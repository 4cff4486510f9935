"""The ``nsbox`` command: util-linux ``unshare``'s and ``nsenter``'s flags on top of :class:`nsbox.Popen`.

``nsbox [OPTIONS] [--] [PROGRAM [ARGS...]]`` runs PROGRAM in new namespaces as ``unshare --fork`` does;
``nsbox exec`` enters a running box as ``nsenter`` does; ``nsbox ps`` and ``nsbox ns`` look at one. A
subcommand is recognised only as the very first argument. Options end at ``--`` or at the first argument
that is not an option, as with getopt's ``+`` (what follows is the program's), and long options may be
abbreviated. The exit status is the program's (128+N when signal N killed it); nsbox's own failures
print one line ``nsbox: <what failed>: <why>`` and exit 1 (126/127 when the program cannot be executed
or found, 2 for a command line that cannot work), never with a traceback.
"""

from __future__ import annotations

import argparse
import errno
import grp
import math
import os
import pwd
import re
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Sequence
from contextlib import suppress
from types import FrameType
from typing import Any, NoReturn

import nsbox

PROG = "nsbox"
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_CANNOT_EXECUTE = 126
EXIT_NOT_FOUND = 127

#: The namespace options: long name → (short flag, kind in ``/proc/PID/ns``), in unshare's order.
NAMESPACE_FLAGS: dict[str, tuple[str, str]] = {
    "mount": ("-m", "mnt"),
    "uts": ("-u", "uts"),
    "ipc": ("-i", "ipc"),
    "net": ("-n", "net"),
    "pid": ("-p", "pid"),
    "user": ("-U", "user"),
    "cgroup": ("-C", "cgroup"),
    "time": ("-T", "time"),
}

_NEW_NAMESPACE_HELP = {
    "mount": "new mount namespace",
    "uts": "new UTS namespace (hostname, domain name)",
    "ipc": "new IPC namespace (System V IPC, mqueues)",
    "net": "new network namespace, loopback up",
    "pid": "new PID namespace; PROGRAM is its PID 1",
    "user": "new user namespace; ids unmapped (nobody)",
    "cgroup": "new cgroup namespace",
    "time": "new time namespace",
}

#: Signals the terminal sends to the whole foreground process group, box included: nsbox ignores them.
_IGNORED_SIGNALS = (signal.SIGINT, signal.SIGQUIT)
#: Signals sent to nsbox alone (by ``kill``, ``timeout``, a service manager): passed on to the box.
_FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


class UsageError(Exception):
    """A command line that cannot work: printed as ``nsbox: <message>``, exit status 2."""


class Failure(Exception):
    """Something nsbox tried failed: printed as ``nsbox: <message>``, exit status ``status``."""

    def __init__(self, message: str, status: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.status = status


# ---------------------------------------------------------------------------------------------------------------
# Parsing: argparse for the options, getopt's rules for where they end


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Options shown as unshare shows them: ``-w, --wd DIR``, ``--mount-proc[=DIR]``, ``-n, --net``."""

    def __init__(self, prog: str, **kwargs: Any) -> None:
        super().__init__(prog, max_help_position=30, **kwargs)

    def _format_action_invocation(self, action: argparse.Action) -> str:
        if not action.option_strings:
            return super()._format_action_invocation(action)
        names = ", ".join(action.option_strings)
        if action.nargs == 0:
            return names
        metavar = action.metavar if isinstance(action.metavar, str) else action.dest.upper()
        if action.nargs == "?":
            return f"{names}[={metavar}]" if metavar else names
        return f"{names} {metavar}"


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are :class:`UsageError` and which knows its options for :func:`_split`."""

    def __init__(self, command: str, usage: str, description: str, epilog: str | None = None) -> None:
        super().__init__(
            prog=PROG,
            usage=usage,
            description=description,
            epilog=epilog,
            add_help=False,
            allow_abbrev=False,
            formatter_class=_HelpFormatter,
        )
        self.options: list[argparse.Action] = []
        #: Where to look, at the end of a usage error.
        self.see_help = f"see '{PROG} {command} --help'" if command else f"see '{PROG} --help'"

    def add(self, group: argparse._ArgumentGroup, *flags: str, **kwargs: Any) -> None:
        """Add an option to ``group``; every option has a long name (the one :func:`_split` hands on)."""
        self.options.append(group.add_argument(*flags, **kwargs))

    def add_help_and_version(self, group: argparse._ArgumentGroup) -> None:
        """``-h, --help`` and ``-V, --version``, handled by :func:`_help_or_version`."""
        self.add(group, "-h", "--help", action="store_true", help="show this help and exit")
        self.add(group, "-V", "--version", action="store_true", help="show nsbox's version and exit")

    def error(self, message: str) -> NoReturn:
        """Raise a one-line :class:`UsageError` (argparse would print the usage and exit)."""
        # "argument -w/--wd: expected one argument" -> "--wd: expected one argument"
        message = re.sub(r"^argument (?:\S+/)?(\S+): ", r"\1: ", message)
        raise UsageError(f"{message}; {self.see_help}")


def _long_name(action: argparse.Action) -> str:
    return next(name for name in action.option_strings if name.startswith("--"))


def _split(parser: _Parser, argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split ``argv`` into nsbox's options and the program with its arguments, as getopt's ``+`` does.

    Options end at ``--`` (dropped) or at the first argument that is not an option. Each comes back by
    its long name with its value attached (``-w /tmp`` → ``--wd=/tmp``, ``-pf`` → ``--pid --fork``,
    ``--prop slave`` → ``--propagation=slave``), so argparse can neither take a value for an option nor
    the program for a value. As with unshare, short flags take no value and optional values need ``=``.
    """
    by_name = {name: action for action in parser.options for name in action.option_strings}
    long_names = sorted(name for name in by_name if name.startswith("--"))
    options: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            return options, list(argv[i:])
        if not arg.startswith("-") or arg == "-":
            return options, list(argv[i - 1 :])
        if arg.startswith("--"):
            name, equals, value = arg.partition("=")
            if name not in by_name:
                matches = [n for n in long_names if n.startswith(name)]
                if not matches:
                    raise UsageError(f"unrecognized option '{name}'; {parser.see_help}")
                if len(matches) > 1:
                    raise UsageError(f"option '{name}' is ambiguous (could be {', '.join(matches)})")
                name = matches[0]
            action = by_name[name]
            name = _long_name(action)
            if action.nargs == 0 and equals:
                raise UsageError(f"option '{name}' takes no value")
            if action.nargs is None and not equals:
                if i == len(argv):
                    raise UsageError(f"option '{name}' requires a value; {parser.see_help}")
                value, equals = argv[i], "="
                i += 1
            options.append(f"{name}={value}" if equals else name)
            continue
        for j, letter in enumerate(arg[1:], start=1):
            found = by_name.get(f"-{letter}")
            if found is None:
                raise UsageError(f"invalid option -- '{letter}'; {parser.see_help}")
            if found.nargs is not None:
                options.append(_long_name(found))
                continue
            value = arg[j + 1 :]
            if not value:
                if i == len(argv):
                    raise UsageError(f"option '-{letter}' requires a value; {parser.see_help}")
                value = argv[i]
                i += 1
            options.append(f"{_long_name(found)}={value}")
            break
    return options, []


def _help_or_version(parser: _Parser, args: argparse.Namespace) -> bool:
    """Print the help or the version if asked; True if so (the command is then done)."""
    if args.help:
        _write(parser.format_help())
        return True
    if args.version:
        _write(f"{PROG} {nsbox.__version__}\n")
        return True
    return False


def _id(kind: str, database: Callable[[str], int]) -> Callable[[str], int]:
    def parse(text: str) -> int:
        if re.fullmatch(r"[0-9]+", text):
            value = int(text)
            if value >= 2**32 - 1:
                raise argparse.ArgumentTypeError(f"{text} is not a {kind} id (0 to 4294967294)")
            return value
        try:
            return database(text)
        except KeyError:
            raise argparse.ArgumentTypeError(f"no {kind} named {text!r}") from None

    return parse


_uid = _id("user", lambda name: pwd.getpwnam(name).pw_uid)
_gid = _id("group", lambda name: grp.getgrnam(name).gr_gid)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds")
    return value


def _pid(text: str) -> int:
    if not re.fullmatch(r"[0-9]+", text) or not 0 < int(text) < 2**31:
        raise argparse.ArgumentTypeError(f"{text!r} is not a process id")
    return int(text)


def _target(text: str) -> int | str:
    """A PID (digits) or a directory of namespace files (anything else)."""
    return _pid(text) if re.fullmatch(r"[0-9]+", text) else text


def _signal_number(name: str) -> int | None:
    """A signal by number or by name, with or without ``SIG``, in any case (as unshare reads them)."""
    if re.fullmatch(r"[0-9]+", name):
        number = int(name)
        return number if number in set(signal.valid_signals()) else None
    upper = name.upper()
    try:
        return int(signal.Signals[upper if upper.startswith("SIG") else f"SIG{upper}"])
    except KeyError:
        return None


# ---------------------------------------------------------------------------------------------------------------
# nsbox [OPTIONS] [--] [PROGRAM [ARGS...]]

_USAGE = """\
nsbox [OPTIONS] [--] [PROGRAM [ARGS...]]
       nsbox exec --target PID [--all | -m -u -i -n -p -U -C -T] [--] [PROGRAM [ARGS...]]
       nsbox ps PID
       nsbox ns [PID]"""

_EPILOG = """\
commands (recognised only as the first argument: 'nsbox -- ps -ef' runs ps):
  exec        run a program in a running box's namespaces, as nsenter does
  ps PID      list a box's processes with their host and inside PIDs
  ns [PID]    print the namespace ids of a process (default: nsbox's own)

Without PROGRAM, $SHELL (default /bin/sh) runs as a login shell on your terminal.
Without root, any namespace option also makes a user namespace where you are root
(as with -r). Unlike unshare, nsbox always forks, brings loopback up in a new
network namespace, and kills the box when it dies itself.

Exit status: PROGRAM's, or 128+N if signal N killed it; 126 or 127 if it cannot be
executed or found; 1 if nsbox fails; 2 for a command line that cannot work.
'nsbox exec --help' shows the options of exec."""


def _run_parser() -> _Parser:
    parser = _Parser(
        "",
        _USAGE,
        "Run PROGRAM in new Linux namespaces, with util-linux unshare's options. They end at\n"
        "the first argument that is not an option, or at --; long ones may be abbreviated.",
        _EPILOG,
    )
    parser.set_defaults(map_user=None, map_group=None)
    spaces = parser.add_argument_group("namespaces")
    for name, (short, _) in NAMESPACE_FLAGS.items():
        # The value (unshare's --net=FILE, binding the namespace to a file) is refused as not supported yet.
        parser.add(spaces, short, f"--{name}", nargs="?", const=True, metavar="", help=_NEW_NAMESPACE_HELP[name])

    opts = parser.add_argument_group("options")
    parser.add(opts, "-f", "--fork", action="store_true", help="accepted; nsbox always forks")
    parser.add(
        opts, "--mount-proc", nargs="?", const="/proc", metavar="DIR", help="mount a new proc on /proc (implies -m)"
    )
    parser.add(
        opts,
        "--propagation",
        choices=("private", "shared", "slave", "unchanged"),
        metavar="MODE",
        help="how mounts propagate: private|shared|slave|unchanged",
    )
    parser.add(
        opts,
        "--setgroups",
        choices=("allow", "deny"),
        metavar="allow|deny",
        help="allow setgroups(2) in the user namespace?",
    )
    parser.add(
        opts,
        "-r",
        "--map-root-user",
        action=_MapBoth,
        ids=lambda: (0, 0),
        help="map your uid and gid to root (implies -U)",
    )
    parser.add(
        opts,
        "-c",
        "--map-current-user",
        action=_MapBoth,
        ids=lambda: (os.geteuid(), os.getegid()),
        help="map your uid and gid to themselves (implies -U)",
    )
    parser.add(opts, "--map-user", type=_uid, metavar="UID|NAME", help="map your uid to UID (implies -U)")
    parser.add(opts, "--map-group", type=_gid, metavar="GID|NAME", help="map your gid to GID (implies -U)")
    parser.add(
        opts,
        "--kill-child",
        nargs="?",
        const=True,
        metavar="SIGNAL",
        help="kill the box with SIGKILL if nsbox dies (always)",
    )
    parser.add(opts, "-R", "--root", metavar="DIR", help="run PROGRAM with DIR as its root directory")
    parser.add(opts, "-w", "--wd", metavar="DIR", help="change to DIR in the box before running PROGRAM")
    parser.add(
        opts, "--monotonic", type=_seconds, metavar="SECONDS", help="offset of CLOCK_MONOTONIC in the box (needs -T)"
    )
    parser.add(
        opts, "--boottime", type=_seconds, metavar="SECONDS", help="offset of CLOCK_BOOTTIME in the box (needs -T)"
    )
    parser.add(opts, "--hostname", metavar="NAME", help="the box's hostname (implies -u)")
    parser.add(opts, "--init", action="store_true", help="PID 1 is an init that reaps orphans (implies -p)")
    parser.add_help_and_version(opts)

    later = parser.add_argument_group("unshare options not supported yet (nsbox refuses them)")
    parser.add(later, "-S", "--setuid", metavar="UID", help="set the uid in the box")
    parser.add(later, "-G", "--setgid", metavar="GID", help="set the gid in the box")
    parser.add(later, "--keep-caps", action="store_true", help="keep the user namespace's capabilities")
    parser.add(later, "--map-users", metavar="MAP", help="map a range of uids")
    parser.add(later, "--map-groups", metavar="MAP", help="map a range of gids")
    parser.add(later, "--map-auto", action="store_true", help="map the ranges in /etc/subuid and /etc/subgid")
    return parser


class _MapBoth(argparse.Action):
    """``-r`` and ``-c``: set both ``--map-user`` and ``--map-group``; the last of these options wins, as in unshare."""

    def __init__(
        self, option_strings: Sequence[str], dest: str, ids: Callable[[], tuple[int, int]], **kwargs: Any
    ) -> None:
        super().__init__(option_strings, dest, nargs=0, **kwargs)
        self.ids = ids

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: str | None = None
    ) -> None:
        namespace.map_user, namespace.map_group = self.ids()


def _overflow_id(kind: str) -> int:
    """The id the kernel shows for an unmapped one (``/proc/sys/kernel/overflowuid``, usually 65534)."""
    try:
        with open(f"/proc/sys/kernel/overflow{kind}") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 65534


def _user_options(args: argparse.Namespace, options: dict[str, Any]) -> None:
    """The user namespace and id maps, with unshare's meaning of -U, -r, -c, --map-user and --map-group."""
    map_user: int | None = args.map_user
    map_group: int | None = args.map_group
    setgroups: str | None = args.setgroups
    if setgroups == "allow" and map_group is not None:
        raise UsageError("--setgroups=allow cannot be combined with --map-group, -r or -c (as with unshare)")
    if not (args.user or map_user is not None or map_group is not None):
        if setgroups is not None:
            if os.geteuid() == 0:
                raise UsageError("--setgroups applies to a new user namespace: add -U, -r or --map-user")
            options["setgroups"] = setgroups  # without root nsbox makes a user namespace anyway
        return
    options["user"] = True
    euid, egid = os.geteuid(), os.getegid()
    if (map_user, map_group) != (0, 0):  # -r: the default map, your uid and gid to root
        # unshare leaves an id it is not asked to map unmapped, so that it shows as the overflow id
        # (nobody); nsbox maps it to that id, which looks and works the same.
        uid = _overflow_id("uid") if map_user is None else map_user
        gid = _overflow_id("gid") if map_group is None else map_group
        options["uid_map"] = [(uid, euid, 1)]
        options["gid_map"] = [(gid, egid, 1)]
    if setgroups is None and map_group is None and euid == 0:
        setgroups = "allow"  # unshare leaves setgroups alone unless it maps the group
    if setgroups is not None:
        options["setgroups"] = setgroups


def _kill_child(value: str | bool) -> None:
    """``--kill-child[=SIGNAL]``: a no-op for SIGKILL (the box always gets it when nsbox dies)."""
    if value is True:
        return
    number = _signal_number(str(value))
    if number is None:
        raise UsageError(f"--kill-child: unknown signal: {value}")
    if number != signal.SIGKILL:
        raise UsageError(
            f"--kill-child={value}: signals other than SIGKILL are not supported yet (the box always gets SIGKILL)"
        )


def _box_options(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`nsbox.Popen` keyword arguments for the options of ``nsbox [OPTIONS]``."""
    for name in ("setuid", "setgid", "keep_caps", "map_users", "map_groups", "map_auto"):
        if getattr(args, name) not in (None, False):
            raise UsageError(f"--{name.replace('_', '-')} is not supported yet")
    options: dict[str, Any] = {}
    for name in NAMESPACE_FLAGS:
        value = getattr(args, name)
        if isinstance(value, str):
            raise UsageError(f"--{name}={value}: binding a namespace to a file is not supported yet")
        if value:
            options[name] = True
    if args.mount_proc is not None:
        options["mount_proc"] = True if os.path.normpath(args.mount_proc) == "/proc" else args.mount_proc
    if args.root is not None:
        options["root"] = args.root
    # As with unshare, the propagation is that of a new mount namespace, and without one it does nothing.
    if args.propagation is not None and (args.mount or args.mount_proc):
        options["propagation"] = args.propagation
    _user_options(args, options)
    if args.kill_child is not None:
        _kill_child(args.kill_child)
    if (args.monotonic is not None or args.boottime is not None) and not args.time:
        raise UsageError("--monotonic and --boottime set clocks in a new time namespace: add -T")
    if args.monotonic is not None:
        options["monotonic_offset"] = args.monotonic
    if args.boottime is not None:
        options["boottime_offset"] = args.boottime
    if args.hostname is not None:
        options["hostname"] = args.hostname
    if args.init:
        options["init"] = True
    if args.wd is not None:
        options["cwd"] = args.wd
    return options


def _run_command(argv: Sequence[str]) -> int:
    parser = _run_parser()
    options, program = _split(parser, argv)
    args = parser.parse_args(options)
    if _help_or_version(parser, args):
        return 0
    return _run_box(program, _box_options(args))


# ---------------------------------------------------------------------------------------------------------------
# Running a box and waiting for it


class _ForwardSignals:
    """While nsbox waits for the box: ignore what the terminal also sends the box, pass the rest on.

    SIGINT and SIGQUIT from the terminal reach the whole foreground process group, the box included
    (unshare blocks them too). SIGTERM, SIGHUP, SIGUSR1 and SIGUSR2 are more likely meant for nsbox
    alone (``kill``, ``timeout``, a service manager) and are passed on to the box, whose exit then ends
    nsbox; one that nsbox inherited as ignored (``nohup``) stays ignored. The box starts with default
    dispositions whatever nsbox's are.
    """

    def __init__(self) -> None:
        self._box: nsbox.Popen | None = None
        self._pending: list[int] = []
        self._saved: dict[int, Any] = {}

    def __enter__(self) -> _ForwardSignals:
        for sig in _IGNORED_SIGNALS:
            self._saved[sig] = signal.signal(sig, signal.SIG_IGN)
        for sig in _FORWARDED_SIGNALS:
            if signal.getsignal(sig) != signal.SIG_IGN:
                self._saved[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)

    def to(self, box: nsbox.Popen) -> None:
        """Forward from now on to ``box``, and what came while it was being started."""
        self._box = box
        while self._pending:
            self._send(self._pending.pop(0))

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._box is None:
            self._pending.append(signum)
        else:
            self._send(signum)

    def _send(self, signum: int) -> None:
        if self._box is not None:
            with suppress(ProcessLookupError):
                self._box.send_signal(signum)


def _program(program: Sequence[str]) -> tuple[list[str], str]:
    """The argv and the file to execute: PROGRAM, or else ``$SHELL`` as a login shell (``-sh``), as unshare does."""
    if program:
        return list(program), program[0]
    shell = os.environ.get("SHELL") or "/bin/sh"
    return [f"-{os.path.basename(shell)}"], shell


#: The Python option names that the core's messages use, and the command line's words for them.
_CLI_WORDS = [
    (re.compile(r"leave user=None or pass user=True"), "add -U or -r"),
    (re.compile(r"monotonic_offset and boottime_offset"), "--monotonic and --boottime"),
    (re.compile(r"setgroups='deny'"), "--setgroups deny"),
    (re.compile(r"pass mount=True or mount_proc=True"), "add -m"),
    (re.compile(r"^hostname "), "--hostname: the name "),
    (re.compile(r"\b(?:add|pass) (pid|time|user|mount|uts|ipc|net|cgroup)=True"), None),
]


def _cli_words(message: str) -> str:
    """A message of the core, with ``pid=True`` and the like said as the command line says them."""
    for pattern, words in _CLI_WORDS:
        if words is None:
            message = pattern.sub(lambda m: f"add {NAMESPACE_FLAGS[m.group(1)][0]}", message)
        else:
            message = pattern.sub(words, message)
    return message


def _spawn_failure(exc: OSError, executable: str, cwd: str | None) -> Failure:
    """The words and exit statuses unshare has for a program that could not start."""
    if exc.filename is not None:
        filename = os.fsdecode(exc.filename)
        if cwd is not None and filename == cwd and filename != executable:
            return Failure(f"cannot chdir to '{cwd}': {exc.strerror}")
        status = EXIT_NOT_FOUND if exc.errno == errno.ENOENT else EXIT_CANNOT_EXECUTE
        return Failure(f"failed to execute {filename}: {exc.strerror}", status)
    return Failure(_cli_words(exc.strerror or str(exc)))


def _start(
    program: Sequence[str], options: dict[str, Any], namespace_files: dict[str, str] | None = None
) -> nsbox.Popen:
    """Start the box; ``namespace_files`` (kind → path) are the namespaces to join, for ``exec``."""
    argv, executable = _program(program)
    links = None
    try:
        if namespace_files is not None:
            # A directory of namespace files is a target the core knows (persisted boxes); symlinks to
            # /proc/PID/ns/KIND or to the user's files make one holding exactly the kinds asked for. The
            # core opens them before Popen returns, so the directory can go at once.
            links = tempfile.mkdtemp(prefix="nsbox-exec-")
            for kind, path in namespace_files.items():
                os.symlink(path, os.path.join(links, kind))
            options = {**options, "target": links}
        return nsbox.Popen(argv, executable=executable, **options)
    except OSError as exc:
        raise _spawn_failure(exc, executable, options.get("cwd")) from None
    except ValueError as exc:
        raise UsageError(_cli_words(str(exc))) from None
    finally:
        if links is not None:
            shutil.rmtree(links, ignore_errors=True)


def _exit_status(returncode: int) -> int:
    """The program's exit status, or 128+N when signal N killed it, as a shell reports it."""
    return 128 - returncode if returncode < 0 else returncode


def _run_box(program: Sequence[str], options: dict[str, Any], namespace_files: dict[str, str] | None = None) -> int:
    with _ForwardSignals() as forward:
        box = _start(program, options, namespace_files)
        forward.to(box)
        return _exit_status(box.wait())


# ---------------------------------------------------------------------------------------------------------------
# nsbox exec --target PID [--all | -m -u -i -n -p -U -C -T] [--] [PROGRAM [ARGS...]]

_EXEC_USAGE = "nsbox exec --target PID [--all | -m -u -i -n -p -U -C -T] [--] [PROGRAM [ARGS...]]"

_EXEC_DESCRIPTION = """\
Run PROGRAM (default: $SHELL) in the namespaces of a running process, with
nsenter's options. With --all or no namespace option, enter every namespace of
the target that differs from nsbox's and, for a PID, take its root and working
directory too (nsenter -a -r -w, docker exec). With namespace options, enter
exactly those, as nsenter does."""


def _exec_parser() -> _Parser:
    parser = _Parser("exec", _EXEC_USAGE, _EXEC_DESCRIPTION)
    opts = parser.add_argument_group("options")
    parser.add(
        opts, "-t", "--target", type=_target, metavar="PID|DIR", help="the process to enter (or a dir of ns files)"
    )
    parser.add(opts, "-a", "--all", action="store_true", help="enter all its namespaces (the default)")
    for name, (short, _) in NAMESPACE_FLAGS.items():
        what = _NEW_NAMESPACE_HELP[name].split(";")[0].split(",")[0].split(" (")[0].replace("new ", "the ")
        parser.add(opts, short, f"--{name}", nargs="?", const=True, metavar="FILE", help=f"enter {what} (of FILE)")
    parser.add(opts, "-W", "--wdns", metavar="DIR", help="working directory, inside the namespaces")
    parser.add(opts, "-r", "--root", nargs="?", const=True, metavar="DIR", help="take the target's root (--all does)")
    parser.add(
        opts, "-w", "--wd", nargs="?", const=True, metavar="DIR", help="take the target's working dir (--all does)"
    )
    parser.add_help_and_version(opts)

    later = parser.add_argument_group("nsenter options not supported yet (nsbox refuses them)")
    parser.add(later, "-S", "--setuid", metavar="UID", help="set the uid in the entered namespaces")
    parser.add(later, "-G", "--setgid", metavar="GID", help="set the gid in the entered namespaces")
    parser.add(later, "--preserve-credentials", action="store_true", help="do not touch uids or gids")
    parser.add(later, "-F", "--no-fork", action="store_true", help="do not fork before executing PROGRAM")
    parser.add(later, "-Z", "--follow-context", action="store_true", help="take the target's SELinux context")
    return parser


def _open_failure(exc: OSError, path: str, target: int | str | None) -> Failure:
    if isinstance(target, int) and not os.path.exists(f"/proc/{target}"):
        return Failure(f"cannot enter process {target}: it does not exist or has exited")
    return Failure(f"cannot open {path}: {exc.strerror}")


def _namespace_files(kinds: dict[str, str | bool], target: int | str | None) -> dict[str, str]:
    """The file of each namespace kind to enter: the one given, or the target's."""
    files = {}
    for name, value in kinds.items():
        kind = NAMESPACE_FLAGS[name][1]
        if isinstance(value, str):
            path = value
        elif isinstance(target, int):
            path = f"/proc/{target}/ns/{kind}"
        elif isinstance(target, str):
            path = os.path.join(target, kind)
        else:
            raise UsageError(f"--{name}: whose namespace? add --target PID, or give a file: --{name}=FILE")
        path = os.path.abspath(path)
        try:
            os.stat(path)
        except OSError as exc:
            raise _open_failure(exc, path, target) from None
        files[kind] = path
    return files


def _exec_command(argv: Sequence[str]) -> int:
    parser = _exec_parser()
    options, program = _split(parser, argv)
    args = parser.parse_args(options)
    if _help_or_version(parser, args):
        return 0
    for name in ("setuid", "setgid", "preserve_credentials", "no_fork", "follow_context"):
        if getattr(args, name) not in (None, False):
            raise UsageError(f"exec --{name.replace('_', '-')} is not supported yet")
    kinds: dict[str, str | bool] = {name: getattr(args, name) for name in NAMESPACE_FLAGS if getattr(args, name)}
    box_options: dict[str, Any] = {} if args.wdns is None else {"cwd": args.wdns}
    if not kinds:
        if args.target is None:
            raise UsageError(f"exec: which process? add --target PID; see '{PROG} exec --help'")
        for name in ("root", "wd"):
            if isinstance(getattr(args, name), str):
                raise UsageError(f"exec --{name}=DIR is not supported yet (--{name} alone is implied)")
        return _run_box(program, {**box_options, "target": args.target})
    if args.all:
        raise UsageError("exec: --all enters every namespace; leave it out to enter only some")
    for name in ("root", "wd"):
        if getattr(args, name) is not None:
            raise UsageError(f"exec --{name} with single namespaces is not supported yet (--all takes the target's)")
    return _run_box(program, box_options, _namespace_files(kinds, args.target))


# ---------------------------------------------------------------------------------------------------------------
# nsbox ps PID, nsbox ns [PID]


def _inspect_parser(command: str, usage: str, description: str, pid_help: str) -> _Parser:
    parser = _Parser(command, usage, description)
    group = parser.add_argument_group("arguments")
    # Optional for argparse either way, so that --help works without one; ps checks it is there.
    group.add_argument("pid", type=_pid, nargs="?", metavar="PID", help=pid_help)
    opts = parser.add_argument_group("options")
    parser.add_help_and_version(opts)
    return parser


def _inspect_failure(exc: OSError, pid: int | None) -> Failure:
    message = exc.strerror or str(exc)
    if pid is not None and exc.errno in (errno.ENOENT, errno.ESRCH) and not os.path.exists(f"/proc/{pid}"):
        message = f"{message.rpartition(':')[0]}: No such process"
    return Failure(message)


def _ps_command(argv: Sequence[str]) -> int:
    parser = _inspect_parser(
        "ps",
        "nsbox ps PID",
        "List the processes of a box, with their PIDs on the host and inside, side by side.",
        "host PID of the box's first process",
    )
    args = parser.parse_args(argv)
    if _help_or_version(parser, args):
        return 0
    if args.pid is None:
        parser.error("which box? give the host PID of its first process")
    try:
        table = nsbox.processes(args.pid)
    except OSError as exc:
        raise _inspect_failure(exc, args.pid) from None
    return _write(f"{table!r}\n")


def _ns_command(argv: Sequence[str]) -> int:
    parser = _inspect_parser(
        "ns",
        "nsbox ns [PID]",
        "Print the namespaces of a process, one per line: kind and inode (as in /proc/PID/ns).",
        "host PID of the process (default: nsbox itself)",
    )
    args = parser.parse_args(argv)
    if _help_or_version(parser, args):
        return 0
    try:
        ids = nsbox.namespaces(args.pid)
    except OSError as exc:
        raise _inspect_failure(exc, args.pid) from None
    width = max(map(len, ids), default=0)
    return _write("".join(f"{kind:<{width}}  {inode}\n" for kind, inode in ids.items()))


# ---------------------------------------------------------------------------------------------------------------
# Entry point


def _write(text: str) -> int:
    """Write to stdout; a reader that went away (``nsbox ps 42 | head -1``) ends nsbox quietly, as SIGPIPE would."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        with suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    return 0


def _complain(message: str, status: int) -> int:
    """Print ``nsbox: <message>`` as one line to stderr; return ``status``."""
    line = " ".join(f"{PROG}: {message}".split("\n"))
    with suppress(OSError):
        print(line, file=sys.stderr, flush=True)
    return status


_COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {"exec": _exec_command, "ps": _ps_command, "ns": _ns_command}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``nsbox`` command line (``argv`` defaults to ``sys.argv[1:]``) and return its exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args and args[0] in _COMMANDS:
            return _COMMANDS[args[0]](args[1:])
        return _run_command(args)
    except UsageError as exc:
        return _complain(str(exc), EXIT_USAGE)
    except Failure as exc:
        return _complain(str(exc), exc.status)
    except OSError as exc:
        what = exc.strerror or str(exc)
        if exc.filename is not None:
            what = f"{os.fsdecode(exc.filename)}: {what}"
        return _complain(_cli_words(what), EXIT_FAILURE)
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    except Exception as exc:  # never a traceback: a bug in nsbox still gets one line
        return _complain(f"internal error: {type(exc).__name__}: {exc}", EXIT_FAILURE)
