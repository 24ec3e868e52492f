"""The progress experience: rich rows on a terminal, plain lines in pipes, JSON lines, the summary.

Unit tests feed synthetic events (no network); the end-to-end tests run the real
CLI against the real registry, in a pipe and on a pseudo-terminal.
"""

from __future__ import annotations

import dataclasses
import fcntl
import inspect
import io
import json
import os
import pty
import random
import re
import select
import socket
import struct
import subprocess
import sys
import tarfile
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from occystrap import events
from occystrap.commands.common import Silent
from occystrap.events import (
    BlobDone,
    BlobProgress,
    BlobQueued,
    BlobRetry,
    BlobSkipped,
    BlobStarted,
    BlobVerifying,
    CommitStarted,
    Event,
    ImageCommitted,
    ImageResolved,
    RunStarted,
    Warning_,
)
from occystrap.ui import schema
from occystrap.ui.progress import JsonReporter, PlainReporter, RichReporter
from occystrap.ui.stats import Stats
from occystrap.ui.units import human, human_pair, short
from tests.helpers import ROOT, ok
from tests.support import images
from tests.support.faultproxy import Fault, FaultProxy
from tests.support.images import BuiltImage
from tests.support.registry import Registry

ANSI = re.compile(r"\x1b(\[[0-9;?]*[ -/]*[@-~]|\][^\x07]*\x07|[@-Z\\-_])")
HEX12 = re.compile(r"\b[0-9a-f]{12}\b")


def no_creds(tmp_path: Path) -> dict[str, str]:
    """No credentials from the host's docker config: the registry is anonymous."""
    return {"DOCKER_CONFIG": str(tmp_path / "no-docker-config")}


def plain_text(raw: str) -> str:
    return ANSI.sub("", raw).replace("\r", "")


# --------------------------------------------------------------------------
# Synthetic runs
# --------------------------------------------------------------------------


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += seconds


def digest(n: int) -> str:
    return f"sha256:{n:012x}{'f' * 52}"


IMG = "127.0.0.1:5000/team/app:v1"
OTHER = "127.0.0.1:5000/team/other:v2"


def console(width: int = 120, height: int = 30) -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, width=width, height=height, color_system=None, force_terminal=False), buf


def screen(reporter: RichReporter, width: int = 120, height: int = 30) -> str:
    con, buf = console(width, height)
    con.print(reporter.render(width, height))
    return buf.getvalue()


def test_rows_show_state_and_collapse_into_the_total() -> None:
    clock = FakeClock()
    con, _ = console()
    r = RichReporter(con, clock=clock, linger=1.0)
    a, b, c = digest(0xA), digest(0xB), digest(0xC)
    r.emit(RunStarted((IMG, OTHER)))
    r.emit(ImageResolved(IMG, digest(1), "linux/amd64", 3, 7_000_000))
    r.emit(ImageResolved(OTHER, digest(2), "linux/amd64", 2, 5_000_000))
    r.emit(BlobQueued(a, 4_000_000, IMG))
    r.emit(BlobQueued(b, 2_000_000, IMG))
    r.emit(BlobQueued(c, 1_000_000, OTHER))
    r.emit(BlobSkipped(a, 4_000_000, OTHER, "shared"))
    r.emit(BlobStarted(a, 4_000_000))
    r.emit(BlobStarted(b, 2_000_000))
    clock.tick(1.0)
    r.emit(BlobProgress(a, 1_000_000, 4_000_000))
    r.emit(BlobProgress(b, 2_000_000, 2_000_000))
    r.emit(BlobVerifying(b, 2_000_000))
    text = screen(r)
    lines = {short(d): line for d in (a, b, c) for line in text.splitlines() if short(d) in line}
    assert "downloading" in lines[short(a)] and "team/app:v1 +1" in lines[short(a)]
    assert "1.0/4.0 MB" in lines[short(a)] and "1.0 MB/s" in lines[short(a)] and "3s" in lines[short(a)]
    assert "verifying" in lines[short(b)]
    assert "waiting" in lines[short(c)] and "team/other:v2" in lines[short(c)]
    total = next(line for line in text.splitlines() if line.startswith("total"))
    assert "0/2 images" in total and "0/3 blobs" in total and "3.0/7.0 MB" in total

    r.emit(BlobDone(b, 2_000_000))
    assert "done" in next(line for line in screen(r).splitlines() if short(b) in line)
    clock.tick(1.5)  # past the linger time: the finished row collapses into the total
    text = screen(r)
    assert short(b) not in text
    assert short(a) in text and short(c) in text
    total = next(line for line in text.splitlines() if line.startswith("total"))
    assert "1/3 blobs" in total and "3.0/7.0 MB" in total
    assert r.stats.fetched_blobs == 1 and r.stats.fetched_bytes == 2_000_000
    assert r.stats.reused_blobs == 1 and r.stats.reused_bytes == 4_000_000

    for d, size in ((a, 4_000_000), (c, 1_000_000)):
        r.emit(BlobStarted(d, size))
        r.emit(BlobProgress(d, size, size))
        r.emit(BlobDone(d, size))
    r.emit(CommitStarted((IMG, OTHER), "/tmp/out.tar"))
    assert "writing" in screen(r)
    r.emit(ImageCommitted(IMG, "/tmp/out.tar"))
    r.emit(ImageCommitted(OTHER, "/tmp/out.tar"))
    r._final = True  # what __exit__ draws: only the total remains
    text = screen(r)
    assert not HEX12.search(text), text
    assert text.startswith("total") and "2/2 images" in text and "3/3 blobs" in text and "7.0/7.0 MB" in text


