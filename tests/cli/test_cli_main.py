"""The ``nsbox`` command line, compared with util-linux ``unshare`` and ``nsenter`` on the same flags.

Every comparison runs twice: as root, and as the unprivileged user 65534 (``setpriv``, Debian's
world-readable ``/usr/bin/python3`` and a world-readable copy of the installed package, since the
test virtualenv lives under /root, mode 0700). Without root, nsbox makes a user namespace in which
you are root whenever another namespace is asked for, so there ``nsbox FLAGS`` is compared with
``unshare -r FLAGS``. nsbox always forks, so ``unshare`` always gets ``-f`` (``--fork``) too.

Here: the runners themselves, help and version, usage errors, where options end, the shell on a terminal, and
signals; ``test_cli_unshare.py`` has the comparisons with ``unshare``, ``test_cli_exec.py`` exec, ps and ns.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import nsbox
from helpers.cli import Box, Runner, is_gone, one_line_error, rootless_runner, stop, wait_for_descendant
from helpers.procs import wait_until
from helpers.rootless import NOBODY

# ---------------------------------------------------------------------------------------------------------------
# Running things as root and as uid 65534


def test_rootless_runner_is_uid_65534_without_capabilities_and_uses_the_copy(
    rootless_package: Path,
) -> None:
    runner = rootless_runner(rootless_package)
    r = runner.run(
        [
            runner.python,
            "-c",
            "import os, sys, nsbox; s = open('/proc/self/status').read();"
            "print(os.getuid(), os.getgid(), os.getgroups(), sys.version_info >= (3, 11), nsbox.__file__,"
            " [l.split()[1] for l in s.splitlines() if l.startswith('CapEff')][0])",
        ]
    )
    assert r.returncode == 0, r.stderr
    uid, gid, groups, new_enough, module, capeff = r.stdout.split()
    assert (uid, gid, groups, new_enough) == (str(NOBODY), str(NOBODY), "[]", "True")
    assert module.startswith(str(rootless_package))
    assert int(capeff, 16) == 0


# ---------------------------------------------------------------------------------------------------------------
# Help and version


def _help_lines(text: str) -> dict[str, str]:
    """Option invocation → its description, from ``--help``; fails on a description that wraps."""
    options: dict[str, str] = {}
    lines = text.splitlines()
    for i, line in enumerate(lines):
        match = re.match(r"^  (-\S.*?)(?:\s{2,}(\S.*))?$", line)
        if not match:
            continue
        assert match.group(2), f"no description on the line of {match.group(1)!r}:\n{text}"
        following = lines[i + 1] if i + 1 < len(lines) else ""
        assert not re.match(r"^\s{4,}\S", following), f"the description of {match.group(1)!r} wraps:\n{text}"
        options[match.group(1)] = match.group(2)
    return options


def _long_options(text: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", text))


@pytest.mark.unit
@pytest.mark.parametrize(
    ("command", "reference"),
    [([], ["unshare", "--help"]), (["exec"], ["nsenter", "--help"]), (["ps"], None), (["ns"], None)],
)
def test_help_lists_every_option_on_one_line_including_all_of_unshare_and_nsenter(
    root: Runner, command: list[str], reference: list[str] | None
) -> None:
    r = root.nsbox(*command, "--help", env=root.env | {"COLUMNS": "80"})
    assert r.returncode == 0 and not r.stderr, r.stderr
    assert r.stdout.startswith("usage: nsbox")
    described = _help_lines(r.stdout)
    assert "-h, --help" in described and "-V, --version" in described
    if reference is not None:
        theirs = _long_options(subprocess.run(reference, capture_output=True, text=True, check=True).stdout)
        ours = _long_options(" ".join(described))
        assert theirs <= ours, f"missing from nsbox {' '.join(command)} --help: {sorted(theirs - ours)}"


@pytest.mark.unit
def test_help_mentions_the_subcommands_and_exit_statuses(root: Runner) -> None:
    r = root.nsbox("-h")
    assert r.returncode == 0
    for text in ("nsbox exec", "nsbox ps PID", "nsbox ns [PID]", "128+N", "'nsbox -- ps -ef' runs ps"):
        assert text in r.stdout


@pytest.mark.parametrize("args", [["--version"], ["-V"], ["exec", "--version"], ["ps", "-V"], ["ns", "--version"]])
def test_version_prints_nsbox_and_the_version(runner: Runner, args: list[str]) -> None:
    r = runner.nsbox(*args)
    assert (r.returncode, r.stdout, r.stderr) == (0, f"nsbox {nsbox.__version__}\n", "")


def test_console_script_is_installed_and_runs_the_same_cli(root: Runner) -> None:
    script = Path(sys.executable).with_name("nsbox")
    assert script.exists(), "pip install . should install the nsbox command"
    r = root.run([str(script), "--version"])
    assert (r.returncode, r.stdout) == (0, f"nsbox {nsbox.__version__}\n")


# ---------------------------------------------------------------------------------------------------------------
# Usage errors


@pytest.mark.parametrize(
    "args",
    [
        ["--bogus"],
        ["-x", "true"],
        ["--hostname"],
        ["--propagation", "sideways", "-m", "true"],
        ["--setgroups=maybe", "-U", "true"],
        ["--map-user=no-such-user-here", "true"],
        ["--monotonic", "soon", "-T", "true"],
        ["--monotonic", "5", "true"],
        ["--fork=yes", "true"],
        ["--m", "true"],
        ["-r", "--setgroups", "allow", "true"],
        ["--hostname=", "true"],
        ["--hostname", "x" * 65, "true"],
        ["exec"],
        ["exec", "--bogus"],
        ["exec", "-t", "notapid/", "--all", "-n", "true"],
        ["exec", "-n", "true"],
        ["exec", "-t", "0"],
        ["ps"],
        ["ps", "one"],
        ["ps", "1", "2"],
        ["ns", "0"],
    ],
    ids=lambda a: " ".join(a)[:40],
)
def test_usage_errors_are_one_line_and_exit_2(runner: Runner, args: list[str]) -> None:
    r = runner.nsbox(*args)
    assert r.returncode == 2
    one_line_error(r)
    assert r.stdout == ""


def test_setgroups_without_a_user_namespace_is_a_usage_error_as_root(root: Runner) -> None:
    r = root.nsbox("--setgroups", "deny", "true")
    assert r.returncode == 2
    assert "-U" in one_line_error(r)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-S", "0", "true"], "nsbox: --setuid is not supported yet"),
        (["-G0", "true"], "nsbox: --setgid is not supported yet"),
        (["--keep-caps", "-U", "true"], "nsbox: --keep-caps is not supported yet"),
        (["--map-users=0,0,1", "true"], "nsbox: --map-users is not supported yet"),
        (["--map-groups", "0,0,1", "true"], "nsbox: --map-groups is not supported yet"),
        (["--map-auto", "true"], "nsbox: --map-auto is not supported yet"),
        (
            ["--net=/run/netns/x", "true"],
            "nsbox: --net=/run/netns/x: binding a namespace to a file is not supported yet",
        ),
        (["--kill-child=TERM", "true"], "not supported yet"),
        (["exec", "-t", "1", "-F", "true"], "nsbox: exec --no-fork is not supported yet"),
        (
            ["exec", "-t", "1", "--preserve-credentials", "true"],
            "nsbox: exec --preserve-credentials is not supported yet",
        ),
        (["exec", "-t", "1", "--root=/", "true"], "not supported yet"),
        (["exec", "-t", "1", "-n", "-w", "true"], "not supported yet"),
    ],
    ids=lambda a: " ".join(a)[:40] if isinstance(a, list) else "",
)
def test_unsupported_options_are_refused_as_usage_errors_not_ignored(
    runner: Runner, args: list[str], message: str
) -> None:
    r = runner.nsbox(*args)
    assert r.returncode == 2
    assert message in one_line_error(r)


@pytest.mark.parametrize("value", ["", "=KILL", "=SIGKILL", "=9", "=kill"])
def test_kill_child_with_sigkill_is_accepted(runner: Runner, value: str) -> None:
    r = runner.nsbox(f"--kill-child{value}", "-p", "true")
    assert (r.returncode, r.stderr) == (0, "")


# ---------------------------------------------------------------------------------------------------------------
# Where options end, and subcommands


def test_subcommand_only_as_the_first_argument(runner: Runner) -> None:
    subcommand = runner.nsbox("ps", "--version")
    program = runner.nsbox("--", "ps", "--version")
    program_after_option = runner.nsbox("-f", "ps", "--version")
    assert subcommand.stdout == f"nsbox {nsbox.__version__}\n"
    assert program.returncode == 0 and "procps" in program.stdout, program.stderr
    assert program_after_option.returncode == 0 and "procps" in program_after_option.stdout
    assert runner.nsbox("--", "exec").returncode == 127  # a program named exec: not found


def test_options_end_at_the_program_its_options_are_its_own(runner: Runner) -> None:
    r = runner.nsbox("-u", "--hostname=a-box", "sh", "-c", 'echo "$@"', "sh", "-p", "--net", "--", "-x")
    assert (r.returncode, r.stdout) == (0, "-p --net -- -x\n"), r.stderr
    short_value = runner.nsbox("-uw/usr", "pwd")
    clustered = runner.nsbox("-pf", "--mount-p", "ps", "-o", "pid=")
    assert (short_value.returncode, short_value.stdout) == (0, "/usr\n"), short_value.stderr
    assert (clustered.returncode, clustered.stdout.split()) == (0, ["1"]), clustered.stderr


def test_optional_values_need_an_equals_sign_as_with_unshare(runner: Runner) -> None:
    # "--mount-proc /proc" is --mount-proc and the program /proc, which is a directory: 126.
    theirs = runner.unshare("-p", "--mount-proc", "/proc")
    ours = runner.nsbox("-p", "--mount-proc", "/proc")
    assert ours.returncode == theirs.returncode == 126


# ---------------------------------------------------------------------------------------------------------------
# No program: $SHELL, on the terminal


def test_without_a_program_runs_shell_as_login_shell_reading_stdin_like_unshare(runner: Runner) -> None:
    script = "echo zero=$0 pid=$$; exit 6\n"
    theirs = runner.unshare("-p", input=script)
    ours = runner.nsbox("-p", input=script)
    assert ours.returncode == theirs.returncode == 6, ours.stderr
    assert ours.stdout == theirs.stdout == "zero=-sh pid=1\n"


def _run_on_a_terminal(runner: Runner, command: list[str], typed: str, after: bytes = b"") -> tuple[int, str]:
    """Run ``command`` with a new pty as its controlling terminal (``setsid -c``), type ``typed`` once the output
    shows ``after`` (a shell's prompt: the terminal echoes what is typed when it is typed), read it all."""
    master, slave = os.openpty()
    try:
        process = runner.popen(["setsid", "-c", *command], stdin=slave, stdout=slave, stderr=slave)
    finally:
        os.close(slave)
    output = b""
    pending = typed.encode()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if pending and after in output:
                os.write(master, pending)
                pending = b""
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    data = os.read(master, 4096)
                except OSError:  # EIO: every process on the terminal is gone
                    break
                if not data:
                    break
                output += data
            elif process.poll() is not None:
                break
        return process.wait(timeout=10), output.decode(errors="replace")
    finally:
        stop(process)
        os.close(master)


def test_without_a_program_runs_an_interactive_shell_on_the_terminal_like_unshare(runner: Runner) -> None:
    typed = "echo zero=$0; test -t 0 && test -t 1 && test -t 2 && echo on-a-tty; tty | grep -c /dev/pts; exit 7\n"
    flags = ["-u"]
    theirs = _run_on_a_terminal(runner, runner.unshare_argv(*flags), typed, after=b"# ")  # root's prompt, in the box
    ours = _run_on_a_terminal(runner, runner.nsbox_argv(*flags), typed, after=b"# ")
    assert ours[0] == theirs[0] == 7, ours[1]
    assert "zero=-sh" in ours[1] and "on-a-tty" in ours[1]
    assert ours[1] == theirs[1]


def test_a_program_gets_the_terminal_too(runner: Runner) -> None:
    status, output = _run_on_a_terminal(runner, runner.nsbox_argv("-p", "sh", "-c", "test -t 0 && tty"), "")
    assert status == 0, output
    assert "/dev/pts/" in output


# ---------------------------------------------------------------------------------------------------------------
# Signals and the box's lifetime


@pytest.mark.parametrize("program", ["nsbox", "unshare"])
def test_killing_nsbox_kills_the_box_as_unshare_kill_child_does(
    runner: Runner, start_box: Callable[..., Box], program: str
) -> None:
    args = ("--kill-child", "-p", "sleep", "1000")
    box = start_box(*args, command=runner.unshare_argv(*args) if program == "unshare" else None)
    box.front.kill()
    box.front.wait(timeout=10)
    assert wait_until(lambda: is_gone(box.pid), timeout=10), f"{program}: the box outlived it"


def test_the_box_dies_with_nsbox_even_without_kill_child(runner: Runner, start_box: Callable[..., Box]) -> None:
    box = start_box("-n", "sleep", "1000")
    box.front.kill()
    box.front.wait(timeout=10)
    assert wait_until(lambda: is_gone(box.pid), timeout=10)


def test_sigterm_to_nsbox_is_passed_on_to_the_box(runner: Runner) -> None:
    front = runner.popen(
        runner.nsbox_argv("-n", "sh", "-c", "trap 'exit 42' TERM; echo ready; while :; do sleep 0.05; done"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert front.stdout is not None and front.stdout.readline() == "ready\n"
        front.send_signal(signal.SIGTERM)
        assert front.wait(timeout=10) == 42
        assert front.stderr is not None and front.stderr.read() == ""
    finally:
        stop(front)


def test_sigint_from_the_terminal_ends_the_program_and_nsbox_quietly_like_unshare(runner: Runner) -> None:
    results = {}
    for name, command in (
        ("nsbox", runner.nsbox_argv("-u", "sleep", "1000")),
        ("unshare", runner.unshare_argv("-u", "sleep", "1000")),
    ):
        # A new process group stands for the terminal's foreground job: ^C sends SIGINT to all of it.
        front = runner.popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        try:
            wait_for_descendant(front, "sleep")
            os.kill(front.pid, signal.SIGINT)  # nsbox alone: ignored (the terminal reaches the box itself)
            time.sleep(0.3)
            assert front.poll() is None, f"{name} died of a SIGINT sent to it alone"
            os.killpg(front.pid, signal.SIGINT)
            front.wait(timeout=10)
            results[name] = (front.returncode, front.stderr.read() if front.stderr else "")
        finally:
            stop(front)
    assert results["nsbox"] == (128 + signal.SIGINT, "")
    assert results["unshare"] == (-signal.SIGINT, "")
