"""Registry mirrors, end to end: two real registries, the mirror holding some of the images
(a pull-through cache, simulated by pushing there), mirrors named in the user's config file
or a mirror spec; what comes from where is checked in both registries' access logs."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from occystrap.mirror.spec import parse as parse_spec
from occystrap.userconfig import config_path
from tests.helpers import fails, occystrap, ok
from tests.support import images
from tests.support.faultproxy import Fault, FaultProxy
from tests.support.images import BuiltImage, Entry
from tests.support.registry import PASSWORD, USERNAME, Registry, free_port

REPO = "team/app"
BLOBS = 3  # an image's two layers and its config


def _images() -> tuple[BuiltImage, BuiltImage]:
    """v1 and v2 share their base layer; each has a layer of its own."""
    base = [Entry.file("etc/base", b"the shared base layer\n" * 50)]
    v1 = images.build_image([base, [Entry.file("app", b"version one\n")]], fmt="oci")
    v2 = images.build_image([base, [Entry.file("app", b"version two\n")]], fmt="oci")
    return v1, v2


def _env(tmp_path: Path, config: str | None = None, **extra: str) -> dict[str, str]:
    """A config file (or none) under a private XDG_CONFIG_HOME; no host credentials."""
    home = tmp_path / "xdg"
    if config is not None:
        (home / "occystrap").mkdir(parents=True, exist_ok=True)
        (home / "occystrap" / "config.yaml").write_text(config)
    return {"XDG_CONFIG_HOME": str(home), "DOCKER_CONFIG": str(tmp_path / "no-docker"), **extra}


def _mirrors(origin: Registry, *entries: str) -> str:
    listed = ", ".join(f"'{e}'" for e in entries)
    return f"registries:\n  '{origin.host}':\n    mirrors: [{listed}]\n"


def _served(registry: Registry, what: str, method: str = "GET") -> int:
    """Requests for `what` the registry answered with content."""
    return sum(
        1 for r in registry.access_log() if what in r.path and r.method == method and r.status in (200, 206)
    )


def _json_lines(stderr: str) -> list[dict[str, object]]:
    return [json.loads(l) for l in stderr.splitlines() if l.startswith("{")]


def _pair(registry_factory: Callable[..., Registry]) -> tuple[Registry, Registry, BuiltImage, BuiltImage]:
    """An origin with v1 and v2, and a mirror holding only v1 (under the prefix `hub`)."""
    origin, mirror = registry_factory(), registry_factory()
    v1, v2 = _images()
    origin.push_image(REPO, "v1", v1)
    origin.push_image(REPO, "v2", v2)
    mirror.push_image(f"hub/{REPO}", "v1", v1)
    return origin, mirror, v1, v2


# --- fetch: the mirror first, the registry for what the mirror lacks -------------------------


def test_fetch_takes_what_the_mirror_holds_and_the_rest_from_the_registry(
    registry_factory: Callable[..., Registry], tmp_path: Path
) -> None:
    origin, mirror, _, v2 = _pair(registry_factory)
    env = _env(tmp_path, _mirrors(origin, f"{mirror.host}/hub"))
    where = f"{mirror.host}/hub"

    proc = _fetch(f"{origin.host}/{REPO}", "v1", str(tmp_path / "1.tar"), env)
    ok("verify", str(tmp_path / "1.tar"))
    assert _served(origin, "/manifests/") == 0 and _served(origin, "/blobs/") == 0
    assert _served(mirror, f"/v2/hub/{REPO}/manifests/v1") == 1
    fetched = [l for l in proc.stderr.splitlines() if l.startswith("fetched ")]
    assert len(fetched) == 2 and all(l.endswith(f" from {where} (mirror)") for l in fetched)
    assert f"; from {where} (mirror) 2 blobs (" in proc.stderr.splitlines()[-1]

    # v2: the mirror lacks the tag (404), so the manifest comes from the registry; the shared
    # base layer still comes from the mirror, the layer of v2's own from the registry.
    proc = _fetch(f"{origin.host}/{REPO}", "v2", str(tmp_path / "2.tar"), env, progress="json")
    ok("verify", str(tmp_path / "2.tar"))
    events = _json_lines(proc.stderr)
    sources = {e["digest"]: (e["source"], e["mirror"]) for e in events if e["event"] == "BlobSource"}
    assert sources[v2.layers[0].digest] == (where, True)
    assert sources[v2.layers[1].digest] == (origin.host, False)
    summary = events[-1]
    assert summary["event"] == "Summary" and summary["warnings"] == 0
    assert summary["sources"] == {
        where: {"blobs": 1, "bytes": v2.layers[0].size, "mirror": True},
        origin.host: {"blobs": 1, "bytes": v2.layers[1].size, "mirror": False},
    }
    assert _served(origin, f"/blobs/{v2.layers[0].digest}") == 0
    assert _served(origin, f"/blobs/{v2.layers[1].digest}") == 1


def test_mirrors_are_tried_in_order_and_a_dead_one_is_set_aside(
    registry_factory: Callable[..., Registry], tmp_path: Path
) -> None:
    origin, mirror, v1, _ = _pair(registry_factory)
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    env = _env(tmp_path, _mirrors(origin, dead, f"{mirror.host}/hub"))
    proc = _fetch(f"{origin.host}/{REPO}", "v1", str(tmp_path / "1.tar"), env)
    warnings = [l for l in proc.stderr.splitlines() if l.startswith("warning: ")]
    assert (
        len(warnings) == 1
        and f"mirror {dead} failed, {origin.host} itself is used from now on" in warnings[0]
    )
    assert _served(mirror, "/blobs/") == BLOBS and _served(origin, "/blobs/") == 0

    # Only a dead mirror: everything from the registry, one warning, success.
    env = _env(tmp_path / "b", _mirrors(origin, dead))
    proc = _fetch(f"{origin.host}/{REPO}", "v1", str(tmp_path / "2.tar"), env)
    assert _served(origin, "/blobs/") == BLOBS
    assert proc.stderr.splitlines()[-1].endswith(f"1 warning; from {origin.host} 2 blobs ({_size(v1)})")


def _fetch(
    source: str, tag: str, out: str, env: dict[str, str], progress: str = "plain", extra: Sequence[str] = ()
) -> subprocess.CompletedProcess[str]:
    """`occystrap fetch-to-tarfile` of source:tag with the test's registries.conf."""
    return ok("fetch-to-tarfile", "--progress", progress, *extra, source, tag, out, env=env)


