"""File descriptors: what a box inherits (only 0-2 and pass_fds, never the caller's other fds, not even as a
working directory), with close_fds, without close_range, and with the caller's own fds 0-2 closed or swapped.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import nsbox
from helpers.drivers import PRELUDE, WATCH, drive
from helpers.mounts import chroot_script
from helpers.procs import kill_and_reap, proc_comm, start_box, wait_until
from helpers.rootless import SIDES, Body, Rootless


def _box_fds(**kwargs: Any) -> dict[int, str]:
    """fd -> target of every fd of the box's command, without the one ``ls`` opens for the listing."""
    r = nsbox.run(["ls", "-l", "/proc/self/fd"], capture_output=True, text=True, check=True, **kwargs)
    fds = {}
    for line in r.stdout.splitlines()[1:]:
        name, target = line.split(" -> ")
        fds[int(name.split()[-1])] = target
    listing = [fd for fd, target in fds.items() if target.startswith("/proc/") and target.endswith("/fd")]
    assert len(listing) == 1, r.stdout
    del fds[listing[0]]
    return fds


@pytest.mark.parametrize("options", [{}, {"pid": True, "mount_proc": True}, {"user": True, "net": True}])
def test_box_sees_only_fds_0_1_2_and_pass_fds(options: dict[str, bool], tmp_path: Path) -> None:
    # Inheritable fds in the caller, which a plain fork+exec would hand down.
    r, w = os.pipe()
    os.set_inheritable(r, True)
    os.set_inheritable(w, True)
    plain = os.open(tmp_path / "plain-file", os.O_WRONLY | os.O_CREAT, 0o600)
    os.set_inheritable(plain, True)
    try:
        leaky = subprocess.run(["ls", "/proc/self/fd"], close_fds=False, capture_output=True, text=True, check=True)
        assert {str(r), str(w), str(plain)} <= set(leaky.stdout.split()), "control: the fds are inheritable"
        assert sorted(_box_fds(**options)) == [0, 1, 2]
        passed = _box_fds(pass_fds=[w], **options)
        assert sorted(passed) == [0, 1, 2, w]
        assert passed[w].startswith("pipe:")
    finally:
        for fd in (r, w, plain):
            os.close(fd)


def test_pass_fds_are_usable_inside_and_other_fds_are_not(python: str) -> None:
    code = textwrap.dedent(
        """
        import os, sys
        passed, other = int(sys.argv[1]), int(sys.argv[2])
        os.write(passed, b"through-pipe\\n")
        try:
            os.write(other, b"leaked\\n")
        except OSError as e:
            print(e.errno)
        """
    )
    passed_r, passed_w = os.pipe()
    other_r, other_w = os.pipe()
    os.set_inheritable(other_w, True)  # even an inheritable fd stays out unless passed
    with os.fdopen(passed_r) as passed, os.fdopen(other_r) as other:
        with os.fdopen(passed_w, "w") as pw, os.fdopen(other_w, "w") as ow:
            r = nsbox.run(
                [python, "-c", code, str(pw.fileno()), str(ow.fileno())],
                pass_fds=[pw.fileno()],
                pid=True,
                capture_output=True,
                text=True,
            )
        assert (r.returncode, r.stdout, r.stderr) == (0, f"{errno.EBADF}\n", "")
        assert passed.read() == "through-pipe\n"
        assert other.read() == ""


@pytest.mark.parametrize("closed", ["0", "1,2", "0,1,2"])
def test_works_when_the_caller_has_closed_standard_fds(python: str, closed: str, tmp_path: Path) -> None:
    # The pipes subprocess makes then land on 0, 1 or 2, where the box's stdio must not clobber them.
    out = tmp_path / "report"
    code = textwrap.dedent(
        f"""
        import json, os, subprocess, nsbox
        for fd in ({closed},):
            os.close(fd)
        results = []
        for runner in (subprocess.run, nsbox.run):
            r = runner(["sh", "-c", "cat; echo err >&2; ls /proc/self/fd | wc -l"], input=b"in", capture_output=True)
            results.append([r.returncode, r.stdout.decode(), r.stderr.decode()])
        with open({str(out)!r}, "w") as f:
            json.dump(results, f)
        """
    )
    subprocess.run([python, "-c", code], check=True, timeout=30)
    plain, boxed = json.loads(out.read_text())
    assert boxed == plain == [0, "in4\n", "err\n"]


