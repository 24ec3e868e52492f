"""Keeps aiohttp's import from loading the system CA store, which nothing here uses.

aiohttp builds a verified and an unverified SSL context when it is imported; each
loads the system CA bundle (about 30 ms apiece, a fifth of our start-up). Every
request this client makes passes its own `ssl=`: a context built on first HTTPS use
(`RegistryClient._verified_ssl`), or False for an insecure registry, which uses
aiohttp's unverified context and needs no CA store. So during the import those two
contexts are built without loading one. Should aiohttp ever use its verified default
after all, it holds no CA and refuses every certificate: this fails closed.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def _bare_context(*args: Any, **kwargs: Any) -> ssl.SSLContext:
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


def _no_default_paths(self: ssl.SSLContext) -> None:
    return None


@contextmanager
def cheap_default_contexts() -> Iterator[None]:
    create = ssl.create_default_context
    ssl.create_default_context = _bare_context
    ssl.SSLContext.set_default_verify_paths = _no_default_paths  # type: ignore[method-assign]
    try:
        yield
    finally:
        ssl.create_default_context = create
        del ssl.SSLContext.set_default_verify_paths  # the C base class's method shows again
