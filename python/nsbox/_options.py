"""The one declaration of a box's options: names, types, defaults, checks, and what the core is given.

``NamespaceOptions`` (what :func:`nsbox.call` takes) and ``BoxOptions`` (what :class:`nsbox.Popen`,
:func:`nsbox.run` and :func:`nsbox.enter` take, and the pytest marker) are ``TypedDict`` s, so that type
checkers see every keyword (``run(["true"], pdi=True)`` is an error). Each field's ``Option`` metadata holds
its default and how it becomes the core's options (``src/spec.rs``'s ``Options``, given as a dict by name).
Adding an option means a field here, the Rust spec, and the code that acts on it.

Types are checked here, with messages that name the argument; values (map overlaps, hostname length,
offsets without ``time=True`` ...) are checked by the Rust core, the same way for every caller. The rules
that join options to a network or a target are here too, once.
"""

# No `from __future__ import annotations`: the TypedDicts' Annotated metadata is read at run time. Types
# that would cost an import here are strings (forward references).
import os
import sys
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Annotated, Any, Literal, TypedDict

from nsbox import _limits, _nsbox
from nsbox._mounts import Bind, Mount, Overlay, Tmpfs, mounts_core, root_core
from nsbox._seccomp import Seccomp, seccomp_core

if TYPE_CHECKING:
    import ipaddress

    from nsbox._network import Network

#: What paths may be, as in :mod:`subprocess`.
StrOrBytesPath = str | bytes | os.PathLike[str] | os.PathLike[bytes]


def _flag(name: str, value: object) -> dict[str, Any]:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, not {value!r}")
    return {name: value}


def _tty(name: str, value: object) -> dict[str, Any]:
    if isinstance(value, bool):
        return {name: value, "tty_size": None}
    if isinstance(value, tuple) and len(value) == 2 and all(type(n) is int for n in value):
        if all(1 <= n <= 0xFFFF for n in value):
            return {name: True, "tty_size": value}
        raise ValueError(f"{name}: a terminal's rows and columns are 1 to 65535, not {value!r}")
    raise TypeError(f"{name} must be True, False or a size (rows, cols), not {value!r}")


def wants_tty(options: Mapping[str, object]) -> bool:
    """Whether ``options`` ask for a terminal (``tty=True`` or a size), before they are checked."""
    value = options.get("tty", False)
    return value is True or isinstance(value, tuple)


def _text(name: str, value: object) -> dict[str, Any]:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{name} must be a string, not {type(value).__name__}")
    return {name: value}


def _path_bytes(name: str, value: object) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, (str, bytes, os.PathLike)):
        return os.fsencode(value)
    raise TypeError(f"{name} must be a path, not {type(value).__name__}")


def _mount_proc(name: str, value: object) -> dict[str, Any]:
    # True, or a directory to mount proc on (unshare --mount-proc=DIR).
    if isinstance(value, bool):
        return {name: value, "proc_dir": None}
    return {name: True, "proc_dir": _path_bytes(name, value)}


def _hostname(name: str, value: object) -> dict[str, Any]:
    if value is not None and not isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be str or bytes, not {type(value).__name__}")
    return {name: None if value is None else os.fsencode(value)}


def _id_map(name: str, value: object) -> dict[str, Any]:
    if value is None:
        return {name: None}
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"{name} must be a list of (inside, outside, count) tuples, not {type(value).__name__}")
    ranges = []
    for item in value:
        if not isinstance(item, (tuple, list)) or len(item) != 3:
            raise TypeError(f"{name}: each range must be an (inside, outside, count) tuple, not {item!r}")
        for part in item:
            if isinstance(part, bool) or not isinstance(part, int):
                raise TypeError(f"{name}: ids must be integers, not {part!r} in {item!r}")
            if not 0 <= part < 2**32:
                raise ValueError(f"{name}: {part} in {item!r} is not an id (0 to 4294967294)")
        ranges.append((item[0], item[1], item[2]))
    return {name: ranges}


def _root(name: str, value: object) -> dict[str, Any]:
    return {name: root_core(value)}


def _mounts(name: str, value: object) -> dict[str, Any]:
    return {name: mounts_core(value)}


