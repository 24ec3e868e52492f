"""occystrap benchmarks against skopeo, on a real registry on loopback.

Run from the project root (this is what `make bench` does):

    .venv/bin/python -m benchmarks.bench              # defaults: --runs 3 --big-mb 400
    .venv/bin/python -m benchmarks.bench --quick      # small images, 1 run: a smoke test
    .venv/bin/python -m benchmarks.bench --list       # the scenarios there are

Scenarios (all run by default; `--scenario NAME` picks some):

    fetch        fetch-to-tarfile (compressed and uncompressed) vs skopeo copy (docker-archive, oci)
    mirror       mirror 20 tags sharing a base layer vs skopeo sync / a skopeo copy loop; bytes
                 fetched vs unique; the incremental re-run
    extracted20  the same 20 tags by 20 x fetch-to-extracted --use-unique-names: bytes fetched
    expand       fetch-to-extracted --expand vs skopeo copy + umoci unpack

Each scenario is a function registered with `@scenario(...)`; it gets a `BenchContext` (the
registry, the layer cache, a scratch directory, the timing helpers) and returns a `ScenarioResult`
(a table, checks against targets, JSON detail). To add one: build images with
`ctx.push_image(ImageSpec)`, describe the commands as `Tool`s, time them with
`ctx.run_alternating(...)` (or one command with `ctx.timed(...)`), summarise with `summarise(...)`,
and return a `ScenarioResult`. Everything it prints lands in the table on stdout,
bench-out/results.rst and bench-out/results.json.

Method: every command runs under `/usr/bin/time -v` (peak RSS, CPU) and is timed with a monotonic
clock; the commands of one scenario alternate A B C D A B C D ... after one uncounted warm-up round,
so drift on this shared 2-core machine hits all of them alike; outputs are deleted and `sync`ed
between runs. The page cache cannot be dropped, so the registry serves from memory: this measures
the client, not the disk. Only ratios measured in the same invocation mean much.

Generated layers are cached (default /tmp/occystrap-bench-cache, keyed by every generation
parameter), so only the first invocation pays for generating and gzipping them.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gzip
import hashlib
import http.client
import io
import itertools
import json
import math
import os
import platform
import random
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

PROJECT_ROOT = Path(__file__).resolve().parent.parent
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from tests.support.images import (  # noqa: E402
    DOCKER_CONFIG,
    DOCKER_LAYER_GZIP,
    DOCKER_MANIFEST,
    FIXED_CREATED,
    FIXED_EPOCH,
    sha256_digest,
)
from tests.support.registry import Registry, start_registry  # noqa: E402

KiB = 1024
MiB = 1024 * KiB

# Bump when the generator's output changes: it is part of every cache key.
GEN_VERSION = 1
GZIP_LEVEL = 6  # what docker / Go's compress/gzip use by default
RANDOM_SHARE = 0.40  # share of layer bytes that are incompressible
RSS_LIMIT_MIB = 64.0
DEFAULT_CACHE = Path(os.environ.get("OCCYSTRAP_BENCH_CACHE", "/tmp/occystrap-bench-cache"))
GNU_TIME = "/usr/bin/time"


def log(msg: str) -> None:
    """Progress goes to stderr; stdout carries only the result tables."""
    print(msg, file=sys.stderr, flush=True)


# ==========================================================================
# Layer generation (streaming: never more than one file's content in memory)
# ==========================================================================


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


# ==========================================================================
# Pushing (blobs streamed from disk; the registry is plain HTTP on loopback)
# ==========================================================================


@dataclass(frozen=True)
class ImageSpec:
    name: str  # short name in tables
    repo: str
    tag: str
    layers: tuple[LayerSpec, ...]
    targets: bool = True  # False: shown for what it tells, held to no target


@dataclass(frozen=True)
class PushedImage:
    name: str
    host: str
    repo: str
    tag: str
    layers: tuple[LayerBlob, ...]
    config_size: int
    manifest_digest: str

    @property
    def ref(self) -> str:
        return f"{self.host}/{self.repo}"

    @property
    def compressed_bytes(self) -> int:
        """Blob bytes a client must fetch: layers and config (manifest not counted)."""
        return sum(layer.size for layer in self.layers) + self.config_size

    @property
    def uncompressed_bytes(self) -> int:
        return sum(layer.tar_size for layer in self.layers)

    def describe(self) -> dict[str, Any]:
        return {
            "ref": f"{self.ref}:{self.tag}",
            "manifest_digest": self.manifest_digest,
            "layers": len(self.layers),
            "files": sum(layer.files for layer in self.layers),
            "compressed_mib": round(self.compressed_bytes / MiB, 2),
            "uncompressed_mib": round(self.uncompressed_bytes / MiB, 2),
            "layer_digests": [layer.digest for layer in self.layers],
            "diff_ids": [layer.diff_id for layer in self.layers],
        }


def _loopback_conn(host: str) -> http.client.HTTPConnection:
    name = host.rsplit(":", 1)[0]
    if name not in ("127.0.0.1", "localhost", "[::1]"):
        raise RuntimeError(f"refusing to talk to non-loopback host {host}")
    return http.client.HTTPConnection(host, timeout=600, blocksize=MiB)


def push_blob_file(registry: Registry, repo: str, path: Path, digest: str, size: int) -> None:
    """Monolithic upload, body streamed from the file: POST uploads/, then PUT <Location>&digest=."""
    conn = _loopback_conn(registry.host)
    try:
        conn.request("HEAD", f"/v2/{repo}/blobs/{digest}")
        resp = conn.getresponse()
        resp.read()
        if resp.status == 200:
            return
        conn.request("POST", f"/v2/{repo}/blobs/uploads/", body=b"", headers={"Content-Length": "0"})
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 202:
            raise RuntimeError(f"start upload to {repo}: HTTP {resp.status}: {body[:300]!r}")
        location = urllib.parse.urlsplit(resp.getheader("Location") or "")
        if location.netloc and location.netloc != registry.host:
            raise RuntimeError(f"registry sent upload to {location.netloc}, not {registry.host}")
        query = "&".join(q for q in (location.query, "digest=" + urllib.parse.quote(digest)) if q)
        with open(path, "rb") as fh:
            conn.request(
                "PUT",
                f"{location.path}?{query}",
                body=fh,
                headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            )
            resp = conn.getresponse()
            body = resp.read()
        if resp.status != 201:
            raise RuntimeError(f"upload {digest} to {repo}: HTTP {resp.status}: {body[:300]!r}")
    finally:
        conn.close()


def image_config(layers: Sequence[LayerBlob]) -> bytes:
    cfg = {
        "architecture": "amd64",
        "os": "linux",
        "created": FIXED_CREATED,
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/bin/sh"],
        },
        "history": [
            {"created": FIXED_CREATED, "created_by": f"/bin/sh -c #(nop) ADD bench-layer{i}.tar /"}
            for i in range(len(layers))
        ],
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
    }
    return json.dumps(cfg, sort_keys=True, separators=(",", ":")).encode()


def push_generated_image(registry: Registry, spec: ImageSpec, cache_dir: Path) -> PushedImage:
    layers = tuple(cached_layer(ls, cache_dir) for ls in spec.layers)
    t0 = time.monotonic()
    for layer in layers:
        push_blob_file(registry, spec.repo, layer.path, layer.digest, layer.size)
    config = image_config(layers)
    registry.push_blob(spec.repo, config)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": DOCKER_CONFIG, "size": len(config), "digest": sha256_digest(config)},
            "layers": [
                {"mediaType": DOCKER_LAYER_GZIP, "size": layer.size, "digest": layer.digest}
                for layer in layers
            ],
        },
        indent=3,
    ).encode()
    digest = registry.push_manifest(spec.repo, spec.tag, manifest, DOCKER_MANIFEST)
    image = PushedImage(spec.name, registry.host, spec.repo, spec.tag, layers, len(config), digest)
    log(
        f"pushed {spec.name}: {image.ref}:{spec.tag}, {len(layers)} layer(s), "
        f"{image.compressed_bytes / MiB:.1f} MiB compressed / {image.uncompressed_bytes / MiB:.1f} MiB "
        f"uncompressed, in {time.monotonic() - t0:.1f}s"
    )
    return image


# ==========================================================================
# Running and timing commands
# ==========================================================================


@dataclass(frozen=True)
class Tool:
    """A command under test. `argv(image, rundir)` gives the command line and where its output goes.

    `verify(image, output)` (optional) checks the warm-up run's output and returns an error or None.
    """

    name: str
    argv: Callable[[PushedImage, Path], tuple[list[str], Path]]
    verify: Callable[[PushedImage, Path], str | None] | None = None


@dataclass
class Measurement:
    tool: str
    image: str
    round: int  # 0 = warm-up
    rc: int
    wall_s: float
    max_rss_kib: int
    user_s: float
    sys_s: float
    served_bytes: int  # body bytes the registry sent during the run (from its access log)
    output_bytes: int
    error: str = ""
    served_blob_bytes: int = 0  # of which blob bodies (layers and configs): GET .../blobs/...

    @property
    def counted(self) -> bool:
        return self.round > 0 and self.rc == 0

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s


_TIME_FIELDS = {
    "Maximum resident set size (kbytes)": "rss",
    "User time (seconds)": "user",
    "System time (seconds)": "sys",
}


def parse_gnu_time(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        key, _, value = line.strip().rpartition(": ")
        if key in _TIME_FIELDS:
            with contextlib.suppress(ValueError):
                out[_TIME_FIELDS[key]] = float(value)
    return out


def path_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, f)).st_size
    return total


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Kill the process group this script started for one command (and only that)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        proc.wait(timeout=10)


def served_bytes(lines: Sequence[Any], path_part: str = "") -> int:
    return sum(r.bytes for r in lines if r.method == "GET" and r.status in (200, 206) and path_part in r.path)


def verify_docker_tarball(
    expect: Callable[[PushedImage], list[str]],
) -> Callable[[PushedImage, Path], str | None]:
    """Check a docker-loadable tarball: manifest.json lists the layers and each hashes as expected."""

    def check(image: PushedImage, path: Path) -> str | None:
        want = expect(image)
        try:
            with tarfile.open(path, "r:") as tf:
                member = tf.extractfile("manifest.json")
                if member is None:
                    return "no manifest.json"
                manifest = json.loads(member.read())
                if len(manifest) != 1:
                    return f"manifest.json lists {len(manifest)} images"
                names = manifest[0]["Layers"]
                if len(names) != len(want):
                    return f"{len(names)} layers, expected {len(want)}"
                for name, digest in zip(names, want, strict=True):
                    fh = tf.extractfile(name)
                    if fh is None:
                        return f"layer {name} missing"
                    h = hashlib.sha256()
                    while chunk := fh.read(4 * MiB):
                        h.update(chunk)
                    if "sha256:" + h.hexdigest() != digest:
                        return f"layer {name} hashes to sha256:{h.hexdigest()}, expected {digest}"
        except (OSError, tarfile.TarError, KeyError, ValueError) as exc:
            return f"unreadable: {exc}"
        return None

    return check


def verify_oci_dir(image: PushedImage, path: Path) -> str | None:
    missing = [
        layer.digest for layer in image.layers if not (path / "blobs" / "sha256" / layer.digest[7:]).is_file()
    ]
    if not (path / "index.json").is_file():
        return "no index.json"
    return f"missing blobs {missing}" if missing else None


@dataclass
class BenchContext:
    args: argparse.Namespace
    workdir: Path
    cache_dir: Path
    occystrap: str
    _registry: Registry | None = None
    _pushed: dict[ImageSpec, PushedImage] = field(default_factory=dict)

    @property
    def registry(self) -> Registry:
        """One registry for the whole invocation, started on first use."""
        if self._registry is None:
            self._registry = start_registry(self.workdir / "registry")
            log(f"registry at {self._registry.host} (log: {self._registry.log_path})")
        return self._registry

    def stop(self) -> None:
        if self._registry is not None:
            self._registry.stop()
            self._registry = None

    def push_image(self, spec: ImageSpec) -> PushedImage:
        if spec not in self._pushed:
            self._pushed[spec] = push_generated_image(self.registry, spec, self.cache_dir)
        return self._pushed[spec]

    def env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "ftp_proxy")
        }
        env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
        tmp = self.workdir / "tmp"
        tmp.mkdir(exist_ok=True)
        env["TMPDIR"] = str(tmp)  # skopeo's temporary files land in the scratch dir too
        return env

    def measure(self, tool: Tool, image: PushedImage, round_no: int) -> Measurement:
        """Run one command under /usr/bin/time -v, then delete its output."""
        rundir = self.workdir / "run" / tool.name
        shutil.rmtree(rundir, ignore_errors=True)
        rundir.mkdir(parents=True)
        argv, output = tool.argv(image, rundir)
        m = self.timed(tool.name, image.name, round_no, argv, rundir, output)
        if m.rc == 0 and round_no == 0 and tool.verify is not None and self.args.verify:
            problem = tool.verify(image, output)
            if problem:
                m.rc, m.error = -2, f"output check failed: {problem}"
        shutil.rmtree(rundir, ignore_errors=True)
        return m

    def timed(
        self, tool: str, image: str, round_no: int, argv: Sequence[str], cwd: Path, output: Path
    ) -> Measurement:
        """Run one command under /usr/bin/time -v; its output is left where it is."""
        time_file = self.workdir / "time.txt"
        time_file.unlink(missing_ok=True)
        log_before = len(self.registry.access_log())
        os.sync()  # the previous run's dirty pages are not this run's cost
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [GNU_TIME, "-v", "-o", str(time_file), *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.env(),
            cwd=cwd,
            start_new_session=True,  # its own process group, so it can be killed on Ctrl-C
        )
        try:
            out, err = proc.communicate(timeout=self.args.timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            out, err = b"", f"timed out after {self.args.timeout}s".encode()
        except BaseException:
            _kill_group(proc)
            raise
        wall = time.perf_counter() - t0
        stats = parse_gnu_time(time_file.read_text(errors="replace")) if time_file.exists() else {}
        rc = proc.returncode if proc.returncode is not None else -1
        # The registry writes its access log line after the body: wait until the count settles.
        lines = self._settled_log()[log_before:]
        m = Measurement(
            tool=tool,
            image=image,
            round=round_no,
            rc=rc,
            wall_s=wall,
            max_rss_kib=int(stats.get("rss", 0)),
            user_s=stats.get("user", 0.0),
            sys_s=stats.get("sys", 0.0),
            served_bytes=served_bytes(lines),
            output_bytes=path_size(output) if output.exists() else 0,
            served_blob_bytes=served_bytes(lines, "/blobs/"),
        )
        if rc != 0:
            tail = (err or out).decode(errors="replace").strip().splitlines()[-15:]
            m.error = "\n".join(tail)
        return m

    def _settled_log(self, quiet: float = 0.05, limit: float = 2.0) -> list[Any]:
        lines = self.registry.access_log()
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            time.sleep(quiet)
            again = self.registry.access_log()
            if len(again) == len(lines):
                return again
            lines = again
        return lines

    def run_alternating(self, image: PushedImage, tools: Sequence[Tool], runs: int) -> list[Measurement]:
        """One warm-up round (round 0, not counted), then `runs` rounds of A B C D ..."""
        results: list[Measurement] = []
        failed: set[str] = set()
        for round_no in range(runs + 1):
            for tool in tools:
                if tool.name in failed:
                    continue
                m = self.measure(tool, image, round_no)
                results.append(m)
                label = "warm-up" if round_no == 0 else f"run {round_no}/{runs}"
                log(
                    f"  [{image.name}] {label:>9} {tool.name:<26} {m.wall_s:7.2f}s  "
                    f"rss {m.max_rss_kib / KiB:7.1f} MiB  cpu {m.cpu_s:6.2f}s  "
                    f"served {m.served_bytes / MiB:7.1f} MiB  out {m.output_bytes / MiB:7.1f} MiB"
                    + ("" if m.rc == 0 else f"  FAILED (rc {m.rc})")
                )
                if m.rc != 0:
                    failed.add(tool.name)
                    log("    " + m.error.replace("\n", "\n    "))
        return results


# ==========================================================================
# Summaries, checks and tables
# ==========================================================================


@dataclass(frozen=True)
class Summary:
    image: str
    tool: str
    runs: int
    failed: bool
    median_s: float
    min_s: float
    max_s: float
    mib_per_s: float  # compressed bytes of the image / median time
    peak_rss_mib: float  # the largest peak over the counted runs
    median_cpu_s: float
    median_served_mib: float
    error: str = ""


def summarise(image: PushedImage, tool: str, ms: Sequence[Measurement]) -> Summary:
    mine = [m for m in ms if m.tool == tool and m.image == image.name]
    counted = [m for m in mine if m.counted]
    errors = [m.error for m in mine if m.rc != 0]
    if not counted or errors:
        nan = float("nan")
        return Summary(image.name, tool, len(counted), True, nan, nan, nan, nan, nan, nan, nan,
                       errors[0] if errors else "no runs")  # fmt: skip
    walls = [m.wall_s for m in counted]
    med = statistics.median(walls)
    return Summary(
        image=image.name,
        tool=tool,
        runs=len(counted),
        failed=False,
        median_s=med,
        min_s=min(walls),
        max_s=max(walls),
        mib_per_s=image.compressed_bytes / MiB / med,
        peak_rss_mib=max(m.max_rss_kib for m in counted) / KiB,
        median_cpu_s=statistics.median(m.cpu_s for m in counted),
        median_served_mib=statistics.median(m.served_bytes for m in counted) / MiB,
    )


def paired_ratio(ms: Sequence[Measurement], image: str, a: str, b: str) -> float:
    """Median over rounds of a/b measured back to back (less sensitive to drift than medians' ratio)."""
    by_round: dict[int, dict[str, float]] = {}
    for m in ms:
        if m.image == image and m.counted:
            by_round.setdefault(m.round, {})[m.tool] = m.wall_s
    ratios = [r[a] / r[b] for r in by_round.values() if a in r and b in r and r[b] > 0]
    return statistics.median(ratios) if ratios else float("nan")


@dataclass(frozen=True)
class Check:
    image: str
    what: str
    value: float
    limit: float
    unit: str = ""

    @property
    def met(self) -> bool:
        return not math.isnan(self.value) and self.value <= self.limit

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "met": self.met}


