"""Looking at boxes from the host: namespace ids, PID chains, and the processes of a PID namespace."""

from __future__ import annotations

from dataclasses import dataclass

from nsbox import _nsbox


def namespaces(pid: int | None = None) -> dict[str, int]:
    """Namespace kind → inode id (``/proc/PID/ns/*``) of process ``pid``, or of this process.

    Every kind the kernel has is present (``cgroup``, ``ipc``, ``mnt``, ``net``, ``pid``,
    ``pid_for_children``, ``time``, ``time_for_children``, ``user``, ``uts``). Two processes share a
    namespace exactly when their ids for that kind are equal.

    Raises:
        ProcessLookupError: no such process. PermissionError: not allowed to look at it.
    """
    return dict(_nsbox.namespaces(pid))


def nspid(host_pid: int) -> list[int]:
    """The PIDs of a process from the caller's PID namespace down to its own (``NSpid``).

    ``nspid(box.pid)`` is ``[host_pid, 1]`` for a box with ``pid=True``.
    """
    return _nsbox.nspid(host_pid)


@dataclass(frozen=True)
class ProcessInfo:
    """One process of a box, as ``ps -ef`` shows it on the host and inside, joined on one row."""

    host_pid: int
    host_ppid: int
    #: The PID as seen inside the box.
    pid: int
    #: The parent PID as seen inside the box; 0 when the parent is outside (as for PID 1).
    ppid: int
    command: str


_COLUMNS = ("host_pid", "host_ppid", "pid", "ppid", "command")
_HEADERS = ("HOST PID", "HOST PPID", "PID", "PPID", "COMMAND")


class ProcessTable(list[ProcessInfo]):
    """A list of :class:`ProcessInfo` that prints (and renders in Jupyter) as a table."""

    def __repr__(self) -> str:
        rows = [_HEADERS, *(tuple(str(getattr(p, c)) for c in _COLUMNS) for p in self)]
        widths = [max(len(r[i]) for r in rows) for i in range(len(_COLUMNS) - 1)]
        lines = ["  ".join([*(cell.rjust(w) for cell, w in zip(r[:-1], widths, strict=True)), r[-1]]) for r in rows]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        import html  # for Jupyter, not for a plain run

        head = "".join(f"<th>{h}</th>" for h in _HEADERS)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(str(getattr(p, c)))}</td>" for c in _COLUMNS) + "</tr>" for p in self
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def processes(host_pid: int) -> ProcessTable:
    """Every process in the PID namespace of ``host_pid`` (a box's first process), by inside PID.

    Read from ``/proc/PID/status`` (``NSpid``), not by running ``ps``. For a box without a PID
    namespace of its own, the process and its descendants.
    """
    return ProcessTable(ProcessInfo(*row) for row in _nsbox.processes(host_pid))


def namespaces_html(rows: dict[str, tuple[int | None, int | None]]) -> str:
    """A table of namespace kinds with the box's and the host's ids, marking the ones that differ."""
    cells = []
    for kind, (box, host) in rows.items():
        mark = "<b>own</b>" if box != host else "shared"
        cells.append(f"<tr><td>{kind}</td><td>{box}</td><td>{host}</td><td>{mark}</td></tr>")
    head = "<tr><th>namespace</th><th>box</th><th>host</th><th></th></tr>"
    return f"<table><thead>{head}</thead><tbody>{''.join(cells)}</tbody></table>"
