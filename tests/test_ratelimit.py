"""Pull quotas, end to end: the fault proxy imposes Docker Hub's quota (manifest GETs counted,
HEADs free, 429 once spent) in front of the real registry, and counts what the CLI spends.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import error_line, fails, ok, read_lock
from tests.support import images
from tests.support.faultproxy import FaultProxy
from tests.support.images import BuiltImage, Entry
from tests.support.ratelimit import RateLimit
from tests.support.registry import Registry

REPO = "quota/app"
MULTI = "quota/multi"
TAGS = [f"v{i}" for i in range(6)]


@dataclass
class Pushed:
    registry: Registry
    tags: dict[str, BuiltImage]


def _tiny(text: str, arch: str = "amd64", variant: str | None = None) -> BuiltImage:
    return images.build_image(
        [[Entry.file("id", f"{text}\n".encode())]], fmt="oci", arch=arch, variant=variant
    )


@pytest.fixture(scope="module")
def pushed(registry: Registry) -> Pushed:
    """Six one-manifest tags of quota/app, and quota/app:multi and quota/multi:v1 as indexes."""
    tags = {tag: _tiny(f"quota {tag}") for tag in TAGS}
    for tag, image in tags.items():
        registry.push_image(REPO, tag, image)
    index = images.build_index([_tiny("multi amd64"), _tiny("multi arm64", "arm64", "v8")])
    registry.push_index(REPO, "multi", index)
    registry.push_index(MULTI, "v1", index)
    return Pushed(registry, tags)


@pytest.fixture
def quota_proxy(pushed: Pushed) -> Iterator[FaultProxy]:
    with FaultProxy(pushed.registry.url) as proxy:
        yield proxy


def _env(tmp_path: Path) -> dict[str, str]:
    return {"DOCKER_CONFIG": str(tmp_path / "no-docker"), "XDG_CONFIG_HOME": str(tmp_path / "no-config")}


def _json_lines(stderr: str) -> list[dict[str, object]]:
    return [json.loads(l) for l in stderr.splitlines() if l.startswith("{")]


def _catalog(dest: Path) -> dict[str, dict[str, object]]:
    return json.loads((dest / "catalog.json").read_text())["images"]  # type: ignore[no-any-return]


def _manifest_gets(proxy: FaultProxy) -> int:
    return proxy.count("/manifests/", "GET")


# --- the ratelimit command ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("style", "line"),
    [
        ("dockerhub", "76 of 100 left, window 6h (charged to 127.0.0.1)"),
        ("ietf", "76 of 100 left, window 6h, refills in 2m"),
    ],
)
def test_ratelimit_reads_the_quota_with_one_head(
    quota_proxy: FaultProxy, tmp_path: Path, style: str, line: str
) -> None:
    quota = RateLimit(limit=100, remaining=76, style=style, reset=120)  # type: ignore[arg-type]
    quota_proxy.set_rate_limit(quota)
    proc = ok("ratelimit", f"{quota_proxy.host}/{REPO}:v0", env=_env(tmp_path))
    assert proc.stdout == f"{quota_proxy.host}: {line}\n"
    assert proc.stderr == ""
    proc = ok("ratelimit", "--json", f"{quota_proxy.host}/{REPO}:v0", env=_env(tmp_path))
    doc = json.loads(proc.stdout)
    assert (doc["registry"], doc["limit"], doc["remaining"], doc["window"]) == (
        quota_proxy.host,
        100,
        76,
        21600,
    )
    assert quota.counted == 0 and _manifest_gets(quota_proxy) == 0
    assert quota_proxy.count("/manifests/v0", "HEAD") == 2


def test_ratelimit_of_a_registry_without_a_quota(pushed: Pushed, tmp_path: Path) -> None:
    proc = ok("ratelimit", f"{pushed.registry.host}/{REPO}:v0", env=_env(tmp_path))
    assert proc.stdout == f"{pushed.registry.host}: no pull rate limit reported\n"
    proc = fails("ratelimit", f"{pushed.registry.host}/quota/absent", env=_env(tmp_path))
    assert proc.returncode == 3


# --- what a fetch reports, and a spent quota ---------------------------------------------------


def test_fetch_reports_the_quota_in_events_lines_and_summary(quota_proxy: FaultProxy, tmp_path: Path) -> None:
    quota_proxy.set_rate_limit(RateLimit(limit=100, remaining=50))
    ref = f"{quota_proxy.host}/{REPO}"
    proc = ok(
        "fetch-to-tarfile", "--progress", "json", ref, "v0", str(tmp_path / "a.tar"), env=_env(tmp_path)
    )
    events = _json_lines(proc.stderr)
    quotas = [e for e in events if e["event"] == "PullQuota"]
    assert quotas[-1] == {**quotas[-1], "registry": quota_proxy.host, "remaining": 49, "limit": 100,
                          "window": 21600, "reset": None}  # fmt: skip
    summary = events[-1]
    assert summary["event"] == "Summary"
    assert summary["pull_quota"] == {quota_proxy.host: {"remaining": 49, "limit": 100, "window": 21600,
                                                        "reset": None}}  # fmt: skip
    proc = ok(
        "fetch-to-tarfile", "--progress", "plain", ref, "v1", str(tmp_path / "b.tar"), env=_env(tmp_path)
    )
    assert f"pull quota of {quota_proxy.host}: 48 of 100 left, window 6h\n" in proc.stderr
    assert proc.stderr.splitlines()[-1].endswith(
        f"; pull quota of {quota_proxy.host}: 48 of 100 left, window 6h"
    )


def test_a_spent_quota_stops_at_once_with_one_line(quota_proxy: FaultProxy, tmp_path: Path) -> None:
    quota = RateLimit(limit=100, remaining=0)
    quota_proxy.set_rate_limit(quota)
    out = tmp_path / "out.tar"
    proc = fails("fetch-to-tarfile", f"{quota_proxy.host}/{REPO}", "v0", str(out), env=_env(tmp_path))
    assert proc.returncode == 5
    line = error_line(proc.stderr)
    assert f"{quota_proxy.host}: pull rate limit reached (0 of 100 left, window 6h)" in line
    assert "it refills within 6h" in line and "run the same command again" in line.lower()
    assert quota.refused == 1  # no retries against a spent quota: they would only die later
    assert not out.exists()


# --- mirror: HEAD for unchanged tags, and the reserve ------------------------------------------


def _four_tags_and_an_index(quota_proxy: FaultProxy, tmp_path: Path) -> tuple[RateLimit, str, Path]:
    """A quota of 100 pulls, and a spec of four tags of quota/app (multi: one platform of an
    index) and quota/multi:v1 whole."""
    quota = RateLimit(limit=100)
    quota_proxy.set_rate_limit(quota)
    host = quota_proxy.host
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        f"images:\n  - name: {host}/{REPO}\n    tags: [v0, v1, v2, multi]\n"
        f"  - name: {host}/{MULTI}\n    tags: [v1]\n    platforms: all\n"
    )
    return quota, host, spec


def test_a_rerun_of_an_up_to_date_mirror_spends_no_quota(
    pushed: Pushed, quota_proxy: FaultProxy, tmp_path: Path
) -> None:
    quota, host, spec = _four_tags_and_an_index(quota_proxy, tmp_path)
    dest = tmp_path / "mirror"
    ok("mirror", "-q", str(spec), str(dest), env=_env(tmp_path))
    first = quota.counted
    assert first >= 5  # every tag's manifest once, and the indexes' children

    quota_proxy.reset_counts()
    proc = ok("mirror", "--progress", "plain", str(spec), str(dest), env=_env(tmp_path))
    assert quota.counted == first, "an up-to-date mirror spent pulls"
    assert _manifest_gets(quota_proxy) == 0 and quota_proxy.count("/blobs/", "GET") == 0
    assert quota_proxy.count("/manifests/", "HEAD") == 5  # one free HEAD per tag
    assert f"{host}/{REPO}: 4 unchanged\n" in proc.stderr and f"{host}/{MULTI}: 1 unchanged\n" in proc.stderr
    ok("verify", str(dest))

    # A tag that moved costs its own pull, and only that.
    pushed.registry.push_image(REPO, "v0", pushed.tags["v5"])
    try:
        proc = ok("mirror", "--progress", "plain", str(spec), str(dest), env=_env(tmp_path))
        assert quota.counted == first + 1
        assert f"{host}/{REPO}: 1 updated (v0), 3 unchanged\n" in proc.stderr
        assert _catalog(dest)[f"{host}/{REPO}"]["v0"]["manifest_digest"] == pushed.tags["v5"].manifest_digest
    finally:
        pushed.registry.push_image(REPO, "v0", pushed.tags["v0"])


def test_a_rerun_of_an_up_to_date_mirror_into_a_registry_spends_no_quota(
    pushed: Pushed, quota_proxy: FaultProxy, registry_factory: Callable[..., Registry], tmp_path: Path
) -> None:
    """The source is HEADed; the manifests the plan needs are read from the destination."""
    quota, host, spec = _four_tags_and_an_index(quota_proxy, tmp_path)
    dest = f"docker://{registry_factory().host}/site"
    ok("mirror", "-q", str(spec), dest, env=_env(tmp_path))
    first = quota.counted
    assert first >= 6

    quota_proxy.reset_counts()
    proc = ok("mirror", "--progress", "plain", str(spec), dest, env=_env(tmp_path))
    # The source is sent one free HEAD per tag and nothing else (configs come from DEST too),
    # but for the index a single platform was taken from: DEST holds its platform's manifest
    # (read from there), not the index the tag names.
    assert quota_proxy.count("/manifests/", "HEAD") == 5
    assert quota.counted == first + 1 and _manifest_gets(quota_proxy) == 1
    assert quota_proxy.count("/blobs/", "GET") == 0
    assert f"{host}/{REPO}: 4 unchanged\n" in proc.stderr and f"{host}/{MULTI}: 1 unchanged\n" in proc.stderr

    # A tag that moved costs its own pull, and only that.
    pushed.registry.push_image(REPO, "v0", pushed.tags["v5"])
    try:
        proc = ok("mirror", "--progress", "plain", str(spec), dest, env=_env(tmp_path))
        assert quota.counted == first + 1 + 2
        assert f"{host}/{REPO}: 1 updated (v0), 3 unchanged\n" in proc.stderr
    finally:
        pushed.registry.push_image(REPO, "v0", pushed.tags["v0"])


def test_copying_again_what_the_destination_registry_holds_spends_no_quota(
    quota_proxy: FaultProxy, registry_factory: Callable[..., Registry], tmp_path: Path
) -> None:
    quota = RateLimit(limit=100)
    quota_proxy.set_rate_limit(quota)
    host, dest = quota_proxy.host, registry_factory().host
    for args in (["v1", f"{dest}/copied/app:v1"], ["multi", f"{dest}/copied/app:multi", "--all"]):
        tag, target, *flags = args
        copy = ["copy", "-q", *flags, f"docker://{host}/{REPO}:{tag}", f"docker://{target}"]
        ok(*copy, env=_env(tmp_path))
        first = quota.counted
        quota_proxy.reset_counts()
        ok(*copy, env=_env(tmp_path))
        assert quota.counted == first, f"copying {tag} again spent pulls"
        assert _manifest_gets(quota_proxy) == 0 and quota_proxy.count("/blobs/", "GET") == 0
    assert quota.counted == 1 + 3  # v1, then multi's index and its two platforms


@pytest.mark.parametrize(("style", "refill"), [("dockerhub", "it refills within 6h"),
                                               ("ietf", "it refills in 10m")])  # fmt: skip
def test_the_reserve_stops_cleanly_and_a_rerun_carries_on(
    pushed: Pushed, quota_proxy: FaultProxy, tmp_path: Path, style: str, refill: str
) -> None:
    quota = RateLimit(limit=5, style=style, reset=600)  # type: ignore[arg-type]
    quota_proxy.set_rate_limit(quota)
    host = quota_proxy.host
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"images:\n  - name: {host}/{REPO}\n    tags: [{', '.join(TAGS)}]\n")
    dest = tmp_path / "mirror"
    args = ["mirror", "--progress", "plain", "--rate-limit-reserve", "2", str(spec), str(dest)]
    proc = fails(*args, env=_env(tmp_path))
    assert proc.returncode == 5
    line = error_line(proc.stderr)
    assert f"{host}: stopped to keep a reserve of 2 pulls (2 of 5 left" in line and refill in line
    assert "run the same command again" in line
    assert (quota.left, quota.refused) == (2, 0)  # never below the reserve, never a 429
    mirrored = set(_catalog(dest)[f"{host}/{REPO}"])
    assert len(mirrored) == 3
    left = sorted(set(TAGS) - mirrored)
    assert f"(left: {', '.join(f'{host}/{REPO}:{t}' for t in left)})" in line
    ok("verify", str(dest))  # what was mirrored is whole
    assert set(read_lock(dest / "occystrap.lock")[f"{host}/{REPO}"]) == mirrored

    quota.refill()  # a new window
    proc = ok(*args, env=_env(tmp_path))
    assert quota.left == 2  # the three tags left, one pull each; the others only HEADs
    assert set(_catalog(dest)[f"{host}/{REPO}"]) == set(TAGS)
    assert f"{host}/{REPO}: 3 new ({', '.join(left)}), 3 unchanged\n" in proc.stderr
    assert set(read_lock(dest / "occystrap.lock")[f"{host}/{REPO}"]) == set(TAGS)
    ok("verify", str(dest))


def test_the_reserve_holds_a_bundle_back_whole(quota_proxy: FaultProxy, tmp_path: Path) -> None:
    """A bundle tarball is written whole: rather none than one missing the held-back tags."""
    quota_proxy.set_rate_limit(RateLimit(limit=3))
    bundle = tmp_path / "bundle.tar"
    images_args = [a for t in TAGS for a in ("--image", f"{quota_proxy.host}/{REPO}:{t}")]
    proc = fails("mirror", "--rate-limit-reserve", "1", *images_args, str(bundle), env=_env(tmp_path))
    assert proc.returncode == 5 and "reserve of 1 pull (" in error_line(proc.stderr)
    assert not bundle.exists()