def test_fifty_image_mirror_fits_on_one_screen() -> None:
    clock = FakeClock()
    r = RichReporter(console()[0], clock=clock)
    n = 0
    for i in range(50):
        name = f"registry.example.com/mirror/app{i}:v1"
        r.emit(ImageResolved(name, digest(10_000 + i), None, 10, 10_000_000))
        for j in range(10):
            if j < 3:  # a shared base
                d = digest(j)
                if i == 0:
                    r.emit(BlobQueued(d, 1_000_000, name))
                else:
                    r.emit(BlobSkipped(d, 1_000_000, name, "shared"))
            else:
                n += 1
                r.emit(BlobQueued(digest(100 + n), 1_000_000, name))
    for k in range(4):
        r.emit(BlobStarted(digest(101 + k), 1_000_000))
    for height in (24, 40):
        lines = screen(r, 100, height).splitlines()
        assert len(lines) <= height - 3, lines
        assert lines[-1].startswith("total") and "0/50 images" in lines[-1]
        assert re.match(r"\+\d+ more\s+\d+ waiting\s+\d+ finished", lines[-2]), lines[-2]
        assert sum("downloading" in line for line in lines) == 4
    clock.tick(2)
    lines = screen(r, 100, 24).splitlines()
    assert not any("shared" in line for line in lines)  # lingering skip rows collapsed too
    assert "+" in lines[-2] and "finished" not in lines[-2]


def test_retry_counts_down_then_downloads_again() -> None:
    clock = FakeClock()
    r = RichReporter(console()[0], clock=clock)
    d = digest(7)
    r.emit(BlobQueued(d, 5_000_000, IMG))
    r.emit(BlobStarted(d, 5_000_000))
    r.emit(BlobProgress(d, 1_000_000, 5_000_000))
    r.emit(BlobRetry(d, "http://127.0.0.1:5000/v2/team/app/blobs/x", 2, 4.2, "connection reset"))

    def row() -> str:
        return next(line for line in screen(r).splitlines() if short(d) in line)

    assert "retry in 5s" in row()
    clock.tick(2)
    assert "retry in 3s" in row()
    clock.tick(3)
    assert "retrying" in row()
    r.emit(BlobProgress(d, 2_000_000, 5_000_000))
    assert "downloading" in row() and "2.0/5.0 MB" in row()
    assert r.stats.retries == 1


def test_narrow_terminal_drops_the_bar_not_the_numbers() -> None:
    r = RichReporter(console()[0])
    d = digest(3)
    r.emit(ImageResolved(IMG, digest(1), None, 1, 3_000_000))
    r.emit(BlobQueued(d, 3_000_000, IMG))
    r.emit(BlobStarted(d, 3_000_000))
    r.emit(BlobProgress(d, 1_000_000, 3_000_000))
    for width in (40, 46, 60, 80, 100, 160):
        lines = screen(r, width).splitlines()
        assert all(len(line) <= width for line in lines), (width, lines)
        [row] = [line for line in lines if short(d) in line]
        assert "1.0/3.0 MB" in row and "downloading" in row
        assert ("━" in row) == (width >= 100), (width, row)