def test_pass_fds_with_close_fds_false_warns_and_proceeds_as_subprocess_does() -> None:
    r, w = os.pipe()
    try:
        with pytest.warns(RuntimeWarning, match="pass_fds overriding close_fds"):
            box = nsbox.Popen(["sh", "-c", f"echo through >/proc/self/fd/{w}"], close_fds=False, pass_fds=[w], pid=True)
        assert box.wait() == 0
        os.close(w)
        w = -1
        assert os.read(r, 100) == b"through\n"  # the passed fd reached the box
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
    with pytest.raises(ValueError, match="pass_fds"):
        nsbox.Popen(["true"], close_fds=False)


def _host_only(base: Path) -> tuple[Path, int, int]:
    """A directory with a marker file, and a non-inheritable fd on each (as Python opens every fd)."""
    secret = base / "host-only"
    secret.mkdir()
    (secret / "marker").write_text("host")
    dir_fd = os.open(secret, os.O_RDONLY | os.O_DIRECTORY)
    file_fd = os.open(secret / "marker", os.O_RDONLY)
    assert not os.get_inheritable(dir_fd) and not os.get_inheritable(file_fd)
    return secret, dir_fd, file_fd


FD_OPTIONS = {
    "none": {},
    "pid-proc": {"pid": True, "mount_proc": True},
    "user-net": {"user": True, "net": True},
    "init": {"init": True, "mount_proc": True},
    "time": {"time": True},
}


@pytest.mark.parametrize("kind", FD_OPTIONS)
def test_callers_non_inheritable_fds_are_not_in_the_box_nor_usable_as_cwd(tmp_path: Path, kind: str) -> None:
    options = FD_OPTIONS[kind]
    _, dir_fd, file_fd = _host_only(tmp_path)
    try:
        # The control: subprocess changes directory before it closes fds, so there the path works.
        plain = subprocess.run(["cat", "marker"], cwd=f"/proc/self/fd/{dir_fd}", capture_output=True, text=True)
        assert plain.stdout == "host"
        listing = nsbox.run(["ls", "/proc/self/fd"], capture_output=True, text=True, check=True, **options)
        assert sorted(listing.stdout.split()) == ["0", "1", "2", "3"]  # 3: ls's own directory fd
        with pytest.raises(FileNotFoundError) as info:
            nsbox.run(["cat", "marker"], cwd=f"/proc/self/fd/{dir_fd}", capture_output=True, **options)
        assert info.value.filename == f"/proc/self/fd/{dir_fd}"
        r = nsbox.run(["cat", f"/proc/self/fd/{file_fd}"], capture_output=True, text=True, **options)
        assert (r.returncode, r.stdout) == (1, "")
    finally:
        os.close(dir_fd)
        os.close(file_fd)


def test_exec_into_a_chrooted_box_cannot_leave_it_through_a_callers_fd(world_tmp: Path) -> None:
    root = world_tmp / "root"
    root.mkdir()
    secret, dir_fd, file_fd = _host_only(world_tmp)
    script = f"{chroot_script(root)} && mkdir proc && mount -t proc proc proc && echo ready && exec chroot . sleep 1000"
    box = start_box(["sh", "-c", script], pid=True, mount=True)
    try:
        assert wait_until(lambda: proc_comm(box.pid) == "sleep")
        listing = box.exec(["ls", "/proc/self/fd"], capture_output=True, text=True, check=True)
        assert sorted(listing.stdout.split()) == ["0", "1", "2", "3"]
        with pytest.raises(FileNotFoundError):
            box.exec(["cat", "marker"], cwd=f"/proc/self/fd/{dir_fd}", capture_output=True)
        r = box.exec(["sh", "-c", f"cat /proc/self/fd/{file_fd}; ls /"], capture_output=True, text=True)
        assert "host" not in r.stdout and "BOX-ROOT" in r.stdout.split()
        assert (secret / "marker").read_text() == "host"
    finally:
        os.close(dir_fd)
        os.close(file_fd)
        kill_and_reap(box)


def test_rootless_callers_fds_are_not_in_the_box_nor_usable_as_cwd(rootless: Rootless, world_tmp: Path) -> None:
    (world_tmp / "marker").write_text("host")
    seen = rootless(
        f"""
        dir_fd = os.open({str(world_tmp)!r}, os.O_RDONLY | os.O_DIRECTORY)
        out = {{}}
        for name, options in [("pid", {{"pid": True, "mount_proc": True}}), ("user-net", {{"net": True}})]:
            listing = nsbox.run(["ls", "/proc/self/fd"], capture_output=True, text=True, **options)
            try:
                r = nsbox.run(["cat", "marker"], cwd=f"/proc/self/fd/{{dir_fd}}", capture_output=True, **options)
                cwd = ["ran", r.returncode, r.stdout.decode()]
            except OSError as e:
                cwd = [type(e).__name__, e.filename]
            out[name] = [sorted(listing.stdout.split()), cwd]
        emit({{"fd": dir_fd, "out": out}})
        """
    )
    for name in ("pid", "user-net"):
        listing, cwd = seen["out"][name]
        assert listing == ["0", "1", "2", "3"], name
        assert cwd == ["FileNotFoundError", f"/proc/self/fd/{seen['fd']}"], name


CLOSE_RANGE_PROBE = """
leaked = os.open("/dev/null", os.O_RDONLY)
os.set_inheritable(leaked, True)
kept = os.open("/dev/null", os.O_RDONLY)
out = []
for options in [{}, {"pid": True, "mount_proc": True}, {"user": True, "net": True}]:
    r = nsbox.run(["sh", "-c", "ls /proc/$$/fd"], pass_fds=[kept], capture_output=True, text=True, **options)
    out.append(sorted(int(fd) for fd in r.stdout.split()))
emit({"fds": out, "kept": kept, "leaked": leaked})
"""


@pytest.mark.parametrize("error", ["ENOSYS", "EPERM", "EINVAL"])
def test_spawns_work_and_close_every_fd_where_close_range_fails(error: str, tmp_path: Path) -> None:
    log = tmp_path / "strace.log"
    cmd = ["strace", "-f", "-qq", "-o", str(log), "-e", "trace=close_range"]
    cmd += ["-e", f"inject=close_range:error={error}", sys.executable, "-c", PRELUDE + CLOSE_RANGE_PROBE]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout.strip().splitlines()[-1])
    # The control: close_range really was called, and failed as injected.
    assert f"= -1 {error}" in log.read_text() and "(INJECTED)" in log.read_text()
    # Inside: only 0-2 and the passed fd (the shell's own listing may add one above them).
    for fds in report["fds"]:
        assert report["leaked"] not in fds
        assert {0, 1, 2, report["kept"]} <= set(fds)
        assert len(set(fds) - {0, 1, 2, report["kept"]}) <= 1, fds


CLOSED_STDIO = """
import shutil
for fd in (0, 1, 2):
    os.close(fd)
out = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)  # lands on fd 0
# The first spawn with init makes the helper's memfd while fds 1 and 2 are free (a daemon's state).
nsbox.run(["true"], init=True, stdin=out, stdout=out, stderr=out)
results = []
for _ in range(3):
    r = nsbox.run(["echo", "ok"], init=True, stdin=subprocess.DEVNULL,
                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    results.append([r.returncode, r.stdout.split()[0] if r.stdout else ""])
box = nsbox.Popen(["sleep", "60"], time=True, pid=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                  stderr=subprocess.DEVNULL)
r = box.exec(["echo", "in"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
results.append([r.returncode, r.stdout.strip()])
box.kill(); box.wait()
os.write(out, json.dumps(results).encode())
"""


