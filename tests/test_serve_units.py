"""serve's pure parts, table-driven: routes, names, digests, ranges, pages, htpasswd; and the
index a layout gives (names and their aliases, what each repository holds), without a server."""

from __future__ import annotations

import base64
import gzip
from pathlib import Path

import bcrypt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from occystrap.errors import ManifestError, NotFoundError, UsageError
from occystrap.serve import index, names
from occystrap.serve.auth import parse_basic, parse_htpasswd
from occystrap.serve.names import RequestError, Route
from tests.support import images
from tests.support.images import Entry
from tests.support.serving import write_layout

SHA = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("path", "want"),
    [
        ("/v2/", Route("base")),
        ("/v2", Route("base")),
        ("/v2/_catalog?n=3", Route("catalog")),
        ("/v2/team/app/manifests/v1", Route("manifest", "team/app", "v1")),
        (f"/v2/team/app/manifests/{SHA}", Route("manifest", "team/app", SHA)),
        (f"/v2/a/blobs/{SHA}", Route("blob", "a", SHA)),
        ("/v2/a/b/c/tags/list?n=1&last=x", Route("tags", "a/b/c")),
        ("/v2/a/blobs/uploads/", Route("upload", "a", "/")),
        ("/v2/a/blobs/uploads", Route("upload", "a", "")),
        # The name runs to the last /manifests/: a repository may be called `manifests`.
        ("/v2/x/manifests/manifests/v1", Route("manifest", "x/manifests", "v1")),
        # Everything after /blobs/ is the reference, slashes and all: a digest check refuses it.
        ("/v2/a/blobs/sha256:../../etc/passwd", Route("blob", "a", "sha256:../../etc/passwd")),
        ("/v2/a/blobs/sha256%3A..%2F..%2Fx", Route("blob", "a", "sha256:../../x")),
        ("/v2/127.0.0.1:5000/team/app/manifests/v1", Route("manifest", "127.0.0.1:5000/team/app", "v1")),
        ("/", None),
        ("/v1/", None),
        ("/v2/a/referrers/x", None),
        ("/v2/a/tags/list/extra", None),
    ],
)
def test_route(path: str, want: Route | None) -> None:
    assert names.route(path) == want


@pytest.mark.parametrize(
    "path",
    [
        "/v2/../etc/manifests/v1",
        "/v2/%2e%2e/%2e%2e/etc/manifests/v1",
        "/v2/%252e%252e/x/manifests/v1",
        "/v2//etc/passwd/manifests/v1",
        "/v2/a//b/manifests/v1",
        "/v2/Team/App/manifests/v1",
        "/v2/a/./b/blobs/x",
        "/v2/a%00b/manifests/v1",
        "/v2/%ff%fe/manifests/v1",
        "/v2/" + "a" * 256 + "/manifests/v1",
        "/v2/-a/tags/list",
    ],
)
def test_route_refuses_bad_names(path: str) -> None:
    with pytest.raises(RequestError) as caught:
        names.route(path)
    assert (caught.value.status, caught.value.code) == (400, "NAME_INVALID")


@given(st.text(alphabet="abc./%2e:-_@", max_size=40))
def test_no_route_names_a_path_outside(text: str) -> None:
    try:
        got = names.route(f"/v2/{text}/manifests/v1")
    except RequestError:
        return
    if got is not None:  # None: an unknown path, a 404
        assert ".." not in got.name.split("/") and not got.name.startswith("/") and got.name != "."


@pytest.mark.parametrize(
    "text",
    [
        "sha256:abc",
        "sha256:" + "A" * 64,
        "sha256:" + "a" * 65,
        "md5:" + "a" * 32,
        "sha256:../x",
        "",
        ":",
        "x" * 9000,
    ],
)
def test_bad_digests(text: str) -> None:
    with pytest.raises(RequestError) as caught:
        names.check_digest(text)
    assert (caught.value.status, caught.value.code) == (400, "DIGEST_INVALID")
    assert len(caught.value.message) < 300


def test_references() -> None:
    assert names.check_reference("v1.2_3-x") == "v1.2_3-x"
    assert names.check_reference(SHA) == SHA
    with pytest.raises(RequestError, match=r"digest"):
        names.check_reference("sha256:nope")
    for bad in (".hidden", "a" * 129, "a/b", "-x"):
        with pytest.raises(RequestError) as caught:
            names.check_reference(bad)
        assert caught.value.code == "MANIFEST_UNKNOWN"


@pytest.mark.parametrize(
    ("header", "size", "want"),
    [
        (None, 10, None),
        ("bytes=0-0", 10, (0, 0)),
        ("bytes=2-", 10, (2, 9)),
        ("bytes=-3", 10, (7, 9)),
        ("bytes=-30", 10, (0, 9)),
        ("bytes=5-999999999999999999", 10, (5, 9)),
        (" bytes=1-4 ", 10, (1, 4)),
    ],
)
def test_ranges(header: str | None, size: int, want: tuple[int, int] | None) -> None:
    assert names.parse_range(header, size) == want


@pytest.mark.parametrize(
    "header",
    [
        "bytes=10-",
        "bytes=5-2",
        "bytes=-0",
        "bytes=-",
        "bytes=0-1,3-4",
        "items=0-1",
        "bytes=a-b",
        "bytes=0-" + "9" * 40,
        "bytes=" + "9" * 5000 + "-",
        "",
    ],
)
def test_bad_ranges(header: str) -> None:
    with pytest.raises(RequestError) as caught:
        names.parse_range(header, 10)
    assert (caught.value.status, caught.value.code) == (416, "RANGE_INVALID")
    assert caught.value.headers == {"Content-Range": "bytes */10"}