class Boom(Exception):
    pass


class BrokenStream(io.StringIO):
    def write(self, s: str) -> int:
        raise BrokenPipeError("stderr went away")


@dataclasses.dataclass(frozen=True)
class Odd(Event):
    payload: object = None


ODD_EVENTS: list[Event] = [
    BlobProgress(digest(1), 5, 0),  # never queued, zero size
    BlobDone(digest(2), 0),  # never started
    BlobRetry(None, "https://example.com/v2/", 1, -1.0, "HTTP 503"),  # not a blob
    BlobRetry(digest(3), "https://example.com/v2/x", 1, float("inf"), "[bold]not markup[/]"),
    BlobVerifying(digest(4), 1),
    BlobSkipped(digest(5), -1, "", "mystery"),
    ImageResolved("", "", None, 0, 0),
    ImageCommitted("x", ""),
    Warning_("[red]unbalanced markup[/blue] \x00"),
    Odd(payload=object()),
]


def test_emit_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    con, _ = console()
    rich = RichReporter(con)
    plain = PlainReporter(io.StringIO(), interval=0)
    js = JsonReporter(io.StringIO())
    for reporter in (rich, plain, js, Silent()):
        for event in ODD_EVENTS:
            reporter.emit(event)
        reporter.close()
    assert plain.errors == 0 and js.errors == 0

    # Everything a reporter touches can fail; the fetch must not notice.
    def boom(*args: Any, **kwargs: Any) -> None:
        raise Boom

    broken = RichReporter(console()[0])
    monkeypatch.setattr(broken.board, "update", boom)
    monkeypatch.setattr(broken.console, "print", boom)
    with broken:
        for event in ODD_EVENTS:
            broken.emit(event)
    broken.close()
    assert broken.errors >= len(ODD_EVENTS)

    for reporter in (PlainReporter(BrokenStream(), interval=0), JsonReporter(BrokenStream())):
        for event in ODD_EVENTS:
            reporter.emit(event)
        reporter.close(ok=False, error="boom")
        assert reporter.errors > 0

    # A failure inside a frame (rich's refresh thread) is drawn as a placeholder, not raised.
    drawn = RichReporter(console()[0])
    monkeypatch.setattr(drawn, "render", boom)
    con, buf = console()
    con.print(drawn.live.renderable)
    assert "progress display unavailable" in buf.getvalue()


def test_live_display_life_cycle_on_a_plain_file() -> None:
    """`--progress rich` forced onto a non-terminal: no control codes, the final frame, the summary."""
    con, buf = console()
    with RichReporter(con, refresh_per_second=50) as r:  # capped at 10 Hz
        assert r.live.refresh_per_second == 10
        r.emit(ImageResolved(IMG, digest(1), "linux/amd64", 1, 2_000_000))
        r.emit(BlobQueued(digest(9), 2_000_000, IMG))
        r.emit(BlobStarted(digest(9), 2_000_000))
        r.emit(BlobProgress(digest(9), 2_000_000, 2_000_000))
        r.emit(BlobDone(digest(9), 2_000_000))
        r.emit(ImageCommitted(IMG, "out.tar"))
    r.close()
    r.close()  # idempotent
    out = buf.getvalue()
    assert "\x1b" not in out
    lines = out.splitlines()
    assert lines[0].startswith(f"resolved {IMG} 000000000001 (linux/amd64, 1 layers, 2.0 MB)")
    assert f"wrote {IMG} -> out.tar" in lines
    assert lines[-2].startswith("total") and "1/1 images" in lines[-2]
    assert lines[-1].startswith(
        "summary: 1 image, 1 blob fetched (2.0 MB), 0 reused (0 B), 2.0 MB referenced"
    )
    assert sum(line.startswith("summary") for line in lines) == 1


