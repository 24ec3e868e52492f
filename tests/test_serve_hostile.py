"""`occystrap serve` over raw HTTP: the API's shape, hostile requests, stuck clients,
Basic auth, TLS, start-up errors and shutdown. Every refusal must be the spec's error."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import re
import signal
import socket
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import pytest

from tests.helpers import fails, ok
from tests.support import images
from tests.support.images import BuiltImage, Entry
from tests.support.serving import Served, access_lines, serving, start, wait_for_line, write_layout
from tests.support.tls import SERVER_NAME, TestCA

REPO = "team/app"
HOST = "127.0.0.1:5000"
TAGS = ("v1", "v2", "v3", "v4", "v5")
BIG = 12 * 1024 * 1024  # more than loopback socket buffers hold, so a reader that stops is noticed


@dataclass(frozen=True)
class Content:
    layout: Path
    app: BuiltImage
    other: BuiltImage
    secret: Path  # beside the layout, never to be served


@pytest.fixture(scope="module")
def content(tmp_path_factory: pytest.TempPathFactory) -> Content:
    base = tmp_path_factory.mktemp("serve-hostile")
    data = hashlib.shake_256(b"serve hostile").digest(BIG)
    app = images.build_image([[Entry.file("big.bin", data)]], fmt="oci", compression="none")
    other = images.build_image([[Entry.file("other.txt", b"other\n")]], fmt="oci")
    refs = {f"{HOST}/{REPO}:{tag}": app for tag in TAGS} | {f"{HOST}/team/other:v1": other}
    layout = write_layout(base / "layout", refs)
    secret = base / "secret"
    secret.write_bytes(b"not for clients\n")
    return Content(layout, app, other, secret)


@pytest.fixture(scope="module")
def served(content: Content, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    log = tmp_path_factory.mktemp("serve-hostile-log") / "serve.log"
    with serving(content.layout, "--timeout", "2", log=log) as server:
        yield server


def test_base_catalog_and_tags(served: Served) -> None:
    base = served.get("/v2/")
    assert (base.status, base.headers["docker-distribution-api-version"]) == (200, "registry/2.0")
    assert served.get("/v2/_catalog").json() == {"repositories": ["team/app", "team/other"]}
    first = served.get("/v2/_catalog?n=1")
    assert first.json() == {"repositories": ["team/app"]}
    assert first.headers["link"] == '</v2/_catalog?n=1&last=team%2Fapp>; rel="next"'
    assert served.get("/v2/_catalog?n=1&last=team%2Fapp").json() == {"repositories": ["team/other"]}
    # Tags, page by page, following Link as a client does.
    seen, path = [], f"/v2/{REPO}/tags/list?n=2"
    while path:
        page = served.get(path)
        assert page.status == 200 and page.json()["name"] == REPO
        seen += page.json()["tags"]
        path = page.headers.get("link", "").partition("<")[2].partition(">")[0]
    assert seen == list(TAGS)
    assert served.get(f"/v2/{REPO}/tags/list?n=0").json()["tags"] == []
    bad = served.get(f"/v2/{REPO}/tags/list?n=-1")
    assert (bad.status, bad.code) == (400, "PAGINATION_NUMBER_INVALID")


def test_manifests(served: Served, content: Content) -> None:
    app = content.app
    for path in (f"/v2/{REPO}/manifests/v1", f"/v2/{REPO}/manifests/{app.manifest_digest}"):
        for method in ("GET", "HEAD"):
            got = served.request(method, path)
            assert got.status == 200
            assert got.headers["content-type"] == images.OCI_MANIFEST
            assert got.headers["docker-content-digest"] == app.manifest_digest
            assert got.headers["content-length"] == str(len(app.manifest))
            assert got.body == (app.manifest if method == "GET" else b"")
    # The origin registry may lead the name, port and all.
    assert served.get(f"/v2/{HOST}/{REPO}/manifests/v2").body == app.manifest


def test_blobs_and_ranges(served: Served, content: Content) -> None:
    layer = content.app.layers[0]
    path = f"/v2/{REPO}/blobs/{layer.digest}"
    whole = served.get(path)
    assert whole.status == 200 and whole.body == layer.data
    assert whole.headers["docker-content-digest"] == layer.digest
    head = served.request("HEAD", path)
    assert (head.status, head.headers["content-length"], head.body) == (200, str(layer.size), b"")
    for header, first, last in (
        ("bytes=0-0", 0, 0),
        ("bytes=100-", 100, layer.size - 1),
        ("bytes=-10", -10, -1),
    ):
        part = served.get(path, Range=header)
        start, end = first % layer.size, last % layer.size
        assert part.status == 206 and part.body == layer.data[start : end + 1]
        assert part.headers["content-range"] == f"bytes {start}-{end}/{layer.size}"
    for header in (f"bytes={layer.size}-", "bytes=5-1", "bytes=0-1,4-5", "pages=1-2", "bytes=0-" + "9" * 40):
        refused = served.get(path, Range=header)
        assert (refused.status, refused.code) == (416, "RANGE_INVALID")
        assert refused.headers["content-range"] == f"bytes */{layer.size}"


SHA = "sha256:" + "0" * 64


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/v2/../../etc/passwd/manifests/v1", 400, "NAME_INVALID"),
        ("GET", "/v2/%2e%2e/%2e%2e/etc/manifests/v1", 400, "NAME_INVALID"),
        ("GET", "/v2/%252e%252e/etc/manifests/v1", 400, "NAME_INVALID"),
        ("GET", "/v2//etc/passwd/blobs/" + SHA, 400, "NAME_INVALID"),
        ("GET", "/v2/team/../team/app/manifests/v1", 400, "NAME_INVALID"),
        ("GET", "/v2/team/app/blobs/sha256:../../../etc/passwd", 400, "DIGEST_INVALID"),
        ("GET", "/v2/team/app/blobs/sha256%3A..%2F..%2Fsecret", 400, "DIGEST_INVALID"),
        ("GET", "/v2/team/app/blobs/sha256:abc", 400, "DIGEST_INVALID"),
        ("GET", "/v2/team/app/blobs/sha256:" + "A" * 64, 400, "DIGEST_INVALID"),
        ("GET", "/v2/team/app/blobs/md5:" + "0" * 32, 400, "DIGEST_INVALID"),
        ("GET", "/v2/team/app/blobs//etc/passwd", 400, "DIGEST_INVALID"),
        ("HEAD", "/v2/team/app/manifests/sha256:zz", 400, "DIGEST_INVALID"),
        ("GET", "/v2/team/app/manifests/..", 404, "MANIFEST_UNKNOWN"),
        ("GET", "/v2/team/app/manifests/nope", 404, "MANIFEST_UNKNOWN"),
        ("GET", f"/v2/team/app/manifests/{SHA}", 404, "MANIFEST_UNKNOWN"),
        ("GET", f"/v2/team/app/blobs/{SHA}", 404, "BLOB_UNKNOWN"),
        ("GET", "/v2/no/such/manifests/v1", 404, "NAME_UNKNOWN"),
        ("GET", "/v2/no/such/tags/list", 404, "NAME_UNKNOWN"),
        ("PUT", "/v2/team/app/manifests/v1", 405, "UNSUPPORTED"),
        ("DELETE", f"/v2/team/app/manifests/{SHA}", 405, "UNSUPPORTED"),
        ("DELETE", f"/v2/team/app/blobs/{SHA}", 405, "UNSUPPORTED"),
        ("POST", "/v2/team/app/blobs/uploads/", 405, "UNSUPPORTED"),
        ("PATCH", "/v2/team/app/blobs/uploads/x", 405, "UNSUPPORTED"),
        ("PUT", "/v2/team/app/blobs/uploads/x?digest=" + SHA, 405, "UNSUPPORTED"),
        ("GET", "/v2/team/app/blobs/uploads/x", 405, "UNSUPPORTED"),
        ("OPTIONS", "/v2/", 405, "UNSUPPORTED"),
        ("TRACE", "/v2/", 405, "UNSUPPORTED"),
        ("BREW", "/v2/", 405, "UNSUPPORTED"),
        ("GET", "/", 404, "UNSUPPORTED"),
        ("GET", "/etc/passwd", 404, "UNSUPPORTED"),
        ("GET", "/v2/team/app/referrers/" + SHA, 404, "UNSUPPORTED"),
    ],
)
def test_refusals(served: Served, method: str, path: str, status: int, code: str) -> None:
    got = served.request(method, path)
    assert got.status == status
    if method != "HEAD":
        assert got.code == code, got.body
        assert got.headers["content-type"].startswith("application/json")
    if status == 405:
        assert got.headers["allow"] == "GET, HEAD"


def test_only_a_repositorys_own_blobs_and_nothing_outside(served: Served, content: Content) -> None:
    other_layer = content.other.layers[0].digest
    assert served.get(f"/v2/team/other/blobs/{other_layer}").status == 200
    assert served.get(f"/v2/{REPO}/blobs/{other_layer}").code == "BLOB_UNKNOWN"
    # A file beside the layout, asked for by its digest: the server knows no such blob.
    secret = "sha256:" + hashlib.sha256(content.secret.read_bytes()).hexdigest()
    assert served.get(f"/v2/{REPO}/blobs/{secret}").code == "BLOB_UNKNOWN"


def _raw_exchange(served: Served, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", served.port), timeout=60) as sock:
        sock.sendall(data)  # no half-close: an early EOF may make the server hang up unanswered
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize(
    ("data", "status", "may_close"),
    [
        # Oversized: the server answers 400 and closes with our bytes unread, so the kernel may
        # reset the connection before the answer is read; either way nothing was served.
        (b"GET /v2/ HTTP/1.1\r\nHost: x\r\nRange: bytes=" + b"1" * 100_000 + b"\r\n\r\n", b"400", True),
        (b"GET /v2/" + b"a/" * 10_000 + b"manifests/v1 HTTP/1.1\r\nHost: x\r\n\r\n", b"400", True),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64), b"400", True),  # TLS on the plain port
        (b"GET /v2/\x00 HTTP/1.1\r\n\r\n", b"400", False),
        (b"GET /v2/ SPDY/9\r\n\r\n", b"400", True),  # not HTTP/1.x: aiohttp may just hang up
        (b"NOT HTTP AT ALL\r\n\r\n", b"405", False),  # parsed as the unknown method NOT
    ],
)
def test_malformed_requests_are_refused_and_the_server_carries_on(
    served: Served, data: bytes, status: bytes, may_close: bool
) -> None:
    try:
        answer = _raw_exchange(served, data)
    except ConnectionResetError:
        answer = b""
    if answer or not may_close:
        assert re.match(rb"HTTP/1\.[01] " + status, answer), answer[:200]
    assert served.get("/v2/").status == 200


def test_slow_and_stuck_clients_are_cut_off(served: Served, content: Content) -> None:
    # A request line that never ends, and a connection that never says anything.
    trickle = socket.create_connection(("127.0.0.1", served.port), timeout=60)
    trickle.sendall(b"GET /v2/ HTT")
    silent = socket.create_connection(("127.0.0.1", served.port), timeout=60)
    # A client that asks for a big blob and never reads it.
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.settimeout(60)
    stuck.connect(("127.0.0.1", served.port))
    layer = content.app.layers[0]
    needle = f"GET /v2/{REPO}/blobs/{layer.digest} 200"
    before = len(access_lines(served, needle))
    stuck.sendall(f"GET /v2/{REPO}/blobs/{layer.digest} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    # Meanwhile everyone else is served.
    assert served.get(f"/v2/{REPO}/manifests/v1").status == 200
    # The server gives up on each: EOF (or a reset) instead of waiting forever.
    for sock in (trickle, silent):
        with sock:
            assert sock.recv(1024) == b""
    line = wait_for_line(served, needle, before)
    assert int(line.split()[4]) < layer.size  # the body was cut short
    received = 0
    with stuck:
        try:
            while chunk := stuck.recv(1 << 20):
                received += len(chunk)
        except ConnectionResetError:
            pass
    assert received < layer.size
    assert served.get("/v2/").status == 200


# --- Basic auth, TLS ---------------------------------------------------------------


def _htpasswd(path: Path) -> Path:
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=5)).decode()
    path.write_text(f"alice:{hashed}\n")
    return path


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_htpasswd(content: Content, skopeo: str, tmp_path: Path) -> None:
    users = _htpasswd(tmp_path / "users")
    with serving(content.layout, "--htpasswd", str(users), log=tmp_path / "serve.log") as served:
        for path, method in (("/v2/", "GET"), (f"/v2/{REPO}/manifests/v1", "HEAD"), ("/v2/x", "PUT")):
            refused = served.request(method, path)
            assert refused.status == 401
            assert refused.headers["www-authenticate"] == 'Basic realm="occystrap"'
        for user, password in (("alice", "wrong"), ("mallory", "s3cret"), ("alice", "x" * 100)):
            refused = served.get("/v2/", Authorization=_basic(user, password))
            assert (refused.status, refused.code) == (401, "UNAUTHORIZED")
        assert served.get("/v2/", Authorization=_basic("alice", "s3cret")).status == 200
        out = tmp_path / "copy"
        ref = f"docker://{served.ref('team/other', 'v1')}"
        args = [
            "skopeo",
            "copy",
            "--src-tls-verify=false",
            "--src-creds",
            "alice:s3cret",
            ref,
            f"oci:{out}:v1",
        ]
        subprocess.run(args, check=True, capture_output=True, timeout=300)
        assert json.loads((out / "index.json").read_text())["manifests"][0]["digest"] == (
            content.other.manifest_digest
        )


def test_tls(content: Content, skopeo: str, tmp_path: Path) -> None:
    ca = TestCA.create()
    files = ca.issue_server(tmp_path / "tls", ["127.0.0.1", SERVER_NAME])
    certs = tmp_path / "certs.d"
    ca.write_ca(certs / "ca.crt")
    context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    args = ("--tls-cert", str(files.certificate), "--tls-key", str(files.key))
    with serving(content.layout, *args, log=tmp_path / "serve.log", ssl_context=context) as served:
        assert served.url.startswith("https://")
        layer = content.app.layers[0]
        assert served.get(f"/v2/{REPO}/blobs/{layer.digest}").body == layer.data
        part = served.get(f"/v2/{REPO}/blobs/{layer.digest}", Range="bytes=1000-1999")
        assert part.status == 206 and part.body == layer.data[1000:2000]
        out = tmp_path / "copy"
        ref = f"docker://{served.ref(REPO, 'v1')}"
        run = ["skopeo", "copy", "--src-cert-dir", str(certs), "--src-no-creds", ref, f"dir:{out}"]
        subprocess.run(run, check=True, capture_output=True, timeout=300)
        assert (out / layer.digest[7:]).read_bytes() == layer.data
        # occystrap itself, by name, pinned to the loopback address.
        tar = tmp_path / "app.tar"
        ref_name = f"{SERVER_NAME}:{served.port}/{REPO}"
        fetch = ["fetch-to-tarfile", "-q", "--resolve", f"{SERVER_NAME}=127.0.0.1"]
        ok(*fetch, "--ca-cert", str(certs / "ca.crt"), ref_name, "v2", str(tar))
        assert tar.stat().st_size > layer.size


# --- the command: bad input, shutdown ------------------------------------------------


def test_bad_input_is_one_line_and_a_nonzero_exit(content: Content, tmp_path: Path) -> None:
    assert fails("serve", str(tmp_path / "missing")).returncode == 3
    (tmp_path / "empty").mkdir()
    assert fails("serve", str(tmp_path / "empty")).returncode == 7
    tar = images.write_oci_archive(tmp_path / "a.tar", content.other, "v1")
    (tmp_path / "a.tar.gz").write_bytes(gzip.compress(tar.read_bytes()))
    assert "decompress" in fails("serve", str(tmp_path / "a.tar.gz")).stderr
    layout = str(content.layout)
    assert "--listen" in fails("serve", layout, "--listen", "nowhere").stderr
    assert "--tls-key" in fails("serve", layout, "--tls-cert", str(tar)).stderr
    (tmp_path / "md5.htpasswd").write_text("alice:$apr1$abc$def\n")
    assert "bcrypt" in fails("serve", layout, "--htpasswd", str(tmp_path / "md5.htpasswd")).stderr
    assert "cannot use" in fails("serve", layout, "--tls-cert", str(tar), "--tls-key", str(tar)).stderr
    with serving(content.layout, log=tmp_path / "first.log") as first:
        busy = fails("serve", layout, "--listen", first.host)
        assert "cannot listen" in busy.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_stop_it_cleanly(content: Content, tmp_path: Path, sig: int) -> None:
    served = start(content.layout, log=tmp_path / "serve.log")
    assert served.get("/v2/").status == 200
    assert served.stop(sig) == 0
    assert served.lines()[-1] == f"occystrap: stopped ({signal.Signals(sig).name})"
    assert "Traceback" not in served.log.read_text()
