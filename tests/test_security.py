"""Security, end to end: TLS verification, secrets that never leak, redirects that drop credentials.

- TLS: the real registry serves HTTPS with a certificate from a throwaway CA
  for `registry.test`; the CLI reaches it as `registry.test:PORT` with
  `--resolve registry.test=127.0.0.1`, so the name is checked as in real life.
- Secrets: every command that talks to a registry runs against the basic-auth
  and the token registries (right and wrong passwords, verbose, every progress
  mode, through a fault proxy with retries), and every byte it writes (stdout,
  stderr, every file) is searched for the password, the Basic header value and
  every bearer token the token server issued.
- Redirects: a small registry front answers blob GETs with a 307 to a blob store
  on another host; the store records whether it ever saw our credentials.

All traffic stays on loopback.
"""

from __future__ import annotations

import base64
import hashlib
import json
import tarfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from occystrap import reference
from occystrap.model import Descriptor
from occystrap.registry.client import RegistryClient
from occystrap.registry.options import ClientOptions
from tests.helpers import error_line, fails, leftovers, occystrap, ok
from tests.support import images
from tests.support.faultproxy import BLOB_GETS, Fault, FaultProxy
from tests.support.images import BuiltImage
from tests.support.loopserver import LoopServer
from tests.support.registry import PASSWORD, USERNAME, Registry
from tests.support.tls import SERVER_NAME, TestCA, start_tls_registry
from tests.support.tokenserver import TokenServer

WRONG_PASSWORD = "wr0ng-PASSWORD-decoy"
REPO = "secure/sample"
TAG = "v1"


def _basic(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def _clean_env(tmp_path: Path) -> dict[str, str]:
    """No credentials from the host: an empty docker config, no OCCYSTRAP_* variables."""
    return {
        "DOCKER_CONFIG": str(tmp_path / "no-docker-config"),
        "OCCYSTRAP_PASSWORD": "",
        "SSL_CERT_FILE": "",
        "SSL_CERT_DIR": "",
    }


def _check_tarball(out: Path, image: BuiltImage) -> None:
    with tarfile.open(out) as tf:
        names = set(tf.getnames())
        for digest, data in {**image.blobs(), image.manifest_digest: image.manifest}.items():
            member = tf.extractfile(f"blobs/sha256/{digest[7:]}")
            assert member is not None
            assert member.read() == data
        assert {"manifest.json", "index.json", "oci-layout"} <= names


# =====================================================================================
# TLS
# =====================================================================================


@dataclass
class TlsSetup:
    registry: Registry
    ca_pem: Path
    other_ca_pem: Path
    image: BuiltImage

    @property
    def name(self) -> str:
        return f"{SERVER_NAME}:{self.registry.port}"

    def ref(self, host: str | None = None) -> str:
        return f"{host or self.name}/{REPO}"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsSetup]:
    from tests.conftest import require_tool

    require_tool("docker-registry")
    base = tmp_path_factory.mktemp("tls")
    ca = TestCA.create()
    files = ca.issue_server(base / "server", [SERVER_NAME])
    image = images.build_sample_image()
    reg = start_tls_registry(base / "registry", files)
    try:
        reg.push_image(REPO, TAG, image)
        other = TestCA.create("some other CA").write_ca(base / "other-ca.pem")
        yield TlsSetup(reg, ca.write_ca(base / "ca.pem"), other, image)
    finally:
        reg.stop()


def _pin(name: str = SERVER_NAME) -> list[str]:
    return ["--resolve", f"{name}=127.0.0.1"]


def test_tls_untrusted_certificate_fails_cleanly(tls: TlsSetup, tmp_path: Path) -> None:
    out = tmp_path / "out" / "img.tar"
    out.parent.mkdir()
    proc = fails("fetch-to-tarfile", *_pin(), tls.ref(), TAG, str(out), env=_clean_env(tmp_path))
    line = error_line(proc.stderr)
    assert "TLS" in line and "certificate" in line, line
    assert tls.name in line
    assert proc.returncode == 5
    assert proc.stdout == ""
    assert leftovers(out.parent) == []
    # A CA that did not sign the certificate is no better.
    proc = fails(
        "fetch-to-tarfile",
        *_pin(),
        "--ca-cert",
        str(tls.other_ca_pem),
        tls.ref(),
        TAG,
        str(out),
        env=_clean_env(tmp_path),
    )
    assert "certificate" in error_line(proc.stderr)
    assert leftovers(out.parent) == []


def test_tls_with_ca_cert_succeeds(tls: TlsSetup, tmp_path: Path) -> None:
    out = tmp_path / "img.tar"
    proc = ok(
        "fetch-to-tarfile",
        "-q",
        *_pin(),
        "--ca-cert",
        str(tls.ca_pem),
        tls.ref(),
        TAG,
        str(out),
        env=_clean_env(tmp_path),
    )
    assert proc.stdout == ""
    _check_tarball(out, tls.image)
    with tarfile.open(out) as tf:
        member = tf.extractfile("manifest.json")
        assert member is not None
        [entry] = json.load(member)
    assert entry["RepoTags"] == [f"{tls.name}/{REPO}:{TAG}"]
    # It really was HTTPS to the real registry: its log shows the TLS-served blob GETs.
    assert tls.registry.request_count("/blobs/sha256:", "GET") >= 1


def test_tls_name_is_still_checked_when_pinned(tls: TlsSetup, tmp_path: Path) -> None:
    """--resolve only picks the address: a name the certificate does not carry is refused."""
    out = tmp_path / "img.tar"
    name = f"other.test:{tls.registry.port}"
    proc = fails(
        "fetch-to-tarfile",
        "-q",
        *_pin("other.test"),
        "--ca-cert",
        str(tls.ca_pem),
        tls.ref(name),
        TAG,
        str(out),
        env=_clean_env(tmp_path),
    )
    line = error_line(proc.stderr)
    assert "certificate" in line and "other.test" in line, line
    assert not out.exists()


def test_tls_insecure_registry_skips_verification(tls: TlsSetup, tmp_path: Path) -> None:
    out = tmp_path / "img.tar"
    ok(
        "fetch-to-tarfile",
        "-q",
        *_pin(),
        "--insecure-registry",
        tls.name,
        tls.ref(),
        TAG,
        str(out),
        env=_clean_env(tmp_path),
    )
    _check_tarball(out, tls.image)
    # Only the named registry is insecure: another name (same server) is still verified.
    proc = fails(
        "fetch-to-tarfile",
        "-q",
        *_pin("other.test"),
        "--insecure-registry",
        tls.name,
        tls.ref(f"other.test:{tls.registry.port}"),
        TAG,
        str(tmp_path / "other.tar"),
        env=_clean_env(tmp_path),
    )
    assert "certificate" in error_line(proc.stderr)


def test_tls_inspect_and_mirror_use_the_ca(tls: TlsSetup, tmp_path: Path) -> None:
    proc = ok(
        "inspect",
        "--json",
        *_pin(),
        "--ca-cert",
        str(tls.ca_pem),
        f"{tls.ref()}:{TAG}",
        env=_clean_env(tmp_path),
    )
    assert json.loads(proc.stdout)["digest"] == tls.image.manifest_digest
    dest = tmp_path / "mirror"
    ok(
        "mirror",
        "-q",
        *_pin(),
        "--ca-cert",
        str(tls.ca_pem),
        "--image",
        f"{tls.ref()}:{TAG}",
        str(dest),
        env=_clean_env(tmp_path),
    )
    for digest, data in tls.image.blobs().items():
        assert (dest / "blobs" / "sha256" / digest[7:]).read_bytes() == data


@pytest.mark.parametrize("problem", ["missing", "garbage"])
def test_tls_bad_ca_file_is_a_usage_error(tls: TlsSetup, tmp_path: Path, problem: str) -> None:
    ca = tmp_path / "ca.pem"
    if problem == "garbage":
        ca.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    out = tmp_path / "img.tar"
    proc = fails(
        "fetch-to-tarfile",
        "-q",
        *_pin(),
        "--ca-cert",
        str(ca),
        tls.ref(),
        TAG,
        str(out),
        env=_clean_env(tmp_path),
    )
    assert str(ca) in error_line(proc.stderr)
    assert proc.returncode == 2  # usage: the file given is unusable, nothing to do with the registry
    assert not out.exists()


# =====================================================================================
# Secrets never leak
# =====================================================================================


