"""Image references, parsed and normalized the way Docker does it."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from occystrap.errors import BadReferenceError

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io"}

_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")
_SHA256 = re.compile(r"sha256:[a-f0-9]{64}")
_HOST = re.compile(
    r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*)(?::[0-9]+)?"
)


@dataclass(frozen=True)
class Reference:
    """A normalized reference: registry host, repository, and tag or digest."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def reference(self) -> str:
        """What goes after /manifests/ in a URL: the digest when pinned."""
        if self.digest:
            return self.digest
        return self.tag or "latest"

    @property
    def api_host(self) -> str:
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    @property
    def familiar_name(self) -> str:
        """The short name `docker images` shows: busybox, not docker.io/library/busybox."""
        if self.registry == DOCKER_HUB:
            short = self.repository
            rest = short.removeprefix("library/")
            # As Docker does: only official images (one component after library/) lose the
            # prefix; library/a/b shortened to a/b would read back as docker.io/a/b.
            if "/" not in rest:
                short = rest
            first, slash, _ = short.partition("/")
            if slash and _looks_like_host(first):
                # docker.io/a.b/c shortened to a.b/c would read back as registry a.b: keep it whole.
                return self.full_name
            return short
        return f"{self.registry}/{self.repository}"

    @property
    def full_name(self) -> str:
        return f"{self.registry}/{self.repository}"

    @property
    def repo_tag(self) -> str | None:
        """The RepoTags entry for docker load; None when only a digest is known."""
        return f"{self.familiar_name}:{self.tag}" if self.tag else None

    @property
    def is_loopback(self) -> bool:
        return is_loopback_host(self.registry)

    def with_tag(self, tag: str) -> Reference:
        return Reference(self.registry, self.repository, tag=tag)

    def with_digest(self, digest: str) -> Reference:
        return Reference(self.registry, self.repository, tag=self.tag, digest=digest)

    def __str__(self) -> str:
        out = self.full_name
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out


def split_host_port(host: str) -> tuple[str, int | None]:
    if host.startswith("["):
        end = host.index("]")
        rest = host[end + 1 :]
        return host[1:end], int(rest[1:]) if rest.startswith(":") else None
    name, _, port = host.partition(":")
    return name, int(port) if port else None


def is_loopback_host(host: str) -> bool:
    """Docker talks plain HTTP to these without being told to."""
    name, _ = split_host_port(host)
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _looks_like_host(component: str) -> bool:
    # Docker's rule: a dot, a port, localhost, or any capital letter (repositories are lowercase).
    return (
        "." in component
        or ":" in component
        or component.startswith("[")
        or component == "localhost"
        or component != component.lower()
    )


def parse(name: str, tag: str | None = None) -> Reference:
    """Parse IMAGE (optionally with :tag or @digest) plus an optional TAG argument.

    TAG may itself be a digest (``sha256:…``), which pins the image.
    """
    text = name.strip()
    if not text:
        raise BadReferenceError("empty image name")
    digest: str | None = None
    if "@" in text:
        text, _, digest = text.partition("@")
        if not _DIGEST.fullmatch(digest):
            raise BadReferenceError(f"invalid digest in {name!r}")
    first, slash, rest = text.partition("/")
    if slash and _looks_like_host(first):
        if not _HOST.fullmatch(first):
            raise BadReferenceError(f"invalid registry host in {name!r}")
        registry, path = first, rest
    else:
        registry, path = DOCKER_HUB, text
    inline_tag: str | None = None
    last_slash = path.rfind("/")
    colon = path.rfind(":")
    if colon > last_slash:
        path, inline_tag = path[:colon], path[colon + 1 :]
    if registry in _HUB_ALIASES:
        registry = DOCKER_HUB
        if "/" not in path:
            path = f"library/{path}"
    if not path or not all(_COMPONENT.fullmatch(c) for c in path.split("/")):
        raise BadReferenceError(
            f"invalid repository name in {name!r} (lowercase letters, digits and . _ - only)"
        )
    if tag:
        if _DIGEST.fullmatch(tag) and ":" in tag:
            if digest and digest != tag:
                raise BadReferenceError(f"{name!r} and {tag!r} name different digests")
            digest = tag
        elif inline_tag and inline_tag != tag:
            raise BadReferenceError(f"{name!r} already carries tag {inline_tag!r}, not {tag!r}")
        else:
            inline_tag = tag
    if inline_tag is not None and not _TAG.fullmatch(inline_tag):
        raise BadReferenceError(f"invalid tag {inline_tag!r}")
    if digest and digest.startswith("sha256:") and not _SHA256.fullmatch(digest):
        raise BadReferenceError(f"invalid sha256 digest {digest!r}")
    if inline_tag is None and digest is None:
        inline_tag = "latest"
    return Reference(registry, path, inline_tag, digest)
