"""Deterministic container image generator for tests (pure Python).

Everything here is byte-for-byte reproducible: the same spec always yields the
same layer blobs, config, manifest and therefore the same digests.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import random
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import zstandard

Compression = Literal["gzip", "zstd", "none"]
Format = Literal["docker", "oci"]
EntryKind = Literal["file", "dir", "symlink", "hardlink"]

# Media types.
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"

# 2020-01-02T03:04:05Z: fixed so configs are reproducible.
FIXED_EPOCH = 1577934245
FIXED_CREATED = "2020-01-02T03:04:05Z"

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------
# Layer entries
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One tar member. Paths are relative, '/'-separated, without leading './'."""

    kind: EntryKind
    path: str
    content: bytes = b""
    mode: int = 0o644
    mtime: int = FIXED_EPOCH
    uid: int = 0
    gid: int = 0
    target: str = ""  # symlink target or hardlink target path

    @classmethod
    def file(
        cls,
        path: str,
        content: bytes = b"",
        mode: int = 0o644,
        mtime: int = FIXED_EPOCH,
        uid: int = 0,
        gid: int = 0,
    ) -> Entry:
        return cls("file", path, content, mode, mtime, uid, gid)

    @classmethod
    def dir(
        cls,
        path: str,
        mode: int = 0o755,
        mtime: int = FIXED_EPOCH,
        uid: int = 0,
        gid: int = 0,
    ) -> Entry:
        return cls("dir", path, b"", mode, mtime, uid, gid)

    @classmethod
    def symlink(cls, path: str, target: str, mtime: int = FIXED_EPOCH) -> Entry:
        return cls("symlink", path, b"", 0o777, mtime, target=target)

    @classmethod
    def hardlink(cls, path: str, target: str, mtime: int = FIXED_EPOCH) -> Entry:
        return cls("hardlink", path, b"", 0o644, mtime, target=target)

    @property
    def is_whiteout(self) -> bool:
        return Path(self.path).name.startswith(WHITEOUT_PREFIX)

    @property
    def is_opaque(self) -> bool:
        return Path(self.path).name == OPAQUE_MARKER


# Module-level shorthands.
file = Entry.file
directory = Entry.dir
symlink = Entry.symlink
hardlink = Entry.hardlink


def whiteout(path: str) -> Entry:
    """Delete `path` (and everything below it) from lower layers."""
    parent, _, name = path.rstrip("/").rpartition("/")
    wh = f"{WHITEOUT_PREFIX}{name}"
    return Entry.file(f"{parent}/{wh}" if parent else wh, b"", mode=0o600)


def opaque(dir_path: str) -> Entry:
    """Hide all lower-layer content of `dir_path` (the dir itself stays)."""
    return Entry.file(f"{dir_path.rstrip('/')}/{OPAQUE_MARKER}", b"", mode=0o600)


# --------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Layer:
    data: bytes  # the blob exactly as the registry serves it
    digest: str
    size: int
    diff_id: str  # sha256 of the uncompressed tar
    tar: bytes  # the uncompressed tar
    compression: Compression
    fmt: Format
    entries: tuple[Entry, ...] = ()

    @property
    def media_type(self) -> str:
        return layer_media_type(self.fmt, self.compression)

    def descriptor(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "size": self.size, "digest": self.digest}


def layer_media_type(fmt: Format, compression: Compression) -> str:
    if fmt == "docker":
        if compression == "gzip":
            return DOCKER_LAYER_GZIP
        if compression == "none":
            return DOCKER_LAYER_TAR
        raise ValueError("zstd layers need the OCI format")
    return {"gzip": OCI_LAYER_GZIP, "zstd": OCI_LAYER_ZSTD, "none": OCI_LAYER_TAR}[compression]


