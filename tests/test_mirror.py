"""mirror (spec, --image, lock, dry run, keep-going), list-tags and inspect against a real registry."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from occystrap.errors import ManifestError
from occystrap.mirror import spec, tags
from tests.helpers import fails, ok, read_lock
from tests.support import images
from tests.support.images import BuiltImage, Entry
from tests.support.registry import Registry
from tests.support.validators import Podman

# --- pure: tag selection and spec parsing --------------------------------------

AVAILABLE = ["latest", "v1.0.0", "v1.1.0", "v1.2.0-rc1", "v1.2.0", "v2.0.0", "v10.0.0", "1.9", "nightly"]


@pytest.mark.parametrize(
    ("kwargs", "want"),
    [
        ({"tags": ["a"]}, ["a"]),
        ({"include": [r"^v1\."]}, ["v1.0.0", "v1.1.0", "v1.2.0", "v1.2.0-rc1"]),
        ({"include": [r"^v1\."], "exclude": ["-rc"]}, ["v1.0.0", "v1.1.0", "v1.2.0"]),
        ({"latest": 2}, ["v10.0.0", "v2.0.0"]),
        ({"include": [r"^v1\."], "latest": 2}, ["v1.2.0", "v1.2.0-rc1"]),
        ({"include": [r"^v1\."], "exclude": [r"\.2\."], "latest": 1}, ["v1.1.0"]),
        ({"latest": 3, "exclude": ["^v"]}, ["1.9"]),
        ({"tags": ["nightly"], "latest": 1}, ["nightly", "v10.0.0"]),
        ({"exclude": ["^v", "latest"]}, ["1.9", "nightly"]),
        ({"include": ["nomatch"]}, []),
        ({}, []),
    ],
)
def test_select_tags(kwargs: dict[str, Any], want: list[str]) -> None:
    compiled = {
        k: [re.compile(p) for p in v] if k in ("include", "exclude") else v for k, v in kwargs.items()
    }
    assert tags.select_tags(AVAILABLE, **compiled) == want  # type: ignore[arg-type]


def test_semver_order_puts_prereleases_first() -> None:
    versions = ["1.0.0", "1.0.0-rc.2", "1.0.0-rc.10", "0.9", "1.0.0-alpha"]
    assert tags.newest(versions, 5) == ["1.0.0", "1.0.0-rc.10", "1.0.0-rc.2", "1.0.0-alpha", "0.9"]


def test_image_options_of_one_repository_merge() -> None:
    digest = "sha256:" + "b" * 64
    merged = spec.from_refs(
        ["reg.example/app:v1", "busybox", "reg.example/app:v2", f"reg.example/app@{digest}"]
    )
    app, busybox = merged.images
    assert app.name == "reg.example/app" and app.tags == ("v1", "v2") and app.digests == (digest,)
    assert busybox.name == "docker.io/library/busybox" and busybox.tags == ("latest",)


def test_spec_parse_defaults_and_inline_tags() -> None:
    parsed = spec.parse(
        "images:\n  - name: 127.0.0.1:5000/a/b\n  - name: busybox:1.36\n    platforms: all\n"
        "  - name: reg.example/x@sha256:" + "a" * 64 + "\n"
    )
    a, b, c = parsed.images
    assert a.name == "127.0.0.1:5000/a/b" and a.tags == ("latest",) and a.platforms == ()
    assert b.name == "docker.io/library/busybox" and b.tags == ("1.36",) and b.platforms == "all"
    assert c.digests == ("sha256:" + "a" * 64,) and c.tags == ()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("images: [", "not valid YAML"),
        ("foo: 1", "'images' list"),
        ("images: []", "non-empty list"),
        ("images:\n  - tags: [v1]", "'name' must be"),
        ("images:\n  - name: a\n    tag: [v1]", "unknown key(s) tag"),
        ("images:\n  - name: a\n    tags: [1.0]", "quote it"),
        ("images:\n  - name: a\n    include: ['(']", "bad regular expression"),
        ("images:\n  - name: a\n    latest: 0", "positive integer"),
        ("images:\n  - name: a\n    platforms: [linux]", "os/arch"),
        ("images:\n  - name: a\n    digests: [sha256:abc]", "not a sha256"),
        ("images:\n  - name: A/B", "invalid repository name"),
    ],
)
def test_spec_errors(text: str, message: str) -> None:
    with pytest.raises(ManifestError, match=re.escape(message)):
        spec.parse(text, "s.yaml")


# --- against the registry ---------------------------------------------------------


def _family(seed: str, count: int, fmt: str = "docker") -> tuple[images.Layer, list[BuiltImage]]:
    """`count` small images over one shared base layer unique to `seed`."""
    base = images.build_layer([Entry.file("base.txt", f"base of {seed}\n".encode() * 50)], fmt=fmt)  # type: ignore[arg-type]
    built = [
        images.build_image([base, [Entry.file("app.txt", f"{seed} app {i}\n".encode())]], fmt=fmt)  # type: ignore[arg-type]
        for i in range(count)
    ]
    return base, built


def _catalog(directory: Path) -> dict[str, dict[str, dict[str, object]]]:
    doc: dict[str, dict[str, dict[str, object]]] = json.loads((directory / "catalog.json").read_text())[
        "images"
    ]
    return doc


def _blob_gets(registry: Registry, digest: str) -> int:
    return registry.request_count(f"/blobs/{digest}", method="GET")


def _json_lines(stderr: str) -> list[dict[str, Any]]:
    """--progress json: every stderr line is one JSON object (a failing run adds its error line last)."""
    lines = stderr.splitlines()
    if lines and lines[-1].startswith("occystrap: error:"):
        lines = lines[:-1]
    return [json.loads(line) for line in lines]


def test_mirror_many_tags_shares_the_base_and_reruns_fetch_nothing(
    registry: Registry, tmp_path: Path
) -> None:
    base, built = _family("many", 24)
    repo = f"{registry.host}/mirror/many"
    tags = [f"v1.{i}.0" for i in range(22)]
    for tag, image in zip(tags, built, strict=False):
        registry.push_image("mirror/many", tag, image)
    spec_file = tmp_path / "s.yaml"
    spec_file.write_text(f"images:\n  - name: {repo}\n    include: ['^v1\\.']\n")
    dest = tmp_path / "m"
    proc = ok("mirror", "--progress", "json", str(spec_file), str(dest))
    events = _json_lines(proc.stderr)  # nothing but the reporter's lines on stderr
    resolved = [e for e in events if e["event"] == "ImageResolved"]
    assert sorted(e["image"] for e in resolved) == sorted(f"{repo}:{t}" for t in tags)
    assert all(e["platform"] == "linux/amd64" and e["blobs"] == 2 for e in resolved)
    assert events[0]["event"] == "RunStarted" and events[0]["images"] == [repo]
    summary = events[-1]
    assert summary["event"] == "Summary" and summary["images"] == summary["images_total"] == 22
    infos = [e["message"] for e in events if e["event"] == "Info"]
    assert f"{repo}: 22 new (v1.0.0, v1.1.0, v1.10.0, v1.11.0, v1.12.0, +17 more)" in infos
    assert set(_catalog(dest)[repo]) == set(tags)
    assert _blob_gets(registry, base.digest) == 1
    lock = read_lock(dest / "occystrap.lock")
    assert set(lock[repo]) == set(tags)
    assert lock[repo]["v1.3.0"] == {"linux/amd64": built[3].manifest_digest}
    # Version first, then every mapping sorted, one digest per line: diff-friendly and stable.
    text = (dest / "occystrap.lock").read_text()
    assert text == json.dumps({"version": 2, "images": lock}, indent=2) + "\n"
    assert list(lock[repo]) == sorted(lock[repo])
    index = json.loads((dest / "index.json").read_text())
    assert len(index["manifests"]) == len(tags)

    blobs = {l.digest for i in built for l in i.layers} | {i.config_digest for i in built}
    before = {d: _blob_gets(registry, d) for d in blobs}
    proc = ok("mirror", "--progress", "plain", str(spec_file), str(dest))
    # Manifests are asked for again (tags move); no blob is downloaded, not even a config.
    assert {d: _blob_gets(registry, d) for d in blobs} == before
    assert "mirrored 22 tag(s)" in proc.stderr
    assert f"{repo}: 22 unchanged\n" in proc.stderr

    # A new tag and a tag that moved: only their own layers are fetched, and the change is named.
    registry.push_image("mirror/many", "v1.22.0", built[22])
    registry.push_image("mirror/many", "v1.0.0", built[23])
    proc = ok("mirror", "--progress", "plain", str(spec_file), str(dest))
    assert f"{repo}: 1 new (v1.22.0), 1 updated (v1.0.0), 21 unchanged\n" in proc.stderr
    after = {d: _blob_gets(registry, d) for d in blobs}
    fetched = {d for d in blobs if after[d] != before[d]}
    assert fetched == {i.layers[1].digest for i in built[22:]} | {i.config_digest for i in built[22:]}
    assert all(after[d] - before[d] == 1 for d in fetched)
    assert _catalog(dest)[repo]["v1.0.0"]["manifest_digest"] == built[23].manifest_digest


def test_tags_of_one_manifest_fetch_its_config_once(registry: Registry, tmp_path: Path) -> None:
    _, built = _family("alias", 2)
    tags = [f"a{i}" for i in range(6)] + ["b0", "b1"]
    for tag in tags:
        registry.push_image("mirror/alias", tag, built[1 if tag.startswith("b") else 0])
    repo = f"{registry.host}/mirror/alias"
    dest = tmp_path / "m"
    spec_file = tmp_path / "s.yaml"
    spec_file.write_text(f"images:\n  - name: {repo}\n    tags: [{', '.join(tags)}]\n")
    ok("mirror", str(spec_file), str(dest))
    # Eight tags, two manifests: each config is fetched once, however many tags name it.
    assert [_blob_gets(registry, i.config_digest) for i in built] == [1, 1]
    catalog = _catalog(dest)[repo]
    assert set(catalog) == set(tags)
    assert {t: catalog[t]["manifest_digest"] for t in tags} == {
        t: built[1 if t.startswith("b") else 0].manifest_digest for t in tags
    }
    ok("verify", str(dest))


def test_bundles_from_one_lock_are_byte_identical(registry: Registry, tmp_path: Path) -> None:
    _, built = _family("same", 3, fmt="oci")
    for i, image in enumerate(built):
        registry.push_image("mirror/same", f"t{i}", image)
    amd = images.build_image([[Entry.file("arch", b"amd64 same\n")]], fmt="oci", arch="amd64")
    arm = images.build_image([[Entry.file("arch", b"arm64 same\n")]], fmt="oci", arch="arm64", variant="v8")
    multi = images.build_index([amd, arm])
    registry.push_index("mirror/same-multi", "v1", multi)
    spec_file = tmp_path / "s.yaml"
    spec_file.write_text(
        f"images:\n  - name: {registry.host}/mirror/same-multi\n    tags: [v1]\n    platforms: all\n"
        f"  - name: {registry.host}/mirror/same\n    include: ['^t']\n"
    )
    first = tmp_path / "first.tar"
    ok("mirror", "-q", "-j", "8", str(spec_file), str(first))
    outputs = [first]
    for name, parallel in (("a.tar", "1"), ("b.tar", "3"), ("a.tar", "8")):  # a.tar is rewritten in place
        out = tmp_path / name
        shutil.copy(tmp_path / "first.tar.lock", tmp_path / f"{name}.lock")
        ok("mirror", "-q", "-j", parallel, "--locked", str(out))
        outputs.append(out)
        assert out.read_bytes() == first.read_bytes(), f"{out} differs from {first}"
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind

    with tarfile.open(first) as tf:
        members = tf.getmembers()
        index_bytes = tf.extractfile("index.json").read()  # type: ignore[union-attr]
    assert all(
        (m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode, m.type) == (0, 0, 0, "", "", 0o644, tarfile.REGTYPE)
        for m in members
    )
    names = [m.name for m in members]
    assert names[-3:] == ["oci-layout", "index.json", "manifest.json"] and len(set(names)) == len(names)
    index = json.loads(index_bytes)
    assert index_bytes == json.dumps(index, indent=2).encode() + b"\n"
    refs = [e["annotations"]["org.opencontainers.image.ref.name"] for e in index["manifests"]]
    host = registry.host
    assert refs == [
        f"{host}/mirror/same:t0",
        f"{host}/mirror/same:t1",
        f"{host}/mirror/same:t2",
        f"{host}/mirror/same-multi:v1",
    ]
    # platforms: all keeps the index whole: the tag names the registry's index, byte for byte.
    assert index["manifests"][-1]["digest"] == multi.digest
    with tarfile.open(first) as tf:
        held = tf.extractfile(f"blobs/sha256/{multi.digest[7:]}").read()  # type: ignore[union-attr]
    assert held == multi.data


def test_tag_filters_pick_the_newest_matching(registry: Registry, tmp_path: Path) -> None:
    _, built = _family("filter", 6)
    tags = ["v1.0.0", "v1.1.0", "v1.2.0-rc1", "v1.2.0", "v2.0.0", "nightly"]
    for tag, image in zip(tags, built, strict=True):
        registry.push_image("mirror/filter", tag, image)
    repo = f"{registry.host}/mirror/filter"
    spec_file = tmp_path / "s.yaml"
    spec_file.write_text(
        f"images:\n  - name: {repo}\n    tags: [nightly]\n    include: ['^v1\\.']\n"
        "    exclude: ['-rc']\n    latest: 2\n"
    )
    dest = tmp_path / "m"
    ok("mirror", "-q", str(spec_file), str(dest))
    assert sorted(_catalog(dest)[repo]) == ["nightly", "v1.1.0", "v1.2.0"]


def test_platforms_all_keeps_the_index_whole(
    registry: Registry, registry_factory: Callable[..., Registry], skopeo: str, tmp_path: Path
) -> None:
    base_amd = images.build_image([[Entry.file("arch", b"amd64\n")]], fmt="oci", arch="amd64")
    base_arm = images.build_image([[Entry.file("arch", b"arm64\n")]], fmt="oci", arch="arm64", variant="v8")
    index = images.build_index([base_amd, base_arm])
    registry.push_index("mirror/multi", "v1", index)
    repo = f"{registry.host}/mirror/multi"
    spec_file = tmp_path / "s.yaml"
    spec_file.write_text(f"images:\n  - name: {repo}\n    tags: [v1]\n    platforms: all\n")
    dest = tmp_path / "m"
    ok("mirror", "-q", str(spec_file), str(dest))
    record = _catalog(dest)[repo]["v1"]
    assert record["kind"] == "index" and record["manifest_digest"] == index.digest
    assert {p: r["manifest_digest"] for p, r in record["platforms"].items()} == {
        "linux/amd64": base_amd.manifest_digest,
        "linux/arm64/v8": base_arm.manifest_digest,
    }
    lock = read_lock(dest / "occystrap.lock")
    assert lock[repo]["v1"] == {"index": index.digest}
    # The tag gives the registry's index back, byte for byte, to a real client.
    raw = subprocess.run(
        [skopeo, "inspect", "--raw", f"oci:{dest}:{repo}:v1"], capture_output=True, check=True
    ).stdout
    assert raw == index.data
    # ... and to a second registry, with the same index digest there.
    other = registry_factory()
    subprocess.run(
        [skopeo, "copy", "--all", "--quiet", "--dest-tls-verify=false", f"oci:{dest}:{repo}:v1",
         f"docker://{other.host}/copied/multi:v1"],
        capture_output=True, check=True,
    )  # fmt: skip
    assert other.client.get_manifest("copied/multi", "v1")[1] == index.data
    # docker load tags the image of --platform; the other platform is loaded untagged.
    docker = json.loads((dest / "manifest.json").read_text())
    tagged = [e for e in docker if e["RepoTags"]]
    assert [e["Config"] for e in tagged] == [f"blobs/sha256/{base_amd.config_digest[7:]}"]
    dest2 = tmp_path / "m2"
    ok("mirror", "-q", "--platform", "linux/arm64", str(spec_file), str(dest2))
    docker = json.loads((dest2 / "manifest.json").read_text())
    assert [e["Config"] for e in docker if e["RepoTags"]] == [f"blobs/sha256/{base_arm.config_digest[7:]}"]
    # A lock replays the index too.
    dest3 = tmp_path / "m3"
    dest3.mkdir()
    shutil.copy(dest / "occystrap.lock", dest3 / "occystrap.lock")
    ok("mirror", "-q", "--locked", str(dest3))
    assert _catalog(dest3)[repo]["v1"]["manifest_digest"] == index.digest
    ok("verify", str(dest))


def test_a_platform_list_stores_each_platform(registry: Registry, tmp_path: Path) -> None:
    base_amd = images.build_image([[Entry.file("arch", b"amd64 list\n")]], fmt="oci", arch="amd64")
    base_arm = images.build_image(
        [[Entry.file("arch", b"arm64 list\n")]], fmt="oci", arch="arm64", variant="v8"
    )
    registry.push_index("mirror/listed", "v1", images.build_index([base_amd, base_arm]))
    repo = f"{registry.host}/mirror/listed"
    spec_file = tmp_path / "s.yaml"
    spec_file.write_text(
        f"images:\n  - name: {repo}\n    tags: [v1]\n    platforms: [linux/amd64, linux/arm64]\n"
    )
    dest = tmp_path / "m"
    ok("mirror", "-q", "--platform", "linux/arm64", str(spec_file), str(dest))
    entries = _catalog(dest)[repo]
    assert entries["v1"]["manifest_digest"] == base_arm.manifest_digest
    assert entries[base_amd.manifest_digest]["platform"] == "linux/amd64"
    lock = read_lock(dest / "occystrap.lock")
    assert lock[repo]["v1"] == {
        "linux/amd64": base_amd.manifest_digest,
        "linux/arm64/v8": base_arm.manifest_digest,
    }


def test_bundle_tarball_loads_every_tag(registry: Registry, podman: Podman, tmp_path: Path) -> None:
    base, built = _family("bundle", 3)
    for i, image in enumerate(built):
        registry.push_image("mirror/bundle", f"t{i}", image)
    other = images.build_image([[Entry.file("other.txt", b"other\n")]])
    registry.push_image("mirror/other", "v1", other)
    tar = tmp_path / "bundle.tar"
    args = ["--image", f"{registry.host}/mirror/bundle:t0", "--image", f"{registry.host}/mirror/other:v1"]
    spec_file = tmp_path / "s.yaml"
    spec_file.write_text(f"images:\n  - name: {registry.host}/mirror/bundle\n    tags: [t1, t2]\n")
    fails("mirror", "-q", *args, str(spec_file), str(tar))  # bundle named twice: spec and --image
    ok("mirror", "-q", *args[2:], str(spec_file), str(tar))
    lock = read_lock(tmp_path / "bundle.tar.lock")
    assert sorted(lock) == [f"{registry.host}/mirror/bundle", f"{registry.host}/mirror/other"]
    with tarfile.open(tar) as tf:
        names = tf.getnames()
    assert names.count(f"blobs/sha256/{base.digest.split(':')[1]}") == 1
    loaded = podman.load(tar)
    want = {f"{registry.host}/mirror/bundle:t{i}" for i in (1, 2)} | {f"{registry.host}/mirror/other:v1"}
    assert want <= {n.removeprefix("localhost/") for n in loaded}, loaded


def test_locked_replays_old_digest_after_tag_moved(registry: Registry, tmp_path: Path) -> None:
    _, (old, new) = _family("locked", 2)
    registry.push_image("mirror/locked", "v1", old)
    ref = f"{registry.host}/mirror/locked:v1"
    dest = tmp_path / "m"
    ok("mirror", "-q", "--image", ref, str(dest))
    registry.push_image("mirror/locked", "v1", new)  # the tag moves
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "occystrap.lock").write_bytes((dest / "occystrap.lock").read_bytes())
    ok("mirror", "-q", "--locked", str(fresh))
    entry = _catalog(fresh)[f"{registry.host}/mirror/locked"]["v1"]
    assert entry["manifest_digest"] == old.manifest_digest
    # Without --locked the tag's new target is fetched and the lock follows it.
    ok("mirror", "-q", "--image", ref, str(dest))
    assert _catalog(dest)[f"{registry.host}/mirror/locked"]["v1"]["manifest_digest"] == new.manifest_digest
    lock = read_lock(dest / "occystrap.lock")
    assert lock[f"{registry.host}/mirror/locked"]["v1"]["linux/amd64"] == new.manifest_digest
    fails("mirror", "--locked", str(tmp_path / "nolock"))


def test_dry_run_writes_nothing_and_counts_sharing(registry: Registry, tmp_path: Path) -> None:
    base, built = _family("dry", 3)
    for i, image in enumerate(built):
        registry.push_image("mirror/dry", f"v{i}", image)
    spec_file = tmp_path / "s.yaml"
    spec_file.write_text(f"images:\n  - name: {registry.host}/mirror/dry\n    tags: [v0, v1, v2]\n")
    dest = tmp_path / "m"
    proc = ok("mirror", "--dry-run", str(spec_file), str(dest))
    assert not dest.exists()
    assert _blob_gets(registry, base.digest) == 0
    unique = base.size + sum(i.layers[1].size for i in built)
    assert "would fetch 4 blobs, " in proc.stdout and f"({unique} bytes)" in proc.stdout
    assert f"sharing saves {2 * base.size} B" in proc.stdout or f"({2 * base.size} bytes)" in proc.stdout
    # After mirroring one tag, a dry run knows DEST holds the base and that tag's layer.
    ok("mirror", "-q", "--image", f"{registry.host}/mirror/dry:v0", str(dest))
    proc = ok("mirror", "--dry-run", str(spec_file), str(dest))
    held = base.size + built[0].layers[1].size
    assert "already holds 2 blobs" in proc.stdout and f"({held} bytes)" in proc.stdout
    assert "would fetch 2 blobs" in proc.stdout
    assert "2 new (v1, v2), 1 unchanged" in proc.stdout

    proc = ok("mirror", "--dry-run", "--json", str(spec_file), str(dest))
    assert proc.stderr == ""
    doc = json.loads(proc.stdout)
    repo = f"{registry.host}/mirror/dry"
    assert doc["fetch"] == {"blobs": 2, "bytes": built[1].layers[1].size + built[2].layers[1].size}
    assert doc["present"] == {"blobs": 2, "bytes": held}
    assert doc["shared_bytes"] == 2 * base.size and doc["failed"] == {}
    tags = doc["images"][repo]["tags"]
    assert {k: v["status"] for k, v in tags.items()} == {"v0": "unchanged", "v1": "new", "v2": "new"}
    assert tags["v1"]["platforms"] == {"linux/amd64": built[1].manifest_digest}
    assert tags["v0"]["previous"] == {"linux/amd64": built[0].manifest_digest}
    assert doc["images"][repo]["counts"] == {"new": 2, "updated": 0, "unchanged": 1}
    assert set(_catalog(dest)[repo]) == {"v0"}  # a dry run writes nothing
    fails("mirror", "--json", str(spec_file), str(dest))  # --json describes a dry run only


def test_keep_going_names_the_failures(registry: Registry, tmp_path: Path) -> None:
    _, (good,) = _family("keep", 1)
    registry.push_image("mirror/keep", "v1", good)
    spec_file = tmp_path / "s.yaml"
    spec_file.write_text(
        f"images:\n  - name: {registry.host}/mirror/keep:v1\n  - name: {registry.host}/mirror/absent:v9\n"
    )
    dest = tmp_path / "m"
    proc = fails("mirror", "-q", str(spec_file), str(dest))
    assert "absent" in proc.stderr and not (dest / "catalog.json").exists()
    proc = fails("mirror", "-q", "--keep-going", str(spec_file), str(dest))
    assert f"failed: {registry.host}/mirror/absent: " in proc.stderr and "not found" in proc.stderr
    assert "1 image(s) failed" in proc.stderr
    assert list(_catalog(dest)) == [f"{registry.host}/mirror/keep"]
    assert list(read_lock(dest / "occystrap.lock")) == [f"{registry.host}/mirror/keep"]
    # While the display runs, the failures are events; the one error line comes after it.
    proc = fails("mirror", "--progress", "json", "--keep-going", str(spec_file), str(dest))
    events = _json_lines(proc.stderr)
    warnings = [e["message"] for e in events if e["event"] == "Warning"]
    assert len(warnings) == 1 and warnings[0].startswith(f"failed: {registry.host}/mirror/absent: ")
    assert f"{registry.host}/mirror/keep: 1 unchanged" in [
        e["message"] for e in events if e["event"] == "Info"
    ]
    assert events[-1]["event"] == "Summary" and not events[-1]["ok"]


def test_list_tags_and_inspect_print_on_stdout_only(registry: Registry) -> None:
    _, built = _family("look", 3, fmt="oci")
    for i, image in enumerate(built):
        registry.push_image("mirror/look", f"v{i}", image)
    repo = f"{registry.host}/mirror/look"
    proc = ok("list-tags", repo)
    assert proc.stdout.split() == ["v0", "v1", "v2"] and proc.stderr == ""
    assert json.loads(ok("list-tags", "--json", repo).stdout) == ["v0", "v1", "v2"]

    proc = ok("inspect", f"{repo}:v1")
    assert proc.stderr == ""
    assert built[1].manifest_digest in proc.stdout and built[1].layers[0].digest in proc.stdout
    assert '["/bin/sh"]' in proc.stdout
    doc = json.loads(ok("inspect", "--json", f"{repo}:v1").stdout)
    assert doc["digest"] == built[1].manifest_digest
    assert [l["size"] for l in doc["layers"]] == [l.size for l in built[1].layers]
    assert doc["config"]["architecture"] == "amd64" and doc["config"]["cmd"] == ["/bin/sh"]
    assert ok("inspect", "--raw", f"{repo}:v1").stdout.encode() == built[1].manifest
    assert ok("inspect", "--config", f"{repo}:v1").stdout.encode() == built[1].config

    arm = images.build_image([[Entry.file("a", b"arm")]], fmt="oci", arch="arm64", variant="v8")
    index = images.build_index([built[0], arm])
    registry.push_index("mirror/look", "multi", index)
    doc = json.loads(ok("inspect", "--json", "--platform", "linux/arm64", f"{repo}:multi").stdout)
    assert [p["platform"] for p in doc["platforms"]] == ["linux/amd64", "linux/arm64/v8"]
    assert doc["manifest"]["digest"] == arm.manifest_digest
    assert ok("inspect", "--raw", f"{repo}:multi").stdout.encode() == index.data
    fails("inspect", f"{repo}:nope")


def test_every_command_help_has_an_example() -> None:
    """Every command's help shows worked examples: indented lines under an Example(s) heading that
    run that very command. (Its usage line names the command anyway, so it proves nothing.)"""
    from click.testing import CliRunner

    from occystrap.cli import COMMANDS, main

    runner = CliRunner()
    for command in COMMANDS:
        result = runner.invoke(main, [command, "--help"], prog_name="occystrap")
        assert result.exit_code == 0, result.output
        lines = result.output.splitlines()
        headings = [i for i, line in enumerate(lines) if line.strip() in ("Example:", "Examples:")]
        assert len(headings) == 1, (command, result.output)
        examples = [
            line
            for line in lines[headings[0] + 1 :]
            if line.startswith("  ") and line.split("#")[0].split()[:2] == ["occystrap", command]
        ]
        assert examples, (command, result.output)


@pytest.mark.parametrize(
    ("text", "inside", "outside"),
    [
        (">=1.2 <2", ["1.2.0", "1.9.9", "v1.5"], ["1.1.9", "2.0.0", "latest"]),
        ("^1.2.3", ["1.2.3", "1.9.0"], ["1.2.2", "2.0.0"]),
        ("^0.2.3", ["0.2.3", "0.2.9"], ["0.3.0"]),
        ("~1.2.3", ["1.2.3", "1.2.9"], ["1.3.0", "1.2.2"]),
        ("1.0.0 || >=3", ["1.0.0", "3.0.0", "4.1"], ["2.0.0", "1.0.1"]),
    ],
)
def test_semver_ranges(text: str, inside: list[str], outside: list[str]) -> None:
    version_range = tags.parse_range(text)
    assert [t for t in inside if tags.in_range(t, version_range)] == inside
    assert [t for t in outside if tags.in_range(t, version_range)] == []


def test_range_and_registry_settings_in_a_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIRROR_PW", "pw-from-env")
    parsed = spec.parse(
        "images:\n  - name: r.example/app\n    range: '>=1 <2'\n"
        "registries:\n  r.example: {username: bob, password_env: MIRROR_PW}\n"
        "  127.0.0.1:5000: {insecure: true}\n"
    )
    [image] = parsed.images
    assert tags.select_tags(["0.9", "1.0", "1.5", "2.0", "x"], version_range=image.version_range) == [
        "1.0",
        "1.5",
    ]
    assert parsed.registries["r.example"].password == "pw-from-env"
    assert "pw-from-env" not in repr(parsed)
    assert parsed.registries["127.0.0.1:5000"].insecure
    with pytest.raises(ManifestError, match="range"):
        spec.parse("images:\n  - name: a/b\n    range: '>=banana'\n")


def test_spec_credentials_reach_a_basic_auth_registry(basic_registry: Registry, tmp_path: Path) -> None:
    built = images.build_sample_image()
    basic_registry.push_image("spec/creds", "1.4.0", built)
    basic_registry.push_image("spec/creds", "2.0.0", built)
    spec_file = tmp_path / "s.yaml"
    spec_file.write_text(
        f"images:\n  - name: {basic_registry.host}/spec/creds\n    range: '^1'\n"
        f"registries:\n  {basic_registry.host}: {{username: alice, password_env: MIRROR_PW}}\n"
    )
    dest = tmp_path / "m"
    env = {"MIRROR_PW": basic_registry.password or "", "DOCKER_CONFIG": str(tmp_path / "none")}
    ok("mirror", "-q", str(spec_file), str(dest), env=env)
    assert list(_catalog(dest)[f"{basic_registry.host}/spec/creds"]) == ["1.4.0"]
    proc = fails(
        "mirror", "-q", str(spec_file), str(tmp_path / "m2"), env={"DOCKER_CONFIG": str(tmp_path / "none")}
    )
    assert "MIRROR_PW" in proc.stderr
