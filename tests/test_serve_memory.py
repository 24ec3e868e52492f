"""50 concurrent pulls of a 50 MB image from `occystrap serve` stay within 128 MB of peak RSS.

The pulls are real (manifest, config, layer; every byte hashed against its digest), through
aiohttp, from a tarball served in place: over plain HTTP (sendfile) and over TLS (pread and
write, where the bytes do pass through the server).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import ssl
from pathlib import Path

import aiohttp
import pytest

from tests.support import images
from tests.support.images import BuiltImage, Entry
from tests.support.serving import Served, serving
from tests.support.tls import TestCA

PULLS = 50
LAYER = 50 * 1024 * 1024
LIMIT = 128 * 1024 * 1024


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, BuiltImage]:
    data = hashlib.shake_256(b"fifty megabytes").digest(LAYER)
    image = images.build_image([[Entry.file("big.bin", data)]], fmt="oci", compression="none")
    tar = images.write_oci_archive(tmp_path_factory.mktemp("serve-memory") / "big.tar", image, "v1")
    return tar, image


async def _pull(session: aiohttp.ClientSession, base: str, image: BuiltImage) -> None:
    accept = {"Accept": images.OCI_MANIFEST}
    async with session.get(f"{base}v2/big/manifests/v1", headers=accept) as resp:
        assert resp.status == 200
        manifest = json.loads(await resp.read())
    for desc in (manifest["config"], *manifest["layers"]):
        hasher = hashlib.sha256()
        async with session.get(f"{base}v2/big/blobs/{desc['digest']}") as resp:
            assert resp.status == 200
            async for chunk in resp.content.iter_chunked(1 << 20):
                hasher.update(chunk)
        assert f"sha256:{hasher.hexdigest()}" == desc["digest"]
    assert manifest["layers"][0]["digest"] == image.layers[0].digest


async def _pulls(served: Served, image: BuiltImage) -> None:
    connector = aiohttp.TCPConnector(limit=0, ssl=served.ssl_context or False)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=300)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(_pull(session, served.url, image) for _ in range(PULLS)))


def _peak_rss(served: Served) -> int:
    for line in Path(f"/proc/{served.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_fifty_concurrent_pulls_stay_small(big: tuple[Path, BuiltImage], tmp_path: Path, tls: bool) -> None:
    tar, image = big
    args: list[str] = []
    context = None
    if tls:
        ca = TestCA.create()
        files = ca.issue_server(tmp_path / "tls", ["127.0.0.1"])
        context = ssl.create_default_context(cafile=str(ca.write_ca(tmp_path / "ca.pem")))
        args = ["--tls-cert", str(files.certificate), "--tls-key", str(files.key)]
    with serving(
        tar, "-q", "--repository", "big", *args, log=tmp_path / "serve.log", ssl_context=context
    ) as served:
        asyncio.run(_pulls(served, image))
        peak = _peak_rss(served)
    scheme = "https" if tls else "http"
    print(f"peak RSS of occystrap serve after {PULLS} pulls over {scheme}: {peak / 2**20:.1f} MiB")
    assert peak <= LIMIT
