"""Scale-out: `mirror --shard I/N` run as four concurrent processes against the real registry,
`merge` of their outputs (the same files as one mirror run), the registry-destination flow
(shards push blobs, a normal run writes manifests and tags), conflicts, and bad input."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from occystrap.errors import UsageError
from occystrap.model import Descriptor
from occystrap.shard import split
from tests.helpers import ROOT, fails, ok, settled
from tests.support import images
from tests.support.images import BuiltImage, Entry
from tests.support.registry import Registry

SHARDS = 4
SHARED_FILES = ("catalog.json", "index.json", "manifest.json", "occystrap.lock")


def _digest(n: int) -> str:
    return "sha256:" + f"{n:064x}"


# --- pure: the split and the option -------------------------------------------------


def test_split_is_largest_first_to_the_lightest_shard_each_blob_once() -> None:
    blobs = [Descriptor("", _digest(i), size) for i, size in enumerate([100, 10, 60, 50, 10, 5, 100])]
    shares = split.split([*blobs, blobs[0]], 3)  # a blob named twice is one blob
    assert [[d.size for d in s] for s in shares] == [[100, 10, 5], [100, 10], [60, 50]]
    assert sorted(d.digest for s in shares for d in s) == sorted(d.digest for d in blobs)
    # Same-size blobs go by digest, whatever order they came in: every process agrees.
    assert split.split(list(reversed(blobs)), 3) == shares
    assert shares[0][0].digest == _digest(0) and shares[1][0].digest == _digest(6)
    assert split.split(blobs[:1], 4) == [[blobs[0]], [], [], []]


@pytest.mark.parametrize(
    ("args", "env", "want"),
    [
        (("2/4", None, None), {}, split.Shard(2, 4)),
        ((" 1 / 1 ", None, None), {}, split.Shard(1, 1)),
        ((None, 3, 4), {}, split.Shard(3, 4)),
        (("auto/4", None, None), {"JOB_COMPLETION_INDEX": "0"}, split.Shard(1, 4)),
        (("auto/4", None, None), {"JOB_COMPLETION_INDEX": "3"}, split.Shard(4, 4)),
        ((None, None, None), {}, None),
    ],
)
def test_shard_option_forms(
    args: tuple[Any, Any, Any], env: dict[str, str], want: split.Shard | None
) -> None:
    assert split.parse(*args, env=env) == want


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (("5/4", None, None), {}, "shards are numbered 1 to 4, not 5"),
        (("0/4", None, None), {}, "counts from 0: use --shard auto/4"),
        (("1/0", None, None), {}, "the shard count must be 1 to"),
        (("2", None, None), {}, "expected I/N"),
        (("a/4", None, None), {}, "must be a whole number"),
        (
            ("auto/4", None, None),
            {},
            "JOB_COMPLETION_INDEX (set by a Kubernetes Indexed Job), which is not set",
        ),
        (("auto/4", None, None), {"JOB_COMPLETION_INDEX": "4"}, "not 5"),
        (("1/4", 1, 4), {}, "not both"),
        ((None, 1, None), {}, "go together"),
    ],
)
def test_shard_option_errors(args: tuple[Any, Any, Any], env: dict[str, str], message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        split.parse(*args, env=env)


# --- against the registry: four concurrent shards, then merge --------------------------


def _layer(seed: str, size: int) -> images.Layer:
    """Random bytes, so gzip leaves the layer about as big: the split is by these sizes."""
    return images.build_layer([Entry.file(f"{seed}.bin", random.Random(seed).randbytes(size))])


def _push_plan(registry: Registry, tag: str) -> tuple[list[images.Layer], list[BuiltImage]]:
    """Six tags over a shared 1 MiB base, the same base in a second repository, a whole index,
    and a platform list (the arm64 image stored under its digest). Returns every layer."""
    base = _layer(f"base-{tag}", 1 << 20)
    smalls = [_layer(f"{tag}-{i}", 40_000 + 23_000 * i) for i in range(6)]
    apps = [images.build_image([base, s]) for s in smalls]
    for i, built in enumerate(apps):
        registry.push_image("shard/app", f"{tag}.{i}", built)
    other_layer = _layer(f"other-{tag}", 300_000)
    other = images.build_image([base, other_layer])
    registry.push_image("shard/other", tag, other)
    arch = {
        a: _layer(f"{a}-{tag}", 150_000 + 10_000 * k) for k, a in enumerate(("amd", "arm", "amd2", "arm2"))
    }
    multi = images.build_index(
        [images.build_image([arch["amd"]], fmt="oci", arch="amd64"),
         images.build_image([arch["arm"]], fmt="oci", arch="arm64", variant="v8")]
    )  # fmt: skip
    registry.push_index("shard/multi", tag, multi)
    listed = images.build_index(
        [images.build_image([arch["amd2"]], fmt="oci", arch="amd64"),
         images.build_image([arch["arm2"]], fmt="oci", arch="arm64", variant="v8")]
    )  # fmt: skip
    registry.push_index("shard/listed", tag, listed)
    layers = [base, *smalls, other_layer, *arch.values()]
    return layers, [*apps, other, *multi.images, *listed.images]


def _spec(path: Path, registry: Registry, tag: str) -> Path:
    host = registry.host
    path.write_text(
        f"images:\n  - name: {host}/shard/app\n    include: ['^{tag}\\.']\n"
        f"  - name: {host}/shard/other\n    tags: [{tag}]\n"
        f"  - name: {host}/shard/multi\n    tags: [{tag}]\n    platforms: all\n"
        f"  - name: {host}/shard/listed\n    tags: [{tag}]\n    platforms: [linux/amd64, linux/arm64]\n"
    )
    return path


def _start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "occystrap", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=full_env,
    )


def _concurrently(argvs: list[list[str]]) -> list[tuple[str, str]]:
    """Every command started before any is waited for; (stdout, stderr) of each, all succeeded."""
    procs = [_start(*argv) for argv in argvs]
    outs = [p.communicate(timeout=300) for p in procs]
    for argv, proc, (_, err) in zip(argvs, procs, outs, strict=True):
        assert proc.returncode == 0, f"occystrap {' '.join(argv)} failed ({proc.returncode}):\n{err}"
    return outs


def _summary(stderr: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(stderr.splitlines()[-1])
    assert doc["event"] == "Summary", doc
    return doc


def _blob_files(root: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (root / "blobs" / "sha256").iterdir()}


@dataclass
class Sharded:
    registry: Registry
    layers: list[images.Layer]
    built: list[BuiltImage]
    spec: Path
    single: Path  # one mirror run of the spec
    shards: list[Path]  # shard-1 .. shard-4, run concurrently
    summaries: list[dict[str, Any]]
    gets: dict[str, int]  # layer digest -> GETs of it while the shards ran

    @property
    def unique_bytes(self) -> int:
        return sum(l.size for l in self.layers)


@pytest.fixture(scope="module")
def sharded(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Sharded:
    work = tmp_path_factory.mktemp("sharded")
    layers, built = _push_plan(registry, "s")
    spec = _spec(work / "images.yaml", registry, "s")
    single = work / "single"
    ok("mirror", "-q", str(spec), str(single))

    def gets() -> dict[str, int]:
        return {l.digest: registry.request_count(f"/blobs/{l.digest}", method="GET") for l in layers}

    before = gets()
    shards = [work / f"shard-{i}" for i in range(1, SHARDS + 1)]
    argvs = [["mirror", "--progress", "json", "--shard", f"{i}/{SHARDS}", str(spec), str(shards[i - 1])]
             for i in range(1, SHARDS + 1)]  # fmt: skip
    outs = _concurrently(argvs)
    settled(lambda: registry.request_count("/blobs/", method="GET"))
    after = gets()
    fetched = {d: after[d] - before[d] for d in after}
    return Sharded(registry, layers, built, spec, single, shards, [_summary(e) for _, e in outs], fetched)


def test_four_shards_fetch_each_blob_once_balanced_by_bytes(sharded: Sharded) -> None:
    # Counted at the registry: every layer fetched by exactly one of the four processes.
    assert sharded.gets == {l.digest: 1 for l in sharded.layers}
    # ... and by their own summaries: the bytes fetched across shards sum to the unique bytes.
    fetched = [s["fetched_bytes"] for s in sharded.summaries]
    assert sum(fetched) == sharded.unique_bytes
    assert sum(s["fetched_blobs"] for s in sharded.summaries) == len(sharded.layers)
    for s in sharded.summaries:
        assert s["ok"] and s["shard_blobs"] == len(sharded.layers) - s["fetched_blobs"]
        assert s["shard_bytes"] == sharded.unique_bytes - s["fetched_bytes"]
    # The 1 MiB base is a shard's whole share; the other three split the rest within a blob.
    base = sharded.layers[0]
    assert max(fetched) == base.size
    rest = sorted(fetched)[:3]
    assert max(rest) - min(rest) <= max(l.size for l in sharded.layers[1:])
    metas = [json.loads((d / "occystrap-shard.json").read_text()) for d in sharded.shards]
    assert [m["shard"] for m in metas] == [{"index": i, "count": SHARDS} for i in range(1, SHARDS + 1)]
    assert len({m["plan_digest"] for m in metas}) == 1
    owned = [{b["digest"] for b in m["blobs"]} for m in metas]
    assert sum(len(o) for o in owned) == len(sharded.layers) == len(set().union(*owned))
    for m, own in zip(metas, owned, strict=True):
        assert {b["digest"] for b in m["elsewhere"]} == {l.digest for l in sharded.layers} - own


def test_merge_of_the_shards_is_the_single_mirror(sharded: Sharded, tmp_path: Path) -> None:
    merged = tmp_path / "merged"
    proc = ok("merge", "--progress", "plain", *map(str, sharded.shards), str(merged))
    for name in SHARED_FILES:
        assert (merged / name).read_bytes() == (sharded.single / name).read_bytes(), name
    assert _blob_files(merged) == _blob_files(sharded.single)
    assert not (merged / "occystrap-shard.json").exists()
    names = len(json.loads((merged / "index.json").read_text())["manifests"])
    assert f"merged 4 inputs into {merged}: {names} names, {len(sharded.layers)} blobs" in proc.stderr
    assert proc.stderr.splitlines()[-1].startswith("summary: ")
    assert ok("verify", str(merged)).stdout.startswith("OK: ")
    # A bundle from the shards: byte for byte the bundle one mirror run writes.
    single_tar, merged_tar = tmp_path / "single.tar", tmp_path / "merged.tar"
    ok("mirror", "-q", str(sharded.spec), str(single_tar))
    ok("merge", "-q", *map(str, sharded.shards), str(merged_tar))
    assert merged_tar.read_bytes() == single_tar.read_bytes()
    assert (tmp_path / "merged.tar.lock").read_bytes() == (tmp_path / "single.tar.lock").read_bytes()
    # Merging again into the same directory finds everything there: nothing is copied twice.
    again = ok("merge", "--progress", "json", *map(str, sharded.shards), str(merged))
    assert _summary(again.stderr)["fetched_blobs"] == 0


def test_verify_of_one_shard_says_it_is_partial_on_purpose(sharded: Sharded, tmp_path: Path) -> None:
    meta = json.loads((sharded.shards[1] / "occystrap-shard.json").read_text())
    proc = ok("verify", str(sharded.shards[1]))
    assert proc.stdout.startswith("OK: ") and "shard 2/4 of plan sha256:" in proc.stdout
    assert f"partial on purpose: {len(meta['elsewhere'])} blob(s)" in proc.stdout
    assert "`occystrap merge` them all" in proc.stdout
    # Its own blobs are still required: one gone is a problem, the other shards' are not.
    damaged = tmp_path / "damaged"
    shutil.copytree(sharded.shards[1], damaged)
    gone = meta["blobs"][0]["digest"].split(":")[1]
    (damaged / "blobs" / "sha256" / gone).unlink()
    proc = fails("verify", str(damaged))
    problems = proc.stdout.strip().splitlines()
    assert problems and all(gone in line for line in problems), proc.stdout


def test_merge_without_a_shard_names_it_and_writes_nothing(sharded: Sharded, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = fails("merge", "-q", *map(str, sharded.shards[:3]), str(out))
    error = proc.stderr.strip().splitlines()[-1]
    assert "blob(s) the images need are in no input" in error and "shard(s) 4/4 of plan" in error, error
    assert "(nothing written)" in error and not out.exists()
    assert proc.returncode == 3


# --- conflicts, other inputs ----------------------------------------------------------------


def test_merge_refuses_conflicts_and_combines_dirs_and_bundles(registry: Registry, tmp_path: Path) -> None:
    host = registry.host
    first, second, third = (images.build_image([_layer(f"conflict-{i}", 50_000)]) for i in range(3))
    registry.push_image("shard/conflict", "v1", first)
    registry.push_image("shard/conflict", "v2", third)
    registry.push_image("shard/extra", "v1", third)
    a, b, c = tmp_path / "a", tmp_path / "b.tar", tmp_path / "c"
    ok("mirror", "-q", "--image", f"{host}/shard/conflict:v1", "--image", f"{host}/shard/conflict:v2", str(a))
    ok("mirror", "-q", "--image", f"{host}/shard/extra:v1", str(b))
    # A directory and a bundle with different names: one directory holding both, verified.
    ok("merge", "-q", str(a), str(b), str(c))
    catalog = json.loads((c / "catalog.json").read_text())["images"]
    assert set(catalog) == {f"{host}/shard/conflict", f"{host}/shard/extra"}
    assert ok("verify", str(c)).stdout.startswith("OK: ")
    # The tag moves; a second directory holds the new content under the same name.
    registry.push_image("shard/conflict", "v1", second)
    d, out = tmp_path / "d", tmp_path / "out"
    ok("mirror", "-q", "--image", f"{host}/shard/conflict:v1", "--image", f"{host}/shard/extra:v1", str(d))
    proc = fails("merge", "-q", str(a), str(b), str(d), str(out))
    error = proc.stderr.strip().splitlines()[-1]
    assert "1 conflict(s)" in error and "(nothing written)" in error, error
    assert f"{host}/shard/conflict:v1: {first.manifest_digest[7:19]} in {a} vs" in error, error
    assert f"{second.manifest_digest[7:19]} in {d}" in error, error
    assert not out.exists() and proc.returncode == 2
    # An existing directory's names count too: c holds the old v1.
    before = sorted(p.name for p in c.rglob("*"))
    fails("merge", "-q", str(d), str(c))
    assert sorted(p.name for p in c.rglob("*")) == before


# --- into a registry: shards push blobs, a normal run writes manifests and tags ------------


def _uploads(registry: Registry) -> dict[str, int]:
    """Completed blob uploads per digest (PUT .../blobs/uploads/...?digest= answered 201)."""
    out: dict[str, int] = {}
    for line in registry.access_log():
        if line.method == "PUT" and line.status == 201 and "/blobs/uploads/" in line.path:
            digest = line.path.partition("digest=")[2].partition("&")[0].replace("%3A", ":")
            out[digest] = out.get(digest, 0) + 1
    return out


def _tags(registry: Registry, repo_tags: list[tuple[str, str]]) -> dict[str, str]:
    """What each name serves: the digest of its exact manifest bytes."""
    return {
        f"{r}:{t}": "sha256:" + hashlib.sha256(registry.client.get_manifest(r, t)[1]).hexdigest()
        for r, t in repo_tags
    }


def test_registry_shards_push_blobs_once_then_one_run_writes_tags(
    registry: Registry, registry_factory: Callable[..., Registry], tmp_path: Path
) -> None:
    layers, built = _push_plan(registry, "r")
    spec = _spec(tmp_path / "images.yaml", registry, "r")
    lock = tmp_path / "images.lock"
    ok("lock", "-q", str(spec), "--lock", str(lock))
    dest, direct = registry_factory(), registry_factory()
    target = f"docker://{dest.host}/mir"
    locked = ["--locked", "--lock", str(lock), str(spec)]
    outs = _concurrently(
        [
            ["mirror", "--progress", "json", "--shard", f"{i}/{SHARDS}", *locked, target]
            for i in range(1, SHARDS + 1)
        ]
    )
    summaries = [_summary(err) for _, err in outs]
    assert sum(s["fetched_bytes"] for s in summaries) == sum(l.size for l in layers)
    assert all(s["tags_written"] == 0 and s["manifests_pushed"] == 0 for s in summaries)
    assert any("no manifest or tag written" in err for _, err in outs)
    settled(lambda: len(dest.access_log()))
    assert not [l for l in dest.access_log() if l.method == "PUT" and "/manifests/" in l.path]
    uploads = _uploads(dest)
    assert uploads == {l.digest: 1 for l in layers}  # every layer by one shard, once; no config yet
    # The base goes into shard/app and shard/other: uploaded once, mounted into the other.
    mount = f"mount={layers[0].digest}&from=mir/shard/"
    assert any(l.method == "POST" and l.status == 201 and mount in l.path for l in dest.access_log())

    finish = ok("mirror", "--progress", "json", *locked, target)
    assert _summary(finish.stderr)["fetched_blobs"] == 0  # every layer found by HEAD
    settled(lambda: len(dest.access_log()))
    configs = {i.config_digest for i in built}
    assert _uploads(dest) == {l.digest: 1 for l in layers} | {c: 1 for c in configs}

    ok("mirror", "-q", *locked, f"docker://{direct.host}/mir")
    names = [("mir/shard/app", f"r.{i}") for i in range(6)]
    names += [("mir/shard/other", "r"), ("mir/shard/multi", "r"), ("mir/shard/listed", "r")]
    names += [("mir/shard/listed", built[-1].manifest_digest)]  # the arm64 image, stored by digest
    assert _tags(dest, names) == _tags(direct, names)
    assert _tags(dest, names)["mir/shard/other:r"] == built[6].manifest_digest


# --- bad input -------------------------------------------------------------------------------


def test_bad_shard_options_are_one_line_and_write_nothing(sharded: Sharded, tmp_path: Path) -> None:
    spec, out = str(sharded.spec), tmp_path / "out"
    cases = [
        (["--shard", "5/4"], "--shard 5/4: shards are numbered 1 to 4, not 5"),
        (["--shard", "0/4"], "use --shard auto/4"),
        (["--shard", "auto/4"], "JOB_COMPLETION_INDEX"),
        (["--shard-index", "2"], "--shard-index and --shard-count go together"),
        (["--shard", "1/2", "--keep-going"], "a shard fails whole"),
        (["--shard", "1/2", "--prune"], "prune the merged result instead"),
    ]
    for args, message in cases:
        proc = fails("mirror", "-q", *args, spec, str(out))
        assert message in proc.stderr and proc.returncode == 2, proc.stderr
        assert not out.exists()
    proc = fails("mirror", "-q", "--shard", "1/4", spec, str(tmp_path / "b.tar"))
    assert "occystrap merge SHARD_DIR... BUNDLE.tar" in proc.stderr and not (tmp_path / "b.tar").exists()
    # A DEST another shard wrote is not reused for a different shard.
    proc = fails("mirror", "-q", "--shard", "3/4", spec, str(sharded.shards[1]))
    assert f"{sharded.shards[1]} holds shard 2/4 of plan sha256:" in proc.stderr
    # merge: inputs must exist, and INTO is not one of them.
    assert "does not exist" in fails("merge", str(tmp_path / "nope"), str(out)).stderr
    assert "is an input" in fails("merge", str(sharded.shards[0]), str(sharded.shards[0])).stderr
    assert "is a shard's output" in fails("merge", str(sharded.single), str(sharded.shards[0])).stderr


def test_dry_run_shows_the_split_and_kubernetes_index(sharded: Sharded, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = ok("mirror", "--dry-run", "--shard", "auto/4", str(sharded.spec), str(out),
              env={"JOB_COMPLETION_INDEX": "1"})  # fmt: skip
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("shard 2/4 of plan sha256:") and "would fetch" in lines[0]
    assert f"of the plan's {len(sharded.layers)} unique blobs" in lines[0]
    assert lines[2].endswith("<- this shard") and len(lines) == 1 + SHARDS
    assert not out.exists()
    assert "occystrap mirror --shard 1/4 " in ok("mirror", "--help").stdout
    assert "occystrap merge shard-1/ " in ok("merge", "--help").stdout


# --- the examples README points at --------------------------------------------------------------


def _commands(text: str) -> list[list[str]]:
    """Every `occystrap …` command line in a text, as words (folded YAML lines joined)."""
    out = []
    for chunk in text.replace("&&", "\n").splitlines():
        words = chunk.split()
        if words and words[0] == "occystrap":
            out.append(words[1:])
    return out


def test_the_examples_say_what_the_commands_accept() -> None:
    import yaml

    examples = ROOT / "examples"
    workflow = yaml.safe_load((examples / "github-actions-mirror.yml").read_text())
    assert workflow["jobs"]["shard"]["strategy"]["matrix"]["shard"] == list(range(1, SHARDS + 1))
    runs = [s["run"] for job in workflow["jobs"].values() for s in job["steps"] if "run" in s]
    jobs = list(yaml.safe_load_all((examples / "k8s-indexed-job.yaml").read_text()))
    indexed = jobs[0]["spec"]
    assert indexed["completionMode"] == "Indexed" and indexed["completions"] == SHARDS
    runs += [arg for job in jobs for c in job["spec"]["template"]["spec"]["containers"] for arg in c["args"]]
    commands = [c for text in runs for c in _commands(text)]
    assert any("--shard" in c and f"auto/{SHARDS}" in c for c in commands)
    assert any(
        c[0] == "merge" and len([w for w in c if w.startswith("shards/shard-")]) == SHARDS for c in commands
    )
    helps: dict[str, str] = {}
    for words in commands:
        help_text = helps.setdefault(words[0], ok(words[0], "--help").stdout)
        for word in words[1:]:
            if word.startswith("--"):
                assert f"{word.partition('=')[0]} " in help_text or f"{word}," in help_text, (words[0], word)
