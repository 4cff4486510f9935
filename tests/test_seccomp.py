"""``seccomp=``: each attack is tried from inside a box, under the filter and in a control box without it.

Root and rootless: the drivers run in a fresh interpreter as root or as 65534 (``drive_as``), so that a driver may
make itself a session leader with a terminal, or watch a process of its own. Inside the box a small Python
(``PAYLOAD``) makes raw system calls through ``ctypes`` and prints what each returned.
"""

from __future__ import annotations

import errno
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import nsbox
from helpers.procs import children_of, fd_count, settle

pytest_plugins = ["pytester"]

SIDES = ["root", "rootless"]
#: An errno the kernel never answers for the calls tried: the filter's own answer, told from the kernel's.
MARK = errno.ENOTRECOVERABLE

#: Runs in the box: ``PAYLOAD ARCH WORD...``, where each ``NAME`` or ``NAME:ARG`` makes that system call (with
#: harmless arguments, or ``ARG``) and records 0 or its errno, and ``status`` records the ``Seccomp`` and
#: ``NoNewPrivs`` lines of ``/proc/self/status``. (The architecture comes from outside: ``platform`` calls uname.)
PAYLOAD = r"""
import ctypes, json, os, sys
NR = {
    "x86_64": {"keyctl": 250, "bpf": 321, "perf_event_open": 298, "userfaultfd": 323, "open_by_handle_at": 304,
               "io_uring_setup": 425, "init_module": 175, "finit_module": 313, "delete_module": 176,
               "kexec_file_load": 320,
               "add_key": 248, "request_key": 249, "personality": 135, "clone3": 435, "ptrace": 101, "uname": 63,
               "unshare": 272},
    "aarch64": {"keyctl": 219, "bpf": 280, "perf_event_open": 241, "userfaultfd": 282, "open_by_handle_at": 265,
                "io_uring_setup": 425, "init_module": 105, "finit_module": 273, "delete_module": 106,
                "kexec_file_load": 294,
                "add_key": 217, "request_key": 218, "personality": 92, "clone3": 435, "ptrace": 117, "uname": 160,
                "unshare": 97},
}[sys.argv[1]]
ARGS = {
    "keyctl": (0, -3, 0),  # KEYCTL_GET_KEYRING_ID of the session keyring, not created
    "bpf": (0, 0, 0),  # BPF_MAP_CREATE without attributes: EINVAL
    "perf_event_open": (0, 0, -1, -1, 0),  # no attributes: EFAULT
    "userfaultfd": (os.O_CLOEXEC | 1,),  # UFFD_USER_MODE_ONLY
    "open_by_handle_at": (-100, 0, 0),  # no handle: EFAULT
    "io_uring_setup": (1, 0),  # no parameters: EFAULT
    "init_module": (0, 0, 0), "finit_module": (-1, 0, 0), "delete_module": (0, 0),
    "kexec_file_load": (-1, -1, 0, 0, 0), "add_key": (0, 0, 0, 0, 0), "request_key": (0, 0, 0, 0),
    "personality": (0x0040000,),  # ADDR_NO_RANDOMIZE
    "clone3": (0, 0),  # no arguments: EINVAL
    "uname": (0,),  # no buffer: EFAULT
    "unshare": (0x10000000,),  # CLONE_NEWUSER (last: the calls after it would run in that namespace)
}
libc = ctypes.CDLL(None, use_errno=True)
out = {}
for word in sys.argv[2:]:
    if word == "status":
        with open("/proc/self/status") as f:
            out[word] = {k: v.strip() for k, v in (l.split(":", 1) for l in f) if k in ("Seccomp", "NoNewPrivs")}
        continue
    name, _, arg = word.partition(":")
    child = None
    if arg == "child":  # a process of the box's own
        import subprocess
        child = subprocess.Popen(["sleep", "600"])
        arg = str(child.pid)
    args = (0x4206, int(arg), 0, 0) if name == "ptrace" else ARGS[name]  # PTRACE_SEIZE: the tracee runs on
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(NR[name]), *(ctypes.c_long(a) for a in args))
    out[word] = 0 if r != -1 else ctypes.get_errno()
    if child is not None:
        child.kill()
        child.wait()
print(json.dumps(out))
"""

