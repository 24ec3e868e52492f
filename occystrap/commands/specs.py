"""What mirror, lock and prune share: the images a spec file and --image options name, and
the registry client options a spec's per-registry settings add."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from occystrap.commands.common import client_options

if TYPE_CHECKING:
    from occystrap.mirror.spec import MirrorSpec
    from occystrap.registry.options import ClientOptions


def wanted_images(spec_path: Path | None, image_refs: tuple[str, ...], referrers: bool = False) -> MirrorSpec:
    """The spec file's images (and registries), then the --image ones, as one spec."""
    from occystrap.mirror import spec

    parts: list[spec.ImageSpec] = []
    registries: dict[str, spec.RegistrySettings] = {}
    with_referrers = referrers
    if spec_path is not None:
        loaded = spec.load(spec_path)
        parts.extend(loaded.images)
        registries = loaded.registries
        with_referrers = with_referrers or loaded.referrers
    parts.extend(spec.from_refs(image_refs).images)
    return spec.MirrorSpec(tuple(parts), registries, with_referrers)


def spec_client_options(opts: dict[str, Any], wanted: MirrorSpec | None) -> ClientOptions:
    """The client options with the spec's per-registry settings (credentials, insecure, mirrors)."""
    return client_options(opts, wanted.registries if wanted is not None else None)
