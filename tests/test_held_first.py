"""The incremental source wrappers (a directory DEST, a registry DEST) over an in-memory
source: what they take from where the mirror is going, and what they must pass on."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

from occystrap import digest as digests
from occystrap import referrers
from occystrap.digest import Digest
from occystrap.errors import NotFoundError
from occystrap.layout.reader import LayoutReader
from occystrap.mediatypes import OCI_MANIFEST
from occystrap.model import Descriptor
from occystrap.naming import Placement
from occystrap.reference import Reference
from occystrap.sources.base import Fetched, HasReferrers
from occystrap.sources.destfirst import DestinationFirst
from occystrap.sources.heldfirst import HeldFirst
from occystrap.sources.localfirst import LocalFirst
from tests.support import images

REF = Reference("src.example", "team/app", "v1")
REFERRER = Digest.parse("sha256:" + "ab" * 32)


class Memory:
    """A source holding manifests and blobs by digest, tags, and a referrers API."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.manifests: dict[str, bytes] = {}
        self.blobs: dict[str, bytes] = {}
        self.tagged: dict[str, str] = {}
        self.asked: list[str] = []  # counted requests: manifest and blob GETs

    def add(self, tag: str | None, data: bytes) -> Digest:
        digest = digests.of(data)
        self.manifests[digest] = data
        if tag:
            self.tagged[tag] = digest
        return digest

    async def manifest(self, ref: Reference, target: str | None = None) -> Fetched:
        wanted = target or ref.reference
        self.asked.append(f"manifest {wanted}")
        digest = self.tagged.get(wanted, wanted)
        if digest not in self.manifests:
            raise NotFoundError(f"{wanted} not found")
        data = self.manifests[digest]
        return Fetched(data, json.loads(data)["mediaType"], Digest.parse(digest))

    async def head(self, ref: Reference) -> Digest | None:
        found = self.tagged.get(ref.reference)
        return Digest.parse(found) if found else None

    async def blob(self, ref: Reference, desc: Descriptor, offset: int = 0) -> AsyncIterator[bytes]:
        self.asked.append(f"blob {desc.digest}")
        if desc.digest not in self.blobs:
            raise NotFoundError(f"{desc.digest} not found")
        yield self.blobs[desc.digest][offset:]

    async def referrers(self, ref: Reference, digest: str) -> list[Descriptor] | None:
        return [Descriptor(OCI_MANIFEST, REFERRER, 10)]

    async def tags(self, ref: Reference) -> list[str]:
        return sorted(self.tagged)

    async def aclose(self) -> None:
        return None


def _image(source: Memory, tag: str, text: bytes) -> tuple[Digest, Descriptor]:
    built = images.build_image([[images.Entry.file("f", text)]], fmt="oci")
    source.blobs[built.config_digest] = built.config
    config = Descriptor.from_json(json.loads(built.manifest)["config"], "test")
    return source.add(tag, built.manifest), config


async def test_both_wrappers_pass_the_referrers_api_on(tmp_path: Path) -> None:
    layout = images.write_oci_layout(tmp_path / "dest", images.build_sample_image(fmt="oci"))
    source = Memory("source")
    with LayoutReader.open(layout) as held:
        wrappers: list[HeldFirst] = [
            LocalFirst(source, held),
            DestinationFirst(source, Memory("dest"), Placement("dest.example", "site").place),
        ]
        for wrapper in wrappers:
            assert isinstance(wrapper, HasReferrers)
            assert await referrers.keys(wrapper, REF, "sha256:" + "cd" * 32, []) == [REFERRER]


async def test_a_tag_the_destination_holds_costs_the_source_no_get() -> None:
    source, dest = Memory("source"), Memory("dest")
    digest, config = _image(source, "v1", b"one\n")
    dest.manifests[digest] = source.manifests[digest]
    dest.blobs[config.digest] = source.blobs[config.digest]
    wrapper = DestinationFirst(source, dest, Placement("dest.example", "site").place)
    fetched = await wrapper.manifest(REF)
    assert fetched.digest == digest and fetched.data == source.manifests[digest]
    assert b"".join([c async for c in wrapper.blob(REF, config)]) == source.blobs[config.digest]
    assert source.asked == []  # a HEAD only
    assert dest.asked == [f"manifest {digest}", f"blob {config.digest}"]


async def test_a_config_the_destination_holds_wrongly_comes_from_the_source() -> None:
    source, dest = Memory("source"), Memory("dest")
    digest, config = _image(source, "v1", b"one\n")
    dest.manifests[digest] = source.manifests[digest]
    dest.blobs[config.digest] = b"{}"  # damaged at the destination
    wrapper = DestinationFirst(source, dest, Placement("dest.example", "site").place)
    await wrapper.manifest(REF)
    assert b"".join([c async for c in wrapper.blob(REF, config)]) == source.blobs[config.digest]
    assert source.asked == [f"blob {config.digest}"]


async def test_what_the_destination_lacks_comes_from_the_source_without_asking_it_twice() -> None:
    source, dest = Memory("source"), Memory("dest")
    digest, config = _image(source, "v1", b"one\n")
    wrapper = DestinationFirst(source, dest, Placement("dest.example", "site").place)
    for _ in range(2):
        assert (await wrapper.manifest(REF)).digest == digest
    assert b"".join([c async for c in wrapper.blob(REF, config)]) == source.blobs[config.digest]
    assert dest.asked == [f"manifest {digest}"]  # looked for once; its config not at all
    assert source.asked == ["manifest v1", "manifest v1", f"blob {config.digest}"]


class OneRepository(Memory):
    """A destination that holds its manifests in one repository only."""

    def __init__(self, name: str, repository: str) -> None:
        super().__init__(name)
        self.repository = repository

    async def manifest(self, ref: Reference, target: str | None = None) -> Fetched:
        if ref.repository != self.repository:
            raise NotFoundError(f"{ref.repository}: not here")
        return await super().manifest(ref, target)


async def test_what_one_repository_holds_does_not_answer_for_another() -> None:
    """One manifest mirrored into two repositories, held in one: asked in either order, the
    one that holds it answers for itself only (CI saw the count of pulls depend on the order)."""
    for first_other in (True, False):
        source = Memory("source")
        digest, _ = _image(source, "v1", b"shared\n")
        dest = OneRepository("dest", "site/team/app")
        dest.manifests[digest] = source.manifests[digest]
        wrapper = DestinationFirst(source, dest, Placement("dest.example", "site").place)
        other = Reference("src.example", "team/other", "v1")
        for ref in [other, REF] if first_other else [REF, other]:
            assert (await wrapper.manifest(ref)).digest == digest
        assert source.asked == ["manifest v1"]  # only team/other's: team/app's is held
