"""Registry behaviour at the edges, against the real registry: tag lists in pages, token servers
that fail, a challenge met only on the resource, 403, mirror --keep-going when a blob breaks
off mid-fetch, the HTTPS-then-HTTP rule for --insecure-registry, and Retry-After as waited.
"""

from __future__ import annotations

import json
import subprocess
import tarfile
from collections.abc import Iterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import pytest

from occystrap import reference
from occystrap.platform import Platform
from occystrap.registry.client import RegistryClient
from occystrap.registry.options import ClientOptions
from occystrap.resolve import require_image, resolve
from occystrap.sources.registry import RegistrySource
from tests.helpers import error_line, fails, leftovers, ok, read_lock
from tests.support import images
from tests.support.faultproxy import Fault, FaultProxy, without_realm
from tests.support.images import BuiltImage
from tests.support.registry import Registry, start_registry
from tests.support.tagpages import LinkStyle, TagPages

REPO = "edges/app"
TAG = "v1"


@pytest.fixture(scope="module")
def image(registry: Registry) -> BuiltImage:
    built = images.build_image(
        [[images.file("a.txt", b"edge a\n" * 500)], [images.file("b.txt", b"edge b\n" * 2000)]]
    )
    registry.push_image(REPO, TAG, built)
    return built


def _env(tmp_path: Path) -> dict[str, str]:
    return {"DOCKER_CONFIG": str(tmp_path / "no-docker-config")}


def _tar_layers(out: Path, image: BuiltImage) -> None:
    with tarfile.open(out) as tf:
        for layer in image.layers:
            member = tf.extractfile(f"blobs/sha256/{layer.digest[7:]}")
            assert member is not None and member.read() == layer.data


# --- tag lists in pages ----------------------------------------------------------------------


@pytest.mark.parametrize("link", ["relative", "absolute"])
def test_tag_list_follows_link_pagination(
    proxy: FaultProxy, registry: Registry, image: BuiltImage, tmp_path: Path, link: LinkStyle
) -> None:
    tags = ["t0", "t1", "t2", "t3", "t4"]
    registry.push_image("edges/paged", tags[0], image)
    for tag in tags[1:]:
        registry.push_manifest("edges/paged", tag, image.manifest, image.manifest_media_type)
    proxy.set_tag_pages(TagPages(page_size=2, link=link))
    proc = ok("list-tags", f"{proxy.host}/edges/paged", env=_env(tmp_path))
    assert proc.stdout.split() == tags
    # Three pages of two: the second and third asked for what comes after the last tag seen.
    pages = [s.path for s in proxy.seen("/tags/list", "GET")]
    assert len(pages) == 3
    assert pages[1].endswith("last=t1") and pages[2].endswith("last=t3")


# --- token servers that fail -------------------------------------------------------------------


@pytest.fixture(scope="module")
def private_token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A token-auth registry of this module's own, whose token server the tests may break."""
    from tests.conftest import require_tool

    require_tool("docker-registry")
    reg = start_registry(tmp_path_factory.mktemp("edges-token"), "token")
    try:
        reg.push_image(REPO, TAG, images.build_image([[images.file("t.txt", b"token\n")]]))
        yield reg
    finally:
        reg.stop()


@pytest.fixture
def token_registry_fresh(private_token_registry: Registry) -> Iterator[Registry]:
    server = private_token_registry.token_server
    assert server is not None
    try:
        yield private_token_registry
    finally:
        server.fail_status, server.fail_times, server.token_field = None, None, "both"


