"""Draw an ``nsbox.Network``: the bridge in its namespace, each box's veth pair, and the addresses.

Used by notebook 6 (``import nettopo`` from this directory)::

    fig = nettopo.draw(lan, names={server: "web server", client: "client"})

The top band is the network namespace the bridge lives in (the host's, or the LAN's own for a private
network); each box below is a network namespace of its own, with ``eth0`` and its address. A line is a
veth pair: ``eth0`` in the box, the ``nsv…`` end on the bridge.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch

__all__ = ["draw"]

_HOST = "#eeeeee"
_HOST_EDGE = "#777777"
_BRIDGE = "#fbe7c6"
_BRIDGE_EDGE = "#b7791f"
_BOX = "#dbe9f6"
_BOX_EDGE = "#2f6ea5"


def _rounded(ax: Any, x: float, y: float, w: float, h: float, face: str, edge: str, **kw: Any) -> None:
    ax.add_patch(
        FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.08", fc=face, ec=edge, lw=1.4, **kw)
    )


def draw(lan: Any, names: Mapping[Any, str] | None = None, title: str | None = None) -> Figure:
    """A picture of ``lan`` and its running boxes (``names`` labels them; default: the command)."""
    boxes = lan.boxes
    n = max(len(boxes), 1)
    width = max(2.6 * n + 0.8, 7.0)
    fig, ax = plt.subplots(figsize=(width * 0.95, 4.6))
    ax.set_xlim(0, width)
    ax.set_ylim(0, 5.2)
    ax.axis("off")

    where = "the LAN's own network namespace (private)" if lan.private else "the host's network namespace"
    _rounded(ax, 0.15, 3.0, width - 0.3, 2.0, _HOST, _HOST_EDGE)
    ax.text(0.35, 4.75, where, fontsize=9, color=_HOST_EDGE, va="top")
    bridge_w = min(width - 1.2, 2.6 * n)
    bridge_x = (width - bridge_w) / 2
    _rounded(ax, bridge_x, 3.35, bridge_w, 0.8, _BRIDGE, _BRIDGE_EDGE)
    ax.text(
        width / 2,
        3.75,
        f"bridge {lan.bridge}\n{lan.gateway}/{lan.subnet.prefixlen} (gateway)",
        ha="center",
        va="center",
        fontsize=9,
    )

    slot = width / n
    for i, box in enumerate(boxes):
        cx = slot * (i + 0.5)
        label = (names or {}).get(box) or " ".join(str(a) for a in box.args)[:28]
        _rounded(ax, cx - 1.1, 0.25, 2.2, 1.6, _BOX, _BOX_EDGE)
        ax.text(cx, 1.6, f"box: {label}", ha="center", va="center", fontsize=9, fontweight="bold")
        ax.text(cx, 1.2, f"host PID {box.pid}", ha="center", va="center", fontsize=8, color="#555555")
        ax.text(cx, 0.7, f"eth0 {box.ip}", ha="center", va="center", fontsize=9, family="monospace")
        ax.plot([cx, cx], [1.85, 3.35], color=_BOX_EDGE, lw=2)
        ax.text(cx + 0.08, 2.6, f"veth pair\n{box.veth} ↔ eth0", fontsize=8, va="center", family="monospace")
    if not boxes:
        ax.text(width / 2, 1.0, "(no boxes)", ha="center", fontsize=9, color="#777777")
    ax.set_title(title or f"nsbox.Network {lan.subnet}", fontsize=11)
    fig.tight_layout()
    plt.close(fig)
    return fig
