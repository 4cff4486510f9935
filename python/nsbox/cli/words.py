"""What the ``nsbox`` command says: its output, its one-line complaints and their exit statuses.

A failure is one line on stderr, ``nsbox: <what failed>: <why>``, and an exit status: 1 when nsbox fails,
2 for a command line that cannot work, 126 or 127 when the program cannot be executed or found.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from contextlib import suppress

PROG = "nsbox"
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_CANNOT_EXECUTE = 126
EXIT_NOT_FOUND = 127


class UsageError(Exception):
    """A command line that cannot work: printed as ``nsbox: <message>``, exit status 2."""


class Failure(Exception):
    """Something nsbox tried failed: printed as ``nsbox: <message>``, exit status ``status``."""

    def __init__(self, message: str, status: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.status = status


#: The Python option names that the core's messages use, and the command line's words for them.
_CLI_WORDS = [
    (re.compile(r"leave user=None or pass user=True"), "add -U or -r"),
    (re.compile(r"monotonic_offset and boottime_offset"), "--monotonic and --boottime"),
    (re.compile(r"setgroups='deny'"), "--setgroups deny"),
    (re.compile(r"pass mount=True or mount_proc=True"), "add -m"),
    (re.compile(r"^hostname "), "--hostname: the name "),
    (re.compile(r"\b(?:add|pass) (pid|time|user|mount|uts|ipc|net|cgroup)=True"), None),
]


def cli_words(message: str) -> str:
    """A message of the core, with ``pid=True`` and the like said as the command line says them."""
    from nsbox.cli.getopt import NAMESPACE_FLAGS

    for pattern, words in _CLI_WORDS:
        if words is None:
            message = pattern.sub(lambda m: f"add {NAMESPACE_FLAGS[m.group(1)][0]}", message)
        else:
            message = pattern.sub(words, message)
    return message


def write(text: str) -> int:
    """Write to stdout; a reader that went away (``nsbox ps 42 | head -1``) ends nsbox quietly, as SIGPIPE would."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        with suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    return 0


def complain(message: str, status: int) -> int:
    """Print ``nsbox: <message>`` as one line to stderr; return ``status``."""
    line = " ".join(f"{PROG}: {message}".split("\n"))
    with suppress(OSError):
        print(line, file=sys.stderr, flush=True)
    return status