@dataclass
class Secrets:
    """What must never appear in anything occystrap prints or writes."""

    fixed: dict[str, bytes] = field(default_factory=dict)
    tokens: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def needles(self) -> dict[str, bytes]:
        out = dict(self.fixed)
        with self.lock:
            for i, token in enumerate(self.tokens):
                out[f"bearer token #{i}"] = token.encode()
                # The signature is the part that makes a JWT a credential: no piece of it either.
                out[f"bearer token #{i} signature"] = token.rsplit(".", 1)[-1].encode()
        return out

    def scan(self, what: str, data: bytes) -> list[str]:
        return [f"{name} found in {what}" for name, needle in self.needles().items() if needle in data]

    def scan_tree(self, root: Path) -> list[str]:
        found: list[str] = []
        for path in sorted(root.rglob("*")):
            if path.is_symlink():
                found += self.scan(f"symlink {path}", str(path.readlink()).encode())
            elif path.is_file():
                found += self.scan(str(path), path.read_bytes())
            found += self.scan(f"file name {path}", str(path.relative_to(root)).encode())
        return found


def _secrets() -> Secrets:
    s = Secrets()
    for label, password in (("password", PASSWORD), ("wrong password", WRONG_PASSWORD)):
        s.fixed[label] = password.encode()
        s.fixed[f"Basic value for {label}"] = _basic(USERNAME, password).encode()
    return s


@pytest.fixture
def secrets(token_registry: Registry, monkeypatch: pytest.MonkeyPatch) -> Secrets:
    """The secrets list, with every token the token server issues during the test added to it."""
    s = _secrets()
    server = token_registry.token_server
    assert server is not None
    original = server.issue

    def issue(user: str | None, access: list[dict[str, Any]], expires_in: int | None = None) -> str:
        token = original(user, access, expires_in)
        with s.lock:
            s.tokens.append(token)
        return token

    # An instance attribute shadows the method; the server thread calls self.issue.
    monkeypatch.setattr(server, "issue", issue)
    return s


@pytest.fixture(scope="module")
def secure_image(basic_registry: Registry, token_registry: Registry) -> BuiltImage:
    image = images.build_sample_image(fmt="oci")
    basic_registry.push_image(REPO, TAG, image)
    token_registry.push_image(REPO, TAG, image)
    return image


def test_scanner_finds_what_it_looks_for(tmp_path: Path) -> None:
    """The leak checks below mean something only if the scanner does catch a leak."""
    s = _secrets()
    s.tokens.append("aaaa.bbbb.SIGNATURE-part")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_bytes(b"x" + _basic(USERNAME, PASSWORD).encode() + b"y")
    (tmp_path / "lnk").symlink_to("SIGNATURE-part")
    found = s.scan_tree(tmp_path)
    assert any("Basic value for password" in f for f in found)
    assert any("signature found in symlink" in f for f in found)
    assert s.scan("stderr", b"Authorization: Bearer aaaa.bbbb.SIGNATURE-part") != []


Command = Callable[[str, Path], list[str]]

# Each command as a user would run it: (image reference with tag, work dir) -> argv.
COMMANDS: dict[str, Command] = {
    "fetch-to-tarfile": lambda ref, w: ["fetch-to-tarfile", *ref.rsplit(":", 1), str(w / "img.tar")],
    "fetch-to-extracted": lambda ref, w: [
        "fetch-to-extracted",
        "--use-unique-names",
        "--expand",
        *ref.rsplit(":", 1),
        str(w / "extracted"),
    ],
    "mirror": lambda ref, w: ["mirror", "--image", ref, str(w / "mirror")],
    "inspect": lambda ref, w: ["inspect", ref],
}

# What a successful run of each command must have written (beyond stdout).
PRODUCTS: dict[str, list[str]] = {
    "fetch-to-tarfile": ["img.tar"],
    "fetch-to-extracted": ["extracted/catalog.json", "extracted/index.json"],
    "mirror": ["mirror/occystrap.lock", "mirror/catalog.json"],
    "inspect": [],
}


def _credential_args(source: str, password: str, work: Path) -> tuple[list[str], dict[str, str]]:
    """Credentials the three ways a user gives them: flags, environment, docker's config.json."""
    env = _clean_env(work)
    if source == "flags":
        return ["--username", USERNAME, "--password", password], env
    if source == "env":
        return [], {**env, "OCCYSTRAP_USERNAME": USERNAME, "OCCYSTRAP_PASSWORD": password}
    # docker config lives outside the scanned work dir: it is our input, not our output.
    config_dir = work.parent / f"{work.name}-docker-config"
    config_dir.mkdir()
    (config_dir / "config.json").write_text(json.dumps({"auths": {"placeholder": {}}}))
    return [], {**env, "DOCKER_CONFIG": str(config_dir)}


