"""What verify knows while it reads a layout: the problems found, and every claim the
layout's documents make about each blob file (its digest, sizes, diff_ids, who names it)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from occystrap import digest as digests
from occystrap.digest import Digest, is_digest
from occystrap.errors import ManifestError
from occystrap.layout.store import Store
from occystrap.mediatypes import MAX_MANIFEST_BYTES
from occystrap.model import Descriptor, load_json, parse_diff_ids
from occystrap.reference import Reference
from occystrap.verify.result import MANIFEST, MISSING, Problem


def short(digest: str) -> str:
    return digest.partition(":")[2][:12] or digest


def digest_of_name(name: str) -> str | None:
    """The digest a file's name promises: blobs/<algo>/<hex>, or a classic save's <hex>.json config."""
    found = digests.from_path(name)
    if found is not None:
        return found
    if "/" not in name and name.endswith(".json") and is_digest("sha256:" + name[:-5]):
        return "sha256:" + name[:-5]
    return None


@dataclass
class Claim:
    """Everything the layout says about one blob file."""

    name: str
    digest: str | None  # what its content must hash to (from its name or a descriptor)
    sizes: dict[int, str] = field(default_factory=dict)  # claimed size -> who claims it
    diff_ids: dict[str, str] = field(default_factory=dict)  # diff_id -> whose layer it is
    who: list[str] = field(default_factory=list)

    def referrers(self) -> str:
        if not self.who:
            return "not referenced"
        more = f", +{len(self.who) - 1} more" if len(self.who) > 1 else ""
        return self.who[0] + more


@dataclass(frozen=True)
class ManifestInfo:
    digest: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    config_doc: Any  # the parsed config, None when it is missing or malformed

    @property
    def layer_names(self) -> list[str]:
        return [d.digest.path for d in self.layers]


@dataclass(frozen=True)
class BlobOutcome:
    name: str
    present: bool
    size: int
    decompressed: bool
    problem: Problem | None


class State:
    def __init__(self, store: Store, note: Callable[[str], None]) -> None:
        self.store = store
        self.note = note
        self.problems: list[Problem] = []
        self.claims: dict[str, Claim] = {}
        self.manifests: dict[str, ManifestInfo | None] = {}
        self.by_config: dict[str, list[ManifestInfo]] = {}
        self.configs: dict[str, tuple[Any, list[Digest] | None, str | None]] = {}
        self.index_entries: list[tuple[str, Reference | None, str, ManifestInfo | None]] = []
        self.index_refs: dict[str, str] = {}  # org.opencontainers.image.ref.name -> manifest digest
        self.images = 0
        self.stop = threading.Event()
        self.artifacts = 0  # artifact manifests read (their blobs are claimed, never unpacked)
        self.base: frozenset[str] = frozenset()  # a delta bundle's blobs left to its base (paths)

    def problem(self, where: str, message: str, kind: str) -> None:
        self.problems.append(Problem(where, message, kind))

    def claim(
        self,
        name: str,
        who: str,
        digest: str | None = None,
        size: int | None = None,
        diff_id: str | None = None,
    ) -> None:
        c = self.claims.get(name)
        if c is None:
            c = self.claims[name] = Claim(name, digest_of_name(name))
        if c.digest is None:
            c.digest = digest
        if size is not None:
            c.sizes.setdefault(size, who)
        if diff_id:
            c.diff_ids.setdefault(diff_id, who)
        c.who.append(who)

    def read_small(self, name: str, digest: str | None = None) -> bytes | None:
        """A manifest, config or listing, for parsing. None when absent, too large or not what its
        digest says: the blob check reports those, and untrusted bytes are not parsed."""
        size = self.store.size(name)
        if size is None:
            return None
        if size > MAX_MANIFEST_BYTES:
            self.problem(name, f"{size} bytes: too large for a manifest, config or listing", MANIFEST)
            return None
        try:
            reader = self.store.open(name)
            try:
                data = reader.read()
            finally:
                reader.close()
        except OSError as exc:
            self.problem(name, f"unreadable: {exc}", MISSING)
            return None
        if digest is not None and digests.of(data) != digest:
            return None
        return data

    def read_json(self, name: str, data: bytes) -> Any:
        try:
            return load_json(data, name)
        except ManifestError as exc:
            self.problem(name, str(exc), MANIFEST)
            return None

    def config(
        self, name: str, digest: str | None, label: str
    ) -> tuple[Any, list[Digest] | None, str | None]:
        """(parsed config, its diff_ids, the digest of its bytes); Nones when unreadable."""
        if name in self.configs:
            return self.configs[name]
        out: tuple[Any, list[Digest] | None, str | None] = (None, None, None)
        data = self.read_small(name, digest)
        if data is not None:
            doc = self.read_json(name, data)
            if doc is not None:
                try:
                    out = (doc, parse_diff_ids(data, label), digests.of(data))
                except ManifestError as exc:
                    self.problem(name, str(exc), MANIFEST)
                    out = (doc, None, digests.of(data))
        self.configs[name] = out
        return out

    def blob_name(self, digest: str, who: str) -> str | None:
        """blobs/<algo>/<hex> for a well-formed digest; a malformed one is a problem, never a path."""
        if is_digest(digest):
            return digests.Digest.parse(digest).path
        self.problem(who, f"names a malformed digest {digest!r}", MANIFEST)
        return None