def _seconds(name: str, value: object) -> dict[str, Any]:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    return {name: None if value is None else float(value)}


def _capabilities(name: str, value: object) -> dict[str, Any]:
    if value is None:
        return {name: None}
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"{name} must be a collection of capability names (() for none), not {value!r}")
    names = list(value)
    for item in names:
        if not isinstance(item, str):
            raise TypeError(f"{name}: capabilities are named by strings like 'CAP_NET_RAW', not {item!r}")
    return {name: names}


#: ``resource.RLIM_INFINITY`` (-1), as the core's 64-bit limits have it.
_INFINITY = 2**64 - 1


def _rlimit_value(name: str, what: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"rlimits: the {what} limit of {name!r} must be an int, not {value!r}")
    if value == -1:  # resource.RLIM_INFINITY
        return _INFINITY
    if not 0 <= value < _INFINITY:
        raise ValueError(f"rlimits: the {what} limit of {name!r} must be 0 or more (or RLIM_INFINITY), not {value}")
    return value


def _rlimits(name: str, value: object) -> dict[str, Any]:
    if value is None:
        return {name: []}
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a mapping like {{'nofile': 256}}, not {type(value).__name__}")
    limits = []
    for key, limit in value.items():
        if not isinstance(key, str):
            raise TypeError(f"{name}: limits are named like resource.RLIMIT_* in lower case ('nofile'), not {key!r}")
        if isinstance(limit, tuple) and len(limit) == 2:
            soft, hard = (_rlimit_value(key, what, v) for what, v in zip(("soft", "hard"), limit, strict=True))
        else:
            soft = hard = _rlimit_value(key, "soft and hard", limit)
        limits.append((key, soft, hard))
    return {name: limits}


@dataclass(frozen=True)
class Option:
    """A field's metadata: its default, and how it becomes the core's options (``None``: not the core's)."""

    default: object
    core: Callable[[str, object], dict[str, Any]] | None = None


class NamespaceOptions(TypedDict, total=False):
    """The options of a box that :func:`nsbox.call` takes too (besides ``user``, a parameter of its own)."""

    pid: Annotated[bool, Option(False, _flag)]
    mount: Annotated[bool, Option(False, _flag)]
    uts: Annotated[bool, Option(False, _flag)]
    ipc: Annotated[bool, Option(False, _flag)]
    net: Annotated[bool, Option(False, _flag)]
    cgroup: Annotated[bool, Option(False, _flag)]
    time: Annotated[bool, Option(False, _flag)]
    mount_proc: Annotated[bool | StrOrBytesPath, Option(False, _mount_proc)]
    propagation: Annotated[str | None, Option(None, _text)]
    hostname: Annotated[str | bytes | None, Option(None, _hostname)]
    uid_map: Annotated[Sequence[tuple[int, int, int]] | None, Option(None, _id_map)]
    gid_map: Annotated[Sequence[tuple[int, int, int]] | None, Option(None, _id_map)]
    setgroups: Annotated[str | None, Option(None, _text)]
    monotonic_offset: Annotated[float | None, Option(None, _seconds)]
    boottime_offset: Annotated[float | None, Option(None, _seconds)]
    root: Annotated[StrOrBytesPath | Bind | Tmpfs | Overlay | None, Option(None, _root)]
    mounts: Annotated[Sequence[Mount] | None, Option(None, _mounts)]
    network: Annotated["Network | None", Option(None)]
    ip: Annotated["str | ipaddress.IPv4Address | None", Option(None)]
    no_new_privs: Annotated[bool, Option(False, _flag)]
    capabilities: Annotated[Collection[str] | None, Option(None, _capabilities)]
    rlimits: Annotated[Mapping[str, int | tuple[int, int]] | None, Option(None, _rlimits)]
    sandbox: Annotated[bool, Option(False)]
    seccomp: Annotated[Seccomp | Literal["default"] | None, Option(None, seccomp_core)]
    memory_limit: Annotated[int | str | None, Option(None, _limits.memory_limit)]
    pids_limit: Annotated[int | None, Option(None, _limits.pids_limit)]
    cpu_limit: Annotated[float | None, Option(None, _limits.cpu_limit)]


