"""Helpers shared by the forensics tests (no tests here): stored images, special and hostile
layers, and trees read back from disk with owners and hardlink groups."""

from __future__ import annotations

import contextlib
import io
import os
import random
import stat
import tarfile
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from occystrap.forensics.layers import LayerRef, OpenLayer, blob_paths, open_blob_file
from tests.support import images
from tests.support.images import BuiltImage, Entry, directory, file, hardlink, opaque, symlink, whiteout


@dataclass
class Stored:
    """An image's blobs on disk, opened the way forensics opens layers; counts the opens."""

    image: BuiltImage
    refs: list[LayerRef]
    blob_dir: Path
    opens: Counter[str] = field(default_factory=Counter)

    def open_layer(self) -> OpenLayer:
        inner = open_blob_file(blob_paths(self.blob_dir, self.refs))

        @contextlib.contextmanager
        def counted(ref: LayerRef) -> Iterator[BinaryIO]:
            self.opens[ref.diff_id] += 1
            with inner(ref) as stream:
                yield stream

        return counted


def store(
    tmp: Path,
    layers: Sequence[Sequence[Entry]] | Sequence[images.Layer] | BuiltImage,
    compression: images.Compression = "gzip",
    **image_args: object,
) -> Stored:
    image = (
        layers
        if isinstance(layers, BuiltImage)
        else images.build_image(layers, fmt="oci", compression=compression, **image_args)  # type: ignore[arg-type]
    )
    blob_dir = tmp / "blobs"
    blob_dir.mkdir(parents=True, exist_ok=True)
    for digest, data in image.blobs().items():
        (blob_dir / digest[7:]).write_bytes(data)
    refs = [LayerRef(i, layer.digest, layer.diff_id, layer.size) for i, layer in enumerate(image.layers)]
    return Stored(image, refs, blob_dir)


def rich_layers() -> list[list[Entry]]:
    """Adds, modifications, whiteouts, an opaque directory re-filled by its own layer, a file
    replaced by a directory and back, hardlinks within and across layers (one whose target a
    later layer overwrites), symlinks, owners and modes."""
    big = random.Random(7).randbytes(300 * 1024)
    layer0 = [
        directory("etc"),
        file("etc/a", b"a0\n"),
        file("etc/b", b"b0\n"),
        file("etc/keep", b"kept\n", mode=0o600),
        symlink("etc/link", "a"),
        directory("opt"),
        directory("opt/d"),
        file("opt/d/x", b"x0\n"),
        file("opt/d/y", b"y0\n"),
        file("swap", b"a file first\n"),
        directory("lib"),
        file("lib/libz", b"z0" * 5000, mode=0o755),
        hardlink("lib/libz.hl", "lib/libz"),
        directory("data"),
        file("data/big", big),
        directory("home"),
        directory("home/u", mode=0o700, uid=1000, gid=1000),
        file("home/u/f", b"private\n", mode=0o600, uid=1000, gid=1000),
    ]
    layer1 = [
        directory("etc"),
        file("etc/a", b"a1 modified\n"),
        whiteout("etc/b"),
        file("etc/c", b"c1\n"),
        directory("opt"),
        directory("opt/d"),
        file("opt/d/y", b"y1 re-added by the opaque layer\n"),
        opaque("opt/d"),  # after the re-added file: a layer's marker never hides its own entries
        directory("swap", mode=0o750),
        file("swap/inner", b"inside\n"),
        directory("lib"),
        hardlink("lib/cross", "lib/libz"),  # its target is in layer 0 only
    ]
    layer2 = [
        file("swap", b"a file again\n", mode=0o640),
        directory("lib"),
        file("lib/libz", b"z2 replaced\n", mode=0o755),  # the two links keep z0's bytes
        whiteout("etc/link"),
        directory("etc"),
        symlink("etc/b", "c"),
        hardlink("etc/a.hl", "etc/a"),
        file("data/big", big[:1000] + b"changed" + big[1007:]),
    ]
    return [layer0, layer1, layer2]


