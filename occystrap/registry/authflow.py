"""How to authenticate to each registry: its ping, its challenge, tokens cached per scope.

Bearer tokens come from the realm the registry names: a GET with Basic credentials (or
anonymous), or for an identity token the OAuth2 refresh-token grant (a form POST), as
docker does. Tokens are refreshed a little before they expire, judged by an injectable
clock. What to say when the registry refuses is decided here too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit

from occystrap.errors import AuthError, NotFoundError, TransferError
from occystrap.model import load_json
from occystrap.reference import Reference
from occystrap.registry import auth
from occystrap.registry.options import ClientOptions
from occystrap.registry.retry import RETRY_STATUSES, RetryPolicy, for_status
from occystrap.registry.transport import SSLArg, Transport, safe_url

# The OAuth2 client id docker sends; some token servers insist on one.
CLIENT_ID = "occystrap"
DEFAULT_TOKEN_LIFETIME = 60.0


@dataclass
class HostState:
    """What we learned about one registry: how to reach it and how to authenticate."""

    registry: str
    base_url: str
    ssl: SSLArg
    credentials: auth.Credentials | None
    challenge: auth.Challenge | None = None
    # Bearer tokens are credentials: never in repr() (logs, tracebacks).
    tokens: dict[str, tuple[str, float]] = field(default_factory=dict, repr=False)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    pinged: bool = False


def scope_for(ref: Reference, push: bool = False, mount_from: str | None = None) -> str:
    scope = f"repository:{ref.repository}:{'pull,push' if push else 'pull'}"
    if mount_from and mount_from != ref.repository:
        scope += f" repository:{mount_from}:pull"
    return scope


def pick_challenge(header: str, current: auth.Challenge | None = None) -> auth.Challenge | None:
    challenges = auth.parse_challenges(header)
    return next(
        (c for c in challenges if c.scheme == "bearer"),
        next((c for c in challenges if c.scheme == "basic"), current),
    )


class Authenticator:
    def __init__(
        self,
        transport: Transport,
        options: ClientOptions,
        retry: RetryPolicy,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.transport = transport
        self.options = options
        self.retry = retry
        self._clock = clock
        self._hosts: dict[str, HostState] = {}

    def host(self, ref: Reference) -> HostState:
        host = self._hosts.get(ref.registry)
        if host is None:
            insecure = ref.registry in self.options.insecure_registries
            ssl_arg: SSLArg
            if ref.is_loopback:
                base, ssl_arg = f"http://{ref.api_host}", False
            elif insecure:
                base, ssl_arg = f"https://{ref.api_host}", False
            else:
                base, ssl_arg = f"https://{ref.api_host}", self.transport.verified_ssl
            creds = self.options.credentials.get(ref.registry)
            if creds is None and self.options.configured_credentials_only:
                creds = auth.from_docker_config(ref.registry)
            elif creds is None:
                creds = auth.resolve_credentials(ref.registry, self.options.username, self.options.password)
            host = HostState(ref.registry, base, ssl_arg, creds)
            self._hosts[ref.registry] = host
        return host

    async def ping(self, ref: Reference) -> HostState:
        """Learn how the registry wants us to authenticate, and whether it is there at all."""
        host = self.host(ref)
        async with host.lock:
            if host.pinged:
                return host
            try:
                await self.retry.run(lambda: self._ping_once(host), f"{host.base_url}/v2/")
            except TransferError as exc:
                insecure = ref.registry in self.options.insecure_registries
                if insecure and host.base_url.startswith("https://"):
                    # Docker's rule for insecure registries: TLS first, then plain HTTP.
                    host.base_url = "http://" + host.base_url.removeprefix("https://")
                    await self.retry.run(lambda: self._ping_once(host), f"{host.base_url}/v2/")
                else:
                    raise TransferError(f"cannot reach registry {ref.registry}: {exc}") from None
            host.pinged = True
        return host

    async def _ping_once(self, host: HostState) -> None:
        url = f"{host.base_url}/v2/"
        async with self.transport.exchange("GET", url, {}, host.ssl) as resp:
            if resp.status == 401:
                host.challenge = pick_challenge(resp.headers.get("WWW-Authenticate", ""))
            elif resp.status in RETRY_STATUSES:
                raise for_status(resp.status, resp.headers.get("Retry-After"))
            elif resp.status == 404:
                raise NotFoundError(f"{url} is not a registry API endpoint (HTTP 404)")
            elif resp.status >= 400 and resp.status != 403:
                raise TransferError(f"registry ping {url} failed: HTTP {resp.status}")

    async def header(self, ref: Reference, host: HostState, scope: str) -> str | None:
        """The Authorization header for a request in scope, fetching a token if need be."""
        challenge = host.challenge
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            if host.credentials is None:
                raise AuthError(f"{ref.registry} requires credentials (use --username/--password)")
            if host.credentials.identity_token is not None:
                raise AuthError(
                    f"{ref.registry} asks for Basic auth, but only an identity token is configured"
                )
            return host.credentials.basic_header()
        if challenge.scheme != "bearer":
            raise AuthError(f"{ref.registry} asks for unsupported auth scheme {challenge.scheme!r}")
        cached = host.tokens.get(scope)
        if cached and cached[1] > self._clock():
            return f"Bearer {cached[0]}"
        token, lifetime = await self._fetch_token(ref, host, challenge, scope)
        # Refresh a little early so a token never expires mid-request.
        host.tokens[scope] = (token, self._clock() + max(lifetime - 10, lifetime / 2))
        return f"Bearer {token}"

    def refused(self, ref: Reference, host: HostState, scope: str, header: str, first: bool) -> bool:
        """A 401: whether to try once more (with a fresh token or a newly learned challenge)."""
        if first and host.challenge is not None and host.challenge.scheme == "bearer":
            # The token may have been revoked or expired early: fetch a fresh one once.
            host.tokens.pop(scope, None)
            host.challenge = pick_challenge(header, host.challenge)
            return True
        if host.challenge is None:
            host.challenge = pick_challenge(header)
            if host.challenge is not None and first:
                return True
        return False

    def refusal(self, ref: Reference, host: HostState, scope: str, status: int) -> AuthError:
        """One line saying who was refused what, for a final 401 or a 403."""
        wants = "push to" if "push" in scope.split(" ")[0] else "pull from"
        if status == 403:
            return AuthError(
                f"{ref.registry} denied access to {wants} {ref.repository} (HTTP 403, scope {scope})"
            )
        if host.credentials is None:
            return AuthError(
                f"{ref.registry} refused anonymous access to {wants} {ref.repository}"
                " (it may not exist, or needs --username/--password)"
            )
        if host.credentials.identity_token is not None:
            return AuthError(
                f"{ref.registry} refused the access token its identity token gave,"
                f" to {wants} {ref.repository} (scope {scope})"
            )
        return AuthError(
            f"{ref.registry} refused the credentials for user {host.credentials.username!r}"
            f" to {wants} {ref.repository} (scope {scope})"
        )

    async def _fetch_token(
        self, ref: Reference, host: HostState, challenge: auth.Challenge, scope: str
    ) -> tuple[str, float]:
        realm = challenge.realm
        if not realm:
            raise AuthError(f"{ref.registry} sent a bearer challenge without a realm")
        service = challenge.params.get("service")
        ssl_arg = self.transport.ssl_for(realm, host.base_url, host.ssl)
        creds = host.credentials
        identity = creds.identity_token if creds is not None else None

        async def once() -> tuple[str, float]:
            if identity is not None:
                form = {"grant_type": "refresh_token", "refresh_token": identity, "client_id": CLIENT_ID}
                form.update({"service": service} if service else {})
                form["scope"] = scope
                headers = {"Content-Type": "application/x-www-form-urlencoded"}
                exchange = self.transport.exchange("POST", realm, headers, ssl_arg, urlencode(form).encode())
            else:
                query = [("scope", s) for s in scope.split(" ")] + ([("service", service)] if service else [])
                url = f"{realm}{'&' if '?' in realm else '?'}{urlencode(query)}"
                headers = {"Authorization": creds.basic_header()} if creds is not None else {}
                exchange = self.transport.exchange("GET", url, headers, ssl_arg)
            async with exchange as resp:
                if resp.status in (401, 403):
                    if identity is not None:
                        raise AuthError(
                            f"token server for {ref.registry} refused the identity token"
                            f" (HTTP {resp.status}); it may have expired or been revoked:"
                            f" log in again (docker login {ref.registry})"
                        )
                    who = "credentials were refused" if creds else "anonymous access refused"
                    raise AuthError(f"token server for {ref.registry}: {who} (HTTP {resp.status})")
                if resp.status in RETRY_STATUSES:
                    raise for_status(resp.status, resp.headers.get("Retry-After"))
                if resp.status != 200:
                    raise AuthError(f"token server for {ref.registry} answered HTTP {resp.status}")
                body = await resp.read()
            doc = load_json(body, f"token response from {ref.registry}")
            token = (doc.get("token") or doc.get("access_token")) if isinstance(doc, dict) else None
            if not isinstance(token, str) or not token:
                raise AuthError(f"token server for {ref.registry} returned no token")
            expires = doc.get("expires_in", DEFAULT_TOKEN_LIFETIME)
            ok = isinstance(expires, (int, float)) and not isinstance(expires, bool) and expires > 0
            return token, float(expires) if ok else DEFAULT_TOKEN_LIFETIME

        return await self.retry.run(once, safe_url(urlsplit(realm)._replace(query="").geturl()))
