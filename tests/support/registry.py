"""Run the real CNCF distribution registry (`docker-registry`) on loopback for tests.

Also contains a small synchronous push client that handles Basic and Bearer
challenges itself, so fixtures can seed the registry without the code under test.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import bcrypt
import yaml

from .images import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
    BuiltImage,
    BuiltIndex,
    sha256_digest,
)
from .tokenserver import TokenServer

AuthMode = Literal[None, "basic", "token"]

USERNAME = "alice"
PASSWORD = "s3cret-PASSWORD-marker"
SERVICE = "test-registry"
ISSUER = "test-issuer"
BASIC_REALM = "test-basic-realm"

# Where the `sample_image` fixture pushes the sample image.
SAMPLE_REPO = "test/sample"
SAMPLE_TAG = "v1"

# One line of the gorilla "combined" access log the registry writes to stdout.
_ACCESS_RE = re.compile(
    r"^(?P<remote>\S+) \S+ \S+ \[[^\]]+\] "
    r'"(?P<method>[A-Z]+) (?P<path>\S+) [^"]*" (?P<status>\d{3}) (?P<bytes>\d+|-)'
)


class RegistryError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class AccessLogLine:
    method: str
    path: str
    status: int
    bytes: int


@dataclass
class Registry:
    host: str  # "127.0.0.1:PORT"
    auth: AuthMode
    username: str | None
    password: str | None
    log_path: Path
    workdir: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    token_server: TokenServer | None = None
    _client: RegistryClient | None = field(default=None, repr=False)
    scheme: str = "http"  # "https" when started with tls=

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}"

    @property
    def port(self) -> int:
        return int(self.host.rsplit(":", 1)[1])

    @property
    def token_requests(self) -> int:
        return self.token_server.token_requests if self.token_server else 0

    @property
    def client(self) -> RegistryClient:
        """Push/pull client using the admin credentials (if any)."""
        if self._client is None:
            self._client = RegistryClient(self.host, self.username, self.password, self.scheme == "https")
        return self._client

    def ref(self, repo: str, reference: str) -> str:
        """'127.0.0.1:PORT/repo:tag' (or '@sha256:...' for digests)."""
        sep = "@" if reference.startswith("sha256:") else ":"
        return f"{self.host}/{repo}{sep}{reference}"

    def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if self.token_server is not None:
            self.token_server.stop()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- seeding -----------------------------------------------------------

    def push_blob(self, repo: str, data: bytes) -> str:
        return self.client.push_blob(repo, data)

    def push_manifest(self, repo: str, reference: str, data: bytes, media_type: str) -> str:
        return self.client.push_manifest(repo, reference, data, media_type)

    def push_image(self, repo: str, tag: str | None, image: BuiltImage) -> str:
        """Push blobs and manifest; tag=None pushes by digest only. Returns the manifest digest."""
        for data in [image.config, *(layer.data for layer in image.layers)]:
            self.push_blob(repo, data)
        return self.push_manifest(
            repo, tag or image.manifest_digest, image.manifest, image.manifest_media_type
        )

    def push_index(self, repo: str, tag: str, index: BuiltIndex) -> str:
        for image in index.images:
            self.push_image(repo, None, image)
        return self.push_manifest(repo, tag, index.data, index.media_type)

    # -- log inspection ------------------------------------------------------

    def access_log(self) -> list[AccessLogLine]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            m = _ACCESS_RE.match(line)
            if m:
                b = m["bytes"]
                out.append(AccessLogLine(m["method"], m["path"], int(m["status"]), 0 if b == "-" else int(b)))
        return out

    def request_count(self, path_substring: str = "", method: str | None = None) -> int:
        """Requests seen so far (the access log is flushed per request)."""
        return sum(
            1
            for r in self.access_log()
            if path_substring in r.path and (method is None or r.method == method)
        )

    def bytes_served(self, path_substring: str = "") -> int:
        """Body bytes sent for successful GETs whose path contains `path_substring`."""
        return sum(
            r.bytes
            for r in self.access_log()
            if r.method == "GET" and r.status in (200, 206) and path_substring in r.path
        )


class RegistryClient:
    """Minimal synchronous registry HTTP client (one connection per request)."""

    def __init__(
        self, host: str, username: str | None = None, password: str | None = None, tls: bool = False
    ) -> None:
        self.host = host
        self.scheme = "https" if tls else "http"
        self.username = username
        self.password = password
        self._tokens: dict[str, str] = {}  # scope -> bearer token
        self._basic = False  # registry wants Basic auth

    def _basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def _raw(
        self, method: str, url: str, body: bytes | None, headers: Mapping[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        parts = urllib.parse.urlsplit(url if "://" in url else f"{self.scheme}://{self.host}{url}")
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        conn = _connection(parts.scheme, parts.netloc)
        try:
            conn.request(method, target, body=body, headers=dict(headers))
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
        finally:
            conn.close()

    def _fetch_token(self, challenge: str, scope: str) -> str:
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        query = {"service": params.get("service", "")}
        query["scope"] = params.get("scope") or scope
        url = params["realm"] + "?" + urllib.parse.urlencode(query)
        headers = {"Authorization": self._basic_header()} if self.username else {}
        status, _, body = self._raw("GET", url, None, headers)
        if status != 200:
            raise RegistryError(f"token server said {status}: {body!r}")
        doc = json.loads(body)
        return str(doc.get("token") or doc["access_token"])

    def request(
        self,
        method: str,
        url: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        scope: str = "",
    ) -> tuple[int, dict[str, str], bytes]:
        """Send a request, answering one auth challenge if the registry issues it."""
        hdrs = dict(headers or {})
        if self._basic and self.username:
            hdrs["Authorization"] = self._basic_header()
        elif scope in self._tokens:
            hdrs["Authorization"] = "Bearer " + self._tokens[scope]
        status, rh, data = self._raw(method, url, body, hdrs)
        if status != 401:
            return status, rh, data
        challenge = rh.get("www-authenticate", "")
        if challenge.lower().startswith("basic"):
            if not self.username:
                return status, rh, data
            self._basic = True
            hdrs["Authorization"] = self._basic_header()
        elif challenge.lower().startswith("bearer"):
            self._tokens[scope] = self._fetch_token(challenge, scope)
            hdrs["Authorization"] = "Bearer " + self._tokens[scope]
        else:
            return status, rh, data
        return self._raw(method, url, body, hdrs)

    @staticmethod
    def _check(status: int, body: bytes, what: str, ok: tuple[int, ...]) -> None:
        if status not in ok:
            raise RegistryError(f"{what}: HTTP {status}: {body[:500]!r}")

    def push_blob(self, repo: str, data: bytes) -> str:
        digest = sha256_digest(data)
        scope = f"repository:{repo}:pull,push"
        status, _, _ = self.request("HEAD", f"/v2/{repo}/blobs/{digest}", scope=scope)
        if status == 200:
            return digest
        status, rh, body = self.request("POST", f"/v2/{repo}/blobs/uploads/", b"", scope=scope)
        self._check(status, body, f"start upload to {repo}", (202,))
        location = rh["location"]
        sep = "&" if "?" in location else "?"
        put_url = f"{location}{sep}digest={urllib.parse.quote(digest)}"
        status, _, body = self.request(
            "PUT",
            put_url,
            data,
            {"Content-Type": "application/octet-stream", "Content-Length": str(len(data))},
            scope=scope,
        )
        self._check(status, body, f"upload {digest} to {repo}", (201,))
        return digest

    def push_manifest(self, repo: str, reference: str, data: bytes, media_type: str) -> str:
        status, rh, body = self.request(
            "PUT",
            f"/v2/{repo}/manifests/{reference}",
            data,
            {"Content-Type": media_type},
            scope=f"repository:{repo}:pull,push",
        )
        self._check(status, body, f"put manifest {repo}:{reference}", (201,))
        digest = rh.get("docker-content-digest", sha256_digest(data))
        if digest != sha256_digest(data):
            raise RegistryError(f"registry reports digest {digest}, expected {sha256_digest(data)}")
        return digest

    def get_manifest(self, repo: str, reference: str, accept: str | None = None) -> tuple[str, bytes]:
        """(content type, exact bytes) of a manifest."""
        accept = accept or ", ".join([OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST])
        status, rh, body = self.request(
            "GET",
            f"/v2/{repo}/manifests/{reference}",
            headers={"Accept": accept},
            scope=f"repository:{repo}:pull",
        )
        self._check(status, body, f"get manifest {repo}:{reference}", (200,))
        return rh.get("content-type", ""), body

    def get_blob(self, repo: str, digest: str) -> bytes:
        status, _, body = self.request("GET", f"/v2/{repo}/blobs/{digest}", scope=f"repository:{repo}:pull")
        self._check(status, body, f"get blob {repo}@{digest}", (200,))
        return body

    def delete_manifest(self, repo: str, digest: str) -> None:
        status, _, body = self.request(
            "DELETE", f"/v2/{repo}/manifests/{digest}", scope=f"repository:{repo}:pull,push,delete"
        )
        self._check(status, body, f"delete manifest {repo}@{digest}", (202,))

    def delete_blob(self, repo: str, digest: str) -> None:
        """Remove a blob link (e.g. to simulate a registry missing a layer)."""
        status, _, body = self.request(
            "DELETE", f"/v2/{repo}/blobs/{digest}", scope=f"repository:{repo}:pull,push,delete"
        )
        self._check(status, body, f"delete blob {repo}@{digest}", (202,))


def _connection(scheme: str, netloc: str, timeout: float = 30) -> http.client.HTTPConnection:
    if scheme == "https":
        # Seeding and readiness only: the code under test is what must verify certificates.
        return http.client.HTTPSConnection(netloc, timeout=timeout, context=ssl._create_unverified_context())
    return http.client.HTTPConnection(netloc, timeout=timeout)


@dataclass(frozen=True)
class TlsFiles:
    """PEM server certificate (chain) and its key, for `http.tls` in the registry config."""

    certificate: Path
    key: Path


def _write_config(
    workdir: Path, port: int, auth: AuthMode, token_server: TokenServer | None, tls: TlsFiles | None = None
) -> Path:
    config: dict[str, object] = {
        "version": 0.1,
        "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": False}},
        "storage": {
            "filesystem": {"rootdirectory": str(workdir / "storage")},
            "delete": {"enabled": True},
            "maintenance": {"uploadpurging": {"enabled": False}},
            "redirect": {"disable": True},
            "cache": {"blobdescriptor": "inmemory"},
        },
        "http": {
            "addr": f"127.0.0.1:{port}",
            # Fixed secret: silences the warning and keeps upload state stable.
            "secret": "occystrap-test-secret",
            "headers": {"X-Content-Type-Options": ["nosniff"]},
        },
        "health": {"storagedriver": {"enabled": False}},
    }
    if tls is not None:
        http_cfg = config["http"]
        assert isinstance(http_cfg, dict)
        http_cfg["tls"] = {"certificate": str(tls.certificate), "key": str(tls.key)}
    if auth == "basic":
        htpasswd = workdir / "htpasswd"
        # distribution only accepts bcrypt entries.
        hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=5)).decode()
        htpasswd.write_text(f"{USERNAME}:{hashed}\n")
        config["auth"] = {"htpasswd": {"realm": BASIC_REALM, "path": str(htpasswd)}}
    elif auth == "token":
        assert token_server is not None
        cert = token_server.write_cert(workdir / "cert.pem")
        config["auth"] = {
            "token": {
                "realm": token_server.realm,
                "service": SERVICE,
                "issuer": ISSUER,
                "rootcertbundle": str(cert),
            }
        }
    path = workdir / "config.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _wait_ready(
    proc: subprocess.Popen[bytes], host: str, log_path: Path, timeout: float, scheme: str = "http"
) -> bool:
    """True once /v2/ answers 200/401; False if the process died (e.g. port race)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        conn = _connection(scheme, host, timeout=2)
        try:
            conn.request("GET", "/v2/")
            if conn.getresponse().status in (200, 401):
                return True
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise RegistryError(
        f"registry did not start within {timeout}s; log:\n{log_path.read_text(errors='replace')}"
    )


