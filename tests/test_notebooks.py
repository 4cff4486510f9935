"""The notebooks: kept as jupytext sources, committed with outputs, and still running as committed.

Each notebook's cells live in ``notebooks/NN_name.py`` (jupytext's percent format), paired with the committed
``NN_name.ipynb`` that carries the outputs; ``notebooks/nbrun.py`` writes the one from the other and runs it.

Each notebook runs top to bottom in a fresh kernel; its cells ``assert`` what they show, so a notebook
that runs but shows the wrong thing fails here. Notebooks 1-4 and 6 are written for root; notebook 5 runs as
an unprivileged user (uid 65534 when the suite runs as root, the current user otherwise); notebooks 7 and 8 run
both ways (``"both"`` in ``nbrun.NOTEBOOKS``: as root, and as uid 65534, when the suite runs as root).

Each run has a temporary directory of its own (``TMPDIR``), where the notebook makes its directories and must
remove them. Notebooks 4 and 6 compare a table of the whole host before and after (the mounts, the network
interfaces): as root, their kernel gets a namespace of that kind of its own (``ISOLATED``), where the table is
the notebook's alone, so that neither a second copy of this suite nor another test beside it (``pytest -n``)
changes it while they run.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jupytext
import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient

from helpers.mounts import host_mounts

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
sys.path.insert(0, str(NOTEBOOKS))
nbrun: Any = importlib.import_module("nbrun")

#: Prefixes of the temporary directories the notebooks create (and must remove).
TEMP_PREFIXES = (
    "nsbox-site-",
    "nsbox-mnt-",
    "nsbox-stage-",
    "nsbox-prop-",
    "nsbox-user-",
    "nsbox-nb5-",
    "nsbox-nb7-",
    "nsbox-nb8-",
)
#: How long a notebook may take, kernel start included.
BUDGET = 60.0

ROOT = os.geteuid() == 0
NAMES = list(nbrun.NOTEBOOKS)
#: Each run of a notebook: its name, and whether it runs as an unprivileged user.
RUNS = [
    pytest.param(name, unprivileged, id=f"{name}-{'unprivileged' if unprivileged else 'root'}")
    for name, who in nbrun.NOTEBOOKS.items()
    for unprivileged in {"root": [False], "unprivileged": [True], "both": [False, True]}[who]
]

#: The root notebooks whose kernel runs in namespaces of its own (``nsbox`` flags), and what it sets up there
#: before it starts: notebook 4 compares the mount table, notebook 6 the interfaces (read in /sys/class/net,
#: which shows those of the namespace that mounted it).
ISOLATED = {
    "04_other_namespaces.ipynb": (["--mount"], ":"),
    "06_networking.ipynb": (["--mount", "--net"], "mount -t sysfs nsbox-notebook-sysfs /sys"),
}


def _marked_processes(marker: str) -> list[tuple[int, str]]:
    """Live processes whose environment carries ``marker`` (everything the notebook's kernel started)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
            if marker.encode() in environ:
                found.append((int(entry), Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()))
        except OSError:
            continue  # gone, or not ours to read
    return found


def _notebook_mounts(tmp: Path) -> list[str]:
    """Mount points under the run's temporary directory."""
    return [line.split()[4] for line in host_mounts(tmp) if line.split()[4].startswith(f"{tmp}/")]


def _notebook_temp_dirs(tmp: Path) -> set[str]:
    return {name for name in os.listdir(tmp) if name.startswith(TEMP_PREFIXES)}


@pytest.fixture
def run_tmp() -> Iterator[Path]:
    """The run's own temporary directory, which the unprivileged kernel can write to as well."""
    path = Path(tempfile.mkdtemp(prefix="nsbox-notebook-run-", dir="/tmp"))
    path.chmod(0o1777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _isolated_kernel(workdir: Path, flags: list[str], setup: str) -> AsyncKernelManager:
    """A kernel manager whose kernel runs under ``nsbox FLAGS`` after ``setup`` (shell), and talks to us over
    Unix sockets in ``workdir`` (a kernel in a network namespace of its own cannot reach our loopback)."""
    spec = workdir / "kernels" / "nsbox-isolated"
    spec.mkdir(parents=True)
    kernel = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    argv = [sys.executable, "-m", "nsbox", *flags, "--", "sh", "-c", f'{setup} && exec "$0" "$@"', *kernel]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "isolated", "language": "python"}))
    return AsyncKernelManager(
        kernel_name="nsbox-isolated",
        kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(workdir / "kernels")]),
        transport="ipc",
        connection_file=str(workdir / "kernel.json"),
    )


