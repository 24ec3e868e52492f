"""fetch-to-extracted (plain, merged, expanded), recreate-image and tarfile-to-extracted."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT, fails, ok, settled
from tests.support import images
from tests.support.images import Entry
from tests.support.registry import Registry
from tests.support.validators import Podman, run_tool, skopeo_copy, skopeo_inspect, umoci_unpack


def _rootfs(directory: Path) -> Path:
    [rootfs] = list((directory / "rootfs").iterdir())
    return rootfs


def _tree(root: Path) -> dict[str, tuple[str, bytes | str, int]]:
    """path -> (kind, content or link target, permission bits)."""
    out: dict[str, tuple[str, bytes | str, int]] = {}
    for sub, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(sub) / name
            rel = str(path.relative_to(root))
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("symlink", os.readlink(path), 0)
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", b"", stat.S_IMODE(st.st_mode))
            else:
                out[rel] = ("file", path.read_bytes(), stat.S_IMODE(st.st_mode))
    return out


def _expected(layers: list[list[Entry]]) -> dict[str, tuple[str, bytes | str, int]]:
    out: dict[str, tuple[str, bytes | str, int]] = {}
    for path, e in images.merge_layers(layers).items():
        if e.kind == "symlink":
            out[path] = ("symlink", e.target, 0)
        elif e.kind == "dir":
            out[path] = ("dir", b"", e.mode)
        else:
            out[path] = ("file", e.content, e.mode)
    return out


def test_extracted_dir_tars_into_a_loadable_image(registry: Registry, podman: Podman, tmp_path: Path) -> None:
    image = images.build_sample_image()
    registry.push_image("ext/plain", "v1", image)
    target = tmp_path / "d"
    ok("fetch-to-extracted", "-q", f"{registry.host}/ext/plain", "v1", str(target))
    names = sorted(p.name for p in target.iterdir() if not p.name.startswith("."))
    assert names == ["blobs", "index.json", "manifest.json", "oci-layout"]
    tarball = tmp_path / "x.tar"
    subprocess.run(f"cd {target} && tar -cf {tarball} *", shell=True, check=True)
    [name] = podman.load(tarball)
    [info] = podman.inspect(name)
    assert "sha256:" + info["Id"] == image.config_digest


@pytest.mark.parametrize("cross_layer_hardlink", [False, True])
def test_expand_builds_the_final_tree(registry: Registry, tmp_path: Path, cross_layer_hardlink: bool) -> None:
    layers = images.sample_layers(cross_layer_hardlink=cross_layer_hardlink)
    image = images.build_image(layers, fmt="oci", compression="zstd")
    repo = f"ext/expand{int(cross_layer_hardlink)}"
    registry.push_image(repo, "v1", image)
    target = tmp_path / "d"
    proc = ok(
        "fetch-to-extracted", "--progress", "plain", "--expand", f"{registry.host}/{repo}", "v1", str(target)
    )
    got = _tree(_rootfs(target))
    want = _expected(layers)
    implicit = {p for p in got if p not in want and got[p][0] == "dir"}
    assert {p: v for p, v in got.items() if p not in implicit} == want
    # Component matching: whiting out `de` keeps `de_CH`; an opaque usr/lib leaves usr/lib64.
    rootfs = _rootfs(target)
    assert (rootfs / "usr/share/locale/de_CH").exists()
    assert not (rootfs / "usr/share/locale/de").exists()
    assert "shadowed" in proc.stderr
    # Each layer is also unpacked alone, whiteouts visible.
    whiteouts = [p for p in (target / "layers").rglob(".wh.*")]
    assert whiteouts, "per-layer directories keep their whiteout files"


def test_expand_matches_umoci(registry: Registry, umoci: str, skopeo: str, tmp_path: Path) -> None:
    image = images.build_sample_image(fmt="oci")
    registry.push_image("ext/umoci", "v1", image)
    target = tmp_path / "d"
    ok("fetch-to-extracted", "-q", "--expand", f"{registry.host}/ext/umoci", "v1", str(target))
    oci = tmp_path / "oci"
    skopeo_copy(f"docker://{registry.host}/ext/umoci:v1", f"oci:{oci}:v1")
    reference = umoci_unpack(oci, "v1", tmp_path / "bundle")
    assert _tree(_rootfs(target)) == _tree(reference)


def _raw_layer(members: list[tuple[tarfile.TarInfo, bytes]]) -> images.Layer:  # noqa: F821
    import io
    import tarfile as tf_mod

    buf = io.BytesIO()
    with tf_mod.open(fileobj=buf, mode="w", format=tf_mod.PAX_FORMAT) as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data else None)
    raw = buf.getvalue()
    return images.Layer(
        data=raw,
        digest=images.sha256_digest(raw),
        size=len(raw),
        diff_id=images.sha256_digest(raw),
        tar=raw,
        compression="none",
        fmt="docker",
        entries=(),
    )


def _info(name: str, kind: bytes = b"0", size: int = 0, link: str = "") -> object:
    import tarfile

    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = size
    info.linkname = link
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info


HOSTILE = {
    "dotdot": [[("../escaped", b"0", b"x")]],
    "absolute": [[("/abs-escaped", b"0", b"x")]],
    "symlink-out": [[("out", b"2", "../../../../../tmp")]],
    "through-symlink": [[("planted", b"2", "/tmp")], [("planted/escaped", b"0", b"x")]],
    "hardlink-out": [[("hl", b"1", "../../../../etc/passwd")]],
    "whiteout-escape": [[("a", b"5", b"")], [("a/.wh...", b"0", b"")]],
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_layers_are_refused(registry: Registry, tmp_path: Path, case: str) -> None:
    built_layers = []
    for spec in HOSTILE[case]:
        members = []
        for name, kind, payload in spec:
            if kind in (b"1", b"2"):
                members.append((_info(name, kind, link=str(payload)), b""))
            else:
                data = payload if isinstance(payload, bytes) else b""
                members.append((_info(name, kind, size=len(data)), data))
        built_layers.append(_raw_layer(members))  # type: ignore[arg-type]
    image = images.build_image(built_layers, fmt="docker")
    registry.push_image(f"ext/hostile-{case}", "v1", image)
    work = tmp_path / "work"
    work.mkdir()
    target = work / "d"
    proc = fails(
        "fetch-to-extracted", "-q", "--expand", f"{registry.host}/ext/hostile-{case}", "v1", str(target)
    )
    assert "occystrap: error:" in proc.stderr
    assert sorted(p.name for p in work.iterdir()) == ["d"]
    assert not (target / "rootfs").exists() or not any((target / "rootfs").iterdir())
    assert not (tmp_path / "escaped").exists() and not Path("/tmp/escaped").exists()
    assert not Path("/abs-escaped").exists()


def test_merged_directory_two_processes_and_oci_layout(
    registry: Registry, skopeo: str, tmp_path: Path
) -> None:
    base = images.build_layer([images.file("base.txt", b"shared base\n" * 1000)])
    apps = []
    for i in range(2):
        top = images.build_layer([images.file(f"app{i}.txt", f"app {i}\n".encode())])
        image = images.build_image([base, top], fmt="oci")
        registry.push_image(f"merged/app{i}", "v1", image)
        apps.append(image)
    target = tmp_path / "mirror"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "occystrap", "fetch-to-extracted", "-q", "--use-unique-names",
             f"{registry.host}/merged/app{i}", "v1", str(target)],
            env=env, stderr=subprocess.PIPE, text=True,
        )
        for i in range(2)
    ]  # fmt: skip
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    cat = json.loads((target / "catalog.json").read_text())["images"]
    assert set(cat) == {f"{registry.host}/merged/app0", f"{registry.host}/merged/app1"}
    for i, image in enumerate(apps):
        entry = cat[f"{registry.host}/merged/app{i}"]["v1"]
        assert entry["manifest_digest"] == image.manifest_digest
        assert (target / entry["manifest"]).exists()
        info = skopeo_inspect(f"oci:{target}:{registry.host}/merged/app{i}:v1")
        assert info["Digest"] == image.manifest_digest
    # The shared base layer is stored once.
    assert (target / "blobs/sha256" / base.digest[7:]).exists()


def test_merged_reuses_verified_blobs_only(registry_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    reg = registry_factory()
    base = images.build_layer([images.file("big.bin", os.urandom(300_000))])
    one = images.build_image([base, images.build_layer([images.file("a", b"a")])])
    two = images.build_image([base, images.build_layer([images.file("b", b"b")])])
    reg.push_image("reuse/one", "v1", one)
    reg.push_image("reuse/two", "v1", two)
    target = tmp_path / "m"
    ok("fetch-to-extracted", "-q", "--use-unique-names", f"{reg.host}/reuse/one", "v1", str(target))

    def served_count() -> int:
        return reg.request_count(f"/blobs/{base.digest}", method="GET")

    served = settled(served_count)
    ok("fetch-to-extracted", "-q", "--use-unique-names", f"{reg.host}/reuse/two", "v1", str(target))
    assert settled(served_count) == served
    # A damaged blob (same name, wrong bytes) is not trusted: it is fetched again.
    blob = target / "blobs/sha256" / base.digest[7:]
    blob.write_bytes(blob.read_bytes()[:-10])
    ok("fetch-to-extracted", "-q", "--use-unique-names", f"{reg.host}/reuse/one", "v1", str(target))
    assert settled(served_count) == served + 1
    assert images.sha256_digest(blob.read_bytes()) == base.digest


def test_recreate_image(registry: Registry, podman: Podman, tmp_path: Path) -> None:
    image = images.build_sample_image(fmt="oci", compression="zstd")
    registry.push_image("merged/re", "v1", image)
    target = tmp_path / "m"
    ok("fetch-to-extracted", "-q", "--use-unique-names", f"{registry.host}/merged/re", "v1", str(target))
    out = tmp_path / "re.tar"
    ok("recreate-image", str(target), f"{registry.host}/merged/re", "v1", str(out))
    [name] = podman.load(out)
    [info] = podman.inspect(name)
    assert "sha256:" + info["Id"] == image.config_digest
    assert f"{registry.host}/merged/re:v1" in info["RepoTags"]
    proc = fails("recreate-image", str(target), f"{registry.host}/merged/nope", "v1", str(tmp_path / "x.tar"))
    assert f"{registry.host}/merged/re:v1" in proc.stderr
    assert not (tmp_path / "x.tar").exists()


def test_tarfile_to_extracted_from_skopeo_docker_archive(
    registry: Registry, skopeo: str, podman: Podman, tmp_path: Path
) -> None:
    image = images.build_sample_image()
    registry.push_image("imp/app", "v1", image)
    archive = tmp_path / "saved.tar"
    skopeo_copy(
        f"docker://{registry.host}/imp/app:v1", f"docker-archive:{archive}:{registry.host}/imp/app:v1"
    )
    target = tmp_path / "m"
    ok("tarfile-to-extracted", "-q", "--use-unique-names", "--expand", str(archive), str(target))
    cat = json.loads((target / "catalog.json").read_text())["images"]
    assert list(cat) == [f"{registry.host}/imp/app"]
    out = tmp_path / "again.tar"
    ok("recreate-image", str(target), f"{registry.host}/imp/app", "v1", str(out))
    [name] = podman.load(out)
    [info] = podman.inspect(name)
    assert "sha256:" + info["Id"] == image.config_digest
    assert info["RootFS"]["Layers"] == image.diff_ids
    # Our own (Docker 25 / OCI form) tarball imports too, keeping the registry's manifest.
    ours = tmp_path / "ours.tar"
    ok("fetch-to-tarfile", "-q", f"{registry.host}/imp/app", "v1", str(ours))
    target2 = tmp_path / "m2"
    ok("tarfile-to-extracted", "-q", "--use-unique-names", str(ours), str(target2))
    cat2 = json.loads((target2 / "catalog.json").read_text())["images"]
    assert cat2[f"{registry.host}/imp/app"]["v1"]["manifest_digest"] == image.manifest_digest


def test_malformed_catalog_is_one_clear_error(registry: Registry, tmp_path: Path) -> None:
    image = images.build_sample_image()
    registry.push_image("merged/bad", "v1", image)
    target = tmp_path / "m"
    target.mkdir()
    (target / "catalog.json").write_text("{not json")
    proc = fails(
        "fetch-to-extracted", "-q", "--use-unique-names", f"{registry.host}/merged/bad", "v1", str(target)
    )
    assert "catalog.json" in proc.stderr
    run_tool(["true"])


def _special_layer() -> images.Layer:
    import tarfile

    members = []
    for name, kind in (("dev/null", tarfile.CHRTYPE), ("run/fifo", tarfile.FIFOTYPE)):
        info = tarfile.TarInfo(name)
        info.type = kind
        info.mode = 0o666
        info.devmajor, info.devminor = (1, 3) if kind == tarfile.CHRTYPE else (0, 0)
        members.append((info, b""))
    return _raw_layer(members)


@pytest.mark.skipif(os.geteuid() != 0, reason="device nodes need root")
def test_expand_creates_devices_and_fifos_as_root(registry: Registry, tmp_path: Path) -> None:
    image = images.build_image([_special_layer()], fmt="docker")
    registry.push_image("ext/devices", "v1", image)
    target = tmp_path / "d"
    ok("fetch-to-extracted", "-q", "--expand", f"{registry.host}/ext/devices", "v1", str(target))
    rootfs = _rootfs(target)
    dev = os.lstat(rootfs / "dev/null")
    assert stat.S_ISCHR(dev.st_mode) and os.major(dev.st_rdev) == 1 and os.minor(dev.st_rdev) == 3
    assert stat.S_ISFIFO(os.lstat(rootfs / "run/fifo").st_mode)


def test_devices_are_skipped_with_one_warning_when_not_root(tmp_path: Path) -> None:
    import io

    from occystrap.expand import TreeWriter, apply_layer

    warnings: list[str] = []
    writer = TreeWriter(tmp_path / "root", keep_whiteouts=False, as_root=False, warn=warnings.append)
    (tmp_path / "root").mkdir()
    layer = _special_layer()
    twice = images.build_layer([])  # a second, empty layer: the warning must not repeat
    apply_layer(io.BytesIO(layer.tar), [writer])
    apply_layer(io.BytesIO(layer.tar), [writer])
    apply_layer(io.BytesIO(twice.tar), [writer])
    assert len(warnings) == 1 and "device" in warnings[0]
    assert not (tmp_path / "root/dev/null").exists()
    assert stat.S_ISFIFO(os.lstat(tmp_path / "root/run/fifo").st_mode)
