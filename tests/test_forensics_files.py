"""forensics.files / history / layers: every path's story, the final table, the layer reader."""

from __future__ import annotations

import hashlib
import json
import tracemalloc
from collections.abc import Sequence
from pathlib import Path

import pytest

from occystrap.errors import IntegrityError, NotFoundError
from occystrap.forensics.files import file_table
from occystrap.forensics.history import Merger, PathRecord, Version
from occystrap.forensics.layers import LayerRef, open_blob_file
from occystrap.forensics.members import Member
from tests.support import images
from tests.support.forensics import rich_layers, special_layer, store
from tests.support.images import directory, file, opaque, whiteout


def _final_as_model(final: dict[str, Version]) -> dict[str, tuple[str, str, int, int, str | None]]:
    """Our final table in the reference model's terms (a hardlink is a file)."""
    out = {}
    for path, v in final.items():
        kind = "file" if v.type == "hardlink" else v.type
        out[path[1:]] = (kind, f"{v.mode:04o}", v.uid, v.gid, v.target if v.type == "symlink" else v.sha256)
    return out


def _model(layers: list[list[images.Entry]]) -> dict[str, tuple[str, str, int, int, str | None]]:
    out = {}
    for path, e in images.merge_layers(layers).items():
        kind = "file" if e.kind == "hardlink" else e.kind
        key = (
            e.target if e.kind == "symlink" else None if e.kind == "dir" else images.sha256_digest(e.content)
        )
        out[path] = (kind, f"{e.mode:04o}", e.uid, e.gid, key)
    return out


@pytest.mark.parametrize("case", ["rich", "sample", "sample-cross-layer-hardlink"])
def test_final_table_matches_the_reference_model(tmp_path: Path, case: str) -> None:
    layers = (
        rich_layers()
        if case == "rich"
        else images.sample_layers(cross_layer_hardlink=case.endswith("hardlink"))
    )
    stored = store(tmp_path, layers, compression="zstd")
    table = file_table(stored.refs, stored.open_layer(), content_digests=True)
    assert _final_as_model(table.final()) == _model(layers)
    # Each layer read once, to its end (the reader verified it).
    assert sorted(stored.opens.values()) == [1] * len(layers)


def _story(records: Sequence[PathRecord], path: str) -> list[tuple[int, str, str | None, str | None]]:
    [record] = [r for r in records if r.path == path]
    return [(e.layer, e.action, e.cause, e.by) for e in record.history]


def test_history_shows_overwritten_and_deleted_paths(tmp_path: Path) -> None:
    stored = store(tmp_path, rich_layers())
    table = file_table(stored.refs, stored.open_layer())
    recs = table.records
    assert _story(recs, "/etc/b") == [
        (0, "added", None, None),
        (1, "deleted", "whiteout", "/etc/.wh.b"),
        (2, "added", None, None),
    ]
    assert _story(recs, "/opt/d/x") == [
        (0, "added", None, None),
        (1, "deleted", "opaque", "/opt/d/.wh..wh..opq"),
    ]
    # The opaque marker came after the layer's own opt/d/y: it hides only the lower one.
    assert _story(recs, "/opt/d/y") == [
        (0, "added", None, None),
        (1, "deleted", "opaque", "/opt/d/.wh..wh..opq"),
        (1, "added", None, None),
    ]
    assert _story(recs, "/swap") == [
        (0, "added", None, None),
        (1, "modified", None, None),
        (2, "modified", None, None),
    ]
    assert _story(recs, "/swap/inner") == [(1, "added", None, None), (2, "deleted", "replaced", "/swap")]
    assert _story(recs, "/etc/link") == [
        (0, "added", None, None),
        (2, "deleted", "whiteout", "/etc/.wh.link"),
    ]
    by_path = {r.path: r for r in recs}
    assert [e.version.type for e in by_path["/swap"].history] == ["file", "dir", "file"]  # type: ignore[union-attr]
    assert not by_path["/opt/d/x"].present and by_path["/opt/d/x"].version.layer == 0
    assert by_path["/etc/b"].present and by_path["/etc/b"].version.type == "symlink"
    cross = by_path["/lib/cross"].version
    assert (cross.type, cross.target, cross.size, cross.layer) == ("hardlink", "/lib/libz", 10000, 1)


