"""Who a container's process runs as: an image ``USER`` resolved in its own
/etc/passwd and /etc/group.

containerd's ``WithUser``, ``WithUserID``, ``WithUsername`` and
``WithAdditionalGIDs`` read those files from the container's root
filesystem.  Here they are plain text handed in by the caller (None when the
file is absent), so this module never touches a filesystem: reading an
untrusted image's files safely, through a temporary read-only mount, is the
job of :mod:`pycontainerd.images.accounts` and the client.

The parsing is runc's (``libcontainer/user``), which containerd uses: lines
are trimmed and split on ``:``, short lines leave the missing fields empty,
and a field that is not a number counts as 0.  The rules are containerd
1.6.20's: the primary group is always among the additional groups.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pycontainerd import errdefs

__all__ = [
    "Account",
    "Group",
    "additional_gids",
    "ensure_primary",
    "parse_group",
    "parse_passwd",
    "resolve_user",
    "uid_gid",
    "user_by_id",
    "user_by_name",
]

_INT = re.compile(r"[+-]?[0-9]+")
_INT64 = 1 << 63


def _atoi(text: str) -> int | None:
    """Go's ``strconv.Atoi``: an optional sign and decimal digits, within int64."""
    if not _INT.fullmatch(text):
        return None
    value = int(text)
    return value if -_INT64 <= value < _INT64 else None


def _uint32(value: int) -> int:
    """Go's ``uint32(v)`` conversion of an int: it wraps."""
    return value & 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class Account:
    """A line of /etc/passwd: name, uid, primary gid."""

    name: str
    id: int
    gid: int = 0


@dataclass(frozen=True, slots=True)
class Group:
    """A line of /etc/group: name, gid, the user names listed as members."""

    name: str
    id: int
    members: tuple[str, ...] = ()


def _fields(line: str, count: int) -> list[str]:
    parts = line.split(":")[:count]
    return parts + [""] * (count - len(parts))


def parse_passwd(text: str) -> list[Account]:
    """``name:password:uid:gid:gecos:home:shell`` lines, as runc parses them."""
    users = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        name, _, uid, gid = _fields(line, 4)
        users.append(Account(name, _atoi(uid) or 0, _atoi(gid) or 0))
    return users


def parse_group(text: str) -> list[Group]:
    """``name:password:gid:member,member`` lines, as runc parses them."""
    groups = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        name, _, gid, members = _fields(line, 4)
        groups.append(Group(name, _atoi(gid) or 0, tuple(members.split(",")) if members else ()))
    return groups


def user_by_name(name: str, passwd: str | None) -> Account:
    """The first account called ``name``; NotFound when there is none (or no file)."""
    found = next((u for u in parse_passwd(passwd or "") if u.name == name), None)
    if found is None:
        raise errdefs.NotFound(f"no users found for {name!r} in the image's /etc/passwd")
    return found


def user_by_id(uid: int, passwd: str | None) -> Account | None:
    """The first account with ``uid``, or None."""
    return next((u for u in parse_passwd(passwd or "") if u.id == uid), None)


def _gid_by_name(name: str, group: str | None) -> int:
    found = next((g for g in parse_group(group or "") if g.name == name), None)
    if found is None:
        raise errdefs.NotFound(f"no groups found for {name!r} in the image's /etc/group")
    return _uint32(found.id)


def uid_gid(user: str, passwd: str | None, group: str | None) -> tuple[int, int]:
    """``user`` (``name``, ``uid``, ``name:group``, ``uid:gid``...) as ids, as
    containerd's ``WithUser`` resolves it: a uid missing from /etc/passwd
    gets gid 0; a name that is missing is an error."""
    parts = user.split(":")
    if len(parts) == 1:
        number = _atoi(parts[0])
        if number is None:
            account = user_by_name(user, passwd)
            return _uint32(account.id), _uint32(account.gid)
        uid = _uint32(number)
        found = user_by_id(uid, passwd)
        return (uid, _uint32(found.gid)) if found else (uid, 0)
    if len(parts) == 2:
        user_number, group_number = _atoi(parts[0]), _atoi(parts[1])
        uid = _uint32(user_number) if user_number is not None else 0
        gid = _uint32(group_number) if group_number is not None else 0
        if user_number is None:
            uid = _uint32(user_by_name(parts[0], passwd).id)
        if group_number is None:
            gid = _gid_by_name(parts[1], group)
        return uid, gid
    raise errdefs.InvalidArgument(f"invalid USER value {user}")


def additional_gids(user: str, passwd: str | None, group: str | None) -> list[int]:
    """The groups of /etc/group that list ``user`` (a name, or a uid looked up
    in /etc/passwd) as a member, except the group named after the user
    (containerd's ``WithAdditionalGIDs``, before the primary group is added)."""
    number = _atoi(user)
    if number is not None:
        found = user_by_id(number, passwd)
        if found is None:
            return []
        name = found.name
    else:
        name = user
    if group is None:
        return []
    return [_uint32(g.id) for g in parse_group(group) if g.name != name and name in g.members]


def ensure_primary(gid: int, extra: list[int]) -> list[int]:
    """``extra`` with the primary ``gid`` first unless it is already there."""
    return extra if gid in extra else [gid, *extra]


def resolve_user(user: str, passwd: str | None, group: str | None) -> dict[str, Any]:
    """The spec's ``process.user`` for an image's ``USER`` (``""`` for root):
    what ``WithImageConfig`` does with ``WithUser`` then ``WithAdditionalGIDs``."""
    if user:
        uid, gid = uid_gid(user, passwd, group)
        extra = additional_gids(str(uid), passwd, group)
    else:
        uid, gid = 0, 0
        extra = additional_gids("root", passwd, group)
    return {"uid": uid, "gid": gid, "additionalGids": ensure_primary(gid, extra)}
