"""forensics.search and forensics.grep: paths and contents in every layer, deleted ones too."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from occystrap.errors import UsageError
from occystrap.forensics import grep
from occystrap.forensics.search import Query, search
from tests.support import images
from tests.support.forensics import Stored, store
from tests.support.images import directory, file, whiteout


def _secret_layers() -> list[list[images.Entry]]:
    filler = b"".join(b"line %d of filler text\n" % i for i in range(5000))  # ~120 KB
    return [
        [
            directory("app"),
            file("app/config.env", b"USER=app\nAPI_KEY=sk-live-0001\nDEBUG=0\n"),
            file("app/big.log", filler + b"token=sk-live-0002 in a big file\n" + filler),
            file("app/blob.bin", b"\0\1\2sk-live-0003\n"),
            directory("usr"),
            directory("usr/bin"),
            file("usr/bin/tool", b"#!/bin/sh\n"),
        ],
        [directory("app"), whiteout("app/config.env"), file("app/notes", b"nothing here\n")],
        [directory("usr"), directory("usr/bin"), file("usr/bin/tool", b"#!/bin/sh\necho sk-live-0004\n")],
    ]


@pytest.fixture
def stored(tmp_path: Path) -> Stored:
    return store(tmp_path, _secret_layers())


def _rows(result: object, *fields: str) -> list[tuple[object, ...]]:
    return [tuple(getattr(m, f) for f in fields) for m in result.matches]  # type: ignore[attr-defined]


def test_content_in_deleted_overwritten_and_present_files(stored: Stored) -> None:
    result = search(stored.refs, stored.open_layer(), Query(content=r"sk-live-\d+"))
    rows = _rows(result, "layer", "path", "line", "present", "text")
    assert rows == [
        (0, "/app/config.env", 2, False, "API_KEY=sk-live-0001"),  # deleted in layer 1
        (0, "/app/big.log", 5001, True, "token=sk-live-0002 in a big file"),
        (2, "/usr/bin/tool", 2, True, "echo sk-live-0004"),
    ]  # blob.bin is binary: skipped
    [big] = [m for m in result.matches if m.path == "/app/big.log"]
    filler_len = len(b"".join(b"line %d of filler text\n" % i for i in range(5000)))
    assert big.offset == filler_len + len(b"token=")
    assert all(m.digest == stored.refs[m.layer].digest for m in result.matches)


def test_binary_files_are_searched_when_asked(stored: Stored) -> None:
    result = search(stored.refs, stored.open_layer(), Query(content=b"sk-live-0003", include_binary=True))
    assert _rows(result, "path", "offset", "line") == [("/app/blob.bin", 3, 1)]


def test_path_glob_and_regex(stored: Stored) -> None:
    result = search(stored.refs, stored.open_layer(), Query(path_glob="/usr/bin/*"))
    assert _rows(result, "layer", "path", "type", "present") == [
        (0, "/usr/bin/tool", "file", False),  # overwritten by layer 2
        (2, "/usr/bin/tool", "file", True),
    ]
    result = search(stored.refs, stored.open_layer(), Query(path_regex=r"config\.env$"))
    assert _rows(result, "layer", "type", "present") == [(0, "file", False), (1, "whiteout", True)]


def test_path_pattern_narrows_the_content_search(stored: Stored) -> None:
    result = search(stored.refs, stored.open_layer(), Query(path_glob="/usr/*", content="sk-live"))
    assert _rows(result, "path", "layer") == [("/usr/bin/tool", 2)]


def test_threads_do_not_change_the_result(stored: Stored) -> None:
    query = Query(path_glob="*", content="sk-live|filler text", max_hits_per_file=None)
    one = search(stored.refs, stored.open_layer(), query, workers=1)
    many = search(stored.refs, stored.open_layer(), query, workers=3)
    assert one == many and len(one.matches) > 10000
    assert sorted(stored.opens.values()) == [2, 2, 2]


def test_json_form(stored: Stored) -> None:
    doc = json.loads(json.dumps(search(stored.refs, stored.open_layer(), Query(content="API_KEY")).to_json()))
    assert doc == [
        {
            "kind": "content",
            "layer": 0,
            "digest": stored.refs[0].digest,
            "path": "/app/config.env",
            "type": "file",
            "present": False,
            "offset": 9,
            "line": 2,
            "text": "API_KEY=sk-live-0001",
        }
    ]
    doc = search(stored.refs, stored.open_layer(), Query(path_glob="/app/notes")).to_json()
    assert doc == [
        {
            "kind": "path",
            "layer": 1,
            "digest": stored.refs[1].digest,
            "path": "/app/notes",
            "type": "file",
            "present": True,
        }
    ]


def test_bad_queries_are_usage_errors(stored: Stored) -> None:
    with pytest.raises(UsageError):
        search(stored.refs, stored.open_layer(), Query())
    with pytest.raises(UsageError, match="bad pattern"):
        search(stored.refs, stored.open_layer(), Query(content="(unclosed"))


# -- grep: chunks and overlaps -----------------------------------------------------------------


def _naive(data: bytes, pattern: re.Pattern[bytes]) -> list[tuple[int, int]]:
    return [
        (m.start(), data.count(b"\n", 0, m.start()) + 1)
        for m in pattern.finditer(data)
        if m.end() > m.start()
    ]


def test_a_match_across_a_chunk_border_is_found_once() -> None:
    data = b"x" * 95 + b"NEEDLE" + b"y" * 200
    hits = grep.scan(io.BytesIO(data), re.compile(b"NEEDLE"), chunk=100, overlap=16)
    assert hits is not None and [(h.offset, h.line) for h in hits] == [(95, 1)]
    assert "NEEDLE" in hits[0].text


def test_long_lines_keep_the_match_in_view() -> None:
    data = b"a" * 5000 + b"needle" + b"b" * 5000
    [hit] = grep.scan(io.BytesIO(data), re.compile(b"needle")) or []
    assert "needle" in hit.text and len(hit.text) == grep.MAX_TEXT


@settings(max_examples=400, deadline=None)
@given(
    text=st.lists(st.sampled_from([b"ab", b"a", b"b", b"\n", b"xy", b"abab"]), max_size=200).map(b"".join),
    pattern=st.sampled_from([b"ab", b"a+b", b"b\na", b"(ab)+", b"x", b"^a", b"b$", rb"\bxy", rb"(?<=y)a"]),
    chunk=st.integers(1, 64),
    overlap=st.integers(8, 40),
)
def test_chunked_scan_equals_a_whole_file_scan(text: bytes, pattern: bytes, chunk: int, overlap: int) -> None:
    compiled = re.compile(pattern, re.MULTILINE)
    hits = grep.scan(io.BytesIO(text), compiled, chunk=chunk, overlap=overlap)
    assert hits is not None
    got = [(h.offset, h.line) for h in hits]
    # Matches no longer than the overlap are found as a whole-file scan finds them.
    if all(len(m.group()) <= overlap for m in compiled.finditer(text)):
        assert got == _naive(text, compiled)