def test_filters(tmp_path: Path) -> None:
    stored = store(tmp_path, rich_layers())
    table = file_table(stored.refs, stored.open_layer())
    paths = lambda records: {r.path for r in records}  # noqa: E731
    assert paths(table.select(deleted=True)) == {"/etc/b", "/etc/link", "/opt/d/x", "/opt/d/y", "/swap/inner"}
    # Re-declaring a directory is not overwriting; replacing a file (by anything) is.
    assert paths(table.select(shadowed=True)) == {"/etc/a", "/swap", "/lib/libz", "/data/big"}
    assert paths(table.select(layer=2, shadowed=True)) == {"/swap", "/lib/libz", "/data/big"}
    assert paths(table.select(layer=1, deleted=True)) == {"/etc/b", "/opt/d/x", "/opt/d/y", "/swap/inner"}
    assert "/etc/keep" not in paths(table.select(layer=1))


def test_json_schema(tmp_path: Path) -> None:
    stored = store(tmp_path, rich_layers())
    table = file_table(stored.refs, stored.open_layer(), content_digests=True)
    doc = json.loads(json.dumps(table.to_json()))
    by_path = {d["path"]: d for d in doc}
    assert [d["path"] for d in doc] == sorted(by_path)
    keys = {
        "path",
        "present",
        "type",
        "mode",
        "uid",
        "gid",
        "size",
        "mtime",
        "target",
        "device",
        "sha256",
        "implicit",
        "layer",
        "history",
    }
    assert all(set(d) == keys for d in doc)
    f = by_path["/home/u/f"]
    assert (f["mode"], f["uid"], f["gid"], f["size"], f["layer"]) == ("0600", 1000, 1000, 8, 0)
    assert f["sha256"] == "sha256:" + hashlib.sha256(b"private\n").hexdigest()
    event_keys = {"layer", "action", *keys} - {"path", "present", "history"}
    deleted = by_path["/etc/b"]["history"][1]
    assert deleted == {"layer": 1, "action": "deleted", "cause": "whiteout", "by": "/etc/.wh.b"}
    assert set(by_path["/etc/b"]["history"][2]) == event_keys
    assert by_path["/etc/b"]["target"] == "c"


def test_devices_and_fifos_are_listed(tmp_path: Path) -> None:
    stored = store(tmp_path, [special_layer()])
    final = file_table(stored.refs, stored.open_layer()).final()
    assert (final["/dev/null"].type, final["/dev/null"].device, final["/dev/null"].gid) == ("char", (1, 3), 6)
    assert (final["/dev/loop9"].type, final["/dev/loop9"].device) == ("block", (7, 9))
    assert final["/run/fifo"].type == "fifo" and final["/run/fifo"].mode == 0o620


# -- the merge rules, without I/O ------------------------------------------------------------


def _members(entries: list[images.Entry]) -> list[Member]:
    import io

    from occystrap.forensics.members import listing

    return listing(io.BytesIO(images.make_tar(entries)))  # type: ignore[arg-type]


def _final(*layers: list[images.Entry]) -> set[str]:
    merger = Merger()
    for i, entries in enumerate(layers):
        merger.apply(i, _members(entries))
    return set(merger.final())


@pytest.mark.parametrize("marker_first", [True, False])
def test_opaque_keeps_what_its_own_layer_adds_in_any_order(marker_first: bool) -> None:
    lower = [directory("d"), file("d/old"), directory("d/sub"), file("d/sub/old")]
    own = [directory("d"), file("d/new"), directory("d/sub"), file("d/sub/new")]
    upper = [opaque("d"), *own] if marker_first else [*own, opaque("d")]
    assert _final(lower, upper) == {"d", "d/new", "d/sub", "d/sub/new"}


