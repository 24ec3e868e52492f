"""Every path's story across the layers, and the final filesystem, from path metadata alone.

`Merger` applies one layer's members at a time, bottom first. A layer's whiteouts and opaque
markers act first (shallowest first), on what lower layers left (overlay semantics: what the
same layer adds is never hidden by its own markers), then its entries in tar order. Each
write and each deletion is recorded as an `Event` on the path, so overwritten and deleted
files stay visible.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from occystrap.errors import UnsafeArchiveError
from occystrap.forensics.members import Member

Action = Literal["added", "modified", "deleted"]
Cause = Literal["whiteout", "opaque", "replaced"]


@dataclass(frozen=True, slots=True)
class Version:
    """What one layer wrote at one path. A hardlink carries its target's size, digest, mode
    and owner as they were when it was linked: the two names share one inode."""

    layer: int
    type: str
    mode: int
    uid: int = 0
    gid: int = 0
    size: int = 0
    mtime: float = 0
    target: str | None = None  # symlink: as stored; hardlink: the absolute path it links to
    device: tuple[int, int] | None = None
    sha256: str | None = None
    implicit: bool = False  # a directory made for a path below it, which no layer declared
    linked_type: str | None = None  # hardlink: what its target is ("file", or rarely "symlink"…)

    @property
    def file_type(self) -> str:
        """What the path holds: a hardlink holds what its target holds."""
        return self.linked_type or self.type

    @classmethod
    def of(cls, layer: int, m: Member) -> Version:
        return cls(
            layer=layer,
            type=m.kind,
            mode=m.mode,
            uid=m.uid,
            gid=m.gid,
            size=m.size,
            mtime=m.mtime,
            target=m.target if m.kind == "symlink" else None,
            device=(m.devmajor, m.devminor) if m.kind in ("char", "block") else None,
            sha256=m.sha256,
        )

    @classmethod
    def implicit_dir(cls, layer: int) -> Version:
        return cls(layer=layer, type="dir", mode=0o755, implicit=True)

    @property
    def is_dir(self) -> bool:
        return self.type == "dir"

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "mode": f"{self.mode:04o}",
            "uid": self.uid,
            "gid": self.gid,
            "size": self.size,
            "mtime": int(self.mtime),
            "target": self.target,
            "device": list(self.device) if self.device else None,
            "sha256": self.sha256,
            "implicit": self.implicit,
            "layer": self.layer,
        }


@dataclass(frozen=True, slots=True)
class Event:
    """One layer's effect on one path. `by` names what deleted it: the whiteout or opaque
    marker ("/etc/.wh.motd"), or for "replaced" the path whose new, non-directory version
    took its parent directory away."""

    layer: int
    action: Action
    version: Version | None = None  # added / modified
    cause: Cause | None = None  # deleted
    by: str | None = None  # deleted

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"layer": self.layer, "action": self.action}
        if self.version is not None:
            out.update(self.version.to_json())
        else:
            out["cause"] = self.cause
            out["by"] = self.by
        return out


@dataclass(frozen=True)
class PathRecord:
    """One path ever seen in the image's layers. `version` is the final one when `present`,
    else the last one any layer wrote before it was deleted."""

    path: str  # absolute: "/etc/motd"
    version: Version
    present: bool
    history: tuple[Event, ...]

    @property
    def deleted(self) -> bool:
        """Some layer deleted it (it may have been written again later)."""
        return any(e.action == "deleted" for e in self.history)

    @property
    def shadowed(self) -> bool:
        """Some layer overwrote a version a lower layer wrote (re-declaring a directory as a
        directory does not count: nothing of the lower one is lost)."""
        previous: Version | None = None
        for e in self.history:
            if (
                e.action == "modified"
                and previous is not None
                and e.version is not None
                and not (previous.is_dir and e.version.is_dir)
            ):
                return True
            previous = e.version
        return False

    def touched_by(self, layer: int) -> bool:
        return any(e.layer == layer for e in self.history)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "present": self.present,
            **self.version.to_json(),
            "history": [e.to_json() for e in self.history],
        }


class _Node:
    __slots__ = ("children", "version")

    def __init__(self, version: Version, children: dict[str, _Node] | None) -> None:
        self.version = version
        self.children = children  # None for anything but a directory

    def copy(self) -> _Node:
        kids = None if self.children is None else {k: v.copy() for k, v in self.children.items()}
        return _Node(self.version, kids)


class Merger:
    """The merged tree and every path's events, built one layer at a time."""

    def __init__(self) -> None:
        self._root = _Node(Version(layer=-1, type="dir", mode=0o755, implicit=True), {})
        self._events: dict[str, list[Event]] = {}
        self._last: dict[str, Version] = {}
        self.layers = 0

    def fork(self) -> Merger:
        """An independent copy: two images that share bottom layers merge those only once."""
        other = Merger()
        other._root = self._root.copy()
        other._events = {k: list(v) for k, v in self._events.items()}
        other._last = dict(self._last)
        other.layers = self.layers
        return other

    def apply(self, layer: int, members: Sequence[Member]) -> None:
        # Shallower markers first, so the result does not hang on their tar order: a whiteout
        # of a directory goes before markers inside it (which then find nothing to reach).
        for m in sorted((m for m in members if m.is_marker), key=lambda m: m.path.count("/")):
            if m.kind == "whiteout":
                self._delete(layer, m.target, "whiteout", m.path)
            elif m.kind == "opaque":
                self._opaque(layer, m)
        for m in members:
            if not m.is_marker:
                self._write(layer, m)
        self.layers = layer + 1

    # -- results -------------------------------------------------------------

    def final(self) -> dict[str, Version]:
        """Path (root-relative) -> version, for what the final filesystem holds."""
        return {path: node.version for path, node in _walk(self._root, "")}

    def records(self) -> list[PathRecord]:
        final = self.final()
        return [
            PathRecord(
                path="/" + path,
                version=final.get(path) or self._last[path],
                present=path in final,
                history=tuple(self._events[path]),
            )
            for path in sorted(self._events)
        ]

    # -- rules ---------------------------------------------------------------

    def _record(self, path: str, event: Event) -> None:
        self._events.setdefault(path, []).append(event)
        if event.version is not None:
            self._last[path] = event.version

    def _lookup(self, path: str, through_last: bool = False) -> tuple[_Node, _Node | None]:
        """(parent, node) for an existing path, node None when absent. A symlink on the way is
        hostile (a layer reaching through it would write outside the tree it describes)."""
        parent = node = self._root
        parts = path.split("/") if path else []
        for i, part in enumerate(parts):
            if node.children is None:
                return parent, None
            parent, child = node, node.children.get(part)
            if child is None:
                return parent, None
            if child.version.file_type == "symlink" and (through_last or i < len(parts) - 1):
                raise UnsafeArchiveError(
                    f"layer reaches {path!r} through the symlink {'/'.join(parts[: i + 1])!r}"
                )
            node = child
        return parent, node

    def _delete(self, layer: int, path: str, cause: Cause, by: str) -> None:
        parent, node = self._lookup(path)
        if node is None or parent.children is None:
            return
        del parent.children[path.rpartition("/")[2]]
        self._deleted(layer, path, node, cause, by)

    def _deleted(self, layer: int, path: str, node: _Node, cause: Cause, by: str) -> None:
        event = Event(layer, "deleted", cause=cause, by="/" + by)
        self._record(path, event)
        for sub, _ in _walk(node, path):
            self._record(sub, event)

    def _opaque(self, layer: int, m: Member) -> None:
        _, node = self._lookup(m.target, through_last=True)
        if node is None or node.children is None:
            return
        for name, child in list(node.children.items()):
            del node.children[name]
            self._deleted(layer, f"{m.target}/{name}" if m.target else name, child, "opaque", m.path)

    def _parent_dir(self, layer: int, path: str) -> _Node:
        """The directory that will hold `path`: missing ones are made, and a non-directory in
        the way is replaced by one (the later layer wins), as every unpacker does."""
        node = self._root
        parts = path.split("/")[:-1]
        for i, part in enumerate(parts):
            assert node.children is not None
            sub = "/".join(parts[: i + 1])
            child = node.children.get(part)
            if child is None:
                child = node.children[part] = _Node(Version.implicit_dir(layer), {})
                self._record(sub, Event(layer, "added", child.version))
            elif child.version.file_type == "symlink":
                raise UnsafeArchiveError(f"layer writes {path!r} through the symlink {sub!r}")
            elif child.children is None:
                child.version, child.children = Version.implicit_dir(layer), {}
                self._record(sub, Event(layer, "modified", child.version))
            node = child
        return node

    def _write(self, layer: int, m: Member) -> None:
        version = self._link_version(layer, m) if m.kind == "hardlink" else Version.of(layer, m)
        parent = self._parent_dir(layer, m.path)
        assert parent.children is not None
        name = m.path.rpartition("/")[2]
        node = parent.children.get(name)
        if node is None:
            parent.children[name] = _Node(version, {} if version.is_dir else None)
            self._record(m.path, Event(layer, "added", version))
            return
        if not version.is_dir and node.children:
            for child_name, child in node.children.items():
                self._deleted(layer, f"{m.path}/{child_name}", child, "replaced", m.path)
        if not (version.is_dir and node.children is not None):
            node.children = {} if version.is_dir else None
        node.version = version
        self._record(m.path, Event(layer, "modified", version))

    def _link_version(self, layer: int, m: Member) -> Version:
        _, target = self._lookup(m.target)
        if target is None or target.version.is_dir:
            raise UnsafeArchiveError(f"hardlink {m.path!r} points at missing or unusable {m.target!r}")
        t = target.version
        return Version(
            layer=layer,
            type="hardlink",
            mode=t.mode,
            uid=t.uid,
            gid=t.gid,
            size=t.size,
            mtime=m.mtime,
            target="/" + m.target,
            device=t.device,
            sha256=t.sha256,
            linked_type=t.file_type,
        )


def _walk(node: _Node, prefix: str) -> Iterator[tuple[str, _Node]]:
    """Every path below node (not node itself), parents before children."""
    if node.children is None:
        return
    for name, child in node.children.items():
        path = f"{prefix}/{name}" if prefix else name
        yield path, child
        yield from _walk(child, path)