def _tarinfo(entry: Entry, prefix: str) -> tarfile.TarInfo:
    name = prefix + entry.path
    ti = tarfile.TarInfo(name + "/" if entry.kind == "dir" else name)
    ti.mode = entry.mode
    ti.mtime = entry.mtime
    ti.uid, ti.gid = entry.uid, entry.gid
    ti.uname = ti.gname = ""  # keep the tar independent of the build host
    if entry.kind == "file":
        ti.type = tarfile.REGTYPE
        ti.size = len(entry.content)
    elif entry.kind == "dir":
        ti.type = tarfile.DIRTYPE
    elif entry.kind == "symlink":
        ti.type = tarfile.SYMTYPE
        ti.linkname = entry.target
    elif entry.kind == "hardlink":
        ti.type = tarfile.LNKTYPE
        ti.linkname = prefix + entry.target
    return ti


def make_tar(entries: Sequence[Entry], prefix: str = "") -> bytes:
    """Uncompressed tar of `entries`, in the given order. `prefix` e.g. "./"."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for entry in entries:
            ti = _tarinfo(entry, prefix)
            tf.addfile(ti, io.BytesIO(entry.content) if entry.kind == "file" else None)
    return buf.getvalue()


def compress(data: bytes, compression: Compression) -> bytes:
    if compression == "gzip":
        return gzip.compress(data, compresslevel=6, mtime=0)  # mtime=0: reproducible header
    if compression == "zstd":
        return zstandard.ZstdCompressor(level=3).compress(data)
    return data


def build_layer(
    entries: Sequence[Entry],
    compression: Compression = "gzip",
    fmt: Format = "docker",
    prefix: str = "",
) -> Layer:
    layer_media_type(fmt, compression)  # validates the combination
    tar = make_tar(entries, prefix)
    data = compress(tar, compression)
    return Layer(
        data=data,
        digest=sha256_digest(data),
        size=len(data),
        diff_id=sha256_digest(tar),
        tar=tar,
        compression=compression,
        fmt=fmt,
        entries=tuple(entries),
    )


# --------------------------------------------------------------------------
# Images and indexes
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class BuiltImage:
    manifest: bytes
    manifest_media_type: str
    manifest_digest: str
    config: bytes
    config_digest: str
    config_media_type: str
    layers: list[Layer]
    fmt: Format
    os: str
    architecture: str
    variant: str | None = None

    @property
    def diff_ids(self) -> list[str]:
        return [layer.diff_id for layer in self.layers]

    @property
    def image_id(self) -> str:
        """What docker/podman call the image ID: the config digest."""
        return self.config_digest

    def blobs(self) -> dict[str, bytes]:
        out = {self.config_digest: self.config}
        for layer in self.layers:
            out[layer.digest] = layer.data
        return out

    def platform(self) -> dict[str, str]:
        p = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            p["variant"] = self.variant
        return p


@dataclass(frozen=True)
class BuiltIndex:
    data: bytes
    media_type: str
    digest: str
    images: list[BuiltImage] = field(default_factory=list)
    fmt: Format = "oci"


def _config_bytes(
    layers: Sequence[Layer],
    os: str,
    arch: str,
    variant: str | None,
    created: str,
    extra_config: dict[str, Any] | None,
) -> bytes:
    history: list[dict[str, Any]] = [
        {"created": created, "created_by": f"/bin/sh -c #(nop) ADD layer{i}.tar /"}
        for i in range(len(layers))
    ]
    # An empty_layer entry, as real builders emit for CMD/ENV: history and
    # diff_ids then differ in length, which consumers must cope with.
    history.append(
        {"created": created, "created_by": '/bin/sh -c #(nop)  CMD ["/bin/sh"]', "empty_layer": True}
    )
    cfg: dict[str, Any] = {
        "architecture": arch,
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/bin/sh"],
        },
        "created": created,
        "history": history,
        "os": os,
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
    }
    if variant:
        cfg["variant"] = variant
    if extra_config:
        cfg.update(extra_config)  # shallow: top-level keys replace
    return json.dumps(cfg, sort_keys=True, separators=(",", ":")).encode()


def build_image(
    layers: Sequence[Sequence[Entry]] | Sequence[Layer],
    fmt: Format = "docker",
    compression: Compression = "gzip",
    os: str = "linux",
    arch: str = "amd64",
    variant: str | None = None,
    created: str = FIXED_CREATED,
    extra_config: dict[str, Any] | None = None,
) -> BuiltImage:
    """Build an image from entry lists (compressed with `compression`) or prebuilt Layers.

    Prebuilt layers keep their own compression; their media type follows `fmt`.
    """
    built: list[Layer] = []
    for spec in layers:
        if isinstance(spec, Layer):
            built.append(spec if spec.fmt == fmt else dataclasses.replace(spec, fmt=fmt))
            layer_media_type(fmt, spec.compression)
        else:
            built.append(build_layer(list(spec), compression, fmt))

    config = _config_bytes(built, os, arch, variant, created, extra_config)
    config_digest = sha256_digest(config)
    if fmt == "docker":
        manifest_mt, config_mt = DOCKER_MANIFEST, DOCKER_CONFIG
        doc: dict[str, Any] = {"schemaVersion": 2, "mediaType": manifest_mt}
        indent = 3  # what docker itself emits; exercises "keep exact bytes"
    else:
        manifest_mt, config_mt = OCI_MANIFEST, OCI_CONFIG
        doc = {"schemaVersion": 2, "mediaType": manifest_mt}
        indent = 2
    doc["config"] = {"mediaType": config_mt, "size": len(config), "digest": config_digest}
    doc["layers"] = [layer.descriptor() for layer in built]
    manifest = json.dumps(doc, indent=indent).encode()
    return BuiltImage(
        manifest=manifest,
        manifest_media_type=manifest_mt,
        manifest_digest=sha256_digest(manifest),
        config=config,
        config_digest=config_digest,
        config_media_type=config_mt,
        layers=built,
        fmt=fmt,
        os=os,
        architecture=arch,
        variant=variant,
    )


def build_index(images: Sequence[BuiltImage], fmt: Format = "oci") -> BuiltIndex:
    media_type = DOCKER_MANIFEST_LIST if fmt == "docker" else OCI_INDEX
    doc = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": [
            {
                "mediaType": img.manifest_media_type,
                "size": len(img.manifest),
                "digest": img.manifest_digest,
                "platform": img.platform(),
            }
            for img in images
        ],
    }
    data = json.dumps(doc, indent=2).encode()
    return BuiltIndex(
        data=data, media_type=media_type, digest=sha256_digest(data), images=list(images), fmt=fmt
    )


# --------------------------------------------------------------------------
# Writers for reference tooling (umoci, skopeo oci:, podman load)
# --------------------------------------------------------------------------


def write_oci_layout(dest: Path, image: BuiltImage | BuiltIndex, ref_name: str = "latest") -> Path:
    """Write an OCI image layout directory (usable as `oci:DEST:REF_NAME`)."""
    blobs_dir = dest / "blobs" / "sha256"
    blobs_dir.mkdir(parents=True, exist_ok=True)
    images = image.images if isinstance(image, BuiltIndex) else [image]
    for img in images:
        for digest, data in {**img.blobs(), img.manifest_digest: img.manifest}.items():
            (blobs_dir / digest.split(":", 1)[1]).write_bytes(data)
    if isinstance(image, BuiltIndex):
        (blobs_dir / image.digest.split(":", 1)[1]).write_bytes(image.data)
        top = {"mediaType": image.media_type, "digest": image.digest, "size": len(image.data)}
    else:
        top = {
            "mediaType": image.manifest_media_type,
            "digest": image.manifest_digest,
            "size": len(image.manifest),
        }
    top["annotations"] = {"org.opencontainers.image.ref.name": ref_name}
    (dest / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (dest / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [top]}))
    return dest


def _add_bytes(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    ti = tarfile.TarInfo(name)
    ti.size, ti.mtime, ti.mode = len(data), FIXED_EPOCH, 0o644
    tf.addfile(ti, io.BytesIO(data))


def write_docker_archive(dest: Path, image: BuiltImage, repo_tags: Sequence[str] = ()) -> Path:
    """Write a `docker save`-style tarball (uncompressed layers, legacy layout)."""
    cfg_name = image.config_digest.split(":", 1)[1] + ".json"
    layer_names = [layer.diff_id.split(":", 1)[1] + "/layer.tar" for layer in image.layers]
    manifest = [{"Config": cfg_name, "RepoTags": list(repo_tags), "Layers": layer_names}]
    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tf:
        _add_bytes(tf, cfg_name, image.config)
        for name, layer in zip(layer_names, image.layers, strict=True):
            _add_bytes(tf, name, layer.tar)
        _add_bytes(tf, "manifest.json", json.dumps(manifest).encode())
    return dest


def write_oci_archive(dest: Path, image: BuiltImage | BuiltIndex, ref_name: str = "latest") -> Path:
    """Write an OCI layout as a tarball (usable as `oci-archive:DEST`)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        layout = write_oci_layout(Path(tmp), image, ref_name)
        with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tf:
            for p in sorted(layout.rglob("*")):
                if p.is_file():
                    _add_bytes(tf, p.relative_to(layout).as_posix(), p.read_bytes())
    return dest


