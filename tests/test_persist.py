"""Persisted namespaces: ``persist`` (the option, the method, the function), ``enter`` and ``release``.

Namespaces kept after their box is gone can be entered again; a persist() that fails undoes only what it made
itself (namespaces persisted there before stay); a rootless caller is refused; a box cannot plant symlinks that
persist would follow. Every test looks from both sides: the host's view of the files (their inode is the
namespace's id, and ``/proc/self/mountinfo``), and what a command entered through them sees (its hostname, its
namespace links).
"""

from __future__ import annotations

import errno
import os
import re
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import nsbox
from helpers.mounts import host_mounts, mount_points, mountinfo, unmount_new_mounts_under
from helpers.procs import children_of, kill_and_reap, start_box
from helpers.rootless import ATTEMPTS, Rootless

#: The box waits, holding its namespaces, until killed.
WAIT = ["sh", "-c", "echo ready && exec sleep 1000"]


@pytest.fixture
def kept(tmp_path: Path) -> Iterator[Path]:
    """A directory to persist into; whatever the test leaves mounted under it is unmounted afterwards."""
    before = mountinfo()
    path = tmp_path / "kept"
    try:
        yield path
    finally:
        unmount_new_mounts_under(before, tmp_path)


def mounts_under(path: Path) -> list[str]:
    """Mount points at or under ``path``, as /proc/self/mountinfo lists them."""
    return [m for m in mount_points(mountinfo()) if m == str(path) or m.startswith(f"{path}/")]


def ids_of(path: Path, kinds: list[str]) -> dict[str, int]:
    """The inode of each ``path/KIND``: the id of the namespace bound there (or of a plain file)."""
    return {kind: os.stat(path / kind).st_ino for kind in kinds}


