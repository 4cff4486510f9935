"""``repr()`` and ``_repr_html_()`` of ``nsbox.Popen``, ``nsbox.ProcessTable`` and ``nsbox.Network``.

They never raise, however far ``__init__`` got: pytest shows the locals of every frame of a traceback
(``--showlocals``, and Hypothesis, debuggers and loggers do likewise), so the ``self`` of an ``__init__`` that
raised is shown too: its repr must say what is known rather than raise.
"""

from __future__ import annotations

import html
import ipaddress
import os
import re
from collections.abc import Iterator
from typing import Any, TypeVar

import pytest

import nsbox
from helpers.namespaces import KINDS
from helpers.nets import free_network, free_subnet
from helpers.procs import kill_and_reap, started, wait_until

pytest_plugins = ["pytester"]

T = TypeVar("T")


def half_built(cls: type[T], exc_info: pytest.ExceptionInfo[BaseException]) -> T:
    """The ``self`` of the ``cls.__init__`` that raised ``exc_info``, as pytest's traceback holds it."""
    found = [
        entry.frame.f_locals["self"]
        for entry in exc_info.traceback
        if entry.frame.code.name == "__init__" and isinstance(entry.frame.f_locals.get("self"), cls)
    ]
    assert found, f"no {cls.__name__}.__init__ frame in the traceback"
    return found[0]


def prefixes(obj: T) -> Iterator[tuple[list[str], T]]:
    """Copies of ``obj`` holding the first 0, 1, 2 ... of its attributes: how ``__init__`` leaves it when it
    fails after setting them (attributes are kept in the order they were first set). Each copy is emptied
    afterwards, so that its ``__del__`` does not close or reap what ``obj`` owns."""
    items = list(vars(obj).items())
    for n in range(len(items) + 1):
        part = type(obj).__new__(type(obj))  # type: ignore[call-overload]
        vars(part).update(items[:n])
        try:
            yield [name for name, _ in items[:n]], part
        finally:
            vars(part).clear()


def shows(obj: Any) -> tuple[str, str]:
    text, page = repr(obj), obj._repr_html_()
    assert "<[" not in text and "raised in repr" not in text
    return text, page


# -- Popen -------------------------------------------------------------------------------------------------


@pytest.mark.unit
def test_popen_made_without_init() -> None:
    box = nsbox.Popen.__new__(nsbox.Popen)
    assert shows(box) == ("<nsbox.Popen not started>", "<p><code>&lt;nsbox.Popen not started&gt;</code></p>")


@pytest.mark.unit
def test_popen_whose_options_were_rejected() -> None:
    with pytest.raises(ValueError, match="hostname is 100 bytes long") as caught:
        nsbox.Popen(["true"], hostname="x" * 100)
    assert shows(half_built(nsbox.Popen, caught))[0] == "<nsbox.Popen not started>"
    with pytest.raises(ValueError, match="always closes inherited fds") as caught:
        nsbox.Popen(["true"], close_fds=False)
    assert shows(half_built(nsbox.Popen, caught))[0] == "<nsbox.Popen not started>"


def test_popen_whose_command_was_not_found() -> None:
    with pytest.raises(FileNotFoundError) as caught:
        nsbox.Popen(["/nonexistent/nsbox-test-command", "arg"], pid=True)
    text, page = shows(half_built(nsbox.Popen, caught))
    assert text == "<nsbox.Popen namespaces=[pid] not started: ['/nonexistent/nsbox-test-command', 'arg']>"
    assert page == f"<p><code>{html.escape(text)}</code></p>"


def test_popen_on_a_closed_network() -> None:
    lan = nsbox.Network(free_subnet(), private=True)
    lan.close()
    with pytest.raises(ValueError, match="is closed") as caught:
        nsbox.Popen(["true"], network=lan)
    assert shows(half_built(nsbox.Popen, caught))[0] == "<nsbox.Popen namespaces=[net] not started>"


def test_popen_at_every_step_of_init_running_and_exited() -> None:
    box = nsbox.Popen(["sleep", "1000"], pid=True, mount_proc=True)
    try:
        running = f"<nsbox.Popen pid={box.pid} (1 inside) namespaces=[pid, mnt] running: ['sleep', '1000']>"
        assert shows(box)[0] == running
        seen = {shows(part)[0] for _, part in prefixes(box)}
        assert seen >= {"<nsbox.Popen not started>", running}
    finally:
        kill_and_reap(box)
    exited = f"<nsbox.Popen pid={box.pid} namespaces=[pid, mnt] exited -9: ['sleep', '1000']>"
    assert shows(box)[0] == exited
    for names, part in prefixes(box):
        text, page = shows(part)
        if "pid" in names and "returncode" in names:
            assert text == exited
        assert page == f"<p><code>{html.escape(text)}</code></p>"  # no tables: it has exited


# -- Network -----------------------------------------------------------------------------------------------


@pytest.mark.unit
def test_network_made_without_init() -> None:
    lan = nsbox.Network.__new__(nsbox.Network)
    assert shows(lan)[0] == "<nsbox.Network, not made>"


@pytest.mark.unit
def test_network_whose_subnet_was_refused() -> None:
    with pytest.raises(ValueError, match="host bits are set") as caught:
        nsbox.Network("10.84.0.1/24")
    assert shows(half_built(nsbox.Network, caught))[0] == "<nsbox.Network, not made>"
    with pytest.raises(TypeError, match="private must be") as caught:
        nsbox.Network("10.84.0.0/24", private=1)  # type: ignore[arg-type]
    assert shows(half_built(nsbox.Network, caught))[0] == "<nsbox.Network, not made>"


