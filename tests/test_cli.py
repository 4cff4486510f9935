"""The ``nsbox`` command line, compared with util-linux ``unshare`` and ``nsenter`` on the same flags.

Every comparison runs twice: as root, and as the unprivileged user 65534 (``setpriv``, Debian's
world-readable ``/usr/bin/python3`` and a world-readable copy of the installed package, since the
test virtualenv lives under /root, mode 0700). Without root, nsbox makes a user namespace in which
you are root whenever another namespace is asked for, so there ``nsbox FLAGS`` is compared with
``unshare -r FLAGS``. nsbox always forks, so ``unshare`` always gets ``-f`` (``--fork``) too.
"""

from __future__ import annotations

import os
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import nsbox
from helpers.mounts import host_mounts
from helpers.procs import children_of, proc_comm, proc_state, wait_until

NAMESPACES = ("cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts")
READ_NAMESPACES = ["readlink", *(f"/proc/self/ns/{kind}" for kind in NAMESPACES)]
NOBODY = 65534
ROOTLESS_PYTHON = "/usr/bin/python3"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: Options that make a user namespace themselves (nsbox without root adds one for any other option).
USER_OPTIONS = re.compile(r"^(-[a-zA-Z]*[Urc][a-zA-Z]*|--user|--map-.*)$")
#: unshare's options that take the next argument as their value.
VALUE_OPTIONS = {"-w", "--wd", "-R", "--root", "-S", "--setuid", "-G", "--setgid", "--propagation", "--setgroups"}
VALUE_OPTIONS |= {"--map-user", "--map-group", "--map-users", "--map-groups", "--monotonic", "--boottime"}


def leading_options(args: Sequence[str]) -> list[str]:
    """The options at the start of an unshare command line (up to ``--`` or the program)."""
    options: list[str] = []
    args = list(args)
    while args and args[0].startswith("-") and args[0] != "--":
        options.append(args.pop(0))
        if options[-1] in VALUE_OPTIONS and args:
            options.append(args.pop(0))
    return options


# ---------------------------------------------------------------------------------------------------------------
# Helpers


def host_namespaces() -> dict[str, str]:
    return {kind: os.readlink(f"/proc/self/ns/{kind}") for kind in NAMESPACES}


def is_gone(pid: int) -> bool:
    return proc_state(pid) in (None, "Z", "X")


