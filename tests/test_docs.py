"""The README's examples, and the examples in the package's docstrings, run as written.

As root; the rootless paths are covered by test_rootless. The README's ``nsbox.call`` and pytest examples are
checked against what their comments claim; a docstring's ``>>>`` lines are run by :mod:`doctest`.
"""

from __future__ import annotations

import doctest
import functools
import importlib
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import nsbox

README = Path(__file__).resolve().parent.parent / "README.md"

pytest_plugins = ["pytester"]


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(), flags=re.S)


def test_first_command_shows_ps_as_pid_1() -> None:
    first = _blocks("sh")[0]
    assert first.startswith("pip install . && "), first
    python_part = first.removeprefix("pip install . && ").strip()
    # Same command, with this interpreter (nsbox is installed in it) instead of `python`.
    out = subprocess.run(
        python_part.replace("python -c", f"{sys.executable} -c", 1),
        shell=True,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rows = [line.split() for line in out.strip().splitlines()[1:]]
    assert rows == [rows[0]] and rows[0][1] == "1" and rows[0][-2:] == ["ps", "-ef"], out


def _commands(script: str) -> list[str]:
    """The commands of a shell script, without comments, the shell's own settings and `exec`."""
    lines = (line.split("#", 1)[0].strip().removeprefix("exec ") for line in script.splitlines())
    return [line for line in lines if line and not line.startswith(("set ", "cd "))]


def test_second_command_is_what_ci_runs() -> None:
    assert _commands(_blocks("sh")[1]) == ["scripts/bootstrap", "scripts/test"]
    assert _commands((README.parent / ".ci" / "run").read_text()) == ["scripts/bootstrap", "scripts/test"]


@pytest.mark.parametrize("index", range(len(_blocks("python"))))
def test_python_examples_run(index: int, tmp_path: Path) -> None:
    code = _blocks("python")[index].replace("/run/nsbox/kept", str(tmp_path / "kept"))
    # The LAN example's fixed subnet, and the egress example's published port 8080, would clash with anyone
    # else's on the host (a second copy of this suite, a test publishing a port): they run in a network namespace
    # of their own, which is then the host they talk about.
    own_network = "nsbox.Network(" in code or "publish=" in code
    run = functools.partial(nsbox.run, net=True) if own_network else subprocess.run
    result = run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    # Nothing the examples persisted stays mounted.
    assert str(tmp_path) not in Path("/proc/self/mountinfo").read_text()


def test_the_init_example_prints_the_process_list_its_comment_shows(tmp_path: Path) -> None:
    block = next(b for b in _blocks("python") if "init=True" in b)
    shown = [line.split()[2:] for line in re.findall(r"^    #\s+(\d+\s+\d+\s+\d+\s+\d+\s+.+)$", block, flags=re.M)]
    assert shown == [["1", "0", "nsbox-init"], ["2", "1", "sleep", "1024"]]
    for _ in range(20):  # the output is what a reader gets, every time
        out = subprocess.run(
            [sys.executable, "-c", block.replace("/run/nsbox/kept", str(tmp_path / "kept"))],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
            check=True,
        ).stdout
        rows = [line.split()[2:] for line in out.splitlines()[1:3]]
        assert out.splitlines()[0].split() == ["HOST", "PID", "HOST", "PPID", "PID", "PPID", "COMMAND"]
        assert rows == shown, out


def test_readme_call_example_returns_what_it_says() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    [example] = [b for b in re.findall(r"```python\n(.*?)```", readme, flags=re.S) if "nsbox.call(serve" in b]
    # Each `nsbox.call(...)   # value: explanation` line becomes an assertion on that value.
    claim = re.compile(r"^(nsbox\.call\(.*?\))\s+# (.+?)(?:[:;] .*)?$", flags=re.M)
    checked = claim.sub(lambda m: f"assert repr({m[1]}) == {m[2]!r}, repr({m[1]})", example)
    assert checked.count("assert repr(") == 3
    r = subprocess.run([sys.executable, "-c", checked], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_readme_pytest_example(pytester: pytest.Pytester) -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    [example] = [b for b in re.findall(r"```python\n(.*?)```", readme, flags=re.S) if "@pytest.mark.nsbox" in b]
    pytester.makepyfile(test_readme=example)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--strict-markers")
    result.assert_outcomes(passed=2)


def _docstring_examples() -> list[doctest.DocTest]:
    """The doctests of every module of the installed package (``__main__`` would run the CLI: it has none)."""
    names = sorted(m.name for m in pkgutil.walk_packages(nsbox.__path__, "nsbox.") if m.name != "nsbox.__main__")
    found = [test for name in names for test in doctest.DocTestFinder().find(importlib.import_module(name))]
    return [test for test in found if test.examples]


@pytest.mark.parametrize("example", _docstring_examples(), ids=lambda test: test.name)
def test_docstring_examples_run(example: doctest.DocTest) -> None:
    report: list[str] = []
    result = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS).run(example, out=report.append)
    assert result.failed == 0, "".join(report)
