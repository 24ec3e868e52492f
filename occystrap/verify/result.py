"""What verify finds: Problems (one per blob or inconsistency) and the Result of a run."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from occystrap.errors import IntegrityError
from occystrap.ui.units import human, plural

# Problem kinds, stable for --json consumers.
MISSING = "missing"
SIZE = "size"
DIGEST = "digest"
CORRUPT = "corrupt"
DIFF_ID = "diff_id"
MANIFEST = "manifest"
TAGS = "tags"
CATALOG = "catalog"
LAYOUT = "layout"


@dataclass(frozen=True)
class Problem:
    """One thing wrong: where (a file in the layout, or an entry of one) and what."""

    where: str
    message: str
    kind: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"

    def to_json(self) -> dict[str, str]:
        return {"where": self.where, "kind": self.kind, "message": self.message}


@dataclass(frozen=True)
class Result:
    path: str
    layout: str  # "tarball", "directory" or "merged directory"
    images: int  # image references the layout lists
    manifests: int  # distinct image manifests read
    blobs: int  # blob files re-hashed
    bytes: int  # their bytes
    diff_ids: int  # layers decompressed and compared with their diff_id
    problems: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        head = "OK" if self.ok else f"FAILED ({len(self.problems)} problem(s))"
        return (
            f"{head}: {self.path} ({self.layout}): {plural(self.images, 'image')}, "
            + (f"{plural(self.manifests, 'manifest')}, " if self.manifests else "")
            + f"{plural(self.blobs, 'blob')} ({human(self.bytes)}) "
            f"re-hashed, {plural(self.diff_ids, 'diff_id')} checked"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "path": self.path,
            "layout": self.layout,
            "images": self.images,
            "manifests": self.manifests,
            "blobs": self.blobs,
            "bytes": self.bytes,
            "diff_ids": self.diff_ids,
            "problems": [p.to_json() for p in self.problems],
        }


class VerifyFailedError(IntegrityError):
    """verify found problems (each already reported on its own line)."""


def report_json(result: Result) -> str:
    return json.dumps(result.to_json(), indent=2)
