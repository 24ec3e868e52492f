"""Single-request error paths of RegistryClient, with aioresponses standing in for the network.

Everything else is tested against the real registry; these are the answers a
real registry will not give on cue (hostile redirects, oversized or schema1
manifests, odd auth failures). The host is a fake non-loopback name, so the
client speaks HTTPS to it; aioresponses intercepts every request (an unmatched
one fails as a refused connection), so nothing leaves the machine.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import hashlib
import inspect
import re
import time
from collections.abc import Iterator
from contextlib import aclosing
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aioresponses.core as aioresponses_core
import pytest
from aiohttp import ClientResponse, StreamReader
from aiohttp.client_proto import ResponseHandler
from aioresponses import CallbackResult, aioresponses

from occystrap import reference
from occystrap.errors import (
    AuthError,
    IntegrityError,
    ManifestError,
    NotFoundError,
    RateLimitedError,
    TransferError,
    UnsupportedMediaTypeError,
)
from occystrap.events import BlobRetry, Event
from occystrap.mediatypes import MAX_MANIFEST_BYTES, OCI_MANIFEST
from occystrap.model import Descriptor
from occystrap.platform import Platform
from occystrap.registry import listing
from occystrap.registry.client import RegistryClient
from occystrap.registry.options import ClientOptions
from occystrap.registry.retry import parse_retry_after
from occystrap.resolve import resolve
from occystrap.sources.registry import RegistrySource

HOST = "registry.example.com"
BASE = f"https://{HOST}"
REF = reference.parse(f"{HOST}/team/app", "v1")
MANIFEST_URL = f"{BASE}/v2/team/app/manifests/v1"
USER = "alice"
PASSWORD = "hunter2-SECRET-marker"
TOKEN_REALM = "https://auth.example.com/token"
TOKEN_URL = re.compile(r"^https://auth\.example\.com/token\?.*$")

BLOB = b"layer bytes " * 100
BLOB_DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()
BLOB_DESC = Descriptor("application/vnd.oci.image.layer.v1.tar+gzip", BLOB_DIGEST, len(BLOB))
BLOB_URL = f"{BASE}/v2/team/app/blobs/{BLOB_DIGEST}"


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)


SLEEPS: list[float] = []


async def record_sleep(delay: float) -> None:
    """The clients' sleep: recorded, not waited (the retry policy's sleep is injectable)."""
    SLEEPS.append(delay)
    await asyncio.sleep(0)


@pytest.fixture(autouse=True)
def hermetic(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Credentials come only from the options each test passes.
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-docker-config"))
    monkeypatch.delenv("OCCYSTRAP_USERNAME", raising=False)
    monkeypatch.delenv("OCCYSTRAP_PASSWORD", raising=False)


@pytest.fixture
def sleeps() -> list[float]:
    SLEEPS.clear()
    return SLEEPS


class _Response(ClientResponse):
    """aiohttp 3.14 made `stream_writer` a required argument that aioresponses 0.7.x does
    not pass (pnuckowski/aioresponses#289); a finished request only needs its output_size."""

    def __init__(self, method: str, url: Any, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", SimpleNamespace(output_size=0))
        super().__init__(method, url, **kwargs)


@pytest.fixture
def mocked(monkeypatch: pytest.MonkeyPatch) -> Iterator[aioresponses]:
    if "stream_writer" in inspect.signature(ClientResponse.__init__).parameters:
        monkeypatch.setattr(aioresponses_core, "ClientResponse", _Response)
    with aioresponses() as m:
        yield m


def client(retries: int = 1, reporter: Recorder | None = None, **kw: Any) -> RegistryClient:
    return RegistryClient(ClientOptions(retries=retries, backoff=0.001, **kw), reporter, sleep=record_sleep)


def ping_ok(m: aioresponses) -> None:
    m.get(f"{BASE}/v2/", status=200, payload={})


def ping_basic(m: aioresponses) -> None:
    m.get(f"{BASE}/v2/", status=401, headers={"WWW-Authenticate": 'Basic realm="example"'})


def ping_bearer(m: aioresponses) -> None:
    m.get(
        f"{BASE}/v2/",
        status=401,
        headers={"WWW-Authenticate": f'Bearer realm="{TOKEN_REALM}",service="{HOST}"'},
    )


async def read_blob(c: RegistryClient, desc: Descriptor = BLOB_DESC) -> bytes:
    body = bytearray()
    async with aclosing(c.blob_chunks(REF, desc)) as chunks:
        async for chunk in chunks:
            body += chunk
    return bytes(body)


def _no_secret(text: str) -> None:
    assert PASSWORD not in text
    assert base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode() not in text


def _requested(m: aioresponses, prefix: str) -> list[str]:
    return [str(url) for (_method, url) in m.requests if str(url).startswith(prefix)]


# --- redirects -------------------------------------------------------------------


@pytest.mark.parametrize("what", ["blob", "manifest"])
async def test_redirect_from_https_to_plain_http_is_refused(mocked: aioresponses, what: str) -> None:
    ping_ok(mocked)
    url = BLOB_URL if what == "blob" else MANIFEST_URL
    mocked.get(url, status=307, headers={"Location": "http://cdn.example.com/data?sig=SECRETSIG"})
    async with client() as c:
        with pytest.raises(TransferError) as err:
            if what == "blob":
                await read_blob(c)
            else:
                await c.get_manifest(REF)
    message = str(err.value)
    assert "HTTPS to plain HTTP" in message and "cdn.example.com" in message
    assert "SECRETSIG" not in message  # signed URLs carry secrets in the query
    assert _requested(mocked, "http://cdn.example.com") == []


@pytest.mark.parametrize("scheme", ["basic", "bearer"])
async def test_redirect_to_another_host_drops_authorization(mocked: aioresponses, scheme: str) -> None:
    if scheme == "basic":
        ping_basic(mocked)
    else:
        ping_bearer(mocked)
        mocked.get(TOKEN_URL, payload={"token": "TOKEN-abc", "expires_in": 300})
    seen: dict[str, dict[str, str]] = {}

    def at_registry(url: Any, **kwargs: Any) -> CallbackResult:
        seen["registry"] = dict(kwargs.get("headers") or {})
        return CallbackResult(
            status=307, headers={"Location": "https://blobs.example.net/store/abc?X-Amz-Signature=s"}
        )

    def at_store(url: Any, **kwargs: Any) -> CallbackResult:
        seen["store"] = dict(kwargs.get("headers") or {})
        return CallbackResult(status=200, body=BLOB, content_type="application/octet-stream")

    mocked.get(BLOB_URL, callback=at_registry)
    mocked.get("https://blobs.example.net/store/abc?X-Amz-Signature=s", callback=at_store)
    async with client(username=USER, password=PASSWORD) as c:
        assert await read_blob(c) == BLOB
    expected = "Bearer TOKEN-abc" if scheme == "bearer" else "Basic "
    assert seen["registry"]["Authorization"].startswith(expected)
    # The blob store gets the signed URL, never our registry credentials.
    assert not any(k.lower() == "authorization" for k in seen["store"])


async def test_too_many_redirects(mocked: aioresponses) -> None:
    ping_ok(mocked)
    mocked.get(BLOB_URL, status=302, headers={"Location": BLOB_URL}, repeat=True)
    async with client() as c:
        with pytest.raises(TransferError, match="too many redirects"):
            await read_blob(c)


# --- authentication --------------------------------------------------------------


async def test_basic_credentials_refused_without_leaking_password(mocked: aioresponses) -> None:
    ping_basic(mocked)
    mocked.get(MANIFEST_URL, status=401, headers={"WWW-Authenticate": 'Basic realm="example"'})
    async with client(username=USER, password=PASSWORD) as c:
        with pytest.raises(AuthError) as err:
            await c.get_manifest(REF)
    message = str(err.value)
    assert "refused" in message and USER in message
    _no_secret(message)
    _no_secret(repr(err.value))


async def test_token_server_refusing_credentials_does_not_leak_password(mocked: aioresponses) -> None:
    ping_bearer(mocked)
    mocked.get(TOKEN_URL, status=401, headers={"WWW-Authenticate": 'Basic realm="tokens"'})
    async with client(username=USER, password=PASSWORD) as c:
        with pytest.raises(AuthError) as err:
            await c.get_manifest(REF)
    message = str(err.value)
    assert "refused" in message
    _no_secret(message)
    # The Basic credentials went to the token server, once, and were not retried.
    assert len(_requested(mocked, TOKEN_REALM)) == 1


async def test_basic_challenge_without_credentials_says_so(mocked: aioresponses) -> None:
    ping_basic(mocked)
    async with client() as c:
        with pytest.raises(AuthError, match="requires credentials"):
            await c.get_manifest(REF)


# --- manifests -------------------------------------------------------------------


async def test_manifest_404_is_not_found(mocked: aioresponses) -> None:
    ping_ok(mocked)
    mocked.get(MANIFEST_URL, status=404, payload={"errors": [{"code": "MANIFEST_UNKNOWN"}]})
    async with client() as c:
        with pytest.raises(NotFoundError) as err:
            await c.get_manifest(REF)
    assert "'v1'" in str(err.value) and "not found" in str(err.value)


async def test_blob_404_is_not_found(mocked: aioresponses) -> None:
    ping_ok(mocked)
    mocked.get(BLOB_URL, status=404)
    async with client() as c:
        with pytest.raises(NotFoundError, match=BLOB_DIGEST):
            await read_blob(c)


def _roomy_stream(loop: Any = None) -> StreamReader:
    # aioresponses feeds the whole body at once into a 64 KiB-limit reader, which asks a
    # transport it does not have to pause: give it room for a 4 MiB body.
    return StreamReader(ResponseHandler(loop=loop), limit=2**24, loop=loop)


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "streamed"])
async def test_manifest_over_the_cap_is_refused(
    mocked: aioresponses, declared: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(aioresponses_core, "stream_reader_factory", _roomy_stream)
    ping_ok(mocked)
    if declared:
        # The header alone is enough to refuse: no need to read 5 MiB first.
        headers = {"Content-Length": str(MAX_MANIFEST_BYTES + 1)}
        mocked.get(MANIFEST_URL, body=b"{}", content_type=OCI_MANIFEST, headers=headers)
    else:
        body = b'{"pad": "' + b"x" * MAX_MANIFEST_BYTES + b'"}'
        mocked.get(MANIFEST_URL, body=body, content_type=OCI_MANIFEST)
    async with client() as c:
        with pytest.raises(ManifestError) as err:
            await c.get_manifest(REF)
    wanted = f"is {MAX_MANIFEST_BYTES + 1} bytes, over" if declared else "is over the"
    assert wanted in str(err.value) and "cap" in str(err.value)


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/vnd.docker.distribution.manifest.v1+prettyjws", b'{"schemaVersion": 1}'),
        ("application/vnd.docker.distribution.manifest.v1+json", b'{"schemaVersion": 1}'),
        (
            "application/octet-stream",
            b'{"schemaVersion": 1, "mediaType": "application/vnd.docker.distribution.manifest.v1+json"}',
        ),
        ("application/octet-stream", b'{"schemaVersion": 1, "name": "team/app", "fsLayers": []}'),
    ],
    ids=["prettyjws", "json", "octet-stream-with-mediatype", "octet-stream-bare"],
)
async def test_schema1_is_unsupported(mocked: aioresponses, content_type: str, body: bytes) -> None:
    ping_ok(mocked)
    mocked.get(MANIFEST_URL, body=body, content_type=content_type)
    async with client() as c:
        with pytest.raises(UnsupportedMediaTypeError, match="schema1"):
            await c.get_manifest(REF)


