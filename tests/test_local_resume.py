"""tarfile-to-extracted is a copy like any other: progress on stderr, parallel, verified, and
resumable after kill -9 (the next run re-hashes what is on disk and reads only the rest)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers import ROOT, ok
from tests.support import images

BIG = 96 * 1024 * 1024  # large enough that the kill lands mid-blob when the copy runs on a fast disk


def test_tarfile_to_extracted_shows_progress_and_resumes_after_kill(tmp_path: Path) -> None:
    big = os.urandom(BIG)
    built = images.build_image(
        [[images.file("big.bin", big)], [images.file("small", b"x\n")]], compression="none"
    )
    source = images.write_docker_archive(tmp_path / "saved.tar", built, ["127.0.0.1:5000/local/app:v1"])
    dest = tmp_path / "out"
    big_digest = built.layers[0].digest
    partial = dest / "blobs" / "sha256" / f".{big_digest[7:]}.partial"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable,
        "-m",
        "occystrap",
        "tarfile-to-extracted",
        "--progress",
        "json",
        str(source),
        str(dest),
    ]
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if partial.exists() and partial.stat().st_size > 0:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.001)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the copy ended before it could be cut"
    assert proc.stderr is not None
    first = [json.loads(line) for line in proc.stderr.read().decode().splitlines() if line.startswith("{")]
    assert any(e["event"] == "BlobStarted" and e["digest"] == big_digest for e in first)
    kept = partial.stat().st_size
    assert 0 < kept < len(built.layers[0].data)

    done = ok("tarfile-to-extracted", "--progress", "json", str(source), str(dest))
    events = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    started = [e for e in events if e["event"] == "BlobStarted" and e["digest"] == big_digest]
    assert started and started[0]["offset"] == kept  # resumed from what was on disk, not restarted
    assert events[-1]["event"] == "Summary" and events[-1]["ok"]
    assert not partial.exists()
    ok("verify", str(dest))
    assert (dest / "blobs" / "sha256" / big_digest[7:]).stat().st_size == len(built.layers[0].data)
