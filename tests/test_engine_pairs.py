"""The one copy engine, in process, over every source and sink pair: each source (a registry,
a classic docker save, Docker 25 / our tarball, an OCI layout directory and archive, a merged
directory, a bundle) into each sink (a tarball as served and uncompressed, an extracted and a
merged directory, a registry). Outputs are judged by the offline verifier and by exact bytes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
import pytest

from occystrap.concurrency import Limits
from occystrap.engine import Engine, Item
from occystrap.events import Event
from occystrap.model import Image, with_reference
from occystrap.platform import ALL, Platform
from occystrap.reference import Reference, parse
from occystrap.registry.client import RegistryClient
from occystrap.resolve import resolve
from occystrap.sinks.base import Sink
from occystrap.sinks.directory import DirectorySink
from occystrap.sinks.registry import RegistrySink
from occystrap.sinks.tarball import TarballSink
from occystrap.sources.base import Source
from occystrap.sources.layout import LayoutSource
from occystrap.sources.registry import RegistrySource
from occystrap.verify import verify
from tests.helpers import ok
from tests.support import images
from tests.support.images import BuiltImage
from tests.support.registry import Registry

REPO = "pairs/app"
SOURCES = ["registry", "docker-archive", "our-tarball", "oci-dir", "oci-archive", "merged-dir", "bundle"]
SINKS = ["tarball", "tarball-uncompressed", "extracted", "merged", "registry"]


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)


@pytest.fixture(scope="module")
def built() -> BuiltImage:
    return images.build_sample_image(fmt="oci", compression="gzip")


@pytest.fixture(scope="module")
def layouts(
    registry: Registry, built: BuiltImage, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """Every local form of the same image, made by test support or by occystrap itself."""
    registry.push_image(REPO, "v1", built)
    name = f"{registry.host}/{REPO}:v1"
    root = tmp_path_factory.mktemp("pair-sources")
    out = {
        "docker-archive": images.write_docker_archive(root / "classic.tar", built, [name]),
        "oci-dir": images.write_oci_layout(root / "oci", built, name),
        "oci-archive": images.write_oci_archive(root / "oci.tar", built, name),
        "our-tarball": root / "ours.tar",
        "merged-dir": root / "merged",
        "bundle": root / "bundle.tar",
    }
    ok("fetch-to-tarfile", "-q", f"{registry.host}/{REPO}", "v1", str(out["our-tarball"]))
    ok("mirror", "-q", "--image", name, str(out["merged-dir"]))
    ok("mirror", "-q", "--image", name, str(out["bundle"]))
    return out


async def _source(kind: str, registry: Registry, layouts: dict[str, Path], client: RegistryClient) -> tuple[
    Source, Reference
]:  # fmt: skip
    ref = parse(f"{registry.host}/{REPO}", "v1")
    if kind == "registry":
        return RegistrySource(client), ref
    source = LayoutSource(layouts[kind])
    return source, source.reference_for(ref)


def _sink(kind: str, out: Path, client: RegistryClient, reporter: Recorder, dest: str) -> Sink:
    if kind == "tarball":
        return TarballSink(out / "out.tar")
    if kind == "tarball-uncompressed":
        return TarballSink(out / "out.tar", uncompressed_layers=True)
    if kind == "extracted":
        return DirectorySink(out / "dir")
    if kind == "merged":
        return DirectorySink(out / "dir", unique_names=True)
    return RegistrySink(client, reporter, dest)


@pytest.fixture
async def client() -> AsyncIterator[RegistryClient]:
    async with RegistryClient() as c:
        yield c


@pytest.mark.parametrize("sink_kind", SINKS)
@pytest.mark.parametrize("source_kind", SOURCES)
async def test_copy(
    registry_factory: Callable[..., Registry],
    registry: Registry,
    layouts: dict[str, Path],
    built: BuiltImage,
    client: RegistryClient,
    tmp_path: Path,
    source_kind: str,
    sink_kind: str,
) -> None:
    reporter = Recorder()
    source, ref = await _source(source_kind, registry, layouts, client)
    node = (await resolve(source, ref, ALL)).nodes[0]
    assert isinstance(node, Image) and node.config.digest == built.config_digest
    dest = registry_factory() if sink_kind == "registry" else None
    if dest is not None:
        node = with_reference(node, parse(f"{dest.host}/copied/app", "v1"))
    sink = _sink(sink_kind, tmp_path, client, reporter, dest.host if dest else str(tmp_path))
    await Engine(reporter, Limits(parallel=2)).copy(source, sink, [Item(ref, node)])
    await source.aclose()

    moved = [e for e in reporter.events if type(e).__name__ == "BlobDone"]
    assert len(moved) == len(built.layers)  # every layer moved once, with progress events
    if dest is not None:
        # A registry gets the very manifest the source holds (made up for a classic save).
        assert dest.client.get_manifest("copied/app", "v1")[1] == node.manifest_bytes
        if source_kind != "docker-archive":
            assert node.manifest_bytes == built.manifest
        return
    output = tmp_path / ("out.tar" if sink_kind.startswith("tarball") else "dir")
    result = await verify(output, anyio.CapacityLimiter(2))
    assert result.ok, [str(p) for p in result.problems]
    again = LayoutSource(output)
    copied = (await resolve(again, again.reference_for(ref), Platform("linux", "amd64"))).nodes[0]
    await again.aclose()
    assert isinstance(copied, Image)
    assert [l.diff_id for l in copied.layers] == built.diff_ids