def stop(process: subprocess.Popen[Any]) -> None:
    """Cleanup for a process a test started: SIGKILL if still running, reap, close its pipes."""
    if process.poll() is None:
        process.kill()
    process.wait(timeout=10)
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            stream.close()


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The single ``nsbox: ...`` line a failure prints (and nothing else, no traceback)."""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("nsbox: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def shell_status(command: Sequence[str], runner: Runner) -> int:
    """The exit status of ``command`` as a shell reports it (``$?``: 128+N when signal N killed it)."""
    r = runner.run(["sh", "-c", f"{shlex.join(command)}; echo status=$?"])
    match = re.search(r"status=(\d+)", r.stdout)
    assert match, (r.stdout, r.stderr)
    return int(match.group(1))


def mount_table(mountinfo: str) -> list[tuple[str, ...]]:
    """``/proc/self/mountinfo`` without ids: mount point, options, propagation kinds, type, source, super options.

    Without the mounts in the scratch directories, where other users of the machine mount and unmount meanwhile.
    """
    table = []
    for line in host_mounts(text=mountinfo):
        fields = line.split()
        dash = fields.index("-")
        propagation = ",".join(sorted(tag.split(":")[0] for tag in fields[6:dash]))
        table.append((fields[4], fields[5], propagation, *fields[dash + 1 : dash + 4]))
    return table


def ps_rows(output: str) -> list[tuple[str, ...]]:
    """``ps -ef`` without the times: (UID, PID, PPID, CMD) per process."""
    header, *rows = output.splitlines()
    assert header.split()[:3] == ["UID", "PID", "PPID"], output
    return [tuple([*(fields := row.split(None, 7))[:3], fields[7]]) for row in rows]


# ---------------------------------------------------------------------------------------------------------------
# Running things as root and as uid 65534


@dataclass
class Runner:
    """Runs commands as root or as uid 65534, and ``nsbox`` as ``python -m nsbox``."""

    name: str
    python: str
    env: dict[str, str]
    prefix: list[str] = field(default_factory=list)

    @property
    def rootless(self) -> bool:
        return bool(self.prefix)

    def argv(self, command: Sequence[str]) -> list[str]:
        return [*self.prefix, *command]

    def nsbox_argv(self, *args: str) -> list[str]:
        return [self.python, "-m", "nsbox", *args]

    def unshare_argv(self, *args: str) -> list[str]:
        """``unshare -f ARGS``, and ``-r`` without root when ARGS ask for namespaces but no user namespace."""
        options = leading_options(args)
        extra = ["-r"] if self.rootless and options and not any(USER_OPTIONS.match(a) for a in options) else []
        return ["unshare", "-f", *extra, *args]

    def run(self, command: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        kwargs.setdefault("timeout", 60)
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("env", self.env)
        return subprocess.run(self.argv(command), text=True, cwd="/tmp", check=False, **kwargs)

    def popen(self, command: Sequence[str], **kwargs: Any) -> subprocess.Popen[str]:
        return subprocess.Popen(self.argv(command), text=True, env=self.env, cwd="/tmp", **kwargs)

    def nsbox(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return self.run(self.nsbox_argv(*args), **kwargs)

    def unshare(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return self.run(self.unshare_argv(*args), **kwargs)


@pytest.fixture(scope="module")
def rootless_package() -> Iterator[Path]:
    """A world-readable copy of the installed nsbox package, for the unprivileged interpreter."""
    if os.geteuid() != 0:
        pytest.fail("the CLI tests run as root; they drop to uid 65534 themselves for the rootless half")
    for tool in ("setpriv", "unshare", "nsenter", "setsid", "ps"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is needed (util-linux, procps)")
    base = Path(tempfile.mkdtemp(prefix="nsbox-cli-rootless-", dir="/tmp"))
    try:
        shutil.copytree(os.path.dirname(nsbox.__file__), base / "nsbox", ignore=shutil.ignore_patterns("__pycache__"))
        for root, dirs, files in os.walk(base):
            for name in [*dirs, *files, "."]:
                path = os.path.join(root, name)
                os.chmod(path, os.stat(path).st_mode | 0o444 | (0o111 if os.path.isdir(path) else 0))
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _root_runner() -> Runner:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    return Runner("root", sys.executable, env | {"PATH": SYSTEM_PATH, "SHELL": "/bin/sh"})


def _rootless_runner(package: Path) -> Runner:
    env = {
        "PATH": SYSTEM_PATH,
        "PYTHONPATH": str(package),
        "PYTHONDONTWRITEBYTECODE": "1",
        "HOME": "/tmp",
        "LC_ALL": "C.UTF-8",
        "SHELL": "/bin/sh",
    }
    prefix = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    return Runner("rootless", ROOTLESS_PYTHON, env, prefix)


@pytest.fixture(params=["root", "rootless"])
def runner(request: pytest.FixtureRequest) -> Runner:
    if request.param == "root":
        return _root_runner()
    return _rootless_runner(request.getfixturevalue("rootless_package"))


@pytest.fixture
def root() -> Runner:
    return _root_runner()


@pytest.fixture(autouse=True)
def no_leftover_children() -> Iterator[None]:
    """Every test reaps what it starts: no child of the test runner may be left behind."""
    yield
    if not wait_until(lambda: not children_of(os.getpid()), timeout=3):
        leftover = children_of(os.getpid())
        for pid in leftover:
            with suppress(OSError):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
        pytest.fail(f"the test left child processes behind: {leftover}")


def test_rootless_runner_is_uid_65534_without_capabilities_and_uses_the_copy(
    rootless_package: Path,
) -> None:
    runner = _rootless_runner(rootless_package)
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
# Same namespaces, mounts, PID view and ids as unshare


NAMESPACE_CASES = [
    [],
    ["-m"],
    ["-u"],
    ["-i"],
    ["-n"],
    ["-p"],
    ["-U"],
    ["-C"],
    ["-T"],
    ["-r"],
    ["--mount-proc", "-p"],
    ["--net", "--uts", "--ipc"],
    ["-mUuinpCT"],
    ["--map-user=1000", "-n"],
    ["-c", "-m"],
]


@pytest.mark.parametrize("flags", NAMESPACE_CASES, ids=lambda f: " ".join(f) or "none")
def test_creates_the_same_namespaces_as_unshare(runner: Runner, flags: list[str]) -> None:
    host = host_namespaces()  # uid 65534 runs in the test runner's namespaces too
    theirs = runner.unshare(*flags, *READ_NAMESPACES)
    ours = runner.nsbox("-f", *flags, *READ_NAMESPACES)
    assert theirs.returncode == 0, theirs.stderr
    assert ours.returncode == 0, ours.stderr

    def created(output: str) -> set[str]:
        return {kind for kind, link in zip(NAMESPACES, output.split(), strict=True) if link != host[kind]}

    assert created(ours.stdout) == created(theirs.stdout)
    if not runner.rootless and not any(USER_OPTIONS.match(f) for f in flags):
        assert "user" not in created(ours.stdout)


@pytest.mark.parametrize(
    "flags",
    [
        ["-U"],
        ["-r"],
        ["-c"],
        ["--map-user=1000"],
        ["--map-group=100"],
        ["--map-user=daemon", "--map-group=daemon"],
        ["-r", "--map-user=7"],
        ["--map-user=7", "-r"],
        ["-n"],
    ],
    ids=lambda f: " ".join(f),
)
def test_ids_inside_are_unshares(runner: Runner, flags: list[str]) -> None:
    show = ["sh", "-c", "id -u; id -g; id -G"]
    theirs = runner.unshare(*flags, *show)
    ours = runner.nsbox(*flags, *show)
    assert theirs.returncode == 0, theirs.stderr
    assert (ours.returncode, ours.stdout) == (0, theirs.stdout), ours.stderr


# (unshare -r --setgroups=deny fails: it writes setgroups again after the gid map.)
@pytest.mark.parametrize("flags", [["-r"], ["--map-user=0", "--setgroups=deny"], ["-U", "--setgroups", "deny"]])
def test_setgroups_file_inside_is_unshares(runner: Runner, flags: list[str]) -> None:
    theirs = runner.unshare(*flags, "cat", "/proc/self/setgroups")
    ours = runner.nsbox(*flags, "cat", "/proc/self/setgroups")
    assert theirs.returncode == 0, theirs.stderr
    assert (ours.returncode, ours.stdout) == (0, theirs.stdout), ours.stderr


def test_setgroups_allow_with_user_namespace_as_root_is_unshares(root: Runner) -> None:
    for flags in (["-U"], ["-U", "--setgroups=allow"]):
        theirs = root.unshare(*flags, "cat", "/proc/self/setgroups")
        ours = root.nsbox(*flags, "cat", "/proc/self/setgroups")
        assert (ours.returncode, ours.stdout) == (0, theirs.stdout) == (0, "allow\n"), ours.stderr


@pytest.mark.parametrize(
    "flags",
    [
        ["-p", "--mount-proc"],
        ["-pm", "--mount-proc=/proc"],
        ["-m"],
        ["-m", "--propagation", "slave"],
        ["-m", "--propagation=shared"],
        ["-m", "--propagation=unchanged"],
        ["-p", "--mount-proc", "--propagation=slave"],
        ["-p", "--mount-proc", "--propagation=private"],
        ["-p", "--mount-proc", "--propagation=shared"],
        ["-p", "--mount-proc", "--propagation=unchanged"],
    ],
    ids=lambda f: " ".join(f),
)
def test_mounts_are_unshares(runner: Runner, flags: list[str]) -> None:
    theirs = runner.unshare(*flags, "cat", "/proc/self/mountinfo")
    ours = runner.nsbox(*flags, "cat", "/proc/self/mountinfo")
    assert theirs.returncode == 0, theirs.stderr
    assert ours.returncode == 0, ours.stderr
    assert mount_table(ours.stdout) == mount_table(theirs.stdout)
    if "--mount-proc" in "".join(flags):
        proc = [row for row in mount_table(ours.stdout) if row[0] == "/proc"]
        assert proc[-1][3:5] == ("proc", "proc")
        assert {"nosuid", "nodev", "noexec"} <= set(proc[-1][1].split(","))


def test_ps_in_a_pid_namespace_shows_itself_as_pid_1_as_with_unshare(runner: Runner) -> None:
    theirs = runner.unshare("-p", "--mount-proc", "ps", "-ef")
    ours = runner.nsbox("-p", "--mount-proc", "ps", "-ef")
    assert theirs.returncode == 0, theirs.stderr
    assert ours.returncode == 0, ours.stderr
    assert ps_rows(ours.stdout) == ps_rows(theirs.stdout) == [("root", "1", "0", "ps -ef")]


def test_program_sees_its_pid_as_1_and_its_children_in_the_box(runner: Runner) -> None:
    script = "echo $$; sh -c 'echo $$'; cat /proc/self/status | grep -c NSpid"
    theirs = runner.unshare("-p", "--mount-proc", "sh", "-c", script)
    ours = runner.nsbox("-p", "--mount-proc", "sh", "-c", script)
    assert ours.returncode == 0, ours.stderr
    assert ours.stdout.split()[:2] == theirs.stdout.split()[:2] == ["1", "2"]


def test_working_directory_is_unshares(runner: Runner) -> None:
    theirs = runner.unshare("-w", "/usr", "pwd")
    ours = runner.nsbox("-w", "/usr", "pwd")
    ours_long = runner.nsbox("--wd=/usr/lib", "-m", "pwd")
    assert (ours.returncode, ours.stdout) == (0, theirs.stdout) == (0, "/usr\n")
    assert (ours_long.returncode, ours_long.stdout) == (0, "/usr/lib\n"), ours_long.stderr


def test_root_and_mount_proc_dir_are_unshares(runner: Runner, tiny_root: Path) -> None:
    # As unshare: chroot into DIR, start in its /, mount proc at the given path inside the new root.
    script = (
        "pwd; test -e /bin/sh && echo has-sh; test -e /proc/1/status && echo proc;"
        " test -e /mnt/1/status && echo mnt; true"
    )
    for flags in (["-p", "--mount-proc"], ["-p", "--mount-proc=/mnt"]):
        theirs = runner.unshare("-R", str(tiny_root), "-f", *flags, "/bin/sh", "-c", script)
        ours = runner.nsbox("-R", str(tiny_root), *flags, "/bin/sh", "-c", script)
        assert theirs.returncode == 0, theirs.stderr
        assert (ours.returncode, ours.stdout) == (0, theirs.stdout), ours.stderr
    assert runner.nsbox("--root", str(tiny_root), "/bin/sh", "-c", "pwd").stdout == "/\n"
    # Nothing was mounted in the directory on the host.
    assert not (tiny_root / "proc" / "1").exists() and not (tiny_root / "mnt" / "1").exists()


def test_boottime_offset_is_unshares(runner: Runner) -> None:
    theirs = runner.unshare("-T", "--boottime", "86400", "cat", "/proc/uptime")
    ours = runner.nsbox("-T", "--boottime", "86400", "cat", "/proc/uptime")
    assert theirs.returncode == 0, theirs.stderr
    assert ours.returncode == 0, ours.stderr
    ours_uptime, theirs_uptime = float(ours.stdout.split()[0]), float(theirs.stdout.split()[0])
    assert ours_uptime > 86400
    assert abs(ours_uptime - theirs_uptime) < 30


def test_monotonic_offset_moves_the_monotonic_clock(runner: Runner) -> None:
    read = ["python3", "-c", "import time; print(time.monotonic())"]
    before = float(runner.run(read).stdout)
    ours = runner.nsbox("-T", "--monotonic", "3600", *read)
    assert ours.returncode == 0, ours.stderr
    assert float(ours.stdout) - before > 3500


def test_hostname_is_set_inside_and_the_hosts_is_unchanged(runner: Runner) -> None:
    host = os.uname().nodename
    r = runner.nsbox("--hostname", "cli-box", "hostname")
    assert (r.returncode, r.stdout) == (0, "cli-box\n"), r.stderr
    assert os.uname().nodename == host


def test_init_runs_the_program_as_pid_2_and_passes_its_exit_status(runner: Runner) -> None:
    r = runner.nsbox("--init", "sh", "-c", "echo $$; exit 5")
    assert (r.returncode, r.stdout) == (5, "2\n"), r.stderr


# ---------------------------------------------------------------------------------------------------------------
# Exit statuses


@pytest.mark.parametrize("flags", [[], ["-p"], ["-n", "--mount-proc", "-p"]], ids=lambda f: " ".join(f) or "none")
def test_exit_status_is_the_programs_as_with_unshare(runner: Runner, flags: list[str]) -> None:
    theirs = runner.unshare(*flags, "sh", "-c", "exit 3")
    ours = runner.nsbox(*flags, "sh", "-c", "exit 3")
    assert ours.returncode == theirs.returncode == 3, ours.stderr


@pytest.mark.parametrize("flags", [[], ["-n"]], ids=lambda f: " ".join(f) or "none")
def test_killed_by_a_signal_is_128_plus_n_as_a_shell_reports_unshare(runner: Runner, flags: list[str]) -> None:
    program = ["sh", "-c", "kill -USR1 $$"]
    # unshare kills itself with the same signal; a shell reports that as 128+N, which nsbox returns.
    theirs = runner.unshare(*flags, *program)
    ours = runner.nsbox(*flags, *program)
    assert theirs.returncode == -signal.SIGUSR1
    assert ours.returncode == 128 + signal.SIGUSR1
    assert ours.stderr == ""
    assert shell_status(runner.nsbox_argv(*flags, *program), runner) == shell_status(
        runner.unshare_argv(*flags, *program), runner
    )


def test_pid_1_killed_from_outside_is_137_as_a_shell_reports_unshare(runner: Runner) -> None:
    results = {}
    for name, command in (
        ("nsbox", runner.nsbox_argv("-p", "sleep", "1000")),
        ("unshare", runner.unshare_argv("-p", "sleep", "1000")),
    ):
        front = runner.popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            box = wait_for_descendant(front, "sleep")
            os.kill(box, signal.SIGKILL)
            front.wait(timeout=10)
            results[name] = (front.returncode, front.stderr.read() if front.stderr else "")
        finally:
            stop(front)
    assert results["nsbox"] == (128 + signal.SIGKILL, "")
    # unshare dies of the same signal, which a shell reports as 137 -- since util-linux 2.39. 2.38 fails
    # to unblock SIGKILL for itself and exits 1 instead.
    assert results["unshare"] in ((-signal.SIGKILL, ""), (1, "unshare: sigprocmask unblock failed: Invalid argument\n"))


def test_program_not_found_is_127_with_unshares_message(runner: Runner) -> None:
    theirs = runner.unshare("-n", "no-such-program-here")
    ours = runner.nsbox("-n", "no-such-program-here")
    assert ours.returncode == theirs.returncode == 127
    assert one_line_error(ours) == theirs.stderr.strip().replace("unshare: ", "nsbox: ")
    assert ours.stdout == ""


def test_program_not_executable_is_126_with_unshares_message(runner: Runner) -> None:
    theirs = runner.unshare("-n", "/etc/passwd")
    ours = runner.nsbox("-n", "/etc/passwd")
    assert ours.returncode == theirs.returncode == 126
    assert one_line_error(ours) == theirs.stderr.strip().replace("unshare: ", "nsbox: ")


def test_missing_working_directory_is_1_with_unshares_message(runner: Runner) -> None:
    theirs = runner.unshare("-w", "/no/such/dir", "true")
    ours = runner.nsbox("-w", "/no/such/dir", "true")
    assert ours.returncode == theirs.returncode == 1
    assert one_line_error(ours) == theirs.stderr.strip().replace("unshare: ", "nsbox: ")


def test_runtime_failure_is_one_line_and_exit_1(runner: Runner) -> None:
    if runner.rootless:
        # Without root, proc can only be mounted for a PID namespace of one's own; unshare fails too.
        theirs = runner.unshare("--mount-proc", "true")
        ours = runner.nsbox("--mount-proc", "true")
        assert theirs.returncode == 1
        assert "Operation not permitted" in one_line_error(ours)
        assert "add -p" in one_line_error(ours)  # the core's hint, in the command line's words
    else:
        ours = runner.nsbox("exec", "--target", "999999999", "true")
        assert "999999999" in one_line_error(ours)
    assert ours.returncode == 1
    assert ours.stdout == ""


def test_entering_another_users_process_without_root_is_one_line_and_exit_1(rootless_package: Path) -> None:
    runner = _rootless_runner(rootless_package)
    r = runner.nsbox("exec", "--target", str(os.getpid()), "true")
    assert r.returncode == 1
    assert "Permission denied" in one_line_error(r)


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


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        for child in children_of(todo.pop()):
            found.append(child)
            todo.append(child)
    return found


def wait_for_descendant(front: subprocess.Popen[str], comm: str) -> int:
    """The PID of the first descendant of ``front`` running ``comm``, once there is one."""
    found: list[int] = []

    def started() -> bool:
        found[:] = [c for c in _descendants(front.pid) if proc_comm(c) == comm]
        return bool(found) or front.poll() is not None

    if not wait_until(started, timeout=10) or not found:
        stderr = front.stderr.read() if front.poll() is not None and front.stderr else ""
        pytest.fail(f"{comm} did not start under {front.args!r}: exit status {front.returncode}, {stderr}")
    return found[0]


@dataclass
class Box:
    """A box started with the CLI: ``front`` is the nsbox (or unshare) process, ``pid`` the box's first."""

    front: subprocess.Popen[str]
    pid: int


