"""forensics.diff: files, layers and config of two images; shared layers read once."""

from __future__ import annotations

import json
from pathlib import Path

from occystrap.forensics.diff import ImageSide, config_diff, diff_images
from tests.support import images
from tests.support.forensics import Stored, store
from tests.support.images import directory, file, hardlink, symlink, whiteout

BASE0 = [
    directory("etc"),
    file("etc/passwd", b"root:x:0:0::/root:/bin/sh\n"),
    file("etc/conf", b"v=1\n"),
    file("etc/thing", b"a file in A\n"),
    directory("bin"),
    file("bin/tool", b"#!/bin/sh\n", mode=0o755),
    hardlink("bin/t2", "bin/tool"),
    directory("lib"),
    symlink("lib/l", "one"),
    directory("data"),
    file("data/f", b"data\n"),
]
BASE1 = [directory("usr"), directory("usr/share"), file("usr/share/doc", b"docs\n")]
SHARED_TOP = [directory("x"), file("x/file", b"in both images, at different heights\n")]
B_ONLY = [
    directory("etc"),
    file("etc/conf", b"v=2\n"),
    whiteout("etc/passwd"),
    directory("etc/thing"),
    file("etc/thing/inner", b"now a directory\n"),
    directory("bin"),
    file("bin/tool", b"#!/bin/sh\n", mode=0o700),
    file("bin/t2", b"#!/bin/sh\n", mode=0o755),  # was a hardlink with the same bytes and mode
    directory("lib"),
    symlink("lib/l", "two"),
    directory("data"),
    file("data/f", b"data\n", uid=1000, gid=1000),
    directory("usr"),
    whiteout("usr/share"),
    directory("new"),
    file("new/file", b"new\n"),
]
CONFIG_A = {
    "config": {
        "Env": ["PATH=/bin", "A=1", "SAME=x"],
        "Cmd": ["sh"],
        "Labels": {"l1": "a", "keep": "k"},
        "User": "root",
        "WorkingDir": "/",
    }
}
CONFIG_B = {
    "config": {
        "Env": ["PATH=/bin", "B=2", "SAME=y"],
        "Entrypoint": ["/bin/tool"],
        "Cmd": ["run"],
        "Labels": {"l2": "b", "keep": "k"},
        "User": "app",
        "WorkingDir": "/srv",
    }
}


def _images(tmp_path: Path) -> tuple[Stored, Stored]:
    base = [images.build_layer(entries, fmt="oci") for entries in (BASE0, BASE1)]
    top = images.build_layer(SHARED_TOP, fmt="oci")
    a = store(tmp_path / "a", [*base, top], extra_config=CONFIG_A)
    b = store(tmp_path / "b", [*base, images.build_layer(B_ONLY, fmt="oci"), top], extra_config=CONFIG_B)
    return a, b


def _side(s: Stored) -> ImageSide:
    return ImageSide(s.image.config, s.refs, s.open_layer())


def test_file_changes(tmp_path: Path) -> None:
    a, b = _images(tmp_path)
    result = diff_images(_side(a), _side(b))
    changes = {(f.path, f.change, f.fields) for f in result.files}
    assert changes == {
        ("/etc/passwd", "removed", ()),
        ("/etc/conf", "changed", ("content",)),
        ("/etc/thing", "changed", ("type", "mode")),
        ("/etc/thing/inner", "added", ()),
        ("/bin/tool", "changed", ("mode",)),
        ("/lib/l", "changed", ("target",)),
        ("/data/f", "changed", ("uid", "gid")),
        ("/new", "added", ()),
        ("/new/file", "added", ()),
        ("/usr/share", "removed", ()),
        ("/usr/share/doc", "removed", ()),
    }
    [conf] = [f for f in result.files if f.path == "/etc/conf"]
    assert conf.a is not None and conf.b is not None and conf.a.layer == 0 and conf.b.layer == 2
    assert conf.a.sha256 == images.sha256_digest(b"v=1\n") and conf.b.sha256 == images.sha256_digest(b"v=2\n")
    # Only the base files that upper layers touch are hashed, and what they delete is among them.
    [doc] = [f for f in result.files if f.path == "/usr/share/doc"]
    assert doc.a is not None and doc.a.sha256 == images.sha256_digest(b"docs\n")


def test_layers_shared_by_diff_id_are_read_once(tmp_path: Path) -> None:
    a, b = _images(tmp_path)
    result = diff_images(_side(a), _side(b))
    layers = result.layers
    assert layers.common_base == 2
    assert [(i, j) for _, i, j in layers.shared] == [(0, 0), (1, 1), (2, 3)]
    assert [r.index for r in layers.only_b] == [2] and layers.only_a == ()
    # The common base through a's source, the shared top listed once: b reads only its own layer.
    assert sorted(a.opens.values()) == [1, 1, 1]
    assert dict(b.opens) == {b.refs[2].diff_id: 1}


def test_a_touched_hardlink_of_the_base_compares_its_targets_bytes(tmp_path: Path) -> None:
    base = [directory("d"), file("d/orig", b"same\n"), hardlink("d/link", "d/orig"), file("d/other", b"o\n")]
    a = store(tmp_path / "a", [base])
    # d/link becomes a file of its own with the same bytes and mode, and d/orig is left alone:
    # the base never hashed d/orig, so it is read again for that one file's digest.
    b = store(tmp_path / "b", [base, [directory("d"), file("d/link", b"same\n"), file("d/other", b"p\n")]])
    result = diff_images(_side(a), _side(b))
    assert [(f.path, f.fields) for f in result.files] == [("/d/other", ("content",))]
    assert b.opens[b.refs[1].diff_id] == 1 and a.opens[a.refs[0].diff_id] == 2


def test_config_changes(tmp_path: Path) -> None:
    a, b = _images(tmp_path)
    assert diff_images(_side(a), _side(b)).config == {
        "env": {"added": {"B": "2"}, "removed": {"A": "1"}, "changed": {"SAME": {"a": "x", "b": "y"}}},
        "labels": {"added": {"l2": "b"}, "removed": {"l1": "a"}},
        "entrypoint": {"a": None, "b": ["/bin/tool"]},
        "cmd": {"a": ["sh"], "b": ["run"]},
        "user": {"a": "root", "b": "app"},
        "workdir": {"a": "/", "b": "/srv"},
    }
    same = json.dumps(CONFIG_A).encode()
    assert config_diff(same, same) == {}


def test_an_image_against_itself_differs_in_nothing(tmp_path: Path) -> None:
    a, _ = _images(tmp_path)
    result = diff_images(_side(a), _side(a))
    assert result.files == () and result.config == {} and result.layers.common_base == 3
    assert sorted(a.opens.values()) == [1, 1, 1]


def test_json_form(tmp_path: Path) -> None:
    a, b = _images(tmp_path)
    doc = json.loads(json.dumps(diff_images(_side(a), _side(b)).to_json()))
    assert set(doc) == {"layers", "config", "files"}
    assert set(doc["layers"]) == {"shared", "common_base", "only_a", "only_b"}
    assert doc["layers"]["only_b"] == [
        {"index": 2, "digest": b.refs[2].digest, "diff_id": b.refs[2].diff_id, "size": b.refs[2].size}
    ]
    [tool] = [f for f in doc["files"] if f["path"] == "/bin/tool"]
    assert (tool["change"], tool["fields"], tool["a"]["mode"], tool["b"]["mode"]) == (
        "changed",
        ["mode"],
        "0755",
        "0700",
    )
    [gone] = [f for f in doc["files"] if f["path"] == "/etc/passwd"]
    assert gone["b"] is None and gone["a"]["type"] == "file"
