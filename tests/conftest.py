"""Shared fixtures: real registries (anonymous, basic, token), the fault proxy, validator tools."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# Make `tests.support` importable whatever pytest's import mode / rootdir
# handling is (tests/ has no __init__.py, so it is not added by default).
_PROJECT_ROOT = str(Path(__file__).resolve().parent.parent)
if _PROJECT_ROOT not in sys.path:
    sys.path.insert(0, _PROJECT_ROOT)

from tests.support import images  # noqa: E402
from tests.support.faultproxy import FaultProxy  # noqa: E402
from tests.support.images import BuiltImage  # noqa: E402
from tests.support.registry import SAMPLE_REPO, SAMPLE_TAG, AuthMode, Registry, start_registry  # noqa: E402
from tests.support.validators import Podman  # noqa: E402

# docker, runc, runnable_image, forward_proxy.
pytest_plugins = ["tests.support.judges"]


def require_tool(name: str) -> str:
    """Path of binary `name`; skip the test if missing (fail instead when CI=true)."""
    path = shutil.which(name)
    if path is None:
        msg = f"{name} is not installed (apt-get install {name})"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def _session_registry(
    tmp_path_factory: pytest.TempPathFactory, auth: AuthMode, name: str
) -> Iterator[Registry]:
    require_tool("docker-registry")
    reg = start_registry(tmp_path_factory.mktemp(name), auth)
    try:
        yield reg
    finally:
        reg.stop()


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """Anonymous registry shared by the whole session (use unique repo names)."""
    yield from _session_registry(tmp_path_factory, None, "registry-anon")


@pytest.fixture(scope="session")
def basic_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """Registry behind htpasswd Basic auth (alice / s3cret-PASSWORD-marker)."""
    yield from _session_registry(tmp_path_factory, "basic", "registry-basic")


@pytest.fixture(scope="session")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """Registry with bearer-token auth; `.token_server` counts `token_requests`."""
    yield from _session_registry(tmp_path_factory, "token", "registry-token")


@pytest.fixture
def registry_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Registry]]:
    """Fresh, private registries for tests that count requests/bytes or mutate state."""
    require_tool("docker-registry")
    started: list[Registry] = []

    def factory(auth: AuthMode = None) -> Registry:
        reg = start_registry(tmp_path_factory.mktemp(f"registry-{auth or 'anon'}"), auth)
        started.append(reg)
        return reg

    try:
        yield factory
    finally:
        for reg in started:
            reg.stop()


@pytest.fixture(scope="session")
def sample_built_image() -> BuiltImage:
    """The sample 3-layer image, docker format, gzip layers."""
    return images.build_sample_image(fmt="docker", compression="gzip")


@pytest.fixture(scope="session")
def sample_image(registry: Registry, sample_built_image: BuiltImage) -> tuple[Registry, BuiltImage]:
    """The sample image pushed as test/sample:v1 to the anonymous `registry`."""
    registry.push_image(SAMPLE_REPO, SAMPLE_TAG, sample_built_image)
    return registry, sample_built_image


@pytest.fixture
def proxy(registry: Registry, image: BuiltImage) -> Iterator[FaultProxy]:
    """The fault proxy in front of `registry`, after the test module's own `image` fixture
    has pushed what the module fetches through it."""
    with FaultProxy(registry.url) as p:
        yield p


@pytest.fixture
def podman(tmp_path: Path) -> Iterator[Podman]:
    """podman with private storage under tmp_path (never the global store)."""
    require_tool("podman")
    with Podman(tmp_path / "podman") as p:
        yield p


@pytest.fixture
def skopeo() -> str:
    return require_tool("skopeo")


@pytest.fixture
def umoci() -> str:
    return require_tool("umoci")
