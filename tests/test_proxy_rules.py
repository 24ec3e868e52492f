"""Which proxy a request goes through: the environment as curl and Go read it (pure, no I/O)."""

from __future__ import annotations

import pytest

from occystrap.errors import UsageError
from occystrap.registry.proxy import Proxy, bypassed, parse_proxy, proxy_for

P = "http://proxy.corp:3128"
Q = "http://other.corp:8080"


@pytest.mark.parametrize(
    ("url", "environ", "explicit", "want"),
    [
        # The scheme picks the variable; ALL_PROXY is the fallback for both.
        ("https://ghcr.io/v2/", {"HTTPS_PROXY": P}, None, P),
        ("https://ghcr.io/v2/", {"HTTP_PROXY": P}, None, None),
        ("http://ghcr.io/v2/", {"HTTP_PROXY": P}, None, P),
        ("http://ghcr.io/v2/", {"HTTPS_PROXY": P}, None, None),
        ("https://ghcr.io/v2/", {"ALL_PROXY": P}, None, P),
        ("http://ghcr.io/v2/", {"all_proxy": P}, None, P),
        ("https://ghcr.io/v2/", {"HTTPS_PROXY": P, "ALL_PROXY": Q}, None, P),
        # Lowercase wins over uppercase; an empty value counts as unset.
        ("https://ghcr.io/v2/", {"https_proxy": P, "HTTPS_PROXY": Q}, None, P),
        ("http://ghcr.io/v2/", {"http_proxy": P, "HTTP_PROXY": Q}, None, P),
        ("https://ghcr.io/v2/", {"https_proxy": "", "HTTPS_PROXY": Q}, None, Q),
        ("https://ghcr.io/v2/", {}, None, None),
        # A bare host:port is an HTTP proxy, as both curl and Go take it.
        ("https://ghcr.io/v2/", {"HTTPS_PROXY": "proxy.corp:3128"}, None, P),
        # --proxy overrides the variables, but NO_PROXY still applies (curl's -x does the same).
        ("https://ghcr.io/v2/", {"HTTPS_PROXY": Q}, P, P),
        ("http://ghcr.io/v2/", {}, P, P),
        ("https://ghcr.io/v2/", {"NO_PROXY": "ghcr.io"}, P, None),
        # Loopback is never proxied, as in Go: a registry on this machine is reached directly.
        ("http://127.0.0.1:5000/v2/", {"HTTP_PROXY": P}, None, None),
        ("http://localhost:5000/v2/", {"HTTP_PROXY": P}, None, None),
        ("http://[::1]:5000/v2/", {"HTTP_PROXY": P}, P, None),
        # NO_PROXY, either case, lowercase first.
        ("https://ghcr.io/v2/", {"HTTPS_PROXY": P, "no_proxy": "ghcr.io"}, None, None),
        ("https://ghcr.io/v2/", {"HTTPS_PROXY": P, "NO_PROXY": "ghcr.io"}, None, None),
        ("https://ghcr.io/v2/", {"HTTPS_PROXY": P, "no_proxy": "quay.io", "NO_PROXY": "ghcr.io"}, None, P),
        ("https://ghcr.io/v2/", {"HTTPS_PROXY": P, "NO_PROXY": "*"}, None, None),
    ],
)
def test_proxy_for(url: str, environ: dict[str, str], explicit: str | None, want: str | None) -> None:
    found = proxy_for(url, environ, explicit)
    assert (found.url if found else None) == want


@pytest.mark.parametrize(
    ("host", "port", "no_proxy", "want"),
    [
        ("ghcr.io", 443, "ghcr.io", True),
        ("GHCR.io", 443, "ghcr.IO", True),
        ("pkg.ghcr.io", 443, "ghcr.io", True),  # a name covers its subdomains
        ("notghcr.io", 443, "ghcr.io", False),  # ... by whole labels only
        ("ghcr.io", 443, ".ghcr.io", True),  # a leading dot: subdomains and the name (curl)
        ("a.ghcr.io", 443, ".ghcr.io", True),
        ("a.ghcr.io", 443, "*.ghcr.io", True),
        ("ghcr.io", 443, "quay.io, ghcr.io", True),  # spaces around commas
        ("ghcr.io", 443, "quay.io ghcr.io", True),  # curl also takes spaces alone
        ("ghcr.io", 443, "quay.io,,", False),
        ("ghcr.io", 443, "", False),
        ("anything", 80, "*", True),
        ("ghcr.io", 443, "ghcr.io:443", True),  # with a port: only that port
        ("ghcr.io", 5000, "ghcr.io:443", False),
        ("10.1.2.3", 5000, "10.0.0.0/8", True),  # CIDR
        ("10.1.2.3", 5000, "10.1.2.3", True),
        ("10.1.2.4", 5000, "10.1.2.3", False),
        ("192.168.1.1", 5000, "10.0.0.0/8", False),
        ("10.1.2.3", 5000, "10.1.2.3:5000", True),
        ("10.1.2.3", 5001, "10.1.2.3:5000", False),
        ("fd00::5", 5000, "fd00::/8", True),  # IPv6, bare or bracketed
        ("[fd00::5]", 5000, "[fd00::5]:5000", True),
        ("[fd00::5]", 5001, "[fd00::5]:5000", False),
        ("registry.internal", 443, "10.0.0.0/8", False),  # names are never resolved to match
    ],
)
def test_bypassed(host: str, port: int, no_proxy: str, want: bool) -> None:
    assert bypassed(host, port, no_proxy) is want


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("http://proxy.corp:3128", Proxy("http://proxy.corp:3128")),
        ("proxy.corp:3128", Proxy("http://proxy.corp:3128")),
        ("https://proxy.corp", Proxy("https://proxy.corp")),
        ("http://bob:s3cret@proxy.corp:3128", Proxy("http://proxy.corp:3128", "bob", "s3cret")),
        # Percent-encoded user names and passwords, as curl and Go decode them.
        ("http://me%40corp:p%3Ass%20w@proxy.corp:3128", Proxy("http://proxy.corp:3128", "me@corp", "p:ss w")),
        ("http://bob@proxy.corp:3128", Proxy("http://proxy.corp:3128", "bob", None)),
        ("http://[fd00::1]:3128", Proxy("http://[fd00::1]:3128")),
    ],
)
def test_parse_proxy(text: str, want: Proxy) -> None:
    assert parse_proxy(text) == want


def test_unsupported_proxies_are_one_clear_error_that_hides_the_password() -> None:
    with pytest.raises(UsageError) as caught:
        parse_proxy("socks5://bob:hunter2@proxy.corp:1080")
    assert "socks5://proxy.corp" in str(caught.value) and "hunter2" not in str(caught.value)
    with pytest.raises(UsageError):
        proxy_for("https://ghcr.io/v2/", {"ALL_PROXY": "socks5h://proxy.corp:1080"})


def test_a_proxy_never_shows_its_credentials() -> None:
    proxy = parse_proxy("http://bob:hunter2@proxy.corp:3128")
    assert "hunter2" not in repr(proxy) and "bob" not in repr(proxy) and "hunter2" not in proxy.url
