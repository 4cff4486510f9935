"""``nsbox [OPTIONS] [--] [PROGRAM [ARGS...]]``: PROGRAM in new namespaces, with util-linux ``unshare``'s options."""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
from collections.abc import Callable, Sequence
from typing import Any

import nsbox
from nsbox.cli import getopt, terminal
from nsbox.cli.getopt import NAMESPACE_FLAGS, Parser
from nsbox.cli.run import run_box
from nsbox.cli.words import UsageError

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

With -t, PROGRAM gets a terminal of its own, as with 'docker run -it': it leads a
session on a new pty; your terminal is in raw mode meanwhile (every key, Ctrl-C
too, goes to the box), the window size follows yours, and your terminal's settings
are put back when it ends. Input that is not a terminal is relayed too, its end
typed as Ctrl-D; a SIGINT or SIGQUIT sent to nsbox is typed into the pty (^C, ^\\).

Exit status: PROGRAM's, or 128+N if signal N killed it; 126 or 127 if it cannot be
executed or found; 1 if nsbox fails; 2 for a command line that cannot work.
'nsbox exec --help' shows the options of exec."""


def _parser() -> Parser:
    parser = Parser(
        "",
        _USAGE,
        "Run PROGRAM in new Linux namespaces, with util-linux unshare's options. They end at\n"
        "the first argument that is not an option, or at --; long ones may be abbreviated.",
        _EPILOG,
    )
    parser.set_defaults(map_user=None, map_group=None, mounts=None)
    spaces = parser.add_argument_group("namespaces")
    for name, flag in NAMESPACE_FLAGS.items():
        # The value (unshare's --net=FILE, binding the namespace to a file) is refused as not supported yet.
        what = f"new {flag.noun}{flag.detail}"
        parser.add(spaces, flag.short, f"--{name}", nargs="?", const=True, metavar="", help=what)

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
    parser.add(opts, "--map-user", type=getopt.user_id, metavar="UID|NAME", help="map your uid to UID (implies -U)")
    parser.add(opts, "--map-group", type=getopt.group_id, metavar="GID|NAME", help="map your gid to GID (implies -U)")
    parser.add(
        opts,
        "--kill-child",
        nargs="?",
        const=True,
        metavar="SIGNAL",
        help="kill the box with SIGKILL if nsbox dies (always)",
    )
    parser.add(opts, "-R", "--root", metavar="DIR", help="DIR is the root directory (pivot_root)")
    parser.add(opts, "-w", "--wd", metavar="DIR", help="change to DIR in the box before running PROGRAM")
    parser.add(
        opts,
        "--monotonic",
        type=getopt.seconds,
        metavar="SECONDS",
        help="offset of CLOCK_MONOTONIC in the box (needs -T)",
    )
    parser.add(
        opts,
        "--boottime",
        type=getopt.seconds,
        metavar="SECONDS",
        help="offset of CLOCK_BOOTTIME in the box (needs -T)",
    )
    parser.add(opts, "--hostname", metavar="NAME", help="the box's hostname (implies -u)")
    parser.add(opts, "--init", action="store_true", help="PID 1 is an init that reaps orphans (implies -p)")
    parser.add(
        opts,
        "--seccomp",
        choices=("default", "none"),
        metavar="default|none",
        help="seccomp filter: nsbox's default profile, or none",
    )
    parser.add(opts, "-t", "--tty", action="store_true", help="a new pty for PROGRAM, relayed to your terminal")
    parser.add_help_and_version(opts)

    limits = parser.add_argument_group("limits (a cgroup of the box's own: root, or delegated cgroup v2)")
    parser.add(limits, "--memory", metavar="SIZE", help="at most SIZE of memory (bytes, 256M, 1.5G ...)")
    parser.add(limits, "--pids", type=int, metavar="N", help="at most N processes (and threads) at once")
    parser.add(limits, "--cpus", type=float, metavar="X", help="at most X CPUs' time (0.5: half of one)")

    fs = parser.add_argument_group(
        "the box's filesystem (bubblewrap's spelling; made in order; DST / makes the box's root)"
    )
    for flags, kind, metavar, what in _MOUNT_FLAGS:
        parser.add(fs, *flags, action=_Mount, kind=kind, nargs=len(metavar), metavar=metavar, help=what)

    confine = parser.add_argument_group("confinement (for code you do not trust)")
    parser.add(confine, "--sandbox", action="store_true", help="every namespace, read-only root, no privileges")
    parser.add(confine, "--no-new-privs", action="store_true", help="setuid and file capabilities gain nothing")
    parser.add(confine, "--caps", metavar="LIST", help="keep only these capabilities ('' for none)")
    parser.add(
        confine,
        "--rlimit",
        action="append",
        type=_rlimit,
        metavar="NAME=N[:M]",
        help="a resource limit, soft[:hard] (nofile=256)",
    )

    later = parser.add_argument_group("unshare options not supported yet (nsbox refuses them)")
    parser.add(later, "-S", "--setuid", metavar="UID", help="set the uid in the box")
    parser.add(later, "-G", "--setgid", metavar="GID", help="set the gid in the box")
    parser.add(later, "--keep-caps", action="store_true", help="keep the user namespace's capabilities")
    parser.add(later, "--map-users", metavar="MAP", help="map a range of uids")
    parser.add(later, "--map-groups", metavar="MAP", help="map a range of gids")
    parser.add(later, "--map-auto", action="store_true", help="map the ranges in /etc/subuid and /etc/subgid")
    return parser


#: The mount options: flags, kind, arguments, help.
_MOUNT_FLAGS: list[tuple[tuple[str, ...], str, tuple[str, ...], str]] = [
    (("--bind",), "bind", ("SRC", "DST"), "bind-mount SRC at DST"),
    (("--ro-bind",), "ro-bind", ("SRC", "DST"), "bind-mount SRC at DST, read-only"),
    (("--tmpfs",), "tmpfs", ("DST",), "a new tmpfs at DST"),
    (("--dev",), "dev", ("DST",), "a minimal /dev at DST (null, tty, a new pts ...)"),
    (("--tmp-overlay",), "tmp-overlay", ("LOW", "DST"), "overlay LOW[:LOW...] at DST; changes vanish"),
    (("--overlay",), "overlay", ("LOW", "UP", "DST"), "overlay LOW[:LOW...] at DST; changes kept in UP"),
]


class _Mount(argparse.Action):
    """A mount option: appends ``(kind, values)`` to ``mounts``, so that they keep their command-line order."""

    def __init__(self, option_strings: Sequence[str], dest: str, kind: str, **kwargs: Any) -> None:
        super().__init__(option_strings, "mounts", **kwargs)
        self.kind = kind

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: Any = None
    ) -> None:
        namespace.mounts = [*(getattr(namespace, "mounts", None) or []), (self.kind, list(values))]


def _mounts(given: list[tuple[str, list[str]]], root: str | None) -> dict[str, Any]:
    """``root`` and ``mounts`` for the mount options; the first, if its DST is ``/``, is the root."""
    made: list[Any] = []
    for kind, values in given:
        *args, target = values
        if kind in ("bind", "ro-bind"):
            made.append(nsbox.Bind(args[0], target, readonly=kind == "ro-bind"))
        elif kind == "tmpfs":
            made.append(nsbox.Tmpfs(target))
        elif kind == "dev":
            made.append(nsbox.Dev(target))
        else:
            upper = args[1] if kind == "overlay" else None
            made.append(nsbox.Overlay(target, lower=args[0].split(":"), upper=upper))
    options: dict[str, Any] = {}
    if made and made[0].target == "/":
        if root is not None:
            raise UsageError("--root and a mount on / both give the box's root: keep one")
        first = made.pop(0)
        if isinstance(first, nsbox.Dev):
            raise UsageError("--dev /: a /dev is not a root; give the root with --bind, --tmpfs or an overlay on /")
        options["root"] = dataclasses.replace(first, target=None)
    if made:
        options["mounts"] = made
    return options


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
    number = getopt.signal_number(str(value))
    if number is None:
        raise UsageError(f"--kill-child: unknown signal: {value}")
    if number != signal.SIGKILL:
        raise UsageError(
            f"--kill-child={value}: signals other than SIGKILL are not supported yet (the box always gets SIGKILL)"
        )


def _rlimit(text: str) -> tuple[str, int | tuple[int, int]]:
    """``NAME=SOFT[:HARD]``, as ``rlimits=`` takes it; ``unlimited`` is ``RLIM_INFINITY``."""
    name, sep, value = text.partition("=")
    try:
        if not sep:
            raise ValueError
        soft, _, hard = value.partition(":")
        numbers = [-1 if part == "unlimited" else int(part) for part in (soft, hard or soft)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not NAME=SOFT[:HARD]: {text!r}") from None
    return name, (numbers[0], numbers[1])


def _confinement(args: argparse.Namespace, options: dict[str, Any]) -> None:
    if args.sandbox:
        options["sandbox"] = True
    if args.no_new_privs:
        options["no_new_privs"] = True
    if args.caps is not None:
        options["capabilities"] = [name for name in args.caps.replace(",", " ").split() if name != "none"]
    if args.rlimit:
        options["rlimits"] = dict(args.rlimit)


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
    try:
        options.update(_mounts(args.mounts or [], args.root))
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    # As with unshare, the propagation is that of a new mount namespace, and without one it does nothing.
    if args.propagation is not None and (args.mount or args.mount_proc or args.root or args.mounts):
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
    if args.seccomp == "default":
        options["seccomp"] = "default"
    if args.wd is not None:
        options["cwd"] = args.wd
    _confinement(args, options)
    if args.tty:
        # The caller's window size from the start: a one-shot program (stty size, ls) runs before any resize.
        options["tty"] = terminal.window_size() or True
    for name, option in (("memory", "memory_limit"), ("pids", "pids_limit"), ("cpus", "cpu_limit")):
        if getattr(args, name) is not None:
            options[option] = getattr(args, name)
    return options


def command(argv: Sequence[str]) -> int:
    """``nsbox [OPTIONS] [--] [PROGRAM [ARGS...]]``; the exit status."""
    parser = _parser()
    options, program = getopt.split(parser, argv)
    args = parser.parse(options)
    if getopt.help_or_version(parser, args):
        return 0
    return run_box(program, _box_options(args))
