"""``nsbox.Pool``: warm namespace sets, each joined by exactly one box; nothing left when closed or killed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import nsbox
from helpers import pool_bodies
from helpers.rootless import ROOTLESS_PYTHON, Rootless

TESTS = Path(__file__).parent
SIDES = ["root", "rootless"]


@pytest.fixture
def pool_body(request: pytest.FixtureRequest) -> Any:
    """``pool_body(side, NAME, **kwargs)``: ``helpers.pool_bodies.NAME(**kwargs)`` here (root) or as 65534."""

    def run(side: str, name: str, **kwargs: Any) -> Any:
        if side == "root":
            return json.loads(json.dumps(getattr(pool_bodies, name)(**kwargs)))
        rootless: Rootless = request.getfixturevalue("rootless")
        call = f"pool_bodies.{name}(**json.loads({json.dumps(kwargs)!r}))"
        return rootless(f"from helpers import pool_bodies\nemit({call})")

    return run


def _check_fresh(report: dict[str, Any], boxes: int, side: str) -> None:
    assert report["codes"] == [0] * boxes
    # Root's boxes get no user namespace (as without a pool); rootless ones get a fresh one each.
    kinds = [k for k in pool_bodies.KINDS if k != "user" or side == "rootless"]
    for inside, outside in zip(report["inside"], report["outside"], strict=True):
        # Both sides agree, and every namespace is new: none is the caller's.
        assert inside == outside
        assert all(inside[k] != report["host"][k] for k in kinds), (inside, report["host"])
        assert side == "rootless" or inside["user"] == report["host"]["user"]
    for kind in kinds:
        seen = [box[kind] for box in report["inside"]]
        assert len(set(seen)) == boxes, f"two boxes running at once share a {kind} namespace: {seen}"
    # The control: a process that does share a box's namespace is seen as sharing it.
    assert report["exec_net"] == report["inside"][0]["net"]
    assert all("lo:" in line and "UP" in line.split(">")[0] for line in report["lo"]), report["lo"]
    assert report["names"] == [f"pooled-{i}" for i in range(boxes)]


@pytest.mark.parametrize("side", SIDES)
def test_pooled_boxes_get_fresh_namespaces_seen_alike_from_both_sides(pool_body: Any, side: str) -> None:
    report = pool_body(side, "fresh_boxes", size=3, boxes=3)
    _check_fresh(report, 3, side)
    assert report["stats"]["taken"] == 3 and report["stats"]["missed"] == 0, report["stats"]


@pytest.mark.parametrize("side", SIDES)
def test_a_burst_larger_than_the_pool_makes_its_own_namespaces_and_never_shares_a_set(
    pool_body: Any, side: str
) -> None:
    report = pool_body(side, "fresh_boxes", size=2, boxes=7)
    _check_fresh(report, 7, side)
    stats = report["stats"]
    assert stats["taken"] + stats["missed"] == 7, stats
    assert stats["taken"] >= 2, stats  # the two ready sets were used


@pytest.mark.parametrize("side", SIDES)
def test_pool_call_runs_the_function_in_a_fresh_set(pool_body: Any, side: str) -> None:
    report = pool_body(side, "calls_in_a_pool")
    assert report["first"][:2] == [1, "pool-call"]
    assert report["second"][:2] == [1, "other"]  # a box's own hostname, in the set's UTS namespace
    nets = {report["first"][2], report["second"][2], report["host_net"]}
    assert len(nets) == 3, nets
    assert report["stats"]["taken"] == 2, report["stats"]


@pytest.mark.parametrize("side", SIDES)
def test_close_frees_every_set_and_stops_the_filler(pool_body: Any, side: str) -> None:
    size = 3
    report = pool_body(side, "what_a_pool_holds_and_leaves", size=size)
    # Full: the control, what close() must free: a set of four namespaces per slot, at 3 or above, CLOEXEC.
    kinds = sorted(link.split(":")[0] for link in report["set_fds"].values())
    assert kinds == sorted(["net", "ipc", "uts", "cgroup"] * size + (["user"] * size if side == "rootless" else []))
    assert all(int(fd) >= 3 for fd in report["set_fds"])
    assert not any(report["inheritable"].values())
    assert "nsbox-pool" in report["full"]["threads"]
    # Spawner threads come and go with boxes (they retire when idle): the pool's own threads are compared.
    pool_threads = {name: [t for t in report[name]["threads"] if t != "nsbox-spawner"] for name in ("before", "closed")}
    assert report["box"][0] == 0 and report["box"][1] in report["set_fds"].values()  # a box took a ready set
    # Closed: the same namespace fds, threads and children as before the pool.
    assert report["closed"]["fds"] == report["before"]["fds"]
    assert pool_threads["closed"] == pool_threads["before"]
    assert report["closed"]["children"] == report["before"]["children"] == []
    # A closed pool's boxes make their own namespaces.
    assert report["after_close"][0] == 0
    assert report["stats"]["missed"] == 1


@pytest.mark.parametrize("side", SIDES)
def test_bad_pool_options_and_a_box_that_needs_another_user_namespace_are_refused(pool_body: Any, side: str) -> None:
    report = pool_body(side, "refusals")
    assert report["size 0"] == ["ValueError", "size must be at least 1, not 0"]
    assert report["size text"][0] == "TypeError" and "size must be an int" in report["size text"][1]
    assert report["nothing to pool"][0] == "ValueError" and "net=True" in report["nothing to pool"][1]
    assert report["unknown option"] == ["TypeError", "Pool() got an unexpected keyword argument 'nett'"]
    assert report["bad hostname"][0] == "ValueError" and "hostname" in report["bad hostname"][1]
    assert report["other maps"][0] == "ValueError", report["other maps"]
    assert "uid_map" in report["other maps"][1]
    assert report["left after the refusal"]["ready"] == 1  # the set was not spent on the refused box
    assert report["fds"] == {} and report["children"] == [] and "nsbox-pool" not in report["threads"]


@pytest.mark.parametrize("how", ["run", "call"])
@pytest.mark.parametrize("side", SIDES)
def test_a_child_forked_while_boxes_join_their_sets_holds_none_of_them(pool_body: Any, side: str, how: str) -> None:
    forks = 300
    report = pool_body(side, "forks_while_boxes_take_sets", forks=forks, how=how)
    assert report["control_held"] == forks  # the control: a namespace fd of ours is seen in every child
    assert report["stats"]["taken"] > 0, report["stats"]  # boxes did join sets while we forked
    assert report["set_fds_held"] == [], f"{len(report['set_fds_held'])} of {forks} children held a set's fds"


@pytest.mark.parametrize("side", SIDES)
def test_a_pool_at_the_limits_of_the_process_stops_making_sets_and_says_why(
    side: str, request: pytest.FixtureRequest
) -> None:
    report = _program(side, pool_bodies.LIMITS, request)
    many = report["many"]
    # Every fd of a ready set is recorded, so a forked child has them closed; the control: the parent holds them.
    assert many["held"] == 2048 - 2048 % (5 if side == "rootless" else 4) and many["child"] == 0, many
    assert many["ready"] * (5 if side == "rootless" else 4) == many["held"]
    assert "namespace fds in ready sets" in many["failure"]
    # Limits too low for a set within half of them: the pool is refused, naming the limit; with room enough,
    # the set was made (the control). A forked child holds nothing, and nothing is left after close().
    for few in report["few"]:
        assert few["child"] == 0 and few["closed"] == 0, report["few"]
    for few in report["few"][:-1]:
        assert "no Pool fits here" in few.get("refused", "") and "half of its soft RLIMIT_NOFILE" in few["refused"], few
    assert report["few"][-1]["ready"] == 1, report["few"]
    assert report["many_closed"] == report["few_closed"] == 0


def _program(side: str, program: str, request: pytest.FixtureRequest) -> Any:
    """Runs one of ``pool_bodies``' programs as root (a process of its own) or as 65534; returns its JSON line."""
    if side == "root":
        env = {**os.environ, "PYTHONPATH": str(TESTS)}
        r = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, env=env, timeout=120)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout.strip().splitlines()[-1])
    rootless: Rootless = request.getfixturevalue("rootless")
    return rootless(program.replace("print(json.dumps(out))", "emit(out)"))


