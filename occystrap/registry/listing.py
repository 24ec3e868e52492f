"""Listing a repository: its tags (following `Link` pagination) and what refers to a manifest
(the OCI 1.1 referrers API)."""

from __future__ import annotations

import functools
from urllib.parse import urlencode, urlsplit

from occystrap.errors import ManifestError, NotFoundError, TransferError
from occystrap.mediatypes import OCI_INDEX
from occystrap.model import Descriptor, load_json, parse_index
from occystrap.reference import Reference
from occystrap.registry.client import RegistryClient, read_capped


async def tags(client: RegistryClient, ref: Reference) -> list[str]:
    """Every tag of the repository, following `Link` pagination."""
    found: list[str] = []
    path: str | None = f"/v2/{ref.repository}/tags/list?n=1000"
    while path:
        page, path = await client.retry.run(
            functools.partial(tags_page, client, ref, path), f"{client.base_url(ref)}{path}"
        )
        found.extend(page)
    return found


async def tags_page(client: RegistryClient, ref: Reference, path: str) -> tuple[list[str], str | None]:
    async with client.request("GET", ref, path) as resp:
        if resp.status == 404:
            raise NotFoundError(f"{ref.full_name} not found on {ref.registry}")
        if resp.status != 200:
            raise TransferError(f"GET {path} on {ref.registry}: HTTP {resp.status}")
        body = await resp.read()
        link = resp.headers.get("Link")
    doc = load_json(body, f"tag list of {ref.full_name}")
    page = doc.get("tags") if isinstance(doc, dict) else None
    if not isinstance(doc, dict) or not isinstance(page, list | None):
        raise ManifestError(f"malformed tag list of {ref.full_name}: no list of tags")
    return [t for t in page or [] if isinstance(t, str)], next_page(link)


async def referrers(
    client: RegistryClient, ref: Reference, digest: str, artifact_type: str | None = None
) -> list[Descriptor] | None:
    """What refers to digest, by the OCI 1.1 referrers API; None where the registry has no
    such API (distribution 2.8 answers 404): then the tag schema is the way."""
    path = f"/v2/{ref.repository}/referrers/{digest}"
    if artifact_type:
        path += "?" + urlencode({"artifactType": artifact_type})

    async def once() -> list[Descriptor] | None:
        async with client.request("GET", ref, path, {"Accept": OCI_INDEX}) as resp:
            if resp.status in (404, 405, 400):
                return None
            if resp.status != 200:
                raise TransferError(f"GET {path} on {ref.registry}: HTTP {resp.status}")
            body = await read_capped(resp, f"referrers of {digest}")
            filtered = "artifactType" in resp.headers.get("OCI-Filters-Applied", "")
        found = parse_index(body, f"referrers of {ref.full_name}@{digest}")
        if artifact_type and not filtered:
            found = [d for d in found if d.artifact_type == artifact_type]
        return found

    result: list[Descriptor] | None = await client.retry.run(once, f"{client.base_url(ref)}{path}")
    return result


def next_page(link: str | None) -> str | None:
    """The path of a `Link: <…>; rel="next"` header, query included."""
    if not link or 'rel="next"' not in link:
        return None
    target = link.split(";")[0].strip().strip("<>")
    parts = urlsplit(target)
    return parts.path + (f"?{parts.query}" if parts.query else "")