#: The driver's own helpers: ``params`` (its JSON argument) and ``box(...)``, which runs a command in a box with
#: ``params``' options and the ``seccomp`` given (``None``, ``"default"`` or ``nsbox.Seccomp``'s fields).
DRIVER = r"""
import errno, fcntl, select, termios
params = json.loads(sys.argv[1])


def emit(value):
    print(json.dumps(value), flush=True)


def seccomp_of(spec):
    return spec if spec in (None, "default") else nsbox.Seccomp(**spec)


def box(args, spec, **options):
    options = params.get("options", {}) | options
    r = nsbox.run(args, seccomp=seccomp_of(spec), capture_output=True, text=True, **options)
    return {"rc": r.returncode, "out": r.stdout, "err": r.stderr}


def payload(spec, words, **options):
    r = box([sys.executable, "-c", params["payload"], params["arch"], *words], spec, **options)
    assert r["rc"] == 0, r
    return json.loads(r["out"])
"""

Drive = Callable[..., Any]


def drive(drive_as: Drive, side: str, code: str, **params: Any) -> Any:
    """Runs ``DRIVER`` + ``code`` as ``side`` with ``params`` (the payload among them); what it emitted."""
    return drive_as(side, DRIVER + code, json.dumps({"payload": PAYLOAD, "arch": platform.machine(), **params}))


