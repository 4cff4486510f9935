"""The same call through subprocess and nsbox, and the check that both came out alike."""

from __future__ import annotations

import subprocess
from typing import Any

import nsbox


def both(args: Any, **kwargs: Any) -> tuple[subprocess.CompletedProcess[Any], subprocess.CompletedProcess[Any]]:
    """The same call through nsbox.run (no namespace option) and subprocess.run."""
    return nsbox.run(args, **kwargs), subprocess.run(args, **kwargs)


def same(a: subprocess.CompletedProcess[Any], b: subprocess.CompletedProcess[Any]) -> None:
    assert type(a) is type(b) is subprocess.CompletedProcess
    assert (a.args, a.returncode, a.stdout, a.stderr) == (b.args, b.returncode, b.stdout, b.stderr)
