"""The floor of a mirror's re-run: a bare aiohttp loop that HEADs every tag of a spec, 16 at
once (occystrap's resolve limit), and does nothing else. A re-run must ask for each tag at
least this way, so the `tags400` scenario reports occystrap's re-run against it.

    python -m benchmarks.headfloor SPEC.yaml      # the spec's one image, every tag
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import aiohttp
import yaml

ACCEPT = ",".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)
PARALLEL = 16


async def head_all(host: str, repo: str, tags: list[str]) -> None:
    limit = asyncio.Semaphore(PARALLEL)
    async with aiohttp.ClientSession() as session:

        async def one(tag: str) -> None:
            async with (
                limit,
                session.head(f"http://{host}/v2/{repo}/manifests/{tag}", headers={"Accept": ACCEPT}) as resp,
            ):
                if resp.status != 200:
                    raise SystemExit(f"HEAD {repo}:{tag}: HTTP {resp.status}")

        await asyncio.gather(*(one(t) for t in tags))


def main() -> None:
    doc = yaml.safe_load(Path(sys.argv[1]).read_text())
    image = doc["images"][0]
    host, repo = image["name"].split("/", 1)
    asyncio.run(head_all(host, repo, [str(t) for t in image["tags"]]))


if __name__ == "__main__":
    main()
