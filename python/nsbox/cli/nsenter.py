"""``nsbox exec``: run a program in the namespaces of a running box, with util-linux ``nsenter``'s options."""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from typing import Any

from nsbox.cli import getopt
from nsbox.cli.getopt import NAMESPACE_FLAGS, Parser
from nsbox.cli.run import run_box
from nsbox.cli.words import PROG, Failure, UsageError

_USAGE = "nsbox exec --target PID [--all | -m -u -i -n -p -U -C -T] [--] [PROGRAM [ARGS...]]"

_DESCRIPTION = """\
Run PROGRAM (default: $SHELL) in the namespaces of a running process, with
nsenter's options. With --all or no namespace option, enter every namespace of
the target that differs from nsbox's and, for a PID, take its root and working
directory too (nsenter -a -r -w, docker exec). With namespace options, enter
exactly those, as nsenter does."""


def _parser() -> Parser:
    parser = Parser("exec", _USAGE, _DESCRIPTION)
    opts = parser.add_argument_group("options")
    parser.add(
        opts,
        "-t",
        "--target",
        type=getopt.process_or_dir,
        metavar="PID|DIR",
        help="the process to enter (or a dir of ns files)",
    )
    parser.add(opts, "-a", "--all", action="store_true", help="enter all its namespaces (the default)")
    for name, flag in NAMESPACE_FLAGS.items():
        what = f"enter the {flag.noun} (of FILE)"
        parser.add(opts, flag.short, f"--{name}", nargs="?", const=True, metavar="FILE", help=what)
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
        # As the core says it for the whole target (src/enter.rs).
        return Failure(f"cannot enter process {target}: it does not exist or has exited: {os.strerror(errno.ESRCH)}")
    return Failure(f"cannot open {path}: {exc.strerror}")


def _namespace_files(kinds: dict[str, str | bool], target: int | str | None) -> dict[str, str]:
    """The file of each namespace kind to enter (the one given, or the target's), for ``Popen``'s ``target``.

    Each is checked to be there first, so that a missing one is said as nsenter says it.
    """
    files = {}
    for name, value in kinds.items():
        kind = NAMESPACE_FLAGS[name].kind
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


def command(argv: Sequence[str]) -> int:
    """``nsbox exec [OPTIONS] [--] [PROGRAM [ARGS...]]``; the exit status."""
    parser = _parser()
    options, program = getopt.split(parser, argv)
    args = parser.parse(options)
    if getopt.help_or_version(parser, args):
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
        return run_box(program, {**box_options, "target": args.target})
    if args.all:
        raise UsageError("exec: --all enters every namespace; leave it out to enter only some")
    for name in ("root", "wd"):
        if getattr(args, name) is not None:
            raise UsageError(f"exec --{name} with single namespaces is not supported yet (--all takes the target's)")
    return run_box(program, {**box_options, "target": _namespace_files(kinds, args.target)})
