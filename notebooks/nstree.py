"""Draw a box's processes twice, side by side: as the host sees them and as the box sees them.

Used by the notebooks (``import nstree`` from this directory)::

    fig = nstree.draw(box.processes(), title="...")

The left panel is the host's view: host PIDs, the box's processes under the process that started them
(and a few of its ancestors), with the PID namespace drawn as a dashed box. The right panel is the
view from inside: the same processes with their inside PIDs; whatever started the box is outside the
namespace, so inside it is only "PPID 0". Both panels put each process at the same place.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch

__all__ = ["draw", "host_ancestors"]

_BOX = "#dbe9f6"
_BOX_EDGE = "#2f6ea5"
_OUTSIDE = "#eeeeee"
_OUTSIDE_EDGE = "#777777"
_ZOMBIE = "#f6dbdb"
_ZOMBIE_EDGE = "#a52f2f"


class _Process(Protocol):
    """What :func:`draw` reads of a process (an :class:`nsbox.ProcessInfo`, whose fields are read-only)."""

    @property
    def host_pid(self) -> int: ...
    @property
    def host_ppid(self) -> int: ...
    @property
    def pid(self) -> int: ...
    @property
    def ppid(self) -> int: ...
    @property
    def command(self) -> str: ...


def _status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def _command(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        argv = f.read().rstrip(b"\0").split(b"\0")
    if argv == [b""]:
        return f"[{_status(pid)['Name']}]"
    return " ".join(a.decode(errors="replace") for a in argv)


def host_ancestors(host_pid: int, count: int = 2) -> list[tuple[int, int, str]]:
    """(pid, ppid, command) of the parent of ``host_pid``, its parent ..., at most ``count`` of them."""
    chain: list[tuple[int, int, str]] = []
    pid = int(_status(host_pid)["PPid"])
    while pid > 0 and len(chain) < count:
        ppid = int(_status(pid)["PPid"])
        chain.append((pid, ppid, _command(pid)))
        pid = ppid
    return chain


def _label(pid: int, command: str, width: int = 24, note: str = "") -> str:
    program, _, rest = command.partition(" ")
    if not program.startswith("["):
        command = " ".join(filter(None, [os.path.basename(program), rest]))  # /usr/bin/python -> python
    lines = textwrap.wrap(command, width) or [""]
    if len(lines) > 2:
        lines = [lines[0], lines[1][: width - 1] + "…"]
    return "\n".join([f"PID {pid}", *lines, *([note] if note else [])])


def _layout(children: dict[Any, list[Any]], root: Any, depth0: int) -> dict[Any, tuple[float, float]]:
    """Leaves get consecutive x positions, parents sit above the middle of their children."""
    pos: dict[Any, tuple[float, float]] = {}
    next_x = [0.0]

    def place(node: Any, depth: int) -> float:
        kids = children.get(node, [])
        if kids:
            xs = [place(k, depth + 1) for k in kids]
            x = (xs[0] + xs[-1]) / 2
        else:
            x = next_x[0]
            next_x[0] += 1
        pos[node] = (x, -float(depth))
        return x

    place(root, depth0)
    return pos


def _node(ax: Any, xy: tuple[float, float], text: str, face: str, edge: str, dashed: bool = False) -> None:
    ax.text(
        *xy,
        text,
        ha="center",
        va="center",
        fontsize=8,
        family="monospace",
        zorder=3,
        bbox={
            "boxstyle": "round,pad=0.4",
            "facecolor": face,
            "edgecolor": edge,
            "linestyle": "--" if dashed else "-",
        },
    )


def _edges(ax: Any, children: dict[Any, list[Any]], pos: dict[Any, tuple[float, float]]) -> None:
    for parent, kids in children.items():
        for kid in kids:
            (x0, y0), (x1, y1) = pos[parent], pos[kid]
            ax.plot([x0, x1], [y0, y1], color="#555555", linewidth=1, zorder=1)


def _boundary(ax: Any, points: Iterable[tuple[float, float]], label: str) -> None:
    xs, ys = zip(*points, strict=True)
    x0, x1, y0, y1 = min(xs) - 0.48, max(xs) + 0.48, min(ys) - 0.42, max(ys) + 0.42
    ax.add_patch(
        FancyBboxPatch(
            (x0, y0),
            x1 - x0,
            y1 - y0,
            boxstyle="round,pad=0.02",
            facecolor="#f7fbff",
            edgecolor=_BOX_EDGE,
            linestyle="--",
            linewidth=1.5,
            zorder=0,
        )
    )
    ax.text(x0 + 0.03, y0 + 0.03, label, ha="left", va="bottom", fontsize=8, color=_BOX_EDGE, style="italic", zorder=2)


def draw(
    processes: Sequence[_Process],
    *,
    title: str | None = None,
    ancestors: int = 2,
    zombies: Iterable[int] = (),
    namespace_label: str = "PID namespace of the box",
) -> Figure:
    """Draw ``processes`` (a box's :class:`nsbox.ProcessTable`) from the host and from inside.

    ``ancestors`` is how many host processes above the box to show; ``zombies`` are host PIDs to
    draw in red (exited, not yet reaped).
    """
    procs = list(processes)
    if not procs:
        raise ValueError("no processes to draw")
    zombie_set = set(zombies)
    by_host = {p.host_pid: p for p in procs}
    roots = [p for p in procs if p.host_ppid not in by_host]
    parents = sorted({p.host_ppid for p in roots})

    # Host view: outside ancestors (gray) above the box's processes (blue, inside the boundary).
    outside: dict[int, tuple[int, str]] = {}
    for parent in parents:
        outside[parent] = (int(_status(parent)["PPid"]), _command(parent))
        for pid, ppid, command in host_ancestors(parent, ancestors - 1):
            outside[pid] = (ppid, command)
    host_children: dict[Any, list[Any]] = {}
    top = []
    for pid, (ppid, _) in outside.items():
        if ppid in outside:
            host_children.setdefault(ppid, []).append(pid)
        else:
            top.append(pid)
    for p in procs:
        host_children.setdefault(p.host_ppid, []).append(p.host_pid)
    for kids in host_children.values():
        kids.sort()
    host_root: Any = "…" if len(top) != 1 or outside[top[0]][0] > 0 else top[0]
    if host_root == "…":
        host_children["…"] = sorted(top)
    host_pos = _layout(host_children, host_root, 0)
    box_depth = int(-host_pos[roots[0].host_pid][1])

    # Inside view: the same processes by their inside PIDs, under an invisible "PPID 0".
    by_pid = {p.pid: p for p in procs}
    in_children: dict[Any, list[Any]] = {"0": []}
    for p in procs:
        in_children.setdefault(p.ppid if p.ppid in by_pid else "0", []).append(p.pid)
    for kids in in_children.values():
        kids.sort()
    in_pos = _layout(in_children, "0", box_depth - 1)

    host_leaves = max(x for x, _ in host_pos.values()) + 1
    in_leaves = max(x for x, _ in in_pos.values()) + 1
    height = max(-y for _, y in [*host_pos.values(), *in_pos.values()]) + 1
    fig, (ax_host, ax_in) = plt.subplots(
        1,
        2,
        figsize=(1.9 * (host_leaves + in_leaves) + 1.2, 1.05 * height + 1.1),
        gridspec_kw={"width_ratios": [host_leaves, in_leaves]},
    )
    ymin = min(min(y for _, y in host_pos.values()), min(y for _, y in in_pos.values())) - 0.6
    for ax, leaves in ((ax_host, host_leaves), (ax_in, in_leaves)):
        ax.set_xlim(-0.6, leaves - 0.4)
        ax.set_ylim(ymin, 0.6)
        ax.axis("off")

    _boundary(ax_host, [host_pos[p.host_pid] for p in procs], namespace_label)
    _edges(ax_host, host_children, host_pos)
    for node, xy in host_pos.items():
        if node == "…":
            _node(ax_host, xy, "…", _OUTSIDE, _OUTSIDE_EDGE)
        elif node in by_host:
            p = by_host[node]
            zombie = node in zombie_set
            label = _label(p.host_pid, p.command + (" <defunct>" if zombie else ""))
            _node(ax_host, xy, label, _ZOMBIE if zombie else _BOX, _ZOMBIE_EDGE if zombie else _BOX_EDGE)
        else:
            note = "(this kernel)" if node == os.getpid() else ""
            _node(ax_host, xy, _label(node, outside[node][1], note=note), _OUTSIDE, _OUTSIDE_EDGE)
    ax_host.set_title("seen from the host", fontsize=10)

    _boundary(ax_in, [in_pos[p.pid] for p in procs], "inside: the whole world")
    _edges(ax_in, in_children, in_pos)
    _node(ax_in, in_pos["0"], "PPID 0\n(the parent is outside:\ninvisible from here)", "white", _OUTSIDE_EDGE, True)
    for p in procs:
        zombie = p.host_pid in zombie_set
        label = _label(p.pid, p.command + (" <defunct>" if zombie else ""))
        _node(ax_in, in_pos[p.pid], label, _ZOMBIE if zombie else _BOX, _ZOMBIE_EDGE if zombie else _BOX_EDGE)
    ax_in.set_title("seen from inside the box", fontsize=10)

    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig
