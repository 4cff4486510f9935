"""The box's own filesystem (issue 15): root= switched to with pivot_root, and Bind, Tmpfs, Overlay, Dev mounts.

Each behaviour is looked at from both sides: inside the box (what its processes see and can do) and on the host
(what reached the host's files, and that none of the box's mounts shows in the host's mount table). Every test
runs as root and, through the ``rootless`` fixture, as uid 65534.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import nsbox
from helpers.rootless import Rootless

BUSYBOX = "/bin/busybox"

#: The classic escape from a chroot: chroot into a subdirectory (the working directory stays outside it),
#: climb with "..", and chroot there. It reaches the host's root from a chroot; never from a pivot_root.
ESCAPE_C = r"""
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>
int main(int argc, char **argv) {
    mkdir("/escape-dir", 0755);
    if (chroot("/escape-dir") != 0) { perror("chroot"); return 2; }
    for (int i = 0; i < 64; i++) chdir("..");
    chroot(".");
    char buf[64] = {0};
    int fd = open(argv[1], O_RDONLY);
    if (fd < 0) { printf("not reached\n"); return 1; }
    read(fd, buf, sizeof buf - 1);
    printf("reached: %s\n", buf);
    return 0;
}
"""


@pytest.fixture(scope="session")
def escape_root() -> Iterator[Path]:
    """A directory holding only ``/escape`` (static), writable by every user (so a rootless box may mkdir)."""
    cc = shutil.which("cc")
    assert cc, "a C compiler is needed for this test (the Rust toolchain's linker): apt-get install gcc"
    base = Path(tempfile.mkdtemp(prefix="nsbox-escape-", dir="/tmp"))
    base.chmod(0o777)
    (base / "escape.c").write_text(ESCAPE_C)
    subprocess.run([cc, "-static", "-O2", "-o", str(base / "escape"), str(base / "escape.c")], check=True)
    (base / "escape.c").unlink()
    (base / "escape").chmod(0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def busybox() -> str:
    assert os.access(BUSYBOX, os.X_OK), "busybox-static is needed for these tests: apt-get install busybox-static"
    return BUSYBOX


def host_mount_lines(*marks: str) -> list[str]:
    """Lines of the host's mount table (this process's) that mention any of ``marks``."""
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if any(mark in line for mark in marks)]


# ---------------------------------------------------------------------------------------------------------------
# The new root, seen from inside and from the host


def test_the_box_sees_its_own_root_and_the_host_sees_none_of_its_mounts(busybox: str, world_tmp: Path) -> None:
    marks = ("/oldroot", "/newroot", "busybox", str(world_tmp))
    assert host_mount_lines(*marks) == []
    box = nsbox.Popen(
        [busybox, "sh", "-c", "cat /proc/self/mountinfo; echo ready; read x"],
        root=nsbox.Tmpfs(),
        mounts=[nsbox.Bind(busybox, "/bin/busybox"), nsbox.Tmpfs(str(world_tmp))],
        pid=True,
        mount_proc=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert box.stdout is not None and box.stdin is not None
    inside = []
    for line in box.stdout:
        if line == "ready\n":
            break
        inside.append(line.split())
    # Host side, while the box runs: nothing of its mounts; its own table (read through /proc) is the box's.
    during = host_mount_lines(*marks)
    theirs = Path(f"/proc/{box.pid}/mountinfo").read_text()
    box.communicate("\n", timeout=30)
    points = {fields[4]: fields[fields.index("-") + 1] for fields in inside}
    assert points.keys() == {"/", "/proc", "/bin/busybox", str(world_tmp)}
    assert (points["/"], points["/proc"], points[str(world_tmp)]) == ("tmpfs", "proc", "tmpfs")
    assert not any("oldroot" in " ".join(f) or "newroot" in " ".join(f) for f in inside)
    # The host reads the same table in /proc/PID: the box's mount namespace, not the host's.
    assert {line.split()[4] for line in theirs.splitlines()} == points.keys()
    assert during == [] and host_mount_lines(*marks) == []
    assert box.returncode == 0


def test_a_chroot_escape_reaches_the_host_but_not_from_a_pivoted_root(escape_root: Path, world_tmp: Path) -> None:
    marker = world_tmp / "marker"
    marker.write_text("host secret")
    marker.chmod(0o644)
    run = {"capture_output": True, "text": True}
    # Control: the same program in a chroot (what root= was) climbs out and reads the host's file.
    chrooted = nsbox.run(["chroot", str(escape_root), "/escape", str(marker)], user=True, mount=True, **run)
    assert chrooted.stdout == "reached: host secret\n", chrooted
    # pivot_root, with the old root detached: ".." from the box's root is the box's root.
    for root in (str(escape_root), nsbox.Overlay(lower=[str(escape_root)]), nsbox.Bind(str(escape_root))):
        pivoted = nsbox.run(["/escape", str(marker)], root=root, **run)
        assert pivoted.stdout == "not reached\n", (root, pivoted)
    assert marker.read_text() == "host secret"


def test_rootless_the_box_has_its_own_root_and_no_escape(
    rootless: Rootless, busybox: str, escape_root: Path, world_tmp: Path
) -> None:
    marker = world_tmp / "marker"
    marker.write_text("host secret")
    marker.chmod(0o644)
    seen = rootless(
        f"""
        run = dict(capture_output=True, text=True)
        inside = nsbox.run(["{busybox}", "cat", "/proc/self/mountinfo"], root=nsbox.Tmpfs(),
                           mounts=[nsbox.Bind("{busybox}", "/bin/busybox")], pid=True, mount_proc=True, **run)
        points = [line.split()[4] for line in inside.stdout.splitlines()]
        control = nsbox.run(["chroot", "{escape_root}", "/escape", "{marker}"], user=True, mount=True, **run)
        pivoted = nsbox.run(["/escape", "{marker}"], root="{escape_root}", **run)
        emit({{"points": points, "uid": os.getuid(), "control": control.stdout, "pivoted": pivoted.stdout}})
        """
    )
    assert seen["uid"] == 65534
    assert seen["points"] == ["/", "/proc", "/bin/busybox"]  # proc first, then the mounts in order
    assert seen["control"] == "reached: host secret\n"
    assert seen["pivoted"] == "not reached\n"
    assert host_mount_lines("/oldroot", "/newroot", "busybox") == []


# ---------------------------------------------------------------------------------------------------------------
# Binds, overlays, tmpfs and /dev


BINDS = """
set -u
touch "$RO/new" 2>/dev/null && echo "ro writable" || echo "ro refused"
echo written > "$RW/new"
"""


def _prepare_binds(base: Path) -> tuple[Path, Path]:
    ro, rw = base / "ro", base / "rw"
    for d in (ro, rw):
        d.mkdir()
        d.chmod(0o777)
    return ro, rw


def test_read_only_binds_refuse_writes_and_read_write_binds_reach_the_host(world_tmp: Path) -> None:
    ro, rw = _prepare_binds(world_tmp)
    env = {"RO": str(ro), "RW": str(rw), "PATH": os.environ["PATH"]}
    out = nsbox.run(
        ["sh", "-c", BINDS],
        mounts=[nsbox.Bind(ro, readonly=True), nsbox.Bind(rw)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout == "ro refused\n"
    assert (rw / "new").read_text() == "written\n" and not (ro / "new").exists()
    # Control: the same directory bound read-write takes the write.
    out = nsbox.run(
        ["sh", "-c", BINDS],
        mounts=[nsbox.Bind(ro), nsbox.Bind(rw)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout == "ro writable\n" and (ro / "new").exists()
    assert host_mount_lines(str(world_tmp)) == []


def _overlay_layers(base: Path) -> tuple[Path, Path]:
    lower, upper = base / "lower", base / "upper"
    (lower / "dir").mkdir(parents=True)
    (lower / "changed").write_text("old\n")
    (lower / "deleted").write_text("doomed\n")
    (lower / "dir" / "kept").write_text("kept\n")
    return lower, upper


CHANGES = "echo new > /data/changed && rm /data/deleted && echo made > /data/created && cat /data/dir/kept"


def _lower_unchanged(lower: Path) -> bool:
    return (
        (lower / "changed").read_text() == "old\n" and (lower / "deleted").exists() and not (lower / "created").exists()
    )


def test_overlay_writes_never_reach_lower_and_upper_keeps_them(world_tmp: Path) -> None:
    lower, upper = _overlay_layers(world_tmp)
    private = nsbox.Overlay("/data", lower=[str(lower)])
    out = nsbox.run(["sh", "-c", CHANGES], mounts=[private], capture_output=True, text=True, check=True)
    assert out.stdout == "kept\n" and _lower_unchanged(lower) and not upper.exists()
    kept = nsbox.Overlay("/data", lower=[str(lower)], upper=str(upper))
    nsbox.run(["sh", "-c", CHANGES], mounts=[kept], check=True)
    assert _lower_unchanged(lower)
    # The changes are in upper after the box: a changed file, a new one, and a whiteout for the deleted one.
    assert (upper / "changed").read_text() == "new\n" and (upper / "created").read_text() == "made\n"
    whiteout = os.lstat(upper / "deleted")
    assert stat.S_ISCHR(whiteout.st_mode) and whiteout.st_rdev == 0
    # ... and a later box on the same layers sees them.
    later = nsbox.run(["sh", "-c", "cat /data/changed; ls /data"], mounts=[kept], capture_output=True, text=True)
    assert later.stdout == "new\nchanged\ncreated\ndir\n"
    assert host_mount_lines(str(world_tmp)) == []


def test_rootless_binds_and_overlays(rootless: Rootless, world_tmp: Path) -> None:
    seen = rootless(
        f"""
        from pathlib import Path
        base = Path("{world_tmp}")
        ro, rw = base / "ro", base / "rw"
        ro.mkdir(); rw.mkdir()
        env = {{"RO": str(ro), "RW": str(rw), "PATH": "/usr/bin:/bin"}}
        binds = nsbox.run(["sh", "-c", {BINDS!r}], mounts=[nsbox.Bind(ro, readonly=True), nsbox.Bind(rw)],
                          env=env, capture_output=True, text=True)
        # Lower files of our own: a rootless overlay cannot copy up files of ids it does not map (host root's).
        lower, upper = base / "lower", base / "upper"
        (lower / "dir").mkdir(parents=True)
        (lower / "changed").write_text("old\\n"); (lower / "deleted").write_text("doomed\\n")
        (lower / "dir" / "kept").write_text("kept\\n")
        kept = nsbox.Overlay("/data", lower=[str(lower)], upper=str(upper))
        changes = nsbox.run(["sh", "-c", {CHANGES!r} + " && rm -r /data/dir && mkdir /data/dir && ls /data/dir"],
                            mounts=[kept], capture_output=True, text=True)
        emit({{
            "binds": binds.stdout, "rw": (rw / "new").read_text(), "ro": (ro / "new").exists(),
            "changes": [changes.returncode, changes.stdout, changes.stderr],
            "lower": [(lower / "changed").read_text(), (lower / "deleted").exists(), (lower / "dir" / "kept").exists()],
            "upper": [(upper / "changed").read_text(), (upper / "created").read_text()],
            "whiteout": os.stat(upper / "deleted", follow_symlinks=False).st_rdev,
        }})
        """
    )
    assert seen["binds"] == "ro refused\n" and seen["rw"] == "written\n" and seen["ro"] is False
    assert seen["changes"] == [0, "kept\n", ""]
    assert seen["lower"] == ["old\n", True, True]
    assert seen["upper"] == ["new\n", "made\n"] and seen["whiteout"] == 0
    assert host_mount_lines(str(world_tmp)) == []


FILL = "dd if=/dev/zero of=$T/fill bs=64k count={blocks} 2>&1 >/dev/null | grep -o 'No space left on device'; true"


@pytest.mark.parametrize("side", ["root", "rootless"])
def test_tmpfs_size_is_enforced(side: str, rootless: Rootless, world_tmp: Path) -> None:
    target = world_tmp / "t"
    target.mkdir()
    code = f"""
        def fill(size, blocks):
            env = {{"T": "{target}", "PATH": "/usr/bin:/bin"}}
            r = nsbox.run(["sh", "-c", {FILL!r}.format(blocks=blocks)], mounts=[nsbox.Tmpfs("{target}", size=size)],
                          env=env, capture_output=True, text=True)
            return r.stdout.strip()
        # 4 MiB into 1 MiB: refused; control: 1 MiB into 4 MiB fits.
        emit([fill("1M", 64), fill("4M", 16)])
        """
    if side == "root":
        namespace: dict[str, object] = {"nsbox": nsbox, "emit": lambda v: namespace.__setitem__("out", v)}
        exec(textwrap.dedent(code), namespace)
        seen = namespace["out"]
    else:
        seen = rootless(code)
    assert seen == ["No space left on device", ""]
    # The host's directory under the tmpfs got nothing.
    assert list(target.iterdir()) == [] and host_mount_lines(str(target)) == []


DEV_PROBE = """
import json, os, stat
m, s = os.openpty()
with open("/dev/null", "w") as f:
    f.write("x")
blocks = [n for n in os.listdir("/dev") if stat.S_ISBLK(os.stat("/dev/" + n, follow_symlinks=False).st_mode)]
devices = {n: [stat.S_ISCHR(os.stat("/dev/" + n).st_mode), os.stat("/dev/" + n).st_rdev] for n in DEVICES}
print(json.dumps({"pty": os.ttyname(s), "blocks": blocks, "names": sorted(os.listdir("/dev")), "devices": devices}))
"""
#: The devices Dev() binds from the caller's /dev.
DEVICES = ["full", "null", "random", "tty", "urandom", "zero"]
DEV_PROBE = f"DEVICES = {DEVICES!r}\n" + DEV_PROBE


def host_devices() -> dict[str, list[object]]:
    """What the probe reports for the host's own devices (the control: character devices, their numbers)."""
    return {n: [stat.S_ISCHR(os.stat("/dev/" + n).st_mode), os.stat("/dev/" + n).st_rdev] for n in DEVICES}


def test_dev_has_null_a_private_pty_and_no_disks(python: str) -> None:
    # Control: the host's /dev has a block device (a disk) the box's will not.
    host_blocks = [n for n in os.listdir("/dev") if stat.S_ISBLK(os.stat("/dev/" + n, follow_symlinks=False).st_mode)]
    assert host_blocks
    host_devpts = host_mount_lines("devpts")
    out = nsbox.run([python, "-c", DEV_PROBE], mounts=[nsbox.Dev()], capture_output=True, text=True, check=True)
    seen = json.loads(out.stdout)
    # A new devpts instance: its first pty is number 0, whatever the host has open.
    assert seen["pty"] == "/dev/pts/0" and seen["blocks"] == []
    assert seen["names"] == sorted(
        ["full", "null", "random", "tty", "urandom", "zero", "pts", "ptmx", "shm", "fd", "stdin", "stdout", "stderr"]
    )
    # The host's very devices (on the caller's root too, where the box's tmpfs covers the caller's /dev).
    assert seen["devices"] == host_devices() and all(is_chr for is_chr, _ in seen["devices"].values())
    # The host's mount table has no devpts (or tmpfs on /dev) of the box's.
    assert host_mount_lines("devpts") == host_devpts


def test_rootless_dev(rootless: Rootless) -> None:
    seen = rootless(
        f"""
        r = nsbox.run(["/usr/bin/python3", "-c", {DEV_PROBE!r}], mounts=[nsbox.Dev()], capture_output=True, text=True)
        emit([r.returncode, r.stderr, r.stdout and json.loads(r.stdout)])
        """
    )
    assert seen[0] == 0, seen
    assert seen[2]["pty"] == "/dev/pts/0" and seen[2]["blocks"] == []
    assert seen[2]["devices"] == host_devices()


# ---------------------------------------------------------------------------------------------------------------
# Where a box starts, nsbox.call, the command line


def test_mounts_on_the_callers_root_keep_its_directory(world_tmp: Path) -> None:
    os.chdir(world_tmp)
    try:
        here = nsbox.run(["pwd"], mounts=[nsbox.Tmpfs("/mnt")], capture_output=True, text=True, check=True)
        assert here.stdout == f"{world_tmp}\n"
        assert nsbox.call(os.getcwd, mounts=[nsbox.Tmpfs("/mnt")]) == str(world_tmp)
        # With a root of its own a box starts in its /.
        assert nsbox.run(["pwd"], root=nsbox.Bind("/"), capture_output=True, text=True).stdout == "/\n"
    finally:
        os.chdir("/")


def test_call_runs_the_function_on_a_read_only_host(world_tmp: Path) -> None:
    def write() -> str:
        try:
            (world_tmp / "from-the-box").write_text("x")
        except OSError as e:
            return e.strerror or ""
        return "written"

    assert nsbox.call(write, root=nsbox.Bind("/", readonly=True)) == "Read-only file system"
    assert not (world_tmp / "from-the-box").exists()
    assert nsbox.call(write, root=nsbox.Bind("/")) == "written"  # control
    assert (world_tmp / "from-the-box").exists()


def test_the_command_line_takes_bubblewraps_mounts(world_tmp: Path) -> None:
    cmd = [sys.executable, "-m", "nsbox", "--ro-bind", "/", "/", "--tmpfs", str(world_tmp), "--dev", "/dev"]
    script = f"touch /etc/nsbox-test 2>/dev/null || echo refused; touch {world_tmp}/x && ls {world_tmp}; ls /dev/pts"
    out = subprocess.run([*cmd, "--", "sh", "-c", script], capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout) == (0, "refused\nx\nptmx\n"), out.stderr
    assert not (world_tmp / "x").exists()
    bad = subprocess.run(
        [sys.executable, "-m", "nsbox", "--bind", "/no/such/dir", "/x", "true"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1 and "/no/such/dir" in bad.stderr


# ---------------------------------------------------------------------------------------------------------------
# Bad input: clear errors, before anything is made


@pytest.mark.unit
@pytest.mark.parametrize(
    ("make", "error", "text"),
    [
        (lambda: nsbox.Tmpfs("relative/path"), ValueError, "absolute"),
        (lambda: nsbox.Bind("/etc", "etc"), ValueError, "absolute"),
        (lambda: nsbox.Tmpfs("/x", size="lots"), ValueError, "64M"),
        (lambda: nsbox.Tmpfs("/x", size=0), ValueError, "positive"),
        (lambda: nsbox.Tmpfs("/x", size="99999999999999999999999G"), ValueError, "below 2"),
        (lambda: nsbox.Overlay("/x", lower=[""]), ValueError, "empty"),
        (lambda: nsbox.Tmpfs("/x", mode=0o17777), ValueError, "mode"),
        (lambda: nsbox.Overlay("/x", lower="/usr"), TypeError, "list"),
        (lambda: nsbox.Overlay("/x", lower=[]), ValueError, "at least one"),
        (lambda: nsbox.Bind(42), TypeError, "path"),  # type: ignore[arg-type]
    ],
)
def test_mounts_are_checked_when_made(make: object, error: type[Exception], text: str) -> None:
    with pytest.raises(error, match=text):
        make()  # type: ignore[operator]


def test_bad_mounts_are_refused_before_anything_is_made(world_tmp: Path) -> None:
    lower, comma = world_tmp / "lower", world_tmp / "a,b"
    lower.mkdir()
    comma.mkdir()
    (world_tmp / "link-up").symlink_to(lower / "up")  # an upper inside lower, through a symlink
    cases: list[tuple[dict[str, object], type[Exception], str]] = [
        ({"mounts": [nsbox.Bind(world_tmp / "missing", "/x")]}, FileNotFoundError, str(world_tmp / "missing")),
        ({"root": world_tmp / "missing"}, FileNotFoundError, "root"),
        ({"root": nsbox.Overlay(lower=[str(lower)], upper=str(lower / "up"))}, ValueError, "inside a lower"),
        ({"root": nsbox.Dev()}, ValueError, "cannot be a Dev"),
        ({"root": nsbox.Tmpfs("/x")}, ValueError, "must not name a target"),
        ({"mounts": [nsbox.Tmpfs()]}, ValueError, "needs a target"),
        ({"mounts": [nsbox.Tmpfs("/")]}, ValueError, "cover the box's root"),
        ({"root": nsbox.Bind("/etc/hostname")}, NotADirectoryError, "not a directory"),
        ({"root": nsbox.Overlay(lower=[str(lower)], upper=str(world_tmp / "link-up"))}, ValueError, "inside a lower"),
        ({"mounts": nsbox.Tmpfs("/x")}, TypeError, "list"),
        ({"root": nsbox.Tmpfs(), "propagation": "shared"}, ValueError, "propagate"),
        ({"mounts": [nsbox.Overlay("/x", lower=[str(comma)])]}, ValueError, "overlayfs"),
    ]
    for options, error, text in cases:
        with pytest.raises(error, match=text.replace("(", r"\(")):
            nsbox.run(["true"], **options)  # type: ignore[arg-type]
    # Nothing made: no upper or work directory, nothing mounted.
    assert sorted(p.name for p in world_tmp.iterdir()) == ["a,b", "link-up", "lower"] and list(lower.iterdir()) == []
    assert host_mount_lines(str(world_tmp)) == []


def test_mount_points_are_made_only_on_the_boxs_own_filesystems(world_tmp: Path, escape_root: Path) -> None:
    # Without a root of its own, or on a directory root, the box's files are the caller's: a missing mount
    # point is an error that names it, and nothing is made on the host.
    in_root_before = sorted(os.listdir(escape_root))
    for options in ({}, {"root": str(escape_root)}):
        target = world_tmp / "new" / "x" if not options else Path("/missing/x")
        with pytest.raises(FileNotFoundError) as info:
            nsbox.run(["true"], mounts=[nsbox.Tmpfs(str(target))], **options)  # type: ignore[arg-type]
        assert f"cannot make the mount point for Tmpfs('{target}')" in str(info.value)
        assert (info.value.step, info.value.hint) == ("mount_point", "no_mount_point")  # type: ignore[attr-defined]
    assert not (world_tmp / "new").exists() and sorted(os.listdir(escape_root)) == in_root_before
    # Under a Tmpfs of the box's own the same mount point is made, there only.
    out = nsbox.run(
        ["sh", "-c", f"ls -d {world_tmp}/new/x; ls /proc/self/fd >/dev/null && echo proc still works"],
        mounts=[nsbox.Tmpfs(str(world_tmp)), nsbox.Tmpfs(str(world_tmp / "new" / "x")), nsbox.Tmpfs("/mnt")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout == f"{world_tmp}/new/x\nproc still works\n"
    assert not (world_tmp / "new").exists() and host_mount_lines(str(world_tmp)) == []


def test_a_tmpfs_on_proc_does_not_lead_later_mounts_astray() -> None:
    # The child mounts on the fds it resolved, never through /proc/self/fd: a Tmpfs on /proc first is fine.
    out = nsbox.run(
        ["sh", "-c", "ls -A /proc; ls -A /mnt"],
        mounts=[nsbox.Tmpfs("/proc"), nsbox.Tmpfs("/mnt")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout == ""


def test_rootless_overlay_of_a_tree_with_mounts_says_why_it_is_refused(rootless: Rootless, world_tmp: Path) -> None:
    seen = rootless(
        f"""
        try:
            nsbox.run(["true"], root=nsbox.Overlay(lower=["/"]))
            refused = None
        except OSError as e:
            refused = [e.errno, e.step, e.hint, str(e)]
        # Control: a lower directory with nothing mounted under it works.
        ok = nsbox.run(["/bin/busybox", "true"], root=nsbox.Overlay(lower=["{world_tmp}"]),
                       mounts=[nsbox.Bind("/bin/busybox")]).returncode
        emit([refused, ok])
        """
    )
    refused, ok = seen
    assert refused[:3] == [errno.EINVAL, "mount", "overlay_lower_has_mounts"], refused
    assert "the box's root, Overlay(" in refused[3] and ok == 0


def test_read_only_holds_against_the_boxs_other_users_and_its_root_without_capabilities(world_tmp: Path) -> None:
    # The box's root has CAP_SYS_ADMIN over its own mount namespace: it may remount (as bubblewrap's boxes may
    # with --cap-add ALL). A command run as another user inside cannot.
    (world_tmp / "ro").mkdir()
    (world_tmp / "ro").chmod(0o777)
    remount = f"mount -o remount,bind,rw {world_tmp}/ro && echo remounted >> {world_tmp}/ro/file"
    maps = {"uid_map": [(0, 0, 1), (1000, 101000, 1)], "gid_map": [(0, 0, 1), (1000, 101000, 1)]}
    box = {"mounts": [nsbox.Bind(world_tmp / "ro", readonly=True)], **maps}
    as_user = nsbox.run(["sh", "-c", remount], user=1000, group=1000, capture_output=True, text=True, **box)
    assert as_user.returncode != 0 and not (world_tmp / "ro" / "file").exists(), as_user
    # Control: the box's root can.
    as_root = nsbox.run(["sh", "-c", remount], capture_output=True, text=True, **box)
    assert as_root.returncode == 0 and (world_tmp / "ro" / "file").read_text() == "remounted\n", as_root
    # Without capabilities the box's root cannot either.
    (world_tmp / "ro" / "file").unlink()
    confined = nsbox.run(["sh", "-c", remount], capture_output=True, text=True, capabilities=(), **box)
    assert confined.returncode != 0 and "permission denied" in confined.stderr, confined
    assert not (world_tmp / "ro" / "file").exists()


def test_a_file_mount_point_that_is_a_symlink_is_refused(world_tmp: Path, busybox: str) -> None:
    # In a directory root, an absolute symlink at a file's mount point would be followed by mount(2) from the
    # caller's root: refused. Control: a plain file there takes the bind.
    root = world_tmp / "root"
    for d in ("etc", "bin"):
        (root / d).mkdir(parents=True)
    (root / "etc" / "link").symlink_to("/etc/hostname")  # the root's own /etc/hostname, or the caller's
    (root / "etc" / "hostname").write_text("the root's\n")
    (root / "etc" / "plain").write_text("plain\n")
    (root / "bin" / "busybox").write_text("")  # the mount point: a directory root is the caller's, not made
    source = world_tmp / "source"
    source.write_text("bound\n")
    shell = nsbox.Bind(busybox, "/bin/busybox")
    with pytest.raises(OSError) as info:
        nsbox.run(["/bin/busybox", "true"], root=str(root), mounts=[shell, nsbox.Bind(source, "/etc/link")])
    assert info.value.errno == errno.ELOOP and "cannot mount Bind(" in str(info.value)
    mounts = [shell, nsbox.Bind(source, "/etc/plain")]
    out = nsbox.run(
        ["/bin/busybox", "cat", "/etc/plain"], root=str(root), mounts=mounts, capture_output=True, text=True
    )
    assert out.stdout == "bound\n", out
    assert (root / "etc" / "plain").read_text() == "plain\n" and host_mount_lines(str(world_tmp)) == []