class BoxOptions(NamespaceOptions, total=False):
    """The options of a box that runs a command (:class:`nsbox.Popen`, :func:`nsbox.run`, :func:`nsbox.enter`)."""

    init: Annotated[bool, Option(False, _flag)]
    persist: Annotated[StrOrBytesPath | None, Option(None)]
    target: Annotated["int | StrOrBytesPath | Mapping[str, StrOrBytesPath] | None", Option(None)]
    # Egress (python/nsbox/_egress.py): checked there, acted on by the spawn's engine, not the core's spec.
    egress: Annotated[bool, Option(False)]
    publish: Annotated["Mapping[int | str, int] | Sequence[tuple[str, int | str, int]] | None", Option(None)]
    dns: Annotated[Sequence[str] | None, Option(None)]
    allow: Annotated[Sequence[str] | None, Option(None)]
    # A new session whose controlling terminal is a new pseudo-terminal (python/nsbox/_pty.py, src/tty.rs).
    tty: Annotated[bool | tuple[int, int], Option(False, _tty)]


#: Every option by name, in the order of the declaration, with its metadata.
OPTIONS: dict[str, Option] = {
    name: next(m for m in hint.__metadata__ if isinstance(m, Option))
    for name, hint in BoxOptions.__annotations__.items()
}
#: Every option's default.
DEFAULTS: dict[str, Any] = {name: meta.default for name, meta in OPTIONS.items()}
#: What the defaults give the core. Converters are pure and each writes keys of its own (a test checks), so an
#: option left at its default (the very object) needs no conversion per spawn: ~15 us of a ~700 us box.
DEFAULT_CORE: dict[str, Any] = {
    key: value
    for name, meta in OPTIONS.items()
    if meta.core is not None
    for key, value in meta.core(name, meta.default).items()
}
#: The options :func:`nsbox.call` takes.
CALL_OPTIONS = frozenset(NamespaceOptions.__optional_keys__)


@dataclass
class Prepared:
    """Checked options, ready to spawn with: the core's spec, and what the Python layer acts on itself."""

    spec: _nsbox.Spec
    network: "Network | None" = None
    ip: object = None
    persist: "StrOrBytesPath | None" = None
    #: What ``target`` joins: a PID, a directory of namespace files, (kind, file) pairs, or nothing.
    target: "int | str | list[tuple[str, str]] | None" = None
    given: "list[str]" = field(default_factory=list)
    #: Mounts on the caller's own root: the command starts in the caller's directory, as without them.
    keeps_cwd: bool = False
    #: ``sandbox=True``: the command starts a new session (a part of :class:`Popen`'s own arguments).
    new_session: bool = False
    #: The confinement options given (or implied by ``sandbox``), which an exec into the box inherits.
    confinement: "dict[str, Any]" = field(default_factory=dict)
    #: ``egress=True``: the engine and the files it needs (``_egress.Plan``), made before the spec.
    egress: "Any" = None


def check_names(options: Mapping[str, object], allowed: Iterable[str], caller: str) -> None:
    """``TypeError`` for a keyword ``caller`` does not take, as Python raises it for a plain function."""
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise TypeError(f"{caller}() got an unexpected keyword argument {unknown[0]!r}")


#: The options that confine a process rather than make namespaces: an exec into a box (``target``) takes them, and
#: :meth:`Popen.exec` passes the box's own on, as ``docker exec`` does.
CONFINEMENT = ("no_new_privs", "capabilities", "rlimits", "seccomp")

#: ``sandbox=True``'s soft and hard resource limits (lowered to the caller's own hard limits).
SANDBOX_RLIMITS = {"core": 0, "nofile": 1024, "nproc": 512}
#: The size of ``sandbox=True``'s private ``/tmp``.
SANDBOX_TMP_SIZE = "256M"


def _hidden_sockets() -> list[Tmpfs]:
    """Empty tmpfs over the host's runtime directories, for ``sandbox=True``.

    A read-only mount does not stop ``connect()`` to a UNIX socket in it (the session bus, an agent, a rootless
    ``docker.sock``), and a network namespace does not cover filesystem sockets.
    """
    dirs = ["/run"]
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isabs(runtime) and os.path.isdir(runtime):
        runtime = os.path.realpath(runtime)
        if not any(runtime == d or runtime.startswith(d + "/") for d in ("/run", "/tmp", "/dev")):
            dirs.append(runtime)
    return [Tmpfs(d, size="16M", mode=0o755) for d in dirs if os.path.isdir(d)]


