"""A regex over a file's bytes in bounded memory: chunks, with an overlap so that matches
across a chunk border are found, and never reported twice."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import IO

CHUNK = 1024 * 1024
OVERLAP = 4096  # a match up to this long is always found whole
BINARY_PROBE = 8192  # as git and grep do: a NUL in the first 8 KiB means binary
MAX_TEXT = 200
CONTEXT = 64  # bytes kept before a window, for anchors and lookbehinds


@dataclass(frozen=True, slots=True)
class Hit:
    offset: int  # of the match's first byte in the file
    line: int  # 1-based
    text: str  # the matching line (decoded, invalid bytes replaced), cut to MAX_TEXT around the match


def scan(
    data: IO[bytes],
    pattern: re.Pattern[bytes],
    *,
    include_binary: bool = False,
    limit: int | None = None,
    chunk: int = CHUNK,
    overlap: int = OVERLAP,
) -> list[Hit] | None:
    """Matches of pattern in data, or None for a binary file skipped. At most `limit` hits.

    Every match start belongs to exactly one window: a window owns the starts up to `overlap`
    bytes before its end (all of them at EOF); the rest come again in the next window, behind
    a little of what preceded them, so that ^, \\b and short lookbehinds see the real context.
    """
    head = data.read(BINARY_PROBE)
    if not include_binary and b"\0" in head:
        return None
    blocks = itertools.chain(
        (head[i : i + chunk] for i in range(0, len(head), chunk)),
        iter(lambda: data.read(chunk), b""),
        [b""],  # the end: the last window owns every start left
    )
    hits: list[Hit] = []
    prefix = b""  # context, then the starts the previous window did not own
    own_from = 0  # where in the window this window's starts begin
    base = 0  # file offset of window[0]
    lines = _LineCounter()
    start_at = 0  # window index where the next match may start (past the last one)
    for block in blocks:
        window = prefix + block
        own_to = len(window) if not block else max(own_from, len(window) - overlap)
        for m in pattern.finditer(window, max(start_at, own_from)):
            if m.start() >= own_to:
                break
            if m.end() == m.start():
                continue  # an empty match says nothing about the file
            hits.append(Hit(base + m.start(), lines.line_at(window, m.start()), _text(window, m.start())))
            start_at = m.end()
            if limit is not None and len(hits) >= limit:
                return hits
        keep = max(0, own_to - CONTEXT)
        lines.advance(window, keep)
        base += keep
        prefix = window[keep:]
        own_from = own_to - keep
        start_at = max(0, start_at - keep)
    return hits


class _LineCounter:
    """Newlines before the current window, and counted so far inside it, so that each byte
    is counted once however many matches a window holds."""

    def __init__(self) -> None:
        self.before = 0
        self._pos = 0
        self._count = 0

    def line_at(self, window: bytes, pos: int) -> int:
        self._count += window.count(b"\n", self._pos, pos)
        self._pos = pos
        return self.before + self._count + 1

    def advance(self, window: bytes, cut: int) -> None:
        self.before += window.count(b"\n", 0, cut)
        self._pos = self._count = 0


def _text(window: bytes, pos: int) -> str:
    start = window.rfind(b"\n", 0, pos) + 1
    end = window.find(b"\n", pos)
    end = len(window) if end < 0 else end
    # Long lines (minified code, one-line JSON): keep the match in view.
    start = max(start, pos - MAX_TEXT // 4)
    return window[start : min(end, start + MAX_TEXT)].decode("utf-8", "replace").rstrip("\r")