@pytest.mark.parametrize("content_type", [OCI_MANIFEST, "application/octet-stream"])
async def test_malformed_json_manifest(mocked: aioresponses, content_type: str) -> None:
    ping_ok(mocked)
    mocked.get(MANIFEST_URL, body=b'{"schemaVersion": 2, "config": ', content_type=content_type)
    async with client() as c:
        with pytest.raises(ManifestError, match="malformed JSON"):
            await resolve(RegistrySource(c), REF, Platform("linux", "amd64"))


async def test_manifest_pinned_by_digest_must_match(mocked: aioresponses) -> None:
    wanted = "sha256:" + "ab" * 32
    ref = reference.parse(f"{HOST}/team/app", wanted)
    ping_ok(mocked)
    mocked.get(f"{BASE}/v2/team/app/manifests/{wanted}", body=b"{}", content_type=OCI_MANIFEST)
    async with client() as c:
        with pytest.raises(IntegrityError, match=wanted):
            await c.get_manifest(ref)


# --- Retry-After and retry accounting ----------------------------------------------


async def test_retry_after_seconds_is_honoured(mocked: aioresponses, sleeps: list[float]) -> None:
    ping_ok(mocked)
    mocked.get(BLOB_URL, status=429, headers={"Retry-After": "7"})
    mocked.get(BLOB_URL, status=200, body=BLOB)
    reporter = Recorder()
    async with client(retries=2, reporter=reporter) as c:
        assert await read_blob(c) == BLOB
    assert sleeps == [7.0]
    [retry] = [e for e in reporter.events if isinstance(e, BlobRetry)]
    assert retry.digest == BLOB_DIGEST and retry.delay == 7.0 and "429" in retry.reason


