"""Proxies, end to end: the CLI reaches registries through a real forward proxy on loopback.

The registry is named by a host name only the proxy resolves (`registry.example`), so a run
that succeeds must have gone through the proxy; the proxy's log shows every request. HTTPS
goes through CONNECT to a TLS registry; proxy credentials come from the proxy URL and never
appear in any output; NO_PROXY sends a host around the proxy.
"""

from __future__ import annotations

import base64
import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import error_line, fails, occystrap, ok
from tests.support import images
from tests.support.forwardproxy import ForwardProxy
from tests.support.images import BuiltImage
from tests.support.judges import PROXY_HOST
from tests.support.registry import SAMPLE_REPO, SAMPLE_TAG, Registry
from tests.support.tls import TestCA, start_tls_registry

PROXY_USER = "bob"
PROXY_SECRET = "pr0xy-SECRET-marker"
_PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


def _env(tmp_path: Path, **proxy_vars: str) -> dict[str, str]:
    """No credentials or proxies from the host; then the proxy variables the test names."""
    env = {
        "DOCKER_CONFIG": str(tmp_path / "no-docker-config"),
        "XDG_CONFIG_HOME": str(tmp_path / "no-config"),
        "OCCYSTRAP_PASSWORD": "",
    }
    for name in _PROXY_VARS:
        env[name] = env[name.lower()] = ""
    env.update(proxy_vars)
    return env


def _tarball_manifest(out: Path) -> list[dict[str, object]]:
    with tarfile.open(out) as tf:
        member = tf.extractfile("manifest.json")
        assert member is not None
        return json.loads(member.read())  # type: ignore[no-any-return]


def _secret_free(*texts: str) -> None:
    basic = base64.b64encode(f"{PROXY_USER}:{PROXY_SECRET}".encode()).decode()
    for text in texts:
        assert PROXY_SECRET not in text and basic not in text


# --- plain HTTP through the proxy, by a name only the proxy knows --------------------------


@pytest.mark.parametrize("how", ["environment", "lowercase", "all_proxy", "--proxy"])
def test_fetch_reaches_the_registry_only_through_the_proxy(
    sample_image: tuple[Registry, BuiltImage], forward_proxy: ForwardProxy, tmp_path: Path, how: str
) -> None:
    registry, image = sample_image
    host = f"{PROXY_HOST}:{registry.port}"
    variables = {
        "environment": {"HTTP_PROXY": forward_proxy.url, "HTTPS_PROXY": forward_proxy.url},
        "lowercase": {"http_proxy": forward_proxy.url, "https_proxy": forward_proxy.url},
        "all_proxy": {"ALL_PROXY": forward_proxy.url},
        "--proxy": {},
    }[how]
    extra = ["--proxy", forward_proxy.url] if how == "--proxy" else []
    out = tmp_path / "out.tar"
    args = ["fetch-to-tarfile", "-q", *extra, "--insecure-registry", host, f"{host}/{SAMPLE_REPO}"]
    ok(*args, SAMPLE_TAG, str(out), env=_env(tmp_path, **variables))
    assert _tarball_manifest(out)[0]["RepoTags"] == [f"{host}/{SAMPLE_REPO}:{SAMPLE_TAG}"]
    ok("verify", str(out))
    seen = forward_proxy.requests
    assert {r.host for r in seen} == {PROXY_HOST}
    gets = [r.target for r in seen if r.method == "GET" and r.status == 200]
    assert f"http://{host}/v2/{SAMPLE_REPO}/manifests/{SAMPLE_TAG}" in gets
    assert {f"http://{host}/v2/{SAMPLE_REPO}/blobs/{l.digest}" for l in image.layers} <= set(gets)


def test_without_the_proxy_the_made_up_name_fails_in_one_line(
    sample_image: tuple[Registry, BuiltImage], tmp_path: Path
) -> None:
    registry, _ = sample_image
    host = f"{PROXY_HOST}:{registry.port}"
    proc = fails(
        "fetch-to-tarfile", "--retries", "0", "--insecure-registry", host, f"{host}/{SAMPLE_REPO}",
        SAMPLE_TAG, str(tmp_path / "out.tar"), env=_env(tmp_path),
    )  # fmt: skip
    assert proc.returncode == 5
    line = error_line(proc.stderr)
    assert "cannot resolve" in line and PROXY_HOST in line
    assert not (tmp_path / "out.tar").exists()


def test_mirror_goes_through_the_proxy(
    sample_image: tuple[Registry, BuiltImage], forward_proxy: ForwardProxy, tmp_path: Path
) -> None:
    registry, image = sample_image
    host = f"{PROXY_HOST}:{registry.port}"
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"images:\n  - name: {host}/{SAMPLE_REPO}\n    tags: [{SAMPLE_TAG}]\n"
                    f"registries:\n  '{host}': {{insecure: true}}\n")  # fmt: skip
    dest = tmp_path / "mirror"
    ok("mirror", "-q", str(spec), str(dest), env=_env(tmp_path, HTTP_PROXY=forward_proxy.url))
    catalog = json.loads((dest / "catalog.json").read_text())["images"]
    assert catalog[f"{host}/{SAMPLE_REPO}"][SAMPLE_TAG]["manifest_digest"] == image.manifest_digest
    ok("verify", str(dest))
    blob_gets = [r for r in forward_proxy.requests if "/blobs/" in r.target and r.method == "GET"]
    assert len(blob_gets) == len(image.layers) + 1  # every layer and the config, once each
    assert {r.host for r in forward_proxy.requests} == {PROXY_HOST}

    # Without the proxy the name resolves nowhere: one line, exit 5, DEST as it was.
    proc = fails("mirror", "--retries", "0", str(spec), str(tmp_path / "other"), env=_env(tmp_path))
    assert proc.returncode == 5
    assert "cannot resolve" in error_line(proc.stderr) and PROXY_HOST in error_line(proc.stderr)