@pytest.mark.parametrize("side", SIDES)
def test_a_pool_leaves_the_caller_half_of_its_fd_limit(side: str, request: pytest.FixtureRequest) -> None:
    report = _program(side, pool_bodies.FD_SHARE, request)
    limit, per_set, alone = report["limit"], report["per_set"], report["alone"]
    own = limit - alone[0]  # the fds the program held itself before any pool
    # A size whose sets do not fit is refused, naming the limit and the largest size, and leaves nothing.
    assert "size must be at most" in report["refused"] and f"RLIMIT_NOFILE ({limit})" in report["refused"]
    assert report["after_refusal"] == alone
    # Full: the control, the pool's fds count against the caller's limit (it can open that many fewer files) ...
    full = report["full"]
    assert full["held"] == full["size"] * per_set
    assert full["free"][0] <= alone[0] - full["held"]
    # ... and the caller can still open files up to half of its limit, then EMFILE from its own files.
    assert full["free"][1] == alone[1] == "EMFILE"
    assert full["free"][0] >= limit // 2 - own, (full, alone)
    # The caller holding a quarter of its limit more, boxes took three sets: they are not made again while the
    # process is past half of its limit, and the caller still has files to open; they are once it closes them.
    crowded = report["crowded"]
    assert crowded["codes"] == [0, 0, 0] and crowded["ready"] == full["size"] - 3, crowded
    assert f"RLIMIT_NOFILE ({limit})" in crowded["failure"] and "Too many open files" in crowded["failure"]
    assert crowded["free"][0] >= limit // 2 - own - limit // 4, (crowded, alone)
    assert report["refilled"] == full["size"]
    assert report["closed"] == 0


