"""What the layers above hide, for flattening top-down (as crane does): a path is emitted the
first time it is seen, unless a layer above wrote it, deleted it, or deleted or replaced a
directory above it.

The semantics are `history.Merger`'s, seen from the other end: a layer's whiteouts and opaque
markers act on lower layers only, a non-directory hides everything a lower layer put below
its path, and a lower non-directory where an upper layer writes below is replaced by a
directory. For each path the tables keep the lowest layer above the current one that did
such a thing, which is what the hostility checks need: a lower symlink that an upper layer
writes through before anything removed it, and a hardlink whose target was deleted between
the target's layer and the link's.
"""

from __future__ import annotations

from occystrap.errors import UnsafeArchiveError
from occystrap.forensics.members import Member, ancestors


def _lowest(*values: int | None) -> int | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


class Shadows:
    def __init__(self) -> None:
        # path -> lowest layer above the current one that ...
        self._entry: dict[str, int] = {}  # ... has an entry at it
        self._nondir: dict[str, int] = {}  # ... has a non-directory entry at it
        self._whiteout: dict[str, int] = {}  # ... whites it out
        self._opaque: dict[str, int] = {}  # ... marks it opaque
        self._below: dict[str, int] = {}  # ... has an entry strictly below it
        self._marked_below: dict[str, int] = {}  # ... has a whiteout or opaque marker below it
        self._layer = -1
        self._members: list[Member] = []  # the current layer's, applied to the tables at its end
        self._symlinks: set[str] = set()  # the current layer's symlinks so far

    def begin(self, layer: int) -> None:
        self._layer = layer
        self._members = []
        self._symlinks = set()

    def end(self) -> None:
        j = self._layer
        for m in self._members:
            if m.kind == "whiteout":
                self._whiteout[m.target] = j
            elif m.kind == "opaque":
                self._opaque[m.target] = j
            else:
                self._entry[m.path] = j
                if not m.is_dir:
                    self._nondir[m.path] = j
            below = self._marked_below if m.is_marker else self._below
            for a in ancestors(m.path):
                below[a] = j
        self._members = []

    def removed_at(self, path: str) -> int | None:
        """The lowest layer above that deleted `path`: a whiteout of it or of a directory above
        it, an opaque directory above it, a non-directory put in place of a directory above it."""
        found = self._whiteout.get(path)
        for a in ancestors(path, root=True):
            found = _lowest(found, self._whiteout.get(a), self._opaque.get(a), self._nondir.get(a))
        return found

    def see(self, m: Member) -> bool:
        """Note one member of the current layer (in stream order); whether it is in the final
        tree. UnsafeArchiveError when it reaches through a symlink."""
        self._members.append(m)
        if m.is_marker:
            return False
        for a in ancestors(m.path):
            if a in self._symlinks:
                raise UnsafeArchiveError(f"layer writes {m.path!r} through the symlink {a!r}")
        if m.kind == "symlink":
            self._symlinks.add(m.path)
            self._check_symlink(m.path)
        if m.path in self._entry or self.removed_at(m.path) is not None:
            return False
        # An upper layer wrote below this path: there a directory replaced it.
        return m.is_dir or m.path not in self._below

    def _check_symlink(self, path: str) -> None:
        first_below = _lowest(self._below.get(path), self._marked_below.get(path))
        if first_below is None:
            return
        gone = _lowest(self._entry.get(path), self.removed_at(path))
        if gone is None or first_below < gone:
            raise UnsafeArchiveError(f"a layer reaches below {path!r} through the symlink there")

    def deleted_between(self, path: str, layer: int) -> bool:
        """Whether a layer above the current one, up to `layer` included, deleted `path`
        (a hardlink made in `layer` cannot reach the current layer's version then)."""
        at = self.removed_at(path)
        return at is not None and at <= layer
