"""Identity tokens (docker login's OAuth2 refresh tokens) against the real token-auth registry.

They come from docker's config.json (`identitytoken`) or from a credential helper answering
the user name `<token>`; either way the token server's refresh-token grant turns them into
access tokens, and the identity token itself is never sent as Basic credentials.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from pathlib import Path

import pytest

from tests.helpers import fails, occystrap, ok
from tests.support import images
from tests.support.registry import USERNAME, Registry

REPO = "identity/app"
TAG = "v1"


@pytest.fixture(scope="module")
def pushed(token_registry: Registry) -> Registry:
    token_registry.push_image(REPO, TAG, images.build_sample_image(fmt="oci"))
    return token_registry


def _identity_token(registry: Registry) -> str:
    """A fresh refresh token the registry's token server knows, for alice."""
    assert registry.token_server is not None
    token = "idtok-" + secrets.token_urlsafe(16)
    registry.token_server.refresh_tokens[token] = USERNAME
    return token


def _env(tmp_path: Path, config: dict[str, object], helper_bin: Path | None = None) -> dict[str, str]:
    docker = tmp_path / "docker"
    docker.mkdir(exist_ok=True)
    (docker / "config.json").write_text(json.dumps(config))
    env = {
        "DOCKER_CONFIG": str(docker),
        "XDG_CONFIG_HOME": str(tmp_path / "no-config"),
        "OCCYSTRAP_PASSWORD": "",
    }
    if helper_bin is not None:
        env["PATH"] = f"{helper_bin}:{os.environ['PATH']}"
    return env


def _helper(tmp_path: Path, name: str, token: str) -> Path:
    """A docker-credential-NAME on PATH that answers `get` with the identity token, as
    docker-credential-ecr-login, -gcloud and desktop do for OAuth2 logins."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / f"docker-credential-{name}"
    script.write_text(
        "#!/bin/sh\n"
        '[ "$1" = get ] || exit 1\n'
        "read -r server\n"
        'printf \'{"ServerURL": "%s", "Username": "<token>", "Secret": "%s"}\\n\''
        f" \"$server\" '{token}'\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return bin_dir


def _grants(registry: Registry, since: int) -> list[tuple[str | None, str | None, int]]:
    assert registry.token_server is not None
    return [(r.grant_type, r.user, r.status) for r in registry.token_server.requests[since:]]


def _requests_so_far(registry: Registry) -> int:
    assert registry.token_server is not None
    return len(registry.token_server.requests)


@pytest.mark.parametrize("where", ["identitytoken", "credHelpers", "credsStore"])
def test_identity_token_is_exchanged_with_the_refresh_token_grant(
    pushed: Registry, tmp_path: Path, where: str
) -> None:
    token = _identity_token(pushed)
    helper_bin = None
    if where == "identitytoken":
        config: dict[str, object] = {"auths": {pushed.host: {"identitytoken": token}}}
    else:
        helper_bin = _helper(tmp_path, "x", token)
        config = {"credHelpers": {pushed.host: "x"}} if where == "credHelpers" else {"credsStore": "x"}
    since = _requests_so_far(pushed)
    out = tmp_path / "out.tar"
    proc = ok("fetch-to-tarfile", "-v", "--progress", "plain", f"{pushed.host}/{REPO}", TAG, str(out),
              env=_env(tmp_path, config, helper_bin))  # fmt: skip
    ok("verify", str(out))
    grants = _grants(pushed, since)
    assert grants and all(g == ("refresh_token", USERNAME, 200) for g in grants)
    assert token not in proc.stdout + proc.stderr


@pytest.mark.parametrize("where", ["identitytoken", "credHelpers"])
def test_a_wrong_identity_token_is_one_line_and_exit_4(pushed: Registry, tmp_path: Path, where: str) -> None:
    token = "idtok-unknown-" + secrets.token_urlsafe(8)  # the token server never issued it
    helper_bin = None
    if where == "identitytoken":
        config: dict[str, object] = {"auths": {pushed.host: {"identitytoken": token}}}
    else:
        helper_bin = _helper(tmp_path, "x", token)
        config = {"credHelpers": {pushed.host: "x"}}
    since = _requests_so_far(pushed)
    out = tmp_path / "out.tar"
    proc = fails("fetch-to-tarfile", f"{pushed.host}/{REPO}", TAG, str(out),
                 env=_env(tmp_path, config, helper_bin))  # fmt: skip
    assert proc.returncode == 4
    [line] = [l for l in proc.stderr.splitlines() if l.startswith("occystrap: error:")]
    assert "refused the identity token (HTTP 401)" in line and pushed.host in line
    assert token not in proc.stderr + proc.stdout
    assert _grants(pushed, since) == [("refresh_token", None, 401)]  # refused once, not retried
    assert not out.exists()


def test_an_identity_token_for_another_registry_is_not_used(pushed: Registry, tmp_path: Path) -> None:
    """Only the registry the config names gets the token: here it is anonymous, and refused."""
    token = _identity_token(pushed)
    config = {"auths": {"ghcr.io": {"identitytoken": token}}}
    since = _requests_so_far(pushed)
    proc = occystrap("inspect", f"{pushed.host}/{REPO}:{TAG}", env=_env(tmp_path, config))
    assert proc.returncode == 0  # the test token server lets anonymous users pull
    assert _grants(pushed, since) == [(None, None, 200)]  # the anonymous GET form, no grant
