"""Draw an overlay filesystem: its layers, file by file, and the merged view the process sees.

Used by notebook 7 (``import layers`` from this directory)::

    stack = [("upper (the box's changes)", {"etc/motd": "file", "etc/old": "whiteout"}),
             ("lower: the image", {"etc/motd": "file", "etc/old": "file"})]
    layers.visible(stack)                     # {"etc/motd": "upper (the box's changes)"}
    fig = layers.draw(stack, ["etc/motd", "etc/old"])

A stack lists the layers from the top down, as overlayfs's ``lowerdir=`` does (the upper directory first).
Each layer maps the paths it holds to ``"file"`` or ``"whiteout"`` (a 0/0 character device in an upper
directory, a ``.wh.NAME`` in an image layer: the path is deleted from the layers below). A path is visible
from the topmost layer that holds it, unless that is a whiteout.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

__all__ = ["draw", "visible"]

Layer = tuple[str, Mapping[str, str]]

_COLOURS = ["#fbe7c6", "#dbe9f6", "#d9f0d3", "#eadcf2", "#f6d6d6"]
_EDGES = ["#b7791f", "#2f6ea5", "#3c8d2f", "#7b4aa0", "#a33a3a"]
_MERGED_EDGE = "#333333"


def visible(stack: Sequence[Layer]) -> dict[str, str]:
    """Each path the merged view shows, with the label of the layer it comes from (``stack`` top first)."""
    seen: dict[str, str | None] = {}
    for label, entries in stack:
        for path, kind in entries.items():
            if kind not in ("file", "whiteout"):
                raise ValueError(f"{label}: {path} is {kind!r}, not 'file' or 'whiteout'")
            seen.setdefault(path, label if kind == "file" else None)
    return {path: label for path, label in seen.items() if label is not None}


def _cell(ax: Any, x: float, y: float, text: str, face: str, edge: str, **kw: Any) -> None:
    ax.add_patch(Rectangle((x + 0.05, y + 0.1), 0.9, 0.8, fc=face, ec=edge, lw=1.4, **kw))
    box = {"fc": "white", "ec": "none", "pad": 1} if "hatch" in kw else None
    ax.text(x + 0.5, y + 0.5, text, ha="center", va="center", fontsize=8, family="monospace", bbox=box)


def draw(stack: Sequence[Layer], paths: Sequence[str], title: str = "the box's root: an overlay") -> Figure:
    """The layers of ``stack`` (top first) as rows of ``paths``, and above them the merged view."""
    shown = visible(stack)
    colour = {label: i % len(_COLOURS) for i, (label, _) in enumerate(stack)}
    rows = len(stack) + 1
    fig, ax = plt.subplots(figsize=(2.2 + 1.45 * len(paths), 0.75 * rows + 1.3))
    ax.set_xlim(-2.6, len(paths))
    ax.set_ylim(-0.2, rows + 0.8)
    ax.axis("off")

    # The merged view on top, a gap, then the layers from the top down.
    top = rows - 0.6
    ax.text(-0.1, top + 0.5, "what the\nprocess sees", ha="right", va="center", fontsize=9, fontweight="bold")
    for x, path in enumerate(paths):
        ax.text(x + 0.5, top + 1.1, "/" + path, ha="center", va="bottom", fontsize=8, family="monospace")
        source = shown.get(path)
        if source is None:
            _cell(ax, x, top, "(none)", "white", "#aaaaaa", ls="--")
        else:
            _cell(ax, x, top, f"from {source.split(':')[0]}", _COLOURS[colour[source]], _MERGED_EDGE)
    ax.plot([-2.5, len(paths)], [top - 0.15, top - 0.15], color="#999999", lw=0.8, ls=":")
    for row, (label, entries) in enumerate(stack):
        y = len(stack) - 1 - row
        c = colour[label]
        ax.text(-0.1, y + 0.5, label, ha="right", va="center", fontsize=9, color=_EDGES[c])
        for x, path in enumerate(paths):
            kind = entries.get(path)
            if kind == "file":
                _cell(ax, x, y, "file", _COLOURS[c], _EDGES[c])
            elif kind == "whiteout":
                _cell(ax, x, y, "whiteout", "white", _EDGES[c], hatch="xx")
    ax.annotate(
        "",
        xy=(-2.45, top + 0.3),
        xytext=(-2.45, 0.2),
        arrowprops={"arrowstyle": "->", "color": "#777777"},
    )
    ax.text(-2.35, (top + 0.2) / 2, "the topmost\nlayer wins", fontsize=7, color="#777777", va="center")
    ax.set_title(title, fontsize=11)
    fig.tight_layout()
    plt.close(fig)
    return fig
