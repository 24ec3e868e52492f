"""Many tags sharing a base layer, for the `mirror` and `extracted20` scenarios."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import MiB
from benchmarks.harness import BenchContext
from benchmarks.images import ImageSpec, PushedImage
from benchmarks.layers import LayerSpec
from benchmarks.tools import Verify, occystrap_verifies

TAG_COUNT = 20


@dataclass(frozen=True)
class TagGroup:
    """TAG_COUNT images in one repository, each = the shared base layer + a small layer of its own."""

    images: tuple[PushedImage, ...]

    @property
    def first(self) -> PushedImage:
        return self.images[0]

    @property
    def tags(self) -> list[str]:
        return [i.tag for i in self.images]

    @property
    def unique_bytes(self) -> int:
        """Every distinct blob once: layers (the base once) and each image's config."""
        layers = {la.digest: la.size for i in self.images for la in i.layers}
        return sum(layers.values()) + sum(i.config_size for i in self.images)

    @property
    def referenced_bytes(self) -> int:
        """What the tags reference, counting the shared base once per tag."""
        return sum(i.compressed_bytes for i in self.images)

    @property
    def as_image(self) -> PushedImage:
        """The group as one PushedImage for the timing helpers (name, ref, unique layers)."""
        layers = {la.digest: la for i in self.images for la in i.layers}
        configs = sum(i.config_size for i in self.images)
        f = self.first
        return PushedImage("tags20", f.host, f.repo, f.tag, tuple(layers.values()), configs, "")

    def describe(self) -> dict[str, Any]:
        return {
            "repo": f"{self.first.ref}",
            "tags": self.tags,
            "base_layer": self.first.layers[0].digest,
            "base_mib": round(self.first.layers[0].size / MiB, 2),
            "unique_mib": round(self.unique_bytes / MiB, 2),
            "referenced_mib": round(self.referenced_bytes / MiB, 2),
        }


def tag_group_specs(args: argparse.Namespace) -> list[ImageSpec]:
    base_mb, small_mb = (8.0, 0.25) if args.quick else (96.0, 1.0)  # 96 MiB of tar: ~54 MiB gzip
    base = LayerSpec(base_mb, seed=600, max_file_mb=8.0)
    return [
        ImageSpec(
            f"t{i:02d}", "bench/tags", f"t{i:02d}", (base, LayerSpec(small_mb, 700 + i, max_file_mb=0.5))
        )
        for i in range(TAG_COUNT)
    ]


def push_tag_group(ctx: BenchContext) -> TagGroup:
    return TagGroup(tuple(ctx.push_image(spec) for spec in tag_group_specs(ctx.args)))


def mirror_spec(ctx: BenchContext, group: TagGroup) -> Path:
    """An `occystrap mirror` spec naming the group's tags."""
    path = ctx.workdir / "tags20.yaml"
    path.write_text(f"images:\n  - name: {group.first.ref}\n    tags: [{', '.join(group.tags)}]\n")
    return path


def merged_holds(ctx: BenchContext, group: TagGroup) -> Verify:
    """A merged directory whose catalog lists every tag of the group, and that `occystrap verify` passes."""

    def check(_image: PushedImage, out: Path) -> str | None:
        try:
            doc = json.loads((out / "catalog.json").read_text())
            held = set(doc["images"][group.first.ref])
        except (OSError, ValueError, KeyError) as exc:
            return f"no usable catalog.json: {exc}"
        if held != set(group.tags):
            return f"catalog holds {sorted(held)}"
        return occystrap_verifies(ctx, out)

    return check
