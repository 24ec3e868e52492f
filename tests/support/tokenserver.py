"""A Docker-style bearer token server (the flow Docker Hub / ghcr.io / quay.io use).

Two forms of the token endpoint, as Docker Hub has them: `GET REALM?service=&scope=` with
optional Basic credentials (answers `token` and/or `access_token`), and the OAuth2 form docker
uses with an identity token from `docker login`: `POST REALM` with a form
`grant_type=refresh_token&refresh_token=…` or `grant_type=password&username=…&password=…`
(plus `service`, `scope`, `client_id`; `access_type=offline` also returns a `refresh_token`).
Knobs for failure tests: `fail_status` (answer 5xx), `token_field="none"` (200 without a token).

Runs aiohttp on 127.0.0.1 in a background thread with its own event loop, so
synchronous test code and the registry subprocess can both talk to it.
Tokens are ES256 JWTs with the signing certificate in the `x5c` header, which
is what distribution 2.8 verifies against its `rootcertbundle`.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import jwt
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.loopserver import LoopServer

DEFAULT_USERS = {"alice": "s3cret-PASSWORD-marker"}
PRIVILEGED_ACTIONS = ("pull", "push", "delete", "*")

# "none": a 200 answer that carries no token at all (a broken or misconfigured server).
TokenField = Literal["both", "token", "access_token", "none"]


@dataclass
class TokenRequest:
    """What one /token call asked for and got (for assertions in tests)."""

    user: str | None
    service: str | None
    scopes: list[str]
    granted: list[dict[str, Any]]
    status: int
    grant_type: str | None = None  # None for the GET form; "refresh_token" / "password" for POST
    client_id: str | None = None


@dataclass
class SigningMaterial:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def cert_b64_der(self) -> str:
        return base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER)).decode()

    @classmethod
    def generate(cls, common_name: str = "test-token-issuer") -> SigningMaterial:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=365))
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)


def parse_scope(scope: str) -> tuple[str, str, list[str]] | None:
    """'repository:team/app:pull,push' -> ('repository', 'team/app', ['pull', 'push'])."""
    typ, sep, rest = scope.partition(":")
    name, sep2, actions = rest.rpartition(":")
    if not sep or not sep2 or not name:
        return None
    return typ, name, [a for a in actions.split(",") if a]


@dataclass
class TokenServer:
    service: str = "test-registry"
    issuer: str = "test-issuer"
    users: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_USERS))
    expires_in: int = 300
    # Which JSON field(s) carry the token: real servers differ (Docker Hub sends
    # both, some send only one), so clients must accept either.
    token_field: TokenField = "both"
    signing: SigningMaterial = field(default_factory=SigningMaterial.generate)
    # Refresh tokens (docker's identity tokens) the POST form accepts, each for a user.
    refresh_tokens: dict[str, str] = field(default_factory=dict)
    # Answer every token request with this status (e.g. 503) instead of a token, for the
    # first `fail_times` requests (None: until changed).
    fail_status: int | None = None
    fail_times: int | None = None

    token_requests: int = 0
    requests: list[TokenRequest] = field(default_factory=list)
    port: int = 0

    _server: LoopServer = field(default_factory=lambda: LoopServer("tokenserver"), repr=False)

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def write_cert(self, path: Path) -> Path:
        path.write_bytes(self.signing.cert_pem)
        return path

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> TokenServer:
        self.port = self._server.start(self._app)
        return self

    async def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/token", self._handle_token)
        app.router.add_post("/token", self._handle_oauth)
        return app

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> TokenServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- request handling --------------------------------------------------

    def _authenticate(self, header: str | None) -> tuple[bool, str | None]:
        """(ok, user). No header -> anonymous (ok, None)."""
        if not header:
            return True, None
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return False, None
        try:
            user, _, password = base64.b64decode(value.strip()).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False, None
        if user in self.users and secrets.compare_digest(self.users[user], password):
            return True, user
        return False, None

    def issue(self, user: str | None, access: list[dict[str, Any]], expires_in: int | None = None) -> str:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": self.service,  # distribution 2.8 wants a plain string here
            "sub": user or "",
            "exp": now + (self.expires_in if expires_in is None else expires_in),
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(16),
            "access": access,
        }
        return jwt.encode(
            claims, self.signing.key, algorithm="ES256", headers={"x5c": [self.signing.cert_b64_der]}
        )

    def _grant(self, user: str | None, scopes: list[str]) -> list[dict[str, Any]]:
        allowed = PRIVILEGED_ACTIONS if user is not None else ("pull",)
        granted: list[dict[str, Any]] = []
        for scope in scopes:
            # Scopes may also come space-separated in one parameter.
            for part in scope.split():
                parsed = parse_scope(part)
                if parsed is None:
                    continue
                typ, name, actions = parsed
                if typ == "registry" and user is None:
                    continue  # catalog etc. only for logged-in users
                acts = [a for a in actions if a in allowed]
                if acts:
                    granted.append({"type": typ, "name": name, "actions": acts})
        return granted

    def _injected_failure(self) -> int | None:
        if self.fail_status is None or self.fail_times == 0:
            return None
        if self.fail_times is not None:
            self.fail_times -= 1
        return self.fail_status

    def _body(self, token: str, oauth: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "expires_in": self.expires_in,
            "issued_at": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        if self.token_field == "none":
            return body
        # The OAuth2 form always names it access_token; the GET form varies between servers.
        if not oauth and self.token_field in ("both", "token"):
            body["token"] = token
        if oauth or self.token_field in ("both", "access_token"):
            body["access_token"] = token
        return body

    async def _handle_token(self, request: web.Request) -> web.Response:
        self.token_requests += 1
        service = request.query.get("service")
        scopes = request.query.getall("scope", [])
        client_id = request.query.get("client_id")
        failure = self._injected_failure()
        if failure is not None:
            self.requests.append(TokenRequest(None, service, scopes, [], failure, None, client_id))
            return _error(failure, "INJECTED", f"token server says {failure}")
        ok, user = self._authenticate(request.headers.get("Authorization"))
        if not ok:
            self.requests.append(TokenRequest(None, service, scopes, [], 401, None, client_id))
            return web.json_response(
                {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
                status=401,
                headers={"WWW-Authenticate": 'Basic realm="test-token-server"'},
            )
        granted = self._grant(user, scopes)
        token = self.issue(user, granted)
        self.requests.append(TokenRequest(user, service, scopes, granted, 200, None, client_id))
        return web.json_response(self._body(token, oauth=False))

    async def _handle_oauth(self, request: web.Request) -> web.Response:
        """The OAuth2 token endpoint (RFC 6749 §6 refresh, §4.3 password), as docker calls it."""
        self.token_requests += 1
        form = await request.post()
        grant_type = str(form.get("grant_type", "")) or None
        service = _opt(form.get("service"))
        client_id = _opt(form.get("client_id"))
        scopes = [str(s) for s in form.getall("scope", [])]

        def record(user: str | None, granted: list[dict[str, Any]], status: int) -> None:
            self.requests.append(TokenRequest(user, service, scopes, granted, status, grant_type, client_id))

        failure = self._injected_failure()
        if failure is not None:
            record(None, [], failure)
            return _error(failure, "INJECTED", f"token server says {failure}")
        user: str | None = None
        if grant_type == "refresh_token":
            user = self.refresh_tokens.get(str(form.get("refresh_token", "")))
        elif grant_type == "password":
            name, password = str(form.get("username", "")), str(form.get("password", ""))
            if name in self.users and secrets.compare_digest(self.users[name], password):
                user = name
        else:
            record(None, [], 400)
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        if user is None:
            record(None, [], 401)
            return web.json_response(
                {"error": "invalid_grant", "error_description": "unknown refresh token or credentials"},
                status=401,
            )
        granted = self._grant(user, scopes)
        body = self._body(self.issue(user, granted), oauth=True)
        body["scope"] = " ".join(scopes)
        if form.get("access_type") == "offline":
            refresh = secrets.token_urlsafe(24)
            self.refresh_tokens[refresh] = user
            body["refresh_token"] = refresh
        record(user, granted, 200)
        return web.json_response(body)


def _opt(value: object) -> str | None:
    return None if value is None else str(value)


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"errors": [{"code": code, "message": message}]}, status=status)


def start_token_server(**kwargs: Any) -> TokenServer:
    return TokenServer(**kwargs).start()