async def test_retry_after_http_date_on_503(mocked: aioresponses, sleeps: list[float]) -> None:
    ping_ok(mocked)
    when = email.utils.formatdate(timeval=time.time() + 20, usegmt=True)
    mocked.get(MANIFEST_URL, status=503, headers={"Retry-After": when})
    mocked.get(MANIFEST_URL, status=404)
    async with client(retries=2) as c:
        with pytest.raises(NotFoundError):
            await c.get_manifest(REF)
    [delay] = sleeps
    assert 15 <= delay <= 21


async def test_retry_after_is_capped(mocked: aioresponses, sleeps: list[float]) -> None:
    ping_ok(mocked)
    mocked.get(BLOB_URL, status=503, headers={"Retry-After": "86400"})
    mocked.get(BLOB_URL, status=200, body=BLOB)
    async with client(retries=1) as c:
        assert await read_blob(c) == BLOB
    assert sleeps == [300.0]


async def test_rate_limited_until_retries_run_out(mocked: aioresponses, sleeps: list[float]) -> None:
    ping_ok(mocked)
    mocked.get(MANIFEST_URL, status=429, headers={"Retry-After": "1"}, repeat=True)
    async with client(retries=2) as c:
        with pytest.raises(RateLimitedError) as err:
            await c.get_manifest(REF)
    message = str(err.value)
    assert MANIFEST_URL in message and "429" in message and "3 tries" in message
    assert sleeps == [1.0, 1.0]


