"""The parts of an image config (OCI / Docker `config` JSON) that say how to run the image."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from occystrap.errors import ManifestError
from occystrap.model import load_json


@dataclass(frozen=True)
class ImageConfig:
    os: str = "linux"
    architecture: str = ""
    created: str | None = None
    author: str | None = None
    env: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    user: str = ""
    workdir: str = ""
    volumes: tuple[str, ...] = ()
    exposed_ports: tuple[str, ...] = ()
    stop_signal: str | None = None

    @classmethod
    def parse(cls, data: bytes) -> ImageConfig:
        doc = load_json(data, "image config")
        if not isinstance(doc, dict):
            raise ManifestError("malformed image config: not an object")
        run = doc.get("config") or {}
        if not isinstance(run, dict):
            raise ManifestError("malformed image config: 'config' is not an object")
        return cls(
            os=_text(doc, "os") or "linux",
            architecture=_text(doc, "architecture") or "",
            created=_text(doc, "created"),
            author=_text(doc, "author"),
            env=_strings(run, "Env") or (),
            entrypoint=_strings(run, "Entrypoint"),
            cmd=_strings(run, "Cmd"),
            labels=_labels(run),
            user=_text(run, "User") or "",
            workdir=_text(run, "WorkingDir") or "",
            volumes=tuple(sorted(_keys(run, "Volumes"))),
            exposed_ports=tuple(sorted(_keys(run, "ExposedPorts"))),
            stop_signal=_text(run, "StopSignal"),
        )

    def env_map(self) -> dict[str, str]:
        """Env as name -> value; a later entry for a name wins, as at exec time."""
        out: dict[str, str] = {}
        for item in self.env:
            name, sep, value = item.partition("=")
            if not sep or not name:
                raise ManifestError(f"malformed environment entry in image config: {item!r}")
            out[name] = value
        return out

    @property
    def args(self) -> list[str]:
        """What runs: Entrypoint followed by Cmd."""
        return [*(self.entrypoint or ()), *(self.cmd or ())]


def _text(doc: dict[str, Any], key: str) -> str | None:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ManifestError(f"malformed image config: {key} is not a string")
    return value


def _strings(doc: dict[str, Any], key: str) -> tuple[str, ...] | None:
    value = doc.get(key)
    if value is None:
        return None
    if isinstance(value, str):  # Docker's StrSlice also accepts a bare string
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ManifestError(f"malformed image config: {key} is not a list of strings")
    return tuple(value)


def _labels(doc: dict[str, Any]) -> dict[str, str]:
    value = doc.get("Labels") or {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ManifestError("malformed image config: Labels is not a string map")
    return dict(value)


def _keys(doc: dict[str, Any], key: str) -> list[str]:
    value = doc.get(key) or {}
    if not isinstance(value, dict):
        raise ManifestError(f"malformed image config: {key} is not an object")
    return [str(k) for k in value]