def _size(image: BuiltImage) -> str:
    from occystrap.ui.units import human

    return human(sum(l.size for l in image.layers))


def test_a_blob_cut_short_by_the_mirror_carries_on_from_the_registry(
    registry_factory: Callable[..., Registry], tmp_path: Path
) -> None:
    origin, mirror = registry_factory(), registry_factory()
    big = images.build_image([[Entry.file("big", os.urandom(600_000))]], fmt="oci", compression="none")
    origin.push_image(REPO, "v1", big)
    mirror.push_image(REPO, "v1", big)
    layer = big.layers[0]
    with FaultProxy(mirror.url) as cutting, FaultProxy(origin.url) as watching:
        cutting.add(Fault(match=layer.digest, drop_after=100_000, times=None))
        env = _env(tmp_path, f"registries:\n  '{watching.host}':\n    mirrors: ['{cutting.host}']\n")
        proc = _fetch(f"{watching.host}/{REPO}", "v1", str(tmp_path / "out.tar"), env)
        ok("verify", str(tmp_path / "out.tar"))
        cut_at = sum(s.body_bytes for s in cutting.seen(layer.digest, "GET"))
        assert 0 < cut_at < layer.size
        assert watching.ranges(layer.digest) == [f"bytes={cut_at}-"]  # exactly where the mirror stopped
        assert f"warning: mirror {cutting.host} failed" in proc.stderr


# --- credentials stay with their host ---------------------------------------------------------


def test_no_credentials_go_to_a_mirror_unless_configured_for_its_host(
    registry_factory: Callable[..., Registry], tmp_path: Path
) -> None:
    # Both want the same user and password: a mirror that got the registry's would serve.
    origin, mirror = registry_factory("basic"), registry_factory("basic")
    v1, _ = _images()
    origin.push_image(REPO, "v1", v1)
    mirror.push_image(REPO, "v1", v1)
    creds = ["--username", USERNAME, "--password", PASSWORD]
    env = _env(tmp_path, _mirrors(origin, mirror.host))
    seeded = len(mirror.access_log())
    proc = _fetch(f"{origin.host}/{REPO}", "v1", str(tmp_path / "1.tar"), env, extra=creds)
    [warning] = [l for l in proc.stderr.splitlines() if l.startswith("warning: ")]
    assert f"mirror {mirror.host} failed" in warning and f"{mirror.host} requires credentials" in warning
    assert f"only the credentials configured for {mirror.host} itself" in warning
    assert _served(mirror, "/manifests/") == 0 and _served(mirror, "/blobs/") == 0
    asked = mirror.access_log()[seeded:]
    assert asked and all(r.status == 401 for r in asked if r.path.startswith(f"/v2/{REPO}/"))
    assert _served(origin, "/blobs/") == BLOBS

    # Configured for the mirror's host (a password from the environment): the mirror serves.
    config = _mirrors(origin, mirror.host) + (
        f"  '{mirror.host}': {{username: {USERNAME}, password_env: MIRROR_PASSWORD}}\n"
    )
    env = _env(tmp_path / "b", config, MIRROR_PASSWORD=PASSWORD)
    proc = _fetch(f"{origin.host}/{REPO}", "v1", str(tmp_path / "2.tar"), env, extra=creds)
    assert "warning:" not in proc.stderr
    assert _served(mirror, "/blobs/") == BLOBS and _served(origin, "/blobs/") == BLOBS  # nothing more
    assert PASSWORD not in proc.stderr + proc.stdout


