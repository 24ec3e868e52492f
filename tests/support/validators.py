"""Independent validators: podman, skopeo and umoci judge what occystrap produced.

All tool state (podman storage, temp files, configs) lives under a caller-given
workdir so tests never touch the machine's global container storage.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# podman on these machines: crun refuses the hybrid cgroup layout, the default
# ulimits exceed the sandbox's hard limits, and journald isn't available.
_CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
netns = "none"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
image_copy_tmp_dir = "{tmp}"
"""

_STORAGE_CONF = """\
[storage]
driver = "{driver}"
graphroot = "{root}"
runroot = "{run}"
"""


def run_tool(
    args: Sequence[str], env: dict[str, str] | None = None, timeout: float = 300, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure raise AssertionError carrying its stderr."""
    proc = subprocess.run(
        list(args),
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} failed with exit code {proc.returncode}\n"
            f"stderr:\n{proc.stderr}\nstdout:\n{proc.stdout[-2000:]}"
        )
    return proc


# --------------------------------------------------------------------------
# podman
# --------------------------------------------------------------------------


def mounts_under(*dirs: Path) -> list[str]:
    """Mount points at or below `dirs`, deepest first."""
    prefixes = [str(d.resolve()) for d in dirs]
    found = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        # Field 5 is the mount point, with spaces etc. octal-escaped.
        point = line.split()[4].encode().decode("unicode_escape")
        if any(point == p or point.startswith(p + "/") for p in prefixes):
            found.append(point)
    return sorted(found, key=len, reverse=True)


class Podman:
    """podman with private storage under `workdir` (root/, run/, tmp/, conf files)."""

    def __init__(self, workdir: Path, storage_driver: str | None = None) -> None:
        self.workdir = workdir
        self.root = workdir / "root"
        self.tmp = workdir / "tmp"
        self.runroot = workdir / "run"
        self._short_run: str | None = None
        if len(str(self.runroot)) >= 50:
            # podman refuses a runroot of 50+ characters (pytest tmp paths are
            # longer); the runroot only holds transient state, so put it in /tmp.
            self._short_run = tempfile.mkdtemp(prefix="podrun-", dir="/tmp")
            self.runroot = Path(self._short_run)
        for d in (self.root, self.runroot, self.tmp):
            d.mkdir(parents=True, exist_ok=True)
        self.driver = storage_driver or os.environ.get("OCCYSTRAP_TEST_PODMAN_DRIVER", "overlay")
        conf = workdir / "containers.conf"
        conf.write_text(_CONTAINERS_CONF.format(tmp=self.tmp))
        storage = workdir / "storage.conf"
        storage.write_text(_STORAGE_CONF.format(driver=self.driver, root=self.root, run=self.runroot))
        registries = workdir / "registries.conf"
        registries.write_text("unqualified-search-registries = []\n")  # no short-name lookups
        self.env = {
            "CONTAINERS_CONF": str(conf),
            "CONTAINERS_STORAGE_CONF": str(storage),
            "CONTAINERS_REGISTRIES_CONF": str(registries),
            "TMPDIR": str(self.tmp),  # image copies otherwise go to /var/tmp
        }

    def close(self) -> None:
        """Undo leftovers: mounts under our storage and the out-of-workdir runroot."""
        # A failed `podman load` leaves graphroot/overlay bind-mounted, which
        # would make deleting the tmp dir fail with EBUSY.
        for mount_point in mounts_under(self.root, self.runroot):
            subprocess.run(["umount", "-l", mount_point], capture_output=True, check=False)
        if self._short_run is not None:
            shutil.rmtree(self._short_run, ignore_errors=True)
            self._short_run = None

    def __enter__(self) -> Podman:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        cmd = [
            "podman",
            "--root", str(self.root),
            "--runroot", str(self.runroot),
            "--tmpdir", str(self.tmp / "libpod"),
            "--storage-driver", self.driver,
            "--events-backend", "file",
            *args,
        ]  # fmt: skip
        return run_tool(cmd, env=self.env, check=check, timeout=timeout)

    def load(self, tar: Path) -> list[str]:
        """`podman load -i TAR`; returns the loaded names (or IDs for untagged images)."""
        out = self("load", "-i", str(tar)).stdout
        names: list[str] = []
        for line in out.splitlines():
            m = re.match(r"Loaded image(?:\(s\))?:\s*(.+)$", line.strip())
            if m:
                names.extend(n.strip() for n in m.group(1).split(",") if n.strip())
        if not names:
            raise AssertionError(f"podman load reported no images:\n{out}")
        return names

    def inspect(self, *names: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = json.loads(self("image", "inspect", *names).stdout)
        return result

    def images(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = json.loads(self("images", "--format", "json").stdout)
        return result

    def run(self, image: str, *cmd: str, options: tuple[str, ...] = ()) -> str:
        """`podman run --rm --network none [OPTIONS] IMAGE CMD...`; returns stdout.

        Runs with runc, cgroupfs and the ulimits of containers.conf above (see MACHINE-NOTES).
        """
        return self("run", "--rm", "--network", "none", *options, image, *cmd).stdout

    run_container = run  # the earlier name


def podman_load(tar: Path, workdir: Path) -> list[dict[str, Any]]:
    """Load `tar` into private podman storage in `workdir`; return `podman image inspect`
    output for each loaded image (keys: Id, Digest, RepoTags, RootFS.Layers, ...).

    Note podman's Id is the config digest without the "sha256:" prefix.
    """
    with Podman(workdir) as podman:
        return podman.inspect(*podman.load(tar))


# --------------------------------------------------------------------------
# skopeo
# --------------------------------------------------------------------------


def _skopeo_args(transport_ref: str, creds: str | None, tls_verify: bool) -> list[str]:
    if not transport_ref.startswith("docker://"):
        return []
    args = [f"--tls-verify={'true' if tls_verify else 'false'}"]
    # Explicit: otherwise skopeo may pick up creds from an auth.json on the host.
    args += ["--creds", creds] if creds else ["--no-creds"]
    return args


def _skopeo_env() -> dict[str, str]:
    tmp = Path(tempfile.gettempdir())
    return {"REGISTRY_AUTH_FILE": str(tmp / "occystrap-tests-no-auth.json")}


def skopeo_inspect(
    transport_ref: str, *, creds: str | None = None, tls_verify: bool = False
) -> dict[str, Any]:
    """`skopeo inspect REF` as a dict (Digest, RepoTags, Layers, Architecture, Os, ...).

    REF e.g. "docker-archive:/x.tar", "oci-archive:/x.tar", "oci:/dir:name",
    "docker://127.0.0.1:PORT/repo:tag". `creds` is "user:password".
    """
    args = ["skopeo", "inspect", *_skopeo_args(transport_ref, creds, tls_verify), transport_ref]
    result: dict[str, Any] = json.loads(run_tool(args, env=_skopeo_env()).stdout)
    return result


def skopeo_inspect_raw(transport_ref: str, *, creds: str | None = None, tls_verify: bool = False) -> bytes:
    """The manifest (or index) bytes exactly as stored/served."""
    args = ["skopeo", "inspect", "--raw", *_skopeo_args(transport_ref, creds, tls_verify), transport_ref]
    env = {**os.environ, **_skopeo_env()}
    proc = subprocess.run(args, capture_output=True, env=env, timeout=300, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} failed ({proc.returncode})\nstderr:\n{proc.stderr.decode(errors='replace')}"
        )
    return proc.stdout


def skopeo_inspect_config(
    transport_ref: str, *, creds: str | None = None, tls_verify: bool = False, raw: bool = False
) -> dict[str, Any]:
    """The image config (`--config`); `raw=True` gives the config exactly as stored."""
    flags = ["--config", "--raw"] if raw else ["--config"]
    args = ["skopeo", "inspect", *flags, *_skopeo_args(transport_ref, creds, tls_verify), transport_ref]
    result: dict[str, Any] = json.loads(run_tool(args, env=_skopeo_env()).stdout)
    return result


def skopeo_copy(
    src: str,
    dst: str,
    *,
    src_creds: str | None = None,
    all_images: bool = False,
    preserve_digests: bool = False,
    extra: Sequence[str] = (),
) -> None:
    """`skopeo copy` from e.g. docker://127.0.0.1:PORT/repo:tag to oci:DIR:ref (a reference copy)."""
    args = ["skopeo", "copy"]
    if src.startswith("docker://"):
        args.append("--src-tls-verify=false")
        args += ["--src-creds", src_creds] if src_creds else ["--src-no-creds"]
    if dst.startswith("docker://"):
        args.append("--dest-tls-verify=false")
    if all_images:
        args.append("--all")
    if preserve_digests:
        args.append("--preserve-digests")
    run_tool([*args, *extra, src, dst], env=_skopeo_env())


# --------------------------------------------------------------------------
# umoci
# --------------------------------------------------------------------------


def umoci_unpack(oci_dir: Path, ref: str, bundle: Path) -> Path:
    """Unpack `oci_dir:ref` into BUNDLE with umoci (as root: real owners); returns BUNDLE/rootfs."""
    run_tool(["umoci", "unpack", "--image", f"{oci_dir}:{ref}", str(bundle)])
    return bundle / "rootfs"
