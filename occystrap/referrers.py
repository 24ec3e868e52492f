"""What refers to a manifest: signatures, attestations, SBOMs (OCI 1.1 `subject`).

Two ways, as regclient and cosign use them: the referrers API where the registry has it
(`GET /v2/<name>/referrers/<digest>`), else the tag schema: the tag `sha256-<hex>` holds an
index of referrers, and cosign's `sha256-<hex>.sig`, `.att` and `.sbom` tags hold its
signature, attestation and SBOM manifests.
"""

from __future__ import annotations

from collections.abc import Sequence

from occystrap.digest import Digest
from occystrap.reference import Reference
from occystrap.sources.base import HasReferrers, Source

COSIGN_SUFFIXES = (".sig", ".att", ".sbom")


def schema_tags(subject: str, tags: Sequence[str]) -> list[str]:
    """The tags that by the tag schema refer to subject, in a stable order."""
    base = "sha256-" + Digest.parse(subject).hex
    wanted = {base, *(base + s for s in COSIGN_SUFFIXES)}
    return sorted(t for t in tags if t in wanted)


async def keys(source: Source, repo: Reference, subject: str, tags: Sequence[str]) -> list[str]:
    """Tags or digests to carry for what refers to subject in repo: the API's answers first,
    then the tag schema's (a registry that has the API may also hold cosign's tags)."""
    found: list[str] = []
    if isinstance(source, HasReferrers):
        answered = await source.referrers(repo, subject)
        found += [d.digest for d in answered or []]
    found += schema_tags(subject, tags)
    return list(dict.fromkeys(found))
