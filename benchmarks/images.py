"""Images built from generated layers and pushed to the registry on loopback.

Blobs are streamed from the layer cache in one monolithic upload each; the config and manifest
are small and go through the test suite's registry helpers.
"""

from __future__ import annotations

import argparse
import http.client
import json
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import MiB, log
from benchmarks.layers import LayerBlob, LayerSpec, cached_layer
from tests.support.images import (
    DOCKER_CONFIG,
    DOCKER_LAYER_GZIP,
    DOCKER_MANIFEST,
    FIXED_CREATED,
    sha256_digest,
)
from tests.support.registry import Registry


@dataclass(frozen=True)
class ImageSpec:
    name: str  # short name in tables
    repo: str
    tag: str
    layers: tuple[LayerSpec, ...]
    targets: bool = True  # False: shown for what it tells, held to no target


@dataclass(frozen=True)
class PushedImage:
    name: str
    host: str
    repo: str
    tag: str
    layers: tuple[LayerBlob, ...]
    config_size: int
    manifest_digest: str

    @property
    def ref(self) -> str:
        return f"{self.host}/{self.repo}"

    @property
    def compressed_bytes(self) -> int:
        """Blob bytes a client must fetch: layers and config (manifest not counted)."""
        return sum(layer.size for layer in self.layers) + self.config_size

    @property
    def uncompressed_bytes(self) -> int:
        return sum(layer.tar_size for layer in self.layers)

    def describe(self) -> dict[str, Any]:
        return {
            "ref": f"{self.ref}:{self.tag}",
            "manifest_digest": self.manifest_digest,
            "layers": len(self.layers),
            "files": sum(layer.files for layer in self.layers),
            "compressed_mib": round(self.compressed_bytes / MiB, 2),
            "uncompressed_mib": round(self.uncompressed_bytes / MiB, 2),
            "layer_digests": [layer.digest for layer in self.layers],
            "diff_ids": [layer.diff_id for layer in self.layers],
        }


def _loopback_conn(host: str) -> http.client.HTTPConnection:
    name = host.rsplit(":", 1)[0]
    if name not in ("127.0.0.1", "localhost", "[::1]"):
        raise RuntimeError(f"refusing to talk to non-loopback host {host}")
    return http.client.HTTPConnection(host, timeout=600, blocksize=MiB)


def push_blob_file(registry: Registry, repo: str, path: Path, digest: str, size: int) -> None:
    """Monolithic upload, body streamed from the file: POST uploads/, then PUT <Location>&digest=."""
    conn = _loopback_conn(registry.host)
    try:
        conn.request("HEAD", f"/v2/{repo}/blobs/{digest}")
        resp = conn.getresponse()
        resp.read()
        if resp.status == 200:
            return
        conn.request("POST", f"/v2/{repo}/blobs/uploads/", body=b"", headers={"Content-Length": "0"})
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 202:
            raise RuntimeError(f"start upload to {repo}: HTTP {resp.status}: {body[:300]!r}")
        location = urllib.parse.urlsplit(resp.getheader("Location") or "")
        if location.netloc and location.netloc != registry.host:
            raise RuntimeError(f"registry sent upload to {location.netloc}, not {registry.host}")
        query = "&".join(q for q in (location.query, "digest=" + urllib.parse.quote(digest)) if q)
        with open(path, "rb") as fh:
            conn.request(
                "PUT",
                f"{location.path}?{query}",
                body=fh,
                headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            )
            resp = conn.getresponse()
            body = resp.read()
        if resp.status != 201:
            raise RuntimeError(f"upload {digest} to {repo}: HTTP {resp.status}: {body[:300]!r}")
    finally:
        conn.close()


def image_config(layers: Sequence[LayerBlob]) -> bytes:
    cfg = {
        "architecture": "amd64",
        "os": "linux",
        "created": FIXED_CREATED,
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/bin/sh"],
        },
        "history": [
            {"created": FIXED_CREATED, "created_by": f"/bin/sh -c #(nop) ADD bench-layer{i}.tar /"}
            for i in range(len(layers))
        ],
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
    }
    return json.dumps(cfg, sort_keys=True, separators=(",", ":")).encode()


def push_generated_image(registry: Registry, spec: ImageSpec, cache_dir: Path) -> PushedImage:
    layers = tuple(cached_layer(ls, cache_dir) for ls in spec.layers)
    t0 = time.monotonic()
    for layer in layers:
        push_blob_file(registry, spec.repo, layer.path, layer.digest, layer.size)
    config = image_config(layers)
    registry.push_blob(spec.repo, config)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": DOCKER_CONFIG, "size": len(config), "digest": sha256_digest(config)},
            "layers": [
                {"mediaType": DOCKER_LAYER_GZIP, "size": layer.size, "digest": layer.digest}
                for layer in layers
            ],
        },
        indent=3,
    ).encode()
    digest = registry.push_manifest(spec.repo, spec.tag, manifest, DOCKER_MANIFEST)
    image = PushedImage(spec.name, registry.host, spec.repo, spec.tag, layers, len(config), digest)
    log(
        f"pushed {spec.name}: {image.ref}:{spec.tag}, {len(layers)} layer(s), "
        f"{image.compressed_bytes / MiB:.1f} MiB compressed / {image.uncompressed_bytes / MiB:.1f} MiB "
        f"uncompressed, in {time.monotonic() - t0:.1f}s"
    )
    return image


def fetch_images(args: argparse.Namespace) -> list[ImageSpec]:
    """The images of single-image fetches: the `fetch` and `display` scenarios and the profile."""
    if args.quick:
        big_mb, five_mb, big_cap, five_cap = float(args.big_mb or 24), 4.0, 4.0, 1.0
    else:
        big_mb, five_mb, big_cap, five_cap = float(args.big_mb or 400), 20.0, 20.0, 5.0
    return [
        ImageSpec("big", "bench/big", "v1", (LayerSpec(big_mb, seed=400, max_file_mb=big_cap),)),
        ImageSpec(
            "five",
            "bench/five",
            "v1",
            tuple(LayerSpec(five_mb, seed=500 + i, max_file_mb=five_cap) for i in range(5)),
        ),
        # Next to nothing to move: its times are each tool's fixed costs (start-up, resolving, writing).
        ImageSpec("tiny", "bench/tiny", "v1", (LayerSpec(0.1, seed=600, max_file_mb=0.1),), targets=False),
    ]