def entered(kept: Path) -> tuple[str, dict[str, int]]:
    """What a command entered through ``kept`` sees: its hostname and the ids of its uts and net namespaces."""
    r = nsbox.enter(
        kept,
        ["sh", "-c", "hostname; stat -L -c %i /proc/self/ns/uts /proc/self/ns/net"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    hostname, uts, net = r.stdout.split()
    return hostname, {"uts": int(uts), "net": int(net)}


def persist_with(how: str) -> Callable[[Path, dict[str, Any]], nsbox.Popen]:
    """Starts a box with ``options`` and persists it into the directory in one of the three ways."""

    def start(path: Path, options: dict[str, Any]) -> nsbox.Popen:
        if how == "popen":  # no pipes: a Popen whose persist fails does not close them (left to _popen.py)
            return nsbox.Popen(["sleep", "1000"], persist=path, **options)
        box = start_box(WAIT, **options)
        try:
            box.persist(path) if how == "method" else nsbox.persist(box.pid, path)
        except BaseException:
            kill_and_reap(box)
            raise
        return box

    return start


@pytest.mark.parametrize("how", ["popen", "method", "function"])
def test_a_failing_persist_into_a_directory_of_persisted_namespaces_leaves_them(kept: Path, how: str) -> None:
    first = start_box(WAIT, uts=True, net=True, hostname="first", persist=kept)
    try:
        first_ids = first.namespaces()
    finally:
        kill_and_reap(first)
    assert first.returncode == -signal.SIGKILL  # from now on only the files keep its namespaces
    files = sorted(os.listdir(kept))
    mounts = mounts_under(kept)
    try:
        with pytest.raises(OSError) as info:
            persist_with(how)(kept, {"uts": True, "net": True, "hostname": "second"})
        assert info.value.errno == errno.EBUSY and str(kept / "net") in str(info.value)
        # The host's side: the same files, mounts and namespace ids as before.
        assert sorted(os.listdir(kept)) == files
        assert mounts_under(kept) == mounts
        assert ids_of(kept, ["uts", "net"]) == {kind: first_ids[kind] for kind in ("uts", "net")}
        # The inside: a command entered through them is in the first box's namespaces.
        hostname, ids = entered(kept)
        assert hostname == "first"
        assert ids == {kind: first_ids[kind] for kind in ("uts", "net")}
    finally:
        assert sorted(nsbox.release(kept)) == ["net", "uts"]
    assert mounts_under(kept) == []


@pytest.mark.parametrize("earlier", ["a persisted box", "nothing"])
def test_a_persist_that_fails_part_way_undoes_only_its_own_mounts(kept: Path, earlier: str) -> None:
    if earlier == "a persisted box":
        first = start_box(WAIT, net=True, persist=kept)
        first_net = first.namespaces()["net"]
        kill_and_reap(first)
    else:
        kept.mkdir()
    # A uts file that is not persist's to take (not empty): the second box's ipc goes first, then uts fails.
    (kept / "uts").write_text("someone else's\n")
    files = sorted(os.listdir(kept))
    mounts = mounts_under(kept)
    box = start_box(WAIT, ipc=True, uts=True, hostname="second")
    try:
        with pytest.raises(FileExistsError, match=f"cannot create {kept}/uts"):
            nsbox.persist(box.pid, kept)
    finally:
        kill_and_reap(box)
    # Its ipc mount and file are gone, and so is its self-bind of the directory if it made it; what was
    # there is: the uts file as it was, and the first box's net namespace, mounted and still usable.
    assert sorted(os.listdir(kept)) == files
    assert mounts_under(kept) == mounts
    assert (kept / "uts").read_text() == "someone else's\n"
    if earlier == "a persisted box":
        assert mounts == [str(kept), str(kept / "net")]
        assert os.stat(kept / "net").st_ino == first_net
        (kept / "uts").unlink()  # enter joins every namespace file it finds
        r = nsbox.enter(kept, ["stat", "-L", "-c", "%i", "/proc/self/ns/net"], capture_output=True, text=True)
        assert r.returncode == 0 and int(r.stdout) == first_net, r.stderr
        assert nsbox.release(kept) == ["net"]
    else:
        assert mounts == []


def test_a_persist_that_fails_removes_the_directories_it_made_and_only_those(tmp_path: Path) -> None:
    (tmp_path / "there").mkdir()
    kept = tmp_path / "there" / "made" / "also made" / "kept"
    with open("/proc/sys/kernel/pid_max") as f:
        no_such_pid = int(f.read())  # PIDs are below pid_max
    with pytest.raises(FileNotFoundError, match=f"process {no_such_pid}"):
        nsbox.persist(no_such_pid, kept)
    assert os.listdir(tmp_path / "there") == []
    assert mounts_under(tmp_path) == []


#: Run in the box before it waits: state that must still be there when its namespaces are entered later.
_KEEP_STATE = (
    "ipcmk -Q >/dev/null && ip link set lo mtu 1234 && mount -t tmpfs nsbox-kept /mnt && echo kept >/mnt/file && "
    "echo ready && exec sleep 1000"
)


_READ_STATE = (
    "hostname; ipcs -q | grep -c '^0x'; ip -o link show lo | grep -o 'mtu [0-9]*'; cat /mnt/file; "
    "readlink /proc/self/ns/*"
)


def _persist_then_enter(start: Any, kept: Path) -> None:
    """Starts a box with ``start(options)``, kills it, enters its persisted namespaces, releases them."""
    before = host_mounts(kept.parent)
    box = start({"net": True, "ipc": True, "mount": True, "hostname": "kept"})
    try:
        ids = box.namespaces()
        assert {"ipc", "mnt", "net", "uts"} <= set(os.listdir(kept))
    finally:
        kill_and_reap(box)
    assert box.returncode == -signal.SIGKILL
    r = nsbox.enter(kept, ["sh", "-c", _READ_STATE], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    hostname, queues, mtu, file, *links = r.stdout.splitlines()
    assert (hostname, queues, mtu, file) == ("kept", "1", "mtu 1234", "kept")
    entered = dict(re.fullmatch(r"(\w+):\[(\d+)\]", link).groups() for link in links)  # type: ignore[union-attr]
    assert {kind: int(entered[kind]) for kind in ("ipc", "mnt", "net", "uts")} == {
        kind: ids[kind] for kind in ("ipc", "mnt", "net", "uts")
    }
    persisted = sorted(kind for kind in os.listdir(kept) if not kind.startswith("."))
    assert sorted(nsbox.release(kept)) == persisted
    assert host_mounts(kept.parent) == before, "release left something mounted"
    assert os.listdir(kept) == []


def test_popen_persist_keeps_the_namespaces_until_release(tmp_path: Path) -> None:
    kept = tmp_path / "run" / "nsbox" / "kept"  # made if missing

    def start(options: dict[str, Any]) -> Any:
        return start_box(["sh", "-c", _KEEP_STATE], persist=kept, **options)

    _persist_then_enter(start, kept)


def test_box_persist_method_and_persist_function_keep_the_namespaces(tmp_path: Path) -> None:
    for how in ("method", "function"):
        kept = tmp_path / how

        def start(options: dict[str, Any], how: str = how, kept: Path = kept) -> Any:
            box = start_box(["sh", "-c", _KEEP_STATE], **options)
            kinds = box.persist(kept) if how == "method" else nsbox.persist(box.pid, kept)
            assert sorted(kinds) == ["ipc", "mnt", "net", "uts"]
            return box

        _persist_then_enter(start, kept)


def test_persisted_pid_namespace_whose_processes_are_gone_cannot_be_entered_with_a_clear_error(tmp_path: Path) -> None:
    kept = tmp_path / "kept"
    before = host_mounts(tmp_path)
    box = nsbox.Popen(["sleep", "1000"], pid=True, net=True, persist=kept)
    try:
        assert "pid" in os.listdir(kept)
    finally:
        kill_and_reap(box)
    try:
        # The kernel cannot fork into a PID namespace whose init has died; say so, as for an exited box.
        with pytest.raises(ProcessLookupError, match="PID namespace"):
            nsbox.enter(kept, ["true"])
        assert children_of(os.getpid()) == []
    finally:
        nsbox.release(kept)
    assert host_mounts(tmp_path) == before


def test_persist_that_fails_kills_the_box_and_leaves_nothing(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    before = host_mounts(tmp_path)
    with pytest.raises(NotADirectoryError):
        nsbox.Popen(["sleep", "1000"], net=True, persist=tmp_path / "file" / "kept")
    assert children_of(os.getpid()) == []
    assert host_mounts(tmp_path) == before


def test_rootless_persist_raises_permission_error_and_leaves_nothing(rootless: Rootless, world_tmp: Path) -> None:
    target = world_tmp / "kept"
    before = host_mounts(world_tmp)
    seen = rootless(
        ATTEMPTS
        + f"""
attempt("popen", lambda: nsbox.Popen(["sleep", "1000"], net=True, persist={str(target)!r}))
box = nsbox.Popen(["sleep", "1000"], net=True)
try:
    attempt("method", lambda: box.persist({str(target)!r}))
    attempt("function", lambda: nsbox.persist(box.pid, {str(target)!r}))
finally:
    box.kill()
    box.wait()
emit_attempts()
"""
    )
    for name in ("popen", "method", "function"):
        assert seen[name] is not None and seen[name][:2] == ["PermissionError", errno.EPERM], (name, seen[name])
        assert "need root" in seen[name][2]
    assert seen["children"] is False
    assert not target.exists()
    assert host_mounts(world_tmp) == before


def test_enter_joins_namespace_files_given_by_kind() -> None:
    box = nsbox.Popen(["sleep", "60"], hostname="by-file", net=True)
    try:
        files = {"uts": f"/proc/{box.pid}/ns/uts", "net": f"/proc/{box.pid}/ns/net"}
        r = nsbox.enter(
            files,
            ["sh", "-c", "hostname; readlink /proc/self/ns/uts /proc/self/ns/net"],
            capture_output=True,
            text=True,
        )
        # Inside: the box's hostname and namespaces (the files'), not the host's.
        name, uts, net = r.stdout.split()
        assert name == "by-file"
        assert (uts, net) == (os.readlink(files["uts"]), os.readlink(files["net"]))
        assert uts != os.readlink("/proc/self/ns/uts")
        with pytest.raises(ValueError, match="'nett' is not a namespace kind"):
            nsbox.enter({"nett": files["net"]}, ["true"])
        with pytest.raises(FileNotFoundError, match="cannot open the namespaces of '/nonexistent'"):
            nsbox.enter({"net": "/nonexistent"}, ["true"])
    finally:
        box.kill()
        box.wait()


@pytest.mark.parametrize("planted", ["file-links", "directory-link"])
def test_persist_does_not_follow_symlinks_the_box_planted(world_tmp: Path, planted: str) -> None:
    # A root-owned file and directory the box cannot write, and the persist directory the box can.
    victim = world_tmp / "victim"
    victim.write_text("precious\n")
    victim.chmod(0o644)
    rootonly = world_tmp / "root-only"
    rootonly.mkdir(mode=0o755)
    kept = world_tmp / "kept"
    if planted == "file-links":
        plant = f"mkdir {kept} && for kind in net uts pid; do ln -s {victim} {kept}/$kind; done"
    else:
        plant = f"ln -s {rootonly} {kept}"
    before = mountinfo()
    box = start_box(_as_nobody(f"{plant} && echo ready && exec sleep 1000"), pid=True, net=True, uts=True)
    try:
        try:
            kinds = box.persist(kept)
        except OSError:
            kinds = None  # refusing is fine; following the links is not
        # Whatever persist did, it did not mount onto or write through the box's links.
        new = [m for m in mount_points(mountinfo()) if m not in mount_points(before)]
        assert str(victim) not in new and not any(m.startswith(str(rootonly)) for m in new), new
        assert victim.read_text() == "precious\n"
        assert os.listdir(rootonly) == []
        if kinds is not None:
            nsbox.release(kept)
    finally:
        kill_and_reap(box)
        leaked = unmount_new_mounts_under(before, world_tmp)
    assert leaked == []


def _as_nobody(command: str) -> list[str]:
    """A box command that runs as uid/gid 65534 on the host: it cannot write root's files itself."""
    return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "sh", "-c", command]
