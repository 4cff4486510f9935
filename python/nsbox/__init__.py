"""nsbox: run processes in fresh Linux namespaces, from Python, with or without root.

A container is a process with different namespace parameters. nsbox starts such processes with the
``subprocess`` API you already know, and lets you look at them from both sides::

    import nsbox
    r = nsbox.run(["ps", "-ef"], pid=True, mount_proc=True, capture_output=True, text=True)
    print(r.stdout)   # only `ps -ef` itself, as PID 1
"""

from nsbox._call import BoxCrashed, RemoteTraceback, call
from nsbox._inspect import ProcessInfo, ProcessTable, namespaces, nspid, processes
from nsbox._network import Network
from nsbox._nsbox import __version__
from nsbox._persist import enter, persist, release
from nsbox._popen import Popen
from nsbox._run import run

__all__ = [
    "BoxCrashed",
    "Network",
    "Popen",
    "ProcessInfo",
    "ProcessTable",
    "RemoteTraceback",
    "__version__",
    "call",
    "enter",
    "namespaces",
    "nspid",
    "persist",
    "processes",
    "release",
    "run",
]
