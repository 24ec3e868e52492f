"""What a request may name, checked against the distribution spec's grammar. Pure: no I/O.

Every name, tag, digest, Range and pagination parameter of a request passes through
here before anything is looked up; a lookup is then a dictionary access, never a path
built from the request, so nothing a client sends can reach a file by itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, unquote

from occystrap.digest import Digest

# The spec's repository name: path components of lowercase alphanumerics and separators.
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_NAME = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
# Our one extension: the registry the content came from may lead the name, port included
# (`127.0.0.1:5000/team/app`); no spec client sends it, but curl and scripts can.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_HOST = rf"(?:\[[0-9a-fA-F:]+\]|{_LABEL}(?:\.{_LABEL})*)"
_QUALIFIED = re.compile(rf"{_HOST}(?::[0-9]{{1,5}})?/{_COMPONENT}(?:/{_COMPONENT})*")
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
MAX_NAME = 255
ALGORITHMS = ("sha256", "sha512")
# Distribution answers at most 1000 entries a page; asking for more gets a page of 1000.
MAX_PAGE = 1000
# Eighteen digits are more bytes than any file holds, and keep int() away from hostile lengths.
_RANGE = re.compile(r"bytes=(\d{0,18})-(\d{0,18})")


class RequestError(Exception):
    """A request refused with one of the spec's error codes."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def is_name(text: str) -> bool:
    return len(text) <= MAX_NAME and bool(_NAME.fullmatch(text) or _QUALIFIED.fullmatch(text))


def check_name(text: str) -> str:
    if not is_name(text):
        raise RequestError(400, "NAME_INVALID", f"invalid repository name {text[:100]!r}")
    return text


def check_digest(text: str) -> Digest:
    """A digest of an algorithm layouts use, with its exact hex length; DIGEST_INVALID otherwise."""
    try:
        digest = Digest.parse(text)
    except ValueError as exc:
        raise RequestError(400, "DIGEST_INVALID", str(exc)[:200]) from None
    if digest.algorithm not in ALGORITHMS:
        raise RequestError(400, "DIGEST_INVALID", f"unsupported digest algorithm {digest.algorithm[:32]!r}")
    return digest


def check_reference(text: str) -> str | Digest:
    """A manifest reference: a digest when it has a colon (none in a tag), else a tag."""
    if ":" in text:
        return check_digest(text)
    if not TAG.fullmatch(text):
        raise RequestError(404, "MANIFEST_UNKNOWN", f"{text[:100]!r} is not a valid tag: no manifest has it")
    return text


@dataclass(frozen=True)
class Route:
    """A parsed request path: what it asks for and of which repository."""

    kind: str  # base, catalog, manifest, blob, tags, upload
    name: str = ""
    reference: str = ""


# /v2/<name>/<what>/<reference>: the name runs to the last `/<what>/`; whatever follows is the
# reference, slashes and all, so `blobs/sha256:../../x` is refused as a digest, not a path.
_ROUTES = (
    ("manifest", re.compile(r"/v2/(?P<name>.+)/manifests/(?P<ref>.*)")),
    ("upload", re.compile(r"/v2/(?P<name>.+)/blobs/uploads(?P<ref>/.*)?")),
    ("blob", re.compile(r"/v2/(?P<name>.+)/blobs/(?P<ref>.*)")),
    ("tags", re.compile(r"/v2/(?P<name>.+)/tags/list(?P<ref>)")),
)


def route(raw_path: str) -> Route | None:
    """The route of a raw request path; None for unknown paths.

    The structure is matched before anything is decoded, so an encoded slash is part of a
    name or reference, not a separator; each part is then percent-decoded once and the name
    checked. The reference is left to the handler (a digest for blobs, a tag or digest for
    manifests), which knows which error code a bad one deserves.
    """
    path = raw_path.partition("?")[0]
    if path in ("/v2", "/v2/"):
        return Route("base")
    if path == "/v2/_catalog":
        return Route("catalog")
    for kind, pattern in _ROUTES:
        m = pattern.fullmatch(path)
        if m is not None:
            return Route(kind, check_name(_decoded(m["name"])), _decoded(m["ref"] or ""))
    return None


def _decoded(part: str) -> str:
    try:
        return unquote(part, errors="strict") if "%" in part else part
    except UnicodeDecodeError:
        return "\ufffd"  # no name or reference has it: refused as invalid


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The single byte range (first, last inclusive) a Range header asks for; None for the whole
    blob. Several ranges, other units, or a range past the end are refused with 416."""
    if header is None:
        return None
    refused = RequestError(
        416,
        "RANGE_INVALID",
        f"unsatisfiable or unsupported Range {header[:64]!r}",
        {"Content-Range": f"bytes */{size}"},
    )
    m = _RANGE.fullmatch(header.strip())
    if m is None or (not m[1] and not m[2]):
        raise refused
    if not m[1]:  # a suffix: the last N bytes
        count = int(m[2])
        if count == 0 or size == 0:
            raise refused
        return max(0, size - count), size - 1
    first = int(m[1])
    last = int(m[2]) if m[2] else size - 1
    if first >= size or last < first:
        raise refused
    return first, min(last, size - 1)


def page(items: list[str], n: str | None, last: str | None) -> tuple[list[str], bool]:
    """One page of a sorted list after `last`, at most `n` long, and whether more follow."""
    after = [i for i in items if i > last] if last else items
    if n is None:
        return after, False
    if not n.isdigit() or len(n) > 9:
        raise RequestError(
            400, "PAGINATION_NUMBER_INVALID", f"n must be a non-negative integer, not {n[:32]!r}"
        )
    size = min(int(n), MAX_PAGE)
    return after[:size], len(after) > size


def next_link(path: str, n: int, last: str) -> str:
    return f'<{path}?n={n}&last={quote(last, safe="")}>; rel="next"'


def derive_repository(filename: str) -> str:
    """A repository name for content that carries none (a bare `latest` in an OCI layout):
    the file or directory name without `.tar`, made into one valid path component."""
    stem = re.sub(r"\.tar$", "", filename.lower())
    text = re.sub(r"[^a-z0-9]+", "-", stem).strip("-")[:64].strip("-")
    return text if text else "image"
