"""`occystrap-delta.json`: what makes a bundle a delta, and what it needs from its base.

A delta bundle is a bundle tarball (the same Docker 25 / OCI layout as any other) that holds
every manifest, index and config of its images but only the layer (and artifact) blobs its
base did not hold. This member says so::

    {
      "occystrap_delta": 1,
      "docker_loadable": false,
      "note": "…",
      "lock_digest": "sha256:…",          # sha256 of this bundle's own lock file bytes
      "base": {
        "from": "v1.tar",                   # what --since named (its file name), for people
        "lock_digest": "sha256:…",          # sha256 of the base's lock file bytes, or null
        "repositories": ["<registry>/<repository>", …],   # where the base's images lived
        "blobs": [{"digest": "sha256:…", "size": 123}, …]  # left out: the base holds them
      }
    }

`base.blobs` is the authority: `import` checks that exactly these are at the destination,
`verify` does not count them as missing. The lock digests let a person (or a script) match a
delta with the bundle or lock it was made against. Sorted, stable bytes for the same content.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from occystrap.digest import Digest
from occystrap.errors import ManifestError
from occystrap.model import load_json
from occystrap.sized import SizedDigest, parse_list, to_list

DELTA_NAME = "occystrap-delta.json"
FORMAT = 1
BASE_REASON = "base"  # why the engine skips a blob the base holds (BlobSkipped.reason)
NOTE = (
    "A delta bundle: every manifest, index and config of its images, but only the layer blobs"
    " its base did not hold. It does not load on its own (docker/podman load fail on the"
    " missing layers): `occystrap import` it into the directory or registry that holds the base."
)


BaseBlob = SizedDigest  # a blob the base holds, which a delta leaves out


@dataclass(frozen=True)
class DeltaMeta:
    base_from: str
    base_lock_digest: str | None
    base_repositories: tuple[str, ...]
    base_blobs: tuple[BaseBlob, ...]
    lock_digest: str | None

    @property
    def base_bytes(self) -> int:
        return sum(b.size for b in self.base_blobs)

    @property
    def base_digests(self) -> frozenset[str]:
        return frozenset(b.digest for b in self.base_blobs)

    def describe(self) -> str:
        """The base, as error messages and summaries name it."""
        lock = f", lock {Digest.parse(self.base_lock_digest).short}" if self.base_lock_digest else ""
        return f"base {self.base_from or '?'}{lock}"

    def to_json(self) -> dict[str, Any]:
        return {
            "occystrap_delta": FORMAT,
            "docker_loadable": not self.base_blobs,
            "note": NOTE,
            "lock_digest": self.lock_digest,
            "base": {
                "from": self.base_from,
                "lock_digest": self.base_lock_digest,
                "repositories": sorted(self.base_repositories),
                "blobs": to_list(self.base_blobs),
            },
        }

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_json(), indent=2).encode() + b"\n"


def _digest_or_none(value: Any, where: str) -> str | None:
    if value is None:
        return None
    try:
        return Digest.parse(value)
    except ValueError as exc:
        raise ManifestError(f"malformed {where}: {exc}") from None


def parse(data: bytes, where: str) -> DeltaMeta:
    doc = load_json(data, where)
    if not isinstance(doc, dict) or doc.get("occystrap_delta") != FORMAT:
        version = doc.get("occystrap_delta") if isinstance(doc, dict) else None
        raise ManifestError(f"{where}: not a delta description this occystrap knows (format {version!r})")
    base = doc.get("base")
    if not isinstance(base, dict):
        raise ManifestError(f"malformed {where}: 'base' must hold a 'blobs' list")
    blobs = parse_list(base.get("blobs"), where, "base.blobs")
    repos = base.get("repositories") or []
    if not isinstance(repos, list) or not all(isinstance(r, str) for r in repos):
        raise ManifestError(f"malformed {where}: base.repositories must be a list of names")
    source = base.get("from") or ""
    return DeltaMeta(
        str(source),
        _digest_or_none(base.get("lock_digest"), where),
        tuple(repos),
        tuple(blobs),
        _digest_or_none(doc.get("lock_digest"), where),
    )