def test_live_display_starts_only_when_there_is_something_to_show() -> None:
    """A command that only prints (no image or blob events) never gets a live region on its terminal."""
    buf = io.StringIO()
    con = Console(file=buf, width=100, force_terminal=True, color_system=None)
    with RichReporter(con) as r:
        r.emit(events.Info("nothing to fetch"))
        r.emit(Warning_("careful"))
        assert not r.live.is_started
    r.close()
    assert "\x1b[?25l" not in buf.getvalue()  # the cursor was never hidden: no live display
    assert plain_text(buf.getvalue()).splitlines() == [
        "nothing to fetch",
        "warning: careful",
        "summary: 0 images, 0 blobs fetched (0 B), 0 reused (0 B), 0 B referenced, in 0.0s at 0 B/s, "
        "0 retries, 1 warning",
    ]
    with RichReporter(Console(file=io.StringIO(), force_terminal=True)) as r:
        r.emit(RunStarted((IMG,)))
        assert r.live.is_started
    assert not r.live.is_started


def test_plain_lines_and_rate_limited_progress() -> None:
    clock = FakeClock()
    out = io.StringIO()
    r = PlainReporter(out, interval=5, clock=clock)
    d1, d2 = digest(1), digest(2)
    r.emit(ImageResolved(IMG, digest(99), "linux/amd64", 2, 20_000_000))
    r.emit(BlobQueued(d1, 10_000_000, IMG))
    r.emit(BlobSkipped(d2, 10_000_000, IMG, "present"))
    r.emit(BlobStarted(d1, 10_000_000))
    for i in range(1, 11):  # a MiB-ish progress event every 0.5s for 5s
        clock.tick(0.5)
        r.emit(BlobProgress(d1, i * 1_000_000, 10_000_000))
        if i == 6:
            r.emit(BlobRetry(d1, "http://h/v2/b", 1, 0.5, "connection reset"))
    r.emit(BlobDone(d1, 10_000_000))
    r.emit(ImageCommitted(IMG, "/tmp/x.tar"))
    r.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == f"resolved {IMG} {digest(99)} (linux/amd64, 2 layers, 20.0 MB)"
    assert lines[1] == f"reused {short(d2)} 10.0 MB for team/app:v1 (already present)"
    progress = [line for line in lines if line.startswith("progress:")]
    assert progress == ["progress: 0/1 images, 0/1 blobs, 10.0/10.0 MB (100%), 2.0 MB/s"], lines
    assert f"retry {short(d1)} attempt 1 in 0.5s: connection reset" in lines
    assert f"fetched {short(d1)} 10.0 MB in 5.0s (2.0 MB/s) for team/app:v1" in lines
    assert lines[-2] == f"wrote {IMG} -> /tmp/x.tar"
    assert lines[-1] == (
        "summary: 1 image, 1 blob fetched (10.0 MB), 1 reused (10.0 MB), 20.0 MB referenced, "
        "in 5.0s at 2.0 MB/s, 1 retry, 0 warnings"
    )


def test_failed_run_summary() -> None:
    stats = Stats(FakeClock())
    stats.update(RunStarted((IMG, OTHER)))
    stats.update(ImageResolved(IMG, digest(1), None, 1, 10))
    assert stats.summary(ok=False).startswith("summary (failed): 0/2 images, 0 blobs fetched (0 B)")
    out = io.StringIO()
    js = JsonReporter(out)
    js.emit(RunStarted((IMG,)))
    js.close(ok=False, error="tag 'v9' not found")
    doc = json.loads(out.getvalue().splitlines()[-1])
    assert doc["event"] == "Summary" and doc["ok"] is False and doc["error"] == "tag 'v9' not found"


def event_classes() -> list[type[Event]]:
    return [
        cls
        for _, cls in inspect.getmembers(events, inspect.isclass)
        if issubclass(cls, Event) and cls is not Event and cls.__module__ == events.__name__
    ]


