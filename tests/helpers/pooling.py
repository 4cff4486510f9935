"""The pooled side of tests parametrized over both ways of making a box: ``nsbox.run`` and ``Pool.run``.

``pooled_run`` runs a box as ``nsbox.run`` would, with the namespaces it asks for taken from a
:class:`nsbox.Pool` made for it (shaped by the same options), and checks that it did take a set: a box
from a pool must pass the same tests as one without. Imports nsbox and the standard library only.
"""

from __future__ import annotations

import subprocess
import time
from typing import Any

import nsbox
from nsbox._options import CALL_OPTIONS


def pooled_run(args: Any, **options: Any) -> subprocess.CompletedProcess[Any]:
    """``nsbox.run(args, **options)``, the box joining a set of a full pool made with its namespace options.

    Options with nothing to pool (no ``net``, ``ipc``, ``uts``, ``hostname`` or ``cgroup``) run without one.
    """
    namespace = {k: v for k, v in options.items() if k in CALL_OPTIONS}
    if isinstance(options.get("user"), bool):
        namespace["user"] = options["user"]
    if not any(namespace.get(k) for k in ("net", "ipc", "uts", "cgroup", "hostname", "sandbox")):
        return nsbox.run(args, **options)
    with nsbox.Pool(size=1, **namespace) as pool:
        deadline = time.monotonic() + 30
        while pool.stats().ready < 1:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the pool did not fill: {pool.stats()}")
            time.sleep(0.002)
        result = pool.run(args, **{k: v for k, v in options.items() if k not in namespace})
        assert pool.stats().taken == 1, f"the box did not take the pool's set: {pool.stats()}"
    return result


#: The two ways, by the names the parametrized tests show.
RUNS = {"unpooled": nsbox.run, "pooled": pooled_run}
