"""Platforms (os/arch/variant) and picking one from an index, as containerd does."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

# Buildx puts attestation manifests in an index under this platform: not runnable.
UNKNOWN = "unknown"


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ValueError(f"platform must be os/arch[/variant], not {text!r}")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    @classmethod
    def from_json(cls, doc: Any) -> Platform | None:
        """From an index entry's `platform` or an image config (os, architecture, variant)."""
        if not isinstance(doc, dict):
            return None
        os_, arch = doc.get("os"), doc.get("architecture")
        if not isinstance(os_, str) or not isinstance(arch, str) or not os_ or not arch:
            return None
        variant = doc.get("variant")
        return cls(os_, arch, variant if isinstance(variant, str) and variant else None)

    def to_json(self) -> dict[str, str]:
        out = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            out["variant"] = self.variant
        return out

    @property
    def runnable(self) -> bool:
        return self.os != UNKNOWN and self.architecture != UNKNOWN

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


# What a command asks for: one platform, several, or every entry of an index kept whole.
Platforms = Platform | tuple[Platform, ...] | Literal["all"]
ALL: Literal["all"] = "all"


def _norm(p: Platform) -> Platform:
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(p.architecture, p.architecture)
    variant = p.variant
    if arch == "arm64" and variant in (None, "v8", "8"):
        variant = "v8"
    if arch == "amd64" and variant in (None, "v1"):
        variant = None
    return Platform(p.os, arch, variant)


def match_rank(have: Platform, wanted: Platform) -> int | None:
    """How well `have` serves `wanted` (0 best), or None when it cannot.

    A missing variant matches anything; arm64 without a variant means v8; for arm the
    wanted variant may fall back to older ones (v7 runs v6 and v5).
    """
    want, got = _norm(wanted), _norm(have)
    if got.os != want.os or got.architecture != want.architecture:
        return None
    if want.variant is None or got.variant == want.variant:
        return 0
    if got.variant is None:
        return 1
    if want.architecture == "arm" and got.variant < want.variant:
        return 2 + (ord(want.variant[-1]) - ord(got.variant[-1]))
    return None


def choose(candidates: Sequence[Platform | None], wanted: Platform) -> int | None:
    """The position of the best candidate for `wanted`, or None."""
    ranked = [
        (rank, i)
        for i, p in enumerate(candidates)
        if p is not None and (rank := match_rank(p, wanted)) is not None
    ]
    return min(ranked)[1] if ranked else None