# --- every command, and the mirror spec -------------------------------------------------------


def test_list_tags_and_inspect_ask_the_mirror_first(
    registry_factory: Callable[..., Registry], tmp_path: Path
) -> None:
    origin, mirror, v1, _ = _pair(registry_factory)
    env = _env(tmp_path, _mirrors(origin, f"{mirror.host}/hub"))
    # A pull-through cache lists what it holds; its word is taken, as for manifests.
    assert ok("list-tags", f"{origin.host}/{REPO}", env=env).stdout == "v1\n"
    assert _served(origin, "/tags/list") == 0
    # A repository the mirror does not hold at all: the registry's list.
    origin.push_image("team/other", "x1", v1)
    assert ok("list-tags", f"{origin.host}/team/other", env=env).stdout == "x1\n"
    doc = json.loads(ok("inspect", "--json", f"{origin.host}/{REPO}:v1", env=env).stdout)
    assert doc["digest"] == v1.manifest_digest
    assert _served(origin, "/manifests/") == 0


def test_mirror_command_uses_the_specs_mirrors_over_the_config_file(
    registry_factory: Callable[..., Registry], tmp_path: Path
) -> None:
    origin, mirror, v1, v2 = _pair(registry_factory)
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        f"images:\n  - name: {origin.host}/{REPO}\n    tags: [v1, v2]\n"
        + _mirrors(origin, f"{mirror.host}/hub")
    )
    dead = f"127.0.0.1:{free_port()}"
    env = _env(tmp_path, _mirrors(origin, dead))  # the file's mirror is overridden by the spec's
    dest = tmp_path / "mirror"
    proc = ok("mirror", "--progress", "plain", str(spec), str(dest), env=env)
    assert "warning:" not in proc.stderr
    ok("verify", str(dest))
    catalog = json.loads((dest / "catalog.json").read_text())["images"][f"{origin.host}/{REPO}"]
    assert {t: r["manifest_digest"] for t, r in catalog.items()} == {
        "v1": v1.manifest_digest,
        "v2": v2.manifest_digest,
    }
    assert _served(origin, "/manifests/v1") == 0 and _served(origin, "/manifests/v2") == 1
    assert _served(origin, f"/blobs/{v2.layers[1].digest}") == 1
    assert (
        _served(origin, f"/blobs/{v1.layers[1].digest}") == 0
        and _served(origin, f"/blobs/{v2.layers[0].digest}") == 0
    )


# --- configuration ----------------------------------------------------------------------------


def test_config_file_location() -> None:
    assert config_path({"XDG_CONFIG_HOME": "/x", "HOME": "/h"}) == Path("/x/occystrap/config.yaml")
    assert config_path({"HOME": "/h"}) == Path("/h/.config/occystrap/config.yaml")
    assert config_path({"XDG_CONFIG_HOME": "", "HOME": "/h"}) == Path("/h/.config/occystrap/config.yaml")


def test_mirror_entries_are_normalized() -> None:
    spec = parse_spec(
        "images: [busybox]\nregistries:\n  index.docker.io:\n"
        "    mirrors: [mirror.example:5000, 'https://mirror.gcr.io', 10.0.0.5:5000/hub/,"
        " mirror.example:5000]\n"
    )
    assert spec.registries["docker.io"].mirrors == (
        "mirror.example:5000",
        "mirror.gcr.io",
        "10.0.0.5:5000/hub",
    )


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("registries:\n  docker.io: {mirrors: 5}\n", "'mirrors' must be a list of HOST[:PORT][/PREFIX]"),
        ("registries:\n  docker.io: {mirrors: ['not a host']}\n", "mirrors:"),
        ("registries:\n  docker.io: {mirror: [m.example]}\n", "unknown key(s) mirror"),
        ("images: [busybox]\n", "expected a mapping with only 'registries' at the top"),
        ("registries: [\n", "not valid YAML"),
    ],
)
def test_a_bad_config_file_is_one_line_naming_it(tmp_path: Path, config: str, message: str) -> None:
    proc = fails("list-tags", "127.0.0.1:1/x", env=_env(tmp_path, config))
    [line] = [l for l in proc.stderr.splitlines() if l.startswith("occystrap: error:")]
    assert message in line and str(tmp_path / "xdg" / "occystrap" / "config.yaml") in line
    assert proc.returncode == 7


def test_an_empty_config_file_is_no_config(registry: Registry, tmp_path: Path) -> None:
    proc = occystrap("list-tags", f"{registry.host}/absent/repo", env=_env(tmp_path, ""))
    assert proc.returncode == 3  # got as far as the registry


def test_a_broken_config_file_does_not_stop_a_local_command(tmp_path: Path) -> None:
    v1, _ = _images()
    tarball = images.write_docker_archive(tmp_path / "in.tar", v1, ["team/app:v1"])
    env = _env(tmp_path, "registries: [\n")
    ok("tarfile-to-extracted", "-q", str(tarball), str(tmp_path / "out"), env=env)
    ok("verify", str(tmp_path / "out"), env=env)
