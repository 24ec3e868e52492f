"""Tar members of one layer, named safely and classified, with the per-member hostility checks.

The rules are expand.py's (`clean_name`, `link_escapes`, whiteouts and opaque markers by the
last path component, aufs `.wh..wh.*` bookkeeping skipped), so every forensic view refuses the
same layers that `--expand` refuses. Checks that need the state of lower layers (writing through
a symlink, hardlinks to missing files) belong to whoever holds that state.
"""

from __future__ import annotations

import hashlib
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import IO, BinaryIO, Literal

from occystrap.errors import IntegrityError, UnsafeArchiveError
from occystrap.expand import AUFS_META, OPAQUE, WHITEOUT, clean_name, link_escapes
from occystrap.forensics.layers import drain
from occystrap.tarstream import members, open_tar

Kind = Literal["file", "dir", "symlink", "hardlink", "char", "block", "fifo", "whiteout", "opaque"]
ENTRY_KINDS = ("file", "dir", "symlink", "hardlink", "char", "block", "fifo")

_TYPES: dict[bytes, Kind] = {
    tarfile.DIRTYPE: "dir",
    tarfile.SYMTYPE: "symlink",
    tarfile.LNKTYPE: "hardlink",
    tarfile.CHRTYPE: "char",
    tarfile.BLKTYPE: "block",
    tarfile.FIFOTYPE: "fifo",
}
_XATTR = "SCHILY.xattr."


@dataclass(frozen=True, slots=True)
class Member:
    """One tar member's metadata, without its bytes.

    path: root-relative, never empty. target: a symlink's target as stored; a hardlink's
    target as a clean root-relative path; a whiteout's victim path; an opaque marker's
    directory ("" for the root).
    """

    path: str
    kind: Kind
    mode: int = 0
    uid: int = 0
    gid: int = 0
    size: int = 0
    mtime: float = 0
    target: str = ""
    devmajor: int = 0
    devminor: int = 0
    uname: str = ""
    gname: str = ""
    xattrs: tuple[tuple[str, str], ...] = ()
    sha256: str | None = None

    @property
    def is_marker(self) -> bool:
        return self.kind in ("whiteout", "opaque")

    @property
    def is_dir(self) -> bool:
        return self.kind == "dir"


def classify(info: tarfile.TarInfo) -> Member | None:
    """The member as forensics sees it; None for what no flattener applies (aufs bookkeeping,
    the root directory's own entry, unknown types). UnsafeArchiveError for hostile names."""
    path = clean_name(info.name)
    name = path.rpartition("/")[2]
    if not path:
        return None
    if name.startswith(WHITEOUT):
        return _marker(path, name)
    if info.isreg():
        kind: Kind = "file"
    elif info.type in _TYPES:
        kind = _TYPES[info.type]
    else:
        return None
    target = ""
    if kind == "symlink":
        if link_escapes(path, info.linkname):
            raise UnsafeArchiveError(f"symlink {path!r} points outside the root: {info.linkname!r}")
        target = info.linkname
    elif kind == "hardlink":
        target = clean_name(info.linkname)
        if not target or target == path or target.startswith(path + "/") or path.startswith(target + "/"):
            # Unpackers clear `path` first, so a link to itself or below reaches nothing, and a
            # target above the link is a directory by the time the link is made.
            raise UnsafeArchiveError(f"hardlink {path!r} cannot point at {target or '/'!r}")
    xattrs = tuple(sorted((k, v) for k, v in info.pax_headers.items() if k.startswith(_XATTR)))
    return Member(
        path=path,
        kind=kind,
        mode=info.mode & 0o7777,
        uid=info.uid,
        gid=info.gid,
        size=info.size if kind == "file" else 0,
        mtime=info.mtime,
        target=target,
        devmajor=info.devmajor if kind in ("char", "block") else 0,
        devminor=info.devminor if kind in ("char", "block") else 0,
        uname=info.uname,
        gname=info.gname,
        xattrs=xattrs,
    )


def _marker(path: str, name: str) -> Member | None:
    parent = path.rpartition("/")[0]
    if name == OPAQUE:
        return Member(path=path, kind="opaque", target=parent)
    if name.startswith(AUFS_META):
        return None
    victim = name[len(WHITEOUT) :]
    if victim in ("", "."):
        # ".wh." and ".wh.." name nothing; they must not take their own directory along.
        return None
    return Member(path=path, kind="whiteout", target=clean_name(f"{parent}/{victim}" if parent else victim))


def walk_layer(stream: BinaryIO) -> Iterator[tuple[Member, IO[bytes] | None]]:
    """Each member of a plain layer tar with, for regular files, a reader over its bytes
    (valid until the next member). The stream is read to its end."""
    try:
        with open_tar(stream) as tf:
            for info in members(tf):
                member = classify(info)
                if member is not None:
                    yield member, tf.extractfile(info) if member.kind == "file" else None
    except tarfile.TarError as exc:
        raise IntegrityError(f"layer is not a readable tar: {exc}") from None
    drain(stream)


def with_digest(member: Member, data: IO[bytes]) -> Member:
    """The member with the sha256 of its bytes, which are streamed, never held."""
    digest = hashlib.file_digest(data, "sha256")  # type: ignore[arg-type]
    return replace(member, sha256="sha256:" + digest.hexdigest())


# Which files' bytes to hash: all (True), none (False), or those whose path it accepts.
DigestFilter = bool | Callable[[str], bool]


def listing(stream: BinaryIO, content_digests: DigestFilter = False) -> list[Member]:
    """Every member of one layer, in tar order; optionally with content digests."""
    out = []
    for member, data in walk_layer(stream):
        hashed = content_digests(member.path) if callable(content_digests) else content_digests
        out.append(with_digest(member, data) if hashed and data is not None else member)
    return out


def ancestors(path: str, root: bool = False) -> Iterator[str]:
    """The strict ancestors of a root-relative path, nearest first ("a/b/c" -> "a/b", "a"),
    and the root itself ("") last when asked."""
    while "/" in path:
        path = path.rpartition("/")[0]
        yield path
    if root and path:
        yield ""
