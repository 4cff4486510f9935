"""Bad input gets subprocess's exceptions or a ValueError/TypeError that says what is wrong, and leaves nothing."""

from __future__ import annotations

import errno
import json
import os
import re
import textwrap
from typing import Any

import pytest

import nsbox
from helpers.procs import children_of, fd_count
from helpers.rootless import Rootless

#: (args, options, exception, text the message must contain), rejected before anything is forked.
BAD_INPUT: list[tuple[Any, dict[str, Any], type[Exception], str]] = [
    ([], {}, ValueError, "args must not be empty"),
    (["echo", "a\0b"], {}, ValueError, "null byte"),
    (["echo\0x"], {"pid": True}, ValueError, "null byte"),
    (["env"], {"env": {"KEY": "va\0lue"}}, ValueError, "null byte"),
    (["env"], {"env": {"K\0EY": "value"}}, ValueError, "null byte"),
    (["env"], {"env": {"K=EY": "value"}}, ValueError, "environment variable name"),
    (["true"], {"mount": True, "propagation": "rprivate"}, ValueError, "rprivate"),
    (["true"], {"propagation": "slave"}, ValueError, "mount=True"),
    (["true"], {"uid_map": [(0, 1000, 10), (5, 2000, 1)]}, ValueError, "overlap"),
    (["true"], {"gid_map": [(0, 1000, 10), (50, 1005, 1)]}, ValueError, "overlap"),
    (["true"], {"uid_map": [(0, 1000, 0)]}, ValueError, "count 0"),
    (["true"], {"uid_map": [(0, 1000)]}, TypeError, "uid_map"),
    (["true"], {"uid_map": "0 1000 1"}, TypeError, "uid_map"),
    (["true"], {"uid_map": [(0, 0, 1)], "user": False}, ValueError, "user=False"),
    (["true"], {"user": True, "setgroups": "maybe"}, ValueError, "maybe"),
    (["true"], {"hostname": "a" * 65}, ValueError, "65 bytes"),
    (["true"], {"hostname": ""}, ValueError, "empty"),
    (["true"], {"hostname": "a\0b"}, ValueError, "NUL"),
    (["true"], {"pid": 1}, TypeError, "pid must be True or False"),
    (["true"], {"net": "yes"}, TypeError, "net must be True or False"),
    (["true"], {"user": 1.5}, TypeError, "user must be None, True or False"),
    (["true"], {"user": -1}, ValueError, "User ID cannot be negative"),
    (["true"], {"user": "no-such-user-nsbox"}, KeyError, "no-such-user-nsbox"),
    (["true"], {"uid_map": [(1_000_000_000 + i, 2_000_000_000 + i, 1) for i in range(200)]}, ValueError, "4096"),
    (["true"], {"monotonic_offset": 5}, ValueError, "time=True"),
    (["true"], {"boottime_offset": 5.5}, ValueError, "time=True"),
    (["true"], {"time": True, "boottime_offset": float("nan")}, ValueError, "finite"),
    (["true"], {"time": True, "monotonic_offset": "5"}, TypeError, "monotonic_offset"),
    (["true"], {"close_fds": False}, ValueError, "pass_fds"),
    (["true"], {"pass_fds": [-1]}, ValueError, "pass_fds"),
    (["true"], {"pass_fds": [2**31]}, ValueError, "pass_fds: 2147483648 is not a file descriptor"),
    (["true"], {"pass_fds": [3, 10**30]}, ValueError, "is not a file descriptor"),
    # The box's filesystem (issue 15): host paths checked, and the rules, before anything is made.
    (["true"], {"mounts": [nsbox.Bind("/nonexistent-nsbox", "/x")]}, FileNotFoundError, "/nonexistent-nsbox"),
    (["true"], {"root": "/nonexistent-nsbox"}, FileNotFoundError, "/nonexistent-nsbox"),
    (["true"], {"root": "/etc/hostname"}, NotADirectoryError, "/etc/hostname"),
    (["true"], {"root": nsbox.Overlay(lower=["/usr"], upper="/usr/nsbox-upper")}, ValueError, "inside a lower"),
    (["true"], {"mounts": [nsbox.Tmpfs()]}, ValueError, "needs a target"),
    (["true"], {"root": nsbox.Tmpfs(), "propagation": "shared"}, ValueError, "propagate"),
]
BAD_IDS = [
    f"{i}-{exc.__name__}-{re.sub(r'[^a-z=]+', '_', text.lower())}" for i, (_, _, exc, text) in enumerate(BAD_INPUT)
]


