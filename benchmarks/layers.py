"""Generated layers: deterministic, partly compressible file trees, gzipped and cached on disk.

Generation streams tar -> gzip -> file, so never more than one file's content is in memory.
A layer is a function of its `LayerSpec` and the constants below: the cache key names them all,
so changing the generator (bump GEN_VERSION) never serves a stale layer.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import itertools
import json
import math
import os
import random
import tarfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

from benchmarks.common import KiB, MiB, log
from tests.support.images import FIXED_EPOCH

# Bump when the generator's output changes: it is part of every cache key.
GEN_VERSION = 1
GZIP_LEVEL = 6  # what docker / Go's compress/gzip use by default
RANDOM_SHARE = 0.40  # share of layer bytes that are incompressible
DEFAULT_CACHE = Path(os.environ.get("OCCYSTRAP_BENCH_CACHE", "/tmp/occystrap-bench-cache"))


@dataclass(frozen=True)
class LayerSpec:
    """One generated layer: about `mb` MiB of file content, from `seed`."""

    mb: float
    seed: int
    max_file_mb: float = 20.0

    @property
    def key(self) -> str:
        return f"layer-g{GEN_VERSION}-z{GZIP_LEVEL}-{self.mb:g}m-s{self.seed}-f{self.max_file_mb:g}"


@dataclass(frozen=True)
class LayerBlob:
    path: Path  # the gzip blob on disk
    digest: str  # sha256 of the blob
    size: int
    diff_id: str  # sha256 of the uncompressed tar
    tar_size: int
    files: int


class _HashingWriter:
    """A write-only file object that hashes and counts what passes through."""

    def __init__(self, out: BinaryIO | Any) -> None:
        self._out = out
        self._hash = hashlib.sha256()
        self.count = 0

    def write(self, data: bytes) -> int:
        self._hash.update(data)
        self.count += len(data)
        self._out.write(data)
        return len(data)

    def tell(self) -> int:  # tarfile asks once, at open
        return self.count

    def flush(self) -> None:
        self._out.flush()

    @property
    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


_LETTERS = "etaoinshrdlcumwfgypbvkjxqz"
_LETTER_WEIGHTS = [12.7, 9.1, 8.2, 7.5, 7.0, 6.7, 6.3, 6.1, 6.0, 4.3, 4.0, 2.8, 2.8, 2.4, 2.4,
                   2.2, 2.0, 2.0, 1.9, 1.5, 1.0, 0.8, 0.2, 0.2, 0.1, 0.1]  # fmt: skip
_TOP_DIRS = [
    "usr/lib",
    "usr/share/doc",
    "usr/share/locale",
    "usr/bin",
    "opt/app",
    "var/lib",
    "etc",
    "srv/data",
]
_TEXT_EXT = ["txt", "conf", "py", "js", "html", "log", "json", "md"]
_BIN_EXT = ["so", "bin", "dat", "pyc", "gz", "png"]


class ContentGenerator:
    """Deterministic, partly compressible file contents: random bytes, prose, logs, repetition."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.vocab = [
            "".join(rng.choices(_LETTERS, _LETTER_WEIGHTS, k=rng.randint(2, 11))) for _ in range(4000)
        ]
        # Zipf-like word frequencies, as in natural text.
        self.cum = list(itertools.accumulate(1.0 / (i + 1) for i in range(len(self.vocab))))
        self.dirs = [f"{rng.choice(_TOP_DIRS)}/{w}" for w in rng.sample(self.vocab[200:], 60)]

    def random(self, n: int) -> bytes:
        return self.rng.randbytes(n)

    def prose(self, n: int) -> bytes:
        parts: list[bytes] = []
        size = 0
        while size < n:
            words = self.rng.choices(self.vocab, cum_weights=self.cum, k=max(16, (n - size) // 5))
            text = "\n".join(" ".join(words[i : i + 12]) for i in range(0, len(words), 12)) + "\n"
            parts.append(text.encode())
            size += len(parts[-1])
        return b"".join(parts)[:n]

    def logs(self, n: int) -> bytes:
        rng = self.rng
        comps = self.vocab[:40]
        levels = ("INFO", "INFO", "INFO", "INFO", "DEBUG", "DEBUG", "WARN", "ERROR")
        statuses = (200, 200, 200, 200, 204, 304, 404, 500)
        t = rng.randrange(1_600_000_000_000, 1_700_000_000_000)
        lines: list[str] = []
        size = 0
        while size < n:
            t += rng.randrange(5000)
            line = (
                f"{t // 1000}.{t % 1000:03d} {rng.choice(levels)} [{rng.choice(comps)}] "
                f"req={rng.getrandbits(32):08x} path=/{rng.choice(comps)}/{rng.randrange(10000)} "
                f"status={rng.choice(statuses)} took={rng.randrange(1, 900)}ms\n"
            )
            lines.append(line)
            size += len(line)
        return "".join(lines).encode()[:n]

    def repetitive(self, n: int) -> bytes:
        """A short block repeated with a counter: tables, padding, generated data."""
        block = self.prose(self.rng.randint(200, 4000))
        reps = n // (len(block) + 8) + 1
        return b"".join(block + f"#{i:06d}\n".encode() for i in range(reps))[:n]

    def file_size(self, cap: int) -> int:
        """Mostly small files, some medium, a few large (1 KiB .. 20 MiB, log-uniform in each band)."""
        r = self.rng.random()
        if r < 0.70:
            lo, hi = 1 * KiB, 64 * KiB
        elif r < 0.95:
            lo, hi = 64 * KiB, 2 * MiB
        else:
            lo, hi = 2 * MiB, 20 * MiB
        hi = min(hi, cap)
        lo = min(lo, hi)
        return int(math.exp(self.rng.uniform(math.log(lo), math.log(hi))))


def _tarinfo(name: str, kind: bytes, size: int = 0, mode: int = 0o644) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.size = size
    ti.mode = mode
    ti.mtime = FIXED_EPOCH
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    return ti


def generate_layer(spec: LayerSpec, dest: Path) -> LayerBlob:
    """Write the gzip blob of a generated layer to `dest`, streaming (tar -> gzip -> file)."""
    rng = random.Random(spec.seed)
    gen = ContentGenerator(rng)
    target = int(spec.mb * MiB)
    cap = max(KiB, int(spec.max_file_mb * MiB))
    text_kinds = (gen.prose, gen.logs, gen.repetitive)
    text_weights = (0.5, 0.3, 0.2)
    partial = dest.with_name(dest.name + ".partial")
    files = 0
    with open(partial, "wb") as raw:
        blob = _HashingWriter(raw)
        with gzip.GzipFile(filename="", mode="wb", compresslevel=GZIP_LEVEL, fileobj=blob, mtime=0) as gz:
            tar = _HashingWriter(gz)
            with tarfile.open(fileobj=tar, mode="w", format=tarfile.PAX_FORMAT) as tf:  # type: ignore[call-overload]
                made_dirs: set[str] = set()
                total = random_bytes = 0
                while total < target:
                    size = max(1, min(gen.file_size(cap), target - total))
                    is_random = random_bytes < RANDOM_SHARE * (total + size)
                    d = rng.choice(gen.dirs)
                    parts = d.split("/")
                    for i in range(1, len(parts) + 1):
                        p = "/".join(parts[:i])
                        if p not in made_dirs:
                            made_dirs.add(p)
                            tf.addfile(_tarinfo(p + "/", tarfile.DIRTYPE, mode=0o755))
                    if is_random:
                        data = gen.random(size)
                        name = f"{d}/{rng.choice(gen.vocab)}-{files}.{rng.choice(_BIN_EXT)}"
                        mode = 0o755
                        random_bytes += size
                    else:
                        data = rng.choices(text_kinds, text_weights)[0](size)
                        name = f"{d}/{rng.choice(gen.vocab)}-{files}.{rng.choice(_TEXT_EXT)}"
                        mode = 0o644
                    tf.addfile(_tarinfo(name, tarfile.REGTYPE, len(data), mode), io.BytesIO(data))
                    total += size
                    files += 1
    os.replace(partial, dest)
    return LayerBlob(dest, blob.digest, blob.count, tar.digest, tar.count, files)


def cached_layer(spec: LayerSpec, cache_dir: Path) -> LayerBlob:
    """The layer for `spec`, generated once and kept in `cache_dir`."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    blob_path = cache_dir / f"{spec.key}.tar.gz"
    meta_path = cache_dir / f"{spec.key}.json"
    if blob_path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if blob_path.stat().st_size == meta["size"]:
            return LayerBlob(blob_path, meta["digest"], meta["size"], meta["diff_id"], meta["tar_size"],
                             meta["files"])  # fmt: skip
    log(f"generating layer {spec.key} (cached in {cache_dir}) ...")
    t0 = time.monotonic()
    layer = generate_layer(spec, blob_path)
    meta = {k: v for k, v in asdict(layer).items() if k != "path"}
    meta_path.write_text(json.dumps(meta, indent=2))
    log(
        f"  {layer.files} files, {layer.tar_size / MiB:.1f} MiB tar -> {layer.size / MiB:.1f} MiB gzip "
        f"({layer.size / layer.tar_size:.0%}) in {time.monotonic() - t0:.1f}s"
    )
    return layer


def layer_file_names(layers: Sequence[LayerBlob]) -> set[str]:
    """Regular files of the final tree (the generated layers have no whiteouts)."""
    names: set[str] = set()
    for layer in layers:
        with tarfile.open(layer.path, "r|gz") as tf:
            names.update(m.name for m in tf if m.isfile())
    return names
