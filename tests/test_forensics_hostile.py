"""Hostile layers are refused by every forensic view with one UnsafeArchiveError, and nothing
is written outside the output (nor a half-made bundle inside it)."""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from occystrap.errors import UnsafeArchiveError
from occystrap.forensics.bundle import write_bundle
from occystrap.forensics.diff import ImageSide, diff_images
from occystrap.forensics.export import export_rootfs
from occystrap.forensics.files import file_table
from occystrap.forensics.search import Query, search
from tests.support.forensics import HOSTILE, Stored, hostile_layers, store
from tests.support.images import file


def _files(s: Stored, tmp: Path) -> None:
    file_table(s.refs, s.open_layer(), content_digests=True)


def _export(s: Stored, tmp: Path) -> None:
    export_rootfs(s.refs, s.open_layer(), io.BytesIO())


def _search(s: Stored, tmp: Path) -> None:
    search(s.refs, s.open_layer(), Query(path_glob="*", content="x"))


def _diff(s: Stored, tmp: Path) -> None:
    benign = store(tmp / "benign", [[file("ok", b"ok")]])
    diff_images(
        ImageSide(benign.image.config, benign.refs, benign.open_layer()),
        ImageSide(s.image.config, s.refs, s.open_layer()),
    )


def _bundle(s: Stored, tmp: Path) -> None:
    dest = tmp / "bundle"
    try:
        write_bundle(s.image.config, s.refs, s.open_layer(), dest)
    finally:
        assert sorted(p.name for p in dest.iterdir()) == [], "no rootfs, staging or config.json is left"


VIEWS: dict[str, Callable[[Stored, Path], None]] = {
    "files": _files,
    "export": _export,
    "search": _search,
    "diff": _diff,
    "bundle": _bundle,
}


@pytest.mark.parametrize("view", sorted(VIEWS))
@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_layers_are_refused_everywhere(tmp_path: Path, case: str, view: str) -> None:
    stored = store(tmp_path / "image", hostile_layers(case))
    cwd = os.getcwd()
    work = tmp_path / "work"
    work.mkdir()
    os.chdir(work)  # a relative escape would land here
    try:
        with pytest.raises(UnsafeArchiveError) as caught:
            VIEWS[view](stored, tmp_path)
    finally:
        os.chdir(cwd)
    assert str(caught.value)
    assert list(work.iterdir()) == []
    assert not (tmp_path / "escaped").exists() and not Path("/abs-escaped").exists()
    assert not Path("/tmp/escaped").exists()
    assert Path("/etc/passwd").exists()