def test_pages() -> None:
    items = ["a", "b", "c", "d"]
    assert names.page(items, None, None) == (items, False)
    assert names.page(items, "2", None) == (["a", "b"], True)
    assert names.page(items, "2", "b") == (["c", "d"], False)
    assert names.page(items, "0", None) == ([], True)
    assert names.page(items, None, "c") == (["d"], False)
    assert names.page(["x"] * 2000, "5000", None)[0] == ["x"] * names.MAX_PAGE
    for bad in ("-1", "abc", "1e3", "9" * 20):
        with pytest.raises(RequestError) as caught:
            names.page(items, bad, None)
        assert caught.value.status == 400
    assert names.next_link("/v2/a/tags/list", 2, "b/c") == '</v2/a/tags/list?n=2&last=b%2Fc>; rel="next"'


@pytest.mark.parametrize(
    ("filename", "want"),
    [("layout", "layout"), ("App_Bundle.tar", "app-bundle"), ("...", "image"), ("x.oci", "x-oci")],
)
def test_derived_repository(filename: str, want: str) -> None:
    assert names.derive_repository(filename) == want
    assert names.is_name(want)


def test_aliases() -> None:
    assert index.aliases_of("127.0.0.1:5000", "team/app") == ["team/app", "127.0.0.1:5000/team/app"]
    assert index.aliases_of("docker.io", "library/busybox") == [
        "library/busybox",
        "docker.io/library/busybox",
        "busybox",
    ]
    assert index.aliases_of("docker.io", "library/a/b") == ["library/a/b", "docker.io/library/a/b"]
    assert index.aliases_of("", "layout") == ["layout"]


def test_htpasswd_and_basic() -> None:
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()
    assert parse_htpasswd(f"# users\nalice:{hashed}\n\n", "f") == {"alice": hashed.encode()}
    with pytest.raises(UsageError, match="not bcrypt"):
        parse_htpasswd("bob:{SHA}abc\n", "f")
    with pytest.raises(UsageError, match="user:hash"):
        parse_htpasswd("nocolon\n", "f")
    with pytest.raises(UsageError, match="no users"):
        parse_htpasswd("", "f")
    token = base64.b64encode(b"alice:p:w").decode()
    assert parse_basic(f"Basic {token}") == ("alice", "p:w")
    for bad in (None, "", "Bearer x", "Basic !!!", "Basic " + base64.b64encode(b"nocolon").decode()):
        assert parse_basic(bad) is None


# --- the index of a layout -----------------------------------------------------


def _image(text: str) -> images.BuiltImage:
    return images.build_image([[Entry.file("f", text.encode())]], fmt="oci")


def test_names_origins_and_ambiguity(tmp_path: Path) -> None:
    a, b, hub, bare = _image("a"), _image("b"), _image("hub"), _image("bare")
    refs = {
        "a.example/team/app:v1": a,
        "b.example:5000/team/app:v1": b,
        "docker.io/library/busybox:1.36": hub,
        "latest": bare,
    }
    content = index.load(write_layout(tmp_path / "l", refs), "dflt")
    assert content.repository("a.example/team/app").tags == {"v1": a.manifest_digest}
    assert content.repository("b.example:5000/team/app").tags == {"v1": b.manifest_digest}
    with pytest.raises(RequestError, match="ambiguous"):
        content.repository("team/app")
    for name in ("library/busybox", "busybox", "docker.io/library/busybox"):
        assert content.repository(name).tags == {"1.36": hub.manifest_digest}
    assert content.repository("dflt").tags == {"latest": bare.manifest_digest}
    assert content.catalog() == ["a.example/team/app", "b.example:5000/team/app", "dflt", "library/busybox"]
    # A repository holds its own blobs only, as in a registry.
    assert content.repository("dflt").blobs == set(bare.blobs())
    with pytest.raises(RequestError) as caught:
        content.repository("nothere")
    assert caught.value.code == "NAME_UNKNOWN"


def test_index_children_are_reachable_in_the_repository(tmp_path: Path) -> None:
    amd = _image("amd")
    arm = images.build_image([[Entry.file("f", b"arm")]], fmt="oci", arch="arm64")
    idx = images.build_index([amd, arm])
    content = index.load(images.write_oci_layout(tmp_path / "l", idx, "v1"), "multi")
    repo = content.repository("multi")
    assert repo.manifests == {idx.digest, amd.manifest_digest, arm.manifest_digest}
    assert content.manifests[idx.digest].media_type == images.OCI_INDEX
    assert content.manifests[idx.digest].data == idx.data
    assert repo.blobs == set(amd.blobs()) | set(arm.blobs())


def test_a_symlink_out_of_the_layout_is_not_served(tmp_path: Path) -> None:
    image = _image("linked")
    layout = write_layout(tmp_path / "l", {"v1": image})
    layer = image.layers[0]
    outside = tmp_path / "outside"
    outside.write_bytes(layer.data)
    target = layout / "blobs" / "sha256" / layer.digest[7:]
    target.unlink()
    target.symlink_to(outside)
    content = index.load(layout, "l")
    assert layer.digest not in content.blobs
    assert any("points outside" in p for p in content.problems)


def test_layouts_that_cannot_be_served(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        index.load(tmp_path / "missing", "x")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ManifestError, match=r"neither index\.json nor manifest\.json"):
        index.load(tmp_path / "empty", "x")
    tar = images.write_oci_archive(tmp_path / "a.tar", _image("gz"), "v1")
    gz = tmp_path / "a.tar.gz"
    gz.write_bytes(gzip.compress(tar.read_bytes()))
    with pytest.raises(UsageError, match="decompress it first"):
        index.load(gz, "x")
    (tmp_path / "junk.tar").write_bytes(b"not a tarball at all" * 100)
    with pytest.raises(ManifestError, match="not a readable tarball"):
        index.load(tmp_path / "junk.tar", "x")
