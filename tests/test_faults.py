"""Retries and resume, proven through a fault-injecting proxy in front of the real registry.

The CLI runs in a subprocess against `127.0.0.1:PROXYPORT/...` (loopback is plain
HTTP); the proxy drops, stalls, corrupts or refuses requests on cue and records
what it saw, so each test can check both the output and how it was obtained.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import tarfile
from contextlib import aclosing
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from occystrap import reference
from occystrap.events import BlobRetry, Event
from occystrap.platform import Platform
from occystrap.registry.client import RegistryClient
from occystrap.registry.options import ClientOptions
from occystrap.resolve import require_image, resolve
from occystrap.sources.registry import RegistrySource
from tests.helpers import error_line, fails, leftovers, occystrap, ok
from tests.support import images
from tests.support.faultproxy import Fault, FaultProxy
from tests.support.images import BuiltImage
from tests.support.registry import Registry

REPO = "faults/sample"
TAG = "v1"


@pytest.fixture(scope="module")
def image(registry: Registry) -> BuiltImage:
    built = images.build_sample_image()
    registry.push_image(REPO, TAG, built)
    return built


@pytest.fixture
def outdir(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    return out


def _env(tmp_path: Path) -> dict[str, str]:
    # No credentials from the host's docker config: the registry is anonymous.
    return {"DOCKER_CONFIG": str(tmp_path / "no-docker-config")}


def _fetch(proxy: FaultProxy, out: Path, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    quiet = () if "--progress" in extra else ("-q",)
    return ok("fetch-to-tarfile", *quiet, *extra, f"{proxy.host}/{REPO}", TAG, str(out), env=_env(tmp_path))


def _fail(proxy: FaultProxy, out: Path, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return fails("fetch-to-tarfile", "-q", *extra, f"{proxy.host}/{REPO}", TAG, str(out), env=_env(tmp_path))


def _assert_layers(out: Path, image: BuiltImage) -> None:
    with tarfile.open(out) as tf:
        for layer in image.layers:
            member = tf.extractfile(f"blobs/sha256/{layer.digest[7:]}")
            assert member is not None
            data = member.read()
            assert images.sha256_digest(data) == layer.digest
            assert data == layer.data


# --- the proxy itself ---------------------------------------------------------


def _raw(proxy: FaultProxy, method: str, path: str, headers: dict[str, str] | None = None) -> Any:
    conn = http.client.HTTPConnection(proxy.host, timeout=10)
    try:
        conn.request(method, path, body=b"" if method == "POST" else None, headers=headers or {})
        resp = conn.getresponse()
        resp.body = resp.read()
        return resp
    finally:
        conn.close()


def test_proxy_passes_headers_through(proxy: FaultProxy, image: BuiltImage, basic_registry: Registry) -> None:
    layer = image.layers[0]
    resp = _raw(proxy, "GET", f"/v2/{REPO}/blobs/{layer.digest}", {"Range": "bytes=10-"})
    assert resp.status == 206 and resp.body == layer.data[10:]
    assert resp.getheader("Docker-Content-Digest") == layer.digest
    assert resp.getheader("Content-Range") == f"bytes 10-{layer.size - 1}/{layer.size}"
    resp = _raw(proxy, "GET", f"/v2/{REPO}/manifests/{TAG}", {"Accept": image.manifest_media_type})
    assert resp.body == image.manifest and resp.getheader("Content-Type") == image.manifest_media_type
    # An upload's Location points at the registry; through the proxy it must point at the proxy.
    resp = _raw(proxy, "POST", "/v2/faults/upload/blobs/uploads/")
    assert resp.status == 202 and resp.getheader("Location").startswith(f"{proxy.url}/v2/faults/upload/")
    with FaultProxy(basic_registry.url) as guarded:
        resp = _raw(guarded, "GET", "/v2/")
        assert resp.status == 401 and resp.getheader("WWW-Authenticate").startswith("Basic realm=")
    assert proxy.count(method=None) == 3


# --- dropped connections and resume ----------------------------------------


def test_dropped_connection_resumes_with_range(
    proxy: FaultProxy, image: BuiltImage, outdir: Path, tmp_path: Path
) -> None:
    layer = image.layers[0]
    cut = 100_000
    assert layer.size > cut
    proxy.add(Fault(match=layer.digest, drop_after=cut))
    out = outdir / "img.tar"
    _fetch(proxy, out, tmp_path, "--retries", "2")

    seen = proxy.seen(layer.digest, "GET")
    assert [s.range for s in seen] == [None, f"bytes={cut}-"]
    assert [s.body_bytes for s in seen] == [cut, layer.size - cut]
    assert seen[1].status == 206
    _assert_layers(out, image)
    assert leftovers(outdir) == ["img.tar"]


def test_abrupt_drop_still_completes(
    proxy: FaultProxy, image: BuiltImage, outdir: Path, tmp_path: Path
) -> None:
    """Closed right after the bytes: the client may lose what it had not yet read, never more."""
    layer = image.layers[0]
    cut = 150_000
    proxy.add(Fault(match=layer.digest, drop_after=cut, drop_linger=0))
    out = outdir / "img.tar"
    _fetch(proxy, out, tmp_path, "--retries", "2")
    seen = proxy.seen(layer.digest, "GET")
    assert len(seen) == 2
    if seen[1].range is not None:
        offset = int(seen[1].range.removeprefix("bytes=").rstrip("-"))
        assert 0 < offset <= cut
    _assert_layers(out, image)


def test_dropped_manifest_is_retried(
    proxy: FaultProxy, image: BuiltImage, outdir: Path, tmp_path: Path
) -> None:
    proxy.add(Fault(match=f"/manifests/{TAG}", drop_after=100))
    out = outdir / "img.tar"
    _fetch(proxy, out, tmp_path, "--retries", "2")
    assert proxy.count(f"/manifests/{TAG}") == 2
    _assert_layers(out, image)


def test_server_ignoring_range_still_yields_correct_blob(
    proxy: FaultProxy, image: BuiltImage, outdir: Path, tmp_path: Path
) -> None:
    layer = image.layers[0]
    cut = 120_000
    proxy.add(
        Fault(match=layer.digest, drop_after=cut),
        Fault(match=layer.digest, ignore_range=True, times=None),
    )
    out = outdir / "img.tar"
    _fetch(proxy, out, tmp_path, "--retries", "2")
    seen = proxy.seen(layer.digest, "GET")
    # The client asked to resume; the server sent everything again from byte 0.
    assert [s.range for s in seen] == [None, f"bytes={cut}-"]
    assert seen[1].status == 200 and seen[1].body_bytes == layer.size
    _assert_layers(out, image)


# --- refusals: 429, 503 ------------------------------------------------------


def test_429_with_retry_after_then_success(
    proxy: FaultProxy, image: BuiltImage, outdir: Path, tmp_path: Path
) -> None:
    layer = image.layers[1]
    proxy.add(Fault(match=layer.digest, status=429, retry_after=1))
    out = outdir / "img.tar"
    proc = _fetch(proxy, out, tmp_path, "--retries", "2", "--progress", "json")
    # Retry-After is a floor for the wait, whatever the backoff would have been (0.25-0.5 s here):
    # the wait the retry policy chose, as reported (test_registry_edges sees it through its sleep).
    events = [json.loads(line) for line in proc.stderr.splitlines()]
    [retry] = [e for e in events if e["event"] == "BlobRetry"]
    assert retry["delay"] == 1.0 and "429" in retry["reason"] and retry["digest"] == layer.digest
    assert [s.status for s in proxy.seen(layer.digest, "GET")] == [429, 200]
    _assert_layers(out, image)


@pytest.mark.parametrize("where", ["blob", "manifest"])
def test_503_twice_then_success(
    proxy: FaultProxy, image: BuiltImage, outdir: Path, tmp_path: Path, where: str
) -> None:
    match = image.layers[2].digest if where == "blob" else f"/manifests/{TAG}"
    proxy.add(Fault(match=match, status=503, times=2))
    out = outdir / "img.tar"
    _fetch(proxy, out, tmp_path, "--retries", "3")
    assert [s.status for s in proxy.seen(match, "GET")] == [503, 503, 200]
    _assert_layers(out, image)


@pytest.mark.parametrize(("status", "code"), [(503, 5), (429, 5)])
def test_retries_exhausted_names_url_status_and_tries(
    proxy: FaultProxy, image: BuiltImage, outdir: Path, tmp_path: Path, status: int, code: int
) -> None:
    layer = image.layers[1]
    proxy.add(Fault(match=layer.digest, status=status, retry_after=0, times=None))
    proc = _fail(proxy, outdir / "img.tar", tmp_path, "--retries", "1")
    assert proc.returncode == code
    line = error_line(proc)
    assert f"{proxy.url}/v2/{REPO}/blobs/{layer.digest}" in line
    assert str(status) in line
    assert "2 tries" in line
    assert proxy.count(layer.digest) == 2
    # Nothing that looks like output; what was fetched is kept, hidden, for a re-run to resume.
    assert [n for n in leftovers(outdir) if not n.startswith(".")] == []


# --- corrupted and truncated bodies ------------------------------------------


def test_flipped_byte_fails_naming_the_digest(
    proxy: FaultProxy, image: BuiltImage, outdir: Path, tmp_path: Path
) -> None:
    layer = image.layers[0]
    proxy.add(Fault(match=layer.digest, flip_at=layer.size // 2, times=None))
    proc = _fail(proxy, outdir / "img.tar", tmp_path, "--retries", "2")
    assert proc.returncode == 6
    assert layer.digest in error_line(proc)
    # Corruption is not a transfer error: no point fetching the same bad bytes again.
    assert proxy.count(layer.digest) == 1
    assert leftovers(outdir) == []


@pytest.mark.parametrize("delta", [-1000, 1000], ids=["declared-short", "declared-long"])
def test_wrong_content_length_is_retried(
    proxy: FaultProxy, image: BuiltImage, outdir: Path, tmp_path: Path, delta: int
) -> None:
    layer = image.layers[0]
    proxy.add(Fault(match=layer.digest, length_delta=delta))
    out = outdir / "img.tar"
    _fetch(proxy, out, tmp_path, "--retries", "2")
    seen = proxy.seen(layer.digest, "GET")
    if delta < 0:
        # The client read the declared bytes, saw the blob was short, and resumed from there.
        assert [s.range for s in seen] == [None, f"bytes={layer.size + delta}-"]
    else:
        # Every real byte came before the connection died early: nothing left to fetch.
        assert len(seen) == 1
    _assert_layers(out, image)
    assert leftovers(outdir) == ["img.tar"]


def test_truncated_every_time_fails_cleanly(
    proxy: FaultProxy, image: BuiltImage, outdir: Path, tmp_path: Path
) -> None:
    layer = image.layers[1]
    proxy.add(Fault(match=layer.digest, length_delta=-1000, times=None))
    proc = _fail(proxy, outdir / "img.tar", tmp_path, "--retries", "1")
    assert proc.returncode == 5
    line = error_line(proc)
    assert layer.digest in line and "2 tries" in line
    assert [n for n in leftovers(outdir) if not n.startswith(".")] == []
    # Run again on a healthy network: the cut blob continues from the bytes kept on disk.
    proxy.clear()
    _fetch(proxy, outdir / "img.tar", tmp_path, "--retries", "1")
    resumed = [s.range for s in proxy.seen(layer.digest, "GET")][-1]
    assert resumed is not None and resumed.startswith("bytes=") and resumed != "bytes=0-"
    _assert_layers(outdir / "img.tar", image)
    assert leftovers(outdir) == ["img.tar"]


def test_clean_run_through_proxy_makes_no_retries(
    proxy: FaultProxy, image: BuiltImage, outdir: Path, tmp_path: Path
) -> None:
    out = outdir / "img.tar"
    proc = occystrap(
        "fetch-to-tarfile", "--progress", "json", f"{proxy.host}/{REPO}", TAG, str(out), env=_env(tmp_path)
    )
    assert proc.returncode == 0, proc.stderr
    assert '"BlobRetry"' not in proc.stderr
    for layer in image.layers:
        assert proxy.count(layer.digest) == 1
    assert proxy.ranges() == []
    _assert_layers(out, image)


# --- stalls: the read timeout (driven through the client here; the CLI case is at the end) ----


@pytest.mark.parametrize("stall_at", [None, 0, 50_000], ids=["before-headers", "before-body", "mid-body"])
async def test_stall_longer_than_read_timeout_is_retried(
    proxy: FaultProxy,
    image: BuiltImage,
    stall_at: int | None,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    monkeypatch.delenv("OCCYSTRAP_USERNAME", raising=False)
    layer = image.layers[0]
    proxy.add(Fault(match=layer.digest, stall=5.0, stall_at=stall_at))
    ref = reference.parse(f"{proxy.host}/{REPO}", TAG)
    options = ClientOptions(read_timeout=0.5, retries=2, backoff=0.01)
    retries: list[Event] = []
    reporter = SimpleNamespace(emit=lambda e: retries.append(e) if isinstance(e, BlobRetry) else None)
    async with RegistryClient(options, reporter) as client:
        found = await resolve(RegistrySource(client), ref, Platform("linux", "amd64"))
        desc = require_image(found.nodes[0]).layers[0].descriptor
        assert desc.digest == layer.digest
        body = bytearray()
        async with aclosing(client.blob_chunks(ref, desc)) as chunks:
            async for chunk in chunks:
                body += chunk
    assert bytes(body) == layer.data
    # One retry, after the read timeout: the stall was abandoned, not sat out.
    assert len(retries) == 1
    seen = proxy.seen(layer.digest, "GET")
    assert len(seen) == 2
    assert seen[1].range == (f"bytes={stall_at}-" if stall_at else None)


def test_cli_read_timeout_retries_a_stalled_body(
    proxy: FaultProxy, image: BuiltImage, outdir: Path, tmp_path: Path
) -> None:
    layer = image.layers[0]
    proxy.add(Fault(match=layer.digest, stall=5.0, stall_at=1000, times=1))
    out = outdir / "img.tar"
    _fetch(proxy, out, tmp_path, "--read-timeout", "0.5", "--retries", "2")
    assert len(proxy.seen(layer.digest, "GET")) == 2
    _assert_layers(out, image)