def test_a_refused_box_without_the_pool_runs() -> None:
    # The control for the refusal above: the same maps work for a box that makes its own user namespace.
    r = nsbox.run(["true"], net=True, uid_map=[(0, 0, 1), (1, 100000, 10)], gid_map=[(0, 0, 1)])
    assert r.returncode == 0


@pytest.mark.parametrize("side", SIDES)
def test_a_caller_killed_with_a_full_busy_pool_leaves_no_process(
    pool_body: Any, side: str, request: pytest.FixtureRequest
) -> None:
    if side == "root":
        report = pool_body(side, "caller_killed_with_a_full_pool", tests_dir=str(TESTS), python=sys.executable)
    else:
        rootless_dir = str(request.getfixturevalue("rootless_dir"))
        report = pool_body(side, "caller_killed_with_a_full_pool", tests_dir=rootless_dir, python=ROOTLESS_PYTHON)
    assert report["status"] == -9
    assert report["caller"] in report["alive"]  # the control: the search finds the caller's processes
    assert len(report["sets"]) >= 4, report["sets"]
    assert report["left"] == [], f"processes of the killed caller are left: {report['left']}"


@pytest.mark.parametrize("side", SIDES)
def test_a_forked_child_of_a_thread_busy_caller_never_takes_its_parents_sets(
    side: str, request: pytest.FixtureRequest
) -> None:
    if side == "root":
        env = {**os.environ, "PYTHONPATH": str(TESTS)}
        r = subprocess.run(
            [sys.executable, "-c", pool_bodies.FORKED], capture_output=True, text=True, env=env, timeout=120
        )
        assert r.returncode == 0, r.stderr
        report = json.loads(r.stdout.strip().splitlines()[-1])
    else:
        rootless: Rootless = request.getfixturevalue("rootless")
        report = rootless(pool_bodies.FORKED)
    child = report["child"]
    assert report["status"] == 0 and child is not None
    assert len(report["parent_sets"]) == 3, report["parent_sets"]  # the control: the parent holds them
    # The child holds none of them (closed as it was forked), nor does the function process of its call.
    assert child["inherited"] == [] and child["call"][1] == []
    # Its box and call ran, each in a network namespace that none of the parent's sets was.
    assert child["box"][0] == 0
    assert child["box"][1] not in report["parent_sets"] and child["call"][0] not in report["parent_sets"]
    assert child["box"][1] != child["call"][0]
    assert child["ipc"][0] == 0 and child["ipc"][1] != report["host_ipc"]
    # Its sets were its own: made by its own fillers, or made by the box itself.
    assert child["stats"]["taken"] + child["stats"]["missed"] == 2, child["stats"]
    assert child["busy_stats"]["taken"] + child["busy_stats"]["missed"] == 1, child["busy_stats"]
    assert report["parent_after"][0] == 0
