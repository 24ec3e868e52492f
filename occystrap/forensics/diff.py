"""`diff`: how two images differ, by file, by layer and by config.

JSON form (`ImageDiff.to_json`; the schema is stable):

    {"layers": {"shared": [{"diff_id": …, "a": 0, "b": 0}, …],      same diff_id in both
                "common_base": 2,                                   bottom layers both share in order
                "only_a": [{"index": 2, "digest": …, "diff_id": …, "size": …}, …],
                "only_b": [...]},
     "config": {"env": {"added": {NAME: value}, "removed": {NAME: value},
                        "changed": {NAME: {"a": value, "b": value}}},
                "labels": {same shape as env},
                "entrypoint" | "cmd" | "user" | "workdir": {"a": …, "b": …}},
     "files": [{"path": "/etc/motd", "change": "added" | "removed" | "changed",
                "fields": ["content", "mode", …],       what differs, for "changed"
                "a": {version fields} | null, "b": {version fields} | null}, …]}

Only what differs appears under "config". Version fields are those of `files` (type, mode,
uid, gid, size, mtime, target, device, sha256, implicit, layer). Files compare by type
(a hardlink counts as a file), content sha256, mode, uid, gid, symlink target and device
numbers; mtimes are left out, since every rebuild changes them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from occystrap.forensics.files import FileTable, merge_layers
from occystrap.forensics.history import Merger, Version
from occystrap.forensics.imageconfig import ImageConfig
from occystrap.forensics.layers import LayerRef, OpenLayer
from occystrap.forensics.members import Member, listing


@dataclass(frozen=True)
class ImageSide:
    config: bytes  # the image config's exact bytes
    layers: Sequence[LayerRef]
    open_layer: OpenLayer


@dataclass(frozen=True)
class FileChange:
    path: str
    change: Literal["added", "removed", "changed"]
    a: Version | None
    b: Version | None
    fields: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "change": self.change,
            "fields": list(self.fields),
            "a": self.a.to_json() if self.a else None,
            "b": self.b.to_json() if self.b else None,
        }


@dataclass(frozen=True)
class LayerDiff:
    shared: tuple[tuple[str, int, int], ...]  # (diff_id, index in a, index in b)
    common_base: int
    only_a: tuple[LayerRef, ...]
    only_b: tuple[LayerRef, ...]

    def to_json(self) -> dict[str, Any]:
        def ref(r: LayerRef) -> dict[str, Any]:
            return {"index": r.index, "digest": r.digest, "diff_id": r.diff_id, "size": r.size}

        return {
            "shared": [{"diff_id": d, "a": i, "b": j} for d, i, j in self.shared],
            "common_base": self.common_base,
            "only_a": [ref(r) for r in self.only_a],
            "only_b": [ref(r) for r in self.only_b],
        }


@dataclass(frozen=True)
class ImageDiff:
    layers: LayerDiff
    config: dict[str, Any]
    files: tuple[FileChange, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "layers": self.layers.to_json(),
            "config": self.config,
            "files": [f.to_json() for f in self.files],
        }


def diff_images(a: ImageSide, b: ImageSide) -> ImageDiff:
    """Compare two images. Each layer is read once: bottom layers the two share are merged once
    (through a's source) and the merged state forked; a layer shared further up is listed once."""
    layers = layer_diff(a.layers, b.layers)
    table_a, table_b = _tables(a, b, layers.common_base)
    return ImageDiff(layers, config_diff(a.config, b.config), file_diff(table_a, table_b))


def layer_diff(a: Sequence[LayerRef], b: Sequence[LayerRef]) -> LayerDiff:
    base = 0
    while base < min(len(a), len(b)) and a[base].diff_id == b[base].diff_id:
        base += 1
    in_b = {r.diff_id: r.index for r in b}
    in_a = {r.diff_id for r in a}
    shared = tuple((r.diff_id, r.index, in_b[r.diff_id]) for r in a if r.diff_id in in_b)
    return LayerDiff(
        shared=shared,
        common_base=base,
        only_a=tuple(r for r in a if r.diff_id not in in_b),
        only_b=tuple(r for r in b if r.diff_id not in in_a),
    )


def _tables(a: ImageSide, b: ImageSide, base: int) -> tuple[FileTable, FileTable]:
    merger_a = Merger()
    merge_layers(a.layers[:base], a.open_layer, merger_a, content_digests=True)
    merger_b = merger_a.fork()
    rest_a, rest_b = a.layers[base:], b.layers[base:]
    # Layers both images hold above the common base: list them once, keep the listing for b.
    again = {r.diff_id for r in rest_a} & {r.diff_id for r in rest_b}
    kept: dict[str, list[Member]] = {}
    for side, rest, merger in ((a, rest_a, merger_a), (b, rest_b, merger_b)):
        for ref in rest:
            members = kept.get(ref.diff_id)
            if members is None:
                with side.open_layer(ref) as stream:
                    members = listing(stream, content_digests=True)
                if ref.diff_id in again:
                    kept[ref.diff_id] = members
            merger.apply(ref.index, members)
    return FileTable.from_merger(merger_a), FileTable.from_merger(merger_b)


def file_diff(a: FileTable, b: FileTable) -> tuple[FileChange, ...]:
    fa, fb = a.final(), b.final()
    out: list[FileChange] = []
    for path in sorted(fa.keys() | fb.keys()):
        va, vb = fa.get(path), fb.get(path)
        if vb is None:
            out.append(FileChange(path, "removed", va, None))
        elif va is None:
            out.append(FileChange(path, "added", None, vb))
        else:
            fields = changed_fields(va, vb)
            if fields:
                out.append(FileChange(path, "changed", va, vb, fields))
    return tuple(out)


def changed_fields(a: Version, b: Version) -> tuple[str, ...]:
    kind_a, kind_b = _kind(a), _kind(b)
    fields = []
    if kind_a != kind_b:
        fields.append("type")
    elif kind_a == "file" and (a.sha256 != b.sha256 or a.size != b.size):
        fields.append("content")
    for name in ("mode", "uid", "gid"):
        if getattr(a, name) != getattr(b, name):
            fields.append(name)
    if kind_a == kind_b == "symlink" and a.target != b.target:
        fields.append("target")
    if a.device != b.device:
        fields.append("device")
    return tuple(fields)


def _kind(v: Version) -> str:
    return v.file_type


def config_diff(a: bytes, b: bytes) -> dict[str, Any]:
    ca, cb = ImageConfig.parse(a), ImageConfig.parse(b)
    out: dict[str, Any] = {}
    for name, ma, mb in (("env", ca.env_map(), cb.env_map()), ("labels", ca.labels, cb.labels)):
        changes = _map_diff(ma, mb)
        if changes:
            out[name] = changes
    for name, va, vb in (
        ("entrypoint", ca.entrypoint, cb.entrypoint),
        ("cmd", ca.cmd, cb.cmd),
        ("user", ca.user, cb.user),
        ("workdir", ca.workdir, cb.workdir),
    ):
        if va != vb:
            out[name] = {
                "a": list(va) if isinstance(va, tuple) else va,
                "b": list(vb) if isinstance(vb, tuple) else vb,
            }
    return out


def _map_diff(a: Mapping[str, str], b: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    added = {k: b[k] for k in sorted(b.keys() - a.keys())}
    removed = {k: a[k] for k in sorted(a.keys() - b.keys())}
    changed = {k: {"a": a[k], "b": b[k]} for k in sorted(a.keys() & b.keys()) if a[k] != b[k]}
    for key, value in (("added", added), ("removed", removed), ("changed", changed)):
        if value:
            out[key] = value
    return out
