"""Draw an ``nsbox.Network``: the bridge in its namespace, each box's veth pair, and the addresses.

Used by notebook 6 (``import nettopo`` from this directory)::

    fig = nettopo.draw(lan, names={server: "web server", client: "client"})
    fig = nettopo.draw_egress({box: "fetcher", leashed: "on a leash"})

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

__all__ = ["draw", "draw_egress"]

_HOST = "#eeeeee"
_HOST_EDGE = "#777777"
_BRIDGE = "#fbe7c6"
_BRIDGE_EDGE = "#b7791f"
_BOX = "#dbe9f6"
_BOX_EDGE = "#2f6ea5"
_LEASH = "#f8d7da"
_LEASH_EDGE = "#b02a37"


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


def draw_egress(boxes: Mapping[Any, str], title: str = "egress: a NAT beside each box, and a leash") -> Figure:
    """Boxes with ``egress=True`` (labelled by ``boxes``): each one's engine on the host, and its leash if any."""
    n = max(len(boxes), 1)
    width = max(3.4 * n + 0.6, 7.0)
    fig, ax = plt.subplots(figsize=(width * 0.95, 5.4))
    ax.set_xlim(0, width)
    ax.set_ylim(0, 6.4)
    ax.axis("off")
    _rounded(ax, 0.15, 4.1, width - 0.3, 2.1, _HOST, _HOST_EDGE)
    ax.text(
        0.35,
        5.95,
        "the host's network namespace: 127.0.0.1 (loopback) and the host's networks",
        fontsize=9,
        color=_HOST_EDGE,
        va="top",
    )
    slot = width / n
    for i, (box, label) in enumerate(boxes.items()):
        cx = slot * (i + 0.5)
        info = box.egress
        engine = f"slirp4netns, PID {info.helper_pid}" if info.helper_pid else "slirp4netns (stopped)"
        published = ", ".join(f"{p.host_address}:{p.host_port} → {p.box_port}" for p in info.published)
        _rounded(ax, cx - 1.4, 4.35, 2.8, 1.1, _BRIDGE, _BRIDGE_EDGE)
        ax.text(cx, 5.05, engine, ha="center", va="center", fontsize=9)
        ax.text(cx, 4.65, f"published: {published or 'none'}", ha="center", va="center", fontsize=8, family="monospace")
        leashed = info.allowed is not None
        if leashed:
            allowed = ", ".join(map(str, info.allowed)) or "nothing"
            _rounded(ax, cx - 1.55, 0.15, 3.1, 3.35, _LEASH, _LEASH_EDGE)
            ax.text(
                cx, 3.25, "nsbox's network namespace: nftables", ha="center", va="center", fontsize=8, color=_LEASH_EDGE
            )
            ax.text(
                cx,
                2.95,
                f"allow {allowed}; the rest refused",
                ha="center",
                va="center",
                fontsize=8,
                color=_LEASH_EDGE,
                family="monospace",
            )
        _rounded(ax, cx - 1.3, 0.35, 2.6, 2.2 if leashed else 2.9, _BOX, _BOX_EDGE)
        ax.text(cx, 2.1 if leashed else 2.6, f"box: {label}", ha="center", va="center", fontsize=9, fontweight="bold")
        ax.text(cx, 1.6, f"tap0 {info.address}", ha="center", va="center", fontsize=9, family="monospace")
        ax.text(
            cx, 1.1, f"host's loopback = {info.host_address}", ha="center", va="center", fontsize=8, family="monospace"
        )
        ax.text(
            cx,
            0.7,
            "root in its own user namespace" if leashed else f"DNS {', '.join(info.dns)}",
            ha="center",
            va="center",
            fontsize=8,
            color="#555555",
        )
        ax.annotate(
            "",
            xy=(cx, 4.35),
            xytext=(cx, 3.5 if leashed else 3.25),
            arrowprops={"arrowstyle": "<->", "color": _BOX_EDGE, "lw": 2},
        )
        ax.text(cx + 0.1, 3.85 if leashed else 3.75, "tap ↔ sockets (NAT)", fontsize=8, va="center")
    ax.set_title(title, fontsize=11)
    fig.tight_layout()
    plt.close(fig)
    return fig
