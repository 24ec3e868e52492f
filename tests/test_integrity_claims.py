"""Each integrity and safety check, proven by a test that fails when the check is removed.

`make mutants` (tools/mutants.py) removes the checks one at a time from a scratch copy and
runs the tests named for each: every one of them must then fail. The bad content comes from
the real registry through the fault proxy (which rewrites bytes on the way: the registry
itself checks digests on push, so it cannot be made to store wrong bytes), or from files
on disk altered between two runs.
"""

from __future__ import annotations

import gzip
import json
import random
import tarfile
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anyio
import pytest

from occystrap import reference
from occystrap.concurrency import Busy
from occystrap.digest import Digest
from occystrap.errors import IntegrityError
from occystrap.model import Descriptor, Image, Layer, build_image
from occystrap.resolve import small_blob
from occystrap.sinks import directory
from occystrap.sinks.directory import DirectorySink
from tests.helpers import error_line, fails, flip_byte, leftovers, ok
from tests.support import images
from tests.support.faultproxy import Fault, FaultProxy
from tests.support.images import BuiltImage
from tests.support.registry import Registry

REPO = "claims/app"
TAG = "v1"
OTHER_TAG = "v2"
# The gzip header's MTIME field (bytes 4-7): not covered by the gzip CRC, so a changed byte
# there leaves a valid stream that inflates to the same tar. Only the blob digest differs.
MTIME_BYTE = 4

Factory = Callable[..., Registry]


def _random_layer(seed: int, size: int) -> images.Layer:
    return images.build_layer([images.file(f"data{seed}.bin", random.Random(seed).randbytes(size))])


@pytest.fixture(scope="module")
def image(registry: Registry) -> BuiltImage:
    """Three gzip layers, listed smallest first (so largest-first order is not manifest order)."""
    built = images.build_image(
        [_random_layer(1, 20_000), _random_layer(2, 60_000), _random_layer(3, 240_000)]
    )
    sizes = [layer.size for layer in built.layers]
    assert sizes == sorted(sizes) and len(set(sizes)) == 3
    registry.push_image(REPO, TAG, built)
    return built


@pytest.fixture(scope="module")
def other(registry: Registry, image: BuiltImage) -> BuiltImage:
    """Another image in the same repository: content a man in the middle could serve instead."""
    built = images.build_image([_random_layer(4, 30_000)], created="2021-01-02T03:04:05Z")
    registry.push_image(REPO, OTHER_TAG, built)
    return built


def _env(tmp_path: Path) -> dict[str, str]:
    return {"DOCKER_CONFIG": str(tmp_path / "no-docker-config")}


def _mtime_changed(data: bytes) -> bytes:
    changed = bytearray(data)
    changed[MTIME_BYTE] ^= 0xFF
    return bytes(changed)


def _tar_layers(out: Path, image: BuiltImage) -> None:
    with tarfile.open(out) as tf:
        for layer in image.layers:
            member = tf.extractfile(f"blobs/sha256/{layer.digest[7:]}")
            assert member is not None and member.read() == layer.data


def _blob(root: Path, digest: str) -> Path:
    return root / "blobs" / "sha256" / digest[7:]


def _dest_repo() -> str:
    return f"claims/dest-{uuid.uuid4().hex[:8]}"


def _absent_at(reg: Registry, repo: str, *digests: str) -> None:
    """Nothing under repo: no tag, and none of these blobs."""
    status, _, _ = reg.client.request("GET", f"/v2/{repo}/manifests/{TAG}")
    assert status == 404
    for digest in digests:
        status, _, _ = reg.client.request("HEAD", f"/v2/{repo}/blobs/{digest}")
        assert status == 404, digest


# --- the blob digest: a gzip layer whose header MTIME changed ---------------------------------


def test_the_mtime_change_leaves_valid_gzip_of_the_same_size_and_tar(image: BuiltImage) -> None:
    """What the next tests serve is wrong only in its sha256: size, stream and diff_id all agree."""
    layer = image.layers[0]
    changed = _mtime_changed(layer.data)
    assert len(changed) == layer.size and changed != layer.data
    assert gzip.decompress(changed) == layer.tar
    assert images.sha256_digest(changed) != layer.digest


