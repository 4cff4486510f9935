"""The ``nsbox`` command: util-linux ``unshare``'s and ``nsenter``'s flags on top of :class:`nsbox.Popen`.

``nsbox [OPTIONS] [--] [PROGRAM [ARGS...]]`` runs PROGRAM in new namespaces as ``unshare --fork`` does
(:mod:`~nsbox.cli.unshare`); ``nsbox exec`` enters a running box as ``nsenter`` does
(:mod:`~nsbox.cli.nsenter`); ``nsbox ps`` and ``nsbox ns`` look at one (:mod:`~nsbox.cli.inspect`). A
subcommand is recognised only as the very first argument. Options end at ``--`` or at the first argument
that is not an option, as with getopt's ``+`` (what follows is the program's), and long options may be
abbreviated (:mod:`~nsbox.cli.getopt`). The exit status is the program's (128+N when signal N killed it);
nsbox's own failures print one line ``nsbox: <what failed>: <why>`` and exit 1 (126/127 when the program
cannot be executed or found, 2 for a command line that cannot work), never with a traceback
(:mod:`~nsbox.cli.words`).
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable, Sequence

from nsbox.cli import inspect, nsenter, unshare
from nsbox.cli.words import EXIT_FAILURE, EXIT_USAGE, Failure, UsageError, complain, os_failure

__all__ = ["main"]

_COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {"exec": nsenter.command, "ps": inspect.ps, "ns": inspect.ns}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``nsbox`` command line (``argv`` defaults to ``sys.argv[1:]``) and return its exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args and args[0] in _COMMANDS:
            return _COMMANDS[args[0]](args[1:])
        return unshare.command(args)
    except UsageError as exc:
        return complain(str(exc), EXIT_USAGE)
    except Failure as exc:
        return complain(str(exc), exc.status)
    except OSError as exc:
        return complain(os_failure(exc), EXIT_FAILURE)
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    except Exception as exc:  # never a traceback: a bug in nsbox still gets one line
        return complain(f"internal error: {type(exc).__name__}: {exc}", EXIT_FAILURE)
