"""What a layout serves: repositories, their tags, and every manifest and blob by digest.

Built once at start-up from a LayoutReader; requests then only look things up in it.
Manifests (small, and read whole by every pull) are kept in memory with their exact
bytes; a blob is kept as the file and offset that hold it (its own file in a directory,
its member's data in a tarball), so a request never names a path itself.

A repository holds what its tags point at, everything an index lists (nested indexes
too), and the config and layers of each of those manifests: a pull of an index child
by digest works in the repository that holds the index, as it does in a registry.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from occystrap import reference
from occystrap.digest import Digest
from occystrap.errors import OccystrapError, UsageError
from occystrap.layout.reader import LayoutReader
from occystrap.layout.store import TarStore
from occystrap.mediatypes import INDEX_TYPES
from occystrap.model import load_json, media_type_of, parse_index, parse_manifest
from occystrap.reference import DOCKER_HUB
from occystrap.serve.names import TAG, RequestError

# Content addressing rules out cycles; this bounds a hostile layout's depth all the same.
MAX_DEPTH = 16
_COMPRESSED = {
    b"\x1f\x8b": "gzip",
    b"\x28\xb5\x2f\xfd": "zstd",
    b"BZh": "bzip2",
    b"\xfd7zXZ\x00": "xz",
}


@dataclass(frozen=True)
class Manifest:
    media_type: str  # the manifest's own, as Content-Type
    data: bytes


@dataclass(frozen=True)
class Blob:
    size: int
    file: str  # the file holding it; "" when it is held in memory
    offset: int = 0  # where its bytes start in that file
    data: bytes | None = None  # a classic docker save's config, made a blob by the reader


@dataclass
class Repository:
    name: str  # the canonical name: origin registry (when known) and repository
    path: str  # the repository alone, as its origin registry named it
    tags: dict[str, Digest] = field(default_factory=dict)
    manifests: set[Digest] = field(default_factory=set)
    blobs: set[Digest] = field(default_factory=set)


@dataclass
class Content:
    source: Path
    repositories: dict[str, Repository] = field(default_factory=dict)
    aliases: dict[str, set[str]] = field(default_factory=dict)  # a name a client may use -> canonical
    manifests: dict[Digest, Manifest] = field(default_factory=dict)
    blobs: dict[Digest, Blob] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # what could not be served, and why

    def repository(self, name: str) -> Repository:
        held = self.aliases.get(name)
        if not held:
            raise RequestError(404, "NAME_UNKNOWN", f"repository {name} is not served here")
        if len(held) > 1:
            raise RequestError(
                404, "NAME_UNKNOWN", f"{name} is ambiguous here; name one of: {', '.join(sorted(held))}"
            )
        return self.repositories[next(iter(held))]

    def listed_name(self, repo: Repository) -> str:
        """The name _catalog shows: the repository path alone unless another origin holds it too."""
        return repo.path if len(self.aliases.get(repo.path, ())) == 1 else repo.name

    def catalog(self) -> list[str]:
        return sorted(self.listed_name(r) for r in self.repositories.values())


def aliases_of(registry: str, repository: str) -> list[str]:
    """Every name that reaches one stored repository: its path, its path with the origin
    registry before it, and for Docker Hub's official images the familiar name too."""
    if not registry:
        return [repository]
    out = [repository, f"{registry}/{repository}"]
    if registry == DOCKER_HUB and repository.startswith("library/") and repository.count("/") == 1:
        out.append(repository.removeprefix("library/"))
    return out


def check_uncompressed(path: Path) -> None:
    """Serving reads members in place, which a compressed tarball cannot offer."""
    if not path.is_file():
        return
    with open(path, "rb") as fh:
        head = fh.read(6)
    for magic, kind in _COMPRESSED.items():
        if head.startswith(magic):
            raise UsageError(
                f"{path} is {kind}-compressed; serve reads blobs in place from an uncompressed tarball:"
                " decompress it first (e.g. gunzip, zstd -d, xz -d)"
            )


def load(path: Path, repository: str) -> Content:
    """Index PATH; `repository` names what the layout holds under a bare tag or no name at all."""
    check_uncompressed(path)
    with LayoutReader.open(path) as reader:
        if isinstance(reader.store, TarStore) and not reader.store.parallel:
            raise UsageError(f"{path} cannot be read in place; decompress it first")
        builder = _Builder(reader, Content(path.resolve()))
        for registry, repo, tag, digest, declared in _roots(reader, repository, builder.content.problems):
            builder.add_root(registry, repo, tag, digest, declared)
        if not builder.content.repositories:
            raise UsageError(
                f"{path} holds nothing to serve: {'; '.join(builder.content.problems) or 'no images'}"
            )
        return builder.content


Root = tuple[str, str, str | None, Digest, str]  # registry, repository, tag, digest, declared type


