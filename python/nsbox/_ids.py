"""The ids a box's command runs as (``user=``, ``group=``, ``extra_groups=``), checked as ``subprocess`` checks them.

Checked here, before ``subprocess.Popen.__init__`` makes any pipe: Python 3.11.0-3.11.3 check them after making
the pipes and leak them when a name is unknown or an id negative (``subprocess.run(["true"], user=-1,
capture_output=True)`` leaves four fds open there). The messages and exceptions are ``subprocess``'s.
"""

from __future__ import annotations

import grp
import pwd
from collections.abc import Iterable


def _gid(group: object, wrong_type: str) -> int:
    if isinstance(group, str):
        return grp.getgrnam(group).gr_gid  # KeyError for an unknown name, as in subprocess
    if isinstance(group, int):
        return group
    raise TypeError(wrong_type)


def resolve(
    user: str | int | None, group: str | int | None, extra_groups: Iterable[str | int] | None
) -> tuple[int | None, int | None, list[int] | None]:
    """``(uid, gid, gids)`` as ints (``None`` where not given); raises what ``subprocess.Popen`` would."""
    gid = None if group is None else _gid(group, "Group must be a string or an integer")
    gids = None
    if extra_groups is not None:
        gids = [_gid(g, f"Items in extra_groups must be a string or integer, not {type(g)}") for g in extra_groups]
    for checked in ([] if gid is None else [gid]) + (gids or []):
        if checked < 0:
            raise ValueError(f"Group ID cannot be negative, got {checked}")
    uid = None
    if user is not None:
        if isinstance(user, str):
            uid = pwd.getpwnam(user).pw_uid
        elif isinstance(user, int):
            uid = user
        else:
            raise TypeError("User must be a string or an integer")
        if uid < 0:
            raise ValueError(f"User ID cannot be negative, got {uid}")
    return uid, gid, gids