def test_whiteouts_match_whole_path_components() -> None:
    lower = [
        directory("l"),
        file("l/de"),
        file("l/de_CH"),
        directory("u"),
        file("u/x"),
        directory("u64"),
        file("u64/x"),
    ]
    assert _final(lower, [whiteout("l/de"), opaque("u")]) == {"l", "l/de_CH", "u", "u64", "u64/x"}


def test_a_whiteout_of_a_directory_takes_its_subtree_and_the_path_can_come_back() -> None:
    lower = [directory("a"), directory("a/b"), file("a/b/c")]
    assert _final(lower, [whiteout("a")]) == set()
    assert _final(lower, [whiteout("a"), directory("a"), file("a/new")]) == {"a", "a/new"}


def test_a_missing_parent_becomes_an_implicit_directory() -> None:
    merger = Merger()
    merger.apply(0, _members([file("x/y/z", b"1")]))
    final = merger.final()
    assert final["x"].implicit and final["x/y"].implicit and final["x"].mode == 0o755
    assert not final["x/y/z"].implicit


def test_fork_is_independent() -> None:
    base = Merger()
    base.apply(0, _members([file("shared")]))
    other = base.fork()
    base.apply(1, _members([file("only-base")]))
    other.apply(1, _members([whiteout("shared")]))
    assert set(base.final()) == {"shared", "only-base"}
    assert set(other.final()) == set()
    assert [r.path for r in other.records()] == ["/shared"]


# -- the layer reader ----------------------------------------------------------------------------


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_reader_decodes_and_verifies_each_compression(
    tmp_path: Path, compression: images.Compression
) -> None:
    layer = images.build_layer([file("f", b"hello\n")], compression=compression, fmt="oci")
    (tmp_path / "blob").write_bytes(layer.data)
    ref = LayerRef(0, layer.digest, layer.diff_id, layer.size)
    with open_blob_file({layer.digest: tmp_path / "blob"})(ref) as stream:
        assert stream.read() == layer.tar
    wrong = LayerRef(0, layer.digest, "sha256:" + "0" * 64, layer.size)
    with (
        pytest.raises(IntegrityError, match="uncompresses to"),
        open_blob_file({layer.digest: tmp_path / "blob"})(wrong) as s,
    ):
        s.read(10)  # leaving early still drains and checks
    with pytest.raises(NotFoundError):
        open_blob_file({})(ref).__enter__()


def test_a_corrupted_blob_fails_the_table(tmp_path: Path) -> None:
    stored = store(tmp_path, rich_layers())
    blob = stored.blob_dir / stored.refs[1].digest[7:]
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(IntegrityError):
        file_table(stored.refs, stored.open_layer())


def test_memory_stays_flat_in_file_size(tmp_path: Path) -> None:
    # 48 MiB of file content; contents are hashed while they stream, never held.
    big = [directory("d"), *(file(f"d/{i}", bytes([i]) * (16 * 1024 * 1024)) for i in range(3))]
    stored = store(tmp_path, [big])
    tracemalloc.start()
    try:
        table = file_table(stored.refs, stored.open_layer(), content_digests=True)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert table.final()["/d/2"].size == 16 * 1024 * 1024
    assert peak < 8 * 1024 * 1024, peak


def test_layer_refs_of_an_image() -> None:
    from occystrap.forensics.layers import layer_refs
    from occystrap.model import Descriptor, build_image
    from occystrap.reference import parse

    built = images.build_image(rich_layers(), fmt="oci")
    manifest = Descriptor(built.manifest_media_type, built.manifest_digest, len(built.manifest))
    image = build_image(parse("127.0.0.1:5000/x/y:v1"), manifest, built.manifest, built.config)
    assert layer_refs(image) == [
        LayerRef(i, layer.digest, layer.diff_id, layer.size) for i, layer in enumerate(built.layers)
    ]
