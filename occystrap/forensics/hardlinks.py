"""Hardlink groups for a top-down flattening, where links are met before their targets.

An `Inode` is one file as the final tree holds it: the member that made it (its `source`,
met in some layer at or below the links), the name its bytes were written under (`holder`),
and the final names still waiting for that. A link whose target lives in a lower layer waits
in `PendingLinks` under the target's path; when the walk reaches the target's member, the
waiting inodes join it. Tar needs a link's target earlier in the stream, so waiting names
are written only once a holder exists.
"""

from __future__ import annotations

from occystrap.errors import UnsafeArchiveError
from occystrap.forensics.members import Member
from occystrap.forensics.topdown import Shadows


class Inode:
    __slots__ = ("forward", "holder", "reached_through", "source", "spooled", "waiting")

    def __init__(self) -> None:
        self.holder: str | None = None
        self.waiting: list[Member] = []
        self.source: Member | None = None
        self.spooled: tuple[int, int] | None = None  # (offset, size) in the current layer's spool
        self.forward: Inode | None = None
        # Names of links that some layer writes below: hostile if this turns out a symlink.
        self.reached_through: list[str] = []

    def find(self) -> Inode:
        node = self
        while node.forward is not None:
            node = node.forward
        return node

    def made_by(self, m: Member) -> None:
        self.source = m
        self.check()

    def check(self) -> None:
        if self.source is not None and self.source.kind == "symlink" and self.reached_through:
            raise UnsafeArchiveError(
                f"a layer writes below {self.reached_through[0]!r},"
                f" a hardlink to the symlink {self.source.path!r}"
            )


def join(a: Inode, b: Inode) -> Inode:
    """One inode from two that turned out to be the same file."""
    a, b = a.find(), b.find()
    if a is b:
        return a
    if b.source is not None and a.source is None:
        a, b = b, a
    assert b.source is None and b.holder is None, "two members cannot make one inode"
    a.waiting.extend(b.waiting)
    a.reached_through.extend(b.reached_through)
    b.waiting, b.reached_through = [], []
    b.forward = a
    a.check()
    return a


class PendingLinks:
    """Inodes waiting for a lower layer's member at a path, with the layer that linked them."""

    def __init__(self) -> None:
        self._waiting: dict[str, list[tuple[int, Inode]]] = {}

    def wait(self, target: str, layer: int) -> Inode:
        inode = Inode()
        self._waiting.setdefault(target, []).append((layer, inode))
        return inode

    def claim(self, m: Member, layer: int, shadows: Shadows) -> Inode | None:
        """The one inode that links made above would share with `m`, met now in `layer`;
        None when no link waits for it. Links from this same layer keep waiting: they came
        before `m` in the stream, so they meant a lower version of the path."""
        waiting = self._waiting.pop(m.path, [])
        same = [(k, inode) for k, inode in waiting if k == layer]
        if same:
            self._waiting[m.path] = same
        found: Inode | None = None
        for k, inode in waiting:
            if k == layer:
                continue
            if m.is_dir:
                raise UnsafeArchiveError(f"a hardlink points at the directory {m.path!r}")
            if shadows.deleted_between(m.path, k):
                raise UnsafeArchiveError(
                    f"a hardlink in layer {k} points at {m.path!r}, which is deleted there"
                )
            found = inode if found is None else join(found, inode)
        return found

    def check_done(self) -> None:
        for target, waiting in self._waiting.items():
            layers = sorted({k for k, _ in waiting})
            raise UnsafeArchiveError(f"hardlink in layer {layers[0]} points at missing {target!r}")
