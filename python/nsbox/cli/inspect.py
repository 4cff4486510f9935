"""``nsbox ps PID`` and ``nsbox ns [PID]``: a box's processes, and a process's namespaces."""

from __future__ import annotations

from collections.abc import Sequence

import nsbox
from nsbox.cli import getopt
from nsbox.cli.getopt import Parser
from nsbox.cli.words import Failure, os_failure, write


def _inspect_parser(command: str, usage: str, description: str, pid_help: str) -> Parser:
    parser = Parser(command, usage, description)
    group = parser.add_argument_group("arguments")
    # Optional for argparse either way, so that --help works without one; ps checks it is there.
    group.add_argument("pid", type=getopt.process_id, nargs="?", metavar="PID", help=pid_help)
    opts = parser.add_argument_group("options")
    parser.add_help_and_version(opts)
    return parser


def ps(argv: Sequence[str]) -> int:
    """``nsbox ps PID``; the exit status."""
    parser = _inspect_parser(
        "ps",
        "nsbox ps PID",
        "List the processes of a box, with their PIDs on the host and inside, side by side.",
        "host PID of the box's first process",
    )
    args = parser.parse(argv)
    if getopt.help_or_version(parser, args):
        return 0
    if args.pid is None:
        parser.error("which box? give the host PID of its first process")
    try:
        table = nsbox.processes(args.pid)
    except OSError as exc:
        raise Failure(os_failure(exc)) from None
    return write(f"{table!r}\n")


def ns(argv: Sequence[str]) -> int:
    """``nsbox ns [PID]``; the exit status."""
    parser = _inspect_parser(
        "ns",
        "nsbox ns [PID]",
        "Print the namespaces of a process, one per line: kind and inode (as in /proc/PID/ns).",
        "host PID of the process (default: nsbox itself)",
    )
    args = parser.parse(argv)
    if getopt.help_or_version(parser, args):
        return 0
    try:
        ids = nsbox.namespaces(args.pid)
    except OSError as exc:
        raise Failure(os_failure(exc)) from None
    width = max(map(len, ids), default=0)
    return write("".join(f"{kind:<{width}}  {inode}\n" for kind, inode in ids.items()))
