"""forensics.export: the flattened root filesystem as one tar stream, judged by the reference
model, by `tar -x`, by `umoci unpack`, by expand.py's TreeWriter and by `podman import`."""

from __future__ import annotations

import io
import os
import tarfile
import tracemalloc
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from occystrap.errors import IntegrityError, UnsafeArchiveError
from occystrap.expand import TreeWriter, apply_layer
from occystrap.forensics.export import export_rootfs
from occystrap.forensics.files import file_table
from tests.conftest import require_tool
from tests.support import images
from tests.support.dockerd import DockerDaemon
from tests.support.forensics import (
    HELLO,
    RICH_HARDLINK_GROUPS,
    Stored,
    comparable,
    expected_tree,
    hardlink_groups,
    member,
    raw_layer,
    rich_layers,
    runnable_layers,
    special_layer,
    static_busybox,
    store,
    tree,
)
from tests.support.images import directory, file, hardlink, opaque, symlink, whiteout
from tests.support.validators import Podman, run_tool, umoci_unpack


def _export(stored: Stored, dest: Path) -> Path:
    out = dest / "export.tar"
    with open(out, "wb") as fh:
        export_rootfs(stored.refs, stored.open_layer(), fh)
    return out


def _untar(archive: Path, dest: Path) -> Path:
    dest.mkdir()
    run_tool([require_tool("tar"), "-xf", str(archive), "-C", str(dest)])
    return dest


