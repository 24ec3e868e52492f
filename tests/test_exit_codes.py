"""Exit codes, per error class, for every command: one error line, no traceback, the class's code.

    2 bad reference or usage     3 not found            4 authentication or authorization
    5 network, rate limit, quota 6 integrity            7 manifest or unsupported content
    8 platform not found

Each row is a real failure of that class: the real registry (anonymous and Basic auth), the
fault proxy in front of it (corrupt bytes, 429s, malformed answers, refusals), and layouts on
disk broken on purpose. A command that cannot meet a class (list-tags moves no blob) has no row.
"""

from __future__ import annotations

import io
import json
import tarfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.helpers import fails, flip_byte, occystrap, ok
from tests.support import images
from tests.support.faultproxy import Fault, FaultProxy
from tests.support.images import BuiltImage, Entry
from tests.support.registry import Registry, start_registry

TAG = "v1"
UNREACHABLE = "127.0.0.1:9"  # discard: nothing listens


@dataclass(frozen=True)
class World:
    reg: str  # host:port of the anonymous registry
    basic: str  # of the Basic-auth registry (no credentials are given)
    proxy: str  # of the fault proxy in front of the anonymous registry
    app: BuiltImage
    pinned: str  # codes/pinned@<digest>: the proxy serves another manifest under it
    merged: Path  # a merged directory holding codes/app and codes/multi
    tampered: Path  # the same, one layer altered (same size)
    bad_catalog: Path  # the same, catalog.json malformed
    saved: Path  # fetch-to-tarfile of codes/app
    tampered_tar: Path  # the same, one layer byte altered
    malformed_tar: Path  # a tarball whose manifest.json is not JSON
    a_file: Path  # a regular file, where a directory is wanted


