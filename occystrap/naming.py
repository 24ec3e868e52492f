"""Where an image lands in a registry destination: REGISTRY/PREFIX/<its repository path>.

`127.0.0.1:5000/team/app:v1` pushed to `10.0.0.5:5000/mirror` becomes
`10.0.0.5:5000/mirror/team/app:v1`. The source host is dropped unless asked to keep it
(then `mirror/127.0.0.1_5000/team/app`, made a valid path component); `--map OLD=NEW`
rewrites a repository prefix first (`--map team=apps`: `team/app` → `apps/app`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from occystrap import reference
from occystrap.errors import BadReferenceError, UsageError
from occystrap.reference import Reference


@dataclass(frozen=True)
class Placement:
    registry: str
    prefix: str = ""
    keep_host: bool = False
    maps: tuple[tuple[str, str], ...] = ()

    def place(self, ref: Reference) -> Reference:
        path = ref.repository
        for old, new in self.maps:
            if path == old or path.startswith(old + "/"):
                path = (new + path[len(old) :]).strip("/")
                break
        if self.keep_host:
            path = f"{host_component(ref.registry)}/{path}"
        if self.prefix:
            path = f"{self.prefix}/{path}"
        placed = Reference(self.registry, path, ref.tag, ref.digest)
        try:
            reference.parse(str(placed))
        except BadReferenceError as exc:
            raise UsageError(f"{ref} cannot be placed at {placed}: {exc}") from None
        return placed


def host_component(host: str) -> str:
    """A registry host as one valid repository path component: `127.0.0.1:5000` → `127.0.0.1_5000`."""
    return re.sub(r"[^a-z0-9._-]+", "_", host.lower()).strip("._-") or "host"


def parse_maps(items: Sequence[str]) -> tuple[tuple[str, str], ...]:
    out = []
    for item in items:
        old, sep, new = item.partition("=")
        if not sep or not old.strip("/"):
            raise UsageError(f"--map expects OLD=NEW (repository prefixes), not {item!r}")
        out.append((old.strip("/"), new.strip("/")))
    return tuple(out)