def test_network_whose_subnet_overlaps_a_route_of_the_host() -> None:
    taken = free_network(private=False)
    with taken, pytest.raises(ValueError, match="overlaps the host's route") as caught:
        nsbox.Network(str(taken.subnet), private=False)
    text, _ = shows(half_built(nsbox.Network, caught))
    assert text in ("<nsbox.Network, not made>", f"<nsbox.Network {taken.subnet} gateway={taken.gateway}, not made>")


def test_network_whose_bridge_could_not_be_made(monkeypatch: pytest.MonkeyPatch) -> None:
    from nsbox import _nsbox

    def refuse(*args: object) -> None:
        raise PermissionError(1, "cannot create the bridge (refused by the test)")

    monkeypatch.setattr(_nsbox, "Network", refuse)
    subnet = free_subnet()
    with pytest.raises(PermissionError, match="refused by the test") as caught:
        nsbox.Network(subnet, private=True)
    net = ipaddress.IPv4Network(subnet)
    assert shows(half_built(nsbox.Network, caught))[0] == f"<nsbox.Network {net} gateway={net[1]}, not made>"


def test_network_at_every_step_of_init_open_and_closed() -> None:
    lan = nsbox.Network(free_subnet(), private=True)
    box = nsbox.Popen(["sleep", "1000"], network=lan)
    try:
        full = f"<nsbox.Network {lan.subnet} gateway={lan.gateway} bridge={lan.bridge} in private namespaces"
        text, page = shows(lan)
        assert text == full + ", 1 boxes>"
        assert f"<td><code>sleep 1000</code></td><td>{box.pid}</td><td>{box.ip}</td><td>{box.veth}</td>" in page
        seen = {shows(part)[0] for _, part in prefixes(lan)}
        assert {"<nsbox.Network, not made>", full + ", 1 boxes>"} <= seen
        assert all(re.fullmatch(r"<nsbox\.Network[^<>]*>", text) for text in seen), seen
    finally:
        kill_and_reap(box)
        lan.close()
    text, page = shows(lan)
    assert text == full + ", closed>"
    assert "<td>" not in page
    for _, part in prefixes(lan):
        shows(part)


# -- What pytest shows -------------------------------------------------------------------------------------


def test_pytest_shows_the_locals_of_a_failed_init(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import nsbox

        def test_popen():
            nsbox.Popen(["true"], hostname="x" * 100)

        def test_network():
            nsbox.Network("10.84.0.1/24")
        """
    )
    result = pytester.runpytest_subprocess("--showlocals", "--tb=long", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines_random(["self * = <nsbox.Popen not started>", "self * = <nsbox.Network, not made>"])
    assert "raised in repr()" not in result.stdout.str()


def test_box_repr_shows_host_and_inside_pid_namespaces_and_state() -> None:
    box = nsbox.Popen(["sleep", "1000"], pid=True, mount_proc=True)
    try:
        assert repr(box) == f"<nsbox.Popen pid={box.pid} (1 inside) namespaces=[pid, mnt] running: ['sleep', '1000']>"
        started(box, "sleep")
        page = box._repr_html_()
        ids, host = box.namespaces(), nsbox.namespaces()
        for kind in KINDS:
            mark = "<b>own</b>" if kind in ("pid", "pid_for_children", "mnt") else "shared"
            assert f"<tr><td>{kind}</td><td>{ids[kind]}</td><td>{host[kind]}</td><td>{mark}</td></tr>" in page
        assert "<th>HOST PID</th><th>HOST PPID</th><th>PID</th><th>PPID</th><th>COMMAND</th>" in page
        assert f"<tr><td>{box.pid}</td><td>{os.getpid()}</td><td>1</td><td>0</td><td>sleep 1000</td></tr>" in page
    finally:
        kill_and_reap(box)
    assert repr(box) == f"<nsbox.Popen pid={box.pid} namespaces=[pid, mnt] exited -9: ['sleep', '1000']>"
    assert box._repr_html_() == f"<p><code>&lt;nsbox.Popen pid={box.pid} namespaces=[pid, mnt] exited -9: " + (
        "[&#x27;sleep&#x27;, &#x27;1000&#x27;]&gt;</code></p>"
    )


def test_process_table_repr_aligns_columns_and_html_escapes_commands() -> None:
    table = nsbox.ProcessTable(
        [nsbox.ProcessInfo(15563, 15542, 1, 0, "sleep 1000"), nsbox.ProcessInfo(17301, 15563, 13, 1, "sh -c '<b>'")]
    )
    assert repr(table) == (
        "HOST PID  HOST PPID  PID  PPID  COMMAND\n"
        "   15563      15542    1     0  sleep 1000\n"
        "   17301      15563   13     1  sh -c '<b>'"
    )
    page = table._repr_html_()
    assert "<td>17301</td><td>15563</td><td>13</td><td>1</td><td>sh -c &#x27;&lt;b&gt;&#x27;</td>" in page
    assert "<b>" not in page
    box = nsbox.Popen(["sleep", "1000"], pid=True)
    try:
        assert isinstance(box.processes(), nsbox.ProcessTable)
        # Until the kernel has finished the exec, the command line is empty and the row shows "[sleep]".
        assert wait_until(lambda: repr(box.processes()).splitlines()[1].endswith(" sleep 1000"))
        row = repr(box.processes()).splitlines()[1]
        assert row.split() == [str(box.pid), str(os.getpid()), "1", "0", "sleep", "1000"]
    finally:
        kill_and_reap(box)