@pytest.fixture(scope="module")
def world(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    require_tool("docker-registry")
    tmp = tmp_path_factory.mktemp("codes")
    app = images.build_image(
        [[Entry.file("app.txt", b"app\n" * 1000)], [Entry.file("lib.txt", b"lib\n" * 3000)]]
    )
    other = images.build_image([[Entry.file("other.txt", b"other\n")]])
    arm = images.build_image([[Entry.file("arm.txt", b"arm\n")]], fmt="oci", arch="arm64", variant="v8")
    amd = images.build_image([[Entry.file("amd.txt", b"amd\n")]], fmt="oci")
    for repo in ("codes/app", "codes/bad", "codes/malformed", "codes/limited", "codes/oddtags"):
        registry.push_image(repo, TAG, app)
    registry.push_image("codes/pinned", TAG, app)
    registry.push_image("codes/pinned", "other", other)
    registry.push_index("codes/multi", TAG, images.build_index([amd, arm]))
    basic = start_registry(tmp / "basic", "basic")
    proxy = FaultProxy(registry.url).start()
    try:
        basic.push_image("codes/app", TAG, app)
        proxy.add(
            Fault(match=f"/v2/codes/bad/blobs/{app.layers[1].digest}", flip_at=4, times=None),
            Fault(
                match="/v2/codes/malformed/manifests/", body=b'{"schemaVersion": 2, "config": ', times=None
            ),
            Fault(match="/v2/codes/malformed/tags/list", body=b"not json", times=None),
            Fault(match="/v2/codes/oddtags/tags/list", body=b'{"tags": 5}', times=None),
            Fault(match="/v2/codes/limited/", method=None, status=429, retry_after=0, times=None),
            Fault(match="/v2/codes/pinned/manifests/sha256:", body=other.manifest, times=None),
            Fault(match="/v2/site404/", method="POST", status=404, error_code="NAME_UNKNOWN", times=None),
            Fault(match="/v2/sitequota/", method="PUT", status=413, times=None),
        )
        merged = tmp / "merged"
        for repo in ("codes/app", "codes/multi"):
            ok("fetch-to-extracted", "-q", "--use-unique-names", f"{registry.host}/{repo}", TAG, str(merged))
        tampered = tmp / "tampered"
        ok("fetch-to-extracted", "-q", "--use-unique-names", f"{registry.host}/codes/app", TAG, str(tampered))
        flip_byte(tampered / "blobs" / "sha256" / app.layers[1].digest[7:], 4)
        bad_catalog = tmp / "bad-catalog"
        ok(
            "fetch-to-extracted",
            "-q",
            "--use-unique-names",
            f"{registry.host}/codes/app",
            TAG,
            str(bad_catalog),
        )
        (bad_catalog / "catalog.json").write_text("{not json")
        saved = tmp / "saved.tar"
        ok("fetch-to-tarfile", "-q", f"{registry.host}/codes/app", TAG, str(saved))
        tampered_tar = tmp / "tampered.tar"
        data = bytearray(saved.read_bytes())
        data[data.index(app.layers[1].data) + 4] ^= 0xFF
        tampered_tar.write_bytes(bytes(data))
        malformed_tar = tmp / "malformed.tar"
        with tarfile.open(malformed_tar, "w") as tf:
            info = tarfile.TarInfo("manifest.json")
            info.size = 1
            tf.addfile(info, io.BytesIO(b"["))
        a_file = tmp / "a-file"
        a_file.write_text("not a directory\n")
        yield World(
            reg=registry.host,
            basic=basic.host,
            proxy=proxy.host,
            app=app,
            pinned=f"{proxy.host}/codes/pinned@{app.manifest_digest}",
            merged=merged,
            tampered=tampered,
            bad_catalog=bad_catalog,
            saved=saved,
            tampered_tar=tampered_tar,
            malformed_tar=malformed_tar,
            a_file=a_file,
        )
    finally:
        proxy.stop()
        basic.stop()


Args = Callable[[World, Path], list[str]]

# -- the commands that read a registry: one way to name an image, then each class ---------------


def _reader(command: str, name: str, tag: str, *extra: str) -> Callable[[Path], list[str]]:
    def args(out: Path) -> list[str]:
        at = f"{name}@{tag}" if tag.startswith("sha256:") else f"{name}:{tag}"
        if command in ("fetch-to-tarfile", "fetch-to-extracted", "fetch-to-oci-bundle"):
            target = out / ("out.tar" if command == "fetch-to-tarfile" else "out")
            return [command, *extra, name, tag, str(target)]
        if command == "search":
            return [command, *extra, at, "*"]
        if command == "diff":
            return [command, *extra, at, at]
        if command == "export":
            return [command, *extra, at, str(out / "rootfs.tar")]
        if command == "copy":
            source = at if name.startswith("Not/") else f"docker://{at}"
            return [command, *extra, source, f"oci:{out / 'layout'}"]
        if command == "mirror":
            return [command, *extra, "--image", at, str(out / "mirror")]
        if command == "list-tags":
            return [command, *extra, name]
        return [command, *extra, at]  # inspect

    return args


LOOKERS = ["files", "search", "diff", "export", "fetch-to-oci-bundle"]  # read every layer
READERS = ["fetch-to-tarfile", "fetch-to-extracted", "copy", "mirror", "inspect", "list-tags", *LOOKERS]
MOVERS = [*READERS[:4], *LOOKERS]  # the ones that read blobs


def _reader_rows() -> list[tuple[str, int, str, Args]]:
    rows: list[tuple[str, int, str, Args]] = []

    def add(
        commands: list[str], code: int, what: str, name: Callable[[World], str], tag: str, *extra: str
    ) -> None:
        for command in commands:
            rows.append(
                (command, code, what, lambda w, out, c=command, n=name: _reader(c, n(w), tag, *extra)(out))  # type: ignore[misc]
            )

    add(READERS, 2, "bad-reference", lambda w: "Not/Valid", TAG)
    add([c for c in READERS if c != "list-tags"], 3, "unknown-tag", lambda w: f"{w.reg}/codes/app", "nosuch")
    add(["list-tags"], 3, "unknown-repository", lambda w: f"{w.reg}/codes/nosuch", TAG)
    add(READERS, 4, "credentials-needed", lambda w: f"{w.basic}/codes/app", TAG)
    add(READERS, 5, "unreachable", lambda w: f"{UNREACHABLE}/codes/app", TAG, "--retries", "0")
    add(READERS, 5, "rate-limited", lambda w: f"{w.proxy}/codes/limited", TAG, "--retries", "0")
    add(MOVERS, 6, "blob-digest", lambda w: f"{w.proxy}/codes/bad", TAG, "--retries", "0")
    rows.append(("inspect", 6, "pinned-manifest", lambda w, out: ["inspect", w.pinned]))
    add(READERS, 7, "malformed", lambda w: f"{w.proxy}/codes/malformed", TAG)
    add(["list-tags"], 7, "tags-not-a-list", lambda w: f"{w.proxy}/codes/oddtags", TAG)
    add(
        [c for c in READERS if c != "list-tags"],
        8,
        "no-such-platform",
        lambda w: f"{w.reg}/codes/multi",
        TAG,
        "--platform",
        "linux/s390x",
    )
    return rows


# -- the commands over layouts on disk ----------------------------------------------------------


def _app(w: World) -> str:
    return f"{w.reg}/codes/app"


def _spec(out: Path, name: str) -> str:
    spec = out / "spec.yaml"
    spec.write_text(f"images:\n  - {name}\n")
    return str(spec)


LOCAL_ROWS: list[tuple[str, int, str, Args]] = [
    (
        "recreate-image",
        2,
        "bad-reference",
        lambda w, o: ["recreate-image", str(w.merged), "Not/Valid", TAG, str(o / "x.tar")],
    ),
    (
        "recreate-image",
        3,
        "not-in-directory",
        lambda w, o: ["recreate-image", str(w.merged), f"{w.reg}/codes/nosuch", TAG, str(o / "x.tar")],
    ),
    (
        "recreate-image",
        3,
        "no-directory",
        lambda w, o: ["recreate-image", str(o / "nowhere"), _app(w), TAG, str(o / "x.tar")],
    ),
    (
        "recreate-image",
        6,
        "tampered-blob",
        lambda w, o: ["recreate-image", str(w.tampered), _app(w), TAG, str(o / "x.tar")],
    ),
    (
        "recreate-image",
        7,
        "malformed-catalog",
        lambda w, o: ["recreate-image", str(w.bad_catalog), _app(w), TAG, str(o / "x.tar")],
    ),
    (
        "tarfile-to-extracted",
        2,
        "file-as-directory",
        lambda w, o: ["tarfile-to-extracted", str(w.saved), str(w.a_file)],
    ),
    (
        "tarfile-to-extracted",
        3,
        "no-tarball",
        lambda w, o: ["tarfile-to-extracted", str(o / "nope.tar"), str(o / "d")],
    ),
    (
        "tarfile-to-extracted",
        6,
        "tampered-blob",
        lambda w, o: ["tarfile-to-extracted", str(w.tampered_tar), str(o / "d")],
    ),
    (
        "tarfile-to-extracted",
        7,
        "malformed-manifest",
        lambda w, o: ["tarfile-to-extracted", str(w.malformed_tar), str(o / "d")],
    ),
    ("push", 2, "bad-destination", lambda w, o: ["push", str(w.merged), "Not_Valid:x:y/"]),
    (
        "push",
        3,
        "repository-unknown",
        lambda w, o: ["push", "--retries", "0", str(w.merged), f"{w.proxy}/site404"],
    ),
    ("push", 4, "credentials-needed", lambda w, o: ["push", str(w.merged), f"{w.basic}/site"]),
    ("push", 5, "unreachable", lambda w, o: ["push", "--retries", "0", str(w.merged), f"{UNREACHABLE}/site"]),
    ("push", 5, "quota", lambda w, o: ["push", "--retries", "0", str(w.merged), f"{w.proxy}/sitequota"]),
    (
        "push",
        6,
        "tampered-blob",
        lambda w, o: ["push", str(w.tampered), f"{w.reg}/site-{uuid.uuid4().hex[:8]}"],
    ),
    ("push", 7, "malformed-catalog", lambda w, o: ["push", str(w.bad_catalog), f"{w.reg}/site"]),
    (
        "copy",
        4,
        "destination-credentials",
        lambda w, o: ["copy", f"docker://{_app(w)}:{TAG}", f"docker://{w.basic}/dest:{TAG}"],
    ),
    (
        "copy",
        5,
        "destination-quota",
        lambda w, o: [
            "copy",
            "--retries",
            "0",
            f"docker://{_app(w)}:{TAG}",
            f"docker://{w.proxy}/sitequota:{TAG}",
        ],
    ),
    ("serve", 2, "bad-listen", lambda w, o: ["serve", "--listen", "nowhere:port", str(w.merged)]),
    ("serve", 3, "no-path", lambda w, o: ["serve", str(o / "nowhere")]),
    ("serve", 7, "not-a-layout", lambda w, o: ["serve", str(w.a_file.parent / "empty")]),
    ("prune", 2, "nothing-to-keep", lambda w, o: ["prune", str(w.merged)]),
    (
        "prune",
        7,
        "malformed-catalog",
        lambda w, o: ["prune", "--keep", f"{_app(w)}:{TAG}", str(w.bad_catalog)],
    ),
    ("import", 2, "file-as-directory", lambda w, o: ["import", str(w.saved), str(w.a_file)]),
    ("import", 6, "tampered-blob", lambda w, o: ["import", str(w.tampered_tar), str(o / "d")]),
    ("import", 7, "malformed-manifest", lambda w, o: ["import", str(w.malformed_tar), str(o / "d")]),
    ("lock", 2, "no-spec", lambda w, o: ["lock", str(o / "missing.yaml")]),
    ("lock", 7, "bad-reference-in-spec", lambda w, o: ["lock", _spec(o, "Not/Valid:v1")]),
    ("lock", 3, "unknown-tag", lambda w, o: ["lock", _spec(o, f"{_app(w)}:nosuch")]),
    ("lock", 4, "credentials-needed", lambda w, o: ["lock", _spec(o, f"{w.basic}/codes/app:{TAG}")]),
    (
        "lock",
        5,
        "unreachable",
        lambda w, o: ["lock", "--retries", "0", _spec(o, f"{UNREACHABLE}/codes/app:{TAG}")],
    ),
    ("lock", 7, "malformed", lambda w, o: ["lock", _spec(o, f"{w.proxy}/codes/malformed:{TAG}")]),
    (
        "lock",
        8,
        "no-such-platform",
        lambda w, o: ["lock", "--platform", "linux/s390x", _spec(o, f"{w.reg}/codes/multi:{TAG}")],
    ),
    ("ratelimit", 2, "bad-reference", lambda w, o: ["ratelimit", "Not/Valid"]),
    ("ratelimit", 3, "unknown-tag", lambda w, o: ["ratelimit", f"{_app(w)}:nosuch"]),
    ("ratelimit", 4, "credentials-needed", lambda w, o: ["ratelimit", f"{w.basic}/codes/app:{TAG}"]),
    (
        "ratelimit",
        5,
        "unreachable",
        lambda w, o: ["ratelimit", "--retries", "0", f"{UNREACHABLE}/codes/app:{TAG}"],
    ),
    ("merge", 2, "file-as-directory", lambda w, o: ["merge", str(w.merged), str(w.a_file)]),
    ("merge", 6, "tampered-blob", lambda w, o: ["merge", str(w.tampered), str(o / "m")]),
    ("merge", 7, "malformed-catalog", lambda w, o: ["merge", str(w.bad_catalog), str(o / "m")]),
    ("verify", 2, "usage", lambda w, o: ["verify", "-j", "0", str(w.merged)]),
    ("verify", 3, "no-path", lambda w, o: ["verify", str(o / "nowhere")]),
    ("verify", 6, "tampered-blob", lambda w, o: ["verify", str(w.tampered)]),
    ("verify", 7, "not-a-layout", lambda w, o: ["verify", str(w.a_file.parent / "empty")]),
]

ROWS = _reader_rows() + LOCAL_ROWS


@pytest.mark.parametrize(
    ("command", "code", "what", "args"), ROWS, ids=[f"{c}-{code}-{what}" for c, code, what, _ in ROWS]
)
def test_exit_code(world: World, tmp_path: Path, command: str, code: int, what: str, args: Args) -> None:
    (world.a_file.parent / "empty").mkdir(exist_ok=True)
    out = tmp_path / "out"
    out.mkdir()
    argv = args(world, out)
    quiet = [] if command in ("verify", "list-tags", "inspect") or code == 2 else ["-q"]
    env = {"DOCKER_CONFIG": str(tmp_path / "no-docker-config")}
    if code == 2:
        # A usage error is click's (its usage line and one "Error:" line) or occystrap's own line.
        proc = occystrap(*argv, env=env)
        assert "Traceback" not in proc.stderr, proc.stderr
        ours = [l for l in proc.stderr.splitlines() if l.startswith("occystrap: error:")]
        clicks = [l for l in proc.stderr.splitlines() if l.startswith("Error: ")]
        assert len(ours) + len(clicks) == 1, proc.stderr
    else:
        proc = fails(argv[0], *quiet, *argv[1:], env=env)
    assert proc.returncode == code, f"{argv}: {proc.stderr}"
    if command != "verify":
        assert proc.stdout == "", proc.stdout


def test_every_command_has_a_row_for_each_class_it_can_meet() -> None:
    from occystrap.cli import COMMANDS

    have: dict[str, set[int]] = {}
    for command, code, _, _ in ROWS:
        have.setdefault(command, set()).add(code)
    assert set(have) == set(COMMANDS)
    everything = {2, 3, 4, 5, 6, 7, 8}
    assert have == {
        "fetch-to-tarfile": everything,
        "fetch-to-extracted": everything,
        "copy": everything,
        "mirror": everything,
        "inspect": everything,
        **dict.fromkeys(LOOKERS, everything),
        "list-tags": {2, 3, 4, 5, 7},  # no blob, no platform
        "recreate-image": {2, 3, 6, 7},  # local: no network, the whole index is written
        "tarfile-to-extracted": {2, 3, 6, 7},
        "push": {2, 3, 4, 5, 6, 7},  # every platform is pushed
        "verify": {2, 3, 6, 7},
        "serve": {2, 3, 7},  # answers requests; failing ones are its clients' business
        "prune": {2, 7},  # local, and no blob is read (a missing DIR is click's usage error)
        "import": {2, 6, 7},
        "lock": {2, 3, 4, 5, 7, 8},  # no layer is fetched
        "ratelimit": {2, 3, 4, 5},  # one HEAD
        "merge": {2, 6, 7},  # local (a blob no input holds is 3: see test_shard)
    }


def test_the_sound_layouts_verify(world: World) -> None:
    """The fixtures are what the rows say: the sound layouts are sound."""
    ok("verify", "-q", str(world.merged))
    ok("verify", "-q", str(world.saved))
    assert json.loads((world.merged / "catalog.json").read_text())["images"]


def test_an_internal_error_is_one_line_and_exit_70(capsys: pytest.CaptureFixture[str]) -> None:
    """A bug (no OccystrapError) still ends in one line, after the event loop has closed."""
    from occystrap.commands.common import make_reporter, run_reported

    async def main() -> None:
        raise TypeError("boom")

    with pytest.raises(SystemExit) as exited:
        run_reported({}, make_reporter("none", True), main)
    assert exited.value.code == 70
    err = capsys.readouterr().err
    assert err.splitlines() == ["occystrap: error: internal error: TypeError: boom"], err