def test_a_caller_with_fds_0_to_2_closed_can_use_init_and_exec_into_a_time_namespace(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    r = subprocess.run([sys.executable, "-c", PRELUDE + CLOSED_STDIO, str(out)], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(out.read_text()) == [[0, "ok"]] * 3 + [[0, "in"]]


PLANTED = """
nsbox.run(["true"], init=True)                 # the helper's memfd is made and kept
os.closerange(3, 4096)                          # a daemon closing "every other fd"
planted = os.open(sys.argv[1], os.O_RDONLY)     # takes the lowest free number: maybe the memfd's
r = nsbox.run(["echo", "the command ran"], init=True, pid=True, capture_output=True, text=True)
box = nsbox.Popen(["sleep", "60"], init=True)
pid1 = open(f"/proc/{box.pid}/cmdline", "rb").read().split(b"\\0")[0].decode()
box.kill(); box.wait()
emit({"out": r.stdout, "err": r.stderr, "planted_fd": planted, "pid1": pid1})
"""


def test_a_reused_fd_number_is_never_executed_as_the_init(world_tmp: Path) -> None:
    planted = world_tmp / "planted"
    planted.write_text("#!/bin/sh\necho PLANTED\n")
    planted.chmod(0o755)
    report = drive(PLANTED, str(planted))
    assert report["out"] == "the command ran\n" and "PLANTED" not in report["out"], report
    assert report["pid1"] == "nsbox-init"


_STDIO = r"""
report, mode, directory = sys.argv[1], sys.argv[2], sys.argv[3]
CASES = {"pid": {"pid": True}, "user-net": {"user": True, "net": True}, "init": {"init": True}, "time": {"time": True}}
target = nsbox.Popen(["sleep", "1000"], pid=True, net=True)  # to exec into; started while stdio is intact
out_path, err_path = os.path.join(directory, "fd1"), os.path.join(directory, "fd2")
if mode == "closed":
    for fd in (0, 1, 2):
        os.close(fd)  # the pipes for the boxes then land on 0, 1 and 2
else:
    # fd 1 and fd 2 on two files, then swapped: what a box inherits must be the caller's fds as they are now.
    os.dup2(os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644), 1)
    os.dup2(os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644), 2)
    saved = os.dup(1)
    os.dup2(2, 1)
    os.dup2(saved, 2)
    os.close(saved)
results = {}
for name in [*CASES, "exec"]:
    def run(args, **kwargs):
        if name == "exec":
            return target.exec(args, **kwargs)
        return nsbox.run(args, **kwargs, **CASES[name])
    piped = run(["sh", "-c", "cat; echo from-2 >&2"], input=f"in-{name}".encode(), capture_output=True)
    results[name] = [piped.returncode, piped.stdout.decode(), piped.stderr.decode()]
    if mode == "swapped":
        run(["sh", "-c", f"echo {name}-wrote-1; echo {name}-wrote-2 >&2"], stdin=subprocess.DEVNULL)
target.kill()
target.wait()
if mode == "swapped":
    results["fd1-file"] = open(out_path).read().split()
    results["fd2-file"] = open(err_path).read().split()
with open(report, "w") as f:
    json.dump(results, f)
"""


_STDIO_CASES = ["pid", "user-net", "init", "time", "exec"]


def _check_stdio(mode: str, results: dict[str, Any]) -> None:
    for name in _STDIO_CASES:
        assert results[name] == [0, f"in-{name}", "from-2\n"], name
    if mode == "swapped":
        # What the boxes wrote on their fd 1 went to the caller's (new) fd 1: the file that was its stderr.
        assert results["fd2-file"] == [f"{name}-wrote-1" for name in _STDIO_CASES]
        assert results["fd1-file"] == [f"{name}-wrote-2" for name in _STDIO_CASES]


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("mode", ["closed", "swapped"])
def test_box_gets_the_requested_stdio_when_the_callers_fds_0_to_2_are_closed_or_swapped(
    body: Body, side: str, world_tmp: Path, mode: str
) -> None:
    report = world_tmp / "report"
    body(side, "run_python", source=WATCH + _STDIO, args=[str(report), mode, str(world_tmp)])
    _check_stdio(mode, json.loads(report.read_text()))