def start_registry(
    workdir: Path, auth: AuthMode = None, timeout: float = 15.0, tls: TlsFiles | None = None
) -> Registry:
    """Start `docker-registry serve` on a free 127.0.0.1 port with storage in `workdir`.

    With `tls` it serves HTTPS only, with that certificate (see tests/support/tls.py).
    """
    binary = shutil.which("docker-registry")
    if binary is None:
        raise RegistryError("docker-registry not installed (apt-get install docker-registry)")
    workdir.mkdir(parents=True, exist_ok=True)
    token_server = None
    if auth == "token":
        token_server = TokenServer(service=SERVICE, issuer=ISSUER).start()
    log_path = workdir / "registry.log"
    # REGISTRY_* variables override the config file; don't let the host's leak in.
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    try:
        for _attempt in range(3):  # free_port() can race with other processes
            port = free_port()
            config = _write_config(workdir, port, auth, token_server, tls)
            with log_path.open("ab") as log:
                # stdout carries the access log, stderr the app log: keep both.
                proc = subprocess.Popen(
                    [binary, "serve", str(config)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    cwd=workdir,
                    env=env,
                )
            host = f"127.0.0.1:{port}"
            scheme = "https" if tls is not None else "http"
            if _wait_ready(proc, host, log_path, timeout, scheme):
                creds = auth is not None
                return Registry(
                    host=host,
                    auth=auth,
                    username=USERNAME if creds else None,
                    password=PASSWORD if creds else None,
                    log_path=log_path,
                    workdir=workdir,
                    process=proc,
                    token_server=token_server,
                    scheme=scheme,
                )
        raise RegistryError(f"registry exited during startup; log:\n{log_path.read_text(errors='replace')}")
    except BaseException:
        if token_server is not None:
            token_server.stop()
        raise
