"""A mirror spec: which images, which tags, which platforms. Parsed into frozen dataclasses.

    images:
      - name: 127.0.0.1:5000/team/app      # any reference form occystrap.reference.parse accepts
        tags: [v1, v2]                      # explicit tags
        include: ['^v1\\.']                 # regexes over the registry's tag list
        exclude: ['-rc']
        range: '>=1.2 <2 || ^3.1'           # semver range over the tag list (node-semver style)
        latest: 3                           # newest N by semver among the (filtered) tags
        digests: ['sha256:…']               # pinned
        platforms: [linux/amd64, linux/arm64]   # or 'all'; default: --platform
        referrers: true                     # also signatures, attestations, SBOMs of each manifest
    registries:                             # optional, per registry host
      ghcr.io: {username: me, password_env: GHCR_TOKEN}
      10.0.0.5:5000: {insecure: true}
      docker.io: {mirrors: [mirror.example:5000, 10.0.0.5:5000/hub]}   # tried first, in order

Tag selection (`select_tags`) is a pure function so it can be tested on its own.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import yaml

from occystrap import reference
from occystrap.errors import BadReferenceError, ManifestError, UsageError
from occystrap.locations import parse_registry_prefix
from occystrap.mirror.tags import Range, parse_range
from occystrap.platform import Platform
from occystrap.reference import Reference

ALL = "all"
_KEYS = frozenset(
    {"name", "tags", "include", "exclude", "range", "latest", "digests", "platforms", "referrers"}
)
_REGISTRY_KEYS = frozenset({"username", "password_env", "password_file", "insecure", "mirrors"})


@dataclass(frozen=True)
class ImageSpec:
    """One image to mirror. `repo` carries no tag; `name_tag` is a tag given inline in the name."""

    repo: Reference
    tags: tuple[str, ...] = ()
    include: tuple[re.Pattern[str], ...] = ()
    exclude: tuple[re.Pattern[str], ...] = ()
    latest: int | None = None
    digests: tuple[str, ...] = ()
    platforms: tuple[Platform, ...] | Literal["all"] = ()
    version_range: Range = ()
    # Also carry what refers to each mirrored manifest (signatures, attestations, SBOMs);
    # None: as the spec's top-level `referrers` says.
    referrers: bool | None = None

    @property
    def name(self) -> str:
        return self.repo.full_name

    @property
    def needs_tag_list(self) -> bool:
        return bool(self.include or self.exclude or self.latest is not None or self.version_range)

    def wanted_platforms(self, default: Platform) -> tuple[Platform, ...] | Literal["all"]:
        return self.platforms or (default,)


@dataclass(frozen=True)
class RegistrySettings:
    """Per-registry settings; the password itself never sits in the spec, only where to find it."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    insecure: bool = False
    mirrors: tuple[str, ...] = ()  # HOST[:PORT][/PREFIX], tried first for pulls, in order


@dataclass(frozen=True)
class MirrorSpec:
    images: tuple[ImageSpec, ...]
    registries: dict[str, RegistrySettings] = field(default_factory=dict)
    referrers: bool = False

    def wants_referrers(self, image: ImageSpec) -> bool:
        return self.referrers if image.referrers is None else image.referrers


# --- parsing -----------------------------------------------------------------


def load(path: Path) -> MirrorSpec:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UsageError(f"spec file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read spec file {path}: {exc}") from None
    return parse(text, str(path))


def parse(text: str, where: str = "spec") -> MirrorSpec:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ManifestError(f"{where}: not valid YAML: {exc}") from None
    if not isinstance(doc, dict) or "images" not in doc:
        raise ManifestError(f"{where}: expected a mapping with an 'images' list at the top")
    unknown = sorted(str(k) for k in doc if k not in ("images", "registries", "referrers"))
    if unknown:
        raise ManifestError(f"{where}: unknown top-level key(s): {', '.join(unknown)}")
    raw = doc["images"]
    if not isinstance(raw, list) or not raw:
        raise ManifestError(f"{where}: 'images' must be a non-empty list")
    images = tuple(_image(item, f"{where}: images[{i}]") for i, item in enumerate(raw))
    registries = parse_registries(doc.get("registries"), f"{where}: registries")
    return MirrorSpec(images, registries, _flag(doc, "referrers", where) or False)


def _flag(item: dict[Any, Any], key: str, where: str) -> bool | None:
    value = item.get(key)
    if value is not None and not isinstance(value, bool):
        raise ManifestError(f"{where}: '{key}' must be true or false")
    return value