def _roots(reader: LayoutReader, default: str, problems: list[str]) -> Iterator[Root]:
    if reader.catalog:  # a merged directory: catalog.json is its commit point
        for name, tags in sorted(reader.catalog.items()):
            try:
                ref = reference.parse(name)
            except OccystrapError as exc:
                problems.append(f"catalog.json names {name!r}: {exc}")
                continue
            for key, record in sorted(tags.items()):
                try:
                    digest = Digest.parse(record["manifest_digest"])
                except ValueError as exc:
                    problems.append(f"catalog.json, {name}:{key}: {exc}")
                    continue
                tag = key if TAG.fullmatch(key) else None
                media = record.get("media_type")
                yield ref.registry, ref.repository, tag, digest, media if isinstance(media, str) else ""
        return
    for entry in reader.entries():
        desc = entry.descriptor
        if entry.reference is not None:
            ref = entry.reference
            yield ref.registry, ref.repository, ref.tag, desc.digest, desc.media_type
        else:
            tag = entry.name if TAG.fullmatch(entry.name) else None
            yield "", default, tag, desc.digest, desc.media_type


class _Builder:
    def __init__(self, reader: LayoutReader, content: Content) -> None:
        self.reader = reader
        self.content = content
        self.root = os.path.realpath(reader.store.path)
        # manifest digest -> (manifests it lists, blobs it uses); None when it cannot be served
        self._links: dict[Digest, tuple[list[tuple[Digest, str]], list[Digest]] | None] = {}

    def add_root(
        self, registry: str, repository: str, tag: str | None, digest: Digest, declared: str
    ) -> None:
        canonical = f"{registry}/{repository}" if registry else repository
        if self._links_of(digest, declared) is None:
            shown = f"{canonical}:{tag}" if tag else f"{canonical}@{digest}"
            self.content.problems.append(f"{shown}: manifest {digest} is not held or not readable")
            return
        repo = self.content.repositories.get(canonical)
        if repo is None:
            repo = self.content.repositories[canonical] = Repository(canonical, repository)
            for alias in aliases_of(registry, repository):
                self.content.aliases.setdefault(alias, set()).add(canonical)
        if tag is not None:
            repo.tags[tag] = digest
        self._walk(repo, digest, declared)

    def _walk(self, repo: Repository, digest: Digest, declared: str) -> None:
        stack = [(digest, declared, 0)]
        while stack:
            current, media, depth = stack.pop()
            links = self._links_of(current, media)
            if links is None or current in repo.manifests or depth > MAX_DEPTH:
                continue
            repo.manifests.add(current)
            children, blobs = links
            repo.blobs.update(blobs)
            stack.extend((child, child_type, depth + 1) for child, child_type in children)

    def _links_of(
        self, digest: Digest, declared: str
    ) -> tuple[list[tuple[Digest, str]], list[Digest]] | None:
        if digest in self._links:
            return self._links[digest]
        self._links[digest] = None
        where = f"{digest} in {self.reader.where}"
        if self.reader.blob_size(digest) is None:
            return None  # a platform the layout does not hold: the index still lists it
        try:
            data = self.reader.read_blob(digest)
            media = _own_media_type(data, declared, where)
            if media in INDEX_TYPES:
                children = [(d.digest, d.media_type) for d in parse_index(data, where)]
                blobs: list[Digest] = []
            else:
                doc = parse_manifest(data, where)
                children = []
                blobs = [d.digest for d in (doc.config, *doc.layers) if self._add_blob(d.digest, d.size)]
        except OccystrapError as exc:
            self.content.problems.append(str(exc))
            return None
        self.content.manifests[digest] = Manifest(media, data)
        self._links[digest] = (children, blobs)
        return self._links[digest]

    def _add_blob(self, digest: Digest, size: int) -> bool:
        if digest in self.content.blobs:
            return True
        blob = self._locate(digest)
        if blob is None:
            return False
        if blob.size != size:
            self.content.problems.append(f"blob {digest} is {blob.size} bytes, its manifest says {size}")
            return False
        self.content.blobs[digest] = blob
        return True

    def _locate(self, digest: Digest) -> Blob | None:
        reader, store = self.reader, self.reader.store
        name = reader.blob_name(digest)
        size = store.size(name)
        if size is None:
            if reader.blob_size(digest) is None:
                return None  # not held: a layout may keep manifests without their layers
            data = reader.read_blob(digest)  # made up by the reader (a classic save's config)
            return Blob(len(data), "", data=data)
        if isinstance(store, TarStore):
            offset = store.offset(name)
            if offset is None:
                self.content.problems.append(f"{name} in {reader.where} cannot be read in place (sparse)")
                return None
            return Blob(size, os.path.realpath(store.path), offset)
        real = os.path.realpath(store.path / name)
        if os.path.commonpath([self.root, real]) != self.root:
            # A symlink out of the layout: serving it would read outside PATH.
            self.content.problems.append(f"{name} in {reader.where} points outside it")
            return None
        return Blob(size, real)


def _own_media_type(data: bytes, declared: str, where: str) -> str:
    """The manifest's own mediaType field first; the descriptor's only when the document has none."""
    doc = load_json(data, where)
    own = doc.get("mediaType") if isinstance(doc, dict) else None
    if isinstance(own, str) and own:
        return own
    return media_type_of(data, declared, where)
