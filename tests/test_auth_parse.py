"""Pure auth logic: WWW-Authenticate parsing, credential lookup, platform choice, Retry-After."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from occystrap.platform import Platform, choose
from occystrap.registry import auth
from occystrap.registry.retry import parse_retry_after


@pytest.mark.parametrize(
    ("header", "scheme", "params"),
    [
        (
            'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull"',
            "bearer",
            {
                "realm": "https://auth.docker.io/token",
                "service": "registry.docker.io",
                "scope": "repository:library/busybox:pull",
            },
        ),
        (
            'Bearer service="s", scope="repository:a/b:pull,push", realm="https://x/token"',
            "bearer",
            {"realm": "https://x/token", "service": "s", "scope": "repository:a/b:pull,push"},
        ),
        ("bearer realm=https://x/t,service=reg", "bearer", {"realm": "https://x/t", "service": "reg"}),
        ('Basic realm="Registry Realm"', "basic", {"realm": "Registry Realm"}),
        ('BASIC realm="with \\"quotes\\" inside"', "basic", {"realm": 'with "quotes" inside'}),
        (
            'Bearer   realm = "https://x/t" ,  service = "y"',
            "bearer",
            {"realm": "https://x/t", "service": "y"},
        ),
        (
            'Bearer realm="https://x/t",error="insufficient_scope"',
            "bearer",
            {"realm": "https://x/t", "error": "insufficient_scope"},
        ),
    ],
)
def test_parse_challenge(header: str, scheme: str, params: dict[str, str]) -> None:
    [challenge] = auth.parse_challenges(header)
    assert challenge.scheme == scheme
    assert challenge.params == params


def test_parse_several_challenges() -> None:
    got = auth.parse_challenges('Bearer realm="https://a/t",service="s", Basic realm="r"')
    assert [c.scheme for c in got] == ["bearer", "basic"]
    assert got[0].params == {"realm": "https://a/t", "service": "s"}
    assert got[1].realm == "r"


def test_empty_header() -> None:
    assert auth.parse_challenges("") == []


def test_credentials_repr_hides_password() -> None:
    assert "hunter2" not in repr(auth.Credentials("u", "hunter2"))


def _config(tmp_path: Path, doc: dict[str, object]) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(doc))
    return path


def test_docker_config_auths(tmp_path: Path) -> None:
    token = base64.b64encode(b"bob:pw:with:colons").decode()
    path = _config(
        tmp_path, {"auths": {"https://index.docker.io/v1/": {"auth": token}, "ghcr.io": {"auth": token}}}
    )
    hub = auth.from_docker_config("docker.io", path)
    assert hub == auth.Credentials("bob", "pw:with:colons")
    assert auth.from_docker_config("ghcr.io", path) == auth.Credentials("bob", "pw:with:colons")
    assert auth.from_docker_config("quay.io", path) is None


def _helper(tmp_path: Path, name: str, body: str) -> None:
    script = tmp_path / "bin" / f"docker-credential-{name}"
    script.parent.mkdir(exist_ok=True)
    script.write_text(f"#!/bin/sh\nread server\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def test_docker_config_cred_helpers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _helper(
        tmp_path, "fake", 'echo "{\\"Username\\": \\"helper-user\\", \\"Secret\\": \\"$server-secret\\"}"'
    )
    _helper(tmp_path, "store", 'echo "{\\"Username\\": \\"store-user\\", \\"Secret\\": \\"s\\"}"')
    _helper(tmp_path, "none", "echo 'credentials not found' >&2; exit 1")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    path = _config(
        tmp_path,
        {"credHelpers": {"ghcr.io": "fake", "quay.io": "none"}, "credsStore": "store"},
    )
    assert auth.from_docker_config("ghcr.io", path) == auth.Credentials("helper-user", "ghcr.io-secret")
    assert auth.from_docker_config("quay.io", path) is None
    assert auth.from_docker_config("example.com", path) == auth.Credentials("store-user", "s")


def test_resolution_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token = base64.b64encode(b"cfg:cfgpw").decode()
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    _config(tmp_path, {"auths": {"r.example": {"auth": token}}})
    monkeypatch.delenv("OCCYSTRAP_USERNAME", raising=False)
    assert auth.resolve_credentials("r.example") == auth.Credentials("cfg", "cfgpw")
    monkeypatch.setenv("OCCYSTRAP_USERNAME", "env")
    monkeypatch.setenv("OCCYSTRAP_PASSWORD", "envpw")
    assert auth.resolve_credentials("r.example") == auth.Credentials("env", "envpw")
    assert auth.resolve_credentials("r.example", "opt", "optpw") == auth.Credentials("opt", "optpw")


@pytest.mark.parametrize(
    ("available", "wanted", "chosen"),
    [
        (["linux/amd64", "linux/arm64/v8"], "linux/amd64", "linux/amd64"),
        (["linux/amd64", "linux/arm64/v8"], "linux/arm64", "linux/arm64/v8"),
        (["linux/amd64", "linux/arm64"], "linux/arm64/v8", "linux/arm64"),
        (["linux/arm/v6", "linux/arm/v7"], "linux/arm/v7", "linux/arm/v7"),
        (["linux/arm/v6", "linux/arm64"], "linux/arm/v7", "linux/arm/v6"),
        (["linux/arm/v7"], "linux/arm/v6", None),
        (["linux/amd64", "windows/amd64"], "windows/amd64", "windows/amd64"),
        (["linux/s390x"], "linux/amd64", None),
        (["linux/arm/v7", "linux/arm"], "linux/arm/v7", "linux/arm/v7"),
    ],
)
def test_choose_platform(available: list[str], wanted: str, chosen: str | None) -> None:
    candidates = [Platform.parse(p) for p in available]
    got = choose(candidates, Platform.parse(wanted))
    assert (available[got] if got is not None else None) == chosen


def test_retry_after() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("garbage") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
