"""`occystrap-shard.json`: what makes a merged directory one shard of a mirror, on purpose.

A shard's DEST holds every manifest, index and config of the plan but only the layer (and
artifact) blobs of its share. This file says so, before the first blob is written::

    {
      "occystrap_shard": 1,
      "note": "…",
      "shard": {"index": 2, "count": 4},      # shard 2 of 4, counted from 1
      "plan_digest": "sha256:…",              # sha256 of the plan's lock bytes: every shard's is the same
      "blobs": [{"digest": "sha256:…", "size": 123}, …],      # this shard's share
      "elsewhere": [{"digest": "sha256:…", "size": 456}, …]   # the other shards' shares
    }

`verify` excuses the `elsewhere` blobs (and says the output is partial); `merge` reads it to
name a shard whose output is missing. Sorted, stable bytes for the same plan and shard.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from occystrap.digest import Digest
from occystrap.errors import ManifestError
from occystrap.model import Descriptor, load_json
from occystrap.shard.split import Shard
from occystrap.sized import SizedDigest, parse_list, to_list
from occystrap.ui.units import human

MARKER_NAME = "occystrap-shard.json"
FORMAT = 1
NOTE = (
    "One shard of a mirror: every manifest, index and config of the plan, but only this shard's"
    " layer blobs; the other shards hold the rest. It is partial on purpose: `occystrap merge` the"
    " outputs of all shards into one merged directory or bundle."
)


Blob = SizedDigest


@dataclass(frozen=True)
class ShardMeta:
    shard: Shard
    plan_digest: Digest
    blobs: tuple[Blob, ...]
    elsewhere: tuple[Blob, ...]

    @classmethod
    def of(
        cls, shard: Shard, plan_digest: Digest, own: list[Descriptor], others: list[Descriptor]
    ) -> ShardMeta:
        return cls(
            shard,
            plan_digest,
            tuple(Blob(d.digest, d.size) for d in own),
            tuple(Blob(d.digest, d.size) for d in others),
        )

    def describe(self) -> str:
        """`shard 2/4 of plan sha256:abcdef012345`."""
        return f"shard {self.shard} of plan {self.plan_digest[:19]}"

    def partial(self) -> str:
        """Why a verify of this output alone finds blobs missing, in a few words."""
        size = sum(b.size for b in self.elsewhere)
        return (
            f"{self.describe()}, partial on purpose: {len(self.elsewhere)} blob(s), {human(size)}, are in the"
            " other shards' outputs; `occystrap merge` them all"
        )

    def to_bytes(self) -> bytes:
        doc = {
            "occystrap_shard": FORMAT,
            "note": NOTE,
            "shard": {"index": self.shard.index, "count": self.shard.count},
            "plan_digest": self.plan_digest,
            "blobs": to_list(self.blobs),
            "elsewhere": to_list(self.elsewhere),
        }
        return json.dumps(doc, indent=2).encode() + b"\n"


def _blobs(doc: dict[str, Any], key: str, where: str) -> tuple[Blob, ...]:
    return parse_list(doc.get(key), where, repr(key))


def parse(data: bytes, where: str) -> ShardMeta:
    doc = load_json(data, where)
    if not isinstance(doc, dict) or doc.get("occystrap_shard") != FORMAT:
        version = doc.get("occystrap_shard") if isinstance(doc, dict) else None
        raise ManifestError(f"{where}: not a shard description this occystrap knows (format {version!r})")
    shard = doc.get("shard")
    index = shard.get("index") if isinstance(shard, dict) else None
    count = shard.get("count") if isinstance(shard, dict) else None
    if not (isinstance(index, int) and isinstance(count, int) and 1 <= index <= count):
        raise ManifestError(f"malformed {where}: 'shard' must be {{'index': I, 'count': N}}, 1 <= I <= N")
    try:
        plan = Digest.parse(doc.get("plan_digest"))
    except ValueError as exc:
        raise ManifestError(f"malformed {where}: plan_digest: {exc}") from None
    return ShardMeta(Shard(index, count), plan, _blobs(doc, "blobs", where), _blobs(doc, "elsewhere", where))
