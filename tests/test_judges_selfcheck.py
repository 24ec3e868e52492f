"""Checks that the judges (docker, podman run, runc) and the network helpers of batch 3 work.

Each test here would fail if its helper were broken: the runnable image must really run under
every runtime, the forward proxy must really carry traffic for a name only it can resolve, the
token grants must yield tokens the real registry accepts, the quota must count down.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import ssl
import sys
from collections.abc import Callable
from pathlib import Path

import aiohttp
import jwt
import pytest

from tests.support.dockerd import DockerDaemon
from tests.support.faultproxy import Fault, FaultProxy, without_realm
from tests.support.forwardproxy import ForwardProxy
from tests.support.images import (
    BuiltImage,
    build_layer,
    file,
    sha256_digest,
    write_docker_archive,
    write_oci_layout,
)
from tests.support.judges import PROXY_HOST
from tests.support.ratelimit import RateLimit
from tests.support.registry import PASSWORD, SAMPLE_REPO, SAMPLE_TAG, USERNAME, Registry
from tests.support.runnable import (
    RUNNABLE_DEFAULT_OUTPUT,
    RUNNABLE_ENTRYPOINT,
    RUNNABLE_MOTD,
    NoStaticBusybox,
    build_runnable_image,
)
from tests.support.runtime import make_reference_bundle, run_bundle
from tests.support.tls import TestCA, start_tls_registry
from tests.support.tokenserver import TokenServer
from tests.support.validators import Podman, skopeo_copy

MANIFEST_ACCEPT = "application/vnd.docker.distribution.manifest.v2+json"


# -- docker -------------------------------------------------------------------------


def test_docker_loads_a_skopeo_archive_of_a_pushed_image(
    registry: Registry, docker: DockerDaemon, runnable_image: BuiltImage, skopeo: str, tmp_path: Path
) -> None:
    registry.push_image("judges/load", "v1", runnable_image)
    name = registry.ref("judges/load", "v1")
    tar = tmp_path / "runnable.tar"
    skopeo_copy(f"docker://{name}", f"docker-archive:{tar}:{name}")
    try:
        assert docker.load(tar) == [name]
        info = docker.inspect(name)
        assert info["Id"] == runnable_image.config_digest
        assert info["RepoTags"] == [name]
        assert info["RootFS"]["Layers"] == runnable_image.diff_ids
        assert any(row["ID"] == runnable_image.config_digest for row in docker.images())
        # Entrypoint, Cmd, Env, WorkingDir and User all show in the default output.
        assert docker.run(name) == RUNNABLE_DEFAULT_OUTPUT
    finally:
        docker.rmi(name)


def test_docker_pulls_an_oci_image_from_the_registry(registry: Registry, docker: DockerDaemon) -> None:
    image = build_runnable_image(fmt="oci")
    registry.push_image("judges/pull", "v1", image)
    ref = registry.ref("judges/pull", "v1")
    try:
        assert docker.pull(ref) == image.manifest_digest
        info = docker.inspect(ref)
        assert info["Id"] == image.config_digest
        assert f"{registry.host}/judges/pull@{image.manifest_digest}" in info["RepoDigests"]
        # The command replaces Cmd; the Entrypoint (sh -c) stays.
        assert docker.run(ref, "cat /etc/motd; id -un") == RUNNABLE_MOTD + "app\n"
    finally:
        docker.rmi(ref)


def test_docker_load_rejects_a_layer_that_does_not_match_its_diff_id(
    docker: DockerDaemon, runnable_image: BuiltImage, tmp_path: Path
) -> None:
    """The judge really checks content: a tarball whose layer differs from the config fails."""
    other = build_layer([file("etc/motd", b"not what the config promised\n")])
    bad = dataclasses.replace(runnable_image, layers=[runnable_image.layers[0], other])
    tar = write_docker_archive(tmp_path / "bad.tar", bad, ["judges/bad:v1"])
    with pytest.raises(AssertionError, match="docker load -i"):
        docker.load(tar)
    assert not any(row["Repository"] == "judges/bad" for row in docker.images())


# -- runc and podman ---------------------------------------------------------------------


def test_runnable_image_is_deterministic_and_wants_a_static_busybox(runnable_image: BuiltImage) -> None:
    again = build_runnable_image(fmt="docker")
    assert (again.manifest_digest, again.config_digest) == (
        runnable_image.manifest_digest,
        runnable_image.config_digest,
    )
    # A dynamically linked binary would die in the image with a bare "no such file or directory".
    with pytest.raises(NoStaticBusybox, match="not a static ELF"):
        build_runnable_image(busybox=Path(sys.executable).resolve())


def _reference_bundle(tmp_path: Path) -> Path:
    layout = write_oci_layout(tmp_path / "oci", build_runnable_image(fmt="oci"), "v1")
    return make_reference_bundle(layout, "v1", tmp_path / "bundle")


def test_runc_runs_an_umoci_bundle(tmp_path: Path, runc: str, umoci: str) -> None:
    bundle = _reference_bundle(tmp_path)
    assert run_bundle(bundle, "judges-runc-ok") == (0, RUNNABLE_DEFAULT_OUTPUT, "")
    config = json.loads((bundle / "config.json").read_text())
    assert config["process"]["terminal"] is False  # umoci writes true; runc would want a console
    # The same id again: the first container was deleted, or runc would refuse it.
    assert run_bundle(bundle, "judges-runc-ok")[0] == 0


def test_runc_reports_exit_code_and_stderr(tmp_path: Path, runc: str, umoci: str) -> None:
    bundle = _reference_bundle(tmp_path)
    config = json.loads((bundle / "config.json").read_text())
    config["process"]["args"] = [*RUNNABLE_ENTRYPOINT, "echo out; echo err >&2; exit 3"]
    (bundle / "config.json").write_text(json.dumps(config))
    assert run_bundle(bundle) == (3, "out\n", "err\n")


def test_podman_runs_the_runnable_image(podman: Podman, runnable_image: BuiltImage, tmp_path: Path) -> None:
    name = "localhost/judges/runnable:v1"
    tar = write_docker_archive(tmp_path / "runnable.tar", runnable_image, [name])
    assert podman.load(tar) == [name]
    assert podman.run(name) == RUNNABLE_DEFAULT_OUTPUT
    assert podman.run(name, "cat /etc/motd") == RUNNABLE_MOTD


# -- forward proxy --------------------------------------------------------------------------


async def test_proxy_carries_plain_http_for_a_made_up_name(
    sample_image: tuple[Registry, BuiltImage], forward_proxy: ForwardProxy
) -> None:
    registry, image = sample_image
    url = f"http://{PROXY_HOST}:{registry.port}/v2/{SAMPLE_REPO}/manifests/{SAMPLE_TAG}"
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, proxy=forward_proxy.url, headers={"Accept": MANIFEST_ACCEPT}) as resp,
    ):
        assert resp.status == 200
        assert await resp.read() == image.manifest
    [seen] = forward_proxy.requests
    assert (seen.method, seen.target, seen.host, seen.port, seen.status) == (
        "GET",
        url,
        PROXY_HOST,
        registry.port,
        200,
    )
    assert not seen.authenticated and seen.user is None


async def test_proxy_forwards_request_bodies(registry: Registry, forward_proxy: ForwardProxy) -> None:
    """A monolithic blob upload (POST, then PUT with a body) through the proxy lands."""
    data = b"pushed through the forward proxy\n" * 1000
    digest = sha256_digest(data)
    base = f"http://{PROXY_HOST}:{registry.port}"
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{base}/v2/judges/proxied/blobs/uploads/", proxy=forward_proxy.url) as resp:
            assert resp.status == 202
            location = resp.headers["Location"]
        put = f"{location}&digest={digest}" if "?" in location else f"{location}?digest={digest}"
        async with session.put(put, data=data, proxy=forward_proxy.url) as resp:
            assert resp.status == 201, await resp.text()
    assert registry.client.get_blob("judges/proxied", digest) == data
    assert [(r.method, r.status) for r in forward_proxy.requests] == [("POST", 202), ("PUT", 201)]


async def test_proxy_from_the_environment_with_credentials(
    sample_image: tuple[Registry, BuiltImage], monkeypatch: pytest.MonkeyPatch
) -> None:
    registry, image = sample_image
    with ForwardProxy(hosts={PROXY_HOST: "127.0.0.1"}, credentials=("bob", "pr0xy pass")) as proxy:
        for k, v in proxy.env(with_credentials=True).items():
            monkeypatch.setenv(k, v)
        url = f"http://{PROXY_HOST}:{registry.port}/v2/{SAMPLE_REPO}/manifests/{SAMPLE_TAG}"
        async with (
            aiohttp.ClientSession(trust_env=True) as session,
            session.get(url, headers={"Accept": MANIFEST_ACCEPT}) as resp,
        ):
            assert resp.status == 200
            assert resp.headers["Docker-Content-Digest"] == image.manifest_digest
        [seen] = proxy.requests
        assert seen.authenticated and seen.user == "bob" and seen.status == 200


@pytest.mark.parametrize("user", ["bob", None])
async def test_proxy_wants_the_right_credentials(registry: Registry, user: str | None) -> None:
    """A wrong password, or none at all, gets 407 and never reaches the registry."""
    with ForwardProxy(hosts={PROXY_HOST: "127.0.0.1"}, credentials=("bob", "right")) as proxy:
        url = f"http://{PROXY_HOST}:{registry.port}/v2/"
        # Credentials in the proxy URL: aiohttp sends proxy_headers only with CONNECT.
        proxy_url = proxy.url_with_credentials(user, "wrong") if user else proxy.url
        before = registry.request_count("/v2/")
        async with (
            aiohttp.ClientSession() as session,
            session.get(url, proxy=proxy_url) as resp,
        ):
            assert resp.status == 407
            assert resp.headers["Proxy-Authenticate"].startswith("Basic ")
        [seen] = proxy.requests
        assert (seen.host, seen.status, seen.authenticated) == (PROXY_HOST, 407, False)
        assert seen.user == user
        assert registry.request_count("/v2/") == before


async def test_proxy_tunnels_connect_to_a_tls_registry(tmp_path: Path, forward_proxy: ForwardProxy) -> None:
    from tests.conftest import require_tool

    require_tool("docker-registry")
    ca = TestCA.create()
    with start_tls_registry(tmp_path / "reg", ca.issue_server(tmp_path / "tls", [PROXY_HOST])) as reg:
        context = ssl.create_default_context(cafile=str(ca.write_ca(tmp_path / "ca.pem")))
        target = f"{PROXY_HOST}:{reg.port}"
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"https://{target}/v2/", proxy=forward_proxy.url, ssl=context) as resp,
        ):
            assert resp.status == 200
            assert resp.headers["Docker-Distribution-Api-Version"] == "registry/2.0"
    [seen] = forward_proxy.requests
    assert (seen.method, seen.target, seen.status) == ("CONNECT", target, 200)


async def test_proxy_refuses_names_it_does_not_know(forward_proxy: ForwardProxy) -> None:
    """Nothing leaves the machine: an unmapped name is answered 502 by the proxy itself."""
    async with (
        aiohttp.ClientSession() as session,
        session.get("http://elsewhere.invalid/v2/", proxy=forward_proxy.url) as resp,
    ):
        assert resp.status == 502
    assert [(r.host, r.status) for r in forward_proxy.requests] == [("elsewhere.invalid", 502)]


# -- token server -------------------------------------------------------------------------------


def _post_form(realm: str, form: dict[str, str]) -> tuple[int, dict[str, object]]:
    from urllib.parse import urlencode, urlsplit

    parts = urlsplit(realm)
    conn = http.client.HTTPConnection(parts.netloc, timeout=10)
    try:
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        conn.request("POST", parts.path, body=urlencode(form), headers=headers)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    finally:
        conn.close()


def _registry_get(reg: Registry, path: str, token: str) -> int:
    conn = http.client.HTTPConnection(reg.host, timeout=10)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def test_refresh_token_grant_gives_a_token_the_registry_accepts(
    registry_factory: Callable[..., Registry], sample_built_image: BuiltImage
) -> None:
    reg = registry_factory("token")
    reg.push_image("judges/private", "v1", sample_built_image)
    server = reg.token_server
    assert server is not None
    server.refresh_tokens["identity-token-1"] = USERNAME
    form = {
        "grant_type": "refresh_token",
        "refresh_token": "identity-token-1",
        "service": server.service,
        "scope": "repository:judges/private:pull",
        "client_id": "occystrap",
    }
    status, body = _post_form(server.realm, form)
    assert status == 200 and "token" not in body
    token = str(body["access_token"])
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["sub"] == USERNAME
    assert claims["access"] == [{"type": "repository", "name": "judges/private", "actions": ["pull"]}]
    assert _registry_get(reg, "/v2/judges/private/tags/list", token) == 200
    last = server.requests[-1]
    assert (last.grant_type, last.client_id, last.user, last.status) == (
        "refresh_token",
        "occystrap",
        USERNAME,
        200,
    )

    status, body = _post_form(server.realm, {**form, "refresh_token": "not-known"})
    assert status == 401 and "access_token" not in body
    assert server.requests[-1].status == 401


def test_password_grant_and_offline_refresh_token() -> None:
    with TokenServer() as server:
        form = {
            "grant_type": "password",
            "username": USERNAME,
            "password": PASSWORD,
            "service": server.service,
        }
        status, body = _post_form(server.realm, {**form, "access_type": "offline"})
        assert status == 200 and body["access_token"]
        refresh = str(body["refresh_token"])
        status, body = _post_form(server.realm, {"grant_type": "refresh_token", "refresh_token": refresh})
        assert status == 200 and body["access_token"]
        assert _post_form(server.realm, {**form, "password": "wrong"})[0] == 401
        assert _post_form(server.realm, {**form, "grant_type": "client_credentials"})[0] == 400
        grants = [(r.grant_type, r.status) for r in server.requests]
        assert grants == [
            ("password", 200),
            ("refresh_token", 200),
            ("password", 401),
            ("client_credentials", 400),
        ]


def _get_token(server: TokenServer) -> tuple[int, dict[str, object]]:
    conn = http.client.HTTPConnection(f"127.0.0.1:{server.port}", timeout=10)
    try:
        conn.request("GET", "/token?service=test-registry&scope=repository:a/b:pull")
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def test_token_server_failure_knobs() -> None:
    with TokenServer(fail_status=503, fail_times=1) as server:
        assert _get_token(server)[0] == 503
        status, body = _get_token(server)
        assert status == 200 and body["token"] == body["access_token"]
        assert [(r.grant_type, r.status) for r in server.requests] == [(None, 503), (None, 200)]
        server.token_field = "none"
        status, body = _get_token(server)
        assert status == 200 and "token" not in body and "access_token" not in body
        form = {"grant_type": "password", "username": USERNAME, "password": PASSWORD}
        status, body = _post_form(server.realm, form)
        assert status == 200 and "access_token" not in body


def test_challenge_without_realm_through_the_fault_proxy(token_registry: Registry) -> None:
    challenge = 'Bearer realm="http://127.0.0.1:1/token",service="test-registry",scope="repository:a/b:pull"'
    assert without_realm(challenge) == 'Bearer service="test-registry",scope="repository:a/b:pull"'
    with FaultProxy(token_registry.url) as proxy:
        proxy.add(Fault(match="/v2/", method=None, times=None, rewrite_challenge=without_realm))
        conn = http.client.HTTPConnection(proxy.host, timeout=10)
        try:
            conn.request("GET", "/v2/")
            resp = conn.getresponse()
            resp.read()
        finally:
            conn.close()
    assert resp.status == 401
    header = resp.getheader("WWW-Authenticate") or ""
    assert header.startswith("Bearer ") and 'service="test-registry"' in header
    assert "realm" not in header


# -- rate limits ------------------------------------------------------------------------------


def _request(proxy: FaultProxy, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(proxy.host, timeout=10)
    try:
        conn.request(method, path, headers={"Accept": MANIFEST_ACCEPT})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def test_rate_limit_counts_manifest_gets_down_like_docker_hub(
    sample_image: tuple[Registry, BuiltImage],
) -> None:
    registry, image = sample_image
    manifest = f"/v2/{SAMPLE_REPO}/manifests/{SAMPLE_TAG}"
    with FaultProxy(registry.url) as proxy:
        quota = RateLimit(limit=2)
        proxy.set_rate_limit(quota)

        def remaining(method: str) -> tuple[int, str]:
            status, headers, _ = _request(proxy, method, manifest)
            assert headers["ratelimit-limit"] == "2;w=21600"
            assert headers["docker-ratelimit-source"] == "127.0.0.1"
            return status, headers["ratelimit-remaining"]

        assert remaining("HEAD") == (200, "2;w=21600")  # HEAD is free
        assert remaining("GET") == (200, "1;w=21600")
        assert remaining("GET") == (200, "0;w=21600")
        status, headers, body = _request(proxy, "GET", manifest)
        assert status == 429 and headers["ratelimit-remaining"] == "0;w=21600"
        assert json.loads(body)["errors"][0]["code"] == "TOOMANYREQUESTS"
        assert remaining("HEAD") == (200, "0;w=21600")  # a spent quota still answers HEAD
        status, headers, _ = _request(proxy, "GET", f"/v2/{SAMPLE_REPO}/blobs/{image.config_digest}")
        assert status == 200 and "ratelimit-remaining" not in headers  # blobs are not counted
        assert (quota.counted, quota.refused) == (2, 1)
        quota.refill()
        assert remaining("GET") == (200, "1;w=21600")


def test_rate_limit_ietf_style(sample_image: tuple[Registry, BuiltImage]) -> None:
    registry, _ = sample_image
    manifest = f"/v2/{SAMPLE_REPO}/manifests/{SAMPLE_TAG}"
    with FaultProxy(registry.url) as proxy:
        proxy.set_rate_limit(RateLimit(limit=1, style="ietf", reset=120, retry_after=7))
        status, headers, _ = _request(proxy, "GET", manifest)
        assert status == 200
        assert (headers["ratelimit-limit"], headers["ratelimit-remaining"]) == ("1", "0")
        assert (headers["ratelimit-reset"], headers["ratelimit-policy"]) == ("120", "1;w=21600")
        status, headers, _ = _request(proxy, "GET", manifest)
        assert status == 429 and headers["retry-after"] == "7"
        assert proxy.seen("/manifests/")[-1].status == 429