def _write_docker_config(env: dict[str, str], registry_host: str, password: str) -> None:
    path = Path(env["DOCKER_CONFIG"]) / "config.json"
    doc = {"auths": {registry_host: {"auth": _basic(USERNAME, password)}}}
    path.write_text(json.dumps(doc))


def _run_and_scan(
    secrets: Secrets,
    command: str,
    registry_host: str,
    tmp_path: Path,
    *,
    password: str,
    progress: str,
    source: str,
    extra: tuple[str, ...] = (),
) -> tuple[Any, Path]:
    work = tmp_path / "work"
    work.mkdir()
    args, env = _credential_args(source, password, work)
    if source == "config":
        _write_docker_config(env, registry_host, password)
    argv = COMMANDS[command](f"{registry_host}/{REPO}:{TAG}", work)
    proc = occystrap(
        *argv, "--verbose", "--progress", progress, *args, *extra, env={**env, "HOME": str(work)}
    )
    found = secrets.scan("stdout", proc.stdout.encode()) + secrets.scan("stderr", proc.stderr.encode())
    found += secrets.scan_tree(work)
    assert found == [], f"{found}\n--- stderr:\n{proc.stderr}"
    return proc, work


def _expect_success(proc: Any, work: Path, command: str, image: BuiltImage) -> None:
    assert proc.returncode == 0, proc.stderr
    for product in PRODUCTS[command]:
        assert (work / product).is_file(), f"{product} missing; stderr:\n{proc.stderr}"
    if command == "inspect":
        assert image.manifest_digest in proc.stdout
    if command == "fetch-to-tarfile":
        _check_tarball(work / "img.tar", image)


def _registry(request: pytest.FixtureRequest, kind: str) -> Registry:
    reg: Registry = request.getfixturevalue(f"{kind}_registry")
    return reg


SOURCES = ["flags", "env", "config"]


@pytest.mark.parametrize("progress", ["plain", "json"])
@pytest.mark.parametrize("kind", ["basic", "token"])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_right_password_never_leaks(
    request: pytest.FixtureRequest,
    secrets: Secrets,
    secure_image: BuiltImage,
    tmp_path: Path,
    command: str,
    kind: str,
    progress: str,
) -> None:
    reg = _registry(request, kind)
    # Rotate through the three ways of giving credentials without multiplying the runs.
    source = SOURCES[(list(COMMANDS).index(command) + (kind == "token") + 2 * (progress == "json")) % 3]
    before = len(secrets.tokens)
    proc, work = _run_and_scan(
        secrets, command, reg.host, tmp_path, password=PASSWORD, progress=progress, source=source
    )
    _expect_success(proc, work, command, secure_image)
    # The credentials really were in play: Basic was accepted, or tokens were issued to alice.
    if kind == "token":
        assert len(secrets.tokens) > before
        server = reg.token_server
        assert server is not None and server.requests[-1].user == USERNAME


@pytest.mark.parametrize("kind", ["basic", "token"])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_wrong_password_never_leaks(
    request: pytest.FixtureRequest,
    secrets: Secrets,
    secure_image: BuiltImage,
    tmp_path: Path,
    command: str,
    kind: str,
) -> None:
    reg = _registry(request, kind)
    idx = list(COMMANDS).index(command)
    progress = ["plain", "json"][idx % 2]
    source = SOURCES[(idx + (kind == "token")) % 3]
    proc, work = _run_and_scan(
        secrets, command, reg.host, tmp_path, password=WRONG_PASSWORD, progress=progress, source=source
    )
    assert proc.returncode == 4, proc.stderr
    line = error_line(proc.stderr)
    assert USERNAME in line or "refused" in line, line
    assert "Traceback" in proc.stderr  # --verbose prints it; it must hold no secret either (scanned)
    for product in PRODUCTS[command]:
        assert not (work / product).exists()
    assert not (work / "img.tar").exists()