def sandbox_parts(user: bool | None) -> tuple[dict[str, Any], bool | None]:
    """What ``sandbox=True`` stands for: the options (below those given explicitly) and the user namespace.

    Every namespace, ``mount_proc``, the host's root read-only with a private ``/tmp`` and ``/dev``, no
    capabilities, ``no_new_privs``, the default seccomp filter and modest limits. A root caller's box
    root is the host's ``nobody`` (65534), never host root.
    """
    import resource

    from nsbox._mounts import Dev

    limits = {}
    for name, value in SANDBOX_RLIMITS.items():
        hard = resource.getrlimit(getattr(resource, f"RLIMIT_{name.upper()}"))[1]
        limits[name] = value if hard == resource.RLIM_INFINITY else min(value, hard)
    parts: dict[str, Any] = {
        "pid": True,
        "mount": True,
        "uts": True,
        "ipc": True,
        "net": True,
        "cgroup": True,
        "mount_proc": True,
        "root": Bind("/", readonly=True),
        "mounts": [Tmpfs("/tmp", size=SANDBOX_TMP_SIZE, mode=0o1777), Dev(), *_hidden_sockets()],
        "no_new_privs": True,
        "capabilities": (),
        "seccomp": "default",
        "rlimits": limits,
    }
    if os.geteuid() == 0:
        parts["uid_map"] = [(0, 65534, 1)]
        parts["gid_map"] = [(0, 65534, 1)]
    return {name: value for name, value in parts.items() if name in OPTIONS}, True if user is None else user


#: Types of option values that may be kept with what was made of them.
_PLAIN_TYPES = frozenset((bool, int, float, str, bytes, type(None)))
#: Options whose preparing reads the environment or the filesystem, or makes something (sandbox's runtime
#: directories and limits, ``root``'s directory made absolute against the working directory and checked to be
#: one, egress's files, a network's address), or that Popen acts on: never taken from :data:`_PREPARED`.
_MADE_EACH_TIME = frozenset(
    ("sandbox", "root", "egress", "publish", "dns", "allow", "network", "ip", "persist", "target")
)
#: What :func:`prepare` made of options that are plain values, by those values (and their types: ``pid=1`` must still
#: be refused after ``pid=True``): converting and resolving them again costs ~10 us per box (~30 us once the spawn
#: has cooled the caches).
_PREPARED: "dict[tuple[Any, ...], Prepared]" = {}
_PREPARED_MAX = 64


def prepare(options: Mapping[str, Any], user: bool | None) -> Prepared:
    """Check ``options`` and ``user``, and build the core's spec, before anything is made.

    ``options`` has names of :data:`OPTIONS` (missing ones take their defaults); ``user`` is the user
    namespace: ``None``, ``True`` or ``False``. The result must not be changed: it may be handed out again.
    """
    key = _plain_key(options, user)
    if key is not None:
        kept = _PREPARED.get(key)
        if kept is not None and kept.spec.resolved_for_caller():
            return kept
    prepared = _prepare(options, user)
    if key is not None:
        if len(_PREPARED) >= _PREPARED_MAX:
            _PREPARED.clear()
        _PREPARED[key] = prepared
    return prepared


def _plain_key(options: Mapping[str, Any], user: bool | None) -> tuple[Any, ...] | None:
    """``options`` and ``user`` as a key of :data:`_PREPARED`, or ``None`` when they may not be kept."""
    key: list[Any] = [type(user), user]
    for name, value in options.items():
        if type(value) not in _PLAIN_TYPES or name in _MADE_EACH_TIME:
            return None
        key += (name, type(value), value)
    return tuple(key)


