"""Content digests (`algorithm:hex`): parsed and validated here, and nowhere else.

A digest names a blob in a registry URL and a file in a layout (`blobs/<alg>/<hex>`), so
a string that merely looks like one must never get that far: the grammar is the OCI
image spec's, and the registered algorithms must have their exact hex length.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable

_GRAMMAR = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")
_REGISTERED = {"sha256": re.compile(r"[a-f0-9]{64}"), "sha512": re.compile(r"[a-f0-9]{128}")}
# The one algorithm content is checked with: a digest of another kind can be carried, not trusted.
VERIFIABLE = "sha256"


class Digest(str):
    """A validated digest. Being a str, it goes into JSON, URLs and comparisons as it is."""

    __slots__ = ()

    @classmethod
    def parse(cls, text: object) -> Digest:
        """The digest `text` spells; ValueError (saying why) when it is not one."""
        if isinstance(text, Digest):
            return text
        if not isinstance(text, str) or not _GRAMMAR.fullmatch(text):
            raise ValueError(f"{text!r} is not a digest (algorithm:hex)")
        algorithm, _, encoded = text.partition(":")
        rule = _REGISTERED.get(algorithm)
        if rule is not None and not rule.fullmatch(encoded):
            raise ValueError(f"{text!r} is not a valid {algorithm} digest")
        return cls(text)

    @property
    def algorithm(self) -> str:
        return self.partition(":")[0]

    @property
    def hex(self) -> str:
        return self.partition(":")[2]

    @property
    def short(self) -> str:
        """The first 12 hex digits, as docker shows them."""
        return self.hex[:12]

    @property
    def path(self) -> str:
        """Where an OCI layout keeps this blob."""
        return f"blobs/{self.algorithm}/{self.hex}"

    @property
    def verifiable(self) -> bool:
        return self.algorithm == VERIFIABLE


def is_digest(text: object) -> bool:
    try:
        Digest.parse(text)
    except ValueError:
        return False
    return True


def of(data: bytes) -> Digest:
    """The sha256 digest of some bytes."""
    return Digest(f"{VERIFIABLE}:{hashlib.sha256(data).hexdigest()}")


def from_path(name: str) -> Digest | None:
    """The digest a layout file name promises (`blobs/<alg>/<hex>`), if it is one."""
    parts = name.split("/")
    if len(parts) != 3 or parts[0] != "blobs":
        return None
    try:
        return Digest.parse(f"{parts[1]}:{parts[2]}")
    except ValueError:
        return None


def of_file(path: str | os.PathLike[str]) -> tuple[Digest, int]:
    """sha256 digest and size of a file, read in large chunks (hashlib releases the GIL)."""
    with open(path, "rb") as fh:
        h = hashlib.file_digest(fh, VERIFIABLE)
        return Digest(f"{VERIFIABLE}:{h.hexdigest()}"), fh.tell()


def of_chunks(chunks: Iterable[bytes]) -> tuple[Digest, int]:
    """sha256 digest and size of a stream of chunks."""
    h = hashlib.sha256()
    size = 0
    for chunk in chunks:
        h.update(chunk)
        size += len(chunk)
    return Digest(f"{VERIFIABLE}:{h.hexdigest()}"), size
