"""`files`: every path of an image with what each layer did to it.

JSON form (`FileTable.to_json`, one object per path, sorted by path; the schema is stable):

    {"path": "/etc/motd",          absolute path
     "present": true,              whether the final filesystem holds it
     "type": "file",               file | dir | symlink | hardlink | char | block | fifo
     "mode": "0644",               permission bits (with setuid/setgid/sticky), octal
     "uid": 0, "gid": 0,
     "size": 24,                   bytes of a file or of a hardlink's file; 0 for the rest
     "mtime": 1577934245,          seconds since the epoch
     "target": null,               symlink: target as stored; hardlink: absolute path it links to
     "device": null,               [major, minor] for char and block devices
     "sha256": null,               "sha256:<hex>" of a file's bytes, with content digests
     "implicit": false,            a directory made for a path below it that no layer declared
     "layer": 2,                   index (0 = bottom) of the layer that wrote this version
     "history": [event, ...]}      oldest first

The version fields (type … layer) describe the final version when present, else the last one
written before the deletion. Each event is {"layer": N, "action": "added" | "modified", plus
that write's version fields} or {"layer": N, "action": "deleted", "cause": "whiteout" |
"opaque" | "replaced", "by": "/etc/.wh.motd"}; "replaced" means a later write put a
non-directory where its parent directory was, and "by" names that write's path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from occystrap.forensics.history import Merger, PathRecord, Version
from occystrap.forensics.layers import LayerRef, OpenLayer
from occystrap.forensics.members import DigestFilter, listing


def merge_layers(
    layers: Sequence[LayerRef], open_layer: OpenLayer, merger: Merger, content_digests: DigestFilter
) -> None:
    """Apply `layers`, in order, to merger: one layer read and held at a time."""
    for ref in layers:
        with open_layer(ref) as stream:
            members = listing(stream, content_digests)
        merger.apply(ref.index, members)


@dataclass(frozen=True)
class FileTable:
    records: tuple[PathRecord, ...]  # sorted by path

    @classmethod
    def from_merger(cls, merger: Merger) -> FileTable:
        return cls(tuple(merger.records()))

    def final(self) -> dict[str, Version]:
        """Absolute path -> version, for what the final filesystem holds."""
        return {r.path: r.version for r in self.records if r.present}

    def select(
        self, *, layer: int | None = None, deleted: bool = False, shadowed: bool = False
    ) -> list[PathRecord]:
        """Records matching every filter given: touched by `layer` (added, modified or deleted
        there), deleted by some layer, overwritten by some layer."""
        return [
            r
            for r in self.records
            if (layer is None or r.touched_by(layer))
            and (not deleted or r.deleted)
            and (not shadowed or r.shadowed)
        ]

    def to_json(self, records: Sequence[PathRecord] | None = None) -> list[dict[str, Any]]:
        return [r.to_json() for r in (self.records if records is None else records)]


def file_table(
    layers: Sequence[LayerRef], open_layer: OpenLayer, *, content_digests: bool = False
) -> FileTable:
    """Read the layers in order and tell every path's story (metadata only is held; with
    content_digests each file's bytes are hashed as they stream past)."""
    merger = Merger()
    merge_layers(layers, open_layer, merger, content_digests)
    return FileTable.from_merger(merger)
