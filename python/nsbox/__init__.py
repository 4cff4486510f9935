"""nsbox: run processes in fresh Linux namespaces, from Python, with or without root.

A container is a process with different namespace parameters. nsbox starts such processes with the
``subprocess`` API you already know, and lets you look at them from both sides::

    import nsbox
    r = nsbox.run(["ps", "-ef"], pid=True, mount_proc=True, capture_output=True, text=True)
    print(r.stdout)   # only `ps -ef` itself, as PID 1
"""

import _thread
import importlib
import os

# The public names load on first use (PEP 562), each from its submodule, so that `import nsbox` costs next to
# nothing and a plain run loads neither pickle and traceback (for `call`) nor hmac and ipaddress (for `Network`).
# `TYPE_CHECKING = False` is typing.TYPE_CHECKING without importing typing; type checkers read it the same way.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from nsbox._call import BoxCrashed, RemoteTraceback, call
    from nsbox._image import Image
    from nsbox._inspect import ProcessInfo, ProcessTable, namespaces, nspid, processes
    from nsbox._limits import CompletedBox, Usage
    from nsbox._mounts import Bind, Dev, Overlay, Tmpfs
    from nsbox._network import Network
    from nsbox._nsbox import __version__
    from nsbox._persist import enter, persist, release
    from nsbox._popen import Popen
    from nsbox._pty import Pty
    from nsbox._run import run
    from nsbox._seccomp import Seccomp

_SUBMODULES = {
    "_call": ("BoxCrashed", "RemoteTraceback", "call"),
    "_image": ("Image",),
    "_inspect": ("ProcessInfo", "ProcessTable", "namespaces", "nspid", "processes"),
    "_limits": ("CompletedBox", "Usage"),
    "_mounts": ("Bind", "Dev", "Overlay", "Tmpfs"),
    "_network": ("Network",),
    "_nsbox": ("__version__",),
    "_persist": ("enter", "persist", "release"),
    "_popen": ("Popen",),
    "_pty": ("Pty",),
    "_run": ("run",),
    "_seccomp": ("Seccomp",),
}
_SUBMODULE_OF = {name: submodule for submodule, names in _SUBMODULES.items() for name in names}

# A fork copies the locks of the imports other threads are making, held: a child that imported the same module
# would wait forever. So the public names load under one lock that a fork waits for, and no child finds their
# submodules half made (a thread's first `nsbox.run` while another forks). nsbox's own modules load each other
# by their submodule names, never through this lock, and the lock is never held waiting for anything else.
_loading = _thread.RLock()
os.register_at_fork(before=_loading.acquire, after_in_parent=_loading.release, after_in_child=_loading.release)

__all__ = [
    "Bind",
    "BoxCrashed",
    "CompletedBox",
    "Dev",
    "Image",
    "Network",
    "Overlay",
    "Popen",
    "ProcessInfo",
    "ProcessTable",
    "Pty",
    "RemoteTraceback",
    "Seccomp",
    "Tmpfs",
    "Usage",
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


if not TYPE_CHECKING:  # hidden from type checkers, which would let any attribute of nsbox through

    def __getattr__(name: str) -> object:
        submodule = _SUBMODULE_OF.get(name)
        if submodule is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        with _loading:
            value = getattr(importlib.import_module(f"{__name__}.{submodule}"), name)
        globals()[name] = value  # later lookups find it without this function
        return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
