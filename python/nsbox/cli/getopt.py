"""util-linux's option syntax for every ``nsbox`` command: argparse for the options, getopt's rules for where they end.

Options end at ``--`` or at the first argument that is not an option, as with getopt's ``+`` (what follows
is the program's); long options may be abbreviated; short flags cluster (``-pf``) and take no value, and
optional values need ``=``, as with ``unshare``. Errors are :class:`~nsbox.cli.words.UsageError`.
"""

from __future__ import annotations

import argparse
import grp
import math
import pwd
import re
import signal
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, NoReturn

import nsbox
from nsbox.cli.words import PROG, UsageError, write


class NamespaceFlag(NamedTuple):
    """A namespace option of unshare and nsenter (``-n, --net``)."""

    short: str
    #: The kind in ``/proc/PID/ns``.
    kind: str
    #: What the namespace is, for the help (``network namespace``).
    noun: str
    #: More about a new one, for unshare's help (``, loopback up``).
    detail: str = ""


#: The namespace options by long name, in unshare's order.
NAMESPACE_FLAGS = {
    "mount": NamespaceFlag("-m", "mnt", "mount namespace"),
    "uts": NamespaceFlag("-u", "uts", "UTS namespace", " (hostname, domain name)"),
    "ipc": NamespaceFlag("-i", "ipc", "IPC namespace", " (System V IPC, mqueues)"),
    "net": NamespaceFlag("-n", "net", "network namespace", ", loopback up"),
    "pid": NamespaceFlag("-p", "pid", "PID namespace", "; PROGRAM is its PID 1"),
    "user": NamespaceFlag("-U", "user", "user namespace", "; ids unmapped (nobody)"),
    "cgroup": NamespaceFlag("-C", "cgroup", "cgroup namespace"),
    "time": NamespaceFlag("-T", "time", "time namespace"),
}


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Options shown as unshare shows them: ``-w, --wd DIR``, ``--mount-proc[=DIR]``, ``-n, --net``."""

    def __init__(self, prog: str, **kwargs: Any) -> None:
        super().__init__(prog, max_help_position=30, **kwargs)

    def _format_action_invocation(self, action: argparse.Action) -> str:
        if not action.option_strings:
            return super()._format_action_invocation(action)
        names = ", ".join(action.option_strings)
        if action.nargs == 0:
            return names
        metavar = (
            action.metavar if isinstance(action.metavar, str) else " ".join(action.metavar or [action.dest.upper()])
        )
        if action.nargs == "?":
            return f"{names}[={metavar}]" if metavar else names
        return f"{names} {metavar}"


class Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are :class:`UsageError` and which knows its options for :func:`split`."""

    def __init__(self, command: str, usage: str, description: str, epilog: str | None = None) -> None:
        super().__init__(
            prog=PROG,
            usage=usage,
            description=description,
            epilog=epilog,
            add_help=False,
            allow_abbrev=False,
            exit_on_error=False,
            formatter_class=HelpFormatter,
        )
        self.options: list[argparse.Action] = []
        #: Where to look, at the end of a usage error.
        self.see_help = f"see '{PROG} {command} --help'" if command else f"see '{PROG} --help'"

    def add(self, group: argparse._ArgumentGroup, *flags: str, **kwargs: Any) -> None:
        """Add an option to ``group``; every option has a long name (the one :func:`split` hands on)."""
        self.options.append(group.add_argument(*flags, **kwargs))

    def add_help_and_version(self, group: argparse._ArgumentGroup) -> None:
        """``-h, --help`` and ``-V, --version``, handled by :func:`help_or_version`."""
        self.add(group, "-h", "--help", action="store_true", help="show this help and exit")
        self.add(group, "-V", "--version", action="store_true", help="show nsbox's version and exit")

    def parse(self, args: Sequence[str]) -> argparse.Namespace:
        """``parse_args``, with an option at fault named by its long name (``--wd: expected one argument``)."""
        try:
            return self.parse_args(args)
        except argparse.ArgumentError as exc:
            # argparse names an option by its flags joined ("-w/--wd"), an argument by its metavar ("PID").
            names = {"/".join(action.option_strings): long_name(action) for action in self.options}
            name = names.get(exc.argument_name or "", exc.argument_name)
            self.error(f"{name}: {exc.message}" if name else exc.message)

    def error(self, message: str) -> NoReturn:
        """Raise a one-line :class:`UsageError` (argparse would print the usage and exit)."""
        raise UsageError(f"{message}; {self.see_help}")


def long_name(action: argparse.Action) -> str:
    """The option's long name (``--wd`` for ``-w, --wd``)."""
    return next(name for name in action.option_strings if name.startswith("--"))


def split(parser: Parser, argv: Sequence[str]) -> tuple[list[str], list[str]]:
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
            name = long_name(action)
            if action.nargs == 0 and equals:
                raise UsageError(f"option '{name}' takes no value")
            if isinstance(action.nargs, int) and action.nargs >= 1:
                # bwrap's spelling: the values follow as arguments of their own (--bind SRC DST).
                values = list(argv[i : i + action.nargs])
                if equals or len(values) < action.nargs:
                    raise UsageError(f"option '{name}' takes {action.nargs} arguments; {parser.see_help}")
                options += [name, *values]
                i += action.nargs
                continue
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
                options.append(long_name(found))
                continue
            value = arg[j + 1 :]
            if not value:
                if i == len(argv):
                    raise UsageError(f"option '-{letter}' requires a value; {parser.see_help}")
                value = argv[i]
                i += 1
            options.append(f"{long_name(found)}={value}")
            break
    return options, []


def help_or_version(parser: Parser, args: argparse.Namespace) -> bool:
    """Print the help or the version if asked; True if so (the command is then done)."""
    if args.help:
        write(parser.format_help())
        return True
    if args.version:
        write(f"{PROG} {nsbox.__version__}\n")
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


user_id = _id("user", lambda name: pwd.getpwnam(name).pw_uid)
group_id = _id("group", lambda name: grp.getgrnam(name).gr_gid)


def seconds(text: str) -> float:
    """A finite number of seconds (``--monotonic``, ``--boottime``)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds")
    return value


def process_id(text: str) -> int:
    """A PID: digits, 1 to 2**31 - 1."""
    if not re.fullmatch(r"[0-9]+", text) or not 0 < int(text) < 2**31:
        raise argparse.ArgumentTypeError(f"{text!r} is not a process id")
    return int(text)


def process_or_dir(text: str) -> int | str:
    """A PID (digits) or a directory of namespace files (anything else)."""
    return process_id(text) if re.fullmatch(r"[0-9]+", text) else text


def signal_number(name: str) -> int | None:
    """A signal by number or by name, with or without ``SIG``, in any case (as unshare reads them)."""
    if re.fullmatch(r"[0-9]+", name):
        number = int(name)
        return number if number in set(signal.valid_signals()) else None
    upper = name.upper()
    try:
        return int(signal.Signals[upper if upper.startswith("SIG") else f"SIG{upper}"])
    except KeyError:
        return None
