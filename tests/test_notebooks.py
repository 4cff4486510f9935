"""The notebooks: generated from build_notebooks.py, committed with outputs, and still running as committed.

Each notebook runs top to bottom in a fresh kernel; its cells ``assert`` what they show, so a notebook
that runs but shows the wrong thing fails here. Notebooks 1-4 and 6 are written for root; notebook 5 runs as
an unprivileged user (uid 65534 when the suite runs as root, the current user otherwise).
"""

from __future__ import annotations

import importlib
import os
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
sys.path.insert(0, str(NOTEBOOKS))
nbrun: Any = importlib.import_module("nbrun")
build: Any = importlib.import_module("build_notebooks")

#: Prefixes of the temporary directories the notebooks create (and must remove).
TEMP_PREFIXES = ("nsbox-site-", "nsbox-mnt-", "nsbox-stage-", "nsbox-prop-", "nsbox-user-", "nsbox-nb5-")
#: How long a notebook may take, kernel start included.
BUDGET = 60.0

ROOT = os.geteuid() == 0
NAMES = list(nbrun.NOTEBOOKS)


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


def _notebook_mounts() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return [p for p in points if os.path.basename(p).startswith(TEMP_PREFIXES)]


def _notebook_temp_dirs() -> set[str]:
    tmp = os.environ.get("TMPDIR", "/tmp")
    return {name for name in os.listdir(tmp) if name.startswith(TEMP_PREFIXES)}


def test_the_committed_notebooks_are_the_generated_ones() -> None:
    generated = build.notebooks()
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == sorted(generated) == sorted(NAMES)
    for name, expected in generated.items():
        committed = nbformat.read(NOTEBOOKS / name, as_version=4)
        cells = [(c.cell_type, c.source) for c in committed.cells]
        assert cells == [(c.cell_type, c.source) for c in expected.cells], f"{name}: run notebooks/build_notebooks.py"


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


@pytest.mark.parametrize("name", NAMES)
def test_the_notebook_runs_top_to_bottom_and_leaves_nothing_behind(name: str) -> None:
    unprivileged = nbrun.NOTEBOOKS[name]
    if not unprivileged and not ROOT:
        pytest.skip("notebooks 1-4 and 6 are written for root (notebook 5 is the unprivileged one)")
    hostname = socket.gethostname()
    temp_before = _notebook_temp_dirs()
    marker = f"NSBOX_NOTEBOOK_RUN={uuid.uuid4().hex}"
    env = dict(os.environ, NSBOX_NOTEBOOK_RUN=marker.split("=", 1)[1])

    nb, seconds = nbrun.execute(NOTEBOOKS / name, timeout=BUDGET, env=env)

    assert seconds < BUDGET, f"{name} took {seconds:.1f} s"
    deadline = time.monotonic() + 5
    while (left := _marked_processes(marker)) and time.monotonic() < deadline:
        time.sleep(0.1)  # the kernel itself may take a moment to exit after shutdown
    assert left == [], "processes left running"
    assert socket.gethostname() == hostname
    assert _notebook_mounts() == []
    assert _notebook_temp_dirs() - temp_before == set()
    if unprivileged:
        first_output = next(c for c in nb.cells if c.cell_type == "code" and c.outputs).outputs[0].text
        uid = 65534 if ROOT else os.getuid()
        assert first_output.startswith(f"uid {uid}, ") and uid != 0