def test_json_schema_is_documented_and_matches_the_events() -> None:
    doc = schema.__doc__ or ""
    names = {cls.__name__.rstrip("_") for cls in event_classes()}
    assert names | {"Summary"} == set(schema.SCHEMA), "every event type is in SCHEMA and nothing else"
    for cls in event_classes():
        name = cls.__name__.rstrip("_")
        fields = tuple(f.name for f in dataclasses.fields(cls) if f.name != "at")
        assert schema.SCHEMA[name] == fields, name
        assert re.search(rf"^{name}\s", doc, re.M), f"{name} missing from the schema table"
        for field in fields:
            assert field in doc, f"{name}.{field} undocumented"
    for field in schema.SCHEMA["Summary"]:
        assert field in doc
    out = io.StringIO()
    js = JsonReporter(out)
    js.emit(RunStarted((IMG,), "out.tar"))
    js.emit(BlobRetry(None, "u", 1, 0.5, "r"))
    js.close()
    docs = [json.loads(line) for line in out.getvalue().splitlines()]
    assert docs[0] == {
        "event": "RunStarted",
        "at": docs[0]["at"],
        "images": [IMG],
        "destination": "out.tar",
        "upload": False,
    }
    assert list(docs[1]) == ["event", "at", *schema.SCHEMA["BlobRetry"]]
    assert list(docs[2]) == ["event", "at", *schema.SCHEMA["Summary"]]


# --------------------------------------------------------------------------
# The real CLI against the real registry
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample(registry: Registry) -> tuple[str, BuiltImage]:
    image = images.build_sample_image(fmt="oci", compression="gzip")
    registry.push_image("progress/sample", "v1", image)
    return f"{registry.host}/progress/sample", image


def layer_sizes_in_tarball(tar: Path) -> list[int]:
    with tarfile.open(tar) as tf:
        [entry] = json.load(tf.extractfile("manifest.json"))  # type: ignore[arg-type]
        return [tf.getmember(path).size for path in entry["Layers"]]


def test_pipe_gets_plain_lines(sample: tuple[str, BuiltImage], tmp_path: Path) -> None:
    ref, image = sample
    out = tmp_path / "out.tar"
    proc = ok("fetch-to-tarfile", "--progress", "plain", ref, "v1", str(out), env=no_creds(tmp_path))
    assert proc.stdout == ""
    assert "\x1b" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert lines[0].startswith(f"resolved {ref}:v1 sha256:"), lines
    fetched = sorted(line.split()[1] for line in lines if line.startswith("fetched "))
    assert fetched == sorted(short(layer.digest) for layer in image.layers)
    assert any(line.startswith(f"wrote {ref}:v1") for line in lines), lines
    assert re.fullmatch(
        r"summary: 1 image, 3 blobs fetched \(.+\), 0 reused \(0 B\), .+ referenced, in [\d.]+s at .+/s, "
        r"0 retries, 0 warnings",
        lines[-1],
    ), lines[-1]


def test_json_lines(sample: tuple[str, BuiltImage], tmp_path: Path) -> None:
    ref, image = sample
    out = tmp_path / "out.tar"
    started = time.time()
    proc = ok("fetch-to-tarfile", "--progress", "json", ref, "v1", str(out), env=no_creds(tmp_path))
    assert proc.stdout == ""
    docs = [json.loads(line) for line in proc.stderr.splitlines()]
    for doc in docs:
        assert list(doc) == ["event", "at", *schema.SCHEMA[doc["event"]]], doc
        assert started - 1 <= doc["at"] <= time.time() + 1
    kinds = [doc["event"] for doc in docs]
    assert kinds[-1] == "Summary" and kinds.count("Summary") == 1
    for kind in ("ImageResolved", "BlobQueued", "BlobStarted", "BlobProgress", "BlobDone", "ImageCommitted"):
        assert kind in kinds, kinds
    done = [doc for doc in docs if doc["event"] == "BlobDone"]
    written = layer_sizes_in_tarball(out)
    assert sorted(d["size"] for d in done) == sorted(written)
    assert {d["digest"] for d in done} == {layer.digest for layer in image.layers}
    [resolved] = [doc for doc in docs if doc["event"] == "ImageResolved"]
    assert resolved["manifest_digest"] == image.manifest_digest and resolved["total_bytes"] == sum(written)
    summary = docs[-1]
    assert summary["ok"] is True and summary["error"] is None and summary["schema"] == 1
    assert summary["images"] == summary["images_total"] == 1
    assert summary["fetched_blobs"] == len(done) == 3
    assert summary["fetched_bytes"] == sum(written) == summary["referenced_bytes"]
    assert summary["reused_blobs"] == summary["reused_bytes"] == 0
    assert summary["retries"] == summary["warnings"] == 0


