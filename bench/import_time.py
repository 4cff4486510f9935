"""What ``import nsbox`` costs: fresh interpreters importing it, side by side with one that imports nothing.

Run it with any Python that has nsbox installed (no root needed)::

    python bench/import_time.py              # 21 rounds of 20 starts of each command: about half a minute
    python bench/import_time.py --quick      # a smoke run: a few seconds
    python bench/import_time.py --profile    # also the biggest entries of `python -X importtime -c 'import nsbox'`

Each row is a command run as ``python -c CODE`` with this interpreter, timed from the parent around
``subprocess.run`` (the spawn costs every row the same). The commands are interleaved round by round, the
order rotating, and each row shows the median of the per-round medians, the lowest and highest per-round
median, the difference from and ratio to the bare interpreter, and how many modules the command leaves in
``sys.modules``. The target (issue 14) is checked on the ``import nsbox`` row: at most 10 ms over bare Python.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

TARGET_MS = 10.0
BARE = "pass"
# Bare Python; what nsbox.Popen builds on; the package; what a plain run loads; everything public.
ROWS = (
    BARE,
    "import subprocess",
    "import nsbox",
    "import nsbox; nsbox.run",
    "import nsbox; [getattr(nsbox, n) for n in nsbox.__all__]",
)


def start(code: str) -> float:
    """Milliseconds to start an interpreter that runs ``code`` and exits."""
    begin = time.perf_counter_ns()
    subprocess.run([sys.executable, "-c", code], check=True, cwd="/")
    return (time.perf_counter_ns() - begin) / 1e6


def module_count(code: str) -> int:
    counted = f"{code}\nimport sys; print(len(sys.modules))"
    return int(subprocess.run([sys.executable, "-c", counted], check=True, capture_output=True, cwd="/").stdout)


def measure(rounds: int, per_round: int) -> dict[str, list[float]]:
    """Per-round medians of each row's start time, the rows interleaved and their order rotating."""
    for code in ROWS:  # warm-up: bytecode caches, the page cache
        start(code)
    medians: dict[str, list[float]] = {code: [] for code in ROWS}
    for r in range(rounds):
        for code in ROWS[r % len(ROWS) :] + ROWS[: r % len(ROWS)]:
            medians[code].append(statistics.median(start(code) for _ in range(per_round)))
    return medians


def profile() -> str:
    """The ten biggest cumulative entries of ``-X importtime`` for ``import nsbox`` (one run, after a warm-up)."""
    start("import nsbox")
    err = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import nsbox"], check=True, capture_output=True, text=True, cwd="/"
    ).stderr
    entries = []
    for line in err.splitlines()[1:]:
        head, cumulative_us, module = line.split("|")
        entries.append((int(cumulative_us), int(head.split(":")[1]), module.strip()))
    lines = ["| cumulative | self | module |", "|---:|---:|---|"]
    lines += [f"| {c / 1000:.1f} ms | {s / 1000:.1f} ms | `{m}` |" for c, s, m in sorted(entries)[-10:][::-1]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 rounds of 5: a smoke run")
    parser.add_argument("--profile", action="store_true", help="also show -X importtime's biggest entries")
    args = parser.parse_args()
    rounds, per_round = (5, 5) if args.quick else (21, 20)
    try:
        version = subprocess.run(
            [sys.executable, "-c", "import nsbox; print(nsbox.__version__, nsbox.__file__)"],
            check=True,
            capture_output=True,
            text=True,
            cwd="/",
        ).stdout.strip()
    except subprocess.CalledProcessError:
        sys.exit(f"{sys.executable} cannot import nsbox: run this with a Python that has nsbox installed")
    print(f"{sys.executable} (Python {sys.version.split()[0]}), nsbox {version}", file=sys.stderr)
    print(f"{rounds} rounds of {per_round} starts of each command, {os.cpu_count()} CPUs", file=sys.stderr)

    medians = measure(rounds, per_round)
    bare = statistics.median(medians[BARE])
    print("| command | median | min-max | over bare | x bare | modules | target | result |")
    print("|---|---:|---:|---:|---:|---:|---|---|")
    for code in ROWS:
        median = statistics.median(medians[code])
        over = median - bare
        target = result = ""
        if code == "import nsbox":
            target = f"<= {TARGET_MS:.0f} ms over bare"
            result = f"{'PASS' if over <= TARGET_MS else '**MISS**'} ({over:+.1f} ms)"
        print(
            f"| `{code}` | {median:.1f} ms | {min(medians[code]):.1f}-{max(medians[code]):.1f} | {over:+.1f} ms "
            f"| {median / bare:.2f} | {module_count(code)} | {target} | {result} |"
        )
    if args.profile:
        print(f"\n`python -X importtime -c 'import nsbox'`, the ten biggest cumulative entries:\n\n{profile()}")


if __name__ == "__main__":
    main()
