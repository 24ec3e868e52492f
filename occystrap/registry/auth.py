"""Authentication logic with no I/O: challenges, scopes, credential lookup."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from occystrap.errors import AuthError

_SCHEME = re.compile(r"\s*,?\s*([A-Za-z][A-Za-z0-9_-]*)(?:\s+|(?=,)|$)")
_PARAM = re.compile(r'\s*([A-Za-z0-9_.-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]*))\s*(?:,|$)')


@dataclass(frozen=True)
class Challenge:
    scheme: str  # lower case: "basic" or "bearer"
    params: dict[str, str]

    @property
    def realm(self) -> str | None:
        return self.params.get("realm")


def parse_challenges(header: str) -> list[Challenge]:
    """Parse a WWW-Authenticate header value into its challenges.

    Parameters may come in any order, quoted or not, with escaped quotes, and
    several challenges may share one header.
    """
    challenges: list[Challenge] = []
    pos = 0
    text = header.strip()
    while pos < len(text):
        # A challenge may have no parameters ("Negotiate, Bearer realm=..."): a comma may end the scheme.
        m = _SCHEME.match(text, pos)
        if not m:
            break
        scheme = m.group(1).lower()
        pos = m.end()
        params: dict[str, str] = {}
        while pos < len(text):
            pm = _PARAM.match(text, pos)
            if not pm:
                break
            quoted = pm.group(2)
            value = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else pm.group(3)
            params[pm.group(1).lower()] = value
            pos = pm.end()
        challenges.append(Challenge(scheme, params))
    return challenges


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    @property
    def identity_token(self) -> str | None:
        """An OAuth2 refresh token (docker's `identitytoken`, or a helper's `<token>` user):
        exchanged for access tokens with the refresh-token grant, never sent as Basic auth."""
        return self.password if self.username == IDENTITY_USER else None

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def __repr__(self) -> str:
        # Never let a password reach a log or traceback through repr().
        return f"Credentials(username={self.username!r}, password=<hidden>)"


# The user name docker and credential helpers give an identity token (OAuth2 refresh token).
IDENTITY_USER = "<token>"


def _config_keys(registry: str) -> list[str]:
    if registry == "docker.io":
        return ["https://index.docker.io/v1/", "index.docker.io", "docker.io", "registry-1.docker.io"]
    return [registry, f"https://{registry}", f"http://{registry}", f"https://{registry}/v1/"]


def docker_config_path() -> Path:
    base = os.environ.get("DOCKER_CONFIG")
    return Path(base) / "config.json" if base else Path.home() / ".docker" / "config.json"


def _helper(name: str, server: str) -> Credentials | None:
    try:
        proc = subprocess.run(
            [f"docker-credential-{name}", "get"],
            input=server.encode(),
            capture_output=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AuthError(f"credential helper docker-credential-{name} failed: {exc}") from None
    if proc.returncode != 0:
        # Helpers answer "credentials not found" with a non-zero exit: that means anonymous.
        return None
    try:
        doc = json.loads(proc.stdout)
        return Credentials(doc["Username"], doc["Secret"])
    except (ValueError, KeyError, TypeError):
        raise AuthError(f"credential helper docker-credential-{name} gave malformed output") from None


def from_docker_config(registry: str, path: Path | None = None) -> Credentials | None:
    """Look credentials up as docker does: credHelpers, then auths, then credsStore."""
    path = path or docker_config_path()
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise AuthError(f"cannot read docker config {path}: {exc}") from None
    if not isinstance(doc, dict):
        return None
    keys = _config_keys(registry)
    helpers = doc.get("credHelpers") or {}
    for key in keys:
        if key in helpers:
            return _helper(helpers[key], key)
    auths = doc.get("auths") or {}
    for key in keys:
        entry = auths.get(key)
        if not isinstance(entry, dict):
            continue
        if isinstance(entry.get("identitytoken"), str) and entry["identitytoken"]:
            return Credentials(IDENTITY_USER, entry["identitytoken"])
        if entry.get("auth"):
            try:
                user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                raise AuthError(f"malformed auth entry for {key} in {path}") from None
            return Credentials(user, password)
        if entry.get("username"):
            return Credentials(entry["username"], entry.get("password", ""))
    store = doc.get("credsStore")
    if store:
        return _helper(store, keys[0])
    return None


def resolve_credentials(
    registry: str, username: str | None = None, password: str | None = None
) -> Credentials | None:
    """Options first, then OCCYSTRAP_USERNAME/PASSWORD, then docker's config.json."""
    if username is not None:
        return Credentials(username, password or "")
    env_user = os.environ.get("OCCYSTRAP_USERNAME")
    if env_user:
        return Credentials(env_user, os.environ.get("OCCYSTRAP_PASSWORD", ""))
    return from_docker_config(registry)