async def test_connection_errors_exhaust_into_transfer_error(
    mocked: aioresponses, sleeps: list[float]
) -> None:
    # aioresponses refuses every request nothing was registered for.
    async with client(retries=1) as c:
        with pytest.raises(TransferError, match=HOST):
            await c.get_manifest(REF)
    assert len(sleeps) == 1


def test_parse_retry_after() -> None:
    assert parse_retry_after(None) is None
    assert parse_retry_after("") is None
    assert parse_retry_after("12") == 12.0
    assert parse_retry_after(" 3 ") == 3.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0.0


async def test_short_body_whose_offset_contains_429_is_a_transfer_error(
    mocked: aioresponses, sleeps: list[float]
) -> None:
    """Only an HTTP 429 means rate limited, not a byte count that happens to contain 429."""
    data = bytes(range(256)) * 20
    desc = Descriptor(BLOB_DESC.media_type, "sha256:" + hashlib.sha256(data).hexdigest(), len(data))
    url = f"{BASE}/v2/team/app/blobs/{desc.digest}"
    ping_ok(mocked)
    mocked.get(url, body=data[:4290])
    async with client(retries=0) as c:
        with pytest.raises(TransferError) as err:
            await read_blob(c, desc)
    assert not isinstance(err.value, RateLimitedError)
    assert "body ended at byte 4290 of 5120" in str(err.value) and "1 tries" in str(err.value)