def test_json_progress_comes_about_every_mib(registry: Registry, tmp_path: Path) -> None:
    """The schema promises BlobProgress about every MiB: not once per network batch."""
    noise = random.Random(7).randbytes(5 * 1024 * 1024)  # incompressible: a 5 MiB blob
    image = images.build_image([[images.Entry.file("noise.bin", noise)]], fmt="oci")
    registry.push_image("progress/mib", "v1", image)
    out = tmp_path / "out.tar"
    ref = f"{registry.host}/progress/mib"
    proc = ok("fetch-to-tarfile", "--progress", "json", ref, "v1", str(out), env=no_creds(tmp_path))
    [layer] = image.layers
    steps = [
        doc["done"]
        for doc in map(json.loads, proc.stderr.splitlines())
        if doc["event"] == "BlobProgress" and doc["digest"] == layer.digest
    ]
    assert steps[-1] == layer.size > 5 * 1024 * 1024, steps
    gaps = [b - a for a, b in zip([0, *steps], steps, strict=False)]
    assert all(gap >= 1024 * 1024 for gap in gaps[:-1]), gaps
    assert 4 <= len(steps) <= 6, steps


def test_retries_are_reported(registry: Registry, sample: tuple[str, BuiltImage], tmp_path: Path) -> None:
    _, image = sample
    layer = image.layers[0]
    with FaultProxy(registry.url) as proxy:
        ref = f"{proxy.host}/progress/sample"
        proxy.add(Fault(match=layer.digest, status=503, times=2))
        out = str(tmp_path / "a.tar")
        proc = ok("fetch-to-tarfile", "--progress", "plain", ref, "v1", out, env=no_creds(tmp_path))
        lines = proc.stderr.splitlines()
        for attempt in (1, 2):
            assert any(
                re.fullmatch(rf"retry {short(layer.digest)} attempt {attempt} in [\d.]+s: .*503.*", line)
                for line in lines
            ), lines
        assert lines[-1].endswith("2 retries, 0 warnings"), lines[-1]

        proxy.add(Fault(match=layer.digest, status=503, times=1))
        out = str(tmp_path / "b.tar")
        proc = ok("fetch-to-tarfile", "--progress", "json", ref, "v1", out, env=no_creds(tmp_path))
        docs = [json.loads(line) for line in proc.stderr.splitlines()]
        [retry] = [d for d in docs if d["event"] == "BlobRetry"]
        assert retry["digest"] == layer.digest and retry["attempt"] == 1 and retry["delay"] >= 0
        assert "503" in retry["reason"] and retry["url"].startswith(f"http://{proxy.host}/v2/")
        assert docs[-1]["event"] == "Summary" and docs[-1]["retries"] == 1


class ThrottlingProxy:
    """A TCP proxy in front of the registry that serves responses at `rate` bytes/s per connection."""

    def __init__(self, upstream: str, rate: float) -> None:
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.rate = rate
        self.server = socket.create_server(("127.0.0.1", 0))
        self.host = f"127.0.0.1:{self.server.getsockname()[1]}"
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            up = socket.create_connection(self.upstream)
            threading.Thread(target=self._pump, args=(client, up, None), daemon=True).start()
            threading.Thread(target=self._pump, args=(up, client, self.rate), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, rate: float | None) -> None:
        try:
            while data := src.recv(32 * 1024):
                dst.sendall(data)
                if rate:
                    time.sleep(len(data) / rate)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            for s in (src, dst):
                s.close()

    def close(self) -> None:
        self._closed = True
        self.server.close()


@pytest.fixture(scope="module")
def slow_image(registry: Registry) -> Iterator[tuple[str, BuiltImage]]:
    """Three layers (about 5, 3 and 1 MiB) behind a 3 MiB/s-per-connection proxy: ~2 s of live display."""
    rng = random.Random(7)
    layers = [
        [images.file(f"data/{i}.bin", rng.randbytes(mib * 1024 * 1024))] for i, mib in enumerate((5, 3, 1))
    ]
    image = images.build_image(layers, fmt="oci", compression="none")
    registry.push_image("progress/slow", "v1", image)
    proxy = ThrottlingProxy(registry.host, 3 * 1024 * 1024)
    try:
        yield f"{proxy.host}/progress/slow", image
    finally:
        proxy.close()


