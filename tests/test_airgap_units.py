"""Pure parts of the airgap loop, table-driven, no event loop: the lock format, a lock against
a spec, what moved between locks, the delta description, merged.without and what prune keeps."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from occystrap.delta import meta
from occystrap.errors import ManifestError
from occystrap.layout import merged
from occystrap.mirror import keep, lockcheck, lockfile, spec
from occystrap.reference import parse

A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64
C = "sha256:" + "c" * 64
APP = "reg.example/team/app"
LOCK: lockfile.Lock = {APP: {"v2": {"linux/amd64": B}, "v1": {"linux/arm64/v8": C, "linux/amd64": A}}}


def test_lock_bytes_lead_with_the_version_and_sort_everything() -> None:
    text = lockfile.lock_bytes(LOCK).decode()
    assert text.splitlines()[:3] == ["{", '  "version": 2,', '  "images": {']
    assert text.index('"v1"') < text.index('"v2"') and text.index("linux/amd64") < text.index("linux/arm64")
    assert sum(1 for line in text.splitlines() if "sha256:" in line) == 3  # one digest per line
    assert lockfile.parse_lock(text.encode(), "l") == LOCK
    assert lockfile.lock_bytes(lockfile.parse_lock(text.encode(), "l")) == text.encode()


def test_lock_of_the_first_format_is_still_read() -> None:
    assert lockfile.parse_lock(json.dumps(LOCK).encode(), "old.lock") == LOCK


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"version": 3, "images": {}}, "format version 3 is not known"),
        ({"version": 2, "images": {}, "extra": 1}, "unknown key(s) extra"),
        ({"version": 2, "images": {APP: {"v1": {"linux/amd64": "nope"}}}}, "malformed"),
        ({APP: {"v1": {"index": A, "linux/amd64": B}}}, "no other platforms"),
        ({APP: {"v1": {"linux": A}}}, "os/arch"),
    ],
)
def test_bad_locks(doc: Any, message: str) -> None:
    with pytest.raises(ManifestError, match=re.escape(message)):
        lockfile.parse_lock(json.dumps(doc).encode(), "x.lock")


def _spec(text: str) -> spec.MirrorSpec:
    return spec.parse(text)


@pytest.mark.parametrize(
    ("spec_text", "keys", "want"),
    [
        (f"images:\n  - name: {APP}\n    tags: [v1, v2]\n", {APP: ["v1", "v2"]}, None),
        (f"images:\n  - name: {APP}\n    tags: [v1, v3]\n", {APP: ["v1", "v3"]},
         f"missing {APP}:v3; extra {APP}:v2"),
        (f"images:\n  - name: {APP}\n  - name: x.example/b\n", {APP: ["latest"], "x.example/b": ["latest"]},
         f"missing {APP}:latest, x.example/b (every tag); extra {APP}:v1, {APP}:v2"),
        ("images:\n  - name: x.example/b\n", {"x.example/b": ["latest"]},
         f"missing x.example/b (every tag); extra {APP} (every tag)"),
    ],
)  # fmt: skip
def test_lock_against_a_spec(spec_text: str, keys: dict[str, list[str]], want: str | None) -> None:
    assert lockcheck.mismatch(_spec(spec_text), LOCK, keys) == want


def test_referrer_keys_are_extra_only_without_referrers() -> None:
    sig = "sha256-" + "a" * 64 + ".sig"
    lock = {APP: {"v1": {"linux/amd64": A}, sig: {"unknown/unknown": B}, C: {"unknown/unknown": C}}}
    plain = _spec(f"images:\n  - name: {APP}\n    tags: [v1]\n")
    assert lockcheck.mismatch(plain, lock, {APP: ["v1"]}) == f"extra {APP}:{sig}, {APP}@{C}"
    signed = _spec(f"referrers: true\nimages:\n  - name: {APP}\n    tags: [v1]\n")
    assert lockcheck.mismatch(signed, lock, {APP: ["v1"]}) is None


def test_moved_tags() -> None:
    new = {APP: {"v1": {"linux/amd64": B, "linux/arm64/v8": C}, "v3": {"index": A}}}
    lines = [m.line() for m in lockcheck.moved(LOCK, new)]
    assert lines == [
        f"moved {APP}:v1 (linux/amd64 {'a' * 12} -> {'b' * 12})",
        f"removed {APP}:v2 (linux/amd64 {'b' * 12})",
        f"added {APP}:v3 (index {'a' * 12})",
    ]
    assert lockcheck.moved(LOCK, LOCK) == []


def test_delta_description_round_trips_and_refuses_what_it_does_not_know() -> None:
    described = meta.DeltaMeta("v1.tar", A, (APP,), (meta.BaseBlob(meta.Digest.parse(B), 7),), C)
    data = described.to_bytes()
    assert meta.parse(data, "d") == described
    doc = json.loads(data)
    assert doc["docker_loadable"] is False and doc["base"]["blobs"] == [{"digest": B, "size": 7}]
    assert described.describe() == "base v1.tar, lock aaaaaaaaaaaa"
    for bad, message in (
        ({**doc, "occystrap_delta": 2}, "format 2"),
        ({**doc, "base": {"blobs": [{"digest": B}]}}, "needs a digest and a size"),
        ({**doc, "base": {"blobs": [{"digest": "sha256:x", "size": 1}]}}, "not a valid sha256"),
        ({**doc, "lock_digest": "nope"}, "not a digest"),
    ):
        with pytest.raises(ManifestError, match=re.escape(message)):
            meta.parse(json.dumps(bad).encode(), "d")


def _image_record(config: str, manifest: str, name: str) -> dict[str, Any]:
    return {"kind": "image", "manifest_digest": manifest, "config": config, "layers": [], "manifest": name}


def test_without_drops_names_and_keeps_docker_entries_still_used() -> None:
    v1, v2 = parse(f"{APP}:v1"), parse(f"{APP}:v2")
    arm = parse(f"{APP}@{C}")
    records = {
        "v1": _image_record("blobs/sha256/c1", A, "m1"),
        "v2": _image_record("blobs/sha256/c2", B, "m2"),
        C: _image_record("blobs/sha256/c2", C, "m3"),
    }
    shared = merged.Shared(
        {APP: records},
        [{"annotations": {"org.opencontainers.image.ref.name": str(r)}} for r in (v1, v2, arm)],
        [{"Config": "blobs/sha256/c1", "RepoTags": [v1.repo_tag]},
         {"Config": "blobs/sha256/c2", "RepoTags": [v2.repo_tag]}],
    )  # fmt: skip
    left = merged.without(shared, [v1, v2])
    assert list(left.images[APP]) == [C]
    assert [e["annotations"]["org.opencontainers.image.ref.name"] for e in left.index] == [str(arm)]
    # v2's Config is still used (by the digest entry): kept, untagged; v1's went with its tag.
    assert left.docker == [{"Config": "blobs/sha256/c2", "RepoTags": []}]
    assert merged.without(shared, [v1, v2, arm]).images == {}


def test_kept_entries() -> None:
    sig = "sha256-" + "a" * 64 + ".sig"
    images = {
        APP: {
            "v1": {"manifest_digest": A},
            "v2": {"manifest_digest": B},
            "v2-rc": {"manifest_digest": B},
            C: {"manifest_digest": C},
            sig: {"manifest_digest": "sha256:" + "d" * 64, "kind": "artifact"},
        },
        "x.example/other": {"latest": {"manifest_digest": "sha256:" + "e" * 64}},
    }
    by_spec = keep.Wanted(
        spec=_spec(f"images:\n  - name: {APP}\n    include: ['^v']\n    exclude: ['-rc']\n")
    )
    dir_lock = {APP: {"v2": {"linux/amd64": B, "linux/arm64/v8": C}}}
    held = {(name, key) for name, tags in images.items() for key in tags}

    def kept(wanted: keep.Wanted, lock: lockfile.Lock | None) -> set[tuple[str, str]]:
        return keep.kept(images, wanted, lock) & held

    # The other platform of a kept tag (from the lock) and the signature of a kept manifest stay.
    assert kept(by_spec, dir_lock) == {(APP, "v1"), (APP, "v2"), (APP, C), (APP, sig)}
    assert kept(by_spec, None) == {(APP, "v1"), (APP, "v2"), (APP, sig)}
    assert kept(keep.Wanted(refs=(parse("x.example/other"),)), dir_lock) == {("x.example/other", "latest")}
    asked = keep.Wanted(refs=(parse(f"{APP}:v9"),), lock={APP: {"v1": {"linux/amd64": A}}})
    assert keep.not_held(images, asked) == [f"{APP}:v9"]