@pytest.mark.unit
@pytest.mark.parametrize(("args", "options", "exc", "text"), BAD_INPUT, ids=BAD_IDS)
def test_bad_input_raises_a_clear_error_and_leaves_nothing(
    args: Any, options: dict[str, Any], exc: type[Exception], text: str
) -> None:
    fds = fd_count()
    with pytest.raises(exc) as info:
        nsbox.run(args, capture_output=True, **options)
    assert type(info.value) is exc
    assert text in str(info.value)
    assert fd_count() == fds
    assert children_of(os.getpid()) == []


#: Refusals of the core's checks, and the option each names in ``ValueError.option`` (for front ends with
#: other words for the options, such as the CLI).
OPTION_AT_FAULT: list[tuple[dict[str, Any], str | None]] = [
    ({"hostname": "a" * 65}, "hostname"),
    ({"root": nsbox.Tmpfs(), "propagation": "shared"}, "propagation"),
    ({"mount": True, "propagation": "rprivate"}, "propagation"),
    ({"propagation": "slave"}, "propagation"),
    ({"gid_map": [(0, 1000, 10), (50, 1005, 1)]}, "gid_map"),
    ({"uid_map": [(0, 0, 1)], "user": False}, "uid_map"),
    ({"setgroups": "allow", "user": False}, "setgroups"),
    ({"user": True, "setgroups": "maybe"}, "setgroups"),
    ({"boottime_offset": 5.5}, "boottime_offset"),
    ({"time": True, "monotonic_offset": float("inf")}, "monotonic_offset"),
    ({"mount_proc": ""}, "mount_proc"),
]


@pytest.mark.unit
@pytest.mark.parametrize(("options", "option"), OPTION_AT_FAULT, ids=[next(iter(o)) for o, _ in OPTION_AT_FAULT])
def test_a_refused_option_is_named_by_a_field(options: dict[str, Any], option: str) -> None:
    with pytest.raises(ValueError) as info:
        nsbox.run(["true"], **options)
    assert info.value.option == option  # type: ignore[attr-defined]
    assert children_of(os.getpid()) == []


@pytest.mark.unit
def test_the_step_and_hint_names_are_listed_by_the_core() -> None:
    from nsbox import _nsbox

    assert {"clone", "uid_map", "mount_proc", "cwd", "exec", "target"} <= set(_nsbox.STEPS)
    assert "proc_needs_pid_namespace" in _nsbox.HINTS
    assert len(set(_nsbox.STEPS)) == len(_nsbox.STEPS) and len(set(_nsbox.HINTS)) == len(_nsbox.HINTS)


#: Ids to run as that ``subprocess`` refuses; Python 3.11.0-3.11.3 (the rootless interpreter here is 3.11.2)
#: refuse them only after making the pipes, and leak those.
BAD_IDS_TO_RUN_AS: list[dict[str, Any]] = [
    {"user": -1},
    {"user": "no-such-user-nsbox"},
    {"user": 1.5},
    {"group": -2},
    {"group": "no-such-group-nsbox"},
    {"extra_groups": [0, -1]},
    {"extra_groups": [None]},
]


def test_ids_subprocess_refuses_are_refused_alike_and_leave_no_fd(rootless: Rootless) -> None:
    seen = rootless(
        f"""
        def outcome(run, options):
            before = sorted(os.listdir("/proc/self/fd"))
            try:
                run(["true"], capture_output=True, **options)
                error = None
            except Exception as e:
                error = [type(e).__name__, str(e)]
            return error, sorted(os.listdir("/proc/self/fd")) == before

        emit([[outcome(nsbox.run, o), outcome(subprocess.run, o)] for o in {BAD_IDS_TO_RUN_AS!r}])
        """
    )
    for options, ((error, clean), (sub_error, _)) in zip(BAD_IDS_TO_RUN_AS, seen, strict=True):
        # The same exception as subprocess's; and no fd left, even where subprocess leaves some.
        assert error is not None and (error == sub_error or options == {"user": 1.5}), (options, error, sub_error)
        assert clean, (options, error)