def _prepare(options: Mapping[str, Any], user: bool | None) -> Prepared:
    if user is not None and not isinstance(user, bool):
        raise TypeError(f"user must be None, True or False, not {user!r}")
    sandbox = options.get("sandbox", False)
    if not isinstance(sandbox, bool):
        raise TypeError(f"sandbox must be True or False, not {sandbox!r}")
    if sandbox and options.get("target") is not None:
        raise ValueError("sandbox makes new namespaces; it cannot be combined with target")
    if sandbox and user is False and os.geteuid() == 0:
        raise ValueError(
            "sandbox=True with user=False would run the box as host root (uid 0 owns the host's files and "
            "/proc/sys, capabilities or not): leave user to the sandbox, or give the options one by one"
        )
    options_given = set(options)
    if sandbox:
        parts, user = sandbox_parts(user)
        if options.get("root") is not None:
            # Another root (an image): the host's runtime directories are not in it.
            parts["mounts"] = parts["mounts"][:2]
        if isinstance(options.get("rlimits"), Mapping):
            # Limits given add to the sandbox's, one by one (-1 lifts one).
            options = {**options, "rlimits": {**parts["rlimits"], **options["rlimits"]}}
        if user is False or getattr(options.get("network"), "private", False):
            # Maps are the caller's to give there (see the network rules below).
            parts = {name: value for name, value in parts.items() if name not in ("uid_map", "gid_map")}
        options = {**parts, **options}
    given = {name: value for name, value in options.items() if value != OPTIONS[name].default}
    values = {**DEFAULTS, **options}
    network, ip, target = values["network"], values["ip"], values["target"]
    if network is not None:
        # A lookup, never a first import that a fork in another thread could catch half made: whoever made a
        # Network loaded its module. A plain run does not load it (ipaddress, hmac).
        module = sys.modules.get("nsbox._network")
        if module is None or not isinstance(network, module.Network):
            raise TypeError(f"network must be an nsbox.Network, not {type(network).__name__}")
        if target is not None:
            raise ValueError("target joins existing namespaces; it cannot be combined with network")
        if network.private:
            maps = [k for k in ("uid_map", "gid_map", "setgroups") if values[k] is not None]
            if maps or user is False:
                raise ValueError(
                    "a box on a network made without root lives in the network's user namespace, "
                    f"where you are root: it cannot take {', '.join(maps) or 'user=False'}"
                )
        values["net"] = True
    elif ip is not None:
        raise ValueError("ip is given without a network: pass network=nsbox.Network(...)")
    egress = _egress_plan(values, network, target)
    if egress is not None and egress.allow is not None:
        # The box runs in a user namespace of its own below the leash's, where the caller is root.
        maps = [k for k in ("uid_map", "gid_map", "setgroups") if values[k] is not None]
        if sandbox and maps and "uid_map" not in options_given:
            raise ValueError(
                "sandbox=True as root makes the box's root the host's nobody (a uid_map), which a box with allow "
                "cannot have yet: its user namespace is below nsbox's, where you are root. Pass allow without "
                "sandbox as root, or run as an ordinary user"
            )
        if maps or user is False:
            raise ValueError(
                "a box with allow lives in a user namespace below nsbox's own, where you are root: "
                f"it cannot take {', '.join(maps) or 'user=False'}"
            )
        user = True
    joined: int | str | list[tuple[str, str]] | None = None
    if target is not None:
        joinable = ("target", "persist", *CONFINEMENT)
        asked = [name for name in given if name not in joinable] + (["user"] if user is not None else [])
        if asked:
            raise ValueError(f"target joins existing namespaces; it cannot be combined with {', '.join(asked)}")
        if isinstance(target, Mapping):
            joined = [(str(kind), os.fsdecode(_path_bytes("target", path) or b"")) for kind, path in target.items()]
        elif isinstance(target, bool) or not isinstance(target, (int, str, bytes, os.PathLike)):
            raise TypeError(
                f"target must be a PID, a directory of namespace files or a mapping of kind to file, not {target!r}"
            )
        else:
            joined = target if isinstance(target, int) else os.fsdecode(target)
    if egress is not None:
        # Last, once every other check has passed: the files it makes are removed by the caller (Popen).
        egress.make()
        # On the caller's root, a resolv.conf that is a symlink (systemd-resolved's) is followed to its file: a
        # mount point may not be a symlink. Either way the mount is in the box's mount namespace only.
        conf = os.path.realpath("/etc/resolv.conf") if values["root"] is None else "/etc/resolv.conf"
        values["mounts"] = [*(values["mounts"] or ()), Bind(egress.resolv_conf, conf, readonly=True)]
    try:
        core: dict[str, Any] = {"user": user, "joins": joined is not None, **DEFAULT_CORE}
        for name, meta in OPTIONS.items():
            if meta.core is not None and values[name] is not meta.default:  # 0 for False is still checked
                core.update(meta.core(name, values[name]))
        keeps_cwd = values["root"] is None and bool(values["mounts"])
        confinement = {name: values[name] for name in CONFINEMENT if name in given}
        spec = _nsbox.Spec(core)
    except BaseException:
        if egress is not None:
            egress.stop()
        raise
    prepared = Prepared(spec, network, ip, values["persist"], joined, list(given), keeps_cwd, sandbox, confinement)
    prepared.egress = egress
    return prepared