RICH_HARDLINK_GROUPS = [{"etc/a", "etc/a.hl"}, {"lib/cross", "lib/libz.hl"}]


def raw_layer(members: list[tuple[tarfile.TarInfo, bytes]]) -> images.Layer:
    """An uncompressed layer from hand-made tar members (devices, hostile names)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for info, data in members:
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data else None)
    raw = buf.getvalue()
    digest = images.sha256_digest(raw)
    return images.Layer(raw, digest, len(raw), digest, raw, "none", "oci", ())


def member(
    name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", link: str = "", mode: int = 0o644
) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.mode = 0o755 if kind == tarfile.DIRTYPE else mode
    info.mtime = images.FIXED_EPOCH
    return info, data


def special_layer() -> images.Layer:
    """A char device, a block device and a fifo."""
    out = []
    for name, kind, dev in (
        ("dev/null", tarfile.CHRTYPE, (1, 3)),
        ("dev/loop9", tarfile.BLKTYPE, (7, 9)),
        ("run/fifo", tarfile.FIFOTYPE, (0, 0)),
    ):
        info, data = member(name, kind, mode=0o620)
        info.devmajor, info.devminor = dev
        info.uid, info.gid = 0, 6
        out.append((info, data))
    return raw_layer([member("dev", tarfile.DIRTYPE), member("run", tarfile.DIRTYPE), *out])


# Each case: layers of (name, type, payload); payload is the data or the link target.
HOSTILE: dict[str, list[list[tuple[str, bytes, bytes | str]]]] = {
    "dotdot": [[("../escaped", tarfile.REGTYPE, b"x")]],
    "absolute": [[("/abs-escaped", tarfile.REGTYPE, b"x")]],
    "symlink-out": [[("out", tarfile.SYMTYPE, "../../../../../tmp")]],
    "through-symlink": [[("planted", tarfile.SYMTYPE, "/tmp")], [("planted/escaped", tarfile.REGTYPE, b"x")]],
    "through-symlink-then-deleted": [
        [("planted", tarfile.SYMTYPE, "/tmp")],
        [("planted/escaped", tarfile.REGTYPE, b"x")],
        [(".wh.planted", tarfile.REGTYPE, b"")],
    ],
    "same-layer-through-symlink": [
        [("planted", tarfile.SYMTYPE, "/tmp"), ("planted/x", tarfile.REGTYPE, b"x")]
    ],
    "whiteout-through-symlink": [
        [("planted", tarfile.SYMTYPE, "/etc")],
        [("planted/.wh.passwd", tarfile.REGTYPE, b"")],
    ],
    "hardlink-out": [[("hl", tarfile.LNKTYPE, "../../../../etc/passwd")]],
    "hardlink-missing": [[("hl", tarfile.LNKTYPE, "nowhere")]],
    "hardlink-to-dir": [[("d", tarfile.DIRTYPE, b""), ("hl", tarfile.LNKTYPE, "d")]],
    "hardlink-to-deleted": [
        [("t", tarfile.REGTYPE, b"t")],
        [(".wh.t", tarfile.REGTYPE, b"")],
        [("hl", tarfile.LNKTYPE, "t")],
    ],
    "whiteout-escape": [[("a", tarfile.DIRTYPE, b"")], [("a/.wh...", tarfile.REGTYPE, b"")]],
}


def hostile_layers(case: str) -> list[images.Layer]:
    built = []
    for spec in HOSTILE[case]:
        members = []
        for name, kind, payload in spec:
            if isinstance(payload, str):
                members.append(member(name, kind, link=payload))
            else:
                members.append(member(name, kind, payload))
        built.append(raw_layer(members))
    return built


# -- trees on disk ------------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    kind: str
    mode: int
    uid: int
    gid: int
    size: int
    content: bytes | str  # file bytes, symlink target, device numbers
    nlink: int


def tree(root: Path) -> dict[str, Node]:
    """Everything below root: type, permission bits, owner, size, content or link target."""
    out: dict[str, Node] = {}
    for sub, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(sub) / name
            st = os.lstat(path)
            mode = stat.S_IMODE(st.st_mode)
            content: bytes | str = b""
            if stat.S_ISLNK(st.st_mode):
                kind, content, mode = "symlink", os.readlink(path), 0
            elif stat.S_ISDIR(st.st_mode):
                kind = "dir"
            elif stat.S_ISREG(st.st_mode):
                kind, content = "file", path.read_bytes()
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                kind = "char" if stat.S_ISCHR(st.st_mode) else "block"
                content = f"{os.major(st.st_rdev)},{os.minor(st.st_rdev)}"
            else:
                kind = "fifo"
            size = st.st_size if kind == "file" else 0
            nlink = st.st_nlink if kind == "file" else 1
            out[str(path.relative_to(root))] = Node(kind, mode, st.st_uid, st.st_gid, size, content, nlink)
    return out


def hardlink_groups(root: Path) -> list[set[str]]:
    by_inode: dict[int, set[str]] = {}
    for sub, _dirs, files in os.walk(root):
        for name in files:
            path = Path(sub) / name
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                by_inode.setdefault(st.st_ino, set()).add(str(path.relative_to(root)))
    return sorted(by_inode.values(), key=sorted)


def expected_tree(layers: Sequence[Sequence[Entry]]) -> dict[str, tuple[str, int, int, int, bytes | str]]:
    """The reference model: path -> (kind, mode, uid, gid, content or target); hardlinks are files."""
    out: dict[str, tuple[str, int, int, int, bytes | str]] = {}
    for path, e in images.merge_layers(layers).items():
        if e.kind == "symlink":
            out[path] = ("symlink", 0, e.uid, e.gid, e.target)
        elif e.kind == "dir":
            out[path] = ("dir", e.mode, e.uid, e.gid, b"")
        else:
            out[path] = ("file", e.mode, e.uid, e.gid, e.content)
    return out


def comparable(nodes: dict[str, Node]) -> dict[str, tuple[str, int, int, int, bytes | str]]:
    return {p: (n.kind, n.mode, n.uid, n.gid, n.content) for p, n in nodes.items()}


# -- a runnable image -------------------------------------------------------------------------

HELLO = b"hello from a flattened image\n"
PASSWD = b"root:x:0:0:root:/root:/bin/sh\napp:x:1234:2345:app user:/home/app:/bin/sh\n"
GROUP = b"root:x:0:\ngrp:x:2345:\nextra:x:3456:app\n"


def static_busybox() -> bytes:
    """Debian's busybox-static: runs in an image with nothing else in it."""
    import pytest

    from tests.conftest import require_tool
    from tests.support.runnable import NoStaticBusybox, host_busybox

    require_tool("busybox")
    try:
        return host_busybox()
    except NoStaticBusybox as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(str(exc))
        pytest.skip(str(exc))


def runnable_layers(busybox: bytes) -> list[list[Entry]]:
    """/bin/busybox with its applets as symlinks, a named user, a known file, and a second
    layer that deletes a secret and replaces a file."""
    applets = ["sh", "cat", "id", "ls", "test", "echo", "stat"]
    layer0 = [
        directory("bin"),
        file("bin/busybox", busybox, mode=0o755),
        *(symlink(f"bin/{name}", "busybox") for name in applets),
        directory("etc"),
        file("etc/passwd", PASSWD),
        file("etc/group", GROUP),
        directory("home"),
        directory("home/app", mode=0o750, uid=1234, gid=2345),
        directory("data"),
        file("data/hello.txt", b"stale\n"),
        file("data/secret", b"do not ship\n", mode=0o600),
        directory("tmp", mode=0o1777),
    ]
    layer1 = [directory("data"), file("data/hello.txt", HELLO), whiteout("data/secret")]
    return [layer0, layer1]