def _fault_plan(kind: str, image: BuiltImage) -> list[Fault]:
    """Enough trouble to exercise every retry path (and re-authentication) in one run.

    The proxy applies every matching fault to one request, so each goes to its own blob.
    """
    big, small, mid = sorted(image.layers, key=lambda layer: -layer.size)
    faults = [
        Fault(match="/manifests/", status=503, retry_after=0, times=1),
        Fault(match=image.config_digest, status=429, retry_after=0, times=2),
        Fault(match=big.digest, drop_after=20_000, times=2),
        Fault(match=mid.digest, stall=1.5, stall_at=1000, times=1),
    ]
    if kind == "token":
        # A token the registry suddenly refuses: the client must fetch a new one (and print neither).
        faults.append(Fault(match=small.digest, status=401, times=1))
    else:
        faults.append(Fault(match=small.digest, status=503, times=1))
    return faults


@pytest.mark.parametrize("kind", ["basic", "token"])
@pytest.mark.parametrize("command", ["fetch-to-tarfile", "mirror", "fetch-to-extracted"])
def test_secrets_never_leak_through_retries(
    request: pytest.FixtureRequest,
    secrets: Secrets,
    secure_image: BuiltImage,
    tmp_path: Path,
    command: str,
    kind: str,
) -> None:
    reg = _registry(request, kind)
    with FaultProxy(reg.url) as proxy:
        proxy.set(*_fault_plan(kind, secure_image))
        progress = "json" if command == "mirror" else "plain"
        proc, work = _run_and_scan(
            secrets,
            command,
            proxy.host,
            tmp_path,
            password=PASSWORD,
            progress=progress,
            source="flags",
            extra=("--retries", "6", "--read-timeout", "1", "-j", "2"),
        )
        _expect_success(proc, work, command, secure_image)
        injected = sum(1 for s in proxy.seen() if s.faults)
    assert injected >= 6
    retries = proc.stderr.count('"event": "BlobRetry"') + proc.stderr.count("\nretry ")
    assert retries >= 3, proc.stderr


@pytest.mark.parametrize("kind", ["basic", "token"])
def test_secrets_never_leak_when_retries_run_out(
    request: pytest.FixtureRequest, secrets: Secrets, secure_image: BuiltImage, tmp_path: Path, kind: str
) -> None:
    reg = _registry(request, kind)
    with FaultProxy(reg.url) as proxy:
        # (A body that keeps breaking after some progress is resumed indefinitely; a status is not.)
        proxy.set(Fault(match=BLOB_GETS, status=503, retry_after=0, times=None))
        proc, work = _run_and_scan(
            secrets,
            "fetch-to-tarfile",
            proxy.host,
            tmp_path,
            password=PASSWORD,
            progress="json",
            source="env",
            extra=("--retries", "2"),
        )
    assert proc.returncode == 5, proc.stderr
    assert leftovers(work) == []


def test_client_reprs_hide_secrets() -> None:
    """Options and per-host state end up in debug logs and tracebacks by repr(): no secrets there."""
    options = ClientOptions(username=USERNAME, password=PASSWORD)
    assert PASSWORD not in repr(options)
    client = RegistryClient(options)
    ref = reference.parse("127.0.0.1:1/secure/sample", TAG)
    host = client.host(ref)
    host.tokens["repository:secure/sample:pull"] = ("TOKEN-SECRET-marker", 0.0)
    text = repr(host)
    assert PASSWORD not in text and "TOKEN-SECRET-marker" not in text
    assert _basic(USERNAME, PASSWORD) not in text


# =====================================================================================
# Redirects never carry credentials to another host
# =====================================================================================


@dataclass(frozen=True)
class Hit:
    server: str  # "front" or "store"
    host: str  # the Host header: which name the client used
    path: str
    authorization: str | None
    range: str | None


