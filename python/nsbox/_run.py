"""``nsbox.run``: :func:`subprocess.run` with namespaces."""

from __future__ import annotations

import subprocess
from typing import Any

from nsbox._popen import Args, Popen


def run(
    args: Args,
    *,
    input: Any = None,
    capture_output: bool = False,
    timeout: float | None = None,
    check: bool = False,
    **kwargs: Any,
) -> subprocess.CompletedProcess[Any]:
    """Run ``args`` in new namespaces, wait for it, and return a :class:`subprocess.CompletedProcess`.

    Takes every argument of :func:`subprocess.run` and the namespace options of :class:`nsbox.Popen`,
    with the same meaning and the same exceptions (``TimeoutExpired``, ``CalledProcessError``).
    On a timeout, ``KeyboardInterrupt`` or any other exception while waiting, the box is killed and
    reaped before the exception propagates; with ``pid=True`` that ends every process in it.

    >>> r = run(["hostname"], hostname="box", capture_output=True, text=True)
    >>> r.stdout.strip()
    'box'
    """
    if input is not None:
        if kwargs.get("stdin") is not None:
            raise ValueError("stdin and input arguments may not both be used.")
        kwargs["stdin"] = subprocess.PIPE
    if capture_output:
        if kwargs.get("stdout") is not None or kwargs.get("stderr") is not None:
            raise ValueError("stdout and stderr arguments may not be used with capture_output.")
        kwargs["stdout"] = subprocess.PIPE
        kwargs["stderr"] = subprocess.PIPE

    with Popen(args, **kwargs) as process:
        try:
            stdout, stderr = process.communicate(input, timeout=timeout)
        except BaseException:
            # Unlike subprocess.run, also on KeyboardInterrupt: kill and reap, leave no zombie behind.
            process.kill()
            process.wait()
            raise
        retcode = process.wait()  # communicate() has reaped it; this just reads returncode
        if check and retcode:
            raise subprocess.CalledProcessError(retcode, process.args, output=stdout, stderr=stderr)
    return subprocess.CompletedProcess(process.args, retcode, stdout, stderr)