def test_bad_input_is_rejected_before_anything_is_forked(python: str) -> None:
    # In a fresh PID namespace nothing else allocates PIDs, so ns_last_pid counts our forks exactly.
    helper = textwrap.dedent(
        f"""
        import json, nsbox
        from nsbox import Bind, Overlay, Tmpfs
        nan = float("nan")
        cases = {[(args, options) for args, options, _, _ in BAD_INPUT]!r}

        def last_pid():
            with open("/proc/sys/kernel/ns_last_pid") as f:
                return int(f.read())

        nsbox.run(["true"])  # the spawner thread exists from here on
        report = []
        for args, options in cases:
            before = last_pid()
            try:
                nsbox.run(args, capture_output=True, **options)
                report.append(["no error", 0])
            except Exception as e:
                report.append([type(e).__name__, last_pid() - before])
        before = last_pid()
        nsbox.run(["true"], pid=True)
        print(json.dumps({{"bad": report, "good": last_pid() - before}}))
        """
    )
    r = nsbox.run([python, "-c", helper], pid=True, mount_proc=True, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["good"] == 1, "control: a good run forks exactly once"
    assert report["bad"] == [[exc.__name__, 0] for _, _, exc, _ in BAD_INPUT]


# ---------------------------------------------------------------------------------------------------------------
# Refusals of the kernel: the errno's OSError, naming the step


def test_new_proc_without_pid_namespace_in_a_user_namespace_names_the_step() -> None:
    fds = fd_count()
    with pytest.raises(PermissionError) as info:
        nsbox.run(["true"], user=True, mount_proc=True, capture_output=True)
    assert info.value.errno == errno.EPERM
    assert "cannot mount a new proc on '/proc'" in str(info.value)
    assert info.value.step == "mount_proc"  # type: ignore[attr-defined]
    assert info.value.hint == "proc_needs_pid_namespace"  # type: ignore[attr-defined]
    assert info.value.what == "mount a new proc on '/proc'"  # type: ignore[attr-defined]
    assert f"cannot {info.value.what}: " in str(info.value)  # type: ignore[attr-defined]
    assert "pid=True" in str(info.value)
    assert fd_count() == fds
    assert children_of(os.getpid()) == []


@pytest.mark.parametrize("clock", ["monotonic_offset", "boottime_offset"])
def test_clock_offset_the_kernel_refuses_names_the_offsets_file(clock: str) -> None:
    with pytest.raises(OSError) as info:
        nsbox.run(["true"], time=True, **{clock: -1e9})
    assert info.value.errno == errno.ERANGE
    assert "cannot write the clock offsets" in str(info.value)
    assert children_of(os.getpid()) == []


@pytest.mark.unit
def test_each_options_converter_writes_keys_of_its_own_so_defaults_are_converted_once() -> None:
    # prepare() starts from DEFAULT_CORE and converts only the options not left at their default: that is the
    # same spec only while no two converters write the same key.
    from nsbox._options import DEFAULT_CORE, OPTIONS

    owner: dict[str, str] = {}
    for name, meta in OPTIONS.items():
        if meta.core is not None:
            for key in meta.core(name, meta.default):
                assert key not in owner, f"{name} and {owner[key]} both give the core {key!r}"
                owner[key] = name
    assert set(owner) == set(DEFAULT_CORE)


@pytest.mark.unit
@pytest.mark.parametrize("option", ["pid", "mount_proc", "init", "no_new_privs"])
def test_a_value_equal_to_the_default_but_not_it_is_still_checked(option: str) -> None:
    with pytest.raises(TypeError, match=option):
        nsbox.Popen(["true"], **{option: 0})  # type: ignore[misc]
