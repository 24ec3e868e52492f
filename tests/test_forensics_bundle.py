"""forensics.bundle / runtime / users: an OCI runtime bundle that runc runs, judged by runc
itself, by `runc spec` and by `umoci unpack`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from occystrap.errors import ManifestError, UsageError
from occystrap.forensics.bundle import write_bundle
from occystrap.forensics.users import ExecUser, read_in_root, resolve_user
from tests.conftest import require_tool
from tests.support import images
from tests.support.forensics import (
    GROUP,
    HELLO,
    PASSWD,
    Stored,
    hardlink_groups,
    runnable_layers,
    static_busybox,
    store,
    tree,
)
from tests.support.images import BuiltImage
from tests.support.runnable import RUNNABLE_DEFAULT_OUTPUT
from tests.support.runtime import run_bundle
from tests.support.validators import run_tool, umoci_unpack

SCRIPT = 'cat hello.txt; id -u; id -g; id -G; echo "$HOME $PWD"; test -e secret && echo LEAK || echo gone'
RUN_CONFIG: dict[str, Any] = {
    "config": {
        "User": "app",
        "Entrypoint": ["/bin/sh", "-c"],
        "Cmd": [SCRIPT],
        "WorkingDir": "/data",
        "Env": ["PATH=/bin", "GREETING=hi"],
        "Labels": {"org.example.team": "forensics"},
        "Volumes": {"/cache": {}},
    }
}


def _runnable(tmp_path: Path) -> Stored:
    return store(tmp_path / "image", runnable_layers(static_busybox()), extra_config=RUN_CONFIG)


def _bundle(stored: Stored, dest: Path, **options: Any) -> dict[str, Any]:
    config_path = write_bundle(stored.image.config, stored.refs, stored.open_layer(), dest, **options)
    assert config_path == dest / "config.json"
    doc: dict[str, Any] = json.loads(config_path.read_text())
    return doc


def test_runc_runs_the_bundle_as_the_images_user(tmp_path: Path, runc: str) -> None:
    stored = _runnable(tmp_path)
    _bundle(stored, tmp_path / "bundle")
    # As written: terminal false, no console socket needed. run_bundle always `delete -f`s.
    code, out, err = run_bundle(tmp_path / "bundle", detach_tty=False)
    assert code == 0, err
    assert out.splitlines() == [
        HELLO.decode().strip(),
        "1234",
        "2345",
        "2345 3456",
        "/home/app /data",
        "gone",
    ]


def test_the_shared_runnable_image_runs_from_our_bundle(
    tmp_path: Path, runc: str, runnable_image: BuiltImage
) -> None:
    stored = store(tmp_path / "image", runnable_image)
    _bundle(stored, tmp_path / "bundle")
    code, out, err = run_bundle(tmp_path / "bundle", detach_tty=False)
    assert (code, out) == (0, RUNNABLE_DEFAULT_OUTPUT), err


def test_bundle_matches_umoci_unpack(tmp_path: Path, umoci: str) -> None:
    stored = _runnable(tmp_path)
    ours = _bundle(stored, tmp_path / "ours")
    layout = images.write_oci_layout(tmp_path / "oci", stored.image, "v1")
    reference_root = umoci_unpack(layout, "v1", tmp_path / "umoci")
    theirs = json.loads((tmp_path / "umoci" / "config.json").read_text())
    assert tree(tmp_path / "ours" / "rootfs") == tree(reference_root)
    assert hardlink_groups(tmp_path / "ours" / "rootfs") == hardlink_groups(reference_root)
    for key in ("args", "cwd", "user"):
        assert ours["process"][key] == theirs["process"][key], key
    assert sorted(ours["process"]["env"]) == sorted(theirs["process"]["env"])
    assert ours["root"]["path"] == theirs["root"]["path"] == "rootfs"
    volumes = [m for m in ours["mounts"] if m["destination"] == "/cache"]
    assert volumes == [m for m in theirs["mounts"] if m["destination"] == "/cache"] != []
    assert ours["annotations"]["org.example.team"] == theirs["annotations"]["org.example.team"]


def test_defaults_are_runc_specs(tmp_path: Path) -> None:
    runc = require_tool("runc")
    run_tool([runc, "spec", "-b", str(tmp_path)])
    spec = json.loads((tmp_path / "config.json").read_text())
    ours = _bundle(store(tmp_path / "image", [[images.file("f", b"x")]]), tmp_path / "bundle")
    assert ours["ociVersion"] == "1.0.2"
    for key in ("capabilities", "rlimits", "noNewPrivileges"):
        assert ours["process"][key] == spec["process"][key], key
    assert ours["mounts"] == spec["mounts"]
    assert ours["linux"] == spec["linux"]
    assert ours["process"]["args"] == ["/bin/sh"] and ours["process"]["terminal"] is False
    assert ours["root"] == {"path": "rootfs", "readonly": False}


def test_options_and_refusals(tmp_path: Path) -> None:
    stored = store(tmp_path / "image", [[images.file("f", b"x")]])
    doc = _bundle(stored, tmp_path / "b1", readonly=True, hostname="box")
    assert doc["root"]["readonly"] is True and doc["hostname"] == "box"
    assert _bundle(stored, tmp_path / "b2")["hostname"] == stored.image.config_digest[7:19]
    assert os.stat(tmp_path / "b2" / "rootfs").st_mode & 0o777 == 0o755
    with pytest.raises(UsageError, match="already holds a bundle"):
        _bundle(stored, tmp_path / "b1")
    windows = store(tmp_path / "win", [[images.file("f", b"x")]], os="windows")
    with pytest.raises(ManifestError, match="windows"):
        _bundle(windows, tmp_path / "b3")


def test_an_unknown_user_leaves_no_bundle(tmp_path: Path) -> None:
    stored = store(
        tmp_path / "image",
        [[images.directory("etc"), images.file("etc/passwd", PASSWD)]],
        extra_config={"config": {"User": "ghost"}},
    )
    with pytest.raises(ManifestError, match="ghost"):
        _bundle(stored, tmp_path / "b")
    assert list((tmp_path / "b").iterdir()) == []


# -- users ---------------------------------------------------------------------------------------

P, G = PASSWD.decode(), GROUP.decode()


@pytest.mark.parametrize(
    ("spec", "passwd", "group", "want"),
    [
        ("", P, G, ExecUser(0, 0, (), "/root")),
        ("app", P, G, ExecUser(1234, 2345, (3456,), "/home/app")),
        ("1234", P, G, ExecUser(1234, 2345, (3456,), "/home/app")),
        ("app:grp", P, G, ExecUser(1234, 2345, (), "/home/app")),
        ("app:extra", P, G, ExecUser(1234, 3456, (), "/home/app")),
        ("app:999", P, G, ExecUser(1234, 999, (), "/home/app")),
        ("1000:grp", P, G, ExecUser(1000, 2345, (), None)),
        ("1000", P, G, ExecUser(1000, 0, (), None)),
        ("1000:2000", None, None, ExecUser(1000, 2000, (), None)),
        ("", None, None, ExecUser(0, 0, (), None)),
        (
            "app",
            "# comment\nbroken line\napp:x:notanumber:1::/:/bin/sh\n" + P,
            G,
            ExecUser(1234, 2345, (3456,), "/home/app"),
        ),
    ],
)
def test_user_resolution(spec: str, passwd: str | None, group: str | None, want: ExecUser) -> None:
    assert resolve_user(spec, passwd, group) == want


@pytest.mark.parametrize(
    ("spec", "passwd"), [("ghost", P), ("app", None), ("app:nogroup", P), ("99999999999", P)]
)
def test_user_resolution_errors(spec: str, passwd: str | None) -> None:
    with pytest.raises(ManifestError):
        resolve_user(spec, passwd, G)


def test_passwd_is_read_inside_the_root_whatever_its_symlinks_say(tmp_path: Path) -> None:
    (tmp_path / "outside").write_text("host secret\n")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "real").write_text("image passwd\n")
    os.symlink("../../../../../outside", root / "etc" / "passwd")
    os.symlink("/real", root / "etc" / "group")
    os.symlink("loop", root / "etc" / "loop")
    assert read_in_root(root, "/etc/passwd") is None  # clamped to root/outside, which is not there
    (root / "outside").write_text("the image's own\n")
    assert read_in_root(root, "/etc/passwd") == "the image's own\n"
    assert read_in_root(root, "/etc/group") == "image passwd\n"
    assert read_in_root(root, "/etc/loop") is None
    assert read_in_root(root, "/etc") is None
