"""How the displays show pull quotas and where blobs came from: synthetic events, no network."""

from __future__ import annotations

import io
import json

from rich.console import Console

from occystrap.events import BlobDone, BlobQueued, BlobSource, BlobStarted, ImageCommitted, PullQuota
from occystrap.ui.progress import JsonReporter, PlainReporter, RichReporter
from occystrap.ui.units import short

IMG = "docker.io/library/busybox:latest"
HUB = "docker.io"
MIRROR = "mirror.example:5000/hub"


def digest(n: int) -> str:
    return f"sha256:{n:012x}{'f' * 52}"


def _fetch(
    r: PlainReporter | RichReporter | JsonReporter, n: int, size: int, where: str, mirror: bool
) -> None:
    r.emit(BlobQueued(digest(n), size, IMG))
    r.emit(BlobStarted(digest(n), size))
    r.emit(BlobSource(digest(n), where, mirror))
    r.emit(BlobDone(digest(n), size))


def test_plain_lines_say_where_each_blob_came_from_and_the_quota() -> None:
    out = io.StringIO()
    r = PlainReporter(out)
    r.emit(PullQuota(HUB, 100, 100, 21600))
    _fetch(r, 1, 2_000_000, MIRROR, True)
    r.emit(PullQuota(HUB, 99, 100, 21600))  # a tenth of the limit per line, not one per pull
    _fetch(r, 2, 1_000_000, HUB, False)
    r.emit(PullQuota(HUB, 90, 100, 21600))
    r.emit(PullQuota(HUB, 9, 100, 21600))
    r.emit(PullQuota(HUB, 8, 100, 21600))  # the last tenth: every pull
    r.emit(ImageCommitted(IMG, "out.tar"))
    r.close()
    lines = out.getvalue().splitlines()
    assert [l for l in lines if l.startswith("pull quota")] == [
        "pull quota of docker.io: 100 of 100 left, window 6h",
        "pull quota of docker.io: 90 of 100 left, window 6h",
        "pull quota of docker.io: 9 of 100 left, window 6h",
        "pull quota of docker.io: 8 of 100 left, window 6h",
    ]
    fetched = [l for l in lines if l.startswith("fetched")]
    assert fetched[0].startswith(f"fetched {short(digest(1))} 2.0 MB")
    assert fetched[0].endswith(f"for busybox:latest from {MIRROR} (mirror)")
    assert fetched[1].endswith("for busybox:latest from docker.io")
    assert lines[-1].endswith(
        f"0 warnings; from {MIRROR} (mirror) 1 blob (2.0 MB), docker.io 1 blob (1.0 MB);"
        " pull quota of docker.io: 8 of 100 left, window 6h"
    )


def test_without_mirrors_or_quotas_the_lines_are_as_before() -> None:
    out = io.StringIO()
    r = PlainReporter(out)
    r.emit(BlobQueued(digest(1), 1000, IMG))
    r.emit(BlobDone(digest(1), 1000))
    r.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == f"fetched {short(digest(1))} 1.0 kB for busybox:latest"
    assert lines[-1].endswith("0 retries, 0 warnings")


def test_json_summary_carries_sources_and_quotas() -> None:
    out = io.StringIO()
    r = JsonReporter(out)
    r.emit(PullQuota(HUB, 3, 100, None, 30.0))
    _fetch(r, 1, 500, MIRROR, True)
    r.close()
    docs = [json.loads(l) for l in out.getvalue().splitlines()]
    assert docs[0] == {**docs[0], "event": "PullQuota", "registry": HUB, "remaining": 3, "limit": 100,
                       "window": None, "reset": 30.0}  # fmt: skip
    assert next(d for d in docs if d["event"] == "BlobSource")["source"] == MIRROR
    summary = docs[-1]
    assert summary["sources"] == {MIRROR: {"blobs": 1, "bytes": 500, "mirror": True}}
    assert summary["pull_quota"] == {HUB: {"remaining": 3, "limit": 100, "window": None, "reset": 30.0}}


def test_rich_display_prints_quota_lines_without_starting_the_live_rows() -> None:
    buf = io.StringIO()
    con = Console(file=buf, width=120, force_terminal=True, color_system=None)
    with RichReporter(con) as r:
        r.emit(PullQuota(HUB, 5, 100, 21600))
        assert not r.live.is_started  # `occystrap ratelimit` and friends draw no live region
        _fetch(r, 1, 1000, MIRROR, True)
    r.close()
    text = buf.getvalue()
    assert "pull quota of docker.io: 5 of 100 left, window 6h" in text
    assert f"from {MIRROR} (mirror) 1 blob (1.0 kB); pull quota of docker.io: 5 of 100 left" in text
