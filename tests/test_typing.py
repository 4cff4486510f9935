"""Type checkers see every keyword of run, call, Popen and enter: a misspelt option is an error before it runs."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from mypy import api as mypy_api

GOOD = """
import nsbox

nsbox.run(["true"], pid=True, mount_proc="/proc", hostname="box", capture_output=True, text=True)
nsbox.Popen(["true"], user=True, uid_map=[(0, 1000, 1)], init=True).wait()
nsbox.call(len, ("ab",), user=None, net=True, monotonic_offset=1.5)
nsbox.enter(1, ["true"], capture_output=True)
"""

BAD = {
    "run": 'nsbox.run(["true"], pdi=True)',
    "Popen": 'nsbox.Popen(["true"], hostnme="box")',
    "call": "nsbox.call(len, ('ab',), pid='yes')",
    "call-init": "nsbox.call(len, ('ab',), init=True)",
    "enter": 'nsbox.enter(1, ["true"], pid=True)',
}


def check(tmp_path: Path, code: str) -> tuple[str, int]:
    source = tmp_path / "client.py"
    source.write_text(textwrap.dedent(code))
    out, err, status = mypy_api.run(["--strict", "--no-incremental", "--cache-dir", str(tmp_path), str(source)])
    return out + err, status


def test_good_calls_type_check(tmp_path: Path) -> None:
    out, status = check(tmp_path, GOOD)
    assert status == 0, out


@pytest.mark.parametrize("name", sorted(BAD))
def test_a_misspelt_or_mistyped_option_is_a_type_error(tmp_path: Path, name: str) -> None:
    out, status = check(tmp_path, "import nsbox\n" + BAD[name] + "\n")
    assert status == 1 and "error:" in out, out