# --- HTTPS through CONNECT ---------------------------------------------------------------


@dataclass
class TlsBehindProxy:
    registry: Registry
    ca_pem: Path
    image: BuiltImage

    @property
    def host(self) -> str:
        return f"{PROXY_HOST}:{self.registry.port}"


@pytest.fixture(scope="module")
def tls_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBehindProxy]:
    """A TLS registry whose certificate names registry.example, a name only the proxy knows."""
    from tests.conftest import require_tool

    require_tool("docker-registry")
    base = tmp_path_factory.mktemp("tls-proxy")
    ca = TestCA.create()
    reg = start_tls_registry(base / "registry", ca.issue_server(base / "server", [PROXY_HOST]))
    try:
        image = images.build_sample_image()
        reg.push_image(SAMPLE_REPO, SAMPLE_TAG, image)
        yield TlsBehindProxy(reg, ca.write_ca(base / "ca.pem"), image)
    finally:
        reg.stop()


def test_https_goes_through_a_connect_tunnel(
    tls_registry: TlsBehindProxy, forward_proxy: ForwardProxy, tmp_path: Path
) -> None:
    out = tmp_path / "out.tar"
    ok(
        "fetch-to-tarfile", "-q", "--ca-cert", str(tls_registry.ca_pem), f"{tls_registry.host}/{SAMPLE_REPO}",
        SAMPLE_TAG, str(out), env=_env(tmp_path, HTTPS_PROXY=forward_proxy.url),
    )  # fmt: skip
    ok("verify", str(out))
    seen = forward_proxy.requests
    assert seen and all((r.method, r.target, r.status) == ("CONNECT", tls_registry.host, 200) for r in seen)
    # The TLS inside the tunnel was real: the registry served the blobs over it.
    assert tls_registry.registry.request_count("/blobs/sha256:", "GET") >= len(tls_registry.image.layers)


# --- proxy credentials -------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_proxy_credentials_from_the_url_and_never_shown(
    sample_image: tuple[Registry, BuiltImage], tls_registry: TlsBehindProxy, tmp_path: Path, scheme: str
) -> None:
    registry, _ = sample_image
    host = f"{PROXY_HOST}:{registry.port}" if scheme == "http" else tls_registry.host
    target = ["--insecure-registry", host] if scheme == "http" else ["--ca-cert", str(tls_registry.ca_pem)]
    with ForwardProxy(hosts={PROXY_HOST: "127.0.0.1"}, credentials=(PROXY_USER, PROXY_SECRET)) as proxy:
        variable = "HTTP_PROXY" if scheme == "http" else "HTTPS_PROXY"
        runs = iter(range(3))

        def run(proxy_url: str) -> tuple[int, str, str, Path]:
            out = tmp_path / f"out-{next(runs)}.tar"
            env = _env(tmp_path, **{variable: proxy_url})
            proc = occystrap("fetch-to-tarfile", "-v", "--progress", "plain", "--retries", "0", *target,
                             f"{host}/{SAMPLE_REPO}", SAMPLE_TAG, str(out), env=env)  # fmt: skip
            _secret_free(proc.stdout, proc.stderr)
            return proc.returncode, proc.stderr, proc.stdout, out

        code, stderr, _, out = run(proxy.url_with_credentials())
        assert code == 0, stderr
        assert proxy.requests and all(r.authenticated and r.user == PROXY_USER for r in proxy.requests)
        ok("verify", str(out))

        proxy.clear()
        code, stderr, _, out = run(proxy.url_with_credentials(PROXY_USER, "wrong-" + PROXY_SECRET))
        assert code == 4 and "Traceback" not in stderr.split("occystrap: error:")[-1]
        line = error_line(stderr)
        assert "refused the credentials in the proxy URL (HTTP 407)" in line and "127.0.0.1" in line
        assert [r.status for r in proxy.requests] == [407]  # no retries against a refusal
        assert not out.exists()

        proxy.clear()
        code, stderr, _, _ = run(proxy.url)
        assert code == 4
        assert "requires credentials (HTTP 407)" in error_line(stderr)


# --- NO_PROXY ------------------------------------------------------------------------------


@pytest.mark.parametrize(("no_proxy", "through_proxy"), [(PROXY_HOST, False), (".example", False),
                                                          ("other.example", True)])  # fmt: skip
def test_no_proxy_sends_a_host_around_the_proxy(
    sample_image: tuple[Registry, BuiltImage],
    forward_proxy: ForwardProxy,
    tmp_path: Path,
    no_proxy: str,
    through_proxy: bool,
) -> None:
    registry, _ = sample_image
    host = f"{PROXY_HOST}:{registry.port}"
    out = tmp_path / "out.tar"
    # --resolve makes the name reachable without the proxy, so only NO_PROXY decides the way.
    ok(
        "fetch-to-tarfile", "-q", "--resolve", f"{PROXY_HOST}=127.0.0.1", "--insecure-registry", host,
        f"{host}/{SAMPLE_REPO}", SAMPLE_TAG, str(out),
        env=_env(tmp_path, HTTP_PROXY=forward_proxy.url, HTTPS_PROXY=forward_proxy.url, NO_PROXY=no_proxy),
    )  # fmt: skip
    assert bool(forward_proxy.requests) is through_proxy
