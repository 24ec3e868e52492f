"""files, search and diff through the real CLI, over the test registry and local layouts.

The library's own answers (from stored blobs, tests/support/forensics.py) are the reference:
the CLI must print exactly what the library computes, whatever the source, with nothing but
the answer on stdout.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from occystrap.forensics.diff import ImageSide, diff_images
from occystrap.forensics.files import file_table
from occystrap.forensics.search import Query, search
from tests.helpers import ROOT, fails, occystrap, ok
from tests.support import images
from tests.support.forensics import Stored, rich_layers, store
from tests.support.images import directory, file, symlink, whiteout
from tests.support.registry import Registry

REPO = "forensics/rich"


@pytest.fixture(scope="module")
def rich(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stored, str]]:
    """The rich image (whiteouts, opaque dirs, hardlinks, replaced dirs), stored and pushed."""
    stored = store(tmp_path_factory.mktemp("rich"), rich_layers())
    registry.push_image(REPO, "v1", stored.image)
    yield stored, registry.ref(REPO, "v1")


def _lib_files(stored: Stored, **select: object) -> list[dict[str, object]]:
    table = file_table(stored.refs, stored.open_layer())
    return table.to_json(table.select(**select))  # type: ignore[arg-type]


def test_files_json_is_the_library_table(rich: tuple[Stored, str]) -> None:
    stored, ref = rich
    proc = ok("files", "--json", ref)
    assert json.loads(proc.stdout) == _lib_files(stored)
    # Progress went to stderr, and only there.
    assert "resolved" in proc.stderr and "summary:" in proc.stderr


@pytest.mark.parametrize(
    ("options", "select"),
    [
        (["--layer", "1"], {"layer": 1}),
        (["--layer", "-1"], {"layer": 2}),
        (["--deleted"], {"deleted": True}),
        (["--shadowed"], {"shadowed": True}),
        (["--deleted", "--layer", "2"], {"deleted": True, "layer": 2}),
    ],
)
def test_files_filters(rich: tuple[Stored, str], options: list[str], select: dict[str, object]) -> None:
    stored, ref = rich
    assert json.loads(ok("files", "-q", "--json", *options, ref).stdout) == _lib_files(stored, **select)


def test_files_text_one_line_per_path(rich: tuple[Stored, str]) -> None:
    stored, ref = rich
    lines = ok("files", ref).stdout.splitlines()
    records = _lib_files(stored)
    assert [line.split(" L", 1)[1].split()[1] for line in lines] == [r["path"] for r in records]
    by_path = {line.split(" L", 1)[1].split()[1]: line for line in lines}
    assert by_path["/etc/keep"].startswith("-rw------- ")
    assert by_path["/etc/b"].endswith("/etc/b -> c")
    assert by_path["/etc/a.hl"].endswith("link to /etc/a")
    assert by_path["/opt/d/x"].endswith("[deleted in L1: opaque]")
    assert by_path["/swap/inner"].endswith("[deleted in L2: replaced]")
    assert "[deleted" not in by_path["/etc/a"]


def test_which_layer_put_a_path_there(rich: tuple[Stored, str]) -> None:
    """One command answers it: the path's story, layer by layer."""
    _, ref = rich
    out = ok("files", "-q", "--history", ref, "/etc/a", "swap").stdout.splitlines()
    assert out[0].endswith("L1   /etc/a")
    assert [line.split()[:2] for line in out[1:3]] == [["L0", "added"], ["L1", "modified"]]
    swap = out.index(next(line for line in out if line.endswith("/swap")))
    assert [line.split()[:3] for line in out[swap + 1 : swap + 4]] == [
        ["L0", "added", "-rw-r--r--"],
        ["L1", "modified", "drwxr-x---"],
        ["L2", "modified", "-rw-r-----"],
    ]
    assert any(line.endswith("/swap/inner  [deleted in L2: replaced]") for line in out)
    assert out[-1].split()[:4] == ["L2", "deleted", "by", "/swap"]