def _fetch(host: str, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    return fails(
        "fetch-to-tarfile", "-q", *extra, f"{host}/{REPO}", TAG, str(out / "img.tar"), env=_env(tmp_path)
    )


def test_token_server_5xx_is_a_network_failure_after_retries(
    token_registry_fresh: Registry, tmp_path: Path
) -> None:
    server = token_registry_fresh.token_server
    assert server is not None
    server.fail_status = 503
    before = server.token_requests
    proc = _fetch(token_registry_fresh.host, tmp_path, "--retries", "1")
    assert proc.returncode == 5
    line = error_line(proc)
    assert "/token" in line and "503" in line and "2 tries" in line
    assert server.token_requests - before == 2
    assert leftovers(tmp_path / "out") == []


def test_token_server_answering_no_token_is_an_auth_error(
    token_registry_fresh: Registry, tmp_path: Path
) -> None:
    server = token_registry_fresh.token_server
    assert server is not None
    server.token_field = "none"
    proc = _fetch(token_registry_fresh.host, tmp_path)
    assert proc.returncode == 4
    assert "returned no token" in error_line(proc)


def test_bearer_challenge_without_realm_is_an_auth_error(
    private_token_registry: Registry, tmp_path: Path
) -> None:
    with FaultProxy(private_token_registry.url) as proxy:
        proxy.add(Fault(match="/v2/", method=None, times=None, rewrite_challenge=without_realm))
        proc = _fetch(proxy.host, tmp_path)
    assert proc.returncode == 4
    assert "without a realm" in error_line(proc)


# --- challenges and refusals -------------------------------------------------------------------


def test_challenge_only_on_the_resource(private_token_registry: Registry, tmp_path: Path) -> None:
    """Some registries answer /v2/ with 200 and challenge only on the repository's resources."""
    server = private_token_registry.token_server
    assert server is not None
    with FaultProxy(private_token_registry.url) as proxy:
        proxy.add(Fault(match=r"^/v2/$", regex=True, status=200, times=None))
        before = server.token_requests
        out = tmp_path / "img.tar"
        ok("fetch-to-tarfile", "-q", f"{proxy.host}/{REPO}", TAG, str(out), env=_env(tmp_path))
        assert [s.status for s in proxy.seen("/v2/", "GET") if s.path == "/v2/"] == [200]
        assert [s.status for s in proxy.seen(f"/manifests/{TAG}", "GET")] == [401, 200]
    assert server.token_requests > before
    with tarfile.open(out) as tf:
        assert "manifest.json" in tf.getnames()


@pytest.mark.parametrize("where", ["manifest", "blob"])
def test_403_is_an_auth_error_naming_the_scope(
    proxy: FaultProxy, image: BuiltImage, tmp_path: Path, where: str
) -> None:
    match = f"/manifests/{TAG}" if where == "manifest" else image.layers[0].digest
    proxy.add(Fault(match=match, status=403, error_code="DENIED", times=None))
    proc = _fetch(proxy.host, tmp_path, "--retries", "2")
    assert proc.returncode == 4
    line = error_line(proc)
    assert "403" in line and f"repository:{REPO}:pull" in line
    assert proxy.count(match) == 1  # a refusal is not retried
    assert [n for n in leftovers(tmp_path / "out") if not n.startswith(".")] == []


# --- mirror --keep-going when a blob breaks off mid-fetch --------------------------------------


@pytest.fixture(scope="module")
def pair(registry: Registry) -> tuple[BuiltImage, BuiltImage]:
    good = images.build_image([[images.file("good.txt", b"good\n" * 1000)]])
    bad = images.build_image([[images.file("bad.bin", bytes(range(256)) * 2000)]], compression="none")
    registry.push_image("edges/good", TAG, good)
    registry.push_image("edges/bad", TAG, bad)
    return good, bad


def _mirror(
    proxy: FaultProxy, dest: Path, tmp_path: Path, expect: Any = fails
) -> subprocess.CompletedProcess[str]:
    result: subprocess.CompletedProcess[str] = expect(
        "mirror", "-q", "--keep-going", "--retries", "0",
        "--image", f"{proxy.host}/edges/good:{TAG}", "--image", f"{proxy.host}/edges/bad:{TAG}", str(dest),
        env=_env(tmp_path),
    )  # fmt: skip
    return result


@pytest.mark.parametrize("dest_kind", ["merged", "bundle"])
def test_keep_going_when_a_blob_fails_mid_fetch(
    proxy: FaultProxy, pair: tuple[BuiltImage, BuiltImage], tmp_path: Path, dest_kind: str
) -> None:
    _, bad = pair
    [layer] = bad.layers
    proxy.add(Fault(match=layer.digest, drop_after=1000, times=None))
    dest = tmp_path / ("mirror" if dest_kind == "merged" else "bundle.tar")
    proc = _mirror(proxy, dest, tmp_path)
    assert proc.returncode == 1
    line = error_line(proc)
    assert "1 image(s) failed" in line if dest_kind == "merged" else "2 image(s) failed" in line
    assert f"{proxy.host}/edges/bad" in line and layer.digest in line
    assert proxy.seen(layer.digest, "GET")[0].body_bytes == 1000 < layer.size  # it broke off midway
    if dest_kind == "merged":
        # The good image is there, whole and listed; the bad one is not listed anywhere.
        catalog = json.loads((dest / "catalog.json").read_text())["images"]
        assert list(catalog) == [f"{proxy.host}/edges/good"]
        assert list(read_lock(dest / "occystrap.lock")) == [f"{proxy.host}/edges/good"]
        ok("verify", "-q", str(dest))
    else:
        # A bundle is written whole or not at all; what arrived is kept, hidden, to resume.
        assert not dest.exists()
        assert [n for n in leftovers(tmp_path) if not n.startswith(".")] == ["bundle.tar.lock"]
        assert read_lock(tmp_path / "bundle.tar.lock") == {}
    proxy.clear()
    _mirror(proxy, dest, tmp_path, expect=ok)
    target = dest if dest_kind == "merged" else tmp_path / "check"
    if dest_kind == "bundle":
        ok("tarfile-to-extracted", "-q", "--use-unique-names", str(dest), str(target))
    catalog = json.loads((target / "catalog.json").read_text())["images"]
    assert sorted(catalog) == [f"{proxy.host}/edges/bad", f"{proxy.host}/edges/good"]
    ok("verify", "-q", str(dest))


# --- --insecure-registry: TLS first, then plain HTTP --------------------------------------------


def test_insecure_registry_falls_back_from_https_to_http(
    registry: Registry, image: BuiltImage, tmp_path: Path
) -> None:
    """A plain-HTTP registry under a name that is not loopback: HTTPS is tried first (and fails),
    then plain HTTP, only because the name is listed as insecure."""
    name = f"plain.test:{registry.port}"
    pin = ("--resolve", "plain.test=127.0.0.1", "--retries", "0")
    out = tmp_path / "img.tar"
    proc = fails("fetch-to-tarfile", "-q", *pin, f"{name}/{REPO}", TAG, str(out), env=_env(tmp_path))
    assert proc.returncode == 5 and "plain.test" in error_line(proc)
    assert not out.exists()
    served = registry.request_count(f"/v2/{REPO}/manifests/{TAG}", "GET")
    ok("fetch-to-tarfile", "-q", *pin, "--insecure-registry", name, f"{name}/{REPO}", TAG, str(out),
       env=_env(tmp_path))  # fmt: skip
    _tar_layers(out, image)
    assert registry.request_count(f"/v2/{REPO}/manifests/{TAG}", "GET") > served
    with tarfile.open(out) as tf:
        member = tf.extractfile("manifest.json")
        assert member is not None
        assert json.load(member)[0]["RepoTags"] == [f"{name}/{REPO}:{TAG}"]


# --- Retry-After, as waited (through the retry policy's injectable sleep) -----------------------


async def test_retry_after_is_the_wait(
    proxy: FaultProxy, image: BuiltImage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    monkeypatch.delenv("OCCYSTRAP_USERNAME", raising=False)
    layer = image.layers[1]
    proxy.add(Fault(match=layer.digest, status=429, retry_after=120))
    waits: list[float] = []

    async def sleep(delay: float) -> None:
        waits.append(delay)

    ref = reference.parse(f"{proxy.host}/{REPO}", TAG)
    async with RegistryClient(ClientOptions(retries=2, backoff=0.01), sleep=sleep) as client:
        found = await resolve(RegistrySource(client), ref, Platform("linux", "amd64"))
        desc = require_image(found.nodes[0]).layers[1].descriptor
        body = bytearray()
        async with aclosing(client.blob_chunks(ref, desc)) as chunks:
            async for chunk in chunks:
                body += chunk
    assert bytes(body) == layer.data
    # The backoff alone would have waited a few milliseconds: Retry-After is the floor.
    assert waits == [120.0]
    assert [s.status for s in proxy.seen(layer.digest, "GET")] == [429, 200]
