"""The airgap loop against the real registry and real clients: delta bundles (mirror --since),
import into a directory and a registry, verify of a delta, prune, --locked with a spec, and
`occystrap lock`. The site side never talks to the source registry."""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from occystrap import prune as pruning
from occystrap.events import NullReporter
from occystrap.layout import dirlock
from occystrap.mirror import keep as keep_module
from occystrap.reference import parse
from tests.helpers import fails, occystrap, ok, read_lock, settled
from tests.support import images
from tests.support.images import BuiltImage, Entry
from tests.support.registry import Registry
from tests.support.serving import serving
from tests.support.validators import Podman

Factory = Callable[..., Registry]
LAYER_BYTES = 1 << 20  # random, so gzip leaves it as big: the delta's bytes are its layers'


def _layer(seed: str) -> images.Layer:
    data = random.Random(seed).randbytes(LAYER_BYTES)
    return images.build_layer([Entry.file(f"{seed}.bin", data)])


def _snapshot(root: Path) -> dict[str, str]:
    """Every file under root (hidden ones too) and a hash of its bytes."""
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _member(tar: Path, name: str) -> bytes:
    with tarfile.open(tar) as tf:
        fh = tf.extractfile(name)
        assert fh is not None
        return fh.read()


def _blobs(tar: Path) -> set[str]:
    with tarfile.open(tar) as tf:
        return {"sha256:" + n.rpartition("/")[2] for n in tf.getnames() if n.startswith("blobs/sha256/")}


def _raw(skopeo: str, ref: str) -> bytes:
    return subprocess.run(
        [skopeo, "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"], capture_output=True, check=True
    ).stdout


@dataclass
class Chain:
    """v1 (full), v2 (delta over v1.tar) and v3 (delta over v2.tar) bundles of one app whose
    versions each add a layer over the last; vK.tar holds tags v1..vK."""

    registry: Registry
    repo: str  # full name
    versions: list[BuiltImage]
    layers: list[images.Layer]
    spec: Path
    bundles: list[Path]
    dry_run: str  # stdout of the --dry-run --since run for v2
    dry_json: dict[str, Any]  # and with --json


@pytest.fixture(scope="module")
def chain(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Chain:
    work = tmp_path_factory.mktemp("chain")
    layers = [_layer(f"app-{i}") for i in range(4)]
    versions = [images.build_image(layers[: k + 2]) for k in range(3)]
    repo = f"{registry.host}/airgap/app"
    spec = work / "images.yaml"
    spec.write_text(f"images:\n  - name: {repo}\n    include: ['^v']\n")
    bundles = [work / f"v{k + 1}.tar" for k in range(3)]
    dry, dry_json = "", {}
    for k, built in enumerate(versions):
        registry.push_image("airgap/app", f"v{k + 1}", built)
        since = ["--since", str(bundles[k - 1])] if k else []
        if k == 1:
            dry = ok("mirror", "--dry-run", *since, str(spec), str(work / "dry.tar")).stdout
            dry_json = json.loads(
                ok("mirror", "--dry-run", "--json", *since, str(spec), str(work / "d.tar")).stdout
            )
        ok("mirror", "-q", *since, str(spec), str(bundles[k]))
    return Chain(registry, repo, versions, layers, spec, bundles, dry, dry_json)


def test_delta_bundles_hold_only_new_layers_and_name_their_base(chain: Chain) -> None:
    v1, v2, v3 = chain.bundles
    layers = chain.layers
    assert {l.digest for l in layers[:2]} <= _blobs(v1)
    for k, bundle in ((1, v2), (2, v3)):
        meta = json.loads(_member(bundle, "occystrap-delta.json"))
        base = chain.bundles[k - 1]
        assert meta["occystrap_delta"] == 1 and meta["docker_loadable"] is False
        assert "does not load on its own" in meta["note"]
        assert meta["base"]["from"] == base.name
        lock_bytes = base.with_name(base.name + ".lock").read_bytes()
        assert meta["base"]["lock_digest"] == "sha256:" + hashlib.sha256(lock_bytes).hexdigest()
        own = bundle.with_name(bundle.name + ".lock").read_bytes()
        assert meta["lock_digest"] == "sha256:" + hashlib.sha256(own).hexdigest()
        left = {b["digest"]: b["size"] for b in meta["base"]["blobs"]}
        assert left == {l.digest: l.size for l in layers[: k + 1]}
        assert meta["base"]["repositories"] == [chain.repo]
        layer_blobs = {l.digest for l in layers} & _blobs(bundle)
        assert layer_blobs == {layers[k + 1].digest}
        # Every manifest and config of every tag is there, only the old layers are not.
        for built in chain.versions[: k + 1]:
            assert {built.manifest_digest, built.config_digest} <= _blobs(bundle)
        new_bytes = layers[k + 1].size
        assert new_bytes <= bundle.stat().st_size <= 1.05 * new_bytes
    # The dry run tells the delta's size against the full bundle's.
    full = sum(l.size for l in layers[:3])
    assert (
        f"delta over v1.tar: 1 layer blobs, {layers[2].size / 1e6:.1f} MB ({layers[2].size} bytes) (33%)"
        f" of the full bundle's 3, {full / 1e6:.1f} MB ({full} bytes); 2 blobs" in chain.dry_run
    )
    delta = chain.dry_json["delta"]
    assert delta["base"] == "v1.tar" and delta["bytes"] == layers[2].size and delta["full"]["bytes"] == full
    assert delta["left_to_base"] == {"blobs": 2, "bytes": layers[0].size + layers[1].size}


def test_verify_accepts_a_delta_but_not_a_damaged_one(chain: Chain, tmp_path: Path) -> None:
    proc = ok("verify", str(chain.bundles[2]))
    assert proc.stdout.startswith("OK: ") and "delta bundle, 3 blob(s) left to its base" in proc.stdout
    # The delta's own new layer dropped: that one is missing, the base's blobs are not problems.
    damaged = tmp_path / "damaged.tar"
    gone = chain.layers[3].digest.split(":")[1]
    with tarfile.open(chain.bundles[2]) as src, tarfile.open(damaged, "w") as dst:
        for member in src.getmembers():
            if not member.name.endswith(gone):
                dst.addfile(member, src.extractfile(member))
    proc = fails("verify", str(damaged))
    problems = proc.stdout.strip().splitlines()
    assert problems and all(gone in line for line in problems), proc.stdout
    assert not any(l.digest.split(":")[1] in proc.stdout for l in chain.layers[:3])


def test_delta_chain_imported_in_order_loads_and_pulls_every_tag(
    chain: Chain, tmp_path: Path, podman: Podman
) -> None:
    site = tmp_path / "site"
    for k, bundle in enumerate(chain.bundles):
        proc = ok("import", "--progress", "plain", str(bundle), str(site))
        based = (
            f"{k + 1} blobs ({sum(l.size for l in chain.layers[: k + 1]) / 1e6:.1f} MB)"
            if k
            else "0 blobs (0 B)"
        )
        assert f"{based} reused from the base" in proc.stderr
        last = proc.stderr.splitlines()[-1]
        assert last.startswith("summary: ") and (k == 0 or f"{k + 1} from the base" in last), last
        added = chain.layers[k + 1].size if k else chain.layers[0].size + chain.layers[1].size
        assert f"{added / 1e6:.1f} MB added" in proc.stderr
    verified = ok("verify", str(site))
    assert verified.stdout.startswith("OK: ")
    for k, built in enumerate(chain.versions):
        out = tmp_path / f"v{k + 1}.tar"
        ok("recreate-image", "-q", str(site), chain.repo, f"v{k + 1}", str(out))
        loaded = podman.load(out)
        assert f"{chain.repo}:v{k + 1}" in {n.removeprefix("localhost/") for n in loaded}, loaded
        info = podman.inspect(f"{chain.repo}:v{k + 1}")[0]
        assert info["Id"] == built.config_digest.removeprefix("sha256:")
        assert info["RootFS"]["Layers"] == [l.diff_id for l in chain.layers[: k + 2]]
    # No registry at the site: `occystrap serve` over the directory, pulled by podman.
    with serving(site, "--listen", "127.0.0.1:0", log=tmp_path / "serve.log") as served:
        for k, built in enumerate(chain.versions):
            pulled = podman.pull(served.ref("airgap/app", f"v{k + 1}"))
            assert pulled["Id"] == built.config_digest.removeprefix("sha256:")
    # Importing the same delta again adds nothing.
    again = ok("import", "--progress", "plain", str(chain.bundles[2]), str(site))
    assert "0 B added (0 blobs)" in again.stderr


def test_delta_onto_the_wrong_base_is_refused_and_writes_nothing(chain: Chain, tmp_path: Path) -> None:
    site = tmp_path / "site"
    ok("import", "-q", str(chain.bundles[0]), str(site))
    before = _snapshot(site)
    proc = fails("import", "-q", str(chain.bundles[2]), str(site))  # v3 needs v2's layer too
    error = proc.stderr.strip().splitlines()[-1]
    assert f"{site} lacks 1 of the 3 blobs" in error and chain.layers[2].digest[:19] in error, error
    assert "base v2.tar" in error and "nothing written" in error
    assert _snapshot(site) == before
    nowhere = tmp_path / "empty"
    proc = fails("import", "-q", str(chain.bundles[1]), str(nowhere))
    assert "lacks 2 of the 2 blobs" in proc.stderr and not nowhere.exists()


def test_import_into_a_registry(chain: Chain, registry_factory: Factory, skopeo: str, podman: Podman) -> None:
    dest = registry_factory()
    target = f"docker://{dest.host}/site"
    # The first delta onto an empty registry: refused before anything is sent.
    proc = fails("import", "-q", str(chain.bundles[1]), target)
    assert "lacks 2 of the 2 blobs" in proc.stderr
    assert settled(lambda: dest.request_count("/manifests/", "PUT")) == 0
    assert settled(lambda: dest.request_count("/blobs/uploads/", "PUT")) == 0
    for bundle in chain.bundles:
        ok("import", "-q", str(bundle), target)
    for k, built in enumerate(chain.versions):
        ref = f"{dest.host}/site/airgap/app:v{k + 1}"
        assert _raw(skopeo, ref) == built.manifest
        assert podman.pull(ref)["Id"] == built.config_digest.removeprefix("sha256:")
    # Each layer went up once: the deltas' base layers were found there, not sent again.
    for layer in chain.layers:
        assert settled(lambda d=layer.digest: dest.request_count(f"digest={d}", "PUT")) == 1


def test_prune_keeps_what_is_named_and_frees_the_rest(
    chain: Chain, registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = images.build_image([_layer("other-0"), [Entry.file("other", b"other\n")]])
    registry.push_image("airgap/other", "v1", other)
    other_bundle = tmp_path / "other.tar"
    ok("mirror", "-q", "--image", f"{registry.host}/airgap/other:v1", str(other_bundle))
    site = tmp_path / "site"
    for bundle in [*chain.bundles, other_bundle]:
        ok("import", "-q", str(bundle), str(site))
    keep = ["--keep", f"{chain.repo}:v3"]
    fails("prune", str(site))  # nothing said to keep: refused, never an empty directory
    before = _snapshot(site)
    gone = {other.config_digest, other.manifest_digest, *(l.digest for l in other.layers)}
    gone |= {b.manifest_digest for b in chain.versions[:2]} | {b.config_digest for b in chain.versions[:2]}
    freed = sum((site / "blobs/sha256" / d.split(":")[1]).stat().st_size for d in gone)
    dry = ok("prune", "--dry-run", str(site), *keep)
    assert (
        f"would remove {chain.repo}:v1" in dry.stdout
        and f"would remove {registry.host}/airgap/other:v1" in dry.stdout
    )
    assert (
        f"would remove 3 tag(s), {len(gone)} blob(s), freeing" in dry.stdout
        and f"({freed} bytes)" in dry.stdout
    )
    assert _snapshot(site) == before
    # A run writing the directory (it holds the shared lock): prune refuses, changes nothing.
    writing = dirlock.hold_shared(site)
    try:
        assert "another occystrap run is writing" in fails("prune", str(site), *keep).stderr
    finally:
        dirlock.release(writing)
    assert _snapshot(site) == before
    # Killed after two deletions: the catalog already names only what stays, so the directory
    # verifies; the next prune deletes the rest.
    deleted: list[str] = []

    def unlink(path: Path) -> None:
        if len(deleted) == 2:
            raise KeyboardInterrupt
        deleted.append(str(path))
        path.unlink()

    monkeypatch.setattr(pruning, "os", SimpleNamespace(unlink=unlink))
    wanted = keep_module.Wanted(refs=(parse(f"{chain.repo}:v3"),))
    with pytest.raises(KeyboardInterrupt):
        pruning.prune(site, lambda images, lock: keep_module.kept(images, wanted, lock), NullReporter())
    monkeypatch.undo()
    assert ok("verify", str(site)).stdout.startswith("OK: ")
    proc = ok("prune", "--progress", "plain", str(site), *keep)
    assert f"{len(gone) - 2} blobs deleted" in proc.stderr.splitlines()[-1]
    assert ok("verify", str(site)).stdout.startswith("OK: ")
    held = {"sha256:" + p.name for p in (site / "blobs/sha256").iterdir()}
    v3 = chain.versions[2]
    assert {v3.manifest_digest, v3.config_digest, *(l.digest for l in chain.layers)} == held
    catalog = json.loads((site / "catalog.json").read_text())["images"]
    assert catalog == {chain.repo: {"v3": catalog[chain.repo]["v3"]}}
    assert len(json.loads((site / "manifest.json").read_text())) == 1
    assert [p.name for p in site.glob("manifest-*.json")] == [catalog[chain.repo]["v3"]["manifest"]]


def test_mirror_prune_drops_tags_no_longer_mirrored(chain: Chain, tmp_path: Path) -> None:
    dest = tmp_path / "m"
    ok("mirror", "-q", str(chain.spec), str(dest))
    one = tmp_path / "one.yaml"
    one.write_text(f"images:\n  - name: {chain.repo}\n    tags: [v1]\n")
    dry = ok("mirror", "--dry-run", "--prune", str(one), str(dest)).stdout
    assert f"prune: would remove {chain.repo}:v2" in dry and "would remove 2 tag(s), 6 blob(s)" in dry
    planned = json.loads(ok("mirror", "--dry-run", "--json", "--prune", str(one), str(dest)).stdout)["prune"]
    assert planned["remove"] == [f"{chain.repo}:v2", f"{chain.repo}:v3"] and planned["blobs"] == 6
    proc = ok("mirror", "--progress", "plain", "--prune", str(one), str(dest))
    assert "removed 2 tag(s), 6 blob(s)" in proc.stderr
    assert set(json.loads((dest / "catalog.json").read_text())["images"][chain.repo]) == {"v1"}
    assert set(read_lock(dest / "occystrap.lock")[chain.repo]) == {"v1"}
    assert ok("verify", str(dest)).stdout.startswith("OK: ")
    fails("mirror", "--prune", str(one), str(tmp_path / "b.tar"))


def test_lock_prints_moved_tags_and_locked_checks_the_spec(registry: Registry, tmp_path: Path) -> None:
    first, second = (images.build_image([[Entry.file("v", f"{i}\n".encode())]]) for i in range(2))
    registry.push_image("airgap/locked", "v1", first)
    registry.push_image("airgap/locked", "v2", first)
    repo = f"{registry.host}/airgap/locked"
    spec = tmp_path / "images.yaml"
    spec.write_text(f"images:\n  - name: {repo}\n    tags: [v1, v2]\n")
    proc = ok("lock", "-q", str(spec))
    short = first.manifest_digest.split(":")[1][:12]
    assert f"added {repo}:v1 (linux/amd64 {short})" in proc.stdout
    assert "updated " in proc.stdout and "0 moved, 2 added, 0 removed, 0 unchanged" in proc.stdout
    lock = tmp_path / "images.lock"
    assert read_lock(lock) == {repo: {t: {"linux/amd64": first.manifest_digest} for t in ("v1", "v2")}}
    ok("lock", "-q", "--check", str(spec))
    registry.push_image("airgap/locked", "v2", second)  # the tag moves
    stale = occystrap("lock", "-q", "--check", str(spec))
    assert stale.returncode == 1 and f"moved {repo}:v2" in stale.stdout and lock.read_text()
    proc = ok("lock", "-q", str(spec))
    new_short = second.manifest_digest.split(":")[1][:12]
    assert f"moved {repo}:v2 (linux/amd64 {short} -> {new_short})" in proc.stdout
    assert "1 moved, 0 added, 0 removed, 1 unchanged" in proc.stdout
    # --locked with the spec: the lock must cover exactly the spec's images and tags.
    wider = tmp_path / "wider.yaml"
    wider.write_text(
        f"images:\n  - name: {repo}\n    tags: [v2, v3]\n  - name: {registry.host}/airgap/more\n"
    )
    proc = fails("mirror", "--locked", "--lock", str(lock), str(wider), str(tmp_path / "w.tar"))
    assert (
        f"does not match the spec: missing {repo}:v3, {registry.host}/airgap/more (every tag);"
        f" extra {repo}:v1 (run `occystrap lock` to update it)" in proc.stderr
    )
    assert not (tmp_path / "w.tar").exists()
    out = tmp_path / "out.tar"
    ok("mirror", "-q", "--locked", "--lock", str(lock), str(spec), str(out))
    assert read_lock(out.with_name("out.tar.lock")) == read_lock(lock)
    # A lock in the first format (no version, images at the top) is still read.
    old = tmp_path / "old.lock"
    old.write_text(json.dumps(read_lock(lock), indent=2, sort_keys=True) + "\n")
    ok("mirror", "-q", "--locked", "--lock", str(old), str(spec), str(tmp_path / "old.tar"))


def test_since_a_lock_file_or_a_merged_directory(chain: Chain, tmp_path: Path) -> None:
    digests = [l.digest for l in chain.layers]
    lock = chain.bundles[0].with_name("v1.tar.lock")
    from_lock = tmp_path / "from-lock.tar"
    ok("mirror", "-q", "--since", str(lock), str(chain.spec), str(from_lock))
    meta = json.loads(_member(from_lock, "occystrap-delta.json"))
    assert meta["base"]["from"] == "v1.tar.lock"
    assert meta["base"]["lock_digest"] == "sha256:" + hashlib.sha256(lock.read_bytes()).hexdigest()
    assert sorted(b["digest"] for b in meta["base"]["blobs"]) == sorted(digests[:2])
    site = tmp_path / "site"
    ok("import", "-q", str(chain.bundles[0]), str(site))
    ok("import", "-q", str(from_lock), str(site))
    assert ok("verify", str(site)).stdout.startswith("OK: ")
    # The site itself as the base: every layer is there, so the delta carries documents only.
    nothing_new = tmp_path / "nothing-new.tar"
    ok("mirror", "-q", "--since", str(site), str(chain.spec), str(nothing_new))
    meta = json.loads(_member(nothing_new, "occystrap-delta.json"))
    assert sorted(b["digest"] for b in meta["base"]["blobs"]) == sorted(digests)
    assert meta["base"]["from"] == "site" and meta["base"]["lock_digest"] is None  # imports write no lock
    assert not set(digests) & _blobs(nothing_new)
