"""The image's User (`app`, `app:grp`, `1000:grp`, `1000`…) as numeric ids, from the image's own
/etc/passwd and /etc/group, with the rules runc's libcontainer/user applies (so a bundle runs
as `runc` and `umoci unpack` would run it):

- a numeric user or group is an id, whether or not the files name it;
- a name must be in the file, else the image is unusable;
- without a group, the user's primary group from passwd, and as additional groups every group
  that lists the user as a member.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from occystrap.errors import ManifestError

MAX_ID = 2**31 - 1
MAX_LINKS = 40  # symlink hops, as the kernel allows
MAX_FILE = 4 * 1024 * 1024  # passwd and group files are small; a huge one is not read whole


@dataclass(frozen=True)
class ExecUser:
    uid: int = 0
    gid: int = 0
    additional_gids: tuple[int, ...] = ()
    home: str | None = None


@dataclass(frozen=True)
class _Entry:
    name: str
    id: int
    gid: int = 0  # passwd: primary group
    home: str = ""
    members: tuple[str, ...] = ()  # group: listed users


def resolve_user(spec: str, passwd: str | None, group: str | None) -> ExecUser:
    """Ids for the image's User from the texts of its /etc/passwd and /etc/group (None: absent)."""
    user_arg, _, group_arg = spec.partition(":")
    uid_arg, gid_arg = _number(user_arg), _number(group_arg)
    users = [
        u
        for u in _parse(passwd, passwd=True)
        if (u.id == uid_arg if uid_arg is not None else u.name == user_arg) or (not user_arg and u.id == 0)
    ]
    uid, gid, home, name = 0, 0, None, ""
    if users:
        uid, gid, home, name = users[0].id, users[0].gid, users[0].home, users[0].name
    elif user_arg:
        if uid_arg is None:
            raise ManifestError(f"the image's User {spec!r} names a user its /etc/passwd does not have")
        uid = _in_range(uid_arg, spec)
    additional: tuple[int, ...] = ()
    if group_arg:
        groups = [
            g
            for g in _parse(group, passwd=False)
            if (g.id == gid_arg if gid_arg is not None else g.name == group_arg)
        ]
        if groups:
            gid = groups[0].id
        elif gid_arg is None:
            raise ManifestError(f"the image's User {spec!r} names a group its /etc/group does not have")
        else:
            gid = _in_range(gid_arg, spec)
    elif name:
        additional = tuple(g.id for g in _parse(group, passwd=False) if name in g.members)
    return ExecUser(uid, gid, additional, home or None)


def _number(text: str) -> int | None:
    return int(text) if text.isascii() and text.isdigit() else None


def _in_range(value: int, spec: str) -> int:
    if value > MAX_ID:
        raise ManifestError(f"the image's User {spec!r} is out of range")
    return value


def _parse(text: str | None, passwd: bool) -> list[_Entry]:
    """Entries of a passwd or group file; lines that are not well-formed are skipped."""
    out = []
    for line in (text or "").splitlines():
        fields = line.strip().split(":")
        if len(fields) < (7 if passwd else 4) or not fields[0] or fields[0].startswith("#"):
            continue
        try:
            if passwd:
                out.append(_Entry(fields[0], int(fields[2]), gid=int(fields[3]), home=fields[5]))
            else:
                members = tuple(m for m in fields[3].split(",") if m)
                out.append(_Entry(fields[0], int(fields[2]), members=members))
        except ValueError:
            continue
    return out


def read_in_root(root: Path, path: str) -> str | None:
    """A small text file of the image, its path resolved as inside the container: symlinks are
    followed but never out of `root` (".." stops at it, absolute targets start from it).
    None when it is missing or not a regular file."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    resolved: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        here = root.joinpath(*resolved, part)
        try:
            st = os.lstat(here)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if stat.S_ISLNK(st.st_mode):
            hops += 1
            if hops > MAX_LINKS:
                return None
            target = os.readlink(here)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        resolved.append(part)
    try:
        fd = os.open(root.joinpath(*resolved), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    with os.fdopen(fd, "rb") as fh:
        return fh.read(MAX_FILE).decode("utf-8", "replace")
