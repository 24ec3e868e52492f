"""Where content is, spelled as skopeo users expect: parsed here, opened as a Source or Sink elsewhere.

    docker://HOST[:PORT]/REPO[:TAG|@DIGEST]   a registry (registry:// too); a bare name that
                                              cannot be a local path means the same
    docker-archive:FILE[:REF]                 a docker-save tarball (ours, Docker's, a bundle)
    oci-archive:FILE[:REF]                    an OCI layout in a tarball
    oci:DIR[:REF]                             an OCI layout directory (an extracted or merged one too)
    PATH                                      an existing file or directory: its kind is sniffed

REF picks one image of a local layout: a full name (`127.0.0.1:5000/team/app:v1`) or the bare
`org.opencontainers.image.ref.name` skopeo writes (`v1`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from occystrap import reference
from occystrap.errors import BadReferenceError
from occystrap.reference import Reference

Kind = Literal["registry", "archive", "layout"]
REGISTRY_SCHEMES = ("docker://", "registry://")
ARCHIVE_SCHEMES = ("docker-archive:", "oci-archive:")
LAYOUT_SCHEMES = ("oci:", "dir:")


@dataclass(frozen=True)
class Location:
    kind: Kind
    text: str  # as the user wrote it
    ref: Reference | None = None  # the registry reference
    path: Path | None = None  # the local file or directory
    name: str | None = None  # REF inside a local layout, as written
    explicit: bool = False  # the registry reference named its own tag or digest

    @property
    def is_local(self) -> bool:
        return self.kind != "registry"

    def __str__(self) -> str:
        return self.text


def _split_local(rest: str) -> tuple[str, str | None]:
    # As skopeo does: the path ends at the first colon; REF may contain more of them.
    path, sep, name = rest.partition(":")
    return path, (name or None) if sep else None


def parse(text: str, tag: str | None = None) -> Location:
    """A location; `tag` completes a bare registry name (the seed commands' IMAGE TAG form)."""
    for scheme in REGISTRY_SCHEMES:
        if text.startswith(scheme):
            return _registry(text, text[len(scheme) :], tag)
    for scheme in ARCHIVE_SCHEMES:
        if text.startswith(scheme):
            path, name = _split_local(text[len(scheme) :])
            return Location("archive", text, path=Path(path), name=name)
    for scheme in LAYOUT_SCHEMES:
        if text.startswith(scheme):
            path, name = _split_local(text[len(scheme) :])
            return Location("layout", text, path=Path(path), name=name)
    as_path = Path(text)
    if as_path.exists():
        return Location("layout" if as_path.is_dir() else "archive", text, path=as_path)
    try:
        return _registry(text, text, tag)
    except BadReferenceError as exc:
        raise BadReferenceError(
            f"{text!r} is neither an existing path nor an image reference: {exc}"
        ) from None


def _registry(text: str, name: str, tag: str | None) -> Location:
    explicit = bool(tag) or "@" in name or ":" in name.rpartition("/")[2]
    return Location("registry", text, ref=reference.parse(name, tag), explicit=explicit)


def parse_destination(text: str) -> Location:
    """Like parse, but a path that does not exist yet is a local output when it looks like one
    (ends in .tar, or has no registry host: `out/`, `./mirror`)."""
    if text.startswith(REGISTRY_SCHEMES + ARCHIVE_SCHEMES + LAYOUT_SCHEMES) or Path(text).exists():
        return parse(text)
    if text.endswith(".tar"):
        return Location("archive", text, path=Path(text))
    first = text.partition("/")[0]
    if "/" in text and ("." in first or ":" in first or first == "localhost") and not text.startswith("."):
        return parse(text)
    return Location("layout", text, path=Path(text))


def parse_registry_prefix(text: str) -> tuple[str, str]:
    """`docker://HOST[:PORT][/PREFIX]` (or registry://, or bare) as (registry, prefix)."""
    for scheme in REGISTRY_SCHEMES:
        text = text.removeprefix(scheme)
    host, _, prefix = text.partition("/")
    try:
        ref = reference.parse(f"{host}/{prefix or 'x'}")
    except BadReferenceError as exc:
        raise BadReferenceError(f"{text!r} is not REGISTRY[/PREFIX]: {exc}") from None
    if ref.registry != host and host not in ("docker.io", "index.docker.io"):
        raise BadReferenceError(f"{text!r} does not start with a registry host (HOST[:PORT])")
    return ref.registry, prefix.strip("/")
