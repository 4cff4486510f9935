"""Keep the notebooks: write each one's cells from its source, then execute it and save it with its outputs.

Each notebook's source is ``NN_name.py`` in jupytext's percent format (``# %%`` cells), paired with the
committed ``NN_name.ipynb``, which keeps the outputs. Usage (as root, from the repository, with nsbox and the
``notebook`` extra installed)::

    python notebooks/nbrun.py                      # write the cells from the .py files, execute, save with outputs
    python notebooks/nbrun.py --no-run             # only write the cells (outputs kept where the cells match)
    python notebooks/nbrun.py 03_pid_namespace     # only these notebooks

Writing the cells is ``jupytext --update --to ipynb notebooks/NN_name.py``. ``tests/test_notebooks.py`` checks
that the committed notebooks have exactly the cells of their sources and that they still run, with
:func:`execute`.

Notebook 5 is about running without root, so it runs in a kernel started with
``setpriv --reuid=65534 --regid=65534 --clear-groups``; notebooks 7 and 8 run both ways (the test suite runs
them as root and as that user; the committed outputs are root's). That user cannot read ``/root`` (where pyenv and the
checkout may live), so :func:`unprivileged_kernel` copies nsbox, ipykernel and matplotlib with everything they
need, and the notebooks' helper modules (``nettopo.py`` ...), into a world-readable directory and starts the
system's Python (same major.minor version as this one, so compiled modules load) on it.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

__all__ = ["NOTEBOOKS", "UNPRIVILEGED", "execute", "source", "sync", "unprivileged_kernel"]

HERE = Path(__file__).resolve().parent

#: The notebooks in reading order, and who runs each one: ``"root"``, ``"unprivileged"`` (uid 65534 when
#: we are root), or ``"both"`` (written for both; :func:`execute` runs it as root unless told otherwise).
NOTEBOOKS = {
    "01_namespace_types.ipynb": "root",
    "02_observing_a_container.ipynb": "root",
    "03_pid_namespace.ipynb": "root",
    "04_other_namespaces.ipynb": "root",
    "05_rootless.ipynb": "unprivileged",
    "06_networking.ipynb": "root",
    "07_container_from_scratch.ipynb": "both",
    "08_what_namespaces_do_not_protect.ipynb": "both",
}

#: The unprivileged user (``nobody`` on Debian) and the interpreter it runs.
UNPRIVILEGED = 65534
SYSTEM_PYTHON = "/usr/bin/python3"
_KERNEL_NAME = "nsbox-unprivileged"


def _closure(names: list[str]) -> list[importlib.metadata.Distribution]:
    """The installed distributions ``names`` and everything they require (markers evaluated)."""
    seen: dict[str, importlib.metadata.Distribution] = {}
    todo = list(names)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        dist = importlib.metadata.distribution(name)
        seen[name] = dist
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return list(seen.values())


def _copy_distributions(names: list[str], target: Path) -> None:
    """Copy (or hard-link) the files of the distributions and their dependencies that live in site-packages."""
    for dist in _closure(names):
        for file in dist.files or []:
            if file.parts and file.parts[0] == "..":
                continue  # scripts and data outside site-packages
            source = Path(str(dist.locate_file(file)))
            if not source.is_file() or "__pycache__" in file.parts:
                continue
            dest = target / file
            dest.parent.mkdir(parents=True, exist_ok=True)
            if source.stat().st_mode & stat.S_IROTH:
                with contextlib.suppress(OSError):  # another file system: copy
                    os.link(source, dest)  # a hard link is fast, and readable by anyone as the original is
                    continue
            shutil.copy2(source, dest)


def _check_system_python() -> None:
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        raise RuntimeError(
            f"{SYSTEM_PYTHON} is needed to run notebooks as uid {UNPRIVILEGED} (apt-get install python3)"
        )
    version = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import sys; print(*sys.version_info[:2])"], capture_output=True, text=True, check=True
    ).stdout.split()
    if tuple(map(int, version)) != sys.version_info[:2]:
        raise RuntimeError(
            f"{SYSTEM_PYTHON} is Python {'.'.join(version)} but the test environment is "
            f"{sys.version_info[0]}.{sys.version_info[1]}: the copied compiled modules would not load"
        )


class _SharedConnectionFileManager(AsyncKernelManager):
    """A kernel manager whose connection file the unprivileged kernel may read."""

    def write_connection_file(self, **kwargs: Any) -> None:
        super().write_connection_file(**kwargs)
        os.chown(self.connection_file, UNPRIVILEGED, UNPRIVILEGED)


@contextlib.contextmanager
def unprivileged_kernel() -> Iterator[tuple[AsyncKernelManager, Path]]:
    """A kernel manager that starts kernels as uid/gid 65534, and a working directory that user owns.

    Must be called as root. Everything lives in one temporary directory, removed on exit.
    """
    if os.geteuid() != 0:
        raise RuntimeError("starting a kernel as another user needs root")
    _check_system_python()
    root = Path(tempfile.mkdtemp(prefix="nsbox-notebook-"))
    try:
        root.chmod(0o755)
        site = root / "site"
        _copy_distributions(["nsbox", "ipykernel", "matplotlib"], site)
        for helper in HERE.glob("*.py"):  # the notebooks' own modules (nettopo, layers ...), importable
            if not helper.name[:2].isdigit() and helper.name != "nbrun.py":
                shutil.copy2(helper, site / helper.name)
        home = root / "home"
        runtime = root / "runtime"
        for d in (home, runtime):
            d.mkdir()
        os.chown(home, UNPRIVILEGED, UNPRIVILEGED)
        for path in [root, *root.rglob("*")]:  # make everything readable (hard links already are)
            mode = path.stat().st_mode
            wanted = mode | stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH | (0o111 if path.is_dir() else 0)
            if wanted != mode:
                path.chmod(wanted)
        spec_dir = root / "kernels" / _KERNEL_NAME
        spec_dir.mkdir(parents=True)
        argv = ["setpriv", f"--reuid={UNPRIVILEGED}", f"--regid={UNPRIVILEGED}", "--clear-groups"]
        argv += [SYSTEM_PYTHON, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        env = {
            "PYTHONPATH": str(site),
            "HOME": str(home),
            "IPYTHONDIR": str(home / ".ipython"),
            "MPLCONFIGDIR": str(home / ".matplotlib"),
            "JUPYTER_RUNTIME_DIR": str(home / ".runtime"),
            "JUPYTER_PLATFORM_DIRS": "1",
            "TMPDIR": "/tmp",
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        }
        spec = {"argv": argv, "env": env, "display_name": f"Python (uid {UNPRIVILEGED})", "language": "python"}
        (spec_dir / "kernel.json").write_text(json.dumps(spec, indent=1))
        km = _SharedConnectionFileManager(
            kernel_name=_KERNEL_NAME,
            kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(root / "kernels")]),
            connection_file=str(runtime / "kernel.json"),
        )
        yield km, home
    finally:
        shutil.rmtree(root, ignore_errors=True)


def execute(
    path: Path, *, timeout: float = 60, env: dict[str, str] | None = None, unprivileged: bool | None = None
) -> tuple[nbformat.NotebookNode, float]:
    """Run the notebook at ``path`` top to bottom in a fresh kernel; return it with outputs, and the seconds.

    The notebooks marked ``"unprivileged"`` in :data:`NOTEBOOKS` (or any, with ``unprivileged=True``) run as
    uid 65534 when we are root, and in an ordinary kernel otherwise (we are unprivileged already); the others
    run as we are (``"both"`` ones as root, unless ``unprivileged=True``). ``env`` is the kernel's environment
    (default: ours). The seconds are those of the run itself, kernel start included, without the
    preparation of the unprivileged environment. Raises ``nbclient.exceptions.CellExecutionError`` if
    a cell fails (a failed ``assert`` included).
    """
    nb = nbformat.read(path, as_version=4)
    kernel_env = dict(os.environ if env is None else env)
    if unprivileged is None:
        unprivileged = NOTEBOOKS.get(path.name) == "unprivileged"
    if unprivileged and os.geteuid() == 0:
        with unprivileged_kernel() as (km, home):
            client = NotebookClient(nb, km=km, timeout=timeout, resources={"metadata": {"path": str(home)}})
            start = time.monotonic()
            client.execute(env=kernel_env, cleanup_kc=True)  # shut the kernel down: the manager is ours
            return nb, time.monotonic() - start
    client = NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    start = time.monotonic()
    client.execute(env=kernel_env)
    return nb, time.monotonic() - start


def source(name: str) -> Path:
    """The jupytext source of notebook ``name`` (``NN_name.ipynb``): ``NN_name.py`` beside it."""
    return HERE / Path(name).with_suffix(".py")


def sync(names: list[str]) -> None:
    """Write the cells of notebooks ``names`` from their sources; outputs stay with the cells jupytext matches."""
    subprocess.run(
        [sys.executable, "-m", "jupytext", "--update", "--to", "ipynb", *map(str, map(source, names))], check=True
    )


def main() -> int:
    """Write the notebooks' cells from their sources; execute them and save the outputs unless ``--no-run``."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--no-run", action="store_true", help="write the cells only")
    parser.add_argument("names", nargs="*", help="only these notebooks, NN_name or NN_name.ipynb (default: all)")
    args = parser.parse_args()
    names = [Path(n).with_suffix(".ipynb").name for n in args.names] or list(NOTEBOOKS)
    if unknown := sorted(set(names) - set(NOTEBOOKS)):
        parser.error(f"no such notebook: {', '.join(unknown)}")
    sync(names)
    if args.no_run:
        return 0
    for name in names:
        path = HERE / name
        executed, seconds = execute(path)
        for cell in executed.cells:
            cell.metadata.pop("execution", None)  # timestamps: they would change every run
        nbformat.write(executed, path)
        print(f"{name}: {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
