"""Images out of a `docker save` tarball: the classic `<id>/layer.tar` form and Docker 25's OCI form.

The tarball is indexed once (headers only); layers are then streamed member by member,
never read whole into memory, and verified as they are copied.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from occystrap import layout, reference
from occystrap.errors import ManifestError, NotFoundError, OccystrapError
from occystrap.model import (
    DOCKER_CONFIG,
    DOCKER_LAYER_GZIP,
    DOCKER_MANIFEST,
    MAX_MANIFEST_BYTES,
    OCI_LAYER_ZSTD,
    Descriptor,
    Image,
    Layer,
    Platform,
    build_image,
    load_json,
    parse_index,
    sha256_digest,
)
from occystrap.reference import Reference
from occystrap.sinks.base import BlobBusy, BlobTarget, Sink
from occystrap.verify import GZIP_MAGIC, ZSTD_MAGIC, BlobCheck

CHUNK = 1024 * 1024


@dataclass(frozen=True)
class _Found:
    image: Image
    members: dict[str, str]  # layer digest -> member name


class TarballSource:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._tf = tarfile.open(path, "r:*")  # noqa: SIM115 - closed by close()
            self._members = {_norm(m.name): m for m in self._tf.getmembers() if m.isfile()}
        except FileNotFoundError:
            raise NotFoundError(f"{path} does not exist") from None
        except (tarfile.TarError, OSError) as exc:
            raise ManifestError(f"{path} is not a readable tarball: {exc}") from None

    def close(self) -> None:
        self._tf.close()

    def _open(self, name: str) -> IO[bytes]:
        member = self._members.get(_norm(name))
        fh = self._tf.extractfile(member) if member is not None else None
        if fh is None:
            raise ManifestError(f"{self.path} names {name!r}, which it does not contain")
        return fh

    def _small(self, name: str) -> bytes:
        member = self._members.get(_norm(name))
        if member is not None and member.size > MAX_MANIFEST_BYTES:
            raise ManifestError(f"{name} in {self.path} is too large for a manifest or config")
        with self._open(name) as fh:
            return fh.read()

    def images(self) -> list[_Found]:
        if "index.json" in self._members:
            found = list(self._from_index())
            if found:
                return found
        if "manifest.json" not in self._members:
            raise ManifestError(
                f"{self.path} has neither index.json nor manifest.json: not a docker-save tarball"
            )
        return list(self._from_manifest_json())

    def _from_index(self) -> Iterator[_Found]:
        tags_by_config = self._repo_tags()
        for entry in parse_index(self._small("index.json"), f"{self.path}:index.json"):
            manifest = self._small(layout.blob_path(entry.digest))
            if sha256_digest(manifest) != entry.digest:
                raise ManifestError(f"{self.path}: manifest {entry.digest} does not match its digest")
            descriptor = Descriptor(entry.media_type or DOCKER_MANIFEST, entry.digest, len(manifest))
            config_desc = Descriptor.from_json(load_json(manifest, entry.digest).get("config"), entry.digest)
            config = self._small(layout.blob_path(config_desc.digest))
            annotations = dict(entry.annotations)
            names = [annotations.get(layout.REF_NAME, ""), annotations.get(layout.CONTAINERD_NAME, "")]
            refs = [r for r in (_try_parse(n) for n in names) if r is not None][:1]
            refs = refs or [r for r in map(_try_parse, tags_by_config.get(config_desc.digest, [])) if r]
            for ref in refs or [_untagged(config_desc.digest)]:
                image = build_image(ref, descriptor, manifest, config, _platform(config))
                yield _Found(
                    image, {l.descriptor.digest: layout.blob_path(l.descriptor.digest) for l in image.layers}
                )

    def _repo_tags(self) -> dict[str, list[str]]:
        if "manifest.json" not in self._members:
            return {}
        out: dict[str, list[str]] = {}
        for entry in self._manifest_entries():
            config = entry["Config"]
            digest = "sha256:" + Path(config).name.removesuffix(".json")
            out[digest] = list(entry.get("RepoTags") or [])
        return out

    def _manifest_entries(self) -> list[dict[str, Any]]:
        doc = load_json(self._small("manifest.json"), f"{self.path}:manifest.json")
        if not isinstance(doc, list) or not all(
            isinstance(e, dict) and isinstance(e.get("Config"), str) and isinstance(e.get("Layers"), list)
            for e in doc
        ):
            raise ManifestError(f"{self.path}: malformed manifest.json")
        return doc

    def _from_manifest_json(self) -> Iterator[_Found]:
        """Classic docker save: no registry manifest exists, so one is made up from the files."""
        for entry in self._manifest_entries():
            config = self._small(entry["Config"])
            layers: list[dict[str, Any]] = []
            members: dict[str, str] = {}
            for name in entry["Layers"]:
                digest, size, media = self._describe_layer(name)
                layers.append({"mediaType": media, "size": size, "digest": digest})
                members[digest] = name
            doc = {
                "schemaVersion": 2,
                "mediaType": DOCKER_MANIFEST,
                "config": {"mediaType": DOCKER_CONFIG, "size": len(config), "digest": sha256_digest(config)},
                "layers": layers,
            }
            manifest = json.dumps(doc, indent=3).encode()
            descriptor = Descriptor(DOCKER_MANIFEST, sha256_digest(manifest), len(manifest))
            refs = [r for r in map(_try_parse, entry.get("RepoTags") or []) if r]
            for ref in refs or [_untagged(sha256_digest(config))]:
                yield _Found(build_image(ref, descriptor, manifest, config, _platform(config)), members)

    def _describe_layer(self, name: str) -> tuple[str, int, str]:
        member = self._members.get(_norm(name))
        if member is None:
            raise ManifestError(f"{self.path} names layer {name!r}, which it does not contain")
        with self._open(name) as fh:
            head = fh.read(4)
            media = (
                DOCKER_LAYER_GZIP
                if head.startswith(GZIP_MAGIC)
                else OCI_LAYER_ZSTD
                if head.startswith(ZSTD_MAGIC)
                else layout.DOCKER_LAYER_TAR
            )
            fh.seek(0)
            digest = hashlib.sha256()
            while chunk := fh.read(CHUNK):
                digest.update(chunk)
        return "sha256:" + digest.hexdigest(), member.size, media

    def copy_layers(self, found: list[_Found], sink: Sink, progress: Callable[[str, int], None]) -> None:
        done: set[str] = set()
        for f in found:
            for layer in f.image.layers:
                digest = layer.descriptor.digest
                if digest in done or sink.has_layer(layer):
                    done.add(digest)
                    continue
                target = _open_waiting(sink, layer)
                if target is None:
                    done.add(digest)
                    continue
                target.restart()
                check = BlobCheck(
                    digest,
                    layer.descriptor.size,
                    layer.diff_id,
                    target.write_raw if target.wants_raw else None,
                    target.write_plain if target.wants_plain else None,
                )
                try:
                    with self._open(f.members[digest]) as fh:
                        while chunk := fh.read(CHUNK):
                            check.feed(chunk)
                    check.finish()
                    target.commit(check.plain_size)
                except BaseException:
                    target.abort(keep=False)
                    raise
                done.add(digest)
                progress(digest, layer.descriptor.size)


def _open_waiting(sink: Sink, layer: Layer) -> BlobTarget | None:
    while True:
        try:
            return sink.open_layer(layer)
        except BlobBusy:
            time.sleep(0.2)  # another process is writing this blob into the same directory


def _norm(name: str) -> str:
    return "/".join(p for p in name.split("/") if p not in ("", "."))


def _try_parse(name: str) -> Reference | None:
    if not name or ":" not in name.rpartition("/")[2]:
        return None
    try:
        return reference.parse(name)
    except OccystrapError:
        return None


def _untagged(config_digest: str) -> Reference:
    return reference.parse(f"untagged/{config_digest[7:19]}", "latest")


def _platform(config: bytes) -> Platform | None:
    try:
        doc = json.loads(config)
        return Platform(doc["os"], doc["architecture"], doc.get("variant") or None)
    except (ValueError, KeyError, TypeError):
        return None
