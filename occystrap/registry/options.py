"""Everything a registry client can be told, in a module light enough for the CLI to build."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from occystrap.registry.auth import Credentials


@dataclass
class ClientOptions:
    username: str | None = None
    # Kept out of repr(): options reach debug logs and tracebacks that way.
    password: str | None = field(default=None, repr=False)
    insecure_registries: frozenset[str] = frozenset()
    ca_cert: Path | None = None
    connect_timeout: float = 30.0
    read_timeout: float = 60.0
    retries: int = 5
    backoff: float = 0.5
    max_backoff: float = 30.0
    connections_per_host: int = 16
    # Host name -> address, like curl's --resolve: TLS still checks the name.
    resolve: dict[str, str] = field(default_factory=dict)
    # Registry -> credentials for that registry alone (a mirror spec's `registries:`).
    credentials: dict[str, Credentials] = field(default_factory=dict, repr=False)
    # An explicit proxy for every request (--proxy); None: the *_PROXY environment.
    proxy: str | None = field(default=None, repr=False)
    # Registry -> its mirrors, tried first for pulls: `HOST[:PORT][/PREFIX]`, in order.
    mirrors: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Only credentials configured for the host itself (`credentials`, docker's config.json):
    # a mirror on another host must never get what --username or OCCYSTRAP_* meant for the origin.
    configured_credentials_only: bool = False
    # Stop before a registry's reported pull quota would fall below this (mirror --rate-limit-reserve).
    rate_limit_reserve: int | None = None
