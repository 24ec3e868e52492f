"""Reading a layout, in a directory or a tarball: what it names, and its blobs by digest.

One reader for every local source, `verify`'s look-ups, mirror's incremental checks and
`serve`. It understands an OCI layout (index.json, nested indexes allowed), Docker 25's
`docker save` (an OCI layout plus manifest.json), a merged directory (catalog.json), and
the classic `docker save` (`<id>/layer.tar`, no registry manifest: one is made up from the
files, as Docker itself would push it).
"""

from __future__ import annotations

import json
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from occystrap import digest as digests
from occystrap import reference
from occystrap.digest import Digest
from occystrap.errors import IntegrityError, ManifestError, NotFoundError, OccystrapError
from occystrap.layout import catalog, classic
from occystrap.layout.store import Reader, Store, iter_chunks, open_store, read_all, safe_name
from occystrap.layout.writer import CONTAINERD_NAME, REF_NAME
from occystrap.mediatypes import (
    MAX_MANIFEST_BYTES,
)
from occystrap.model import Descriptor, load_json, media_type_of, parse_index
from occystrap.reference import Reference


@dataclass(frozen=True)
class Entry:
    """One name the layout holds, and what it points at."""

    name: str  # as written: a full reference, or a bare ref name such as `latest`
    reference: Reference | None  # the name as a full reference, when it is one
    descriptor: Descriptor


def parse_name(text: str) -> Reference | None:
    """An annotation or RepoTag as a reference, when it is a full name (not a bare tag)."""
    if not text or (":" not in text.rpartition("/")[2] and "@" not in text):
        return None
    try:
        return reference.parse(text)
    except OccystrapError:
        return None


def docker_entries(data: bytes, where: str) -> list[dict[str, Any]]:
    """manifest.json, checked for the shape docker load needs."""
    doc = load_json(data, where)
    if not isinstance(doc, list) or not all(
        isinstance(e, dict)
        and isinstance(e.get("Config"), str)
        and isinstance(e.get("Layers"), list)
        and all(isinstance(x, str) for x in e["Layers"])
        for e in doc
    ):
        raise ManifestError(f"{where}: malformed manifest.json")
    return doc


