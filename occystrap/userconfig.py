"""The user's configuration file: per-registry settings for every command, in the shape of a
mirror spec's `registries:`.

    $XDG_CONFIG_HOME/occystrap/config.yaml   (else ~/.config/occystrap/config.yaml)

    registries:
      docker.io:
        mirrors: [mirror.example:5000, 10.0.0.5:5000/hub]   # tried first for pulls, in order
      mirror.example:5000: {username: me, password_env: MIRROR_TOKEN}
      10.0.0.5:5000: {insecure: true}

A mirror spec's own `registries:` entry for a host wins over the file's, setting by setting.
YAML is imported only when the file exists: most runs have none, and start-up counts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from occystrap.errors import ManifestError, UsageError

if TYPE_CHECKING:
    from occystrap.mirror.spec import RegistrySettings

Registries = dict[str, "RegistrySettings"]


def config_path(environ: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    base = environ.get("XDG_CONFIG_HOME") or str(Path(environ.get("HOME") or Path.home()) / ".config")
    return Path(base) / "occystrap" / "config.yaml"


def load(path: Path | None = None) -> Registries:
    """The file's registries; none when there is no file."""
    path = path or config_path()
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from None
    import yaml

    from occystrap.mirror.spec import parse_registries

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ManifestError(f"{path}: not valid YAML: {exc}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict) or set(doc) - {"registries"}:
        raise ManifestError(f"{path}: expected a mapping with only 'registries' at the top")
    return parse_registries(doc.get("registries"), f"{path}: registries")


def merged(base: Registries, override: Registries) -> Registries:
    """base's settings per host, with each setting override gives taking its place."""
    out = dict(base)
    for host, settings in override.items():
        old = out.get(host)
        if old is None:
            out[host] = settings
            continue
        if settings.username is not None:
            old = replace(old, username=settings.username, password=settings.password)
        out[host] = replace(
            old, insecure=old.insecure or settings.insecure, mirrors=settings.mirrors or old.mirrors
        )
    return out
