"""Reference parsing, table-driven, as Docker parses names."""

from __future__ import annotations

import pytest

from occystrap import reference
from occystrap.errors import BadReferenceError

D = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("image", "tag", "registry", "repo", "want_tag", "digest", "familiar", "api_host"),
    [
        ("busybox", None, "docker.io", "library/busybox", "latest", None, "busybox", "registry-1.docker.io"),
        ("busybox", "1.36", "docker.io", "library/busybox", "1.36", None, "busybox", "registry-1.docker.io"),
        ("library/busybox", "latest", "docker.io", "library/busybox", "latest", None, "busybox", None),
        ("docker.io/library/busybox", "x", "docker.io", "library/busybox", "x", None, "busybox", None),
        ("index.docker.io/foo/bar", "1", "docker.io", "foo/bar", "1", None, "foo/bar", None),
        ("ghcr.io/org/app", "v1", "ghcr.io", "org/app", "v1", None, "ghcr.io/org/app", "ghcr.io"),
        ("127.0.0.1:5000/team/app", "v1", "127.0.0.1:5000", "team/app", "v1", None, None, "127.0.0.1:5000"),
        ("localhost/app", "v1", "localhost", "app", "v1", None, "localhost/app", None),
        ("localhost:5000/app:v2", None, "localhost:5000", "app", "v2", None, None, None),
        ("[::1]:5000/app", "v1", "[::1]:5000", "app", "v1", None, "[::1]:5000/app", None),
        ("busybox", D, "docker.io", "library/busybox", None, D, "busybox", None),
        (f"busybox@{D}", None, "docker.io", "library/busybox", None, D, None, None),
        (f"ghcr.io/org/app:v1@{D}", None, "ghcr.io", "org/app", "v1", D, None, None),
        ("quay.io/a/b/c", "latest", "quay.io", "a/b/c", "latest", None, "quay.io/a/b/c", None),
        (
            "my-registry.example.com:8443/x_y/z--w",
            "t",
            "my-registry.example.com:8443",
            "x_y/z--w",
            "t",
            None,
            None,
            None,
        ),
    ],
)
def test_parse(
    image: str,
    tag: str | None,
    registry: str,
    repo: str,
    want_tag: str | None,
    digest: str | None,
    familiar: str | None,
    api_host: str | None,
) -> None:
    ref = reference.parse(image, tag)
    assert ref.registry == registry
    assert ref.repository == repo
    assert ref.tag == want_tag
    assert ref.digest == digest
    if familiar is not None:
        assert ref.familiar_name == familiar
    if api_host is not None:
        assert ref.api_host == api_host


@pytest.mark.parametrize(
    ("image", "tag", "repo_tag"),
    [
        ("busybox", "latest", "busybox:latest"),
        ("library/busybox", "latest", "busybox:latest"),
        ("someone/tool", "2", "someone/tool:2"),
        ("ghcr.io/org/app", "v1", "ghcr.io/org/app:v1"),
        ("127.0.0.1:5000/team/app", "v1", "127.0.0.1:5000/team/app:v1"),
        ("busybox", D, None),
    ],
)
def test_repo_tag_keeps_full_familiar_name(image: str, tag: str, repo_tag: str | None) -> None:
    assert reference.parse(image, tag).repo_tag == repo_tag


def test_digest_reference_is_used_for_manifest_url() -> None:
    assert reference.parse("busybox", D).reference == D
    assert reference.parse(f"busybox:1@{D}").reference == D
    assert reference.parse("busybox", "1").reference == "1"


@pytest.mark.parametrize(
    ("image", "tag"),
    [
        ("", None),
        ("Busybox", None),
        ("busybox@sha256:xyz", None),
        ("busybox", "bad tag"),
        ("busybox:1", "2"),
        ("a//b", None),
        ("busybox", "sha256:" + "a" * 10),
        ("-bad/x", None),
        ("ex ample.com/x", None),
    ],
)
def test_rejects(image: str, tag: str | None) -> None:
    with pytest.raises(BadReferenceError):
        reference.parse(image, tag)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("localhost:5000", True),
        ("127.0.0.1:5000", True),
        ("127.3.4.5", True),
        ("[::1]:5000", True),
        ("128.0.0.1", False),
        ("docker.io", False),
        ("ghcr.io", False),
        ("10.0.0.1:5000", False),
    ],
)
def test_loopback_hosts_use_plain_http(host: str, loopback: bool) -> None:
    assert reference.is_loopback_host(host) is loopback