@pytest.mark.parametrize("command", ["fetch-to-tarfile", "fetch-to-extracted"])
def test_blob_with_a_changed_gzip_mtime_is_refused(
    proxy: FaultProxy, image: BuiltImage, tmp_path: Path, command: str
) -> None:
    layer = image.layers[1]
    proxy.add(Fault(match=layer.digest, flip_at=MTIME_BYTE, times=None))
    outdir = tmp_path / "out"
    outdir.mkdir()
    out = outdir / ("img.tar" if command == "fetch-to-tarfile" else "img")
    proc = fails(command, "-q", "--retries", "1", f"{proxy.host}/{REPO}", TAG, str(out), env=_env(tmp_path))
    assert proc.returncode == 6
    line = error_line(proc)
    assert "digest mismatch" in line and layer.digest in line
    assert proxy.count(layer.digest) == 1  # bad bytes are not fetched again
    if command == "fetch-to-tarfile":
        assert leftovers(outdir) == []
    else:
        # No image was written: no listing, and the bad blob is not kept under its name.
        assert not (out / "manifest.json").exists() and not (out / "index.json").exists()
        assert not _blob(out, layer.digest).exists()
        assert not list(out.rglob("*.partial"))


# --- the config digest and the pinned manifest digest ------------------------------------------


def _other_config(image: BuiltImage) -> bytes:
    """A valid config of the same length that differs from the real one."""
    changed = image.config.replace(b'"created":"2020-', b'"created":"2019-')
    assert changed != image.config and len(changed) == len(image.config)
    json.loads(changed)
    return changed


def test_config_that_does_not_match_its_digest_is_refused(
    proxy: FaultProxy, image: BuiltImage, tmp_path: Path
) -> None:
    proxy.add(Fault(match=image.config_digest, body=_other_config(image), times=None))
    outdir = tmp_path / "out"
    outdir.mkdir()
    proc = fails(
        "fetch-to-tarfile", "-q", f"{proxy.host}/{REPO}", TAG, str(outdir / "img.tar"), env=_env(tmp_path)
    )
    assert proc.returncode == 6
    line = error_line(proc)
    assert "config" in line and image.config_digest in line
    assert leftovers(outdir) == []


class _Served:
    """A source that serves fixed bytes for any blob (as a tampering store would)."""

    name = "served"

    def __init__(self, data: bytes) -> None:
        self.data = data

    async def blob(self, ref: reference.Reference, desc: Descriptor, offset: int = 0) -> AsyncIterator[bytes]:
        yield self.data[offset:]


def test_small_blob_checks_the_config_digest(image: BuiltImage) -> None:
    ref = reference.parse(f"127.0.0.1:1/{REPO}", TAG)
    desc = Descriptor(images.DOCKER_CONFIG, Digest(image.config_digest), len(image.config))

    async def read(data: bytes) -> bytes:
        return await small_blob(_Served(data), ref, desc)  # type: ignore[arg-type]  # only blob() is used

    assert anyio.run(read, image.config) == image.config
    with pytest.raises(IntegrityError, match="does not match its digest"):
        anyio.run(read, _other_config(image))


def _node(image: BuiltImage, name: str, config: bytes | None = None) -> Image:
    ref = reference.parse(name, TAG)
    desc = Descriptor(image.manifest_media_type, Digest(image.manifest_digest), len(image.manifest))
    return build_image(ref, desc, image.manifest, image.config if config is None else config)


def test_build_image_checks_the_config_against_the_manifest(image: BuiltImage) -> None:
    assert _node(image, f"127.0.0.1:1/{REPO}").config.digest == image.config_digest
    with pytest.raises(IntegrityError, match="does not match its digest"):
        _node(image, f"127.0.0.1:1/{REPO}", _other_config(image))