def _execute(name: str, unprivileged: bool, env: dict[str, str], workdir: Path) -> tuple[nbformat.NotebookNode, float]:
    """``nbrun.execute``, except for the isolated notebooks, and the unprivileged runs' ``TMPDIR`` (their kernel
    spec sets /tmp)."""
    if not ROOT or (name not in ISOLATED and not unprivileged):
        result: tuple[nbformat.NotebookNode, float] = nbrun.execute(
            NOTEBOOKS / name, timeout=BUDGET, env=env, unprivileged=unprivileged
        )
        return result
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    if name in ISOLATED:
        km, path = _isolated_kernel(workdir, *ISOLATED[name]), NOTEBOOKS
        client = NotebookClient(nb, km=km, timeout=BUDGET, resources={"metadata": {"path": str(path)}})
        start = time.monotonic()
        client.execute(env=env, cleanup_kc=True)
        return nb, time.monotonic() - start
    with nbrun.unprivileged_kernel() as (km, home):
        km.kernel_spec.env["TMPDIR"] = env["TMPDIR"]
        client = NotebookClient(nb, km=km, timeout=BUDGET, resources={"metadata": {"path": str(home)}})
        start = time.monotonic()
        client.execute(env=env, cleanup_kc=True)
        return nb, time.monotonic() - start


def _cells(nb: nbformat.NotebookNode) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source) for c in nb.cells]


def test_every_notebook_has_a_source_and_the_sources_are_paired() -> None:
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == sorted(NAMES)
    assert sorted(p.name for p in NOTEBOOKS.glob("[0-9][0-9]_*.py")) == sorted(nbrun.source(n).name for n in NAMES)
    for name in NAMES:
        committed = nbformat.read(NOTEBOOKS / name, as_version=4)
        source = jupytext.read(nbrun.source(name))
        pairing = "ipynb,py:percent"
        assert source.metadata["jupytext"]["formats"] == committed.metadata["jupytext"]["formats"] == pairing, name


@pytest.mark.parametrize("name", NAMES)
def test_the_committed_notebook_has_the_cells_of_its_source(name: str) -> None:
    committed = nbformat.read(NOTEBOOKS / name, as_version=4)
    source = jupytext.read(nbrun.source(name))
    assert _cells(committed) == _cells(source), f"{name}: run python notebooks/nbrun.py {name}"


@pytest.mark.parametrize("name", NAMES)
def test_the_committed_notebook_carries_the_outputs_of_a_clean_run(name: str) -> None:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), "not run top to bottom in one go"
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    kinds = {k for o in outputs for k in o.get("data", {})}
    assert "text/html" in kinds, "tables render as HTML"
    if name.startswith(("02", "03")):
        assert "image/png" in kinds, "notebooks 2 and 3 draw the process tree"


@pytest.mark.parametrize(("name", "unprivileged"), RUNS)
def test_the_notebook_runs_top_to_bottom_and_leaves_nothing_behind(
    name: str, unprivileged: bool, run_tmp: Path, tmp_path: Path
) -> None:
    if not unprivileged and not ROOT:
        pytest.skip("this run is as root (notebooks 5, 7 and 8 run unprivileged)")
    hostname = socket.gethostname()
    marker = f"NSBOX_NOTEBOOK_RUN={uuid.uuid4().hex}"
    # A reader's environment: without the COLUMNS and LINES that pytest-xdist gives its workers (ps -ef in a cell
    # would cut its lines at 80 columns).
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env |= {"NSBOX_NOTEBOOK_RUN": marker.split("=", 1)[1], "TMPDIR": str(run_tmp)}

    nb, seconds = _execute(name, unprivileged, env, tmp_path)

    assert seconds < BUDGET, f"{name} took {seconds:.1f} s"
    deadline = time.monotonic() + 5
    while (left := _marked_processes(marker)) and time.monotonic() < deadline:
        time.sleep(0.1)  # the kernel itself may take a moment to exit after shutdown
    assert left == [], "processes left running"
    assert socket.gethostname() == hostname
    assert _notebook_mounts(run_tmp) == []
    assert _notebook_temp_dirs(run_tmp) == set()
    if unprivileged:
        first_output = next(c for c in nb.cells if c.cell_type == "code" and c.outputs).outputs[0].text
        uid = 65534 if ROOT else os.getuid()
        assert first_output.startswith((f"uid {uid}, ", f"uid {uid} ")) and uid != 0
