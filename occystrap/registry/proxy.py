"""Which proxy a URL goes through: HTTPS_PROXY / HTTP_PROXY / ALL_PROXY / NO_PROXY as curl and
Go read them.

Pure logic over an environment mapping. Lowercase names win over uppercase (curl reads
only `http_proxy` in lowercase, Go both); ALL_PROXY (curl's) is the fallback for either
scheme. NO_PROXY entries are host names (a leading dot or `*.` matches subdomains, and the
bare name too, as curl has it), IP addresses, CIDR ranges, optionally with a port, or `*`
for everything. NO_PROXY applies to an explicit `--proxy` too, as it does to curl's `-x`.
Loopback hosts are never proxied, as in Go: a registry on this machine is reached directly.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from occystrap.errors import UsageError
from occystrap.reference import is_loopback_host


@dataclass(frozen=True)
class Proxy:
    url: str  # without credentials
    username: str | None = None
    password: str | None = None

    def __repr__(self) -> str:
        return f"Proxy({self.url!r})"  # never the credentials


def parse_proxy(text: str) -> Proxy:
    if "://" not in text:
        text = "http://" + text  # curl and Go take a bare host:port as an HTTP proxy
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"unsupported proxy URL {_shown(text)!r} (http://[user:password@]host:port)")
    netloc = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    if parts.port:
        netloc += f":{parts.port}"
    user = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    return Proxy(f"{parts.scheme}://{netloc}", user, password)


def _shown(text: str) -> str:
    parts = urlsplit(text)
    return parts._replace(netloc=parts.hostname or "").geturl()


def _env(environ: Mapping[str, str], name: str) -> str:
    return environ.get(name.lower()) or environ.get(name.upper()) or ""


def bypassed(host: str, port: int | None, no_proxy: str) -> bool:
    host = host.strip("[]").lower()
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    # curl also takes spaces between entries; Go only commas.
    for raw in no_proxy.replace(" ", ",").split(","):
        item = raw.strip().lower()
        if not item:
            continue
        if item == "*":
            return True
        name, want_port = item, None
        if item.count(":") == 1 or (item.startswith("[") and "]:" in item):
            name, _, port_text = item.rpartition(":")
            want_port = int(port_text) if port_text.isdigit() else None
        name = name.strip("[]")
        if want_port is not None and port != want_port:
            continue
        if address is not None:
            try:
                if address in ipaddress.ip_network(name, strict=False):
                    return True
            except ValueError:
                pass
            continue
        name = name.removeprefix("*").lstrip(".")
        if host == name or host.endswith("." + name):
            return True
    return False


def proxy_for(url: str, environ: Mapping[str, str], explicit: str | None = None) -> Proxy | None:
    """The proxy for url, or None to go direct."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if is_loopback_host(host if ":" not in host else f"[{host}]"):
        return None
    if bypassed(host, parts.port or (443 if parts.scheme == "https" else 80), _env(environ, "no_proxy")):
        return None
    if explicit:
        return parse_proxy(explicit)
    value = _env(environ, "https_proxy") if parts.scheme == "https" else _env(environ, "http_proxy")
    value = value or _env(environ, "all_proxy")
    return parse_proxy(value) if value else None