class LayoutReader:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.where = str(store.path)
        # Made-up manifests of a classic save, and the member behind each of its layer digests.
        self._virtual: dict[str, bytes] = {}
        self._members: dict[str, str] = {}
        self._entries: list[Entry] | None = None
        self.catalog = catalog.parse(self.small("catalog.json"), f"{self.where}/catalog.json")

    @classmethod
    def open(cls, path: Path) -> LayoutReader:
        store = open_store(path)
        try:
            return cls(store)
        except BaseException:
            store.close()
            raise

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> LayoutReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- files and blobs -------------------------------------------------------

    def small(self, name: str) -> bytes | None:
        """A manifest-sized file, or None when absent; too large is an error, not a read."""
        size = self.store.size(name)
        if size is None:
            return None
        if size > MAX_MANIFEST_BYTES:
            raise ManifestError(f"{name} in {self.where} is {size} bytes: too large for a manifest or config")
        return read_all(self.store, name)

    def blob_name(self, digest: str) -> str:
        return self._members.get(digest) or Digest.parse(digest).path

    def blob_size(self, digest: str) -> int | None:
        if digest in self._virtual:
            return len(self._virtual[digest])
        return self.store.size(self.blob_name(digest))

    def open_blob(self, digest: str, offset: int = 0) -> Reader:
        if self.blob_size(digest) is None:
            raise NotFoundError(f"{self.where} does not hold blob {digest}")
        return self.store.open(self.blob_name(digest), offset)

    def blob_chunks(self, digest: str, offset: int = 0) -> Generator[bytes, None, None]:
        if digest in self._virtual:
            yield self._virtual[digest][offset:]
            return
        if self.blob_size(digest) is None:
            raise NotFoundError(f"{self.where} does not hold blob {digest}")
        yield from iter_chunks(self.store, self.blob_name(digest), offset)

    def read_blob(self, digest: str) -> bytes:
        """A small blob (manifest, index, config), checked against its digest."""
        data = self._virtual.get(digest)
        if data is None:
            data = self.small(self.blob_name(digest))
        if data is None:
            raise NotFoundError(f"{self.where} does not hold {digest}")
        if digests.of(data) != digest:
            raise IntegrityError(f"{self.blob_name(digest)} in {self.where} does not match its digest")
        return data

    def manifest(self, digest: str, declared: str = "") -> tuple[bytes, str]:
        data = self.read_blob(digest)
        return data, media_type_of(data, declared, f"{digest} in {self.where}")

    # --- names -------------------------------------------------------------------

    def entries(self) -> list[Entry]:
        """Every name the layout holds: index.json's entries, else manifest.json's RepoTags."""
        if self._entries is None:
            index = self.small("index.json")
            if index is not None:
                self._entries = self._index_entries(index)
            elif self.store.size("manifest.json") is not None:
                self._entries = self._classic_entries()
            else:
                raise ManifestError(
                    f"{self.where} has neither index.json nor manifest.json: not an image layout"
                )
        return self._entries

    def _index_entries(self, data: bytes) -> list[Entry]:
        # Read only when an entry has no name of its own: it reads every manifest the index
        # lists (45 ms of a 400-tag mirror's re-run, for a DEST whose entries are all named).
        tags: dict[str, str] | None = None
        out = []
        for desc in parse_index(data, f"{self.where}/index.json"):
            notes = dict(desc.annotations)
            ref_name = notes.get(REF_NAME, "")
            name = notes.get(CONTAINERD_NAME) or ref_name
            ref = parse_name(ref_name) or parse_name(notes.get(CONTAINERD_NAME, ""))
            if ref is None and tags is None:
                tags = self._repo_tags()
            if ref is None and tags is not None and desc.digest in tags:
                ref = parse_name(tags[desc.digest])
                name = name or tags[desc.digest]
            out.append(Entry(ref_name or name, ref, desc))
        return out

    def _repo_tags(self) -> dict[str, str]:
        """Docker 25 saves without ref annotations: manifest digest -> first RepoTag, by config."""
        data = self.small("manifest.json")
        if data is None:
            return {}
        out: dict[str, str] = {}
        index = self.small("index.json")
        by_config: dict[str, str] = {}
        for desc in parse_index(index or b'{"manifests": []}', f"{self.where}/index.json"):
            try:
                config = json.loads(self.read_blob(desc.digest)).get("config", {}).get("digest")
            except (OccystrapError, ValueError, AttributeError):
                continue
            if isinstance(config, str):
                by_config[config] = desc.digest
        for e in docker_entries(data, f"{self.where}/manifest.json"):
            config_digest = digests.from_path(safe_name(e["Config"]) or "")
            tags = e.get("RepoTags") or []
            if config_digest in by_config and tags and isinstance(tags[0], str):
                out.setdefault(by_config[config_digest], tags[0])
        return out

    def _classic_entries(self) -> list[Entry]:
        data = self.small("manifest.json")
        assert data is not None
        made = classic.synthesize(self.store, docker_entries(data, f"{self.where}/manifest.json"), self.small)
        self._virtual.update(made.virtual)
        self._members.update(made.members)
        return [Entry(name, parse_name(name), desc) for name, desc in made.entries]

    def find(self, wanted: Reference | str | None) -> Entry:
        """The entry a name picks: a full reference, a bare ref name (skopeo's `oci:DIR:NAME`),
        a digest, or nothing when the layout holds one image (or one name) only."""
        if isinstance(wanted, Reference) and self.catalog:
            record = catalog.lookup(self.catalog, wanted, self.where)
            digest = Digest.parse(record["manifest_digest"])
            media = record.get("media_type", "")
            return Entry(str(wanted), wanted, Descriptor(media, digest, self.blob_size(digest) or 0))
        entries = self.entries()
        if wanted is None:
            distinct = {e.descriptor.digest for e in entries}
            if len(distinct) == 1:
                return entries[0]
            raise NotFoundError(f"{self.where} holds {len(entries)} images; name one of: {self.listing()}")
        for e in entries:
            if isinstance(wanted, str) and e.name == wanted:
                return e
            if isinstance(wanted, Reference) and e.reference is not None and _same(e.reference, wanted):
                return e
        if isinstance(wanted, Reference) and wanted.digest and self.blob_size(wanted.digest) is not None:
            desc = Descriptor("", Digest.parse(wanted.digest), self.blob_size(wanted.digest) or 0)
            return Entry(str(wanted), wanted, desc)
        shown = wanted if isinstance(wanted, str) else f"{wanted.full_name}:{catalog.tag_key(wanted)}"
        raise NotFoundError(f"{shown} is not in {self.where}; it holds: {self.listing()}")

    def listing(self) -> str:
        if self.catalog:
            return catalog.listing(self.catalog)
        names = sorted({e.name or e.descriptor.digest for e in self.entries()})
        return ", ".join(names) if names else "nothing"


def _same(have: Reference, wanted: Reference) -> bool:
    if (have.registry, have.repository) != (wanted.registry, wanted.repository):
        return False
    if wanted.digest:
        return have.digest == wanted.digest
    return have.tag == wanted.tag
