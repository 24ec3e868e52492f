"""What the layers above hide, for flattening top-down (as crane does): a path is emitted the
first time it is seen, unless a layer above wrote it, deleted it, or deleted or replaced a
directory above it.

The semantics are `history.Merger`'s, seen from the other end: a layer's whiteouts and opaque
markers act on lower layers only, before its entries; a non-directory hides everything a lower
layer put below its path; a lower non-directory where an upper layer writes below is replaced
by a directory. For each path the tables keep the lowest layer above the current one that did
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


def _before(layer: int, other: int | None) -> bool:
    return other is None or layer < other


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
        self._maybe_symlinks: set[str] = set()  # its links whose target is not known yet
        self._through_maybe: set[str] = set()  # those that a later member reached below

    def begin(self, layer: int) -> None:
        self._layer = layer
        self._members = []
        self._symlinks, self._maybe_symlinks, self._through_maybe = set(), set(), set()

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

    # -- what the layers above did to a path ---------------------------------------------

    def marked_away_at(self, path: str) -> int | None:
        """The lowest layer above whose markers deleted `path`: a whiteout of it or of a
        directory above it, an opaque directory above it."""
        found = self._whiteout.get(path)
        for a in ancestors(path, root=True):
            found = _lowest(found, self._whiteout.get(a), self._opaque.get(a))
        return found

    def replaced_above_at(self, path: str) -> int | None:
        """The lowest layer above with a non-directory entry in place of a directory above it."""
        return _lowest(*(self._nondir.get(a) for a in ancestors(path)))

    def keeps_dir(self, path: str) -> bool:
        """Whether a directory at `path` in the current layer is still one in the final tree."""
        return (
            path not in self._nondir
            and _lowest(self.marked_away_at(path), self.replaced_above_at(path)) is None
        )

    def deleted_between(self, path: str, layer: int) -> bool:
        """Whether a layer above the current one, up to `layer`, deleted the current layer's
        non-directory at `path`, so that a hardlink made in `layer` cannot reach it. Markers act
        before their layer's entries, so theirs count in `layer` too; entries of `layer` count
        by stream order, which the caller tracks."""
        marked = self.marked_away_at(path)
        replaced = _lowest(self.replaced_above_at(path), self._below.get(path))
        return (marked is not None and marked <= layer) or (replaced is not None and replaced < layer)

    def reaches_through(self, path: str) -> bool:
        """Whether a layer above writes below `path` while a symlink of the current layer
        would still be there (from the layer that removed or replaced it on, entries below are
        safe; markers act before their own layer's entries, so only earlier markers save them)."""
        marked_away = self.marked_away_at(path)
        replaced = _lowest(self._entry.get(path), self.replaced_above_at(path))
        writes, marks = self._below.get(path), self._marked_below.get(path)
        return (writes is not None and _before(writes, _lowest(marked_away, replaced))) or (
            marks is not None and _before(marks, marked_away) and (replaced is None or marks <= replaced)
        )

    # -- the current layer -----------------------------------------------------------------

    def see(self, m: Member) -> bool:
        """Note one member of the current layer (in stream order); whether it is in the final
        tree. UnsafeArchiveError when it reaches through a symlink."""
        self._members.append(m)
        if m.is_marker:
            return False
        for a in ancestors(m.path):
            if a in self._symlinks:
                raise UnsafeArchiveError(f"layer writes {m.path!r} through the symlink {a!r}")
            if a in self._maybe_symlinks:
                self._through_maybe.add(a)
        if m.kind == "symlink":
            self.symlink_at(m.path)
        if (
            m.path in self._entry
            or _lowest(self.marked_away_at(m.path), self.replaced_above_at(m.path)) is not None
        ):
            return False
        # An upper layer wrote below this path: there a directory replaced it.
        return m.is_dir or m.path not in self._below

    def symlink_at(self, path: str) -> None:
        """A symlink of the current layer at `path` (a symlink member, or a link to one)."""
        self._symlinks.add(path)
        if self.reaches_through(path):
            raise UnsafeArchiveError(f"a layer reaches below {path!r} through the symlink there")

    def maybe_symlink_at(self, path: str) -> bool:
        """A link at `path` whose target, in a lower layer, may be a symlink: whether it is
        reached through by the layers above (the current layer's later members are in
        `reached_through_in_layer`, known at the layer's end)."""
        self._maybe_symlinks.add(path)
        return self.reaches_through(path)

    def reached_through_in_layer(self, path: str) -> bool:
        return path in self._through_maybe
