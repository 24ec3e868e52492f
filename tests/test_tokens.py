"""Bearer tokens against the real token-auth registry: one per scope, reused, refreshed on expiry."""

from __future__ import annotations

from occystrap import reference
from occystrap.registry.client import RegistryClient
from tests.support import images
from tests.support.registry import Registry


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_tokens_cached_per_scope_and_refreshed_on_expiry(token_registry: Registry) -> None:
    built = images.build_sample_image(fmt="oci")
    token_registry.push_image("tok/one", "v1", built)
    token_registry.push_image("tok/two", "v1", built)
    one = reference.parse(f"{token_registry.host}/tok/one", "v1")
    two = reference.parse(f"{token_registry.host}/tok/two", "v1")
    clock = FakeClock()
    async with RegistryClient(clock=clock) as client:
        start = token_registry.token_requests
        await client.get_manifest(one)
        await client.get_manifest(one)
        assert token_registry.token_requests - start == 1  # reused within its lifetime
        await client.get_manifest(two)
        assert token_registry.token_requests - start == 2  # another repository is another scope
        clock.now += 600  # the token server grants 300 s
        await client.get_manifest(one)
        assert token_registry.token_requests - start == 3  # expired: fetched afresh before use