class _ThreadApp:
    """An aiohttp app on 127.0.0.1 in its own thread and loop (usable from a subprocess too)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = 0
        self.hits: list[Hit] = []
        self._server = LoopServer(name)

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def record(self, request: web.Request) -> None:
        self.hits.append(
            Hit(
                self.name,
                request.headers.get("Host", ""),
                request.path_qs,
                request.headers.get("Authorization"),
                request.headers.get("Range"),
            )
        )

    def start(self) -> None:
        self.port = self._server.start(self._app)

    async def _app(self) -> web.Application:
        app = web.Application()
        self.routes(app)
        return app

    def stop(self) -> None:
        self._server.stop()


def _serve_blob(request: web.Request, data: bytes, drop_after: int | None = None) -> web.Response:
    start = 0
    rng = request.headers.get("Range", "")
    if rng.startswith("bytes="):
        start = int(rng[6:].split("-")[0])
    body = data[start:]
    if drop_after is not None:
        # A short body under a full Content-Length: the client sees the connection break.
        resp = web.Response(body=body[:drop_after], status=206 if start else 200)
        resp.headers["Content-Length"] = str(len(body))
        resp.force_close()
    else:
        resp = web.Response(body=body, status=206 if start else 200)
    if start:
        resp.headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
    resp.content_type = "application/octet-stream"
    return resp


class BlobStore(_ThreadApp):
    """Another host: serves blobs by signed-looking URL, records who sent what."""

    def __init__(self, blobs: dict[str, bytes]) -> None:
        super().__init__("store")
        self.blobs = blobs
        self.drop_once: set[str] = set()

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/store/{digest}", self._get)

    async def _get(self, request: web.Request) -> web.StreamResponse:
        self.record(request)
        digest = request.match_info["digest"]
        data = self.blobs.get(digest)
        if data is None:
            return web.Response(status=404)
        if digest in self.drop_once:
            self.drop_once.discard(digest)
            return _serve_blob(request, data, drop_after=len(data) // 3)
        return _serve_blob(request, data)


class RedirectingRegistry(_ThreadApp):
    """A registry front (Basic or bearer auth) that sends blob GETs elsewhere with a 307.

    `redirect` picks where: "other-port" (127.0.0.1, the store's port), "other-name"
    (localhost, the store's port), "same-port-other-name" (localhost, this port) or
    "same-origin" (a relative Location on this very host: credentials may follow).
    """

    def __init__(self, image: BuiltImage, store: BlobStore, scheme: str, tokens: TokenServer | None) -> None:
        super().__init__("front")
        self.image = image
        self.blobs = {**image.blobs()}
        self.store = store
        self.scheme = scheme
        self.token_server = tokens
        self.issued: list[str] = []
        self.redirect = "other-port"

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/v2/", self._ping)
        app.router.add_route("*", "/v2/{repo:.+}/manifests/{ref}", self._manifest)
        app.router.add_route("*", "/v2/{repo:.+}/blobs/{digest}", self._blob)
        app.router.add_get("/local/{digest}", self._local)

    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        if self.scheme == "basic":
            return header == "Basic " + _basic(USERNAME, PASSWORD)
        return header.startswith("Bearer ") and header[7:] in self.issued

    def _challenge(self) -> web.Response:
        if self.scheme == "basic":
            value = 'Basic realm="front"'
        else:
            assert self.token_server is not None
            realm = self.token_server.realm
            value = f'Bearer realm="{realm}",service="test-registry",scope="repository:{REPO}:pull"'
        return web.json_response(
            {"errors": [{"code": "UNAUTHORIZED"}]}, status=401, headers={"WWW-Authenticate": value}
        )

    async def _ping(self, request: web.Request) -> web.StreamResponse:
        self.record(request)
        return web.json_response({}) if self._authorized(request) else self._challenge()

    async def _manifest(self, request: web.Request) -> web.StreamResponse:
        self.record(request)
        if not self._authorized(request):
            return self._challenge()
        return web.Response(
            body=self.image.manifest,
            headers={
                "Content-Type": self.image.manifest_media_type,
                "Docker-Content-Digest": self.image.manifest_digest,
            },
        )

    async def _blob(self, request: web.Request) -> web.StreamResponse:
        self.record(request)
        digest = request.match_info["digest"]
        if request.query.get("hop") == "1":
            # Reached under another name ("localhost") after a redirect: act as the blob store.
            return _serve_blob(request, self.blobs[digest])
        if not self._authorized(request):
            return self._challenge()
        if digest not in self.blobs:
            return web.Response(status=404)
        where = {
            "other-port": f"http://127.0.0.1:{self.store.port}/store/{digest}?sig=SIGNED",
            "other-name": f"http://localhost:{self.store.port}/store/{digest}?sig=SIGNED",
            "same-port-other-name": f"http://localhost:{self.port}/v2/{REPO}/blobs/{digest}?hop=1",
            "same-origin": f"/local/{digest}",
        }[self.redirect]
        return web.Response(status=307, headers={"Location": where})

    async def _local(self, request: web.Request) -> web.StreamResponse:
        self.record(request)
        return _serve_blob(request, self.blobs[request.match_info["digest"]])


@dataclass
class Redirects:
    front: RedirectingRegistry
    store: BlobStore
    image: BuiltImage

    @property
    def ref(self) -> str:
        return f"127.0.0.1:{self.front.port}/{REPO}"

    def redirected_hits(self) -> list[Hit]:
        """Requests that arrived after a redirect: at the store, or at the front under another name."""
        return [h for h in self.front.hits + self.store.hits if h.server == "store" or "hop=1" in h.path]


@pytest.fixture(params=["basic", "bearer"])
def redirects(request: pytest.FixtureRequest) -> Iterator[Redirects]:
    image = images.build_image(
        [[images.file("a.txt", b"a" * 50_000)], [images.file("b.bin", bytes(range(256)) * 400)]]
    )
    store = BlobStore(image.blobs())
    tokens: TokenServer | None = None
    if request.param == "bearer":
        tokens = TokenServer().start()
    front = RedirectingRegistry(image, store, request.param, tokens)
    if tokens is not None:
        original = tokens.issue

        def issue(user: str | None, access: list[dict[str, Any]], expires_in: int | None = None) -> str:
            token = original(user, access, expires_in)
            front.issued.append(token)
            return token

        tokens.issue = issue  # type: ignore[method-assign]
    store.start()
    front.start()
    try:
        yield Redirects(front, store, image)
    finally:
        front.stop()
        store.stop()
        if tokens is not None:
            tokens.stop()


@pytest.mark.parametrize("where", ["other-port", "other-name", "same-port-other-name"])
def test_redirect_to_another_host_never_carries_credentials(
    redirects: Redirects, tmp_path: Path, where: str
) -> None:
    redirects.front.redirect = where
    out = tmp_path / "img.tar"
    env = {**_clean_env(tmp_path), "OCCYSTRAP_USERNAME": USERNAME, "OCCYSTRAP_PASSWORD": PASSWORD}
    proc = ok("fetch-to-tarfile", "-q", "--verbose", redirects.ref, TAG, str(out), env=env)
    _check_tarball(out, redirects.image)
    away = redirects.redirected_hits()
    # Every blob (config and layers) went through the redirect, and none carried our credentials.
    assert {h.path.split("/")[-1].split("?")[0] for h in away} == set(redirects.image.blobs())
    assert [h for h in away if h.authorization is not None] == []
    if where != "other-port":
        assert all(h.host.startswith("localhost:") for h in away)
    # The registry itself did get them (so the check above had something to catch).
    assert any(h.authorization for h in redirects.front.hits if "hop=1" not in h.path)
    secrets = _secrets()
    secrets.tokens.extend(redirects.front.issued)
    assert secrets.scan("stderr", proc.stderr.encode()) == []


def test_same_origin_redirect_keeps_credentials(redirects: Redirects, tmp_path: Path) -> None:
    """The positive control: a redirect within the registry's own origin may keep them."""
    redirects.front.redirect = "same-origin"
    out = tmp_path / "img.tar"
    env = {**_clean_env(tmp_path), "OCCYSTRAP_USERNAME": USERNAME, "OCCYSTRAP_PASSWORD": PASSWORD}
    ok("fetch-to-tarfile", "-q", redirects.ref, TAG, str(out), env=env)
    _check_tarball(out, redirects.image)
    local = [h for h in redirects.front.hits if h.path.startswith("/local/")]
    assert len(local) == len(redirects.image.blobs())
    assert all(h.authorization is not None for h in local)


async def test_resumed_redirected_blob_never_carries_credentials(redirects: Redirects) -> None:
    """A body that breaks at the store is resumed through the registry again: still no credentials."""
    redirects.front.redirect = "other-name"
    layer = max(redirects.image.layers, key=lambda l: l.size)
    redirects.store.drop_once.add(layer.digest)
    ref = reference.parse(redirects.ref, TAG)
    desc = Descriptor(layer.media_type, layer.digest, layer.size)
    options = ClientOptions(username=USERNAME, password=PASSWORD, retries=3, backoff=0.01)
    async with RegistryClient(options) as client:
        body = b"".join([chunk async for chunk in client.blob_chunks(ref, desc)])
    assert hashlib.sha256(body).hexdigest() == layer.digest[7:]
    hits = [h for h in redirects.store.hits if layer.digest in h.path]
    assert len(hits) == 2 and hits[0].range is None and hits[1].range is not None
    assert [h.authorization for h in hits] == [None, None]
    assert len([h for h in redirects.front.hits if layer.digest in h.path and h.authorization]) == 2