def run_on_tty(
    *args: str, env: dict[str, str], cols: int = 110, rows: int = 30, timeout: float = 120
) -> tuple[int, str]:
    """Run the CLI with stdout and stderr on a fresh pseudo-terminal; return its exit code and output."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    full_env = {
        k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR", "COLUMNS", "LINES")
    }
    full_env.update({"PYTHONPATH": str(ROOT), "TERM": "xterm-256color", **env})
    proc = subprocess.Popen(
        [sys.executable, "-m", "occystrap", *args],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
        env=full_env,
        close_fds=True,
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            if time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(
                    f"timed out; output so far:\n{b''.join(chunks).decode(errors='replace')}"
                )
            ready, _, _ = select.select([master], [], [], 0.2)
            if not ready:
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer has closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
        code = proc.wait(timeout=30)
    return code, b"".join(chunks).decode("utf-8", "replace")


def test_terminal_gets_live_rows(slow_image: tuple[str, BuiltImage], tmp_path: Path) -> None:
    ref, image = slow_image
    code, raw = run_on_tty("fetch-to-tarfile", ref, "v1", str(tmp_path / "out.tar"), env=no_creds(tmp_path))
    assert code == 0, raw
    text = plain_text(raw)
    assert "\x1b[" in raw  # a live display, redrawn in place
    # Mid-fetch frames: a row per layer with its image, state, bytes; the total row.
    for layer in image.layers:
        rows = [line for line in text.splitlines() if short(layer.digest) in line]
        assert rows, f"no row for {short(layer.digest)}:\n{text}"
        assert any("progress/slow:v1" in row and "MB" in row for row in rows)
    assert re.search(r"\bdownloading\b.*MB/s", text), text
    assert re.search(r"^total\s+0/1 images\s+\d/3 blobs", text, re.M), text
    # The last frame (after the last line erase): rows collapsed, only the total, then the summary.
    last = plain_text(raw.rsplit("\x1b[2K", 1)[1]).strip().splitlines()
    assert not any(HEX12.search(line) for line in last), last
    total = sum(layer.size for layer in image.layers)
    assert re.match(rf"total\s+1/1 images\s+3/3 blobs .*{human_pair(total, total)}", last[0]), last
    assert last[-1].startswith(
        f"summary: 1 image, 3 blobs fetched ({human(total)}), 0 reused (0 B), {human(total)} referenced"
    ), last
    assert f"resolved {ref}:v1" in text and f"wrote {ref}:v1" in text


def test_no_color_on_a_terminal(sample: tuple[str, BuiltImage], tmp_path: Path) -> None:
    ref, _ = sample
    code, raw = run_on_tty(
        "fetch-to-tarfile", ref, "v1", str(tmp_path / "out.tar"), env={"NO_COLOR": "1", **no_creds(tmp_path)}
    )
    assert code == 0, raw
    sgr = [m.group(1) for m in re.finditer(r"\x1b\[([0-9;]*)m", raw)]
    colors = [p for s in sgr for p in s.split(";") if p in {"38", "48"} or p.startswith(("3", "4", "9"))]
    assert not colors, sgr
    assert "summary: 1 image" in plain_text(raw)


def test_dumb_terminal_gets_plain_lines(sample: tuple[str, BuiltImage], tmp_path: Path) -> None:
    ref, _ = sample
    code, raw = run_on_tty(
        "fetch-to-tarfile", ref, "v1", str(tmp_path / "out.tar"), env={"TERM": "dumb", **no_creds(tmp_path)}
    )
    assert code == 0, raw
    assert "\x1b" not in raw
    lines = raw.replace("\r", "").splitlines()
    assert lines[0].startswith(f"resolved {ref}:v1 sha256:")
    assert sum(line.startswith("fetched ") for line in lines) == 3
    assert lines[-1].startswith("summary: 1 image, 3 blobs fetched")