def test_files_layer_marks_what_it_did(rich: tuple[Stored, str]) -> None:
    _, ref = rich
    lines = ok("files", "-q", "--layer", "2", ref).stdout.splitlines()

    def action(path: str) -> str:
        return next(line for line in lines if f" {path}" in line)[0]

    assert (action("/etc/link"), action("/lib/libz"), action("/etc/a.hl")) == ("D", "M", "A")
    assert all(" /opt" not in line for line in lines)  # layer 2 never touched it


def test_files_piped(rich: tuple[Stored, str]) -> None:
    """stdout carries only the answer: a pipe gets the table, and a reader that stops early
    (`head`) is no error."""
    stored, ref = rich
    env_cmd = f"{sys.executable} -m occystrap files {ref}"
    proc = subprocess.run(
        ["bash", "-o", "pipefail", "-c", f"{env_cmd} | wc -l"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout) == len(_lib_files(stored))
    proc = subprocess.run(
        ["bash", "-o", "pipefail", "-c", f"{env_cmd} | head -n 2"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 2
    assert "error" not in proc.stderr


def test_files_from_local_layouts(rich: tuple[Stored, str], tmp_path: Path) -> None:
    stored, _ = rich
    expected = _lib_files(stored)
    layout = images.write_oci_layout(tmp_path / "layout", stored.image, "v1")
    archive = images.write_docker_archive(tmp_path / "app.tar", stored.image, ["example.com/app:v1"])
    oci_archive = images.write_oci_archive(tmp_path / "oci.tar", stored.image, "v1")
    for where in (f"oci:{layout}:v1", str(layout), str(archive), f"oci-archive:{oci_archive}"):
        assert json.loads(ok("files", "-q", "--json", where).stdout) == expected, where


def test_files_bad_input(rich: tuple[Stored, str], registry: Registry) -> None:
    _, ref = rich
    proc = fails("files", "--layer", "3", ref)
    assert proc.returncode == 2 and "--layer 3" in proc.stderr and proc.stdout == ""
    proc = fails("files", registry.ref(REPO, "nosuchtag"))
    assert proc.returncode == 3 and "nosuchtag" in proc.stderr and proc.stdout == ""
    proc = fails("files", "oci:/nonexistent/layout")
    assert proc.stdout == ""


def test_files_picks_the_platform_from_an_index(registry: Registry) -> None:
    amd = images.build_image([[file("arch", b"amd64\n")]], fmt="oci", arch="amd64")
    arm = images.build_image([[file("arch", b"arm64\n"), file("only-arm", b"")]], fmt="oci", arch="arm64")
    registry.push_index("forensics/multi", "v1", images.build_index([amd, arm]))
    ref = registry.ref("forensics/multi", "v1")
    paths = [
        r["path"] for r in json.loads(ok("files", "-q", "--json", "--platform", "linux/arm64", ref).stdout)
    ]
    assert paths == ["/arch", "/only-arm"]
    assert "/only-arm" not in ok("files", "-q", ref).stdout
    proc = fails("files", "--platform", "linux/s390x", ref)
    assert proc.returncode == 8 and "linux/arm64" in proc.stderr and proc.stdout == ""


def test_progress_events_per_layer(rich: tuple[Stored, str]) -> None:
    stored, ref = rich
    proc = ok("files", "--progress", "json", ref)
    events = [json.loads(line) for line in proc.stderr.splitlines()]
    for layer in stored.image.layers:
        mine = [e["event"] for e in events if e.get("digest") == layer.digest]
        assert mine[0] == "BlobQueued" and "BlobStarted" in mine and mine[-1] == "BlobDone", mine
        assert "BlobProgress" in mine
    summary = events[-1]
    assert summary["event"] == "Summary" and summary["ok"] and summary["fetched_blobs"] == 3
    assert proc.stdout.splitlines()[0].endswith(" /data")


# -- search -------------------------------------------------------------------------------------


def _lib_search(stored: Stored, query: Query) -> list[dict[str, object]]:
    return search(stored.refs, stored.open_layer(), query).to_json()


@pytest.mark.parametrize(
    ("args", "query"),
    [
        (["/etc/*"], Query(path_glob="/etc/*")),
        (["--regex", "^/(opt|swap)"], Query(path_regex="^/(opt|swap)")),
        (["--content", "a[01]"], Query(content="a[01]")),
        (["/etc/*", "--content", "modified"], Query(path_glob="/etc/*", content="modified")),
        (["--content", "z0z0", "--binary"], Query(content="z0z0", include_binary=True)),
    ],
)
def test_search_json_is_the_library_result(rich: tuple[Stored, str], args: list[str], query: Query) -> None:
    stored, ref = rich
    got = json.loads(ok("search", "-q", "--json", ref, *args).stdout)
    assert got == _lib_search(stored, query)
    assert got


def test_search_finds_every_layer_of_a_path(rich: tuple[Stored, str]) -> None:
    """Which layers had /etc/b: written in 0, deleted in 1, a symlink from 2 on."""
    _, ref = rich
    lines = ok("search", "-q", ref, "/etc/b").stdout.splitlines()
    assert lines == [
        "L0   file     /etc/b  [not in the final filesystem]",
        "L1   deleted  /etc/b  [written again later]",
        "L2   symlink  /etc/b",
    ]


def test_search_script_friendly(rich: tuple[Stored, str]) -> None:
    stored, ref = rich
    out = ok("search", "-q", "--script-friendly", "--content", "a[01]", ref).stdout
    rows = [line.split("\t") for line in out.splitlines()]
    assert rows == [
        ["0", stored.image.layers[0].digest, "absent", "file", "/etc/a", "1", "0", "a0"],
        ["1", stored.image.layers[1].digest, "present", "file", "/etc/a", "1", "0", "a1 modified"],
    ]


def test_search_escapes_hostile_names(registry: Registry, tmp_path: Path) -> None:
    """Names and text from a layer can hold tabs, newlines and terminal escapes: one line each."""
    stored = store(tmp_path, [[file("odd\tname\x1b[2J", b"key=\tvalue\\\n")]])
    registry.push_image("forensics/odd", "v1", stored.image)
    ref = registry.ref("forensics/odd", "v1")
    out = ok("search", "-q", "--script-friendly", "--content", "key", ref).stdout
    assert out.endswith("\n") and out.count("\n") == 1
    fields = out.rstrip("\n").split("\t")
    assert fields[4] == "/odd\\tname\\x1b[2J" and fields[7] == "key=\\tvalue\\\\"
    text = ok("search", "-q", ref, "*name*").stdout
    assert "\x1b" not in text and "\\x1b" in text


def test_search_without_a_match_prints_nothing(rich: tuple[Stored, str]) -> None:
    _, ref = rich
    proc = ok("search", ref, "/no/such/path")
    assert proc.stdout == "" and "no matches" in proc.stderr


def test_search_bad_pattern_fetches_nothing(registry_factory) -> None:  # type: ignore[no-untyped-def]
    reg = registry_factory()
    reg.push_image("forensics/rich", "v1", images.build_image(rich_layers(), fmt="oci"))
    before = reg.request_count("/v2/forensics")
    for args in (["--regex", "("], ["--content", "[unclosed"], ["--regex"]):
        proc = fails("search", reg.ref("forensics/rich", "v1"), *args)
        assert proc.returncode == 2 and proc.stdout == ""
    assert reg.request_count("/v2/forensics") == before


def test_search_in_parallel_layers(registry: Registry, tmp_path: Path) -> None:
    """Several layers streamed at once (search opens them from several threads)."""
    layers = [[directory("d"), file(f"d/f{i}", f"needle {i}\n".encode() * (i + 1) * 3000)] for i in range(6)]
    stored = store(tmp_path, layers)
    registry.push_image("forensics/six", "v1", stored.image)
    ref = registry.ref("forensics/six", "v1")
    got = json.loads(ok("search", "-q", "-j", "4", "--json", "--content", "needle 5", ref).stdout)
    assert got == _lib_search(stored, Query(content="needle 5"))
    assert len(got) == 100  # the per-file cap


# -- diff ---------------------------------------------------------------------------------------


def release(version: int) -> list[list[images.Entry]]:
    base = [directory("etc"), file("etc/os-release", b"v=1\n"), directory("bin"), file("bin/tool", b"t")]
    app = [directory("app"), file("app/main", f"main {version}\n".encode(), mode=0o755)]
    if version == 2:
        app += [file("app/old.conf", b"old\n"), symlink("app/current", "main")]
    else:
        app += [file("app/new.conf", b"new\n"), symlink("app/current", "new.conf"), whiteout("bin/tool")]
    return [base, app]


@pytest.fixture(scope="module")
def releases(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> tuple[Registry, Stored, Stored]:
    v2 = store(tmp_path_factory.mktemp("v2"), release(2), extra_config={"config": {"Env": ["A=1", "B=2"]}})
    v3 = store(tmp_path_factory.mktemp("v3"), release(3), extra_config={"config": {"Env": ["A=1", "B=3"]}})
    registry.push_image("team/app", "v2", v2.image)
    registry.push_image("team/app", "v3", v3.image)
    return registry, v2, v3


def test_diff_json_is_the_library_diff(releases: tuple[Registry, Stored, Stored]) -> None:
    reg, v2, v3 = releases
    got = json.loads(ok("diff", "-q", "--json", reg.ref("team/app", "v2"), reg.ref("team/app", "v3")).stdout)
    expected = diff_images(
        ImageSide(v2.image.config, v2.refs, v2.open_layer()),
        ImageSide(v3.image.config, v3.refs, v3.open_layer()),
    ).to_json()
    assert got == expected
    assert got["config"]["env"] == {"changed": {"B": {"a": "2", "b": "3"}}}
    assert got["layers"]["common_base"] == 1


def test_what_v3_changed_against_v2(releases: tuple[Registry, Stored, Stored]) -> None:
    """One command; the shared base layer is fetched once."""
    reg, v2, v3 = releases
    base = v2.image.layers[0].digest
    assert base == v3.image.layers[0].digest
    before = reg.request_count(f"/blobs/{base}", "GET")
    out = ok("diff", "-q", reg.ref("team/app", "v2"), reg.ref("team/app", "v3")).stdout.splitlines()
    assert reg.request_count(f"/blobs/{base}", "GET") == before + 1
    assert out[0] == "layers: A has 2, B has 2; the bottom 1 in common, 1 shared in all"
    assert "config:" in out and '  env B: "2" -> "3"' in out
    assert "files: 1 added, 2 removed, 2 changed" in out
    changes = out[out.index("files: 1 added, 2 removed, 2 changed") + 1 :]
    assert changes == [
        "  M /app/current (target main -> new.conf)",
        "  M /app/main (content)",
        "  A /app/new.conf",
        "  D /app/old.conf",
        "  D /bin/tool",
    ]


def test_diff_across_sources(releases: tuple[Registry, Stored, Stored], tmp_path: Path) -> None:
    reg, v2, _ = releases
    archive = images.write_docker_archive(tmp_path / "v2.tar", v2.image, ["example.com/app:v2"])
    proc = ok("diff", "-q", "--json", str(archive), reg.ref("team/app", "v3"))
    remote = ok("diff", "-q", "--json", reg.ref("team/app", "v2"), reg.ref("team/app", "v3"))
    local, registry_side = json.loads(proc.stdout), json.loads(remote.stdout)
    assert local["files"] == registry_side["files"] and local["config"] == registry_side["config"]


def test_diff_bad_input(releases: tuple[Registry, Stored, Stored]) -> None:
    reg, _, _ = releases
    proc = fails("diff", reg.ref("team/app", "v2"), reg.ref("team/app", "v9"))
    assert proc.returncode == 3 and proc.stdout == ""


# -- help ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["files", "search", "diff", "export", "fetch-to-oci-bundle"])
def test_help_has_examples(command: str) -> None:
    proc = occystrap(command, "--help")
    assert proc.returncode == 0 and "Examples:" in proc.stdout and f"occystrap {command} " in proc.stdout
