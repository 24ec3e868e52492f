"""Interrupted runs: kill -9 and Ctrl-C mid-blob, then the same command continues where it stopped."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from tests.helpers import ROOT, fails, ok
from tests.support import images
from tests.support.faultproxy import Fault, FaultProxy
from tests.support.images import BuiltImage
from tests.support.registry import Registry

REPO = "resume/app"
TAG = "v1"
T = TypeVar("T")
STALL_AT = 2_500_000  # past the first 1 MiB batches, so some of the blob reaches the disk


@pytest.fixture(scope="module")
def image(registry: Registry) -> BuiltImage:
    # Incompressible content keeps the blob big enough to be cut in the middle.
    big = random.Random(7).randbytes(4_000_000)
    built = images.build_image(
        [[images.file("big.bin", big)], [images.file("small.txt", b"small\n")]], fmt="oci"
    )
    registry.push_image(REPO, TAG, built)
    return built


def _env(tmp_path: Path) -> dict[str, str]:
    # No credentials from the host's docker config: the registry is anonymous.
    return {"DOCKER_CONFIG": str(tmp_path / "none")}


def _start(
    proxy: FaultProxy, command: str, out: Path, tmp_path: Path, *options: str
) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **_env(tmp_path)}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "occystrap",
            command,
            *options,
            "--progress",
            "plain",
            f"{proxy.host}/{REPO}",
            TAG,
            str(out),
        ],
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )


def _run(
    proxy: FaultProxy,
    command: str,
    out: Path,
    tmp_path: Path,
    *options: str,
    expect: Callable[..., subprocess.CompletedProcess[str]] = ok,
) -> subprocess.CompletedProcess[str]:
    """The same command to completion (expect=ok) or to a clean failure (expect=fails)."""
    return expect(command, "-q", *options, f"{proxy.host}/{REPO}", TAG, str(out), env=_env(tmp_path))


def _wait(proc: subprocess.Popen[str], found: Callable[[], T | None], what: str) -> T:
    """Poll until found() gives something, while the fetch it watches is still running."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        result = found()
        if result is not None:
            return result
        time.sleep(0.05)
    raise AssertionError(f"{what} did not appear")


def _wait_for_partial(where: Path, minimum: int, proc: subprocess.Popen[str]) -> Path:
    def big_partial() -> Path | None:
        return next((p for p in where.rglob(".*.partial") if p.stat().st_size >= minimum), None)

    return _wait(proc, big_partial, f"a partial download of {minimum}+ bytes under {where}")


def _tar_progress(outdir: Path) -> int:
    """Bytes of the first (big) layer the tarball writer has recorded as on disk."""
    journal = next(outdir.glob(".*.occystrap-progress"), None)
    if journal is None:
        return 0
    data = journal.read_bytes()
    return int.from_bytes(data[32:40], "little") if len(data) >= 40 else 0


def _wait_for_tar_progress(outdir: Path, minimum: int, proc: subprocess.Popen[str]) -> None:
    _wait(proc, lambda: True if _tar_progress(outdir) >= minimum else None, f"{minimum} bytes recorded")


def _stalled_tarball(proxy: FaultProxy, image: BuiltImage, tmp_path: Path) -> tuple[images.Layer, Path]:
    """The big layer, made to stall part-way; and a tarball path alone in its own directory."""
    big = image.layers[0]
    proxy.add(Fault(match=big.digest, stall=60, stall_at=STALL_AT))
    outdir = tmp_path / "out"
    outdir.mkdir()
    return big, outdir / "app.tar"


@pytest.mark.parametrize("how", ["kill-9", "ctrl-c"])
def test_tarball_resumes_after_interruption(
    proxy: FaultProxy, image: BuiltImage, tmp_path: Path, how: str
) -> None:
    big, out = _stalled_tarball(proxy, image, tmp_path)
    outdir = out.parent
    proc = _start(proxy, "fetch-to-tarfile", out, tmp_path)
    _wait_for_tar_progress(outdir, 1024 * 1024, proc)
    if how == "kill-9":
        proc.kill()
        proc.wait(timeout=10)
    else:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)  # a guard against a hang, not a speed check
        assert proc.returncode == 130
        assert "interrupted" in err
    assert not out.exists()
    kept = _tar_progress(outdir)
    assert kept >= 1024 * 1024

    _run(proxy, "fetch-to-tarfile", out, tmp_path)
    # The second run asked only for what the first did not keep, and re-hashed the rest from disk.
    assert proxy.seen(big.digest, "GET")[-1].range == f"bytes={kept}-"
    reference = tmp_path / "reference.tar"
    _run(proxy, "fetch-to-tarfile", reference, tmp_path)
    assert out.read_bytes() == reference.read_bytes()
    assert sorted(p.name for p in outdir.iterdir()) == ["app.tar"]


