"""A pytest suite of boxed tests with ``net=True``: its wall time with ``--nsbox-pool=8`` and without.

Run it with any Python that has nsbox, pytest and pytest-xdist installed::

    python bench/pool_pytest_bench.py            # 200 tests, 3 interleaved rounds, a few minutes
    python bench/pool_pytest_bench.py --quick    # 40 tests, 1 round

It writes a test module of ``--tests`` tests, each ``@pytest.mark.nsbox(net=True)`` (a network namespace with
``lo`` up; the test opens a server on 127.0.0.1:80 and connects to it), into a temporary directory, and runs
``pytest -q -p no:randomly`` on it serially and with ``-n 2``, each with and without ``--nsbox-pool=8``, the
four runs interleaved round by round. A row is the median wall time over rounds (pytest's own start-up
included). Not a test: it prints Markdown on stdout.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as bench  # the machine line of bench/run.py

SUITE = """\
import socket
import pytest


@pytest.mark.nsbox(net=True)
@pytest.mark.parametrize("i", range({tests}))
def test_a_server_on_port_80(i):
    with socket.create_server(("127.0.0.1", 80)) as server:
        with socket.create_connection(server.getsockname(), timeout=5):
            pass
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    parser.add_argument("--tests", type=int, default=200, help="boxed tests in the suite (200)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (3)")
    args = parser.parse_args()
    tests, rounds = (40, 1) if args.quick else (args.tests, args.rounds)
    cases = {
        "serial": [],
        "serial, --nsbox-pool=8": ["--nsbox-pool=8"],
        "-n 2": ["-n", "2"],
        "-n 2, --nsbox-pool=8": ["-n", "2", "--nsbox-pool=8"],
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    with tempfile.TemporaryDirectory(prefix="nsbox-pool-bench-") as tmp:
        (Path(tmp) / "test_suite.py").write_text(SUITE.format(tests=tests))
        for r in range(rounds):
            names = list(cases)
            for name in names[r % len(names) :] + names[: r % len(names)]:
                cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider"]
                started = time.perf_counter()
                out = subprocess.run([*cmd, *cases[name], "test_suite.py"], cwd=tmp, capture_output=True, text=True)
                times[name].append(time.perf_counter() - started)
                if out.returncode != 0 or f"{tests} passed" not in out.stdout:
                    print(f"{name}: pytest failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}", file=sys.stderr)
                    return 1
    print(bench.ran_on(rounds, tests))
    print(f"A suite of {tests} tests marked `@pytest.mark.nsbox(net=True)`; wall time of `pytest -q`, median.\n")
    print("| run | without a pool | `--nsbox-pool=8` | x |")
    print("|---|---|---|---|")
    for label, plain, pooled in (
        ("serial", "serial", "serial, --nsbox-pool=8"),
        ("-n 2", "-n 2", "-n 2, --nsbox-pool=8"),
    ):
        a, b = statistics.median(times[plain]), statistics.median(times[pooled])
        print(f"| {label} | {a:.2f} s | {b:.2f} s | {b / a:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