def status(seen: dict[str, Any]) -> dict[str, str]:
    return seen["status"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("options", [{}, {"pid": True, "user": True}], ids=["plain", "pid+user"])
def test_proc_status_shows_the_filter_and_no_new_privs_only_where_the_kernel_needs_it(
    drive_as: Drive, side: str, options: dict[str, Any]
) -> None:
    seen = drive(
        drive_as,
        side,
        'emit({str(s): payload(s, ["status"]) for s in [None, "default"]})',
        options=options,
    )
    assert status(seen["None"]) == {"Seccomp": "0", "NoNewPrivs": "0"}
    # The kernel takes a filter without no_new_privs from a box with CAP_SYS_ADMIN in its user namespace only:
    # root, or root in a user namespace. Without (the caller is 65534 and there is no user namespace) nsbox sets it.
    without_cap_sys_admin = side == "rootless" and not options
    assert status(seen["default"]) == {"Seccomp": "2", "NoNewPrivs": "1" if without_cap_sys_admin else "0"}


def test_a_box_switched_to_another_user_gets_no_new_privs_with_its_filter() -> None:
    read = ["grep", "-E", "^(Seccomp|NoNewPrivs):", "/proc/self/status"]
    for seccomp, expected in [(None, "0 0"), ("default", "1 2")]:
        r = nsbox.run(read, seccomp=seccomp, user=65534, capture_output=True, text=True, check=True)
        assert r.stdout.split()[1::2] == expected.split()  # NoNewPrivs, Seccomp


@pytest.mark.parametrize("side", SIDES)
def test_a_box_without_cap_sys_admin_gets_no_new_privs_with_its_filter(drive_as: Drive, side: str) -> None:
    code = 'emit({str(s): payload(s, ["status"], capabilities=()) for s in [None, "default"]})'
    seen = drive(drive_as, side, code, options={"user": True})
    assert status(seen["None"]) == {"Seccomp": "0", "NoNewPrivs": "0"}
    assert status(seen["default"]) == {"Seccomp": "2", "NoNewPrivs": "1"}


#: The calls the default profile denies, tried with harmless arguments; ``unshare`` (CLONE_NEWUSER) last.
DENIED = [
    "keyctl",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "open_by_handle_at",
    "io_uring_setup",
    "add_key",
    "request_key",
    "init_module",
    "finit_module",
    "delete_module",
    "kexec_file_load",
    "personality",
    "unshare",
]


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("options", [{}, {"pid": True, "user": True}], ids=["plain", "pid+user"])
def test_the_default_profile_denies_its_calls_with_eperm_and_the_box_goes_on(
    drive_as: Drive, side: str, options: dict[str, Any]
) -> None:
    words = [*DENIED, "clone3"]
    seen = drive(
        drive_as,
        side,
        f"""
control = payload(None, {words!r})
default = payload("default", {words!r})
marked = payload({{"profile": "default", "errno": {MARK}}}, {words!r})
emit({{"control": control, "default": default, "marked": marked}})
""",
        options=options,
    )
    control, default, marked = seen["control"], seen["default"], seen["marked"]
    # The control: the kernel let each call through to its own checks (0, or EINVAL/EFAULT/ENOSYS ...).
    assert all(control[w] not in (errno.EPERM, MARK) for w in words), control
    for reachable in ("keyctl", "bpf", "perf_event_open", "unshare", "personality", "userfaultfd"):
        assert control[reachable] in (0, errno.EINVAL, errno.EFAULT), (reachable, control)
    assert control["unshare"] == 0 and control["keyctl"] == 0
    # The filter answers first: EPERM, or its own errno; clone3 is ENOSYS so that the C library uses clone.
    assert default == {w: errno.EPERM for w in DENIED} | {"clone3": errno.ENOSYS}
    assert marked == {w: MARK for w in DENIED} | {"clone3": errno.ENOSYS}


PROGRAMS = r"""
start_a_thread = "import threading; t = threading.Thread(target=print, args=('thread',)); t.start(); t.join()"
thread = [sys.executable, "-c", start_a_thread]
pipeline = ["sh", "-c", "echo a | tr a b"]
ps = ["ps", "-e", "-o", "pid=,comm="]
seen = {}
for spec in (None, "default"):
    seen[str(spec)] = [
        box(thread, spec),
        box(pipeline, spec),
        box(ps, spec, pid=True, mount_proc=True),
        box(ps, spec, init=True, mount_proc=True),
        nsbox.call(lambda: open("/proc/self/status").read().split("Seccomp:")[1].split()[0], seccomp=spec, pid=True),
        nsbox.call(lambda: sorted(os.listdir("/proc/self/ns")), seccomp=spec),
    ]
emit(seen)
"""


@pytest.mark.parametrize("side", SIDES)
def test_ordinary_programs_run_unchanged_under_the_default_profile(drive_as: Drive, side: str) -> None:
    seen = drive(drive_as, side, PROGRAMS)
    control, default = seen["None"], seen["default"]
    assert control[:4] == default[:4]
    thread, pipeline, ps, ps_init = default[:4]
    assert thread == {"rc": 0, "out": "thread\n", "err": ""}
    assert pipeline == {"rc": 0, "out": "b\n", "err": ""}
    assert ps["out"].split() == ["1", "ps"], ps
    assert ps_init["out"].split() == ["1", "memfd:nsbox-hel", "2", "ps"], ps_init  # init=True: the helper is PID 1
    # nsbox.call: the function runs under the filter, and the result comes back.
    assert (control[4], default[4]) == ("0", "2")
    assert control[5] == default[5] and "pid" in default[5]


TIOCSTI = r"""
# A caller with the pty as its controlling terminal, as a shell on a terminal is; the box shares its session.
master, slave = os.openpty()
os.setsid()
fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
inject = '''
import fcntl, termios
try:
    for byte in b"id\\n":
        fcntl.ioctl(0, termios.TIOCSTI, bytes([byte]))
    print(0)
except OSError as e:
    print(e.errno)
'''
seen = {}
for spec in (None, "default"):
    r = nsbox.run([sys.executable, "-c", inject], stdin=slave, capture_output=True, text=True, seccomp=seccomp_of(spec))
    # TIOCSTI puts the bytes in the terminal's input queue before it returns: a line is there now, or never.
    readable, _, _ = select.select([slave], [], [], 5 if spec is None else 0)
    typed = os.read(slave, 100).decode() if readable else ""
    seen[str(spec)] = {"errno": int(r.stdout or -1), "typed": typed, "err": r.stderr}
emit(seen)
"""


@pytest.mark.skipif(
    Path("/proc/sys/dev/tty/legacy_tiocsti").read_text().strip() != "1", reason="TIOCSTI is disabled on this kernel"
)
@pytest.mark.parametrize("side", SIDES)
def test_tiocsti_on_the_callers_terminal_is_refused_without_a_new_session(drive_as: Drive, side: str) -> None:
    seen = drive(drive_as, side, TIOCSTI)
    # The control: the box types "id" into its caller's terminal, which the caller's shell would run.
    assert seen["None"] == {"errno": 0, "typed": "id\n", "err": ""}
    assert seen["default"] == {"errno": errno.EPERM, "typed": "", "err": ""}


PTRACE = r"""
# A process of the caller's, outside the box (the same user): the box tries to trace it.
target = subprocess.Popen(["sleep", "600"])
try:
    word = f"ptrace:{target.pid}"
    seen = {
        "control": payload(None, [word])[word],
        "default": payload("default", [word])[word],
        # In a PID namespace of its own the caller's process has no PID: nothing outside can be named.
        "pid": payload("default", [word], pid=True)[word],
        "own": payload("default", ["ptrace:child"], pid=True)["ptrace:child"],
    }
finally:
    target.kill()
    target.wait()
emit(seen)
"""


@pytest.mark.parametrize("side", SIDES)
def test_ptrace_is_denied_without_a_pid_namespace_and_reaches_only_the_box_with_one(drive_as: Drive, side: str) -> None:
    seen = drive(drive_as, side, PTRACE)
    assert seen["control"] == 0  # the attack: a box without a PID namespace traces the caller's processes
    assert seen["default"] == errno.EPERM
    assert seen["pid"] == errno.ESRCH
    assert seen["own"] == 0  # gdb and strace work in the box


#: i386's getpid through ``int 0x80`` from 64-bit code, then x32's getpid; each prints its result.
OTHER_ABIS = r"""
# SIGSYS dumps core: not here.
i386 = '''
import ctypes, mmap, resource
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
code = bytes([0xB8, 20, 0, 0, 0, 0xCD, 0x80, 0xC3])  # mov eax, 20 (getpid); int 0x80; ret
page = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
page.write(code)
print(ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(page)))())
'''
x32 = '''
import ctypes, resource
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
print(ctypes.CDLL(None).syscall(0x40000000 | 39))
'''
seen = {}
for spec in (None, "default"):
    seen[str(spec)] = [box([sys.executable, "-c", code], spec, pid=True) for code in (i386, x32)]
emit(seen)
"""


@pytest.mark.skipif(platform.machine() != "x86_64", reason="i386 and x32 are x86_64's other ABIs")
@pytest.mark.parametrize("side", SIDES)
def test_calls_through_another_abi_kill_the_box(drive_as: Drive, side: str) -> None:
    seen = drive(drive_as, side, OTHER_ABIS)
    i386, x32 = seen["None"]
    assert i386 == {"rc": 0, "out": "1\n", "err": ""}  # PID 1 of its namespace, through the i386 table
    assert x32["rc"] == 0 and x32["out"] in ("1\n", "-1\n")  # -1 (ENOSYS) where x32 is not built in, as here
    for killed in seen["default"]:
        assert killed == {"rc": -31, "out": "", "err": ""}  # SIGSYS


CUSTOM = r"""
busybox_true = ["arch_prctl", "brk", "getrandom", "getuid", "mprotect", "prctl", "prlimit64", "readlink", "rseq",
                "set_robust_list", "set_tid_address"]
emit({
    "control": box(["uname"], None),
    "deny": box(["uname"], {"deny": ["uname"]}),
    "errno": box(["uname"], {"deny": ["uname"], "errno": errno.EACCES}),
    "others": payload({"deny": ["uname"]}, ["keyctl", "uname", "io_uring_setup"]),
    "allowed": box(["busybox", "true"], {"allow": busybox_true}),
    "not_allowed": box(["busybox", "uname"], {"allow": busybox_true}),
    "busybox": box(["busybox", "uname"], None),
})
"""


@pytest.mark.parametrize("side", SIDES)
def test_a_filter_of_ones_own_denies_what_it_names_with_its_errno(drive_as: Drive, side: str) -> None:
    assert shutil.which("busybox"), "busybox-static is installed by scripts/bootstrap"
    seen = drive(drive_as, side, CUSTOM)
    assert seen["control"]["rc"] == 0 and seen["control"]["out"] == "Linux\n"
    assert seen["deny"] == {"rc": 1, "out": "", "err": "uname: cannot get system name: Operation not permitted\n"}
    assert seen["errno"]["err"] == "uname: cannot get system name: Permission denied\n"
    # A deny list is that list only, and io_uring (a ring would run the denied calls where no filter sees them).
    assert seen["others"] == {"keyctl": 0, "uname": errno.EPERM, "io_uring_setup": errno.EPERM}
    # An allow list: the calls a static busybox makes to start (nsbox adds execve, write and exit_group).
    assert seen["allowed"] == {"rc": 0, "out": "", "err": ""}
    assert seen["busybox"]["out"] == "Linux\n"
    assert seen["not_allowed"] == {"rc": 0, "out": "\n", "err": ""}  # its uname failed: busybox prints nothing


#: Refused before anything is forked: (seccomp=, exception, text of the message).
BAD: list[tuple[Any, type[Exception], str]] = [
    ("strict", ValueError, "seccomp must be None, 'default' or an nsbox.Seccomp, not 'strict'"),
    (["keyctl"], TypeError, "not list"),
    (nsbox.Seccomp(deny=["keyctl", "no_such_call"]), ValueError, "'no_such_call' is not a system call on"),
    (nsbox.Seccomp(allow=["read", "nope"]), ValueError, "'nope' is not a system call on"),
    (nsbox.Seccomp.default(deny=["Uname"]), ValueError, "'Uname' is not a system call"),
]


@pytest.mark.unit
@pytest.mark.parametrize(("seccomp", "exc", "text"), BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_filters_raise_before_anything_is_forked_and_leave_no_fd(
    seccomp: Any, exc: type[Exception], text: str
) -> None:
    settle()
    fds = sorted(os.listdir("/proc/self/fd"))
    starts: list[Callable[[], Any]] = [
        lambda: nsbox.run(["true"], seccomp=seccomp, capture_output=True),
        lambda: nsbox.Popen(["true"], seccomp=seccomp, stdout=subprocess.PIPE, pid=True),
        lambda: nsbox.call(os.getpid, seccomp=seccomp),
    ]
    for start in starts:
        with pytest.raises(exc) as info:
            start()
        assert text in str(info.value)
        if exc is ValueError and isinstance(seccomp, nsbox.Seccomp):
            assert info.value.option == "seccomp"  # type: ignore[attr-defined]
    assert sorted(os.listdir("/proc/self/fd")) == fds and fd_count() == len(fds)
    assert children_of(os.getpid()) == []


@pytest.mark.unit
@pytest.mark.parametrize(
    ("fields", "exc", "text"),
    [
        ({"deny": "uname"}, TypeError, "deny must be a list of system call names, not str"),
        ({"deny": [b"uname"]}, TypeError, "names (str), not b'uname'"),
        ({"allow": 5}, TypeError, "allow must be a list"),
        ({"errno": 0}, ValueError, "errno must be 1 to 4095, not 0"),
        ({"errno": 4096}, ValueError, "not 4096"),
        ({"errno": True}, TypeError, "errno must be an int"),
        ({"errno": "EPERM"}, TypeError, "errno must be an int, not str"),
        ({"profile": "strict"}, ValueError, "profile must be None or 'default'"),
        ({"allow": ["read"], "deny": ["uname"]}, ValueError, "no deny list and no profile"),
        ({"allow": ["read"], "profile": "default"}, ValueError, "no deny list and no profile"),
        ({"user_namespaces": True}, ValueError, "applies to the default profile"),
        ({"profile": "default", "user_namespaces": 1}, TypeError, "user_namespaces must be True or False"),
    ],
)
def test_a_seccomp_is_checked_when_made(fields: dict[str, Any], exc: type[Exception], text: str) -> None:
    with pytest.raises(exc, match=r"^Seccomp: ") as info:
        nsbox.Seccomp(**fields)
    assert text in str(info.value)


@pytest.mark.unit
def test_a_seccomp_is_a_frozen_value() -> None:
    made = nsbox.Seccomp(deny=["uname", "keyctl"])
    assert made.deny == ("uname", "keyctl") and made.errno == errno.EPERM and made.allow is None
    assert made == nsbox.Seccomp(deny=("uname", "keyctl")) and hash(made) == hash(
        nsbox.Seccomp(deny=("uname", "keyctl"))
    )
    assert nsbox.Seccomp.default(user_namespaces=True) == nsbox.Seccomp(profile="default", user_namespaces=True)
    with pytest.raises(AttributeError):
        made.errno = 2  # type: ignore[misc]


def test_user_namespaces_can_be_allowed_for_nested_boxes() -> None:
    nested = [
        sys.executable,
        "-c",
        "import nsbox; print(nsbox.run(['id', '-u'], user=True, capture_output=True, text=True).stdout)",
    ]
    allowed = nsbox.run(nested, seccomp=nsbox.Seccomp.default(user_namespaces=True), capture_output=True, text=True)
    assert allowed.returncode == 0 and allowed.stdout.strip() == "0", allowed
    denied = nsbox.run(nested, seccomp="default", capture_output=True, text=True)
    assert denied.returncode == 1 and "PermissionError: [Errno 1] cannot create the user namespace" in denied.stderr


@pytest.mark.parametrize(("flag", "expected"), [("--seccomp=default", "2"), ("--seccomp=none", "0"), (None, "0")])
def test_the_command_line_takes_seccomp(flag: str | None, expected: str) -> None:
    args = [
        sys.executable,
        "-m",
        "nsbox",
        *([flag] if flag else []),
        "-p",
        "--",
        "grep",
        "^Seccomp:",
        "/proc/self/status",
    ]
    r = subprocess.run(args, capture_output=True, text=True, check=True)
    assert r.stdout.split() == ["Seccomp:", expected]


def test_a_bad_cli_value_is_a_usage_error() -> None:
    r = subprocess.run([sys.executable, "-m", "nsbox", "--seccomp=strict", "true"], capture_output=True, text=True)
    assert r.returncode == 2 and "--seccomp" in r.stderr


def test_the_pytest_marker_takes_seccomp(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import ctypes, errno, platform
        import pytest
        import nsbox

        KEYCTL = {"x86_64": 250, "aarch64": 219}[platform.machine()]

        @pytest.mark.nsbox(seccomp="default", pid=True)
        def test_filtered():
            assert "Seccomp:\\t2" in open("/proc/self/status").read()
            assert ctypes.CDLL(None, use_errno=True).syscall(KEYCTL, 0, -3, 0) == -1
            assert ctypes.get_errno() == errno.EPERM

        @pytest.mark.nsbox(seccomp=nsbox.Seccomp(deny=["uname"]))
        def test_own_filter():
            with pytest.raises(PermissionError):
                __import__("os").uname()
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--strict-markers")
    result.assert_outcomes(passed=2)


# Not a unit test: it reads the repository's files, which the unit tests' copy for uid 65534 has not.
def test_the_readme_lists_exactly_what_the_default_profile_denies() -> None:
    repo = Path(__file__).resolve().parent.parent
    section = re.split(r"\n##+ ", (repo / "README.md").read_text().split("\n### Seccomp\n", 1)[1])[0]
    rows = [line.split(" | ")[0] for line in section.splitlines() if line.startswith("| `")]
    listed = {name for row in rows for name in re.findall(r"`([a-z_][a-z_0-9]*)`", row)}
    source = (repo / "src" / "seccomp.rs").read_text()
    constants = re.findall(r"const (?:DENIED|OTHER_PROCESSES): &\[&str\] = &\[(.*?)\];", source, flags=re.S)
    profile = {name for body in constants for name in re.findall(r'"([a-z_0-9]+)"', body)}
    conditional = {"ioctl", "personality", "clone", "unshare", "clone3"}
    assert len(constants) == 2 and listed == profile | conditional


@pytest.mark.parametrize(("seccomp", "expected"), [(None, "0"), ("default", "2")])
def test_an_exec_into_a_box_runs_under_the_boxs_filter(seccomp: str | None, expected: str) -> None:
    with nsbox.Popen(["sleep", "600"], pid=True, seccomp=seccomp) as box:
        try:
            r = box.exec(["grep", "^Seccomp:", "/proc/self/status"], capture_output=True, text=True, check=True)
        finally:
            box.kill()
    assert r.stdout.split() == ["Seccomp:", expected]