def test_uncompressed_tarball_resumes_after_kill(
    proxy: FaultProxy, image: BuiltImage, tmp_path: Path
) -> None:
    """The layer inflating straight into the tarball is rebuilt from the kept raw prefix."""
    big, out = _stalled_tarball(proxy, image, tmp_path)
    outdir = out.parent
    proc = _start(proxy, "fetch-to-tarfile", out, tmp_path, "--uncompressed-layers")
    _wait_for_partial(outdir, 1024 * 1024, proc)
    proc.kill()
    proc.wait(timeout=10)
    assert not out.exists()

    _run(proxy, "fetch-to-tarfile", out, tmp_path, "--uncompressed-layers")
    assert (proxy.seen(big.digest, "GET")[-1].range or "").startswith("bytes=")
    reference = tmp_path / "reference.tar"
    _run(proxy, "fetch-to-tarfile", reference, tmp_path, "--uncompressed-layers")
    assert out.read_bytes() == reference.read_bytes()
    assert sorted(p.name for p in outdir.iterdir()) == ["app.tar"]


def test_uncompressed_layer_that_streamed_to_its_end_is_kept_when_another_fails(
    proxy: FaultProxy, image: BuiltImage, tmp_path: Path
) -> None:
    big, small = image.layers
    # The small layer fails only after the big one, streamed into the tarball, is complete.
    proxy.add(Fault(match=small.digest, stall=3, stall_at=None, status=503, times=None))
    out = tmp_path / "app.tar"
    options = ("--uncompressed-layers", "--retries", "0")
    _run(proxy, "fetch-to-tarfile", out, tmp_path, *options, expect=fails)
    assert proxy.count(big.digest) == 1
    proxy.clear()

    _run(proxy, "fetch-to-tarfile", out, tmp_path, *options)
    assert proxy.count(big.digest) == 1, "the complete big layer was fetched again"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "none") == ["app.tar"]


def test_merged_directory_resumes_after_kill(proxy: FaultProxy, image: BuiltImage, tmp_path: Path) -> None:
    big = image.layers[0]
    proxy.add(Fault(match=big.digest, stall=60, stall_at=STALL_AT))
    target = tmp_path / "mirror"
    proc = _start(proxy, "fetch-to-extracted", target, tmp_path)
    _wait_for_partial(target, 1024 * 1024, proc)
    proc.kill()
    proc.wait(timeout=10)
    assert not (target / "index.json").exists()
    blob = target / "blobs/sha256" / big.digest[7:]
    assert not blob.exists()  # a partial download never takes the blob's own name

    _run(proxy, "fetch-to-extracted", target, tmp_path)
    assert (proxy.seen(big.digest, "GET")[-1].range or "").startswith("bytes=")
    assert images.sha256_digest(blob.read_bytes()) == big.digest
    assert not list(target.rglob("*.partial"))


def test_tampered_partial_is_not_trusted(proxy: FaultProxy, image: BuiltImage, tmp_path: Path) -> None:
    big = image.layers[0]
    proxy.add(Fault(match=big.digest, stall=60, stall_at=STALL_AT))
    target = tmp_path / "d"
    proc = _start(proxy, "fetch-to-extracted", target, tmp_path)
    partial = _wait_for_partial(target, 1024 * 1024, proc)
    proc.kill()
    proc.wait(timeout=10)
    data = bytearray(partial.read_bytes())
    data[100] ^= 0xFF
    partial.write_bytes(bytes(data))

    _run(proxy, "fetch-to-extracted", target, tmp_path)
    # The resumed digest failed, so the blob was fetched again from its first byte.
    assert proxy.seen(big.digest, "GET")[-1].range is None
    assert images.sha256_digest((target / "blobs/sha256" / big.digest[7:]).read_bytes()) == big.digest


def test_second_run_on_the_same_output_is_refused_while_the_first_runs(
    proxy: FaultProxy, image: BuiltImage, tmp_path: Path
) -> None:
    big, out = _stalled_tarball(proxy, image, tmp_path)
    outdir = out.parent
    first = _start(proxy, "fetch-to-tarfile", out, tmp_path)
    try:
        _wait_for_tar_progress(outdir, 1024 * 1024, first)
        proc = _run(proxy, "fetch-to-tarfile", out, tmp_path, expect=fails)
        assert "another occystrap run is writing" in proc.stderr and str(out) in proc.stderr
        assert first.poll() is None  # the first run was not disturbed
    finally:
        first.kill()
        first.wait(timeout=10)
    # ...and what it wrote still resumes.
    _run(proxy, "fetch-to-tarfile", out, tmp_path)
    assert (proxy.seen(big.digest, "GET")[-1].range or "").startswith("bytes=")