@dataclass
class ScenarioResult:
    name: str
    title: str
    headers: list[str]
    rows: list[list[str]]
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)


def fmt(x: float, digits: int = 2) -> str:
    return "-" if math.isnan(x) else f"{x:.{digits}f}"


def render_text(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip(), line]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(out)


def render_rst(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A reStructuredText simple table (empty cells become '..' so columns stay intact)."""
    cells = [[c if c.strip() else ".." for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    rule = " ".join("=" * w for w in widths)
    out = [rule, " ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip(), rule]
    out += [" ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    out.append(rule)
    return "\n".join(out)


# ==========================================================================
# Scenarios
# ==========================================================================

Scenario = Callable[[BenchContext], ScenarioResult]
SCENARIOS: dict[str, tuple[Scenario, bool, str]] = {}  # name -> (function, runs by default, description)


def scenario(name: str, description: str, default: bool = True) -> Callable[[Scenario], Scenario]:
    def register(fn: Scenario) -> Scenario:
        SCENARIOS[name] = (fn, default, description)
        return fn

    return register


def _occystrap_tool(ctx: BenchContext, name: str, extra: Sequence[str], uncompressed: bool) -> Tool:
    def argv(image: PushedImage, rundir: Path) -> tuple[list[str], Path]:
        out = rundir / "out.tar"
        return [ctx.occystrap, "fetch-to-tarfile", "--quiet", *extra, image.ref, image.tag, str(out)], out

    if uncompressed:
        verify = verify_docker_tarball(lambda img: [layer.diff_id for layer in img.layers])
    else:
        verify = verify_docker_tarball(lambda img: [layer.digest for layer in img.layers])
    return Tool(name, argv, verify)


def _skopeo_docker_archive(image: PushedImage, rundir: Path) -> tuple[list[str], Path]:
    out = rundir / "out.tar"
    src = f"docker://{image.ref}:{image.tag}"
    return ["skopeo", "copy", "--quiet", "--src-tls-verify=false", src, f"docker-archive:{out}"], out


def _skopeo_oci(image: PushedImage, rundir: Path) -> tuple[list[str], Path]:
    out = rundir / "outdir"
    src = f"docker://{image.ref}:{image.tag}"
    return ["skopeo", "copy", "--quiet", "--src-tls-verify=false", src, f"oci:{out}:{image.tag}"], out


OCCY_C = "occystrap-compressed"
OCCY_U = "occystrap-uncompressed"
SKOPEO_DA = "skopeo-docker-archive"
SKOPEO_OCI = "skopeo-oci"


def fetch_images(args: argparse.Namespace) -> list[ImageSpec]:
    if args.quick:
        big_mb, five_mb, big_cap, five_cap = float(args.big_mb or 24), 4.0, 4.0, 1.0
    else:
        big_mb, five_mb, big_cap, five_cap = float(args.big_mb or 400), 20.0, 20.0, 5.0
    return [
        ImageSpec("big", "bench/big", "v1", (LayerSpec(big_mb, seed=400, max_file_mb=big_cap),)),
        ImageSpec(
            "five",
            "bench/five",
            "v1",
            tuple(LayerSpec(five_mb, seed=500 + i, max_file_mb=five_cap) for i in range(5)),
        ),
        # Next to nothing to move: its times are each tool's fixed costs (start-up, resolving, writing).
        ImageSpec("tiny", "bench/tiny", "v1", (LayerSpec(0.1, seed=600, max_file_mb=0.1),), targets=False),
    ]


@scenario("fetch", "fetch-to-tarfile (compressed and uncompressed) vs skopeo copy to docker-archive and oci")
def fetch_to_tarfile(ctx: BenchContext) -> ScenarioResult:
    extra = ["-j", str(ctx.args.parallel)] if ctx.args.parallel else []
    tools = [
        _occystrap_tool(ctx, OCCY_C, extra, uncompressed=False),
        _occystrap_tool(ctx, OCCY_U, ["--uncompressed-layers", *extra], uncompressed=True),
        Tool(
            SKOPEO_DA,
            _skopeo_docker_archive,
            verify_docker_tarball(lambda img: [la.diff_id for la in img.layers]),
        ),
        Tool(SKOPEO_OCI, _skopeo_oci, verify_oci_dir),
    ]
    # (occystrap tool, skopeo tool it is compared with, target ratio of median times)
    pairs = {OCCY_U: (SKOPEO_DA, 0.5), OCCY_C: (SKOPEO_OCI, 1.0)}

    specs = fetch_images(ctx.args)
    untargeted = {spec.name for spec in specs if not spec.targets}
    images = [ctx.push_image(spec) for spec in specs]
    measurements: list[Measurement] = []
    for image in images:
        log(f"timing {image.name}: {', '.join(t.name for t in tools)}; 1 warm-up + {ctx.args.runs} rounds")
        measurements += ctx.run_alternating(image, tools, ctx.args.runs)

    headers = ["image", "tool", "runs", "median s", "min s", "MiB/s", "peak RSS MiB", "CPU s",
               "ratio", "paired", "target", "targets met"]  # fmt: skip
    rows: list[list[str]] = []
    checks: list[Check] = []
    summaries: list[Summary] = []
    for image in images:
        by_tool = {t.name: summarise(image, t.name, measurements) for t in tools}
        summaries += by_tool.values()
        for t in tools:
            s = by_tool[t.name]
            ratio = paired = float("nan")
            target = met = "-"
            if t.name in pairs:
                other, limit = pairs[t.name]
                ratio = s.median_s / by_tool[other].median_s
                paired = paired_ratio(measurements, image.name, t.name, other)
                if image.name not in untargeted:
                    time_check = Check(image.name, f"{t.name} / {other} (median wall)", ratio, limit)
                    rss_check = Check(image.name, f"{t.name} peak RSS", s.peak_rss_mib, RSS_LIMIT_MIB, "MiB")
                    checks += [time_check, rss_check]
                    target = f"<={limit:g}, RSS<={RSS_LIMIT_MIB:g}"
                    misses = [w for c, w in ((time_check, "time"), (rss_check, "RSS")) if not c.met]
                    met = "yes" if not misses else "NO: " + ", ".join(misses)
                    if s.failed:
                        met = "NO: failed"
            rss = fmt(s.peak_rss_mib, 1) + (" !" if s.peak_rss_mib > RSS_LIMIT_MIB else "")
            rows.append([
                image.name, t.name, str(s.runs), fmt(s.median_s), fmt(s.min_s), fmt(s.mib_per_s, 1), rss,
                fmt(s.median_cpu_s), fmt(ratio), fmt(paired), target, met,
            ])  # fmt: skip
    notes = [
        "ratio = median wall time of the occystrap row / median of its skopeo comparator "
        f"({OCCY_U} vs {SKOPEO_DA}, {OCCY_C} vs {SKOPEO_OCI}); paired = median of per-round ratios.",
        "MiB/s = compressed bytes of the image / median wall time; "
        f"'!' marks peak RSS > {RSS_LIMIT_MIB:g} MiB.",
        "CPU s = median user+sys of the process (GNU time); "
        "both tools run on the same 2 cores as the registry.",
    ]
    for image in images:
        notes.append(
            f"{image.name}: {len(image.layers)} layer(s), "
            f"{image.compressed_bytes / MiB:.1f} MiB compressed, "
            f"{image.uncompressed_bytes / MiB:.1f} MiB uncompressed, "
            f"{sum(la.files for la in image.layers)} files."
            + (" No target: its times are the tools' fixed costs." if image.name in untargeted else "")
        )
    failures = [s for s in summaries if s.failed]
    for s in failures:
        notes.append(f"FAILED {s.image}/{s.tool}: {s.error.splitlines()[-1] if s.error else ''}")
    return ScenarioResult(
        name="fetch",
        title="fetch-to-tarfile vs skopeo copy",
        headers=headers,
        rows=rows,
        checks=checks,
        notes=notes,
        data={
            "images": {image.name: image.describe() for image in images},
            "summaries": [asdict(s) for s in summaries],
            "measurements": [asdict(m) for m in measurements],
        },
    )


OCCY_QUIET = "occystrap --progress none"
OCCY_RICH = "occystrap --progress rich (pty)"
DISPLAY_TARGET = 1.02  # the live display may cost at most 2% of a fetch


@scenario("display", "the rich progress display's cost: the big fetch on a pseudo-terminal vs no display")
def display_cost(ctx: BenchContext) -> ScenarioResult:
    [big] = [spec for spec in fetch_images(ctx.args) if spec.name == "big"]
    image = ctx.push_image(big)

    def quiet(img: PushedImage, rundir: Path) -> tuple[list[str], Path]:
        out = rundir / "out.tar"
        return [ctx.occystrap, "fetch-to-tarfile", "--progress", "none", img.ref, img.tag, str(out)], out

    def rich(img: PushedImage, rundir: Path) -> tuple[list[str], Path]:
        out = rundir / "out.tar"
        cmd = [ctx.occystrap, "fetch-to-tarfile", "--progress", "rich", img.ref, img.tag, str(out)]
        # script(1) gives the command a real pseudo-terminal, so rich draws as it would for a person.
        return ["script", "-qfec", " ".join(shlex.quote(c) for c in cmd), "/dev/null"], out

    tools = [Tool(OCCY_QUIET, quiet), Tool(OCCY_RICH, rich)]
    log(f"timing display cost on {image.name}; 1 warm-up + {ctx.args.runs} rounds")
    measurements = ctx.run_alternating(image, tools, ctx.args.runs)
    by_tool = {t.name: summarise(image, t.name, measurements) for t in tools}
    ratio = by_tool[OCCY_RICH].median_s / by_tool[OCCY_QUIET].median_s
    paired = paired_ratio(measurements, image.name, OCCY_RICH, OCCY_QUIET)
    cpu_ratio = by_tool[OCCY_RICH].median_cpu_s / max(by_tool[OCCY_QUIET].median_cpu_s, 1e-9)
    check = Check(image.name, f"{OCCY_RICH} / {OCCY_QUIET} (median wall)", ratio, DISPLAY_TARGET)
    headers = ["image", "tool", "runs", "median s", "CPU s", "ratio", "paired", "CPU ratio", "target"]
    rows = [
        [image.name, t.name, str(by_tool[t.name].runs), fmt(by_tool[t.name].median_s),
         fmt(by_tool[t.name].median_cpu_s),
         fmt(ratio) if t.name == OCCY_RICH else "-", fmt(paired) if t.name == OCCY_RICH else "-",
         fmt(cpu_ratio) if t.name == OCCY_RICH else "-",
         f"<={DISPLAY_TARGET:g}" if t.name == OCCY_RICH else "-"]
        for t in tools
    ]  # fmt: skip
    return ScenarioResult(
        name="display",
        title="progress display cost",
        headers=headers,
        rows=rows,
        checks=[check],
        notes=[
            "CPU ratio includes script(1) relaying the terminal output; wall time is what a person waits."
        ],
        data={"summaries": [asdict(s) for s in by_tool.values()]},
    )


# --------------------------------------------------------------------------
# Many tags sharing a base layer: mirror, and fetch-to-extracted in a loop
# --------------------------------------------------------------------------

TAG_COUNT = 20
OCCY_MIRROR = "occystrap-mirror"
OCCY_RERUN = "occystrap-mirror re-run"
SKOPEO_SYNC = "skopeo-sync-dir"
SKOPEO_LOOP = "skopeo-copy-loop-oci"
OCCY_EXTRACTED = "occystrap-extracted-loop"
MIRROR_TARGET = 0.8  # occystrap mirror / the faster skopeo, median wall time
RERUN_TARGET_S = 1.0


@dataclass(frozen=True)
class TagGroup:
    """TAG_COUNT images in one repository, each = the shared base layer + a small layer of its own."""

    images: tuple[PushedImage, ...]

    @property
    def first(self) -> PushedImage:
        return self.images[0]

    @property
    def tags(self) -> list[str]:
        return [i.tag for i in self.images]

    @property
    def unique_bytes(self) -> int:
        """Every distinct blob once: layers (the base once) and each image's config."""
        layers = {la.digest: la.size for i in self.images for la in i.layers}
        return sum(layers.values()) + sum(i.config_size for i in self.images)

    @property
    def referenced_bytes(self) -> int:
        """What the tags reference, counting the shared base once per tag."""
        return sum(i.compressed_bytes for i in self.images)

    @property
    def as_image(self) -> PushedImage:
        """The group as one PushedImage for the timing helpers (name, ref, unique layers)."""
        layers = {la.digest: la for i in self.images for la in i.layers}
        configs = sum(i.config_size for i in self.images)
        f = self.first
        return PushedImage("tags20", f.host, f.repo, f.tag, tuple(layers.values()), configs, "")

    def describe(self) -> dict[str, Any]:
        return {
            "repo": f"{self.first.ref}",
            "tags": self.tags,
            "base_layer": self.first.layers[0].digest,
            "base_mib": round(self.first.layers[0].size / MiB, 2),
            "unique_mib": round(self.unique_bytes / MiB, 2),
            "referenced_mib": round(self.referenced_bytes / MiB, 2),
        }


def tag_group_specs(args: argparse.Namespace) -> list[ImageSpec]:
    base_mb, small_mb = (8.0, 0.25) if args.quick else (96.0, 1.0)  # 96 MiB of tar: ~54 MiB gzip
    base = LayerSpec(base_mb, seed=600, max_file_mb=8.0)
    return [
        ImageSpec(
            f"t{i:02d}", "bench/tags", f"t{i:02d}", (base, LayerSpec(small_mb, 700 + i, max_file_mb=0.5))
        )
        for i in range(TAG_COUNT)
    ]


def push_tag_group(ctx: BenchContext) -> TagGroup:
    return TagGroup(tuple(ctx.push_image(spec) for spec in tag_group_specs(ctx.args)))


def _mirror_spec(ctx: BenchContext, group: TagGroup) -> Path:
    path = ctx.workdir / "tags20.yaml"
    path.write_text(f"images:\n  - name: {group.first.ref}\n    tags: [{', '.join(group.tags)}]\n")
    return path


def _occystrap_verifies(ctx: BenchContext, output: Path) -> str | None:
    proc = subprocess.run([ctx.occystrap, "verify", "--quiet", str(output)], capture_output=True, text=True,
                          check=False, env=ctx.env())  # fmt: skip
    return None if proc.returncode == 0 else f"occystrap verify: {(proc.stdout + proc.stderr).strip()[:500]}"


def _merged_holds(ctx: BenchContext, group: TagGroup) -> Callable[[PushedImage, Path], str | None]:
    def check(_image: PushedImage, out: Path) -> str | None:
        try:
            doc = json.loads((out / "catalog.json").read_text())
            held = set(doc["images"][group.first.ref])
        except (OSError, ValueError, KeyError) as exc:
            return f"no usable catalog.json: {exc}"
        if held != set(group.tags):
            return f"catalog holds {sorted(held)}"
        return _occystrap_verifies(ctx, out)

    return check


def _skopeo_sync_holds(group: TagGroup) -> Callable[[PushedImage, Path], str | None]:
    def check(_image: PushedImage, out: Path) -> str | None:
        found = {p.parent.name for p in out.rglob("manifest.json")}
        want = {f"{group.first.repo.rsplit('/', 1)[-1]}:{t}" for t in group.tags}
        return None if found == want else f"synced {sorted(found)}, expected {sorted(want)}"

    return check


def _oci_holds(group: TagGroup) -> Callable[[PushedImage, Path], str | None]:
    def check(_image: PushedImage, out: Path) -> str | None:
        try:
            index = json.loads((out / "index.json").read_text())
        except (OSError, ValueError) as exc:
            return f"no index.json: {exc}"
        key = "org.opencontainers.image.ref.name"
        names = {m.get("annotations", {}).get(key) for m in index["manifests"]}
        return None if names == set(group.tags) else f"index.json names {sorted(map(str, names))}"

    return check


def _median_or_nan(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _mib(n: float) -> str:
    return fmt(n / MiB, 1)


@scenario("mirror", f"mirror {TAG_COUNT} tags sharing a base layer vs skopeo sync / a skopeo copy loop")
def mirror_tags(ctx: BenchContext) -> ScenarioResult:
    group = push_tag_group(ctx)
    image = group.as_image
    spec = _mirror_spec(ctx, group)
    src = f"docker://{group.first.ref}"

    def occystrap_argv(_image: PushedImage, rundir: Path) -> tuple[list[str], Path]:
        out = rundir / "out"
        return [ctx.occystrap, "mirror", "--quiet", str(spec), str(out)], out

    def sync_argv(_image: PushedImage, rundir: Path) -> tuple[list[str], Path]:
        out = rundir / "out"
        return ["skopeo", "sync", "--src", "docker", "--dest", "dir", "--src-tls-verify=false",
                group.first.ref, str(out)], out  # fmt: skip

    def loop_argv(_image: PushedImage, rundir: Path) -> tuple[list[str], Path]:
        out = rundir / "out"
        script = (
            f'for t in {" ".join(group.tags)}; do skopeo copy --quiet --src-tls-verify=false "{src}:$t" '
            f'"oci:{out}:$t" || exit 1; done'
        )
        return ["sh", "-c", script], out

    tools = [
        Tool(OCCY_MIRROR, occystrap_argv, _merged_holds(ctx, group)),
        Tool(SKOPEO_SYNC, sync_argv, _skopeo_sync_holds(group)),
        Tool(SKOPEO_LOOP, loop_argv, _oci_holds(group)),
    ]
    log(f"timing {TAG_COUNT} tags: {', '.join(t.name for t in tools)}; 1 warm-up + {ctx.args.runs} rounds")
    measurements = ctx.run_alternating(image, tools, ctx.args.runs)

    # The incremental re-run: the same spec against an up-to-date DEST.
    inc_dir = ctx.workdir / "run" / "incremental"
    shutil.rmtree(inc_dir, ignore_errors=True)
    inc_dir.mkdir(parents=True)
    argv, out = occystrap_argv(image, inc_dir)
    first = ctx.timed(OCCY_RERUN, image.name, 0, argv, inc_dir, out)
    reruns = [first]
    if first.rc == 0:
        for i in range(max(5, ctx.args.runs)):
            m = ctx.timed(OCCY_RERUN, image.name, i + 1, argv, inc_dir, out)
            reruns.append(m)
            log(f"  [tags20] re-run {i + 1}: {m.wall_s:.2f}s, served blobs {m.served_blob_bytes} B"
                + ("" if m.rc == 0 else f" FAILED (rc {m.rc})"))  # fmt: skip
    shutil.rmtree(inc_dir, ignore_errors=True)
    measurements += reruns

    by_tool = {t.name: summarise(image, t.name, measurements) for t in tools}
    rerun = summarise(image, OCCY_RERUN, reruns)
    comparators = [n for n in (SKOPEO_SYNC, SKOPEO_LOOP) if not by_tool[n].failed]
    best = min(comparators, key=lambda n: by_tool[n].median_s) if comparators else None
    ratio = by_tool[OCCY_MIRROR].median_s / by_tool[best].median_s if best else float("nan")
    paired = paired_ratio(measurements, image.name, OCCY_MIRROR, best) if best else float("nan")

    def fetched(tool: str, ms: Sequence[Measurement] = measurements) -> float:
        return _median_or_nan([m.served_blob_bytes for m in ms if m.tool == tool and m.counted])

    occy_fetched = fetched(OCCY_MIRROR)
    rerun_fetched = fetched(OCCY_RERUN, reruns)
    checks = [
        Check("tags20", f"{OCCY_MIRROR} / {best or 'skopeo'} (median wall)", ratio, MIRROR_TARGET),
        Check(
            "tags20",
            f"{OCCY_MIRROR} blob bytes fetched / unique blob bytes",
            occy_fetched / group.unique_bytes,
            1.0,
        ),
        Check("tags20", f"{OCCY_RERUN} median wall", rerun.median_s, RERUN_TARGET_S, " s"),
    ]
    headers = ["tool", "runs", "median s", "min s", "peak RSS MiB", "CPU s", "blob MiB fetched",
               "unique MiB", "referenced MiB", "ratio", "paired", "target", "targets met"]  # fmt: skip
    rows = []
    for name in [t.name for t in tools] + [OCCY_RERUN]:
        sm = rerun if name == OCCY_RERUN else by_tool[name]
        got = rerun_fetched if name == OCCY_RERUN else fetched(name)
        r = p = float("nan")
        target = met = "-"
        if name == OCCY_MIRROR:
            r, p = ratio, paired
            target = f"<={MIRROR_TARGET:g} x {best or '?'}; fetched=unique"
            misses = [w for c, w in zip(checks[:2], ("time", "bytes"), strict=True) if not c.met]
            met = "yes" if not misses else "NO: " + ", ".join(misses)
        elif name == OCCY_RERUN:
            target = f"<{RERUN_TARGET_S:g} s"
            met = "yes" if checks[2].met else "NO"
        if sm.failed:
            met = "NO: failed" if name in (OCCY_MIRROR, OCCY_RERUN) else "failed"
        rows.append([
            name, str(sm.runs), fmt(sm.median_s), fmt(sm.min_s), fmt(sm.peak_rss_mib, 1),
            fmt(sm.median_cpu_s), _mib(got), _mib(group.unique_bytes), _mib(group.referenced_bytes), fmt(r),
            fmt(p), target, met,
        ])  # fmt: skip
    base = group.first.layers[0]
    notes = [
        f"{TAG_COUNT} tags of {group.first.ref}: one {base.size / MiB:.1f} MiB gzip base layer "
        f"({base.tar_size / MiB:.0f} MiB of tar) shared by all, plus one small layer each "
        f"({group.first.layers[1].size / KiB:.0f} KiB gzip); unique blob bytes {group.unique_bytes} "
        f"(layers + {TAG_COUNT} configs), referenced {group.referenced_bytes}.",
        f"{OCCY_MIRROR}: `occystrap mirror SPEC DIR` into a merged directory; {SKOPEO_SYNC}: "
        f"`skopeo sync --src docker --dest dir REPO DIR` (one directory per tag, blobs not shared); "
        f"{SKOPEO_LOOP}: `skopeo copy docker://REPO:TAG oci:DIR:TAG` for each tag into one OCI layout.",
        f"ratio = occystrap median / median of the faster skopeo way ({best}); paired = median of per-round "
        "ratios. blob MiB fetched = bytes of GET .../blobs/ bodies in the registry's access log (median).",
        f"{OCCY_RERUN}: the same `occystrap mirror` again on a complete DIR ({len(reruns) - 1} timed runs "
        f"after a first full one); blob bytes fetched: {rerun_fetched:.0f} (manifests are asked for again; "
        "configs DIR holds are read from it; every blob in DIR is re-hashed once).",
    ]
    for sm in [*by_tool.values(), rerun]:
        if sm.failed:
            notes.append(f"FAILED {sm.tool}: {sm.error.splitlines()[-1] if sm.error else ''}")
    return ScenarioResult(
        name="mirror",
        title=f"mirror {TAG_COUNT} tags sharing a base layer vs skopeo",
        headers=headers,
        rows=rows,
        checks=checks,
        notes=notes,
        data={
            "group": group.describe(),
            "summaries": [asdict(sm) for sm in [*by_tool.values(), rerun]],
            "measurements": [asdict(m) for m in measurements],
        },
    )


@scenario("extracted20", f"fetch-to-extracted --use-unique-names of {TAG_COUNT} tags into one dir: bytes")
def extracted_loop(ctx: BenchContext) -> ScenarioResult:
    group = push_tag_group(ctx)
    image = group.as_image

    def loop_argv(_image: PushedImage, rundir: Path) -> tuple[list[str], Path]:
        out = rundir / "out"
        script = (
            f'for t in {" ".join(group.tags)}; do "{ctx.occystrap}" fetch-to-extracted --quiet '
            f'--use-unique-names "{group.first.ref}" "$t" "{out}" || exit 1; done'
        )
        return ["sh", "-c", script], out

    tool = Tool(OCCY_EXTRACTED, loop_argv, _merged_holds(ctx, group))
    log(f"timing {OCCY_EXTRACTED}: 1 warm-up + {ctx.args.runs} rounds")
    measurements = ctx.run_alternating(image, [tool], ctx.args.runs)
    sm = summarise(image, tool.name, measurements)
    got = _median_or_nan([m.served_blob_bytes for m in measurements if m.counted])
    check = Check("tags20", f"{OCCY_EXTRACTED} blob bytes fetched / unique blob bytes",
                  got / group.unique_bytes, 1.0)  # fmt: skip
    headers = ["tool", "runs", "median s", "min s", "peak RSS MiB", "blob MiB fetched", "referenced MiB",
               "unique MiB", "fetched/referenced", "fetched/unique", "target", "targets met"]  # fmt: skip
    rows = [[
        tool.name, str(sm.runs), fmt(sm.median_s), fmt(sm.min_s), fmt(sm.peak_rss_mib, 1), _mib(got),
        _mib(group.referenced_bytes), _mib(group.unique_bytes), fmt(got / group.referenced_bytes, 3),
        fmt(got / group.unique_bytes, 3), "fetched=unique",
        "NO: failed" if sm.failed else ("yes" if check.met else "NO"),
    ]]  # fmt: skip
    notes = [
        f"{TAG_COUNT} invocations of `occystrap fetch-to-extracted --use-unique-names REPO TAG DIR`, "
        "one DIR: a blob already in DIR (re-hashed) is not fetched again, so the base is fetched once.",
        "referenced = what the tags reference (base counted per tag); unique = every blob once.",
    ]
    if sm.failed:
        notes.append(f"FAILED {sm.tool}: {sm.error.splitlines()[-1] if sm.error else ''}")
    return ScenarioResult(
        name="extracted20",
        title=f"fetch-to-extracted --use-unique-names, {TAG_COUNT} tags into one directory",
        headers=headers,
        rows=rows,
        checks=[check],
        notes=notes,
        data={
            "group": group.describe(),
            "summary": asdict(sm),
            "measurements": [asdict(m) for m in measurements],
        },
    )


# --------------------------------------------------------------------------
# A root filesystem: fetch-to-extracted --expand vs skopeo copy + umoci unpack
# --------------------------------------------------------------------------

OCCY_EXPAND = "occystrap-expand"
SKOPEO_UMOCI = "skopeo+umoci-unpack"


def expand_image(args: argparse.Namespace) -> ImageSpec:
    sizes = (3.0, 2.0, 2.0, 1.0) if args.quick else (80.0, 60.0, 40.0, 20.0)  # 200 MiB of tar, ~110 MiB gzip
    return ImageSpec(
        "rootfs", "bench/rootfs", "v1",
        tuple(LayerSpec(mb, seed=800 + i, max_file_mb=min(mb / 4, 10.0)) for i, mb in enumerate(sizes)),
    )  # fmt: skip


def layer_file_names(layers: Sequence[LayerBlob]) -> set[str]:
    """Regular files of the final tree (the generated layers have no whiteouts)."""
    names: set[str] = set()
    for layer in layers:
        with tarfile.open(layer.path, "r|gz") as tf:
            names.update(m.name for m in tf if m.isfile())
    return names


def _tree_files(root: Path) -> set[str]:
    out = set()
    for sub, _dirs, files in os.walk(root):
        for f in files:
            path = Path(sub) / f
            if path.is_file() and not path.is_symlink():
                out.add(path.relative_to(root).as_posix())
    return out


@scenario("expand", "fetch-to-extracted --expand vs skopeo copy to oci + umoci unpack")
def expand_vs_umoci(ctx: BenchContext) -> ScenarioResult:
    title = "fetch-to-extracted --expand vs skopeo copy + umoci unpack"
    if not shutil.which("umoci"):
        missing = [["umoci is not installed (apt-get install umoci)"]]
        return ScenarioResult("expand", title, ["skipped"], missing)
    image = ctx.push_image(expand_image(ctx.args))
    expected = layer_file_names(image.layers)

    def occystrap_argv(img: PushedImage, rundir: Path) -> tuple[list[str], Path]:
        out = rundir / "out"
        return [ctx.occystrap, "fetch-to-extracted", "--quiet", "--expand", img.ref, img.tag, str(out)], out

    def umoci_argv(img: PushedImage, rundir: Path) -> tuple[list[str], Path]:
        script = (
            f'skopeo copy --quiet --src-tls-verify=false "docker://{img.ref}:{img.tag}" '
            f'"oci:{rundir}/oci:{img.tag}" && umoci unpack --image "{rundir}/oci:{img.tag}" "{rundir}/bundle"'
        )
        return ["sh", "-c", script], rundir

    def same_tree(root_of: Callable[[Path], Path]) -> Callable[[PushedImage, Path], str | None]:
        def check(_img: PushedImage, out: Path) -> str | None:
            try:
                got = _tree_files(root_of(out))
            except (OSError, ValueError) as exc:
                return f"no root filesystem: {exc}"
            if got != expected:
                return f"{len(got)} files, expected {len(expected)}; e.g. {sorted(got ^ expected)[:3]}"
            return None

        return check

    def occystrap_root(out: Path) -> Path:
        [root] = list((out / "rootfs").iterdir())
        return root

    tools = [
        Tool(OCCY_EXPAND, occystrap_argv, same_tree(occystrap_root)),
        Tool(SKOPEO_UMOCI, umoci_argv, same_tree(lambda out: out / "bundle" / "rootfs")),
    ]
    log(f"timing {image.name}: {', '.join(t.name for t in tools)}; 1 warm-up + {ctx.args.runs} rounds")
    measurements = ctx.run_alternating(image, tools, ctx.args.runs)
    by_tool = {t.name: summarise(image, t.name, measurements) for t in tools}
    ratio = by_tool[OCCY_EXPAND].median_s / by_tool[SKOPEO_UMOCI].median_s
    paired = paired_ratio(measurements, image.name, OCCY_EXPAND, SKOPEO_UMOCI)
    headers = ["image", "tool", "runs", "median s", "min s", "MiB/s", "peak RSS MiB", "CPU s", "output MiB",
               "ratio", "paired"]  # fmt: skip
    rows = []
    for t in tools:
        sm = by_tool[t.name]
        out_mib = _median_or_nan([m.output_bytes for m in measurements if m.tool == t.name and m.rc == 0])
        mine = t.name == OCCY_EXPAND
        rows.append([
            image.name, t.name, str(sm.runs), fmt(sm.median_s), fmt(sm.min_s), fmt(sm.mib_per_s, 1),
            fmt(sm.peak_rss_mib, 1), fmt(sm.median_cpu_s), _mib(out_mib),
            fmt(ratio) if mine else "-", fmt(paired) if mine else "-",
        ])  # fmt: skip
    notes = [
        f"{image.name}: {len(image.layers)} gzip layers, {image.compressed_bytes / MiB:.1f} MiB compressed, "
        f"{image.uncompressed_bytes / MiB:.1f} MiB of tar, {len(expected)} files in the final tree.",
        f"{OCCY_EXPAND}: `occystrap fetch-to-extracted --expand REF TAG DIR` (blobs, every layer unpacked "
        "into layers/<hex>/, the final tree in rootfs/<hex>/); "
        f"{SKOPEO_UMOCI}: `skopeo copy docker://REF:TAG oci:DIR:TAG && umoci unpack --image DIR:TAG BUNDLE` "
        "(one command line, timed as a whole).",
        "ratio = occystrap median / skopeo+umoci median; the warm-up outputs' final trees are compared "
        "with the files the layers hold.",
    ]
    for sm in by_tool.values():
        if sm.failed:
            notes.append(f"FAILED {sm.tool}: {sm.error.splitlines()[-1] if sm.error else ''}")
    return ScenarioResult(
        name="expand",
        title=title,
        headers=headers,
        rows=rows,
        notes=notes,
        data={
            "image": image.describe(),
            "summaries": [asdict(sm) for sm in by_tool.values()],
            "measurements": [asdict(m) for m in measurements],
        },
    )


# ==========================================================================
# Main
# ==========================================================================


def _version(argv: Sequence[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "unknown"


def environment(ctx: BenchContext) -> dict[str, Any]:
    git = _version(["git", "-C", str(PROJECT_ROOT), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(
        ["git", "-C", str(PROJECT_ROOT), "status", "--porcelain", "--", "occystrap"],
        capture_output=True, text=True, check=False,
    ).stdout.strip()  # fmt: skip
    return {
        "occystrap": f"{git}{' (+ uncommitted changes)' if dirty else ''}",
        "python": platform.python_version(),
        "skopeo": _version(["skopeo", "--version"]),
        "registry": _version(["docker-registry", "--version"]),
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
    }


def write_reports(
    out_dir: Path, results: list[ScenarioResult], env: dict[str, Any], args: argparse.Namespace
) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    rst = [
        "occystrap benchmarks",
        "=" * 20,
        "",
        f"Run {now}: ``{' '.join(sys.argv[1:]) or '(defaults)'}``.",
        "",
    ]
    rst += [f"- {k}: {v}" for k, v in env.items()] + [""]
    for r in results:
        rst += [r.title, "-" * len(r.title), "", render_rst(r.headers, r.rows), ""]
        rst += [f"- {n}" for n in r.notes] + [""]
        if r.checks:
            rst += ["Checks:", ""]
            rst += [
                f"- {'met' if c.met else 'NOT MET'}: {c.image} {c.what} = {fmt(c.value)}{c.unit} "
                f"(target <= {c.limit:g}{c.unit})"
                for c in r.checks
            ] + [""]
    (out_dir / "results.rst").write_text("\n".join(rst))
    doc = {
        "generated": now,
        "argv": sys.argv[1:],
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "environment": env,
        "all_targets_met": all(c.met for r in results for c in r.checks),
        "scenarios": {
            r.name: {
                "title": r.title,
                "table": {"headers": r.headers, "rows": r.rows},
                "checks": [c.to_json() for c in r.checks],
                "notes": r.notes,
                **r.data,
            }
            for r in results
        },
    }
    (out_dir / "results.json").write_text(json.dumps(doc, indent=2, default=str))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--runs", type=int, default=None, help="counted rounds per image (default 3; 1 with --quick)"
    )
    p.add_argument(
        "--big-mb", type=float, default=None, help="uncompressed MiB of the big layer (default 400)"
    )
    p.add_argument("--quick", action="store_true", help="small images and 1 round: a smoke test")
    p.add_argument(
        "-j", "--parallel", type=int, default=None, help="pass -j N to occystrap (default: its own)"
    )
    p.add_argument(
        "--scenario", action="append", choices=sorted(SCENARIOS), help="run only these (repeatable)"
    )
    p.add_argument("--list", action="store_true", help="list the scenarios and exit")
    p.add_argument(
        "--cache-dir", type=Path, default=DEFAULT_CACHE, help=f"generated layers (default {DEFAULT_CACHE})"
    )
    p.add_argument("--out-dir", type=Path, default=PROJECT_ROOT / "bench-out", help="where results.* go")
    p.add_argument("--occystrap", default=None, help="occystrap executable (default: beside this Python)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds before one command is killed")
    p.add_argument("--no-verify", dest="verify", action="store_false", help="skip checking warm-up outputs")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory (registry storage, logs)")
    args = p.parse_args(argv)
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    if args.runs < 1:
        p.error("--runs must be at least 1")
    return args


def _find_occystrap(explicit: str | None) -> str:
    if explicit:
        return explicit
    beside = Path(sys.executable).parent / "occystrap"
    if beside.exists():
        return str(beside)
    found = shutil.which("occystrap")
    if found is None:
        raise SystemExit(
            "occystrap not found: install it in this venv (pip install -e .) or pass --occystrap"
        )
    return found


def _raise_interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    """SIGTERM/SIGHUP unwind like Ctrl-C, so the registry and child commands are stopped."""
    old = {s: signal.signal(s, _raise_interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for name, (_fn, default, desc) in SCENARIOS.items():
            print(f"{name:<12} {'(default) ' if default else ''}{desc}")
        return 0
    for tool in (GNU_TIME, "docker-registry", "skopeo"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is needed (apt-get install time docker-registry skopeo)")
    names = args.scenario or [n for n, (_f, default, _d) in SCENARIOS.items() if default]
    workdir = Path(tempfile.mkdtemp(prefix="occystrap-bench-"))
    ctx = BenchContext(args, workdir, args.cache_dir, _find_occystrap(args.occystrap))
    log(f"scratch dir {workdir}; occystrap {ctx.occystrap}")
    results: list[ScenarioResult] = []
    try:
        with _interruptible():
            for name in names:
                t0 = time.monotonic()
                results.append(SCENARIOS[name][0](ctx))
                log(f"scenario {name} took {time.monotonic() - t0:.0f}s")
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        ctx.stop()
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    env = environment(ctx)
    write_reports(args.out_dir, results, env, args)
    for r in results:
        print(f"\n{r.title}\n")
        print(render_text(r.headers, r.rows))
        print()
        for n in r.notes:
            print(f"  {n}")
        for c in r.checks:
            print(f"  [{'met' if c.met else 'NOT MET'}] {c.image}: {c.what} = {fmt(c.value)}{c.unit} "
                  f"(target <= {c.limit:g}{c.unit})")  # fmt: skip
    all_met = all(c.met for r in results for c in r.checks)
    print(
        f"\nall targets met: {'yes' if all_met else 'no'}; "
        f"results in {args.out_dir}/results.rst and results.json"
    )
    # Missing a target is a finding, not a failure of the harness: exit 0 unless a command failed.
    failed = any(row[-1] == "NO: failed" for r in results for row in r.rows)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