# --------------------------------------------------------------------------
# Reference model of the merged filesystem
# --------------------------------------------------------------------------


def _under(path: str, root: str) -> bool:
    # Component-wise prefix: "usr/share/locale/de" must not match ".../de_CH".
    return path == root or path.startswith(root + "/")


def merge_layers(layers: Sequence[Sequence[Entry]]) -> dict[str, Entry]:
    """Expected final filesystem (path -> Entry) after applying layers in order.

    Whiteouts and opaque markers in a layer affect only lower layers. Hardlink
    entries keep kind "hardlink" and `target`, but take the target's content,
    mode and owner as they are when the link is applied.
    """
    fs: dict[str, Entry] = {}
    for entries in layers:
        for e in entries:
            parent = e.path.rpartition("/")[0]
            if e.is_opaque:
                for p in [p for p in fs if not parent or p.startswith(parent + "/")]:
                    del fs[p]
            elif e.is_whiteout:
                name = e.path.rpartition("/")[2][len(WHITEOUT_PREFIX) :]
                victim = f"{parent}/{name}" if parent else name
                for p in [p for p in fs if _under(p, victim)]:
                    del fs[p]
        for e in entries:
            if e.is_whiteout:
                continue
            old = fs.get(e.path)
            if old is not None and old.kind == "dir" and e.kind != "dir":
                for p in [p for p in fs if p.startswith(e.path + "/")]:
                    del fs[p]
            if e.kind == "hardlink":
                t = fs.get(e.target)
                if t is not None:
                    e = dataclasses.replace(e, content=t.content, mode=t.mode, uid=t.uid, gid=t.gid)
            fs[e.path] = e
    return dict(sorted(fs.items()))


