"""A persist() that fails undoes only what it made itself: namespaces persisted there before stay (as root).

Every test looks from both sides: the host's view of the files (their inode is the namespace's id, and
``/proc/self/mountinfo``), and what a command entered through them sees (its hostname, its namespace links).
"""

from __future__ import annotations

import errno
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import nsbox
from helpers.mounts import mount_points, mountinfo, unmount_new_mounts_under
from helpers.procs import kill_and_reap, start_box

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