def test_manifest_pinned_by_digest_must_hash_to_it(
    proxy: FaultProxy, image: BuiltImage, other: BuiltImage, tmp_path: Path
) -> None:
    """Another valid manifest of the same repository, served under the pinned digest, is refused
    (taken as it is, it would make a good-looking image of the wrong content)."""
    proxy.add(Fault(match=f"/manifests/{image.manifest_digest}", body=other.manifest, times=None))
    out = tmp_path / "img.tar"
    proc = fails(
        "fetch-to-tarfile", "-q", f"{proxy.host}/{REPO}", image.manifest_digest, str(out), env=_env(tmp_path)
    )
    assert proc.returncode == 6
    assert image.manifest_digest in error_line(proc) and other.manifest_digest in error_line(proc)
    assert not out.exists()


# --- reuse of what is on disk: only after re-hashing ---------------------------------------------


def test_merged_directory_reuses_a_same_size_tampered_blob_only_after_rehashing(
    proxy: FaultProxy, image: BuiltImage, tmp_path: Path
) -> None:
    target = tmp_path / "mirror"
    args = ("fetch-to-extracted", "-q", "--use-unique-names", f"{proxy.host}/{REPO}", TAG, str(target))
    ok(*args, env=_env(tmp_path))
    big = image.layers[2]
    blob = _blob(target, big.digest)
    flip_byte(blob, big.size // 2)  # same name, same size, other bytes
    assert blob.stat().st_size == big.size
    ok(*args, env=_env(tmp_path))
    # The damaged blob was fetched again; the sound ones were reused without a transfer.
    assert proxy.count(big.digest) == 2
    assert [proxy.count(layer.digest) for layer in image.layers[:2]] == [1, 1]
    assert blob.read_bytes() == big.data
    ok("verify", "-q", str(target))


def _partial_tarball(outdir: Path) -> Path:
    [partial] = list(outdir.glob(".*.occystrap-partial"))
    return partial


def test_tarball_layer_that_the_progress_file_calls_complete_is_rehashed(
    proxy: FaultProxy, image: BuiltImage, tmp_path: Path
) -> None:
    small, middle, big = image.layers
    outdir = tmp_path / "out"
    outdir.mkdir()
    out = outdir / "img.tar"
    args = ("fetch-to-tarfile", "-q", "-j", "1", "--retries", "0", f"{proxy.host}/{REPO}", TAG, str(out))
    # Largest first, one at a time: big and middle complete, then small fails (503).
    proxy.add(Fault(match=small.digest, status=503, times=None))
    assert fails(*args, env=_env(tmp_path)).returncode == 5
    partial = _partial_tarball(outdir)
    data = partial.read_bytes()
    assert data.count(big.data) == 1 and data.count(middle.data) == 1
    flip_byte(partial, data.index(big.data) + big.size // 2)
    proxy.clear()
    ok(*args, env=_env(tmp_path))
    # The altered layer was fetched again; the intact complete one was not.
    assert proxy.count(big.digest) == 2 and proxy.count(middle.digest) == 1
    _tar_layers(out, image)
    assert leftovers(outdir) == ["img.tar"]


@pytest.mark.parametrize("command", ["fetch-to-tarfile", "fetch-to-extracted"])
def test_resumed_prefix_that_fails_its_check_is_fetched_again(
    proxy: FaultProxy, image: BuiltImage, tmp_path: Path, command: str
) -> None:
    big = image.layers[2]
    outdir = tmp_path / "out"
    outdir.mkdir()
    out = outdir / ("img.tar" if command == "fetch-to-tarfile" else "img")
    args = (command, "-q", "--retries", "0", f"{proxy.host}/{REPO}", TAG, str(out))
    proxy.add(Fault(match=big.digest, drop_after=150_000))
    assert fails(*args, env=_env(tmp_path)).returncode == 5
    # What arrived is kept for a resume: alter a byte of it.
    if command == "fetch-to-tarfile":
        partial = _partial_tarball(outdir)
        start = partial.read_bytes().index(big.data[:4096])
        flip_byte(partial, start + 1000)
    else:
        [partial] = list(out.rglob(f".{big.digest[7:]}.partial"))
        assert partial.stat().st_size > 1000
        flip_byte(partial, 1000)
    ok(*args, env=_env(tmp_path))
    ranges = [s.range for s in proxy.seen(big.digest, "GET")]
    # Resumed after the kept prefix; that failed its digest, so the blob came again from byte 0.
    assert len(ranges) == 3 and ranges[0] is None and ranges[2] is None
    assert ranges[1] is not None and ranges[1].startswith("bytes=") and ranges[1] != "bytes=0-"
    if command == "fetch-to-tarfile":
        _tar_layers(out, image)
        assert leftovers(outdir) == ["img.tar"]
    else:
        assert _blob(out, big.digest).read_bytes() == big.data
        assert not list(out.rglob("*.partial"))


# --- local sources: recreate-image and tarfile-to-extracted ---------------------------------------


@pytest.mark.parametrize("damage", ["mtime", "truncated"])
def test_recreate_image_refuses_a_tampered_blob(
    registry: Registry, image: BuiltImage, tmp_path: Path, damage: str
) -> None:
    target = tmp_path / "mirror"
    ok("fetch-to-extracted", "-q", "--use-unique-names", f"{registry.host}/{REPO}", TAG, str(target))
    layer = image.layers[1]
    blob = _blob(target, layer.digest)
    if damage == "mtime":
        flip_byte(blob, MTIME_BYTE)  # still valid gzip of the same tar, same size
    else:
        blob.write_bytes(layer.data[:-100])
    outdir = tmp_path / "out"
    outdir.mkdir()
    proc = fails("recreate-image", "-q", str(target), f"{registry.host}/{REPO}", TAG, str(outdir / "re.tar"))
    assert proc.returncode == 6
    assert layer.digest in error_line(proc)
    assert leftovers(outdir) == []


@pytest.mark.parametrize("damage", ["mtime", "corrupt"])
def test_tarfile_to_extracted_refuses_a_tampered_blob(
    registry: Registry, image: BuiltImage, tmp_path: Path, damage: str
) -> None:
    saved = tmp_path / "saved.tar"
    ok("fetch-to-tarfile", "-q", f"{registry.host}/{REPO}", TAG, str(saved))
    layer = image.layers[1]
    start = saved.read_bytes().index(layer.data)
    flip_byte(saved, start + (MTIME_BYTE if damage == "mtime" else layer.size // 2))
    target = tmp_path / "imported"
    proc = fails("tarfile-to-extracted", "-q", str(saved), str(target))
    assert proc.returncode == 6
    assert layer.digest in error_line(proc)
    if damage == "mtime":
        assert "digest mismatch" in error_line(proc)
    assert not (target / "manifest.json").exists() and not (target / "index.json").exists()
    assert not _blob(target, layer.digest).exists()


# --- uploads: a corrupt source blob never lands at a registry -----------------------------------


def test_copy_of_a_blob_with_a_changed_gzip_mtime_never_lands(
    proxy: FaultProxy, image: BuiltImage, registry_factory: Factory, tmp_path: Path
) -> None:
    dest = registry_factory()
    layer = image.layers[2]
    proxy.add(Fault(match=layer.digest, flip_at=MTIME_BYTE, times=None))
    repo = _dest_repo()
    proc = fails(
        "copy", "-q", "--retries", "1", f"docker://{proxy.host}/{REPO}:{TAG}", f"docker://{dest.host}/{repo}:{TAG}",
        env=_env(tmp_path),
    )  # fmt: skip
    assert proc.returncode == 6
    # occystrap's own check stopped it, before the upload was closed: not the registry's refusal.
    assert "digest mismatch" in error_line(proc) and layer.digest in error_line(proc)
    _absent_at(dest, repo, layer.digest)


def test_push_of_a_tampered_blob_never_lands(
    registry: Registry, image: BuiltImage, registry_factory: Factory, tmp_path: Path
) -> None:
    dest = registry_factory()
    target = tmp_path / "mirror"
    ok("fetch-to-extracted", "-q", "--use-unique-names", f"{registry.host}/{REPO}", TAG, str(target))
    layer = image.layers[0]
    flip_byte(_blob(target, layer.digest), MTIME_BYTE)
    proc = fails("push", "-q", "--retries", "1", str(target), f"{dest.host}/site")
    assert proc.returncode == 6
    assert "digest mismatch" in error_line(proc) and layer.digest in error_line(proc)
    _absent_at(dest, f"site/{REPO}", layer.digest)


@pytest.mark.parametrize("what", ["blob", "manifest"])
def test_a_destination_that_says_it_stored_other_content_is_not_trusted(
    registry: Registry, image: BuiltImage, registry_factory: Factory, tmp_path: Path, what: str
) -> None:
    """The registry's Docker-Content-Digest for an upload must be the content's own; a
    destination that names another is refused, and no tag is written."""
    dest = registry_factory()
    other = "sha256:" + "0" * 64
    match = "/blobs/uploads/" if what == "blob" else "/manifests/"
    repo = _dest_repo()
    with FaultProxy(dest.url) as door:
        door.add(Fault(match=match, method="PUT", headers={"Docker-Content-Digest": other}, times=None))
        proc = fails(
            "copy", "-q", "--retries", "0", f"docker://{registry.host}/{REPO}:{TAG}",
            f"docker://{door.host}/{repo}:{TAG}", env=_env(tmp_path),
        )  # fmt: skip
        assert door.seen(match, "PUT")  # the lie was told
    assert proc.returncode == 6
    assert other in error_line(proc) and "stored" in error_line(proc)
    status, _, _ = dest.client.request("GET", f"/v2/{repo}/manifests/{TAG}")
    assert status == 404


# --- concurrency: the catalog lock and the per-blob lock ------------------------------------------


def test_catalog_lock_keeps_both_of_two_concurrent_writers(
    image: BuiltImage, other: BuiltImage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two writers commit into one merged directory; the second arrives while the first holds
    the catalog lock, before it has read the shared files. With the lock the second waits, then
    adds to what the first wrote. Without it both read the same old catalog (each waits for the
    other's read before going on) and the last to write loses the other's image."""
    root = tmp_path / "mirror"
    first_inside = threading.Event()
    first_read = threading.Event()
    second_arrived = threading.Event()
    original = DirectorySink._shared

    def shared(self: DirectorySink) -> object:
        if threading.current_thread().name.startswith("first"):
            first_inside.set()
            assert second_arrived.wait(60), "the second writer never came"
            found = original(self)
            first_read.set()
            return found
        found = original(self)
        second_arrived.set()
        assert first_read.wait(60), "the first writer never read"
        return found

    class Watched(directory.FileLock):
        def acquire(self, *args: object, **kwargs: object) -> object:
            if threading.current_thread().name.startswith("second"):
                second_arrived.set()  # waiting for the lock the first one holds
            return super().acquire(*args, **kwargs)

    monkeypatch.setattr(DirectorySink, "_shared", shared)
    monkeypatch.setattr(directory, "FileLock", Watched)
    names = [f"127.0.0.1:1/claims/lock{i}" for i in range(2)]
    nodes = [_node(image, names[0]), _node(other, names[1])]
    with ThreadPoolExecutor(1, "first") as one, ThreadPoolExecutor(1, "second") as two:
        first = one.submit(DirectorySink(root, unique_names=True)._commit, [nodes[0]])
        assert first_inside.wait(60)
        second = two.submit(DirectorySink(root, unique_names=True)._commit, [nodes[1]])
        first.result(timeout=60)
        second.result(timeout=60)
    catalog = json.loads((root / "catalog.json").read_text())["images"]
    assert sorted(catalog) == sorted(names)
    index = json.loads((root / "index.json").read_text())["manifests"]
    assert {m["digest"] for m in index} == {image.manifest_digest, other.manifest_digest}


def test_blob_lock_makes_a_second_writer_wait_then_reuse(image: BuiltImage, tmp_path: Path) -> None:
    root = tmp_path / "mirror"
    built = image.layers[0]
    layer = Layer(Descriptor(built.media_type, Digest(built.digest), built.size), Digest(built.diff_id))
    one, two = DirectorySink(root, unique_names=True), DirectorySink(root, unique_names=True)
    target = one._open(layer)
    assert target is not None
    with pytest.raises(Busy):
        two._open(layer)  # the same blob, while the first is writing it
    target.write_raw(built.data)
    anyio.run(target.commit, 0)
    assert two._open(layer) is None  # there now, and re-hashed: nothing to write
    assert _blob(root, built.digest).read_bytes() == built.data


# --- the transfer limit and largest-first order, seen at the registry's door ---------------------


@pytest.fixture(scope="module")
def many(registry: Registry) -> BuiltImage:
    built = images.build_image([_random_layer(10 + i, 5_000 + 1_000 * i) for i in range(5)])
    registry.push_image("claims/many", TAG, built)
    return built


def _run_through(proxy: FaultProxy, command: str, repo: str, tmp_path: Path, *options: str) -> None:
    source = f"{proxy.host}/{repo}"
    if command == "copy":
        dest = f"docker://{proxy.upstream.removeprefix('http://')}/{_dest_repo()}:{TAG}"
        ok("copy", "-q", *options, f"docker://{source}:{TAG}", dest, env=_env(tmp_path))
    else:
        ok(command, "-q", *options, source, TAG, str(tmp_path / "out.tar"), env=_env(tmp_path))


@pytest.mark.parametrize("command", ["fetch-to-tarfile", "copy"])
def test_blobs_in_flight_never_exceed_the_parallel_limit(
    proxy: FaultProxy, many: BuiltImage, tmp_path: Path, command: str
) -> None:
    # Every layer answers only after a pause: requests the client sends at once overlap there.
    for layer in many.layers:
        proxy.add(Fault(match=layer.digest, stall=0.4, stall_at=None, times=None))
    _run_through(proxy, command, "claims/many", tmp_path, "-j", "2")
    assert all(proxy.count(layer.digest) == 1 for layer in many.layers)
    assert proxy.in_flight() <= 2


@pytest.mark.parametrize("command", ["fetch-to-tarfile", "copy"])
def test_largest_blob_goes_first(proxy: FaultProxy, image: BuiltImage, tmp_path: Path, command: str) -> None:
    _run_through(proxy, command, REPO, tmp_path, "-j", "1")
    layers = {layer.digest for layer in image.layers}
    order = [s.path.rsplit("/", 1)[1] for s in proxy.seen("/blobs/sha256:", "GET")]
    assert [d for d in order if d in layers] == [
        layer.digest for layer in sorted(image.layers, key=lambda l: l.size, reverse=True)
    ]


# --- --uncompressed-layers: the same bytes whatever order the layers finish in -------------------


def test_uncompressed_tarball_is_the_same_bytes_whichever_layer_finishes_first(
    proxy: FaultProxy, image: BuiltImage, tmp_path: Path
) -> None:
    """One at a time (largest first), then all at once with the largest held back (it finishes
    last), then with the smallest held back: the tarball's bytes never change."""
    small, _, big = image.layers
    runs = [("1", None), ("3", big), ("3", small)]
    outputs = []
    for i, (parallel, held) in enumerate(runs):
        proxy.clear()
        if held is not None:
            proxy.add(Fault(match=held.digest, stall=0.5, stall_at=None))
        out = tmp_path / f"run{i}.tar"
        ok("fetch-to-tarfile", "-q", "--uncompressed-layers", "-j", parallel, f"{proxy.host}/{REPO}", TAG,
           str(out), env=_env(tmp_path))  # fmt: skip
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1] == outputs[2]
    with tarfile.open(tmp_path / "run0.tar") as tf:
        names = tf.getnames()
    assert all(f"blobs/sha256/{layer.diff_id[7:]}" in names for layer in image.layers)


# --- hostile layers: writing through an absolute symlink ------------------------------------------


def test_absolute_symlink_is_never_written_through(registry: Registry, tmp_path: Path) -> None:
    """An absolute symlink means the image's own root, so it is kept; a later member written
    through it would land on the host: refused. (The target is a test directory, so even a
    broken check writes nothing outside tmp_path.)"""
    outside = tmp_path / "outside"
    outside.mkdir()
    planted = images.build_layer([images.symlink("planted", str(outside))])
    through = images.build_layer([images.file("planted/escaped", b"x")])
    built = images.build_image([planted, through])
    repo = f"claims/through-{uuid.uuid4().hex[:8]}"
    registry.push_image(repo, TAG, built)
    target = tmp_path / "d"
    proc = fails("fetch-to-extracted", "-q", "--expand", f"{registry.host}/{repo}", TAG, str(target))
    assert proc.returncode == 6 and "symlink" in error_line(proc)
    assert list(outside.iterdir()) == []