# --------------------------------------------------------------------------
# Sample image
# --------------------------------------------------------------------------


def _text(lines: int, word: str) -> bytes:
    return "".join(
        f"{word} line {i}: the quick brown fox jumps over the lazy dog\n" for i in range(lines)
    ).encode()


def _random_bytes(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def _cross_layer_hardlink(bare: bool) -> list[Entry]:
    if bare:
        # Link target exists only in layer 1. Valid tar, but overlay-based
        # extractors (podman/containers-storage, dockerd) fail on it.
        return [hardlink("usr/bin/busybox-hl", "bin/busybox")]
    # What overlayfs copy-up really produces when a build links to a lower
    # file: the target is copied up (same content) and linked in this layer.
    return [
        directory("bin"),
        file("bin/busybox", _random_bytes(1, 200 * 1024), mode=0o755),
        hardlink("usr/bin/busybox-hl", "bin/busybox"),
    ]


def sample_layers(cross_layer_hardlink: bool = False) -> list[list[Entry]]:
    """A realistic 3-layer spec exercising whiteouts, opaque dirs and links.

    Layer 3 hardlinks `usr/bin/busybox-hl` to layer 1's `bin/busybox`. By default
    the target is re-shipped in layer 3 (as overlayfs copy-up does) so podman can
    load the layered image; `cross_layer_hardlink=True` omits it (the link then
    points into a lower layer only: flatteners must cope, podman overlay can't).
    """
    layer1 = [
        directory("bin"),
        directory("etc"),
        directory("opt"),
        directory("opt/app"),
        directory("usr"),
        directory("usr/lib"),
        directory("usr/lib64"),
        directory("usr/share"),
        directory("usr/share/locale"),
        directory("usr/share/locale/de"),
        directory("usr/share/locale/de_CH"),
        directory("home"),
        directory("home/user", mode=0o700, uid=1000, gid=1000),
        file("bin/busybox", _random_bytes(1, 200 * 1024), mode=0o755),
        symlink("bin/sh", "busybox"),
        hardlink("bin/ls", "bin/busybox"),
        file("etc/motd", b"Welcome to the layer-1 image\n"),
        file("etc/hostname", b"layer1\n"),
        file("etc/services", _text(400, "svc")),
        file("etc/empty", b""),
        file("usr/lib/libfoo.so.1", _random_bytes(2, 64 * 1024), mode=0o755),
        file("usr/lib/README", _text(20, "lib")),
        file("usr/lib64/libbar.so", _random_bytes(3, 32 * 1024), mode=0o755),
        file("usr/share/locale/de/x", b"de\n"),
        file("usr/share/locale/de_CH/x", b"de_CH\n"),
        file("opt/app/config.yml", b"key: value\n"),
        file("home/user/.profile", b"export A=1\n", mode=0o600, uid=1000, gid=1000),
    ]
    layer2 = [
        directory("etc"),
        file("etc/hostname", b"layer2\n"),  # modify
        file("etc/new.conf", _text(50, "new")),  # add
        whiteout("etc/motd"),  # delete a file
        whiteout("opt/app"),  # delete a whole dir
        directory("usr"),
        directory("usr/lib"),
        opaque("usr/lib"),  # hide libfoo.so.1 and README
        file("usr/lib/libnew.so.2", _random_bytes(4, 48 * 1024), mode=0o755),
        directory("usr/share"),
        directory("usr/share/locale"),
        whiteout("usr/share/locale/de"),  # de_CH must survive
    ]
    layer3 = [
        directory("etc"),
        file("etc/motd", b"motd is back in layer 3\n"),  # re-add deleted path
        directory("opt"),
        directory("opt/app"),
        file("opt/app/config.yml", b"key: layer3\n"),  # re-add deleted dir
        directory("usr"),
        directory("usr/bin"),
        symlink("usr/bin/a", "b"),  # chain a -> b -> c -> busybox
        symlink("usr/bin/b", "c"),
        symlink("usr/bin/c", "../../bin/busybox"),
        symlink("usr/bin/abs", "/bin/busybox"),
        *_cross_layer_hardlink(cross_layer_hardlink),
        directory("srv"),
        directory("srv/ro", mode=0o555),  # read-only dir with content
        file("srv/ro/data.txt", b"read-only dir content\n", mode=0o444),
    ]
    return [layer1, layer2, layer3]


def build_sample_image(
    fmt: Format = "docker", compression: Compression = "gzip", **kwargs: Any
) -> BuiltImage:
    """`build_image(sample_layers(), ...)`; kwargs as for build_image (arch, variant, ...)."""
    return build_image(sample_layers(), fmt=fmt, compression=compression, **kwargs)


def build_runnable_image(
    fmt: Format = "docker", compression: Compression = "gzip", **kwargs: Any
) -> BuiltImage:
    """An image that runs (static busybox, user `app`, /etc/motd): see tests/support/runnable.py,
    which holds it to keep this module about image structure rather than host binaries."""
    from tests.support.runnable import build_runnable_image as build  # it imports this module

    return build(fmt=fmt, compression=compression, **kwargs)


__all__ = [
    "BuiltImage",
    "BuiltIndex",
    "Compression",
    "Entry",
    "Format",
    "Layer",
    "build_image",
    "build_index",
    "build_layer",
    "build_runnable_image",
    "build_sample_image",
    "directory",
    "file",
    "hardlink",
    "make_tar",
    "merge_layers",
    "opaque",
    "sample_layers",
    "sha256_digest",
    "symlink",
    "whiteout",
    "write_docker_archive",
    "write_oci_archive",
    "write_oci_layout",
]