def _members(archive: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(archive) as tf:
        return tf.getmembers()


def _check_stream_order(archive: Path) -> None:
    """Each name once; every hardlink after the member it links to (a file, or rarely a
    symlink or a device), never to another link."""
    seen: dict[str, tarfile.TarInfo] = {}
    for m in _members(archive):
        assert m.name.rstrip("/") not in seen, f"{m.name} twice"
        if m.islnk():
            target = seen.get(m.linkname)
            assert target is not None and not (target.isdir() or target.islnk()), f"{m.name} -> {m.linkname}"
        seen[m.name.rstrip("/")] = m


CASES = {
    "rich": (rich_layers, RICH_HARDLINK_GROUPS),
    "sample": (
        lambda: images.sample_layers(),
        [{"bin/busybox", "usr/bin/busybox-hl"}],  # bin/ls keeps layer 1's busybox, alone
    ),
    "sample-cross-layer-hardlink": (
        lambda: images.sample_layers(cross_layer_hardlink=True),
        [{"bin/busybox", "bin/ls", "usr/bin/busybox-hl"}],
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_export_extracts_to_the_reference_model(tmp_path: Path, case: str) -> None:
    make, groups = CASES[case]
    layers = make()
    stored = store(tmp_path, layers, compression="zstd")
    archive = _export(stored, tmp_path)
    _check_stream_order(archive)
    root = _untar(archive, tmp_path / "x")
    assert comparable(tree(root)) == expected_tree(layers)
    assert hardlink_groups(root) == groups
    # Top-down, each layer once.
    assert sorted(stored.opens.values()) == [1] * len(layers)


@pytest.mark.parametrize("case", [*sorted(CASES), "devices"])
def test_export_matches_umoci_unpack(tmp_path: Path, umoci: str, case: str) -> None:
    if case == "devices" and os.geteuid() != 0:
        pytest.skip("device nodes need root")
    layers = (
        [special_layer(), images.build_layer([file("dev/zero-ish", b"z")], fmt="oci")]
        if case == "devices"
        else CASES[case][0]()
    )
    stored = store(tmp_path, layers)  # type: ignore[arg-type]
    reference = umoci_unpack(
        images.write_oci_layout(tmp_path / "oci", stored.image, "v1"), "v1", tmp_path / "bundle"
    )
    root = _untar(_export(stored, tmp_path), tmp_path / "x")
    assert tree(root) == tree(reference)
    assert hardlink_groups(root) == hardlink_groups(reference)


def test_devices_and_fifos_are_kept_in_the_stream(tmp_path: Path) -> None:
    stored = store(tmp_path, [special_layer()])
    by_name = {m.name: m for m in _members(_export(stored, tmp_path))}
    assert by_name["dev/null"].ischr() and (by_name["dev/null"].devmajor, by_name["dev/null"].devminor) == (
        1,
        3,
    )
    assert by_name["dev/loop9"].isblk() and by_name["dev/loop9"].devminor == 9
    assert by_name["run/fifo"].isfifo() and by_name["run/fifo"].mode == 0o620 and by_name["run/fifo"].gid == 6


def test_owners_modes_mtimes_and_xattrs_survive(tmp_path: Path) -> None:
    info, data = member("etc/tool", data=b"#!/bin/sh\n", mode=0o4755)
    info.uid, info.gid, info.uname, info.gname, info.mtime = 7, 8, "svc", "svcgrp", 1234567890
    # Binary xattr values travel as PAX "hdrcharset=BINARY", decoded with surrogateescape.
    capability = b"\x01\x00\x00\x02\xff\xfe\x00\x00".decode("utf-8", "surrogateescape")
    info.pax_headers = {"SCHILY.xattr.security.capability": capability, "SCHILY.xattr.user.note": "hi"}
    stored = store(tmp_path, [raw_layer([member("etc", tarfile.DIRTYPE), (info, data)])])
    [out] = [m for m in _members(_export(stored, tmp_path)) if m.name == "etc/tool"]
    assert (out.mode, out.uid, out.gid, out.uname, out.gname, out.mtime) == (
        0o4755,
        7,
        8,
        "svc",
        "svcgrp",
        1234567890,
    )
    assert out.pax_headers["SCHILY.xattr.security.capability"] == capability
    assert out.pax_headers["SCHILY.xattr.user.note"] == "hi"


def test_undeclared_parents_come_last_as_plain_directories(tmp_path: Path) -> None:
    stored = store(tmp_path, [[file("a/b/c", b"c")], [directory("a", mode=0o700)]])
    names = [(m.name, m.type, m.mode, m.uid) for m in _members(_export(stored, tmp_path))]
    # "a" is declared by the upper layer; only a/b is implicit, and comes after its child.
    assert names == [
        ("a", tarfile.DIRTYPE, 0o700, 0),
        ("a/b/c", tarfile.REGTYPE, 0o644, 0),
        ("a/b", tarfile.DIRTYPE, 0o755, 0),
    ]


def test_a_corrupted_layer_fails_the_export(tmp_path: Path) -> None:
    stored = store(tmp_path, rich_layers(), compression="none")
    blob = stored.blob_dir / stored.refs[0].digest[7:]
    blob.write_bytes(blob.read_bytes().replace(b"private", b"PRIVATE"))
    with pytest.raises(IntegrityError):
        export_rootfs(stored.refs, stored.open_layer(), io.BytesIO())


def test_memory_stays_flat_with_big_and_shadowed_files(tmp_path: Path) -> None:
    big = bytes(range(256)) * (64 * 1024)  # 16 MiB
    # Layer 0's file is overwritten above, and a link of its own layer keeps its bytes:
    # they go through the spool file, never through memory.
    layers = [[file("big", big), hardlink("old", "big")], [file("big", big[::-1]), file("more", big)]]
    stored = store(tmp_path, layers, compression="none")
    out = tmp_path / "out.tar"
    tracemalloc.start()
    try:
        with open(out, "wb") as fh:
            stats = export_rootfs(stored.refs, stored.open_layer(), fh)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert stats.spooled_bytes == len(big)
    assert peak < 8 * 1024 * 1024, peak
    root = _untar(out, tmp_path / "x")
    assert (root / "old").read_bytes() == big and (root / "big").read_bytes() == big[::-1]


def test_podman_imports_the_export_and_runs_it(tmp_path: Path, podman: Podman) -> None:
    stored = store(tmp_path, runnable_layers(static_busybox()))
    archive = _export(stored, tmp_path)
    podman("import", str(archive), "localhost/forensics/exported:v1")
    out = podman.run_container(
        "localhost/forensics/exported:v1", "/bin/sh", "-c", "cat /data/hello.txt; ls /data"
    )
    assert out == HELLO.decode() + "hello.txt\n"


def test_docker_imports_the_export_and_runs_it(tmp_path: Path, docker: DockerDaemon) -> None:
    stored = store(tmp_path, runnable_layers(static_busybox()))
    archive = _export(stored, tmp_path)
    tag = f"forensics-exported:{uuid.uuid4().hex[:8]}"
    docker("import", str(archive), tag)
    try:
        out = docker.run(tag, "/bin/sh", "-c", "cat /data/hello.txt; ls /data; stat -c %u:%g /home/app")
    finally:
        docker.rmi(tag)
    assert out == HELLO.decode() + "hello.txt\n1234:2345\n"


# -- differential: random layer stacks against expand.py's TreeWriter --------------------------

NAMES = ["a", "b", "a/c", "a/d", "b/c", "a/c/e", "a/c/f", "b/c/e", "c", "a/d/e"]
SYMLINK_TARGETS = ["a", "c", "../b", "/a/c", "nowhere", "e", "../a/d", "/b/c"]


@st.composite
def _layer(draw: st.DrawFn, depth: int) -> list[images.Entry]:
    """One layer: markers first, shallowest first (expand.py applies them in tar order,
    forensics before the entries and by depth), entries parents first, no path twice, nothing
    below a non-directory."""
    markers = []
    for name in sorted(
        draw(st.lists(st.sampled_from(NAMES), max_size=2, unique=True)), key=lambda n: n.count("/")
    ):
        markers.append(draw(st.sampled_from([whiteout(name), opaque(name)])))
    entries: dict[str, images.Entry] = {}
    for name in sorted(draw(st.lists(st.sampled_from(NAMES), max_size=4, unique=True))):
        if any(name.startswith(p + "/") and e.kind != "dir" for p, e in entries.items()):
            continue
        kind = draw(st.sampled_from(["file", "dir", "dir", "symlink", "hardlink"]))
        if kind == "file":
            entries[name] = file(
                name,
                draw(st.sampled_from([b"", b"one", b"two" * 100])),
                mode=draw(st.sampled_from([0o644, 0o600])),
            )
        elif kind == "dir":
            entries[name] = directory(name, mode=draw(st.sampled_from([0o755, 0o700])))
        elif kind == "symlink":
            entries[name] = symlink(name, draw(st.sampled_from(SYMLINK_TARGETS)))
        else:
            entries[name] = hardlink(name, draw(st.sampled_from(NAMES)))
    return [*markers, *entries.values()]


def _flatten_with_treewriter(stored: Stored, root: Path) -> None:
    root.mkdir()
    writer = TreeWriter(root, keep_whiteouts=False)
    for ref in stored.refs:
        with stored.open_layer()(ref) as stream:
            apply_layer(stream, [writer])
    writer.finish()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(stack=st.lists(_layer(0), min_size=1, max_size=6))
def test_random_stacks_flatten_like_treewriter(
    tmp_path_factory: pytest.TempPathFactory, stack: list[list[images.Entry]]
) -> None:
    tmp = tmp_path_factory.mktemp("stack")
    stored = store(tmp, stack, compression="none")
    try:
        _flatten_with_treewriter(stored, tmp / "want")
    except UnsafeArchiveError:
        with pytest.raises(UnsafeArchiveError):
            export_rootfs(stored.refs, stored.open_layer(), io.BytesIO())
        with pytest.raises(UnsafeArchiveError):
            file_table(stored.refs, stored.open_layer())
        return
    archive = _export(stored, tmp)
    _check_stream_order(archive)
    got = _untar(archive, tmp / "got")
    assert tree(got) == tree(tmp / "want")
    assert hardlink_groups(got) == hardlink_groups(tmp / "want")
    final = file_table(stored.refs, stored.open_layer()).final()
    want = {p: (n.kind, n.mode) for p, n in tree(tmp / "want").items()}
    assert {p[1:]: (v.file_type, 0 if v.file_type == "symlink" else v.mode) for p, v in final.items()} == want
