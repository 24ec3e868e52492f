"""Soak: mirror many small tags through a proxy that keeps failing at random, then check every byte.

    .venv/bin/python -m benchmarks.soak                  # 50 tags, seed 1
    .venv/bin/python -m benchmarks.soak --tags 80 --seed 7 --fault-rate 0.3

What it does, all on loopback:

1. starts the real registry (docker-registry) and pushes --tags small images in two
   repositories that share base and middle layers (docker/gzip and OCI/zstd mixed);
2. puts the fault-injecting proxy (tests/support/faultproxy.py) in front, which hits a
   random share of GETs with one of: a dropped connection part-way through the body, a 429
   with Retry-After 0 or 1, a 503, or a 1-2 s stall (before the headers or inside the body;
   occystrap runs with --read-timeout 1, so stalls become timeouts and resumes);
3. runs `occystrap mirror SPEC.yaml DEST --progress json` under /usr/bin/time -v
   (one repository by regex over its tag list, the other by explicit tags);
4. re-hashes every file under DEST/blobs/sha256, checks that every pushed blob and manifest
   is there, that catalog.json and occystrap.lock list every tag with the pushed digest;
5. prints faults injected, retries, bytes re-fetched (body bytes the proxy sent for blobs
   minus the unique blob bytes), wall time and peak RSS, and exits 1 if anything failed.

The seed fixes the images and the fault mix; which request gets which fault also depends on
timing, so two runs with one seed are alike, not identical. Bounded in time (--time-limit,
default 240 s): a run that has not finished by then is killed and counts as a failure.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import GNU_TIME, PROJECT_ROOT, KiB, gnu_time_stats, log
from tests.support import images
from tests.support.faultproxy import BLOB_GETS, Fault, FaultProxy, _Active
from tests.support.images import BuiltImage, Layer
from tests.support.registry import Registry, start_registry

# --------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pushed:
    repo: str
    tag: str
    image: BuiltImage


def _layer(
    rng: random.Random, name: str, size: int, compression: images.Compression, fmt: images.Format
) -> Layer:
    # Mostly incompressible content, so the blob is about `size` bytes on the wire.
    content = rng.randbytes(size)
    entries = [
        images.directory("opt"),
        images.directory(f"opt/{name}"),
        images.file(f"opt/{name}/data.bin", content),
        images.file(f"opt/{name}/README", f"layer {name}\n".encode()),
    ]
    return images.build_layer(entries, compression, fmt)


def build_images(tags: int, seed: int) -> list[Pushed]:
    """`tags` images over two repositories: 3 base layers, 6 middle layers, one own layer each."""
    rng = random.Random(seed)
    base = [_layer(rng, f"base{i}", rng.randint(600, 1000) * KiB, "gzip", "docker") for i in range(3)]
    mid = [_layer(rng, f"mid{i}", rng.randint(150, 400) * KiB, "gzip", "docker") for i in range(6)]
    out: list[Pushed] = []
    for i in range(tags):
        oci = i % 2 == 1
        fmt: images.Format = "oci" if oci else "docker"
        own = _layer(rng, f"own{i}", rng.randint(20, 90) * KiB, "zstd" if oci else "gzip", fmt)
        stack = [base[i % len(base)], mid[rng.randrange(len(mid))], own]
        image = images.build_image(stack, fmt=fmt, extra_config={"Labels": {"soak.tag": str(i)}})
        repo = "soak/app" if i % 10 < 7 else "soak/worker"
        out.append(Pushed(repo, f"t{i:03d}", image))
    return out


def unique_blobs(pushed: list[Pushed]) -> dict[str, bytes]:
    blobs: dict[str, bytes] = {}
    for p in pushed:
        blobs.update(p.image.blobs())
    return blobs


# --------------------------------------------------------------------------------------
# The proxy: random faults on a share of GETs
# --------------------------------------------------------------------------------------


class RandomFaultProxy(FaultProxy):
    """Adds one random fault to a `rate` share of GET requests (retries included)."""

    def __init__(self, upstream: str, rate: float, seed: int) -> None:
        super().__init__(upstream)
        self.rate = rate
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self.injected: Counter[str] = Counter()

    def _random_fault(self, path: str) -> tuple[str, Fault] | None:
        with self._rng_lock:
            if self._rng.random() >= self.rate:
                return None
            blob = BLOB_GETS in path
            kinds = (
                ["drop", "429", "503", "stall-body", "stall-headers"]
                if blob
                else ["429", "503", "stall-headers"]
            )
            kind = self._rng.choice(kinds)
            stall = self._rng.uniform(1.0, 2.0)
            if kind == "drop":
                return kind, Fault(
                    drop_after=self._rng.randint(1, 400_000), drop_linger=self._rng.choice([0, 0.1])
                )
            if kind == "429":
                return kind, Fault(status=429, retry_after=self._rng.choice([0, 1]))
            if kind == "503":
                return kind, Fault(status=503)
            if kind == "stall-body":
                return kind, Fault(stall=stall, stall_at=self._rng.randint(0, 100_000))
            return kind, Fault(stall=stall, stall_at=None)

    def _take(self, method: str, path: str) -> _Active:
        active = super()._take(method, path)
        if method == "GET" and path.startswith("/v2/"):
            chosen = self._random_fault(path)
            if chosen is not None:
                kind, fault = chosen
                with self._rng_lock:
                    self.injected[kind] += 1
                active.add(fault)
        return active


# --------------------------------------------------------------------------------------
# Running and checking
# --------------------------------------------------------------------------------------


def write_spec(path: Path, proxy_host: str, pushed: list[Pushed]) -> None:
    worker_tags = sorted(p.tag for p in pushed if p.repo == "soak/worker")
    lines = [
        "images:",
        f"  - name: {proxy_host}/soak/app",
        "    include: ['^t[0-9]+$']",
        f"  - name: {proxy_host}/soak/worker",
        f"    tags: [{', '.join(worker_tags)}]",
    ]
    path.write_text("\n".join(lines) + "\n")


def check_result(dest: Path, proxy_host: str, pushed: list[Pushed]) -> list[str]:
    """Everything that is wrong with DEST (empty: all good)."""
    problems: list[str] = []
    blob_dir = dest / "blobs" / "sha256"
    present: dict[str, int] = {}
    for f in sorted(blob_dir.iterdir()) if blob_dir.is_dir() else []:
        h = hashlib.sha256()
        with f.open("rb") as fh:
            while chunk := fh.read(1024 * KiB):
                h.update(chunk)
        if h.hexdigest() != f.name:
            problems.append(f"blobs/sha256/{f.name} hashes to {h.hexdigest()}")
        present[f.name] = f.stat().st_size
    for p in pushed:
        for digest, data in {**p.image.blobs(), p.image.manifest_digest: p.image.manifest}.items():
            if present.get(digest[7:]) != len(data):
                problems.append(f"{p.repo}:{p.tag}: blob {digest[:19]} missing or wrong size")
    try:
        catalog = json.loads((dest / "catalog.json").read_bytes())["images"]
    except (OSError, ValueError, KeyError) as exc:
        return [*problems, f"catalog.json unreadable: {exc}"]
    try:
        lock = json.loads((dest / "occystrap.lock").read_bytes())
    except (OSError, ValueError) as exc:
        lock = {}
        problems.append(f"occystrap.lock unreadable: {exc}")
    for p in pushed:
        name = f"{proxy_host}/{p.repo}"
        entry = catalog.get(name, {}).get(p.tag)
        if entry is None:
            problems.append(f"catalog.json lacks {name}:{p.tag}")
        elif entry.get("manifest_digest") != p.image.manifest_digest:
            problems.append(f"catalog.json: {name}:{p.tag} -> {entry.get('manifest_digest')}")
        locked = lock.get(name, {}).get(p.tag, {})
        if p.image.manifest_digest not in locked.values():
            problems.append(f"occystrap.lock: {name}:{p.tag} -> {locked}")
    listed = sum(len(tags) for tags in catalog.values())
    if listed != len(pushed):
        problems.append(f"catalog.json lists {listed} tags, expected {len(pushed)}")
    return problems


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tags", type=int, default=50, help="tags to mirror (default 50)")
    parser.add_argument("--seed", type=int, default=1, help="images and fault mix (default 1)")
    parser.add_argument(
        "--fault-rate", type=float, default=0.2, help="share of GETs hit by a fault (default 0.2)"
    )
    parser.add_argument("--parallel", type=int, default=4, help="occystrap -j (default 4)")
    parser.add_argument("--retries", type=int, default=10, help="occystrap --retries (default 10)")
    parser.add_argument(
        "--time-limit", type=float, default=240.0, help="seconds before giving up (default 240)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args(argv)
    if shutil.which("docker-registry") is None:
        log("docker-registry is needed (apt-get install docker-registry)")
        return 2

    started = time.monotonic()
    deadline = started + args.time_limit
    work = Path(tempfile.mkdtemp(prefix="occystrap-soak-"))
    registry: Registry | None = None
    proxy: RandomFaultProxy | None = None
    try:
        log(f"soak: {args.tags} tags, seed {args.seed}, fault rate {args.fault_rate:.0%}, scratch {work}")
        pushed = build_images(args.tags, args.seed)
        blobs = unique_blobs(pushed)
        unique_bytes = sum(len(b) for b in blobs.values())
        registry = start_registry(work / "registry")
        for p in pushed:
            registry.push_image(p.repo, p.tag, p.image)
        log(f"pushed {len(pushed)} tags, {len(blobs)} unique blobs ({_mb(unique_bytes)}) to {registry.host}")

        proxy = RandomFaultProxy(registry.url, args.fault_rate, args.seed)
        proxy.start()
        spec = work / "soak.yaml"
        write_spec(spec, proxy.host, pushed)
        dest = work / "mirror"
        time_file = work / "time.txt"
        occystrap = [sys.executable, "-m", "occystrap"]
        argv_ = [
            *occystrap,
            "mirror",
            str(spec),
            str(dest),
            "--progress",
            "json",
            "--read-timeout",
            "1",
            "--retries",
            str(args.retries),
            "-j",
            str(args.parallel),
        ]
        if shutil.which(GNU_TIME):
            argv_ = [GNU_TIME, "-v", "-o", str(time_file), *argv_]
        env = {
            **os.environ,
            "PYTHONPATH": str(PROJECT_ROOT),
            "DOCKER_CONFIG": str(work / "no-docker-config"),
        }
        env.pop("OCCYSTRAP_USERNAME", None)
        env.pop("OCCYSTRAP_PASSWORD", None)
        remaining = max(10.0, deadline - time.monotonic())
        log(f"mirroring through the fault proxy at {proxy.host} (limit {remaining:.0f}s)")
        t0 = time.monotonic()
        timed_out = False
        try:
            proc = subprocess.run(
                argv_,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                env=env,
                timeout=remaining,
                cwd=work,
            )
            code, stderr = proc.returncode, proc.stderr
        except subprocess.TimeoutExpired as exc:
            timed_out = True
            code = -1
            raw = exc.stderr or b""
            stderr = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
        wall = time.monotonic() - t0

        events = []
        other_lines = []
        for line in stderr.splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                other_lines.append(line)
        retries = Counter(
            "blob" if e.get("digest") else "other" for e in events if e.get("event") == "BlobRetry"
        )
        summary: dict[str, Any] = next((e for e in reversed(events) if e.get("event") == "Summary"), {})
        blob_requests = proxy.seen(BLOB_GETS, "GET")
        sent = sum(s.body_bytes for s in blob_requests)
        rss_kb = gnu_time_stats(time_file.read_text()).get("rss") if time_file.exists() else None

        problems: list[str] = []
        if timed_out:
            problems.append(f"occystrap did not finish within {remaining:.0f}s")
        elif code != 0:
            problems.append(f"occystrap exited {code}: {' | '.join(other_lines[-3:])}")
        if not timed_out:
            problems += check_result(dest, proxy.host, pushed)

        print(f"soak: {args.tags} tags, seed {args.seed}, fault rate {args.fault_rate:.0%}")
        print(f"  requests through proxy: {len(proxy.seen(method=None))} ({len(blob_requests)} blob GETs)")
        injected = ", ".join(f"{k} {v}" for k, v in sorted(proxy.injected.items())) or "none"
        print(f"  faults injected:        {sum(proxy.injected.values())} ({injected})")
        print(
            f"  retries:                {sum(retries.values())} "
            f"({retries['blob']} blob, {retries['other']} other; summary says {summary.get('retries', '?')})"
        )
        print(f"  unique blob bytes:      {_mb(unique_bytes)} in {len(blobs)} blobs")
        refetched = sent - unique_bytes
        print(f"  blob bytes sent:        {_mb(sent)}; re-fetched {refetched / 1e3:.1f} kB")
        print(f"  wall time:              {wall:.1f}s (mirror), {time.monotonic() - started:.1f}s (all)")
        print(f"  peak RSS:               {f'{rss_kb / KiB:.1f} MiB' if rss_kb else 'unknown'}")
        if problems:
            print(f"FAILED: {len(problems)} problem(s)")
            for problem in problems[:30]:
                print(f"  - {problem}")
            log(f"kept {work} for inspection")
            args.keep = True
            return 1
        print(f"OK: {len(pushed)} tags verified, every blob re-hashed")
        return 0
    finally:
        if proxy is not None:
            proxy.stop()
        if registry is not None:
            registry.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