def parse_registries(raw: Any, where: str) -> dict[str, RegistrySettings]:
    """`registries:` as a spec (or the user's config file) writes it: host -> settings."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ManifestError(f"{where}: expected a mapping of registry host to settings")
    out: dict[str, RegistrySettings] = {}
    for host, item in raw.items():
        here = f"{where}.{host}"
        if not isinstance(item, dict):
            raise ManifestError(f"{here}: expected a mapping")
        _no_unknown_keys(item, _REGISTRY_KEYS, here)
        password = None
        if "password_env" in item:
            password = os.environ.get(str(item["password_env"]))
            if password is None:
                raise UsageError(f"{here}: environment variable {item['password_env']} is not set")
        elif "password_file" in item:
            try:
                password = Path(str(item["password_file"])).expanduser().read_text().strip()
            except OSError as exc:
                raise UsageError(f"{here}: cannot read password_file: {exc}") from None
        username = item.get("username")
        if username is not None and not isinstance(username, str):
            raise ManifestError(f"{here}: 'username' must be a string")
        if password is not None and username is None:
            raise ManifestError(f"{here}: a password needs a 'username'")
        insecure = _flag(item, "insecure", here) or False
        registry = reference.parse(f"{host}/x").registry
        out[registry] = RegistrySettings(username, password, insecure, _mirrors(item.get("mirrors"), here))
    return out


def _mirrors(value: Any, where: str) -> tuple[str, ...]:
    """Mirror entries, `HOST[:PORT][/PREFIX]` (an https:// in front is allowed), normalized."""
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ManifestError(f"{where}: 'mirrors' must be a list of HOST[:PORT][/PREFIX]")
    out = []
    for text in value:
        try:
            registry, prefix = parse_registry_prefix(text.removeprefix("https://").rstrip("/"))
        except BadReferenceError as exc:
            raise ManifestError(f"{where}: mirrors: {exc}") from None
        out.append(f"{registry}/{prefix}" if prefix else registry)
    return tuple(dict.fromkeys(out))


def from_refs(refs: Sequence[str]) -> MirrorSpec:
    """The spec `--image REF[:TAG]` options describe: one image per repository, its tags and
    digests merged (`--image app:v1 --image app:v2` is app with tags v1 and v2)."""
    merged: dict[str, ImageSpec] = {}
    for text in refs:
        try:
            one = _image({"name": text}, f"--image {text}")
        except ManifestError as exc:
            raise UsageError(str(exc)) from None
        seen = merged.get(one.name)
        if seen is not None:
            one = replace(
                seen,
                tags=tuple(dict.fromkeys((*seen.tags, *one.tags))),
                digests=tuple(dict.fromkeys((*seen.digests, *one.digests))),
            )
        merged[one.name] = one
    return MirrorSpec(tuple(merged.values()))


def _no_unknown_keys(item: dict[Any, Any], known: frozenset[str], where: str) -> None:
    """A misspelt key must not silently fall back to a default: name it and what is known."""
    unknown = sorted(str(k) for k in item if k not in known)
    if unknown:
        listed = ", ".join(sorted(known))
        raise ManifestError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {listed}")


def _image(item: Any, where: str) -> ImageSpec:
    if isinstance(item, str):
        item = {"name": item}
    if not isinstance(item, dict):
        raise ManifestError(f"{where}: expected a mapping with at least 'name'")
    _no_unknown_keys(item, _KEYS, where)
    name = item.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ManifestError(f"{where}: 'name' must be a non-empty string")
    where = f"{where} ({name})"
    try:
        ref = reference.parse(name)
    except BadReferenceError as exc:
        raise ManifestError(f"{where}: {exc}") from None
    tags = _strings(item, "tags", where)
    for tag in tags:
        try:
            reference.parse(ref.full_name, tag)
        except BadReferenceError as exc:
            raise ManifestError(f"{where}: tags: {exc}") from None
    digests = _strings(item, "digests", where)
    for digest in digests:
        if not re.fullmatch(r"sha256:[a-f0-9]{64}", digest):
            raise ManifestError(f"{where}: digests: {digest!r} is not a sha256:<64 hex> digest")
    include = _patterns(item, "include", where)
    exclude = _patterns(item, "exclude", where)
    version_range: Range = ()
    if item.get("range") is not None:
        try:
            version_range = parse_range(str(item["range"]))
        except ValueError as exc:
            raise ManifestError(f"{where}: range: {exc}") from None
    latest = item.get("latest")
    if latest is not None and (not isinstance(latest, int) or isinstance(latest, bool) or latest < 1):
        raise ManifestError(f"{where}: 'latest' must be a positive integer, not {latest!r}")
    # A tag or digest given inline in the name is one more explicit selection.
    name_given = "@" in name or name.rsplit("/", 1)[-1].count(":") == 1
    if name_given and ref.digest:
        digests = (*digests, ref.digest)
    elif name_given and ref.tag:
        tags = (*tags, ref.tag)
    if not (tags or digests or include or exclude or latest is not None or version_range):
        tags = ("latest",)
    return ImageSpec(
        repo=Reference(ref.registry, ref.repository),
        tags=tuple(dict.fromkeys(tags)),
        include=include,
        exclude=exclude,
        latest=latest,
        digests=tuple(dict.fromkeys(digests)),
        platforms=_platforms(item.get("platforms"), where),
        version_range=version_range,
        referrers=_flag(item, "referrers", where),
    )


def _strings(item: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = item.get(key)
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise ManifestError(f"{where}: '{key}' must be a list of strings")
    for v in value:
        if not isinstance(v, str):
            raise ManifestError(
                f"{where}: '{key}' entry {v!r} is a {type(v).__name__}, not a string (quote it in YAML)"
            )
    return tuple(value)


def _patterns(item: dict[str, Any], key: str, where: str) -> tuple[re.Pattern[str], ...]:
    out = []
    for text in _strings(item, key, where):
        try:
            out.append(re.compile(text))
        except re.error as exc:
            raise ManifestError(f"{where}: {key}: bad regular expression {text!r}: {exc}") from None
    return tuple(out)


def _platforms(value: Any, where: str) -> tuple[Platform, ...] | Literal["all"]:
    if value is None:
        return ()
    if value == ALL:
        return "all"
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ManifestError(f"{where}: 'platforms' must be 'all' or a list of os/arch[/variant]")
    out = []
    for v in value:
        if not isinstance(v, str):
            raise ManifestError(f"{where}: platform {v!r} is not a string")
        try:
            out.append(Platform.parse(v))
        except ValueError as exc:
            raise ManifestError(f"{where}: {exc}") from None
    return tuple(dict.fromkeys(out))