def _egress_plan(values: dict[str, Any], network: object, target: object) -> Any:
    """``egress``, ``publish`` and ``dns`` checked (``egress`` implies ``net``); the plan or ``None``."""
    asked = values["egress"] or any(values[name] is not None for name in ("publish", "dns", "allow"))
    shared = getattr(network, "egress", None)
    if shared is not None:
        if asked:
            raise ValueError("a box on a Network with egress shares the network's: it takes no egress of its own")
        from nsbox import _egress

        # Only the box's resolv.conf is its own; the network's engine carries its traffic.
        return _egress.Plan([], list(shared.dns), on_network=True)
    if not asked:
        return None
    from nsbox import _egress  # only for boxes that ask

    plan = _egress.plan(values)
    if plan is not None:
        if network is not None:
            raise ValueError("egress gives the box a network of its own; it cannot be combined with network")
        if target is not None:
            raise ValueError("target joins existing namespaces; it cannot be combined with egress")
        values["net"] = True
    return plan


# The core sets up its reading of these names on first use, behind a lock that a fork() during it would leave
# held in the child for ever: do it now, at import, once. (It also checks that this declaration and the core's
# agree.) A mount too: the core reads mounts with a reader of their own.
prepare({"mounts": [Tmpfs("/tmp")]}, None)


#: What ``args`` may be, as in :mod:`subprocess`.
Args = StrOrBytesPath | Sequence[StrOrBytesPath]
File = None | int | IO[Any]


class ProcessArgs(TypedDict, total=False):
    """:class:`subprocess.Popen`'s keyword arguments but its stdio, shell and text ones (asyncio sets those itself)."""

    executable: StrOrBytesPath | None
    preexec_fn: Callable[[], Any] | None
    close_fds: bool
    cwd: StrOrBytesPath | None
    env: Mapping[Any, Any] | None
    startupinfo: Any
    creationflags: int
    restore_signals: bool
    start_new_session: bool
    pass_fds: Collection[int]
    user: bool | str | int | None
    group: str | int | None
    extra_groups: Iterable[str | int] | None
    umask: int
    pipesize: int
    process_group: int | None


class PopenArgs(ProcessArgs, total=False):
    """:class:`subprocess.Popen`'s keyword arguments, as :class:`Popen` and :func:`nsbox.run` take them."""

    bufsize: int
    stdin: File
    stdout: File
    stderr: File
    shell: bool
    universal_newlines: bool | None
    encoding: str | None
    errors: str | None
    text: bool | None


class RunOptions(PopenArgs, BoxOptions, total=False):
    """Every keyword argument :class:`Popen` takes (and :func:`nsbox.run`, with its own few)."""


class ExecArgs(PopenArgs, total=False):
    """What :meth:`Popen.exec` and :func:`nsbox.enter` take: :func:`subprocess.run`'s arguments.

    No namespace options: the box's namespaces are joined.
    """

    input: Any
    capture_output: bool
    timeout: float | None
    check: bool


#: The :class:`nsbox.Pool` whose sets the spawns made here take (set by the pool around the spawn it makes).
POOL: "ContextVar[_nsbox.Pool | None]" = ContextVar("nsbox_pool", default=None)