@pytest.fixture
def start_box(runner: Runner) -> Iterator[Callable[..., Box]]:
    started: list[subprocess.Popen[str]] = []

    def start(*args: str, command: list[str] | None = None, comm: str = "sleep") -> Box:
        front = runner.popen(command or runner.nsbox_argv(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        started.append(front)
        return Box(front, wait_for_descendant(front, comm))

    yield start
    for front in started:
        stop(front)


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


# ---------------------------------------------------------------------------------------------------------------
# exec, ps, ns on a running box


def _nsenter(runner: Runner, *args: str) -> list[str]:
    # Without root, nsenter would setgroups() after entering a user namespace and fail; nsbox does not.
    return ["nsenter", *(["--preserve-credentials"] if runner.rootless else []), *args]


def test_exec_enters_every_namespace_as_nsenter_all_does(runner: Runner, start_box: Callable[..., Box]) -> None:
    box = start_box("-p", "-u", "-n", "-i", "--mount-proc", "sleep", "1000")
    # Without root, nsenter --all also tries the namespaces the box shares with the host (cgroup, time),
    # which its user namespace may not enter; nsbox, like nsenter with those left out, skips them.
    every = ["-U", "-m", "-u", "-i", "-n", "-p"] if runner.rootless else ["--all"]
    theirs = runner.run(_nsenter(runner, "-t", str(box.pid), *every, *READ_NAMESPACES))
    ours = runner.nsbox("exec", "--target", str(box.pid), *READ_NAMESPACES)
    ours_all = runner.nsbox("exec", "-at", str(box.pid), "--", *READ_NAMESPACES)
    assert theirs.returncode == 0, theirs.stderr
    assert (ours.returncode, ours.stdout) == (0, theirs.stdout), ours.stderr
    assert (ours_all.returncode, ours_all.stdout) == (0, theirs.stdout), ours_all.stderr
    box_namespaces = {kind: os.readlink(f"/proc/{box.pid}/ns/{kind}") for kind in NAMESPACES}
    assert ours.stdout.split() == [box_namespaces[kind] for kind in NAMESPACES]


def test_exec_without_namespace_flags_takes_the_targets_root_and_working_directory(
    runner: Runner, start_box: Callable[..., Box]
) -> None:
    box = start_box("-p", "--hostname", "the-box", "--mount-proc", "-w", "/usr", "sleep", "1000")
    r = runner.nsbox("exec", "-t", str(box.pid), "sh", "-c", "hostname; pwd; echo $$; ps -o pid= -p 1")
    assert r.returncode == 0, r.stderr
    hostname, cwd, pid, first = r.stdout.split()
    assert (hostname, cwd, first) == ("the-box", "/usr", "1")
    assert 1 < int(pid) < 100  # a PID of the box's namespace, not the host's
    # nsenter's -r and -w (the target's root and working directory) are what --all does anyway.
    implied = runner.nsbox("exec", "-t", str(box.pid), "--all", "-r", "-w", "pwd")
    assert (implied.returncode, implied.stdout) == (0, "/usr\n"), implied.stderr
    elsewhere = runner.nsbox("exec", "-t", str(box.pid), "--wdns", "/etc", "pwd")
    assert (elsewhere.returncode, elsewhere.stdout) == (0, "/etc\n"), elsewhere.stderr


@pytest.mark.parametrize("flags", [["-u"], ["-m", "-u", "-p"], ["-n", "-p"], ["--uts", "--ipc"]], ids=" ".join)
def test_exec_with_namespace_flags_enters_just_those_as_nsenter_does(
    runner: Runner, start_box: Callable[..., Box], flags: list[str]
) -> None:
    box = start_box("-p", "-u", "-n", "-i", "--hostname", "the-box", "--mount-proc", "-w", "/usr", "sleep", "1000")
    if runner.rootless:
        flags = ["-U", *flags]  # the box's namespaces belong to its user namespace
    show = ["sh", "-c", f"hostname; pwd; {shlex.join(READ_NAMESPACES)}"]
    theirs = runner.run(_nsenter(runner, "-t", str(box.pid), *flags, *show))
    ours = runner.nsbox("exec", "-t", str(box.pid), *flags, *show)
    assert theirs.returncode == 0, theirs.stderr
    assert (ours.returncode, ours.stdout) == (0, theirs.stdout), ours.stderr


def test_exec_with_namespace_files_as_nsenter_does(runner: Runner, start_box: Callable[..., Box]) -> None:
    box = start_box("-u", "--hostname", "the-box", "sleep", "1000")
    files = [f"--uts=/proc/{box.pid}/ns/uts"]
    if runner.rootless:
        files.insert(0, f"--user=/proc/{box.pid}/ns/user")
    theirs = runner.run(_nsenter(runner, *files, "hostname"))
    ours = runner.nsbox("exec", *files, "hostname")
    assert (ours.returncode, ours.stdout) == (0, theirs.stdout) == (0, "the-box\n"), ours.stderr


def test_exec_into_persisted_namespace_files(root: Runner, tmp_path: Path) -> None:
    persisted = tmp_path / "box"
    with nsbox.Popen(["sleep", "1000"], pid=True, hostname="kept", persist=persisted) as box:
        try:
            everything = root.nsbox("exec", "--target", str(persisted), "sh", "-c", "hostname; echo $$")
            assert (everything.returncode, everything.stdout) == (0, "kept\n2\n"), everything.stderr
        finally:
            box.kill()
    try:
        # The box is gone; its UTS namespace is kept by the bind mount.
        uts = root.nsbox("exec", "--target", str(persisted), "-u", "hostname")
        assert (uts.returncode, uts.stdout) == (0, "kept\n"), uts.stderr
        missing = root.nsbox("exec", "--target", str(persisted), "-n", "true")
        assert missing.returncode == 1
        assert one_line_error(missing) == f"nsbox: cannot open {persisted}/net: No such file or directory"
    finally:
        nsbox.release(persisted)


def test_exec_exit_status_and_errors(runner: Runner, start_box: Callable[..., Box]) -> None:
    box = start_box("-p", "sleep", "1000")
    target = ["exec", "-t", str(box.pid)]
    assert runner.nsbox(*target, "sh", "-c", "exit 4").returncode == 4
    assert runner.nsbox(*target, "sh", "-c", "kill -USR1 $$").returncode == 128 + signal.SIGUSR1
    missing = runner.nsbox(*target, "no-such-program-here")
    assert missing.returncode == 127
    assert one_line_error(missing) == "nsbox: failed to execute no-such-program-here: No such file or directory"
    gone = runner.nsbox("exec", "-t", "999999999", "-n", "true")
    assert gone.returncode == 1
    assert one_line_error(gone) == "nsbox: cannot enter process 999999999: it does not exist or has exited"


def test_exec_without_a_program_runs_the_shell_in_the_box(runner: Runner, start_box: Callable[..., Box]) -> None:
    box = start_box("-p", "--hostname", "the-box", "sleep", "1000")
    r = runner.nsbox("exec", "-t", str(box.pid), input="echo zero=$0; hostname; exit 3\n")
    assert (r.returncode, r.stdout) == (3, "zero=-sh\nthe-box\n"), r.stderr


def test_ps_prints_the_boxs_processes_with_host_and_inside_pids(runner: Runner, start_box: Callable[..., Box]) -> None:
    sleep = start_box("--init", "--mount-proc", "sleep", "1000").pid
    with open(f"/proc/{sleep}/status") as f:
        init = int(next(line.split()[1] for line in f if line.startswith("PPid:")))
    r = runner.nsbox("ps", str(init))
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"{nsbox.processes(init)!r}\n"
    header, *rows = r.stdout.splitlines()
    assert header.split() == ["HOST", "PID", "HOST", "PPID", "PID", "PPID", "COMMAND"]
    table = [row.split(None, 4) for row in rows]
    assert [row[2:4] for row in table] == [["1", "0"], ["2", "1"]]
    assert (table[0][0], table[1][0], table[1][4]) == (str(init), str(sleep), "sleep 1000")


def test_ns_prints_kind_and_inode_per_line(runner: Runner, start_box: Callable[..., Box]) -> None:
    box = start_box("-n", "-u", "sleep", "1000")
    r = runner.nsbox("ns", str(box.pid))
    assert r.returncode == 0, r.stderr
    printed = dict(line.split() for line in r.stdout.splitlines())
    assert {kind: int(inode) for kind, inode in printed.items()} == nsbox.namespaces(box.pid)
    assert printed["net"] == str(os.stat(f"/proc/{box.pid}/ns/net").st_ino)
    mine = runner.nsbox("ns")
    assert mine.returncode == 0, mine.stderr
    own = dict(line.split() for line in mine.stdout.splitlines())
    assert own["net"] == str(os.stat("/proc/self/ns/net").st_ino)  # nsbox's own namespaces are the host's


@pytest.mark.parametrize("command", [["ps"], ["ns"]])
def test_ps_and_ns_of_a_missing_process_are_one_line_and_exit_1(runner: Runner, command: list[str]) -> None:
    r = runner.nsbox(*command, "999999999")
    assert r.returncode == 1
    assert one_line_error(r).endswith("process 999999999: No such process")