async def test_short_body_resumes_with_range(mocked: aioresponses, sleeps: list[float]) -> None:
    seen: list[str | None] = []

    def first(url: Any, **kwargs: Any) -> CallbackResult:
        seen.append((kwargs.get("headers") or {}).get("Range"))
        return CallbackResult(body=BLOB[:500])

    def rest(url: Any, **kwargs: Any) -> CallbackResult:
        seen.append((kwargs.get("headers") or {}).get("Range"))
        return CallbackResult(
            status=206, body=BLOB[500:], headers={"Content-Range": f"bytes 500-{len(BLOB) - 1}/{len(BLOB)}"}
        )

    ping_ok(mocked)
    mocked.get(BLOB_URL, callback=first)
    mocked.get(BLOB_URL, callback=rest)
    async with client(retries=1) as c:
        assert await read_blob(c) == BLOB
    assert seen == [None, "bytes=500-"]


async def test_resume_answered_from_the_wrong_offset_is_retried(
    mocked: aioresponses, sleeps: list[float]
) -> None:
    ping_ok(mocked)
    mocked.get(BLOB_URL, body=BLOB[:500])
    bad_range = {"Content-Range": f"bytes 400-{len(BLOB) - 1}/{len(BLOB)}"}
    mocked.get(BLOB_URL, status=206, body=BLOB[400:], headers=bad_range)
    async with client(retries=1) as c:
        with pytest.raises(TransferError, match="resumed at byte 400, not 500"):
            await read_blob(c)


# --- the OCI 1.1 referrers API (distribution 2.8 has none, so these are single-request paths) ---

SUBJECT = "sha256:" + "cd" * 32
REFERRERS_URL = f"{BASE}/v2/team/app/referrers/{SUBJECT}"


def _referrers_index(*artifact_types: str) -> dict[str, Any]:
    return {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": "sha256:" + f"{i:02x}" * 32, "size": 10, "artifactType": t}
            for i, t in enumerate(artifact_types)
        ],
    }


async def test_referrers_api_answers_with_an_index(mocked: aioresponses) -> None:
    ping_ok(mocked)
    mocked.get(REFERRERS_URL, payload=_referrers_index("application/spdx+json", "application/vnd.dev.sig"))
    async with client() as c:
        found = await listing.referrers(c, REF, SUBJECT)
    assert found is not None and [d.artifact_type for d in found] == [
        "application/spdx+json",
        "application/vnd.dev.sig",
    ]


async def test_referrers_filter_applied_where_the_registry_did_not(mocked: aioresponses) -> None:
    ping_ok(mocked)
    mocked.get(
        f"{REFERRERS_URL}?artifactType=application%2Fspdx%2Bjson",
        payload=_referrers_index("application/spdx+json", "x/y"),
    )
    async with client() as c:
        found = await listing.referrers(c, REF, SUBJECT, "application/spdx+json")
    assert found is not None and [d.artifact_type for d in found] == ["application/spdx+json"]


async def test_no_referrers_api_means_the_tag_schema(mocked: aioresponses) -> None:
    ping_ok(mocked)
    mocked.get(REFERRERS_URL, status=404)
    async with client() as c:
        assert await listing.referrers(c, REF, SUBJECT) is None


def test_tag_schema_tags() -> None:
    from occystrap.referrers import schema_tags

    hexpart = SUBJECT[7:]
    mine = [f"sha256-{hexpart}{suffix}" for suffix in ("", ".sig", ".att", ".sbom")]
    tags = ["v1", *mine, f"sha256-{hexpart}.other", f"sha256-{'ef' * 32}.sig"]
    assert schema_tags(SUBJECT, tags) == sorted(mine)
