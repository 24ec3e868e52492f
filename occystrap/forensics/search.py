"""`search`: paths (glob or regex) and file contents (regex) in every layer, deleted and
overwritten versions included, each match marked with whether the final filesystem still
holds it.

Layers are searched in parallel threads (the order of matches does not depend on it); their
path listings are then merged in layer order to tell what survives.

JSON form (`SearchResult.to_json`, one object per match, in layer then tar order; stable):

    {"kind": "path" | "content",
     "layer": 1, "digest": "sha256:…",     the layer holding the match
     "path": "/etc/motd",
     "type": "file",                       member type; "whiteout" for a deletion of this path
     "present": true,                      the final filesystem holds this layer's version of the
                                           path (for a whiteout: the path is still absent)
     "offset": 1234, "line": 7,            content only: byte offset and 1-based line
     "text": "…the matching line…"}        content only: cut to 200 characters around the match
"""

from __future__ import annotations

import fnmatch
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from occystrap.concurrency import thread_map
from occystrap.errors import UsageError
from occystrap.forensics import grep
from occystrap.forensics.history import Merger, Version
from occystrap.forensics.layers import LayerRef, OpenLayer
from occystrap.forensics.members import Member, walk_layer


@dataclass(frozen=True, slots=True)
class Match:
    kind: str  # "path" | "content"
    layer: int
    digest: str
    path: str
    type: str
    present: bool
    offset: int | None = None
    line: int | None = None
    text: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.kind,
            "layer": self.layer,
            "digest": self.digest,
            "path": self.path,
            "type": self.type,
            "present": self.present,
        }
        if self.kind == "content":
            out.update(offset=self.offset, line=self.line, text=self.text)
        return out


@dataclass(frozen=True)
class SearchResult:
    matches: tuple[Match, ...]

    def to_json(self) -> list[dict[str, Any]]:
        return [m.to_json() for m in self.matches]


@dataclass(frozen=True)
class Query:
    """path_glob: fnmatch on the absolute path ("/usr/bin/*"; "*" also crosses "/").
    path_regex: re.search on the absolute path. content: a regex over the bytes of regular
    files (a str is UTF-8 encoded; add (?i) etc. as needed); with a path pattern too, only
    matching paths are searched. Binary files (a NUL in the first 8 KiB) are skipped unless
    include_binary. At most max_hits_per_file content matches per file (None: all); a match
    longer than grep.OVERLAP may be missed where it crosses a 1 MiB chunk border."""

    path_glob: str | None = None
    path_regex: str | None = None
    content: str | bytes | None = None
    include_binary: bool = False
    max_hits_per_file: int | None = 100

    def compiled(self) -> tuple[re.Pattern[str] | None, re.Pattern[bytes] | None]:
        if self.path_glob is None and self.path_regex is None and self.content is None:
            raise UsageError("search needs a path pattern or a content pattern")
        try:
            path = None
            if self.path_glob is not None:
                path = re.compile(fnmatch.translate(self.path_glob))
            elif self.path_regex is not None:
                path = re.compile(self.path_regex)
            content = None
            if self.content is not None:
                raw = self.content.encode() if isinstance(self.content, str) else self.content
                content = re.compile(raw)
        except re.error as exc:
            raise UsageError(f"bad pattern: {exc}") from None
        return path, content


@dataclass(frozen=True, slots=True)
class _Found:
    kind: str
    path: str  # root-relative
    type: str
    hit: grep.Hit | None = None


def search(
    layers: Sequence[LayerRef], open_layer: OpenLayer, query: Query, *, workers: int = 4
) -> SearchResult:
    """Path matches (no content pattern) or content matches, in layer then tar order. Layers are
    read in `workers` threads at once (each to its end, so each is verified)."""
    path_re, content_re = query.compiled()
    stop = threading.Event()

    def one_layer(ref: LayerRef) -> tuple[list[Member], list[_Found]]:
        members: list[Member] = []
        found: list[_Found] = []
        with open_layer(ref) as stream:
            for m, data in walk_layer(stream):
                if stop.is_set():
                    raise _Stopped
                members.append(m)
                if m.kind == "opaque":
                    continue
                path = m.target if m.kind == "whiteout" else m.path
                if path_re is not None and not path_re.search("/" + path):
                    continue
                if content_re is None:
                    found.append(_Found("path", path, m.kind))
                elif data is not None:
                    hits = grep.scan(
                        data, content_re, include_binary=query.include_binary, limit=query.max_hits_per_file
                    )
                    found.extend(_Found("content", path, m.kind, h) for h in hits or ())
        return members, found

    merger = Merger()
    per_layer: list[list[_Found]] = []
    for ref, (members, found) in zip(layers, thread_map(one_layer, layers, workers, stop.set), strict=True):
        merger.apply(ref.index, members)  # in layer order, whatever order threads finish
        per_layer.append(found)
    final = merger.final()
    return SearchResult(
        tuple(
            _match(ref, f, final.get(f.path))
            for ref, found in zip(layers, per_layer, strict=True)
            for f in found
        )
    )


class _Stopped(Exception):
    """Another layer failed: this one stops early (and skips its digest check)."""


def _match(ref: LayerRef, f: _Found, final: Version | None) -> Match:
    if f.type == "whiteout":
        present = final is None
    else:
        present = final is not None and final.layer == ref.index and not final.implicit
    hit = f.hit
    return Match(
        kind=f.kind,
        layer=ref.index,
        digest=ref.digest,
        path="/" + f.path,
        type=f.type,
        present=present,
        offset=hit.offset if hit else None,
        line=hit.line if hit else None,
        text=hit.text if hit else None,
    )
