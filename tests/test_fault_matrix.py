"""Each fault against each output: the run either completes with verified content or fails cleanly."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import fails, ok
from tests.support import images
from tests.support.faultproxy import Fault, FaultProxy
from tests.support.images import BuiltImage
from tests.support.registry import Registry

REPO = "matrix/app"
TAG = "v1"

OUTPUTS = {
    "tarball": ["fetch-to-tarfile"],
    "extracted": ["fetch-to-extracted"],
    "merged": ["fetch-to-extracted", "--use-unique-names"],
    "expand": ["fetch-to-extracted", "--use-unique-names", "--expand"],
    "mirror": ["mirror"],
}


@pytest.fixture(scope="module")
def image(registry: Registry) -> BuiltImage:
    built = images.build_sample_image(fmt="oci")
    registry.push_image(REPO, TAG, built)
    return built


def _command(output: str, proxy: FaultProxy, dest: Path) -> list[str]:
    ref = f"{proxy.host}/{REPO}"
    if output == "mirror":
        return ["mirror", "-q", "--retries", "2", "--image", f"{ref}:{TAG}", str(dest)]
    return [*OUTPUTS[output], "-q", "--retries", "2", ref, TAG, str(dest)]


def _dest(tmp_path: Path, output: str) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    return work / ("out.tar" if output == "tarball" else "out")


def _visible(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if not p.name.startswith("."))


FAULTS = {
    "drop": lambda layer: Fault(match=layer.digest, drop_after=layer.size // 2),
    "503": lambda layer: Fault(match=layer.digest, status=503, retry_after=0, times=2),
    "ignore-range": lambda layer: Fault(match=layer.digest, drop_after=layer.size // 3, ignore_range=True),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
@pytest.mark.parametrize("output", sorted(OUTPUTS))
def test_recoverable_faults_complete_and_verify(
    proxy: FaultProxy, image: BuiltImage, tmp_path: Path, output: str, fault: str
) -> None:
    layer = image.layers[0]
    proxy.add(FAULTS[fault](layer))
    dest = _dest(tmp_path, output)
    ok(*_command(output, proxy, dest), env={"DOCKER_CONFIG": str(tmp_path / "none")})
    assert len(proxy.seen(layer.digest, "GET")) >= 2  # the fault really struck
    ok("verify", "-q", str(dest))


@pytest.mark.parametrize("output", sorted(OUTPUTS))
def test_corruption_fails_cleanly(proxy: FaultProxy, image: BuiltImage, tmp_path: Path, output: str) -> None:
    layer = image.layers[0]
    proxy.add(Fault(match=layer.digest, flip_at=layer.size // 2, times=None))
    dest = _dest(tmp_path, output)
    proc = fails(*_command(output, proxy, dest), env={"DOCKER_CONFIG": str(tmp_path / "none")})
    assert layer.digest in proc.stderr
    work = dest.parent
    if output == "tarball":
        assert _visible(work) == []
    else:
        # A directory may hold verified blobs, but nothing that claims to be a complete image.
        held = _visible(dest) if dest.exists() else []
        assert not {"index.json", "manifest.json", "catalog.json"} & set(held)
        assert not (dest / "blobs/sha256" / layer.digest[7:]).exists()
        assert not list(dest.rglob("*.partial"))
